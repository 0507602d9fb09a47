// Throwaway PostgreSQL for tests: initdb + pg_ctl into a temp directory, and fresh databases in it.

import postgres from "postgres";
import { freePort } from "../../support/net.ts";

/** A running throwaway PostgreSQL server. */
export interface PostgresServer {
  /** `postgres://postgres@127.0.0.1:PORT/postgres` (trust auth, no password). */
  readonly url: string;
  /** The temporary directory holding the cluster (data/, log, socket). */
  readonly dir: string;
  /** Stops the server and deletes its directory. Safe to call twice. */
  stop(): Promise<void>;
}

const PG_LIB = "/usr/lib/postgresql";

/** A role that must log in with its password over TCP (everyone else is trusted). */
export const AUTH_TEST_ROLE = "mport_auth_test";
const START_ATTEMPTS = 3;

/**
 * The directory holding `initdb` and `pg_ctl`: the newest `/usr/lib/postgresql/N/bin`. Throws a
 * clear Error when PostgreSQL's server binaries are not installed.
 */
export async function findPgBin(): Promise<string> {
  const versions: number[] = [];
  try {
    for await (const e of Deno.readDir(PG_LIB)) {
      const v = Number(e.name);
      if (Number.isFinite(v) && await exists(`${PG_LIB}/${e.name}/bin/initdb`)) versions.push(v);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const newest = versions.sort((a, b) => b - a)[0];
  if (newest === undefined) {
    throw new Error(
      `PostgreSQL server binaries not found (no ${PG_LIB}/*/bin/initdb): install them with ` +
        `\`apt-get install postgresql\`, or set MPORT_TEST_POSTGRES_URL to a server to test against`,
    );
  }
  return `${PG_LIB}/${newest}/bin`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** uid and gid of the `postgres` OS user, from /etc/passwd. */
async function postgresUser(): Promise<{ uid: number; gid: number }> {
  const passwd = await Deno.readTextFile("/etc/passwd");
  for (const line of passwd.split("\n")) {
    const [name, , uid, gid] = line.split(":");
    if (name === "postgres") return { uid: Number(uid), gid: Number(gid) };
  }
  throw new Error("There is no `postgres` OS user (it comes with `apt-get install postgresql`)");
}

/** Runs a PostgreSQL binary, as the `postgres` user when we are root (initdb refuses root). */
async function runPg(bin: string, args: string[]): Promise<{ ok: boolean; output: string }> {
  const asRoot = Deno.uid() === 0;
  const out = await new Deno.Command(asRoot ? "runuser" : bin, {
    args: asRoot ? ["-u", "postgres", "--", bin, ...args] : args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { LC_ALL: "C" },
  }).output();
  const dec = new TextDecoder();
  return { ok: out.success, output: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

/**
 * Starts a PostgreSQL server on 127.0.0.1 on a free port, with its data, log and Unix socket in a
 * new temporary directory and trust authentication. Takes about a second. Fails with a clear
 * Error when the binaries are missing or the server does not start (the log is included).
 * Unless `stopOnExit` is false, the server is also stopped when this process exits without
 * having called `stop()`.
 */
export async function startPostgres(
  opts: { stopOnExit?: boolean } = {},
): Promise<PostgresServer> {
  const bin = await findPgBin();
  const dir = await Deno.makeTempDir({ prefix: "mport-pg-" });
  try {
    if (Deno.uid() === 0) {
      const { uid, gid } = await postgresUser();
      await Deno.chown(dir, uid, gid);
    }
    const data = `${dir}/data`;
    const init = await runPg(`${bin}/initdb`, [
      "-D",
      data,
      "-A",
      "trust",
      "-U",
      "postgres",
      "-E",
      "UTF8",
      "--locale=C",
      "--no-sync",
      "--no-instructions",
    ]);
    if (!init.ok) throw new Error(`initdb failed:\n${init.output}`);
    // Everyone is trusted except AUTH_TEST_ROLE, so tests can also see a refused password.
    const hba = `${data}/pg_hba.conf`;
    await Deno.writeTextFile(
      hba,
      `host all ${AUTH_TEST_ROLE} 127.0.0.1/32 scram-sha-256\n${await Deno.readTextFile(hba)}`,
    );

    let lastError = "";
    for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
      // Another process may take the port between freePort() and the server's bind: retry.
      const port = freePort();
      const options = [
        `-p ${port}`,
        "-c listen_addresses=127.0.0.1",
        `-c unix_socket_directories=${dir}`,
        "-c fsync=off",
        "-c synchronous_commit=off",
        "-c full_page_writes=off",
        "-c max_connections=200",
      ].join(" ");
      const start = await runPg(`${bin}/pg_ctl`, [
        "start",
        "-D",
        data,
        "-l",
        `${dir}/log`,
        "-w",
        "-t",
        "30",
        "-o",
        options,
      ]);
      if (start.ok) {
        const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
        return makeServer(bin, dir, url, opts.stopOnExit ?? true);
      }
      const log = await Deno.readTextFile(`${dir}/log`).catch(() => "");
      lastError = `${start.output}\n${log}`;
      if (!/address already in use|could not bind/i.test(log)) break;
    }
    throw new Error(`pg_ctl start failed:\n${lastError.trim()}`);
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
}

function makeServer(bin: string, dir: string, url: string, stopOnExit: boolean): PostgresServer {
  let stopping: Promise<void> | null = null;
  // If the test run ends without stop() (a filter skipped the test that calls it, or a failure),
  // stop the server synchronously on the way out rather than leave it running.
  const onUnload = () => {
    if (stopping) return;
    const args = ["stop", "-D", `${dir}/data`, "-m", "immediate", "-w"];
    const root = Deno.uid() === 0;
    new Deno.Command(root ? "runuser" : `${bin}/pg_ctl`, {
      args: root ? ["-u", "postgres", "--", `${bin}/pg_ctl`, ...args] : args,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).outputSync();
    Deno.removeSync(dir, { recursive: true });
  };
  if (stopOnExit) globalThis.addEventListener("unload", onUnload);
  return {
    url,
    dir,
    stop() {
      globalThis.removeEventListener("unload", onUnload);
      stopping ??= stopPostgresAt(dir, bin);
      return stopping;
    },
  };
}

/**
 * Stops the server whose cluster lives in `dir` (as made by {@link startPostgres}) and deletes
 * `dir`. Used by `scripts/test_postgres.ts stop`, where the start happened in another process.
 */
export async function stopPostgresAt(dir: string, bin?: string): Promise<void> {
  const pgBin = bin ?? await findPgBin();
  const data = `${dir}/data`;
  if (await exists(`${data}/postmaster.pid`)) {
    const fast = await runPg(`${pgBin}/pg_ctl`, [
      "stop",
      "-D",
      data,
      "-m",
      "fast",
      "-w",
      "-t",
      "20",
    ]);
    if (!fast.ok) {
      await runPg(`${pgBin}/pg_ctl`, ["stop", "-D", data, "-m", "immediate", "-w", "-t", "20"]);
    }
  }
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

/** A database made for one test (run), and how to drop it. */
export interface TestDatabase {
  readonly url: string;
  readonly name: string;
  drop(): Promise<void>;
}

/**
 * Creates a new empty database `mport_test_<random>` on the server at `serverUrl` (whose user
 * may create databases) and returns its URL, so test runs never see each other's data.
 */
export async function createTestDatabase(serverUrl: string): Promise<TestDatabase> {
  const name = `mport_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  await withAdmin(serverUrl, (sql) => sql`CREATE DATABASE ${sql(name)}`);
  const u = new URL(serverUrl);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    name,
    drop: () =>
      withAdmin(serverUrl, (sql) => sql`DROP DATABASE IF EXISTS ${sql(name)} WITH (FORCE)`),
  };
}

async function withAdmin(
  url: string,
  f: (sql: postgres.Sql) => Promise<unknown>,
): Promise<void> {
  const sql = postgres(url, { max: 1, connect_timeout: 5, onnotice: () => {}, fetch_types: false });
  try {
    await f(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}
