// Tests for the Broker, TunnelRegistry, PortAllocator, PortBook and UsageMeter together, with a fake
// control session, a real (SQLite) store, real public TCP listeners and real data connections
// (a loopback WebSocket with a Mux on each end; the client end dials real local services).
import assert from "node:assert/strict";
import { PortBook } from "../../server/accounts/port_book.ts";
import { UsageMeter } from "../../server/accounts/usage.ts";
import { type ServerConfig, serverConfig } from "../../server/config.ts";
import { PortAllocator, TunnelRefused } from "../../server/listeners/port_allocator.ts";
import { Stats } from "../../server/stats.ts";
import { openSqliteStore } from "../../server/store/sqlite_store.ts";
import type { Store, User, UserLimits } from "../../server/store/store.ts";
import { Broker, type BrokerSession } from "../../server/streams/broker.ts";
import { type Tunnel, type TunnelOwnerSession, TunnelRegistry } from "../../server/tunnels.ts";
import { log } from "../../shared/log.ts";
import type { Mux } from "../../shared/mux.ts";
import type { TunnelRequest } from "../../shared/protocol.ts";
import { Secret } from "../../shared/secret.ts";
import { resetSupport } from "../../shared/tcp_reset.ts";
import { hourStart } from "../../shared/units.ts";
import { MuxPair } from "../support/mux_pair.ts";
import {
  closedPort,
  echo,
  randomBytes,
  type ReadResult,
  readToEnd,
  sha256,
  writeAll,
} from "../support/tcp_services.ts";
import { Notifier, ticks, within } from "../support/wait.ts";
import { freeRange, portFree } from "../support/net.ts";
import { assertRefused } from "../support/refusals.ts";

const HOST = "127.0.0.1";
/** Client id of the fake sessions unless a test names another. */
const DEFAULT_CLIENT_ID = "client-a-0123456789";
const HOUR = 3_600_000;
// Loads libc once, before any test, so the resource sanitizer does not count it as leaked by the
// first test whose user connection is reset.
assert.ok(resetSupport().ok, "these tests need --allow-ffi: resets are sent through FFI");

/** Deadline for anything that should happen promptly on loopback. */
const PROMPTLY_MS = 10_000;

/** Server statistics that wake waiters whenever a connection opens or closes or a refusal or error is counted. */
class WatchedStats extends Stats {
  constructor(now: () => number, readonly changed: Notifier) {
    super(now);
  }
  override connectionOpened(): void {
    super.connectionOpened();
    this.changed.notify();
  }
  override connectionClosed(): void {
    super.connectionClosed();
    this.changed.notify();
  }
  override error(kind: string): void {
    super.error(kind);
    this.changed.notify();
  }
  override refusal(reason: string): void {
    super.refusal(reason);
    this.changed.notify();
  }
}

/**
 * The control-session side of the broker and registry, recording what it is told. Its data
 * connections are whatever the test gives it; `pickMux()` returns the open one with the fewest
 * streams, as ControlSession does, and records every answer.
 */
class FakeSession implements BrokerSession, TunnelOwnerSession {
  readonly owner: string;
  /** Sessions of one test share a client id (one installation reconnecting) unless told otherwise. */
  readonly clientId: string;
  readonly remote: string;
  closed = false;
  readonly userId: number;
  readonly userName: string;
  readonly limits: UserLimits;
  /** Data connections (server ends) this session has been given. */
  readonly muxes: Mux[] = [];
  /** What every `pickMux()` call returned, in order. */
  readonly picks: (Mux | null)[] = [];
  readonly lost: { tunnel: Tunnel; reason: string }[] = [];
  readonly notices: { code: string; message: string }[] = [];
  readonly #tunnels = new Set<Tunnel>();

  constructor(
    readonly id: string,
    user: User,
    readonly broker: Broker,
    clientId = DEFAULT_CLIENT_ID,
    remote = "198.51.100.7",
  ) {
    this.owner = `u${user.id}`;
    this.clientId = clientId;
    this.remote = remote;
    this.userId = user.id;
    this.userName = user.name;
    this.limits = user.limits;
  }

  /** Records a tunnel the registry granted to this session. */
  adopt(tunnel: Tunnel): Tunnel {
    this.#tunnels.add(tunnel);
    return tunnel;
  }

