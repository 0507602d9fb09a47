// Bridges one TCP connection and one data-stream WebSocket, with credit-window flow control.
import {
  ACK_THRESHOLD_BYTES,
  BUFFERED_HIGH_WATER_BYTES,
  CloseCode,
  decodeStreamControl,
  encode,
  MAX_DATA_FRAME_BYTES,
  ProtocolError,
  READ_CHUNK_BYTES,
  STREAM_WINDOW_BYTES,
  type StreamControlMessage,
} from "./protocol.ts";

/** How a stream ended, for logs and counters. */
export interface StreamEnd {
  /** True when both directions reached EOF and every byte was delivered. */
  readonly clean: boolean;
  /** Why it ended, when it did not end cleanly. */
  readonly reason?: string;
  /** Error kind for counters (`protocol`, `reset`, `peer_error`, `local_dial`, …). */
  readonly kind?: string;
  /**
   * The connection ended cleanly and the WebSocket stays open for another one (stream reuse):
   * on the client `idle` was sent, on the server it waits for the client's `idle`.
   */
  readonly reused?: boolean;
}

/** Hooks a bridge reports through; all optional. */
export interface StreamBridgeHooks {
  /** The peer sent `open` (client side: the server assigned this pooled stream). */
  onOpen?(msg: Extract<StreamControlMessage, { type: "open" }>): void;
  /** Bytes read from TCP and sent into the WebSocket. */
  onSent?(bytes: number): void;
  /** Bytes received from the WebSocket and written to TCP. */
  onReceived?(bytes: number): void;
  /**
   * Called once when the connection is over, or when the stream dies before it carried one.
   * With stream reuse (`end.reused`) the same bridge may carry another connection later.
   */
  onEnd?(end: StreamEnd): void;
}

/** Tunables, defaulting to the protocol constants (tests shrink them). */
export interface StreamBridgeOptions {
  readonly window?: number;
  readonly ackThreshold?: number;
  readonly highWater?: number;
  readonly chunk?: number;
  /**
   * Acknowledge at once whenever the write queue runs dry after a little traffic. The server sets
   * it: Deno's client WebSocket leaves Nagle's algorithm on, so a client frame that follows an
   * unacknowledged one waits for the server's delayed TCP ACK (~40 ms). Any frame from the server
   * carries that ACK; an early `ack` is such a frame, sent only on interactive (small) flows.
   */
  readonly ackWhenIdle?: boolean;
}

/** `ackWhenIdle` acknowledges early only while this little has arrived since the last ack. */
const IDLE_ACK_MAX_BYTES = 64 * 1024;
/** Pause after which `ackWhenIdle` acknowledges if nothing else went to the peer meanwhile. */
const IDLE_ACK_DELAY_MS = 1;

/** Longest the sender sleeps before it looks at `bufferedAmount` again without an ack. */
const DRAIN_POLL_MS = 1;
/**
 * Queued small frames are joined into one TCP write of up to this size. Kept small: joining bulk
 * frames costs a copy, which measured ~25 % more client CPU per GiB than writing them one by one.
 */
const COALESCE_BYTES = 64 * 1024;
/** Read buffer of a new stream; it grows to the read chunk size when a read fills it. */
const INITIAL_READ_BYTES = 16 * 1024;
/** How long the server keeps a cleanly finished stream open waiting for the client's `idle`. */
const IDLE_WAIT_MS = 10_000;

/**
 * One data stream. Created as soon as its WebSocket is open; `attach()` gives it the TCP
 * connection. Data that arrives before `attach()` waits in the (credit-bounded) write queue.
 *
 * Stream reuse: after a connection ends cleanly the client may send `idle` (when `offerReuse`
 * says so) and the bridge goes back to the idle state on the same WebSocket; the server (with
 * `onReused` set) waits for that `idle` after its own clean end, resets and hands the stream back.
 * Everything of one connection is sent before `idle`, and the server sends nothing after its
 * clean end until a new `open`, so no message of an old connection can reach a new one. Loops of
 * an old connection carry its generation number and stop touching the bridge once it changed.
 */
export class StreamBridge {
  readonly ws: WebSocket;
  #conn: Deno.Conn | null = null;
  #hooks: StreamBridgeHooks;
  readonly #window: number;
  readonly #ackThreshold: number;
  readonly #highWater: number;
  readonly #chunk: number;
  readonly #ackWhenIdle: boolean;
  /** Frames sent so far (data and control), to see whether anything went out during a pause. */
  #sent = 0;
  #idleAckPending = false;

