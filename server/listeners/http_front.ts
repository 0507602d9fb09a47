// The HTTP front door: owns every connection on the server's HTTP port, caps and times them, keeps
// accepting through descriptor exhaustion, and hands each one to an upgrade handler or splices it
// to an inner Deno.serve.
import type { Logger } from "@logtape/logtape";
import { closeQuietly, concatBytes } from "../../shared/net.ts";
import { HttpHeadError, latin1Bytes, parseRequestHead, readHead } from "../../shared/http_head.ts";
import { AcceptLoop, isFdExhaustion } from "./accept_loop.ts";
import { FdReserve, initSignalHandling } from "./fd_limits.ts";
import { type FrontRefusalKind, Refuser } from "./http_refusals.ts";
import { type FrontFetch, InnerHttp, splice, type SpliceActivity } from "./http_splice.ts";
import { LoopbackTls } from "./tls_loopback.ts";
import { errorText } from "../../shared/error_text.ts";
import { unbracket } from "../../shared/address.ts";

export { initSignalHandling, raiseNofileLimit } from "./fd_limits.ts";
export { FRONT_REFUSALS, type FrontRefusalKind } from "./http_refusals.ts";

/** Caps and timeouts the front enforces on every connection. */
export interface FrontLimits {
  /** All open connections held by the front (upgraded ones count until their slot is released). */
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  /** Connections from one address that have not been marked authenticated. */
  readonly maxUnauthenticatedPerIp: number;
  /** The whole request head (and a TLS handshake) must arrive within this (slowloris). */
  readonly headerTimeoutMs: number;
  /** A longer request head is answered 431. */
  readonly maxHeadBytes: number;
  /** Descriptors held back and released when `accept` hits EMFILE (0: none). */
  readonly fdReserve: number;
  /**
   * An ordinary-HTTP (spliced) connection that carries no byte either way for this long is
   * closed; default 75 s. Deno.serve itself never times out idle keep-alive connections.
   */
  readonly idleTimeoutMs?: number;
}

/** A connection's place in the counts; its owner marks it authenticated and releases it. */
export interface FrontSlot {
  /** The connection stops counting against `maxUnauthenticatedPerIp`. Idempotent. */
  authenticated(): void;
  /** The connection stops counting at all (call when it closes). Idempotent. */
  release(): void;
}

/** The first request head read from a connection. */
export interface RequestHead {
  readonly method: string;
  /** The request target as sent, e.g. `/_mport/v1/control?x=1`. */
  readonly target: string;
  /** The target's path, without query or fragment. */
  readonly path: string;
  readonly headers: Headers;
  /** The real client address (the TCP peer). */
  readonly remote: Deno.NetAddr;
  /** The head as received (Latin-1 text, without the blank line that ends it). */
  readonly raw: string;
  /** The connection came over this front's own TLS. */
  readonly secure: boolean;
}

/** Counters the front reports to; wired to the server's Stats. */
export interface FrontCounters {
  /** A connection was refused or cut; `kind` is a `FrontRefusalCounter`. */
  refusal(kind: string): void;
  /** Accepting resumed after failing, or a listener (front or inner) was re-created. */
  listenerRestart(): void;
}

/** What `startFront` needs. */
export interface FrontOptions {
  readonly hostname: string;
  readonly port: number;
  readonly tls?: { readonly cert: string; readonly key: string };
  readonly limits: FrontLimits;
  /**
   * Decides per request head: "upgrade" → `onUpgrade` owns the connection from here; "http" →
   * the connection is spliced to the inner HTTP server (keep-alive requests follow it there).
   */
  route(head: RequestHead): "upgrade" | "http";
  /**
   * Takes over a connection: `leftover` holds bytes read past the head. The handler closes `conn`
   * and calls `slot.release()` when it is done, and `slot.authenticated()` once the peer proved
   * who it is. If it throws, the front closes the connection and releases the slot.
   */
  onUpgrade(head: RequestHead, conn: Deno.Conn, leftover: Uint8Array, slot: FrontSlot): void;
  /** Ordinary HTTP (healthz, metrics, API…), told the real client address. */
  fetch: FrontFetch;
  /**
   * Peers that carry many clients' connections (trusted reverse proxies such as nginx on the same
   * host): the per-address caps do not apply to them, only the global one. The login limiter
   * still sees each real client through `X-Forwarded-For`.
   */
  readonly sharedPeer?: (hostname: string) => boolean;
  readonly log: Logger;
  readonly counters?: FrontCounters;
}

