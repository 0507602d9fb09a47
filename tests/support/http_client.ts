// A raw HTTP/1.1 client for tests: any Host header, keep-alive on one connection, exact bytes.
import { BodyTracker, requestFraming, responseFraming } from "../../shared/http_framing.ts";
import { parseResponseHead, readHead } from "../../shared/http_head.ts";
import { closeQuietly, writeAll } from "../../shared/net.ts";

/** One request. */
export interface RawRequest {
  readonly method?: string;
  readonly path?: string;
  /** Sent as the Host header (the tunnel's name, e.g. `app.t.test`). */
  readonly host: string;
  /** Extra header lines, in order (may repeat). */
  readonly headers?: readonly (readonly [string, string])[];
  readonly body?: Uint8Array | string;
  /** Send the body chunked (Transfer-Encoding) in pieces of this size. */
  readonly chunked?: number;
}

/** A complete response. */
export interface RawResponse {
  readonly status: number;
  readonly statusText: string;
  readonly headers: Headers;
  /** The body, decoded from chunked if it was. */
  readonly body: Uint8Array;
  /** The head as received (for asserting exact header lines). */
  readonly head: string;
  text(): string;
  json(): unknown;
}

const encoder = new TextEncoder();

/** An HTTP/1.1 connection to `port` on 127.0.0.1 carrying requests one after another. */
export class HttpConn {
  readonly conn: Deno.TcpConn;
  #pending: Uint8Array = new Uint8Array(0);

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  static async open(port: number, hostname = "127.0.0.1"): Promise<HttpConn> {
    return new HttpConn(await Deno.connect({ hostname, port }));
  }

  /** Writes the request head and body (Content-Length, or chunked when asked). */
  async send(req: RawRequest): Promise<void> {
    const body = typeof req.body === "string" ? encoder.encode(req.body) : req.body;
    const lines = [`${req.method ?? "GET"} ${req.path ?? "/"} HTTP/1.1`, `host: ${req.host}`];
    for (const [k, v] of req.headers ?? []) lines.push(`${k}: ${v}`);
    if (body !== undefined && req.chunked === undefined) {
      lines.push(`content-length: ${body.byteLength}`);
    }
    if (req.chunked !== undefined) lines.push("transfer-encoding: chunked");
    await writeAll(this.conn, encoder.encode(lines.join("\r\n") + "\r\n\r\n"));
    if (body === undefined) return;
    if (req.chunked === undefined) {
      await writeAll(this.conn, body);
      return;
    }
    for (let off = 0; off < body.byteLength; off += req.chunked) {
      const piece = body.subarray(off, off + req.chunked);
      await writeAll(this.conn, encoder.encode(piece.byteLength.toString(16) + "\r\n"));
      await writeAll(this.conn, piece);
      await writeAll(this.conn, encoder.encode("\r\n"));
    }
    await writeAll(this.conn, encoder.encode("0\r\n\r\n"));
  }

  /**
   * Writes only the request head: with `length` a Content-Length header, with `chunked` (any
   * value) Transfer-Encoding: chunked; the body follows through `writeChunk`/`endChunks` or
   * `writeRaw` (streaming uploads, `Expect: 100-continue`).
   */
  async sendHead(req: RawRequest & { length?: number }): Promise<void> {
    const lines = [`${req.method ?? "GET"} ${req.path ?? "/"} HTTP/1.1`, `host: ${req.host}`];
    for (const [k, v] of req.headers ?? []) lines.push(`${k}: ${v}`);
    if (req.length !== undefined) lines.push(`content-length: ${req.length}`);
    if (req.chunked !== undefined) lines.push("transfer-encoding: chunked");
    await writeAll(this.conn, encoder.encode(lines.join("\r\n") + "\r\n\r\n"));
  }

  /** Writes bytes as they are (a Content-Length body after `sendHead`). */
  async writeRaw(bytes: Uint8Array): Promise<void> {
    await writeAll(this.conn, bytes);
  }

