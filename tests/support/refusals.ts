// Asserting a tunnel refusal: a TunnelRefused with an exact code and message.
import assert from "node:assert/strict";
import { TunnelRefused } from "../../server/listeners/port_allocator.ts";

/** A validator for `assert.throws`/`assert.rejects`: a TunnelRefused with this code and message. */
export function isRefusal(code: string, message: string): (e: unknown) => true {
  return (e: unknown) => {
    assert.ok(e instanceof TunnelRefused, `expected TunnelRefused, got ${e}`);
    assert.equal(e.code, code);
    assert.equal(e.message, message);
    return true;
  };
}

/** Asserts that `p` rejects with a TunnelRefused with this code and exact message. */
export async function assertRefused(
  p: Promise<unknown>,
  code: string,
  message: string,
): Promise<void> {
  await assert.rejects(p, isRefusal(code, message));
}
