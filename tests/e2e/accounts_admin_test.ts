// End to end with accounts: quotas, the first-start admin token, admin command output and disabled
// users on SQLite and PostgreSQL, and a store that cannot be opened.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { DatabaseSync } from "node:sqlite";
import {
  addUser,
  adminJson,
  adminOk,
  assertReaches,
  BACKENDS,
  byFirst,
  clientFor,
  createToken,
  runServerMain,
  startTaggedEcho,
  stopped,
  StoreFactory,
  usageOf,
  withStore,
} from "./accounts_harness.ts";
import {
  connect,
  metric,
  refusedConnection,
  roundTrip,
  sha256,
  startEcho,
  startServer,
  tunnelPort,
} from "./harness.ts";
import { closeQuietly, exitWithin, randomBytes, until, within } from "./scripted_services.ts";

const stores = new StoreFactory();

type UserJson = { name: string; role: string; disabled: boolean; email: string | null };
type TokenJson = { id: number; user: string; state: string; lastUsedAt: number | null };

for (const backend of BACKENDS) {
  Deno.test(`accounts (${backend}): a user over the monthly quota gets no new connections and no new client`, async () => {
    await withStore(stores, backend, async ({ db }, t) => {
      await addUser(db, "carol", ["--quota", "1MB"]);
      const tc = await createToken(db, "carol");
      const echo = startEcho();
      t.onClose(() => echo.close());
      const server = t.proc(await startServer(["--db", db, "--usage-flush", "0.5"]));
      const carol = t.proc(clientFor(server, tc.token, echo.port));
      const port = await tunnelPort(carol);

      // The check is at connection start, so the first connection may go past the quota.
      const data = randomBytes(2_000_000);
      const conn = await connect(port);
      try {
        const got = await within(roundTrip(conn, data), 20_000, "2 MB round trip");
        assert.equal(await sha256(got), await sha256(data));
      } finally {
        closeQuietly(conn);
      }
      await until(
        "carol's usage reaches the store",
        async () => (await usageOf(db, "carol")).bytesIn === 2_000_000,
      );

      const errFrom = carol.stderr.lines.length;
      // Refused with a reset, possibly before Deno.connect has even returned.
      assert.deepEqual(await refusedConnection(port), { end: "reset", bytes: 0 });
      await carol.stderr.wait(/monthly transfer quota reached for user carol/, 5_000, errFrom);
      assert.equal(echo.accepted, 1, "the refused connection must not reach the service");
      assert.ok(await metric(server, `mport_refusals_total{reason="quota_exceeded"}`) >= 1);
      assert.ok(
        await metric(server, `mport_user_bytes_total{user="carol",direction="in"}`) >= 2_000_000,
      );

      const again = t.proc(clientFor(server, tc.token, echo.port, ["--name", "again"]));
      const status = await exitWithin(again, 15_000);
      assert.equal(status.code, 1, again.output());
      assert.match(again.stderr.lines.join("\n"), /monthly transfer quota/);
    });
  });
}

for (const backend of BACKENDS) {
  Deno.test(`accounts (${backend}): the first start on an empty store prints a working admin token once`, async () => {
    await withStore(stores, backend, async ({ db }, t) => {
      const svc = startTaggedEcho("admin:");
      t.onClose(() => svc.close());
      // No static --token (an empty tokens file): with one, no token would be created or shown.
      const first = t.proc(await startServer(["--db", db, "--tokens-file", "/dev/null"]));
      assert.ok(
        first.stdout.lines.some((l) => /created the admin user "admin" and a client token/.test(l)),
        first.output(),
      );
      const tokenLines = first.stdout.lines.filter((l) => /^\s+mp_[A-Za-z0-9_-]+$/.test(l));
      assert.equal(tokenLines.length, 1, first.output());
      const token = tokenLines[0]!.trim();

      const client = t.proc(clientFor(first, token, svc.port));
      await assertReaches(await tunnelPort(client), "admin:", randomBytes(64 * 1024));
      await stopped(client);
      assert.equal((await stopped(first)).code, 0, first.output());

      const second = t.proc(await startServer(["--db", db, "--tokens-file", "/dev/null"]));
      const printed = second.stdout.lines.join("\n");
      assert.doesNotMatch(printed, /created|mp_/, second.output());
      assert.ok(!second.stderr.lines.some((l) => l.includes(token)), second.output());

      const users = await adminJson<UserJson[]>(db, ["user", "list"]);
      assert.deepEqual(users.map((u) => [u.name, u.role]), [["admin", "admin"]]);
      const tokens = await adminJson<TokenJson[]>(db, ["token", "list", "--user", "admin"]);
      assert.equal(tokens.length, 1);
      assert.notEqual(tokens[0]!.lastUsedAt, null, "the printed token is the stored one");
    });
  });
}

