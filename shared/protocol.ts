// The mport v2 wire protocol: message types, limits, close codes and the decoders for both channels.

/** Protocol version spoken by this build; travels in `hello` and in the WebSocket subprotocol. */
import { parseIp } from "./ip_cidr.ts";

export const PROTOCOL_VERSION = 2;
/** WebSocket subprotocol that names the protocol version. */
export const SUBPROTOCOL = `mport.v${PROTOCOL_VERSION}`;
/** Default path prefix under which the control and stream endpoints live. */
export const DEFAULT_PATH_PREFIX = "/_mport";

/** Largest control-channel text frame, in bytes. */
export const MAX_CONTROL_MESSAGE_BYTES = 64 * 1024;
/** Most tunnels one `hello` may ask for. */
export const MAX_TUNNELS_PER_HELLO = 64;
/** Longest tunnel name. */
export const MAX_NAME_LENGTH = 64;
/** Shortest client id (`hello.clientId`). */
export const MIN_CLIENT_ID_LENGTH = 16;
/** Longest client id (`hello.clientId`). */
export const MAX_CLIENT_ID_LENGTH = 64;

/** Default heartbeat interval; three missed intervals mean the peer is dead. */
export const HEARTBEAT_INTERVAL_MS = 15_000;
/** Missed heartbeats after which a peer is considered dead. */
export const HEARTBEAT_MISSES = 3;
/** Time a new control connection has to send a valid `hello`. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

/** WebSocket close codes used by mport (4000–4999 are application codes). */
export const CloseCode = {
  normal: 1000,
  goingAway: 4002,
  protocolError: 4000,
  unauthorized: 4001,
  versionMismatch: 4005,
  /** Too many failed attempts, or too many data connections for one session. */
  tooManyAttempts: 4029,
  handshakeTimeout: 4008,
  heartbeatTimeout: 4009,
  replaced: 4010,
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
  | "local_dial_failed"
  | "shutting_down"
  | "quota_exceeded"
  /** An HTTP tunnel's subdomain or domain belongs to another user (or is reserved). */
  | "host_taken"
  /** A custom domain not assigned to the user, or HTTP tunnels not enabled on the server. */
  | "host_not_allowed"
  /** Egress: the destination (or egress itself) is not allowed for this user. */
  | "egress_denied"
  /** Egress: the destination's name does not resolve, or no route to it. */
  | "egress_unreachable"
  /** Egress: the destination refused the connection. */
  | "egress_refused"
  /** Egress: the destination did not answer in time. */
  | "egress_timeout"
  /** Egress: the server could not reach the destination for another reason (the message says). */
  | "egress_failed"
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
  "local_dial_failed",
  "shutting_down",
  "quota_exceeded",
  "host_taken",
  "host_not_allowed",
  "egress_denied",
  "egress_unreachable",
  "egress_refused",
  "egress_timeout",
  "egress_failed",
  "internal",
]);

/** Kinds of tunnel: a public TCP port, a public HTTP host name, or a public UDP port. */
export type TunnelKind = "tcp" | "http" | "udp";

/** Largest UDP payload carried (IPv4's limit; IPv6 jumbograms are not carried). */
export const MAX_DATAGRAM_BYTES = 65_507;
/** Bytes before each datagram on a UDP tunnel's stream: its length, u16 big-endian. */
export const DATAGRAM_HEADER_BYTES = 2;

/** A tunnel the client asks for. */
export interface TunnelRequest {
  readonly name: string;
  readonly kind: TunnelKind;
  /** Local address as the user wrote it, for display (`192.168.1.5:5555`, `http://127.0.0.1:3000`). */
  readonly local: string;
  /** Fixed public port, or 0 for any port from the server's range (always 0 for http). */
  readonly remotePort: number;
  /** http: the subdomain label asked for (`myapp` → `myapp.<http domain>`). */
  readonly subdomain?: string;
  /** http: a custom domain an admin assigned to the user. */
  readonly domain?: string;
}

/** A tunnel the server granted. */
export interface TunnelGrant {
  readonly name: string;
  readonly kind: TunnelKind;
  /** The public port (0 for http). */
  readonly remotePort: number;
  /** Public address, `tcp://host:port` or `https://name.domain`. */
  readonly url: string;
}

