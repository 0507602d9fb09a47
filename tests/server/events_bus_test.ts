// The live event bus: filtering per subscriber, bounded queues (a slow reader is cut off), rates.
import assert from "node:assert/strict";
import { type BusEvent, EventBus, type RateSource } from "../../server/api/events_bus.ts";

const opened = (userId: number): BusEvent => ({
  type: "tunnel.opened",
  data: { id: "t", name: "web", user: "u", userId, url: "tcp://x:1", port: 1 },
});

const totals = (): RateSource => ({
  bytesIn: 0,
  bytesOut: 0,
  connectionsTotal: 0,
  connectionsActive: 0,
  clientsConnected: 0,
  tunnelsActive: 0,
});

Deno.test("event bus delivers to each subscriber what its filter lets through", async () => {
  const bus = new EventBus(totals, 60_000);
  const mine = bus.subscribe((e) => e.type === "rates" || e.data.userId === 1)!;
  const all = bus.subscribe()!;
  bus.publish(opened(2));
  bus.publish(opened(1));
  assert.equal(((await mine.next()) as { data: { userId: number } }).data.userId, 1);
  assert.equal(((await all.next()) as { data: { userId: number } }).data.userId, 2);
  bus.close();
  assert.equal(await mine.next(), null);
  assert.equal(bus.size, 0);
});

Deno.test("event bus cuts off a subscriber whose queue is full", async () => {
  const bus = new EventBus(totals, 60_000);
  const slow = bus.subscribe(() => true, 4)!;
  const fast = bus.subscribe(() => true, 4)!;
  for (let i = 0; i < 4; i++) {
    bus.publish(opened(1));
    await fast.next();
  }
  bus.publish(opened(1));
  assert.equal(slow.endReason, "slow");
  assert.equal(await slow.next(), null);
  assert.equal(fast.endReason, null);
  assert.equal(bus.size, 1);
  bus.close();
});

Deno.test("event bus publishes rates per second from the counters while someone listens", async () => {
  let t = 0;
  const src = { ...totals() };
  const bus = new EventBus(() => ({ ...src }), 20, () => t);
  const sub = bus.subscribe()!;
  src.bytesIn = 5_000;
  src.bytesOut = 1_000;
  src.connectionsTotal = 4;
  src.connectionsActive = 2;
  t = 500;
  const e = await sub.next();
  assert.deepEqual(e, {
    type: "rates",
    data: {
      bytesInPerSecond: 10_000,
      bytesOutPerSecond: 2_000,
      connectionsPerSecond: 8,
      connectionsActive: 2,
      clientsConnected: 0,
      tunnelsActive: 0,
    },
  });
  sub.close(); // the last subscriber stops the timer (the sanitizer checks)
});
