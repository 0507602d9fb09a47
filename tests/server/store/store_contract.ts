// The behaviour every Store implementation must have, registered as Deno tests per implementation.

import assert from "node:assert/strict";
import { ConflictError, type Store, type UsageRow } from "../../../server/store/store.ts";
import { hostContract } from "./host_contract.ts";

/** Opens a fresh, empty, migrated store for one test. */
export type OpenStore = () => Promise<Store>;

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const T0 = Date.UTC(2025, 0, 1); // an hour boundary

/**
 * Registers the contract tests for one Store implementation. Each test gets its own store from
 * `open` and closes it. `cleanup`, if given, runs as the last test (drop databases, stop servers).
 */
export function storeContract(name: string, open: OpenStore, cleanup?: () => Promise<void>): void {
  const test = (behaviour: string, fn: (s: Store) => Promise<void>) =>
    Deno.test(`${name} store ${behaviour}`, async () => {
      const store = await open();
      try {
        await fn(store);
      } finally {
        await store.close();
      }
    });

  test("creates users and finds them by id and name", async (s) => {
    const before = Date.now();
    const alice = await s.createUser({
      name: "alice",
      email: "alice@example.com",
      role: "admin",
      passwordHash: "scrypt$16384$8$1$c2FsdA==$aGFzaA==",
    });
    assert.equal(alice.name, "alice");
    assert.equal(alice.email, "alice@example.com");
    assert.equal(alice.role, "admin");
    assert.equal(alice.disabled, false);
    assert.equal(alice.passwordHash, "scrypt$16384$8$1$c2FsdA==$aGFzaA==");
    assert.equal(typeof alice.id, "number");
    assert.equal(typeof alice.createdAt, "number");
    assert.ok(alice.createdAt >= before && alice.createdAt <= Date.now() + 1000);
    assert.equal(alice.lastSeenAt, null);
    assert.equal(alice.egress, false, "an admin has no egress unless granted");
    assert.equal(alice.vpn, false);
    assert.deepEqual(alice.limits, {
      maxTunnels: null,
      maxConnections: null,
      portLow: null,
      portHigh: null,
      monthlyQuotaBytes: null,
      maxReservedPorts: null,
    });

    const bob = await s.createUser({ name: "bob", role: "user" });
    assert.equal(bob.email, null);
    assert.equal(bob.passwordHash, null);
    assert.notEqual(bob.id, alice.id);

    assert.deepEqual(await s.userById(alice.id), alice);
    assert.deepEqual(await s.userByName("bob"), bob);
    assert.equal(await s.userById(999_999), null);
    assert.equal(await s.userByName("nobody"), null);
    assert.deepEqual((await s.listUsers()).map((u) => u.name), ["alice", "bob"]);
  });

  test("refuses a duplicate user name with a ConflictError naming it", async (s) => {
    await s.createUser({ name: "carol", role: "user" });
    await assert.rejects(
      s.createUser({ name: "carol", role: "admin" }),
      (e: unknown) => {
        assert.ok(e instanceof ConflictError, `expected ConflictError, got ${e}`);
        assert.match(e.message, /"carol" already exists/);
        return true;
      },
    );
    assert.equal((await s.listUsers()).length, 1);
  });

  test("rejects an unknown role with a RangeError", async (s) => {
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      s.createUser({ name: "x", role: "root" as any }),
      (e: unknown) => e instanceof RangeError && /admin.*user/.test(e.message),
    );
  });

  test("disables and re-enables a user, touches last-seen and sets the password", async (s) => {
    const u = await s.createUser({ name: "dave", role: "user" });
    await s.setUserDisabled(u.id, true);
    assert.equal((await s.userById(u.id))?.disabled, true);
    await s.setUserDisabled(u.id, false);
    assert.equal((await s.userById(u.id))?.disabled, false);
    await s.touchUser(u.id, T0 + 5);
    assert.equal((await s.userById(u.id))?.lastSeenAt, T0 + 5);
    await s.setUserPassword(u.id, "scrypt$1$1$1$a$b");
    assert.equal((await s.userById(u.id))?.passwordHash, "scrypt$1$1$1$a$b");
    await assert.rejects(s.setUserDisabled(424242, true), RangeError);
    await assert.rejects(s.setUserPassword(424242, "x"), RangeError);
  });

  test("sets and clears user limits, leaving unnamed ones alone", async (s) => {
    const u = await s.createUser({
      name: "erin",
      role: "user",
      limits: { maxTunnels: 3, monthlyQuotaBytes: 10 * 2 ** 40 },
    });
    assert.equal(u.limits.maxTunnels, 3);
    assert.equal(u.limits.monthlyQuotaBytes, 10 * 2 ** 40, "a quota above 2^32 survives");
    assert.equal(u.limits.maxConnections, null);

    const v = await s.setUserLimits(u.id, { maxConnections: 50, portLow: 20000, portHigh: 20010 });
    assert.deepEqual(v.limits, {
      maxTunnels: 3,
      maxConnections: 50,
      portLow: 20000,
      portHigh: 20010,
      monthlyQuotaBytes: 10 * 2 ** 40,
      maxReservedPorts: null,
    });
    const w = await s.setUserLimits(u.id, {
      maxTunnels: null,
      monthlyQuotaBytes: null,
      maxReservedPorts: 4,
    });
    assert.deepEqual(w.limits, {
      maxTunnels: null,
      maxConnections: 50,
      portLow: 20000,
      portHigh: 20010,
      monthlyQuotaBytes: null,
      maxReservedPorts: 4,
    });
    assert.deepEqual((await s.userById(u.id))?.limits, w.limits);
    assert.deepEqual(await s.setUserLimits(u.id, {}), w);
    await assert.rejects(s.setUserLimits(424242, { maxTunnels: 1 }), RangeError);
    await assert.rejects(s.setUserLimits(u.id, { maxTunnels: -1 }), RangeError);
    await assert.rejects(s.setUserLimits(u.id, { portLow: 70000 }), RangeError);
    await assert.rejects(s.setUserLimits(u.id, { maxReservedPorts: 0 }), /at least 1/);
    assert.equal((await s.userById(u.id))?.limits.maxReservedPorts, 4);
  });

  test("grants and withdraws user permissions, leaving unnamed ones alone", async (s) => {
    const u = await s.createUser({ name: "heidi", role: "user" });
    assert.deepEqual([u.egress, u.vpn], [false, false]);

    const v = await s.setUserPermissions(u.id, { egress: true });
    assert.deepEqual([v.egress, v.vpn], [true, false]);
    assert.equal(v.name, "heidi");
    const w = await s.setUserPermissions(u.id, { vpn: true });
    assert.deepEqual([w.egress, w.vpn], [true, true]);
    const x = await s.setUserPermissions(u.id, { egress: false, vpn: undefined });
    assert.deepEqual([x.egress, x.vpn], [false, true]);
    assert.deepEqual(await s.userById(u.id), x);
    assert.deepEqual(await s.setUserPermissions(u.id, {}), x);

    const other = await s.userByName("heidi");
    assert.equal(other?.disabled, false, "other columns are untouched");
    await assert.rejects(s.setUserPermissions(424242, { egress: true }), RangeError);
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      s.setUserPermissions(u.id, { egress: 1 as any }),
      /egress must be true or false/,
    );
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      s.setUserPermissions(u.id, { root: true } as any),
      /Unknown user permission root/,
    );
    assert.deepEqual(await s.userById(u.id), x, "a refused change changes nothing");
  });

  test("creates a user with permissions granted from the start", async (s) => {
    const a = await s.createUser({ name: "ivan", role: "user", permissions: { egress: true } });
    assert.deepEqual([a.egress, a.vpn], [true, false]);
    const b = await s.createUser({
      name: "judy",
      role: "admin",
      permissions: { egress: true, vpn: true },
    });
    assert.deepEqual([b.egress, b.vpn], [true, true]);
    assert.deepEqual(await s.userByName("judy"), b);
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      s.createUser({ name: "kim", role: "user", permissions: { vpn: "yes" as any } }),
      RangeError,
    );
    assert.equal(await s.userByName("kim"), null);
  });

  test("creates tokens, finds them by hash and id, lists, revokes and touches them", async (s) => {
    const a = await s.createUser({ name: "frank", role: "user" });
    const b = await s.createUser({ name: "grace", role: "user" });
    const hashA = "a".repeat(64);
    const t1 = await s.createToken({ userId: a.id, label: "laptop", hash: hashA, expiresAt: null });
    const t2 = await s.createToken({
      userId: a.id,
      label: "ci",
      hash: "b".repeat(64),
      expiresAt: T0 + 30 * 24 * HOUR,
    });
    const t3 = await s.createToken({
      userId: b.id,
      label: "x",
      hash: "c".repeat(64),
      expiresAt: null,
    });

    assert.equal(t1.userId, a.id);
    assert.equal(t1.label, "laptop");
    assert.equal(t1.hash, hashA);
    assert.equal(t1.expiresAt, null);
    assert.equal(t1.revokedAt, null);
    assert.equal(t1.lastUsedAt, null);
    assert.equal(typeof t1.createdAt, "number");
    assert.equal(t2.expiresAt, T0 + 30 * 24 * HOUR);

    assert.deepEqual(await s.tokenByHash(hashA), t1);
    assert.deepEqual(await s.tokenById(t2.id), t2);
    assert.equal(await s.tokenByHash("d".repeat(64)), null);
    assert.equal(await s.tokenById(999_999), null);
    assert.deepEqual((await s.listTokens()).map((t) => t.id), [t1.id, t2.id, t3.id]);
    assert.deepEqual((await s.listTokens(a.id)).map((t) => t.id), [t1.id, t2.id]);

    await s.touchToken(t1.id, T0 + 7);
    assert.equal((await s.tokenById(t1.id))?.lastUsedAt, T0 + 7);

    assert.equal(await s.revokeToken(t1.id, T0 + 9), true);
    assert.equal((await s.tokenByHash(hashA))?.revokedAt, T0 + 9);
    assert.equal(await s.revokeToken(t1.id, T0 + 99), false, "a second revoke changes nothing");
    assert.equal((await s.tokenById(t1.id))?.revokedAt, T0 + 9);
    assert.equal(await s.revokeToken(999_999, T0), false);
  });

  test("stores a token's scope, client by default, and refuses an unknown one", async (s) => {
    const u = await s.createUser({ name: "alice", role: "user" });
    const plain = await s.createToken({
      userId: u.id,
      label: "a",
      hash: "a".repeat(64),
      expiresAt: null,
    });
    assert.equal(plain.scope, "client");
    for (const scope of ["client", "api", "admin"] as const) {
      const t = await s.createToken({
        userId: u.id,
        label: scope,
        hash: scope.padEnd(64, "0"),
        expiresAt: null,
        scope,
      });
      assert.equal(t.scope, scope);
      assert.equal((await s.tokenById(t.id))?.scope, scope);
      assert.equal((await s.tokenByHash(t.hash))?.scope, scope);
    }
    assert.deepEqual((await s.listTokens(u.id)).map((t) => t.scope), [
      "client",
      "client",
      "api",
      "admin",
    ]);
    await assert.rejects(
      s.createToken({
        userId: u.id,
        label: "x",
        hash: "f".repeat(64),
        expiresAt: null,
        scope: "root" as "admin",
      }),
      RangeError,
    );
  });

  test("refuses a duplicate token hash and a token for a missing user", async (s) => {
    const u = await s.createUser({ name: "heidi", role: "user" });
    await s.createToken({ userId: u.id, label: "one", hash: "e".repeat(64), expiresAt: null });
    await assert.rejects(
      s.createToken({ userId: u.id, label: "two", hash: "e".repeat(64), expiresAt: null }),
      ConflictError,
    );
    await assert.rejects(
      s.createToken({ userId: 424242, label: "x", hash: "f".repeat(64), expiresAt: null }),
      (e: unknown) => e instanceof RangeError && /424242/.test(e.message),
    );
  });

  test("reserves a free port and refuses it to another user", async (s) => {
    const a = await s.createUser({ name: "ivan", role: "user" });
    const b = await s.createUser({ name: "judy", role: "user" });
    const r1 = await s.reservePort({ userId: a.id, tunnel: "web", port: 20001, at: T0 });
    const held = {
      port: 20001,
      userId: a.id,
      tunnel: "web",
      createdAt: T0,
      lastUsedAt: T0,
      explicit: false,
    };
    assert.deepEqual(r1, { ok: true, reservation: held, dropped: [] });
    const r2 = await s.reservePort({ userId: b.id, tunnel: "web", port: 20001, at: T0 + 1 });
    assert.deepEqual(r2, { ok: false, heldBy: held });
    const r3 = await s.reservePort({ userId: b.id, tunnel: null, port: 20001, at: T0 + 1 });
    assert.equal(r3.ok, false);
  });

  test("reserving the same port for the same user and tunnel again is a no-op", async (s) => {
    const a = await s.createUser({ name: "kim", role: "user" });
    const first = await s.reservePort({ userId: a.id, tunnel: "db", port: 20002, at: T0 });
    const again = await s.reservePort({ userId: a.id, tunnel: "db", port: 20002, at: T0 + 50 });
    assert.ok(first.ok && again.ok);
    assert.deepEqual(
      again.reservation,
      { ...first.reservation, lastUsedAt: T0 + 50 },
      "the original createdAt is kept; the last use moves on",
    );
    const older = await s.reservePort({ userId: a.id, tunnel: "db", port: 20002, at: T0 + 10 });
    assert.ok(older.ok);
    assert.equal(older.reservation.lastUsedAt, T0 + 50, "the last use never moves back");
    assert.equal((await s.listReservations()).length, 1);
  });

  test("a port reserved without a tunnel is named by the user's first tunnel on it", async (s) => {
    const a = await s.createUser({ name: "leo", role: "user" });
    const b = await s.createUser({ name: "mia", role: "user" });
    await s.reservePort({ userId: a.id, tunnel: null, port: 20003, at: T0 });
    assert.equal(
      (await s.reservePort({ userId: b.id, tunnel: "x", port: 20003, at: T0 + 1 })).ok,
      false,
    );
    const named = await s.reservePort({ userId: a.id, tunnel: "ssh", port: 20003, at: T0 + 2 });
    const ssh = {
      port: 20003,
      userId: a.id,
      tunnel: "ssh",
      createdAt: T0,
      lastUsedAt: T0 + 2,
      explicit: false,
    };
    assert.deepEqual(named, { ok: true, reservation: ssh, dropped: [] });
    assert.deepEqual(await s.reservationFor(a.id, "ssh"), ssh);
    // The same user asking with no tunnel name: they already hold it, nothing changes.
    const unnamed = await s.reservePort({ userId: a.id, tunnel: null, port: 20003, at: T0 + 2 });
    assert.deepEqual(unnamed, named);
    // Another tunnel of the same user cannot take it.
    const other = await s.reservePort({ userId: a.id, tunnel: "web", port: 20003, at: T0 + 4 });
    assert.equal(other.ok, false);
  });

  test("a tunnel asking for a different port moves its reservation there", async (s) => {
    const a = await s.createUser({ name: "nina", role: "user" });
    const b = await s.createUser({ name: "omar", role: "user" });
    await s.reservePort({ userId: a.id, tunnel: "web", port: 20010, at: T0 });
    const moved = await s.reservePort({ userId: a.id, tunnel: "web", port: 20011, at: T0 + 1 });
    assert.equal(moved.ok, true);
    assert.equal((await s.reservationFor(a.id, "web"))?.port, 20011);
    assert.equal(await s.reservationByPort(20010), null, "the old port is released");
    // A move onto a port someone else holds fails and keeps the old reservation.
    await s.reservePort({ userId: b.id, tunnel: "x", port: 20012, at: T0 });
    const blocked = await s.reservePort({ userId: a.id, tunnel: "web", port: 20012, at: T0 + 2 });
    assert.equal(blocked.ok, false);
    assert.equal((await s.reservationFor(a.id, "web"))?.port, 20011);
  });

  test("lists, finds and releases reservations", async (s) => {
    const a = await s.createUser({ name: "pat", role: "user" });
    const b = await s.createUser({ name: "quinn", role: "user" });
    await s.reservePort({ userId: b.id, tunnel: "z", port: 20022, at: T0 });
    await s.reservePort({ userId: a.id, tunnel: "y", port: 20021, at: T0 });
    await s.reservePort({ userId: a.id, tunnel: null, port: 20020, at: T0 });
    assert.deepEqual((await s.listReservations()).map((r) => r.port), [20020, 20021, 20022]);
    assert.deepEqual((await s.listReservations(a.id)).map((r) => r.port), [20020, 20021]);
    assert.equal((await s.reservationByPort(20022))?.userId, b.id);
    assert.equal(await s.reservationFor(a.id, "nope"), null);
    assert.equal(await s.releasePort(20021), true);
    assert.equal(await s.releasePort(20021), false);
    assert.equal(await s.reservationFor(a.id, "y"), null);
    const again = await s.reservePort({ userId: b.id, tunnel: "y", port: 20021, at: T0 + 1 });
    assert.equal(again.ok, true, "a released port can be reserved by someone else");
  });

  test("refuses an invalid port number", async (s) => {
    const a = await s.createUser({ name: "rita", role: "user" });
    for (const port of [0, -1, 65536, 1.5, NaN]) {
      await assert.rejects(s.reservePort({ userId: a.id, tunnel: "t", port, at: T0 }), RangeError);
    }
  });

  test("20 concurrent reservations of one port by different users: exactly one wins", async (s) => {
    const users = [];
    for (let i = 0; i < 20; i++) {
      users.push(await s.createUser({ name: `racer${i}`, role: "user" }));
    }
    const results = await Promise.all(
      users.map((u) => s.reservePort({ userId: u.id, tunnel: "t", port: 20100, at: T0 })),
    );
    const winners = results.filter((r) => r.ok);
    assert.equal(winners.length, 1);
    const winner = winners[0]!.ok ? winners[0]!.reservation : null;
    for (const r of results) {
      if (!r.ok) assert.deepEqual(r.heldBy, winner);
    }
    assert.equal((await s.listReservations()).length, 1);
  });

  test("an automatic reservation not used since expiredBefore counts as free; an explicit one never does", async (s) => {
    const a = await s.createUser({ name: "ursula", role: "user" });
    const b = await s.createUser({ name: "victor", role: "user" });
    await s.reservePort({ userId: a.id, tunnel: "web", port: 20200, at: T0 });
    const pinned = await s.reservePort({
      userId: a.id,
      tunnel: "ssh",
      port: 20201,
      at: T0,
      explicit: true,
    });
    assert.ok(pinned.ok && pinned.reservation.explicit);

    // Last used at T0: not expired for a cutoff of T0, expired for T0 + 1.
    const early = await s.reservePort({
      userId: b.id,
      tunnel: "web",
      port: 20200,
      at: T0 + DAY,
      expiredBefore: T0,
    });
    assert.equal(early.ok, false);
    const late = await s.reservePort({
      userId: b.id,
      tunnel: "web",
      port: 20200,
      at: T0 + DAY,
      expiredBefore: T0 + 1,
    });
    assert.ok(late.ok);
    assert.equal(late.reservation.userId, b.id);
    assert.equal(late.reservation.createdAt, T0 + DAY);
    assert.deepEqual(late.dropped.map((r) => [r.port, r.userId, r.tunnel]), [[20200, a.id, "web"]]);
    assert.equal(await s.reservationFor(a.id, "web"), null, "alice's expired reservation is gone");

    // An operator's reservation outlives any cutoff.
    const never = await s.reservePort({
      userId: b.id,
      tunnel: "ssh",
      port: 20201,
      at: T0 + 1000 * DAY,
      expiredBefore: T0 + 999 * DAY,
    });
    assert.equal(never.ok, false);
    assert.equal((await s.reservationFor(a.id, "ssh"))?.explicit, true);

    // Reserving explicitly a port the user holds automatically makes it explicit.
    await s.reservePort({ userId: a.id, tunnel: "db", port: 20202, at: T0 });
    const made = await s.reservePort({
      userId: a.id,
      tunnel: null,
      port: 20202,
      at: T0 + 5,
      explicit: true,
    });
    assert.ok(made.ok);
    assert.deepEqual(made.reservation, {
      port: 20202,
      userId: a.id,
      tunnel: "db",
      createdAt: T0,
      lastUsedAt: T0 + 5,
      explicit: true,
    });
    await assert.rejects(
      s.reservePort({ userId: a.id, tunnel: "x", port: 20203, at: T0, maxAutomatic: 0 }),
      RangeError,
    );
  });

  test("touches the last use of held ports and drops only expired automatic reservations", async (s) => {
    const a = await s.createUser({ name: "wanda", role: "user" });
    const b = await s.createUser({ name: "xavier", role: "user" });
    await s.reservePort({ userId: a.id, tunnel: "live", port: 20210, at: T0 });
    await s.reservePort({ userId: a.id, tunnel: "idle", port: 20211, at: T0 });
    await s.reservePort({ userId: a.id, tunnel: "pin", port: 20212, at: T0, explicit: true });
    await s.reservePort({ userId: b.id, tunnel: "idle", port: 20213, at: T0 });

    const touched = await s.touchReservations(
      [{ userId: a.id, port: 20210 }, { userId: b.id, port: 20210 }, { userId: a.id, port: 1 }],
      T0 + 100,
    );
    assert.equal(touched, 1, "only the row of that user on that port");
    assert.equal(await s.touchReservations([], T0 + 100), 0);
    assert.equal((await s.reservationByPort(20210))?.lastUsedAt, T0 + 100);
    await s.touchReservations([{ userId: a.id, port: 20210 }], T0 + 1);
    assert.equal((await s.reservationByPort(20210))?.lastUsedAt, T0 + 100, "never backwards");

    const dropped = await s.dropExpiredReservations(T0 + 50);
    assert.deepEqual(dropped.map((r) => r.port), [20211, 20213]);
    assert.deepEqual((await s.listReservations()).map((r) => r.port), [20210, 20212]);
    assert.deepEqual(await s.dropExpiredReservations(T0 + 50), []);
  });

  test("at the cap, the user's least recently used automatic reservation is recycled", async (s) => {
    const a = await s.createUser({ name: "yara", role: "user" });
    const b = await s.createUser({ name: "zeno", role: "user" });
    await s.reservePort({ userId: a.id, tunnel: "a", port: 20220, at: T0 });
    await s.reservePort({ userId: a.id, tunnel: "b", port: 20221, at: T0 + 1 });
    await s.reservePort({ userId: a.id, tunnel: "c", port: 20222, at: T0 + 2 });
    await s.reservePort({ userId: a.id, tunnel: "x", port: 20229, at: T0, explicit: true });
    await s.reservePort({ userId: b.id, tunnel: "b", port: 20228, at: T0 });
    await s.touchReservations([{ userId: a.id, port: 20220 }], T0 + 10); // "b" is now the oldest

    const d = await s.reservePort({
      userId: a.id,
      tunnel: "d",
      port: 20223,
      at: T0 + 20,
      maxAutomatic: 3,
    });
    assert.ok(d.ok);
    assert.deepEqual(d.dropped.map((r) => [r.port, r.tunnel]), [[20221, "b"]]);
    assert.deepEqual(
      (await s.listReservations(a.id)).map((r) => r.port),
      [20220, 20222, 20223, 20229],
      "the explicit reservation is neither counted nor recycled",
    );

    const e = await s.reservePort({
      userId: a.id,
      tunnel: "e",
      port: 20224,
      at: T0 + 30,
      maxAutomatic: 2,
    });
    assert.ok(e.ok);
    assert.deepEqual(e.dropped.map((r) => r.port), [20220, 20222]);
    assert.deepEqual((await s.listReservations(a.id)).map((r) => r.port), [20223, 20224, 20229]);

    // A repeat of a tunnel's own reservation trims too, never dropping that one.
    await s.touchReservations([{ userId: a.id, port: 20224 }], T0 + 40);
    const repeat = await s.reservePort({
      userId: a.id,
      tunnel: "d",
      port: 20223,
      at: T0 + 35,
      maxAutomatic: 1,
    });
    assert.ok(repeat.ok);
    assert.deepEqual(repeat.dropped.map((r) => r.port), [20224]);

    assert.deepEqual((await s.trimReservations(a.id, 0)).map((r) => r.port), [20223]);
    assert.deepEqual((await s.listReservations(a.id)).map((r) => r.port), [20229]);
    assert.deepEqual((await s.listReservations(b.id)).map((r) => r.port), [20228], "bob's stay");
    await assert.rejects(s.trimReservations(a.id, -1), RangeError);
  });

  test("takeOverOwn takes an automatic reservation of the user's other tunnel, nothing else", async (s) => {
    const a = await s.createUser({ name: "abe", role: "user" });
    const b = await s.createUser({ name: "bea", role: "user" });
    await s.reservePort({ userId: a.id, tunnel: "old", port: 20230, at: T0 });
    await s.reservePort({ userId: a.id, tunnel: "pin", port: 20231, at: T0, explicit: true });
    await s.reservePort({ userId: b.id, tunnel: "bob", port: 20232, at: T0 });

    const plain = await s.reservePort({ userId: a.id, tunnel: "new", port: 20230, at: T0 + 1 });
    assert.equal(plain.ok, false, "without takeOverOwn another tunnel's port is taken");
    const over = await s.reservePort({
      userId: a.id,
      tunnel: "new",
      port: 20230,
      at: T0 + 1,
      takeOverOwn: true,
    });
    assert.ok(over.ok);
    assert.equal(over.reservation.tunnel, "new");
    assert.deepEqual(over.dropped.map((r) => [r.port, r.tunnel]), [[20230, "old"]]);
    assert.equal(await s.reservationFor(a.id, "old"), null);

    for (const port of [20231, 20232]) {
      const r = await s.reservePort({
        userId: a.id,
        tunnel: "other",
        port,
        at: T0 + 2,
        takeOverOwn: true,
      });
      assert.equal(r.ok, false, `port ${port} stays with its holder`);
    }
  });

  test("adds usage across calls and hours and sums bytes since a time", async (s) => {
    const a = await s.createUser({ name: "sam", role: "user" });
    const b = await s.createUser({ name: "tess", role: "user" });
    const row = (userId: number, tunnel: string, hour: number, bytesIn: number): UsageRow => ({
      userId,
      tunnel,
      hour,
      bytesIn,
      bytesOut: bytesIn * 2,
      connections: 1,
      errors: 0,
    });
    await s.addUsage([row(a.id, "web", T0, 100), row(a.id, "web", T0 + HOUR, 10)]);
    await s.addUsage([
      row(a.id, "web", T0, 50),
      { ...row(a.id, "web", T0, 1), errors: 2 }, // the same key twice in one call adds up too
      row(a.id, "ssh", T0, 7),
      row(b.id, "web", T0, 1000),
    ]);
    await s.addUsage([]);
    const big = 3 * 2 ** 40; // several TiB: past 32 bits, and past 2^31 in one column
    await s.addUsage([row(a.id, "web", T0 + 2 * HOUR, big)]);

    const mine = await s.usage({ userId: a.id });
    assert.deepEqual(
      mine.map((u) => [u.tunnel, u.hour - T0, u.bytesIn, u.bytesOut, u.connections, u.errors]),
      [
        ["ssh", 0, 7, 14, 1, 0],
        ["web", 0, 151, 302, 3, 2],
        ["web", HOUR, 10, 20, 1, 0],
        ["web", 2 * HOUR, big, 2 * big, 1, 0],
      ],
    );
    assert.deepEqual((await s.usage({ userId: a.id, since: T0 + HOUR })).length, 2);
    assert.equal((await s.usage({})).length, 5);
    assert.equal((await s.usage({ since: T0 + HOUR })).length, 2);

    assert.equal(await s.bytesSince(a.id, T0), 7 * 3 + 151 * 3 + 10 * 3 + big * 3);
    assert.equal(await s.bytesSince(a.id, T0 + HOUR), 10 * 3 + big * 3);
    assert.equal(await s.bytesSince(b.id, T0), 3000);
    assert.equal(await s.bytesSince(b.id, T0 + HOUR), 0);
    assert.equal(await s.bytesSince(424242, 0), 0);
  });

  test("adds usage all-or-nothing: one bad row stores none", async (s) => {
    const a = await s.createUser({ name: "uma", role: "user" });
    const good: UsageRow = {
      userId: a.id,
      tunnel: "web",
      hour: T0,
      bytesIn: 1,
      bytesOut: 1,
      connections: 1,
      errors: 0,
    };
    await assert.rejects(s.addUsage([good, { ...good, userId: 424242 }]), RangeError);
    await assert.rejects(s.addUsage([good, { ...good, bytesIn: -5 }]), RangeError);
    assert.deepEqual(await s.usage({}), []);
  });

  test("appends events and filters them by time and user, newest first, with a limit", async (s) => {
    const a = await s.createUser({ name: "vic", role: "user" });
    const b = await s.createUser({ name: "wes", role: "user" });
    await s.addEvent({ at: T0, kind: "user_created", userId: a.id, detail: { by: "admin" } });
    await s.addEvent({ at: T0 + 1, kind: "token_created", userId: a.id, detail: { label: "l" } });
    await s.addEvent({ at: T0 + 2, kind: "client_connected", userId: b.id, detail: {} });
    await s.addEvent({
      at: T0 + 3,
      kind: "server_started",
      userId: null,
      detail: { addr: "0.0.0.0:7835", nested: { ports: [1, 2] }, text: 'ü "q"' },
    });

    const all = await s.events({});
    assert.deepEqual(all.map((e) => e.kind), [
      "server_started",
      "client_connected",
      "token_created",
      "user_created",
    ]);
    assert.deepEqual(all[0]!.detail, {
      addr: "0.0.0.0:7835",
      nested: { ports: [1, 2] },
      text: 'ü "q"',
    });
    assert.equal(all[0]!.userId, null);
    assert.equal(all[3]!.at, T0);
    assert.equal(typeof all[3]!.id, "number");

    assert.deepEqual((await s.events({ userId: a.id })).map((e) => e.kind), [
      "token_created",
      "user_created",
    ]);
    assert.deepEqual((await s.events({ since: T0 + 2 })).map((e) => e.at), [T0 + 3, T0 + 2]);
    assert.deepEqual((await s.events({ limit: 2 })).map((e) => e.at), [T0 + 3, T0 + 2]);
    assert.deepEqual(
      (await s.events({ since: T0 + 1, userId: a.id, limit: 5 })).map((e) => e.kind),
      ["token_created"],
    );
    await assert.rejects(s.events({ limit: 0 }), RangeError);
  });

  test("describes itself without a password", (s) => {
    assert.ok(s.description.length > 0);
    assert.doesNotMatch(s.description, /:[^:/@]+@/, "no user:password@ in the description");
    return Promise.resolve();
  });

  hostContract(test);

  if (cleanup) {
    Deno.test(`${name} store contract cleanup`, cleanup);
  }
}
