// The host reservation part of the Store contract (HTTP tunnels' subdomains and custom domains).

import assert from "node:assert/strict";
import type { Store } from "../../../server/store/store.ts";

const T0 = Date.UTC(2025, 0, 1);

/** Registers the host reservation contract tests through `test` (one fresh store each). */
export function hostContract(test: (behaviour: string, fn: (s: Store) => Promise<void>) => void) {
  test("reserves a free host and refuses it to another user, naming the holder", async (s) => {
    const alice = await s.createUser({ name: "alice", role: "user" });
    const bob = await s.createUser({ name: "bob", role: "user" });
    const r = await s.reserveHost({
      host: "myapp.t.example.com",
      userId: alice.id,
      kind: "subdomain",
      tunnel: "web",
      at: T0,
    });
    assert.deepEqual(r, {
      ok: true,
      reservation: {
        host: "myapp.t.example.com",
        userId: alice.id,
        kind: "subdomain",
        tunnel: "web",
        createdAt: T0,
        lastUsedAt: T0,
      },
    });
    assert.deepEqual(
      await s.reserveHost({
        host: "myapp.t.example.com",
        userId: bob.id,
        kind: "subdomain",
        tunnel: "web",
        at: T0 + 1,
      }),
      { ok: false, heldBy: alice.id },
    );
    assert.deepEqual(await s.hostByName("myapp.t.example.com"), r.ok && r.reservation);
    assert.equal(await s.hostByName("other.t.example.com"), null);
  });

  test("a repeat by the same user renews the host: tunnel and last use, created kept", async (s) => {
    const alice = await s.createUser({ name: "alice", role: "user" });
    await s.reserveHost({
      host: "a.t.io",
      userId: alice.id,
      kind: "subdomain",
      tunnel: "web",
      at: T0,
    });
    const again = await s.reserveHost({
      host: "a.t.io",
      userId: alice.id,
      kind: "subdomain",
      tunnel: "api",
      at: T0 + 5000,
    });
    assert.ok(again.ok);
    assert.deepEqual(again.reservation, {
      host: "a.t.io",
      userId: alice.id,
      kind: "subdomain",
      tunnel: "api",
      createdAt: T0,
      lastUsedAt: T0 + 5000,
    });
    // A null tunnel leaves the name; last use never moves backwards.
    const kept = await s.reserveHost({
      host: "a.t.io",
      userId: alice.id,
      kind: "subdomain",
      tunnel: null,
      at: T0 + 1000,
    });
    assert.ok(kept.ok);
    assert.equal(kept.reservation.tunnel, "api");
    assert.equal(kept.reservation.lastUsedAt, T0 + 5000);
  });

  test("a domain stays a domain when its tunnel uses it", async (s) => {
    const alice = await s.createUser({ name: "alice", role: "user" });
    const assigned = await s.reserveHost({
      host: "app.example.org",
      userId: alice.id,
      kind: "domain",
      tunnel: null,
      at: T0,
    });
    assert.ok(assigned.ok);
    assert.equal(assigned.reservation.kind, "domain");
    assert.equal(assigned.reservation.tunnel, null);
    const used = await s.reserveHost({
      host: "app.example.org",
      userId: alice.id,
      kind: "subdomain",
      tunnel: "web",
      at: T0 + 10,
    });
    assert.ok(used.ok);
    assert.deepEqual([used.reservation.kind, used.reservation.tunnel], ["domain", "web"]);
  });

  test("finds a user's subdomain last used by a tunnel, never a domain or another user's", async (s) => {
    const alice = await s.createUser({ name: "alice", role: "user" });
    const bob = await s.createUser({ name: "bob", role: "user" });
    const reserve = (host: string, userId: number, kind: "subdomain" | "domain", at: number) =>
      s.reserveHost({ host, userId, kind, tunnel: "web", at });
    await reserve("old.t.io", alice.id, "subdomain", T0);
    await reserve("new.t.io", alice.id, "subdomain", T0 + 10);
    await reserve("custom.example.org", alice.id, "domain", T0 + 20);
    await reserve("bob.t.io", bob.id, "subdomain", T0 + 30);
    assert.equal((await s.hostForTunnel(alice.id, "web"))?.host, "new.t.io");
    await reserve("old.t.io", alice.id, "subdomain", T0 + 40);
    assert.equal((await s.hostForTunnel(alice.id, "web"))?.host, "old.t.io");
    assert.equal(await s.hostForTunnel(alice.id, "ssh"), null);
    assert.equal((await s.hostForTunnel(bob.id, "web"))?.host, "bob.t.io");
  });

  test("lists hosts by name, per user, and releases them", async (s) => {
    const alice = await s.createUser({ name: "alice", role: "user" });
    const bob = await s.createUser({ name: "bob", role: "user" });
    await s.reserveHost({
      host: "b.t.io",
      userId: alice.id,
      kind: "subdomain",
      tunnel: "x",
      at: T0,
    });
    await s.reserveHost({
      host: "a.example.org",
      userId: bob.id,
      kind: "domain",
      tunnel: null,
      at: T0,
    });
    await s.reserveHost({
      host: "c.t.io",
      userId: alice.id,
      kind: "subdomain",
      tunnel: "y",
      at: T0,
    });
    assert.deepEqual((await s.listHosts()).map((h) => h.host), [
      "a.example.org",
      "b.t.io",
      "c.t.io",
    ]);
    assert.deepEqual((await s.listHosts(alice.id)).map((h) => h.host), ["b.t.io", "c.t.io"]);
    assert.equal(await s.releaseHost("b.t.io"), true);
    assert.equal(await s.releaseHost("b.t.io"), false);
    assert.equal(await s.hostByName("b.t.io"), null);
    // Released, the host is free for anyone.
    const taken = await s.reserveHost({
      host: "b.t.io",
      userId: bob.id,
      kind: "subdomain",
      tunnel: "z",
      at: T0 + 1,
    });
    assert.equal(taken.ok, true);
  });

  test("refuses a host that is empty or not lower-case, and an unknown user", async (s) => {
    const alice = await s.createUser({ name: "alice", role: "user" });
    for (const host of ["", "MyApp.t.io"]) {
      await assert.rejects(
        s.reserveHost({ host, userId: alice.id, kind: "subdomain", tunnel: "w", at: T0 }),
        (e: unknown) => e instanceof RangeError && /lower-case/.test(e.message),
      );
    }
    await assert.rejects(
      s.reserveHost({ host: "x.t.io", userId: 424242, kind: "subdomain", tunnel: "w", at: T0 }),
      (e: unknown) => e instanceof RangeError && /424242/.test(e.message),
    );
    assert.deepEqual(await s.listHosts(), []);
  });

  test("20 concurrent reservations of one host by different users: exactly one wins", async (s) => {
    const users = await Promise.all(
      Array.from({ length: 20 }, (_, i) => s.createUser({ name: `u${i}`, role: "user" })),
    );
    const results = await Promise.all(
      users.map((u) =>
        s.reserveHost({ host: "race.t.io", userId: u.id, kind: "subdomain", tunnel: "w", at: T0 })
      ),
    );
    const winners = results.filter((r) => r.ok);
    assert.equal(winners.length, 1);
    const owner = (await s.hostByName("race.t.io"))?.userId;
    for (const r of results) if (!r.ok) assert.equal(r.heldBy, owner);
  });
}