/** A running front. */
export interface HttpFront {
  /** The address bound (port resolved when 0 was asked for). */
  readonly addr: Deno.NetAddr;
  /** Closes the listener; open connections carry on. */
  stopAccepting(): void;
  /**
   * Stops accepting, closes every connection the front still owns (reading a head, spliced,
   * being refused) and the inner server. Upgraded connections belong to their handler.
   */
  close(): Promise<void>;
  /** Connections counted now: all open, and those not yet authenticated. */
  stats(): { open: number; unauthenticated: number };
}

const DEFAULT_IDLE_MS = 75_000;

/**
 * Starts the front on `opts.hostname:opts.port`. Throws (e.g. `Deno.errors.AddrInUse`) when it
 * cannot bind.
 */
export function startFront(opts: FrontOptions): Promise<HttpFront> {
  try {
    checkLimits(opts.limits);
    return Promise.resolve(new Front(opts));
  } catch (e) {
    return Promise.reject(e);
  }
}

function checkLimits(l: FrontLimits): void {
  const positive: (keyof FrontLimits)[] = [
    "maxConnections",
    "maxConnectionsPerIp",
    "maxUnauthenticatedPerIp",
    "headerTimeoutMs",
    "maxHeadBytes",
  ];
  for (const k of positive) {
    const v = l[k];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      throw new RangeError(`front limit ${k} must be a positive number, got ${v}`);
    }
  }
  if (!Number.isInteger(l.fdReserve) || l.fdReserve < 0) {
    throw new RangeError(`front limit fdReserve must be a whole number ≥ 0, got ${l.fdReserve}`);
  }
  if (l.idleTimeoutMs !== undefined && !(l.idleTimeoutMs > 0)) {
    throw new RangeError(`front limit idleTimeoutMs must be positive, got ${l.idleTimeoutMs}`);
  }
}

interface IpCount {
  open: number;
  unauth: number;
}

/** What travels with a TLS client's raw socket to its loopback TLS side. */
interface TlsTag {
  readonly remote: Deno.NetAddr;
  readonly ip: string;
  readonly slot: FrontSlot;
}

class Front implements HttpFront {
  readonly #opts: FrontOptions;
  readonly #limits: FrontLimits;
  readonly #log: Logger;
  readonly #reserve: FdReserve;
  readonly #inner: InnerHttp;
  readonly #refuser: Refuser;
  readonly #accept: AcceptLoop;
  /** With TLS: the loopback listener that terminates it (the front keeps the raw socket). */
  readonly #tls: LoopbackTls<TlsTag> | null = null;
  readonly #perIp = new Map<string, IpCount>();
  /** Connections reading their head, spliced or carrying TLS: closed on `close()`. */
  readonly #owned = new Set<Deno.Conn>();
  readonly #spliced = new Map<Deno.Conn, SpliceActivity>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #sweep: ReturnType<typeof setInterval>;
  #open = 0;
  #unauth = 0;
  #closing: Promise<void> | null = null;

