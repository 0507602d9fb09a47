// The shared Store: PostgreSQL through npm:postgres, migrated at open under an advisory lock.

import postgres from "postgres";
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
  LIMIT_COLUMNS,
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

/** Options of {@link openPostgresStore}. */
export interface PostgresStoreOptions {
  /** Seconds to wait for a connection (TCP connect plus authentication), default 5. */
  readonly connectTimeoutSeconds?: number;
  /** Largest number of pooled connections, default 10. */
  readonly maxConnections?: number;
}

/** Default seconds to wait for PostgreSQL to accept a connection. */
export const POSTGRES_CONNECT_TIMEOUT_S = 5;

// Advisory lock keys (two int4s): "mpor" and a number per purpose.
const LOCK_NS = 0x6d706f72;
const LOCK_MIGRATIONS = 1;
const LOCK_RESERVE = 2;

// Rows per INSERT in addUsage (7 parameters each; PostgreSQL allows 65535 per statement).
const USAGE_CHUNK = 1000;

/** Our custom column types: int8 parsed to a number. */
type Types = { int8: number };
type Sql = postgres.Sql<Types>;
type Tx = postgres.TransactionSql<Types>;

/** Replaces the password of a `postgres://` URL with `***` (the URL is returned as is if unparsable). */
export function redactPostgresUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url.replace(/\/\/([^/@:]*):[^/@]*@/, "//$1:***@");
  }
}

