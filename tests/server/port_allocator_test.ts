// Tests for public port allocation over real listeners: range checks, conflicts, release.
import assert from "node:assert/strict";
import { PortAllocator } from "../../server/listeners/port_allocator.ts";
import { freeRange } from "../support/net.ts";
import { isRefusal } from "../support/refusals.ts";

const HOST = "127.0.0.1";

/** Asserts that `fn` throws a TunnelRefused with this code and exact message. */
function assertRefused(fn: () => unknown, code: string, message: string): void {
  assert.throws(fn, isRefusal(code, message));
}

const portOf = (l: Deno.TcpListener) => l.addr.port;

Deno.test("port allocator binds a requested port inside the range", () => {
  const range = freeRange(3);
  const ports = new PortAllocator(range, HOST);
  const l = ports.bind(range.low + 1);
  try {
    assert.equal(portOf(l), range.low + 1);
    assert.equal(l.addr.hostname, HOST);
    assert.ok(ports.held(range.low + 1));
    assert.ok(!ports.held(range.low));
  } finally {
    l.close();
  }
});

Deno.test("port allocator refuses a port outside the range and names the range", () => {
  const range = freeRange(2);
  const ports = new PortAllocator(range, HOST);
  for (const port of [range.low - 1, range.high + 1, 1]) {
    assert.ok(!ports.inRange(port));
    assertRefused(
      () => ports.bind(port),
      "port_out_of_range",
      `port ${port} is outside the server's allowed range ${range.low}-${range.high} ` +
        "(choose a port in that range, or none)",
    );
  }
});

Deno.test("port allocator refuses a port another tunnel holds", () => {
  const range = freeRange(2);
  const ports = new PortAllocator(range, HOST);
  const l = ports.bind(range.low);
  try {
    assertRefused(
      () => ports.bind(range.low),
      "port_taken",
      `port ${range.low} is already used by another tunnel (choose another --remote-port)`,
    );
  } finally {
    l.close();
  }
});

Deno.test("port allocator refuses a port bound by another program: address already in use", () => {
  const range = freeRange(2);
  const other = Deno.listen({ hostname: HOST, port: range.low });
  try {
    const ports = new PortAllocator(range, HOST);
    assertRefused(
      () => ports.bind(range.low),
      "port_taken",
      `cannot bind public port ${range.low}: address already in use (choose another --remote-port)`,
    );
    assert.ok(!ports.held(range.low));
  } finally {
    other.close();
  }
});

Deno.test("port allocator hands out distinct ports from the cursor on, skipping busy ones", () => {
  const range = freeRange(5);
  const other = Deno.listen({ hostname: HOST, port: range.low + 2 });
  const ports = new PortAllocator(range, HOST, () => 0);
  const bound: Deno.TcpListener[] = [];
  try {
    for (let i = 0; i < 4; i++) bound.push(ports.bind(0));
    assert.deepEqual(bound.map(portOf), [range.low, range.low + 1, range.low + 3, range.low + 4]);
    assertRefused(
      () => ports.bind(0),
      "port_taken",
      `no free public port left in the range ${range.low}-${range.high}`,
    );
  } finally {
    for (const l of bound) l.close();
    other.close();
  }
});

Deno.test("port allocator cursor starts at a random port and wraps around the range", () => {
  const range = freeRange(4);
  const ports = new PortAllocator(range, HOST, () => 0.99);
  const bound: Deno.TcpListener[] = [];
  try {
    for (let i = 0; i < 3; i++) bound.push(ports.bind(0));
    assert.deepEqual(bound.map(portOf), [range.high, range.low, range.low + 1]);
  } finally {
    for (const l of bound) l.close();
  }
});

Deno.test("port allocator gives a released port out again", () => {
  const range = freeRange(1);
  const ports = new PortAllocator(range, HOST);
  const first = ports.bind(0);
  assert.equal(portOf(first), range.low);
  first.close();
  // Closed but not released (a tunnel in its grace period): still refused.
  assertRefused(
    () => ports.bind(range.low),
    "port_taken",
    `port ${range.low} is already used by another tunnel (choose another --remote-port)`,
  );
  ports.release(range.low);
  assert.ok(!ports.held(range.low));
  const again = ports.bind(range.low);
  try {
    assert.equal(portOf(again), range.low);
    assert.ok(ports.held(range.low));
  } finally {
    again.close();
  }
});
