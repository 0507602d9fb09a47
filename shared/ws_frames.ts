// RFC 6455 frame codec: opcodes, header encode/parse, masking, close payloads, close codes.

/** Frame opcodes (RFC 6455 §5.2). */
export const Opcode = {
  Continuation: 0x0,
  Text: 0x1,
  Binary: 0x2,
  Close: 0x8,
  Ping: 0x9,
  Pong: 0xa,
} as const;

/** Close codes used by this implementation (RFC 6455 §7.4.1). */
export const WsCloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  UnsupportedData: 1003,
  /** Reported (never sent) when a close frame carried no code. */
  NoStatus: 1005,
  /** Reported (never sent) when the connection ended without a close frame. */
  Abnormal: 1006,
  InvalidPayload: 1007,
  PolicyViolation: 1008,
  MessageTooBig: 1009,
  InternalError: 1011,
} as const;

/** The longest frame header: 2 bytes + 8 bytes of length + 4 bytes of mask key. */
export const MAX_WS_HEADER_BYTES = 14;
/** Control frames (close, ping, pong) carry at most this many payload bytes. */
export const MAX_CONTROL_PAYLOAD_BYTES = 125;
/** A close reason is limited to 123 bytes of UTF-8 (125 minus the 2-byte code). */
export const MAX_CLOSE_REASON_BYTES = 123;

/** A peer broke RFC 6455; `closeCode` is the code to fail the connection with. */
export class WsProtocolError extends Error {
  /** The close code sent to the peer (1002, 1007, 1009, …). */
  readonly closeCode: number;
  constructor(closeCode: number, message: string) {
    super(message);
    this.name = "WsProtocolError";
    this.closeCode = closeCode;
  }
}

/** Fields of a frame header to encode. */
export interface FrameHeaderFields {
  readonly fin: boolean;
  readonly opcode: number;
  readonly length: number;
  /** The 4 mask key bytes read as a big-endian uint32, or null for an unmasked frame. */
  readonly maskKey: number | null;
}

/** A parsed frame header. */
export interface FrameHeader {
  readonly fin: boolean;
  readonly opcode: number;
  /** True when the frame carried a mask key (even a zero one). */
  readonly masked: boolean;
  /** The 4 mask key bytes as a big-endian uint32 (0 when unmasked). */
  readonly maskKey: number;
  /** Bytes taken by the header itself; the payload starts here. */
  readonly headerBytes: number;
  readonly payloadLength: number;
}

/** Which end parses: a server requires masked frames, a client requires unmasked ones. */
export type FrameRole = "client" | "server";

const UTF8_STRICT = new TextDecoder("utf-8", { fatal: true });
const UTF8 = new TextEncoder();
/** The payload loop works on 32-bit words when this many bytes or more remain. */
const WORD_MASK_MIN_BYTES = 16;
/** Whether this machine stores a Uint32Array word little-endian (it decides how keys map to words). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** True for the opcodes RFC 6455 defines. */
export function isKnownOpcode(opcode: number): boolean {
  return opcode <= Opcode.Binary || (opcode >= Opcode.Close && opcode <= Opcode.Pong);
}

/** True for control opcodes (close, ping, pong and the reserved 0xB–0xF). */
export function isControlOpcode(opcode: number): boolean {
  return (opcode & 0x8) !== 0;
}

/** Bytes a header needs for a payload of `length`, masked or not. */
export function headerLength(length: number, masked: boolean): number {
  const base = length < 126 ? 2 : length < 0x10000 ? 4 : 10;
  return masked ? base + 4 : base;
}

/**
 * Writes a frame header into `target` at `offset` and returns the number of bytes written
 * (2 to 14). Throws RangeError when it does not fit or a field is out of range.
 */