  /** Like ControlSession: every tunnel granted and not taken over, detached or not. */
  tunnels(): Iterable<Tunnel> {
    return this.#tunnels;
  }

  pickMux(): Mux | null {
    let best: Mux | null = null;
    for (const m of this.muxes) if (!m.closed && (!best || m.size < best.size)) best = m;
    this.picks.push(best);
    return best;
  }

  /** Data connections arrived: as ControlSession.addMux does, serve the connections waiting. */
  addMux(...muxes: Mux[]): void {
    this.muxes.push(...muxes);
    this.broker.serveWaiting(this);
  }

  lostTunnel(tunnel: Tunnel, reason: string): void {
    this.#tunnels.delete(tunnel);
    this.lost.push({ tunnel, reason });
  }

  notice(code: "quota_exceeded", message: string): void {
    this.notices.push({ code, message });
  }
}

/**
 * A broker, registry, port allocator, port book and usage meter wired as server.ts does, on a small
 * free port range, over a real SQLite store (in memory unless `storePath` names a file). The user
 * "alice" always exists. `until()` re-checks its condition whenever a connection opens or closes,
 * a refusal or error is counted, or a tunnel opens or closes.
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
  const changed = new Notifier();
  const store = await openSqliteStore(storePath);
  const stats = new WatchedStats(clock.now, changed);
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
    () => changed.notify(),
  );
  const pairs: MuxPair[] = [];
  /** The stored user `name`, created (with `limits`) if missing. */
  const user = async (name: string, limits: Partial<UserLimits> = {}) =>
    await store.userByName(name) ?? await store.createUser({ name, role: "user", limits });
  const alice = await user("alice");
  const session = (id: string, u: User = alice, clientId?: string, remote?: string) =>
    new FakeSession(id, u, broker, clientId, remote);
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
    /**
     * A real data connection (not yet given to any session): its client end routes each of
     * `tunnels` to a local echo service, or to `localPort` when given.
     */
    async dataConn(tunnels: string[] = ["adb"], localPort?: number): Promise<MuxPair> {
      const pair = await MuxPair.start();
      pairs.push(pair);
      for (const t of tunnels) {
        if (localPort === undefined) pair.service(t, echo);
        else pair.publish(t, localPort);
      }
      return pair;
    },
    /** A real data connection whose client end is a raw peer: the test reads and writes frames. */
    async rawDataConn(): Promise<MuxPair> {
      const pair = await MuxPair.start({ raw: true });
      pairs.push(pair);
      return pair;
    },
    /** Waits until `check()` holds; fails after `ms`. */
    until(what: string, check: () => boolean, ms = PROMPTLY_MS): Promise<void> {
      return changed.until(what, check, ms);
    },
    /**
     * Closes the data connections (resetting streams still on them), releases every tunnel so no
     * listener or timer outlives the test, and closes the store.
     */
    async close() {
      await Promise.all(pairs.map((p) => p.close()));
      for (const t of registry.all()) registry.release(t, "test over");
      await store.close();
      // Accepts pending on listeners that were just closed settle within a few turns.
      await ticks(3);
    },
  };
}

function request(name: string, remotePort = 0): TunnelRequest {
  return { name, kind: "tcp", local: "127.0.0.1:5555", remotePort };
}

function connect(tunnel: Tunnel): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: HOST, port: tunnel.port });
}

/** Reads `conn` until the server ends it; asserts that it sent nothing first. */
async function assertClosedEmpty(conn: Deno.Conn): Promise<ReadResult> {
  const got = await within(readToEnd(conn), PROMPTLY_MS, "the server to close the connection");
  assert.equal(got.bytes, 0, "nothing was sent before the close");
  assert.ok(["EOF", "ConnectionReset"].includes(got.end), `ended with ${got.end}`);
  return got;
}

/**
 * Sends `data` through the tunnel as a user would (write all, then half-close) while reading the
 * reply to its end; resolves with what came back.
 */
async function roundTrip(conn: Deno.TcpConn, data: Uint8Array): Promise<ReadResult> {
  const [, got] = await within(
    Promise.all([
      (async () => {
        await writeAll(conn, data);
        await conn.closeWrite();
      })(),
      readToEnd(conn),
    ]),
    PROMPTLY_MS,
    `a round trip of ${data.byteLength} bytes`,
  );
  return got;
}

