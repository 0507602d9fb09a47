// e2e: a stalled store (SQLite write lock held elsewhere, PostgreSQL frozen) never stalls tunnels or shutdown.
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { stopped, Teardown } from "./accounts_harness.ts";
import { createTestDatabase, startPostgres } from "../server/store/pg_harness.ts";
import { connect, startClient, startEcho, startServer, TEST_TOKEN, tunnelPort } from "./harness.ts";
import { readExactly, writeAll } from "../support/tcp_services.ts";
import { within } from "../support/wait.ts";

/** Writes `data` and reads as many bytes back; returns the milliseconds it took. */
async function echoOnce(conn: Deno.TcpConn, data: Uint8Array): Promise<number> {
  const t0 = performance.now();
  await writeAll(conn, data);
  const back = await within(readExactly(conn, data.byteLength), 20_000, "echo through the tunnel");
  assert.deepEqual(back, data);
  return performance.now() - t0;
}

Deno.test("store stall (sqlite): a held write lock neither slows a tunnel's round trips nor refuses a static-token login", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-store-stall-" });
  const path = `${dir}/mport.db`;
  const t = new Teardown();
  const echo = startEcho();
  t.onClose(() => Promise.resolve(echo.close()));
  const other = new DatabaseSync(path); // opened first: the server then finds the file it made
  try {
    // Usage is flushed every second, so the old in-thread store hit the lock (5 s busy wait) often.
    const server = t.proc(await startServer(["--db", path, "--usage-flush", "1"]));
    const first = t.proc(
      startClient(["tcp", `127.0.0.1:${echo.port}`, "--server", server.wsUrl, "--name", "one"]),
    );
    const port = await tunnelPort(first);
    const conn = await connect(port);
    t.onClose(() => Promise.resolve(conn.close()));
    const data = new Uint8Array(32).map((_, i) => i);
    await echoOnce(conn, data);

    other.exec("BEGIN IMMEDIATE");
    const lockedAt = performance.now();
    // A second client with a static token logs in while the lock is held.
    const second = t.proc(
      startClient(["tcp", `127.0.0.1:${echo.port}`, "--server", server.wsUrl, "--name", "two"]),
    );
    const times: number[] = [];
    for (let i = 0; i < 200; i++) {
      times.push(await echoOnce(conn, data));
      await new Promise((r) => setTimeout(r, 40));
    }
    const welcomed = server.stderr.lines.filter((l) => /connected as session/.test(l)).length;
    const heldMs = performance.now() - lockedAt;
    await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - heldMs)));
    other.exec("COMMIT");

    times.sort((a, b) => a - b);
    const p99 = times[Math.ceil(times.length * 0.99) - 1]!;
    assert.ok(
      p99 < 500,
      `p99 of 200 round trips under the lock is ${p99.toFixed(0)} ms (max ${
        times.at(-1)!.toFixed(0)
      } ms)\n${server.output()}`,
    );
    assert.ok(heldMs >= 8_000, `the round trips ran while the lock was held (${heldMs} ms)`);
    assert.equal(
      welcomed,
      2,
      `the static-token client logged in during the lock\n${server.output()}
${second.output()}`,
    );
  } finally {
    if (other.isTransaction) other.exec("ROLLBACK");
    other.close();
    await t.run();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Pids of a PostgreSQL cluster: the postmaster (from postmaster.pid) and its children. */
async function clusterPids(dataDir: string): Promise<number[]> {
  const master = Number((await Deno.readTextFile(`${dataDir}/postmaster.pid`)).split("\n")[0]);
  const pids = [master];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${e.name}/stat`);
      // pid (comm) state ppid …: comm may hold spaces, so split after its closing parenthesis.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === master) pids.push(Number(e.name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

function signalAll(pids: readonly number[], signal: Deno.Signal): void {
  for (const pid of pids) {
    try {
      Deno.kill(pid, signal);
    } catch {
      // gone meanwhile
    }
  }
}

Deno.test("store stall (postgres): SIGTERM with PostgreSQL frozen exits within drain + store timeout, reporting the lost flush", async () => {
  // A cluster of its own, since it is frozen.
  const pg = await startPostgres();
  const store = await createTestDatabase(pg.url);
  const t = new Teardown();
  const echo = startEcho();
  t.onClose(() => Promise.resolve(echo.close()));
  let frozen: number[] = [];
  try {
    const server = t.proc(
      await startServer([
        "--db",
        store.url,
        "--drain",
        "1",
        "--store-timeout",
        "2",
        "--usage-flush",
        "3600",
      ]),
    );
    const client = t.proc(
      startClient([
        "tcp",
        `127.0.0.1:${echo.port}`,
        "--server",
        server.wsUrl,
        "--token",
        TEST_TOKEN,
      ]),
    );
    const port = await tunnelPort(client);
    const conn = await connect(port);
    t.onClose(() => Promise.resolve(conn.close()));
    await echoOnce(conn, new Uint8Array(32).fill(7)); // usage waiting for the final flush

    frozen = await clusterPids(`${pg.dir}/data`);
    signalAll(frozen, "SIGSTOP");
    const t0 = performance.now();
    const status = await within(stopped(server), 12_000, "server exit after SIGTERM");
    const ms = performance.now() - t0;
    assert.equal(status.code, 0, server.output());
    // drain 1 s + store timeout 2 s (final flush) + closing the store (bounded by it too) + margin
    assert.ok(ms < 1_000 + 2_000 + 4_000, `exit took ${ms.toFixed(0)} ms\n${server.output()}`);
    assert.ok(
      server.stderr.lines.some((l) => /final usage flush timed out/.test(l)),
      server.output(),
    );
  } finally {
    signalAll(frozen, "SIGCONT");
    await t.run();
    await store.drop().catch(() => {});
    await pg.stop();
  }
});
