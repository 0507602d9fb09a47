// Tests for constant-time secret comparison and the per-IP failed-login limiter.
import assert from "node:assert/strict";
import { AuthLimiter, secretsEqual } from "../../server/auth.ts";

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
