// Port reservations with a lifetime: the registry, port book and allocator over a real (SQLite)
// store and real listeners, with a fake clock — expiry, per-user caps, recycling, explicit ports.
import assert from "node:assert/strict";
import {
  justReservedMessage,
  PortBook,
  type PortBookOptions,
} from "../../server/accounts/port_book.ts";
import { parseServerArgs, serverConfig } from "../../server/config.ts";
import type { ServerConfig } from "../../server/config.ts";
import { PortAllocator } from "../../server/listeners/port_allocator.ts";
import { Stats } from "../../server/stats.ts";
import { openSqliteStore } from "../../server/store/sqlite_store.ts";
import type { PortReservation, User, UserLimits } from "../../server/store/store.ts";
import { type Tunnel, type TunnelOwnerSession, TunnelRegistry } from "../../server/tunnels.ts";
import { log } from "../../shared/log.ts";
import type { PortRange } from "../../shared/address.ts";
import { Secret } from "../../shared/secret.ts";
import { ticks } from "../support/wait.ts";
import { freeRange, portFree } from "../support/net.ts";
import { assertRefused } from "../support/refusals.ts";

const HOST = "127.0.0.1";
const DAY = 86_400_000;

/** The control session as the registry sees it; these tests open no user connections. */
class Session implements TunnelOwnerSession {
  readonly owner: string;
  readonly clientId: string;
  readonly remote = "198.51.100.7";
  readonly closed = false;
  readonly userId: number;
  readonly userName: string;
  readonly limits: UserLimits;
  constructor(readonly id: string, user: User) {
    this.owner = `u${user.id}`;
    this.clientId = `client-of-${user.name}`;
    this.userId = user.id;
    this.userName = user.name;
    this.limits = user.limits;
  }
  tunnels(): Iterable<Tunnel> {
    return [];
  }
  pickMux(): null {
    return null;
  }
  notice(): void {}
  lostTunnel(): void {}
}

/**
 * A registry, allocator and port book wired as server.ts does, on `range`, over an in-memory
 * SQLite store, with a clock the test moves. The user "alice" always exists.
 */
async function harness(range: PortRange, book: PortBookOptions = {}) {
  let now = Date.UTC(2026, 0, 1);
  const clock = { now: () => now, advance: (ms: number) => (now += ms) };
  const config: ServerConfig = serverConfig({
    tokens: [new Secret("reservations-test-token")],
    portRange: range,
    bindHost: HOST,
    tunnelsPerMinute: 1000,
  });
  const store = await openSqliteStore(":memory:");
  const dropped: { port: number; tunnel: string | null; reason: string }[] = [];
  const portBook = new PortBook(store, clock.now, {
    defaultMaxTunnels: config.maxTunnelsPerClient,
    onDropped: (r, reason) => dropped.push({ port: r.port, tunnel: r.tunnel, reason }),
    ...book,
  });
  const ports = new PortAllocator(range, HOST, () => 0);
  const registry = new TunnelRegistry(
    ports,
    portBook,
    config,
    new Stats(clock.now),
    log("test"),
    (_tunnel, conn) => conn.close(),
    clock.now,
  );
  const user = async (name: string, limits: Partial<UserLimits> = {}) =>
    await store.userByName(name) ?? await store.createUser({ name, role: "user", limits });
  const alice = await user("alice");
  let sessions = 0;
  return {
    config,
    clock,
    store,
    book: portBook,
    ports,
    registry,
    dropped,
    alice,
    user,
    /** A tunnel named `name` for `u` (a new session each time, as after a reconnect). */
    acquire(u: User, name: string, remotePort = 0): Promise<Tunnel> {
      return registry.acquire(
        new Session(`s${++sessions}`, u),
        { name, kind: "tcp", local: "127.0.0.1:5555", remotePort },
        "tunnel.test",
      );
    },
    /** Releases the tunnel and waits until its port can be bound again. */
    async release(t: Tunnel): Promise<void> {
      registry.release(t, "client went away");
      await portFree(t.port);
    },
    /** The user's reservations, by port. */
    async reservations(u: User): Promise<PortReservation[]> {
      return await store.listReservations(u.id);
    },
    async close() {
      for (const t of registry.all()) registry.release(t, "test over");
      await portBook.settled();
      await store.close();
      await ticks(3);
    },
  };
}

Deno.test("one user cycling 100 tunnel names over a range of 100 ports leaves ports for a new user", async () => {
  const range = freeRange(100);
  const h = await harness(range);
  try {
    for (let i = 0; i < 100; i++) {
      h.clock.advance(1000);
      const t = await h.acquire(h.alice, `name${i}`);
      await h.release(t);
    }
    // The cap (alice's max tunnels, 16 by default) keeps her most recently used names' ports.
    const kept = await h.reservations(h.alice);
    assert.equal(kept.length, 16);
    assert.deepEqual(
      kept.map((r) => r.tunnel).sort(),
      Array.from({ length: 16 }, (_, i) => `name${84 + i}`).sort(),
    );
    assert.equal(h.dropped.length, 84);
    assert.ok(h.dropped.every((d) => d.reason === "recycled"));

    const bob = await h.user("bob");
    const theirs = await h.acquire(bob, "web");
    assert.ok(theirs.port >= range.low && theirs.port <= range.high);
    assert.ok(!kept.some((r) => r.port === theirs.port), "not one of alice's kept ports");
    assert.equal((await h.store.reservationFor(bob.id, "web"))?.port, theirs.port);
  } finally {
    await h.close();
  }
});