  #sendCredit: number;
  #creditWaiter: (() => void) | null = null;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #unacked = 0;
  #writing = false;
  #eofReceived = false;
  #eofSent = false;
  #writeShut = false;
  /** Write side shut and the final ack sent: nothing more of this connection goes out. */
  #writeShutDone = false;
  #ended = false;
  #wsClosed = false;
  /** Connection number on this WebSocket; async loops of an older one stop when it changes. */
  #gen = 0;
  /** Server side: the peer sent `idle` for the current connection. */
  #idleReceived = false;
  /** Server side: our side ended cleanly; waiting for the peer's `idle` (or its close). */
  #waitingIdle = false;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * Client side, when the server's `open` offered reuse: the final ack is folded into our `eof`
   * instead of going out as its own frame just before it. The client's WebSocket has Nagle's
   * algorithm on (Deno 2.9 sets no TCP_NODELAY on it), so a second small frame right after the
   * ack would wait for the server's delayed TCP ACK, about 40 ms.
   */
  #ackInEof = false;

  /**
   * Client side of stream reuse: asked after a connection ended cleanly; returning true sends
   * `idle` and keeps the stream for another `open` instead of closing the WebSocket.
   */
  offerReuse: (() => boolean) | null = null;
  /**
   * Server side of stream reuse: when set, the peer may send `idle`; after our clean end and its
   * `idle` (either order) the bridge is reset to idle and this is called (instead of closing).
   * When unset, `idle` is a protocol error and a clean end closes the stream.
   */
  onReused: (() => void) | null = null;

  constructor(ws: WebSocket, hooks: StreamBridgeHooks = {}, opts: StreamBridgeOptions = {}) {
    this.ws = ws;
    this.#hooks = hooks;
    this.#window = opts.window ?? STREAM_WINDOW_BYTES;
    this.#ackThreshold = opts.ackThreshold ?? ACK_THRESHOLD_BYTES;
    this.#highWater = opts.highWater ?? BUFFERED_HIGH_WATER_BYTES;
    this.#chunk = opts.chunk ?? READ_CHUNK_BYTES;
    this.#ackWhenIdle = opts.ackWhenIdle ?? false;
    this.#sendCredit = this.#window;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (e) => this.#onMessage(e.data);
    ws.onclose = (e) => this.#onWsClose(e.code, e.reason);
    ws.onerror = () => {};
  }

  /** True once the stream is over in both directions or was aborted. */
  get ended(): boolean {
    return this.#ended;
  }

  /** True while the WebSocket is open and no TCP connection is attached yet. */
  get idle(): boolean {
    return this.#conn === null && !this.#ended && !this.#waitingIdle &&
      this.ws.readyState === WebSocket.OPEN;
  }

  /** Replaces the hooks (the server sets them when it assigns a pooled stream). */
  setHooks(hooks: StreamBridgeHooks): void {
    this.#hooks = hooks;
  }

  /** Sends a stream control message (e.g. `open`); false if the socket is not open. */
  sendControl(msg: StreamControlMessage): boolean {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    try {
      this.ws.send(encode(msg));
      this.#sent++;
      return true;
    } catch {
      return false;
    }
  }

  /** Starts pumping between the WebSocket and `conn`. */
  attach(conn: Deno.Conn): void {
    if (this.#conn) throw new Error("stream already has a connection");
    this.#conn = conn;
    if (this.#ended) {
      closeQuietly(conn);
      return;
    }
    this.#kickWriter();
    this.#readLoop(conn, this.#gen);
  }

  /** Reports an error to the peer and tears the stream down. */
  fail(
    code: Extract<StreamControlMessage, { type: "error" }>["code"],
    message: string,
    closeCode: number,
  ): void {
    this.sendControl({ type: "error", code, message });
    this.#abort(message, code, closeCode);
  }

  /** Tears the stream down without telling the peer why (e.g. shutdown deadline). */
  abort(reason: string): void {
    this.#abort(reason, "aborted", CloseCode.streamReset);
  }

  #onMessage(data: unknown): void {
    if (this.#ended) return;
    try {
      if (data instanceof ArrayBuffer) this.#onData(new Uint8Array(data));
      else if (typeof data === "string") this.#onControl(decodeStreamControl(data));
      else throw new ProtocolError("unexpected frame type");
    } catch (e) {
      const err = e instanceof ProtocolError ? e : new ProtocolError(String(e));
      this.sendControl({ type: "error", code: "bad_message", message: err.message });
      this.#abort(err.message, "protocol", err.closeCode);
    }
  }

  #onData(chunk: Uint8Array): void {
    if (chunk.byteLength > MAX_DATA_FRAME_BYTES) {
      throw new ProtocolError(
        `data frame of ${chunk.byteLength} bytes exceeds the ${MAX_DATA_FRAME_BYTES}-byte limit`,
        CloseCode.tooLarge,
      );
    }
    if (this.#eofReceived) throw new ProtocolError("data after eof");
    if (chunk.byteLength === 0) return;
    this.#queued += chunk.byteLength;
    if (this.#queued + this.#unacked > this.#window) {
      throw new ProtocolError(`peer sent beyond the ${this.#window}-byte credit window`);
    }
    this.#queue.push(chunk);
    this.#kickWriter();
  }

  #onAck(bytes: number): void {
    this.#sendCredit += bytes;
    if (this.#sendCredit > this.#window) {
      throw new ProtocolError("peer acknowledged more than was sent");
    }
    const w = this.#creditWaiter;
    this.#creditWaiter = null;
    w?.();
  }

