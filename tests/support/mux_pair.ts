// A real loopback data connection for tests: a WsConn pair with a Mux on each end (or a raw peer
// that writes mux frames by hand), public listeners that open streams, and local-service routes.
import { Mux } from "../../shared/mux.ts";
import type { MuxStream, StreamEnd, StreamHooks, WindowBudget } from "../../shared/mux_stream.ts";
import {
  decodeMuxFrame,
  encodeMuxFrame,
  MUX_DEFAULT_BUDGET_BYTES,
  MUX_HEADER_BYTES,
  MUX_MAX_MESSAGE_BYTES,
  type MuxFrame,
  MuxType,
  streamPath,
  SUBPROTOCOL,
  writeMuxHeader,
} from "../../shared/protocol.ts";
import { resetConn } from "../../shared/tcp_reset.ts";
import { WsConn } from "../../shared/ws_conn.ts";
import { errorText, readEach } from "./ws_reader.ts";
import {
  checkUpgradeRequest,
  clientHandshake,
  parseRequestHead,
  readHead,
  serverHandshakeResponse,
} from "../../shared/ws_handshake.ts";
import { closeQuietly, startService, type TcpService, writeAll } from "./tcp_services.ts";
import { Notifier, ticks, within } from "./wait.ts";

const LOOPBACK = "127.0.0.1";
const HANDSHAKE_TIMEOUT_MS = 5_000;
const CLOSE_TIMEOUT_MS = 10_000;

/**
 * Two ends of one real WebSocket over loopback TCP: the server side read the upgrade request
 * with `readHead` and answered with `serverHandshakeResponse`; the client ran `clientHandshake`.
 */
export async function wsConnPair(
  maxMessageBytes = MUX_MAX_MESSAGE_BYTES,
): Promise<{ server: WsConn; client: WsConn }> {
  const listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  try {
    const accepting = (async () => {
      const conn = await listener.accept();
      try {
        const { head, leftover } = await readHead(conn, {
          maxBytes: 16 * 1024,
          timeoutMs: HANDSHAKE_TIMEOUT_MS,
        });
        const req = parseRequestHead(head);
        const bad = checkUpgradeRequest(req.method, req.headers);
        if (bad !== null) throw new Error(`bad upgrade request: ${bad}`);
        const key = req.headers.get("sec-websocket-key")!;
        await writeAll(conn, await serverHandshakeResponse(key, SUBPROTOCOL));
        return new WsConn(conn, { role: "server", maxMessageBytes, leftover });
      } catch (e) {
        closeQuietly(conn);
        throw e;
      }
    })();
    const tcp = await Deno.connect({ hostname: LOOPBACK, port: listener.addr.port });
    const answer = await clientHandshake(tcp, {
      host: `${LOOPBACK}:${listener.addr.port}`,
      path: streamPath("/_mport"),
      protocols: [SUBPROTOCOL],
      timeoutMs: HANDSHAKE_TIMEOUT_MS,
    });
    const client = new WsConn(tcp, { role: "client", maxMessageBytes, leftover: answer.leftover });
    return { server: await accepting, client };
  } finally {
    listener.close();
  }
}

/** A window budget that counts what it hands out. */
export class ByteBudget implements WindowBudget {
  readonly size: number;
  #left: number;
  /** Successful `take` calls so far. */
  takes = 0;

  constructor(size: number) {
    this.size = size;
    this.#left = size;
  }

  /** Bytes not handed out right now. */
  get left(): number {
    return this.#left;
  }

  take(bytes: number): boolean {
    if (bytes > this.#left) return false;
    this.#left -= bytes;
    this.takes++;
    return true;
  }

  give(bytes: number): void {
    this.#left += bytes;
  }
}

/** A budget that never lets a window grow. */
export const ZERO_BUDGET: WindowBudget = { take: () => false, give() {} };

/** What the fixture saw of one stream (through its hooks). */
export interface StreamRecord {
  id: number;
  readonly tunnel: string;
  /** Bytes read from the TCP side and sent to the peer. */
  sent: number;
  /** Bytes received from the peer and written to the TCP side. */
  received: number;
  end?: StreamEnd;
}

/**
 * The client end of a data connection without a Mux: the test writes mux frames by hand. A
 * reader loop decodes what the server sends: `WINDOW` frames are added up in `granted`, every
 * other frame waits in a queue for `next()`.
 */
export class RawPeer {
  readonly ws: WsConn;
  /** Credit granted by `WINDOW` frames, by stream id. */
  readonly granted = new Map<number, number>();
  /** `WINDOW` frames received. */
  windows = 0;
  /** How the reader ended: null while open. */
  readEnd: string | null = null;
  readonly changed = new Notifier();
  readonly #queue: MuxFrame[] = [];
  readonly #loop: Promise<void>;

