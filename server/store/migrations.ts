// The database schema as an ordered list of versioned migrations, in SQLite and PostgreSQL dialects.

/** The two SQL dialects the stores speak. */
export type Dialect = "sqlite" | "postgres";

/** One schema change. Applied once, in `version` order, inside a transaction. */
export interface Migration {
  /** 1, 2, 3, … with no gaps; recorded in `schema_migrations` once applied. */
  readonly version: number;
  /** Short description, stored next to the version. */
  readonly name: string;
  /** The statements for each dialect (a string used for both when the SQL is identical). */
  readonly sql: string | { readonly sqlite: string; readonly postgres: string };
}

/**
 * Creates the table that records applied migrations. Run before reading it, outside the
 * migrations themselves, and safe to run on every open.
 */
export const SCHEMA_MIGRATIONS_DDL: Readonly<Record<Dialect, string>> = {
  sqlite: `CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  applied_at INTEGER NOT NULL
)`,
  postgres: `CREATE TABLE IF NOT EXISTS schema_migrations (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  applied_at BIGINT NOT NULL
)`,
};

// Column types that differ between the dialects. Times are epoch milliseconds in a 64-bit integer
// (SQLite's INTEGER is 64-bit already).
const T = {
  sqlite: {
    id: "INTEGER PRIMARY KEY AUTOINCREMENT",
    ms: "INTEGER",
    big: "INTEGER",
    bool: "INTEGER",
  },
  postgres: {
    id: "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    ms: "BIGINT",
    big: "BIGINT",
    bool: "BOOLEAN",
  },
} as const;

function initialSchema(d: Dialect): string {
  const t = T[d];
  const no = d === "sqlite" ? "0" : "FALSE";
  return `
CREATE TABLE users (
  id ${t.id},
  name TEXT NOT NULL UNIQUE,
  email TEXT,
  role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
  disabled ${t.bool} NOT NULL DEFAULT ${no},
  password_hash TEXT,
  created_at ${t.ms} NOT NULL,
  last_seen_at ${t.ms},
  max_tunnels INTEGER,
  max_connections INTEGER,
  port_low INTEGER,
  port_high INTEGER,
  monthly_quota_bytes ${t.big}
);

CREATE TABLE tokens (
  id ${t.id},
  user_id ${t.big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  label TEXT NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  created_at ${t.ms} NOT NULL,
  expires_at ${t.ms},
  revoked_at ${t.ms},
  last_used_at ${t.ms}
);
CREATE INDEX tokens_user_id ON tokens (user_id);

CREATE TABLE port_reservations (
  port INTEGER PRIMARY KEY CHECK (port BETWEEN 1 AND 65535),
  user_id ${t.big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  tunnel TEXT,
  created_at ${t.ms} NOT NULL
);
CREATE UNIQUE INDEX port_reservations_user_tunnel
  ON port_reservations (user_id, tunnel) WHERE tunnel IS NOT NULL;

CREATE TABLE usage_hourly (
  user_id ${t.big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  tunnel TEXT NOT NULL,
  hour ${t.ms} NOT NULL,
  bytes_in ${t.big} NOT NULL DEFAULT 0,
  bytes_out ${t.big} NOT NULL DEFAULT 0,
  connections ${t.big} NOT NULL DEFAULT 0,
  errors ${t.big} NOT NULL DEFAULT 0,
  PRIMARY KEY (user_id, tunnel, hour)
);
CREATE INDEX usage_hourly_hour ON usage_hourly (hour);

CREATE TABLE events (
  id ${t.id},
  at ${t.ms} NOT NULL,
  kind TEXT NOT NULL,
  user_id ${t.big} REFERENCES users (id) ON DELETE SET NULL,
  detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_at ON events (at);
CREATE INDEX events_user_id_at ON events (user_id, at);
`;
}

/**
 * Port reservations get a lifetime: `last_used_at` (when a tunnel last held the port), `explicit`
 * (an operator's reservation, which never expires) and a per-user cap `users.max_reserved_ports`.
 * Existing reservations count as used now, so none expires at the upgrade; those an operator made
 * (no tunnel name, or a `port_reserved` audit event of that user at their creation time) become
 * explicit.
 */
