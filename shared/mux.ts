// A data connection: one WebSocket carrying many user connections as logical streams (protocol v2).
import {
  CLIENT_STREAM_BIT,
  CloseCode,
  decodeMuxFrame,
  type EgressService,
  encodeMuxFrame,
  type ErrorCode,
  MUX_HEADER_BYTES,
  MUX_MAX_STREAMS,
  MUX_SEND_HIGH_WATER,
  MUX_SEND_LOW_WATER,
  MuxType,
  type OpenExtra,
  ProtocolError,
  truncateReason,
  writeMuxHeader,
} from "./protocol.ts";
import {
  MuxStream,
  SEND_ROOM,
  type StreamHooks,
  type StreamLink,
  type WindowBudget,
} from "./mux_stream.ts";
import { type WsConn, WsProtocolError } from "./ws_conn.ts";
import { MAX_WS_HEADER_BYTES } from "./ws_frames.ts";
import { errorText } from "./error_text.ts";

/** Stream ids are 32 bits and never reused on one data connection. */
/** Server ids stay below the client's id space (CLIENT_STREAM_BIT). */
const MAX_STREAM_ID = CLIENT_STREAM_BIT - 1;
/** Client-opened (egress) streams per data connection, counted like the server's. */
const MAX_CLIENT_STREAM_SEQ = CLIENT_STREAM_BIT - 1;

/** Which end of the data connection this is: the server opens streams, the client accepts them. */
export type MuxRole = "server" | "client";

/** Options of a data connection. */
export interface MuxOptions {
  readonly role: MuxRole;
  /** Budget for receive windows grown beyond the initial one; null: never grow. */
  readonly budget: WindowBudget | null;
  /** Client: most streams open at once (further `OPEN`s are refused with `RESET`). */
  readonly maxStreams?: number;
  /** Client: a stream the server opened; dial, then `attach()` or `reset()`. */
  readonly onOpen?: (
    stream: MuxStream,
    tunnel: string,
    remote: string,
    extra: OpenExtra | undefined,
  ) => void;
  /**
   * Server: the client asks for a connection to host:port (egress). Answer with
   * `sendConnected()` and `attach()`, or `reset()` (egress_denied / egress_failed). Without a
   * handler every such stream is refused.
   */
  readonly onConnect?: (
    stream: MuxStream,
    host: string,
    port: number,
    service: EgressService,
  ) => void;
  /** Called once when the data connection is gone, with why. */
  readonly onClose?: (reason: string) => void;
  /** The peer broke the protocol (the connection is being closed with the error's code). */
  readonly onProtocolError?: (message: string) => void;
}

/**
 * Carries streams over one WebSocket. One reader loop decodes frames and hands them to their
 * stream; outgoing frames are queued on the `WsConn`, which writes everything queued in one turn
 * with a single syscall. Bulk senders wait (in arrival order) while the socket's queue is above
 * `MUX_SEND_HIGH_WATER`, so no stream can hold more than one frame beyond it and a small frame of
 * an interactive stream is never far behind.
 */
export class Mux implements StreamLink {
  readonly ws: WsConn;
  readonly #opts: MuxOptions;
  readonly #streams = new Map<number, MuxStream>();
  /** Server: the last id handed out. Client: the highest id the server has opened. */
  #lastId = 0;
  /** Client: the last egress stream number used. Server: the highest one the client opened. */
  #lastClientSeq = 0;
  /** Client: egress streams waiting for `CONNECTED`. */
  readonly #connecting = new Map<
    number,
    { resolve: (address: string) => void; reject: (e: ConnectRefused) => void }
  >();
  #closed = false;
  /** Senders waiting for the socket's queue to drain, resolved together once it has. */
  #waiters: (() => void)[] = [];
  #draining = false;
  readonly done: Promise<string>;
  #resolveDone!: (reason: string) => void;

