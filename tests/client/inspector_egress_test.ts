// Tests for the inspector as the status page of `mport socks` / `mport vpn`: the status API, the
// guarded Disconnect, the routes a client without captured requests answers, and the launcher.
import assert from "node:assert/strict";
import type { EgressStatus } from "../../client/egress/egress_types.ts";
import { Capture } from "../../client/inspector/capture.ts";
import { launchInspector } from "../../client/inspector/launch.ts";
import { startInspector } from "../../client/inspector/server.ts";
import { freeRange } from "../support/net.ts";

type Json = Record<string, unknown>;

async function json(res: Response): Promise<Json> {
  return await res.json() as Json;
}

/** A SOCKS client's status that moves on each time it is read, as the real counters do. */
function socksStatus(): { read: () => EgressStatus; reads: () => number } {
  let reads = 0;
  return {
    read: () => {
      reads++;
      return {
        kind: "socks",
        server: "wss://tunnel.example.com",
        connected: true,
        since: 1_700_000_000_000,
        problem: null,
        bytesUp: 1000 * reads,
        bytesDown: 5000 * reads,
        listen: "127.0.0.1:1080",
        connections: { active: 1, opened: reads, refused: 0 },
      };
    },
    reads: () => reads,
  };
}

/** A status-only inspector (no capture) on a free port; `disconnects` counts Disconnect calls. */
async function withStatusPage(
  egress: () => EgressStatus | null,
  fn: (f: { base: string; port: number; disconnects: () => number }) => Promise<void>,
): Promise<void> {
  let disconnects = 0;
  const inspector = await startInspector({
    hostname: "127.0.0.1",
    port: 0,
    capture: null,
    egress,
    disconnect: () => disconnects++,
  });
  const port = inspector.addr.port;
  try {
    await fn({ base: `http://127.0.0.1:${port}`, port, disconnects: () => disconnects });
  } finally {
    await inspector.close();
  }
}

Deno.test("GET /api/egress gives the client's status as it is at each request", async () => {
  const status = socksStatus();
  await withStatusPage(status.read, async ({ base }) => {
    const first = await fetch(`${base}/api/egress`);
    assert.equal(first.status, 200);
    assert.equal(first.headers.get("cache-control"), "no-store");
    assert.deepEqual(await json(first), {
      kind: "socks",
      server: "wss://tunnel.example.com",
      connected: true,
      since: 1_700_000_000_000,
      problem: null,
      bytesUp: 1000,
      bytesDown: 5000,
      listen: "127.0.0.1:1080",
      connections: { active: 1, opened: 1, refused: 0 },
    });
    const second = await json(await fetch(`${base}/api/egress`));
    assert.deepEqual([second.bytesUp, second.bytesDown], [2000, 10000]);
    assert.equal(status.reads(), 2);
  });
});

Deno.test("a VPN client's status passes through whole, reconnecting with the server's problem text", async () => {
  const vpn: EgressStatus = {
    kind: "vpn",
    server: "wss://vpn.example.com",
    connected: false,
    since: null,
    problem: "connection lost <script>alert(1)</script>",
    bytesUp: 10,
    bytesDown: 20,
    virtualIp: "10.8.0.2/24",
    device: "mport0",
    routes: ["0.0.0.0/0"],
    dns: ["10.8.0.1"],
    killSwitch: true,
    packetsUp: 3,
    packetsDown: 4,
    dropped: 1,
  };
  await withStatusPage(() => vpn, async ({ base }) => {
    assert.deepEqual(await json(await fetch(`${base}/api/egress`)), { ...vpn });
  });
});

Deno.test("GET /api/status says there is no capture but a status and a Disconnect", async () => {
  await withStatusPage(socksStatus().read, async ({ base }) => {
    assert.deepEqual(await json(await fetch(`${base}/api/status`)), {
      tunnels: [],
      capture: null,
      egress: true,
      disconnect: true,
    });
  });
});

Deno.test("without a capture the request routes answer 404 and the page is still served", async () => {
  await withStatusPage(socksStatus().read, async ({ base }) => {
    for (
      const [method, path] of [
        ["GET", "/api/requests"],
        ["GET", "/api/requests/1"],
        ["DELETE", "/api/requests"],
        ["POST", "/api/requests/1/replay"],
      ] as const
    ) {
      const res = await fetch(`${base}${path}`, {
        method,
        headers: { "x-mport-inspector": "1" },
      });
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.deepEqual(await json(res), {
        error: {
          code: "no_capture",
          message: "this client has no HTTP tunnels, so it captures no requests",
        },
      });
    }
    const page = await fetch(`${base}/`);
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.match(html, /id="egress"/);
    assert.match(html, /id="disconnect"/);
  });
});

