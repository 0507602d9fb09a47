// Helpers for the lifecycle e2e tests: scripted local TCP services, deadlines, polling, port ranges.
import { closeQuietly, writeAll } from "../../shared/net.ts";
import type { Proc } from "./harness.ts";

/** `n` random bytes (getRandomValues fills at most 64 KiB per call). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

/** A local TCP service whose per-connection behaviour is a function. */
export interface ScriptedService {
  readonly port: number;
  /** Connections accepted so far. */
  accepted: number;
  /** Stops accepting, closes every connection and waits for the handlers to finish. */
  close(): Promise<void>;
}

/**
 * Starts a TCP service on 127.0.0.1:`port` (0 = any) that runs `handle` for every connection.
 * A handler's errors (the peer reset, the service was closed) end only that connection.
 */
export function startService(
  handle: (conn: Deno.TcpConn) => Promise<void>,
  port = 0,
): ScriptedService {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const conns = new Set<Deno.TcpConn>();
  const tasks = new Set<Promise<void>>();
  const state = { port: (listener.addr as Deno.NetAddr).port, accepted: 0 };
  const loop = (async () => {
    while (true) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      state.accepted++;
      conns.add(conn);
      const task = (async () => {
        try {
          await handle(conn);
        } catch {
          // peer reset or service closed
        }
        conns.delete(conn);
        closeQuietly(conn);
      })();
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })();
  return Object.assign(state, {
    async close() {
      listener.close();
      for (const c of conns) closeQuietly(c);
      await loop;
      await Promise.all([...tasks]);
    },
  });
}

/** Echoes every byte, then closes its write side at EOF (like the harness's echo). */
export async function echo(conn: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) break;
    await writeAll(conn, buf.subarray(0, n));
  }
  await conn.closeWrite();
}

// The project's own helpers, re-exported for the tests that import them from here.
export { closeQuietly, writeAll } from "../../shared/net.ts";
/** Resolves like `p`, or rejects after `ms` naming `what` (the caller cleans up in `finally`). */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

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
