// A scripted mport server for client tests: a real listener with our own WebSocket server pieces
// (readHead, serverHandshakeResponse, WsConn) whose every message is written by the test.
import {
  decodeMuxFrame,
  encode,
  encodeMuxFrame,
  type ErrorCode,
  MAX_CONTROL_MESSAGE_BYTES,
  MUX_HEADER_BYTES,
  MUX_MAX_MESSAGE_BYTES,
  type MuxFrame,
  MuxType,
  PROTOCOL_VERSION,
  type ServerControlMessage,
  SUBPROTOCOL,
  writeMuxHeader,
} from "../../shared/protocol.ts";
import { WsConn } from "../../shared/ws_conn.ts";
import { errorText, readEach } from "./ws_reader.ts";
import {
  checkUpgradeRequest,
  parseRequestHead,
  readHead,
  serverHandshakeResponse,
} from "../../shared/ws_handshake.ts";
import { closeQuietly, writeAll } from "./tcp_services.ts";
import { Notifier } from "./wait.ts";

const LOOPBACK = "127.0.0.1";
const HEAD_TIMEOUT_MS = 5_000;
/** Control messages kept per connection before the oldest are dropped. */
const MAX_KEPT_MESSAGES = 1_000;

/** An HTTP answer other than 101 to an upgrade request. */
export interface FakeRefusal {
  readonly status: number;
  /** Reason phrase of the status line. */
  readonly statusText: string;
  readonly body: string;
}

/** A control channel the client opened, with the JSON messages it sent. */
export class FakeControl {
  readonly ws: WsConn;
  /** Parsed JSON messages, oldest first (bounded). */
  readonly messages: Record<string, unknown>[] = [];
  readonly changed = new Notifier();
  readonly done: Promise<void>;

  constructor(ws: WsConn) {
    this.ws = ws;
    this.done = this.#read();
  }

  async #read(): Promise<void> {
    // A failed connection (or a message that is not JSON) ends reading; `done` resolves all the same.
    await readEach(this.ws, (msg) => {
      if (!msg.text) return;
      this.messages.push(JSON.parse(new TextDecoder().decode(msg.data)));
      if (this.messages.length > MAX_KEPT_MESSAGES) this.messages.shift();
      this.changed.notify();
    });
    this.changed.notify();
  }

  /** Waits for the client's `hello`. */
  async hello(ms = 10_000): Promise<Record<string, unknown>> {
    let found: Record<string, unknown> | undefined;
    await this.changed.until("hello from the client", () => {
      found = this.messages.find((m) => m.type === "hello");
      return found !== undefined;
    }, ms);
    return found!;
  }

  /** Sends a control message (any JSON object, to send what a decoder would reject too). */
  send(msg: ServerControlMessage | Record<string, unknown>): void {
    this.ws.sendText(encode(msg as ServerControlMessage));
  }
}

/** What a data connection received from the client, counted rather than kept. */
export class FakeData {
  readonly ws: WsConn;
  readonly changed = new Notifier();
  /** `RESET`s received, by error code. */
  readonly resets = new Map<string, number>();
  /** Ids of the streams the client reset, with the message of the last one. */
  readonly resetIds = new Set<number>();
  lastResetMessage = "";
  /** Bytes of `DATA` received, by stream id. */
  readonly received = new Map<number, Uint8Array>();
  /** How reading ended; null while open. */
  readEnd: string | null = null;
  readonly done: Promise<void>;

  constructor(ws: WsConn) {
    this.ws = ws;
    this.done = this.#read();
  }

  async #read(): Promise<void> {
    const failed = await readEach(this.ws, (msg) => {
      this.#onFrame(decodeMuxFrame(msg.data));
      this.changed.notify();
    });
    this.readEnd = failed ? errorText(failed.error) : "closed";
    this.changed.notify();
  }

  #onFrame(frame: MuxFrame): void {
    if (frame.type === "reset") {
      this.resets.set(frame.code, (this.resets.get(frame.code) ?? 0) + 1);
      this.resetIds.add(frame.id);
      this.lastResetMessage = frame.message;
    } else if (frame.type === "data") {
      const had = this.received.get(frame.id) ?? new Uint8Array(0);
      const all = new Uint8Array(had.byteLength + frame.payload.byteLength);
      all.set(had);
      all.set(frame.payload, had.byteLength);
      this.received.set(frame.id, all);
    }
  }

  /** RESETs received in all. */
  get resetCount(): number {
    let n = 0;
    for (const v of this.resets.values()) n += v;
    return n;
  }

  /** Asks the client to open stream `id` of `tunnel`. */
  open(id: number, tunnel: string, remote = "203.0.113.7:40000"): void {
    this.ws.sendBinary(encodeMuxFrame({ type: "open", id, tunnel, remote }));
  }

  /** Aborts stream `id`. */
  reset(id: number, code: ErrorCode = "bad_message", message = "reset by the test"): void {
    this.ws.sendBinary(encodeMuxFrame({ type: "reset", id, code, message }));
  }

  /** Sends bytes on stream `id`. */
  sendData(id: number, payload: Uint8Array): void {
    const msg = new Uint8Array(MUX_HEADER_BYTES + payload.byteLength);
    writeMuxHeader(msg, 0, MuxType.data, id);
    msg.set(payload, MUX_HEADER_BYTES);
    this.ws.sendBinary(msg);
  }
}

