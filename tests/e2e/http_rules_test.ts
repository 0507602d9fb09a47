// End-to-end: what an HTTP tunnel's rules do to the requests a local service gets and the responses
// a visitor gets (forwarding and hop-by-hop headers, Host, header flags, security headers, IP
// rules), and that the server's own names and its access log and metrics keep working.
import assert from "node:assert/strict";
import { BodyTracker, requestFraming } from "../../shared/http_framing.ts";
import { parseRequestHead, readHead } from "../../shared/http_head.ts";
import { writeAll } from "../../shared/net.ts";
import { startService, type TcpService } from "../support/tcp_services.ts";
import { HttpConn, httpRequest } from "../support/http_client.ts";
import { startHttpTunnel, startLocalHttp, TEST_DOMAIN } from "./http_harness.ts";
import { TEST_TOKEN } from "./harness.ts";

const HOST = `app.${TEST_DOMAIN}`;

/** A local HTTP service written by hand: records each request head exactly as it arrived. */
interface RawLocal extends TcpService {
  /** Request heads (without the blank line), in order. */
  readonly heads: string[];
}

/**
 * Answers every request with `response` (a complete HTTP/1.1 response, keep-alive), after
 * reading the request's body.
 */
function startRawLocal(
  response = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
): RawLocal {
  const heads: string[] = [];
  const service = startService(async (conn) => {
    let pending: Uint8Array = new Uint8Array(0);
    for (;;) {
      let got;
      try {
        got = await readHead(conn, { maxBytes: 64 * 1024, timeoutMs: 30_000, prefix: pending });
      } catch {
        return;
      }
      heads.push(got.head);
      const tracker = new BodyTracker(requestFraming(parseRequestHead(got.head).headers));
      pending = got.leftover;
      const buf = new Uint8Array(16 * 1024);
      while (!tracker.done) {
        if (pending.byteLength === 0) {
          const n = await conn.read(buf);
          if (n === null) return;
          pending = buf.slice(0, n);
        }
        const used = tracker.feed(pending);
        pending = pending.slice(used);
      }
      await writeAll(conn, new TextEncoder().encode(response));
    }
  });
  return Object.assign(service, { heads });
}

/** The headers of the only request `local` got. */
function onlyHeaders(local: RawLocal): Headers {
  assert.equal(local.heads.length, 1, local.heads.join("\n\n"));
  return parseRequestHead(local.heads[0]!).headers;
}

/** Runs `body` with a tunnel `app` to `local` (with `clientArgs`), closing both after. */
async function withTunnel(
  local: { port: number; close(): Promise<void> },
  clientArgs: string[],
  body: (port: number) => Promise<void>,
  serverArgs: string[] = [],
): Promise<void> {
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app", ...clientArgs],
    serverArgs,
  });
  try {
    await body(rig.port);
  } finally {
    await rig.close();
    await local.close();
  }
}

Deno.test("the local service gets X-Forwarded-* and Forwarded naming the visitor", async () => {
  const local = startRawLocal();
  await withTunnel(local, [], async (port) => {
    const r = await httpRequest(port, {
      host: HOST,
      path: "/p?q=1",
      headers: [["x-forwarded-for", "203.0.113.7"]],
    });
    assert.equal(r.status, 200);
    const h = onlyHeaders(local);
    assert.equal(parseRequestHead(local.heads[0]!).target, "/p?q=1");
    assert.equal(h.get("x-forwarded-for"), "203.0.113.7, 127.0.0.1");
    assert.equal(h.get("x-forwarded-proto"), "http");
    assert.equal(h.get("x-forwarded-host"), HOST);
    assert.equal(h.get("forwarded"), `for=127.0.0.1;host="${HOST}";proto=http`);
  });
});

Deno.test("a visitor without X-Forwarded-For is named alone in it", async () => {
  const local = startRawLocal();
  await withTunnel(local, [], async (port) => {
    assert.equal((await httpRequest(port, { host: HOST })).status, 200);
    assert.equal(onlyHeaders(local).get("x-forwarded-for"), "127.0.0.1");
  });
});

Deno.test("hop-by-hop headers are not forwarded either way", async () => {
  const local = startRawLocal(
    "HTTP/1.1 200 OK\r\nconnection: x-resp\r\nx-resp: 1\r\nkeep-alive: timeout=9\r\n" +
      "x-kept: yes\r\ncontent-length: 2\r\n\r\nok",
  );
  await withTunnel(local, [], async (port) => {
    const r = await httpRequest(port, {
      host: HOST,
      headers: [
        ["connection", "keep-alive, x-custom"],
        ["x-custom", "secret"],
        ["keep-alive", "timeout=5"],
        ["te", "trailers"],
        ["upgrade", "h2c"],
        ["x-end-to-end", "kept"],
      ],
    });
    assert.equal(r.status, 200);
    assert.equal(r.text(), "ok");
    const h = onlyHeaders(local);
    for (const name of ["x-custom", "keep-alive", "te", "upgrade"]) {
      assert.equal(h.get(name), null, `${name} reached the local service`);
    }
    assert.equal(h.get("x-end-to-end"), "kept");
    assert.equal(r.headers.get("x-resp"), null);
    assert.equal(r.headers.get("keep-alive"), null);
    assert.equal(r.headers.get("x-kept"), "yes");
  });
});

