// Tests for the Broker, TunnelRegistry, PortAllocator, PortBook and UsageMeter together, with a fake
// control session, a real (SQLite) store and real public TCP listeners.
import assert from "node:assert/strict";
import { PortBook } from "../../server/accounts/port_book.ts";
import { UsageMeter } from "../../server/accounts/usage.ts";
import { type ServerConfig, serverConfig } from "../../server/config.ts";
import { PortAllocator, TunnelRefused } from "../../server/listeners/port_allocator.ts";
import { Stats } from "../../server/stats.ts";
import { openSqliteStore } from "../../server/store/sqlite_store.ts";
import type { Store, User, UserLimits } from "../../server/store/store.ts";
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
import { hourStart } from "../../shared/units.ts";
import { wsPair } from "../shared/ws_pair.ts";
import { freeRange } from "./free_ports.ts";

const HOST = "127.0.0.1";
const HOUR = 3_600_000;

/** The control-session side of the broker and registry, recording what it is told. */
class FakeSession implements BrokerSession, TunnelOwnerSession {
  readonly owner: string;
  readonly userId: number;
  readonly userName: string;
  readonly limits: UserLimits;
  readonly idle: StreamBridge[] = [];
  readonly claims = new Map<string, Claim>();
  readonly requests: { tunnel: Tunnel; pending: PendingConn; claim: string }[] = [];
  readonly lost: { tunnel: Tunnel; reason: string }[] = [];
  readonly notices: { code: string; message: string }[] = [];
  readonly #tunnels = new Set<Tunnel>();
  #next = 0;
  #onRequest: (() => void) | null = null;

  constructor(readonly id: string, user: User, readonly broker: Broker) {
    this.owner = `u${user.id}`;
    this.userId = user.id;
    this.userName = user.name;
    this.limits = user.limits;
  }

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

  notice(code: "quota_exceeded", message: string): void {
    this.notices.push({ code, message });
  }

  /** Resolves once the broker has asked this session for `n` streams in total. */
  async requested(n: number): Promise<void> {
    while (this.requests.length < n) {
      await new Promise<void>((r) => (this.#onRequest = r));
    }
  }
}

/**
 * A broker, registry, port allocator, port book and usage meter wired as server.ts does, on a small
 * free port range, over a real SQLite store (in memory unless `storePath` names a file). The user
 * "alice" always exists.
 */
async function harness(fields: Partial<ServerConfig> = {}, storePath = ":memory:") {
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
  const store = await openSqliteStore(storePath);
  const stats = new Stats(clock.now);
  const logger = log("test");
  const usage = new UsageMeter(store, clock.now);
  const broker = new Broker(config, stats, usage, logger, clock.now);
  const ports = new PortAllocator(config.portRange, config.bindHost, () => 0);
  const registry = new TunnelRegistry(
    ports,
    new PortBook(store, clock.now),
    config,
    stats,
    logger,
    (tunnel, conn) => broker.onPublicConn(tunnel, conn),
    clock.now,
  );
  /** The stored user `name`, created (with `limits`) if missing. */
  const user = async (name: string, limits: Partial<UserLimits> = {}) =>
    await store.userByName(name) ?? await store.createUser({ name, role: "user", limits });
  const alice = await user("alice");
  const session = (id: string, u: User = alice) => new FakeSession(id, u, broker);
  const acquire = async (s: FakeSession, name: string, remotePort = 0) =>
    s.adopt(await registry.acquire(s, request(name, remotePort), "tunnel.test"));
  return {
    config,
    clock,
    store,
    stats,
    usage,
    broker,
    ports,
    registry,
    alice,
    user,
    session,
    acquire,
    /** Releases every tunnel so no listener or timer outlives the test, and closes the store. */
    async close() {
      for (const t of registry.all()) registry.release(t, "test over");
      await store.close();
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

/** Reads exactly `n` bytes from `conn`. */
async function readN(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(out.subarray(got));
    if (r === null) throw new Error(`EOF after ${got} of ${n} bytes`);
    got += r;
  }
  return out;
}

async function assertRefused(p: Promise<unknown>, code: string, message: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof TunnelRefused, `expected TunnelRefused, got ${e}`);
    assert.equal(e.code, code);
    assert.equal(e.message, message);
    return true;
  });
}

/**
 * Resolves once `port` can be bound again. A listener closed while its accept loop waits is only
 * gone from the OS on the next turn of the event loop, so tests that bind the same port again
 * right after a release wait for this first.
 */
async function portFree(port: number): Promise<void> {
  await waitFor(() => {
    try {
      Deno.listen({ hostname: HOST, port }).close();
      return true;
    } catch {
      return false;
    }
  }, `port ${port} to be free`);
}

/** The port the store holds for a user's named tunnel, or null. */
async function reserved(store: Store, user: User, tunnel: string): Promise<number | null> {
  return (await store.reservationFor(user.id, tunnel))?.port ?? null;
}

Deno.test("broker holds a public connection while no client is attached, then drops it after the hold timeout", async () => {
  const h = await harness({ holdTimeoutMs: 200 });
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
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
    await h.close();
  }
});

