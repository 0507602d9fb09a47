// A Store decorator that gives every call a deadline, so a stalled database never stalls a caller.
import type { Store } from "./store.ts";

/** Default deadline of one store call (`--store-timeout`). */
export const STORE_TIMEOUT_MS = 5_000;

/** A store call did not finish within its deadline; it names the operation and the store. */
export class StoreTimeout extends Error {
  /** The Store method that timed out, e.g. `addUsage`. */
  readonly operation: string;
  readonly timeoutMs: number;

  constructor(operation: string, timeoutMs: number, description: string) {
    super(
      `store ${operation} did not finish within ${timeoutMs} ms (${description} stalled or ` +
        `unreachable; raise --store-timeout if the database is just slow)`,
    );
    this.name = "StoreTimeout";
    this.operation = operation;
    this.timeoutMs = timeoutMs;
  }
}

/**
 * Wraps `store` so that every method call rejects with a {@link StoreTimeout} once `timeoutMs`
 * have passed (the underlying call is abandoned, not cancelled: a late write may still land).
 * `close()` is bounded too, so a frozen database cannot keep the process from exiting.
 */
export function withDeadline(store: Store, timeoutMs: number = STORE_TIMEOUT_MS): Store {
  if (!(timeoutMs > 0)) throw new RangeError(`store timeout must be > 0 ms, got ${timeoutMs}`);
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(store, {
    get(target, key) {
      const value = Reflect.get(target, key, target);
      if (typeof value !== "function") return value;
      let f = wrapped.get(key);
      if (!f) {
        const name = String(key);
        f = (...args: unknown[]) =>
          race(
            () => (value as (...a: unknown[]) => Promise<unknown>).apply(target, args),
            name,
            timeoutMs,
            target.description,
          );
        wrapped.set(key, f);
      }
      return f;
    },
  });
}

function race(
  call: () => Promise<unknown>,
  operation: string,
  timeoutMs: number,
  description: string,
): Promise<unknown> {
  let p: Promise<unknown>;
  try {
    p = Promise.resolve(call());
  } catch (e) {
    return Promise.reject(e);
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new StoreTimeout(operation, timeoutMs, description)),
      timeoutMs,
    );
  });
  // A call abandoned by its deadline must not surface later as an unhandled rejection.
  p.catch(() => {});
  return Promise.race([p, expired]).finally(() => clearTimeout(timer));
}
