// End-to-end: every error page a visitor of an HTTP tunnel can get, with its exact status and text,
// from the real server and client processes in front of real local services.
import assert from "node:assert/strict";
import { startClient, startServer } from "./harness.ts";
import { startHttpTunnel, startLocalHttp, TEST_DOMAIN } from "./http_harness.ts";
import { HttpConn, httpRequest, type RawResponse } from "../support/http_client.ts";
import { freePort } from "../support/net.ts";
import { makeCert } from "../support/tls_cert.ts";

/** The `<p>` message of an HTML error page. */
function pageMessage(r: RawResponse): string {
  const m = /<h1>[^<]*<\/h1>\n<p>([^<]*)<\/p>/.exec(r.text());
  assert.ok(m, `not an error page: ${r.text()}`);
  return m[1]!.replaceAll("&#34;", '"').replaceAll("&#39;", "'");
}

/** Reads the next response, or "reset"/"eof" when the connection ended without one. */
async function responseOrEnd(c: HttpConn): Promise<RawResponse | "reset" | "eof"> {
  try {
    return await c.response("POST");
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionReset) return "reset";
    if (e instanceof Error && /eof|closed/i.test(`${e.name} ${e.message}`)) return "eof";
    throw e;
  }
}

Deno.test("an unknown subdomain gets a 404 page naming the tunnel", async () => {
  const server = await startServer(["--http-domain", TEST_DOMAIN]);
  try {
    const r = await httpRequest(server.port, { host: `x.${TEST_DOMAIN}`, path: "/a" });
    assert.equal(r.status, 404);
    assert.equal(r.statusText, "Not Found");
    assert.equal(r.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(pageMessage(r), 'No tunnel named "x" on this server.');
  } finally {
    await server.stop();
  }
});

Deno.test("an unknown subdomain asked for JSON gets the 404 as a JSON error", async () => {
  const server = await startServer(["--http-domain", TEST_DOMAIN]);
  try {
    const r = await httpRequest(server.port, {
      host: `x.${TEST_DOMAIN}`,
      headers: [["accept", "application/json"]],
    });
    assert.equal(r.status, 404);
    assert.equal(r.headers.get("content-type"), "application/json; charset=utf-8");
    assert.deepEqual(r.json(), {
      error: {
        code: "tunnel_not_found",
        message: 'No tunnel named "x" on this server.',
        status: 404,
      },
    });
  } finally {
    await server.stop();
  }
});

Deno.test("a local service that refuses connections gets a 502 naming its address", async () => {
  const port = freePort();
  const rig = await startHttpTunnel({ local: String(port), clientArgs: ["--subdomain", "app"] });
  try {
    const r = await httpRequest(rig.port, { host: rig.grant.host, path: "/" });
    assert.equal(r.status, 502);
    assert.equal(r.statusText, "Bad Gateway");
    const message = pageMessage(r);
    assert.ok(
      message.startsWith(
        `The mport client cannot connect to the local service http://127.0.0.1:${port}`,
      ),
      message,
    );
  } finally {
    await rig.close();
  }
});

Deno.test("a Content-Length above --max-body gets a 413 and the local app sees nothing", async () => {
  const local = startLocalHttp(async (req) => new Response(`got ${(await req.text()).length}`));
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app", "--max-body", "1KB"],
  });
  try {
    const small = await httpRequest(rig.port, {
      host: rig.grant.host,
      method: "POST",
      body: "x".repeat(1000),
    });
    assert.equal(small.status, 200);
    assert.equal(small.text(), "got 1000");
    const r = await httpRequest(rig.port, {
      host: rig.grant.host,
      method: "POST",
      body: "x".repeat(1025),
    });
    assert.equal(r.status, 413);
    assert.equal(r.statusText, "Content Too Large");
    assert.equal(pageMessage(r), "This tunnel accepts request bodies up to 1000 bytes.");
    assert.equal(local.requests.length, 1);
  } finally {
    await rig.close();
    await local.close();
  }
});

Deno.test("a chunked body that grows past --max-body gets a 413, not the app's 200", async () => {
  const local = startLocalHttp(async (req) => {
    const body = await req.text().catch(() => null); // cut off when the tunnel refuses it
    return new Response(`got ${body?.length}`);
  });
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app", "--max-body", "4KB"],
  });
  try {
    const ok = await httpRequest(rig.port, {
      host: rig.grant.host,
      method: "POST",
      body: "y".repeat(3000),
      chunked: 500,
    });
    assert.equal(ok.status, 200);
    assert.equal(ok.text(), "got 3000");
    const c = await HttpConn.open(rig.port);
    try {
      await c.send({
        host: rig.grant.host,
        method: "POST",
        body: "y".repeat(20_000),
        chunked: 1000,
      }).catch(() => {}); // the tunnel may stop reading once it has refused the body
      const r = await responseOrEnd(c);
      assert.ok(typeof r !== "string", `the connection ended without an answer (${r})`);
      assert.equal(r.status, 413);
      assert.equal(pageMessage(r), "This tunnel accepts request bodies up to 4000 bytes.");
      assert.equal(r.headers.get("connection"), "close");
    } finally {
      c.close();
    }
  } finally {
    await rig.close();
    await local.close();
  }
});

