// The WebSocket upgrade handshake (RFC 6455 §4) for both ends, over any Deno.Conn.
import {
  clip,
  hasToken,
  type HttpHead,
  HttpHeadError,
  isFieldValue,
  isToken,
  latin1Bytes,
  parseResponseHead,
  readHead,
  readShortBody,
  type ResponseHead,
} from "./http_head.ts";

// The head reader and parsers live in http_head.ts; they are re-exported for upgrade handlers.
export {
  type HttpHead,
  HttpHeadError,
  type HttpHeadErrorKind,
  MAX_HEAD_LINES,
  parseRequestHead,
  parseResponseHead,
  readHead,
  type ReadHeadOptions,
  type RequestHead,
  type ResponseHead,
} from "./http_head.ts";
import { closeQuietly, writeAll } from "./net.ts";

/** The GUID RFC 6455 appends to the client's key to compute Sec-WebSocket-Accept. */
export const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** Byte limit for the server's response head in `clientHandshake`. */
export const MAX_RESPONSE_HEAD_BYTES = 16 * 1024;
/** A refused upgrade's response body is kept up to this many bytes. */
export const MAX_ERROR_BODY_BYTES = 4 * 1024;

/** The body of a refusal usually comes with its head; a server that writes twice gets this. */
const REFUSAL_BODY_MIN_WAIT_MS = 250;
/** Base64 of exactly 16 bytes: 21 free characters, one carrying 2 bits (low 4 zero), "==". */
const CLIENT_KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/;
const UTF8 = new TextEncoder();

/** The upgrade failed: a refusal (status ≠ 101), a bad 101, or no valid response (status 0). */
export class WsHandshakeError extends Error {
  /** The response status, or 0 when there was no valid response head. */
  readonly status: number;
  readonly statusText: string;
  readonly headers: Headers;
  /** Up to 4 KiB of the response body (UTF-8, lossy), so callers can show the server's words. */
  readonly body: string;
  constructor(
    message: string,
    init: {
      status?: number;
      statusText?: string;
      headers?: Headers;
      body?: string;
      cause?: unknown;
    } = {},
  ) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "WsHandshakeError";
    this.status = init.status ?? 0;
    this.statusText = init.statusText ?? "";
    this.headers = init.headers ?? new Headers();
    this.body = init.body ?? "";
  }
}

/** base64(SHA-1(key + GUID)), the Sec-WebSocket-Accept value for a client's key. */
export async function acceptKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", UTF8.encode(key + WS_GUID));
  return base64(new Uint8Array(digest));
}

/** A fresh Sec-WebSocket-Key: base64 of 16 random bytes. */
export function newClientKey(): string {
  return base64(crypto.getRandomValues(new Uint8Array(16)));
}

function base64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

/**
 * Validates a WebSocket upgrade request (RFC 6455 §4.2.1): GET, Host, `Upgrade: websocket`,
 * a Connection header listing `upgrade`, `Sec-WebSocket-Version: 13` and a key that is base64
 * of 16 bytes. Returns what is wrong, or null for a valid request.
 */
export function checkUpgradeRequest(method: string, headers: Headers): string | null {
  if (method !== "GET") return `A WebSocket upgrade must use GET, not ${method}`;
  if (!headers.has("host")) return "Missing Host header";
  if (!hasToken(headers.get("upgrade"), "websocket")) return "Upgrade header must be websocket";
  if (!hasToken(headers.get("connection"), "upgrade")) {
    return "Connection header must include upgrade";
  }
  const version = headers.get("sec-websocket-version");
  if (version !== "13") {
    return `Unsupported Sec-WebSocket-Version ${version ?? "(missing)"}: only 13 is supported`;
  }
  const key = headers.get("sec-websocket-key");
  if (key === null || !CLIENT_KEY.test(key)) return "Sec-WebSocket-Key must be base64 of 16 bytes";
  return null;
}

/** The subprotocols a client offered in Sec-WebSocket-Protocol, in its order. */
export function offeredProtocols(headers: Headers): string[] {
  const value = headers.get("sec-websocket-protocol");
  if (value === null) return [];
  return value.split(",").map((p) => p.trim()).filter((p) => p !== "");
}

/** Headers a caller may not set: the handshake owns them. */
const HANDSHAKE_HEADERS = new Set([
  "host",
  "upgrade",
  "connection",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-accept",
  "sec-websocket-protocol",
  "sec-websocket-extensions",
  "content-length",
  "transfer-encoding",
]);

function headerLines(extra: Record<string, string> | undefined): string {
  let out = "";
  for (const [name, value] of Object.entries(extra ?? {})) {
    if (!isToken(name)) throw new TypeError(`Invalid header name ${JSON.stringify(name)}`);
    if (HANDSHAKE_HEADERS.has(name.toLowerCase())) {
      throw new TypeError(`Header ${name} is set by the WebSocket handshake`);
    }
    if (!isFieldValue(value)) throw new TypeError(`Invalid value for header ${name}`);
    out += `${name}: ${value}\r\n`;
  }
  return out;
}

/**
 * The bytes of the `101 Switching Protocols` response for a request that passed
 * `checkUpgradeRequest`, with the chosen subprotocol (if any) and extra headers.
 */
