// The mport v1 wire protocol: message types, limits, close codes and the decoders for both channels.

/** Protocol version spoken by this build; travels in `hello` and in the WebSocket subprotocol. */
export const PROTOCOL_VERSION = 1;
/** WebSocket subprotocol that names the protocol version. */
export const SUBPROTOCOL = `mport.v${PROTOCOL_VERSION}`;
/** Default path prefix under which the control and stream endpoints live. */
export const DEFAULT_PATH_PREFIX = "/_mport";

/** Largest control-channel text frame, in bytes. */
export const MAX_CONTROL_MESSAGE_BYTES = 64 * 1024;
/** Largest stream text frame (ack, eof, open, error), in bytes. */
export const MAX_STREAM_CONTROL_BYTES = 4 * 1024;
/** Largest binary data frame a peer may send on a stream. */
export const MAX_DATA_FRAME_BYTES = 256 * 1024;
/** Bytes read from TCP per data frame. */
export const READ_CHUNK_BYTES = 256 * 1024;
/** Credit each direction of a stream starts with: the most unacknowledged bytes in flight. */
export const STREAM_WINDOW_BYTES = 4 * 1024 * 1024;
/** The receiver acknowledges once this many bytes have been written to TCP. */
export const ACK_THRESHOLD_BYTES = 1024 * 1024;
/** Sender pauses while the socket's `bufferedAmount` is above this. */
export const BUFFERED_HIGH_WATER_BYTES = 2 * 1024 * 1024;
/** Most tunnels one `hello` may ask for. */
export const MAX_TUNNELS_PER_HELLO = 64;
/** Longest tunnel name. */
export const MAX_NAME_LENGTH = 64;
/** Most idle pooled streams the server keeps for one session. */
export const MAX_POOL_PER_SESSION = 64;

/** Default heartbeat interval; three missed intervals mean the peer is dead. */
export const HEARTBEAT_INTERVAL_MS = 15_000;
/** Missed heartbeats after which a peer is considered dead. */
export const HEARTBEAT_MISSES = 3;
/** Time a new control connection has to send a valid `hello`. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** Time a client has to claim a stream the server asked for. */
export const CLAIM_TIMEOUT_MS = 10_000;

/** WebSocket close codes used by mport (4000–4999 are application codes). */
export const CloseCode = {
  normal: 1000,
  goingAway: 4002,
  protocolError: 4000,
  unauthorized: 4001,
  forbidden: 4003,
  versionMismatch: 4005,
  tooManyAttempts: 4029,
  handshakeTimeout: 4008,
  heartbeatTimeout: 4009,
  replaced: 4010,
  unknownClaim: 4040,
  localDialFailed: 4502,
  streamReset: 4100,
  tooLarge: 4013,
  internal: 4500,
} as const;

/** Error codes carried in `error` messages so a client can tell retryable failures apart. */
export type ErrorCode =
  | "bad_message"
  | "unauthorized"
  | "too_many_attempts"
  | "version_mismatch"
  | "handshake_timeout"
  | "port_taken"
  | "port_out_of_range"
  | "tunnel_limit"
  | "rate_limited"
  | "name_in_use"
  | "unknown_claim"
  | "local_dial_failed"
  | "shutting_down"
  | "quota_exceeded"
  | "internal";

const ERROR_CODES: ReadonlySet<string> = new Set<ErrorCode>([
  "bad_message",
  "unauthorized",
  "too_many_attempts",
  "version_mismatch",
  "handshake_timeout",
  "port_taken",
  "port_out_of_range",
  "tunnel_limit",
  "rate_limited",
  "name_in_use",
  "unknown_claim",
  "local_dial_failed",
  "shutting_down",
  "quota_exceeded",
  "internal",
]);

/** A tunnel the client asks for. */
export interface TunnelRequest {
  readonly name: string;
  readonly kind: "tcp";
  /** Local address as the user wrote it, for display (`192.168.1.5:5555`). */
  readonly local: string;
  /** Fixed public port, or 0 for any port from the server's range. */
  readonly remotePort: number;
}

/** A tunnel the server granted. */
export interface TunnelGrant {
  readonly name: string;
  readonly kind: "tcp";
  readonly remotePort: number;
  /** Public address, `tcp://host:port`. */
  readonly url: string;
}

/** A tunnel the server refused, with the reason. */
export interface TunnelRefusal {
  readonly name: string;
  readonly code: ErrorCode;
  readonly message: string;
}

/** Messages the client sends on the control channel. */
export type ClientControlMessage =
  | {
    readonly type: "hello";
    readonly version: number;
    readonly tunnels: readonly TunnelRequest[];
    /** Host name the client dialled, used for public addresses when the server has none set. */
    readonly host: string;
  }
  | { readonly type: "ping"; readonly t: number }
  | { readonly type: "pong"; readonly t: number };

