// HTTP/1.1 message body framing (RFC 9112 §6): which framing a head declares, and where a body ends.
import { isToken } from "./http_head.ts";

/** How the body of one HTTP/1.1 message is delimited. */
export type BodyFraming =
  | { readonly kind: "none" }
  | { readonly kind: "length"; readonly length: number }
  | { readonly kind: "chunked" }
  | { readonly kind: "close" }; // response only: body runs until the connection closes

/** Default cap on one chunk-size line (size, extensions), CRLF excluded. */
export const MAX_CHUNK_LINE_BYTES = 4096;
/** Default cap on the trailer section of a chunked body, final CRLF included. */
export const MAX_TRAILER_BYTES = 16384;
/** A chunk size may have at most this many hex digits (leading zeros included). */
export const MAX_CHUNK_SIZE_DIGITS = 16;
/** A Content-Length may have at most this many digits (2^53 has 16). */
export const MAX_CONTENT_LENGTH_DIGITS = 16;

const NONE: BodyFraming = { kind: "none" };
const CHUNKED: BodyFraming = { kind: "chunked" };
const CLOSE: BodyFraming = { kind: "close" };

/**
 * A message's framing is wrong or unsupported. `status` is what a proxy answers with: 400 for a
 * bad request, 501 for a transfer coding it does not know, 502 for a bad upstream response.
 */
export class HttpFramingError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = "HttpFramingError";
    this.status = status;
  }
}

/**
 * The transfer codings of a Transfer-Encoding header, lower-cased, empty list elements dropped.
 * Throws HttpFramingError(`status`) for a coding that is not a token (parameters included).
 */
function transferCodings(value: string, status: number): string[] {
  const codings: string[] = [];
  for (const part of value.split(",")) {
    const coding = part.trim().toLowerCase();
    if (coding === "") continue;
    if (!isToken(coding)) {
      throw new HttpFramingError(status, `bad Transfer-Encoding ${JSON.stringify(value)}`);
    }
    codings.push(coding);
  }
  if (codings.length === 0) {
    throw new HttpFramingError(status, `empty Transfer-Encoding ${JSON.stringify(value)}`);
  }
  return codings;
}

/** True when `codings` end in exactly one "chunked"; HttpFramingError when it is repeated. */
function endsChunked(codings: readonly string[], status: number): boolean {
  const count = codings.filter((c) => c === "chunked").length;
  if (count > 1) throw new HttpFramingError(status, "Transfer-Encoding applies chunked twice");
  return codings[codings.length - 1] === "chunked";
}

/** A Content-Length value (several equal list members allowed), or a reason it is bad. */
function contentLength(value: string): number | string {
  let length = -1;
  for (const part of value.split(",")) {
    const digits = part.trim();
    if (!/^[0-9]+$/.test(digits)) return `bad Content-Length ${JSON.stringify(value)}`;
    if (digits.length > MAX_CONTENT_LENGTH_DIGITS) {
      return `Content-Length ${JSON.stringify(value)} is too large`;
    }
    const n = Number(digits);
    if (n > Number.MAX_SAFE_INTEGER) return `Content-Length ${JSON.stringify(value)} is too large`;
    if (length >= 0 && n !== length) {
      return `conflicting Content-Length values ${JSON.stringify(value)}`;
    }
    length = n;
  }
  return length;
}

/**
 * Request body framing: Transfer-Encoding chunked (only "chunked" as the final coding is
 * accepted; anything else → 501 "transfer coding X is not supported"), Content-Length (must be
 * digits only; several equal values like "5, 5" ok, differing → 400), both TE and CL present →
 * 400 (request smuggling guard), none → none.
 */
export function requestFraming(headers: Headers): BodyFraming {
  const te = headers.get("transfer-encoding");
  const cl = headers.get("content-length");
  if (te !== null) {
    if (cl !== null) {
      throw new HttpFramingError(
        400,
        "request has both Transfer-Encoding and Content-Length (send only one)",
      );
    }
    const codings = transferCodings(te, 400);
    if (!endsChunked(codings, 400)) {
      const last = codings[codings.length - 1]!;
      throw new HttpFramingError(501, `transfer coding "${last}" is not supported`);
    }
    return CHUNKED;
  }
  if (cl !== null) {
    const length = contentLength(cl);
    if (typeof length === "string") throw new HttpFramingError(400, length);
    return length === 0 ? NONE : { kind: "length", length };
  }
  return NONE;
}

/**
 * Response body framing for a request `method`: HEAD, 1xx, 204, 304 → none; 2xx to CONNECT →
 * close; TE chunked (final) → chunked; TE other → close; CL valid → length; invalid CL → throws
 * HttpFramingError(502); else close.
 */