function reservationLifetime(d: Dialect): string {
  const t = T[d];
  const [no, yes] = d === "sqlite" ? ["0", "1"] : ["FALSE", "TRUE"];
  const nowMs = d === "sqlite"
    ? "CAST(strftime('%s', 'now') AS INTEGER) * 1000"
    : "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint";
  const later = d === "sqlite" ? "MAX" : "GREATEST";
  return `
ALTER TABLE users ADD COLUMN max_reserved_ports INTEGER;
ALTER TABLE port_reservations ADD COLUMN last_used_at ${t.ms} NOT NULL DEFAULT 0;
ALTER TABLE port_reservations ADD COLUMN explicit ${t.bool} NOT NULL DEFAULT ${no};
UPDATE port_reservations SET
  last_used_at = ${later}(created_at, ${nowMs}),
  explicit = CASE
    WHEN tunnel IS NULL OR EXISTS (
      SELECT 1 FROM events e
      WHERE e.kind = 'port_reserved' AND e.user_id = port_reservations.user_id
        AND e.at = port_reservations.created_at
    ) THEN ${yes} ELSE ${no} END;
CREATE INDEX port_reservations_user_last_used
  ON port_reservations (user_id, explicit, last_used_at);
`;
}

/**
 * Host names of HTTP tunnels: a subdomain of the HTTP domain a tunnel claimed, or a custom domain
 * an admin assigned to a user. Deleting the user deletes them.
 */
function hostReservations(d: Dialect): string {
  const t = T[d];
  return `
CREATE TABLE host_reservations (
  host TEXT PRIMARY KEY CHECK (host <> '' AND host = lower(host)),
  user_id ${t.big} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  kind TEXT NOT NULL CHECK (kind IN ('subdomain', 'domain')),
  tunnel TEXT,
  created_at ${t.ms} NOT NULL,
  last_used_at ${t.ms} NOT NULL
);
CREATE INDEX host_reservations_user_tunnel
  ON host_reservations (user_id, tunnel, last_used_at);
`;
}

/**
 * Tokens get a scope: `client` (tunnels only), `api` (also the REST API as their user) or `admin`.
 * Every existing token becomes `client`, which is all a token could do before.
 */
function tokenScopes(): string {
  return `
ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'client'
  CHECK (scope IN ('client', 'api', 'admin'));
`;
}

/**
 * Per-user permissions beyond tunnels: `egress` (connections out through the server, SOCKS5) and
 * `vpn`. Both off for every user, existing ones included: an operator grants them by name.
 */
function userPermissions(d: Dialect): string {
  const t = T[d];
  const no = d === "sqlite" ? "0" : "FALSE";
  return `
ALTER TABLE users ADD COLUMN egress ${t.bool} NOT NULL DEFAULT ${no};
ALTER TABLE users ADD COLUMN vpn ${t.bool} NOT NULL DEFAULT ${no};
`;
}

/** Every migration, oldest first. Append new ones; never edit one that has shipped. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "users, tokens, port reservations, hourly usage, events",
    sql: { sqlite: initialSchema("sqlite"), postgres: initialSchema("postgres") },
  },
  {
    version: 2,
    name: "port reservations expire: last use, explicit, per-user cap",
    sql: { sqlite: reservationLifetime("sqlite"), postgres: reservationLifetime("postgres") },
  },
  {
    version: 3,
    name: "host reservations of HTTP tunnels: subdomains and custom domains",
    sql: { sqlite: hostReservations("sqlite"), postgres: hostReservations("postgres") },
  },
  {
    version: 4,
    name: "token scopes: client, api, admin",
    sql: tokenScopes(),
  },
  {
    version: 5,
    name: "user permissions: egress, vpn",
    sql: { sqlite: userPermissions("sqlite"), postgres: userPermissions("postgres") },
  },
];

/** The SQL of `m` in `dialect`. */
export function migrationSql(m: Migration, dialect: Dialect): string {
  return typeof m.sql === "string" ? m.sql : m.sql[dialect];
}

/** The migrations newer than the highest applied `version`, in order. */
export function pendingMigrations(applied: number): Migration[] {
  return MIGRATIONS.filter((m) => m.version > applied);
}

/** The schema version a fully migrated database has. */
export const LATEST_VERSION: number = MIGRATIONS.reduce((v, m) => Math.max(v, m.version), 0);
