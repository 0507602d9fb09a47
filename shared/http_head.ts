// HTTP/1.1 heads for both ends: reading a head off a socket, strict parsing, a short body read.
import { Fields } from "./http_fields.ts";

/** A request or response head may have at most this many lines, start line included. */
export const MAX_HEAD_LINES = 100;

const FIRST_HEAD_CHUNK_BYTES = 4 * 1024;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Field values: HTAB, SP, visible ASCII and obs-text; no other control characters. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) (HTTP\/1\.[01])$/;
const STATUS_LINE = /^(HTTP\/1\.[01]) ([1-9][0-9]{2})(?: ([\t\x20-\x7e\x80-\xff]*))?$/;

/** Why an HTTP head could not be read or parsed. */
export type HttpHeadErrorKind = "too_large" | "timeout" | "eof" | "malformed";

/** Reading or parsing an HTTP head failed; `kind` tells a server which status to answer with. */
export class HttpHeadError extends Error {
  readonly kind: HttpHeadErrorKind;
  constructor(kind: HttpHeadErrorKind, message: string) {
    super(message);
    this.name = "HttpHeadError";
    this.kind = kind;
  }
}

/** Options for `readHead`. */
export interface ReadHeadOptions {
  /** The head, blank line included, may not be longer. */
  readonly maxBytes: number;
  /** Infinity: no timer (the caller bounds the wait some other way, e.g. a watchdog). */
  readonly timeoutMs: number;
  /** Bytes of the head already read from `conn`. */
  readonly prefix?: Uint8Array;
}

/** An HTTP head as text and the bytes read past it. */
export interface HttpHead {
  /** The head as Latin-1 text, without the final blank line. */
  readonly head: string;
  /** Bytes read after the blank line (a body, or the first WebSocket frames). */
  readonly leftover: Uint8Array;
}

/** A parsed request head. */
export interface RequestHead {
  readonly method: string;
  readonly target: string;
  readonly version: string;
  readonly headers: Headers;
}

/** A parsed response head. */
export interface ResponseHead {
  readonly version: string;
  readonly status: number;
  readonly statusText: string;
  readonly headers: Headers;
}

