// Tests for the reconnect backoff: full-jitter bounds, doubling up to the cap, reset.
import assert from "node:assert/strict";
import { Backoff, DEFAULT_BACKOFF } from "../../shared/backoff.ts";

/** Delays of `n` consecutive `next()` calls with a fixed random value. */
function delays(random: number, n: number, baseMs = 1000, capMs = 30_000): number[] {
  const b = new Backoff({ baseMs, capMs, random: () => random });
  return Array.from({ length: n }, () => b.next());
}

Deno.test("backoff with random 0 retries immediately every time", () => {
  assert.deepEqual(delays(0, 8), [0, 0, 0, 0, 0, 0, 0, 0]);
});

Deno.test("backoff with random just below 1 stays just below the doubling ceiling", () => {
  assert.deepEqual(delays(0.999, 8), [999, 1998, 3996, 7992, 15984, 29970, 29970, 29970]);
});

Deno.test("backoff ceiling doubles from the base up to the cap and stays there", () => {
  const b = new Backoff({ baseMs: 500, capMs: 30_000, random: () => 0.5 });
  const ceilings: number[] = [];
  for (let i = 0; i < 10; i++) {
    ceilings.push(b.ceiling());
    b.next();
  }
  assert.deepEqual(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
  assert.equal(b.attempt, 10);
});

Deno.test("backoff delays are always in [0, ceiling) whatever the random source", () => {
  for (const r of [0, 1e-9, 0.25, 0.5, 0.75, 0.999999]) {
    const b = new Backoff({ baseMs: 1000, capMs: 30_000, random: () => r });
    for (let i = 0; i < 12; i++) {
      const ceiling = b.ceiling();
      const d = b.next();
      assert.ok(d >= 0 && d < ceiling, `delay ${d} outside [0, ${ceiling}) for random ${r}`);
      assert.ok(Number.isInteger(d));
    }
  }
});

Deno.test("backoff ceiling does not overflow after very many attempts", () => {
  const b = new Backoff({ baseMs: 1000, capMs: 30_000, random: () => 0.999 });
  for (let i = 0; i < 10_000; i++) b.next();
  assert.equal(b.ceiling(), 30_000);
  assert.equal(b.next(), 29970);
});

Deno.test("backoff reset starts over from the base delay", () => {
  const b = new Backoff({ baseMs: 1000, capMs: 30_000, random: () => 0.999 });
  for (let i = 0; i < 6; i++) b.next();
  assert.equal(b.ceiling(), 30_000);
  b.reset();
  assert.equal(b.attempt, 0);
  assert.equal(b.ceiling(), 1000);
  assert.deepEqual([b.next(), b.next()], [999, 1998]);
});

Deno.test("default backoff starts within 1 s and is capped at 30 s", () => {
  const b = new Backoff(DEFAULT_BACKOFF);
  assert.equal(b.ceiling(), 1000);
  const first = b.next();
  assert.ok(first >= 0 && first < 1000);
  for (let i = 0; i < 20; i++) assert.ok(b.next() < 30_000);
});

Deno.test("backoff rejects settings that cannot make progress", () => {
  for (
    const opts of [{ baseMs: 0, capMs: 10 }, { baseMs: 100, capMs: 50 }, {
      baseMs: NaN,
      capMs: 10,
    }]
  ) {
    assert.throws(() => new Backoff(opts), {
      name: "RangeError",
      message: "backoff needs 0 < baseMs <= capMs",
    });
  }
});

Deno.test("backoff with minFraction 0.5 waits between half the ceiling and the ceiling", () => {
  const run = (random: number) => {
    const b = new Backoff({ baseMs: 250, capMs: 30_000, minFraction: 0.5, random: () => random });
    return Array.from({ length: 9 }, () => b.next());
  };
  assert.deepEqual(run(0), [125, 250, 500, 1000, 2000, 4000, 8000, 15000, 15000]);
  assert.deepEqual(run(0.999), [249, 499, 999, 1999, 3998, 7996, 15992, 29985, 29985]);
});