Deno.test("a user's next name never loops on their own reservations: a full range recycles the least recently used", async () => {
  const range = freeRange(4);
  // A cap above the range, so that the range fills with alice's own reservations.
  const h = await harness(range);
  try {
    const alice = await h.store.setUserLimits(h.alice.id, { maxReservedPorts: 10 });
    const first: number[] = [];
    for (let i = 0; i < 4; i++) {
      h.clock.advance(1000);
      const t = await h.acquire(alice, `n${i}`);
      first.push(t.port);
      await h.release(t);
    }
    assert.deepEqual(first.toSorted(), [range.low, range.low + 1, range.low + 2, range.low + 3]);
    // Each next name takes the port of the least recently used one, every time, at once.
    for (let i = 4; i < 24; i++) {
      h.clock.advance(1000);
      const t = await h.acquire(alice, `n${i}`);
      assert.equal(t.port, first[i % 4], `n${i} recycles n${i - 4}'s port`);
      assert.equal(await h.store.reservationFor(alice.id, `n${i - 4}`), null);
      assert.equal((await h.store.reservationFor(alice.id, `n${i}`))?.port, t.port);
      await h.release(t);
    }
    assert.equal((await h.reservations(alice)).length, 4);
    assert.ok(h.dropped.every((d) => d.reason === "taken_over"));
    // A name that still has its reservation gets its own port back.
    assert.equal((await h.acquire(alice, "n23")).port, first[23 % 4]);
  } finally {
    await h.close();
  }
});

Deno.test("while a user's other tunnel holds a reservation, a new name gets a free port, not that one", async () => {
  const range = freeRange(3);
  const h = await harness(range);
  try {
    // Asked for by number, so the allocator's cursor still points at it afterwards.
    const web = await h.acquire(h.alice, "web", range.low);
    await h.release(web);
    // The port is free on the machine but reserved for alice's "web": "api" gets the next one
    // (it used to get this one and be refused as "reserved by another user", again and again).
    const api = await h.acquire(h.alice, "api");
    assert.equal(api.port, range.low + 1);
    assert.equal((await h.store.reservationFor(h.alice.id, "web"))?.port, web.port);
    assert.equal((await h.store.reservationFor(h.alice.id, "api"))?.port, api.port);
  } finally {
    await h.close();
  }
});

Deno.test("a port taken by the user's own other tunnel in between is refused saying so, not 'another user'", () => {
  const held: PortReservation = {
    port: 10005,
    userId: 7,
    tunnel: "web",
    createdAt: 0,
    lastUsedAt: 0,
    explicit: false,
  };
  assert.equal(
    justReservedMessage(10005, 7, held),
    'port 10005 was just reserved for your tunnel "web"; try again (another port will be picked)',
  );
  assert.equal(
    justReservedMessage(10005, 8, held),
    "port 10005 was just reserved by another user; try again",
  );
});

Deno.test("an automatic reservation not used for --reservation-ttl goes to the next user who needs the port", async () => {
  const range = freeRange(1);
  const h = await harness(range, { ttlMs: 30 * DAY });
  try {
    const web = await h.acquire(h.alice, "web");
    await h.release(web);
    const bob = await h.user("bob");
    const full = `no free public port left in the range ${range.low}-${range.high}`;
    h.clock.advance(30 * DAY);
    await assertRefused(h.acquire(bob, "db"), "port_taken", full);
    h.clock.advance(1);
    const db = await h.acquire(bob, "db");
    assert.equal(db.port, web.port);
    assert.equal(await h.store.reservationFor(h.alice.id, "web"), null);
    assert.deepEqual(h.dropped, [{ port: web.port, tunnel: "web", reason: "expired" }]);
    await h.release(db);
    // Asking for the port by number works the same way once bob's reservation has expired.
    h.clock.advance(31 * DAY);
    assert.equal((await h.acquire(h.alice, "web", web.port)).port, web.port);
  } finally {
    await h.close();
  }
});

Deno.test("an operator's explicit reservation never expires", async () => {
  const range = freeRange(1);
  const h = await harness(range, { ttlMs: DAY });
  try {
    await h.store.reservePort({
      userId: h.alice.id,
      tunnel: "ssh",
      port: range.low,
      at: h.clock.now(),
      explicit: true,
    });
    h.clock.advance(1000 * DAY);
    assert.deepEqual(await h.book.sweep([]), []);
    const bob = await h.user("bob");
    await assertRefused(
      h.acquire(bob, "db", range.low),
      "port_taken",
      `port ${range.low} is reserved for another user (choose another --remote-port)`,
    );
    await assertRefused(
      h.acquire(bob, "db"),
      "port_taken",
      `no free public port left in the range ${range.low}-${range.high}`,
    );
    const ssh = await h.acquire(h.alice, "ssh");
    assert.equal(ssh.port, range.low);
    assert.equal((await h.store.reservationFor(h.alice.id, "ssh"))?.explicit, true, "still");
  } finally {
    await h.close();
  }
});

