// Unit tests for the client's per-tunnel caps: streams open at once and local dials at once.
import assert from "node:assert/strict";
import {
  DEFAULT_MAX_CONNECTIONS,
  LOCAL_DIALS_PER_TUNNEL,
  TunnelGate,
  TunnelGates,
} from "../../client/tunnel_gate.ts";

Deno.test("a tunnel gate admits maxStreams streams and refuses the next, counting refusals", () => {
  const gate = new TunnelGate("web", 3);
  assert.deepEqual([gate.enter(), gate.enter(), gate.enter()], [true, true, true]);
  assert.equal(gate.enter(), false);
  assert.equal(gate.enter(), false);
  assert.equal(gate.refused, 2);
  assert.equal(gate.streams, 3);
  gate.leave();
  assert.equal(gate.enter(), true, "a slot that was given back is free again");
  assert.equal(gate.streams, 3);
});

Deno.test("a tunnel gate throws on leave() without enter()", () => {
  assert.throws(() => new TunnelGate("web", 1).leave(), /leave\(\) without enter\(\)/);
});

Deno.test("a tunnel gate runs maxDials dials at once and starts queued ones in order", () => {
  const gate = new TunnelGate("web", 100, 2);
  const started: number[] = [];
  const ends = [0, 1, 2, 3, 4].map((i) => gate.dial(() => started.push(i)));
  assert.deepEqual(started, [0, 1], "two dials start at once, synchronously");
  assert.equal(gate.dialing, 2);
  assert.equal(gate.waiting, 3);
  ends[1]!();
  assert.deepEqual(started, [0, 1, 2]);
  ends[1]!(); // a second call does nothing
  assert.equal(gate.dialing, 2);
  ends[3]!(); // withdrawn while queued: never starts
  assert.equal(gate.waiting, 1);
  ends[0]!();
  ends[2]!();
  assert.deepEqual(started, [0, 1, 2, 4]);
  ends[4]!();
  assert.equal(gate.dialing, 0);
  assert.equal(gate.waiting, 0);
});

Deno.test("a dial that ends inside its own turn lets the next one start", () => {
  const gate = new TunnelGate("web", 100, 1);
  const started: string[] = [];
  let endFirst = () => {};
  const endWaiting = gate.dial(() => started.push("a"));
  endFirst = gate.dial(() => {
    started.push("b");
    endFirst();
  });
  gate.dial(() => started.push("c"));
  endWaiting();
  // "b" ended at once, so "c" started too.
  assert.deepEqual(started, ["a", "b", "c"]);
  assert.equal(gate.dialing, 1);
});

Deno.test("withdrawn dials leave no trace in the queue, however many there are", () => {
  const gate = new TunnelGate("web", 100, 1);
  const first = gate.dial(() => {});
  for (let i = 0; i < 10_000; i++) gate.dial(() => assert.fail("withdrawn dial started"))();
  assert.equal(gate.waiting, 0);
  first();
  assert.equal(gate.dialing, 0);
});

Deno.test("tunnel gates exist only for the client's own tunnels, with the defaults", () => {
  const gates = new TunnelGates(["a", "b"], DEFAULT_MAX_CONNECTIONS);
  assert.equal(gates.get("a")?.maxStreams, 256);
  assert.equal(gates.get("b")?.maxDials, LOCAL_DIALS_PER_TUNNEL);
  assert.equal(gates.get("c"), undefined);
  assert.deepEqual([...gates.all()].map((g) => g.name), ["a", "b"]);
});

Deno.test("a tunnel gate rejects caps that are not positive whole numbers", () => {
  assert.throws(() => new TunnelGate("x", 0), RangeError);
  assert.throws(() => new TunnelGate("x", 1, 0), RangeError);
  assert.throws(() => new TunnelGate("x", 1.5), RangeError);
});