/** A single deadline for several reads; its timer is the only one. */
class Deadline {
  readonly expired: Promise<"timeout">;
  #timer: ReturnType<typeof setTimeout>;
  constructor(ms: number) {
    const { promise, resolve } = Promise.withResolvers<"timeout">();
    this.expired = promise;
    this.#timer = setTimeout(() => resolve("timeout"), Math.max(0, ms));
  }
  cancel(): void {
    clearTimeout(this.#timer);
  }
}

/** One read raced against the deadline; a lost race leaves the read pending (handled). */
async function readBefore(
  conn: Deno.Conn,
  target: Uint8Array,
  deadline: Deadline | null,
): Promise<number | null | "timeout"> {
  const read = conn.read(target);
  // No deadline: the caller watches the time itself (and closes `conn` when it is up).
  if (deadline === null) return await read;
  const result = await Promise.race([read, deadline.expired]);
  if (result === "timeout") read.catch(() => {});
  return result;
}

/**
 * Reads an HTTP head (start line and headers up to the blank line) in chunks. Bytes read past
 * the blank line come back as `leftover`. Throws HttpHeadError: `too_large` past `maxBytes`,
 * `timeout`, `eof` when the peer closes first. After a timeout a read is still pending on
 * `conn`: the caller may write a response, and must close `conn`.
 */
export async function readHead(conn: Deno.Conn, opts: ReadHeadOptions): Promise<HttpHead> {
  const { maxBytes, timeoutMs } = opts;
  const prefix = opts.prefix ?? new Uint8Array(0);
  let buf = new Uint8Array(Math.max(Math.min(maxBytes, FIRST_HEAD_CHUNK_BYTES), prefix.length));
  buf.set(prefix);
  let len = prefix.length;
  let end = findHeadEnd(buf, 0, len);
  if (end >= 0) return splitHead(buf, end, len, maxBytes);
  if (len >= maxBytes) throw tooLarge(maxBytes);
  const deadline = Number.isFinite(timeoutMs) ? new Deadline(timeoutMs) : null;
  try {
    for (;;) {
      if (len === buf.length) {
        const next = new Uint8Array(Math.min(buf.length * 4, maxBytes));
        next.set(buf);
        buf = next;
      }
      const n = await readBefore(conn, buf.subarray(len), deadline);
      if (n === "timeout") {
        throw new HttpHeadError("timeout", `No complete HTTP head within ${timeoutMs} ms`);
      }
      if (n === null) {
        throw new HttpHeadError(
          "eof",
          len === 0
            ? "Connection closed before an HTTP head"
            : `Connection closed after ${len} bytes of an incomplete HTTP head`,
        );
      }
      const from = Math.max(0, len - 3);
      len += n;
      if (!startsLikeHttp(buf, len)) {
        // A TLS ClientHello (0x16), an SSH banner's reply, binary junk: no use waiting for a head
        // that will never come (a TLS client would sit out the whole timeout).
        throw new HttpHeadError("malformed", notHttpMessage(buf, len));
      }
      end = findHeadEnd(buf, from, len);
      if (end >= 0) return splitHead(buf, end, len, maxBytes);
      if (len >= maxBytes) throw tooLarge(maxBytes);
    }
  } finally {
    deadline?.cancel();
  }
}

/** False once the first byte after optional blank lines cannot start a method or `HTTP/`. */
function startsLikeHttp(buf: Uint8Array, len: number): boolean {
  for (let i = 0; i < len; i++) {
    const b = buf[i]!;
    if (b === 13 || b === 10) continue; // blank lines before the start line are allowed
    return b >= 0x41 && b <= 0x5a; // methods and "HTTP/" start with an upper-case letter
  }
  return true;
}

function notHttpMessage(buf: Uint8Array, len: number): string {
  let i = 0;
  while (i < len && (buf[i] === 13 || buf[i] === 10)) i++;
  return buf[i] === 0x16
    ? "a TLS handshake arrived where an HTTP request was expected (use ws:// and http://, not wss://, for this port)"
    : "the peer did not send an HTTP request";
}

function tooLarge(maxBytes: number): HttpHeadError {
  return new HttpHeadError("too_large", `HTTP head exceeds ${maxBytes} bytes`);
}

/** Index just past the CRLFCRLF that ends the head in buf[from, len), or -1. */
function findHeadEnd(buf: Uint8Array, from: number, len: number): number {
  for (let i = buf.indexOf(13, from); i >= 0 && i + 3 < len; i = buf.indexOf(13, i + 1)) {
    if (buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i + 4;
  }
  return -1;
}

function splitHead(buf: Uint8Array, end: number, len: number, maxBytes: number): HttpHead {
  if (end > maxBytes) throw tooLarge(maxBytes);
  return {
    head: latin1(buf.subarray(0, end - 4)),
    leftover: buf.slice(end, len),
  };
}

/** Decodes ASCII only (checked first): for ASCII, UTF-8 and Latin-1 agree. */
const asciiDecoder = new TextDecoder("utf-8");
const asciiEncoder = new TextEncoder();
const ASCII = /^[^\u0080-\uffff]*$/;

/** A head's bytes as Latin-1 text (one char per byte). */
export function latin1(bytes: Uint8Array): string {
  let ascii = true;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i]! >= 0x80) {
      ascii = false;
      break;
    }
  }
  // The native decoder is far cheaper than building the string a char at a time.
  if (ascii) return asciiDecoder.decode(bytes);
  let s = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    s += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return s;
}

/** Latin-1 bytes of `text` (an HTTP head); TypeError for characters above U+00FF. */
export function latin1Bytes(text: string): Uint8Array {
  if (ASCII.test(text)) return asciiEncoder.encode(text);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) throw new TypeError("HTTP head text must be Latin-1");
    out[i] = c;
  }
  return out;
}

/** Splits a head into its start line and header fields, strictly. */
function parseHead(text: string): { start: string; headers: Fields } {
  const body = text.endsWith("\r\n\r\n") ? text.slice(0, -4) : text;
  const lines = body.split("\r\n");
  if (lines.length > MAX_HEAD_LINES) {
    throw new HttpHeadError("too_large", `HTTP head has more than ${MAX_HEAD_LINES} lines`);
  }
  const headers = new Fields();
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === "") throw malformed("empty line inside the head");
    // Obsolete line folding is a smuggling vector (RFC 9112 §5.2): reject it.
    if (line[0] === " " || line[0] === "\t") throw malformed("folded header line");
    const colon = line.indexOf(":");
    if (colon <= 0) throw malformed(`header line without a name: ${JSON.stringify(clip(line))}`);
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw malformed(`bad header name ${JSON.stringify(clip(name))}`);
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (!FIELD_VALUE.test(value)) throw malformed(`bad characters in header ${name}`);
    headers.appendTrusted(name, value);
  }
  // A bare CR or LF that survived the split fails the start-line, name or value patterns.
  return { start: lines[0]!, headers };
}

function malformed(message: string): HttpHeadError {
  return new HttpHeadError("malformed", `Malformed HTTP head: ${message}`);
}

export function clip(s: string): string {
  return s.length > 60 ? s.slice(0, 60) + "..." : s;
}

/**
 * Parses a request head (`GET /path HTTP/1.1` and header lines). Strict: at most 100 lines,
 * HTTP/1.0 or 1.1 only, token header names, no folded lines, no control characters.
 * Throws HttpHeadError (`malformed` or `too_large`).
 */