Deno.test("a live tunnel's reservation is refreshed by the sweep, and its last use is its release", async () => {
  const range = freeRange(2);
  const h = await harness(range, { ttlMs: 30 * DAY });
  try {
    const acquiredAt = h.clock.now();
    const web = await h.acquire(h.alice, "web");
    const live = () => h.registry.all().map((t) => ({ userId: t.userId, port: t.port }));
    assert.equal((await h.store.reservationFor(h.alice.id, "web"))?.lastUsedAt, acquiredAt);
    for (let day = 10; day <= 60; day += 10) {
      h.clock.advance(10 * DAY);
      assert.deepEqual(await h.book.sweep(live()), [], `day ${day}: nothing expires`);
    }
    assert.equal(
      (await h.store.reservationFor(h.alice.id, "web"))?.lastUsedAt,
      acquiredAt + 60 * DAY,
    );
    h.clock.advance(5 * DAY);
    await h.release(web);
    await h.book.settled();
    const releasedAt = h.clock.now();
    assert.equal((await h.store.reservationFor(h.alice.id, "web"))?.lastUsedAt, releasedAt);
    h.clock.advance(30 * DAY);
    assert.deepEqual(await h.book.sweep(live()), [], "30 days after the release: not yet");
    h.clock.advance(1);
    assert.deepEqual((await h.book.sweep(live())).map((r) => r.tunnel), ["web"]);
    assert.equal(await h.store.reservationFor(h.alice.id, "web"), null);
  } finally {
    await h.close();
  }
});

Deno.test("--reservation-ttl 0 keeps automatic reservations forever", async () => {
  const range = freeRange(1);
  const h = await harness(range, { ttlMs: 0 });
  try {
    await h.release(await h.acquire(h.alice, "web"));
    h.clock.advance(3650 * DAY);
    assert.deepEqual(await h.book.sweep([]), []);
    const bob = await h.user("bob");
    await assertRefused(
      h.acquire(bob, "db"),
      "port_taken",
      `no free public port left in the range ${range.low}-${range.high}`,
    );
  } finally {
    await h.close();
  }
});

Deno.test("a restart with a range full of one user's reservations trims them to the cap at the first sweep", async () => {
  const range = freeRange(20);
  const h = await harness(range);
  try {
    // As a store written before caps existed: one reservation per port, all alice's.
    for (let port = range.low; port <= range.high; port++) {
      await h.store.reservePort({
        userId: h.alice.id,
        tunnel: `t${port}`,
        port,
        at: h.clock.now() + port,
      });
    }
    const bob = await h.user("bob");
    await assertRefused(
      h.acquire(bob, "web"),
      "port_taken",
      `no free public port left in the range ${range.low}-${range.high}`,
    );
    const limited = await h.store.setUserLimits(h.alice.id, { maxTunnels: 5 });
    const dropped = await h.book.sweep([]);
    assert.equal(dropped.length, 15);
    const kept = await h.reservations(limited);
    assert.deepEqual(
      kept.map((r) => r.port),
      Array.from({ length: 5 }, (_, i) => range.high - 4 + i),
      "the most recently used stay",
    );
    const web = await h.acquire(bob, "web");
    assert.ok(web.port < range.high - 4);
  } finally {
    await h.close();
  }
});

Deno.test("max_reserved_ports overrides the max-tunnels default of the cap", async () => {
  const range = freeRange(6);
  const h = await harness(range);
  try {
    const carol = await h.user("carol", { maxTunnels: 10, maxReservedPorts: 2 });
    for (let i = 0; i < 5; i++) {
      h.clock.advance(1000);
      await h.release(await h.acquire(carol, `c${i}`));
    }
    assert.deepEqual((await h.reservations(carol)).map((r) => r.tunnel).sort(), ["c3", "c4"]);
    assert.equal(h.book.cap(carol.limits), 2);
    assert.equal(h.book.cap({ ...carol.limits, maxReservedPorts: null }), 10);
    assert.equal(h.book.cap(h.alice.limits), h.config.maxTunnelsPerClient);
  } finally {
    await h.close();
  }
});

Deno.test("--reservation-ttl takes a duration or 0, and defaults to 30 days", () => {
  const parse = (...args: string[]) => {
    const r = parseServerArgs(["--token", "reservations-token", ...args], {}, () => "");
    assert.ok(!r.help && !r.version);
    return r.config.reservationTtlMs;
  };
  assert.equal(parse(), 30 * DAY);
  assert.equal(parse("--reservation-ttl", "12h"), 12 * 3_600_000);
  assert.equal(parse("--reservation-ttl", "7d"), 7 * DAY);
  assert.equal(parse("--reservation-ttl", "0"), 0);
  for (const bad of ["soon", "1x", "30"]) {
    assert.throws(() => parse("--reservation-ttl", bad), {
      message: `invalid --reservation-ttl "${bad}": use a duration like 30d or 12h, or 0 for never`,
    });
  }
});
