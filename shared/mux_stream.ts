// One user connection carried as a logical stream of a data connection: TCP ↔ mux frames with credit.
import {
  type ErrorCode,
  MUX_FIRST_READ_BYTES,
  MUX_HEADER_BYTES,
  MUX_INITIAL_WINDOW,
  MUX_MAX_DATA_BYTES,
  MUX_MAX_WINDOW,
  ProtocolError,
} from "./protocol.ts";
import { closeQuietly, freeBuffer } from "./net.ts";
import { resetConn } from "./tcp_reset.ts";
import { COPIED_FRAME_BYTES } from "./ws_conn.ts";
import { errorText } from "./error_text.ts";

/** How a stream ended, for logs and counters. */
export interface StreamEnd {
  /** Both directions reached EOF and every byte was written to the TCP side. */
  readonly clean: boolean;
  /** Why it ended, when it did not end cleanly. */
  readonly reason?: string;
  /** Error kind for counters (`reset`, `peer_reset`, `local_dial`, `closed`, `protocol`, …). */
  readonly kind?: string;
}

/** Hooks a stream reports through; all optional. */
export interface StreamHooks {
  /** Bytes read from TCP and sent to the peer. */
  onSent?(bytes: number): void;
  /** Bytes received from the peer and written to TCP. */
  onReceived?(bytes: number): void;
  /** Called once when the stream is over, however it ended. */
  onEnd?(end: StreamEnd): void;
}

/** Room kept in front of every read buffer: the WebSocket header (≤ 14 bytes) and the mux header. */
export const SEND_ROOM = 14 + MUX_HEADER_BYTES;

/** Receive windows that may grow beyond the initial one draw on a shared budget. */
export interface WindowBudget {
  /** Takes `bytes` from the budget; false (and nothing taken) when it has not that much left. */
  take(bytes: number): boolean;
  give(bytes: number): void;
}

/** What a stream needs from its data connection. */
export interface StreamLink {
  /**
   * Sends a `DATA` frame whose payload sits at `buf[SEND_ROOM, SEND_ROOM + len)`. With
   * `giveAway` the link owns `buf` from now on (and frees it once written); without, the frame
   * must be smaller than `COPIED_FRAME_BYTES`, which the WebSocket copies before returning.
   * Resolves when the stream may read again (at once unless the connection's send queue is
   * above its high-water mark).
   */
  sendData(id: number, buf: Uint8Array, len: number, giveAway: boolean): Promise<void> | void;
  sendWindow(id: number, bytes: number): void;
  sendEof(id: number): void;
  sendReset(id: number, code: ErrorCode, message: string): void;
  /** The stream is over; its id is forgotten (late frames for it are ignored). */
  forget(id: number): void;
}

/** Payloads smaller than this are copied into the tail of the write queue (bounds memory per frame). */
const COALESCE_BELOW = 16 * 1024;
/** Size of a coalescing chunk in the write queue. */
const COALESCE_CHUNK = 16 * 1024;
/** Received buffers at least this big are freed as soon as they are written. */
const FREE_AT_ONCE_BYTES = 32 * 1024;
/** Read buffers grow by this factor each time a read fills one, up to the largest data frame. */
const READ_GROWTH = 4;

/** A chunk of received bytes waiting to be written to TCP. */
interface Pending {
  buf: Uint8Array;
  len: number;
  /** Small payloads may still be appended (only to the last chunk in the queue). */
  readonly open: boolean;
}

/**
 * One logical stream. Two loops move bytes: the reader (TCP → `DATA`, while the peer has given
 * credit) and the writer (queued `DATA` → TCP, granting credit back with `WINDOW` once half the
 * window has been written). `EOF` half-closes; anything that goes wrong resets the TCP side and
 * tells the peer with `RESET`, so a truncated transfer never ends with a clean FIN.
 *
 * Memory: the peer may have at most `#window` bytes in flight to us; small frames are copied into
 * shared 16 KiB chunks, so a flood of 1-byte frames costs bytes, not objects. The window grows
 * (doubling up to `MUX_MAX_WINDOW`) only while our writes keep up and the budget allows, so a
 * reader that stalls pins at most the initial window.
 */
export class MuxStream {
  readonly id: number;
  readonly #link: StreamLink;
  readonly #budget: WindowBudget | null;
  #hooks: StreamHooks;
  #conn: Deno.Conn | null = null;
  #ended = false;
  /** A byte moved either way since the last `quietFor()` (a flag, not a clock read per chunk). */
  #moved = true;
  #quietSince = 0;