Deno.test("a visitor whose address --deny-ip lists gets a 403", async () => {
  const local = startLocalHttp(() => new Response("app"));
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app", "--deny-ip", "127.0.0.1"],
  });
  try {
    const r = await httpRequest(rig.port, { host: rig.grant.host });
    assert.equal(r.status, 403);
    assert.equal(r.statusText, "Forbidden");
    assert.equal(pageMessage(r), "Your address 127.0.0.1 may not use this tunnel.");
    assert.equal(local.requests.length, 0);
  } finally {
    await rig.close();
    await local.close();
  }
});

Deno.test("--basic-auth answers 401 without credentials, 200 with them, 401 with wrong ones", async () => {
  const local = startLocalHttp((req) =>
    new Response(`authorization=${req.headers.get("authorization")}`)
  );
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app", "--basic-auth", "ann:s3cret:x", "--basic-auth", "bob:pw"],
  });
  try {
    const none = await httpRequest(rig.port, { host: rig.grant.host });
    assert.equal(none.status, 401);
    assert.equal(none.statusText, "Unauthorized");
    assert.equal(none.headers.get("www-authenticate"), 'Basic realm="mport", charset="UTF-8"');
    assert.equal(pageMessage(none), "This tunnel asks for a user name and password.");

    for (const user of ["ann:s3cret:x", "bob:pw"]) {
      const r = await httpRequest(rig.port, {
        host: rig.grant.host,
        headers: [["authorization", `Basic ${btoa(user)}`]],
      });
      assert.equal(r.status, 200, user);
      assert.equal(r.text(), "authorization=null");
    }

    const wrong = await httpRequest(rig.port, {
      host: rig.grant.host,
      headers: [["authorization", `Basic ${btoa("ann:wrong")}`]],
    });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.headers.get("www-authenticate"), 'Basic realm="mport", charset="UTF-8"');
    assert.equal(local.requests.length, 2);
  } finally {
    await rig.close();
    await local.close();
  }
});

Deno.test("another tunnel's Host on the same keep-alive connection gets a 421", async () => {
  const local = startLocalHttp((req) => new Response(`app ${new URL(req.url).pathname}`));
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app"],
  });
  const other = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "other"],
    server: rig.server,
  });
  const c = await HttpConn.open(rig.port);
  try {
    const first = await c.request({ host: rig.grant.host, path: "/one" });
    assert.equal(first.status, 200);
    assert.equal(first.text(), "app /one");
    const second = await c.request({ host: other.grant.host, path: "/two" });
    assert.equal(second.status, 421);
    assert.equal(second.statusText, "Misdirected Request");
    assert.equal(
      pageMessage(second),
      `This connection serves app.${TEST_DOMAIN}, not other.${TEST_DOMAIN}.`,
    );
    // The refused request had no body: the connection goes on.
    const third = await c.request({ host: rig.grant.host, path: "/three" });
    assert.equal(third.status, 200);
    assert.equal(third.text(), "app /three");
    // On a connection of its own, the other tunnel answers.
    const own = await httpRequest(rig.port, { host: other.grant.host, path: "/two" });
    assert.equal(own.status, 200);
  } finally {
    c.close();
    await other.close();
    await rig.close();
    await local.close();
  }
});

Deno.test("a self-signed https local service needs --local-insecure, and its 502 says so", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-http-tls-" });
  const cert = await makeCert(dir);
  const ac = new AbortController();
  const tls = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: await Deno.readTextFile(cert.certFile),
    key: await Deno.readTextFile(cert.keyFile),
    signal: ac.signal,
    onListen() {},
  }, (req) => new Response(`tls ${new URL(req.url).pathname}`));
  const local = `https://127.0.0.1:${tls.addr.port}`;
  const insecure = await startHttpTunnel({
    local,
    clientArgs: ["--subdomain", "app", "--local-insecure"],
  });
  const strict = await startHttpTunnel({
    local,
    clientArgs: ["--subdomain", "strict"],
    server: insecure.server,
  });
  try {
    const ok = await httpRequest(insecure.port, { host: insecure.grant.host, path: "/x" });
    assert.equal(ok.status, 200);
    assert.equal(ok.text(), "tls /x");
    const refused = await httpRequest(strict.port, { host: strict.grant.host, path: "/x" });
    assert.equal(refused.status, 502);
    const message = pageMessage(refused);
    assert.ok(message.includes(local), message);
    assert.ok(message.includes("--local-insecure"), message);
  } finally {
    await strict.close();
    await insecure.close();
    ac.abort();
    await tls.finished;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a server without --http-domain refuses HTTP tunnels and the client says why", async () => {
  const server = await startServer();
  const client = startClient([
    "http",
    "3000",
    "--subdomain",
    "app",
    "--server",
    server.wsUrl,
    "--no-inspect",
  ]);
  try {
    await client.stderr.wait(
      /this server does not serve HTTP tunnels \(its operator starts mport-server with --http-domain\)/,
      15_000,
    ).catch((e) => {
      throw new Error(`${(e as Error).message}\n${client.output()}`);
    });
    assert.equal(client.stdout.lines.some((l) => l.includes(`app.`)), false);
  } finally {
    await client.stop();
    await server.stop();
  }
});