  constructor(ws: WsConn) {
    this.ws = ws;
    this.#loop = this.#read();
  }

  async #read(): Promise<void> {
    const failed = await readEach(this.ws, (msg) => {
      const frame = decodeMuxFrame(msg.data);
      if (frame.type === "window") {
        this.granted.set(frame.id, (this.granted.get(frame.id) ?? 0) + frame.bytes);
        this.windows++;
      } else {
        this.#queue.push(frame);
      }
      this.changed.notify();
    });
    this.readEnd = failed ? errorText(failed.error, true) : "closed";
    this.changed.notify();
  }

  /** Takes the first queued frame that `match` accepts, waiting up to `ms` for one. */
  async next(what: string, match: (f: MuxFrame) => boolean, ms = 5_000): Promise<MuxFrame> {
    let found: MuxFrame | undefined;
    await this.changed.until(what, () => {
      const i = this.#queue.findIndex(match);
      if (i >= 0) found = this.#queue.splice(i, 1)[0];
      return found !== undefined || this.readEnd !== null;
    }, ms);
    if (!found) throw new Error(`${what}: the data connection ended (${this.readEnd})`);
    return found;
  }

  /** Waits for the server to open a stream; returns its id. */
  async nextOpen(ms = 5_000): Promise<{ id: number; tunnel: string; remote: string }> {
    const f = await this.next("OPEN from the server", (f) => f.type === "open", ms);
    if (f.type !== "open") throw new Error("unreachable");
    return f;
  }

  /** Sends a frame other than `DATA`. */
  send(frame: Exclude<MuxFrame, { type: "data" }>): void {
    this.ws.sendBinary(encodeMuxFrame(frame));
  }

  /** Sends one `DATA` frame. */
  sendData(id: number, payload: Uint8Array): void {
    const msg = new Uint8Array(MUX_HEADER_BYTES + payload.byteLength);
    writeMuxHeader(msg, 0, MuxType.data, id);
    msg.set(payload, MUX_HEADER_BYTES);
    this.ws.sendBinary(msg);
  }

  /** Resolves when the reader loop is over. */
  finished(): Promise<void> {
    return this.#loop;
  }
}

/** Options of {@link MuxPair.start}. */
export interface MuxPairOptions {
  /** Server's budget for grown windows (default: a fresh 32 MiB `ByteBudget`). */
  readonly serverBudget?: WindowBudget | null;
  /** Client's budget for grown windows (default: a fresh 64 MiB `ByteBudget`). */
  readonly clientBudget?: WindowBudget | null;
  /** Client's `maxStreams`. */
  readonly maxStreams?: number;
  /** No client Mux: the client end is a {@link RawPeer}. */
  readonly raw?: boolean;
}

/**
 * A server Mux and a client Mux (or raw peer) over one real loopback WebSocket. `service()` starts
 * a local TCP service, routes a tunnel to it and opens a public listener for it; every user
 * connection accepted there is opened as a stream (`server.open`), and the client dials the
 * tunnel's local port and `attach()`es (or resets with `local_dial_failed`).
 */
export class MuxPair {
  readonly server: Mux;
  readonly client: Mux | null;
  readonly peer: RawPeer | null;
  readonly serverWs: WsConn;
  readonly clientWs: WsConn;
  readonly serverStreams = new Map<number, StreamRecord>();
  readonly clientStreams = new Map<number, StreamRecord>();
  /** Notified on every stream event either side records. */
  readonly changed = new Notifier();
  readonly #routes = new Map<string, number>();
  readonly #publicPorts = new Map<string, number>();
  readonly #listeners: { listener: Deno.Listener; loop: Promise<void> }[] = [];
  readonly #users = new Set<Deno.Conn>();
  readonly #dials = new Set<Promise<void>>();
  readonly #services: TcpService[] = [];

  private constructor(server: WsConn, client: WsConn, opts: MuxPairOptions) {
    this.serverWs = server;
    this.clientWs = client;
    this.server = new Mux(server, {
      role: "server",
      budget: opts.serverBudget === undefined
        ? new ByteBudget(MUX_DEFAULT_BUDGET_BYTES)
        : opts.serverBudget,
    });
    if (opts.raw) {
      this.client = null;
      this.peer = new RawPeer(client);
      return;
    }
    this.peer = null;
    this.client = new Mux(client, {
      role: "client",
      budget: opts.clientBudget === undefined
        ? new ByteBudget(64 * 1024 * 1024)
        : opts.clientBudget,
      ...(opts.maxStreams !== undefined ? { maxStreams: opts.maxStreams } : {}),
      onOpen: (stream, tunnel) => this.#bridge(stream, tunnel),
    });
  }