/** Asserts that `data` came back intact and the reply ended cleanly. */
function assertEchoed(got: ReadResult, data: Uint8Array): void {
  assert.equal(got.end, "EOF", "the reply ends with a clean FIN");
  assert.equal(got.bytes, data.byteLength);
  assert.equal(got.sha256, sha256(data));
}

/** The port the store holds for a user's named tunnel, or null. */
async function reserved(store: Store, user: User, tunnel: string): Promise<number | null> {
  return (await store.reservationFor(user.id, tunnel))?.port ?? null;
}

// --- Holding and bridging public connections ---

Deno.test("broker holds a public connection while the session has no data connection, then drops it after the hold timeout", async () => {
  const h = await harness({ holdTimeoutMs: 200 });
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
  const user = await connect(tunnel);
  try {
    const started = Date.now();
    await h.until("the connection to be held", () => h.stats.connectionsActive === 1);
    assert.equal(tunnel.pending.length, 1);
    assert.deepEqual(s.picks, [null], "the session was asked once and had no data connection");
    // Asking again without a data connection changes nothing.
    h.broker.serveWaiting(s);
    assert.equal(tunnel.pending.length, 1);
    await assertClosedEmpty(user);
    const held = Date.now() - started;
    assert.ok(held >= 150 && held < 2000, `held for ${held} ms with a 200 ms hold timeout`);
    assert.equal(tunnel.pending.length, 0);
    assert.equal(h.stats.refusals.get("hold_timeout"), 1);
    await h.until("the connection to be let go", () => h.stats.connectionsActive === 0);
    assert.equal(h.broker.bridges.size, 0);
  } finally {
    user.close();
    await h.close();
  }
});

Deno.test("broker bridges every held connection once the session gets a data connection, and counts its bytes for the user", async () => {
  const h = await harness({ holdTimeoutMs: 10_000 });
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
  // More than the initial 256 KiB window in one direction, and a small one.
  const payloads = [randomBytes(1024 * 1024 + 123), randomBytes(3000)];
  const users = [await connect(tunnel), await connect(tunnel)];
  try {
    await h.until("both connections to be held", () => tunnel.pending.length === 2);
    const pair = await h.dataConn(["adb"]);
    s.addMux(pair.server);
    assert.equal(tunnel.pending.length, 0, "serveWaiting bridged both at once");
    assert.equal(pair.server.size, 2);
    assert.equal(h.broker.bridges.size, 2);
    assert.equal(tunnel.active.size, 2);
    assert.equal(h.stats.streamsOpened, 2);
    const got = await Promise.all(users.map((u, i) => roundTrip(u, payloads[i]!)));
    got.forEach((g, i) => assertEchoed(g, payloads[i]!));
    // Both streams end cleanly, which gives back their slots.
    await h.until("both streams to end", () => h.stats.connectionsActive === 0);
    assert.equal(h.broker.bridges.size, 0);
    assert.equal(tunnel.active.size, 0);
    assert.deepEqual([...h.stats.errors], []);
    const total = payloads[0]!.byteLength + payloads[1]!.byteLength;
    assert.equal(h.stats.bytesIn, total);
    assert.equal(h.stats.bytesOut, total);
    assert.deepEqual(h.usage.totals.get(h.alice.id), {
      name: "alice",
      bytesIn: total,
      bytesOut: total,
    });
    await h.usage.flush();
    assert.deepEqual(await h.store.usage({ userId: h.alice.id }), [{
      userId: h.alice.id,
      tunnel: "adb",
      hour: hourStart(h.clock.now()),
      bytesIn: total,
      bytesOut: total,
      connections: 2,
      errors: 0,
    }]);
  } finally {
    for (const u of users) u.close();
    await h.close();
  }
});