Deno.test("broker asks the returning session for streams for every held connection", async () => {
  const h = await harness({ holdTimeoutMs: 5000 });
  const s1 = h.session("s1");
  const tunnel = await h.acquire(s1, "adb");
  h.registry.detach(s1, 10_000);
  const users = [await connect(tunnel), await connect(tunnel)];
  try {
    await waitFor(() => tunnel.pending.length === 2, "both connections to be held");
    const s2 = h.session("s2");
    assert.equal(await h.acquire(s2, "adb"), tunnel);
    h.broker.serveWaiting(s2);
    assert.deepEqual(s2.requests.map((r) => r.pending), tunnel.pending);
    // Asking again does not duplicate claims that are still outstanding.
    h.broker.serveWaiting(s2);
    assert.equal(s2.requests.length, 2);
  } finally {
    for (const u of users) u.close();
    await h.close();
  }
});

Deno.test("broker refuses a stream that claims an id it never issued", async () => {
  const h = await harness();
  const s = h.session("s1");
  await h.acquire(s, "adb");
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
    await h.close();
  }
});

Deno.test("broker bridges a claimed stream to its connection, counts its bytes for the user, and refuses the same id twice", async () => {
  const h = await harness();
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
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
    // The client answers; the user gets the bytes, and both directions count for alice's tunnel.
    ws.client.send(new TextEncoder().encode("world!"));
    assert.equal(new TextDecoder().decode(await readN(user, 6)), "world!");
    await waitFor(() => h.usage.totals.get(h.alice.id)?.bytesOut === 6, "the reply to be counted");
    assert.deepEqual(h.usage.totals.get(h.alice.id), { name: "alice", bytesIn: 5, bytesOut: 6 });
    await h.usage.flush();
    assert.deepEqual(await h.store.usage({ userId: h.alice.id }), [{
      userId: h.alice.id,
      tunnel: "adb",
      hour: hourStart(h.clock.now()),
      bytesIn: 5,
      bytesOut: 6,
      connections: 1,
      errors: 0,
    }]);
    // (A second bridge on the same socket takes its handlers over, so this comes last.)
    assert.equal(
      h.broker.onStream(s, new StreamBridge(ws.server), claim),
      `unknown stream id "${claim}": it was never issued or was already used`,
    );
  } finally {
    user.close();
    stream.abort("test over");
    await ws.close();
    await h.close();
  }
});

Deno.test("broker refuses a stream whose claim expired", async () => {
  const h = await harness({ holdTimeoutMs: 5000 });
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
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
    await h.close();
  }
});

Deno.test("broker sweeps expired claims so an unresponsive client cannot grow memory", async () => {
  const h = await harness({ holdTimeoutMs: 5000 });
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
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
    await h.close();
  }
});

