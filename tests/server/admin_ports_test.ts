// Admin commands for port reservations with a lifetime: explicit `port reserve`, `port list` with
// kind, last use and expiry, and the per-user cap `user set --max-reserved-ports`.
import assert from "node:assert/strict";
import { ADMIN_NOW as NOW, withAdminStore as withStore } from "../support/admin_store.ts";

const DAY = 86_400_000;

function iso(t: number): string {
  return new Date(t).toISOString().replace(/\.\d{3}Z$/, "Z");
}

Deno.test("port reserve is explicit; port list shows kind, last use and expiry", async () => {
  await withStore(async (store, run) => {
    await run("user", "add", "alice");
    await run("user", "add", "bob");
    const alice = (await store.userByName("alice"))!;
    const bob = (await store.userByName("bob"))!;
    // Tunnels' automatic reservations: bob's used 10 days ago, alice's 40 days ago (expired).
    await store.reservePort({ userId: bob.id, tunnel: "web", port: 10030, at: NOW - 10 * DAY });
    await store.reservePort({ userId: alice.id, tunnel: "old", port: 10031, at: NOW - 40 * DAY });
    assert.equal(
      await run("port", "reserve", "10022", "--user", "alice", "--tunnel", "ssh"),
      "port 10022 reserved for alice (tunnel ssh)",
    );
    assert.equal((await store.reservationByPort(10022))?.explicit, true);

    const table = (await run("port", "list")).split("\n");
    assert.match(table[0]!, /^PORT\s+USER\s+TUNNEL\s+KIND\s+SINCE\s+LAST USED\s+EXPIRES$/);
    assert.match(
      table[1]!,
      new RegExp(`^10022\\s+alice\\s+ssh\\s+explicit\\s+${iso(NOW)}\\s+${iso(NOW)}\\s+never$`),
    );
    assert.match(
      table[2]!,
      new RegExp(
        `^10030\\s+bob\\s+web\\s+automatic\\s+\\S+\\s+${iso(NOW - 10 * DAY)}\\s+${
          iso(NOW + 20 * DAY)
        }$`,
      ),
    );
    assert.match(table[3]!, /^10031\s+alice\s+old\s+automatic\s+\S+\s+\S+\s+expired$/);
    assert.match(await run("port", "list", "--reservation-ttl", "0"), /^10031\s.*\snever$/m);
    assert.match(
      await run("port", "list", "--reservation-ttl", "60d"),
      new RegExp(`^10031\\s.*\\s${iso(NOW + 20 * DAY)}$`, "m"),
    );

    const json = JSON.parse(await run("port", "list", "--json", "--user", "bob"));
    assert.deepEqual(json, [{
      port: 10030,
      userId: bob.id,
      tunnel: "web",
      createdAt: NOW - 10 * DAY,
      lastUsedAt: NOW - 10 * DAY,
      explicit: false,
      user: "bob",
      expiresAt: NOW + 20 * DAY,
      expired: false,
    }]);

    // An operator may reserve a port whose automatic reservation has expired, not a live one.
    assert.equal(
      await run("port", "reserve", "10031", "--user", "bob"),
      "port 10031 reserved for bob",
    );
    assert.deepEqual(
      [
        (await store.reservationByPort(10031))?.userId,
        (await store.reservationByPort(10031))?.explicit,
      ],
      [bob.id, true],
    );
    await assert.rejects(run("port", "reserve", "10030", "--user", "alice"), {
      message: "port 10030 is already reserved by bob",
    });
    await assert.rejects(run("port", "list", "--reservation-ttl", "soon"), {
      message: 'invalid --reservation-ttl "soon": use a duration like 30d or 12h, or 0 for never',
    });
  });
});

Deno.test("user set --max-reserved-ports sets, clears and refuses 0", async () => {
  await withStore(async (store, run) => {
    await run("user", "add", "alice", "--max-reserved-ports", "5");
    assert.equal((await store.userByName("alice"))?.limits.maxReservedPorts, 5);
    const set = JSON.parse(
      await run("user", "set", "alice", "--max-reserved-ports", "3", "--json"),
    );
    assert.equal(set.limits.maxReservedPorts, 3);
    assert.match((await run("user", "list")).split("\n")[0]!, /\sRESERVED\s/);
    assert.match((await run("user", "list")).split("\n")[1]!, /\s3\s/);
    await run("user", "set", "alice", "--max-reserved-ports", "default");
    assert.equal((await store.userByName("alice"))?.limits.maxReservedPorts, null);
    await assert.rejects(run("user", "set", "alice", "--max-reserved-ports", "0"), {
      message: 'invalid --max-reserved-ports "0": expected a whole number >= 1',
    });
    await assert.rejects(run("user", "set", "alice", "--max-reserved-ports", "many"), {
      message: 'invalid --max-reserved-ports "many": expected a whole number',
    });
  });
});
