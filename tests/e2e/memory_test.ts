// End to end: users that never read cost bounded server memory, and idle connections time out.
import assert from "node:assert/strict";
import { connect, startClient, startServer, tunnelPort } from "./harness.ts";
import { closeQuietly } from "../../shared/net.ts";
import { rssBytes } from "../support/processes.ts";
import { within } from "../support/wait.ts";

const MiB = 1024 * 1024;
const STALLED_USERS = 100;
/** The bound: 100 stalled readers may add at most this much to the server's RSS. */
const RSS_GROWTH_LIMIT = 64 * MiB;

/**
 * A local service that writes to every connection as fast as it is allowed and reports how many
 * connections have stalled (one write pending for `stallMs`).
 */
function floodingService(stallMs = 1000) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  let stalled = 0;
  const waiters: (() => void)[] = [];
  const chunk = crypto.getRandomValues(new Uint8Array(64 * 1024));
  const serve = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      (async () => {
        let counted = false;
        try {
          while (true) {
            const w = conn.write(chunk);
            let timer: ReturnType<typeof setTimeout> | undefined;
            const stall = new Promise<null>((r) => (timer = setTimeout(() => r(null), stallMs)));
            let n: number | null;
            try {
              n = await Promise.race([w, stall]);
            } finally {
              clearTimeout(timer);
            }
            if (n === null && !counted) {
              counted = true;
              stalled++;
              for (const w of waiters.splice(0)) w();
              await w;
            }
          }
        } catch {
          // closed by the test
        }
      })();
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    /** Resolves once `n` connections are stalled. */
    async stalled(n: number): Promise<void> {
      while (stalled < n) await new Promise<void>((r) => waiters.push(r));
    },
    async close() {
      listener.close();
      for (const c of conns) closeQuietly(c);
      await serve;
    },
  };
}

Deno.test(`${STALLED_USERS} users that never read add less than 64 MiB to the server's RSS, and others still get served`, async () => {
  const service = floodingService();
  const server = await startServer();
  const client = startClient(["tcp", `127.0.0.1:${service.port}`, "--server", server.wsUrl]);
  const users: Deno.TcpConn[] = [];
  try {
    const port = await tunnelPort(client);
    // Warm up: one connection that reads a little, so the idle figure includes a used data path.
    const warm = await connect(port);
    await within(warm.read(new Uint8Array(1024)), 5000, "first bytes");
    warm.close();
    const idle = rssBytes(server.child.pid);
    for (let i = 0; i < STALLED_USERS; i++) users.push(await connect(port));
    await within(service.stalled(STALLED_USERS), 30_000, `${STALLED_USERS} stalled writers`);
    const grown = rssBytes(server.child.pid) - idle;
    console.log(`server RSS grew by ${(grown / MiB).toFixed(1)} MiB`);
    assert.ok(
      grown < RSS_GROWTH_LIMIT,
      `server RSS grew by ${(grown / MiB).toFixed(1)} MiB for ${STALLED_USERS} stalled readers`,
    );
    // The stalled streams do not block the data connection: a reading user still gets bytes.
    const reader = await connect(port);
    const buf = new Uint8Array(256 * 1024);
    let got = 0;
    while (got < 4 * MiB) {
      const n = await within(reader.read(buf), 5000, "a reading user's bytes");
      assert.notEqual(n, null);
      got += n!;
    }
    reader.close();
  } finally {
    for (const u of users) u.close();
    await client.stop();
    await server.stop();
    await service.close();
  }
});

Deno.test("--idle-timeout resets a user connection that stays silent, and spares a busy one", async () => {
  const echo = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const serve = (async () => {
    for await (const conn of echo) {
      accepted.push(conn);
      (async () => {
        const buf = new Uint8Array(1024);
        try {
          while (true) {
            const n = await conn.read(buf);
            if (n === null) break;
            await conn.write(buf.subarray(0, n));
          }
        } catch {
          // reset
        }
      })();
    }
  })().catch(() => {});
  const server = await startServer(["--idle-timeout", "1"]);
  const client = startClient(["tcp", `127.0.0.1:${echo.addr.port}`, "--server", server.wsUrl]);
  try {
    const port = await tunnelPort(client);
    const silent = await connect(port);
    const busy = await connect(port);
    const started = Date.now();
    const silentEnd = silent.read(new Uint8Array(16)).then(
      (n) => (n === null ? "eof" : "data"),
      (e) => (e instanceof Deno.errors.ConnectionReset ? "reset" : String(e)),
    );
    // The busy connection sends a byte every 200 ms for 3 s and gets each echoed.
    const one = new Uint8Array([42]);
    const buf = new Uint8Array(16);
    while (Date.now() - started < 3000) {
      await busy.write(one);
      assert.equal(await within(busy.read(buf), 2000, "echo on the busy connection"), 1);
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(await within(silentEnd, 5000, "silent connection end"), "reset");
    busy.close();
    silent.close();
  } finally {
    await client.stop();
    await server.stop();
    echo.close();
    for (const c of accepted) closeQuietly(c);
    await serve;
  }
});