const HOST_HEADERS: { args: string[]; want: (localPort: number) => string }[] = [
  { args: [], want: (p) => `127.0.0.1:${p}` },
  { args: ["--host-header", "rewrite"], want: (p) => `127.0.0.1:${p}` },
  { args: ["--host-header", "preserve"], want: () => HOST },
  { args: ["--host-header", "myapp.local:8080"], want: () => "myapp.local:8080" },
];

for (const c of HOST_HEADERS) {
  const label = c.args.length === 0 ? "by default" : `with ${c.args.join(" ")}`;
  Deno.test(`the local service gets the Host header ${label}`, async () => {
    const local = startRawLocal();
    await withTunnel(local, c.args, async (port) => {
      assert.equal((await httpRequest(port, { host: HOST })).status, 200);
      assert.equal(onlyHeaders(local).get("host"), c.want(local.port));
    });
  });
}

Deno.test("--request-header-add and --request-header-remove change what the local service gets", async () => {
  const local = startRawLocal();
  await withTunnel(local, [
    "--request-header-add",
    "X-Env: staging",
    "--request-header-add",
    "X-Team:  blue ",
    "--request-header-remove",
    "X-Secret",
  ], async (port) => {
    const r = await httpRequest(port, {
      host: HOST,
      headers: [["x-secret", "hunter2"], ["x-other", "stays"]],
    });
    assert.equal(r.status, 200);
    const h = onlyHeaders(local);
    assert.equal(h.get("x-env"), "staging");
    assert.equal(h.get("x-team"), "blue");
    assert.equal(h.get("x-secret"), null);
    assert.equal(h.get("x-other"), "stays");
  });
});

Deno.test("--response-header-add adds a header to every response", async () => {
  const local = startLocalHttp(() => new Response("hi", { headers: { "x-app": "1" } }));
  await withTunnel(local, ["--response-header-add", "X-Served-By: mport"], async (port) => {
    const c = await HttpConn.open(port);
    try {
      for (const path of ["/a", "/b"]) {
        const r = await c.request({ host: HOST, path });
        assert.equal(r.status, 200);
        assert.equal(r.headers.get("x-served-by"), "mport");
        assert.equal(r.headers.get("x-app"), "1");
      }
    } finally {
      c.close();
    }
  });
});

Deno.test("--security-headers adds the set without overriding the app's own", async () => {
  const local = startLocalHttp(() =>
    new Response("hi", { headers: { "x-frame-options": "SAMEORIGIN" } })
  );
  await withTunnel(local, ["--security-headers"], async (port) => {
    const r = await httpRequest(port, { host: HOST });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("x-frame-options"), "SAMEORIGIN");
    assert.equal(r.headers.get("x-content-type-options"), "nosniff");
    assert.equal(r.headers.get("referrer-policy"), "no-referrer");
    assert.equal(
      r.headers.get("content-security-policy"),
      "default-src 'self'; frame-ancestors 'none'",
    );
    // Plain http visitors: HSTS would be meaningless.
    assert.equal(r.headers.get("strict-transport-security"), null);
  });
});

Deno.test("responses carry no security headers without --security-headers", async () => {
  const local = startLocalHttp(() => new Response("hi"));
  await withTunnel(local, [], async (port) => {
    const r = await httpRequest(port, { host: HOST });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("x-frame-options"), null);
    assert.equal(r.headers.get("referrer-policy"), null);
  });
});

Deno.test("--max-body takes a size with a unit: 2KB lets 2000 bytes through, not 2001", async () => {
  const local = startLocalHttp(async (req) => new Response(`got ${(await req.text()).length}`));
  await withTunnel(local, ["--max-body", "2KB"], async (port) => {
    const ok = await httpRequest(port, { host: HOST, method: "PUT", body: "z".repeat(2000) });
    assert.equal(ok.status, 200);
    assert.equal(ok.text(), "got 2000");
    const over = await httpRequest(port, { host: HOST, method: "PUT", body: "z".repeat(2001) });
    assert.equal(over.status, 413);
  });
});

const IP_RULES: { args: string[]; status: number }[] = [
  { args: ["--allow-ip", "10.0.0.0/8"], status: 403 },
  { args: ["--deny-ip", "127.0.0.1"], status: 403 },
  { args: ["--allow-ip", "127.0.0.0/8"], status: 200 },
  { args: ["--allow-ip", "127.0.0.0/8", "--deny-ip", "127.0.0.1/32"], status: 403 },
  { args: ["--deny-ip", "10.0.0.0/8"], status: 200 },
];

