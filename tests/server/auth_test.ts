// Tests for constant-time secret comparison, the failed-login limiter and its audit aggregation.
import assert from "node:assert/strict";
import {
  ADDRESS_CEILING_FACTOR,
  AuthFailureAudit,
  type AuthFailureRow,
  AuthLimiter,
  blockMessage,
  credentialKey,
  secretsEqual,
} from "../../server/auth.ts";

Deno.test("secretsEqual compares whole strings", () => {
  assert.ok(secretsEqual("session-secret", "session-secret"));
  assert.ok(!secretsEqual("session-secret", "session-secreT"));
  assert.ok(!secretsEqual("session-secret", "session-secret-and-more"));
  assert.ok(!secretsEqual("", "x"));
});

/** A clock the test moves by hand. */
function clock(start = 1_000_020_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

const BLOCK_MS = 5 * 60_000;
const TOKEN_A = "mp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const TOKEN_A_TYPO = "mp_AAAAAxAAAAAAAAAAAAAAAAAAAAAAAAAA";
const TOKEN_B = "mp_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

Deno.test("credentialKey is the first 8 characters, or none", () => {
  const cases: [string | null, string][] = [
    [TOKEN_A, "mp_AAAAA"],
    [TOKEN_A_TYPO, "mp_AAAAA"],
    ["short", "short"],
    ["sessionid.secret", "sessioni"],
    ["", "none"],
    [null, "none"],
  ];
  for (const [credential, key] of cases) assert.equal(credentialKey(credential), key);
});

Deno.test("blockMessage says how long in whole minutes, rounded up", () => {
  const cases: [number, string][] = [
    [5 * 60_000, "5 minutes"],
    [5 * 60_000 - 1, "5 minutes"],
    [4 * 60_000 + 1, "5 minutes"],
    [60_001, "2 minutes"],
    [60_000, "1 minute"],
    [1, "1 minute"],
    [0, "1 minute"],
  ];
  for (const [ms, wait] of cases) {
    assert.equal(
      blockMessage(ms),
      `too many failed authentication attempts from this address; try again in ${wait}`,
    );
  }
});

/** One failure: from an address, with a credential, after `after` ms; what it should cause. */
interface Step {
  readonly ip: string;
  readonly credential: string | null;
  readonly after?: number;
  readonly want?: "counted" | "credential_blocked" | "address_blocked";
}

/** A check after the steps: how long (ip, credential) must wait (0: not blocked). */
interface Check {
  readonly ip: string;
  readonly credential: string | null;
  readonly waitMs: number;
}

const IP = "203.0.113.7";
const OTHER_IP = "198.51.100.1";
const repeat = (n: number, s: Step): Step[] => Array.from({ length: n }, () => s);

const LIMITER_CASES: {
  name: string;
  perMinute: number;
  steps: Step[];
  checks: Check[];
}[] = [
  {
    name: "N failures with one token block that token from that address only",
    perMinute: 3,
    steps: [
      { ip: IP, credential: TOKEN_A, want: "counted" },
      { ip: IP, credential: TOKEN_A, after: 10_000, want: "counted" },
      { ip: IP, credential: TOKEN_A_TYPO, after: 10_000, want: "credential_blocked" },
    ],
    checks: [
      { ip: IP, credential: TOKEN_A, waitMs: BLOCK_MS },
      { ip: IP, credential: TOKEN_A_TYPO, waitMs: BLOCK_MS },
      { ip: IP, credential: TOKEN_B, waitMs: 0 },
      { ip: IP, credential: null, waitMs: 0 },
      { ip: OTHER_IP, credential: TOKEN_A, waitMs: 0 },
    ],
  },
  {
    name: "requests without a token are their own key",
    perMinute: 2,
    steps: [
      { ip: IP, credential: null, want: "counted" },
      { ip: IP, credential: "", want: "credential_blocked" },
    ],
    checks: [
      { ip: IP, credential: null, waitMs: BLOCK_MS },
      { ip: IP, credential: TOKEN_A, waitMs: 0 },
    ],
  },
  {
    name: "failures older than a minute are forgotten",
    perMinute: 3,
    steps: [
      { ip: IP, credential: TOKEN_A, want: "counted" },
      { ip: IP, credential: TOKEN_A, after: 30_000, want: "counted" },
      // The first failure is now more than a minute old: two in the window, not three.
      { ip: IP, credential: TOKEN_A, after: 30_001, want: "counted" },
      { ip: IP, credential: TOKEN_A, want: "credential_blocked" },
    ],
    checks: [{ ip: IP, credential: TOKEN_A, waitMs: BLOCK_MS }],
  },
  {
    name: "a spray of different tokens from one address reaches the ceiling and blocks it",
    perMinute: 2,
    steps: [
      // 2 × 5 = 10 failures, each with a token of its own: no single token reaches 2.
      ...Array.from({ length: 2 * ADDRESS_CEILING_FACTOR - 1 }, (_, i): Step => ({
        ip: IP,
        credential: `spray-${String(i).padStart(2, "0")}-token`,
        want: "counted",
      })),
      { ip: IP, credential: "spray-99-token", after: 1_000, want: "address_blocked" },
    ],
    checks: [
      { ip: IP, credential: TOKEN_A, waitMs: BLOCK_MS },
      { ip: IP, credential: null, waitMs: BLOCK_MS },
      { ip: OTHER_IP, credential: TOKEN_A, waitMs: 0 },
    ],
  },
  {
    name: "the ceiling counts blocked tokens' failures too",
    perMinute: 3,
    steps: [
      ...repeat(2, { ip: IP, credential: "aaaaaaaa-1", want: "counted" }),
      { ip: IP, credential: "aaaaaaaa-1", want: "credential_blocked" },
      ...repeat(2, { ip: IP, credential: "bbbbbbbb-1", want: "counted" }),
      { ip: IP, credential: "bbbbbbbb-1", want: "credential_blocked" },
      ...Array.from({ length: 8 }, (_, i): Step => ({
        ip: IP,
        credential: `c${i}cccccc`,
        want: "counted",
      })),
      { ip: IP, credential: "dddddddd", want: "address_blocked" },
    ],
    checks: [{ ip: IP, credential: TOKEN_A, waitMs: BLOCK_MS }],
  },
];

for (const c of LIMITER_CASES) {
  Deno.test(`auth limiter: ${c.name}`, () => {
    const t = clock();
    const limiter = new AuthLimiter(c.perMinute, BLOCK_MS, t.now);
    assert.equal(limiter.addressCeiling, c.perMinute * ADDRESS_CEILING_FACTOR);
    c.steps.forEach((s, i) => {
      t.advance(s.after ?? 0);
      const got = limiter.fail(s.ip, s.credential);
      if (s.want) assert.equal(got, s.want, `step ${i}`);
    });
    for (const k of c.checks) {
      assert.equal(limiter.blockedFor(k.ip, k.credential), k.waitMs, `${k.ip} ${k.credential}`);
    }
  });
}

Deno.test("auth limiter unblocks when the block time is over, counting down meanwhile", () => {
  const c = clock();
  const limiter = new AuthLimiter(2, BLOCK_MS, c.now);
  limiter.fail("::1", TOKEN_A);
  assert.equal(limiter.fail("::1", TOKEN_A), "credential_blocked");
  c.advance(BLOCK_MS - 60_000);
  assert.equal(limiter.blockedFor("::1", TOKEN_A), 60_000);
  c.advance(59_999);
  assert.equal(limiter.blockedFor("::1", TOKEN_A), 1);
  c.advance(1);
  assert.equal(limiter.blockedFor("::1", TOKEN_A), 0);
  // A fresh start: one failure does not block again.
  assert.equal(limiter.fail("::1", TOKEN_A), "counted");
  assert.equal(limiter.blockedFor("::1", TOKEN_A), 0);
});

Deno.test("auth limiter tracks a bounded number of keys, dropping the oldest", () => {
  const c = clock();
  const limiter = new AuthLimiter(1, 60_000, c.now);
  const n = AuthLimiter.MAX_TRACKED + 1;
  const ip = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
  for (let i = 0; i < n; i++) limiter.fail(ip(i), TOKEN_A);
  assert.equal(limiter.blockedFor(ip(0), TOKEN_A), 0, "the oldest block was dropped");
  assert.equal(limiter.blockedFor(ip(1), TOKEN_A), 60_000);
  assert.equal(limiter.blockedFor(ip(n - 1), TOKEN_A), 60_000);
});

/** An audit aggregator over a hand-moved clock, collecting what it writes. */
function audit(start = 1_000_020_000) {
  const c = clock(start);
  const rows: AuthFailureRow[] = [];
  const a = new AuthFailureAudit((row) => {
    rows.push(row);
  }, c.now);
  return { c, rows, a };
}

const WRONG = "the server rejected the token (wrong or revoked): check --token / MPORT_TOKEN";

Deno.test("auth_failed audit: one row per address per minute, with a count and reasons", async () => {
  // 20 s into a minute.
  const { c, rows, a } = audit(17 * 60_000 + 20_000);
  const first = c.now();
  for (let i = 0; i < 500; i++) a.record(IP, i % 100 === 0 ? "no token" : WRONG);
  c.advance(1_000);
  a.record(OTHER_IP, WRONG);
  // Nothing yet: the minute is not over.
  await a.flush();
  assert.equal(rows.length, 0);
  c.advance(39_000); // the next minute begins
  await a.flush();
  assert.deepEqual(rows, [
    { at: first, detail: { address: IP, count: 500, reasons: { "no token": 5, [WRONG]: 495 } } },
    { at: first + 1_000, detail: { address: OTHER_IP, count: 1, reasons: { [WRONG]: 1 } } },
  ]);
  // A flush with nothing new writes nothing.
  await a.flush();
  assert.equal(rows.length, 2);
});

Deno.test("auth_failed audit: a failure in a new minute writes the previous minute's rows", () => {
  const { c, rows, a } = audit(17 * 60_000);
  a.record(IP, WRONG);
  a.record(IP, WRONG);
  c.advance(60_000);
  a.record(IP, WRONG);
  assert.deepEqual(rows.map((r) => [r.at, r.detail.count]), [[17 * 60_000, 2]]);
});

Deno.test("auth_failed audit: shutdown writes the current minute", async () => {
  const { c, rows, a } = audit(17 * 60_000);
  a.record(IP, WRONG);
  c.advance(1);
  await a.flush(true);
  assert.equal(rows.length, 1);
  assert.equal(rows[0]!.detail.count, 1);
});

Deno.test("auth_failed audit: addresses beyond the bound share one row; reasons are bounded", async () => {
  const { rows, a } = audit(17 * 60_000);
  const extra = 3;
  for (let i = 0; i < AuthFailureAudit.MAX_ADDRESSES + extra; i++) {
    a.record(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, WRONG);
  }
  for (let i = 0; i < AuthFailureAudit.MAX_REASONS + 5; i++) a.record(IP, `reason ${i}`);
  await a.flush(true);
  assert.equal(rows.length, AuthFailureAudit.MAX_ADDRESSES + 1);
  const overflow = rows.find((r) => r.detail.address === null);
  // IP arrived after the bound too: its failures land in the shared row.
  assert.equal(overflow?.detail.count, extra + AuthFailureAudit.MAX_REASONS + 5);
  assert.equal(Object.keys(overflow!.detail.reasons).length, AuthFailureAudit.MAX_REASONS + 1);
  assert.equal(overflow!.detail.reasons.other, 6);
});

Deno.test("auth_failed audit: flush resolves once asynchronous writes are stored", async () => {
  const c = clock(17 * 60_000);
  const stored: number[] = [];
  const a = new AuthFailureAudit(async (row) => {
    await Promise.resolve();
    stored.push(row.detail.count);
  }, c.now);
  a.record(IP, WRONG);
  await a.flush(true);
  assert.deepEqual(stored, [1]);
});
