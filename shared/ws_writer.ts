// The write side of a WsConn: one long-lived writer loop that batches small frames per write.
import { freeBuffer } from "./net.ts";
import { applyMask, encodeHeader, headerLength, MAX_WS_HEADER_BYTES, Opcode } from "./ws_frames.ts";

/**
 * Frames below this size (header + payload) are copied into the shared write buffer before
 * `send`/`sendWithRoom` return, so their caller may reuse its buffer at once.
 */
export const SMALL_FRAME_BYTES = 16 * 1024;
const FIRST_WRITE_BUFFER_BYTES = 4 * 1024;
const MAX_WRITE_BUFFER_BYTES = 64 * 1024;
const WRITE_BUFFER_GROWTH = 4;
const RANDOM_KEYS_PER_REFILL = 64;
/** Under steady load the queue may never empty; its written prefix is dropped past this. */
const QUEUE_COMPACT_AT = 1024;

/** A write buffer that small frames are encoded into; regions of it are queued for writing. */
interface WriteBuffer {
  readonly bytes: Uint8Array;
  /** End of the encoded bytes. */
  used: number;
  /** End of the part already handed to the queue; [queued, used) waits for the next batch. */
  queued: number;
  /** Queued regions not yet written; the buffer is reused only when this is 0. */
  refs: number;
}

interface WriteChunk {
  readonly data: Uint8Array;
  readonly owner: WriteBuffer | null;
  /** Detach `data`'s ArrayBuffer once written: the caller gave it away (frees it at once). */
  readonly dispose?: boolean;
}

/** How frames are masked: not at all (server), with key 0 (client default), or randomly. */
export type MaskMode = "none" | "zero" | "random";

/**
 * Queues whole frames and writes them with one writer loop. The loop sleeps until a frame is
 * queued; by the time it runs, every frame queued in the same task sits in one batch: small
 * frames are copied into a reusable buffer (4 KiB, growing to 64 KiB within a burst) and go out
 * in a single `conn.write`; large payloads are written from the caller's buffer without a
 * copy. Partial writes are continued. A failed write calls `onError` and stops the loop.
 */
export class FrameWriter {
  readonly #conn: Deno.Conn;
  readonly #mask: MaskMode;
  readonly #onError: (e: unknown) => void;
  #fill: WriteBuffer | null = null;
  #spare: WriteBuffer | null = null;
  #bufferBytes = FIRST_WRITE_BUFFER_BYTES;
  #queue: (WriteChunk | undefined)[] = [];
  #head = 0;
  #buffered = 0;
  #pong: Uint8Array | null = null;
  #wake: (() => void) | null = null;
  #op: Promise<number> | null = null;
  #drainWaiters: { readonly low: number; readonly resolve: () => void }[] = [];
  #keys: Uint32Array | null = null;
  #keyIndex = 0;
  #stopped = false;

  constructor(conn: Deno.Conn, mask: MaskMode, onError: (e: unknown) => void) {
    this.#conn = conn;
    this.#mask = mask;
    this.#onError = onError;
    this.#loop().catch((e) => this.#fail(e));
  }

  /** Bytes queued but not yet accepted by `conn.write`. */
  get buffered(): number {
    return this.#buffered;
  }

  /** The socket write in flight, if any (to wait for it to settle after closing). */
  get pendingWrite(): Promise<unknown> | null {
    return this.#op;
  }

