// Row ⇄ record mapping and input checks shared by the SQLite and PostgreSQL stores.

import type {
  AuditEvent,
  HostReservation,
  HostReserveRequest,
  PortReservation,
  ReserveRequest,
  Role,
  TokenRecord,
  TokenScope,
  UsageRow,
  User,
  UserLimits,
  UserPermissions,
} from "./store.ts";

/** A column value as either driver returns it (postgres `int8` arrives as a string or number). */
type Cell = string | number | bigint | boolean | null | undefined | Uint8Array;
/** One result row, keyed by column name. */
export type Row = Record<string, Cell>;

/** Column names of the limit fields, in `UserLimits` key order. */
export const LIMIT_COLUMNS: Readonly<Record<keyof UserLimits, string>> = {
  maxTunnels: "max_tunnels",
  maxConnections: "max_connections",
  portLow: "port_low",
  portHigh: "port_high",
  monthlyQuotaBytes: "monthly_quota_bytes",
  maxReservedPorts: "max_reserved_ports",
};

/** Column names of the permission fields, in `UserPermissions` key order. */
export const PERMISSION_COLUMNS: Readonly<Record<keyof UserPermissions, string>> = {
  egress: "egress",
  vpn: "vpn",
};

/** Converts an integer column to a JS number, refusing values a number cannot hold exactly. */
export function toInt(v: Cell, column: string): number {
  const n = typeof v === "number" ? v : Number(v);
  if (!Number.isSafeInteger(n)) {
    throw new RangeError(`Column ${column} holds ${String(v)}, which is not a safe integer`);
  }
  return n;
}

function toIntOrNull(v: Cell, column: string): number | null {
  return v === null || v === undefined ? null : toInt(v, column);
}

function toStr(v: Cell): string {
  return typeof v === "string" ? v : String(v);
}

function toStrOrNull(v: Cell): string | null {
  return v === null || v === undefined ? null : toStr(v);
}

/** Maps a `users` row. */
export function toUser(r: Row): User {
  const role = toStr(r.role);
  if (role !== "admin" && role !== "user") throw new RangeError(`User row has role ${role}`);
  return {
    id: toInt(r.id, "users.id"),
    name: toStr(r.name),
    email: toStrOrNull(r.email),
    role: role satisfies Role,
    disabled: toBool(r.disabled),
    passwordHash: toStrOrNull(r.password_hash),
    createdAt: toInt(r.created_at, "users.created_at"),
    lastSeenAt: toIntOrNull(r.last_seen_at, "users.last_seen_at"),
    limits: {
      maxTunnels: toIntOrNull(r.max_tunnels, "users.max_tunnels"),
      maxConnections: toIntOrNull(r.max_connections, "users.max_connections"),
      portLow: toIntOrNull(r.port_low, "users.port_low"),
      portHigh: toIntOrNull(r.port_high, "users.port_high"),
      monthlyQuotaBytes: toIntOrNull(r.monthly_quota_bytes, "users.monthly_quota_bytes"),
      maxReservedPorts: toIntOrNull(r.max_reserved_ports, "users.max_reserved_ports"),
    },
    egress: toBool(r.egress),
    vpn: toBool(r.vpn),
  };
}

/** Maps a `tokens` row. */
export function toToken(r: Row): TokenRecord {
  return {
    id: toInt(r.id, "tokens.id"),
    userId: toInt(r.user_id, "tokens.user_id"),
    label: toStr(r.label),
    scope: toScope(r.scope),
    hash: toStr(r.hash),
    createdAt: toInt(r.created_at, "tokens.created_at"),
    expiresAt: toIntOrNull(r.expires_at, "tokens.expires_at"),
    revokedAt: toIntOrNull(r.revoked_at, "tokens.revoked_at"),
    lastUsedAt: toIntOrNull(r.last_used_at, "tokens.last_used_at"),
  };
}

/** A token scope column (or argument); a RangeError for anything else. */
export function toScope(v: Cell): TokenScope {
  const scope = toStr(v ?? "client");
  if (scope !== "client" && scope !== "api" && scope !== "admin") {
    throw new RangeError(`token scope must be client, api or admin, not ${scope}`);
  }
  return scope;
}

/** Maps a `port_reservations` row. */
export function toReservation(r: Row): PortReservation {
  return {
    port: toInt(r.port, "port_reservations.port"),
    userId: toInt(r.user_id, "port_reservations.user_id"),
    tunnel: toStrOrNull(r.tunnel),
    createdAt: toInt(r.created_at, "port_reservations.created_at"),
    lastUsedAt: toInt(r.last_used_at, "port_reservations.last_used_at"),
    explicit: toBool(r.explicit),
  };
}

