// Constant-time secret comparison and the per-IP limit on failed authentication attempts.
import { createHash, timingSafeEqual } from "node:crypto";

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/** Compares two strings in constant time (for session secrets). */
export function secretsEqual(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), sha256(b));
}

/** Counts failed authentications per IP in a sliding minute and blocks noisy addresses. */
export class AuthLimiter {
  readonly #failures = new Map<string, number[]>();
  readonly #blockedUntil = new Map<string, number>();
  readonly #perMinute: number;
  readonly #blockMs: number;
  readonly #now: () => number;
  /** Upper bound on tracked addresses, so a spray of addresses cannot grow memory. */
  static readonly MAX_TRACKED = 10_000;

  constructor(perMinute: number, blockMs: number, now: () => number = Date.now) {
    this.#perMinute = perMinute;
    this.#blockMs = blockMs;
    this.#now = now;
  }

  /** True while `ip` is blocked. */
  blocked(ip: string): boolean {
    const until = this.#blockedUntil.get(ip);
    if (until === undefined) return false;
    if (this.#now() < until) return true;
    this.#blockedUntil.delete(ip);
    return false;
  }

  /** Records a failure; returns true if this failure got `ip` blocked. */
  fail(ip: string): boolean {
    const now = this.#now();
    const recent = (this.#failures.get(ip) ?? []).filter((t) => now - t < 60_000);
    recent.push(now);
    this.#failures.delete(ip);
    this.#failures.set(ip, recent);
    if (this.#failures.size > AuthLimiter.MAX_TRACKED) {
      const oldest = this.#failures.keys().next().value;
      if (oldest !== undefined) this.#failures.delete(oldest);
    }
    if (recent.length >= this.#perMinute) {
      this.#failures.delete(ip);
      this.#blockedUntil.set(ip, now + this.#blockMs);
      if (this.#blockedUntil.size > AuthLimiter.MAX_TRACKED) {
        const oldest = this.#blockedUntil.keys().next().value;
        if (oldest !== undefined) this.#blockedUntil.delete(oldest);
      }
      return true;
    }
    return false;
  }
}
