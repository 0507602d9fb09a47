// End to end: a tunnel end killed mid-transfer shows as a reset on the far side, never a clean EOF.
import { ok, strictEqual as assertEquals } from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  randomBytes,
  type ReadResult,
  readToEnd,
  sink,
  source,
  startService,
  writeChunks,
} from "../support/tcp_services.ts";
import { within } from "../support/wait.ts";
import { connect, startClient, startServer, tunnelPort } from "./harness.ts";

const MiB = 1024 * 1024;
/** The transfer: a 16 MiB random chunk sent 16 times. */
const CHUNK = randomBytes(16 * MiB);
const REPEATS = 16;
const TOTAL = CHUNK.byteLength * REPEATS;
/** The kill comes once this much has arrived: the transfer is flowing, and far from done. */
const KILL_AFTER = 8 * MiB;

/** SHA-256 of the first `n` bytes of the transfer (CHUNK repeated). */
function prefixSha256(n: number): string {
  const hash = createHash("sha256");
  let left = n;
  while (left > 0) {
    const take = Math.min(left, CHUNK.byteLength);
    hash.update(CHUNK.subarray(0, take));
    left -= take;
  }
  return hash.digest("hex");
}

/** Checks that a read ended with a reset after an intact, incomplete prefix of the transfer. */
function assertCutOffByReset(result: ReadResult, who: string): void {
  assertEquals(
    result.end,
    "ConnectionReset",
    `${who} saw ${result.end} after ${result.bytes} of ${TOTAL} bytes`,
  );
  ok(result.bytes >= KILL_AFTER && result.bytes < TOTAL, `${who} read ${result.bytes} bytes`);
  assertEquals(result.sha256, prefixSha256(result.bytes), `${who}: the bytes that arrived differ`);
}

for (let run = 1; run <= 3; run++) {
  Deno.test(`kill -9 of the client mid-download resets the user's connection, never a clean EOF (run ${run} of 3)`, async () => {
    let repeats = 0;
    const service = startService(source(CHUNK, undefined, () => ++repeats < REPEATS));
    const server = await startServer();
    const client = startClient(["tcp", `127.0.0.1:${service.port}`, "--server", server.wsUrl]);
    let user: Deno.TcpConn | null = null;
    try {
      const port = await tunnelPort(client);
      user = await connect(port);
      let killed = false;
      const result = await within(
        readToEnd(user, {
          onProgress: (total) => {
            if (!killed && total >= KILL_AFTER) {
              killed = true;
              client.child.kill("SIGKILL");
            }
          },
        }),
        30_000,
        "the user's download ends",
      );
      ok(killed, `the download ended (${result.end}) before the kill`);
      assertCutOffByReset(result, "the user");
      const status = await within(client.status(), 10_000, "the killed client exits");
      assertEquals(status.signal, "SIGKILL");
    } finally {
      user?.close();
      await client.stop("SIGKILL");
      await server.stop();
      await service.close();
    }
  });
}

Deno.test("kill -9 of the server mid-upload resets the local service's connection, never a clean EOF", async () => {
  const received = Promise.withResolvers<ReadResult>();
  let killed = false;
  // The server is started below; the sink kills it once enough has arrived.
  let kill = () => {};
  const service = startService(sink((r) => received.resolve(r), {
    onProgress: (total) => {
      if (!killed && total >= KILL_AFTER) {
        killed = true;
        kill();
      }
    },
  }));
  const server = await startServer();
  kill = () => server.child.kill("SIGKILL");
  const client = startClient(["tcp", `127.0.0.1:${service.port}`, "--server", server.wsUrl]);
  let user: Deno.TcpConn | null = null;
  try {
    const port = await tunnelPort(client);
    const errFrom = client.stderr.lines.length;
    user = await connect(port);
    const u = user;
    const upload = (async () => {
      for (let i = 0; i < REPEATS; i++) {
        const r = await writeChunks(u, CHUNK);
        if (r.error) return r.error;
      }
      return null;
    })();
    const result = await within(received.promise, 30_000, "the service's read ends");
    ok(killed, `the upload ended (${result.end}) before the kill`);
    assertCutOffByReset(result, "the local service");
    const status = await within(server.status(), 10_000, "the killed server exits");
    assertEquals(status.signal, "SIGKILL");
    // The user's side of the killed server fails too, and the client lives on to reconnect.
    const uploadError = await within(upload, 10_000, "the user's upload fails");
    ok(uploadError !== null, "the user wrote all bytes to a killed server");
    await client.stderr.wait(/^mport: .*; reconnecting in /, 10_000, errFrom);
  } finally {
    user?.close();
    await client.stop();
    await server.stop("SIGKILL");
    await service.close();
  }
});
