// Loopback fixtures for the WebSocket tests: our server and client, raw frame peers, deadlines.
import { closeQuietly, writeAll } from "../../shared/net.ts";
import { WsConn, type WsConnOptions } from "../../shared/ws_conn.ts";
import {
  encodeHeader,
  type FrameRole,
  headerLength,
  MAX_WS_HEADER_BYTES,
  parseFrameHeader,
} from "../../shared/ws_frames.ts";
import {
  checkUpgradeRequest,
  clientHandshake,
  offeredProtocols,
  parseRequestHead,
  readHead,
  type RequestHead,
  serverHandshakeResponse,
} from "../../shared/ws_handshake.ts";
import { within as withinMs } from "../support/wait.ts";

export const LOOPBACK = "127.0.0.1";
/** Upper bound for any single wait in these tests; a hang fails instead of blocking CI. */
export const WAIT_MS = 10_000;

// The shared helpers, re-exported for the WebSocket tests that import them from here.
export { closeQuietly };

/** Rejects with a message naming `what` when `p` has not settled within `ms`. */
export function within<T>(p: Promise<T>, what: string, ms = WAIT_MS): Promise<T> {
  return withinMs(p, ms, what);
}

/** True when `p` is still pending after `ms` (for asserting that something does NOT happen). */
export async function stillPending(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const pending = Symbol("pending");
  const r = await Promise.race([
    p.then(() => null, () => null),
    new Promise((resolve) => (timer = setTimeout(() => resolve(pending), ms))),
  ]);
  clearTimeout(timer);
  return r === pending;
}

