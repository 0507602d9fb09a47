// One control-channel connection of the client: hello, welcome, stream requests, heartbeat.
// Every text the server sends passes through `printable` here, before anything can print it.
import type { Logger } from "@logtape/logtape";
import { formatHostPort, unbracket } from "../shared/address.ts";
import {
  type ClientControlMessage,
  CloseCode,
  controlPath,
  decodeServerControl,
  encode,
  type ErrorCode,
  HEARTBEAT_MISSES,
  MAX_CONTROL_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  ProtocolError,
  type ServerControlMessage,
  truncateReason,
  type TunnelGrant,
  type TunnelRefusal,
  type TunnelRequest,
  type VpnLease,
} from "../shared/protocol.ts";
import { errorText } from "../shared/error_text.ts";
import type { Mux } from "../shared/mux.ts";
import { printable } from "../shared/sanitize.ts";
import { MPORT_VERSION } from "../shared/version.ts";
import type { WsConn } from "../shared/ws_conn.ts";
import type { ClientConfig, TunnelSpec } from "./config.ts";
import { DataPool, type StreamCounters } from "./streams.ts";
import type { TunnelGates } from "./tunnel_gate.ts";
import type { HttpTunnels } from "./http/http_tunnels.ts";
import { localUrl } from "./http_config.ts";
import { DialError, dialServer } from "./ws_dial.ts";

/** How a session ended. */
export interface SessionEnd {
  /** Retrying cannot help (wrong token, version mismatch): the client should exit. */
  readonly fatal: boolean;
  /** One sentence for the user. */
  readonly message: string;
  /** The session got a welcome (the backoff restarts after a healthy session). */
  readonly welcomed: boolean;
  readonly code?: ErrorCode;
}

/** What a session reports to the reconnect loop. */
export interface SessionEvents {
  onReady(grant: TunnelGrant, spec: TunnelSpec): void;
  onRefused(refusal: TunnelRefusal, spec: TunnelSpec | undefined): void;
  onTunnelClosed(name: string, reason: string): void;
  onNotice(message: string): void;
  /** The server accepted this client's egress (after every welcome that did). */
  onEgress?(): void;
  /**
   * `mport vpn`: the server's lease, after every welcome; `pickMux` finds this session's data
   * connections. A rejection ends the session with its message (fatal when `fatal` is set on it).
   */
  onVpn?(
    lease: VpnLease,
    pickMux: () => Mux | null,
    lost: (message: string) => void,
  ): Promise<void>;
}

// `name_in_use` as a session error: a newer connection of this client id took every tunnel over
// (a second copy of this client), so reconnecting would only take them back and forth.
const FATAL: ReadonlySet<ErrorCode> = new Set(["unauthorized", "version_mismatch", "name_in_use"]);
const UNFIXABLE: ReadonlySet<ErrorCode> = new Set([
  "port_out_of_range",
  "tunnel_limit",
  "quota_exceeded",
  "name_in_use",
]);

/** Runs one control connection until it ends; resolves with why. */
export class ClientSession {
  readonly #config: ClientConfig;
  /** This installation's persistent id, sent in `hello`. */
  readonly #clientId: string;
  readonly #log: Logger;
  readonly #events: SessionEvents;
  readonly #counters: StreamCounters;
  /** Per-tunnel caps, shared with the client's other sessions. */
  readonly #gates: TunnelGates;
  /** Port to ask for per tunnel name (the last one granted, so a reconnect gets it back). */
  readonly #ports: Map<string, number>;
  #ws: WsConn | null = null;
  #pool: DataPool | null = null;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastSeen = Date.now();
  #end: SessionEnd | null = null;
  #stopped = false;

  constructor(
    config: ClientConfig,
    clientId: string,
    ports: Map<string, number>,
    counters: StreamCounters,
    gates: TunnelGates,
    events: SessionEvents,
    log: Logger,
    http: HttpTunnels,
  ) {
    this.#http = http;
    this.#config = config;
    this.#clientId = clientId;
    this.#ports = ports;
    this.#counters = counters;
    this.#gates = gates;
    this.#events = events;
    this.#log = log;
  }

  readonly #http: HttpTunnels;

  /** Data connections of this session (for draining on shutdown). */
  get pool(): DataPool | null {
    return this.#pool;
  }

