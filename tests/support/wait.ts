// Waiting in tests: deadlines on promises, conditions re-checked on events, a few event-loop turns.

/** Resolves like `p`, or rejects after `ms` naming `what`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Lets `n` macrotasks run (settles the ops of sockets that were just closed). */
export async function ticks(n = 3): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setTimeout(r, 0));
}

/**
 * A condition to wait on without polling: whoever changes the state calls `notify()`, and
 * `until()` re-checks its predicate then, failing after a deadline.
 */
export class Notifier {
  #waiters: (() => void)[] = [];

  /** Wakes every `until()` so it re-checks its condition. */
  notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Resolves once `check()` is true, re-checking at every `notify()`; rejects after `ms`. */
  async until(what: string, check: () => boolean, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: not within ${ms} ms`);
      const woken = new Promise<void>((r) => this.#waiters.push(r));
      await within(woken, left, what);
    }
  }
}
