// Tests for token checks (hashed, stable owner ids) and the per-IP failed-login limiter.
import assert from "node:assert/strict";
import { AuthLimiter, secretsEqual, TokenAuth } from "../../server/auth.ts";
import { Secret } from "../../shared/secret.ts";

const ALICE = "alice-token-0123456789";
const BOB = "bob-token-9876543210";

Deno.test("token auth accepts configured tokens and rejects everything else", () => {
  const auth = new TokenAuth([new Secret(ALICE), new Secret(BOB)]);
  assert.ok(auth.check(ALICE));
  assert.ok(auth.check(BOB));
  for (const wrong of ["", "alice", ALICE + " ", ALICE.toUpperCase(), ALICE.slice(0, -1)]) {
    assert.equal(auth.check(wrong), null, JSON.stringify(wrong));
  }
});

Deno.test("token auth with no tokens accepts nobody", () => {
  assert.equal(new TokenAuth([]).check(ALICE), null);
});

Deno.test("token owner id is stable across restarts, distinct per token, and not the token", () => {
  const a1 = new TokenAuth([new Secret(ALICE), new Secret(BOB)]).check(ALICE);
  const a2 = new TokenAuth([new Secret(BOB), new Secret(ALICE)]).check(ALICE);
  const b = new TokenAuth([new Secret(ALICE), new Secret(BOB)]).check(BOB);
  assert.ok(a1 && a2 && b);
  assert.equal(a1.owner, a2.owner);
  assert.notEqual(a1.owner, b.owner);
  assert.match(a1.owner, /^t[0-9a-f]{16}$/);
  for (const p of [a1, b]) {
    assert.ok(!p.owner.includes(ALICE) && !p.owner.includes(BOB));
    assert.ok(!JSON.stringify(p).includes(ALICE) && !JSON.stringify(p).includes(BOB));
  }
});

Deno.test("secretsEqual compares whole strings", () => {
  assert.ok(secretsEqual("session-secret", "session-secret"));
  assert.ok(!secretsEqual("session-secret", "session-secreT"));
  assert.ok(!secretsEqual("session-secret", "session-secret-and-more"));
  assert.ok(!secretsEqual("", "x"));
});

/** A clock the test moves by hand. */
function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

Deno.test("auth limiter blocks an address after N failures within a minute", () => {
  const c = clock();
  const limiter = new AuthLimiter(3, 5 * 60_000, c.now);
  assert.equal(limiter.fail("203.0.113.7"), false);
  c.advance(10_000);
  assert.equal(limiter.fail("203.0.113.7"), false);
  assert.equal(limiter.blocked("203.0.113.7"), false);
  c.advance(10_000);
  assert.equal(limiter.fail("203.0.113.7"), true);
  assert.equal(limiter.blocked("203.0.113.7"), true);
  // Other addresses are not affected.
  assert.equal(limiter.blocked("198.51.100.1"), false);
});

Deno.test("auth limiter forgets failures older than a minute", () => {
  const c = clock();
  const limiter = new AuthLimiter(3, 60_000, c.now);
  limiter.fail("203.0.113.7");
  c.advance(30_000);
  limiter.fail("203.0.113.7");
  c.advance(30_001);
  // The first failure is now more than a minute old: two in the window, not three.
  assert.equal(limiter.fail("203.0.113.7"), false);
  assert.equal(limiter.blocked("203.0.113.7"), false);
  assert.equal(limiter.fail("203.0.113.7"), true);
});

Deno.test("auth limiter unblocks an address when the block time is over", () => {
  const c = clock();
  const blockMs = 5 * 60_000;
  const limiter = new AuthLimiter(2, blockMs, c.now);
  limiter.fail("::1");
  assert.equal(limiter.fail("::1"), true);
  c.advance(blockMs - 1);
  assert.equal(limiter.blocked("::1"), true);
  c.advance(1);
  assert.equal(limiter.blocked("::1"), false);
  // A fresh start: one failure does not block again.
  assert.equal(limiter.fail("::1"), false);
  assert.equal(limiter.blocked("::1"), false);
});

Deno.test("auth limiter tracks a bounded number of addresses, dropping the oldest", () => {
  const c = clock();
  const limiter = new AuthLimiter(1, 60_000, c.now);
  const n = AuthLimiter.MAX_TRACKED + 1;
  for (let i = 0; i < n; i++) limiter.fail(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  assert.equal(limiter.blocked("10.0.0.0"), false, "the oldest block was dropped");
  assert.equal(limiter.blocked("10.0.0.1"), true);
  const last = n - 1;
  assert.equal(
    limiter.blocked(`10.${(last >> 16) & 255}.${(last >> 8) & 255}.${last & 255}`),
    true,
  );
});
