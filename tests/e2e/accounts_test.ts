// End to end with accounts, on SQLite and PostgreSQL: per-user tunnels, token revocation, stable
// ports across a server restart, and usage bytes written to the store.
import { humanBytes } from "../../server/admin/human.ts";
import assert from "node:assert/strict";
import {
  addUser,
  adminJson,
  adminOk,
  assertReaches,
  BACKENDS,
  byFirst,
  clientFor,
  createToken,
  startTaggedEcho,
  stopped,
  StoreFactory,
  usageOf,
  withStore,
} from "./accounts_harness.ts";
import {
  connect,
  metric,
  roundTrip,
  sha256,
  startEcho,
  startServer,
  tunnelPort,
} from "./harness.ts";
import {
  closeQuietly,
  exitWithin,
  portRange,
  randomBytes,
  until,
  within,
} from "./scripted_services.ts";

const stores = new StoreFactory();

type EventJson = { kind: string; user: string | null; detail: Record<string, unknown> };
type PortJson = { port: number; user: string; tunnel: string | null };

for (const backend of BACKENDS) {
  Deno.test(`accounts (${backend}): two users get their own tunnels and bob cannot take alice's port`, async () => {
    await withStore(stores, backend, async ({ db }, t) => {
      await addUser(db, "alice");
      await addUser(db, "bob");
      const ta = await createToken(db, "alice");
      const tb = await createToken(db, "bob");
      const aliceSvc = startTaggedEcho("alice:");
      const bobSvc = startTaggedEcho("bob:");
      t.onClose(() => aliceSvc.close());
      t.onClose(() => bobSvc.close());
      const server = t.proc(await startServer(["--db", db]));

      const alice = t.proc(clientFor(server, ta.token, aliceSvc.port));
      const pa = await tunnelPort(alice);
      // The same tunnel name under bob's token is bob's own tunnel, never alice's port.
      const bob = t.proc(clientFor(server, tb.token, bobSvc.port));
      const pb = await tunnelPort(bob);
      assert.notEqual(pb, pa, "bob's tunnel named like alice's must get its own port");

      const grab = t.proc(
        clientFor(server, tb.token, bobSvc.port, ["--name", "grab", "--remote-port", String(pa)]),
      );
      await grab.stderr.wait(new RegExp(`port ${pa} is reserved for another user`));
      await stopped(grab);
      assert.ok(!grab.stdout.lines.some((l) => l.includes("tcp://")), grab.output());

      await assertReaches(pa, "alice:", randomBytes(256 * 1024));
      await assertReaches(pb, "bob:", randomBytes(256 * 1024));
      assert.equal(aliceSvc.accepted, 1);
      assert.equal(bobSvc.accepted, 1);

      const ports = await adminJson<PortJson[]>(db, ["port", "list"]);
      assert.deepEqual(
        ports.map((r) => [r.port, r.user, r.tunnel]).sort(byFirst),
        [[pa, "alice", "web"], [pb, "bob", "web"]].sort(byFirst),
      );
    });
  });
}

for (const backend of BACKENDS) {
  Deno.test(`accounts (${backend}): revoking a token disconnects its client within seconds, others keep working`, async () => {
    await withStore(stores, backend, async ({ db }, t) => {
      await addUser(db, "alice");
      await addUser(db, "bob");
      const ta = await createToken(db, "alice");
      const tb = await createToken(db, "bob");
      const aliceSvc = startTaggedEcho("alice:");
      const bobSvc = startTaggedEcho("bob:");
      t.onClose(() => aliceSvc.close());
      t.onClose(() => bobSvc.close());
      const server = t.proc(await startServer(["--db", db, "--recheck", "0.5"]));
      const alice = t.proc(clientFor(server, ta.token, aliceSvc.port));
      const bob = t.proc(clientFor(server, tb.token, bobSvc.port));
      const pa = await tunnelPort(alice);
      const pb = await tunnelPort(bob);
      await assertReaches(pa, "alice:", randomBytes(64 * 1024));

      const revokedAt = performance.now();
      assert.match(await adminOk(db, ["token", "revoke", String(ta.id)]), /revoked/);
      const status = await exitWithin(alice, 10_000);
      const took = performance.now() - revokedAt;
      assert.notEqual(status.code, 0, alice.output());
      assert.match(alice.stderr.lines.join("\n"), /this token was revoked/);
      assert.ok(took < 5_000, `the client was disconnected only after ${Math.round(took)} ms`);

      const events = await adminJson<EventJson[]>(db, ["events"]);
      assert.ok(
        events.some((e) =>
          e.kind === "token_revoked" && e.user === "alice" && e.detail.tokenId === ta.id
        ),
        JSON.stringify(events),
      );

      await assertReaches(pb, "bob:", randomBytes(256 * 1024));
      assert.ok(!bob.stderr.lines.some((l) => /revoked/.test(l)), bob.output());
      assert.equal(await metric(server, "mport_clients_connected"), 1);
    });
  });
}