Deno.test("broker serves a new connection from the idle pool without asking the client", async () => {
  const h = await harness();
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
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
    await h.close();
  }
});

Deno.test("registry gives the same owner and name the same port and tells the old session", async () => {
  const h = await harness();
  try {
    const s1 = h.session("s1");
    const first = await h.acquire(s1, "adb");
    const s2 = h.session("s2");
    const again = await h.acquire(s2, "adb");
    assert.equal(again, first);
    assert.equal(again.port, first.port);
    assert.equal(again.url, `tcp://tunnel.test:${first.port}`);
    assert.equal(again.session, s2);
    assert.deepEqual(s1.lost.map((l) => [l.tunnel, l.reason]), [
      [first, "taken over by a newer connection of the same client"],
    ]);
    // Asking for the same port explicitly resumes too.
    const s3 = h.session("s3");
    assert.equal(await h.acquire(s3, "adb", first.port), first);
    assert.equal(h.stats.tunnelsCreated, 1);
  } finally {
    await h.close();
  }
});

Deno.test("registry moves a name to a newly asked port, moves its reservation, and tells the session that had it", async () => {
  const h = await harness();
  try {
    const s1 = h.session("s1");
    const old = await h.acquire(s1, "adb", h.config.portRange.low);
    const s2 = h.session("s2");
    const moved = await h.acquire(s2, "adb", h.config.portRange.low + 1);
    assert.notEqual(moved, old);
    assert.equal(moved.port, h.config.portRange.low + 1);
    assert.ok(old.closed);
    assert.ok(!h.ports.held(old.port));
    assert.deepEqual(s1.lost.map((l) => [l.tunnel, l.reason]), [
      [old, "taken over by a newer connection of the same client"],
    ]);
    assert.equal(await reserved(h.store, h.alice, "adb"), moved.port);
    assert.equal(await h.store.reservationByPort(old.port), null);
  } finally {
    await h.close();
  }
});

Deno.test("registry resumes a detached tunnel and cancels its grace period", async () => {
  const h = await harness({ graceMs: 100 });
  try {
    const s1 = h.session("s1");
    const tunnel = await h.acquire(s1, "adb");
    h.registry.detach(s1, 50);
    assert.equal(tunnel.session, null);
    const s2 = h.session("s2");
    assert.equal(await h.acquire(s2, "adb"), tunnel);
    assert.deepEqual(s1.lost, [], "a detached session is not told anything");
    // Past the old grace deadline the port is still open.
    await new Promise((r) => setTimeout(r, 120));
    assert.ok(!tunnel.closed);
    const user = await connect(tunnel);
    user.close();
  } finally {
    await h.close();
  }
});

Deno.test("registry refuses another user the port of a live tunnel", async () => {
  const h = await harness();
  try {
    const mine = await h.acquire(h.session("s1"), "adb");
    const other = h.session("s2", await h.user("bob"));
    await assertRefused(
      h.acquire(other, "adb", mine.port),
      "port_taken",
      `port ${mine.port} is reserved for another user (choose another --remote-port)`,
    );
    assert.deepEqual(other.lost, []);
    assert.ok(!mine.closed);
    // The same name is free for another user: names are per user.
    const theirs = await h.acquire(other, "adb");
    assert.notEqual(theirs.port, mine.port);
  } finally {
    await h.close();
  }
});

Deno.test("registry releases a detached tunnel's port after the grace period", async () => {
  const h = await harness({ holdTimeoutMs: 10_000 });
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
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
    // The reservation outlives the listener.
    assert.equal(await reserved(h.store, h.alice, "adb"), tunnel.port);
  } finally {
    user.close();
    await h.close();
  }
});

