// The client's local egress proxy (`mport socks`): SOCKS5 and HTTP proxy on one port; each
// accepted connection becomes a stream that the mport server connects to its destination.
import type { Logger } from "@logtape/logtape";
import { closeQuietly, writeAll } from "../../shared/net.ts";
import { errorText } from "../../shared/error_text.ts";
import {
  type EgressDatagrams,
  type EgressDialer,
  type EgressFailure,
  EgressRefused,
  type EgressStream,
  type SocksServerOptions,
} from "./egress_types.ts";
import {
  Credentials,
  type EgressRequest,
  HandshakeEof,
  HandshakeReader,
  HandshakeRefused,
} from "./handshake.ts";
import {
  MAX_CREDENTIAL_BYTES,
  SOCKS4_VERSION,
  SOCKS5_VERSION,
  socks5Handshake,
  Socks5Reply,
  socks5Reply,
} from "./socks5.ts";
import { relayAssociation } from "./socks5_udp.ts";
import { httpHandshake, targetText } from "./http_proxy.ts";
import { TrackedConn } from "./tracked_conn.ts";

export { EgressRefused };
export type { EgressDatagrams, EgressDialer, EgressFailure, EgressStream, SocksServerOptions };
export { MAX_DOMAIN_BYTES } from "./socks5.ts";
export { MAX_HTTP_HEAD_BYTES } from "./http_proxy.ts";

/** Default for `handshakeTimeoutMs`. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** Default for `maxConnections`. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
const ACCEPT_BACKOFF_MIN_MS = 50;
const ACCEPT_BACKOFF_MAX_MS = 1000;

/** A running local proxy. */
export interface SocksServer {
  readonly addr: Deno.NetAddr;
  /**
   * Stops accepting, closes every local connection still open (carried ones too) and waits
   * for each connection's handler, including destinations still being opened, to finish.
   */
  close(): Promise<void>;
}

/**
 * Starts the local proxy on `hostname:port` (0 = any free port). Throws RangeError for bad
 * options and an Error naming the address when it cannot listen.
 */
export function startSocksServer(opts: SocksServerOptions): Promise<SocksServer> {
  try {
    return Promise.resolve(new ProxyListener(opts));
  } catch (e) {
    return Promise.reject(e);
  }
}

class ProxyListener implements SocksServer {
  readonly addr: Deno.NetAddr;
  readonly #listener: Deno.Listener;
  readonly #log: Logger;
  readonly #dialer: EgressDialer;
  readonly #credentials: Credentials | null;
  readonly #handshakeTimeoutMs: number;
  readonly #maxConnections: number;
  readonly #conns = new Set<TrackedConn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #loop: Promise<void>;
  #closing = false;
  #wake: (() => void) | null = null;
  /** Whether the current run of refusals at the connection limit was logged. */
  #fullLogged = false;

  constructor(opts: SocksServerOptions) {
    const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    const maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    if (!(handshakeTimeoutMs > 0 && Number.isFinite(handshakeTimeoutMs))) {
      throw new RangeError(
        `handshake timeout must be a positive number of milliseconds, not ${handshakeTimeoutMs}`,
      );
    }
    if (!(Number.isSafeInteger(maxConnections) && maxConnections >= 1)) {
      throw new RangeError(`max connections must be a whole number ≥ 1, not ${maxConnections}`);
    }
    if (opts.auth) {
      const credentials = new Credentials(opts.auth.username, opts.auth.password);
      const { username, password } = credentials.sizes;
      if (username < 1 || username > MAX_CREDENTIAL_BYTES) {
        throw new RangeError(
          `--username must be 1 to ${MAX_CREDENTIAL_BYTES} bytes (a SOCKS5 limit), not ${username}`,
        );
      }
      if (password < 1 || password > MAX_CREDENTIAL_BYTES) {
        throw new RangeError(
          `--password must be 1 to ${MAX_CREDENTIAL_BYTES} bytes (a SOCKS5 limit), not ${password}`,
        );
      }
      this.#credentials = credentials;
    } else {
      this.#credentials = null;
    }
    this.#log = opts.log;
    this.#dialer = opts.dialer;
    this.#handshakeTimeoutMs = handshakeTimeoutMs;
    this.#maxConnections = maxConnections;
    try {
      this.#listener = Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
    } catch (e) {
      const where = targetText(opts.hostname, opts.port);
      const hint = e instanceof Deno.errors.AddrInUse
        ? "address already in use (choose another --listen)"
        : errorText(e);
      throw new Error(`Cannot listen on ${where} for the local proxy: ${hint}`, { cause: e });
    }
    this.addr = this.#listener.addr as Deno.NetAddr;
    this.#loop = this.#accept();
  }