  /** Opens the WebSocket pair and wraps it. */
  static async start(opts: MuxPairOptions = {}): Promise<MuxPair> {
    const { server, client } = await wsConnPair();
    return new MuxPair(server, client, opts);
  }

  /** Starts a local service for `tunnel`, routes the tunnel to it and publishes it. */
  service(tunnel: string, handle: (conn: Deno.TcpConn) => Promise<void>): number {
    const svc = startService(handle);
    this.#services.push(svc);
    return this.publish(tunnel, svc.port);
  }

  /**
   * Opens the public listener of `tunnel` and routes it to `localPort`, which the client dials for
   * each stream (with a raw peer no port is needed); returns the public port.
   */
  publish(tunnel: string, localPort?: number): number {
    if (localPort !== undefined) this.#routes.set(tunnel, localPort);
    const listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
    const loop = (async () => {
      for (;;) {
        let conn: Deno.TcpConn;
        try {
          conn = await listener.accept();
        } catch {
          return;
        }
        try {
          this.openWith(tunnel, conn);
        } catch {
          resetConn(conn);
        }
      }
    })();
    this.#listeners.push({ listener, loop });
    this.#publicPorts.set(tunnel, listener.addr.port);
    return listener.addr.port;
  }

  /** A user connection to the public port of `tunnel`. */
  async connect(tunnel: string): Promise<Deno.TcpConn> {
    const port = this.#publicPorts.get(tunnel);
    if (port === undefined) throw new Error(`tunnel ${tunnel} is not published`);
    const conn = await Deno.connect({ hostname: LOOPBACK, port });
    this.#users.add(conn);
    return conn;
  }

  /** Opens a stream on the server for `conn` (a user connection), recording it. */
  openWith(tunnel: string, conn: Deno.Conn): MuxStream {
    const rec: StreamRecord = { id: 0, tunnel, sent: 0, received: 0 };
    const addr = conn.remoteAddr as Deno.NetAddr;
    const stream = this.server.open(
      tunnel,
      `${addr.hostname}:${addr.port}`,
      conn,
      this.#hooks(rec),
    );
    rec.id = stream.id;
    this.serverStreams.set(stream.id, rec);
    return stream;
  }

  #bridge(stream: MuxStream, tunnel: string): void {
    const rec: StreamRecord = { id: stream.id, tunnel, sent: 0, received: 0 };
    this.clientStreams.set(stream.id, rec);
    stream.setHooks(this.#hooks(rec));
    const port = this.#routes.get(tunnel);
    if (port === undefined) {
      stream.reset("bad_message", `no tunnel named "${tunnel}"`);
      return;
    }
    const dial = (async () => {
      let conn: Deno.TcpConn;
      try {
        conn = await Deno.connect({ hostname: LOOPBACK, port });
      } catch (e) {
        stream.reset(
          "local_dial_failed",
          `cannot connect to local service ${LOOPBACK}:${port}: ${(e as Error).message}`,
          "local_dial",
        );
        return;
      }
      stream.attach(conn);
    })();
    this.#dials.add(dial);
    dial.finally(() => this.#dials.delete(dial));
  }

  #hooks(rec: StreamRecord): StreamHooks {
    return {
      onSent: (n) => {
        rec.sent += n;
        this.changed.notify();
      },
      onReceived: (n) => {
        rec.received += n;
        this.changed.notify();
      },
      onEnd: (end) => {
        rec.end = end;
        this.changed.notify();
      },
    };
  }

  /** Server streams that have ended. */
  serverEnded(): StreamRecord[] {
    return [...this.serverStreams.values()].filter((r) => r.end !== undefined);
  }

  /** Waits until `check()` holds, re-checking at every stream event and connection end. */
  until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
    return this.changed.until(what, check, ms);
  }

  /** Waits for `n` server streams to have ended. */
  untilServerEnds(n: number, ms = 10_000): Promise<void> {
    return this.until(`${n} server streams ended`, () => this.serverEnded().length >= n, ms);
  }

  /** Closes everything the fixture opened and waits for it to settle. */
  async close(): Promise<void> {
    for (const { listener } of this.#listeners) closeQuietly(listener);
    await Promise.all(this.#listeners.map((l) => l.loop));
    for (const u of this.#users) closeQuietly(u);
    await Promise.all([...this.#dials]);
    this.server.close(1000, "test over");
    this.client?.close(1000, "test over");
    if (this.peer) this.clientWs.close(1000, "test over").catch(() => {});
    await within(
      Promise.all([this.serverWs.closed, this.clientWs.closed, this.peer?.finished()]),
      CLOSE_TIMEOUT_MS,
      "closing the data connection",
    );
    await Promise.all(this.#services.map((s) => s.close()));
    // Reads pending on sockets that were just closed settle within a few turns.
    await ticks(3);
  }
}