/** Options of {@link FakeServer.start}. */
export interface FakeServerOptions {
  /** Answers an upgrade request for `path` with this refusal instead of a WebSocket (null: accept). */
  readonly refuse?: (path: string) => FakeRefusal | null;
}

/**
 * Accepts upgrades on any path ending in `/control` or `/stream` (the v2 endpoints of any prefix)
 * and queues them for the test.
 */
export class FakeServer {
  readonly port: number;
  readonly url: string;
  readonly changed = new Notifier();
  readonly controls: FakeControl[] = [];
  readonly datas: FakeData[] = [];
  /** Upgrade requests answered with a refusal. */
  refusals = 0;
  readonly #listener: Deno.TcpListener;
  readonly #opts: FakeServerOptions;
  readonly #conns = new Set<Deno.Conn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #loop: Promise<void>;

  private constructor(opts: FakeServerOptions) {
    this.#opts = opts;
    this.#listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
    this.port = this.#listener.addr.port;
    this.url = `ws://${LOOPBACK}:${this.port}`;
    this.#loop = this.#accept();
  }

  /** Starts listening on 127.0.0.1, port 0. */
  static start(opts: FakeServerOptions = {}): FakeServer {
    return new FakeServer(opts);
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return;
      }
      this.#conns.add(conn);
      const task = this.#serve(conn).catch(() => closeQuietly(conn));
      this.#tasks.add(task);
      task.finally(() => this.#tasks.delete(task));
    }
  }

  async #serve(conn: Deno.TcpConn): Promise<void> {
    const { head, leftover } = await readHead(conn, {
      maxBytes: 16 * 1024,
      timeoutMs: HEAD_TIMEOUT_MS,
    });
    const req = parseRequestHead(head);
    const bad = checkUpgradeRequest(req.method, req.headers);
    if (bad !== null) throw new Error(`bad upgrade request: ${bad}`);
    const path = new URL(req.target, "http://x").pathname;
    const refusal = this.#opts.refuse?.(path) ?? null;
    if (refusal) {
      const body = new TextEncoder().encode(refusal.body);
      await writeAll(
        conn,
        new TextEncoder().encode(
          `HTTP/1.1 ${refusal.status} ${refusal.statusText}\r\n` +
            `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.byteLength}\r\n` +
            "Connection: close\r\n\r\n",
        ),
      );
      await writeAll(conn, body);
      this.refusals++;
      this.changed.notify();
      closeQuietly(conn);
      this.#conns.delete(conn);
      return;
    }
    const key = req.headers.get("sec-websocket-key")!;
    await writeAll(conn, await serverHandshakeResponse(key, SUBPROTOCOL));
    if (path.endsWith("/control")) {
      const ws = new WsConn(conn, {
        role: "server",
        maxMessageBytes: MAX_CONTROL_MESSAGE_BYTES,
        leftover,
      });
      const control = new FakeControl(ws);
      this.controls.push(control);
      this.changed.notify();
      await control.done;
    } else if (path.endsWith("/stream")) {
      const ws = new WsConn(conn, {
        role: "server",
        maxMessageBytes: MUX_MAX_MESSAGE_BYTES,
        leftover,
      });
      const data = new FakeData(ws);
      this.datas.push(data);
      this.changed.notify();
      await data.done;
    } else {
      throw new Error(`unexpected path ${path}`);
    }
    this.#conns.delete(conn);
  }

  /** Waits for the `n`th (1-based) control channel. */
  async control(n = 1, ms = 15_000): Promise<FakeControl> {
    await this.changed.until(`control channel ${n}`, () => this.controls.length >= n, ms);
    return this.controls[n - 1]!;
  }

  /** Waits for the `n`th (1-based) data connection. */
  async data(n = 1, ms = 15_000): Promise<FakeData> {
    await this.changed.until(`data connection ${n}`, () => this.datas.length >= n, ms);
    return this.datas[n - 1]!;
  }

  /** Stops listening, drops every connection and waits for the handlers. */
  async close(): Promise<void> {
    this.#listener.close();
    await this.#loop;
    for (const c of this.controls) c.ws.abort();
    for (const d of this.datas) d.ws.abort();
    // Connections still in their upgrade, or refused and not yet closed.
    for (const c of this.#conns) closeQuietly(c);
    await Promise.all([...this.#tasks]);
    await Promise.all([
      ...this.controls.map((c) => c.ws.closed),
      ...this.datas.map((d) => d.ws.closed),
    ]);
  }
}

/** A `welcome` granting `tunnels` (name → public URL), with a long heartbeat so none is needed. */
export function welcome(
  tunnels: Record<string, string>,
  refused: { name: string; code: ErrorCode; message: string }[] = [],
): ServerControlMessage {
  return {
    type: "welcome",
    version: PROTOCOL_VERSION,
    sessionId: "fake-session",
    sessionSecret: "fake-secret-0123456789",
    heartbeatMs: 3_600_000,
    tunnels: Object.entries(tunnels).map(([name, url], i) => ({
      name,
      kind: "tcp",
      remotePort: 10_000 + i,
      url,
    })),
    refused,
  };
}