/** Maps a `host_reservations` row. */
export function toHost(r: Row): HostReservation {
  const kind = toStr(r.kind);
  if (kind !== "subdomain" && kind !== "domain") {
    throw new RangeError(`Host reservation row has kind ${kind}`);
  }
  return {
    host: toStr(r.host),
    userId: toInt(r.user_id, "host_reservations.user_id"),
    kind,
    tunnel: toStrOrNull(r.tunnel),
    createdAt: toInt(r.created_at, "host_reservations.created_at"),
    lastUsedAt: toInt(r.last_used_at, "host_reservations.last_used_at"),
  };
}

function toBool(v: Cell): boolean {
  return v === true || v === 1 || v === 1n;
}

/** Maps a `usage_hourly` row. */
export function toUsage(r: Row): UsageRow {
  return {
    userId: toInt(r.user_id, "usage_hourly.user_id"),
    tunnel: toStr(r.tunnel),
    hour: toInt(r.hour, "usage_hourly.hour"),
    bytesIn: toInt(r.bytes_in, "usage_hourly.bytes_in"),
    bytesOut: toInt(r.bytes_out, "usage_hourly.bytes_out"),
    connections: toInt(r.connections, "usage_hourly.connections"),
    errors: toInt(r.errors, "usage_hourly.errors"),
  };
}

/** Maps an `events` row; `detail` is JSON text. */
export function toEvent(r: Row): AuditEvent {
  let detail: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(toStr(r.detail));
    if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
      detail = parsed as Record<string, unknown>;
    }
  } catch {
    // A hand-edited row with broken JSON still lists, with empty details.
  }
  return {
    id: toInt(r.id, "events.id"),
    at: toInt(r.at, "events.at"),
    kind: toStr(r.kind),
    userId: toIntOrNull(r.user_id, "events.user_id"),
    detail,
  };
}

/** Throws a RangeError unless `port` is a TCP port number. */
export function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new RangeError(`Port must be an integer from 1 to 65535, got ${port}`);
  }
}

/** Throws a RangeError unless every given limit is null or a non-negative safe integer. */
export function checkLimits(limits: Partial<UserLimits>): void {
  for (const [key, value] of Object.entries(limits)) {
    if (!(key in LIMIT_COLUMNS)) throw new RangeError(`Unknown user limit ${key}`);
    if (value === null || value === undefined) continue;
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(
        `User limit ${key} must be a non-negative integer or null, got ${value}`,
      );
    }
  }
  for (const key of ["portLow", "portHigh"] as const) {
    const v = limits[key];
    if (v !== null && v !== undefined) checkPort(v);
  }
  const cap = limits.maxReservedPorts;
  if (cap !== null && cap !== undefined && cap < 1) {
    throw new RangeError(`User limit maxReservedPorts must be at least 1 or null, got ${cap}`);
  }
}

/**
 * The (column, value) pairs of the permissions given, in column order; a RangeError for an
 * unknown permission or a value that is not a boolean.
 */
export function permissionColumns(p: Partial<UserPermissions>): [string, boolean][] {
  const out: [string, boolean][] = [];
  for (const [key, value] of Object.entries(p)) {
    if (!Object.hasOwn(PERMISSION_COLUMNS, key)) {
      throw new RangeError(`Unknown user permission ${key}`);
    }
    if (value === undefined) continue;
    if (typeof value !== "boolean") {
      throw new RangeError(`User permission ${key} must be true or false, got ${value}`);
    }
    out.push([PERMISSION_COLUMNS[key as keyof UserPermissions], value]);
  }
  return out;
}

/** Throws a RangeError unless the optional numbers of a reservation request make sense. */
export function checkReserveRequest(r: ReserveRequest): void {
  checkPort(r.port);
  checkId(r.userId, "userId");
  if (!Number.isSafeInteger(r.at)) throw new RangeError(`at must be an integer, got ${r.at}`);
  const cap = r.maxAutomatic;
  if (cap !== null && cap !== undefined && (!Number.isSafeInteger(cap) || cap < 1)) {
    throw new RangeError(`maxAutomatic must be an integer of at least 1, got ${cap}`);
  }
  const before = r.expiredBefore;
  if (before !== null && before !== undefined && !Number.isSafeInteger(before)) {
    throw new RangeError(`expiredBefore must be an integer, got ${before}`);
  }
}

/** Throws a RangeError unless a host reservation request can be stored as asked. */
export function checkHostRequest(r: HostReserveRequest): void {
  if (typeof r.host !== "string" || r.host === "" || r.host !== r.host.toLowerCase()) {
    throw new RangeError(`Host must be a non-empty lower-case name, got ${JSON.stringify(r.host)}`);
  }
  checkId(r.userId, "userId");
  if (r.kind !== "subdomain" && r.kind !== "domain") {
    throw new RangeError(
      `Host kind must be "subdomain" or "domain", got ${JSON.stringify(r.kind)}`,
    );
  }
  if (!Number.isSafeInteger(r.at)) throw new RangeError(`at must be an integer, got ${r.at}`);
}

