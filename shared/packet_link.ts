// IP packets of a VPN on a mux stream: each framed as a datagram (u16 length, bytes), collected
// into batches so a burst read from the TUN device travels as one DATA frame, and split out of
// the DATA frames on the other side. The stream runs in message mode: no socket, no memory pipe,
// the frames are built and taken apart in place.
import { DATAGRAM_HEADER_BYTES } from "./protocol.ts";
import { type MuxStream, SEND_ROOM, type StreamHooks } from "./mux_stream.ts";
import { COPIED_FRAME_BYTES } from "./ws_conn.ts";

/** Bytes collected before a batch is handed to the stream even if the burst goes on. */
const BATCH_BYTES = 64 * 1024;
/** Room of a batch buffer: the frame headers, a full batch and one more packet of any size. */
const BATCH_BUFFER_BYTES = SEND_ROOM + BATCH_BYTES + DATAGRAM_HEADER_BYTES + 65_535;

/** What a link carried. */
export interface PacketCounters {
  packetsOut: number;
  packetsIn: number;
  bytesOut: number;
  bytesIn: number;
  /** Packets dropped: the peer's credit was short (`drop` mode) or the stream was over. */
  dropped: number;
}

/** How `flush()` treats a peer that has given no credit for the batch. */
export type FullPolicy = "wait" | "drop";

/** A stream carrying IP packets both ways. */
export class PacketLink {
  readonly counters: PacketCounters = {
    packetsOut: 0,
    packetsIn: 0,
    bytesOut: 0,
    bytesIn: 0,
    dropped: 0,
  };
  readonly stream: MuxStream;
  readonly #full: FullPolicy;
  readonly #onPacket: (packet: Uint8Array) => void;
  #batch = new Uint8Array(BATCH_BUFFER_BYTES);
  /** Bytes of records in the batch (after SEND_ROOM). */
  #len = 0;
  #count = 0;
  /** The start of a record whose end has not arrived yet. */
  #rest: Uint8Array | null = null;
  #closed = false;
  /** Resolves when the stream is over (either side ended it or it broke). */
  readonly done: Promise<void>;

  /**
   * Attaches to `stream` (which must not carry anything else); `onPacket` gets every packet the
   * peer sent, as a view valid only during the call.
   */
  constructor(
    stream: MuxStream,
    onPacket: (packet: Uint8Array) => void,
    full: FullPolicy,
    hooks: StreamHooks = {},
  ) {
    this.stream = stream;
    this.#full = full;
    this.#onPacket = onPacket;
    const ended = Promise.withResolvers<void>();
    this.done = ended.promise;
    stream.setHooks({
      ...hooks,
      onEnd: (end) => {
        this.#closed = true;
        ended.resolve();
        hooks.onEnd?.(end);
      },
    });
    stream.attachMessages((payload) => this.#receive(payload));
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Adds a packet to the batch; sends the batch first when it is full. */
  queue(packet: Uint8Array): Promise<void> | void {
    if (this.#closed) {
      this.counters.dropped++;
      return;
    }
    let wait: Promise<void> | void = undefined;
    const n = packet.byteLength;
    if (SEND_ROOM + this.#len + DATAGRAM_HEADER_BYTES + n > this.#batch.byteLength) {
      wait = this.flush();
    }
    const b = this.#batch;
    const at = SEND_ROOM + this.#len;
    b[at] = n >> 8;
    b[at + 1] = n & 0xff;
    b.set(packet, at + DATAGRAM_HEADER_BYTES);
    this.#len += DATAGRAM_HEADER_BYTES + n;
    this.#count++;
    this.counters.bytesOut += n;
    if (this.#len >= BATCH_BYTES && !wait) wait = this.flush();
    return wait;
  }

  /**
   * Sends the batch as one DATA frame. When the peer's credit is short, `wait` mode waits for it
   * (the device's reader stops, and the kernel's queue drops); `drop` mode drops and counts the
   * batch (a server must not let one slow client stop the others). In `wait` mode the returned
   * promise also holds the caller back while the data connection is above its high-water mark.
   */
  flush(): Promise<void> | void {
    const len = this.#len;
    if (len === 0) return;
    const count = this.#count;
    this.#len = 0;
    this.#count = 0;
    const sent = this.#send(this.#batch, len, count);
    if (sent === false && this.#full === "wait" && !this.#closed) {
      // The batch buffer is reused at once: the retry gets a copy of its bytes.
      return this.#sendWhenCredit(this.#batch.slice(0, SEND_ROOM + len), len, count);
    }
    if (sent === false) this.counters.dropped += count;
    if (sent instanceof Promise && this.#full === "wait") return sent;
  }

  /** Ends the stream (EOF both ways) and stops taking packets. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.stream.endMessages();
  }

  #send(buf: Uint8Array, len: number, count: number): boolean | Promise<void> {
    if (this.#closed) return false;
    const sent = this.stream.sendMessage(buf, len);
    if (sent === false) return false;
    this.counters.packetsOut += count;
    // A large frame took the buffer with it.
    if (buf === this.#batch && SEND_ROOM + len >= COPIED_FRAME_BYTES) {
      this.#batch = new Uint8Array(BATCH_BUFFER_BYTES);
    }
    return sent;
  }

  async #sendWhenCredit(buf: Uint8Array, len: number, count: number): Promise<void> {
    for (;;) {
      await this.stream.creditFor(len);
      if (this.#closed || this.stream.ended) {
        this.counters.dropped += count;
        return;
      }
      const sent = this.#send(buf, len, count);
      if (sent instanceof Promise) await sent;
      if (sent !== false) return;
    }
  }

  /** Splits a DATA payload into packets; a record may straddle payloads. */
  #receive(payload: Uint8Array): void {
    let p = payload;
    if (this.#rest) {
      const joined = new Uint8Array(this.#rest.byteLength + payload.byteLength);
      joined.set(this.#rest);
      joined.set(payload, this.#rest.byteLength);
      p = joined;
      this.#rest = null;
    }
    let off = 0;
    while (p.byteLength - off >= DATAGRAM_HEADER_BYTES) {
      const n = (p[off]! << 8) | p[off + 1]!;
      const from = off + DATAGRAM_HEADER_BYTES;
      if (p.byteLength - from < n) break;
      off = from + n;
      this.counters.packetsIn++;
      this.counters.bytesIn += n;
      if (n > 0) this.#onPacket(p.subarray(from, off));
    }
    // At most one record's bytes wait (65,537), whatever the peer sends.
    if (off < p.byteLength) this.#rest = p.slice(off);
  }
}