/** Longest host name (RFC 1035). */
export const MAX_HOST_LENGTH = 253;

/** A tunnel the server refused, with the reason. */
export interface TunnelRefusal {
  readonly name: string;
  readonly code: ErrorCode;
  readonly message: string;
}

/** A VPN client's virtual interface, handed out by the server from its `--vpn-pool`. */
export interface VpnLease {
  /** The client's virtual IPv4 address (`10.8.0.2`). */
  readonly address: string;
  /** Prefix length of the pool (`24`). */
  readonly prefix: number;
  /** The server's address in the pool (`10.8.0.1`). */
  readonly gateway: string;
  /** MTU of the virtual interfaces. */
  readonly mtu: number;
  /** DNS servers the server suggests (`--vpn-dns`); the client's `--dns` overrides them. */
  readonly dns: readonly string[];
}

/** Largest MTU of a VPN interface (an IP packet travels as one framed datagram). */
export const MAX_VPN_MTU = 9000;

/** Messages the client sends on the control channel. */
export type ClientControlMessage =
  | {
    readonly type: "hello";
    readonly version: number;
    readonly tunnels: readonly TunnelRequest[];
    /** Host name the client dialled, used for public addresses when the server has none set. */
    readonly host: string;
    /**
     * The client installation's persistent id: only the same id may take over a tunnel whose
     * holder is still connected. This client always sends it; without it (other v2 clients) the
     * server treats each connection as a client of its own.
     */
    readonly clientId?: string;
    /** The client's version (`0.2.0`), shown to operators. */
    readonly clientVersion?: string;
    /** The client runs a local egress proxy (`mport socks`): the welcome says if it may. */
    readonly egress?: boolean;
    /** The client runs `mport vpn`: the welcome carries its lease, or why not. */
    readonly vpn?: boolean;
  }
  | { readonly type: "ping"; readonly t: number }
  | { readonly type: "pong"; readonly t: number }
  /** The client stops on purpose: release its tunnels now instead of keeping them for --grace. */
  | { readonly type: "bye" };

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
    /** Answer to a hello with `egress`: null when egress may be used, else why not. */
    readonly egress?: string | null;
    /** Answer to a hello with `vpn`: the client's virtual address, or why it gets none. */
    readonly vpn?: VpnLease | string;
  }
  | { readonly type: "tunnel_close"; readonly name: string; readonly reason: string }
  | { readonly type: "ping"; readonly t: number }
  | { readonly type: "pong"; readonly t: number }
  | { readonly type: "error"; readonly code: ErrorCode; readonly message: string }
  /** Something the client should show its user; the session goes on. */
  | { readonly type: "notice"; readonly code: ErrorCode; readonly message: string };

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
  const obj = jsonObject(text, `${channel} message`, "must be a JSON object");
  if (typeof obj.type !== "string") {
    throw new ProtocolError(`${channel} message has no "type"`);
  }
  return obj;
}

