// Helpers for the lifecycle e2e tests: polling, refused ports, an echo sent in halves, port ranges
// (and the shared local TCP services and deadlines, re-exported).
import assert from "node:assert/strict";
import { writeAll } from "../../shared/net.ts";
import { readToEnd, sha256 } from "../support/tcp_services.ts";
import { within } from "../support/wait.ts";
import type { Proc } from "./harness.ts";

// The shared test services, re-exported for the lifecycle tests that import them from here.
export {
  echo,
  randomBytes,
  startService,
  type TcpService as ScriptedService,
} from "../support/tcp_services.ts";

// The project's own helpers, re-exported for the tests that import them from here.
export { closeQuietly, writeAll } from "../../shared/net.ts";
export { within } from "../support/wait.ts";

/** Polls `check` every 50 ms until it returns true; rejects after `timeoutMs`. */
export async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Resolves once connecting to the port is refused, failing after `ms`. A listener closed a moment
 * ago can still complete a handshake from its backlog (closed at once), hence the short poll.
 */
export async function refusesConnections(port: number, ms = 2_000): Promise<void> {
  await until(`port ${port} refuses connections`, async () => {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return false;
    } catch (e) {
      return e instanceof Deno.errors.ConnectionRefused;
    }
  }, ms);
}

/**
 * Sends `data` over `conn` to an echo service in two halves, running `midway` once the first echoed
 * bytes are back, and asserts that the whole echo then arrives byte-exact and ends with a clean EOF.
 */
export async function echoInHalves(
  conn: Deno.Conn,
  data: Uint8Array,
  midway: () => Promise<void>,
): Promise<void> {
  const half = Math.floor(data.byteLength / 2);
  // Count the echo as it comes so we can tell when bytes have made the full circle.
  let received = 0;
  const reading = readToEnd(conn, { onProgress: (total) => received = total });
  await writeAll(conn, data.subarray(0, half));
  await until("first echoed bytes", () => received > 0);
  await midway();
  await writeAll(conn, data.subarray(half));
  await conn.closeWrite();
  const echoed = await within(reading, 15_000, "the rest of the echo");
  assert.equal(echoed.end, "EOF");
  assert.equal(echoed.bytes, data.byteLength);
  assert.equal(echoed.sha256, sha256(data));
}

/** Waits for a process to exit on its own; kills it and rejects if it is still running. */
export async function exitWithin(
  proc: Proc,
  timeoutMs: number,
): Promise<Deno.CommandStatus> {
  try {
    return await within(proc.status(), timeoutMs, "process exit");
  } catch (e) {
    await proc.stop("SIGKILL");
    throw new Error(`${(e as Error).message}\n${proc.output()}`);
  }
}

/** A random block of 100 public ports, as `--port-range` text and bounds. */
export function portRange(): { low: number; high: number; text: string } {
  // Below Linux's ephemeral range (32768+), so outgoing sockets never hold a test's public port.
  const low = 20000 + Math.floor(Math.random() * 120) * 100;
  return { low, high: low + 99, text: `${low}-${low + 99}` };
}

/** Escapes text for use inside a RegExp. */
export function escapeRe(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
