// The VPN benchmark's TCP echo, run inside a namespace: `serve HOST:PORT` echoes every byte;
// `rtt HOST:PORT COUNT` times COUNT 1-byte round trips on one connection and prints JSON.

/** What `rtt` prints on its last line. */
export interface RttResult {
  readonly count: number;
  readonly p50Us: number;
  readonly p99Us: number;
}

/** Warm-up round trips before the timed ones (ARP, slow start, JIT). */
const WARMUP = 50;

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[i]!;
}

function hostPort(text: string): { hostname: string; port: number } {
  const m = /^([\d.]+):(\d+)$/.exec(text);
  if (!m) throw new TypeError(`expected IPv4:PORT, not "${text}"`);
  return { hostname: m[1]!, port: Number(m[2]) };
}

async function serve(addr: string): Promise<void> {
  const listener = Deno.listen(hostPort(addr));
  console.log(`echo on ${addr}`);
  for await (const conn of listener) {
    conn.setNoDelay(true);
    (async () => {
      const buf = new Uint8Array(64 * 1024);
      try {
        while (true) {
          const n = await conn.read(buf);
          if (n === null) break;
          let off = 0;
          while (off < n) off += await conn.write(buf.subarray(off, n));
        }
      } catch {
        // a reset ends this connection only
      } finally {
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
    })();
  }
}

async function rtt(addr: string, count: number): Promise<RttResult> {
  const conn = await Deno.connect(hostPort(addr));
  conn.setNoDelay(true);
  const one = new Uint8Array([42]);
  const buf = new Uint8Array(16);
  const samples: number[] = [];
  try {
    for (let i = 0; i < WARMUP + count; i++) {
      const t0 = performance.now();
      await conn.write(one);
      const n = await conn.read(buf);
      if (n === null) throw new Error("the echo service closed the connection");
      if (i >= WARMUP) samples.push((performance.now() - t0) * 1000);
    }
  } finally {
    conn.close();
  }
  samples.sort((a, b) => a - b);
  return { count, p50Us: percentile(samples, 0.5), p99Us: percentile(samples, 0.99) };
}

if (import.meta.main) {
  const [mode, addr, count] = Deno.args;
  if (mode === "serve" && addr) await serve(addr);
  else if (mode === "rtt" && addr && Number(count) > 0) {
    console.log(JSON.stringify(await rtt(addr, Number(count))));
  } else {
    console.error("usage: bench_vpn_probe.ts serve IP:PORT | rtt IP:PORT COUNT");
    Deno.exit(2);
  }
}
