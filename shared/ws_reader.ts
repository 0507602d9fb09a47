// The read side of a WsConn: frames parsed out of an adaptive read buffer over a Deno.Conn.
import {
  applyMask,
  type FrameRole,
  isControlOpcode,
  MAX_WS_HEADER_BYTES,
  parseFrameHeader,
  WsCloseCode,
  WsProtocolError,
} from "./ws_frames.ts";

/** Default first read buffer: small, so idle connections hold little memory. */
export const DEFAULT_READ_BUFFER_BYTES = 2 * 1024;
const MAX_READ_BUFFER_BYTES = 256 * 1024;
const READ_BUFFER_GROWTH = 4;
/** This many reads in a row using under 1/16 of a grown read buffer shrink it back. */
const SMALL_READS_BEFORE_SHRINK = 8;
/** A payload this large that is not buffered yet is read straight into its own buffer. */
const DIRECT_READ_MIN_BYTES = 16 * 1024;

/** One frame, unmasked. */
export interface Frame {
  readonly opcode: number;
  readonly fin: boolean;
  readonly payload: Uint8Array;
  /**
   * True when `payload` is a buffer of its own; false when it views the read buffer and is
   * valid only until the next `next()`.
   */
  readonly owned: boolean;
}

/** TCP reached EOF before a frame was complete. */
export class EndOfStream extends Error {
  constructor() {
    super("connection closed by peer");
    this.name = "EndOfStream";
  }
}

/**
 * Reads frames from a connection. The buffer starts small, grows x4 (to 256 KiB) while reads
 * fill it and shrinks back after a run of small reads; large payloads bypass it and are read
 * straight into a buffer of their own. One reader per connection, one `next()` at a time.
 */
export class FrameReader {
  readonly #conn: Deno.Conn;
  readonly #role: FrameRole;
  readonly #firstBytes: number;
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  #grow = false;
  #shrink = false;
  #smallReads = 0;
  /** The last payload was read directly; read only a header's worth next, not the next payload. */
  #afterDirectRead = false;
  #op: Promise<number | null> | null = null;

  /** `leftover`: bytes already read past the HTTP head. */
  constructor(conn: Deno.Conn, role: FrameRole, firstBytes: number, leftover: Uint8Array) {
    if (!Number.isSafeInteger(firstBytes) || firstBytes < MAX_WS_HEADER_BYTES) {
      throw new RangeError(`readBufferBytes must be an integer of at least ${MAX_WS_HEADER_BYTES}`);
    }
    this.#conn = conn;
    this.#role = role;
    this.#firstBytes = Math.min(firstBytes, MAX_READ_BUFFER_BYTES);
    this.#buf = new Uint8Array(Math.max(this.#firstBytes, leftover.length));
    this.#buf.set(leftover);
    this.#end = leftover.length;
  }

  /** The socket read in flight, if any (to wait for it to settle after closing). */
  get pendingRead(): Promise<unknown> | null {
    return this.#op;
  }