export async function serverHandshakeResponse(
  key: string,
  protocol?: string | null,
  extraHeaders?: Record<string, string>,
): Promise<Uint8Array> {
  if (protocol != null && !isToken(protocol)) {
    throw new TypeError(`Invalid subprotocol ${JSON.stringify(protocol)}`);
  }
  const text = "HTTP/1.1 101 Switching Protocols\r\n" +
    "Upgrade: websocket\r\n" +
    "Connection: Upgrade\r\n" +
    `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n` +
    (protocol != null ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : "") +
    headerLines(extraHeaders) +
    "\r\n";
  return latin1Bytes(text);
}

/** What `clientHandshake` sends. */
export interface ClientHandshakeRequest {
  /** Host header value, e.g. `vps.example.com:8080`. */
  readonly host: string;
  /** Request target, starting with `/`. */
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly protocols?: string[];
  /** For the whole exchange: response head and, on refusal, its body. */
  readonly timeoutMs: number;
}

/** A completed client handshake. */
export interface ClientHandshakeResult {
  /** Bytes read past the response head: hand them to `WsConn` as `leftover`. */
  readonly leftover: Uint8Array;
  /** The subprotocol the server chose, or null. */
  readonly protocol: string | null;
  /** The response headers. */
  readonly headers: Headers;
}

/**
 * Client side of the upgrade over an open connection (TCP, TLS, or a proxy tunnel): writes the
 * GET request, reads the response head (16 KiB, `timeoutMs`) and checks 101, Upgrade,
 * Connection, Sec-WebSocket-Accept and the chosen subprotocol. Throws WsHandshakeError for a
 * refusal (status ≠ 101, with up to 4 KiB of the body), a bad 101, or no valid response
 * (status 0); it closes `conn` whenever it throws.
 */
export async function clientHandshake(
  conn: Deno.Conn,
  req: ClientHandshakeRequest,
): Promise<ClientHandshakeResult> {
  if (!/^\/[\x21-\x7e]*$/.test(req.path)) {
    throw new TypeError(`Invalid request path ${JSON.stringify(req.path)}`);
  }
  if (!/^[\x21-\x7e]+$/.test(req.host)) {
    throw new TypeError(`Invalid host ${JSON.stringify(req.host)}`);
  }
  const protocols = req.protocols ?? [];
  for (const p of protocols) {
    if (!isToken(p)) throw new TypeError(`Invalid subprotocol ${JSON.stringify(p)}`);
  }
  const key = newClientKey();
  const request = `GET ${req.path} HTTP/1.1\r\n` +
    `Host: ${req.host}\r\n` +
    "Upgrade: websocket\r\n" +
    "Connection: Upgrade\r\n" +
    `Sec-WebSocket-Key: ${key}\r\n` +
    "Sec-WebSocket-Version: 13\r\n" +
    (protocols.length > 0 ? `Sec-WebSocket-Protocol: ${protocols.join(", ")}\r\n` : "") +
    headerLines(req.headers) +
    "\r\n";
  const started = Date.now();
  try {
    const expected = await acceptKey(key);
    await writeAll(conn, latin1Bytes(request));
    let head: HttpHead;
    let res: ResponseHead;
    try {
      head = await readHead(conn, {
        maxBytes: MAX_RESPONSE_HEAD_BYTES,
        timeoutMs: Math.max(0, req.timeoutMs - (Date.now() - started)),
      });
      res = parseResponseHead(head.head);
    } catch (e) {
      if (!(e instanceof HttpHeadError)) throw e;
      throw new WsHandshakeError(`WebSocket handshake failed: ${e.message}`, { cause: e });
    }
    const fields = { status: res.status, statusText: res.statusText, headers: res.headers };
    if (res.status !== 101) {
      const remaining = Math.max(REFUSAL_BODY_MIN_WAIT_MS, req.timeoutMs - (Date.now() - started));
      const bytes = await readShortBody(conn, res.headers, head.leftover, {
        maxBytes: MAX_ERROR_BODY_BYTES,
        timeoutMs: remaining,
      });
      const body = new TextDecoder().decode(bytes);
      const said = body.trim() === "" ? "" : `: ${clip(body.trim().replace(/\s+/g, " "))}`;
      throw new WsHandshakeError(
        `WebSocket upgrade refused: ${res.status} ${res.statusText}`.trimEnd() + said,
        { ...fields, body },
      );
    }
    const fail = (why: string) =>
      new WsHandshakeError(`Bad WebSocket upgrade response: ${why}`, fields);
    if (!hasToken(res.headers.get("upgrade"), "websocket")) throw fail("Upgrade is not websocket");
    if (!hasToken(res.headers.get("connection"), "upgrade")) {
      throw fail("Connection does not include upgrade");
    }
    if (res.headers.get("sec-websocket-accept") !== await expected) {
      throw fail("Sec-WebSocket-Accept does not match the key");
    }
    // We offer no extensions, so a server must not choose one (§4.1).
    if (res.headers.has("sec-websocket-extensions")) throw fail("unrequested extension");
    const protocol = res.headers.get("sec-websocket-protocol");
    if (protocol !== null && !protocols.includes(protocol)) {
      throw fail(`subprotocol ${JSON.stringify(protocol)} was not offered`);
    }
    return { leftover: head.leftover, protocol, headers: res.headers };
  } catch (e) {
    closeQuietly(conn);
    throw e;
  }
}
