// Tests for the Watchdog: armed timeouts fire once when due, on a fake clock; one on a real tick.
import assert from "node:assert/strict";
import { Watchdog } from "../../client/http/watchdog.ts";
import { within } from "../support/wait.ts";

/** A Watchdog on a clock the test moves; its interval is long enough never to run here. */
function fakeWatchdog(): { dog: Watchdog; clock: { now: number } } {
  const clock = { now: 1_000 };
  return { dog: new Watchdog(60_000, () => clock.now), clock };
}

Deno.test("watchdog fires an armed function once its time is up, not before", () => {
  const { dog, clock } = fakeWatchdog();
  try {
    let fired = 0;
    dog.arm(500, () => fired++);
    dog.tick();
    clock.now += 499;
    dog.tick();
    assert.equal(fired, 0, "not due yet");
    clock.now += 1;
    dog.tick();
    assert.equal(fired, 1, "due at exactly 500 ms");
    clock.now += 10_000;
    dog.tick();
    dog.tick();
    assert.equal(fired, 1, "fires only once");
  } finally {
    dog.close();
  }
});

Deno.test("watchdog fires only the functions that are due, each at its own time", () => {
  const { dog, clock } = fakeWatchdog();
  try {
    const fired: string[] = [];
    dog.arm(300, () => fired.push("late"));
    dog.arm(100, () => fired.push("early"));
    dog.arm(100, () => fired.push("early too"));
    clock.now += 150;
    dog.tick();
    assert.deepEqual(fired, ["early", "early too"]);
    clock.now += 150;
    dog.tick();
    assert.deepEqual(fired, ["early", "early too", "late"]);
  } finally {
    dog.close();
  }
});

Deno.test("watchdog does not fire a function whose cancel was called", () => {
  const { dog, clock } = fakeWatchdog();
  try {
    let fired = 0;
    const cancel = dog.arm(100, () => fired++);
    const other = dog.arm(100, () => fired += 10);
    cancel();
    cancel(); // twice is harmless
    clock.now += 1_000;
    dog.tick();
    assert.equal(fired, 10);
    other(); // after firing: harmless
  } finally {
    dog.close();
  }
});

Deno.test("watchdog keeps firing the others when one armed function throws", () => {
  const { dog, clock } = fakeWatchdog();
  try {
    const fired: string[] = [];
    dog.arm(10, () => fired.push("first"));
    dog.arm(10, () => {
      throw new Error("boom");
    });
    dog.arm(10, () => fired.push("third"));
    clock.now += 10;
    assert.doesNotThrow(() => dog.tick());
    assert.deepEqual(fired, ["first", "third"]);
    // The thrower is gone too: it is not retried at every tick.
    clock.now += 10;
    dog.arm(0, () => fired.push("later"));
    dog.tick();
    assert.deepEqual(fired, ["first", "third", "later"]);
  } finally {
    dog.close();
  }
});

Deno.test("watchdog may be armed again from inside a firing function", () => {
  const { dog, clock } = fakeWatchdog();
  try {
    const fired: string[] = [];
    dog.arm(10, () => {
      fired.push("outer");
      dog.arm(10, () => fired.push("inner"));
    });
    clock.now += 10;
    dog.tick();
    assert.equal(fired[0], "outer");
    clock.now += 10;
    dog.tick();
    assert.deepEqual(fired, ["outer", "inner"]);
  } finally {
    dog.close();
  }
});

Deno.test("watchdog close drops what was armed: nothing fires after it", () => {
  const { dog, clock } = fakeWatchdog();
  let fired = 0;
  dog.arm(10, () => fired++);
  dog.close();
  clock.now += 1_000;
  dog.tick();
  assert.equal(fired, 0);
  dog.close(); // twice is harmless
});

Deno.test("watchdog on a real tick fires and leaves no interval running", async () => {
  // The sanitizers fail this test if the interval outlives the last armed function.
  const dog = new Watchdog(10);
  const started = Date.now();
  let fired!: () => void;
  const done = new Promise<void>((r) => (fired = r));
  dog.arm(20, fired);
  await within(done, 2_000, "the armed function firing");
  assert.ok(Date.now() - started >= 20, "not before its time");
  // No close(): once nothing is armed the tick stops the interval itself.
});

Deno.test("watchdog close stops the interval of a wait that is still armed", () => {
  // The sanitizers fail this test if close() leaves the interval behind.
  const dog = new Watchdog(10);
  let fired = 0;
  dog.arm(60_000, () => fired++);
  dog.close();
  assert.equal(fired, 0);
});