  #onControl(msg: StreamControlMessage): void {
    switch (msg.type) {
      case "ack":
        this.#onAck(msg.bytes);
        this.#maybeFinish();
        return;
      case "eof":
        if (this.#eofReceived) throw new ProtocolError("duplicate eof");
        if (msg.bytes !== undefined) this.#onAck(msg.bytes);
        this.#eofReceived = true;
        this.#kickWriter();
        return;
      case "open":
        if (this.#conn || this.#waitingIdle) {
          throw new ProtocolError("open on a stream that is already bridged");
        }
        this.#ackInEof = msg.reuse === true;
        this.#hooks.onOpen?.(msg);
        return;
      case "idle":
        if (!this.onReused) throw new ProtocolError("unexpected idle on this stream");
        if (
          this.#idleReceived || !this.#eofReceived || !this.#eofSent ||
          this.#sendCredit !== this.#window
        ) {
          throw new ProtocolError("idle before the connection on this stream finished");
        }
        this.#idleReceived = true;
        if (this.#waitingIdle) this.#reuse();
        return;
      case "error":
        this.#abort(
          msg.message,
          msg.code === "local_dial_failed" ? "local_dial" : "peer_error",
          CloseCode.normal,
        );
        return;
      default: {
        const never: never = msg;
        throw new ProtocolError(`unhandled ${String(never)}`);
      }
    }
  }

