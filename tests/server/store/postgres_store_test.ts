// PostgreSQL store: the Store contract on a fresh database per test, plus connection errors and
// races between two servers. Uses MPORT_TEST_POSTGRES_URL, or starts a throwaway PostgreSQL.

import assert from "node:assert/strict";
import postgres from "postgres";
import { openPostgresStore } from "../../../server/store/postgres_store.ts";
import { openStore } from "../../../server/store/open_store.ts";
import { LATEST_VERSION } from "../../../server/store/migrations.ts";
import { storeContract } from "./store_contract.ts";
import { assertMigratedV1, v1Database } from "./v1_fixture.ts";
import {
  AUTH_TEST_ROLE,
  createTestDatabase,
  type PostgresServer,
  startPostgres,
  type TestDatabase,
} from "./pg_harness.ts";

const ENV_URL = Deno.env.get("MPORT_TEST_POSTGRES_URL");

let server: Promise<Pick<PostgresServer, "url"> & { stop?: () => Promise<void> }> | null = null;
const databases: TestDatabase[] = [];

/** The server to test against: the one in MPORT_TEST_POSTGRES_URL, or our own, started once. */
function pgServer() {
  server ??= ENV_URL ? Promise.resolve({ url: ENV_URL }) : startPostgres();
  return server;
}

/** A new empty database on the test server, dropped at the end of the run. */
async function freshDatabase(): Promise<string> {
  const db = await createTestDatabase((await pgServer()).url);
  databases.push(db);
  return db.url;
}

storeContract("postgres", async () => openPostgresStore(await freshDatabase()));

Deno.test("postgres store keeps its data when reopened and applies migrations once", async () => {
  const url = await freshDatabase();
  const first = await openPostgresStore(url);
  const u = await first.createUser({ name: "alice", role: "admin" });
  await first.close();
  await first.close(); // closing twice is harmless
  const again = await openPostgresStore(url);
  try {
    assert.deepEqual(await again.userByName("alice"), u);
  } finally {
    await again.close();
  }
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql`SELECT version FROM schema_migrations ORDER BY version`;
    assert.deepEqual(
      rows.map((r) => r.version),
      Array.from({ length: LATEST_VERSION }, (_, i) => i + 1),
    );
  } finally {
    await sql.end();
  }
});

Deno.test("postgres store: deleting a user deletes their host reservations", async () => {
  const url = await freshDatabase();
  const store = await openPostgresStore(url);
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const alice = await store.createUser({ name: "alice", role: "user" });
    const bob = await store.createUser({ name: "bob", role: "user" });
    await store.reserveHost({
      host: "a.t.io",
      userId: alice.id,
      kind: "subdomain",
      tunnel: "w",
      at: 1,
    });
    await store.reserveHost({
      host: "b.example.org",
      userId: bob.id,
      kind: "domain",
      tunnel: null,
      at: 1,
    });
    await sql`DELETE FROM users WHERE id = ${alice.id}`;
    assert.deepEqual((await store.listHosts()).map((h) => h.host), ["b.example.org"]);
  } finally {
    await sql.end();
    await store.close();
  }
});

Deno.test("postgres store migrates version 1 reservations: operators' explicit, none expiring at once", async () => {
  const url = await freshDatabase();
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(v1Database("postgres")).simple();
  } finally {
    await sql.end();
  }
  const before = Date.now();
  const store = await openPostgresStore(url);
  try {
    await assertMigratedV1(store, before);
  } finally {
    await store.close();
  }
});

Deno.test("postgres store: two servers migrating one new database at once both start", async () => {
  const url = await freshDatabase();
  const stores = await Promise.all([1, 2, 3].map(() => openPostgresStore(url)));
  try {
    const u = await stores[0]!.createUser({ name: "bob", role: "user" });
    assert.deepEqual(await stores[2]!.userById(u.id), u);
  } finally {
    await Promise.all(stores.map((s) => s.close()));
  }
});

