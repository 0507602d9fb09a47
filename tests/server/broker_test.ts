// Tests for the Broker, TunnelRegistry and PortAllocator together, with a fake control session and
// real public TCP listeners.
import assert from "node:assert/strict";
import { type ServerConfig, serverConfig } from "../../server/config.ts";
import { PortAllocator, TunnelRefused } from "../../server/listeners/port_allocator.ts";
import { Stats } from "../../server/stats.ts";
import { Broker, type BrokerSession, type Claim } from "../../server/streams/broker.ts";
import {
  type PendingConn,
  type Tunnel,
  type TunnelOwnerSession,
  TunnelRegistry,
} from "../../server/tunnels.ts";
import { log } from "../../shared/log.ts";
import { CLAIM_TIMEOUT_MS, type TunnelRequest } from "../../shared/protocol.ts";
import { Secret } from "../../shared/secret.ts";
import { StreamBridge } from "../../shared/stream_bridge.ts";
import { wsPair } from "../shared/ws_pair.ts";
import { freeRange } from "./free_ports.ts";

const HOST = "127.0.0.1";

/** The control-session side of the broker and registry, recording what it is told. */
class FakeSession implements BrokerSession, TunnelOwnerSession {
  readonly idle: StreamBridge[] = [];
  readonly claims = new Map<string, Claim>();
  readonly requests: { tunnel: Tunnel; pending: PendingConn; claim: string }[] = [];
  readonly lost: { tunnel: Tunnel; reason: string }[] = [];
  readonly #tunnels = new Set<Tunnel>();
  #next = 0;
  #onRequest: (() => void) | null = null;

  constructor(readonly id: string, readonly owner: string, readonly broker: Broker) {}

  /** Records a tunnel the registry granted to this session. */
  adopt(tunnel: Tunnel): Tunnel {
    this.#tunnels.add(tunnel);
    return tunnel;
  }

  tunnels(): Iterable<Tunnel> {
    return [...this.#tunnels].filter((t) => t.session === this);
  }

  requestStream(tunnel: Tunnel, pending: PendingConn): string {
    const claim = `${this.id}-claim-${this.#next++}`;
    this.claims.set(claim, this.broker.newClaim(tunnel, pending));
    this.requests.push({ tunnel, pending, claim });
    this.#onRequest?.();
    return claim;
  }

  lostTunnel(tunnel: Tunnel, reason: string): void {
    this.#tunnels.delete(tunnel);
    this.lost.push({ tunnel, reason });
  }

  /** Resolves once the broker has asked this session for `n` streams in total. */
  async requested(n: number): Promise<void> {
    while (this.requests.length < n) {
      await new Promise<void>((r) => (this.#onRequest = r));
    }
  }
}

/** A broker, registry and port allocator wired as server.ts does, on a small free port range. */
function harness(fields: Partial<ServerConfig> = {}) {
  let now = 1_700_000_000_000;
  const clock = { now: () => now, advance: (ms: number) => (now += ms) };
  const config = serverConfig({
    tokens: [new Secret("broker-test-token")],
    portRange: freeRange(4),
    bindHost: HOST,
    publicHost: "tunnel.test",
    holdTimeoutMs: 200,
    graceMs: 100,
    ...fields,
  });
  const stats = new Stats(clock.now);
  const logger = log("test");
  const broker = new Broker(config, stats, logger, clock.now);
  const ports = new PortAllocator(config.portRange, config.bindHost, () => 0);
  const registry = new TunnelRegistry(
    ports,
    config,
    stats,
    logger,
    (tunnel, conn) => broker.onPublicConn(tunnel, conn),
    clock.now,
  );
  const session = (id: string, owner = "owner-a") => new FakeSession(id, owner, broker);
  const acquire = (s: FakeSession, name: string, remotePort = 0) =>
    s.adopt(registry.acquire(s, request(name, remotePort), "tunnel.test"));
  return {
    config,
    clock,
    stats,
    broker,
    ports,
    registry,
    session,
    acquire,
    /** Releases every tunnel so no listener or timer outlives the test. */
    close() {
      for (const t of registry.all()) registry.release(t, "test over");
    },
  };
}

function request(name: string, remotePort = 0): TunnelRequest {
  return { name, kind: "tcp", local: "127.0.0.1:5555", remotePort };
}

function connect(tunnel: Tunnel): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: HOST, port: tunnel.port });
}