  /** Connects and runs until the channel closes. */
  async run(): Promise<SessionEnd> {
    let ws: WsConn;
    try {
      ws = await dialServer(
        this.#config,
        controlPath(this.#config.pathPrefix),
        this.#config.token.reveal(),
        MAX_CONTROL_MESSAGE_BYTES,
      );
    } catch (e) {
      return dialFailure(e);
    }
    this.#ws = ws;
    if (this.#stopped) {
      ws.close(CloseCode.normal, "client stopped").catch(() => {});
      return { fatal: true, message: "client stopped", welcomed: false };
    }
    const tunnels = this.#config.tunnels.map((t): TunnelRequest =>
      t.http
        ? {
          name: t.name,
          kind: "http",
          local: localUrl(t.http.target),
          remotePort: 0,
          ...(t.http.subdomain !== null ? { subdomain: t.http.subdomain } : {}),
          ...(t.http.domain !== null ? { domain: t.http.domain } : {}),
        }
        : {
          name: t.name,
          kind: t.udp ? "udp" : "tcp",
          local: formatHostPort(t.localHost, t.localPort),
          remotePort: t.remotePort || this.#ports.get(t.name) || 0,
        }
    );
    ws.sendText(encode({
      type: "hello",
      version: PROTOCOL_VERSION,
      tunnels,
      host: unbracket(this.#config.server.hostname),
      clientId: this.#clientId,
      ...(this.#config.egress ? { egress: true } : {}),
      ...(this.#config.vpn ? { vpn: true } : {}),
      clientVersion: MPORT_VERSION,
    }));
    let welcomed = false;
    try {
      while (!this.#end) {
        const frame = await ws.read();
        if (frame === null) break;
        this.#lastSeen = Date.now();
        let msg: ServerControlMessage;
        try {
          if (!frame.text) {
            throw new ProtocolError("server sent a binary frame on the control channel");
          }
          msg = decodeServerControl(new TextDecoder().decode(frame.data));
        } catch (err) {
          this.#finish({
            fatal: false,
            message: `protocol error from server: ${printable((err as Error).message)}`,
            welcomed,
          });
          break;
        }
        if (msg.type === "welcome") welcomed = true;
        this.#onMessage(msg);
      }
    } catch (e) {
      this.#finish({
        fatal: false,
        message: `connection to the server lost: ${printable((e as Error).message)}`,
        welcomed,
      });
    }
    const info = await ws.closed;
    this.#finish({
      fatal: false,
      // A server that says why in a sentence ("the server is shutting down") needs no prefix.
      message: info.reason
        ? /^the server /.test(info.reason)
          ? printable(info.reason)
          : `connection closed: ${printable(info.reason)}`
        : `connection closed (code ${info.code})`,
      welcomed,
    });
    return this.#end!;
  }

  /**
   * Closes the control channel (shutdown) after a `bye`, so the server frees the ports at once
   * instead of holding them for a client that is not coming back; data connections are left to
   * the caller.
   */
  close(): void {
    this.#stopped = true;
    this.#send({ type: "bye" });
    this.#finish({ fatal: true, message: "client stopped", welcomed: true });
  }

  #finish(end: SessionEnd): void {
    if (!this.#end) this.#end = end;
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#pool?.stop();
    const ws = this.#ws;
    if (ws && ws.isOpen) ws.close(CloseCode.normal, truncateReason(end.message)).catch(() => {});
  }

  #onMessage(msg: ServerControlMessage): void {
    switch (msg.type) {
      case "welcome":
        this.#onWelcome(msg);
        return;
      case "tunnel_close":
        this.#events.onTunnelClosed(printable(msg.name, 64), printable(msg.reason));
        return;
      case "ping":
        this.#send({ type: "pong", t: msg.t });
        return;
      case "pong":
        return;
      case "notice":
        this.#events.onNotice(printable(msg.message));
        return;
      case "error":
        this.#finish({
          fatal: FATAL.has(msg.code),
          message: printable(msg.message),
          welcomed: this.#pool !== null,
          code: msg.code,
        });
        return;
      default: {
        const never: never = msg;
        throw new Error(`unhandled ${String(never)}`);
      }
    }
  }

  #onWelcome(msg: Extract<ServerControlMessage, { type: "welcome" }>): void {
    const specs = new Map(this.#config.tunnels.map((t) => [t.name, t]));
    for (const r of msg.refused) {
      const spec = specs.get(r.name);
      // A remembered (not user-chosen) port that is gone: ask for any port next time.
      if (
        spec && spec.remotePort === 0 && (r.code === "port_taken" || r.code === "port_out_of_range")
      ) {
        this.#ports.delete(r.name);
      }
      this.#events.onRefused(
        { ...r, name: printable(r.name, 64), message: printable(r.message) },
        spec,
      );
    }
    const wantsEgress = this.#config.egress !== null;
    if (wantsEgress && msg.egress !== null) {
      // An older server does not answer at all; one that does says why egress is not for us.
      const why = msg.egress === undefined
        ? "the server does not offer egress (upgrade mport-server)"
        : printable(msg.egress);
      this.#finish({ fatal: true, message: why, welcomed: false });
      return;
    }
    this.#events.onEgress?.();
    let lease: VpnLease | null = null;
    if (this.#config.vpn) {
      if (msg.vpn === undefined || typeof msg.vpn === "string") {
        const why = msg.vpn === undefined
          ? "the server does not offer a VPN (upgrade mport-server)"
          : printable(msg.vpn);
        // A full pool may have room later; a missing permission or a server without a pool not.
        this.#finish({ fatal: !/is full/.test(why), message: why, welcomed: false });
        return;
      }
      lease = msg.vpn;
    }
    if (msg.tunnels.length === 0 && !wantsEgress && !lease) {
      // Retrying cannot fix a port outside the range or a tunnel limit; a taken port may free up.
      const hopeless = msg.refused.length > 0 && msg.refused.every((r) => UNFIXABLE.has(r.code));
      this.#finish({
        fatal: hopeless,
        message: hopeless ? "the server refused every tunnel" : "the server granted no tunnel",
        welcomed: false,
      });
      return;
    }
    const granted = new Map<string, TunnelSpec>();
    for (const g of msg.tunnels) {
      const spec = specs.get(g.name);
      if (!spec) continue;
      granted.set(g.name, spec);
      if (g.kind !== "http") this.#ports.set(g.name, g.remotePort);
      else this.#http.granted(g);
      this.#events.onReady({ ...g, url: printable(g.url) }, spec);
    }
    this.#pool = new DataPool(
      this.#config,
      msg.sessionId,
      msg.sessionSecret,
      granted,
      this.#gates,
      this.#counters,
      this.#log,
      this.#http,
    );
    this.#pool.fill();
    if (lease && this.#events.onVpn) {
      const pool = this.#pool;
      const lost = (message: string) =>
        this.#finish({ fatal: false, message: printable(message), welcomed: true });
      this.#events.onVpn(lease, () => pool.pickMux(), lost).catch((e) => {
        const fatal = (e as { fatal?: boolean }).fatal === true;
        this.#finish({ fatal, message: printable(errorText(e)), welcomed: true });
      });
    }
    const interval = msg.heartbeatMs;
    this.#timer = setInterval(() => {
      if (Date.now() - this.#lastSeen > interval * HEARTBEAT_MISSES) {
        this.#finish({ fatal: false, message: "no heartbeat from the server", welcomed: true });
        return;
      }
      this.#send({ type: "ping", t: Date.now() });
    }, interval);
  }

  #send(msg: Extract<ClientControlMessage, { type: "ping" | "pong" | "bye" }>): void {
    const ws = this.#ws;
    if (!ws || !ws.isOpen) return;
    try {
      ws.sendText(encode(msg));
    } catch {
      // closing
    }
  }
}

/** The sentence for a failed dial, and whether retrying can help. */
function dialFailure(e: unknown): SessionEnd {
  if (!(e instanceof DialError)) {
    return {
      fatal: false,
      message: `cannot reach the server: ${printable(String(e))}`,
      welcomed: false,
    };
  }
  if (e.kind === "http" && e.body && e.status !== 404) {
    // Our server explains every refusal in one line; 401 and 403 mean retrying cannot help.
    return { fatal: e.permanent, message: printable(e.body.split("\n")[0]!), welcomed: false };
  }
  return { fatal: e.permanent, message: printable(e.message), welcomed: false };
}
