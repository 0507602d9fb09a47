// Client token checks (constant time, hashed) and the per-IP limit on failed attempts.
import { createHash, timingSafeEqual } from "node:crypto";
import type { Secret } from "../shared/secret.ts";

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/** Who a token belongs to: the key tunnels are owned by. */
export interface Principal {
  /** Stable owner id derived from the token hash; never the token itself. */
  readonly owner: string;
}

/** Static tokens, kept only as SHA-256 hashes and compared in constant time. */
export class TokenAuth {
  readonly #hashes: Buffer[];
  constructor(tokens: readonly Secret[]) {
    this.#hashes = tokens.map((t) => sha256(t.reveal()));
  }
  /** Returns the principal for `token`, or null when it is not accepted. */
  check(token: string): Principal | null {
    const h = sha256(token);
    let found: Buffer | null = null;
    // Compare against every hash so the time does not depend on which one matched.
    for (const candidate of this.#hashes) {
      if (timingSafeEqual(candidate, h)) found = candidate;
    }
    return found ? { owner: "t" + found.subarray(0, 8).toString("hex") } : null;
  }
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
