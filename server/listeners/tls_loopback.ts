// TLS for the HTTP front, terminated behind it: the front keeps the client's raw TCP socket and
// splices it to a Deno.listenTls listener on loopback.
//
// Why not Deno.listenTls on the public port: closing a Deno TlsConn whose handshake has not
// finished does not close its socket (measured on Deno 2.9.6: it stays ESTABLISHED until the
// client sends or closes). A client that connects and stays silent would keep its descriptor
// after any timeout. Owning the raw socket lets the front really close it.
import type { Logger } from "@logtape/logtape";
import { closeQuietly } from "../../shared/net.ts";
import { AcceptLoop } from "./accept_loop.ts";
import type { FdReserve } from "./fd_limits.ts";
import { splice } from "./http_splice.ts";

const LOOPBACK = "127.0.0.1";
/** After the front is done with a TLS connection, its last bytes get this long to flush. */
const END_GRACE_MS = 1000;
/** A loopback connection nobody carried (someone dialled the port directly) is closed after. */
const UNMATCHED_MS = 1000;

/** What `LoopbackTls` needs. */
export interface LoopbackTlsOptions<T> {
  readonly cert: string;
  readonly key: string;
  readonly reserve: FdReserve;
  readonly log: Logger;
  /** The loopback listener's accept loop restarted. */
  onRestart(): void;
  /**
   * A client's TLS connection, with the `tag` given to `carry`. Call `end()` once done with it
   * (after closing it): the raw socket is then closed within a second, handshake or not.
   */
  onConn(conn: Deno.TlsConn, tag: T, end: () => void): void;
  /** Descriptors were short: the connection carrying `tag` was closed unserved. */
  onShed(tag: T): void;
}

interface Carried<T> {
  readonly tag: T;
  readonly raw: Deno.Conn;
  readonly loop: Deno.Conn;
  claimed: boolean;
  grace: ReturnType<typeof setTimeout> | undefined;
}

/** A loopback TLS listener and the splices that feed it. */
export class LoopbackTls<T> {
  readonly #opts: LoopbackTlsOptions<T>;
  readonly #accept: AcceptLoop;
  readonly #carried = new Map<number, Carried<T>>();
  /**
   * Accepted before `carry` registered its port: the accept and the connect complete in the same
   * turn of the event loop, in either order.
   */
  readonly #unmatched = new Map<
    number,
    { conn: Deno.TlsConn; timer: ReturnType<typeof setTimeout>; shed: boolean }
  >();

  /** Binds the loopback listener (throws when the certificate or key is unusable). */
  constructor(opts: LoopbackTlsOptions<T>) {
    this.#opts = opts;
    this.#accept = new AcceptLoop({
      listen: (port) =>
        Deno.listenTls({ hostname: LOOPBACK, port, cert: opts.cert, key: opts.key }),
      port: 0,
      reserve: opts.reserve,
      log: opts.log,
      onRestart: () => opts.onRestart(),
      onConn: (conn) => this.#accepted(conn as Deno.TlsConn),
      onShed: (conn) => Promise.resolve(this.#shed(conn)),
    });
  }

  /**
   * Splices `raw` (a client's TCP connection) to the loopback TLS listener; its TLS side arrives
   * through `onConn` with `tag`. Resolves when both sides have closed: true if `onConn` got it
   * (its owner must release what the tag holds), false if it never arrived. Throws when the
   * loopback connection cannot be made.
   */
  async carry(raw: Deno.Conn, tag: T): Promise<boolean> {
    const loop = await Deno.connect({ hostname: LOOPBACK, port: this.#accept.addr.port });
    loop.setNoDelay(true);
    if ("setNoDelay" in raw && typeof raw.setNoDelay === "function") raw.setNoDelay(true);
    const port = loop.localAddr.port;
    const entry: Carried<T> = { tag, raw, loop, claimed: false, grace: undefined };
    this.#carried.set(port, entry);
    const early = this.#unmatched.get(port);
    if (early) {
      this.#unmatched.delete(port);
      clearTimeout(early.timer);
      if (early.shed) this.#drop(entry);
      else this.#claim(entry, early.conn);
    }
    try {
      await splice(raw, loop, new Uint8Array(0));
    } finally {
      clearTimeout(entry.grace);
      this.#carried.delete(port);
    }
    return entry.claimed;
  }

  /** Stops the loopback listener. */
  stop(): void {
    this.#accept.stop();
    for (const { conn, timer } of this.#unmatched.values()) {
      clearTimeout(timer);
      closeQuietly(conn);
    }
    this.#unmatched.clear();
  }

  /** Settles once the loopback accept loop has stopped. */
  get done(): Promise<void> {
    return this.#accept.done;
  }

  #accepted(conn: Deno.TlsConn): void {
    const port = (conn.remoteAddr as Deno.NetAddr).port;
    const entry = this.#carried.get(port);
    if (entry && !entry.claimed) {
      this.#claim(entry, conn);
      return;
    }
    this.#park(port, conn, false);
  }

  /** Keeps an accepted connection until `carry` registers its port, or closes it after a while. */
  #park(port: number, conn: Deno.TlsConn, shed: boolean): void {
    const old = this.#unmatched.get(port);
    if (old) {
      clearTimeout(old.timer);
      closeQuietly(old.conn);
    }
    const timer = setTimeout(() => {
      this.#unmatched.delete(port);
      closeQuietly(conn);
    }, UNMATCHED_MS);
    this.#unmatched.set(port, { conn, timer, shed });
  }

  #claim(entry: Carried<T>, conn: Deno.TlsConn): void {
    entry.claimed = true;
    this.#opts.onConn(conn, entry.tag, () => {
      entry.grace ??= setTimeout(() => {
        closeQuietly(entry.raw);
        closeQuietly(entry.loop);
      }, END_GRACE_MS);
    });
  }

  #shed(conn: Deno.Conn): void {
    const port = (conn.remoteAddr as Deno.NetAddr).port;
    const entry = this.#carried.get(port);
    closeQuietly(conn);
    if (!entry) this.#park(port, conn as Deno.TlsConn, true);
    else if (!entry.claimed) this.#drop(entry);
  }

  /** Closes a carried connection unserved: its TLS side was shed. */
  #drop(entry: Carried<T>): void {
    closeQuietly(entry.raw);
    closeQuietly(entry.loop);
    this.#opts.onShed(entry.tag);
  }
}
