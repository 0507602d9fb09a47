// A database at schema version 1 (reservations without a lifetime) and what migration 2 must make
// of it, shared by the SQLite and PostgreSQL store tests.

import assert from "node:assert/strict";
import {
  type Dialect,
  MIGRATIONS,
  migrationSql,
  SCHEMA_MIGRATIONS_DDL,
} from "../../../server/store/migrations.ts";
import type { Store } from "../../../server/store/store.ts";

/**
 * SQL that builds schema version 1 with the user alice and three reservations: 10022 (tunnel ssh)
 * made by `port reserve` (a `port_reserved` event at its creation time), 10023 reserved by an
 * operator without a tunnel name, and 10024, the automatic reservation of her tunnel web.
 */
export function v1Database(d: Dialect): string {
  const v1 = MIGRATIONS.find((m) => m.version === 1)!;
  const alice = "(SELECT id FROM users WHERE name = 'alice')";
  return `
${SCHEMA_MIGRATIONS_DDL[d]};
${migrationSql(v1, d)}
INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, '${v1.name}', 1);
INSERT INTO users (name, role, created_at) VALUES ('alice', 'user', 1);
INSERT INTO events (at, kind, user_id, detail)
  VALUES (1000, 'port_reserved', ${alice}, '{"port":10022,"tunnel":"ssh"}');
INSERT INTO port_reservations (port, user_id, tunnel, created_at) VALUES
  (10022, ${alice}, 'ssh', 1000),
  (10023, ${alice}, NULL, 500),
  (10024, ${alice}, 'web', 2000);
`;
}

/**
 * Asserts what migration 2 made of {@link v1Database}: operators' reservations explicit, the
 * tunnel's automatic, none of them expiring at the upgrade (last used: the migration's time).
 */
export async function assertMigratedV1(store: Store, migratedAfter: number): Promise<void> {
  const alice = await store.userByName("alice");
  assert.ok(alice);
  assert.equal(alice.limits.maxReservedPorts, null);
  assert.deepEqual([alice.egress, alice.vpn], [false, false], "no permissions after the upgrade");
  const rows = await store.listReservations();
  assert.deepEqual(
    rows.map((r) => [r.port, r.tunnel, r.createdAt, r.explicit]),
    [[10022, "ssh", 1000, true], [10023, null, 500, true], [10024, "web", 2000, false]],
  );
  for (const r of rows) {
    assert.ok(
      r.lastUsedAt >= migratedAfter - 1000 && r.lastUsedAt <= Date.now() + 1000,
      `port ${r.port} counts as used at the upgrade, got ${r.lastUsedAt}`,
    );
  }
}