Deno.test("broker opens a stream for a new connection at once, naming the tunnel and the user's address, and carries both directions", async () => {
  const h = await harness({ holdTimeoutMs: 10_000 });
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
  const pair = await h.rawDataConn();
  const peer = pair.peer!;
  s.addMux(pair.server);
  const user = await connect(tunnel);
  try {
    const open = await peer.nextOpen();
    assert.deepEqual(open, {
      type: "open",
      id: open.id,
      tunnel: "adb",
      remote: `${HOST}:${(user.localAddr as Deno.NetAddr).port}`,
    });
    assert.equal(tunnel.pending.length, 0, "never held");
    assert.deepEqual(s.picks, [pair.server]);
    await writeAll(user, new TextEncoder().encode("host:version"));
    const up = await peer.next("the user's bytes", (f) => f.type === "data" && f.id === open.id);
    assert.equal(up.type === "data" && new TextDecoder().decode(up.payload), "host:version");
    peer.sendData(open.id, new TextEncoder().encode("OKAY"));
    peer.send({ type: "eof", id: open.id });
    const reply = await within(readToEnd(user, { keep: true }), PROMPTLY_MS, "the reply");
    assert.equal(reply.end, "EOF");
    assert.equal(new TextDecoder().decode(reply.data), "OKAY");
    await user.closeWrite();
    await peer.next("EOF from the user", (f) => f.type === "eof" && f.id === open.id);
    await h.until("the stream to end", () => h.stats.connectionsActive === 0);
    assert.deepEqual([...h.stats.errors], []);
    assert.deepEqual(h.usage.totals.get(h.alice.id), { name: "alice", bytesIn: 12, bytesOut: 4 });
  } finally {
    user.close();
    await h.close();
  }
});

Deno.test("broker spreads connections over the data connections the session picks, one pick per connection", async () => {
  const h = await harness({ holdTimeoutMs: 10_000 });
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
  const users: Deno.TcpConn[] = [];
  try {
    // Two connections arrive before the client has a data connection, then two data connections
    // arrive together: the held ones are picked for one by one, not all sent down the first.
    for (let i = 0; i < 2; i++) users.push(await connect(tunnel));
    await h.until("two connections to be held", () => tunnel.pending.length === 2);
    const a = await h.dataConn(["adb"]);
    const b = await h.dataConn(["adb"]);
    s.addMux(a.server, b.server);
    assert.equal(tunnel.pending.length, 0);
    assert.deepEqual([a.server.size, b.server.size], [1, 1]);
    // Two more arrive while both are open: each goes where the session's pick says.
    for (let i = 2; i < 4; i++) {
      users.push(await connect(tunnel));
      await h.until(`connection ${i + 1} to be accepted`, () => h.stats.connectionsTotal === i + 1);
    }
    assert.deepEqual([a.server.size, b.server.size], [2, 2]);
    assert.deepEqual(s.picks, [null, null, a.server, b.server, a.server, b.server]);
    const payloads = users.map((_, i) => randomBytes(100_000 + i * 7919));
    const got = await Promise.all(users.map((u, i) => roundTrip(u, payloads[i]!)));
    got.forEach((g, i) => assertEchoed(g, payloads[i]!));
    // The client end of each data connection carried two of them.
    assert.equal(a.clientStreams.size, 2);
    assert.equal(b.clientStreams.size, 2);
    await h.until("every stream to end", () => h.stats.connectionsActive === 0);
    assert.deepEqual([...h.stats.errors], []);
  } finally {
    for (const u of users) u.close();
    await h.close();
  }
});

Deno.test("a connection held while its client was away is bridged over the client's new session, not the detached one", async () => {
  const h = await harness({ holdTimeoutMs: 10_000 });
  const s1 = h.session("s1");
  const tunnel = await h.acquire(s1, "adb");
  h.registry.detach(s1, 10_000);
  const user = await connect(tunnel);
  try {
    await h.until("the connection to be held", () => tunnel.pending.length === 1);
    assert.deepEqual(s1.picks, [], "a detached tunnel has no session to ask");
    // A data connection of the old session turning up late must not take it.
    const stale = await h.dataConn(["adb"]);
    s1.addMux(stale.server);
    assert.equal(tunnel.pending.length, 1);
    assert.equal(stale.server.size, 0);
    // The client comes back: same tunnel, same port; its first data connection gets the user.
    const s2 = h.session("s2");
    assert.equal(await h.acquire(s2, "adb"), tunnel);
    const fresh = await h.dataConn(["adb"]);
    s2.addMux(fresh.server);
    assert.equal(tunnel.pending.length, 0);
    assert.equal(fresh.server.size, 1);
    const data = randomBytes(50_000);
    assertEchoed(await roundTrip(user, data), data);
    assert.equal(stale.clientStreams.size, 0);
    assert.equal(fresh.clientStreams.size, 1);
    assert.equal(h.stats.refusals.get("hold_timeout"), undefined);
  } finally {
    user.close();
    await h.close();
  }
});

