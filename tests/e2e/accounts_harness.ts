// Helpers for the accounts e2e tests: fresh SQLite/PostgreSQL stores and the admin CLI as a process.
import assert from "node:assert/strict";
import {
  createTestDatabase,
  type PostgresServer,
  startPostgres,
} from "../server/store/pg_harness.ts";
import { connect, type Proc, roundTrip, sha256, startClient } from "./harness.ts";
import { closeQuietly, type ScriptedService, startService, within } from "./scripted_services.ts";

const SERVER_MAIN = new URL("../../server/main.ts", import.meta.url).pathname;

/** The two store backends every accounts scenario runs against. */
export type Backend = "sqlite" | "postgres";
export const BACKENDS: readonly Backend[] = ["sqlite", "postgres"];

/** Orders table rows by their first cell, a number (for comparing listings). */
export function byFirst(a: readonly unknown[], b: readonly unknown[]): number {
  return Number(a[0]) - Number(b[0]);
}

/** The password every test user gets (admin commands read it from stdin). */
export const PASSWORD = "correct-horse-battery";

/** A new empty store for one test: the `--db` value, and how to delete it. */
export interface TestStore {
  readonly db: string;
  /** SQLite: the database file (null for PostgreSQL). */
  readonly path: string | null;
  drop(): Promise<void>;
}

/**
 * Makes fresh stores: SQLite files in temp directories, PostgreSQL databases on the server in
 * `MPORT_TEST_POSTGRES_URL` or on one throwaway cluster started on first use (one per test file;
 * `close()` stops it).
 */
export class StoreFactory {
  #pg: Promise<{ url: string; server: PostgresServer | null }> | null = null;

  async fresh(backend: Backend): Promise<TestStore> {
    if (backend === "sqlite") {
      const dir = await Deno.makeTempDir({ prefix: "mport-accounts-e2e-" });
      const path = `${dir}/mport.db`;
      return { db: path, path, drop: () => Deno.remove(dir, { recursive: true }) };
    }
    this.#pg ??= (async () => {
      const env = Deno.env.get("MPORT_TEST_POSTGRES_URL");
      if (env) return { url: env, server: null };
      const server = await startPostgres();
      return { url: server.url, server };
    })();
    const db = await createTestDatabase((await this.#pg).url);
    return { db: db.url, path: null, drop: () => db.drop() };
  }

  /** Stops the cluster this factory started, if any. */
  async close(): Promise<void> {
    const pg = this.#pg;
    this.#pg = null;
    const started = await pg?.catch(() => null);
    await started?.server?.stop();
  }
}

/** What a test started: processes (stopped first, newest first), then services to close. */
export class Teardown {
  readonly #procs: Proc[] = [];
  readonly #closers: (() => Promise<unknown>)[] = [];

  /** Remembers a process to stop (SIGTERM, then wait for its exit) after the test. */
  proc<P extends Proc>(p: P): P {
    this.#procs.push(p);
    return p;
  }

  /** Remembers something to close after the processes are gone. */
  onClose(close: () => Promise<unknown>): void {
    this.#closers.push(close);
  }

  async run(): Promise<void> {
    for (const p of this.#procs.reverse()) {
      // SIGTERM lets the server drain and flush; a process stuck past that gets SIGKILL.
      await stopped(p).catch(() => p.stop("SIGKILL"));
    }
    for (const c of this.#closers.reverse()) await c();
  }
}

/** Stops a process (SIGTERM by default) and returns its exit status; rejects after 15 s. */
export function stopped(p: Proc, signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
  return within(p.stop(signal), 15_000, `exit after ${signal}`);
}

/** Runs `body` with a fresh store of `backend`; afterwards stops what it started and drops it. */
export async function withStore(
  stores: StoreFactory,
  backend: Backend,
  body: (store: TestStore, t: Teardown) => Promise<void>,
): Promise<void> {
  const store = await stores.fresh(backend);
  const t = new Teardown();
  try {
    await body(store, t);
  } finally {
    await t.run();
    await store.drop();
  }
}

/** Output of one admin command. */
export interface AdminResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `mport-server ARGS` as a process until it exits (killed, and rejecting, after
 * `timeoutMs`), with `stdin` (if given) on its stdin.
 */
export async function runServerMain(
  args: string[],
  opts: { stdin?: string; timeoutMs?: number } = {},
): Promise<AdminResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVER_MAIN, ...args],
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const output = child.output();
  try {
    const out = await within(output, opts.timeoutMs ?? 30_000, `mport-server ${args.join(" ")}`);
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } catch (e) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await output.catch(() => {});
    throw e;
  }
}

