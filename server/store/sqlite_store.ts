// The embedded Store: one SQLite file through node:sqlite, in WAL mode, migrated at open.

import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import { dirname } from "node:path";
import { makeDataDir, secureDatabaseFiles, tightenCompanions } from "./file_modes.ts";
import {
  LATEST_VERSION,
  migrationSql,
  pendingMigrations,
  SCHEMA_MIGRATIONS_DDL,
} from "./migrations.ts";
import {
  byPort,
  checkHostRequest,
  checkId,
  checkKeep,
  checkLimits,
  checkReserveRequest,
  checkRole,
  checkUsageRow,
  decideReserve,
  eventsLimit,
  HOST_MRU_ORDER,
  LIMIT_COLUMNS,
  MRU_ORDER,
  nameTakenMessage,
  noSuchUser,
  permissionColumns,
  type Row,
  toEvent,
  toHost,
  toInt,
  TOKEN_HASH_TAKEN,
  toReservation,
  toScope,
  toToken,
  toUsage,
  toUser,
  USAGE_UNKNOWN_USER,
} from "./rows.ts";
import {
  type AuditEvent,
  ConflictError,
  type HostReservation,
  type HostReserveRequest,
  type HostReserveResult,
  type NewToken,
  type PortReservation,
  type ReserveRequest,
  type ReserveResult,
  type Role,
  type Store,
  type TokenRecord,
  type UsageRow,
  type User,
  type UserLimits,
  type UserPermissions,
} from "./store.ts";
import { errorText } from "../../shared/error_text.ts";

/** Options of {@link openSqliteStore}. */
export interface SqliteStoreOptions {
  /** How long a write waits for another process's lock before failing (default 5000 ms). */
  readonly busyTimeoutMs?: number;
  /**
   * Told once when existing database files were readable by other users (they are changed to
   * 0600). Default: a line on stderr (`openStore` passes the server's log).
   */
  readonly warn?: (message: string) => void;
}

/** The default of {@link SqliteStoreOptions.warn}: a line on stderr. */
export function warnOnStderr(message: string): void {
  console.warn(`mport-server: warning: ${message}`);
}

/** Default wait for a lock held by another connection or process. */
export const SQLITE_BUSY_TIMEOUT_MS = 5000;

/**
 * Opens (creating it and its parent directory if missing) the SQLite database at `path` and
 * applies pending migrations. A directory it creates is 0700, the database files are 0600.
 * `":memory:"` gives a private in-memory database, for tests.
 *
 * Fails with a message naming the path when the file or directory is read-only, or when another
 * process holds the database locked for longer than `busyTimeoutMs`.
 */