/** Polls `cond` every few ms until it holds; fails after `ms`. */
async function waitFor(cond: () => boolean, what: string, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Resolves when the peer closes `conn` (EOF or reset), with how many bytes came first. */
async function untilClosed(conn: Deno.Conn): Promise<number> {
  const buf = new Uint8Array(1024);
  let total = 0;
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) return total;
      total += n;
    }
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionReset) return total;
    throw e;
  }
}

function assertRefused(fn: () => unknown, code: string, message: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TunnelRefused, `expected TunnelRefused, got ${e}`);
    assert.equal(e.code, code);
    assert.equal(e.message, message);
    return true;
  });
}

Deno.test("broker holds a public connection while no client is attached, then drops it after the hold timeout", async () => {
  const h = harness({ holdTimeoutMs: 200 });
  const s = h.session("s1");
  const tunnel = h.acquire(s, "adb");
  h.registry.detach(s, 10_000);
  const user = await connect(tunnel);
  try {
    const started = Date.now();
    await waitFor(() => tunnel.pending.length === 1, "the connection to be held");
    assert.equal(h.stats.connectionsActive, 1);
    assert.equal(await untilClosed(user), 0);
    const held = Date.now() - started;
    assert.ok(held >= 150 && held < 2000, `held for ${held} ms with a 200 ms hold timeout`);
    assert.equal(tunnel.pending.length, 0);
    assert.equal(h.stats.refusals.get("hold_timeout"), 1);
    assert.equal(h.stats.connectionsActive, 0);
    assert.equal(s.requests.length, 0, "no session, so nobody was asked for a stream");
  } finally {
    user.close();
    h.close();
  }
});

Deno.test("broker asks the returning session for streams for every held connection", async () => {
  const h = harness({ holdTimeoutMs: 5000 });
  const s1 = h.session("s1");
  const tunnel = h.acquire(s1, "adb");
  h.registry.detach(s1, 10_000);
  const users = [await connect(tunnel), await connect(tunnel)];
  try {
    await waitFor(() => tunnel.pending.length === 2, "both connections to be held");
    const s2 = h.session("s2");
    assert.equal(h.acquire(s2, "adb"), tunnel);
    h.broker.serveWaiting(s2);
    assert.deepEqual(s2.requests.map((r) => r.pending), tunnel.pending);
    // Asking again does not duplicate claims that are still outstanding.
    h.broker.serveWaiting(s2);
    assert.equal(s2.requests.length, 2);
  } finally {
    for (const u of users) u.close();
    h.close();
  }
});

Deno.test("broker refuses a stream that claims an id it never issued", async () => {
  const h = harness();
  const s = h.session("s1");
  h.acquire(s, "adb");
  const ws = await wsPair();
  const stream = new StreamBridge(ws.server);
  try {
    assert.equal(
      h.broker.onStream(s, stream, "made-up-id"),
      'unknown stream id "made-up-id": it was never issued or was already used',
    );
    assert.equal(h.stats.refusals.get("unknown_claim"), 1);
    assert.equal(s.idle.length, 0);
  } finally {
    stream.abort("test over");
    await ws.close();
    h.close();
  }
});

Deno.test("broker bridges a claimed stream to its connection, and refuses the same id twice", async () => {
  const h = harness();
  const s = h.session("s1");
  const tunnel = h.acquire(s, "adb");
  const user = await connect(tunnel);
  const ws = await wsPair();
  const frames: unknown[] = [];
  const got = Promise.withResolvers<void>();
  ws.client.onmessage = (e) => {
    frames.push(typeof e.data === "string" ? JSON.parse(e.data) : new TextDecoder().decode(e.data));
    if (frames.length === 2) got.resolve();
  };
  const stream = new StreamBridge(ws.server);
  try {
    await s.requested(1);
    const { claim } = s.requests[0]!;
    // Exactly at the expiry instant the claim is still good.
    h.clock.advance(CLAIM_TIMEOUT_MS);
    assert.equal(h.broker.onStream(s, stream, claim), null);
    assert.equal(tunnel.pending.length, 0);
    assert.ok(tunnel.active.has(stream));
    await user.write(new TextEncoder().encode("hello"));
    await got.promise;
    const local = user.localAddr as Deno.NetAddr;
    assert.deepEqual(frames, [
      { type: "open", tunnel: "adb", remote: `${HOST}:${local.port}` },
      "hello",
    ]);
    assert.equal(
      h.broker.onStream(s, new StreamBridge(ws.server), claim),
      `unknown stream id "${claim}": it was never issued or was already used`,
    );
  } finally {
    user.close();
    stream.abort("test over");
    await ws.close();
    h.close();
  }
});