Deno.test("GET /api/egress answers 404 when the client has no status (or not at the moment)", async () => {
  let status: EgressStatus | null = null;
  await withStatusPage(() => status, async ({ base }) => {
    const res = await fetch(`${base}/api/egress`);
    assert.equal(res.status, 404);
    assert.deepEqual(await json(res), {
      error: { code: "no_egress", message: "this client runs no SOCKS proxy or VPN" },
    });
    status = socksStatus().read();
    assert.equal((await fetch(`${base}/api/egress`).then(json)).kind, "socks");
  });
  // An HTTP client's inspector has neither.
  const inspector = await startInspector({
    hostname: "127.0.0.1",
    port: 0,
    capture: new Capture(),
  });
  try {
    const base = `http://127.0.0.1:${inspector.addr.port}`;
    const res = await fetch(`${base}/api/egress`);
    assert.equal(res.status, 404);
    await res.body?.cancel();
    const stop = await fetch(`${base}/api/disconnect`, {
      method: "POST",
      headers: { "x-mport-inspector": "1" },
    });
    assert.equal(stop.status, 404);
    assert.deepEqual(await json(stop), {
      error: { code: "no_disconnect", message: "this client cannot be stopped from its page" },
    });
    const s = await json(await fetch(`${base}/api/status`));
    assert.deepEqual([s.egress, s.disconnect], [false, false]);
  } finally {
    await inspector.close();
  }
});

Deno.test("POST /api/disconnect from a foreign page is refused (CSRF, origin, host); the page's own request stops the client", async () => {
  await withStatusPage(socksStatus().read, async ({ base, port, disconnects }) => {
    // What a foreign page can send without a CORS preflight: a form or text/plain POST.
    for (
      const headers of [
        {} as Record<string, string>,
        { "content-type": "application/x-www-form-urlencoded" },
        { "content-type": "text/plain" },
        { "content-type": "multipart/form-data; boundary=x" },
      ]
    ) {
      const res = await fetch(`${base}/api/disconnect`, { method: "POST", headers, body: "" });
      assert.equal(res.status, 403, JSON.stringify(headers));
      assert.deepEqual(await json(res), {
        error: {
          code: "csrf",
          message: 'changes need "content-type: application/json" or an "x-mport-inspector" header',
        },
      });
    }
    const foreign = await fetch(`${base}/api/disconnect`, {
      method: "POST",
      headers: { "x-mport-inspector": "1", origin: "https://evil.example.com" },
    });
    assert.equal(foreign.status, 403);
    assert.deepEqual(await json(foreign), {
      error: {
        code: "bad_origin",
        message: "requests from https://evil.example.com are not allowed",
      },
    });
    // A GET cannot do it either (an <img> or a link).
    const get = await fetch(`${base}/api/disconnect`);
    assert.equal(get.status, 404);
    await get.body?.cancel();
    // DNS rebinding: a foreign name resolving to 127.0.0.1.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(
      new TextEncoder().encode(
        "POST /api/disconnect HTTP/1.1\r\nHost: evil.example.com\r\nx-mport-inspector: 1\r\n" +
          "content-length: 0\r\nconnection: close\r\n\r\n",
      ),
    );
    const answer = new Uint8Array(4096);
    const n = await conn.read(answer);
    conn.close();
    assert.match(new TextDecoder().decode(answer.subarray(0, n ?? 0)), /^HTTP\/1\.1 403 /);
    assert.equal(disconnects(), 0);

    const ok = await fetch(`${base}/api/disconnect`, {
      method: "POST",
      headers: { "x-mport-inspector": "1", origin: `http://127.0.0.1:${port}` },
    });
    assert.equal(ok.status, 202);
    assert.deepEqual(await json(ok), { disconnecting: true });
    assert.equal(disconnects(), 1);
    // What the page itself sends: a JSON content type.
    const fromPage = await fetch(`${base}/api/disconnect`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "",
    });
    assert.equal(fromPage.status, 202);
    await fromPage.body?.cancel();
    assert.equal(disconnects(), 2);
  });
});

Deno.test("launchInspector reports the page's URL, starts nothing when off, and reports a taken port", async () => {
  const urls: string[] = [];
  const problems: string[] = [];
  const reports = {
    inspector: (u: string) => urls.push(u),
    problem: (m: string) => problems.push(m),
  };
  const opts = { capture: null, egress: socksStatus().read, disconnect: () => {} };

  const off = launchInspector(null, opts, reports);
  await off.started;
  assert.equal(off.addr(), null);
  await off.close();

  const on = launchInspector({ host: "127.0.0.1", port: 0 }, opts, reports);
  await on.started;
  const addr = on.addr()!;
  assert.deepEqual(urls, [`http://127.0.0.1:${addr.port}`]);
  assert.equal((await fetch(`${urls[0]}/api/egress`).then(json)).kind, "socks");
  await on.close();

  const range = freeRange(11);
  const port = range.low;
  const held = Array.from(
    { length: 11 },
    (_, i) => Deno.listen({ hostname: "127.0.0.1", port: port + i }),
  );
  try {
    const taken = launchInspector({ host: "127.0.0.1", port }, opts, reports);
    await taken.started;
    assert.equal(taken.addr(), null);
    assert.equal(problems.length, 1);
    assert.match(problems[0]!, /^status page not started: cannot listen on 127\.0\.0\.1:\d+–\d+/);
    await taken.close();
  } finally {
    for (const l of held) l.close();
  }
});
