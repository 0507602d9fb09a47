// SQLite store in a Worker: the Store contract, and a held write lock that stalls writes only.

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import {
  openSqliteWorkerStore,
  SqliteWorkerFailed,
} from "../../../server/store/sqlite_worker_store.ts";
import { storeContract } from "./store_contract.ts";
import { tempDir } from "./temp_dirs.ts";

storeContract("sqlite worker", async () => openSqliteWorkerStore(`${await tempDir()}/mport.db`));

storeContract("sqlite worker in-memory", () => openSqliteWorkerStore(":memory:"));

Deno.test("sqlite worker store keeps reading and the event loop running while another connection holds the write lock", async () => {
  const path = `${await tempDir()}/mport.db`;
  const store = await openSqliteWorkerStore(path, { callTimeoutMs: 600 });
  const other = new DatabaseSync(path);
  try {
    const alice = await store.createUser({ name: "alice", role: "user" });
    other.exec("BEGIN IMMEDIATE");
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    const t0 = performance.now();
    const write = store.touchUser(alice.id, 1).then(() => "done", (e: Error) => e.message);
    assert.equal((await store.userByName("alice"))?.id, alice.id);
    assert.ok(performance.now() - t0 < 300, "a read is not queued behind the waiting write");
    const failed = await write;
    clearInterval(ticker);
    assert.match(failed, /in use by another process \(still locked after \d+ ms\)/);
    assert.ok(ticks >= 20, `the event loop kept running (${ticks} ticks)`);
    // Released in time: a waiting write goes through.
    const late = store.touchUser(alice.id, 2);
    await new Promise((r) => setTimeout(r, 100));
    other.exec("COMMIT");
    await late;
    assert.equal((await store.userById(alice.id))?.lastSeenAt, 2);
  } finally {
    if (other.isTransaction) other.exec("ROLLBACK");
    other.close();
    await store.close();
  }
});

Deno.test("sqlite worker store refuses calls after close", async () => {
  const store = await openSqliteWorkerStore(":memory:");
  await store.close();
  await store.close();
  await assert.rejects(store.listUsers(), /closed/);
});

Deno.test("sqlite worker store whose worker module is missing fails with SqliteWorkerFailed", async () => {
  await assert.rejects(
    openSqliteWorkerStore(":memory:", {
      workerUrl: new URL("./no_such_worker.ts", import.meta.url).href,
    }),
    (e: unknown) => e instanceof SqliteWorkerFailed && /SQLite worker .* failed/.test(e.message),
  );
});
