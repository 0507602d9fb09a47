// Constant-time secret comparison, the limit on failed authentication attempts and their audit.
import { createHash, timingSafeEqual } from "node:crypto";

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/** Compares two strings in constant time (for session secrets). */
export function secretsEqual(a: string, b: string): boolean {
  return timingSafeEqual(sha256(a), sha256(b));
}

/** The sliding window failures are counted in. */
const WINDOW_MS = 60_000;

/** Characters of a presented credential that tell its failures apart from other credentials'. */
const CREDENTIAL_KEY_CHARS = 8;

/** An address is blocked outright after this many times the per-credential limit of failures. */
export const ADDRESS_CEILING_FACTOR = 5;

/**
 * The part of a presented credential that failures are keyed by: its first characters (a token's
 * or a session id's), or "none" when there was none. Kept only in memory, never logged.
 */
export function credentialKey(credential: string | null): string {
  return credential ? credential.slice(0, CREDENTIAL_KEY_CHARS) : "none";
}

/** The body of the 429 answer: what happened and how long to wait (whole minutes, rounded up). */
export function blockMessage(remainingMs: number): string {
  const minutes = Math.max(1, Math.ceil(remainingMs / 60_000));
  return "too many failed authentication attempts from this address; " +
    `try again in ${minutes} minute${minutes === 1 ? "" : "s"}`;
}

/** What a failure led to: nothing yet, a block of that credential, or of the whole address. */
export type FailureOutcome = "counted" | "credential_blocked" | "address_blocked";

/** Map with a bounded number of keys: inserting past the bound drops the least recently set. */
function setBounded<V>(map: Map<string, V>, key: string, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > max) {
    const oldest = map.keys().next().value;
    if (oldest !== undefined) map.delete(oldest);
  }
}

/**
 * Counts failed authentications in a sliding minute and blocks what is noisy. Failures are keyed
 * by (address, first characters of the credential), so a user whose script retries a mistyped
 * token does not lock out the same address's clients that use the right one; an address that
 * fails with many different credentials (a spray) reaches a per-address ceiling and is blocked as
 * a whole. Only authentication is limited: a request with a valid session never asks.
 */
export class AuthLimiter {
  /** Recent failure times per (address, credential key); at most `perMinute` each. */
  readonly #byCredential = new Map<string, number[]>();
  /** Recent failure times per address; at most the ceiling each. */
  readonly #byAddress = new Map<string, number[]>();
  readonly #credentialBlocks = new Map<string, number>();
  readonly #addressBlocks = new Map<string, number>();
  readonly #perMinute: number;
  readonly #blockMs: number;
  readonly #now: () => number;
  /** Upper bound on tracked keys per map, so a spray of addresses cannot grow memory. */
  static readonly MAX_TRACKED = 10_000;

  /** `perMinute` failures with one credential (`--auth-failures-per-minute`) block it. */
  constructor(perMinute: number, blockMs: number, now: () => number = Date.now) {
    this.#perMinute = perMinute;
    this.#blockMs = blockMs;
    this.#now = now;
  }

  /** Failures within a minute from one address, over all credentials, that block the address. */
  get addressCeiling(): number {
    return this.#perMinute * ADDRESS_CEILING_FACTOR;
  }

  /** How long the block lasts. */
  get blockMs(): number {
    return this.#blockMs;
  }

  /** Milliseconds `ip` must still wait before presenting `credential`; 0 when it may now. */
  blockedFor(ip: string, credential: string | null): number {
    return Math.max(
      this.#remaining(this.#addressBlocks, ip),
      this.#remaining(this.#credentialBlocks, `${ip} ${credentialKey(credential)}`),
    );
  }