  /** Queues one unfragmented frame. `payload` must not change until written. */
  send(opcode: number, payload: Uint8Array): void {
    if (this.#stopped) return;
    const maskKey = this.#nextMaskKey();
    const len = payload.byteLength;
    const size = headerLength(len, maskKey !== null);
    if (size + len < SMALL_FRAME_BYTES) {
      const buf = this.#reserve(size + len);
      const at = buf.used;
      encodeHeader(buf.bytes, at, { fin: true, opcode, length: len, maskKey });
      buf.bytes.set(payload, at + size);
      if (maskKey) applyMask(buf.bytes.subarray(at + size, at + size + len), maskKey);
      buf.used += size + len;
    } else if (maskKey) {
      // A random key would change the caller's bytes in place; mask a copy instead.
      const frame = new Uint8Array(size + len);
      encodeHeader(frame, 0, { fin: true, opcode, length: len, maskKey });
      frame.set(payload, size);
      applyMask(frame.subarray(size), maskKey);
      this.#seal();
      this.#push({ data: frame, owner: null });
    } else {
      // Large payload: never copied. Its header joins the pending small frames if there are
      // any (one write fewer), else goes out on its own just before it.
      const fill = this.#fill;
      if (fill && fill.used > fill.queued && fill.bytes.byteLength - fill.used >= size) {
        encodeHeader(fill.bytes, fill.used, { fin: true, opcode, length: len, maskKey });
        fill.used += size;
        this.#seal();
      } else {
        this.#seal();
        const header = new Uint8Array(size);
        encodeHeader(header, 0, { fin: true, opcode, length: len, maskKey });
        this.#push({ data: header, owner: null });
      }
      this.#push({ data: payload, owner: null });
    }
    this.#buffered += size + len;
    this.#kick();
  }

  /**
   * Queues a binary frame whose payload sits after MAX_WS_HEADER_BYTES of room in `buf`; the
   * header is written into the room so both go out in one write. Small or randomly masked
   * payloads take the copying path of `send`.
   */
  sendWithRoom(buf: Uint8Array, len: number, dispose = false): void {
    if (this.#stopped) return;
    const payload = buf.subarray(MAX_WS_HEADER_BYTES, MAX_WS_HEADER_BYTES + len);
    const size = headerLength(len, this.#mask !== "none");
    if (size + len < SMALL_FRAME_BYTES || this.#mask === "random") {
      // Copied (into the batch, or masked into a copy): the caller's buffer is no longer needed.
      this.send(Opcode.Binary, payload);
      if (dispose) freeBuffer(buf);
      return;
    }
    const start = MAX_WS_HEADER_BYTES - size;
    const maskKey = this.#mask === "zero" ? 0 : null;
    encodeHeader(buf, start, { fin: true, opcode: Opcode.Binary, length: len, maskKey });
    this.#seal();
    this.#push({ data: buf.subarray(start, MAX_WS_HEADER_BYTES + len), owner: null, dispose });
    this.#buffered += size + len;
    this.#kick();
  }

  /**
   * Queues a pong. Only the latest unanswered ping gets one (RFC 6455 §5.5.3), so a ping flood
   * from a peer that does not read holds at most one pong here.
   */
  sendPong(payload: Uint8Array): void {
    if (this.#stopped) return;
    this.#pong = payload;
    this.#kick();
  }

  /** Drops a pong that has not been queued yet (nothing may follow a close frame). */
  dropPong(): void {
    this.#pong = null;
  }

  /** Resolves when `buffered <= lowWater` or the writer stopped. Event-driven, no timers. */
  drained(lowWater = 0): Promise<void> {
    if (this.#stopped || this.#buffered <= lowWater) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#drainWaiters.push({ low: lowWater, resolve });
    return promise;
  }

  /** Drops everything queued, releases drain waiters and ends the loop. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#queue = [];
    this.#head = 0;
    this.#buffered = 0;
    this.#fill = this.#spare = null;
    this.#pong = null;
    this.#notifyDrain();
    this.#kick();
  }

  /** Null for unmasked frames (server), 0 for zero-mask clients, else a random key. */
  #nextMaskKey(): number | null {
    if (this.#mask === "none") return null;
    if (this.#mask === "zero") return 0;
    if (this.#keys === null || this.#keyIndex === this.#keys.length) {
      this.#keys ??= new Uint32Array(RANDOM_KEYS_PER_REFILL);
      crypto.getRandomValues(this.#keys);
      this.#keyIndex = 0;
    }
    return this.#keys[this.#keyIndex++]!;
  }

  /** A write buffer with `n` free bytes at its end (n < SMALL_FRAME_BYTES). */
  #reserve(n: number): WriteBuffer {
    const fill = this.#fill;
    if (fill && fill.bytes.byteLength - fill.used >= n) return fill;
    if (fill) {
      // It filled up within one batch: later buffers are larger, up to the cap.
      this.#seal();
      this.#fill = null;
      if (fill.refs === 0) this.#recycle(fill);
      this.#bufferBytes = Math.min(this.#bufferBytes * WRITE_BUFFER_GROWTH, MAX_WRITE_BUFFER_BYTES);
    }
    while (this.#bufferBytes < n) this.#bufferBytes *= WRITE_BUFFER_GROWTH;
    const spare = this.#spare;
    let next: WriteBuffer;
    if (spare && spare.bytes.byteLength >= Math.max(n, this.#bufferBytes)) {
      this.#spare = null;
      next = spare;
    } else {
      next = { bytes: new Uint8Array(this.#bufferBytes), used: 0, queued: 0, refs: 0 };
    }
    this.#fill = next;
    return next;
  }

  #recycle(buf: WriteBuffer): void {
    buf.used = buf.queued = 0;
    if (!this.#spare || this.#spare.bytes.byteLength < buf.bytes.byteLength) this.#spare = buf;
  }

  /** Hands the pending part of the fill buffer to the queue as one chunk. */
  #seal(): void {
    const fill = this.#fill;
    if (!fill || fill.used === fill.queued) return;
    this.#push({ data: fill.bytes.subarray(fill.queued, fill.used), owner: fill });
    fill.refs++;
    fill.queued = fill.used;
  }

  #push(chunk: WriteChunk): void {
    if (this.#head >= QUEUE_COMPACT_AT && this.#head * 2 >= this.#queue.length) {
      this.#queue.splice(0, this.#head);
      this.#head = 0;
    }
    this.#queue.push(chunk);
  }

  #kick(): void {
    const wake = this.#wake;
    if (wake) {
      this.#wake = null;
      wake();
    }
  }

  async #loop(): Promise<void> {
    while (!this.#stopped) {
      if (this.#pong) {
        const pong = this.#pong;
        this.#pong = null;
        this.send(Opcode.Pong, pong);
      }
      this.#seal();
      if (this.#head === this.#queue.length) {
        this.#queue.length = 0;
        this.#head = 0;
        this.#releaseBuffers();
        const { promise, resolve } = Promise.withResolvers<void>();
        this.#wake = resolve;
        await promise;
        continue;
      }
      const chunk = this.#queue[this.#head]!;
      this.#queue[this.#head++] = undefined;
      const data = chunk.data;
      let off = 0;
      while (off < data.byteLength) {
        const op = this.#conn.write(off === 0 ? data : data.subarray(off));
        this.#op = op;
        let n: number;
        try {
          n = await op;
        } catch (e) {
          this.#op = null;
          this.#fail(e);
          return;
        }
        this.#op = null;
        if (this.#stopped) return;
        if (n <= 0) {
          this.#fail(new Error(`conn.write accepted ${n} bytes`));
          return;
        }
        off += n;
        this.#buffered -= n;
        if (this.#drainWaiters.length > 0) this.#notifyDrain();
      }
      if (chunk.dispose) freeBuffer(data);
      const owner = chunk.owner;
      if (owner && --owner.refs === 0) {
        if (owner !== this.#fill) this.#recycle(owner);
        else if (owner.queued === owner.used) owner.used = owner.queued = 0;
      }
    }
  }

  /**
   * Everything is written: keep only a first-size write buffer, so a connection that once sent
   * a burst does not hold 128 KiB while idle. A new burst grows the buffers again.
   */
  #releaseBuffers(): void {
    this.#spare = null;
    const fill = this.#fill;
    if (fill && fill.used === 0 && fill.bytes.byteLength > FIRST_WRITE_BUFFER_BYTES) {
      this.#fill = null;
    }
    this.#bufferBytes = FIRST_WRITE_BUFFER_BYTES;
  }

  #notifyDrain(): void {
    const buffered = this.#buffered;
    const waiting = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const w of waiting) {
      if (this.#stopped || buffered <= w.low) w.resolve();
      else this.#drainWaiters.push(w);
    }
  }

  #fail(e: unknown): void {
    if (this.#stopped) return;
    this.#onError(e);
  }
}