export function parseRequestHead(text: string): RequestHead {
  const { start, headers } = parseHead(text);
  const m = REQUEST_LINE.exec(start);
  if (!m) throw malformed(`bad request line ${JSON.stringify(clip(start))}`);
  return { method: m[1]!, target: m[2]!, version: m[3]!, headers };
}

/** Parses a response head (`HTTP/1.1 101 Switching Protocols` and header lines), strictly. */
export function parseResponseHead(text: string): ResponseHead {
  const { start, headers } = parseHead(text);
  const m = STATUS_LINE.exec(start);
  if (!m) throw malformed(`bad status line ${JSON.stringify(clip(start))}`);
  return { version: m[1]!, status: Number(m[2]), statusText: m[3] ?? "", headers };
}

/** True when the comma-separated header `value` lists `token` (case-insensitive). */
export function hasToken(value: string | null, token: string): boolean {
  if (value === null) return false;
  return value.split(",").some((t) => t.trim().toLowerCase() === token);
}

/** True for an HTTP token (a header name, a method, a subprotocol). */
export function isToken(s: string): boolean {
  return TOKEN.test(s);
}

/** True for a header value without CR, LF, NUL or other control characters. */
export function isFieldValue(s: string): boolean {
  return FIELD_VALUE.test(s);
}

/**
 * Up to `maxBytes` of a response body that follows a head: by Content-Length when given, else
 * until EOF, the limit, the end of a chunked body (decoded), or `timeoutMs`. `leftover` is what
 * `readHead` read past the head. A reset keeps what arrived. Meant for short error bodies on a
 * connection that is closed afterwards: a read may be left pending after a timeout.
 */
export async function readShortBody(
  conn: Deno.Conn,
  headers: Headers,
  leftover: Uint8Array,
  opts: { readonly maxBytes: number; readonly timeoutMs: number },
): Promise<Uint8Array> {
  const { maxBytes, timeoutMs } = opts;
  const lengthHeader = headers.get("content-length");
  const declared = lengthHeader !== null && /^[0-9]{1,15}$/.test(lengthHeader)
    ? Number(lengthHeader)
    : null;
  const chunked = hasToken(headers.get("transfer-encoding"), "chunked");
  // Chunk framing takes some room of its own; read a little more to get maxBytes of content.
  const limit = declared !== null
    ? Math.min(declared, maxBytes)
    : maxBytes + (chunked ? Math.ceil(maxBytes / 4) : 0);
  const buf = new Uint8Array(limit);
  let len = Math.min(leftover.length, limit);
  buf.set(leftover.subarray(0, len));
  const deadline = Number.isFinite(timeoutMs) ? new Deadline(timeoutMs) : null;
  try {
    while (len < limit && !(chunked && chunkedDone(buf.subarray(0, len)))) {
      const n = await readBefore(conn, buf.subarray(len), deadline);
      if (n === null || n === "timeout") break;
      len += n;
    }
  } catch {
    // A reset after the head still leaves what arrived.
  } finally {
    deadline?.cancel();
  }
  const bytes = chunked ? dechunk(buf.subarray(0, len)) : buf.subarray(0, len);
  return bytes.subarray(0, maxBytes);
}
function chunkedDone(bytes: Uint8Array): boolean {
  return /(^|\r\n)0(;[^\r\n]*)?\r\n(?:[^\r\n]+\r\n)*\r\n$/.test(latin1(bytes));
}

/** Best-effort decoding of a (possibly truncated) chunked body. */
function dechunk(bytes: Uint8Array): Uint8Array {
  const out: number[] = [];
  let i = 0;
  while (i < bytes.length) {
    const lineEnd = bytes.indexOf(10, i);
    if (lineEnd < 0) break;
    const size = parseInt(latin1(bytes.subarray(i, lineEnd)).split(";")[0]!.trim(), 16);
    if (!Number.isFinite(size) || size <= 0) break;
    const start = lineEnd + 1;
    const stop = Math.min(start + size, bytes.length);
    for (let j = start; j < stop; j++) out.push(bytes[j]!);
    i = stop + 2;
  }
  return new Uint8Array(out);
}

/** The host a request names, lower case, without port or final dot; null if none or invalid. */
export function requestHost(headers: Headers): string | null {
  const raw = headers.get("host");
  if (!raw) return null;
  let host = raw.trim().toLowerCase();
  if (host.startsWith("[")) return null; // an IPv6 literal is never a tunnel's name
  const colon = host.lastIndexOf(":");
  if (colon >= 0) {
    if (!/^[0-9]{1,5}$/.test(host.slice(colon + 1))) return null;
    host = host.slice(0, colon);
  }
  if (host.endsWith(".")) host = host.slice(0, -1);
  return /^[a-z0-9.-]{1,253}$/.test(host) ? host : null;
}
