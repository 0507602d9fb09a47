// Egress audit rows are capped per user and minute; what is left out is summed up in one row.
import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { Egress, EGRESS_AUDIT_ROWS_PER_MINUTE } from "../../server/egress/egress.ts";
import { EgressPolicy } from "../../server/egress/policy.ts";
import { Stats } from "../../server/stats.ts";
import type { UsageMeter } from "../../server/accounts/usage.ts";
import type { Mux } from "../../shared/mux.ts";
import type { MuxStream } from "../../shared/mux_stream.ts";

Deno.test("a user's egress refusals write at most the per-minute budget of audit rows, then one summary", async () => {
  let now = Date.UTC(2026, 11, 1, 12, 0, 5);
  const rows: { kind: string; userId: number | null; detail: Record<string, unknown> }[] = [];
  const egress = new Egress({
    enabled: false,
    policy: new EgressPolicy([], []),
    maxConnectionsPerClient: 10,
    monthlyQuotaBytes: null,
    usage: {} as UsageMeter,
    stats: new Stats(() => now),
    log: getLogger(["mport-test"]),
    audit: (kind, userId, detail) => rows.push({ kind, userId, detail }),
    now: () => now,
  });
  const user = {
    owner: "u:7",
    userId: 7,
    userName: "mallory",
    limits: {} as never,
    mayEgress: true,
    remote: "127.0.0.1",
  };
  const resets: string[] = [];
  const stream = {
    reset: (code: string) => resets.push(code),
    ended: false,
  } as unknown as MuxStream;
  const attempts = EGRESS_AUDIT_ROWS_PER_MINUTE + 100;
  for (let i = 0; i < attempts; i++) egress.handle({} as Mux, stream, "example.com", 80, user);
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(resets.length, attempts, "every attempt is refused");
  assert.equal(resets.every((c) => c === "egress_denied"), true);
  assert.equal(rows.length, EGRESS_AUDIT_ROWS_PER_MINUTE);
  now += 60_000;
  egress.handle({} as Mux, stream, "example.com", 80, user);
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(rows.slice(EGRESS_AUDIT_ROWS_PER_MINUTE).map((r) => [r.kind, r.detail.rows]), [
    ["egress_audit_suppressed", 100],
    ["egress_refused", undefined],
  ]);
  assert.equal(rows[EGRESS_AUDIT_ROWS_PER_MINUTE]!.detail.minute, "2026-12-01T12:00:00.000Z");
});