/** Parses `text` as a JSON object; errors name `subject` ("control message", "open frame"). */
function jsonObject(text: string, subject: string, objectRule: string): Json {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ProtocolError(`${subject} is not valid JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError(`${subject} ${objectRule}`);
  }
  return value as Json;
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

const CLIENT_ID_RE = /^[A-Za-z0-9_-]+$/;

/** Throws a `TypeError` unless `id` is a valid client id (16-64 letters, digits, '_' or '-'). */
export function validateClientId(id: string): string {
  if (
    id.length < MIN_CLIENT_ID_LENGTH || id.length > MAX_CLIENT_ID_LENGTH || !CLIENT_ID_RE.test(id)
  ) {
    throw new TypeError(
      `invalid client id: use ${MIN_CLIENT_ID_LENGTH}-${MAX_CLIENT_ID_LENGTH} letters, digits, '_' or '-'`,
    );
  }
  return id;
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
  if (t.kind !== "tcp" && t.kind !== "http" && t.kind !== "udp") {
    throw new ProtocolError(`tunnel "${name}": kind must be "tcp", "http" or "udp"`);
  }
  const local = str(t, "local", 300);
  if (t.kind === "tcp" || t.kind === "udp") {
    return { name, kind: t.kind, local, remotePort: int(t, "remotePort", 0, 65535) };
  }
  const req: { -readonly [K in keyof TunnelRequest]: TunnelRequest[K] } = {
    name,
    kind: "http",
    local,
    remotePort: 0,
  };
  if (t.subdomain !== undefined) req.subdomain = str(t, "subdomain", 63);
  if (t.domain !== undefined) req.domain = str(t, "domain", MAX_HOST_LENGTH);
  if (req.subdomain !== undefined && req.domain !== undefined) {
    throw new ProtocolError(`tunnel "${name}": ask for a subdomain or a domain, not both`);
  }
  return req;
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
      const host = str(obj, "host", 255);
      if (obj.egress !== undefined && typeof obj.egress !== "boolean") {
        throw new ProtocolError(`field "egress" must be true or false`);
      }
      if (obj.vpn !== undefined && typeof obj.vpn !== "boolean") {
        throw new ProtocolError(`field "vpn" must be true or false`);
      }
      const egress = {
        ...(obj.egress === true ? { egress: true } : {}),
        ...(obj.vpn === true ? { vpn: true } : {}),
        ...(obj.clientVersion !== undefined
          ? { clientVersion: str(obj, "clientVersion", 64) }
          : {}),
      };
      if (obj.clientId === undefined) return { type: "hello", version, tunnels, host, ...egress };
      const clientId = str(obj, "clientId", MAX_CLIENT_ID_LENGTH);
      try {
        validateClientId(clientId);
      } catch (e) {
        throw new ProtocolError(`field "clientId": ${(e as Error).message}`);
      }
      return { type: "hello", version, tunnels, host, clientId, ...egress };
    }
    case "ping":
    case "pong":
      return { type: obj.type, t: int(obj, "t", 0, Number.MAX_SAFE_INTEGER) };
    case "bye":
      return { type: "bye" };
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
        const kind = t.kind === "http" ? "http" : t.kind === "udp" ? "udp" : "tcp";
        return {
          name: str(t, "name", MAX_NAME_LENGTH),
          kind,
          remotePort: kind === "http" ? 0 : int(t, "remotePort", 1, 65535),
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
        ...(obj.egress === undefined ? {} : {
          egress: obj.egress === null ? null : str(obj, "egress", 1024),
        }),
        ...(obj.vpn === undefined ? {} : { vpn: vpnAnswer(obj.vpn) }),
      };
    }
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

function vpnAnswer(v: unknown): VpnLease | string {
  if (typeof v === "string") return str({ vpn: v }, "vpn", 1024);
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ProtocolError(`field "vpn" must be a lease object or a reason`);
  }
  const o = v as Json;
  const ipv4 = (key: string) => {
    const text = str(o, key, 15);
    if (parseIp(text)?.byteLength !== 4 || text.includes(":")) {
      throw new ProtocolError(`field "${key}" must be an IPv4 address`);
    }
    return text;
  };
  if (!Array.isArray(o.dns) || o.dns.length > 4) {
    throw new ProtocolError(`field "dns" must be an array of at most 4 addresses`);
  }
  return {
    address: ipv4("address"),
    prefix: int(o, "prefix", 8, 30),
    gateway: ipv4("gateway"),
    mtu: int(o, "mtu", 576, MAX_VPN_MTU),
    dns: o.dns.map((d: unknown) => str({ dns: d }, "dns", 45)),
  };
}

/** Encodes any protocol message as a JSON text frame. */
export function encode(msg: ClientControlMessage | ServerControlMessage): string {
  return JSON.stringify(msg);
}

/** Path of the control endpoint under a prefix. */
export function controlPath(prefix: string): string {
  return `${prefix}/v${PROTOCOL_VERSION}/control`;
}

/**
 * Base path of the live admin endpoints under a prefix (`…/clients`, `…/tunnels`): ordinary
 * HTTP GETs with an admin user's bearer token.
 */
export function adminPath(prefix: string): string {
  return `${prefix}/v${PROTOCOL_VERSION}/admin`;
}

/** Path of the stream endpoint under a prefix. */
export function streamPath(prefix: string): string {
  return `${prefix}/v${PROTOCOL_VERSION}/stream`;
}

/** Control path of protocol v1, still answered so old clients learn that they must upgrade. */
export function legacyControlPath(prefix: string): string {
  return `${prefix}/v1/control`;
}

/** Stream path of protocol v1 (see `legacyControlPath`). */
export function legacyStreamPath(prefix: string): string {
  return `${prefix}/v1/stream`;
}

// ---------------------------------------------------------------------------------------------
// Data connections (protocol v2): one client-opened WebSocket carries many user connections as
// logical streams. Every WebSocket message on it is one binary mux frame:
//
//   u8 type | u32 stream id (big-endian, ≥ 1) | payload
//
// The server opens streams (`OPEN`, ids counting up from 1 per data connection); both sides send
// `DATA`, `WINDOW` (credit), `EOF` (half-close) and `RESET` (abort: the TCP side is reset, never
// closed cleanly). Frames for a stream that has already ended are ignored: they can cross a
// `RESET` on the wire.
//
// Egress (SOCKS): the client opens streams too, with `CONNECT` {host, port}; their ids have the
// top bit set (0x80000001 up), so the two id spaces never meet. The server answers `CONNECTED`
// {address} once it reached the destination, or `RESET` (egress_denied, egress_failed).

/**
 * What a client-opened stream carries: `tcp` one connection to host:port; `udp` the datagrams of
 * a SOCKS5 UDP association (each framed with its destination); `vpn` the IP packets of the
 * client's virtual interface (each framed with its length).
 */
export type EgressService = "tcp" | "udp" | "vpn";

/** Stream ids the client opens (egress) have this bit set; the server's never do. */
export const CLIENT_STREAM_BIT = 0x8000_0000;
/** Longest destination host name in a `CONNECT`. */
export const MAX_EGRESS_HOST_LENGTH = 255;

/** Bytes of a mux frame header: type and stream id. */
export const MUX_HEADER_BYTES = 5;
/** Credit each direction of a new stream starts with. */
export const MUX_INITIAL_WINDOW = 256 * 1024;
/** Largest receive window a stream grows to when its reader keeps up (auto-tuning). */
export const MUX_MAX_WINDOW = 4 * 1024 * 1024;
/** Largest payload of one `DATA` frame. */
export const MUX_MAX_DATA_BYTES = 256 * 1024;
/** Largest JSON payload of `OPEN` and `RESET`. */
export const MUX_MAX_CONTROL_BYTES = 1024;
/** Largest WebSocket message on a data connection. */
export const MUX_MAX_MESSAGE_BYTES = MUX_HEADER_BYTES + MUX_MAX_DATA_BYTES;
/** Most streams open at once on one data connection (a client refuses `OPEN` beyond it). */
export const MUX_MAX_STREAMS = 16_384;
/** Queued outgoing bytes on a data connection above which bulk senders wait for the socket. */
export const MUX_SEND_HIGH_WATER = 512 * 1024;
/** Unsent bytes a data connection's socket may hold in the kernel (TCP_NOTSENT_LOWAT). */
export const MUX_KERNEL_UNSENT_BYTES = 128 * 1024;
/** Bulk senders resume once the queue is down to this. */
export const MUX_SEND_LOW_WATER = 128 * 1024;
/** First TCP read buffer of a stream; it grows in steps when reads fill it. */
export const MUX_FIRST_READ_BYTES = 2 * 1024;
/** Default per-user budget for receive windows grown beyond the initial one (server side). */
export const MUX_DEFAULT_BUDGET_BYTES = 16 * 1024 * 1024;
/** Most data connections one session may open. */
export const MAX_DATA_CONNS_PER_SESSION = 8;

/** What an `OPEN` frame tells about an HTTP visitor beyond its address (`remote`). */
export interface OpenExtra {
  /** The scheme the visitor used: `https` when it reached TLS (ours or a trusted proxy's). */
  readonly proto?: "http" | "https";
  /** The TCP peer the server accepted, when it is not the visitor itself (a trusted proxy). */
  readonly peer?: string;
}

/** Mux frame types. */
export const MuxType = {
  data: 0,
  window: 1,
  open: 2,
  eof: 3,
  reset: 4,
  connect: 5,
  connected: 6,
} as const;

/** A decoded mux frame. `DATA` payloads are views into the received message. */
export type MuxFrame =
  | { readonly type: "data"; readonly id: number; readonly payload: Uint8Array }
  | { readonly type: "window"; readonly id: number; readonly bytes: number }
  | {
    readonly type: "open";
    readonly id: number;
    readonly tunnel: string;
    readonly remote: string;
    readonly extra?: OpenExtra;
  }
  | { readonly type: "eof"; readonly id: number }
  | {
    readonly type: "connect";
    readonly id: number;
    /** tcp: a destination; udp and vpn carry their destinations inside the stream ("" and 0). */
    readonly host: string;
    readonly port: number;
    readonly service: EgressService;
  }
  | { readonly type: "connected"; readonly id: number; readonly address: string }
  | {
    readonly type: "reset";
    readonly id: number;
    readonly code: ErrorCode;
    readonly message: string;
  };

const textDecoder = new TextDecoder("utf-8", { fatal: true });
const textEncoder = new TextEncoder();

function muxJson(payload: Uint8Array, what: string): Json {
  if (payload.byteLength > MUX_MAX_CONTROL_BYTES) {
    throw new ProtocolError(
      `${what} frame is larger than the ${MUX_MAX_CONTROL_BYTES}-byte limit`,
      CloseCode.tooLarge,
    );
  }
  let text: string;
  try {
    text = textDecoder.decode(payload);
  } catch {
    throw new ProtocolError(`${what} frame is not valid UTF-8`);
  }
  return jsonObject(text, `${what} frame`, "must carry a JSON object");
}

/** Decodes one binary message of a data connection; throws `ProtocolError`. */
export function decodeMuxFrame(msg: Uint8Array): MuxFrame {
  if (msg.byteLength < MUX_HEADER_BYTES) {
    throw new ProtocolError(`mux frame of ${msg.byteLength} bytes is shorter than its header`);
  }
  if (msg.byteLength > MUX_MAX_MESSAGE_BYTES) {
    throw new ProtocolError(
      `mux frame of ${msg.byteLength} bytes exceeds the ${MUX_MAX_MESSAGE_BYTES}-byte limit`,
      CloseCode.tooLarge,
    );
  }
  const type = msg[0]!;
  const id = ((msg[1]! << 24) | (msg[2]! << 16) | (msg[3]! << 8) | msg[4]!) >>> 0;
  if (id === 0) throw new ProtocolError("mux frame for stream 0");
  const payload = msg.subarray(MUX_HEADER_BYTES);
  switch (type) {
    case MuxType.data:
      if (payload.byteLength === 0) throw new ProtocolError("empty data frame");
      return { type: "data", id, payload };
    case MuxType.window: {
      if (payload.byteLength !== 4) throw new ProtocolError("window frame must carry 4 bytes");
      const bytes =
        ((payload[0]! << 24) | (payload[1]! << 16) | (payload[2]! << 8) | payload[3]!) >>> 0;
      if (bytes === 0 || bytes > MUX_MAX_WINDOW) {
        throw new ProtocolError(`window increment must be from 1 to ${MUX_MAX_WINDOW} bytes`);
      }
      return { type: "window", id, bytes };
    }
    case MuxType.open: {
      const obj = muxJson(payload, "open");
      const frame = {
        type: "open" as const,
        id,
        tunnel: str(obj, "tunnel", MAX_NAME_LENGTH),
        remote: str(obj, "remote", 128),
      };
      if (obj.proto === undefined && obj.peer === undefined) return frame;
      const extra: { proto?: "http" | "https"; peer?: string } = {};
      if (obj.proto !== undefined) {
        if (obj.proto !== "http" && obj.proto !== "https") {
          throw new ProtocolError(`field "proto" must be "http" or "https"`);
        }
        extra.proto = obj.proto;
      }
      if (obj.peer !== undefined) extra.peer = str(obj, "peer", 128);
      return { ...frame, extra };
    }
    case MuxType.eof:
      if (payload.byteLength !== 0) throw new ProtocolError("eof frame must be empty");
      return { type: "eof", id };
    case MuxType.connect: {
      if ((id & CLIENT_STREAM_BIT) === 0) {
        throw new ProtocolError(`connect frame for stream ${id}, which is not a client stream id`);
      }
      const obj = muxJson(payload, "connect");
      if (obj.service === "udp" || obj.service === "vpn") {
        return { type: "connect", id, host: "", port: 0, service: obj.service };
      }
      if (obj.service !== undefined && obj.service !== "tcp") {
        throw new ProtocolError(`field "service" must be "tcp", "udp" or "vpn"`);
      }
      const host = str(obj, "host", MAX_EGRESS_HOST_LENGTH);
      if (host.length === 0) throw new ProtocolError(`field "host" is empty`);
      return { type: "connect", id, host, port: int(obj, "port", 1, 65535), service: "tcp" };
    }
    case MuxType.connected: {
      const obj = muxJson(payload, "connected");
      return { type: "connected", id, address: str(obj, "address", 128) };
    }
    case MuxType.reset: {
      const obj = muxJson(payload, "reset");
      return { type: "reset", id, code: errorCode(obj), message: str(obj, "message", 512) };
    }
    default:
      throw new ProtocolError(`unknown mux frame type ${type}`);
  }
}

/** The JSON of a `RESET`, with the message shortened until it fits `MUX_MAX_CONTROL_BYTES`. */
function resetPayload(code: ErrorCode, message: string): Uint8Array {
  let text = message.slice(0, 512);
  for (;;) {
    const bytes = textEncoder.encode(JSON.stringify({ code, message: text }));
    if (bytes.byteLength <= MUX_MAX_CONTROL_BYTES) return bytes;
    // JSON escaping can make one character six bytes: cut by what it encodes to.
    text = text.slice(0, Math.floor(text.length * 0.75));
  }
}

/** Writes a mux header (type and id) at `offset` of `buf`. */
export function writeMuxHeader(buf: Uint8Array, offset: number, type: number, id: number): void {
  buf[offset] = type;
  buf[offset + 1] = id >>> 24;
  buf[offset + 2] = (id >>> 16) & 0xff;
  buf[offset + 3] = (id >>> 8) & 0xff;
  buf[offset + 4] = id & 0xff;
}

/** Encodes a mux frame other than `DATA` (whose payload is written in place by the sender). */
export function encodeMuxFrame(frame: Exclude<MuxFrame, { type: "data" }>): Uint8Array {
  let payload: Uint8Array;
  switch (frame.type) {
    case "window":
      payload = new Uint8Array(4);
      new DataView(payload.buffer).setUint32(0, frame.bytes);
      break;
    case "open":
      payload = textEncoder.encode(
        JSON.stringify({ tunnel: frame.tunnel, remote: frame.remote, ...frame.extra }),
      );
      break;
    case "eof":
      payload = new Uint8Array(0);
      break;
    case "connect":
      payload = textEncoder.encode(
        JSON.stringify(
          frame.service === "tcp"
            ? { host: frame.host, port: frame.port }
            : { service: frame.service },
        ),
      );
      break;
    case "connected":
      payload = textEncoder.encode(JSON.stringify({ address: frame.address }));
      break;
    case "reset":
      payload = resetPayload(frame.code, frame.message);
      break;
    default: {
      const never: never = frame;
      throw new TypeError(`unhandled ${String(never)}`);
    }
  }
  const out = new Uint8Array(MUX_HEADER_BYTES + payload.byteLength);
  writeMuxHeader(out, 0, MuxType[frame.type], frame.id);
  out.set(payload, MUX_HEADER_BYTES);
  return out;
}

/** WebSocket close reasons are limited to 123 bytes of UTF-8. */
export function truncateReason(reason: string): string {
  const bytes = textEncoder.encode(reason);
  if (bytes.byteLength <= 123) return reason;
  return new TextDecoder().decode(bytes.subarray(0, 120)).replace(/\uFFFD$/, "") + "...";
}
