// End to end: bytes cross the real server and client processes intact, in both directions.
import { strictEqual as assertEquals } from "node:assert/strict";
import {
  connect,
  readAll,
  sha256,
  startClient,
  startEcho,
  startServer,
  tunnelPort,
} from "./harness.ts";

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

Deno.test("64 MiB each way with random chunk sizes arrive byte-exact (SHA-256 at both ends)", async () => {
  const echo = startEcho();
  const server = await startServer();
  const client = startClient(["tcp", `127.0.0.1:${echo.port}`, "--server", server.wsUrl]);
  try {
    const port = await tunnelPort(client);
    const data = randomBytes(64 * 1024 * 1024);
    const conn = await connect(port);
    const reading = readAll(conn);
    let off = 0;
    while (off < data.byteLength) {
      const size = 1 + Math.floor(Math.random() * 200_000);
      const end = Math.min(data.byteLength, off + size);
      let o = off;
      while (o < end) o += await conn.write(data.subarray(o, end));
      off = end;
    }
    await conn.closeWrite();
    const got = await reading;
    conn.close();
    assertEquals(got.byteLength, data.byteLength);
    assertEquals(await sha256(got), await sha256(data));
  } finally {
    await client.stop();
    await server.stop();
    await echo.close();
  }
});
