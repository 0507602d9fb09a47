// IP packets of a VPN on a mux stream: each framed as a datagram (u16 length, bytes), collected
// into batches so a burst read from the TUN device travels as one DATA frame, and split out of
// whatever chunks arrive on the other side.
import { DATAGRAM_HEADER_BYTES } from "./protocol.ts";
import { memoryPipe, PIPE_HIGH_WATER, type PipeEnd } from "./mem_pipe.ts";
import type { MuxStream, StreamHooks } from "./mux_stream.ts";
import { closeQuietly } from "./net.ts";

/** Bytes collected before a batch is handed to the stream even if the burst goes on. */
const BATCH_BYTES = 64 * 1024;

/** What a link carried. */
export interface PacketCounters {
  packetsOut: number;
  packetsIn: number;
  bytesOut: number;
  bytesIn: number;
  /** Packets dropped: the stream was full (`drop` mode) or closed. */
  dropped: number;
}

/** How `flush()` treats a stream whose queue is full. */
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
  readonly #end: PipeEnd;
  readonly #full: FullPolicy;
  #batch = new Uint8Array(BATCH_BYTES + DATAGRAM_HEADER_BYTES + 65_535);
  #len = 0;
  #count = 0;
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
    const [streamSide, linkSide] = memoryPipe();
    this.#end = linkSide;
    stream.setHooks(hooks);
    stream.attach(streamSide.asConn());
    this.done = this.#readLoop(onPacket);
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
    if (this.#len + DATAGRAM_HEADER_BYTES + packet.byteLength > this.#batch.byteLength) {
      wait = this.flush();
    }
    const n = packet.byteLength;
    const b = this.#batch;
    b[this.#len] = n >> 8;
    b[this.#len + 1] = n & 0xff;
    b.set(packet, this.#len + DATAGRAM_HEADER_BYTES);
    this.#len += DATAGRAM_HEADER_BYTES + n;
    this.#count++;
    this.counters.bytesOut += n;
    if (this.#len >= BATCH_BYTES && !wait) wait = this.flush();
    return wait;
  }

  /**
   * Hands the batch to the stream. In `wait` mode a full stream makes the caller wait (the
   * reader of the device stops, and the kernel's queue drops); in `drop` mode the batch is
   * dropped and counted (a server must not let one slow client stop the others).
   */
  flush(): Promise<void> | void {
    if (this.#len === 0) return;
    const chunk = this.#batch.subarray(0, this.#len);
    const count = this.#count;
    this.#len = 0;
    this.#count = 0;
    if (this.#closed) {
      this.counters.dropped += count;
      return;
    }
    if (this.#full === "drop") {
      if (this.#end.offer(chunk)) this.counters.packetsOut += count;
      else this.counters.dropped += count;
      return;
    }
    this.counters.packetsOut += count;
    if (this.#end.offer(chunk)) return;
    // Full: wait for the stream, with a copy (the batch buffer is reused at once).
    return this.#end.write(chunk.slice()).then(() => {}, () => {
      this.counters.dropped += count;
    });
  }

  /** Ends the stream (cleanly, with EOF) and stops reading. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#end.closeWrite().catch(() => {});
    closeQuietly(this.#end);
  }

  /** Splits what arrives into packets; a frame may straddle chunks. */
  async #readLoop(onPacket: (packet: Uint8Array) => void): Promise<void> {
    const buf = new Uint8Array(PIPE_HIGH_WATER + DATAGRAM_HEADER_BYTES + 65_535);
    let start = 0;
    let end = 0;
    try {
      for (;;) {
        const got = await this.#end.read(buf.subarray(end));
        if (got === null) break;
        end += got;
        while (end - start >= DATAGRAM_HEADER_BYTES) {
          const n = (buf[start]! << 8) | buf[start + 1]!;
          if (end - start < DATAGRAM_HEADER_BYTES + n) break;
          const from = start + DATAGRAM_HEADER_BYTES;
          start = from + n;
          this.counters.packetsIn++;
          this.counters.bytesIn += n;
          if (n > 0) onPacket(buf.subarray(from, from + n));
        }
        if (start === end) {
          start = end = 0;
        } else if (buf.byteLength - end < DATAGRAM_HEADER_BYTES + 65_535) {
          buf.copyWithin(0, start, end);
          end -= start;
          start = 0;
        }
      }
    } catch {
      // the stream was reset or the link closed
    }
    this.#closed = true;
    closeQuietly(this.#end);
  }
}