Deno.test("broker refuses a stream whose claim expired", async () => {
  const h = harness({ holdTimeoutMs: 5000 });
  const s = h.session("s1");
  const tunnel = h.acquire(s, "adb");
  const user = await connect(tunnel);
  const ws = await wsPair();
  const stream = new StreamBridge(ws.server);
  try {
    await s.requested(1);
    const { claim } = s.requests[0]!;
    h.clock.advance(CLAIM_TIMEOUT_MS + 1);
    assert.equal(
      h.broker.onStream(s, stream, claim),
      `stream id "${claim}" expired before it was claimed`,
    );
    assert.equal(h.stats.refusals.get("expired_claim"), 1);
    assert.ok(!s.claims.has(claim), "an expired claim is forgotten");
    assert.equal(tunnel.pending.length, 1, "the user still waits for another stream");
  } finally {
    user.close();
    stream.abort("test over");
    await ws.close();
    h.close();
  }
});

Deno.test("broker sweeps expired claims so an unresponsive client cannot grow memory", async () => {
  const h = harness({ holdTimeoutMs: 5000 });
  const s = h.session("s1");
  const tunnel = h.acquire(s, "adb");
  const user = await connect(tunnel);
  try {
    await s.requested(1);
    h.broker.sweepClaims(s);
    assert.equal(s.claims.size, 1);
    h.clock.advance(CLAIM_TIMEOUT_MS + 1);
    h.broker.sweepClaims(s);
    assert.equal(s.claims.size, 0);
  } finally {
    user.close();
    h.close();
  }
});

Deno.test("broker serves a new connection from the idle pool without asking the client", async () => {
  const h = harness();
  const s = h.session("s1");
  const tunnel = h.acquire(s, "adb");
  const ws = await wsPair();
  const opened = Promise.withResolvers<unknown>();
  ws.client.onmessage = (e) => opened.resolve(JSON.parse(e.data));
  const stream = new StreamBridge(ws.server);
  assert.equal(h.broker.onStream(s, stream, null), null);
  assert.deepEqual(s.idle, [stream]);
  const user = await connect(tunnel);
  try {
    assert.deepEqual(await opened.promise, {
      type: "open",
      tunnel: "adb",
      remote: `${HOST}:${(user.localAddr as Deno.NetAddr).port}`,
    });
    assert.equal(s.idle.length, 0);
    assert.equal(s.requests.length, 0);
  } finally {
    user.close();
    stream.abort("test over");
    await ws.close();
    h.close();
  }
});

Deno.test("registry gives the same owner and name the same port and tells the old session", () => {
  const h = harness();
  try {
    const s1 = h.session("s1");
    const first = h.acquire(s1, "adb");
    const s2 = h.session("s2");
    const again = h.acquire(s2, "adb");
    assert.equal(again, first);
    assert.equal(again.port, first.port);
    assert.equal(again.url, `tcp://tunnel.test:${first.port}`);
    assert.equal(again.session, s2);
    assert.deepEqual(s1.lost.map((l) => [l.tunnel, l.reason]), [
      [first, "taken over by a newer connection of the same client"],
    ]);
    // Asking for the same port explicitly resumes too.
    const s3 = h.session("s3");
    assert.equal(h.acquire(s3, "adb", first.port), first);
    assert.equal(h.stats.tunnelsCreated, 1);
  } finally {
    h.close();
  }
});

Deno.test("registry moves a name to a newly asked port and tells the session that had it", () => {
  const h = harness();
  try {
    const s1 = h.session("s1");
    const old = h.acquire(s1, "adb", h.config.portRange.low);
    const s2 = h.session("s2");
    const moved = h.acquire(s2, "adb", h.config.portRange.low + 1);
    assert.notEqual(moved, old);
    assert.equal(moved.port, h.config.portRange.low + 1);
    assert.ok(old.closed);
    assert.ok(!h.ports.held(old.port));
    assert.deepEqual(s1.lost.map((l) => [l.tunnel, l.reason]), [
      [old, "taken over by a newer connection of the same client"],
    ]);
  } finally {
    h.close();
  }
});

Deno.test("registry resumes a detached tunnel and cancels its grace period", async () => {
  const h = harness({ graceMs: 100 });
  try {
    const s1 = h.session("s1");
    const tunnel = h.acquire(s1, "adb");
    h.registry.detach(s1, 50);
    assert.equal(tunnel.session, null);
    const s2 = h.session("s2");
    assert.equal(h.acquire(s2, "adb"), tunnel);
    assert.deepEqual(s1.lost, [], "a detached session is not told anything");
    // Past the old grace deadline the port is still open.
    await new Promise((r) => setTimeout(r, 120));
    assert.ok(!tunnel.closed);
    const user = await connect(tunnel);
    user.close();
  } finally {
    h.close();
  }
});