  /** Writes one chunk of a chunked body (not empty: that would end it). */
  async writeChunk(piece: Uint8Array): Promise<void> {
    if (piece.byteLength === 0) throw new RangeError("an empty chunk ends the body: use endChunks");
    await writeAll(this.conn, encoder.encode(piece.byteLength.toString(16) + "\r\n"));
    await writeAll(this.conn, piece);
    await writeAll(this.conn, encoder.encode("\r\n"));
  }

  /** Ends a chunked body. */
  async endChunks(): Promise<void> {
    await writeAll(this.conn, encoder.encode("0\r\n\r\n"));
  }

  /** Reads one response head (1xx included) and returns it, body not read. */
  async head(
    timeoutMs = 15_000,
  ): Promise<{ status: number; statusText: string; headers: Headers; head: string }> {
    const got = await readHead(this.conn, {
      maxBytes: 256 * 1024,
      timeoutMs,
      prefix: this.#pending,
    });
    this.#pending = got.leftover;
    const h = parseResponseHead(got.head);
    return { status: h.status, statusText: h.statusText, headers: h.headers, head: got.head };
  }

  /**
   * Reads the body of a response to `method` with this head; `onChunk` sees decoded bytes as they
   * arrive (for streaming tests). Returns the whole body unless `keep` is false.
   */
  async body(
    method: string,
    head: { status: number; headers: Headers },
    onChunk?: (chunk: Uint8Array) => void,
    keep = true,
  ): Promise<Uint8Array> {
    const tracker = new BodyTracker(responseFraming(method, head.status, head.headers));
    const parts: Uint8Array[] = [];
    const take = (d: Uint8Array) => {
      onChunk?.(d);
      if (keep) parts.push(d.slice());
    };
    const buf = new Uint8Array(256 * 1024);
    while (!tracker.done) {
      let chunk: Uint8Array;
      if (this.#pending.byteLength > 0) {
        chunk = this.#pending;
        this.#pending = new Uint8Array(0);
      } else {
        const n = await this.conn.read(buf);
        if (n === null) {
          if (tracker.end()) break;
          throw new Error("connection closed in the middle of the response body");
        }
        chunk = buf.subarray(0, n);
      }
      const used = tracker.feed(chunk, take);
      if (used < chunk.byteLength) this.#pending = chunk.slice(used);
    }
    return concatAll(parts);
  }

  /** Sends a request and reads its final response (skipping 1xx). */
  async request(req: RawRequest): Promise<RawResponse> {
    await this.send(req);
    return await this.response(req.method ?? "GET");
  }

  /** Reads the next final response (1xx heads are skipped). */
  async response(method = "GET"): Promise<RawResponse> {
    let h = await this.head();
    while (h.status < 200 && h.status !== 101) h = await this.head();
    const body = h.status === 101 ? new Uint8Array(0) : await this.body(method, h);
    const text = () => new TextDecoder().decode(body);
    return { ...h, body, text, json: () => JSON.parse(text()) };
  }

  /** True when the server closed the connection (EOF within `ms`). */
  async closedByPeer(ms = 5_000): Promise<boolean> {
    if (this.#pending.byteLength > 0) return false;
    const buf = new Uint8Array(1);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const t = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), ms)));
    try {
      const n = await Promise.race([this.conn.read(buf).catch(() => null), t]);
      return n === null;
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    closeQuietly(this.conn);
  }
}

/** One request on a new connection, closed afterwards. */
export async function httpRequest(port: number, req: RawRequest): Promise<RawResponse> {
  const c = await HttpConn.open(port);
  try {
    return await c.request(req);
  } finally {
    c.close();
  }
}

/** The request body framing a raw request would have (for local services written by hand). */
export { requestFraming };

function concatAll(parts: Uint8Array[]): Uint8Array {
  const n = parts.reduce((s, p) => s + p.byteLength, 0);
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}
