// Finds blocks of free TCP ports on 127.0.0.1 for tests that need a port range.
import type { PortRange } from "../../shared/address.ts";

const HOST = "127.0.0.1";

/** A block of `size` consecutive ports that are free right now (checked by binding each). */
export function freeRange(size: number): PortRange {
  for (let attempt = 0; attempt < 100; attempt++) {
    const low = 20000 + Math.floor(Math.random() * 35000);
    const held: Deno.Listener[] = [];
    try {
      for (let p = low; p < low + size; p++) held.push(Deno.listen({ hostname: HOST, port: p }));
      return { low, high: low + size - 1 };
    } catch {
      // part of the block is taken: try another
    } finally {
      for (const l of held) l.close();
    }
  }
  throw new Error(`no block of ${size} free ports found`);
}
