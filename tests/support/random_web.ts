// A web server run as a process of its own (e.g. inside a network namespace): it serves the same
// pseudo-random bytes to every request, says their SHA-256 once ready, and names each peer.
//
//   deno run -A tests/support/random_web.ts HOST PORT MIB
//   → "ready PORT SHA256" on stdout, then "peer IP" for every request.
import { createHash } from "node:crypto";

/** `mib` MiB of bytes that depend only on `mib` (xorshift32, seeded). */
export function pseudoRandomBytes(mib: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(mib * 1024 * 1024);
  const words = new Uint32Array(out.buffer);
  let x = 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return out;
}

if (import.meta.main) {
  const [host = "0.0.0.0", portText = "8000", mibText = "1"] = Deno.args;
  const body = pseudoRandomBytes(Number(mibText));
  const sha = createHash("sha256").update(body).digest("hex");
  Deno.serve({
    hostname: host,
    port: Number(portText),
    onListen: (addr) => console.log(`ready ${addr.port} ${sha}`),
  }, (_req, info) => {
    console.log(`peer ${info.remoteAddr.hostname}`);
    return new Response(body, { headers: { "content-type": "application/octet-stream" } });
  });
}
