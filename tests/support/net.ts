// Free loopback ports for tests: one to bind later, one below the ephemeral range, a block of them,
// and waiting for a released port to be free again.
import type { PortRange } from "../../shared/address.ts";
import { ticks } from "./wait.ts";

/**
 * A free port below Linux's ephemeral range (32768+), for a listener that must be bound again
 * later: a port from the ephemeral range may meanwhile become the source port of an outgoing
 * connection (even a client's own reconnect attempt to it, a TCP self-connect).
 */
export function freeStablePort(): number {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 15000 + Math.floor(Math.random() * 5000);
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch {
      // taken: try another
    }
  }
  throw new Error("no free port found in 15000-19999");
}

/** A TCP port on 127.0.0.1 that was free a moment ago (bound on port 0, then released). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A block of `size` consecutive ports that are free right now (checked by binding each). */
export function freeRange(size: number): PortRange {
  for (let attempt = 0; attempt < 100; attempt++) {
    const low = 20000 + Math.floor(Math.random() * 35000);
    const held: Deno.Listener[] = [];
    try {
      for (let p = low; p < low + size; p++) {
        held.push(Deno.listen({ hostname: "127.0.0.1", port: p }));
      }
      return { low, high: low + size - 1 };
    } catch {
      // part of the block is taken: try another
    } finally {
      for (const l of held) l.close();
    }
  }
  throw new Error(`no block of ${size} free ports found`);
}

/**
 * Resolves once `port` can be bound again. A listener closed while its accept loop waits is only
 * gone from the OS on a later turn of the event loop (there is no event for it), so tests that
 * bind the same port again right after a release try once per turn, for at most two seconds.
 */
export async function portFree(port: number): Promise<void> {
  const deadline = Date.now() + 2000;
  while (Date.now() < deadline) {
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return;
    } catch {
      await ticks(1);
    }
  }
  throw new Error(`port ${port} was not free within 2000 ms`);
}
