// The HTTP front's inner server: Deno.serve on loopback, fed by spliced client connections.
import type { Logger } from "@logtape/logtape";
import { closeQuietly, writeAll } from "../../shared/net.ts";

/** Handler of ordinary HTTP requests, told the real client address. */
export type FrontFetch = (req: Request, remote: Deno.NetAddr) => Response | Promise<Response>;

const LOOPBACK = "127.0.0.1";
const RESTART_MIN_MS = 50;
const RESTART_MAX_MS = 1000;
/** A restarted server that lived this long resets the restart backoff. */
const HEALTHY_MS = 5000;
const PIPE_BUFFER = 32 * 1024;
/**
 * After the inner server ended its side, how long the client may keep its side open. An HTTP
 * server that closed will answer nothing more, and a client that never closes must not hold a
 * connection slot forever.
 */
const SPLICE_LINGER_MS = 5000;

/**
 * `Deno.serve` on 127.0.0.1, port 0, reached only through `connect()`. It maps the local port of
 * each front-made connection to the real client address, so the handler sees who really called.
 * `Deno.serve` stops for good when its `accept` fails (e.g. EMFILE; `finished` rejects): this
 * restarts it on a new port, with a log line and `onRestart`.
 */
export class InnerHttp {
  readonly #fetch: FrontFetch;
  readonly #log: Logger;
  readonly #onRestart: () => void;
  readonly #remotes = new Map<number, Deno.NetAddr>();
  #server: Deno.HttpServer<Deno.NetAddr> | null = null;
  #finished: Promise<void> = Promise.resolve();
  #closing = false;
  #restartTimer: ReturnType<typeof setTimeout> | undefined;
  #restartDelay = RESTART_MIN_MS;

  constructor(fetch: FrontFetch, log: Logger, onRestart: () => void) {
    this.#fetch = fetch;
    this.#log = log;
    this.#onRestart = onRestart;
  }

  /** Starts the server; throws when it cannot (the caller decides whether that is fatal). */
  start(): void {
    const server = Deno.serve({
      hostname: LOOPBACK,
      port: 0,
      onListen: () => {},
      onError: (e) => {
        this.#log.error("HTTP handler failed: {error}", { error: String(e) });
        return new Response("internal error\n", { status: 500 });
      },
    }, (req, info) => {
      const peer = info.remoteAddr;
      const real = peer.hostname === LOOPBACK ? this.#remotes.get(peer.port) : undefined;
      return this.#fetch(req, real ?? peer);
    });
    const started = Date.now();
    this.#server = server;
    this.#finished = server.finished.then(
      () => this.#stopped(server, started, null),
      (e) => this.#stopped(server, started, e),
    );
  }

  /** Port of the running server, or null while it is being restarted. */
  get port(): number | null {
    return this.#server?.addr.port ?? null;
  }

  /**
   * Opens a connection to the server on behalf of `remote`; the handler sees `remote` for every
   * request on it until `forget(conn)`. Throws when the server is down or the connect fails.
   */
  async connect(remote: Deno.NetAddr): Promise<Deno.TcpConn> {
    const port = this.port;
    if (port === null) throw new Error("inner HTTP server is restarting");
    const conn = await Deno.connect({ hostname: LOOPBACK, port });
    // Registered before a byte is written, so the first request already finds it.
    this.#remotes.set(conn.localAddr.port, remote);
    conn.setNoDelay(true);
    return conn;
  }

  /** Drops the address mapping of a connection made by `connect`. */
  forget(conn: Deno.TcpConn): void {
    this.#remotes.delete(conn.localAddr.port);
  }

  /** Stops the server (waiting for in-flight requests) and any pending restart. */
  async close(): Promise<void> {
    this.#closing = true;
    clearTimeout(this.#restartTimer);
    const server = this.#server;
    this.#server = null;
    if (server) await server.shutdown();
    await this.#finished;
  }

  #stopped(server: Deno.HttpServer<Deno.NetAddr>, started: number, error: unknown): void {
    if (this.#closing) return;
    if (this.#server === server) this.#server = null;
    if (Date.now() - started >= HEALTHY_MS) this.#restartDelay = RESTART_MIN_MS;
    this.#log.error("inner HTTP server stopped ({error}); restarting it", {
      error: error === null ? "finished" : String(error),
    });
    this.#onRestart();
    this.#scheduleRestart();
  }

  #scheduleRestart(): void {
    const delay = this.#restartDelay;
    this.#restartDelay = Math.min(delay * 2, RESTART_MAX_MS);
    this.#restartTimer = setTimeout(() => {
      this.#restartTimer = undefined;
      if (this.#closing) return;
      try {
        this.start();
        this.#log.info("inner HTTP server restarted on 127.0.0.1:{port}", { port: this.port });
      } catch (e) {
        this.#log.warn("cannot restart the inner HTTP server yet: {error}", { error: String(e) });
        this.#scheduleRestart();
      }
    }, delay);
  }
}

/** When a spliced connection last carried a byte (`Date.now()`), for an idle sweep. */
export interface SpliceActivity {
  last: number;
}

/**
 * Joins a client connection `a` to an inner-server connection `b`: writes `first` to `b`, then
 * copies bytes both ways until both sides have ended. An EOF is passed on as a half-close
 * (`closeWrite`), so replies after it still arrive; an error on either side closes both; once `b`
 * has ended, `a` gets a few seconds to end too. Closes both before returning; never throws.
 */
export async function splice(
  a: Deno.Conn,
  b: Deno.Conn,
  first: Uint8Array,
  activity: SpliceActivity = { last: 0 },
): Promise<void> {
  let failed = false;
  let linger: ReturnType<typeof setTimeout> | undefined;
  const abort = () => {
    if (failed) return;
    failed = true;
    closeQuietly(a);
    closeQuietly(b);
  };
  const pump = async (from: Deno.Conn, to: Deno.Conn, prefix: Uint8Array | null) => {
    try {
      if (prefix && prefix.byteLength > 0) await writeAll(to, prefix);
      const buf = new Uint8Array(PIPE_BUFFER);
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        activity.last = Date.now();
        await writeAll(to, buf.subarray(0, n));
      }
      await to.closeWrite();
    } catch {
      abort();
    }
  };
  const aToB = pump(a, b, first);
  const bToA = pump(b, a, null).then(() => {
    linger = setTimeout(abort, SPLICE_LINGER_MS);
  });
  await Promise.all([aToB, bToA]);
  clearTimeout(linger);
  closeQuietly(a);
  closeQuietly(b);
}
