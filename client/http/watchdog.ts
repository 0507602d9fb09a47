// Coarse timeouts for many waits at once: one interval instead of a timer per wait (a timer per
// request was a tenth of the client's CPU on small HTTP requests).

/** Default tick: timeouts fire up to this late. */
export const WATCHDOG_TICK_MS = 1_000;

/** Calls each armed function once its time is up, checked every tick. */
export class Watchdog {
  readonly #due = new Map<number, { readonly at: number; readonly fire: () => void }>();
  readonly #now: () => number;
  readonly #tickMs: number;
  #next = 1;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(tickMs = WATCHDOG_TICK_MS, now: () => number = Date.now) {
    this.#tickMs = tickMs;
    this.#now = now;
  }

  /** Calls `fire` about `ms` from now unless the returned function is called first. */
  arm(ms: number, fire: () => void): () => void {
    const id = this.#next++;
    this.#due.set(id, { at: this.#now() + ms, fire });
    this.#timer ??= setInterval(() => this.tick(), this.#tickMs);
    return () => {
      this.#due.delete(id);
    };
  }

  /** Fires what is due (the interval calls it; tests may too). */
  tick(): void {
    const now = this.#now();
    for (const [id, e] of this.#due) {
      if (e.at > now) continue;
      this.#due.delete(id);
      try {
        e.fire();
      } catch {
        // a failing callback must not stop the others
      }
    }
    if (this.#due.size === 0) this.#stop();
  }

  /** Stops the interval; armed functions are dropped. */
  close(): void {
    this.#due.clear();
    this.#stop();
  }

  #stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
