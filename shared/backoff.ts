// Exponential backoff with full jitter for reconnect loops.

/** Backoff settings; times in milliseconds. */
export interface BackoffOptions {
  readonly baseMs: number;
  readonly capMs: number;
  /** Source of randomness in [0, 1); injectable for tests. */
  readonly random?: () => number;
  /**
   * Shortest delay as a fraction of the ceiling (default 0, full jitter). 0.5 keeps a retry from
   * coming back at once, for a peer that refuses quickly.
   */
  readonly minFraction?: number;
}

/** Default reconnect backoff: first retry within 1 s, never more than 30 s apart. */
export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 1000, capMs: 30_000 };

/**
 * Exponential backoff with "full jitter" (AWS architecture blog): the n-th delay is uniform in
 * [0, min(cap, base * 2^n)) (from `minFraction` of it when set). `reset()` after a healthy
 * session starts over.
 */
export class Backoff {
  readonly #opts: BackoffOptions;
  #attempt = 0;
  constructor(opts: BackoffOptions = DEFAULT_BACKOFF) {
    if (!(opts.baseMs > 0) || !(opts.capMs >= opts.baseMs)) {
      throw new RangeError("backoff needs 0 < baseMs <= capMs");
    }
    this.#opts = opts;
  }
  /** Attempts since the last reset. */
  get attempt(): number {
    return this.#attempt;
  }
  /** The ceiling for the next delay. */
  ceiling(): number {
    return Math.min(this.#opts.capMs, this.#opts.baseMs * 2 ** Math.min(this.#attempt, 30));
  }
  /** Returns the next delay and advances. */
  next(): number {
    const ceiling = this.ceiling();
    this.#attempt++;
    const r = (this.#opts.random ?? Math.random)();
    const min = this.#opts.minFraction ?? 0;
    return Math.floor(ceiling * (min + r * (1 - min)));
  }
  /** Starts over from the base delay. */
  reset(): void {
    this.#attempt = 0;
  }
}