export function encodeHeader(
  target: Uint8Array,
  offset: number,
  fields: FrameHeaderFields,
): number {
  const { fin, opcode, length, maskKey } = fields;
  if (!Number.isInteger(opcode) || opcode < 0 || opcode > 0xf) {
    throw new RangeError(`Invalid opcode ${opcode}`);
  }
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new RangeError(`Invalid payload length ${length}`);
  }
  const masked = maskKey !== null;
  const size = headerLength(length, masked);
  if (offset < 0 || offset + size > target.byteLength) {
    throw new RangeError(`Frame header of ${size} bytes does not fit at offset ${offset}`);
  }
  let i = offset;
  target[i++] = (fin ? 0x80 : 0) | opcode;
  const maskBit = masked ? 0x80 : 0;
  if (length < 126) {
    target[i++] = maskBit | length;
  } else if (length < 0x10000) {
    target[i++] = maskBit | 126;
    target[i++] = length >>> 8;
    target[i++] = length & 0xff;
  } else {
    target[i++] = maskBit | 127;
    const hi = Math.floor(length / 0x1_0000_0000);
    const lo = length >>> 0;
    target[i++] = hi >>> 24;
    target[i++] = (hi >>> 16) & 0xff;
    target[i++] = (hi >>> 8) & 0xff;
    target[i++] = hi & 0xff;
    target[i++] = lo >>> 24;
    target[i++] = (lo >>> 16) & 0xff;
    target[i++] = (lo >>> 8) & 0xff;
    target[i++] = lo & 0xff;
  }
  if (masked) {
    target[i++] = maskKey >>> 24;
    target[i++] = (maskKey >>> 16) & 0xff;
    target[i++] = (maskKey >>> 8) & 0xff;
    target[i++] = maskKey & 0xff;
  }
  return i - offset;
}

/**
 * Parses the frame header at the start of `buf`, the unread part of a growing read buffer.
 * Returns the header, or — when `buf` is too short — the number of bytes the header needs in
 * total (so the caller reads at least that many and tries again). The payload follows at
 * `headerBytes`; the whole frame is `headerBytes + payloadLength` bytes.
 * Throws WsProtocolError (1002) for anything RFC 6455 forbids: reserved bits, unknown opcodes,
 * fragmented or oversized control frames, a missing mask from a client (`role` "server") or a
 * mask from a server (`role` "client"), and 64-bit lengths beyond Number.MAX_SAFE_INTEGER.
 */
export function parseFrameHeader(buf: Uint8Array, role: FrameRole): FrameHeader | number {
  if (buf.byteLength < 2) return 2;
  const b0 = buf[0]!;
  const b1 = buf[1]!;
  // No extension is ever negotiated, so any reserved bit is a protocol error (§5.2).
  if ((b0 & 0x70) !== 0) throw protocolError("reserved bits set in a frame header");
  const fin = (b0 & 0x80) !== 0;
  const opcode = b0 & 0x0f;
  if (!isKnownOpcode(opcode)) throw protocolError(`unknown opcode 0x${opcode.toString(16)}`);
  const masked = (b1 & 0x80) !== 0;
  // §5.1: clients must mask every frame, servers must never mask.
  if (role === "server" && !masked) throw protocolError("unmasked frame from a client");
  if (role === "client" && masked) throw protocolError("masked frame from a server");
  const len7 = b1 & 0x7f;
  if (isControlOpcode(opcode)) {
    if (!fin) throw protocolError("fragmented control frame");
    if (len7 > MAX_CONTROL_PAYLOAD_BYTES) throw protocolError("control frame over 125 bytes");
  }
  const lengthBytes = len7 === 126 ? 2 : len7 === 127 ? 8 : 0;
  const headerBytes = 2 + lengthBytes + (masked ? 4 : 0);
  if (buf.byteLength < headerBytes) return headerBytes;
  let payloadLength = len7;
  let i = 2;
  if (len7 === 126) {
    payloadLength = (buf[2]! << 8) | buf[3]!;
    i = 4;
  } else if (len7 === 127) {
    const hi = ((buf[2]! << 24) | (buf[3]! << 16) | (buf[4]! << 8) | buf[5]!) >>> 0;
    const lo = ((buf[6]! << 24) | (buf[7]! << 16) | (buf[8]! << 8) | buf[9]!) >>> 0;
    // 2^53 - 1 has 21 bits in the high word; anything above cannot be counted exactly.
    if (hi > 0x1f_ffff) throw protocolError("64-bit payload length beyond 2^53 - 1");
    payloadLength = hi * 0x1_0000_0000 + lo;
    i = 10;
  }
  let maskKey = 0;
  if (masked) {
    maskKey = ((buf[i]! << 24) | (buf[i + 1]! << 16) | (buf[i + 2]! << 8) | buf[i + 3]!) >>> 0;
  }
  return { fin, opcode, masked, maskKey, headerBytes, payloadLength };
}

function protocolError(message: string): WsProtocolError {
  return new WsProtocolError(WsCloseCode.ProtocolError, message);
}

/** Key byte `index` (0–3) of a big-endian key. */
function keyByte(key: number, index: number): number {
  return (key >>> (24 - 8 * index)) & 0xff;
}