for (const c of IP_RULES) {
  Deno.test(`a visitor from 127.0.0.1 gets ${c.status} with ${c.args.join(" ")}`, async () => {
    const local = startLocalHttp(() => new Response("app"));
    await withTunnel(local, c.args, async (port) => {
      const r = await httpRequest(port, { host: HOST });
      assert.equal(r.status, c.status);
      if (c.status === 200) assert.equal(r.text(), "app");
      else assert.match(r.text(), /Your address 127\.0\.0\.1 may not use this tunnel\./);
      assert.equal(local.requests.length, c.status === 200 ? 1 : 0);
    });
  });
}

Deno.test("the server still answers /healthz and /metrics on its own name while tunnels exist", async () => {
  const local = startLocalHttp((req) => new Response(`tunnel ${new URL(req.url).pathname}`));
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app"],
  });
  try {
    const own = `127.0.0.1:${rig.port}`;
    const health = await httpRequest(rig.port, { host: own, path: "/healthz" });
    assert.equal(health.status, 200);
    assert.equal((health.json() as { status: string }).status, "ok");
    const metrics = await httpRequest(rig.port, { host: own, path: "/metrics" });
    assert.equal(metrics.status, 200);
    assert.match(metrics.text(), /^# TYPE mport_http_requests_total counter$/m);
    // Routing is by Host only: the tunnel's name with the same path reaches the tunnel.
    const viaTunnel = await httpRequest(rig.port, { host: HOST, path: "/healthz" });
    assert.equal(viaTunnel.status, 200);
    assert.equal(viaTunnel.text(), "tunnel /healthz");
    assert.equal(local.requests.length, 1);
  } finally {
    await rig.close();
    await local.close();
  }
});

Deno.test("a request through a tunnel shows in /metrics by status class and in the access log", async () => {
  const local = startLocalHttp(() => new Response("hello"));
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app"],
  });
  try {
    const r = await httpRequest(rig.port, { host: HOST, path: "/path?x=1" });
    assert.equal(r.status, 200);
    const line = await rig.server.stderr.wait(
      /GET app\.t\.test\/path\?x=1 200 \d+ B \d+ ms 127\.0\.0\.1/,
    );
    assert.ok(line[0]);
    const text = await (await fetch(`${rig.server.httpUrl}/metrics`)).text();
    const series = text.split("\n").filter((l) => l.startsWith("mport_http_requests_total{"));
    assert.equal(series.length, 1, text);
    assert.match(series[0]!, /tunnel="app"/);
    assert.match(series[0]!, new RegExp(`host="${HOST.replaceAll(".", "\\.")}"`));
    assert.match(series[0]!, /class="2xx"\} 1$/);
  } finally {
    await rig.close();
    await local.close();
  }
});

Deno.test("HTTP requests are JSON lines in --log-file and their bytes count toward the user's usage", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-http-log-" });
  const body = "x".repeat(100_000);
  const local = startLocalHttp(() => new Response(body));
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app"],
    serverArgs: ["--log-file", `${dir}/mport.jsonl`, "--usage-flush", "1"],
  });
  try {
    for (let i = 0; i < 3; i++) {
      const r = await httpRequest(rig.port, { host: HOST, path: `/n${i}` });
      assert.equal(r.text(), body);
    }
    // The access log as JSON lines: one per request, with what an operator filters on.
    let lines: Record<string, unknown>[] = [];
    for (let i = 0; i < 100 && lines.length < 3; i++) {
      await new Promise((r) => setTimeout(r, 50));
      lines = (await Deno.readTextFile(`${dir}/mport.jsonl`)).split("\n").filter(Boolean)
        .map((l) => JSON.parse(l)).filter((l) => /^GET /.test(String(l.message ?? "")));
    }
    assert.equal(lines.length, 3, JSON.stringify(lines));
    const props = (lines[0]!.properties ?? lines[0]) as Record<string, unknown>;
    assert.equal(props.method, "GET");
    assert.equal(props.host, HOST);
    assert.equal(props.target, "/n0");
    assert.equal(props.status, 200);
    assert.equal(props.tunnel, "app");
    assert.ok(Number(props.bytesOut) > 100_000, JSON.stringify(props));
    // Usage: the tunnel's bytes reach the store (what quotas are counted from).
    let usage: { items: { tunnel: string; bytesOut: number }[] } = { items: [] };
    for (let i = 0; i < 100; i++) {
      const res = await fetch(`${rig.server.httpUrl}/api/v1/usage?granularity=hour`, {
        headers: { authorization: `Bearer ${TEST_TOKEN}` },
      });
      usage = await res.json();
      if (usage.items.some((u) => u.tunnel === "app" && u.bytesOut >= 300_000)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(
      usage.items.some((u) => u.tunnel === "app" && u.bytesOut >= 300_000),
      JSON.stringify(usage),
    );
  } finally {
    await rig.close();
    await local.close();
    await Deno.remove(dir, { recursive: true });
  }
});