export async function openSqliteStore(
  path: string,
  opts: SqliteStoreOptions = {},
): Promise<Store> {
  if (path === "") throw new TypeError("SQLite database path is empty");
  const busyMs = opts.busyTimeoutMs ?? SQLITE_BUSY_TIMEOUT_MS;
  if (path !== ":memory:") {
    const dir = dirname(path);
    try {
      await makeDataDir(dir);
    } catch (e) {
      throw new Error(
        `Cannot create directory ${dir} for the SQLite database ${path}: ${errorText(e)}`,
        { cause: e },
      );
    }
    await secureDatabaseFiles(path, opts.warn ?? warnOnStderr);
  }
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path);
  } catch (e) {
    throw translate(e, path, busyMs);
  }
  try {
    // busy_timeout first, so that switching to WAL waits for a lock like everything else.
    db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.trunc(busyMs))}`);
    db.exec("PRAGMA foreign_keys = ON");
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = NORMAL");
    migrate(db);
  } catch (e) {
    db.close();
    throw translate(e, path, busyMs);
  }
  if (path !== ":memory:") await tightenCompanions(path);
  return new SqliteStore(db, path, busyMs);
}

/** Applies pending migrations in one write transaction, which also proves the file is writable. */
function migrate(db: DatabaseSync): void {
  inTransaction(db, () => {
    db.exec(SCHEMA_MIGRATIONS_DDL.sqlite);
    const row = db.prepare("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").get();
    const applied = toInt(row?.v as number, "schema_migrations.version");
    if (applied > LATEST_VERSION) {
      throw new Error(
        `Database schema version ${applied} is newer than this mport-server supports ` +
          `(${LATEST_VERSION}); upgrade mport-server`,
      );
    }
    const record = db.prepare(
      "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
    );
    for (const m of pendingMigrations(applied)) {
      db.exec(migrationSql(m, "sqlite"));
      record.run(m.version, m.name, Date.now());
    }
    // Always write something: SQLite opens a file it may not write read-only without saying so,
    // and the first write would fail much later. The header's user_version mirrors the schema.
    db.exec(`PRAGMA user_version = ${Math.max(applied, LATEST_VERSION)}`);
  });
}

/** Runs `f` inside BEGIN IMMEDIATE … COMMIT, rolling back when it throws. */
function inTransaction<T>(db: DatabaseSync, f: () => T): T {
  db.exec("BEGIN IMMEDIATE");
  try {
    const result = f();
    db.exec("COMMIT");
    return result;
  } catch (e) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw e;
  }
}

/** Turns SQLite's terse errors into ones that say what is wrong with which file. */
function translate(e: unknown, path: string, busyMs: number): unknown {
  if (!(e instanceof Error)) return e;
  const m = e.message;
  if (/database is locked|database table is locked|database is busy/i.test(m)) {
    return new Error(
      `SQLite database ${path} is in use by another process (still locked after ${busyMs} ms); ` +
        `stop the other mport-server using it or choose another database file`,
      { cause: e },
    );
  }
  if (/readonly database|read-only/i.test(m)) {
    return new Error(
      `SQLite database ${path} is read-only: make the file and its directory writable ` +
        `(mport-server needs to write the database and its -wal and -shm files)`,
      { cause: e },
    );
  }
  if (/unable to open database file/i.test(m)) {
    return new Error(
      `Cannot open SQLite database ${path}: the file or its directory ${dirname(path)} is ` +
        `read-only, missing or not accessible`,
      { cause: e },
    );
  }
  return e;
}

function isUniqueViolation(e: unknown, column: string): boolean {
  return e instanceof Error && e.message.includes(`UNIQUE constraint failed: ${column}`);
}

function isForeignKeyViolation(e: unknown): boolean {
  return e instanceof Error && e.message.includes("FOREIGN KEY constraint failed");
}

class SqliteStore implements Store {
  readonly description: string;
  readonly #db: DatabaseSync;
  readonly #path: string;
  readonly #busyMs: number;
  #closed = false;

  constructor(db: DatabaseSync, path: string, busyMs: number) {
    this.#db = db;
    this.#path = path;
    this.#busyMs = busyMs;
    this.description = `sqlite:${path}`;
  }

  /**
   * Runs one synchronous operation and hands its outcome back as a promise (so that every failure,
   * argument checks included, is a rejection), translating lock and read-only errors.
   */
  #op<T>(f: (db: DatabaseSync) => T): Promise<T> {
    try {
      if (this.#closed) throw new Error(`Store ${this.description} is closed`);
      return Promise.resolve(f(this.#db));
    } catch (e) {
      return Promise.reject(translate(e, this.#path, this.#busyMs));
    }
  }

  createUser(
    u: {
      name: string;
      email?: string | null;
      role: Role;
      passwordHash?: string | null;
      limits?: Partial<UserLimits>;
      permissions?: Partial<UserPermissions>;
    },
  ): Promise<User> {
    return this.#op((db) => {
      checkRole(u.role);
      const l = u.limits ?? {};
      checkLimits(l);
      const p = new Map(permissionColumns(u.permissions ?? {}));
      try {
        const row = db.prepare(
          `INSERT INTO users (name, email, role, disabled, password_hash, created_at, max_tunnels,
             max_connections, port_low, port_high, monthly_quota_bytes, max_reserved_ports,
             egress, vpn)
           VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *`,
        ).get(
          u.name,
          u.email ?? null,
          u.role,
          u.passwordHash ?? null,
          Date.now(),
          l.maxTunnels ?? null,
          l.maxConnections ?? null,
          l.portLow ?? null,
          l.portHigh ?? null,
          l.monthlyQuotaBytes ?? null,
          l.maxReservedPorts ?? null,
          p.get("egress") ? 1 : 0,
          p.get("vpn") ? 1 : 0,
        );
        return toUser(row as Row);
      } catch (e) {
        if (isUniqueViolation(e, "users.name")) throw new ConflictError(nameTakenMessage(u.name));
        throw e;
      }
    });
  }

  userById(id: number): Promise<User | null> {
    return this.#op((db) => mapOne(db.prepare("SELECT * FROM users WHERE id = ?").get(id), toUser));
  }

  userByName(name: string): Promise<User | null> {
    return this.#op((db) =>
      mapOne(db.prepare("SELECT * FROM users WHERE name = ?").get(name), toUser)
    );
  }

  listUsers(): Promise<User[]> {
    return this.#op((db) => mapAll(db.prepare("SELECT * FROM users ORDER BY id").all(), toUser));
  }

  setUserDisabled(id: number, disabled: boolean): Promise<void> {
    return this.#op((db) => {
      const r = db.prepare("UPDATE users SET disabled = ? WHERE id = ?").run(disabled ? 1 : 0, id);
      if (r.changes === 0) throw noSuchUser(id);
    });
  }

  setUserLimits(id: number, limits: Partial<UserLimits>): Promise<User> {
    return this.#op((db) => {
      checkLimits(limits);
      const sets: string[] = [];
      const params: SQLInputValue[] = [];
      for (const [key, column] of Object.entries(LIMIT_COLUMNS)) {
        const v = limits[key as keyof UserLimits];
        if (v === undefined) continue;
        sets.push(`${column} = ?`);
        params.push(v);
      }
      const row = sets.length === 0
        ? db.prepare("SELECT * FROM users WHERE id = ?").get(id)
        : db.prepare(`UPDATE users SET ${sets.join(", ")} WHERE id = ? RETURNING *`)
          .get(...params, id);
      if (!row) throw noSuchUser(id);
      return toUser(row as Row);
    });
  }

  setUserPermissions(id: number, permissions: Partial<UserPermissions>): Promise<User> {
    return this.#op((db) => {
      const sets = permissionColumns(permissions);
      const row = sets.length === 0
        ? db.prepare("SELECT * FROM users WHERE id = ?").get(id)
        : db.prepare(
          `UPDATE users SET ${sets.map(([c]) => `${c} = ?`).join(", ")} WHERE id = ? RETURNING *`,
        ).get(...sets.map(([, v]) => (v ? 1 : 0)), id);
      if (!row) throw noSuchUser(id);
      return toUser(row as Row);
    });
  }

  setUserPassword(id: number, passwordHash: string): Promise<void> {
    return this.#op((db) => {
      const r = db.prepare("UPDATE users SET password_hash = ? WHERE id = ?").run(passwordHash, id);
      if (r.changes === 0) throw noSuchUser(id);
    });
  }

  touchUser(id: number, at: number): Promise<void> {
    return this.#op((db) => {
      db.prepare("UPDATE users SET last_seen_at = ? WHERE id = ?").run(at, id);
    });
  }

  createToken(t: NewToken): Promise<TokenRecord> {
    return this.#op((db) => {
      checkId(t.userId, "userId");
      const scope = toScope(t.scope ?? "client");
      try {
        const row = db.prepare(
          `INSERT INTO tokens (user_id, label, hash, created_at, expires_at, scope)
           VALUES (?, ?, ?, ?, ?, ?) RETURNING *`,
        ).get(t.userId, t.label, t.hash, Date.now(), t.expiresAt, scope);
        return toToken(row as Row);
      } catch (e) {
        if (isUniqueViolation(e, "tokens.hash")) throw new ConflictError(TOKEN_HASH_TAKEN);
        if (isForeignKeyViolation(e)) throw noSuchUser(t.userId);
        throw e;
      }
    });
  }

  tokenByHash(hash: string): Promise<TokenRecord | null> {
    return this.#op((db) =>
      mapOne(db.prepare("SELECT * FROM tokens WHERE hash = ?").get(hash), toToken)
    );
  }

  tokenById(id: number): Promise<TokenRecord | null> {
    return this.#op((db) =>
      mapOne(db.prepare("SELECT * FROM tokens WHERE id = ?").get(id), toToken)
    );
  }

  listTokens(userId?: number): Promise<TokenRecord[]> {
    return this.#op((db) =>
      mapAll(
        userId === undefined
          ? db.prepare("SELECT * FROM tokens ORDER BY id").all()
          : db.prepare("SELECT * FROM tokens WHERE user_id = ? ORDER BY id").all(userId),
        toToken,
      )
    );
  }

  revokeToken(id: number, at: number): Promise<boolean> {
    return this.#op((db) =>
      db.prepare("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
        .run(at, id).changes > 0
    );
  }

  touchToken(id: number, at: number): Promise<void> {
    return this.#op((db) => {
      db.prepare("UPDATE tokens SET last_used_at = ? WHERE id = ?").run(at, id);
    });
  }

  reservePort(r: ReserveRequest): Promise<ReserveResult> {
    return this.#op((db) => {
      checkReserveRequest(r);
      try {
        // BEGIN IMMEDIATE takes the database's write lock, so the read-decide-write below cannot
        // interleave with another connection or process.
        return inTransaction(db, (): ReserveResult => {
          const held = mapOne(
            db.prepare("SELECT * FROM port_reservations WHERE port = ?").get(r.port),
            toReservation,
          );
          const d = decideReserve(held, r);
          const explicit = r.explicit === true ? 1 : 0;
          const dropped: PortReservation[] = [];
          let row: unknown;
          switch (d.kind) {
            case "taken":
              return { ok: false, heldBy: d.held };
            case "same":
              row = db.prepare(
                `UPDATE port_reservations SET last_used_at = MAX(last_used_at, ?),
                   explicit = CASE WHEN ? = 1 THEN 1 ELSE explicit END
                 WHERE port = ? RETURNING *`,
              ).get(r.at, explicit, r.port);
              break;
            case "replace":
            case "name":
            case "free": {
              if (d.kind === "replace") {
                db.prepare("DELETE FROM port_reservations WHERE port = ?").run(r.port);
                dropped.push(d.held);
              }
              if (r.tunnel !== null) {
                // (user_id, tunnel) is unique: the tunnel's reservation moves to the new port.
                db.prepare(
                  "DELETE FROM port_reservations WHERE user_id = ? AND tunnel = ? AND port <> ?",
                ).run(r.userId, r.tunnel, r.port);
              }
              row = d.kind === "name"
                ? db.prepare(
                  `UPDATE port_reservations SET tunnel = ?, last_used_at = MAX(last_used_at, ?),
                     explicit = CASE WHEN ? = 1 THEN 1 ELSE explicit END
                   WHERE port = ? RETURNING *`,
                ).get(r.tunnel, r.at, explicit, r.port)
                : db.prepare(
                  `INSERT INTO port_reservations (port, user_id, tunnel, created_at, last_used_at,
                     explicit)
                   VALUES (?, ?, ?, ?, ?, ?) RETURNING *`,
                ).get(r.port, r.userId, r.tunnel, r.at, r.at, explicit);
              break;
            }
            default:
              return d satisfies never;
          }
          const reservation = toReservation(row as Row);
          if (r.maxAutomatic !== null && r.maxAutomatic !== undefined) {
            const keep = r.maxAutomatic - (reservation.explicit ? 0 : 1);
            dropped.push(...trim(db, r.userId, keep, r.port));
          }
          return { ok: true, reservation, dropped };
        });
      } catch (e) {
        if (isForeignKeyViolation(e)) throw noSuchUser(r.userId);
        throw e;
      }
    });
  }

  touchReservations(
    uses: readonly { readonly userId: number; readonly port: number }[],
    at: number,
  ): Promise<number> {
    return this.#op((db) => {
      if (uses.length === 0) return 0;
      return inTransaction(db, () => {
        const touch = db.prepare(
          `UPDATE port_reservations SET last_used_at = MAX(last_used_at, ?)
           WHERE port = ? AND user_id = ?`,
        );
        let n = 0;
        for (const u of uses) n += Number(touch.run(at, u.port, u.userId).changes);
        return n;
      });
    });
  }

  dropExpiredReservations(before: number): Promise<PortReservation[]> {
    return this.#op((db) =>
      byPort(mapAll(
        db.prepare(
          "DELETE FROM port_reservations WHERE explicit = 0 AND last_used_at < ? RETURNING *",
        ).all(before),
        toReservation,
      ))
    );
  }

  trimReservations(userId: number, keep: number): Promise<PortReservation[]> {
    return this.#op((db) => {
      checkKeep(keep);
      return inTransaction(db, () => trim(db, userId, keep, 0));
    });
  }

  reservationFor(userId: number, tunnel: string): Promise<PortReservation | null> {
    return this.#op((db) =>
      mapOne(
        db.prepare("SELECT * FROM port_reservations WHERE user_id = ? AND tunnel = ?")
          .get(userId, tunnel),
        toReservation,
      )
    );
  }

  reservationByPort(port: number): Promise<PortReservation | null> {
    return this.#op((db) =>
      mapOne(db.prepare("SELECT * FROM port_reservations WHERE port = ?").get(port), toReservation)
    );
  }

  listReservations(userId?: number): Promise<PortReservation[]> {
    return this.#op((db) =>
      mapAll(
        userId === undefined
          ? db.prepare("SELECT * FROM port_reservations ORDER BY port").all()
          : db.prepare("SELECT * FROM port_reservations WHERE user_id = ? ORDER BY port")
            .all(userId),
        toReservation,
      )
    );
  }

  releasePort(port: number): Promise<boolean> {
    return this.#op((db) =>
      db.prepare("DELETE FROM port_reservations WHERE port = ?").run(port).changes > 0
    );
  }

  reserveHost(r: HostReserveRequest): Promise<HostReserveResult> {
    return this.#op((db) => {
      checkHostRequest(r);
      try {
        return inTransaction(db, (): HostReserveResult => {
          const held = mapOne(
            db.prepare("SELECT * FROM host_reservations WHERE host = ?").get(r.host),
            toHost,
          );
          if (held && held.userId !== r.userId) return { ok: false, heldBy: held.userId };
          const row = held
            ? db.prepare(
              `UPDATE host_reservations SET tunnel = COALESCE(?, tunnel),
                 last_used_at = MAX(last_used_at, ?),
                 kind = CASE WHEN ? = 'domain' THEN 'domain' ELSE kind END
               WHERE host = ? RETURNING *`,
            ).get(r.tunnel, r.at, r.kind, r.host)
            : db.prepare(
              `INSERT INTO host_reservations (host, user_id, kind, tunnel, created_at, last_used_at)
               VALUES (?, ?, ?, ?, ?, ?) RETURNING *`,
            ).get(r.host, r.userId, r.kind, r.tunnel, r.at, r.at);
          return { ok: true, reservation: toHost(row as Row) };
        });
      } catch (e) {
        if (isForeignKeyViolation(e)) throw noSuchUser(r.userId);
        throw e;
      }
    });
  }

  hostByName(host: string): Promise<HostReservation | null> {
    return this.#op((db) =>
      mapOne(db.prepare("SELECT * FROM host_reservations WHERE host = ?").get(host), toHost)
    );
  }

  hostForTunnel(userId: number, tunnel: string): Promise<HostReservation | null> {
    return this.#op((db) =>
      mapOne(
        db.prepare(
          `SELECT * FROM host_reservations
           WHERE user_id = ? AND tunnel = ? AND kind = 'subdomain'
           ORDER BY ${HOST_MRU_ORDER} LIMIT 1`,
        ).get(userId, tunnel),
        toHost,
      )
    );
  }

  listHosts(userId?: number): Promise<HostReservation[]> {
    return this.#op((db) =>
      mapAll(
        userId === undefined
          ? db.prepare("SELECT * FROM host_reservations ORDER BY host").all()
          : db.prepare("SELECT * FROM host_reservations WHERE user_id = ? ORDER BY host")
            .all(userId),
        toHost,
      )
    );
  }

  releaseHost(host: string): Promise<boolean> {
    return this.#op((db) =>
      db.prepare("DELETE FROM host_reservations WHERE host = ?").run(host).changes > 0
    );
  }

  addUsage(rows: readonly UsageRow[]): Promise<void> {
    return this.#op((db) => {
      if (rows.length === 0) return;
      for (const row of rows) checkUsageRow(row);
      try {
        inTransaction(db, () => {
          const upsert = db.prepare(
            `INSERT INTO usage_hourly
               (user_id, tunnel, hour, bytes_in, bytes_out, connections, errors)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (user_id, tunnel, hour) DO UPDATE SET
               bytes_in = usage_hourly.bytes_in + excluded.bytes_in,
               bytes_out = usage_hourly.bytes_out + excluded.bytes_out,
               connections = usage_hourly.connections + excluded.connections,
               errors = usage_hourly.errors + excluded.errors`,
          );
          for (const u of rows) {
            upsert.run(u.userId, u.tunnel, u.hour, u.bytesIn, u.bytesOut, u.connections, u.errors);
          }
        });
      } catch (e) {
        if (isForeignKeyViolation(e)) throw new RangeError(USAGE_UNKNOWN_USER, { cause: e });
        throw e;
      }
    });
  }

  usage(q: { userId?: number; since?: number }): Promise<UsageRow[]> {
    return this.#op((db) => {
      const where: string[] = [];
      const params: SQLInputValue[] = [];
      if (q.userId !== undefined) {
        where.push("user_id = ?");
        params.push(q.userId);
      }
      if (q.since !== undefined) {
        where.push("hour >= ?");
        params.push(q.since);
      }
      const sql = `SELECT * FROM usage_hourly ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
        ORDER BY hour, user_id, tunnel`;
      return mapAll(db.prepare(sql).all(...params), toUsage);
    });
  }

  bytesSince(userId: number, since: number): Promise<number> {
    return this.#op((db) => {
      const row = db.prepare(
        `SELECT COALESCE(SUM(bytes_in + bytes_out), 0) AS total FROM usage_hourly
         WHERE user_id = ? AND hour >= ?`,
      ).get(userId, since);
      return toInt((row as Row | undefined)?.total, "sum of bytes");
    });
  }

  addEvent(
    e: { at: number; kind: string; userId: number | null; detail: Record<string, unknown> },
  ): Promise<void> {
    return this.#op((db) => {
      try {
        db.prepare("INSERT INTO events (at, kind, user_id, detail) VALUES (?, ?, ?, ?)")
          .run(e.at, e.kind, e.userId, JSON.stringify(e.detail ?? {}));
      } catch (err) {
        if (isForeignKeyViolation(err)) throw noSuchUser(e.userId ?? 0);
        throw err;
      }
    });
  }

  events(q: { since?: number; userId?: number; limit?: number }): Promise<AuditEvent[]> {
    return this.#op((db) => {
      const limit = eventsLimit(q.limit);
      const where: string[] = [];
      const params: SQLInputValue[] = [];
      if (q.since !== undefined) {
        where.push("at >= ?");
        params.push(q.since);
      }
      if (q.userId !== undefined) {
        where.push("user_id = ?");
        params.push(q.userId);
      }
      const sql = `SELECT * FROM events ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
        ORDER BY at DESC, id DESC LIMIT ?`;
      return mapAll(db.prepare(sql).all(...params, limit), toEvent);
    });
  }

  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#db.close();
    }
    return Promise.resolve();
  }
}

/**
 * Deletes the user's least recently used automatic reservations beyond the `keep` most recent,
 * leaving `spare` (0: none) out of the count; returns them by port.
 */
function trim(db: DatabaseSync, userId: number, keep: number, spare: number): PortReservation[] {
  const rows = db.prepare(
    `DELETE FROM port_reservations WHERE port IN (
       SELECT port FROM port_reservations
       WHERE user_id = ? AND explicit = 0 AND port <> ?
       ORDER BY ${MRU_ORDER} LIMIT -1 OFFSET ?
     ) RETURNING *`,
  ).all(userId, spare, Math.max(0, keep));
  return byPort(mapAll(rows, toReservation));
}

function mapOne<T>(row: unknown, f: (r: Row) => T): T | null {
  return row === undefined || row === null ? null : f(row as Row);
}

function mapAll<T>(rows: unknown[], f: (r: Row) => T): T[] {
  return (rows as Row[]).map(f);
}