  /** Records a failure of `credential` from `ip` and says whether it started a block. */
  fail(ip: string, credential: string | null): FailureOutcome {
    const now = this.#now();
    const key = `${ip} ${credentialKey(credential)}`;
    const credentialFull = this.#count(this.#byCredential, key, this.#perMinute, now);
    const addressFull = this.#count(this.#byAddress, ip, this.addressCeiling, now);
    if (addressFull) {
      this.#byAddress.delete(ip);
      setBounded(this.#addressBlocks, ip, now + this.#blockMs, AuthLimiter.MAX_TRACKED);
      return "address_blocked";
    }
    if (credentialFull) {
      this.#byCredential.delete(key);
      setBounded(this.#credentialBlocks, key, now + this.#blockMs, AuthLimiter.MAX_TRACKED);
      return "credential_blocked";
    }
    return "counted";
  }

  #remaining(blocks: Map<string, number>, key: string): number {
    const until = blocks.get(key);
    if (until === undefined) return 0;
    const left = until - this.#now();
    if (left > 0) return left;
    blocks.delete(key);
    return 0;
  }

  /** Adds a failure at `now`; true when `limit` of them fall within the window. */
  #count(map: Map<string, number[]>, key: string, limit: number, now: number): boolean {
    const recent = (map.get(key) ?? []).filter((t) => now - t < WINDOW_MS);
    recent.push(now);
    // Only the newest `limit` times can decide anything: keep no more.
    if (recent.length > limit) recent.splice(0, recent.length - limit);
    setBounded(map, key, recent, AuthLimiter.MAX_TRACKED);
    return recent.length >= limit;
  }
}

/** One aggregated `auth_failed` audit row. */
export interface AuthFailureRow {
  /** Time of the first failure the row counts. */
  readonly at: number;
  readonly detail: {
    /** The client address, or null for the row that counts addresses beyond the bound. */
    readonly address: string | null;
    readonly count: number;
    /** How many failures had each reason. */
    readonly reasons: Record<string, number>;
  };
}

interface Tally {
  first: number;
  count: number;
  reasons: Map<string, number>;
}

/**
 * Turns failed authentications into at most one `auth_failed` audit row per address per minute
 * (calendar minute of the clock), each with a count, so that a flood of bad tokens costs a row a
 * minute instead of a row a request. Rows of a minute are written when the minute is over (the
 * next failure or `flush()` notices) and at shutdown (`flush(true)`).
 */
export class AuthFailureAudit {
  /** Addresses tallied per minute; failures from further addresses share one row. */
  static readonly MAX_ADDRESSES = 10_000;
  /** Distinct reasons kept per row; further ones are counted together as "other". */
  static readonly MAX_REASONS = 8;
  readonly #write: (row: AuthFailureRow) => Promise<void> | void;
  readonly #now: () => number;
  #minute = Number.NaN;
  #tallies = new Map<string, Tally>();
  #overflow: Tally | null = null;
  readonly #writing = new Set<Promise<void>>();

  constructor(write: (row: AuthFailureRow) => Promise<void> | void, now: () => number = Date.now) {
    this.#write = write;
    this.#now = now;
  }

  /** Counts one failure from `ip` with `reason` (a server-chosen text, not the peer's). */
  record(ip: string, reason: string): void {
    const now = this.#now();
    const minute = Math.floor(now / 60_000);
    if (minute !== this.#minute) {
      this.#emit();
      this.#minute = minute;
    }
    let tally = this.#tallies.get(ip);
    if (tally === undefined) {
      if (this.#tallies.size < AuthFailureAudit.MAX_ADDRESSES) {
        tally = { first: now, count: 0, reasons: new Map() };
        this.#tallies.set(ip, tally);
      } else {
        tally = this.#overflow ??= { first: now, count: 0, reasons: new Map() };
      }
    }
    tally.count++;
    const key = tally.reasons.has(reason) || tally.reasons.size < AuthFailureAudit.MAX_REASONS
      ? reason
      : "other";
    tally.reasons.set(key, (tally.reasons.get(key) ?? 0) + 1);
  }

  /**
   * Writes the rows of a minute that is over, or every row when `all` (at shutdown); resolves
   * when every row written so far is stored.
   */
  async flush(all = false): Promise<void> {
    if (all || Math.floor(this.#now() / 60_000) !== this.#minute) this.#emit();
    await Promise.all([...this.#writing]);
  }

  #emit(): void {
    const rows: AuthFailureRow[] = [];
    const row = (address: string | null, t: Tally): AuthFailureRow => ({
      at: t.first,
      detail: { address, count: t.count, reasons: Object.fromEntries(t.reasons) },
    });
    for (const [ip, t] of this.#tallies) rows.push(row(ip, t));
    if (this.#overflow) rows.push(row(null, this.#overflow));
    this.#tallies = new Map();
    this.#overflow = null;
    for (const r of rows) {
      const p = Promise.resolve(this.#write(r)).catch(() => {});
      this.#writing.add(p);
      p.finally(() => this.#writing.delete(p));
    }
  }
}