  constructor(opts: FrontOptions) {
    this.#opts = opts;
    this.#limits = opts.limits;
    this.#log = opts.log;
    initSignalHandling(); // else Deno itself may panic on EMFILE later
    this.#reserve = new FdReserve(opts.limits.fdReserve);
    if (this.#reserve.disabled) {
      this.#log.warn("no descriptor reserve: {why}", { why: this.#reserve.disabled });
    }
    const restarted = () => opts.counters?.listenerRestart();
    this.#refuser = new Refuser(opts.log, (kind) => opts.counters?.refusal(kind));
    this.#inner = new InnerHttp(opts.fetch, opts.log, restarted);
    this.#inner.start();
    try {
      if (opts.tls) {
        this.#tls = new LoopbackTls<TlsTag>({
          cert: opts.tls.cert,
          key: opts.tls.key,
          reserve: this.#reserve,
          log: opts.log,
          onRestart: restarted,
          onConn: (conn, tag, end) =>
            this.#track(this.#serve(conn, tag.remote, tag.ip, tag.slot, end)),
          onShed: () => this.#refuser.cut("fd_exhausted"),
        });
      }
      this.#accept = new AcceptLoop({
        port: opts.port,
        listen: (port) => Deno.listen({ hostname: opts.hostname, port }),
        reserve: this.#reserve,
        log: opts.log,
        onRestart: restarted,
        onConn: (conn) => this.#admit(conn),
        gate: () => this.#refuser.room(),
        onShed: (conn) => {
          if (!this.#tls) {
            return this.#refuser.refuse(conn, peerIp(conn), "fd_exhausted", "", false);
          }
          this.#refuser.drop(conn, peerIp(conn), "fd_exhausted");
          return Promise.resolve();
        },
      });
    } catch (e) {
      this.#tls?.stop();
      void this.#inner.close();
      throw e;
    }
    const idle = this.#limits.idleTimeoutMs ?? DEFAULT_IDLE_MS;
    this.#sweep = setInterval(() => this.#closeIdle(idle), Math.max(50, Math.min(5000, idle / 4)));
  }

  get addr(): Deno.NetAddr {
    return this.#accept.addr;
  }

  stats(): { open: number; unauthenticated: number } {
    return { open: this.#open, unauthenticated: this.#unauth };
  }

  stopAccepting(): void {
    this.#accept.stop();
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#accept.stop();
      this.#tls?.stop();
      this.#refuser.closeAll(); // also frees an accept loop waiting for room to refuse
      await Promise.all([this.#accept.done, this.#tls?.done]);
      clearInterval(this.#sweep);
      for (const c of this.#owned) closeQuietly(c);
      this.#refuser.closeAll();
      while (this.#tasks.size > 0) await Promise.allSettled([...this.#tasks]);
      await this.#inner.close();
      this.#reserve.release();
    })();
    return this.#closing;
  }

  // ---- admission and counting ----

  #admit(conn: Deno.Conn): void {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const ip = addressKey(remote.hostname);
    const per = this.#opts.sharedPeer?.(remote.hostname) ? undefined : this.#perIp.get(ip);
    const l = this.#limits;
    const kind: FrontRefusalKind | null = (per?.open ?? 0) >= l.maxConnectionsPerIp
      ? "max_connections_per_ip"
      : (per?.unauth ?? 0) >= l.maxUnauthenticatedPerIp
      ? "max_unauthenticated_per_ip"
      : this.#open >= l.maxConnections
      ? "max_connections"
      : null;
    if (kind && this.#tls) this.#refuser.drop(conn, ip, kind);
    else if (kind) this.#track(this.#refuser.refuse(conn, ip, kind));
    else if (this.#tls) this.#track(this.#carryTls(this.#tls, conn, remote, ip, this.#slot(ip)));
    else this.#track(this.#serve(conn, remote, ip, this.#slot(ip)));
  }

  /** Splices a TLS client's raw socket to the loopback TLS listener, which serves its TLS side. */
  async #carryTls(
    tls: LoopbackTls<TlsTag>,
    raw: Deno.Conn,
    remote: Deno.NetAddr,
    ip: string,
    slot: FrontSlot,
  ): Promise<void> {
    this.#owned.add(raw);
    let claimed = false;
    try {
      // The loopback pair needs two more descriptors: refuse here rather than half-way.
      if (!this.#reserve.headroom(2)) {
        this.#refuser.drop(raw, ip, "fd_exhausted");
        return;
      }
      claimed = await tls.carry(raw, { remote, ip, slot });
    } catch (e) {
      if (isFdExhaustion(e)) this.#refuser.drop(raw, ip, "fd_exhausted");
      else {
        this.#log.warn("cannot reach the loopback TLS listener: {error}", { error: errorText(e) });
        this.#refuser.drop(raw, ip, "inner_unavailable");
      }
    } finally {
      this.#owned.delete(raw);
      closeQuietly(raw);
      if (!claimed) slot.release(); // its TLS side never reached #serve
    }
  }

  #slot(ip: string): FrontSlot {
    const count = this.#perIp.get(ip) ?? { open: 0, unauth: 0 };
    this.#perIp.set(ip, count);
    count.open++;
    count.unauth++;
    this.#open++;
    this.#unauth++;
    let authed = false;
    let released = false;
    return {
      authenticated: () => {
        if (authed || released) return;
        authed = true;
        count.unauth--;
        this.#unauth--;
      },
      release: () => {
        if (released) return;
        released = true;
        if (!authed) {
          count.unauth--;
          this.#unauth--;
        }
        count.open--;
        this.#open--;
        if (count.open === 0 && this.#perIp.get(ip) === count) this.#perIp.delete(ip);
      },
    };
  }

  /** Keeps a connection's task for `close()`; a task that throws is a bug, logged, not fatal. */
  #track(task: Promise<void>): void {
    const done: Promise<void> = task.catch((e) => {
      this.#log.error("connection task failed: {error}", { error: errorText(e) });
    }).finally(() => this.#tasks.delete(done));
    this.#tasks.add(done);
  }

  // ---- one connection ----

  /**
   * Reads the first head and routes the connection. `end` (TLS) closes the client's raw socket
   * once this connection is done with, which closing a TlsConn alone may not.
   */
  async #serve(
    conn: Deno.Conn,
    remote: Deno.NetAddr,
    ip: string,
    slot: FrontSlot,
    end?: () => void,
  ): Promise<void> {
    this.#owned.add(conn);
    let handedOver = false;
    try {
      let got: { head: string; leftover: Uint8Array };
      let parsed: ReturnType<typeof parseRequestHead>;
      try {
        got = await readHead(conn, {
          maxBytes: this.#limits.maxHeadBytes,
          timeoutMs: this.#limits.headerTimeoutMs,
        });
        parsed = parseRequestHead(got.head);
      } catch (e) {
        await this.#headFailed(conn, ip, e);
        return;
      }
      const head: RequestHead = {
        method: parsed.method,
        target: parsed.target,
        path: pathOf(parsed.target),
        headers: parsed.headers,
        remote,
        raw: got.head,
        secure: this.#opts.tls !== undefined,
      };
      let route: "upgrade" | "http";
      try {
        route = this.#opts.route(head);
      } catch (e) {
        this.#log.error("routing {method} {path} failed: {error}", {
          ...head,
          error: errorText(e),
        });
        return;
      }
      if (route === "upgrade") {
        this.#owned.delete(conn);
        handedOver = true;
        try {
          this.#opts.onUpgrade(head, conn, got.leftover, slot);
        } catch (e) {
          this.#log.error("upgrade handler for {path} from {ip} failed: {error}", {
            path: head.path,
            ip,
            error: errorText(e),
          });
          closeQuietly(conn);
          slot.release();
        }
        return;
      }
      // A complete head arrived: from here it is an ordinary connection, capped per address.
      slot.authenticated();
      const first = concatBytes(latin1Bytes(got.head + "\r\n\r\n"), got.leftover);
      await this.#spliceToInner(conn, remote, ip, first);
    } finally {
      if (!handedOver) {
        this.#owned.delete(conn);
        closeQuietly(conn);
        slot.release();
        end?.();
      }
    }
  }

  async #headFailed(conn: Deno.Conn, ip: string, e: unknown): Promise<void> {
    const kind = headErrorKind(e);
    if (kind === "header_timeout") {
      // No lingering: a slow client gets no more time (and a read is still pending on conn).
      await this.#refuser.refuse(conn, ip, kind, `limit ${this.#limits.headerTimeoutMs} ms`, false);
    } else if (kind) {
      await this.#refuser.refuse(conn, ip, kind, errorText(e));
    }
    // Otherwise the peer went away (EOF, reset, failed TLS handshake): nothing to answer.
  }

  async #spliceToInner(
    conn: Deno.Conn,
    remote: Deno.NetAddr,
    ip: string,
    first: Uint8Array,
  ): Promise<void> {
    // The inner server's accept needs a descriptor too: fail here, not in a listener that stops
    // for good on EMFILE.
    if (!this.#reserve.headroom(2)) {
      await this.#refuser.refuse(conn, ip, "fd_exhausted", undefined, false);
      return;
    }
    let inner: Deno.TcpConn;
    try {
      inner = await this.#inner.connect(remote);
    } catch (e) {
      if (isFdExhaustion(e)) {
        await this.#refuser.refuse(conn, ip, "fd_exhausted", undefined, false);
      } else {
        this.#log.warn("cannot reach the inner HTTP server: {error}", { error: errorText(e) });
        await this.#refuser.refuse(conn, ip, "inner_unavailable");
      }
      return;
    }
    const activity: SpliceActivity = { last: Date.now() };
    this.#spliced.set(conn, activity);
    try {
      await splice(conn, inner, first, activity);
    } finally {
      this.#spliced.delete(conn);
      this.#inner.forget(inner);
    }
  }

  #closeIdle(idleMs: number): void {
    const cutoff = Date.now() - idleMs;
    for (const [conn, activity] of this.#spliced) {
      if (activity.last < cutoff) {
        this.#refuser.cut("idle_timeout");
        closeQuietly(conn); // the splice sees the error and closes the inner side
      }
    }
  }
}

