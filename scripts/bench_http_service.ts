// The benchmark's local HTTP service (Deno.serve): a 13-byte answer and a 1 MiB one, in-process or as a child.

/** The small answer's body. */
export const SMALL_BODY = "Hello, world!";
/** Size of the large answer's body. */
export const BIG_BYTES = 1024 * 1024;
/** Paths the service answers. */
export const HTTP_PATHS = { small: "/small", big: "/big" } as const;

/** A running benchmark HTTP service. */
export interface BenchHttpService {
  readonly port: number;
  close(): Promise<void>;
}

/** Starts the service on a free port of 127.0.0.1. */
export function startBenchHttpService(): BenchHttpService {
  const small = new TextEncoder().encode(SMALL_BODY);
  const big = new Uint8Array(BIG_BYTES);
  for (let off = 0; off < BIG_BYTES; off += 65536) {
    crypto.getRandomValues(big.subarray(off, off + 65536));
  }
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    if (path === HTTP_PATHS.small) {
      return new Response(small, { headers: { "content-type": "text/plain" } });
    }
    if (path === HTTP_PATHS.big) {
      return new Response(big, { headers: { "content-type": "application/octet-stream" } });
    }
    return new Response("not found\n", { status: 404 });
  });
  return { port: server.addr.port, close: () => server.shutdown() };
}

if (import.meta.main) {
  const svc = startBenchHttpService();
  console.log(`bench http service on 127.0.0.1:${svc.port}`);
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, async () => {
      await svc.close();
      Deno.exit(0);
    });
  }
}
