// HTTP part of the benchmark: a keep-alive load generator and the measurements on one path.
import { type Bound, percentiles } from "./bench_load.ts";
import { BIG_BYTES, HTTP_PATHS } from "./bench_http_service.ts";
import type { Metrics } from "./bench_report.ts";

const MiB = 1024 * 1024;
/** Longest a response head may be before the load generator gives up. */
const MAX_HEAD_BYTES = 16 * 1024;
/** Grace past a loop's own time bound before its connections are closed under it. */
const HARD_STOP_GRACE_MS = 30_000;

/** Sizes and bounds of the HTTP measurements in one run. */
export interface HttpPlan {
  /** 13-byte responses, one request at a time on one connection. */
  readonly small1: Bound;
  /** 13-byte responses on {@link HTTP_CONCURRENCY} connections. */
  readonly small10: Bound;
  /** 1 MiB responses, one at a time on one connection. */
  readonly big: Bound;
}

/** Keep-alive connections at a time in the concurrent test. */
export const HTTP_CONCURRENCY = 10;

/** Requests per path before measuring (JIT, pools, first streams). */
const WARMUP = { small: 500, big: 10 } as const;

/**
 * One keep-alive HTTP/1.1 connection sending `GET path` with a fixed Host, one request at a time.
 * It reads only Content-Length bodies (all the benchmark service sends) and parses as little as
 * it can, so that it costs the machine little next to the paths it measures.
 */
class KeepAliveConn {
  readonly #conn: Deno.TcpConn;
  readonly #buf = new Uint8Array(256 * 1024);
  #start = 0;
  #end = 0;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
  }

  static async open(port: number): Promise<KeepAliveConn> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    conn.setNoDelay(true);
    return new KeepAliveConn(conn);
  }

  /** Sends `request` and reads the whole response; returns its body's length. */
  async get(request: Uint8Array): Promise<number> {
    let off = 0;
    while (off < request.byteLength) off += await this.#conn.write(request.subarray(off));
    const headEnd = await this.#headEnd();
    const head = String.fromCharCode(...this.#buf.subarray(this.#start, headEnd));
    this.#start = headEnd + 4;
    const status = Number(head.slice(9, 12));
    if (status !== 200) throw new Error(`HTTP ${status}: ${head.split("\r\n")[0]}`);
    const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    if (!m) throw new Error(`response without Content-Length:\n${head}`);
    const length = Number(m[1]);
    let left = length;
    for (;;) {
      const have = Math.min(left, this.#end - this.#start);
      this.#start += have;
      left -= have;
      if (this.#start === this.#end) this.#start = this.#end = 0;
      if (left === 0) return length;
      await this.#fill();
    }
  }

  close(): void {
    try {
      this.#conn.close();
    } catch {
      // closed
    }
  }

  /** Index of the `\r\n\r\n` ending the head, reading more until it is there. */
  async #headEnd(): Promise<number> {
    let from = this.#start;
    for (;;) {
      const b = this.#buf;
      for (let i = from; i + 3 < this.#end; i++) {
        if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
      }
      if (this.#end - this.#start > MAX_HEAD_BYTES) throw new Error("response head too large");
      from = Math.max(this.#start, this.#end - 3);
      await this.#fill();
    }
  }

  /** Reads more bytes after those held (moved to the front first when the buffer is full). */
  async #fill(): Promise<void> {
    if (this.#end === this.#buf.byteLength) {
      this.#buf.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    const n = await this.#conn.read(this.#buf.subarray(this.#end));
    if (n === null) throw new Error("the server closed the connection mid-response");
    this.#end += n;
  }
}

function requestBytes(path: string, host: string): Uint8Array {
  return new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
}

/**
 * `conns` keep-alive connections each sending requests one after another until `bound` is
 * reached; returns each request's latency (ms), the bytes of the bodies and the wall time.
 */
async function load(
  port: number,
  request: Uint8Array,
  conns: number,
  bound: Bound,
): Promise<{ times: number[]; bytes: number; seconds: number }> {
  const open = await Promise.all(Array.from({ length: conns }, () => KeepAliveConn.open(port)));
  const times: number[] = [];
  let bytes = 0;
  let started = 0;
  let failure: unknown = null;
  // A stuck response fails the run instead of hanging it.
  const hardStop = setTimeout(() => {
    failure ??= new Error(`HTTP load did not finish within ${bound.maxMs / 1000} s`);
    for (const c of open) c.close();
  }, bound.maxMs + HARD_STOP_GRACE_MS);
  const t0 = performance.now();
  const deadline = t0 + bound.maxMs;
  try {
    await Promise.all(
      open.map(async (c) => {
        while (failure === null && started < bound.maxOps) {
          const a = performance.now();
          if (a >= deadline) break;
          started++;
          bytes += await c.get(request);
          times.push(performance.now() - a);
        }
      }).map((p) => p.catch((e) => void (failure ??= e))),
    );
  } finally {
    clearTimeout(hardStop);
    for (const c of open) c.close();
  }
  if (failure !== null) throw failure;
  return { times, bytes, seconds: (performance.now() - t0) / 1000 };
}

/**
 * Measures one path: `port` is the local service itself (direct) or mport-server, reached with
 * `Host: host`. Returns the HTTP metrics of that path.
 */
export async function measureHttp(
  port: number,
  host: string,
  plan: HttpPlan,
): Promise<Metrics> {
  const small = requestBytes(HTTP_PATHS.small, host);
  const big = requestBytes(HTTP_PATHS.big, host);
  await load(port, small, 1, { maxOps: WARMUP.small, maxMs: 10_000 });
  await load(port, big, 1, { maxOps: WARMUP.big, maxMs: 10_000 });

  const one = await load(port, small, 1, plan.small1);
  const p1 = percentiles(one.times);
  const many = await load(port, small, HTTP_CONCURRENCY, plan.small10);
  const p10 = percentiles(many.times);
  const large = await load(port, big, 1, plan.big);
  if (large.bytes !== large.times.length * BIG_BYTES) {
    throw new Error(`1 MiB responses: ${large.bytes} bytes in ${large.times.length} responses`);
  }
  return {
    httpRps1: one.times.length / one.seconds,
    httpP50Us1: p1.p50 * 1000,
    httpP99Us1: p1.p99 * 1000,
    httpRps10: many.times.length / many.seconds,
    httpP50Us10: p10.p50 * 1000,
    httpP99Us10: p10.p99 * 1000,
    httpBigMiBps: large.bytes / MiB / large.seconds,
  };
}
