// SQLite store: the Store contract on a real file, plus reopening, locking, read-only and races.

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { openSqliteStore } from "../../../server/store/sqlite_store.ts";
import { LATEST_VERSION } from "../../../server/store/migrations.ts";
import { storeContract } from "./store_contract.ts";
import { tempDir } from "./temp_dirs.ts";
import { assertMigratedV1, v1Database } from "./v1_fixture.ts";

const ROOT = new URL("../../../", import.meta.url).pathname;

storeContract("sqlite", async () => openSqliteStore(`${await tempDir()}/mport.db`));

storeContract("sqlite in-memory", () => openSqliteStore(":memory:"));

Deno.test("sqlite store creates a missing parent directory", async () => {
  const dir = await tempDir();
  const path = `${dir}/a/b/c/mport.db`;
  const store = await openSqliteStore(path);
  try {
    assert.equal(store.description, `sqlite:${path}`);
    assert.ok((await Deno.stat(path)).isFile);
  } finally {
    await store.close();
  }
});

/** The permission bits of `path`, as in `ls -l` (0o600). */
async function modeOf(path: string): Promise<number> {
  return (await Deno.stat(path)).mode! & 0o777;
}

Deno.test("sqlite store creates its directory 0700 and the database, -wal and -shm files 0600", async () => {
  const dir = `${await tempDir()}/data`;
  const path = `${dir}/mport.db`;
  const warnings: string[] = [];
  const store = await openSqliteStore(path, { warn: (m) => warnings.push(m) });
  try {
    await store.createUser({ name: "alice", role: "user", passwordHash: "scrypt$1$1$1$a$b" });
    assert.equal((await modeOf(dir)).toString(8), "700");
    for (const file of [path, `${path}-wal`, `${path}-shm`]) {
      assert.equal((await modeOf(file)).toString(8), "600", file);
    }
    assert.deepEqual(warnings, [], "nothing to warn about in files it created itself");
  } finally {
    await store.close();
  }
});

Deno.test("sqlite store makes existing database files readable by others 0600 and warns once", async () => {
  const path = `${await tempDir()}/mport.db`;
  const first = await openSqliteStore(path);
  try {
    await first.createUser({ name: "alice", role: "user" }); // the -wal and -shm files exist now
    await Deno.chmod(path, 0o644);
    await Deno.chmod(`${path}-wal`, 0o640);
    await Deno.chmod(`${path}-shm`, 0o604);
    const warnings: string[] = [];
    const second = await openSqliteStore(path, { warn: (m) => warnings.push(m) });
    try {
      assert.equal(warnings.length, 1, warnings.join("\n"));
      assert.match(warnings[0]!, /readable by other users; changed them to 0600/);
      for (
        const [file, was] of [[path, "0644"], [`${path}-wal`, "0640"], [`${path}-shm`, "0604"]]
      ) {
        assert.ok(warnings[0]!.includes(`${file} (was ${was})`), warnings[0]);
        assert.equal((await modeOf(file!)).toString(8), "600", file);
      }
      assert.equal((await second.userByName("alice"))?.name, "alice");
    } finally {
      await second.close();
    }
    const quiet: string[] = [];
    await (await openSqliteStore(path, { warn: (m) => quiet.push(m) })).close();
    assert.deepEqual(quiet, [], "no warning once the files are private");
  } finally {
    await first.close();
  }
});

Deno.test("sqlite store keeps its data when reopened and applies migrations once", async () => {
  const path = `${await tempDir()}/mport.db`;
  const first = await openSqliteStore(path);
  const u = await first.createUser({ name: "alice", role: "admin" });
  await first.reservePort({ userId: u.id, tunnel: "web", port: 20001, at: 1 });
  await first.close();
  await first.close(); // closing twice is harmless

  for (let i = 0; i < 2; i++) {
    const again = await openSqliteStore(path);
    try {
      assert.deepEqual(await again.userByName("alice"), u);
      assert.equal((await again.reservationFor(u.id, "web"))?.port, 20001);
    } finally {
      await again.close();
    }
  }
  const db = new DatabaseSync(path);
  try {
    const rows = db.prepare("SELECT version FROM schema_migrations ORDER BY version").all();
    assert.deepEqual(
      rows.map((r) => r.version),
      Array.from({ length: LATEST_VERSION }, (_, i) => i + 1),
    );
    assert.equal(db.prepare("PRAGMA journal_mode").get()?.journal_mode, "wal");
  } finally {
    db.close();
  }
});

Deno.test("sqlite store: deleting a user deletes their host reservations", async () => {
  const path = `${await tempDir()}/mport.db`;
  const store = await openSqliteStore(path);
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
    const db = new DatabaseSync(path);
    try {
      db.exec("PRAGMA foreign_keys = ON");
      db.prepare("DELETE FROM users WHERE id = ?").run(alice.id);
    } finally {
      db.close();
    }
    assert.deepEqual((await store.listHosts()).map((h) => h.host), ["b.example.org"]);
  } finally {
    await store.close();
  }
});

Deno.test("sqlite store migrates version 1 reservations: operators' explicit, none expiring at once", async () => {
  const path = `${await tempDir()}/mport.db`;
  const db = new DatabaseSync(path);
  db.exec(v1Database("sqlite"));
  db.close();
  const before = Date.now();
  const store = await openSqliteStore(path, { warn: () => {} });
  try {
    await assertMigratedV1(store, before);
  } finally {
    await store.close();
  }
});

Deno.test("sqlite store refuses to open a database with a newer schema", async () => {
  const path = `${await tempDir()}/mport.db`;
  await (await openSqliteStore(path)).close();
  const db = new DatabaseSync(path);
  db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
    .run(LATEST_VERSION + 1, "from the future", 0);
  db.close();
  await assert.rejects(openSqliteStore(path), /schema version \d+ is newer.*upgrade mport-server/);
});

