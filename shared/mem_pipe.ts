// An in-process duplex byte pipe whose two ends behave like TCP connections (read, write,
// closeWrite, close), so a mux stream can be attached to code instead of a socket.

/** Bytes queued one way before a writer waits for the reader. */
export const PIPE_HIGH_WATER = 256 * 1024;

const PIPE_ADDR: Deno.UnixAddr = { transport: "unix", path: "mport-pipe" };

/** One direction: a bounded queue of copied chunks. */
class Channel {
  readonly chunks: Uint8Array[] = [];
  queued = 0;
  /** The writer closed its side cleanly: EOF once the queue is empty. */
  eof = false;
  /** Either end aborted: reads fail (unless EOF came first) and writes fail. */
  aborted = false;
  reader: (() => void) | null = null;
  writer: (() => void) | null = null;

  wakeReader(): void {
    const r = this.reader;
    this.reader = null;
    r?.();
  }

  wakeWriter(): void {
    const w = this.writer;
    this.writer = null;
    w?.();
  }
}

/** One end of a {@link memoryPipe}. Unused members of `Deno.Conn` are not provided. */
export class PipeEnd {
  readonly #in: Channel;
  readonly #out: Channel;
  #closed = false;
  readonly localAddr: Deno.Addr = PIPE_ADDR;
  readonly remoteAddr: Deno.Addr = PIPE_ADDR;

  constructor(input: Channel, output: Channel) {
    this.#in = input;
    this.#out = output;
  }

  /** This end as the `Deno.Conn` that a stream attaches to. */
  asConn(): Deno.Conn {
    return this as unknown as Deno.Conn;
  }

  /** True once `close()` was called on this end. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Reads into `p`: bytes, null at the peer's clean EOF; throws after an abort. */
  async read(p: Uint8Array): Promise<number | null> {
    const ch = this.#in;
    for (;;) {
      if (this.#closed) throw new Deno.errors.BadResource("pipe end is closed");
      if (ch.chunks.length > 0) break;
      if (ch.eof) return null;
      if (ch.aborted) throw new Deno.errors.ConnectionReset("the other end reset the pipe");
      await new Promise<void>((r) => (ch.reader = r));
    }
    let n = 0;
    while (n < p.byteLength && ch.chunks.length > 0) {
      const head = ch.chunks[0]!;
      const take = Math.min(head.byteLength, p.byteLength - n);
      p.set(head.subarray(0, take), n);
      n += take;
      if (take === head.byteLength) ch.chunks.shift();
      else ch.chunks[0] = head.subarray(take);
    }
    ch.queued -= n;
    if (ch.queued < PIPE_HIGH_WATER) ch.wakeWriter();
    return n;
  }

  /** Copies `p` into the pipe; waits while the reader is more than the high-water mark behind. */
  async write(p: Uint8Array): Promise<number> {
    const ch = this.#out;
    for (;;) {
      if (this.#closed) throw new Deno.errors.BadResource("pipe end is closed");
      if (ch.aborted) throw new Deno.errors.BrokenPipe("the other end reset the pipe");
      if (ch.eof) throw new Deno.errors.BrokenPipe("write after closeWrite");
      if (ch.queued < PIPE_HIGH_WATER) break;
      await new Promise<void>((r) => (ch.writer = r));
    }
    if (p.byteLength === 0) return 0;
    ch.chunks.push(p.slice());
    ch.queued += p.byteLength;
    ch.wakeReader();
    return p.byteLength;
  }

  /**
   * Queues `p` (copied) only if it fits under the high-water mark now: false, and nothing
   * queued, when the reader is behind or the pipe is closed (a datagram is dropped, not waited
   * for).
   */
  offer(p: Uint8Array): boolean {
    const ch = this.#out;
    if (this.#closed || ch.aborted || ch.eof) return false;
    if (ch.queued + p.byteLength > PIPE_HIGH_WATER) return false;
    ch.chunks.push(p.slice());
    ch.queued += p.byteLength;
    ch.wakeReader();
    return true;
  }

  /** The peer reads EOF once it has read everything written before. */
  closeWrite(): Promise<void> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("pipe end is closed"));
    this.#out.eof = true;
    this.#out.wakeReader();
    return Promise.resolve();
  }

  /**
   * Closes this end. Unless both directions had ended cleanly, this is an abort: the peer's
   * reads fail (after a clean EOF they still return null) and so do its writes.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // What we wrote before a clean closeWrite is still delivered; anything else is aborted.
    const out = this.#out;
    if (!out.eof) {
      out.aborted = true;
      out.chunks.length = 0;
      out.queued = 0;
    }
    out.wakeReader();
    out.wakeWriter();
    const input = this.#in;
    input.aborted = true;
    input.chunks.length = 0;
    input.queued = 0;
    input.wakeReader();
    input.wakeWriter();
  }

  /** Aborts this end (the peer's reads fail): the same as `close()`, named for the intent. */
  reset(): void {
    this.close();
  }
}

/** Two connected ends: what one writes the other reads. */
export function memoryPipe(): [PipeEnd, PipeEnd] {
  const aToB = new Channel();
  const bToA = new Channel();
  return [new PipeEnd(bToA, aToB), new PipeEnd(aToB, bToA)];
}
