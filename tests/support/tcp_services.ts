// Real local TCP services for tests (echo, hashing sink, source) and ways to read a socket to its end.
import { createHash } from "node:crypto";
import { closeQuietly, writeAll } from "../../shared/net.ts";
import { freePort } from "./net.ts";

export { closeQuietly, writeAll };

const LOOPBACK = "127.0.0.1";

/** `n` random bytes (getRandomValues fills at most 64 KiB per call). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

/** SHA-256 of `data`, hex. */
export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** How reading a socket to its end went. */
export interface ReadResult {
  readonly bytes: number;
  /** SHA-256 (hex) of every byte read. */
  readonly sha256: string;
  /** `"EOF"` for a clean end of stream, else the error's name (`"ConnectionReset"`, …). */
  readonly end: string;
  /** The bytes themselves, when `keep` was asked for. */
  readonly data?: Uint8Array;
}

/** Options of {@link readToEnd}. */
export interface ReadOptions {
  /** Called after every read with the total so far. */
  readonly onProgress?: (total: number) => void;
  /** Keep the bytes (for small replies). */
  readonly keep?: boolean;
  /** Stop with end `"limit"` past this many bytes (default 1 GiB). */
  readonly limit?: number;
}

/** Reads until EOF or an error, hashing as it goes; never throws. */
export async function readToEnd(conn: Deno.Conn, opts: ReadOptions = {}): Promise<ReadResult> {
  const hash = createHash("sha256");
  const buf = new Uint8Array(256 * 1024);
  const kept: Uint8Array[] = [];
  const limit = opts.limit ?? 1024 * 1024 * 1024;
  let bytes = 0;
  let end: string;
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) {
        end = "EOF";
        break;
      }
      hash.update(buf.subarray(0, n));
      if (opts.keep) kept.push(buf.slice(0, n));
      bytes += n;
      opts.onProgress?.(bytes);
      if (bytes > limit) {
        end = "limit";
        break;
      }
    }
  } catch (e) {
    end = e instanceof Error ? e.name : String(e);
  }
  const result = { bytes, sha256: hash.digest("hex"), end };
  if (!opts.keep) return result;
  const data = new Uint8Array(bytes);
  let off = 0;
  for (const k of kept) {
    data.set(k, off);
    off += k.byteLength;
  }
  return { ...result, data };
}

/** Reads exactly `n` bytes; throws on an early end. */
export async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const got = await conn.read(out.subarray(off));
    if (got === null) throw new Error(`connection ended after ${off} of ${n} bytes`);
    off += got;
  }
  return out;
}

/** Writes `data` in pieces of `chunk` bytes; returns how many went out and what stopped it. */
export async function writeChunks(
  conn: Deno.Conn,
  data: Uint8Array,
  chunk = 256 * 1024,
): Promise<{ written: number; error?: string }> {
  let written = 0;
  try {
    while (written < data.byteLength) {
      written += await conn.write(
        data.subarray(written, Math.min(data.byteLength, written + chunk)),
      );
    }
    return { written };
  } catch (e) {
    return { written, error: e instanceof Error ? e.name : String(e) };
  }
}

/** A local TCP service whose per-connection behaviour is a function. */
export interface TcpService {
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Stops accepting, closes every connection and waits for the handlers to finish. */
  close(): Promise<void>;
}

/**
 * Starts a TCP service on 127.0.0.1:`port` (0 = any) that runs `handle` for every connection. A
 * handler's errors end only that connection (tests observe what they need through the handler).
 */
export function startService(
  handle: (conn: Deno.TcpConn) => Promise<void>,
  port = 0,
): TcpService {
  const listener = Deno.listen({ hostname: LOOPBACK, port });
  const conns = new Set<Deno.TcpConn>();
  const tasks = new Set<Promise<void>>();
  let accepted = 0;
  const loop = (async () => {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      accepted++;
      conns.add(conn);
      const task = (async () => {
        try {
          await handle(conn);
        } catch {
          // reset by the peer, or the service was closed
        }
        conns.delete(conn);
        closeQuietly(conn);
      })();
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })();
  return {
    port: listener.addr.port,
    get accepted() {
      return accepted;
    },
    async close() {
      listener.close();
      for (const c of conns) closeQuietly(c);
      await loop;
      await Promise.all([...tasks]);
    },
  };
}

/** Echoes every byte, then half-closes at EOF. */
export async function echo(conn: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    await writeAll(conn, buf.subarray(0, n));
  }
  await conn.closeWrite();
}

/** A handler that reads everything and reports how it ended (`onDone`), then closes. */
export function sink(
  onDone: (result: ReadResult) => void,
  opts: ReadOptions = {},
): (conn: Deno.TcpConn) => Promise<void> {
  return async (conn) => onDone(await readToEnd(conn, opts));
}

/**
 * A handler that writes `data` (or keeps writing it while `more()` says so), half-closes and
 * then reads to EOF before closing, so the close never cuts off what the peer still sends.
 * `onDone` learns how many bytes went out and what stopped the writes.
 */
export function source(
  data: Uint8Array,
  onDone?: (result: { written: number; error?: string }) => void,
  more: () => boolean = () => false,
): (conn: Deno.TcpConn) => Promise<void> {
  return async (conn) => {
    let total = 0;
    let error: string | undefined;
    do {
      const r = await writeChunks(conn, data);
      total += r.written;
      error = r.error;
    } while (!error && more());
    onDone?.({ written: total, ...(error ? { error } : {}) });
    if (error) return;
    await conn.closeWrite();
    await readToEnd(conn);
  };
}

/** A loopback port that refuses connections (bound, then closed). */
export function closedPort(): number {
  return freePort();
}

/** Both ends of one loopback TCP connection. */
export async function tcpPair(): Promise<{ accepted: Deno.TcpConn; connected: Deno.TcpConn }> {
  const listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  try {
    const [connected, accepted] = await Promise.all([
      Deno.connect({ hostname: LOOPBACK, port: listener.addr.port }),
      listener.accept(),
    ]);
    return { accepted, connected };
  } finally {
    listener.close();
  }
}

/**
 * Writes to `conn` until the kernel takes no more (its peer never reads): a short write means
 * the send buffer and the peer's receive window are both full, so the next write would block.
 * Returns the bytes written. Bounded at 64 MiB.
 */
export async function fillUntilFull(conn: Deno.Conn): Promise<number> {
  // An odd size, so the buffer is unlikely to fill exactly at a chunk boundary (no short write).
  const chunk = new Uint8Array(61_441);
  let total = 0;
  while (total < 64 * 1024 * 1024) {
    const n = await conn.write(chunk);
    total += n;
    if (n < chunk.byteLength) return total;
  }
  throw new Error(`the peer's receive side absorbed ${total} bytes without filling up`);
}