/** Runs the admin command `mport-server ARGS --db DB`, with `stdin` (if given) on its stdin. */
export function admin(db: string, args: string[], stdin?: string): Promise<AdminResult> {
  return runServerMain([...args, "--db", db], { stdin });
}

/** Runs an admin command that must succeed; returns its stdout. */
export async function adminOk(db: string, args: string[], stdin?: string): Promise<string> {
  const r = await admin(db, args, stdin);
  assert.equal(
    r.code,
    0,
    `mport-server ${args.join(" ")} exited ${r.code}:\n${r.stdout}\n${r.stderr}`,
  );
  return r.stdout;
}

/** Runs an admin command with `--json` and parses its output. */
export async function adminJson<T>(db: string, args: string[]): Promise<T> {
  return JSON.parse(await adminOk(db, [...args, "--json"])) as T;
}

/** Adds a user through `user add NAME --password-stdin` (extra flags: limits, --admin). */
export async function addUser(db: string, name: string, extra: string[] = []): Promise<void> {
  await adminOk(db, ["user", "add", name, "--password-stdin", ...extra], `${PASSWORD}\n`);
}

/** Creates a token for `user` with `token create --json`. */
export async function createToken(
  db: string,
  user: string,
): Promise<{ id: number; token: string }> {
  const t = await adminJson<{ id: number; token: string }>(db, ["token", "create", "--user", user]);
  assert.match(t.token, /^mp_/);
  return t;
}

/** One row of `usage --json`. */
export interface UsageJson {
  readonly user: string;
  readonly tunnel: string;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly connections: number;
}

/** Sums `usage --user USER --json` over hours and tunnels. */
export async function usageOf(
  db: string,
  user: string,
): Promise<{ bytesIn: number; bytesOut: number; connections: number }> {
  const rows = await adminJson<UsageJson[]>(db, ["usage", "--user", user]);
  return rows.reduce(
    (s, r) => ({
      bytesIn: s.bytesIn + r.bytesIn,
      bytesOut: s.bytesOut + r.bytesOut,
      connections: s.connections + r.connections,
    }),
    { bytesIn: 0, bytesOut: 0, connections: 0 },
  );
}

/** Starts a client publishing local `port` as tunnel `name` with `token`. */
export function clientFor(
  server: { wsUrl: string },
  token: string,
  port: number,
  extra: string[] = [],
): Proc {
  return startClient([
    "tcp",
    `127.0.0.1:${port}`,
    "--server",
    server.wsUrl,
    "--name",
    "web",
    "--token",
    token,
    ...extra,
  ]);
}

/** A local service that first sends `tag`, then echoes every byte (half-close aware). */
export function startTaggedEcho(tag: string): ScriptedService {
  const tagBytes = new TextEncoder().encode(tag);
  return startService(async (conn) => {
    await conn.write(tagBytes);
    const buf = new Uint8Array(64 * 1024);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      let off = 0;
      while (off < n) off += await conn.write(buf.subarray(off, n));
    }
    await conn.closeWrite();
  });
}

/**
 * Sends `data` through public `port` and checks that the reply is `tag` (which service answered)
 * followed by a byte-exact echo (compared by SHA-256).
 */
export async function assertReaches(port: number, tag: string, data: Uint8Array): Promise<void> {
  const conn = await connect(port);
  try {
    const got = await within(roundTrip(conn, data), 20_000, `round trip through port ${port}`);
    const tagBytes = new TextEncoder().encode(tag);
    assert.equal(new TextDecoder().decode(got.subarray(0, tagBytes.byteLength)), tag);
    const body = got.subarray(tagBytes.byteLength);
    assert.equal(body.byteLength, data.byteLength);
    assert.equal(await sha256(body), await sha256(data));
  } finally {
    closeQuietly(conn);
  }
}