  #kickWriter(): void {
    if (this.#writing || !this.#conn) return;
    this.#writing = true;
    const gen = this.#gen;
    this.#writeLoop(this.#conn, gen).finally(() => {
      if (gen === this.#gen) this.#writing = false;
    });
  }

  async #writeLoop(conn: Deno.Conn, gen: number): Promise<void> {
    const stale = () => this.#ended || gen !== this.#gen;
    try {
      while (this.#queue.length > 0 && !stale()) {
        const chunk = this.#takeQueued();
        await writeAll(conn, chunk);
        if (stale()) return;
        this.#queued -= chunk.byteLength;
        this.#unacked += chunk.byteLength;
        this.#hooks.onReceived?.(chunk.byteLength);
        if (this.#unacked >= this.#ackThreshold && !this.#wsClosed) {
          this.sendControl({ type: "ack", bytes: this.#unacked });
          this.#unacked = 0;
        }
      }
      if (stale()) return;
      if (this.#ackWhenIdle && this.#unacked > 0 && this.#unacked < IDLE_ACK_MAX_BYTES) {
        this.#scheduleIdleAck(gen);
      }
      if ((this.#eofReceived || this.#wsClosed) && this.#queue.length === 0 && !this.#writeShut) {
        this.#writeShut = true;
        await conn.closeWrite().catch(() => {});
        if (stale()) return;
        // Final ack: every byte the peer sent is on our TCP, so it may close. Until then it keeps
        // the socket open, because closing while our acks are in flight resets the connection
        // and destroys data we have not read yet. It rides on our own `eof` if that is still to
        // come and the peer reads acks there (the peer cannot finish before our eof anyway).
        if (this.#unacked > 0 && !this.#wsClosed && !(this.#ackInEof && !this.#eofSent)) {
          this.sendControl({ type: "ack", bytes: this.#unacked });
          this.#unacked = 0;
        }
        this.#writeShutDone = true;
      }
      this.#maybeFinish();
    } catch (e) {
      if (!stale()) {
        this.#abort(`write to TCP failed: ${errMessage(e)}`, "reset", CloseCode.streamReset);
      }
    }
  }

  /**
   * After a short pause with nothing sent to the peer, acknowledges what was written. Anything we
   * send carries the TCP ACK the peer's Nagle-delayed frame waits for, so in request/response
   * traffic (a reply goes out within the pause) this costs nothing; only a peer that sends
   * several frames in a row while we stay silent gets an early `ack`.
   */
  #scheduleIdleAck(gen: number): void {
    if (this.#idleAckPending) return;
    this.#idleAckPending = true;
    const sentBefore = this.#sent;
    setTimeout(() => {
      this.#idleAckPending = false;
      if (this.#ended || this.#wsClosed || gen !== this.#gen || this.#eofReceived) return;
      if (this.#sent === sentBefore && this.#unacked > 0 && this.#queue.length === 0) {
        this.sendControl({ type: "ack", bytes: this.#unacked });
        this.#unacked = 0;
      } else if (
        this.#unacked > 0 && this.#unacked < IDLE_ACK_MAX_BYTES && this.#queue.length === 0
      ) {
        this.#scheduleIdleAck(gen);
      }
    }, IDLE_ACK_DELAY_MS);
  }

  /** The next bytes to write: one frame, or several joined into one TCP write. */
  #takeQueued(): Uint8Array {
    const q = this.#queue;
    const first = q.shift()!;
    if (q.length === 0 || first.byteLength >= COALESCE_BYTES) return first;
    let total = first.byteLength;
    let n = 0;
    while (n < q.length && total + q[n]!.byteLength <= COALESCE_BYTES) total += q[n++]!.byteLength;
    if (n === 0) return first;
    const out = new Uint8Array(total);
    out.set(first);
    let off = first.byteLength;
    for (const c of q.splice(0, n)) {
      out.set(c, off);
      off += c.byteLength;
    }
    return out;
  }

  async #readLoop(conn: Deno.Conn, gen: number): Promise<void> {
    const stale = () => this.#ended || this.#wsClosed || gen !== this.#gen;
    // One buffer, reused: `WebSocket.send` copies what it is given (Deno 2.9, both the client and
    // the upgraded server socket). It starts small, so a mostly idle connection holds little
    // while its read is pending, and grows to the full chunk once a read fills it.
    let buf = new Uint8Array(Math.min(this.#chunk, INITIAL_READ_BYTES));
    try {
      while (!stale()) {
        while (this.#sendCredit <= 0 && !stale()) {
          await new Promise<void>((r) => (this.#creditWaiter = r));
        }
        while (this.ws.bufferedAmount > this.#highWater && !stale()) {
          // There is no drain event. An ack means the peer took data off the socket, so the
          // buffer has probably drained too; the timer covers a peer that acks without reading.
          await this.#waitAckOrTimeout(DRAIN_POLL_MS);
        }
        if (stale()) return;
        const n = await conn.read(
          this.#sendCredit >= buf.byteLength ? buf : buf.subarray(0, this.#sendCredit),
        );
        if (stale()) return;
        if (n === null) {
          this.#eofSent = true;
          if (this.#ackInEof && this.#unacked > 0) {
            this.sendControl({ type: "eof", bytes: this.#unacked });
            this.#unacked = 0;
          } else {
            this.sendControl({ type: "eof" });
          }
          this.#maybeFinish();
          return;
        }
        this.#sendCredit -= n;
        this.ws.send(buf.subarray(0, n));
        this.#sent++;
        this.#hooks.onSent?.(n);
        if (n === buf.byteLength && n < this.#chunk) buf = new Uint8Array(this.#chunk);
      }
    } catch (e) {
      if (!this.#ended && gen === this.#gen) {
        this.#abort(`read from TCP failed: ${errMessage(e)}`, "reset", CloseCode.streamReset);
      }
    }
  }

  #waitAckOrTimeout(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.#creditWaiter === done) this.#creditWaiter = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#creditWaiter = done;
    });
  }

  #maybeFinish(): void {
    if (this.#ended || this.#waitingIdle) return;
    if (
      this.#eofSent && this.#eofReceived && this.#writeShutDone && this.#queue.length === 0 &&
      this.#sendCredit === this.#window && !this.#wsClosed
    ) {
      this.#endClean();
    } else if (this.#wsClosed && this.#writeShut && this.#queue.length === 0) {
      // The peer closed cleanly after both EOFs; we drained what it sent.
      this.#finish({ clean: this.#eofSent && this.#eofReceived }, CloseCode.normal, "done");
    }
  }

  /** Both directions are done, every byte delivered and acknowledged, the WebSocket is open. */
  #endClean(): void {
    const conn = this.#conn;
    if (this.offerReuse?.()) {
      // Client: the final ack went out before this (alone or in our eof), so `idle` is the last
      // message of this connection; the server may send `open` for the next one once it reads it.
      if (this.#unacked > 0) {
        // Not reached (a clean end has no ack left to send); kept so no ack can follow `idle`.
        this.sendControl({ type: "ack", bytes: this.#unacked });
        this.#unacked = 0;
      }
      if (conn) closeQuietly(conn);
      this.#conn = null;
      this.#hooks.onEnd?.({ clean: true, reused: true });
      if (!this.sendControl({ type: "idle" })) {
        this.#abort("stream closed", "closed", CloseCode.normal);
        return;
      }
      this.#reset();
      return;
    }
    if (this.onReused) {
      // Server: this connection is over; the stream is reused once the client's `idle` is here.
      if (conn) closeQuietly(conn);
      this.#conn = null;
      this.#waitingIdle = true;
      const hooks = this.#hooks;
      this.#hooks = {};
      hooks.onEnd?.({ clean: true, reused: true });
      if (this.#ended || !this.#waitingIdle) return;
      if (this.#idleReceived) {
        this.#reuse();
      } else {
        // A client that does not reuse streams closes the WebSocket itself.
        this.#idleTimer = setTimeout(() => {
          this.#idleTimer = undefined;
          this.#abort("no idle from the peer", "closed", CloseCode.normal);
        }, IDLE_WAIT_MS);
      }
      return;
    }
    this.#finish({ clean: true }, CloseCode.normal, "done");
  }

  /** Server: our clean end and the peer's `idle` are both in; reset and hand the stream back. */
  #reuse(): void {
    this.#reset();
    this.onReused?.();
  }

  /** Back to the state of a new stream: no connection, a full credit window, all flags clear. */
  #reset(): void {
    this.#gen++;
    this.#conn = null;
    this.#sendCredit = this.#window;
    const w = this.#creditWaiter;
    this.#creditWaiter = null;
    w?.();
    this.#queue = [];
    this.#queued = 0;
    this.#unacked = 0;
    this.#writing = false;
    this.#eofReceived = false;
    this.#eofSent = false;
    this.#writeShut = false;
    this.#writeShutDone = false;
    this.#idleReceived = false;
    this.#waitingIdle = false;
    this.#ackInEof = false;
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }

  #onWsClose(code: number, reason: string): void {
    if (this.#wsClosed) return;
    this.#wsClosed = true;
    const w = this.#creditWaiter;
    this.#creditWaiter = null;
    w?.();
    if (this.#ended) return;
    if ((code === CloseCode.normal || this.#eofReceived) && this.#conn) {
      // Deliver what already arrived, then close. After the peer's eof all its data is here, so
      // even an abnormal close (a reset racing the close frame) must not drop the queue.
      this.#kickWriter();
      return;
    }
    this.#abort(
      reason || `stream closed by peer (code ${code})`,
      code === CloseCode.normal ? "closed" : "peer_reset",
      code,
    );
  }

  #abort(reason: string, kind: string, closeCode: number): void {
    if (this.#ended) return;
    this.#finish(
      { clean: false, reason, kind },
      closeCode === CloseCode.normal ? CloseCode.normal : closeCode,
      reason,
    );
  }

  #finish(end: StreamEnd, closeCode: number, reason: string): void {
    this.#ended = true;
    this.#queue = [];
    this.#queued = 0;
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    const w = this.#creditWaiter;
    this.#creditWaiter = null;
    w?.();
    if (this.#conn) closeQuietly(this.#conn);
    if (!this.#wsClosed && this.ws.readyState <= WebSocket.OPEN) {
      try {
        this.ws.close(closeCode, truncateReason(reason));
      } catch {
        // already closing
      }
    }
    this.#hooks.onEnd?.(end);
  }
}

/** Writes every byte of `data` to `conn`. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.byteLength) {
    off += await conn.write(off === 0 ? data : data.subarray(off));
  }
}

/** Closes a connection or listener that may already be closed. */
export function closeQuietly(conn: { close(): void }): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** WebSocket close reasons are limited to 123 bytes of UTF-8. */
export function truncateReason(reason: string): string {
  const bytes = new TextEncoder().encode(reason);
  if (bytes.byteLength <= 123) return reason;
  return new TextDecoder().decode(bytes.subarray(0, 120)).replace(/\uFFFD$/, "") + "...";
}