  /**
   * The next frame. `messageBytes` is the size of the fragmented message so far: a data frame
   * that would take it past `maxMessageBytes` throws WsProtocolError 1009 before its payload is
   * read. Throws WsProtocolError for invalid headers, EndOfStream at EOF, and socket errors.
   */
  async next(messageBytes: number, maxMessageBytes: number): Promise<Frame> {
    for (;;) {
      const avail = this.#buf.subarray(this.#start, this.#end);
      const header = parseFrameHeader(avail, this.#role);
      if (typeof header === "number") {
        await this.#fillTo(header);
        continue;
      }
      const { headerBytes, payloadLength, opcode, fin, maskKey } = header;
      if (!isControlOpcode(opcode) && messageBytes + payloadLength > maxMessageBytes) {
        throw new WsProtocolError(
          WsCloseCode.MessageTooBig,
          `message of ${messageBytes + payloadLength} bytes exceeds the limit of ` +
            `${maxMessageBytes}`,
        );
      }
      const total = headerBytes + payloadLength;
      if (avail.byteLength >= total) {
        const payload = avail.subarray(headerBytes, total);
        this.#start += total;
        applyMask(payload, maskKey);
        return { opcode, fin, payload, owned: false };
      }
      if (payloadLength >= DIRECT_READ_MIN_BYTES || total > MAX_READ_BUFFER_BYTES) {
        // The rest of a large payload goes straight into a buffer of its own: no copy, and the
        // buffer can be handed to the caller as is.
        const payload = new Uint8Array(payloadLength);
        payload.set(avail.subarray(headerBytes));
        let have = avail.byteLength - headerBytes;
        this.#start = this.#end = 0;
        while (have < payloadLength) {
          const n = await this.#read(payload.subarray(have));
          if (n === null) throw new EndOfStream();
          have += n;
        }
        this.#afterDirectRead = true;
        applyMask(payload, maskKey);
        return { opcode, fin, payload, owned: true };
      }
      await this.#fillTo(total);
    }
  }

  /** One read whose bytes are thrown away (lingering before close); null at EOF. */
  discard(): Promise<number | null> {
    this.#start = this.#end = 0;
    return this.#read(this.#buf);
  }

  /** Reads until the buffer holds at least `need` unread bytes (need ≤ 256 KiB). */
  async #fillTo(need: number): Promise<void> {
    while (this.#end - this.#start < need) {
      const have = this.#end - this.#start;
      if (have === 0) this.#start = this.#end = 0;
      if (this.#shrink) {
        this.#shrink = false;
        this.#resize(Math.max(this.#firstBytes, have, need));
      }
      if (this.#grow || need > this.#buf.byteLength) {
        let size = this.#buf.byteLength;
        if (this.#grow) size *= READ_BUFFER_GROWTH;
        while (size < need) size *= READ_BUFFER_GROWTH;
        this.#resize(Math.min(Math.max(size, need), MAX_READ_BUFFER_BYTES));
        this.#grow = false;
      }
      if (this.#buf.byteLength - this.#start < need) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#start = 0;
        this.#end = have;
      }
      let limit = this.#buf.byteLength;
      const capped = this.#afterDirectRead;
      if (capped) {
        // Right after a large payload the next one probably follows: fetch just its header
        // rather than pulling its payload into this buffer only to copy it out again.
        limit = Math.min(limit, this.#start + Math.max(need, MAX_WS_HEADER_BYTES));
        this.#afterDirectRead = false;
      }
      const space = limit - this.#end;
      const n = await this.#read(this.#buf.subarray(this.#end, limit));
      if (n === null) throw new EndOfStream();
      if (!capped) this.#adapt(n, space);
      this.#end += n;
    }
  }

  /**
   * A read that filled most of the buffer suggests more is waiting: read more at once next
   * time. A run of small reads after a burst returns the buffer to its first size, so a
   * connection that goes quiet holds little memory again.
   */
  #adapt(n: number, space: number): void {
    const size = this.#buf.byteLength;
    if (n === space && space * 2 >= size) {
      this.#grow = size < MAX_READ_BUFFER_BYTES;
      this.#smallReads = 0;
    } else if (size > this.#firstBytes && n * 16 < size) {
      if (++this.#smallReads >= SMALL_READS_BEFORE_SHRINK) {
        this.#smallReads = 0;
        this.#shrink = true;
      }
    } else {
      this.#smallReads = 0;
    }
  }

  #resize(size: number): void {
    if (size === this.#buf.byteLength) return;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(this.#start, this.#end));
    this.#end -= this.#start;
    this.#start = 0;
    this.#buf = next;
  }

  async #read(target: Uint8Array): Promise<number | null> {
    const op = this.#conn.read(target);
    this.#op = op;
    try {
      return await op;
    } finally {
      this.#op = null;
    }
  }
}