export function responseFraming(method: string, status: number, headers: Headers): BodyFraming {
  if (method === "HEAD" || (status >= 100 && status < 200) || status === 204 || status === 304) {
    return NONE;
  }
  if (method === "CONNECT" && status >= 200 && status < 300) return CLOSE;
  const te = headers.get("transfer-encoding");
  if (te !== null) {
    // Transfer-Encoding overrides Content-Length in a response (RFC 9112 §6.3 item 3).
    return endsChunked(transferCodings(te, 502), 502) ? CHUNKED : CLOSE;
  }
  const cl = headers.get("content-length");
  if (cl !== null) {
    const length = contentLength(cl);
    if (typeof length === "string") throw new HttpFramingError(502, `upstream sent a ${length}`);
    return length === 0 ? NONE : { kind: "length", length };
  }
  return CLOSE;
}

/** Limits for a BodyTracker. */
export interface BodyTrackerLimits {
  /** Bytes of one chunk-size line (size and extensions, CRLF excluded). */
  readonly maxChunkLineBytes?: number;
  /** Bytes of the trailer section, final CRLF included. */
  readonly maxTrailerBytes?: number;
}

const enum S {
  Size, // hex digits of a chunk size
  Ext, // after the size: BWS, chunk extensions, up to CR
  SizeLf, // LF after a chunk-size line
  Data, // chunk data
  DataCr, // CR after chunk data
  DataLf, // LF after chunk data
  TrailerStart, // start of a trailer line, or the final CR
  TrailerName, // field name of a trailer line
  TrailerValue, // after the colon, up to CR
  TrailerLf, // LF after a trailer line
  FinalLf, // LF of the blank line that ends the body
  Done,
  Failed,
}

const CR = 13;
const LF = 10;

/** Value of a hex digit byte, or -1. */
function hexValue(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x61 && b <= 0x66) return b - 0x57;
  if (b >= 0x41 && b <= 0x46) return b - 0x37;
  return -1;
}

/** Token characters of a field name (RFC 9110 §5.6.2). */
const TOKEN_BYTES = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") {
  TOKEN_BYTES[c.charCodeAt(0)] = 1;
}

/** HTAB, visible ASCII, SP and obs-text: what a field value or chunk extension may hold. */
function isValueByte(b: number): boolean {
  return b === 9 || (b >= 0x20 && b !== 0x7f);
}

/**
 * Tracks where one message body ends in a byte stream, chunk by chunk (works when fed one byte
 * at a time). Holds no body bytes: memory stays constant whatever the body size.
 */
export class BodyTracker {
  readonly #kind: BodyFraming["kind"];
  readonly #maxLine: number;
  readonly #maxTrailer: number;
  #state: S;
  #remaining = 0; // bytes left of a length body or of the current chunk
  #digits = 0; // hex digits of the current chunk size
  #lineBytes = 0; // bytes of the current chunk-size line
  #trailerBytes = 0;
  #decoded = 0;

  constructor(framing: BodyFraming, limits?: BodyTrackerLimits) {
    this.#kind = framing.kind;
    this.#maxLine = limits?.maxChunkLineBytes ?? MAX_CHUNK_LINE_BYTES;
    this.#maxTrailer = limits?.maxTrailerBytes ?? MAX_TRAILER_BYTES;
    switch (framing.kind) {
      case "none":
        this.#state = S.Done;
        break;
      case "length":
        if (!Number.isSafeInteger(framing.length) || framing.length < 0) {
          throw new RangeError(`invalid body length ${framing.length}`);
        }
        this.#remaining = framing.length;
        this.#state = framing.length === 0 ? S.Done : S.Data;
        break;
      case "chunked":
        this.#state = S.Size;
        break;
      case "close":
        this.#state = S.Data;
        break;
      default: {
        const never: never = framing;
        throw new TypeError(`unknown body framing ${JSON.stringify(never)}`);
      }
    }
  }

  /** True once the whole body went by (at once for `none` and a zero length). */
  get done(): boolean {
    return this.#state === S.Done;
  }

  /** Body bytes (decoded: chunk data only) seen so far. */
  get decodedBytes(): number {
    return this.#decoded;
  }