Deno.test("postgres store: 20 reservations of one port through two servers, one wins", async () => {
  const url = await freshDatabase();
  const a = await openPostgresStore(url);
  const b = await openPostgresStore(url);
  try {
    const users = await Promise.all(
      Array.from({ length: 20 }, (_, i) => a.createUser({ name: `u${i}`, role: "user" })),
    );
    const results = await Promise.all(
      users.map((u, i) =>
        (i % 2 ? a : b).reservePort({ userId: u.id, tunnel: "t", port: 20100, at: i })
      ),
    );
    assert.equal(results.filter((r) => r.ok).length, 1);
    assert.equal((await b.listReservations()).length, 1);
    // Concurrent usage for the same keys from both servers adds up, without deadlocks.
    const row = (userId: number, hour: number) => ({
      userId,
      tunnel: "t",
      hour,
      bytesIn: 1,
      bytesOut: 2,
      connections: 1,
      errors: 0,
    });
    const ids = users.slice(0, 5).map((u) => u.id);
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        (i % 2 ? a : b).addUsage(
          (i % 2 ? ids : [...ids].reverse()).flatMap((id) => [row(id, 0), row(id, 3_600_000)]),
        )),
    );
    for (const id of ids) assert.equal(await a.bytesSince(id, 0), 10 * 2 * 3);
  } finally {
    await a.close();
    await b.close();
  }
});

function assertFailsClearly(e: unknown, ...patterns: RegExp[]): true {
  assert.ok(e instanceof Error, `expected an Error, got ${e}`);
  for (const p of patterns) assert.match(e.message, p);
  return true;
}

Deno.test("postgres store: an unreachable server fails fast naming host:port", async () => {
  const started = performance.now();
  await assert.rejects(
    openStore("postgres://mport:s3cret-pw@127.0.0.1:1/db"),
    (e) => {
      assertFailsClearly(e, /PostgreSQL at 127\.0\.0\.1:1/, /refused/);
      assert.doesNotMatch((e as Error).message, /s3cret-pw/);
      return true;
    },
  );
  assert.ok(performance.now() - started < 10_000);
});

Deno.test("postgres store: a server that never answers times out with a clear error", async () => {
  // Accepts TCP connections and then says nothing, like a wrong service or a hung server.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })();
  try {
    const started = performance.now();
    await assert.rejects(
      openPostgresStore(`postgres://x@127.0.0.1:${port}/db`, { connectTimeoutSeconds: 1 }),
      (e) => assertFailsClearly(e, new RegExp(`127\\.0\\.0\\.1:${port}`), /no answer within 1 s/),
    );
    assert.ok(performance.now() - started < 5_000);
  } finally {
    listener.close();
    await accepting;
    for (const c of held) c.close();
  }
});

Deno.test("postgres store: a refused password fails clearly and never shows it", async () => {
  const { url } = await pgServer();
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await admin`DROP ROLE IF EXISTS ${admin(AUTH_TEST_ROLE)}`;
    await admin.unsafe(`CREATE ROLE ${AUTH_TEST_ROLE} LOGIN PASSWORD 'right-pw'`);
  } finally {
    await admin.end();
  }
  const u = new URL(url);
  u.username = AUTH_TEST_ROLE;
  u.password = "wrong-pw-42";
  let accepted = false;
  try {
    const store = await openPostgresStore(u.toString());
    accepted = true;
    await store.close();
  } catch (e) {
    assertFailsClearly(
      e,
      new RegExp(
        `Cannot log in to PostgreSQL at ${u.hostname}:${u.port} as user ${AUTH_TEST_ROLE}`,
      ),
      /password authentication failed/,
    );
    assert.doesNotMatch((e as Error).message, /wrong-pw-42/);
  }
  if (accepted) {
    // Only a server from MPORT_TEST_POSTGRES_URL whose pg_hba.conf trusts everyone gets here.
    assert.ok(ENV_URL, "our own test server must refuse the wrong password");
    console.warn(`${ENV_URL} accepts any password; the refused-password case was not checked`);
  }
});

Deno.test("postgres store: a missing database is named in the error", async () => {
  const u = new URL((await pgServer()).url);
  u.pathname = "/mport_no_such_database";
  await assert.rejects(
    openPostgresStore(u.toString()),
    (e) => assertFailsClearly(e, /database mport_no_such_database does not exist/),
  );
});

Deno.test("postgres store: description hides the password", async () => {
  const u = new URL(await freshDatabase());
  u.password = "not-needed-pw";
  const store = await openPostgresStore(u.toString());
  try {
    assert.doesNotMatch(store.description, /not-needed-pw/);
    assert.match(store.description, /^postgres:\/\/.*:\*\*\*@127\.0\.0\.1:\d+\/mport_test_/);
  } finally {
    await store.close();
  }
});

Deno.test("postgres store test cleanup: drop test databases, stop our server", async () => {
  if (!server) return;
  const s = await server.catch(() => null);
  if (!s) return;
  for (const db of databases.splice(0)) await db.drop();
  await s.stop?.();
});