Deno.test("broker gives a connection's slot back when its stream ends, so the next one fits under the limit", async () => {
  const h = await harness({ maxConnectionsPerClient: 1, holdTimeoutMs: 10_000 });
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
  const pair = await h.dataConn(["adb"]);
  s.addMux(pair.server);
  const users: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const user = await connect(tunnel);
      users.push(user);
      const data = randomBytes(10_000);
      assertEchoed(await roundTrip(user, data), data);
      await h.until(`stream ${i + 1} to end`, () => h.stats.connectionsActive === 0);
    }
    assert.equal(h.stats.connectionsTotal, 3);
    assert.equal(h.stats.refusals.get("connection_limit"), undefined);
  } finally {
    for (const u of users) u.close();
    await h.close();
  }
});

Deno.test("broker resets the user's connection when its data connection is lost, and counts the error", async () => {
  const h = await harness({ holdTimeoutMs: 10_000 });
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
  const pair = await h.dataConn(["adb"]);
  s.addMux(pair.server);
  const user = await connect(tunnel);
  try {
    const hello = new TextEncoder().encode("hello");
    await writeAll(user, hello);
    const reading = readToEnd(user, { keep: true });
    await pair.until("the echo to reach the user", () => {
      const r = [...pair.clientStreams.values()][0];
      return r !== undefined && r.sent === hello.byteLength;
    });
    // The WebSocket goes away mid-stream (the client's network dropped).
    pair.clientWs.abort();
    const got = await within(reading, PROMPTLY_MS, "the user's connection to end");
    assert.equal(got.end, "ConnectionReset", "a cut-off stream never looks complete");
    await h.until("the stream to end", () => h.stats.connectionsActive === 0);
    assert.equal(h.stats.errors.get("closed"), 1);
    assert.equal(h.broker.bridges.size, 0);
    assert.equal(tunnel.active.size, 0);
    await h.usage.flush();
    const [row] = await h.store.usage({ userId: h.alice.id });
    assert.equal(row?.errors, 1);
    assert.equal(row?.connections, 1);
  } finally {
    user.close();
    await h.close();
  }
});