/** Messages the server sends on the control channel. */
export type ServerControlMessage =
  | {
    readonly type: "welcome";
    readonly version: number;
    readonly sessionId: string;
    /** Secret that authenticates this session's data streams. */
    readonly sessionSecret: string;
    readonly heartbeatMs: number;
    readonly tunnels: readonly TunnelGrant[];
    readonly refused: readonly TunnelRefusal[];
  }
  | { readonly type: "open"; readonly claim: string; readonly tunnel: string }
  | { readonly type: "tunnel_close"; readonly name: string; readonly reason: string }
  | { readonly type: "ping"; readonly t: number }
  | { readonly type: "pong"; readonly t: number }
  | { readonly type: "error"; readonly code: ErrorCode; readonly message: string }
  /** Something the client should show its user; the session goes on. */
  | { readonly type: "notice"; readonly code: ErrorCode; readonly message: string };

/** Text messages on a data stream, in either direction. */
export type StreamControlMessage =
  | { readonly type: "ack"; readonly bytes: number }
  /**
   * Half-close. `bytes` (optional) also acknowledges that many bytes, like an `ack` just before
   * it: one frame instead of two (the client sends it only to servers that offered `reuse`).
   */
  | { readonly type: "eof"; readonly bytes?: number }
  /**
   * Client → server: the connection this stream carried ended cleanly, every message of it is
   * sent, and the client is ready for a new `open` on the same stream (stream reuse).
   */
  | { readonly type: "idle" }
  | {
    readonly type: "open";
    readonly tunnel: string;
    readonly remote: string;
    /** The server accepts `idle` after this connection (stream reuse); absent from old servers. */
    readonly reuse?: true;
  }
  | { readonly type: "error"; readonly code: ErrorCode; readonly message: string };

/** A message broke the protocol; `closeCode` is what to close the WebSocket with. */
export class ProtocolError extends Error {
  readonly closeCode: number;
  constructor(message: string, closeCode: number = CloseCode.protocolError) {
    super(message);
    this.name = "ProtocolError";
    this.closeCode = closeCode;
  }
}

type Json = Record<string, unknown>;

