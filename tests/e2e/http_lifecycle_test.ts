// End-to-end: an HTTP tunnel's life — next to a TCP tunnel in one client, its subdomain kept across
// client restarts and refused to other users, and what visitors get while its client is away.
import assert from "node:assert/strict";
import { addUser, createToken, StoreFactory, Teardown, withStore } from "./accounts_harness.ts";
import { connect, roundTrip, startClient, startEcho, startServer, tunnelPort } from "./harness.ts";
import { httpGrant, startHttpTunnel, startLocalHttp, TEST_DOMAIN } from "./http_harness.ts";
import { HttpConn, httpRequest } from "../support/http_client.ts";
import { randomBytes, sha256 } from "../support/tcp_services.ts";
import { within } from "../support/wait.ts";

const stores = new StoreFactory();

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

Deno.test("one client serves a TCP and an HTTP tunnel from a config file, both at once", async () => {
  const echo = startEcho();
  const local = startLocalHttp((req) => new Response(`web ${new URL(req.url).pathname}`));
  const server = await startServer(["--http-domain", TEST_DOMAIN]);
  const dir = await Deno.makeTempDir({ prefix: "mport-http-mixed-" });
  const t = new Teardown();
  t.proc(server);
  t.onClose(() => Deno.remove(dir, { recursive: true }));
  t.onClose(() => echo.close());
  t.onClose(() => local.close());
  try {
    const config = `${dir}/mport.toml`;
    await Deno.writeTextFile(
      config,
      [
        `server = "${server.wsUrl}"`,
        "inspect = false",
        "[[tunnels]]",
        'name = "echo"',
        `local = "127.0.0.1:${echo.port}"`,
        "[[tunnels]]",
        'type = "http"',
        `local = "127.0.0.1:${local.port}"`,
        'subdomain = "web"',
        "",
      ].join("\n"),
    );
    const client = t.proc(startClient(["start", "--config", config]));
    const tcpPort = await tunnelPort(client);
    const grant = await httpGrant(client);
    assert.equal(grant.host, `web.${TEST_DOMAIN}`);

    // A TCP connection stays open through the echo tunnel while HTTP requests go through the host.
    const tcp = await connect(tcpPort);
    const data = randomBytes(2 * 1024 * 1024);
    const echoed = roundTrip(tcp, data);
    const http = await HttpConn.open(server.port);
    try {
      for (let i = 0; i < 5; i++) {
        const r = await http.request({ host: grant.host, path: `/p${i}` });
        assert.equal(r.status, 200);
        assert.equal(r.text(), `web /p${i}`);
      }
    } finally {
      http.close();
    }
    try {
      assert.equal(sha256(await within(echoed, 15_000, "the TCP echo")), sha256(data));
    } finally {
      tcp.close();
    }
  } finally {
    await t.run();
  }
});

Deno.test("a subdomain stays its user's across client restarts and another user asking for it is refused", async () => {
  await withStore(stores, "sqlite", async ({ db }, t) => {
    await addUser(db, "alice");
    await addUser(db, "bob");
    const alice = (await createToken(db, "alice")).token;
    const bob = (await createToken(db, "bob")).token;
    const local = startLocalHttp((req) => new Response(`shop ${new URL(req.url).pathname}`));
    t.onClose(() => local.close());
    const server = t.proc(await startServer(["--db", db, "--http-domain", TEST_DOMAIN]));
    const http = (token: string, extra: string[] = []) =>
      startHttpTunnel({
        server,
        local: String(local.port),
        clientArgs: ["--token", token, ...extra],
      });

    const first = await http(alice, ["--subdomain", "shop"]);
    assert.equal(first.grant.host, `shop.${TEST_DOMAIN}`);
    const bye = await first.client.stop("SIGTERM");
    assert.equal(bye.code, 0, first.client.output());

    const again = await http(alice, ["--subdomain", "shop"]);
    t.proc(again.client);
    assert.equal(again.grant.url, first.grant.url);
    const served = await httpRequest(server.port, { host: again.grant.host, path: "/cart" });
    assert.equal(served.text(), "shop /cart");

    // While alice holds it, bob cannot have it.
    const grab = t.proc(
      startClient([
        "http",
        String(local.port),
        "--server",
        server.wsUrl,
        "--no-inspect",
        "--token",
        bob,
        "--subdomain",
        "shop",
      ]),
    );
    const refusal =
      `subdomain shop.${TEST_DOMAIN} is taken by another user (choose another --subdomain)`;
    await grab.stderr.wait(new RegExp(escape(refusal)), 15_000);
    await grab.stop();
    assert.ok(!grab.stdout.lines.some((l) => l.includes(TEST_DOMAIN)), grab.output());
    assert.equal(
      (await httpRequest(server.port, { host: again.grant.host, path: "/still" })).text(),
      "shop /still",
    );

    // Without --subdomain, bob gets a random one, and the same one after a restart.
    const random = await http(bob);
    assert.match(random.grant.host, new RegExp(`^[a-z0-9]+\\.${escape(TEST_DOMAIN)}$`));
    assert.notEqual(random.grant.host, again.grant.host);
    assert.equal((await random.client.stop("SIGTERM")).code, 0, random.client.output());
    const randomAgain = await http(bob);
    t.proc(randomAgain.client);
    assert.equal(randomAgain.grant.url, random.grant.url);
    const r = await httpRequest(server.port, { host: randomAgain.grant.host, path: "/b" });
    assert.equal(r.text(), "shop /b");
  });
});