// ---- helpers ----

/** Which refusal a failed head read or parse deserves, or null when the peer went away. */
function headErrorKind(e: unknown): FrontRefusalKind | null {
  if (!(e instanceof HttpHeadError)) return null; // reset, failed TLS handshake, closed
  switch (e.kind) {
    case "timeout":
      return "header_timeout";
    case "too_large":
      return "head_too_large";
    case "malformed":
      return "bad_request";
    case "eof":
      return null;
    default: {
      const never: never = e.kind;
      return never;
    }
  }
}

function pathOf(target: string): string {
  if (target.startsWith("/")) {
    const end = target.search(/[?#]/);
    return end < 0 ? target : target.slice(0, end);
  }
  if (/^https?:\/\//i.test(target)) {
    try {
      return new URL(target).pathname;
    } catch {
      return target;
    }
  }
  return target;
}

/**
 * The key connections are counted under per address: an IPv4 address as is (an IPv4-mapped IPv6
 * address counts as its IPv4 address); an IPv6 address by its /64, since one subscriber usually
 * holds a whole /64 and could otherwise open connections from as many addresses as it likes.
 */
export function addressKey(hostname: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(hostname);
  if (mapped) return mapped[1]!;
  if (!hostname.includes(":")) return hostname;
  const addr = unbracket(hostname).split("%")[0]!.toLowerCase();
  const width = (part: string) => (part.includes(".") ? 2 : 1); // an embedded IPv4 is 2 groups
  const groups = (text: string) => (text ? text.split(":") : []);
  const [left = "", right] = addr.split("::");
  let all = groups(left);
  if (right !== undefined) {
    const tail = groups(right);
    const used = [...all, ...tail].reduce((n, g) => n + width(g), 0);
    all = [...all, ...Array<string>(Math.max(0, 8 - used)).fill("0"), ...tail];
  }
  const prefix = all.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16));
  if (prefix.length < 4) return addr; // not an address we understand: count it as it is
  return `${prefix.join(":")}::/64`;
}

function peerIp(conn: Deno.Conn): string {
  try {
    return addressKey((conn.remoteAddr as Deno.NetAddr).hostname);
  } catch {
    return "unknown";
  }
}