Deno.test("registry refuses tunnels beyond the per-user limit, naming the limit", async () => {
  const h = await harness({ maxTunnelsPerClient: 2 });
  try {
    const s = h.session("s1");
    await h.acquire(s, "one");
    await h.acquire(s, "two");
    await assertRefused(
      h.acquire(s, "three"),
      "tunnel_limit",
      "tunnel limit reached: at most 2 tunnels per user",
    );
    // Tunnels in their grace period still count; other users have their own limit.
    h.registry.detach(s, 60_000);
    await assertRefused(
      h.acquire(h.session("s2"), "three"),
      "tunnel_limit",
      "tunnel limit reached: at most 2 tunnels per user",
    );
    await h.acquire(h.session("s3", await h.user("bob")), "three");
  } finally {
    await h.close();
  }
});

Deno.test("registry refuses new tunnels beyond the per-minute rate, naming the rate", async () => {
  const h = await harness({ tunnelsPerMinute: 2 });
  try {
    const s = h.session("s1");
    const a = await h.acquire(s, "one");
    await h.acquire(s, "two");
    h.registry.release(a, "closed by the test");
    await assertRefused(
      h.acquire(s, "three"),
      "rate_limited",
      "too many new tunnels: at most 2 per minute, try again shortly",
    );
    // Resuming an existing tunnel is not a new one.
    await h.acquire(h.session("s2"), "two");
    h.clock.advance(60_000);
    await h.acquire(s, "three");
  } finally {
    await h.close();
  }
});

Deno.test("broker closes a connection beyond the pending limit at once", async () => {
  const h = await harness({ maxPending: 1, holdTimeoutMs: 10_000 });
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
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
    await h.close();
  }
});

Deno.test("broker closes a connection beyond the per-client connection limit at once", async () => {
  const h = await harness({ maxConnectionsPerClient: 1, holdTimeoutMs: 10_000 });
  const s = h.session("s1");
  const a = await h.acquire(s, "one");
  const b = await h.acquire(s, "two");
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
    await h.close();
  }
});

// --- Stable ports (PortBook) ---

Deno.test("registry gives a user's named tunnel its reserved port again after it was released", async () => {
  const h = await harness();
  try {
    const s = h.session("s1");
    const first = await h.acquire(s, "web");
    assert.equal(await reserved(h.store, h.alice, "web"), first.port);
    h.registry.release(first, "client went away");
    await portFree(first.port);
    // Without the reservation the allocator would move on to the next port of the range.
    const again = await h.acquire(h.session("s2"), "web");
    assert.notEqual(again, first);
    assert.equal(again.port, first.port);
    assert.equal(again.url, `tcp://tunnel.test:${first.port}`);
    assert.equal(h.stats.tunnelsCreated, 2);
  } finally {
    await h.close();
  }
});

Deno.test("registry may give a tunnel another port once the operator released its reservation", async () => {
  const h = await harness();
  try {
    const bob = await h.user("bob");
    const first = await h.acquire(h.session("s1"), "web");
    assert.ok(await h.store.releasePort(first.port));
    // The live tunnel keeps its listener, so nobody else gets the port meanwhile.
    assert.ok(!first.closed);
    await assertRefused(
      h.acquire(h.session("s2", bob), "db", first.port),
      "port_taken",
      `port ${first.port} is already used by another tunnel (choose another --remote-port)`,
    );
    h.registry.release(first, "client went away");
    const next = await h.acquire(h.session("s3"), "web");
    // The allocator's cursor moved past the old port, and nothing pins the tunnel to it any more.
    assert.equal(next.port, first.port + 1);
    assert.equal(await reserved(h.store, h.alice, "web"), next.port);
  } finally {
    await h.close();
  }
});