  /**
   * Feeds bytes of the stream; returns how many of them belong to this body (the rest, if done,
   * start the next message). `onData` receives decoded body bytes (chunk data only, no chunk
   * syntax) as subarray views. Throws HttpFramingError(400) on bad chunk syntax or an over-limit
   * chunk line or trailer section; the tracker then stays failed. Feeding after done returns 0.
   */
  feed(bytes: Uint8Array, onData?: (decoded: Uint8Array) => void): number {
    if (this.#state === S.Failed) throw this.#error("the body was already malformed");
    if (this.#state === S.Done) return 0;
    if (this.#kind === "close") {
      this.#data(bytes, onData);
      return bytes.length;
    }
    if (this.#kind === "length") {
      const n = Math.min(this.#remaining, bytes.length);
      this.#data(bytes.subarray(0, n), onData);
      this.#remaining -= n;
      if (this.#remaining === 0) this.#state = S.Done;
      return n;
    }
    try {
      return this.#feedChunked(bytes, onData);
    } catch (e) {
      this.#state = S.Failed;
      throw e;
    }
  }

  /** The stream ended: true if that is a valid end of this body (close framing, or already done); false = truncated. */
  end(): boolean {
    if (this.#state === S.Done) return true;
    if (this.#kind === "close" && this.#state !== S.Failed) {
      this.#state = S.Done;
      return true;
    }
    return false;
  }

  #data(view: Uint8Array, onData?: (decoded: Uint8Array) => void): void {
    if (view.length === 0) return;
    this.#decoded += view.length;
    onData?.(view);
  }

  #error(what: string): HttpFramingError {
    return new HttpFramingError(400, `Malformed chunked body: ${what}`);
  }

  #feedChunked(bytes: Uint8Array, onData?: (decoded: Uint8Array) => void): number {
    let i = 0;
    while (i < bytes.length) {
      const b = bytes[i]!;
      switch (this.#state) {
        case S.Size: {
          const v = hexValue(b);
          if (v >= 0) {
            if (++this.#digits > MAX_CHUNK_SIZE_DIGITS) {
              throw this.#error(`chunk size has more than ${MAX_CHUNK_SIZE_DIGITS} hex digits`);
            }
            this.#remaining = this.#remaining * 16 + v;
            if (this.#remaining > Number.MAX_SAFE_INTEGER) {
              throw this.#error("chunk size too large");
            }
            this.#lineBytes++;
            i++;
            break;
          }
          if (this.#digits === 0) throw this.#error("chunk size missing");
          this.#state = S.Ext; // the byte is looked at again there
          break;
        }
        case S.Ext:
          if (b === CR) {
            this.#state = S.SizeLf;
          } else if (b === LF) {
            throw this.#error("bare LF ending a chunk-size line");
          } else if (!isValueByte(b)) {
            throw this.#error("control character in a chunk-size line");
          } else if (this.#lineBytes === this.#digits && b !== 0x3b && b !== 0x20 && b !== 9) {
            throw this.#error("chunk size is not hexadecimal");
          } else if (++this.#lineBytes > this.#maxLine) {
            throw this.#error(`chunk-size line exceeds ${this.#maxLine} bytes`);
          }
          i++;
          break;
        case S.SizeLf:
          if (b !== LF) throw this.#error("CR without LF after a chunk size");
          i++;
          this.#digits = 0;
          this.#lineBytes = 0;
          this.#state = this.#remaining === 0 ? S.TrailerStart : S.Data;
          break;
        case S.Data: {
          const n = Math.min(this.#remaining, bytes.length - i);
          this.#data(bytes.subarray(i, i + n), onData);
          this.#remaining -= n;
          i += n;
          if (this.#remaining === 0) this.#state = S.DataCr;
          break;
        }
        case S.DataCr:
          if (b !== CR) throw this.#error("chunk data longer than its size (expected CRLF)");
          i++;
          this.#state = S.DataLf;
          break;
        case S.DataLf:
          if (b !== LF) throw this.#error("CR without LF after chunk data");
          i++;
          this.#state = S.Size;
          break;
        case S.TrailerStart:
        case S.TrailerName:
        case S.TrailerValue:
        case S.TrailerLf:
        case S.FinalLf:
          if (++this.#trailerBytes > this.#maxTrailer) {
            throw this.#error(`trailer section exceeds ${this.#maxTrailer} bytes`);
          }
          i++;
          if (this.#trailerByte(b)) return i;
          break;
        default:
          throw new Error(`BodyTracker in unexpected state ${this.#state}`);
      }
    }
    return i;
  }

  /** Moves through the trailer section by one byte; true once the body is done. */
  #trailerByte(b: number): boolean {
    switch (this.#state) {
      case S.TrailerStart:
        if (b === CR) this.#state = S.FinalLf;
        else if (TOKEN_BYTES[b]) this.#state = S.TrailerName;
        else if (b === LF) throw this.#error("bare LF in the trailer section");
        else throw this.#error("trailer line without a field name");
        break;
      case S.TrailerName:
        if (b === 0x3a) this.#state = S.TrailerValue;
        else if (!TOKEN_BYTES[b]) throw this.#error("bad character in a trailer field name");
        break;
      case S.TrailerValue:
        if (b === CR) this.#state = S.TrailerLf;
        else if (!isValueByte(b)) throw this.#error("bad character in a trailer field value");
        break;
      case S.TrailerLf:
        if (b !== LF) throw this.#error("CR without LF in the trailer section");
        this.#state = S.TrailerStart;
        break;
      case S.FinalLf:
        if (b !== LF) throw this.#error("CR without LF at the end of the body");
        this.#state = S.Done;
        return true;
    }
    return false;
  }
}