for (const backend of BACKENDS) {
  Deno.test(`accounts (${backend}): a user's tunnel keeps its port across a server restart, until released`, async () => {
    await withStore(stores, backend, async ({ db }, t) => {
      await addUser(db, "alice");
      const ta = await createToken(db, "alice");
      const svc = startTaggedEcho("alice:");
      t.onClose(() => svc.close());
      const range = portRange().text;

      const first = t.proc(await startServer(["--db", db, "--port-range", range]));
      const client1 = t.proc(clientFor(first, ta.token, svc.port));
      const port = await tunnelPort(client1);
      await assertReaches(port, "alice:", randomBytes(64 * 1024));
      assert.equal((await stopped(first, "SIGTERM")).code, 0, first.output());
      await stopped(client1);

      // A new server process (on another --listen port) with the same store.
      const second = t.proc(
        await startServer(["--db", db, "--port-range", range, "--grace", "0"]),
      );
      assert.notEqual(second.port, first.port);
      const client2 = t.proc(clientFor(second, ta.token, svc.port));
      assert.equal(await tunnelPort(client2), port, "the same public port after the restart");
      await assertReaches(port, "alice:", randomBytes(64 * 1024));

      const listed = await adminJson<PortJson[]>(db, ["port", "list", "--user", "alice"]);
      assert.deepEqual(listed.map((r) => [r.port, r.user, r.tunnel]), [[port, "alice", "web"]]);
      assert.match(
        await adminOk(db, ["port", "list"]),
        new RegExp(`^${port}\\s+alice\\s+web`, "m"),
      );

      await stopped(client2);
      await until(
        "the server releases the tunnel of the stopped client",
        async () => await metric(second, "mport_tunnels_active") === 0,
      );
      assert.match(
        await adminOk(db, ["port", "release", String(port)]),
        new RegExp(`port ${port} released`),
      );
      assert.deepEqual(await adminJson<PortJson[]>(db, ["port", "list", "--user", "alice"]), []);

      // Released: a new client gets some port (maybe another), and that one is reserved again.
      const client3 = t.proc(clientFor(second, ta.token, svc.port));
      const again = await tunnelPort(client3);
      await assertReaches(again, "alice:", randomBytes(64 * 1024));
      const relisted = await adminJson<PortJson[]>(db, ["port", "list", "--user", "alice"]);
      assert.deepEqual(relisted.map((r) => [r.port, r.user, r.tunnel]), [[again, "alice", "web"]]);
    });
  });
}

for (const backend of BACKENDS) {
  Deno.test(`accounts (${backend}): usage in the store matches the bytes sent once the server stops`, async () => {
    await withStore(stores, backend, async ({ db }, t) => {
      await addUser(db, "alice");
      const ta = await createToken(db, "alice");
      const echo = startEcho();
      t.onClose(() => echo.close());
      // Only the flush at shutdown writes usage.
      const server = t.proc(await startServer(["--db", db, "--usage-flush", "3600"]));
      const client = t.proc(clientFor(server, ta.token, echo.port));
      const port = await tunnelPort(client);

      const n = 3_000_000;
      const data = randomBytes(n);
      const conn = await connect(port);
      try {
        const got = await within(roundTrip(conn, data), 20_000, "3 MB round trip");
        assert.equal(got.byteLength, n);
        assert.equal(await sha256(got), await sha256(data));
      } finally {
        closeQuietly(conn);
      }
      assert.deepEqual(await usageOf(db, "alice"), { bytesIn: 0, bytesOut: 0, connections: 0 });

      assert.equal((await stopped(server, "SIGTERM")).code, 0, server.output());
      const usage = await usageOf(db, "alice");
      assert.equal(usage.bytesIn, n, "bytes from the public user to the client");
      assert.equal(usage.bytesOut, n, "bytes from the client back to the public user");
      assert.ok(usage.connections >= 1, JSON.stringify(usage));
      // The table shows sizes for people (exact counts are in --json, checked above).
      assert.match(
        await adminOk(db, ["usage", "--user", "alice"]),
        new RegExp(
          `alice\\s+web\\s+${humanBytes(n).replace(".", "\\.")}\\s+` +
            `${humanBytes(n).replace(".", "\\.")}\\s+1\\s+0`,
        ),
      );
    });
  });
}

Deno.test("accounts e2e cleanup: stop the PostgreSQL started for this file", async () => {
  await stores.close();
});
