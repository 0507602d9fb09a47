// Load generators of the benchmark: each drives one path (direct or a tunnel) and stops by itself.
import {
  ACK_BYTES,
  IO_CHUNK_BYTES,
  MODE,
  payload,
  readExactly,
  writeAll,
} from "./bench_service.ts";

const MB = 1e6;
/** Size of one request and one reply in the round-trip tests. */
export const MESSAGE_BYTES = 32;
/** Longest a single new connection may take before the test fails. */
const CONNECT_MS = 10_000;

/** Latency summary in milliseconds. */
export interface Percentiles {
  readonly p50: number;
  readonly p99: number;
  readonly mean: number;
  readonly max: number;
}

/** How many operations ran in how long. */
export interface Rate {
  readonly ops: number;
  readonly seconds: number;
}

/** Count and time bounds of a load loop: it stops at whichever comes first. */
export interface Bound {
  readonly maxOps: number;
  readonly maxMs: number;
}

/** Grace past a loop's own time bound before its sockets are closed under it. */
const HARD_STOP_GRACE_MS = 30_000;

/** Closes `conn` when `ms` pass, so a stuck read or write fails instead of hanging. */
export async function bounded<T>(
  conn: Deno.Conn,
  ms: number,
  what: string,
  work: (conn: Deno.Conn) => Promise<T>,
): Promise<T> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    closeQuietly(conn);
  }, ms);
  try {
    return await work(conn);
  } catch (e) {
    if (timedOut) throw new Error(`${what} did not finish within ${ms / 1000} s`);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

async function connectTcp(port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  return conn;
}

export function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // closed
  }
}

/** Sends `total` bytes to the sink and waits for its count; returns MB/s. */
export async function upload(
  port: number,
  total: number,
  data: Uint8Array,
  limitMs: number,
): Promise<number> {
  const t0 = performance.now();
  const conn = await connectTcp(port);
  try {
    return await bounded(conn, limitMs, "upload", async (c) => {
      await writeAll(c, new Uint8Array([MODE.upload]));
      for (let sent = 0; sent < total;) {
        const n = Math.min(data.byteLength, total - sent);
        await writeAll(c, data.subarray(0, n));
        sent += n;
      }
      await c.closeWrite();
      const reply = new Uint8Array(8);
      await readExactly(c, reply);
      const seconds = (performance.now() - t0) / 1000;
      const count = Number(new DataView(reply.buffer).getBigUint64(0));
      if (count !== total) throw new Error(`sink counted ${count} bytes, sent ${total}`);
      return total / MB / seconds;
    });
  } finally {
    closeQuietly(conn);
  }
}

/** Asks the source for `total` bytes and reads them to EOF; returns MB/s. */
export async function download(port: number, total: number, limitMs: number): Promise<number> {
  const t0 = performance.now();
  const conn = await connectTcp(port);
  try {
    return await bounded(conn, limitMs, "download", async (c) => {
      const req = new Uint8Array(9);
      req[0] = MODE.download;
      new DataView(req.buffer).setBigUint64(1, BigInt(total));
      await writeAll(c, req);
      const buf = new Uint8Array(IO_CHUNK_BYTES);
      let got = 0;
      while (got <= total) {
        const n = await c.read(buf);
        if (n === null) break;
        got += n;
      }
      const seconds = (performance.now() - t0) / 1000;
      if (got !== total) throw new Error(`received ${got} bytes, asked for ${total}`);
      await c.closeWrite();
      return total / MB / seconds;
    });
  } finally {
    closeQuietly(conn);
  }
}

/** Opens an echo connection and makes one round trip, so the whole path is up. */
async function openEcho(port: number): Promise<Deno.TcpConn> {
  const conn = await connectTcp(port);
  try {
    await bounded(conn, CONNECT_MS, "a new connection", async (c) => {
      await writeAll(c, new Uint8Array([MODE.echo, 0x2a]));
      await readExactly(c, new Uint8Array(1));
    });
    return conn;
  } catch (e) {
    closeQuietly(conn);
    throw e;
  }
}

/** Resolves once a connection through `port` reaches the echo service (one round trip). */
export async function probeEcho(port: number): Promise<void> {
  closeQuietly(await openEcho(port));
}

/** Half-closes an echo connection, reads to its EOF and closes it. */
async function finishEcho(conn: Deno.Conn): Promise<void> {
  await conn.closeWrite();
  const buf = new Uint8Array(64);
  while ((await conn.read(buf)) !== null) {
    // drain to EOF
  }
}

/**
 * Sequential round trips of a 32-byte message on one connection, up to `bound`; returns each
 * round trip's time in ms.
 */
export async function roundTrips(port: number, bound: Bound): Promise<number[]> {
  const conn = await openEcho(port);
  try {
    return await bounded(conn, bound.maxMs + HARD_STOP_GRACE_MS, "round trips", async (c) => {
      const msg = payload(MESSAGE_BYTES);
      const back = new Uint8Array(MESSAGE_BYTES);
      const times: number[] = [];
      const deadline = performance.now() + bound.maxMs;
      for (let i = 0; i < bound.maxOps; i++) {
        msg[0] = i & 0xff;
        const t0 = performance.now();
        await writeAll(c, msg);
        await readExactly(c, back);
        const t1 = performance.now();
        times.push(t1 - t0);
        if (back[0] !== msg[0]) throw new Error(`round trip ${i}: echo out of order`);
        if (t1 >= deadline) break;
      }
      await finishEcho(c);
      return times;
    });
  } finally {
    closeQuietly(conn);
  }
}