Deno.test("broker resets the user's connection when the client cannot reach its local service", async () => {
  const h = await harness({ holdTimeoutMs: 10_000 });
  const s = h.session("s1");
  const tunnel = await h.acquire(s, "adb");
  const pair = await h.dataConn(["adb"], closedPort());
  s.addMux(pair.server);
  const user = await connect(tunnel);
  try {
    const got = await within(readToEnd(user), PROMPTLY_MS, "the user's connection to end");
    assert.equal(got.end, "ConnectionReset");
    await h.until("the stream to end", () => h.stats.connectionsActive === 0);
    assert.equal(h.stats.errors.get("local_dial"), 1);
    assert.ok(!pair.server.closed, "one failed stream leaves the data connection up");
  } finally {
    user.close();
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
    await h.until("the connection to be held", () => tunnel.pending.length === 1);
    await h.until("the grace period to end", () => tunnel.closed);
    assert.ok(!h.ports.held(tunnel.port));
    assert.deepEqual(h.registry.all(), []);
    assert.equal(h.stats.tunnelsReleased, 1);
    // The connection held during the grace period is closed, and the port refuses new ones.
    await assertClosedEmpty(user);
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

Deno.test("registry grants exactly the per-user limit when 20 sessions of one user ask at once", async () => {
  const h = await harness({ maxTunnelsPerClient: 2, portRange: freeRange(20) });
  try {
    const sessions = Array.from(
      { length: 20 },
      (_, i) => h.session(`s${i}`, h.alice, `client-${String(i).padStart(12, "0")}`),
    );
    const results = await Promise.allSettled(sessions.map((s, i) => h.acquire(s, `t${i}`)));
    const granted = results.filter((r) => r.status === "fulfilled");
    const refused = results.flatMap((r) => r.status === "rejected" ? [r.reason] : []);
    assert.equal(granted.length, 2);
    assert.equal(refused.length, 18);
    for (const e of refused) {
      assert.ok(e instanceof TunnelRefused, `expected TunnelRefused, got ${e}`);
      assert.equal(e.code, "tunnel_limit");
      assert.equal(e.message, "tunnel limit reached: at most 2 tunnels per user");
    }
    assert.equal(h.registry.all().length, 2);
    assert.equal(h.stats.tunnelsActive, 2);
  } finally {
    await h.close();
  }
});

Deno.test("registry refuses a live tunnel's name to another client id, naming its holder and since when", async () => {
  const h = await harness();
  try {
    const s1 = h.session("s1", h.alice, "machine-a-0123456789", "198.51.100.7");
    const tunnel = await h.acquire(s1, "adb");
    h.clock.advance(5_000);
    const want =
      "tunnel adb is in use by another client (198.51.100.7, since 2023-11-14T22:13:20Z); " +
      "pick another --name or stop that client";
    const other = () => h.session("s2", h.alice, "machine-b-0123456789", "203.0.113.9");
    await assertRefused(h.acquire(other(), "adb"), "name_in_use", want);
    // Neither its port nor another port moves the name away from the live holder.
    await assertRefused(h.acquire(other(), "adb", tunnel.port), "name_in_use", want);
    await assertRefused(h.acquire(other(), "adb", tunnel.port + 1), "name_in_use", want);
    assert.equal(s1.lost.length, 0, "the holder is told nothing");
    assert.equal(tunnel.session, s1);
    assert.ok(!tunnel.closed);
    assert.equal(h.stats.tunnelsCreated, 1);

    // The same client id takes it over (a reconnect the server has not noticed yet).
    const s3 = h.session("s3", h.alice, "machine-a-0123456789", "198.51.100.8");
    assert.equal(await h.acquire(s3, "adb"), tunnel);
    assert.deepEqual(s1.lost.map((l) => l.reason), [
      "taken over by a newer connection of the same client",
    ]);

    // Once the holder is gone (detached, in its grace period), another client may resume it.
    h.registry.detach(s3, 60_000);
    const s4 = h.session("s4", h.alice, "machine-b-0123456789", "203.0.113.9");
    assert.equal(await h.acquire(s4, "adb"), tunnel);
    // A holder whose control channel closed but is not detached yet counts as gone too.
    s4.closed = true;
    const s5 = h.session("s5", h.alice, "machine-c-0123456789");
    assert.equal(await h.acquire(s5, "adb"), tunnel);
    assert.equal(h.stats.tunnelsCreated, 1);
  } finally {
    await h.close();
  }
});

Deno.test("two owners of one user (two static tokens) may both use a name; the reservation stays with the first", async () => {
  const h = await harness();
  try {
    const first = await h.acquire(h.session("s1"), "adb");
    const second = Object.assign(h.session("s2", h.alice, "machine-b-0123456789"), {
      owner: `u${h.alice.id}.static1`,
    });
    const theirs = await h.acquire(second, "adb");
    assert.notEqual(theirs, first);
    assert.notEqual(theirs.port, first.port);
    assert.equal(await reserved(h.store, h.alice, "adb"), first.port);
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
    await assertClosedEmpty(second);
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
    await h.until("the first connection to be held", () => h.stats.connectionsActive === 1);
    const second = await connect(b);
    try {
      await assertClosedEmpty(second);
      assert.equal(h.stats.refusals.get("connection_limit"), 1);
      assert.equal(s.picks.length, 1, "only the first connection asked for a data connection");
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
    await h.until("the first connection to be held", () => h.stats.connectionsActive === 1);
    const second = await connect(tunnel);
    try {
      await assertClosedEmpty(second);
      assert.equal(h.stats.refusals.get("connection_limit"), 1);
      assert.equal(s.picks.length, 1, "only the first connection asked for a data connection");
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
    await assertClosedEmpty(user);
    assert.equal(h.stats.refusals.get("quota_exceeded"), 1);
    assert.equal(s.notices.length, 1);
    assert.equal(s.notices[0]!.code, "quota_exceeded");
    const message = s.notices[0]!.message;
    assert.ok(message.includes("monthly transfer quota reached"), message);
    assert.ok(message.includes("erin") && message.includes("web"), message);
    assert.equal(tunnel.pending.length, 0);
    assert.deepEqual(s.picks, [], "the session is not asked for a data connection");
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
    await h.until("the first connection to be held", () => h.stats.connectionsActive === 1);
    h.usage.bytesOut(erin.id, "erin", "web", 10);
    const second = await connect(tunnel);
    try {
      await assertClosedEmpty(second);
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