/**
 * XORs `data` in place with a mask key (masking and unmasking are the same operation).
 * `maskKey` is the 4 key bytes as a big-endian uint32; `phase` is the payload position of
 * `data[0]` modulo 4, for masking a payload in pieces. A zero key changes nothing and costs
 * nothing. The middle of the buffer is processed as aligned 32-bit words.
 */
export function applyMask(data: Uint8Array, maskKey: number, phase = 0): void {
  if (maskKey === 0) return;
  const n = data.byteLength;
  let i = 0;
  if (n >= WORD_MASK_MIN_BYTES) {
    // Bytes up to the first 4-byte boundary of the underlying buffer, then whole words.
    const head = (4 - (data.byteOffset & 3)) & 3;
    for (; i < head; i++) data[i]! ^= keyByte(maskKey, (phase + i) & 3);
    const words = (n - i) >>> 2;
    const rot = (phase + i) & 3;
    // The key as the word it forms in memory, rotated to start at key byte `rot`.
    const be = rot === 0 ? maskKey : ((maskKey << (8 * rot)) | (maskKey >>> (32 - 8 * rot))) >>> 0;
    const word = LITTLE_ENDIAN ? byteSwap32(be) : be;
    const view = new Uint32Array(data.buffer, data.byteOffset + i, words);
    for (let w = 0; w < words; w++) view[w]! ^= word;
    i += words * 4;
  }
  for (; i < n; i++) data[i]! ^= keyByte(maskKey, (phase + i) & 3);
}

function byteSwap32(x: number): number {
  return (((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24)) >>> 0;
}

/**
 * True for codes a close frame may carry (§7.4): 1000–1003, 1007–1014 and 3000–4999.
 * 1004–1006 and 1015 are reserved for reporting and never appear on the wire.
 */
export function isValidCloseCode(code: number): boolean {
  if (!Number.isInteger(code)) return false;
  if (code >= 3000 && code <= 4999) return true;
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014);
}

/**
 * The payload of a close frame: a 2-byte code and a UTF-8 reason. With no code the payload is
 * empty (and the reason must be too). Throws RangeError for an invalid code or a reason longer
 * than 123 bytes of UTF-8 (see `truncateCloseReason`).
 */
export function encodeClosePayload(code?: number, reason = ""): Uint8Array {
  if (code === undefined) {
    if (reason !== "") throw new RangeError("A close reason needs a close code");
    return new Uint8Array(0);
  }
  if (!isValidCloseCode(code)) throw new RangeError(`Invalid WebSocket close code ${code}`);
  const text = UTF8.encode(reason);
  if (text.byteLength > MAX_CLOSE_REASON_BYTES) {
    throw new RangeError(`Close reason is ${text.byteLength} bytes of UTF-8; the limit is 123`);
  }
  const out = new Uint8Array(2 + text.byteLength);
  out[0] = code >>> 8;
  out[1] = code & 0xff;
  out.set(text, 2);
  return out;
}

/**
 * Reads a received close payload. An empty payload means 1005 (no status). Throws
 * WsProtocolError: 1002 for a 1-byte payload or a code that may not be sent, 1007 for a reason
 * that is not valid UTF-8.
 */
export function decodeClosePayload(payload: Uint8Array): { code: number; reason: string } {
  if (payload.byteLength === 0) return { code: WsCloseCode.NoStatus, reason: "" };
  if (payload.byteLength === 1) throw protocolError("close frame with a 1-byte payload");
  const code = (payload[0]! << 8) | payload[1]!;
  if (!isValidCloseCode(code)) throw protocolError(`invalid close code ${code}`);
  let reason: string;
  try {
    reason = UTF8_STRICT.decode(payload.subarray(2));
  } catch {
    throw new WsProtocolError(WsCloseCode.InvalidPayload, "close reason is not valid UTF-8");
  }
  return { code, reason };
}

/** Shortens `reason` to at most 123 bytes of UTF-8 without splitting a character. */
export function truncateCloseReason(reason: string): string {
  const bytes = UTF8.encode(reason);
  if (bytes.byteLength <= MAX_CLOSE_REASON_BYTES) return reason;
  let end = MAX_CLOSE_REASON_BYTES - 3;
  // Step back over continuation bytes (10xxxxxx) to a character boundary.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(bytes.subarray(0, end)) + "...";
}

/** Decodes strict UTF-8, throwing WsProtocolError 1007 for invalid text. */
export function decodeTextPayload(data: Uint8Array): string {
  try {
    return UTF8_STRICT.decode(data);
  } catch {
    throw new WsProtocolError(WsCloseCode.InvalidPayload, "text message is not valid UTF-8");
  }
}
