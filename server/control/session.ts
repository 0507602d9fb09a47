// One connected client: its control channel, handshake, heartbeat, tunnels and idle streams.
import type { Logger } from "@logtape/logtape";
import {
  type ClientControlMessage,
  CloseCode,
  decodeClientControl,
  encode,
  type ErrorCode,
  PROTOCOL_VERSION,
  ProtocolError,
  type ServerControlMessage,
  type TunnelGrant,
  type TunnelRefusal,
} from "../../shared/protocol.ts";
import { type StreamBridge, truncateReason } from "../../shared/stream_bridge.ts";
import type { Principal } from "../auth.ts";
import type { ServerConfig } from "../config.ts";
import { TunnelRefused } from "../listeners/port_allocator.ts";
import type { Stats } from "../stats.ts";
import type { Broker, BrokerSession, Claim } from "../streams/broker.ts";
import type { PendingConn, Tunnel, TunnelOwnerSession, TunnelRegistry } from "../tunnels.ts";

/** Shared parts every session uses. */
export interface SessionDeps {
  readonly config: ServerConfig;
  readonly registry: TunnelRegistry;
  readonly broker: Broker;
  readonly stats: Stats;
  readonly log: Logger;
  /** Live sessions by id, for authenticating data streams. */
  readonly sessions: Map<string, ControlSession>;
  /** True once the server is shutting down. */
  readonly shuttingDown: () => boolean;
  readonly now: () => number;
}

/** A client's control channel and everything hanging off it. */
export class ControlSession implements BrokerSession, TunnelOwnerSession {
  readonly id = crypto.randomUUID();
  readonly secret = crypto.randomUUID().replaceAll("-", "") +
    crypto.randomUUID().replaceAll("-", "");
  readonly owner: string;
  readonly remote: string;
  readonly idle: StreamBridge[] = [];
  readonly claims = new Map<string, Claim>();
  readonly #tunnels = new Set<Tunnel>();
  readonly #ws: WebSocket;
  readonly #deps: SessionDeps;
  readonly #fallbackHost: string;
  #welcomed = false;
  #closed = false;
  #lastSeen: number;
  #handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;

