// One control-channel connection of the client: hello, welcome, stream requests, heartbeat.
import type { Logger } from "@logtape/logtape";
import { formatHostPort } from "../shared/address.ts";
import {
  CloseCode,
  controlPath,
  decodeServerControl,
  encode,
  type ErrorCode,
  HEARTBEAT_MISSES,
  PROTOCOL_VERSION,
  ProtocolError,
  type ServerControlMessage,
  SUBPROTOCOL,
  type TunnelGrant,
  type TunnelRefusal,
} from "../shared/protocol.ts";
import { truncateReason } from "../shared/stream_bridge.ts";
import type { ClientConfig, TunnelSpec } from "./config.ts";
import { type StreamCounters, StreamPool } from "./streams.ts";

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
}

const FATAL: ReadonlySet<ErrorCode> = new Set(["unauthorized", "version_mismatch"]);
const UNFIXABLE: ReadonlySet<ErrorCode> = new Set([
  "port_out_of_range",
  "tunnel_limit",
  "quota_exceeded",
]);

/** Runs one control connection until it ends; resolves with why. */
export class ClientSession {
  readonly #config: ClientConfig;
  readonly #client: Deno.HttpClient | undefined;
  readonly #log: Logger;
  readonly #events: SessionEvents;
  readonly #counters: StreamCounters;
  /** Port to ask for per tunnel name (the last one granted, so a reconnect gets it back). */
  readonly #ports: Map<string, number>;
  #ws: WebSocket | null = null;
  #pool: StreamPool | null = null;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastSeen = Date.now();
  #end: SessionEnd | null = null;

  constructor(
    config: ClientConfig,
    client: Deno.HttpClient | undefined,
    ports: Map<string, number>,
    counters: StreamCounters,
    events: SessionEvents,
    log: Logger,
  ) {
    this.#config = config;
    this.#client = client;
    this.#ports = ports;
    this.#counters = counters;
    this.#events = events;
    this.#log = log;
  }

  /** Streams of this session (for draining on shutdown). */
  get pool(): StreamPool | null {
    return this.#pool;
  }

  /** Connects and runs until the channel closes. */
  run(): Promise<SessionEnd> {
    const done = Promise.withResolvers<SessionEnd>();
    const url = new URL(controlPath(this.#config.pathPrefix), this.#config.server);
    let welcomed = false;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, {
        protocols: [SUBPROTOCOL],
        headers: { authorization: `Bearer ${this.#config.token.reveal()}` },
        client: this.#client,
      });
    } catch (e) {
      return Promise.resolve({ fatal: true, message: (e as Error).message, welcomed: false });
    }
    this.#ws = ws;
    let networkError = "";
    ws.onopen = () => {
      const tunnels = this.#config.tunnels.map((t) => ({
        name: t.name,
        kind: "tcp" as const,
        local: formatHostPort(t.localHost, t.localPort),
        remotePort: t.remotePort || this.#ports.get(t.name) || 0,
      }));
      ws.send(encode({
        type: "hello",
        version: PROTOCOL_VERSION,
        tunnels,
        host: this.#config.server.hostname.replace(/^\[|\]$/g, ""),
      }));
    };
    ws.onerror = (e) => {
      networkError = (e as ErrorEvent).message ?? "connection failed";
    };
    ws.onmessage = (e) => {
      this.#lastSeen = Date.now();
      let msg: ServerControlMessage;
      try {
        if (typeof e.data !== "string") {
          throw new ProtocolError("server sent a binary frame on the control channel");
        }
        msg = decodeServerControl(e.data);
      } catch (err) {
        this.#finish({
          fatal: false,
          message: `protocol error from server: ${(err as Error).message}`,
          welcomed,
        });
        return;
      }
      if (msg.type === "welcome") welcomed = true;
      this.#onMessage(msg);
    };
    ws.onclose = (e) => {
      this.#finish({
        fatal: false,
        message: describeClose(e.code, e.reason, networkError),
        welcomed,
      });
      done.resolve(this.#end!);
    };
    return done.promise;
  }

  /** Closes the control channel (shutdown); streams are left to the caller. */
  close(): void {
    this.#finish({ fatal: true, message: "client stopped", welcomed: true });
  }

  #finish(end: SessionEnd): void {
    if (!this.#end) this.#end = end;
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#pool?.stop();
    const ws = this.#ws;
    if (ws && ws.readyState <= WebSocket.OPEN) {
      try {
        ws.close(CloseCode.normal, truncateReason(end.message));
      } catch {
        // already closing
      }
    }
  }

  #onMessage(msg: ServerControlMessage): void {
    switch (msg.type) {
      case "welcome":
        this.#onWelcome(msg);
        return;
      case "open":
        this.#pool?.claim(msg.claim);
        return;
      case "tunnel_close":
        this.#events.onTunnelClosed(msg.name, msg.reason);
        return;
      case "ping":
        this.#send({ type: "pong", t: msg.t });
        return;
      case "pong":
        return;
      case "notice":
        this.#events.onNotice(msg.message);
        return;
      case "error":
        this.#finish({
          fatal: FATAL.has(msg.code),
          message: msg.message,
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
      this.#events.onRefused(r, spec);
    }
    if (msg.tunnels.length === 0) {
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
      this.#ports.set(g.name, g.remotePort);
      this.#events.onReady(g, spec);
    }
    this.#pool = new StreamPool(
      this.#config,
      this.#client,
      msg.sessionId,
      msg.sessionSecret,
      granted,
      this.#counters,
      this.#log,
    );
    this.#pool.fill();
    const interval = msg.heartbeatMs;
    this.#timer = setInterval(() => {
      if (Date.now() - this.#lastSeen > interval * HEARTBEAT_MISSES) {
        this.#finish({ fatal: false, message: "no heartbeat from the server", welcomed: true });
        return;
      }
      this.#send({ type: "ping", t: Date.now() });
    }, interval);
  }

  #send(msg: { type: "ping" | "pong"; t: number }): void {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    try {
      ws.send(encode(msg));
    } catch {
      // closing
    }
  }
}

function describeClose(code: number, reason: string, networkError: string): string {
  // Deno 2.9 reports a failed connection or upgrade as close code 0, not 1006.
  if (networkError && (code === 1006 || code === 0)) {
    const m = /Invalid status code:? (\d+)/.exec(networkError);
    if (m?.[1] === "429") {
      return "the server refused: too many failed attempts from this address, try later";
    }
    if (m?.[1] === "404") {
      return "the server has no mport endpoint at this URL (check --server and its path)";
    }
    if (m) {
      return `the server answered HTTP ${m[1]} instead of a WebSocket upgrade (check --server)`;
    }
    const detail = networkError.replace(/^NetworkError: /, "");
    const tlsHint = /certificate|UnknownIssuer|NoApplicationProtocol|tls|alert/i.test(detail)
      ? " (TLS failed: if the server uses a private CA or a self-signed certificate, pass --ca FILE)"
      : "";
    return `cannot reach the server: ${detail}${tlsHint}`;
  }
  return reason ? `connection closed: ${reason}` : `connection closed (code ${code})`;
}