function parseObject(text: string, limit: number, channel: string): Json {
  // Length check before JSON.parse: UTF-8 is at most 3 bytes per UTF-16 unit, so a cheap bound first.
  if (text.length > limit || new TextEncoder().encode(text).byteLength > limit) {
    throw new ProtocolError(
      `${channel} message is larger than the ${limit}-byte limit`,
      CloseCode.tooLarge,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ProtocolError(`${channel} message is not valid JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError(`${channel} message must be a JSON object`);
  }
  const obj = value as Json;
  if (typeof obj.type !== "string") {
    throw new ProtocolError(`${channel} message has no "type"`);
  }
  return obj;
}

function str(obj: Json, key: string, max = 1024): string {
  const v = obj[key];
  if (typeof v !== "string") throw new ProtocolError(`field "${key}" must be a string`);
  if (v.length > max) throw new ProtocolError(`field "${key}" is longer than ${max} characters`);
  return v;
}

function int(obj: Json, key: string, min: number, max: number): number {
  const v = obj[key];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new ProtocolError(`field "${key}" must be an integer from ${min} to ${max}`);
  }
  return v;
}

function errorCode(obj: Json): ErrorCode {
  const code = str(obj, "code", 64);
  return (ERROR_CODES.has(code) ? code : "internal") as ErrorCode;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Throws a `TypeError` unless `name` is a valid tunnel name. */
export function validateTunnelName(name: string): string {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH || !NAME_RE.test(name)) {
    throw new TypeError(
      `invalid tunnel name "${name}": use 1-${MAX_NAME_LENGTH} letters, digits, '.', '_' or '-'`,
    );
  }
  return name;
}

function tunnelRequest(v: unknown): TunnelRequest {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ProtocolError("each tunnel must be a JSON object");
  }
  const t = v as Json;
  const name = str(t, "name", MAX_NAME_LENGTH);
  try {
    validateTunnelName(name);
  } catch (e) {
    throw new ProtocolError((e as Error).message);
  }
  if (t.kind !== "tcp") throw new ProtocolError(`tunnel "${name}": kind must be "tcp"`);
  return {
    name,
    kind: "tcp",
    local: str(t, "local", 300),
    remotePort: int(t, "remotePort", 0, 65535),
  };
}

/** Decodes a text frame the client sent on the control channel. */
export function decodeClientControl(text: string): ClientControlMessage {
  const obj = parseObject(text, MAX_CONTROL_MESSAGE_BYTES, "control");
  switch (obj.type) {
    case "hello": {
      const version = int(obj, "version", 0, 1_000_000);
      if (!Array.isArray(obj.tunnels)) throw new ProtocolError(`field "tunnels" must be an array`);
      if (obj.tunnels.length > MAX_TUNNELS_PER_HELLO) {
        throw new ProtocolError(`hello asks for more than ${MAX_TUNNELS_PER_HELLO} tunnels`);
      }
      const tunnels = obj.tunnels.map(tunnelRequest);
      const names = new Set(tunnels.map((t) => t.name));
      if (names.size !== tunnels.length) throw new ProtocolError("tunnel names must be unique");
      return { type: "hello", version, tunnels, host: str(obj, "host", 255) };
    }
    case "ping":
    case "pong":
      return { type: obj.type, t: int(obj, "t", 0, Number.MAX_SAFE_INTEGER) };
    default:
      throw new ProtocolError(`unknown control message type "${String(obj.type).slice(0, 32)}"`);
  }
}

/** Decodes a text frame the server sent on the control channel. */
export function decodeServerControl(text: string): ServerControlMessage {
  const obj = parseObject(text, MAX_CONTROL_MESSAGE_BYTES, "control");
  switch (obj.type) {
    case "welcome": {
      if (!Array.isArray(obj.tunnels) || !Array.isArray(obj.refused)) {
        throw new ProtocolError(`welcome needs "tunnels" and "refused" arrays`);
      }
      const tunnels = obj.tunnels.map((v: unknown): TunnelGrant => {
        const t = (typeof v === "object" && v !== null ? v : {}) as Json;
        return {
          name: str(t, "name", MAX_NAME_LENGTH),
          kind: "tcp",
          remotePort: int(t, "remotePort", 1, 65535),
          url: str(t, "url", 300),
        };
      });
      const refused = obj.refused.map((v: unknown): TunnelRefusal => {
        const t = (typeof v === "object" && v !== null ? v : {}) as Json;
        return {
          name: str(t, "name", MAX_NAME_LENGTH),
          code: errorCode(t),
          message: str(t, "message"),
        };
      });
      return {
        type: "welcome",
        version: int(obj, "version", 0, 1_000_000),
        sessionId: str(obj, "sessionId", 128),
        sessionSecret: str(obj, "sessionSecret", 256),
        heartbeatMs: int(obj, "heartbeatMs", 1, 3_600_000),
        tunnels,
        refused,
      };
    }
    case "open":
      return {
        type: "open",
        claim: str(obj, "claim", 128),
        tunnel: str(obj, "tunnel", MAX_NAME_LENGTH),
      };
    case "tunnel_close":
      return {
        type: "tunnel_close",
        name: str(obj, "name", MAX_NAME_LENGTH),
        reason: str(obj, "reason"),
      };
    case "ping":
    case "pong":
      return { type: obj.type, t: int(obj, "t", 0, Number.MAX_SAFE_INTEGER) };
    case "error":
    case "notice":
      return { type: obj.type, code: errorCode(obj), message: str(obj, "message") };
    default:
      throw new ProtocolError(`unknown control message type "${String(obj.type).slice(0, 32)}"`);
  }
}

/** Decodes a text frame on a data stream (either direction). */
export function decodeStreamControl(text: string): StreamControlMessage {
  const obj = parseObject(text, MAX_STREAM_CONTROL_BYTES, "stream");
  switch (obj.type) {
    case "ack":
      return { type: "ack", bytes: int(obj, "bytes", 1, STREAM_WINDOW_BYTES) };
    case "eof":
      return obj.bytes === undefined
        ? { type: "eof" }
        : { type: "eof", bytes: int(obj, "bytes", 1, STREAM_WINDOW_BYTES) };
    case "idle":
      return { type: "idle" };
    case "open": {
      const msg = {
        type: "open",
        tunnel: str(obj, "tunnel", MAX_NAME_LENGTH),
        remote: str(obj, "remote", 128),
      } as const;
      if (obj.reuse === undefined || obj.reuse === false) return msg;
      if (obj.reuse !== true) throw new ProtocolError('field "reuse" must be a boolean');
      return { ...msg, reuse: true };
    }
    case "error":
      return { type: "error", code: errorCode(obj), message: str(obj, "message") };
    default:
      throw new ProtocolError(`unknown stream message type "${String(obj.type).slice(0, 32)}"`);
  }
}

/** Encodes any protocol message as a JSON text frame. */
export function encode(
  msg: ClientControlMessage | ServerControlMessage | StreamControlMessage,
): string {
  return JSON.stringify(msg);
}

/** Path of the control endpoint under a prefix. */
export function controlPath(prefix: string): string {
  return `${prefix}/v${PROTOCOL_VERSION}/control`;
}

/** Path of the stream endpoint under a prefix. */
export function streamPath(prefix: string): string {
  return `${prefix}/v${PROTOCOL_VERSION}/stream`;
}

/** Header that carries a stream's claim id (absent for pooled streams). */
export const CLAIM_HEADER = "x-mport-claim";