Deno.test("sqlite store: two instances on one file race for a port and one wins", async () => {
  const path = `${await tempDir()}/mport.db`;
  const a = await openSqliteStore(path);
  const b = await openSqliteStore(path);
  try {
    const users = [];
    for (let i = 0; i < 20; i++) users.push(await a.createUser({ name: `u${i}`, role: "user" }));
    const results = await Promise.all(
      users.map((u, i) =>
        (i % 2 ? a : b).reservePort({ userId: u.id, tunnel: "t", port: 20100, at: i })
      ),
    );
    assert.equal(results.filter((r) => r.ok).length, 1);
    assert.equal((await b.listReservations()).length, 1);
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("sqlite store: four processes reserving the same 40 ports each get distinct ones", async () => {
  const path = `${await tempDir()}/mport.db`;
  const setup = await openSqliteStore(path);
  const ids: number[] = [];
  for (let i = 0; i < 4; i++) {
    ids.push((await setup.createUser({ name: `p${i}`, role: "user" })).id);
  }
  await setup.close();

  const storeUrl = new URL("server/store/sqlite_store.ts", `file://${ROOT}`).href;
  const script = `
    const { openSqliteStore } = await import(${JSON.stringify(storeUrl)});
    const [path, userId] = Deno.args;
    const s = await openSqliteStore(path);
    const won = [];
    for (let port = 21000; port < 21040; port++) {
      const r = await s.reservePort({ userId: Number(userId), tunnel: null, port, at: port });
      if (r.ok) won.push(port);
    }
    await s.close();
    console.log(JSON.stringify(won));`;
  const outputs = await Promise.all(ids.map((id) =>
    new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", script, path, String(id)],
      stdout: "piped",
      stderr: "piped",
    }).output()
  ));
  const won: number[][] = outputs.map((o, i) => {
    assert.ok(o.success, `process ${i} failed: ${new TextDecoder().decode(o.stderr)}`);
    return JSON.parse(new TextDecoder().decode(o.stdout));
  });
  const all = won.flat().sort((x, y) => x - y);
  assert.deepEqual(all, Array.from({ length: 40 }, (_, i) => 21000 + i), "each port won once");

  const check = await openSqliteStore(path);
  try {
    const held = await check.listReservations();
    assert.equal(held.length, 40);
    for (const [i, ports] of won.entries()) {
      for (const port of ports) assert.equal(held.find((r) => r.port === port)?.userId, ids[i]);
    }
  } finally {
    await check.close();
  }
});

Deno.test("sqlite store says the file is in use when another process holds it locked", async () => {
  const path = `${await tempDir()}/mport.db`;
  const store = await openSqliteStore(path, { busyTimeoutMs: 100 });
  const other = new DatabaseSync(path);
  try {
    other.exec("BEGIN EXCLUSIVE");
    other.exec("INSERT INTO events (at, kind, detail) VALUES (0, 'x', '{}')");
    const started = performance.now();
    await assert.rejects(
      openSqliteStore(path, { busyTimeoutMs: 100 }),
      (e: unknown) => {
        assert.ok(e instanceof Error);
        assert.match(e.message, /in use by another process/);
        assert.ok(e.message.includes(path), e.message);
        return true;
      },
    );
    assert.ok(performance.now() - started < 3000, "fails after the busy timeout, not later");
    await assert.rejects(
      store.createUser({ name: "x", role: "user" }),
      /SQLite database .* is in use by another process/,
    );
    other.exec("ROLLBACK");
    assert.equal((await store.createUser({ name: "x", role: "user" })).name, "x");
  } finally {
    other.close();
    await store.close();
  }
});

/**
 * Makes `path` unwritable even for root: `chattr +i` (the immutable flag; plain chmod does not
 * stop root). Returns an undo function, or null when the file system has no immutable flag.
 */
async function makeReadOnly(path: string): Promise<(() => Promise<void>) | null> {
  if (Deno.uid() !== 0) {
    const { mode } = await Deno.stat(path);
    await Deno.chmod(path, (await Deno.stat(path)).isDirectory ? 0o555 : 0o444);
    return () => Deno.chmod(path, mode ?? 0o644);
  }
  const set = await new Deno.Command("chattr", { args: ["+i", path], stderr: "piped" }).output()
    .catch(() => null);
  if (!set?.success) return null;
  return async () => {
    await new Deno.Command("chattr", { args: ["-i", path] }).output();
  };
}

Deno.test("sqlite store says a read-only database file is read-only and names it", async () => {
  const dir = await tempDir();
  const path = `${dir}/mport.db`;
  await (await openSqliteStore(path)).close();
  const undo = await makeReadOnly(path);
  if (!undo) {
    console.warn("chattr +i is not supported here; the locked-database test covers open errors");
    return;
  }
  try {
    await assert.rejects(openSqliteStore(path), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.match(e.message, /is read-only/);
      assert.ok(e.message.includes(path), e.message);
      return true;
    });
  } finally {
    await undo();
  }
});

Deno.test("sqlite store says a read-only directory cannot hold the database and names it", async () => {
  const dir = await tempDir();
  const undo = await makeReadOnly(dir);
  if (!undo) {
    console.warn("chattr +i is not supported here; the locked-database test covers open errors");
    return;
  }
  const path = `${dir}/mport.db`;
  try {
    await assert.rejects(openSqliteStore(path), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.match(e.message, /Cannot open SQLite database .*read-only/);
      assert.ok(e.message.includes(path), e.message);
      return true;
    });
  } finally {
    await undo();
  }
});
