// Tests for OwnerBudgets: per-user budgets for the stream receive windows the server grows.
import assert from "node:assert/strict";
import { OwnerBudgets } from "../../server/streams/budgets.ts";

const MiB = 1024 * 1024;

Deno.test("owner budget hands out bytes until the limit and refuses what would cross it", () => {
  const budgets = new OwnerBudgets(4 * MiB);
  const alice = budgets.of("alice");
  assert.ok(alice.take(1 * MiB));
  assert.ok(alice.take(2 * MiB));
  assert.equal(budgets.used("alice"), 3 * MiB);
  // One byte more than what is left is refused, and a refusal takes nothing.
  assert.equal(alice.take(1 * MiB + 1), false);
  assert.equal(budgets.used("alice"), 3 * MiB);
  // Exactly what is left is granted.
  assert.ok(alice.take(1 * MiB));
  assert.equal(budgets.used("alice"), 4 * MiB);
  assert.equal(alice.take(1), false);
  assert.equal(budgets.used("alice"), 4 * MiB);
});

Deno.test("owner budget takes back what a stream gives and lends it out again", () => {
  const budgets = new OwnerBudgets(1 * MiB);
  const alice = budgets.of("alice");
  assert.ok(alice.take(MiB / 2));
  assert.ok(alice.take(MiB / 2));
  assert.equal(alice.take(MiB / 4), false);
  alice.give(MiB / 2);
  assert.equal(budgets.used("alice"), MiB / 2);
  assert.ok(alice.take(MiB / 4));
  assert.equal(budgets.used("alice"), (3 * MiB) / 4);
});

Deno.test("owner budgets are independent: one user's fast streams cannot use another user's share", () => {
  const budgets = new OwnerBudgets(2 * MiB);
  const alice = budgets.of("alice");
  const bob = budgets.of("bob");
  assert.ok(alice.take(2 * MiB));
  assert.equal(alice.take(1), false);
  // Bob still has his whole budget, and using it leaves alice's count alone.
  assert.ok(bob.take(2 * MiB));
  assert.equal(budgets.used("alice"), 2 * MiB);
  assert.equal(budgets.used("bob"), 2 * MiB);
  bob.give(2 * MiB);
  assert.equal(budgets.used("bob"), 0);
  assert.equal(budgets.used("alice"), 2 * MiB);
  assert.equal(alice.take(1), false, "bob's bytes given back are not alice's");
});

Deno.test("owner budgets seen through several handles of the same owner share one count", () => {
  const budgets = new OwnerBudgets(3 * MiB);
  // Each data connection of a session gets its own handle for the same owner.
  const first = budgets.of("alice");
  const second = budgets.of("alice");
  assert.ok(first.take(2 * MiB));
  assert.equal(second.take(2 * MiB), false);
  assert.ok(second.take(1 * MiB));
  assert.equal(budgets.used("alice"), 3 * MiB);
  first.give(2 * MiB);
  assert.equal(budgets.used("alice"), 1 * MiB);
});

Deno.test("owner budget forgets an owner once everything is given back, so past owners cost no memory", () => {
  const budgets = new OwnerBudgets(4 * MiB);
  const owner = `owner-${crypto.randomUUID()}`;
  const handle = budgets.of(owner);
  assert.ok(handle.take(MiB));
  assert.ok(handle.take(MiB));
  // Watch the budget's map for this owner's key while the bytes go back. (Map is the only keyed
  // store it has; the key is unique to this test, so no other map's calls are counted.)
  const calls: string[] = [];
  const { set, delete: del } = Map.prototype;
  Map.prototype.set = function (this: Map<unknown, unknown>, key: unknown, value: unknown) {
    if (key === owner) calls.push(`set ${value}`);
    return set.call(this, key, value);
  };
  Map.prototype.delete = function (this: Map<unknown, unknown>, key: unknown) {
    if (key === owner) calls.push("delete");
    return del.call(this, key);
  };
  try {
    handle.give(MiB);
    handle.give(MiB);
  } finally {
    Map.prototype.set = set;
    Map.prototype.delete = del;
  }
  assert.deepEqual(calls, [`set ${MiB}`, "delete"]);
  assert.equal(budgets.used(owner), 0);
  // Giving back more than was taken (a double give) never leaves a negative count behind.
  handle.give(MiB);
  assert.equal(budgets.used(owner), 0);
  assert.ok(handle.take(4 * MiB), "the whole budget is available again");
});
