// End to end: `mport-server clients` and `tunnels` ask a running server who is connected.
import assert from "node:assert/strict";
import {
  addUser,
  clientFor,
  createToken,
  runServerMain,
  StoreFactory,
  withStore,
} from "./accounts_harness.ts";
import { connect, startEcho, startServer, TEST_TOKEN, tunnelPort } from "./harness.ts";
import { closeQuietly, randomBytes, within } from "./scripted_services.ts";

const stores = new StoreFactory();

type ClientJson = {
  session: string;
  user: string;
  address: string;
  since: number;
  tunnels: string[];
  dataConnections: number;
};
type TunnelJson = {
  name: string;
  port: number;
  user: string;
  clientAddress: string | null;
  activeConnections: number;
  bytesIn: number;
  bytesOut: number;
  since: number;
};

Deno.test("clients and tunnels show a connected client, its tunnel and bytes; only to admins", async () => {
  await withStore(stores, "sqlite", async ({ db }, t) => {
    await addUser(db, "root", ["--admin"]);
    const root = await createToken(db, "root");
    await addUser(db, "alice");
    const alice = await createToken(db, "alice");
    const echo = startEcho();
    t.onClose(() => echo.close());
    const server = t.proc(await startServer(["--db", db]));
    const client = t.proc(clientFor(server, alice.token, echo.port));
    const port = await tunnelPort(client);
    const live = (args: string[]) =>
      runServerMain([...args, "--server", server.httpUrl], { timeoutMs: 15_000 });

    const data = randomBytes(150_000);
    const conn = await connect(port);
    t.onClose(() => Promise.resolve(closeQuietly(conn)));
    // Echo it back without closing: the connection stays open and counts as active.
    const echoed = (async () => {
      const buf = new Uint8Array(64 * 1024);
      let n = 0;
      while (n < data.length) {
        const r = await conn.read(buf);
        if (r === null) throw new Error(`EOF after ${n} bytes`);
        n += r;
      }
      return n;
    })();
    for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
    assert.equal(await within(echoed, 10_000, "echo"), data.length);

    const tunnelsOut = await live(["tunnels", "--token", root.token, "--json"]);
    assert.equal(tunnelsOut.code, 0, tunnelsOut.stderr);
    const tunnels = JSON.parse(tunnelsOut.stdout) as TunnelJson[];
    assert.equal(tunnels.length, 1);
    const tunnel = tunnels[0]!;
    assert.equal(tunnel.name, "web");
    assert.equal(tunnel.port, port);
    assert.equal(tunnel.user, "alice");
    assert.equal(tunnel.clientAddress, "127.0.0.1");
    assert.equal(tunnel.activeConnections, 1);
    assert.equal(tunnel.bytesIn, data.length);
    assert.equal(tunnel.bytesOut, data.length);
    assert.ok(Math.abs(Date.now() - tunnel.since) < 60_000);

    const clientsOut = await live(["clients", "--token", root.token, "--json"]);
    assert.equal(clientsOut.code, 0, clientsOut.stderr);
    const clients = JSON.parse(clientsOut.stdout) as ClientJson[];
    assert.equal(clients.length, 1);
    assert.equal(clients[0]!.user, "alice");
    assert.equal(clients[0]!.address, "127.0.0.1");
    assert.deepEqual(clients[0]!.tunnels, ["web"]);
    assert.ok(clients[0]!.dataConnections >= 1);

    // Tables: aligned columns, human sizes and times; a static --token from a file.
    const dir = await Deno.makeTempDir({ prefix: "mport-live-" });
    t.onClose(() => Deno.remove(dir, { recursive: true }));
    await Deno.writeTextFile(`${dir}/admin.token`, `${TEST_TOKEN}\n`);
    const table = await live(["tunnels", "--token-file", `${dir}/admin.token`]);
    assert.equal(table.code, 0, table.stderr);
    const [header, row] = table.stdout.trimEnd().split("\n");
    assert.match(header!, /^NAME\s+PORT\s+USER\s+CLIENT\s+ACTIVE\s+BYTES IN\s+BYTES OUT\s+SINCE$/);
    assert.match(
      row!,
      new RegExp(
        `^web\\s+${port}\\s+alice\\s+127\\.0\\.0\\.1\\s+1\\s+146 KiB\\s+146 KiB\\s+(just now|\\d+ s ago)$`,
      ),
    );
    assert.equal(header!.indexOf("PORT"), row!.indexOf(String(port)));
    const clientTable = await live(["clients", "--token", TEST_TOKEN]);
    assert.equal(clientTable.code, 0, clientTable.stderr);
    assert.match(clientTable.stdout, /^SESSION\s+USER\s+ADDRESS\s+SINCE\s+DATA CONNS\s+TUNNELS\n/);
    assert.match(clientTable.stdout, /\n[0-9a-f]{8}\s+alice\s+127\.0\.0\.1\s+.+\s+web\n$/);

    // Not an admin: 403 with the reason; a wrong token: 401; no token: a usage error.
    const forbidden = await live(["clients", "--token", alice.token]);
    assert.equal(forbidden.code, 1);
    assert.match(forbidden.stderr, /the server refused \(403\): user alice is not an admin/);
    const wrong = await live(["tunnels", "--token", "mp_wrong-token-0000000000"]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /the server refused \(401\): the server rejected the token/);
    const none = await live(["tunnels"]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no admin token: pass --token TOKEN/);
  });
});

Deno.test("clients says so when no server runs at --server", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const r = await runServerMain([
    "clients",
    "--server",
    `http://127.0.0.1:${port}`,
    "--token",
    TEST_TOKEN,
  ]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    new RegExp(
      `cannot reach the server at http://127\\.0\\.0\\.1:${port}: .*is mport-server running there\\?`,
    ),
  );
});

Deno.test("tunnels with no clients connected says so", async () => {
  const server = await startServer();
  try {
    const r = await runServerMain(["tunnels", "--server", server.httpUrl, "--token", TEST_TOKEN]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "no open tunnels\n");
    const c = await runServerMain([
      "clients",
      "--server",
      `${server.wsUrl}/_mport`,
      "--token",
      TEST_TOKEN,
      "--json",
    ]);
    assert.equal(c.code, 0, c.stderr);
    assert.deepEqual(JSON.parse(c.stdout), []);
  } finally {
    await server.stop();
  }
});

Deno.test({
  name: "live view: stop the PostgreSQL cluster if one was started",
  fn: () => stores.close(),
});