Deno.test("registry refuses another owner the port of an existing tunnel", () => {
  const h = harness();
  try {
    const mine = h.acquire(h.session("s1", "owner-a"), "adb");
    const other = h.session("s2", "owner-b");
    assertRefused(
      () => h.acquire(other, "adb", mine.port),
      "port_taken",
      `port ${mine.port} is already used by another tunnel (choose another --remote-port)`,
    );
    assert.deepEqual(other.lost, []);
    // The same name is free for another owner: names are per owner.
    const theirs = h.acquire(other, "adb");
    assert.notEqual(theirs.port, mine.port);
  } finally {
    h.close();
  }
});

Deno.test("registry releases a detached tunnel's port after the grace period", async () => {
  const h = harness({ holdTimeoutMs: 10_000 });
  const s = h.session("s1");
  const tunnel = h.acquire(s, "adb");
  h.registry.detach(s, 100);
  const user = await connect(tunnel);
  try {
    await waitFor(() => tunnel.pending.length === 1, "the connection to be held");
    await waitFor(() => tunnel.closed, "the grace period to end");
    assert.ok(!h.ports.held(tunnel.port));
    assert.deepEqual(h.registry.all(), []);
    assert.equal(h.stats.tunnelsReleased, 1);
    // The connection held during the grace period is closed, and the port refuses new ones.
    assert.equal(await untilClosed(user), 0);
    await assert.rejects(connect(tunnel), Deno.errors.ConnectionRefused);
  } finally {
    user.close();
    h.close();
  }
});

Deno.test("registry refuses tunnels beyond the per-client limit, naming the limit", () => {
  const h = harness({ maxTunnelsPerClient: 2 });
  try {
    const s = h.session("s1");
    h.acquire(s, "one");
    h.acquire(s, "two");
    assertRefused(
      () => h.acquire(s, "three"),
      "tunnel_limit",
      "tunnel limit reached: at most 2 tunnels per client",
    );
    // Tunnels in their grace period still count; other owners have their own limit.
    h.registry.detach(s, 60_000);
    assertRefused(
      () => h.acquire(h.session("s2"), "three"),
      "tunnel_limit",
      "tunnel limit reached: at most 2 tunnels per client",
    );
    h.acquire(h.session("s3", "owner-b"), "three");
  } finally {
    h.close();
  }
});

Deno.test("registry refuses new tunnels beyond the per-minute rate, naming the rate", () => {
  const h = harness({ tunnelsPerMinute: 2 });
  try {
    const s = h.session("s1");
    const a = h.acquire(s, "one");
    h.acquire(s, "two");
    h.registry.release(a, "closed by the test");
    assertRefused(
      () => h.acquire(s, "three"),
      "rate_limited",
      "too many new tunnels: at most 2 per minute, try again shortly",
    );
    // Resuming an existing tunnel is not a new one.
    h.acquire(h.session("s2"), "two");
    h.clock.advance(60_000);
    h.acquire(s, "three");
  } finally {
    h.close();
  }
});

Deno.test("broker closes a connection beyond the pending limit at once", async () => {
  const h = harness({ maxPending: 1, holdTimeoutMs: 10_000 });
  const s = h.session("s1");
  const tunnel = h.acquire(s, "adb");
  h.registry.detach(s, 60_000);
  const first = await connect(tunnel);
  const second = await connect(tunnel);
  try {
    assert.equal(await untilClosed(second), 0);
    assert.equal(tunnel.pending.length, 1);
    assert.equal(h.stats.refusals.get("pending_limit"), 1);
  } finally {
    first.close();
    second.close();
    h.close();
  }
});

Deno.test("broker closes a connection beyond the per-client connection limit at once", async () => {
  const h = harness({ maxConnectionsPerClient: 1, holdTimeoutMs: 10_000 });
  const s = h.session("s1");
  const a = h.acquire(s, "one");
  const b = h.acquire(s, "two");
  const first = await connect(a);
  try {
    await s.requested(1);
    const second = await connect(b);
    try {
      assert.equal(await untilClosed(second), 0);
      assert.equal(h.stats.refusals.get("connection_limit"), 1);
      assert.equal(s.requests.length, 1);
    } finally {
      second.close();
    }
  } finally {
    first.close();
    h.close();
  }
});
