// `mport-server clients|tunnels` against a fake server: URLs, tokens, tables and refusals.
import assert from "node:assert/strict";
import { liveServerUrl, runLive } from "../../server/admin/live_cli.ts";

const NOW = Date.UTC(2026, 11, 1, 14, 5);

const URLS: [string, string, string][] = [
  ["http://127.0.0.1:8080", "http://127.0.0.1:8080", "/_mport"],
  ["127.0.0.1:8080", "http://127.0.0.1:8080", "/_mport"],
  ["wss://vps.example.com/tunnel/_mport/", "https://vps.example.com", "/tunnel/_mport"],
  ["ws://[::1]:9000", "http://[::1]:9000", "/_mport"],
];
for (const [text, origin, prefix] of URLS) {
  Deno.test(`live --server ${text} asks ${origin}${prefix}`, () => {
    assert.deepEqual(liveServerUrl(text), { origin, prefix });
  });
}

Deno.test("live --server refuses other schemes and queries", () => {
  assert.throws(() => liveServerUrl("ftp://x"), { name: "TypeError", message: /invalid --server/ });
  assert.throws(() => liveServerUrl("http://x/?token=1"), { message: /invalid --server/ });
});

/** Runs the command against a fake fetch answering `status` with `body`. */
async function run(
  args: string[],
  status: number,
  body: unknown,
  env: Record<string, string> = {},
): Promise<{ out: string; asked: { url: string; auth: string | null }[] }> {
  const out: string[] = [];
  const asked: { url: string; auth: string | null }[] = [];
  await runLive(args, env, {
    out: (l) => out.push(l),
    fetch: (url, init) => {
      asked.push({ url, auth: new Headers(init.headers).get("authorization") });
      return Promise.resolve(Response.json(body, { status }));
    },
    readFile: (p) => (p === "admin.token" ? "file-token\n" : Deno.readTextFileSync(p)),
    now: () => NOW,
  });
  return { out: out.join("\n"), asked };
}

Deno.test("live tunnels prints an aligned table with human sizes and times", async () => {
  const { out, asked } = await run(["tunnels"], 200, {
    tunnels: [
      {
        name: "ssh",
        port: 10005,
        url: "tcp://vps:10005",
        user: "alice",
        session: "s1",
        clientAddress: "203.0.113.7",
        activeConnections: 2,
        pendingConnections: 0,
        bytesIn: 1536 * 1024,
        bytesOut: 20,
        since: NOW - 3 * 60_000,
      },
      {
        name: "adb-phone",
        port: 10012,
        url: "tcp://vps:10012",
        user: "bob",
        session: null,
        clientAddress: null,
        activeConnections: 0,
        pendingConnections: 1,
        bytesIn: 0,
        bytesOut: 0,
        since: NOW - 2 * 3_600_000,
      },
    ],
  }, { MPORT_TOKEN: "env-token" });
  assert.deepEqual(asked, [{
    url: "http://127.0.0.1:8080/_mport/v2/admin/tunnels",
    auth: "Bearer env-token",
  }]);
  assert.equal(
    out,
    [
      "NAME       PORT   USER   CLIENT                    ACTIVE  BYTES IN  BYTES OUT  SINCE",
      "ssh        10005  alice  203.0.113.7               2       1.5 MiB   20 B       3 min ago",
      "adb-phone  10012  bob    (waiting for its client)  0       0 B       0 B        2 h ago",
    ].join("\n"),
  );
});

Deno.test("live clients takes --token-file over MPORT_TOKEN and prints raw --json", async () => {
  const clients = [{
    session: "0123456789abcdef",
    clientId: "c1",
    user: "alice",
    address: "203.0.113.7",
    since: NOW - 60_000,
    tunnels: ["ssh"],
    dataConnections: 1,
  }];
  const { out, asked } = await run(
    ["clients", "--token-file", "admin.token", "--json", "--server", "https://vps:8443/x"],
    200,
    { clients },
    { MPORT_TOKEN: "env-token" },
  );
  assert.deepEqual(asked, [{
    url: "https://vps:8443/x/v2/admin/clients",
    auth: "Bearer file-token",
  }]);
  assert.deepEqual(JSON.parse(out), clients);
});

const REFUSED: [number, unknown, RegExp][] = [
  [
    401,
    { error: "the server rejected the token (wrong or revoked)" },
    /^the server refused \(401\): the server rejected the token/,
  ],
  [
    403,
    { error: "user bob is not an admin" },
    /^the server refused \(403\): user bob is not an admin$/,
  ],
  [
    404,
    "not found",
    /is not an admin endpoint \(an older server, or pass --server with its path prefix/,
  ],
];
for (const [status, body, message] of REFUSED) {
  Deno.test(`live clients explains an HTTP ${status}`, async () => {
    await assert.rejects(run(["clients", "--token", "t"], status, body), (e: unknown) => {
      assert.ok(e instanceof Error && !(e instanceof TypeError));
      assert.match(e.message, message);
      return true;
    });
  });
}

Deno.test("live clients without any token is a usage error", async () => {
  await assert.rejects(run(["clients"], 200, { clients: [] }), {
    name: "TypeError",
    message: /^no admin token: pass --token TOKEN, --token-file FILE or set MPORT_TOKEN/,
  });
});