  // TCP → peer
  #credit = MUX_INITIAL_WINDOW;
  #creditWaiter: (() => void) | null = null;
  #eofSent = false;

  // peer → TCP
  readonly #queue: Pending[] = [];
  #queued = 0;
  /** Receive window currently granted (initial plus growth taken from the budget). */
  #window = MUX_INITIAL_WINDOW;
  /** Bytes the peer may still send before it needs more credit. */
  #allowance = MUX_INITIAL_WINDOW;
  /** Written to TCP since the last `WINDOW`. */
  #consumed = 0;
  #writing = false;
  #eofReceived = false;
  #writeShut = false;
  /** Message mode: DATA payloads go here as they arrive (no TCP side, no queue). */
  #onMessage: ((payload: Uint8Array) => void) | null = null;

  constructor(id: number, link: StreamLink, budget: WindowBudget | null, hooks: StreamHooks = {}) {
    this.id = id;
    this.#link = link;
    this.#budget = budget;
    this.#hooks = hooks;
  }

  /** True once the stream is over (cleanly or not). */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * For `--idle-timeout`, called by a periodic sweep: how long no byte has moved either way, as
   * far as the sweeps can tell (0 when something moved since the last call).
   */
  quietFor(now: number): number {
    if (this.#moved) {
      this.#moved = false;
      this.#quietSince = now;
      return 0;
    }
    return now - this.#quietSince;
  }

  /** Replaces the hooks. */
  setHooks(hooks: StreamHooks): void {
    this.#hooks = hooks;
  }

