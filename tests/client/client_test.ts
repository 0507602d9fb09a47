// Table-driven tests for the client's retry line (what it prints when it will reconnect).
import assert from "node:assert/strict";
import { retryMessage } from "../../client/client.ts";

const CASES: { reason: string; waitMs: number; want: string }[] = [
  {
    reason: "the server is shutting down",
    waitMs: 400,
    want: "the server is shutting down; reconnecting in 0.4 s",
  },
  {
    // An older server's wording does not say "reconnect" twice.
    reason: "the server is shutting down; reconnect later",
    waitMs: 1234,
    want: "the server is shutting down; reconnecting in 1.2 s",
  },
  {
    reason: "cannot reach the server: connection refused",
    waitMs: 30_000,
    want: "cannot reach the server: connection refused; reconnecting in 30.0 s",
  },
];

for (const c of CASES) {
  Deno.test(`client retry line for "${c.reason}"`, () => {
    assert.equal(retryMessage(c.reason, c.waitMs), c.want);
  });
}