  constructor(ws: WsConn, opts: MuxOptions) {
    this.ws = ws;
    this.#opts = opts;
    this.done = new Promise((r) => (this.#resolveDone = r));
    this.#readLoop();
    ws.closed.then((info) => {
      this.#shut(info.reason ? `data connection closed: ${info.reason}` : "data connection closed");
    });
  }

  /** Streams open on this connection. */
  get size(): number {
    return this.#streams.size;
  }

  /** True once the connection is gone. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Server: false once every stream id of this connection has been used (2³² − 1 streams); the
   * connection then takes no new streams and closes when its last one ends, and the client
   * opens a fresh one.
   */
  get exhausted(): boolean {
    return this.#lastId >= MAX_STREAM_ID;
  }

  /** Server: opens a stream for a user connection and starts bridging it. */
  open(
    tunnel: string,
    remote: string,
    conn: Deno.Conn,
    hooks: StreamHooks,
    extra?: OpenExtra,
  ): MuxStream {
    if (this.#opts.role !== "server") throw new Error("only the server opens streams");
    if (this.#closed) throw new Error("data connection is closed");
    if (this.exhausted) throw new Error("data connection has used every stream id");
    const id = ++this.#lastId;
    const stream = new MuxStream(id, this, this.#opts.budget, hooks);
    this.#streams.set(id, stream);
    this.#control(encodeMuxFrame({ type: "open", id, tunnel, remote, extra }));
    stream.attach(conn);
    return stream;
  }

  /**
   * Client: opens an egress stream to host:port from the server's side. `connected` resolves with
   * the address the server reached, or rejects with {@link ConnectRefused}; data may be sent
   * (attach) only after it resolved.
   */
  connect(
    host: string,
    port: number,
    hooks: StreamHooks = {},
    service: EgressService = "tcp",
  ): { stream: MuxStream; connected: Promise<string> } {
    if (this.#opts.role !== "client") throw new Error("only the client opens egress streams");
    if (this.#closed) throw new Error("data connection is closed");
    if (this.#lastClientSeq >= MAX_CLIENT_STREAM_SEQ) {
      throw new Error("data connection has used every egress stream id");
    }
    const id = (CLIENT_STREAM_BIT | ++this.#lastClientSeq) >>> 0;
    const stream = new MuxStream(id, this, this.#opts.budget, hooks);
    this.#streams.set(id, stream);
    const connected = new Promise<string>((resolve, reject) => {
      this.#connecting.set(id, { resolve, reject });
    });
    // Nobody may be listening yet when it fails: the caller awaits it later.
    connected.catch(() => {});
    this.#control(encodeMuxFrame({ type: "connect", id, host, port, service }));
    return { stream, connected };
  }

  /** Server: the egress stream `id` reached its destination. */
  sendConnected(id: number, address: string): void {
    this.#control(encodeMuxFrame({ type: "connected", id, address }));
  }

  /** Closes the WebSocket (streams on it are reset). */
  close(code: number = CloseCode.normal, reason = ""): void {
    this.#shut(reason || "data connection closed");
    this.ws.close(code, reason).catch(() => {});
  }

  // --- StreamLink --------------------------------------------------------------------------------

  sendData(id: number, buf: Uint8Array, len: number, giveAway: boolean): Promise<void> | void {
    if (this.#closed) return;
    const start = SEND_ROOM - MUX_HEADER_BYTES - MAX_WS_HEADER_BYTES;
    writeMuxHeader(buf, SEND_ROOM - MUX_HEADER_BYTES, MuxType.data, id);
    // A buffer given away is freed as soon as it is written.
    this.ws.sendBinaryWithRoom(
      start === 0 ? buf : buf.subarray(start),
      MUX_HEADER_BYTES + len,
      giveAway,
    );
    if (this.ws.bufferedAmount <= MUX_SEND_HIGH_WATER) return;
    return this.#waitDrain();
  }

  sendWindow(id: number, bytes: number): void {
    this.#control(encodeMuxFrame({ type: "window", id, bytes }));
  }

  sendEof(id: number): void {
    this.#control(encodeMuxFrame({ type: "eof", id }));
  }

  sendReset(id: number, code: ErrorCode, message: string): void {
    this.#control(encodeMuxFrame({ type: "reset", id, code, message }));
  }

  forget(id: number): void {
    this.#streams.delete(id);
    if (this.#streams.size === 0 && this.exhausted) {
      this.close(CloseCode.normal, "stream ids used up");
    }
  }

  // --- internals ---------------------------------------------------------------------------------

  #control(frame: Uint8Array): void {
    if (this.#closed) return;
    try {
      this.ws.sendBinary(frame);
    } catch {
      // closing; the reader loop ends the streams
    }
  }

  #waitDrain(): Promise<void> {
    const p = new Promise<void>((r) => this.#waiters.push(r));
    if (!this.#draining) {
      this.#draining = true;
      this.ws.drained(MUX_SEND_LOW_WATER).then(() => {
        this.#draining = false;
        const waiters = this.#waiters;
        this.#waiters = [];
        for (const w of waiters) w();
      });
    }
    return p;
  }

  async #readLoop(): Promise<void> {
    try {
      while (!this.#closed) {
        const msg = await this.ws.read();
        if (msg === null) break;
        if (msg.text) throw new ProtocolError("data connections carry binary frames only");
        this.#onFrame(msg.data);
      }
    } catch (e) {
      if (e instanceof ProtocolError || e instanceof WsProtocolError) {
        this.#opts.onProtocolError?.(e.message);
        this.#shut(`protocol error: ${e.message}`);
        // A WsProtocolError is already being closed by the WsConn with its own code (1002,
        // 1007, 1009); aborting would drop that close frame.
        if (e instanceof ProtocolError) {
          this.ws.close(e.closeCode, truncateReason(e.message)).catch(() => {});
        }
        return;
      }
      this.#shut(`data connection failed: ${errorText(e)}`);
      this.ws.abort();
      return;
    }
    this.#shut("data connection closed by the peer");
  }

  #onFrame(data: Uint8Array): void {
    const frame = decodeMuxFrame(data);
    const id = frame.id;
    if (frame.type === "open") {
      this.#onOpen(id, frame.tunnel, frame.remote, frame.extra);
      return;
    }
    if (frame.type === "connect") {
      this.#onConnect(id, frame.host, frame.port, frame.service);
      return;
    }
    const stream = this.#streams.get(id);
    if (!stream) {
      // A stream that ended (its frames may cross our RESET) is ignored; one never opened is not.
      const client = (id & CLIENT_STREAM_BIT) !== 0;
      if (client ? (id & ~CLIENT_STREAM_BIT) >>> 0 > this.#lastClientSeq : id > this.#lastId) {
        throw new ProtocolError(`frame for stream ${id}, which was never opened`);
      }
      return;
    }
    switch (frame.type) {
      case "data":
        stream.onData(frame.payload);
        return;
      case "window":
        stream.onWindow(frame.bytes);
        return;
      case "eof":
        stream.onEof();
        return;
      case "reset": {
        const waiting = this.#connecting.get(id);
        if (waiting) {
          this.#connecting.delete(id);
          waiting.reject(new ConnectRefused(frame.code, frame.message));
        }
        stream.onReset(frame.code, frame.message);
        return;
      }
      case "connected": {
        const waiting = this.#connecting.get(id);
        if (!waiting) throw new ProtocolError(`unexpected connected frame for stream ${id}`);
        this.#connecting.delete(id);
        waiting.resolve(frame.address);
        return;
      }
      default: {
        const never: never = frame;
        throw new ProtocolError(`unhandled ${String(never)}`);
      }
    }
  }

  #onConnect(id: number, host: string, port: number, service: EgressService): void {
    if (this.#opts.role !== "server") {
      throw new ProtocolError("only the client opens egress streams");
    }
    const seq = (id & ~CLIENT_STREAM_BIT) >>> 0;
    if (seq <= this.#lastClientSeq) {
      throw new ProtocolError(`egress stream ${id} opened twice or out of order`);
    }
    this.#lastClientSeq = seq;
    if (this.#streams.size >= MUX_MAX_STREAMS) {
      this.sendReset(id, "rate_limited", "too many streams open on this data connection");
      return;
    }
    const stream = new MuxStream(id, this, this.#opts.budget);
    this.#streams.set(id, stream);
    if (!this.#opts.onConnect) {
      stream.reset("egress_denied", "this server does not offer egress");
      return;
    }
    this.#opts.onConnect(stream, host, port, service);
  }

  #onOpen(id: number, tunnel: string, remote: string, extra: OpenExtra | undefined): void {
    if (this.#opts.role !== "client") throw new ProtocolError("only the server opens streams");
    if (id <= this.#lastId) throw new ProtocolError(`stream ${id} opened twice or out of order`);
    this.#lastId = id;
    if (this.#streams.size >= (this.#opts.maxStreams ?? MUX_MAX_STREAMS)) {
      // Not a protocol error: the server may have raced our own closes. Refuse this one.
      this.sendReset(id, "rate_limited", "the client has too many open connections");
      return;
    }
    const stream = new MuxStream(id, this, this.#opts.budget);
    this.#streams.set(id, stream);
    this.#opts.onOpen?.(stream, tunnel, remote, extra);
  }

  #shut(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#connecting.values()) w.reject(new ConnectRefused("internal", reason));
    this.#connecting.clear();
    for (const s of [...this.#streams.values()]) s.lost(reason);
    this.#streams.clear();
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
    this.#opts.onClose?.(reason);
    this.#resolveDone(reason);
  }
}

/** An egress `CONNECT` the server refused (or a data connection lost before the answer). */
export class ConnectRefused extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = "ConnectRefused";
    this.code = code;
  }
}