  constructor(
    ws: WebSocket,
    principal: Principal,
    remote: string,
    fallbackHost: string,
    deps: SessionDeps,
  ) {
    this.#ws = ws;
    this.owner = principal.owner;
    this.remote = remote;
    this.#fallbackHost = fallbackHost;
    this.#deps = deps;
    this.#lastSeen = deps.now();
    ws.onopen = () => {
      this.#handshakeTimer = setTimeout(() => {
        deps.stats.refusal("handshake_timeout");
        this.#fail(
          "handshake_timeout",
          `no hello within ${deps.config.handshakeTimeoutMs / 1000} s`,
          CloseCode.handshakeTimeout,
        );
      }, deps.config.handshakeTimeoutMs);
    };
    ws.onmessage = (e) => this.#onMessage(e.data);
    ws.onclose = () => this.#onClose();
    ws.onerror = () => {};
  }

  /** Tunnels this session serves. */
  tunnels(): Iterable<Tunnel> {
    return this.#tunnels;
  }

  /** Asks the client for a stream for `pending`; null if the session cannot take more claims. */
  requestStream(tunnel: Tunnel, pending: PendingConn): string | null {
    if (this.#closed || !this.#welcomed) return null;
    if (this.claims.size >= this.#deps.config.maxPending * Math.max(1, this.#tunnels.size)) {
      this.#deps.broker.sweepClaims(this);
      if (this.claims.size >= this.#deps.config.maxPending * Math.max(1, this.#tunnels.size)) {
        return null;
      }
    }
    const claim = crypto.randomUUID();
    this.claims.set(claim, this.#deps.broker.newClaim(tunnel, pending));
    this.#send({ type: "open", claim, tunnel: tunnel.name });
    return claim;
  }

  /** Another session of the same owner took `tunnel` over. */
  lostTunnel(tunnel: Tunnel, reason: string): void {
    if (!this.#tunnels.delete(tunnel)) return;
    this.#send({ type: "tunnel_close", name: tunnel.name, reason });
    if (this.#tunnels.size === 0 && this.#welcomed) {
      this.#fail("name_in_use", `every tunnel of this session was ${reason}`, CloseCode.replaced);
    }
  }

  /** Tells the client the server is going away and closes the channel. */
  shutdown(): void {
    this.#fail(
      "shutting_down",
      "the server is shutting down; reconnect later",
      CloseCode.goingAway,
    );
  }

  /** True once the control channel is gone. */
  get closed(): boolean {
    return this.#closed;
  }

  #send(msg: ServerControlMessage): void {
    if (this.#ws.readyState !== WebSocket.OPEN) return;
    try {
      this.#ws.send(encode(msg));
    } catch {
      // closing; onclose does the cleanup
    }
  }

  #fail(code: ErrorCode, message: string, closeCode: number): void {
    this.#send({ type: "error", code, message });
    try {
      this.#ws.close(closeCode, truncateReason(message));
    } catch {
      // already closing
    }
    this.#onClose();
  }

  #onMessage(data: unknown): void {
    if (this.#closed) return;
    this.#lastSeen = this.#deps.now();
    let msg: ClientControlMessage;
    try {
      if (typeof data !== "string") {
        throw new ProtocolError("control channel carries text frames only");
      }
      msg = decodeClientControl(data);
    } catch (e) {
      const err = e instanceof ProtocolError ? e : new ProtocolError(String(e));
      this.#deps.stats.error("protocol");
      this.#deps.stats.refusal("bad_message");
      this.#deps.log.warn("session {id} from {remote}: {error}", {
        id: this.id,
        remote: this.remote,
        error: err.message,
      });
      this.#fail("bad_message", err.message, err.closeCode);
      return;
    }
    switch (msg.type) {
      case "hello":
        this.#onHello(msg);
        return;
      case "ping":
        this.#send({ type: "pong", t: msg.t });
        return;
      case "pong":
        return;
      default: {
        const never: never = msg;
        throw new Error(`unhandled ${String(never)}`);
      }
    }
  }

  #onHello(msg: Extract<ClientControlMessage, { type: "hello" }>): void {
    const { config, registry, stats, log } = this.#deps;
    if (this.#welcomed) {
      this.#fail("bad_message", "hello sent twice", CloseCode.protocolError);
      return;
    }
    clearTimeout(this.#handshakeTimer);
    if (msg.version !== PROTOCOL_VERSION) {
      stats.refusal("version_mismatch");
      const side = msg.version > PROTOCOL_VERSION
        ? "upgrade mport-server"
        : "upgrade the mport client";
      this.#fail(
        "version_mismatch",
        `protocol version mismatch: the client speaks v${msg.version}, the server speaks v${PROTOCOL_VERSION} (${side})`,
        CloseCode.versionMismatch,
      );
      return;
    }
    const publicHost = config.publicHost ?? (msg.host || this.#fallbackHost);
    const granted: TunnelGrant[] = [];
    const refused: TunnelRefusal[] = [];
    for (const req of msg.tunnels) {
      try {
        const t = registry.acquire(this, req, publicHost);
        this.#tunnels.add(t);
        granted.push(t.grant());
      } catch (e) {
        if (!(e instanceof TunnelRefused)) throw e;
        stats.refusal(e.code);
        refused.push({ name: req.name, code: e.code, message: e.message });
        log.warn("session {id}: tunnel {name} refused: {reason}", {
          id: this.id,
          name: req.name,
          reason: e.message,
        });
      }
    }
    this.#welcomed = true;
    stats.clientsConnected++;
    this.#send({
      type: "welcome",
      version: PROTOCOL_VERSION,
      sessionId: this.id,
      sessionSecret: this.secret,
      heartbeatMs: config.heartbeatMs,
      tunnels: granted,
      refused,
    });
    log.info("client {remote} connected as session {id} with {n} tunnel(s)", {
      remote: this.remote,
      id: this.id,
      n: granted.length,
    });
    this.#heartbeatTimer = setInterval(() => this.#heartbeat(), config.heartbeatMs);
    this.#deps.broker.serveWaiting(this);
  }

  #heartbeat(): void {
    const { config, now } = this.#deps;
    if (now() - this.#lastSeen > config.heartbeatMs * 3) {
      this.#deps.stats.error("heartbeat_timeout");
      this.#deps.log.warn("session {id} from {remote}: no heartbeat, closing", {
        id: this.id,
        remote: this.remote,
      });
      this.#fail("internal", "no heartbeat from the client", CloseCode.heartbeatTimeout);
      return;
    }
    this.#send({ type: "ping", t: now() });
    this.#deps.broker.sweepClaims(this);
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#handshakeTimer);
    clearInterval(this.#heartbeatTimer);
    const { registry, sessions, stats, log, config } = this.#deps;
    sessions.delete(this.id);
    if (this.#welcomed) stats.clientsConnected--;
    for (const s of [...this.idle]) s.abort("session closed");
    this.idle.length = 0;
    this.claims.clear();
    if (!this.#deps.shuttingDown()) {
      for (const t of this.#tunnels) {
        if (t.session === this) {
          log.info("tunnel {name} keeps {url} for {grace} s while its client is away", {
            name: t.name,
            url: t.url,
            grace: config.graceMs / 1000,
          });
        }
      }
      registry.detach(this, config.graceMs);
    }
    if (this.#welcomed) {
      log.info("session {id} from {remote} closed", { id: this.id, remote: this.remote });
    }
  }
}