/** Where a URL points, for error messages: `host:port` (never the user or password). */
function target(url: string): { hostPort: string; database: string; user: string } {
  const u = new URL(url);
  const host = u.searchParams.get("host") ?? (u.hostname || "localhost");
  const port = u.port || "5432";
  return {
    hostPort: `${host}:${port}`,
    database: decodeURIComponent(u.pathname.replace(/^\//, "")) || "(default)",
    user: decodeURIComponent(u.username) || "(default)",
  };
}

/**
 * Connects to PostgreSQL at `url` (`postgres://user:password@host:port/database`) and applies
 * pending migrations, serialised across servers by an advisory lock. Fails within about
 * `connectTimeoutSeconds` with a message naming host:port and the cause when the server is
 * unreachable, the credentials are refused or the database does not exist.
 */
export async function openPostgresStore(
  url: string,
  opts: PostgresStoreOptions = {},
): Promise<Store> {
  let where: ReturnType<typeof target>;
  try {
    where = target(url);
  } catch (e) {
    throw new TypeError(`Invalid PostgreSQL URL ${redactPostgresUrl(url)}`, { cause: e });
  }
  const timeout = opts.connectTimeoutSeconds ?? POSTGRES_CONNECT_TIMEOUT_S;
  const sql: Sql = postgres(url, {
    max: opts.maxConnections ?? 10,
    connect_timeout: timeout,
    idle_timeout: 60,
    fetch_types: false,
    onnotice: () => {},
    connection: { application_name: "mport-server" },
    // int8 (ids, epoch ms, byte counts) arrives as a string by default; numbers are what the Store
    // promises, and toInt refuses values past 2^53 rather than rounding them.
    types: {
      int8: {
        to: 20,
        from: [20],
        serialize: (x: number) => String(x),
        parse: (x: string) => toInt(x, "int8"),
      },
    },
  });
  try {
    await migrate(sql);
  } catch (e) {
    await sql.end({ timeout: 1 }).catch(() => {});
    throw explainConnectError(e, where, timeout);
  }
  return new PostgresStore(sql, `${redactPostgresUrl(url)}`);
}

async function migrate(sql: Sql): Promise<void> {
  await sql.begin(async (tx) => {
    // Two servers starting together: the second waits here, then finds nothing left to do.
    await tx`SELECT pg_advisory_xact_lock(${LOCK_NS}::int4, ${LOCK_MIGRATIONS}::int4)`;
    await tx.unsafe(SCHEMA_MIGRATIONS_DDL.postgres);
    const [row] = await tx`SELECT COALESCE(MAX(version), 0)::int8 AS v FROM schema_migrations`;
    const applied = toInt((row as Row).v, "schema_migrations.version");
    if (applied > LATEST_VERSION) {
      throw new Error(
        `Database schema version ${applied} is newer than this mport-server supports ` +
          `(${LATEST_VERSION}); upgrade mport-server`,
      );
    }
    for (const m of pendingMigrations(applied)) {
      await tx.unsafe(migrationSql(m, "postgres")).simple();
      await tx`INSERT INTO schema_migrations (version, name, applied_at)
               VALUES (${m.version}, ${m.name}, ${Date.now()})`;
    }
  });
}

/** Turns a failure to connect or migrate into a message that says where and why. */
function explainConnectError(
  e: unknown,
  where: { hostPort: string; database: string; user: string },
  timeoutS: number,
): Error {
  const at = `PostgreSQL at ${where.hostPort}`;
  const code = typeof e === "object" && e !== null && "code" in e ? String(e.code) : "";
  const msg = errorText(e);
  let text: string;
  switch (code) {
    case "ECONNREFUSED":
      text =
        `Cannot connect to ${at}: connection refused (is PostgreSQL running and listening there?)`;
      break;
    case "CONNECT_TIMEOUT":
      text = `Cannot connect to ${at}: no answer within ${timeoutS} s`;
      break;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      text = `Cannot connect to ${at}: host not found`;
      break;
    case "ECONNRESET":
    case "CONNECTION_CLOSED":
    case "CONNECTION_ENDED":
    case "CONNECTION_DESTROYED":
      text = `Cannot connect to ${at}: the connection was closed (${msg})`;
      break;
    case "28P01":
    case "28000":
    case "SASL_SIGNATURE_MISMATCH":
      text = `Cannot log in to ${at} as user ${where.user}: ${msg}`;
      break;
    case "3D000":
      text = `Cannot open ${at}: database ${where.database} does not exist (create it first)`;
      break;
    default:
      text = `Cannot open ${at} (database ${where.database}): ${msg}`;
  }
  return new Error(text, { cause: e });
}

function pgCode(e: unknown): string | undefined {
  return e instanceof postgres.PostgresError ? e.code : undefined;
}

function isUniqueViolation(e: unknown, constraint: string): boolean {
  return pgCode(e) === "23505" && (e as postgres.PostgresError).constraint_name === constraint;
}

/** Carries the holder of a port out of `sql.begin` while rolling the transaction back. */
class Rollback {
  constructor(readonly heldBy: PortReservation | null) {}
}

class PostgresStore implements Store {
  readonly description: string;
  readonly #sql: Sql;
  #closing: Promise<void> | null = null;

  constructor(sql: Sql, description: string) {
    this.#sql = sql;
    this.description = description;
  }

  async createUser(
    u: {
      name: string;
      email?: string | null;
      role: Role;
      passwordHash?: string | null;
      limits?: Partial<UserLimits>;
      permissions?: Partial<UserPermissions>;
    },
  ): Promise<User> {
    checkRole(u.role);
    const l = u.limits ?? {};
    checkLimits(l);
    const p = new Map(permissionColumns(u.permissions ?? {}));
    try {
      const [row] = await this.#sql`
        INSERT INTO users (name, email, role, password_hash, created_at, max_tunnels,
          max_connections, port_low, port_high, monthly_quota_bytes, max_reserved_ports,
          egress, vpn)
        VALUES (${u.name}, ${u.email ?? null}, ${u.role}, ${u.passwordHash ?? null}, ${Date.now()},
          ${l.maxTunnels ?? null}, ${l.maxConnections ?? null}, ${l.portLow ?? null},
          ${l.portHigh ?? null}, ${l.monthlyQuotaBytes ?? null}, ${l.maxReservedPorts ?? null},
          ${p.get("egress") ?? false}, ${p.get("vpn") ?? false})
        RETURNING *`;
      return toUser(row as Row);
    } catch (e) {
      if (isUniqueViolation(e, "users_name_key")) throw new ConflictError(nameTakenMessage(u.name));
      throw e;
    }
  }

  async userById(id: number): Promise<User | null> {
    const [row] = await this.#sql`SELECT * FROM users WHERE id = ${id}`;
    return row ? toUser(row as Row) : null;
  }

  async userByName(name: string): Promise<User | null> {
    const [row] = await this.#sql`SELECT * FROM users WHERE name = ${name}`;
    return row ? toUser(row as Row) : null;
  }

  async listUsers(): Promise<User[]> {
    const rows = await this.#sql`SELECT * FROM users ORDER BY id`;
    return rows.map((r) => toUser(r as Row));
  }

  async setUserDisabled(id: number, disabled: boolean): Promise<void> {
    const r = await this.#sql`UPDATE users SET disabled = ${disabled} WHERE id = ${id}`;
    if (r.count === 0) throw noSuchUser(id);
  }

  async setUserLimits(id: number, limits: Partial<UserLimits>): Promise<User> {
    checkLimits(limits);
    const set: Record<string, number | null> = {};
    for (const [key, column] of Object.entries(LIMIT_COLUMNS)) {
      const v = limits[key as keyof UserLimits];
      if (v !== undefined) set[column] = v;
    }
    const [row] = Object.keys(set).length === 0
      ? await this.#sql`SELECT * FROM users WHERE id = ${id}`
      : await this.#sql`UPDATE users SET ${this.#sql(set)} WHERE id = ${id} RETURNING *`;
    if (!row) throw noSuchUser(id);
    return toUser(row as Row);
  }

  async setUserPermissions(id: number, permissions: Partial<UserPermissions>): Promise<User> {
    const set = Object.fromEntries(permissionColumns(permissions));
    const [row] = Object.keys(set).length === 0
      ? await this.#sql`SELECT * FROM users WHERE id = ${id}`
      : await this.#sql`UPDATE users SET ${this.#sql(set)} WHERE id = ${id} RETURNING *`;
    if (!row) throw noSuchUser(id);
    return toUser(row as Row);
  }

  async setUserPassword(id: number, passwordHash: string): Promise<void> {
    const r = await this.#sql`UPDATE users SET password_hash = ${passwordHash} WHERE id = ${id}`;
    if (r.count === 0) throw noSuchUser(id);
  }

  async touchUser(id: number, at: number): Promise<void> {
    await this.#sql`UPDATE users SET last_seen_at = ${at} WHERE id = ${id}`;
  }

  async createToken(t: NewToken): Promise<TokenRecord> {
    checkId(t.userId, "userId");
    const scope = toScope(t.scope ?? "client");
    try {
      const [row] = await this.#sql`
        INSERT INTO tokens (user_id, label, hash, created_at, expires_at, scope)
        VALUES (${t.userId}, ${t.label}, ${t.hash}, ${Date.now()}, ${t.expiresAt}, ${scope})
        RETURNING *`;
      return toToken(row as Row);
    } catch (e) {
      if (isUniqueViolation(e, "tokens_hash_key")) throw new ConflictError(TOKEN_HASH_TAKEN);
      if (pgCode(e) === "23503") throw noSuchUser(t.userId);
      throw e;
    }
  }

  async tokenByHash(hash: string): Promise<TokenRecord | null> {
    const [row] = await this.#sql`SELECT * FROM tokens WHERE hash = ${hash}`;
    return row ? toToken(row as Row) : null;
  }

  async tokenById(id: number): Promise<TokenRecord | null> {
    const [row] = await this.#sql`SELECT * FROM tokens WHERE id = ${id}`;
    return row ? toToken(row as Row) : null;
  }

  async listTokens(userId?: number): Promise<TokenRecord[]> {
    const rows = userId === undefined
      ? await this.#sql`SELECT * FROM tokens ORDER BY id`
      : await this.#sql`SELECT * FROM tokens WHERE user_id = ${userId} ORDER BY id`;
    return rows.map((r) => toToken(r as Row));
  }

  async revokeToken(id: number, at: number): Promise<boolean> {
    const r = await this.#sql`
      UPDATE tokens SET revoked_at = ${at} WHERE id = ${id} AND revoked_at IS NULL`;
    return r.count > 0;
  }

  async touchToken(id: number, at: number): Promise<void> {
    await this.#sql`UPDATE tokens SET last_used_at = ${at} WHERE id = ${id}`;
  }

  async reservePort(r: ReserveRequest): Promise<ReserveResult> {
    checkReserveRequest(r);
    try {
      return await this.#sql.begin(async (tx: Tx): Promise<ReserveResult> => {
        // One reservation at a time across every server on this database: the read-decide-write
        // below then sees every earlier reservation, and the (user, tunnel) move cannot race.
        await tx`SELECT pg_advisory_xact_lock(${LOCK_NS}::int4, ${LOCK_RESERVE}::int4)`;
        const held = await this.#heldBy(tx, r.port);
        const d = decideReserve(held, r);
        const explicit = r.explicit === true;
        const dropped: PortReservation[] = [];
        let row: unknown;
        switch (d.kind) {
          case "taken":
            return { ok: false, heldBy: d.held };
          case "same":
            [row] = await tx`
              UPDATE port_reservations SET last_used_at = GREATEST(last_used_at, ${r.at}),
                explicit = explicit OR ${explicit}
              WHERE port = ${r.port} RETURNING *`;
            break;
          case "replace":
          case "name":
          case "free": {
            if (d.kind === "replace") {
              await tx`DELETE FROM port_reservations WHERE port = ${r.port}`;
              dropped.push(d.held);
            }
            if (r.tunnel !== null) {
              // (user_id, tunnel) is unique: the tunnel's reservation moves to the new port.
              await tx`DELETE FROM port_reservations
                       WHERE user_id = ${r.userId} AND tunnel = ${r.tunnel} AND port <> ${r.port}`;
            }
            [row] = d.kind === "name"
              ? await tx`UPDATE port_reservations SET tunnel = ${r.tunnel},
                           last_used_at = GREATEST(last_used_at, ${r.at}),
                           explicit = explicit OR ${explicit}
                         WHERE port = ${r.port} RETURNING *`
              : await tx`INSERT INTO port_reservations
                           (port, user_id, tunnel, created_at, last_used_at, explicit)
                         VALUES (${r.port}, ${r.userId}, ${r.tunnel}, ${r.at}, ${r.at}, ${explicit})
                         ON CONFLICT (port) DO NOTHING RETURNING *`;
            break;
          }
          default:
            return d satisfies never;
        }
        if (!row) {
          // Only a writer that bypassed the lock can get here; undo the move and report it.
          throw new Rollback(await this.#heldBy(tx, r.port));
        }
        const reservation = toReservation(row as Row);
        if (r.maxAutomatic !== null && r.maxAutomatic !== undefined) {
          const keep = r.maxAutomatic - (reservation.explicit ? 0 : 1);
          dropped.push(...await trim(tx, r.userId, keep, r.port));
        }
        return { ok: true, reservation, dropped };
      }) as ReserveResult;
    } catch (e) {
      if (e instanceof Rollback) {
        if (e.heldBy) return { ok: false, heldBy: e.heldBy };
        throw new Error(`Port ${r.port} changed while it was being reserved; try again`);
      }
      if (pgCode(e) === "23503") throw noSuchUser(r.userId);
      throw e;
    }
  }

  async touchReservations(
    uses: readonly { readonly userId: number; readonly port: number }[],
    at: number,
  ): Promise<number> {
    if (uses.length === 0) return 0;
    let n = 0;
    await this.#sql.begin(async (tx: Tx) => {
      // Under the reserve lock: a reservation's trim deletes rows in no particular order, and
      // taking rows in two orders at once could deadlock.
      await tx`SELECT pg_advisory_xact_lock(${LOCK_NS}::int4, ${LOCK_RESERVE}::int4)`;
      for (const u of uses) {
        const r = await tx`UPDATE port_reservations SET last_used_at = GREATEST(last_used_at, ${at})
                           WHERE port = ${u.port} AND user_id = ${u.userId}`;
        n += r.count;
      }
    });
    return n;
  }

  async dropExpiredReservations(before: number): Promise<PortReservation[]> {
    const rows = await this.#sql.begin(async (tx: Tx) => {
      await tx`SELECT pg_advisory_xact_lock(${LOCK_NS}::int4, ${LOCK_RESERVE}::int4)`;
      return await tx`DELETE FROM port_reservations
                      WHERE NOT explicit AND last_used_at < ${before} RETURNING *`;
    });
    return byPort(rows.map((r) => toReservation(r as Row)));
  }

  async trimReservations(userId: number, keep: number): Promise<PortReservation[]> {
    checkKeep(keep);
    return await this.#sql.begin(async (tx: Tx) => {
      await tx`SELECT pg_advisory_xact_lock(${LOCK_NS}::int4, ${LOCK_RESERVE}::int4)`;
      return await trim(tx, userId, keep, 0);
    }) as PortReservation[];
  }

  async #heldBy(tx: Tx, port: number): Promise<PortReservation | null> {
    const [row] = await tx`SELECT * FROM port_reservations WHERE port = ${port}`;
    return row ? toReservation(row as Row) : null;
  }

  async reservationFor(userId: number, tunnel: string): Promise<PortReservation | null> {
    const [row] = await this.#sql`
      SELECT * FROM port_reservations WHERE user_id = ${userId} AND tunnel = ${tunnel}`;
    return row ? toReservation(row as Row) : null;
  }

  async reservationByPort(port: number): Promise<PortReservation | null> {
    const [row] = await this.#sql`SELECT * FROM port_reservations WHERE port = ${port}`;
    return row ? toReservation(row as Row) : null;
  }

  async listReservations(userId?: number): Promise<PortReservation[]> {
    const rows = userId === undefined
      ? await this.#sql`SELECT * FROM port_reservations ORDER BY port`
      : await this.#sql`SELECT * FROM port_reservations WHERE user_id = ${userId} ORDER BY port`;
    return rows.map((r) => toReservation(r as Row));
  }

  async releasePort(port: number): Promise<boolean> {
    const r = await this.#sql`DELETE FROM port_reservations WHERE port = ${port}`;
    return r.count > 0;
  }

  async reserveHost(r: HostReserveRequest): Promise<HostReserveResult> {
    checkHostRequest(r);
    try {
      // One statement: the insert, or the update of the same user's row, is atomic; a row of
      // another user is left alone (the WHERE) and reported below.
      for (let attempt = 0; attempt < 3; attempt++) {
        const [row] = await this.#sql`
          INSERT INTO host_reservations AS h
            (host, user_id, kind, tunnel, created_at, last_used_at)
          VALUES (${r.host}, ${r.userId}, ${r.kind}, ${r.tunnel}, ${r.at}, ${r.at})
          ON CONFLICT (host) DO UPDATE SET
            tunnel = COALESCE(EXCLUDED.tunnel, h.tunnel),
            last_used_at = GREATEST(h.last_used_at, EXCLUDED.last_used_at),
            kind = CASE WHEN EXCLUDED.kind = 'domain' THEN 'domain' ELSE h.kind END
          WHERE h.user_id = EXCLUDED.user_id
          RETURNING *`;
        if (row) return { ok: true, reservation: toHost(row as Row) };
        const held = await this.hostByName(r.host);
        if (held) return { ok: false, heldBy: held.userId };
        // Released between the two statements: try again.
      }
      throw new Error(`Host ${r.host} changed while it was being reserved; try again`);
    } catch (e) {
      if (pgCode(e) === "23503") throw noSuchUser(r.userId);
      throw e;
    }
  }

  async hostByName(host: string): Promise<HostReservation | null> {
    const [row] = await this.#sql`SELECT * FROM host_reservations WHERE host = ${host}`;
    return row ? toHost(row as Row) : null;
  }

  async hostForTunnel(userId: number, tunnel: string): Promise<HostReservation | null> {
    const [row] = await this.#sql`
      SELECT * FROM host_reservations
      WHERE user_id = ${userId} AND tunnel = ${tunnel} AND kind = 'subdomain'
      ORDER BY last_used_at DESC, created_at DESC, host LIMIT 1`;
    return row ? toHost(row as Row) : null;
  }

  async listHosts(userId?: number): Promise<HostReservation[]> {
    const rows = userId === undefined
      ? await this.#sql`SELECT * FROM host_reservations ORDER BY host`
      : await this.#sql`SELECT * FROM host_reservations WHERE user_id = ${userId} ORDER BY host`;
    return rows.map((r) => toHost(r as Row));
  }

  async releaseHost(host: string): Promise<boolean> {
    const r = await this.#sql`DELETE FROM host_reservations WHERE host = ${host}`;
    return r.count > 0;
  }

  async addUsage(rows: readonly UsageRow[]): Promise<void> {
    if (rows.length === 0) return;
    for (const row of rows) checkUsageRow(row);
    // One statement cannot update a row twice, so rows for the same key are summed first; sorting
    // the keys makes concurrent calls lock rows in the same order (no deadlock).
    const merged = mergeUsage(rows);
    try {
      await this.#sql.begin(async (tx: Tx) => {
        for (let i = 0; i < merged.length; i += USAGE_CHUNK) {
          const chunk = merged.slice(i, i + USAGE_CHUNK).map((u) => ({
            user_id: u.userId,
            tunnel: u.tunnel,
            hour: u.hour,
            bytes_in: u.bytesIn,
            bytes_out: u.bytesOut,
            connections: u.connections,
            errors: u.errors,
          }));
          await tx`
            INSERT INTO usage_hourly ${tx(chunk)}
            ON CONFLICT (user_id, tunnel, hour) DO UPDATE SET
              bytes_in = usage_hourly.bytes_in + excluded.bytes_in,
              bytes_out = usage_hourly.bytes_out + excluded.bytes_out,
              connections = usage_hourly.connections + excluded.connections,
              errors = usage_hourly.errors + excluded.errors`;
        }
      });
    } catch (e) {
      if (pgCode(e) === "23503") throw new RangeError(USAGE_UNKNOWN_USER, { cause: e });
      throw e;
    }
  }

  async usage(q: { userId?: number; since?: number }): Promise<UsageRow[]> {
    const sql = this.#sql;
    const rows = await sql`
      SELECT * FROM usage_hourly WHERE TRUE
        ${q.userId === undefined ? sql`` : sql`AND user_id = ${q.userId}`}
        ${q.since === undefined ? sql`` : sql`AND hour >= ${q.since}`}
      ORDER BY hour, user_id, tunnel`;
    return rows.map((r) => toUsage(r as Row));
  }

  async bytesSince(userId: number, since: number): Promise<number> {
    // SUM of int8 is numeric; cast back so it parses as a number.
    const [row] = await this.#sql`
      SELECT COALESCE(SUM(bytes_in + bytes_out), 0)::int8 AS total FROM usage_hourly
      WHERE user_id = ${userId} AND hour >= ${since}`;
    return toInt((row as Row).total, "sum of bytes");
  }

  async addEvent(
    e: { at: number; kind: string; userId: number | null; detail: Record<string, unknown> },
  ): Promise<void> {
    try {
      await this.#sql`INSERT INTO events (at, kind, user_id, detail)
        VALUES (${e.at}, ${e.kind}, ${e.userId}, ${JSON.stringify(e.detail ?? {})})`;
    } catch (err) {
      if (pgCode(err) === "23503") throw noSuchUser(e.userId ?? 0);
      throw err;
    }
  }

  async events(q: { since?: number; userId?: number; limit?: number }): Promise<AuditEvent[]> {
    const limit = eventsLimit(q.limit);
    const sql = this.#sql;
    const rows = await sql`
      SELECT * FROM events WHERE TRUE
        ${q.since === undefined ? sql`` : sql`AND at >= ${q.since}`}
        ${q.userId === undefined ? sql`` : sql`AND user_id = ${q.userId}`}
      ORDER BY at DESC, id DESC LIMIT ${limit}`;
    return rows.map((r) => toEvent(r as Row));
  }

  close(): Promise<void> {
    // Waits up to 5 s for queries in flight, then closes every pooled connection.
    this.#closing ??= this.#sql.end({ timeout: 5 });
    return this.#closing;
  }
}

/**
 * Deletes the user's least recently used automatic reservations beyond the `keep` most recent,
 * leaving `spare` (0: none) out of the count; returns them by port. Runs under the reserve lock.
 */
async function trim(tx: Tx, userId: number, keep: number, spare: number) {
  const rows = await tx`
    DELETE FROM port_reservations WHERE port IN (
      SELECT port FROM port_reservations
      WHERE user_id = ${userId} AND NOT explicit AND port <> ${spare}
      ORDER BY last_used_at DESC, created_at DESC, port DESC OFFSET ${Math.max(0, keep)}
    ) RETURNING *`;
  return byPort(rows.map((r) => toReservation(r as Row)));
}

/** Sums rows with the same (user, tunnel, hour), sorted by that key. */
function mergeUsage(rows: readonly UsageRow[]): UsageRow[] {
  const byKey = new Map<string, UsageRow>();
  for (const u of rows) {
    const key = JSON.stringify([u.userId, u.tunnel, u.hour]);
    const prev = byKey.get(key);
    byKey.set(
      key,
      prev
        ? {
          ...prev,
          bytesIn: prev.bytesIn + u.bytesIn,
          bytesOut: prev.bytesOut + u.bytesOut,
          connections: prev.connections + u.connections,
          errors: prev.errors + u.errors,
        }
        : { ...u },
    );
  }
  return [...byKey.values()].sort((a, b) =>
    a.userId - b.userId || (a.tunnel < b.tunnel ? -1 : a.tunnel > b.tunnel ? 1 : 0) ||
    a.hour - b.hour
  );
}
