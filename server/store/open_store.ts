// Picks the Store implementation from the --db value: a PostgreSQL URL or an SQLite path.

import { log } from "../../shared/log.ts";
import { openPostgresStore, redactPostgresUrl } from "./postgres_store.ts";
import { openSqliteStore } from "./sqlite_store.ts";
import { openSqliteWorkerStore, SqliteWorkerFailed } from "./sqlite_worker_store.ts";
import type { Store } from "./store.ts";

const ACCEPTED = "expected postgres://user:password@host:port/database, " +
  "postgresql://…, sqlite:PATH or a file path";

/** Which store a `--db` value selects, without opening anything. */
export type DbTarget =
  | { readonly kind: "postgres"; readonly url: string }
  | { readonly kind: "sqlite"; readonly path: string };

/**
 * Parses a `--db` value: `postgres://…` or `postgresql://…` select PostgreSQL, `sqlite:PATH` or a
 * plain path (no `scheme://`) select SQLite. Throws a TypeError naming the accepted forms for
 * anything else: another scheme, an unparsable or host-less PostgreSQL URL, an empty value.
 */
export function parseDbTarget(db: string): DbTarget {
  const value = db.trim();
  if (value === "") throw new TypeError(`Database is empty (${ACCEPTED})`);
  if (/^postgres(ql)?:/i.test(value)) {
    let u: URL;
    try {
      u = new URL(value);
    } catch {
      throw new TypeError(`Invalid PostgreSQL URL ${redactDbUrl(value)} (${ACCEPTED})`);
    }
    if (!u.hostname && !u.searchParams.get("host")) {
      throw new TypeError(`PostgreSQL URL ${redactDbUrl(value)} has no host (${ACCEPTED})`);
    }
    return { kind: "postgres", url: value };
  }
  if (/^sqlite:/i.test(value)) {
    // sqlite:PATH, also tolerating sqlite://PATH (sqlite:///abs/path keeps its leading slash).
    const path = value.slice("sqlite:".length).replace(/^\/\/(?=\/|[^/])/, "");
    if (path === "") {
      throw new TypeError(`sqlite: needs a path, as in sqlite:./data/mport.db (${ACCEPTED})`);
    }
    return { kind: "sqlite", path };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(value);
  if (scheme) {
    throw new TypeError(`Unsupported database ${redactDbUrl(value)} (${ACCEPTED})`);
  }
  return { kind: "sqlite", path: value };
}

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /** Gets the SQLite store's warning about database files that were readable by other users. */
  readonly warn?: (message: string) => void;
  /**
   * Run SQLite in a Worker, off the caller's event loop (the server: a locked or slow disk must
   * not stall tunnels). Admin commands use it in-thread.
   */
  readonly offThread?: boolean;
  /** With `offThread`: how long a call retries a locked database before failing. */
  readonly callTimeoutMs?: number;
}

/** Opens the store a `--db` value names (see {@link parseDbTarget}) and migrates it. */
export function openStore(db: string, opts: OpenStoreOptions = {}): Promise<Store> {
  let t: DbTarget;
  try {
    t = parseDbTarget(db);
  } catch (e) {
    return Promise.reject(e);
  }
  if (t.kind === "postgres") return openPostgresStore(t.url);
  const warn = opts.warn ?? ((m: string) => log("store").warning("{message}", { message: m }));
  if (!opts.offThread) return openSqliteStore(t.path, { warn });
  const path = t.path;
  return openSqliteWorkerStore(path, { warn, callTimeoutMs: opts.callTimeoutMs }).catch((e) => {
    if (!(e instanceof SqliteWorkerFailed)) throw e;
    // A build that left the worker module out (a bundle without it) still runs, in-thread.
    warn(`${e.message}; running SQLite on the main thread (a locked database stalls tunnels)`);
    return openSqliteStore(path, { warn });
  });
}

/** A `--db` value fit for logs: any password in a URL is replaced by `***`. */
export function redactDbUrl(url: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? redactPostgresUrl(url) : url;
}
