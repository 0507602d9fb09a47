// A WebSocket (RFC 6455) over a Deno.Conn for both roles: messages, pings, the close handshake.
import {
  decodeClosePayload,
  decodeTextPayload,
  encodeClosePayload,
  isValidCloseCode,
  MAX_WS_HEADER_BYTES,
  Opcode,
  truncateCloseReason,
  WsCloseCode,
  WsProtocolError,
} from "./ws_frames.ts";
import { DEFAULT_READ_BUFFER_BYTES, EndOfStream, FrameReader } from "./ws_reader.ts";
import { closeQuietly } from "./net.ts";
import { FrameWriter, SMALL_FRAME_BYTES } from "./ws_writer.ts";
import { errorText } from "./error_text.ts";

/**
 * A binary frame smaller than this (header included) is copied by `sendBinary` and
 * `sendBinaryWithRoom` before they return: the caller may reuse its buffer right away.
 */
export const COPIED_FRAME_BYTES = SMALL_FRAME_BYTES;

export { WsProtocolError } from "./ws_frames.ts";

/** Which end of the connection this is: clients mask what they send, servers do not. */
export type WsRole = "client" | "server";

/** One complete data message. */
export interface WsMessage {
  /** True for a text message (its bytes are valid UTF-8), false for binary. */
  readonly text: boolean;
  /** The payload, in a buffer of its own: it stays valid after later reads. */
  readonly data: Uint8Array;
}

/** How a connection ended. */
export interface WsCloseInfo {
  /** The peer's close code for a close handshake, else the code of the failure (1006 abrupt). */
  readonly code: number;
  readonly reason: string;
  /** True when both close frames were exchanged and ours was flushed before TCP closed. */
  readonly clean: boolean;
}

/** Options for `WsConn`. */
export interface WsConnOptions {
  readonly role: WsRole;
  /** A larger message (or fragmented total) fails the connection with close 1009. */
  readonly maxMessageBytes: number;
  /** Bytes already read from the connection after the HTTP handshake. */
  readonly leftover?: Uint8Array;
  /** Client only: send mask key 0 so payloads need no XOR (default true). */
  readonly zeroMask?: boolean;
  /**
   * First read buffer size (default 2 KiB); grows x4 up to 256 KiB while reads fill it and
   * shrinks back after a run of small reads.
   */
  readonly readBufferBytes?: number;
}

/** The connection ended without a close handshake (peer vanished, reset, or aborted). */
export class WsClosedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WsClosedError";
  }
}

const DEFAULT_CLOSE_TIMEOUT_MS = 2000;
const UTF8 = new TextEncoder();
const noop = () => {};

/** Why reading stopped: the peer's close frame, a protocol error, or the connection ending. */
type ReadEnd =
  | { readonly kind: "close"; readonly code: number; readonly reason: string }
  | { readonly kind: "error"; readonly error: WsProtocolError }
  | { readonly kind: "ended"; readonly reason: string };

/**
 * A WebSocket over a `Deno.Conn` (TCP or TLS), client or server role, after the HTTP upgrade.
 *
 * Reads are pulled: nothing is read from the socket unless `read()` is called, so a slow
 * consumer stops the peer through TCP flow control (and pings are answered only while
 * reading). Sends never block; they are queued and one long-lived writer loop writes them,
 * joining the small frames queued within one task into a single `conn.write`.
 * `bufferedAmount` and `drained()` give the caller backpressure. Sets TCP_NODELAY on
 * connections that support it (`Deno.TcpConn`; not `Deno.TlsConn`: set it on the TCP socket
 * before `Deno.startTls`), since the writer already batches.
 */
export class WsConn {
  /** The underlying connection. */
  readonly conn: Deno.Conn;
  /**
   * Resolves once, however the connection ends, after its socket operations have settled.
   * An end is noticed by `read()`, a failed write, `close()` or `abort()`.
   */
  readonly closed: Promise<WsCloseInfo>;

  readonly #maxMessageBytes: number;
  readonly #reader: FrameReader;
  readonly #writer: FrameWriter;
  #resolveClosed!: (info: WsCloseInfo) => void;

  #readTail: Promise<unknown> = Promise.resolve();
  /** Opcode of the fragmented message being joined, 0 when none. */
  #fragOpcode = 0;
  #acc: Uint8Array | null = null;
  #accLen = 0;
  #readEnd: ReadEnd | null = null;
  readonly #readEnded = Promise.withResolvers<void>();
  #closeReaderStarted = false;

  #closeSent = false;
  #localClose = false;
  #closing: Promise<void> | null = null;
  #finished = false;
  #finishReason = "closed";
  readonly #finishedSignal = Promise.withResolvers<void>();

