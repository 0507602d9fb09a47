// The deadline decorator: every store call ends within the deadline, naming what timed out.

import assert from "node:assert/strict";
import { StoreTimeout, withDeadline } from "../../../server/store/deadline_store.ts";
import type { Store } from "../../../server/store/store.ts";

/** A store whose every call never settles, like a frozen database; counts the calls. */
function frozenStore(): { store: Store; calls: string[] } {
  const calls: string[] = [];
  const store = new Proxy({ description: "fake:frozen" } as unknown as Store, {
    get(target, key) {
      if (key === "description") return target.description;
      return (..._args: unknown[]) => {
        calls.push(String(key));
        return new Promise(() => {});
      };
    },
  });
  return { store, calls };
}

Deno.test("deadline store rejects a call to a frozen store with a StoreTimeout naming the operation", async () => {
  const { store, calls } = frozenStore();
  const s = withDeadline(store, 100);
  assert.equal(s.description, "fake:frozen");
  const t0 = performance.now();
  await assert.rejects(s.addUsage([]), (e: unknown) => {
    assert.ok(e instanceof StoreTimeout, `expected StoreTimeout, got ${e}`);
    assert.equal(e.operation, "addUsage");
    assert.equal(e.timeoutMs, 100);
    assert.match(e.message, /store addUsage did not finish within 100 ms \(fake:frozen/);
    return true;
  });
  const ms = performance.now() - t0;
  assert.ok(ms >= 90 && ms < 1000, `timed out after ${ms} ms`);
  assert.deepEqual(calls, ["addUsage"]);
});

Deno.test("deadline store bounds close() and concurrent calls each on their own", async () => {
  const { store } = frozenStore();
  const s = withDeadline(store, 50);
  const results = await Promise.allSettled([s.listUsers(), s.tokenByHash("x"), s.close()]);
  assert.deepEqual(
    results.map((r) => r.status === "rejected" && (r.reason as StoreTimeout).operation),
    ["listUsers", "tokenByHash", "close"],
  );
});

Deno.test("deadline store passes results and errors through and leaves no timer behind", async () => {
  const inner = {
    description: "fake:ok",
    listUsers: () => Promise.resolve([]),
    userById: () => Promise.reject(new RangeError("no user 7")),
    touchUser: () => {
      throw new TypeError("bad id");
    },
  } as unknown as Store;
  const s = withDeadline(inner, 60_000);
  assert.deepEqual(await s.listUsers(), []);
  await assert.rejects(s.userById(7), RangeError);
  await assert.rejects(s.touchUser(-1, 0), TypeError);
});

Deno.test("deadline store refuses a deadline that is not positive", () => {
  assert.throws(() => withDeadline(frozenStore().store, 0), RangeError);
});
