// Per-tunnel hourly usage counted in memory on the hot path and flushed to the store in batches.
import { hourStart, monthStart } from "../../shared/units.ts";
import type { Store, UsageRow } from "../store/store.ts";

type MutableRow = { -readonly [K in keyof UsageRow]: UsageRow[K] };

/** Byte counters of one stream (see `UsageMeter.meter`). */
export interface StreamMeter {
  /** Bytes from the public user towards the client. */
  bytesIn(n: number): void;
  /** Bytes from the client to the public user. */
  bytesOut(n: number): void;
}

/** Counts bytes, connections and errors per (user, tunnel, hour); `flush()` writes them out. */
export class UsageMeter {
  readonly #store: Store;
  readonly #now: () => number;
  #pending = new Map<string, MutableRow>();
  /** Bytes of the current month already in the store, per user (refreshed on flush). */
  readonly #stored = new Map<number, { month: number; bytes: number }>();
  /** Bytes since server start, per user, for /metrics. */
  readonly totals = new Map<number, { name: string; bytesIn: number; bytesOut: number }>();
  #flushing: Promise<void> | null = null;

  constructor(store: Store, now: () => number = Date.now) {
    this.#store = store;
    this.#now = now;
  }

  #row(userId: number, tunnel: string): MutableRow {
    const hour = hourStart(this.#now());
    const key = `${userId}\0${tunnel}\0${hour}`;
    let row = this.#pending.get(key);
    if (!row) {
      row = { userId, tunnel, hour, bytesIn: 0, bytesOut: 0, connections: 0, errors: 0 };
      this.#pending.set(key, row);
    }
    return row;
  }

  #total(userId: number, userName: string) {
    let t = this.totals.get(userId);
    if (!t) {
      t = { name: userName, bytesIn: 0, bytesOut: 0 };
      this.totals.set(userId, t);
    }
    return t;
  }

  /** Bytes from the public user towards the client. */
  bytesIn(userId: number, userName: string, tunnel: string, n: number): void {
    this.#row(userId, tunnel).bytesIn += n;
    this.#total(userId, userName).bytesIn += n;
  }

  /** Bytes from the client to the public user. */
  bytesOut(userId: number, userName: string, tunnel: string, n: number): void {
    this.#row(userId, tunnel).bytesOut += n;
    this.#total(userId, userName).bytesOut += n;
  }

  /**
   * Byte counters for one stream, for the per-chunk path: the hourly row is looked up again only
   * when the hour turns or a flush has taken the rows, not on every chunk.
   */
  meter(userId: number, userName: string, tunnel: string): StreamMeter {
    const total = this.#total(userId, userName);
    let row: MutableRow | null = null;
    let rows = this.#pending;
    let hourEnd = 0;
    const current = (): MutableRow => {
      if (row === null || rows !== this.#pending || this.#now() >= hourEnd) {
        row = this.#row(userId, tunnel);
        rows = this.#pending;
        hourEnd = row.hour + 3_600_000;
      }
      return row;
    };
    return {
      bytesIn(n) {
        current().bytesIn += n;
        total.bytesIn += n;
      },
      bytesOut(n) {
        current().bytesOut += n;
        total.bytesOut += n;
      },
    };
  }

  /** A user connection was opened on the tunnel. */
  connection(userId: number, tunnel: string): void {
    this.#row(userId, tunnel).connections++;
  }

  /** A stream of the tunnel failed. */
  error(userId: number, tunnel: string): void {
    this.#row(userId, tunnel).errors++;
  }

  /** Bytes the user moved this month: stored plus not yet flushed. */
  async monthBytes(userId: number): Promise<number> {
    const month = monthStart(this.#now());
    let stored = this.#stored.get(userId);
    if (!stored || stored.month !== month) {
      stored = { month, bytes: await this.#store.bytesSince(userId, month) };
      this.#stored.set(userId, stored);
    }
    let pending = 0;
    for (const r of this.#pending.values()) {
      if (r.userId === userId && r.hour >= month) pending += r.bytesIn + r.bytesOut;
    }
    return stored.bytes + pending;
  }

  /**
   * Bytes this month as far as known without a store round trip (stored part as of the last
   * `monthBytes()` or flush); for the per-connection quota check on the hot path.
   */
  monthBytesCached(userId: number): number {
    const month = monthStart(this.#now());
    const stored = this.#stored.get(userId);
    let bytes = stored && stored.month === month ? stored.bytes : 0;
    for (const r of this.#pending.values()) {
      if (r.userId === userId && r.hour >= month) bytes += r.bytesIn + r.bytesOut;
    }
    return bytes;
  }

  /** Writes pending counters to the store; on failure they are kept for the next flush. */
  flush(): Promise<void> {
    this.#flushing ??= (async () => {
      const rows = [...this.#pending.values()].filter((r) =>
        r.bytesIn || r.bytesOut || r.connections || r.errors
      );
      this.#pending = new Map();
      if (rows.length === 0) return;
      try {
        await this.#store.addUsage(rows);
        const month = monthStart(this.#now());
        for (const r of rows) {
          const s = this.#stored.get(r.userId);
          if (s && s.month === month && r.hour >= month) s.bytes += r.bytesIn + r.bytesOut;
        }
      } catch (e) {
        // Put the rows back (adding to anything counted meanwhile) so nothing is lost.
        for (const r of rows) {
          const cur = this.#row(r.userId, r.tunnel);
          if (cur.hour === r.hour) {
            cur.bytesIn += r.bytesIn;
            cur.bytesOut += r.bytesOut;
            cur.connections += r.connections;
            cur.errors += r.errors;
          } else {
            this.#pending.set(`${r.userId}\0${r.tunnel}\0${r.hour}`, { ...r });
          }
        }
        throw e;
      }
    })().finally(() => {
      this.#flushing = null;
    });
    return this.#flushing;
  }
}