  /** Starts pumping between the stream and `conn`. Data that arrived before waits in the queue. */
  attach(conn: Deno.Conn): void {
    if (this.#conn) throw new Error("stream already has a connection");
    if (this.#ended) {
      resetConn(conn);
      return;
    }
    this.#conn = conn;
    this.#kickWriter();
    if (this.#eofReceived && this.#queue.length === 0) this.#shutWrite(conn);
    this.#readLoop(conn);
  }

  /**
   * Message mode, for streams that carry framed datagrams (the VPN's packets) rather than a
   * connection: every DATA payload goes to `onMessage` (a view valid during the call) the moment
   * it arrives, and its credit goes back at once; send with {@link sendMessage}. A payload may hold
   * several messages, or part of one: the framing is the caller's. An EOF from the peer ends the
   * stream both ways.
   */
  attachMessages(onMessage: (payload: Uint8Array) => void): void {
    if (this.#conn || this.#onMessage) throw new Error("stream already attached");
    if (this.#ended) return;
    this.#onMessage = onMessage;
    // There is no TCP side to half-close.
    this.#writeShut = true;
    const early = this.#queue.splice(0);
    this.#queued = 0;
    for (const chunk of early) this.#deliver(chunk.buf.subarray(0, chunk.len));
    if (this.#eofReceived) this.onEof();
  }

  /**
   * Message mode: sends the `len` bytes at `buf[SEND_ROOM, SEND_ROOM + len)` as one DATA frame.
   * False, and nothing sent, when the peer's credit is short or the stream is over; true when it
   * went out, or a promise that resolves when the data connection can take more. A frame of
   * `COPIED_FRAME_BYTES` or more gives `buf` away (the caller needs a new one).
   */
  sendMessage(buf: Uint8Array, len: number): boolean | Promise<void> {
    if (this.#ended || this.#eofSent || len > this.#credit || len === 0) return false;
    this.#credit -= len;
    this.#moved = true;
    this.#hooks.onSent?.(len);
    const wait = this.#link.sendData(this.id, buf, len, SEND_ROOM + len >= COPIED_FRAME_BYTES);
    return wait ?? true;
  }

  /** Message mode: resolves once the peer's credit covers `bytes` (or the stream ended). */
  async creditFor(bytes: number): Promise<void> {
    while (!this.#ended && !this.#eofSent && this.#credit < bytes) {
      await new Promise<void>((r) => (this.#creditWaiter = r));
    }
  }

  /** Message mode: no more messages from this side (EOF); the stream ends once the peer's comes. */
  endMessages(): void {
    if (this.#ended || this.#eofSent) return;
    this.#eofSent = true;
    this.#link.sendEof(this.id);
    this.#maybeFinish();
  }

  #deliver(payload: Uint8Array): void {
    const n = payload.byteLength;
    this.#consumed += n;
    this.#moved = true;
    this.#hooks.onReceived?.(n);
    this.#onMessage!(payload);
    if (!this.#ended) this.#maybeGrant();
  }

  /** Aborts the stream: resets the TCP side and tells the peer. */
  reset(code: ErrorCode, message: string, kind = "reset"): void {
    if (this.#ended) return;
    this.#link.sendReset(this.id, code, message);
    this.#end({ clean: false, reason: message, kind });
  }

  /** The data connection is gone: reset the TCP side without telling anyone. */
  lost(reason: string): void {
    this.#end({ clean: false, reason, kind: "closed" });
  }

  // --- frames from the peer (called by the data connection) ------------------------------------

  /** A `DATA` frame. Throws `ProtocolError` when the peer broke the credit rules. */
  onData(payload: Uint8Array): void {
    if (this.#ended) return;
    if (this.#eofReceived) throw new ProtocolError(`data after eof on stream ${this.id}`);
    const n = payload.byteLength;
    if (n > this.#allowance) {
      throw new ProtocolError(`peer sent beyond the credit window on stream ${this.id}`);
    }
    this.#allowance -= n;
    if (this.#onMessage) {
      this.#deliver(payload);
      return;
    }
    this.#queued += n;
    this.#enqueue(payload);
    this.#kickWriter();
  }

  /** A `WINDOW` frame: more credit for our reader. */
  onWindow(bytes: number): void {
    if (this.#ended || this.#eofSent) return;
    this.#credit += bytes;
    if (this.#credit > MUX_MAX_WINDOW) {
      throw new ProtocolError(
        `peer granted more than ${MUX_MAX_WINDOW} bytes on stream ${this.id}`,
      );
    }
    const w = this.#creditWaiter;
    this.#creditWaiter = null;
    w?.();
  }

  /** An `EOF` frame: the peer will send nothing more. */
  onEof(): void {
    if (this.#ended) return;
    if (this.#eofReceived && !this.#onMessage) {
      throw new ProtocolError(`duplicate eof on stream ${this.id}`);
    }
    this.#eofReceived = true;
    if (this.#onMessage) {
      // A message stream ends as a whole.
      this.endMessages();
      this.#maybeFinish();
      return;
    }
    if (this.#conn && !this.#writing && this.#queue.length === 0) this.#shutWrite(this.#conn);
  }

  /** A `RESET` frame: the peer aborted the stream. */
  onReset(code: ErrorCode, message: string): void {
    this.#end({
      clean: false,
      reason: message,
      kind: code === "local_dial_failed" ? "local_dial" : "peer_reset",
    });
  }

  // --- peer → TCP -------------------------------------------------------------------------------

  #enqueue(payload: Uint8Array): void {
    const n = payload.byteLength;
    // Queued as it is when it is large, or when nothing waits (the common interactive case: no
    // copy, no chunk), unless it is a small view into a big buffer. Small payloads that arrive
    // while others wait are copied into shared chunks, so a flood of tiny frames into a stalled
    // stream costs its bytes, not an object each.
    if (
      (n >= COALESCE_BELOW || this.#queue.length === 0) && n * 4 >= payload.buffer.byteLength
    ) {
      this.#queue.push({ buf: payload, len: n, open: false });
      return;
    }
    let off = 0;
    while (off < n) {
      let tail = this.#queue[this.#queue.length - 1];
      if (!tail || !tail.open || tail.len === tail.buf.byteLength) {
        tail = { buf: new Uint8Array(Math.max(COALESCE_CHUNK, n - off)), len: 0, open: true };
        this.#queue.push(tail);
      }
      const take = Math.min(n - off, tail.buf.byteLength - tail.len);
      tail.buf.set(payload.subarray(off, off + take), tail.len);
      tail.len += take;
      off += take;
    }
  }

  #kickWriter(): void {
    if (this.#writing || !this.#conn || this.#queue.length === 0) return;
    this.#writing = true;
    this.#writeLoop(this.#conn);
  }

  async #writeLoop(conn: Deno.Conn): Promise<void> {
    try {
      while (!this.#ended) {
        const chunk = this.#queue.shift();
        if (!chunk) {
          // Checked and cleared in the same turn: a frame queued after this starts a new loop.
          this.#writing = false;
          if (this.#eofReceived) this.#shutWrite(conn);
          return;
        }
        const len = chunk.len;
        let off = 0;
        while (off < len) off += await conn.write(chunk.buf.subarray(off, len));
        // Received buffers belong to this stream alone: free big ones now, not at the next GC.
        if (chunk.open || chunk.buf.byteLength >= FREE_AT_ONCE_BYTES) freeBuffer(chunk.buf);
        if (this.#ended) return;
        this.#queued -= len;
        this.#consumed += len;
        this.#moved = true;
        this.#hooks.onReceived?.(len);
        this.#maybeGrant();
      }
    } catch (e) {
      this.#writing = false;
      this.reset("internal", `write to TCP failed: ${errorText(e)}`);
    }
  }

  /** Gives credit back once half the window has been written; grows the window if we keep up. */
  #maybeGrant(): void {
    if (this.#eofReceived || this.#consumed < this.#window / 2) return;
    let grant = this.#consumed;
    this.#consumed = 0;
    if (this.#queued === 0 && this.#window < MUX_MAX_WINDOW && this.#budget?.take(this.#window)) {
      grant += this.#window;
      this.#window *= 2;
    }
    this.#allowance += grant;
    this.#link.sendWindow(this.id, grant);
  }

  #shutWrite(conn: Deno.Conn): void {
    if (this.#writeShut) return;
    this.#writeShut = true;
    (conn as Deno.TcpConn).closeWrite().then(
      () => this.#maybeFinish(),
      // The user already closed its side: nothing more will be read from it either.
      () => this.#maybeFinish(),
    );
  }

  // --- TCP → peer -------------------------------------------------------------------------------

  async #readLoop(conn: Deno.Conn): Promise<void> {
    let size = MUX_FIRST_READ_BYTES;
    let buf = new Uint8Array(SEND_ROOM + size);
    try {
      while (!this.#ended) {
        while (this.#credit <= 0 && !this.#ended) {
          await new Promise<void>((r) => (this.#creditWaiter = r));
        }
        if (this.#ended) return;
        const max = Math.min(size, this.#credit);
        const n = await conn.read(buf.subarray(SEND_ROOM, SEND_ROOM + max));
        if (this.#ended) return;
        if (n === null) {
          this.#eofSent = true;
          this.#link.sendEof(this.id);
          this.#maybeFinish();
          return;
        }
        this.#credit -= n;
        this.#moved = true;
        this.#hooks.onSent?.(n);
        const full = n === max && max === size;
        let wait: Promise<void> | void;
        if (SEND_ROOM + n < COPIED_FRAME_BYTES) {
          // Small: the WebSocket copies it into its current batch at once; the buffer stays ours.
          wait = this.#link.sendData(this.id, buf, n, false);
        } else if (n * 4 < buf.byteLength) {
          // Medium, in a big buffer: hand over a right-sized copy and keep the buffer.
          const out = new Uint8Array(SEND_ROOM + n);
          out.set(buf.subarray(SEND_ROOM, SEND_ROOM + n), SEND_ROOM);
          wait = this.#link.sendData(this.id, out, n, true);
        } else {
          // Large: hand the buffer itself over (it is freed once written) and read into a new one.
          wait = this.#link.sendData(this.id, buf, n, true);
          buf = new Uint8Array(SEND_ROOM + size);
        }
        if (full && size < MUX_MAX_DATA_BYTES) {
          size = Math.min(size * READ_GROWTH, MUX_MAX_DATA_BYTES);
          buf = new Uint8Array(SEND_ROOM + size);
        }
        if (wait) await wait;
      }
    } catch (e) {
      this.reset("internal", `read from TCP failed: ${errorText(e)}`);
    }
  }

  // --- the end ------------------------------------------------------------------------------------

  #maybeFinish(): void {
    if (
      !this.#ended && this.#eofSent && this.#eofReceived && this.#writeShut && !this.#writing &&
      this.#queue.length === 0
    ) {
      this.#end({ clean: true });
    }
  }

  #end(end: StreamEnd): void {
    if (this.#ended) return;
    this.#ended = true;
    for (const chunk of this.#queue) freeBuffer(chunk.buf);
    this.#queue.length = 0;
    this.#queued = 0;
    const w = this.#creditWaiter;
    this.#creditWaiter = null;
    w?.();
    const conn = this.#conn;
    if (conn) {
      // A clean end closes normally (both FINs are out); anything else resets the user's TCP.
      if (end.clean) closeQuietly(conn);
      else resetConn(conn);
    }
    if (this.#window > MUX_INITIAL_WINDOW) this.#budget?.give(this.#window - MUX_INITIAL_WINDOW);
    this.#link.forget(this.id);
    this.#hooks.onEnd?.(end);
  }
}
