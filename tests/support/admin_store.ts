// The admin commands run against an in-memory SQLite store, with a fixed clock and password.
import { runAdmin } from "../../server/admin/cli.ts";
import { openSqliteStore } from "../../server/store/sqlite_store.ts";
import type { Store } from "../../server/store/store.ts";

/** The admin tests' fixed "now": 2026-11-22 12:00 UTC. */
export const ADMIN_NOW = Date.UTC(2026, 10, 22, 12);

/**
 * Runs `fn` with a fresh in-memory store and `run(...args)`, which runs one admin command against
 * it (clock {@link ADMIN_NOW}, every password prompt answered `password-1234`) and returns what it
 * printed. The store is closed afterwards.
 */
export async function withAdminStore(
  fn: (store: Store, run: (...args: string[]) => Promise<string>) => Promise<void>,
): Promise<void> {
  const store = await openSqliteStore(":memory:");
  const run = async (...args: string[]) => {
    const out: string[] = [];
    await runAdmin(args, store, {
      out: (l) => out.push(l),
      readPassword: () => Promise.resolve("password-1234"),
      now: () => ADMIN_NOW,
    });
    return out.join("\n");
  };
  try {
    await fn(store, run);
  } finally {
    await store.close();
  }
}