Deno.test("an unknown subdomain gets a 404 page, and a tunnel whose client is away a 504 page after the hold timeout", async () => {
  const local = startLocalHttp(() => new Response("up"));
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app"],
    serverArgs: ["--grace", "30", "--hold-timeout", "1"],
  });
  try {
    const unknown = await httpRequest(rig.port, { host: `nope.${TEST_DOMAIN}`, path: "/" });
    assert.equal(unknown.status, 404);
    assert.match(unknown.text(), /<title>404 Tunnel not found<\/title>/);
    assert.match(unknown.text(), /No tunnel named &#34;nope&#34; on this server\./);

    assert.equal((await httpRequest(rig.port, { host: rig.grant.host })).text(), "up");
    // SIGKILL: no bye, so the server keeps the tunnel for --grace and holds its visitors.
    await rig.client.stop("SIGKILL");
    await rig.server.stderr.wait(/tunnel app keeps .* while its client is away/, 10_000);
    const start = performance.now();
    const offline = await httpRequest(rig.port, { host: rig.grant.host, path: "/x" });
    const waited = performance.now() - start;
    assert.equal(offline.status, 504);
    assert.match(offline.text(), /<title>504 Tunnel offline<\/title>/);
    assert.match(
      offline.text(),
      new RegExp(`client serving ${escape(rig.grant.host)} is not connected`),
    );
    assert.ok(waited >= 900, `answered after ${waited.toFixed(0)} ms, before the 1 s hold timeout`);
  } finally {
    await rig.close();
    await local.close();
  }
});

Deno.test("a request held while the client is away is served when the client comes back within the hold timeout", async () => {
  const local = startLocalHttp((req) => new Response(`back ${new URL(req.url).pathname}`));
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app"],
    serverArgs: ["--grace", "30", "--hold-timeout", "20", "--log-level", "debug"],
  });
  let client = rig.client;
  try {
    await client.stop("SIGKILL");
    await rig.server.stderr.wait(/tunnel app keeps .* while its client is away/, 10_000);
    const held = httpRequest(rig.port, { host: rig.grant.host, path: "/held" });
    held.catch(() => {});
    await rig.server.stderr.wait(
      /holding \S+ on app until the client has a data connection/,
      10_000,
    );
    assert.equal(local.requests.length, 0);

    client = startClient([
      "http",
      String(local.port),
      "--server",
      rig.server.wsUrl,
      "--no-inspect",
      "--subdomain",
      "app",
    ]);
    const grant = await httpGrant(client);
    assert.equal(grant.url, rig.grant.url);
    const r = await within(held, 15_000, "the held request's answer");
    assert.equal(r.status, 200);
    assert.equal(r.text(), "back /held");
  } finally {
    await client.stop();
    await rig.server.stop();
    await local.close();
  }
});

globalThis.addEventListener("unload", () => {
  stores.close();
});