/**
 * `conns` connections, each doing back-to-back round trips of a 32-byte message (one outstanding
 * per connection), until `bound` is reached in total. Connections are set up before the clock.
 */
export async function parallelRoundTrips(
  port: number,
  conns: number,
  bound: Bound,
): Promise<Rate> {
  const open = await Promise.all(Array.from({ length: conns }, () => openEcho(port)));
  let done = 0;
  try {
    const t0 = performance.now();
    const deadline = t0 + bound.maxMs;
    await Promise.all(
      open.map((conn, w) =>
        bounded(
          conn,
          bound.maxMs + HARD_STOP_GRACE_MS,
          `round trips (connection ${w})`,
          async (c) => {
            const msg = payload(MESSAGE_BYTES);
            const back = new Uint8Array(MESSAGE_BYTES);
            while (done < bound.maxOps && performance.now() < deadline) {
              await writeAll(c, msg);
              await readExactly(c, back);
              done++;
            }
          },
        )
      ),
    );
    const seconds = (performance.now() - t0) / 1000;
    await Promise.all(open.map((c) => finishEcho(c).catch(() => {})));
    return { ops: done, seconds };
  } finally {
    for (const c of open) closeQuietly(c);
  }
}

/**
 * `workers` loops, each opening a connection, making one 1-byte echo round trip and closing it,
 * until `bound` is reached in total.
 */
export async function connectionRate(port: number, workers: number, bound: Bound): Promise<Rate> {
  let done = 0;
  const t0 = performance.now();
  const deadline = t0 + bound.maxMs;
  await Promise.all(Array.from({ length: workers }, async () => {
    while (done < bound.maxOps && performance.now() < deadline) {
      const conn = await openEcho(port);
      closeQuietly(conn);
      done++;
    }
  }));
  return { ops: done, seconds: (performance.now() - t0) / 1000 };
}

/** `count` sequential connections, each timed from connect to its first byte echoed; in ms. */
export async function connectionSetups(port: number, count: number): Promise<number[]> {
  const times = new Array<number>(count);
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    closeQuietly(await openEcho(port));
    times[i] = performance.now() - t0;
  }
  return times;
}

/**
 * Sends `total` bytes as `chunk`-sized writes with one outstanding at a time: each waits for the
 * service's acknowledgement, as `adb push`/`adb shell` wait for OKAY. Returns the time in ms
 * from the first chunk to the last acknowledgement (the connection is up before the clock).
 */
export async function ackedTransfer(
  port: number,
  total: number,
  chunk: number,
  limitMs: number,
): Promise<number> {
  const conn = await connectTcp(port);
  try {
    return await bounded(conn, limitMs, "acknowledged transfer", async (c) => {
      const header = new Uint8Array(5);
      header[0] = MODE.ack;
      new DataView(header.buffer).setUint32(1, chunk);
      await writeAll(c, header);
      const ack = new Uint8Array(ACK_BYTES);
      await readExactly(c, ack);
      const data = payload(chunk);
      const t0 = performance.now();
      for (let sent = 0; sent < total; sent += chunk) {
        await writeAll(c, data);
        await readExactly(c, ack);
      }
      const ms = performance.now() - t0;
      await finishEcho(c);
      return ms;
    });
  } finally {
    closeQuietly(conn);
  }
}

/** Failed connections after which {@link openIdle} stops trying. */
const MAX_IDLE_FAILURES = 10;

/** Connections opened and held open by {@link openIdle}. */
export interface IdleConns {
  readonly conns: Deno.TcpConn[];
  /** Connections that failed to open, and the first error. */
  readonly failed: number;
  readonly firstError: string | null;
}

/**
 * Opens up to `n` echo connections (`concurrency` at a time), each making one round trip, and
 * keeps them open. Stops opening after `limitMs`.
 */
export async function openIdle(
  port: number,
  n: number,
  concurrency: number,
  limitMs: number,
): Promise<IdleConns> {
  const conns: Deno.TcpConn[] = [];
  let next = 0;
  let failed = 0;
  let firstError: string | null = null;
  const deadline = performance.now() + limitMs;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    // A refusing tunnel would fail thousands of times: a few failures end the loop.
    while (next < n && failed <= MAX_IDLE_FAILURES && performance.now() < deadline) {
      next++;
      try {
        conns.push(await openEcho(port));
      } catch (e) {
        failed++;
        firstError ??= (e as Error).message;
      }
    }
  }));
  return { conns, failed, firstError };
}

/** One 1-byte round trip on each connection (`concurrency` at a time); returns the failures. */
export async function echoEach(
  conns: readonly Deno.TcpConn[],
  concurrency: number,
): Promise<number> {
  let next = 0;
  let failed = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    const back = new Uint8Array(1);
    while (next < conns.length) {
      const conn = conns[next++]!;
      try {
        await bounded(conn, CONNECT_MS, "an idle connection's round trip", async (c) => {
          await writeAll(c, new Uint8Array([0x17]));
          await readExactly(c, back);
          if (back[0] !== 0x17) throw new Error("wrong byte echoed");
        });
      } catch {
        failed++;
      }
    }
  }));
  return failed;
}

export function percentiles(ms: readonly number[]): Percentiles {
  const s = [...ms].sort((a, b) => a - b);
  const at = (p: number) => s[Math.max(0, Math.ceil(p * s.length) - 1)] ?? NaN;
  return {
    p50: at(0.5),
    p99: at(0.99),
    mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length),
    max: s[s.length - 1] ?? NaN,
  };
}