for (const backend of BACKENDS) {
  Deno.test(`accounts (${backend}): admin listings are aligned tables or JSON without secrets, and disabling a user disconnects it`, async () => {
    await withStore(stores, backend, async ({ db }, t) => {
      await addUser(db, "alice", ["--email", "alice@example.com"]);
      await addUser(db, "bob", ["--admin"]);

      const table = (await adminOk(db, ["user", "list"])).trimEnd().split("\n");
      const header = table[0]!;
      assert.match(header, /^ID\s+NAME\s+ROLE\s+STATE\s+EMAIL\s/);
      assert.equal(table.length, 3, table.join("\n"));
      const expected = [["alice", "user", "alice@example.com"], ["bob", "admin", "-"]];
      for (const [name, role, email] of expected) {
        const row = table.find((l) => l.includes(` ${name} `));
        assert.ok(row, `no row for ${name}:\n${table.join("\n")}`);
        const cell = (h: string) => row.slice(header.indexOf(h)).split(/\s{2,}/)[0];
        assert.equal(cell("NAME"), name);
        assert.equal(cell("ROLE"), role);
        assert.equal(cell("STATE"), "active");
        assert.equal(cell("EMAIL"), email);
        assert.equal(row[header.indexOf("NAME") - 1], " ", "columns line up with the header");
      }
      const users = await adminJson<UserJson[]>(db, ["user", "list"]);
      assert.deepEqual(users.map((u) => [u.name, u.role, u.email]), [
        ["alice", "user", "alice@example.com"],
        ["bob", "admin", null],
      ]);
      assert.doesNotMatch(await adminOk(db, ["user", "list", "--json"]), /passwordHash|scrypt\$/);

      const t1 = await createToken(db, "alice");
      const t2 = await createToken(db, "alice");
      // Neither the token, nor its random part, nor its stored hash.
      const secrets = [t1, t2].flatMap((tok) => [
        tok.token,
        tok.token.slice(3),
        createHash("sha256").update(tok.token).digest("hex"),
      ]);
      const listings = [
        ["token", "list", "--user", "alice"],
        ["token", "list", "--json"],
        ["token", "list"],
      ];
      for (const args of listings) {
        const out = await adminOk(db, args);
        assert.match(out, new RegExp(`^\\s*${t1.id}\\s|"id": ${t1.id}`, "m"));
        for (const s of secrets) assert.ok(!out.includes(s), `token list shows a secret:\n${out}`);
      }
      const tokens = await adminJson<TokenJson[]>(db, ["token", "list", "--user", "alice"]);
      assert.deepEqual(tokens.map((tok) => [tok.id, tok.user, tok.state]).sort(byFirst), [
        [t1.id, "alice", "active"],
        [t2.id, "alice", "active"],
      ]);

      const svc = startTaggedEcho("alice:");
      t.onClose(() => svc.close());
      const server = t.proc(await startServer(["--db", db, "--recheck", "0.5"]));
      const alice = t.proc(clientFor(server, t1.token, svc.port));
      await assertReaches(await tunnelPort(alice), "alice:", randomBytes(16 * 1024));
      assert.match(await adminOk(db, ["user", "disable", "alice"]), /user alice disabled/);
      const status = await exitWithin(alice, 10_000);
      assert.notEqual(status.code, 0, alice.output());
      assert.match(alice.stderr.lines.join("\n"), /user alice was disabled/);
      const after = await adminJson<UserJson[]>(db, ["user", "list"]);
      assert.equal(after.find((u) => u.name === "alice")?.disabled, true);

      // Another token of the disabled user does not help.
      const retry = t.proc(clientFor(server, t2.token, svc.port));
      assert.equal((await exitWithin(retry, 10_000)).code, 1, retry.output());
      assert.match(retry.stderr.lines.join("\n"), /user alice is disabled/);
    });
  });
}