/** Deterministic, non-repeating-looking bytes. */
export function pattern(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed * 2654435761 >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Hex SHA-256 of `data`. */
export async function sha256(data: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Two ends of one loopback TCP connection. */
export async function tcpPair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  const listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  try {
    const [a, b] = await Promise.all([
      Deno.connect({ hostname: LOOPBACK, port: listener.addr.port }),
      listener.accept(),
    ]);
    return [a, b];
  } finally {
    listener.close();
  }
}

/** Server side of the upgrade on an accepted connection, returning the request too. */
export async function acceptUpgrade(
  conn: Deno.Conn,
  opts: Partial<WsConnOptions> = {},
): Promise<{ ws: WsConn; head: RequestHead }> {
  const { head, leftover } = await readHead(conn, { maxBytes: 16 * 1024, timeoutMs: WAIT_MS });
  const req = parseRequestHead(head);
  const bad = checkUpgradeRequest(req.method, req.headers);
  if (bad !== null) throw new Error(bad);
  const protocol = offeredProtocols(req.headers)[0] ?? null;
  const response = await serverHandshakeResponse(req.headers.get("sec-websocket-key")!, protocol);
  await writeAll(conn, response);
  const ws = new WsConn(conn, { role: "server", maxMessageBytes: 4 << 20, leftover, ...opts });
  return { ws, head: req };
}

/** Our server: a listener whose connections are upgraded to WsConn (server role). */
export interface OurServer {
  readonly port: number;
  /** The next upgraded connection. */
  next(): Promise<WsConn>;
  close(): void;
}

/** Starts our server on 127.0.0.1 port 0; each accepted connection is upgraded in order. */
export function ourServer(opts: Partial<WsConnOptions> = {}): OurServer {
  const listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  return {
    port: listener.addr.port,
    async next() {
      const conn = await listener.accept();
      try {
        return (await acceptUpgrade(conn, opts)).ws;
      } catch (e) {
        closeQuietly(conn);
        throw e;
      }
    },
    close: () => closeQuietly(listener),
  };
}

/** Our client: connect, handshake, WsConn (client role). `wrap` may replace the conn. */
export async function ourClient(
  port: number,
  opts: Partial<WsConnOptions> & {
    path?: string;
    protocols?: string[];
    wrap?: (c: Deno.Conn) => Deno.Conn;
  } = {},
): Promise<WsConn> {
  const { path, protocols, wrap, ...wsOpts } = opts;
  const tcp = await Deno.connect({ hostname: LOOPBACK, port });
  const conn = wrap ? wrap(tcp) : tcp;
  const { leftover } = await clientHandshake(conn, {
    host: `${LOOPBACK}:${port}`,
    path: path ?? "/",
    timeoutMs: WAIT_MS,
    ...(protocols ? { protocols } : {}),
  });
  return new WsConn(conn, { role: "client", maxMessageBytes: 4 << 20, leftover, ...wsOpts });
}

/** Bytes of one raw frame; `mask` is a big-endian key or null, `rsv` sets reserved bits. */
export function rawFrame(f: {
  opcode: number;
  payload?: Uint8Array;
  fin?: boolean;
  mask?: number | null;
  rsv?: number;
}): Uint8Array {
  const payload = f.payload ?? new Uint8Array(0);
  const mask = f.mask === undefined ? 0x1234abcd : f.mask;
  const size = headerLength(payload.length, mask !== null);
  const out = new Uint8Array(size + payload.length);
  encodeHeader(out, 0, {
    fin: f.fin ?? true,
    opcode: f.opcode,
    length: payload.length,
    maskKey: mask,
  });
  out[0]! |= (f.rsv ?? 0) << 4;
  out.set(payload, size);
  if (mask !== null) {
    for (let i = 0; i < payload.length; i++) {
      out[size + i]! ^= (mask >>> (24 - 8 * (i & 3))) & 0xff;
    }
  }
  return out;
}

/** A frame as a raw peer sees it. */
export interface RawFrame {
  readonly fin: boolean;
  readonly opcode: number;
  readonly masked: boolean;
  readonly maskKey: number;
  /** Unmasked payload. */
  readonly payload: Uint8Array;
}

/**
 * Reads frames off a raw connection without any of WsConn's logic (a test peer). `role` is the
 * role of the raw peer itself ("server" expects masked frames).
 */
export class RawFrameReader {
  #buf: Uint8Array = new Uint8Array(0);
  readonly #conn: Deno.Conn;
  readonly #role: FrameRole;
  constructor(conn: Deno.Conn, role: FrameRole, leftover: Uint8Array = new Uint8Array(0)) {
    this.#conn = conn;
    this.#role = role;
    this.#buf = leftover.slice();
  }

  /** The next frame, or null at EOF (or a reset) before one is complete. */
  async next(): Promise<RawFrame | null> {
    for (;;) {
      const h = parseFrameHeader(this.#buf, this.#role);
      if (typeof h !== "number" && this.#buf.length >= h.headerBytes + h.payloadLength) {
        const payload = this.#buf.slice(h.headerBytes, h.headerBytes + h.payloadLength);
        for (let i = 0; i < payload.length; i++) {
          payload[i]! ^= (h.maskKey >>> (24 - 8 * (i & 3))) & 0xff;
        }
        this.#buf = this.#buf.slice(h.headerBytes + h.payloadLength);
        return { fin: h.fin, opcode: h.opcode, masked: h.masked, maskKey: h.maskKey, payload };
      }
      const chunk = new Uint8Array(64 * 1024);
      let n: number | null;
      try {
        n = await this.#conn.read(chunk);
      } catch {
        return null;
      }
      if (n === null) return null;
      const next = new Uint8Array(this.#buf.length + n);
      next.set(this.#buf);
      next.set(chunk.subarray(0, n), this.#buf.length);
      this.#buf = next;
    }
  }
}

/** The close code in a raw close frame's payload (1005 when empty). */
export function closeCodeOf(frame: RawFrame): number {
  if (frame.payload.length < 2) return 1005;
  return (frame.payload[0]! << 8) | frame.payload[1]!;
}

/** A copy of `data` with MAX_WS_HEADER_BYTES of room in front, for sendBinaryWithRoom. */
export function withRoom(data: Uint8Array): Uint8Array {
  const buf = new Uint8Array(MAX_WS_HEADER_BYTES + data.length);
  buf.set(data, MAX_WS_HEADER_BYTES);
  return buf;
}

/** Wraps a conn so that every `write` call is counted; everything else passes through. */
export function countingConn(conn: Deno.Conn): { conn: Deno.Conn; writes(): number } {
  let writes = 0;
  const proxy = new Proxy(conn, {
    get(target, prop) {
      if (prop === "write") {
        return (p: Uint8Array) => {
          writes++;
          return target.write(p);
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { conn: proxy, writes: () => writes };
}

/** Resolves with the `close` event of a built-in WebSocket. */
export function closeEvent(ws: WebSocket): Promise<CloseEvent> {
  return new Promise((resolve) => ws.addEventListener("close", resolve, { once: true }));
}

/** Resolves when a built-in WebSocket is open, rejects if it fails first. */
export function opened(ws: WebSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    if (ws.readyState === WebSocket.OPEN) return resolve();
    ws.addEventListener("open", () => resolve(), { once: true });
    ws.addEventListener("error", () => reject(new Error("WebSocket failed to open")), {
      once: true,
    });
  });
}

/** The next `message` event's data of a built-in WebSocket. */
export function nextMessage(ws: WebSocket): Promise<string | ArrayBuffer> {
  return new Promise((resolve) =>
    ws.addEventListener("message", (e) => resolve(e.data), { once: true })
  );
}

/** A Deno.serve server whose upgraded sockets are handed to `onSocket`. */
export function denoServer(
  onSocket: (ws: WebSocket, req: Request) => void,
): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ hostname: LOOPBACK, port: 0, onListen: () => {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.binaryType = "arraybuffer";
    onSocket(socket, req);
    return response;
  });
}

export { writeAll };
