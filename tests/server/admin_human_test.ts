// Table-driven tests for the admin tables' human times and sizes.
import assert from "node:assert/strict";
import { humanAgo, humanBytes, humanTime } from "../../server/admin/human.ts";

const NOW = Date.UTC(2026, 11, 1, 14, 5, 30);

Deno.test("humanTime prints minutes in UTC", () => {
  assert.equal(humanTime(Date.UTC(2026, 11, 1, 14, 2, 59)), "2026-12-01 14:02 UTC");
  assert.equal(humanTime(null), "-");
});

const AGO: [number, string][] = [
  [0, "just now"],
  [4_000, "just now"],
  [42_000, "42 s ago"],
  [3 * 60_000 + 20_000, "3 min ago"],
  [5 * 3_600_000, "5 h ago"],
  [47 * 3_600_000, "47 h ago"],
  [12 * 86_400_000, "12 days ago"],
  [-3 * 60_000, "in 3 min"],
];
for (const [back, want] of AGO) {
  Deno.test(`humanAgo ${back} ms back is "${want}"`, () => {
    assert.equal(humanAgo(NOW - back, NOW), want);
  });
}

const BYTES: [number, string][] = [
  [0, "0 B"],
  [512, "512 B"],
  [1024, "1 KiB"],
  [1536 * 1024, "1.5 MiB"],
  [150_000, "146 KiB"],
  [10 * 1024 ** 3, "10 GiB"],
  [3.25 * 1024 ** 4, "3.3 TiB"],
];
for (const [n, want] of BYTES) {
  Deno.test(`humanBytes ${n} is "${want}"`, () => assert.equal(humanBytes(n), want));
}
