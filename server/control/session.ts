// One connected client: its control channel, handshake, heartbeat, tunnels and data connections.
import type { Logger } from "@logtape/logtape";
import {
  type ClientControlMessage,
  CloseCode,
  decodeClientControl,
  encode,
  type ErrorCode,
  HEARTBEAT_MISSES,
  MAX_DATA_CONNS_PER_SESSION,
  PROTOCOL_VERSION,
  ProtocolError,
  type ServerControlMessage,
  truncateReason,
  type TunnelGrant,
  type TunnelRefusal,
  type VpnLease,
} from "../../shared/protocol.ts";
import type { Mux } from "../../shared/mux.ts";
import { type WsConn, WsProtocolError } from "../../shared/ws_conn.ts";
import type { Accounts, Principal } from "../accounts/accounts.ts";
import type { UsageMeter } from "../accounts/usage.ts";
import type { UserLimits } from "../store/store.ts";
import type { ServerConfig } from "../config.ts";
import { TunnelRefused } from "../listeners/port_allocator.ts";
import { formatSize } from "../../shared/units.ts";
import type { Stats } from "../stats.ts";
import type { Egress, EgressUser } from "../egress/egress.ts";
import type { VpnGateway, VpnUser } from "../vpn/vpn_gateway.ts";
import type { Broker, BrokerSession } from "../streams/broker.ts";
import type { Tunnel, TunnelOwnerSession, TunnelRegistry } from "../tunnels.ts";

const TEXT = new TextDecoder();

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
  readonly accounts: Accounts;
  readonly usage: UsageMeter;
  /** Appends an audit event (never throws; failures are logged). */
  readonly audit: (kind: string, userId: number | null, detail: Record<string, unknown>) => void;
  /** Egress (`mport socks`): its rules and its answer to a hello that asks for it. */
  readonly egress?: Egress;
  /** The VPN gateway (`--vpn-pool`): leases at hello, packet streams afterwards. */
  readonly vpn?: VpnGateway;
  /** Told when a client is welcomed and when that session ends (the API's live events). */
  readonly onClientEvent?: (
    kind: "client.connected" | "client.disconnected",
    session: ControlSession,
  ) => void;
}

/** A client's control channel and everything hanging off it. */
export class ControlSession implements BrokerSession, TunnelOwnerSession {
  readonly id = crypto.randomUUID();
  readonly secret = crypto.randomUUID().replaceAll("-", "") +
    crypto.randomUUID().replaceAll("-", "");
  readonly owner: string;
  readonly userId: number;
  readonly userName: string;
  limits: UserLimits;
  readonly principal: Principal;
  readonly remote: string;
  /** When the control channel was accepted. */
  readonly startedAt: number;
  /** Open data connections of this session. */
  readonly muxes = new Set<Mux>();
  /** The client installation's id from `hello`; until then (or without one) unique to this session. */
  #clientId: string;
  readonly #tunnels = new Set<Tunnel>();
  readonly #ws: WsConn;
  readonly #deps: SessionDeps;
  readonly #fallbackHost: string;
  /** The version the client said it is (null: it did not say). */
  clientVersion: string | null = null;
  /** The user may use egress (from the token; refreshed by the periodic re-check). */
  #mayEgress: boolean;
  /** The user may use the VPN (from the token; refreshed by the periodic re-check). */
  #mayVpn: boolean;
  /** The virtual address leased at hello (`mport vpn`), held until the session ends. */
  #vpnAddress: string | null = null;
  /** The client came through a trusted proxy over https (HTTP tunnel URLs are https then). */
  readonly #viaHttpsProxy: boolean;
  #welcomed = false;
  #helloSeen = false;
  #revoked = false;
  /** The client said `bye`: its tunnels go at once and its open streams may finish. */
  #bye = false;
  #closed = false;
  #lastSeen: number;
  #handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  #heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  #recheckTimer: ReturnType<typeof setInterval> | undefined;
  #lastNotice = 0;