// --- a store that cannot be opened (not per backend) --------------------------------------------

/** Runs the server on `db` and returns how it exited, and how long it took. */
async function serverOn(db: string, timeoutMs: number) {
  const started = performance.now();
  const r = await runServerMain(["--listen", "127.0.0.1:0", "--stats-interval", "0", "--db", db], {
    timeoutMs,
  });
  return { ...r, ms: performance.now() - started };
}

Deno.test("server refuses an unsupported --db scheme at once, naming the accepted forms", async () => {
  const r = await serverOn("mysql://x", 10_000);
  assert.ok(r.code === 1 || r.code === 2, `exit code ${r.code}: ${r.stderr}`);
  assert.match(r.stderr, /postgres:\/\//);
  assert.match(r.stderr, /sqlite:/);
  assert.match(r.stderr, /file path/);
  assert.doesNotMatch(r.stdout, /listening/);
});

Deno.test("server exits within 10 s when PostgreSQL is unreachable, without showing the password", async () => {
  const r = await serverOn("postgres://u:secretpw@127.0.0.1:1/db", 10_000);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /cannot open the store/);
  assert.match(r.stderr, /127\.0\.0\.1:1/);
  assert.ok(!(r.stdout + r.stderr).includes("secretpw"), r.stderr);
});

async function sqliteStore(): Promise<{ dir: string; path: string }> {
  const dir = await Deno.makeTempDir({ prefix: "mport-accounts-e2e-" });
  const path = `${dir}/mport.db`;
  await adminOk(path, ["user", "list"]); // creates and migrates it
  return { dir, path };
}

Deno.test("server says which SQLite file is locked by another process", async () => {
  const { dir, path } = await sqliteStore();
  const other = new DatabaseSync(path);
  try {
    other.exec("BEGIN EXCLUSIVE");
    other.exec("INSERT INTO events (at, kind, detail) VALUES (0, 'x', '{}')");
    const r = await serverOn(path, 20_000);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /cannot open the store/);
    assert.match(r.stderr, /in use by another process/);
    assert.ok(r.stderr.includes(path), r.stderr);
  } finally {
    other.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server says which SQLite file is read-only", async () => {
  const { dir, path } = await sqliteStore();
  // Root ignores file modes: the immutable flag is what makes the file read-only for it.
  let undo: () => Promise<unknown>;
  if (Deno.uid() === 0) {
    const set = await new Deno.Command("chattr", { args: ["+i", path], stderr: "piped" })
      .output().catch(() => null);
    if (!set?.success) {
      console.warn("chattr +i is not supported here; skipping the read-only store check");
      await Deno.remove(dir, { recursive: true });
      return;
    }
    undo = () => new Deno.Command("chattr", { args: ["-i", path] }).output();
  } else {
    await Deno.chmod(path, 0o444);
    undo = () => Deno.chmod(path, 0o644);
  }
  try {
    const r = await serverOn(path, 15_000);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /cannot open the store/);
    assert.match(r.stderr, /read-only/);
    assert.ok(r.stderr.includes(path), r.stderr);
  } finally {
    await undo();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("accounts e2e cleanup: stop the PostgreSQL started for this file", async () => {
  await stores.close();
});