/** Throws a RangeError unless `keep` is a count of reservations to keep. */
export function checkKeep(keep: number): void {
  if (!Number.isSafeInteger(keep) || keep < 0) {
    throw new RangeError(`keep must be a non-negative integer, got ${keep}`);
  }
}

/** Throws a RangeError unless `id` can be a row id (so a bad id never reaches SQL). */
export function checkId(id: number, what: string): void {
  if (!Number.isSafeInteger(id) || id < 1) {
    throw new RangeError(`${what} must be a positive integer, got ${id}`);
  }
}

/** The error for an update that matched no user. */
export function noSuchUser(id: number): RangeError {
  return new RangeError(`No user with id ${id}`);
}

/** Throws a RangeError unless `role` is a known role. */
export function checkRole(role: string): asserts role is Role {
  if (role !== "admin" && role !== "user") {
    throw new RangeError(`Role must be "admin" or "user", got ${JSON.stringify(role)}`);
  }
}

/** The message for a token hash that is already stored. */
export const TOKEN_HASH_TAKEN = "A token with this hash already exists";

/** The message for usage rows whose user does not exist. */
export const USAGE_UNKNOWN_USER = "Usage rows refer to a user that does not exist";

/** The message for a user name that is already taken. */
export function nameTakenMessage(name: string): string {
  return `A user named "${name}" already exists (choose another name)`;
}

/** Outcome of the decision step of `reservePort`, before any write. */
export type ReserveDecision =
  | { readonly kind: "same"; readonly held: PortReservation }
  | { readonly kind: "name"; readonly held: PortReservation }
  | { readonly kind: "taken"; readonly held: PortReservation }
  | { readonly kind: "replace"; readonly held: PortReservation }
  | { readonly kind: "free" };

/**
 * Decides what `reservePort(r)` does given the current holder of the port:
 * - held by the same user and tunnel, or by the same user when `tunnel` is null → `same` (no-op);
 * - held by the same user with tunnel null and a tunnel is named now → `name` (set the tunnel);
 * - held automatically by anyone else and expired (last used before `expiredBefore`), or by
 *   another tunnel of the same user when `takeOverOwn` is set → `replace` (delete, then as free);
 * - held by anyone else, or by another tunnel of the same user → `taken`;
 * - not held → `free`.
 */
export function decideReserve(held: PortReservation | null, r: ReserveRequest): ReserveDecision {
  if (held === null) return { kind: "free" };
  if (held.userId === r.userId) {
    if (held.tunnel === r.tunnel || r.tunnel === null) return { kind: "same", held };
    if (held.tunnel === null) return { kind: "name", held };
  }
  if (!held.explicit) {
    const expired = r.expiredBefore !== null && r.expiredBefore !== undefined &&
      held.lastUsedAt < r.expiredBefore;
    if (expired || (r.takeOverOwn === true && held.userId === r.userId)) {
      return { kind: "replace", held };
    }
  }
  return { kind: "taken", held };
}

/**
 * Orders reservations most recently used first (ties: newer first, then by port, descending); the
 * PostgreSQL store spells the same order out in its query.
 */
export const MRU_ORDER = "last_used_at DESC, created_at DESC, port DESC";

/**
 * Orders host reservations most recently used first (ties: newer first, then by host); the
 * PostgreSQL store spells the same order out in its query.
 */
export const HOST_MRU_ORDER = "last_used_at DESC, created_at DESC, host";

/** Sorts reservations by port (in place), the order the store's deleting calls return them in. */
export function byPort(list: PortReservation[]): PortReservation[] {
  return list.sort((a, b) => a.port - b.port);
}

/** Default and maximum number of events one `events()` call returns. */
export const EVENTS_DEFAULT_LIMIT = 1000;

/** Throws a RangeError unless every counter of `u` is a non-negative safe integer. */
export function checkUsageRow(u: UsageRow): void {
  for (const key of ["userId", "hour", "bytesIn", "bytesOut", "connections", "errors"] as const) {
    const v = u[key];
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RangeError(`Usage row field ${key} must be a non-negative integer, got ${v}`);
    }
  }
}

/** The effective `limit` of an events query. */
export function eventsLimit(limit: number | undefined): number {
  if (limit === undefined) return EVENTS_DEFAULT_LIMIT;
  if (!Number.isInteger(limit) || limit < 1) {
    throw new RangeError(`Event limit must be a positive integer, got ${limit}`);
  }
  return Math.min(limit, EVENTS_DEFAULT_LIMIT);
}