  constructor(
    ws: WsConn,
    principal: Principal,
    remote: string,
    fallbackHost: string,
    deps: SessionDeps,
    viaHttpsProxy = false,
  ) {
    this.#viaHttpsProxy = viaHttpsProxy;
    this.#ws = ws;
    this.owner = principal.owner;
    this.userId = principal.userId;
    this.userName = principal.userName;
    this.limits = principal.limits;
    this.principal = principal;
    this.#mayEgress = principal.egress;
    this.#mayVpn = principal.vpn;
    this.remote = remote;
    this.startedAt = deps.now();
    this.#clientId = `anonymous-${this.id}`;
    this.#fallbackHost = fallbackHost;
    this.#deps = deps;
    this.#lastSeen = deps.now();
    this.#handshakeTimer = setTimeout(() => {
      deps.stats.refusal("handshake_timeout");
      this.#fail(
        "handshake_timeout",
        `no hello within ${deps.config.handshakeTimeoutMs / 1000} s`,
        CloseCode.handshakeTimeout,
      );
    }, deps.config.handshakeTimeoutMs);
    this.#readLoop();
  }

  async #readLoop(): Promise<void> {
    try {
      while (!this.#closed) {
        const msg = await this.#ws.read();
        if (msg === null) break;
        this.#onMessage(msg.text ? TEXT.decode(msg.data) : msg.data);
      }
    } catch (e) {
      if (e instanceof WsProtocolError) {
        this.#countBadMessage(e.message);
      } else {
        this.#deps.log.debug("control channel of session {id} failed: {error}", {
          id: this.id,
          error: String(e),
        });
      }
    }
    this.#onClose();
  }

  /** The client's persistent id (a per-session one for clients that send none). */
  get clientId(): string {
    return this.#clientId;
  }

  /** Tunnels this session serves. */
  /** The session's user as egress sees it (permission, limits, address). */
  egressUser(): EgressUser {
    return {
      owner: this.owner,
      userId: this.userId,
      userName: this.userName,
      limits: this.limits,
      mayEgress: this.#mayEgress,
      remote: this.remote,
    };
  }

  /** The session's user as the VPN gateway sees it. */
  vpnUser(): VpnUser {
    return {
      userId: this.userId,
      userName: this.userName,
      limits: this.limits,
      mayVpn: this.#mayVpn,
      clientId: this.#clientId,
      remote: this.remote,
    };
  }

  /** The virtual address leased to this session, or null. */
  get vpnAddress(): string | null {
    return this.#vpnAddress;
  }

  tunnels(): Iterable<Tunnel> {
    return this.#tunnels;
  }

  /** The open data connection with the fewest streams, or null while there is none. */
  pickMux(): Mux | null {
    if (this.#closed || !this.#welcomed) return null;
    let best: Mux | null = null;
    for (const m of this.muxes) {
      if (!m.closed && !m.exhausted && (!best || m.size < best.size)) best = m;
    }
    return best;
  }

  /** A data connection of this client arrived; returns a refusal message or null. */
  addMux(mux: Mux): string | null {
    if (this.#closed) return "session closed";
    if (this.muxes.size >= MAX_DATA_CONNS_PER_SESSION) {
      return `too many data connections: at most ${MAX_DATA_CONNS_PER_SESSION} per session`;
    }
    this.muxes.add(mux);
    mux.done.then(() => this.muxes.delete(mux));
    this.#deps.broker.serveWaiting(this);
    return null;
  }

  /** Another session of the same owner took `tunnel` over. */
  lostTunnel(tunnel: Tunnel, reason: string): void {
    if (!this.#tunnels.delete(tunnel)) return;
    this.#send({ type: "tunnel_close", name: tunnel.name, reason });
    if (this.#tunnels.size === 0 && this.#welcomed) {
      this.#fail("name_in_use", `every tunnel of this session was ${reason}`, CloseCode.replaced);
    }
  }

  /** Sends a notice the client prints; at most one per 10 s so a busy tunnel cannot flood it. */
  notice(code: ErrorCode, message: string): void {
    const now = this.#deps.now();
    if (now - this.#lastNotice < 10_000) return;
    this.#lastNotice = now;
    this.#send({ type: "notice", code, message });
  }

  /** Tells the client the server is going away and closes the channel. */
  shutdown(): void {
    this.#fail(
      "shutting_down",
      // The client adds what it does about it ("; reconnecting in 0.4 s").
      "the server is shutting down",
      CloseCode.goingAway,
    );
  }

  /**
   * Ends the session on an operator's request (REST API): tells the client why and closes the
   * channel. Its tunnels are released at once, like a revoked session's: the operator wants the
   * client gone, not waited for.
   */
  disconnect(reason: string): void {
    if (this.#closed) return;
    this.#revoked = true;
    this.#fail("unauthorized", reason, CloseCode.unauthorized);
  }

  /** True once the control channel is gone. */
  get closed(): boolean {
    return this.#closed;
  }

  #send(msg: ServerControlMessage): void {
    if (!this.#ws.isOpen) return;
    try {
      this.#ws.sendText(encode(msg));
    } catch {
      // closing; the read loop does the cleanup
    }
  }

  #fail(code: ErrorCode, message: string, closeCode: number): void {
    this.#send({ type: "error", code, message });
    this.#ws.close(closeCode, truncateReason(message)).catch(() => {});
    this.#onClose();
  }

  /** Counts and logs a malformed message from the client. */
  #countBadMessage(error: string): void {
    this.#deps.stats.error("protocol");
    this.#deps.stats.refusal("bad_message");
    this.#deps.log.warn("session {id} from {remote}: {error}", {
      id: this.id,
      remote: this.remote,
      error,
    });
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
      this.#countBadMessage(err.message);
      this.#fail("bad_message", err.message, err.closeCode);
      return;
    }
    switch (msg.type) {
      case "hello":
        this.#onHello(msg).catch((e) => {
          this.#deps.stats.error("internal");
          this.#deps.log.error("session {id}: hello failed: {error}", {
            id: this.id,
            error: String(e),
          });
          this.#fail(
            "internal",
            "the server failed to set up this session; retrying",
            CloseCode.internal,
          );
        });
        return;
      case "ping":
        this.#send({ type: "pong", t: msg.t });
        return;
      case "pong":
        return;
      case "bye":
        this.#onBye();
        return;
      default: {
        const never: never = msg;
        throw new Error(`unhandled ${String(never)}`);
      }
    }
  }

  /** The client stops on purpose: free its ports now (reservations stay), then close. */
  #onBye(): void {
    this.#bye = true;
    const n = [...this.#tunnels].filter((t) => t.session === this).length;
    this.#deps.log.info(
      "client {remote} ({user}) said bye: session {id} ends and releases {n} tunnel(s) now",
      { remote: this.remote, user: this.userName, id: this.id, n },
    );
    this.#ws.close(CloseCode.normal, "bye").catch(() => {});
    this.#onClose();
  }

  async #onHello(msg: Extract<ClientControlMessage, { type: "hello" }>): Promise<void> {
    const { config, registry, stats, log, usage } = this.#deps;
    if (this.#helloSeen) {
      this.#fail("bad_message", "hello sent twice", CloseCode.protocolError);
      return;
    }
    this.#helloSeen = true;
    clearTimeout(this.#handshakeTimer);
    if (msg.clientId !== undefined) this.#clientId = msg.clientId;
    if (msg.clientVersion !== undefined) this.clientVersion = msg.clientVersion;
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
    const refuse = (name: string, code: ErrorCode, message: string) => {
      stats.refusal(code);
      refused.push({ name, code, message });
      this.#deps.audit("tunnel_refused", this.userId, {
        tunnel: name,
        code,
        message,
        address: this.remote,
      });
      log.warn("session {id}: tunnel {name} refused: {reason}", {
        id: this.id,
        name,
        reason: message,
      });
    };
    let overQuota: string | null = null;
    const quota = this.limits.monthlyQuotaBytes ?? config.monthlyQuotaBytes;
    try {
      const used = await usage.monthBytes(this.userId);
      if (quota !== null && used >= quota) {
        overQuota = `monthly transfer quota of ${formatSize(quota)} reached (${
          formatSize(used)
        } used this month)`;
      }
    } catch (e) {
      log.error("cannot read usage of user {user}: {error}", {
        user: this.userName,
        error: String(e),
      });
    }
    for (const req of msg.tunnels) {
      if (this.#closed) break;
      if (overQuota) {
        refuse(req.name, "quota_exceeded", overQuota);
        continue;
      }
      try {
        const t = await registry.acquire(this, req, publicHost, this.#viaHttpsProxy);
        this.#tunnels.add(t);
        granted.push(t.grant());
      } catch (e) {
        if (e instanceof TunnelRefused) {
          refuse(req.name, e.code, e.message);
        } else {
          stats.error("store");
          log.error("tunnel {name}: {error}", { name: req.name, error: String(e) });
          refuse(
            req.name,
            "internal",
            "the server could not open the tunnel (database unavailable); retrying",
          );
        }
      }
    }
    if (this.#closed) {
      // The client left while we were opening tunnels: keep them for the grace period as usual
      // (or release them, after a bye).
      this.#letGo();
      return;
    }
    this.#welcomed = true;
    stats.clientsConnected++;
    let vpn: VpnLease | string | undefined;
    if (msg.vpn) {
      vpn = this.#deps.vpn
        ? this.#deps.vpn.lease(this.vpnUser())
        : "this server does not offer a VPN (its operator starts mport-server with --vpn-pool)";
      if (typeof vpn !== "string") this.#vpnAddress = vpn.address;
    }
    this.#send({
      type: "welcome",
      version: PROTOCOL_VERSION,
      sessionId: this.id,
      sessionSecret: this.secret,
      heartbeatMs: config.heartbeatMs,
      tunnels: granted,
      refused,
      ...(msg.egress
        ? {
          egress: this.#deps.egress
            ? this.#deps.egress.unavailable(this.egressUser())
            : "this server does not offer egress",
        }
        : {}),
      ...(vpn === undefined ? {} : { vpn }),
    });
    log.info("client {remote} ({user}) connected as session {id} with {n} tunnel(s)", {
      remote: this.remote,
      user: this.userName,
      id: this.id,
      n: granted.length,
    });
    this.#deps.onClientEvent?.("client.connected", this);
    this.#deps.audit("client_connected", this.userId, {
      address: this.remote,
      token: this.principal.tokenId === null
        ? "static"
        : `${this.principal.tokenId}${
          this.principal.tokenLabel ? ` (${this.principal.tokenLabel})` : ""
        }`,
      session: this.id,
      tunnels: granted.map((g) =>
        g.kind === "http" ? `${g.name}:${g.url}` : `${g.name}:${g.remotePort}`
      )
        .join(","),
    });
    this.#heartbeatTimer = setInterval(() => this.#heartbeat(), config.heartbeatMs);
    this.#recheckTimer = setInterval(() => {
      this.#recheck().catch((e) => {
        this.#deps.log.error("session {id}: re-check failed: {error}", {
          id: this.id,
          error: String(e),
        });
      });
    }, config.recheckMs);
    this.#deps.broker.serveWaiting(this);
  }

  async #recheck(): Promise<void> {
    let result;
    try {
      result = await this.#deps.accounts.recheck(this.principal);
    } catch (e) {
      // A database hiccup must not disconnect everyone; the next check will tell.
      this.#deps.log.warn("re-checking session {id} failed: {error}", {
        id: this.id,
        error: String(e),
      });
      return;
    }
    if (this.#closed) return;
    this.limits = result.limits;
    this.#mayEgress = result.permissions.egress;
    this.#mayVpn = result.permissions.vpn;
    if (!this.#mayVpn && this.#vpnAddress !== null) {
      this.#deps.vpn?.cut(
        this.#vpnAddress,
        `user ${this.userName} may no longer use the VPN (the permission was withdrawn)`,
      );
    }
    for (const t of this.#tunnels) t.limits = result.limits;
    if (result.reason) {
      this.#deps.stats.refusal("revoked");
      this.#deps.log.info("disconnecting session {id} of {user}: {reason}", {
        id: this.id,
        user: this.userName,
        reason: result.reason,
      });
      const advice = /token/.test(result.reason)
        ? "ask the operator for a new token"
        : "ask the operator";
      // Its client cannot come back with these credentials: free the ports now, not after --grace.
      this.#revoked = true;
      this.#fail("unauthorized", `${result.reason}: ${advice}`, CloseCode.unauthorized);
    }
  }

  #heartbeat(): void {
    const { config, now } = this.#deps;
    if (now() - this.#lastSeen > config.heartbeatMs * HEARTBEAT_MISSES) {
      this.#deps.stats.error("heartbeat_timeout");
      this.#deps.log.warn("session {id} from {remote}: no heartbeat, closing", {
        id: this.id,
        remote: this.remote,
      });
      this.#fail("internal", "no heartbeat from the client", CloseCode.heartbeatTimeout);
      return;
    }
    this.#send({ type: "ping", t: now() });
  }

  #onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#handshakeTimer);
    clearInterval(this.#heartbeatTimer);
    clearInterval(this.#recheckTimer);
    const { sessions, stats, log, config } = this.#deps;
    sessions.delete(this.id);
    if (this.#welcomed) stats.clientsConnected--;
    // Streams ride on the data connections: without the session they are reset, except while the
    // server shuts down or after a bye, which let them drain first.
    if (this.#bye) this.#drainMuxes();
    else if (!this.#deps.shuttingDown()) {
      for (const m of this.muxes) m.close(CloseCode.normal, "session closed");
    }
    if (!this.#revoked && !this.#bye && !this.#deps.shuttingDown()) {
      for (const t of this.#tunnels) {
        if (t.session === this) {
          log.info("tunnel {name} keeps {url} for {grace} s while its client is away", {
            name: t.name,
            url: t.url,
            grace: config.graceMs / 1000,
          });
        }
      }
    }
    this.#letGo();
    if (this.#vpnAddress !== null) this.#deps.vpn?.release(this.vpnUser());
    if (this.#welcomed) {
      log.info("session {id} from {remote} closed", { id: this.id, remote: this.remote });
      this.#deps.onClientEvent?.("client.disconnected", this);
      this.#deps.audit("client_disconnected", this.userId, {
        address: this.remote,
        session: this.id,
        ...(this.#bye ? { bye: true } : {}),
      });
    }
  }

  /**
   * The session is over: its tunnels are released at once when its credentials are gone or it
   * said bye (their reservations stay), and otherwise kept for the grace period.
   */
  #letGo(): void {
    const { registry, config } = this.#deps;
    if (this.#revoked || this.#bye) {
      const reason = this.#revoked
        ? "its client's credentials are no longer valid"
        : "its client stopped (bye)";
      for (const t of this.#tunnels) if (t.session === this) registry.release(t, reason);
    } else if (!this.#deps.shuttingDown()) {
      registry.detach(this, config.graceMs);
    }
  }

  /**
   * After a bye the client finishes its open streams and then closes its data connections; the
   * server closes idle ones now and the rest after --drain, so a client cannot keep them forever.
   */
  #drainMuxes(): void {
    const open = [...this.muxes].filter((m) => !m.closed);
    for (const m of open) if (m.size === 0) m.close(CloseCode.normal, "session closed");
    const left = open.filter((m) => !m.closed && m.size > 0);
    if (left.length === 0) return;
    const timer = setTimeout(() => {
      for (const m of left) m.close(CloseCode.normal, "drain deadline reached after bye");
    }, this.#deps.config.drainMs);
    Promise.all(left.map((m) => m.done)).then(() => clearTimeout(timer));
  }
}
