// Per-tunnel HTTP statistics: requests by status class, bytes and a latency histogram, as
// Prometheus text for /metrics.
import type { HttpExchange } from "./observer.ts";

/** Upper bounds (seconds) of the latency histogram's buckets. */
export const LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

interface TunnelHttp {
  readonly user: string;
  readonly tunnel: string;
  readonly host: string;
  /** Requests by status class ("2xx"…, "none" when the connection ended before a response). */
  readonly byClass: Map<string, number>;
  bytesIn: number;
  bytesOut: number;
  /** Counts per bucket (the last one is +Inf), and the sum of durations in seconds. */
  readonly buckets: number[];
  sumSeconds: number;
  count: number;
}

/** Most tunnels tracked at once; the oldest entries go first beyond it. */
const MAX_TRACKED = 10_000;

/** Collects exchanges per tunnel. */
export class HttpStats {
  readonly #tunnels = new Map<string, TunnelHttp>();

  /** Counts one exchange of `tunnel` (owner's user name, tunnel name, host). */
  record(user: string, tunnel: string, host: string, e: HttpExchange): void {
    const key = `${user}\0${tunnel}\0${host}`;
    let t = this.#tunnels.get(key);
    if (!t) {
      if (this.#tunnels.size >= MAX_TRACKED) {
        const oldest = this.#tunnels.keys().next().value;
        if (oldest !== undefined) this.#tunnels.delete(oldest);
      }
      t = {
        user,
        tunnel,
        host,
        byClass: new Map(),
        bytesIn: 0,
        bytesOut: 0,
        buckets: new Array(LATENCY_BUCKETS_S.length + 1).fill(0),
        sumSeconds: 0,
        count: 0,
      };
      this.#tunnels.set(key, t);
    }
    const cls = e.status === 0 ? "none" : `${Math.floor(e.status / 100)}xx`;
    t.byClass.set(cls, (t.byClass.get(cls) ?? 0) + 1);
    t.bytesIn += e.bytesIn;
    t.bytesOut += e.bytesOut;
    if (e.status !== 0 && !e.upgraded) {
      const s = e.durationMs / 1000;
      let i = LATENCY_BUCKETS_S.findIndex((b) => s <= b);
      if (i < 0) i = LATENCY_BUCKETS_S.length;
      t.buckets[i]!++;
      t.sumSeconds += s;
      t.count++;
    }
  }

  /** Prometheus text lines (with HELP and TYPE). */
  prometheus(): string[] {
    const all = [...this.#tunnels.values()];
    const labels = (t: TunnelHttp) =>
      `user="${esc(t.user)}",tunnel="${esc(t.tunnel)}",host="${esc(t.host)}"`;
    const out: string[] = [
      "# HELP mport_http_requests_total HTTP requests through tunnels, by status class.",
      "# TYPE mport_http_requests_total counter",
    ];
    for (const t of all) {
      for (const [cls, n] of [...t.byClass].sort()) {
        out.push(`mport_http_requests_total{${labels(t)},class="${cls}"} ${n}`);
      }
    }
    out.push(
      "# HELP mport_http_request_bytes_total Request bytes (heads and bodies) from visitors.",
      "# TYPE mport_http_request_bytes_total counter",
      ...all.map((t) => `mport_http_request_bytes_total{${labels(t)}} ${t.bytesIn}`),
      "# HELP mport_http_response_bytes_total Response bytes (heads and bodies) to visitors.",
      "# TYPE mport_http_response_bytes_total counter",
      ...all.map((t) => `mport_http_response_bytes_total{${labels(t)}} ${t.bytesOut}`),
      "# HELP mport_http_request_duration_seconds Time from a request's head to its response's end.",
      "# TYPE mport_http_request_duration_seconds histogram",
    );
    for (const t of all) {
      let cumulative = 0;
      LATENCY_BUCKETS_S.forEach((b, i) => {
        cumulative += t.buckets[i]!;
        out.push(
          `mport_http_request_duration_seconds_bucket{${labels(t)},le="${b}"} ${cumulative}`,
        );
      });
      cumulative += t.buckets[LATENCY_BUCKETS_S.length]!;
      out.push(
        `mport_http_request_duration_seconds_bucket{${labels(t)},le="+Inf"} ${cumulative}`,
        `mport_http_request_duration_seconds_sum{${labels(t)}} ${t.sumSeconds}`,
        `mport_http_request_duration_seconds_count{${labels(t)}} ${t.count}`,
      );
    }
    return out;
  }
}

function esc(v: string): string {
  return v.replace(/["\\\n]/g, "_");
}