Deno.test("a restarted server with the same SQLite file gives a user's tunnel the same port", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-broker-test-" });
  try {
    const path = `${dir}/mport.db`;
    const portRange = freeRange(4);
    const before = await harness({ portRange }, path);
    let web: number;
    try {
      const s = before.session("s1");
      await before.acquire(s, "first");
      web = (await before.acquire(s, "web")).port;
      assert.equal(web, portRange.low + 1);
    } finally {
      await before.close();
    }
    await portFree(web);
    const after = await harness({ portRange }, path);
    try {
      // A fresh allocator would start at the low end of the range: the store says otherwise.
      const tunnel = await after.acquire(after.session("s2"), "web");
      assert.equal(tunnel.port, web);
      // And another user skips both of alice's ports.
      const bob = await after.user("bob");
      const theirs = await after.acquire(after.session("s3", bob), "web");
      assert.equal(theirs.port, portRange.low + 2);
    } finally {
      await after.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("registry refuses a port reserved for another user, and a user's own port under another tunnel name", async () => {
  const h = await harness();
  try {
    const bob = await h.user("bob");
    const web = await h.acquire(h.session("s1"), "web");
    h.registry.release(web, "client went away");
    await portFree(web.port);
    // The port is free on the machine, but the reservation still belongs to alice's "web".
    await assertRefused(
      h.acquire(h.session("s2", bob), "web", web.port),
      "port_taken",
      `port ${web.port} is reserved for another user (choose another --remote-port)`,
    );
    await assertRefused(
      h.acquire(h.session("s3"), "api", web.port),
      "port_taken",
      `port ${web.port} is reserved for your tunnel "web" (use that name, or ask the operator to release the port)`,
    );
    assert.deepEqual(h.registry.all(), []);
    assert.equal(await reserved(h.store, h.alice, "web"), web.port);
    assert.equal(await reserved(h.store, h.alice, "api"), null);
    // Asking for it under the right name works.
    assert.equal((await h.acquire(h.session("s4"), "web", web.port)).port, web.port);
  } finally {
    await h.close();
  }
});

Deno.test("registry skips ports reserved for other users when picking a free port", async () => {
  const h = await harness({ portRange: freeRange(6) });
  try {
    const { low } = h.config.portRange;
    // An operator reservation without a tunnel name, and a released tunnel's reservation.
    await h.store.reservePort({ userId: h.alice.id, tunnel: null, port: low, at: h.clock.now() });
    const web = await h.acquire(h.session("s1"), "web", low + 1);
    h.registry.release(web, "client went away");
    assert.ok(!h.ports.held(low) && !h.ports.held(low + 1), "neither port is bound");
    const bob = await h.user("bob");
    const s = h.session("s2", bob);
    assert.equal((await h.acquire(s, "one")).port, low + 2);
    assert.equal((await h.acquire(s, "two")).port, low + 3);
    assert.equal(await reserved(h.store, bob, "one"), low + 2);
  } finally {
    await h.close();
  }
});

Deno.test("registry gives a user with a port range only ports from it, and refuses others", async () => {
  const range = freeRange(6);
  const h = await harness({ portRange: range });
  try {
    const carol = await h.user("carol", { portLow: range.low + 2, portHigh: range.low + 3 });
    const s = h.session("s1", carol);
    assert.equal((await h.acquire(s, "one")).port, range.low + 2);
    assert.equal((await h.acquire(s, "two")).port, range.low + 3);
    await assertRefused(
      h.acquire(s, "three"),
      "port_taken",
      `no free public port left in the range ${range.low + 2}-${range.low + 3}`,
    );
    await assertRefused(
      h.acquire(s, "four", range.low),
      "port_out_of_range",
      `port ${range.low} is outside your allowed range ${range.low + 2}-${
        range.low + 3
      } (choose a port in that range, or none)`,
    );
    // Users without a range still get ports from the server's.
    const web = await h.acquire(h.session("s2"), "web");
    assert.ok(
      h.ports.inRange(web.port) && web.port !== range.low + 2 && web.port !== range.low + 3,
    );
  } finally {
    await h.close();
  }
});

// --- Per-user limits ---

Deno.test("a user's maxTunnels overrides the server's per-client default", async () => {
  const h = await harness({ maxTunnelsPerClient: 3 });
  try {
    const dan = await h.user("dan", { maxTunnels: 1 });
    const s = h.session("s1", dan);
    await h.acquire(s, "one");
    await assertRefused(
      h.acquire(s, "two"),
      "tunnel_limit",
      "tunnel limit reached: at most 1 tunnels per user",
    );
    // Alice has no limit of her own, so the server's default of 3 applies.
    const a = h.session("s2");
    await h.acquire(a, "one");
    await h.acquire(a, "two");
    await h.acquire(a, "three");
  } finally {
    await h.close();
  }
});

Deno.test("a user's maxConnections overrides the server's per-client default", async () => {
  const h = await harness({ maxConnectionsPerClient: 256, holdTimeoutMs: 10_000 });
  const dan = await h.user("dan", { maxConnections: 1 });
  const s = h.session("s1", dan);
  const tunnel = await h.acquire(s, "web");
  const first = await connect(tunnel);
  try {
    await s.requested(1);
    const second = await connect(tunnel);
    try {
      assert.equal(await untilClosed(second), 0);
      assert.equal(h.stats.refusals.get("connection_limit"), 1);
      assert.equal(s.requests.length, 1);
      assert.equal(tunnel.pending.length, 1);
    } finally {
      second.close();
    }
  } finally {
    first.close();
    await h.close();
  }
});

// --- Monthly quota ---

Deno.test("broker closes a public connection at once when the user's monthly quota is used up, and tells the client", async () => {
  const h = await harness({ holdTimeoutMs: 10_000 });
  const erin = await h.user("erin", { monthlyQuotaBytes: 1000 });
  await h.store.addUsage([{
    userId: erin.id,
    tunnel: "web",
    hour: hourStart(h.clock.now()),
    bytesIn: 600,
    bytesOut: 400,
    connections: 3,
    errors: 0,
  }]);
  assert.equal(await h.usage.monthBytes(erin.id), 1000);
  const s = h.session("s1", erin);
  const tunnel = await h.acquire(s, "web");
  const user = await connect(tunnel);
  try {
    assert.equal(await untilClosed(user), 0);
    assert.equal(h.stats.refusals.get("quota_exceeded"), 1);
    assert.equal(s.notices.length, 1);
    assert.equal(s.notices[0]!.code, "quota_exceeded");
    const message = s.notices[0]!.message;
    assert.ok(message.includes("monthly transfer quota reached"), message);
    assert.ok(message.includes("erin") && message.includes("web"), message);
    assert.equal(tunnel.pending.length, 0);
    assert.equal(s.requests.length, 0, "the client is not asked for a stream");
    assert.equal(h.stats.connectionsActive, 0);
  } finally {
    user.close();
    await h.close();
  }
});

Deno.test("broker counts bytes not yet flushed towards the monthly quota", async () => {
  const h = await harness({ holdTimeoutMs: 10_000 });
  const erin = await h.user("erin", { monthlyQuotaBytes: 1000 });
  await h.store.addUsage([{
    userId: erin.id,
    tunnel: "web",
    hour: hourStart(h.clock.now()),
    bytesIn: 990,
    bytesOut: 0,
    connections: 1,
    errors: 0,
  }]);
  assert.equal(await h.usage.monthBytes(erin.id), 990);
  const s = h.session("s1", erin);
  const tunnel = await h.acquire(s, "web");
  const first = await connect(tunnel);
  try {
    // Under the quota: the connection waits for a stream as usual.
    await s.requested(1);
    h.usage.bytesOut(erin.id, "erin", "web", 10);
    const second = await connect(tunnel);
    try {
      assert.equal(await untilClosed(second), 0);
      assert.equal(h.stats.refusals.get("quota_exceeded"), 1);
      assert.equal(s.notices.length, 1);
      assert.equal(tunnel.pending.length, 1, "the first connection still waits");
    } finally {
      second.close();
    }
  } finally {
    first.close();
    await h.close();
  }
});

// --- UsageMeter ---

Deno.test("usage meter counts bytes per user, tunnel and hour, and flush writes them once", async () => {
  const store = await openSqliteStore(":memory:");
  try {
    const alice = await store.createUser({ name: "alice", role: "user" });
    const bob = await store.createUser({ name: "bob", role: "user" });
    // Half an hour before a month ends.
    let t = Date.UTC(2024, 0, 31, 23, 30);
    const meter = new UsageMeter(store, () => t);
    const jan = hourStart(t);
    meter.connection(alice.id, "web");
    meter.bytesIn(alice.id, "alice", "web", 100);
    meter.bytesOut(alice.id, "alice", "web", 40);
    meter.error(alice.id, "web");
    meter.bytesIn(bob.id, "bob", "db", 7);
    t += HOUR;
    const feb = hourStart(t);
    meter.bytesIn(alice.id, "alice", "web", 5);
    meter.bytesOut(alice.id, "alice", "ssh", 2);
    await meter.flush();
    const row = { connections: 0, errors: 0, bytesIn: 0, bytesOut: 0 };
    assert.deepEqual(await store.usage({}), [
      {
        ...row,
        userId: alice.id,
        tunnel: "web",
        hour: jan,
        bytesIn: 100,
        bytesOut: 40,
        connections: 1,
        errors: 1,
      },
      { ...row, userId: bob.id, tunnel: "db", hour: jan, bytesIn: 7 },
      { ...row, userId: alice.id, tunnel: "ssh", hour: feb, bytesOut: 2 },
      { ...row, userId: alice.id, tunnel: "web", hour: feb, bytesIn: 5 },
    ]);
    // Nothing new: a second flush adds nothing.
    await meter.flush();
    assert.equal((await store.usage({})).length, 4);
    assert.equal(await store.bytesSince(alice.id, 0), 147);
    // More bytes in the same hour are added to the stored row.
    meter.bytesIn(alice.id, "alice", "web", 1);
    await meter.flush();
    assert.deepEqual(await store.usage({ userId: alice.id, since: feb }), [
      { ...row, userId: alice.id, tunnel: "ssh", hour: feb, bytesOut: 2 },
      { ...row, userId: alice.id, tunnel: "web", hour: feb, bytesIn: 6 },
    ]);
    // The month is February now: January's bytes do not count towards it.
    assert.equal(await meter.monthBytes(alice.id), 8);
    assert.deepEqual(meter.totals.get(alice.id), { name: "alice", bytesIn: 106, bytesOut: 42 });
  } finally {
    await store.close();
  }
});

Deno.test("usage meter keeps its counts when a flush fails and writes them with the next one", async () => {
  const store = await openSqliteStore(":memory:");
  try {
    const alice = await store.createUser({ name: "alice", role: "user" });
    const t = Date.UTC(2024, 4, 10, 12, 15);
    // The real store, except that its first addUsage fails as a locked database would.
    let failures = 1;
    const flaky = new Proxy(store, {
      get(target, prop) {
        if (prop === "addUsage" && failures > 0) {
          failures--;
          return () => Promise.reject(new Error("database is locked"));
        }
        const v = Reflect.get(target, prop, target);
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const meter = new UsageMeter(flaky, () => t);
    meter.connection(alice.id, "web");
    meter.bytesIn(alice.id, "alice", "web", 10);
    const failing = meter.flush();
    // Counted while the failing flush is in flight: kept too.
    meter.bytesOut(alice.id, "alice", "web", 5);
    await assert.rejects(failing, /database is locked/);
    assert.deepEqual(await store.usage({}), []);
    assert.equal(await meter.monthBytes(alice.id), 15);
    await meter.flush();
    assert.deepEqual(await store.usage({}), [{
      userId: alice.id,
      tunnel: "web",
      hour: hourStart(t),
      bytesIn: 10,
      bytesOut: 5,
      connections: 1,
      errors: 0,
    }]);
    assert.equal(await meter.monthBytes(alice.id), 15, "flushed bytes are not counted twice");
  } finally {
    await store.close();
  }
});