  async close(): Promise<void> {
    if (!this.#closing) {
      this.#closing = true;
      closeQuietly(this.#listener);
      this.#wake?.();
    }
    await this.#loop;
    for (const conn of [...this.#conns]) closeQuietly(conn);
    while (this.#tasks.size > 0) await Promise.all([...this.#tasks]);
  }

  async #accept(): Promise<void> {
    let backoff = ACCEPT_BACKOFF_MIN_MS;
    while (!this.#closing) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
        backoff = ACCEPT_BACKOFF_MIN_MS;
      } catch (e) {
        if (this.#closing) return;
        // EMFILE and friends: wait a little rather than spin; the listener stays.
        this.#log.warn("local proxy on {addr} could not accept a connection: {error}", {
          addr: targetText(this.addr.hostname, this.addr.port),
          error: errorText(e),
        });
        await this.#pause(backoff);
        backoff = Math.min(backoff * 2, ACCEPT_BACKOFF_MAX_MS);
        continue;
      }
      this.#admit(conn);
    }
  }

  #pause(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    }).finally(() => this.#wake = null);
  }

  #admit(raw: Deno.Conn): void {
    const peer = addrText(raw.remoteAddr);
    if (this.#conns.size >= this.#maxConnections) {
      closeQuietly(raw);
      const props = { peer, max: this.#maxConnections };
      if (!this.#fullLogged) {
        this.#fullLogged = true;
        this.#log.warn(
          "local proxy refused {peer}: {max} connections are open (the limit; more are closed at once until one ends)",
          props,
        );
      } else {
        this.#log.debug("local proxy refused {peer}: {max} connections are open", props);
      }
      return;
    }
    const conn = new TrackedConn(raw, () => {
      this.#conns.delete(conn);
      if (this.#conns.size < this.#maxConnections) this.#fullLogged = false;
    });
    this.#conns.add(conn);
    const task = this.#serve(conn, peer).catch((e) => {
      // Never expected: #serve contains its own failures. Logged, not thrown, all the same.
      this.#log.error("local proxy connection from {peer} failed: {error}", {
        peer,
        error: errorText(e),
      });
      closeQuietly(conn);
    });
    this.#tasks.add(task);
    task.finally(() => this.#tasks.delete(task));
  }

  async #serve(tracked: TrackedConn, peer: string): Promise<void> {
    const conn = tracked.asConn();
    const request = await this.#handshake(tracked, peer);
    if (request === null) return;
    if (request.associate) return await this.#associate(tracked, request, peer);
    const target = targetText(request.host, request.port);
    let stream: EgressStream;
    try {
      stream = await this.#dialer.open(request.host, request.port);
    } catch (e) {
      await this.#refuse(tracked, request, peer, target, e);
      return;
    }
    if (tracked.closed) {
      // The proxy is closing: nobody is left to carry bytes for.
      stream.abandon();
      return;
    }
    try {
      await request.accept(stream.address);
    } catch (e) {
      this.#log.debug("{protocol} from {peer} to {target}: the client went away ({error})", {
        protocol: request.protocol,
        peer,
        target,
        error: errorText(e),
      });
      stream.abandon();
      closeQuietly(conn);
      return;
    }
    this.#log.debug("{protocol} from {peer} to {target} via {address}", {
      protocol: request.protocol,
      peer,
      target,
      address: stream.address,
    });
    try {
      stream.attach(conn, request.initial);
    } catch (e) {
      this.#log.warn("{protocol} from {peer} to {target}: the stream could not start: {error}", {
        protocol: request.protocol,
        peer,
        target,
        error: errorText(e),
      });
      closeQuietly(conn);
    }
  }

  /** Logs why the server did not open a destination, tells the client, and closes. */
  async #refuse(
    tracked: TrackedConn,
    request: EgressRequest,
    peer: string,
    target: string,
    e: unknown,
  ): Promise<void> {
    const refusal = e instanceof EgressRefused ? e : new EgressRefused("failed", errorText(e));
    this.#log.info("{protocol} from {peer} to {target} refused ({kind}): {reason}", {
      protocol: request.protocol,
      peer,
      target,
      kind: refusal.kind,
      reason: refusal.message,
    });
    if (!tracked.closed) await request.refuse(refusal).catch(() => {});
    closeQuietly(tracked.asConn());
  }

  /**
   * SOCKS5 UDP ASSOCIATE: a UDP socket on the address the client reached us at, one association
   * on the server, relayed until the control connection (or the server's side) ends.
   */
  async #associate(tracked: TrackedConn, request: EgressRequest, peer: string): Promise<void> {
    const conn = tracked.asConn();
    const openUdp = this.#dialer.openUdp?.bind(this.#dialer);
    if (!openUdp || typeof Deno.listenDatagram !== "function") {
      this.#log.info("local proxy: {peer}: SOCKS5 UDP ASSOCIATE is not supported {why}; closed", {
        peer,
        why: openUdp ? "without Deno's --unstable-net flag" : "by this proxy's transport",
      });
      await writeAll(conn, socks5Reply(Socks5Reply.commandNotSupported)).catch(() => {});
      closeQuietly(conn);
      return;
    }
    const local = conn.localAddr as Deno.NetAddr;
    let socket: Deno.DatagramConn;
    try {
      socket = Deno.listenDatagram({ transport: "udp", hostname: local.hostname, port: 0 });
    } catch (e) {
      const why = `cannot open a UDP socket on ${local.hostname}: ${errorText(e)}`;
      return await this.#refuse(tracked, request, peer, "udp", new EgressRefused("failed", why));
    }
    const relay = socket.addr as Deno.NetAddr;
    let datagrams;
    try {
      datagrams = await openUdp();
    } catch (e) {
      closeQuietly(socket);
      return await this.#refuse(tracked, request, peer, "udp", e);
    }
    if (tracked.closed) {
      datagrams.close();
      closeQuietly(socket);
      return;
    }
    try {
      await request.accept(targetText(relay.hostname, relay.port));
    } catch {
      datagrams.close();
      closeQuietly(socket);
      closeQuietly(conn);
      return;
    }
    const totals = await relayAssociation({
      control: conn,
      socket,
      datagrams,
      clientIp: (conn.remoteAddr as Deno.NetAddr).hostname,
      clientPort: request.port,
      log: this.#log,
    });
    this.#log.debug(
      "UDP association of {peer} ended: {up} datagrams out, {down} back, {dropped} dropped",
      { peer, ...totals },
    );
  }

  /** The request a client made, or null once it was answered and closed. */
  async #handshake(tracked: TrackedConn, peer: string): Promise<EgressRequest | null> {
    const conn = tracked.asConn();
    let timedOut = false;
    // One deadline for the whole handshake: closing the socket ends whichever read is pending.
    const timer = setTimeout(() => {
      timedOut = true;
      closeQuietly(conn);
    }, this.#handshakeTimeoutMs);
    try {
      const reader = new HandshakeReader(conn);
      await reader.need(1);
      const first = reader.peek(0);
      if (first === SOCKS5_VERSION) return await socks5Handshake(conn, reader, this.#credentials);
      if (first === SOCKS4_VERSION) {
        throw new HandshakeRefused(
          "SOCKS4 is not supported: use SOCKS5 (e.g. socks5h:// or curl --socks5-hostname)",
          null,
          "info",
        );
      }
      if (!startsLikeHttp(first)) {
        throw new HandshakeRefused(
          first === TLS_HANDSHAKE
            ? "a TLS handshake arrived: this proxy speaks plain SOCKS5 and HTTP (use socks5h:// or http://, not https://, as the proxy URL)"
            : `neither SOCKS5 nor an HTTP proxy request (first byte 0x${hex(first)})`,
          null,
        );
      }
      return await httpHandshake(conn, reader, this.#credentials);
    } catch (e) {
      if (timedOut) {
        this.#log.debug(
          "local proxy: {peer} did not complete its handshake within {ms} ms; closed",
          { peer, ms: this.#handshakeTimeoutMs },
        );
      } else if (e instanceof HandshakeRefused) {
        this.#log[e.level]("local proxy: {peer}: {reason}; closed", { peer, reason: e.message });
        if (e.reply) await writeAll(conn, e.reply).catch(() => {});
      } else if (e instanceof HandshakeEof) {
        this.#log.debug("local proxy: {peer}: {reason}", { peer, reason: e.message });
      } else if (!this.#closing) {
        this.#log.debug("local proxy: {peer}: handshake failed: {error}", {
          peer,
          error: errorText(e),
        });
      }
      closeQuietly(conn);
      return null;
    } finally {
      clearTimeout(timer);
    }
  }
}

const TLS_HANDSHAKE = 0x16;

/** Request lines start with an upper-case method (blank lines before one are allowed). */
function startsLikeHttp(first: number): boolean {
  return (first >= 0x41 && first <= 0x5a) || first === 13 || first === 10;
}

function hex(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}

function addrText(addr: Deno.Addr): string {
  return addr.transport === "tcp" || addr.transport === "udp"
    ? targetText(addr.hostname, addr.port)
    : addr.transport;
}