  /** Wraps `conn`, which has completed the HTTP upgrade; `opts.leftover` holds bytes read past it. */
  constructor(conn: Deno.Conn, opts: WsConnOptions) {
    if (!Number.isSafeInteger(opts.maxMessageBytes) || opts.maxMessageBytes < 0) {
      throw new RangeError(`maxMessageBytes must be a non-negative integer`);
    }
    this.conn = conn;
    this.#maxMessageBytes = opts.maxMessageBytes;
    this.#reader = new FrameReader(
      conn,
      opts.role,
      opts.readBufferBytes ?? DEFAULT_READ_BUFFER_BYTES,
      opts.leftover ?? new Uint8Array(0),
    );
    const { promise, resolve } = Promise.withResolvers<WsCloseInfo>();
    this.closed = promise;
    this.#resolveClosed = resolve;
    setNoDelay(conn);
    const mask = opts.role === "server" ? "none" : (opts.zeroMask ?? true) ? "zero" : "random";
    this.#writer = new FrameWriter(conn, mask, (e) => this.#onWriteError(e));
  }

  /** True until a close frame is sent or received, or the connection ends. */
  get isOpen(): boolean {
    return !this.#closeSent && !this.#finished;
  }

  /** Bytes queued but not yet accepted by `conn.write` (0 once the connection ended). */
  get bufferedAmount(): number {
    return this.#writer.buffered;
  }

  /**
   * The next data message, with fragments joined. Pings are answered while reading. Returns
   * null after the peer's close frame (the reply and TCP close follow on their own), and after
   * a local `close()`: data arriving once `close()` was called is discarded.
   * Throws WsClosedError when TCP ends without a close frame or after `abort()`, and
   * WsProtocolError on bad input (after sending close 1002, 1007 or 1009).
   * Calls are served one at a time in call order.
   */
  read(): Promise<WsMessage | null> {
    const next = this.#readTail.then(() => this.#readMessage());
    this.#readTail = next.then(noop, noop);
    return next;
  }

  /**
   * Queues a binary message. Never blocks. Small payloads are copied into the current batch;
   * a large `data` is written from the caller's buffer and must not change until written.
   * Messages queued after a close frame are dropped.
   */
  sendBinary(data: Uint8Array): void {
    if (this.#closeSent || this.#finished) return;
    this.#writer.send(Opcode.Binary, data);
  }

  /** Queues a text message (dropped after a close frame, like `sendBinary`). */
  sendText(text: string): void {
    if (this.#closeSent || this.#finished) return;
    this.#writer.send(Opcode.Text, UTF8.encode(text));
  }

  /**
   * Queues a binary message without copying it: `buf` has MAX_WS_HEADER_BYTES of free room at
   * its start and the payload is `buf[MAX_WS_HEADER_BYTES, MAX_WS_HEADER_BYTES + len)`. The
   * header is written into the room so header and payload go out in one write. Small payloads
   * are copied into the current batch instead, and so are payloads that need a random mask key
   * (client with `zeroMask: false`). `buf` belongs to the connection until written.
   *
   * With `dispose`, the caller gives `buf`'s whole ArrayBuffer away: once written it is detached
   * (`transfer(0)`), which frees its memory at once instead of at the next garbage collection.
   */
  sendBinaryWithRoom(buf: Uint8Array, len: number, dispose = false): void {
    if (!Number.isSafeInteger(len) || len < 0 || MAX_WS_HEADER_BYTES + len > buf.byteLength) {
      throw new RangeError(`sendBinaryWithRoom: ${len} bytes do not fit after the header room`);
    }
    if (this.#closeSent || this.#finished) return;
    this.#writer.sendWithRoom(buf, len, dispose);
  }

  /** Resolves when `bufferedAmount <= lowWater` or the connection has ended. No timers. */
  drained(lowWater = 0): Promise<void> {
    return this.#writer.drained(lowWater);
  }

  /**
   * Starts the close handshake: sends a close frame (the reason is cut to 123 bytes of UTF-8),
   * flushes the queue, waits up to `timeoutMs` for the peer's close frame while discarding its
   * data, then closes TCP. Resolves once `closed` has. Idempotent (later calls wait for the
   * first); rejects with RangeError for a code that may not be sent.
   */
  async close(
    code: number = WsCloseCode.Normal,
    reason = "",
    timeoutMs = DEFAULT_CLOSE_TIMEOUT_MS,
  ): Promise<void> {
    if (!isValidCloseCode(code)) throw new RangeError(`Invalid WebSocket close code ${code}`);
    this.#localClose = true;
    if (!this.#finished && !this.#closing) {
      if (!this.#closeSent) this.#sendClose(code, truncateCloseReason(reason));
      this.#closing = this.#completeClose(timeoutMs);
    }
    await this.#closing;
    await this.closed;
  }

  /** Closes the TCP connection at once, dropping queued frames. */
  abort(): void {
    this.#finish({ code: WsCloseCode.Abnormal, reason: "aborted", clean: false });
  }

  // ---- reading ----

  async #readMessage(): Promise<WsMessage | null> {
    for (;;) {
      if (!this.#readEnd && this.#finished) {
        this.#endRead({ kind: "ended", reason: this.#finishReason });
      }
      if (this.#readEnd) return this.#readEndResult();
      let msg: WsMessage | null;
      try {
        msg = await this.#nextMessage();
      } catch (e) {
        this.#onReadFailure(e);
        return this.#readEndResult();
      }
      if (msg === null) return null;
      // After a local close() the caller has stopped caring about data; keep reading for the close.
      if (!this.#closeSent) return msg;
    }
  }

  #readEndResult(): null {
    const end = this.#readEnd;
    if (end === null || end.kind === "close") return null;
    if (end.kind === "error") throw end.error;
    if (this.#localClose) return null;
    throw new WsClosedError(`WebSocket connection ended without a close frame: ${end.reason}`);
  }

  #endRead(end: ReadEnd): void {
    if (this.#readEnd) return;
    this.#readEnd = end;
    this.#readEnded.resolve();
  }

  #onReadFailure(e: unknown): void {
    if (this.#finished) {
      this.#endRead({ kind: "ended", reason: this.#finishReason });
    } else if (e instanceof WsProtocolError) {
      this.#endRead({ kind: "error", error: e });
      if (!this.#closeSent) this.#sendClose(e.closeCode, truncateCloseReason(e.message));
      this.#closing ??= this.#completeClose(DEFAULT_CLOSE_TIMEOUT_MS);
    } else {
      const reason = e instanceof EndOfStream ? e.message : errorText(e);
      this.#endRead({ kind: "ended", reason });
      // While close() waits for the peer it finishes the connection itself.
      if (!this.#closing) this.#finish({ code: WsCloseCode.Abnormal, reason, clean: false });
    }
  }

  async #nextMessage(): Promise<WsMessage | null> {
    for (;;) {
      const frame = await this.#reader.next(this.#accLen, this.#maxMessageBytes);
      switch (frame.opcode) {
        case Opcode.Text:
        case Opcode.Binary: {
          if (this.#fragOpcode !== 0) {
            throw protocolError("new message started inside a fragmented message");
          }
          if (frame.fin) {
            const data = frame.owned ? frame.payload : frame.payload.slice();
            return this.#message(frame.opcode, data);
          }
          this.#fragOpcode = frame.opcode;
          this.#append(frame.payload);
          break;
        }
        case Opcode.Continuation: {
          if (this.#fragOpcode === 0) throw protocolError("continuation frame outside a message");
          this.#append(frame.payload);
          if (frame.fin) {
            const data = this.#acc!.subarray(0, this.#accLen);
            const opcode = this.#fragOpcode;
            this.#acc = null;
            this.#accLen = 0;
            this.#fragOpcode = 0;
            return this.#message(opcode, data);
          }
          break;
        }
        case Opcode.Close:
          this.#onPeerClose(frame.payload);
          return null;
        case Opcode.Ping:
          if (!this.#closeSent) this.#writer.sendPong(frame.payload.slice());
          break;
        default:
          // Pong: nothing to do; we never send pings of our own.
          break;
      }
    }
  }

  #message(opcode: number, data: Uint8Array): WsMessage {
    const text = opcode === Opcode.Text;
    if (text) decodeTextPayload(data);
    return { text, data };
  }

  /** Joins a fragment; the reader's size check keeps the total within maxMessageBytes. */
  #append(payload: Uint8Array): void {
    const need = this.#accLen + payload.byteLength;
    if (this.#acc === null || need > this.#acc.byteLength) {
      // Doubling keeps thousands of tiny fragments cheap.
      const doubled = Math.min(this.#maxMessageBytes, (this.#acc?.byteLength ?? 512) * 2);
      const next = new Uint8Array(Math.max(need, doubled));
      if (this.#acc) next.set(this.#acc.subarray(0, this.#accLen));
      this.#acc = next;
    }
    this.#acc.set(payload, this.#accLen);
    this.#accLen = need;
  }

  #onPeerClose(payload: Uint8Array): void {
    const { code, reason } = decodeClosePayload(payload);
    this.#endRead({ kind: "close", code, reason });
    if (!this.#closeSent) {
      // Echo the peer's code and reason (§5.5.1); a close without a code gets one without.
      this.#sendClose(code === WsCloseCode.NoStatus ? undefined : code, reason);
    }
    this.#closing ??= this.#completeClose(DEFAULT_CLOSE_TIMEOUT_MS);
  }

  /** After our close frame: reads (and discards) until the peer's close arrives. */
  #startCloseReader(): void {
    if (this.#closeReaderStarted) return;
    this.#closeReaderStarted = true;
    (async () => {
      try {
        while ((await this.read()) !== null) {
          // read() drops data once our close is sent; it returns null at the peer's close.
        }
      } catch {
        // The end is recorded in #readEnd.
      }
    })();
  }

  // ---- closing ----

  /** Queues our close frame: the last frame, so later sends and pongs are dropped. */
  #sendClose(code: number | undefined, reason: string): void {
    this.#closeSent = true;
    this.#writer.dropPong();
    this.#writer.send(Opcode.Close, encodeClosePayload(code, reason));
  }

  #onWriteError(e: unknown): void {
    const end = this.#readEnd;
    // A peer that sent its close and hung up at once still said which code it closed with.
    if (end?.kind === "close") {
      this.#finish({ code: end.code, reason: end.reason, clean: false });
      return;
    }
    this.#finish({
      code: WsCloseCode.Abnormal,
      reason: `write failed: ${errorText(e)}`,
      clean: false,
    });
  }

  /**
   * Ends the close handshake or failure that was started: waits for the reader to end (peer's
   * close, EOF or a protocol error), flushes our close frame, and after a protocol error lingers
   * (half-close, discard input until EOF) so the peer reads our close instead of a reset. Every
   * step shares one deadline.
   */
  async #completeClose(timeoutMs: number): Promise<void> {
    const deadline = Promise.withResolvers<"timeout">();
    const timer = setTimeout(() => deadline.resolve("timeout"), timeoutMs);
    let timedOut = false;
    const until = async (p: Promise<unknown>): Promise<boolean> => {
      if (timedOut || this.#finished) return false;
      const r = await Promise.race([p, this.#finishedSignal.promise, deadline.promise]);
      if (r === "timeout") timedOut = true;
      return !timedOut && !this.#finished;
    };
    let flushed = false;
    try {
      if (!this.#readEnd) this.#startCloseReader();
      await until(this.#readEnded.promise);
      flushed = await until(this.#writer.drained(0));
      if (flushed && this.#readEnd?.kind === "error") await this.#linger(until);
    } finally {
      clearTimeout(timer);
    }
    const end = this.#readEnd;
    if (end?.kind === "close") {
      this.#finish({ code: end.code, reason: end.reason, clean: flushed && !timedOut });
    } else if (end?.kind === "error") {
      this.#finish({ code: end.error.closeCode, reason: end.error.message, clean: false });
    } else {
      const reason = timedOut ? "timed out waiting for the peer's close frame" : end?.reason;
      this.#finish({ code: WsCloseCode.Abnormal, reason: reason ?? "closed", clean: false });
    }
  }

  /** Half-closes and discards input until the peer closes, so unread data causes no RST. */
  async #linger(until: (p: Promise<unknown>) => Promise<boolean>): Promise<void> {
    try {
      await this.conn.closeWrite();
    } catch {
      return;
    }
    for (;;) {
      const read = this.#reader.discard().catch(() => null);
      if (!(await until(read))) return;
      if ((await read) === null) return;
    }
  }

  #finish(info: WsCloseInfo): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#finishReason = info.reason;
    this.#writer.stop();
    this.#closeTransport();
    this.#acc = null;
    this.#finishedSignal.resolve();
    // Report the end only after the socket's pending operations settled, so a caller awaiting
    // `closed` leaves no operation behind.
    const ops = [this.#reader.pendingRead, this.#writer.pendingWrite];
    Promise.all(ops.map((op) => op?.then(noop, noop))).then(() => this.#resolveClosed(info));
  }

  /** The one place the socket is closed, so a reset-on-close variant can replace it. */
  #closeTransport(): void {
    closeQuietly(this.conn);
  }
}

function protocolError(message: string): WsProtocolError {
  return new WsProtocolError(WsCloseCode.ProtocolError, message);
}

function setNoDelay(conn: Deno.Conn): void {
  const tcp = conn as Partial<Deno.TcpConn>;
  if (typeof tcp.setNoDelay !== "function") return;
  try {
    tcp.setNoDelay(true);
  } catch {
    // not a TCP socket after all
  }
}
