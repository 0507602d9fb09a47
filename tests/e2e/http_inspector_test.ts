// The request inspector through the real server and client processes: its JSON API, Replay,
// the body cap, the entry cap, the port it picks and the Host headers it answers.
import assert from "node:assert/strict";
import { DEFAULT_INSPECTOR_LIMITS } from "../../client/inspector/capture.ts";
import { HttpConn, httpRequest } from "../support/http_client.ts";
import { freeStablePort } from "../support/net.ts";
import { startHttpTunnel } from "./http_harness.ts";
import { listeningPorts, startInspectedTunnel } from "./http_inspector_rig.ts";

type Json = Record<string, unknown>;

/** The list, newest first. */
async function list(rig: { api: (m: string, p: string) => Promise<{ json: Json | null }> }) {
  return ((await rig.api("GET", "/api/requests")).json!.requests as Json[]);
}

Deno.test("the inspector lists requests through the tunnel with method, path, status and duration, and shows both bodies", async () => {
  const rig = await startInspectedTunnel();
  try {
    const host = rig.tunnel.grant.host;
    const get = await httpRequest(rig.tunnel.port, { host, path: "/hello?x=1" });
    assert.equal(get.status, 200);
    const post = await httpRequest(rig.tunnel.port, {
      host,
      method: "POST",
      path: "/api/orders",
      headers: [["content-type", "application/json"]],
      body: '{"item":"book","quantity":2}',
    });
    assert.equal(post.status, 201);

    const rows = await list(rig);
    assert.equal(rows.length, 2);
    const [newest, oldest] = rows as [Json, Json];
    assert.equal(newest.method, "POST");
    assert.equal(newest.target, "/api/orders");
    assert.equal(newest.status, 201);
    assert.equal(newest.tunnel, "app");
    assert.equal(newest.replayOf, null);
    assert.equal(typeof newest.durationMs, "number");
    assert.ok((newest.durationMs as number) >= 0);
    assert.equal(oldest.method, "GET");
    assert.equal(oldest.target, "/hello?x=1");
    assert.equal(oldest.status, 200);
    assert.match(String(oldest.remote), /^127\.0\.0\.1:\d+$/);

    const { status, json: d } = await rig.api("GET", `/api/requests/${newest.id}`);
    assert.equal(status, 200);
    const request = d!.request as { headers: [string, string][]; body: Json };
    const response = d!.response as { status: number; body: Json };
    assert.equal(request.body.kind, "json");
    assert.equal(request.body.text, JSON.stringify({ item: "book", quantity: 2 }, null, 2));
    assert.ok(request.headers.some(([k, v]) => k === "host" && v === host));
    assert.equal(response.status, 201);
    assert.deepEqual(JSON.parse(response.body.text as string), { ok: true, seen: 2, bytes: 28 });

    const missing = await rig.api("GET", "/api/requests/0000000000");
    assert.equal(missing.status, 404);
  } finally {
    await rig.close();
  }
});

Deno.test("Replay sends the request again, and Replay with edits sends the edited request; both are listed with replayOf", async () => {
  const rig = await startInspectedTunnel();
  try {
    const host = rig.tunnel.grant.host;
    const body = '{"item":"book","quantity":2}';
    await httpRequest(rig.tunnel.port, {
      host,
      method: "POST",
      path: "/api/orders?notify=1",
      headers: [["content-type", "application/json"], ["x-trace", "t1"]],
      body,
    });
    const original = (await list(rig))[0]!;

    const same = await rig.api("POST", `/api/requests/${original.id}/replay`);
    assert.equal(same.status, 201);
    assert.equal(rig.received.length, 2);
    const [first, again] = rig.received as [
      (typeof rig.received)[0],
      (typeof rig.received)[0],
    ];
    assert.deepEqual(
      [again.method, again.path, again.body, again.headers.get("x-trace")],
      [first.method, first.path, first.body, "t1"],
    );

    const detail = (await rig.api("GET", `/api/requests/${original.id}`)).json!;
    const headers = (detail.request as { headers: [string, string][] }).headers
      .filter(([k]) => k !== "content-length" && k !== "x-trace");
    const edited = await rig.api("POST", `/api/requests/${original.id}/replay`, {
      method: "PUT",
      target: "/api/orders/7?dry=1",
      headers: [...headers, ["x-edited", "yes"]],
      body: '{"item":"pen"}',
    });
    assert.equal(edited.status, 201);
    const got = rig.received[2]!;
    assert.equal(got.method, "PUT");
    assert.equal(got.path, "/api/orders/7?dry=1");
    assert.equal(got.body, '{"item":"pen"}');
    assert.equal(got.headers.get("x-edited"), "yes");
    assert.equal(got.headers.get("x-trace"), null);
    assert.equal(got.headers.get("content-length"), "14");

    const rows = await list(rig);
    assert.deepEqual(rows.map((r) => [r.method, r.target, r.replayOf, r.remote]), [
      ["PUT", "/api/orders/7?dry=1", original.id, "replay"],
      ["POST", "/api/orders?notify=1", original.id, "replay"],
      ["POST", "/api/orders?notify=1", null, original.remote],
    ]);
    assert.equal(rows[0]!.id, edited.json!.id);
    assert.equal(rows[1]!.id, same.json!.id);
    assert.equal(rows[0]!.status, 200);

    // A replay the tunnel's rules refuse never reaches the local service, and says why.
    const misdirected = await rig.api("POST", `/api/requests/${original.id}/replay`, {
      headers: [["host", "other.t.test"]],
    });
    assert.equal(misdirected.status, 502);
    assert.match(
      (misdirected.json!.error as { message: string }).message,
      /did not pass the replayed request to the local service \(it answered 421 /,
    );
    const bad = await rig.api("POST", `/api/requests/${original.id}/replay`, { method: "G T" });
    assert.equal(bad.status, 400);
    assert.equal(rig.received.length, 3);
  } finally {
    await rig.close();
  }
});

Deno.test("DELETE /api/requests clears the inspector's list", async () => {
  const rig = await startInspectedTunnel();
  try {
    for (let i = 0; i < 3; i++) {
      await httpRequest(rig.tunnel.port, { host: rig.tunnel.grant.host, path: `/p/${i}` });
    }
    assert.equal((await list(rig)).length, 3);
    const id = (await list(rig))[0]!.id;
    const cleared = await rig.api("DELETE", "/api/requests");
    assert.equal(cleared.status, 204);
    assert.deepEqual(await list(rig), []);
    assert.equal((await rig.api("GET", `/api/requests/${id}`)).status, 404);
    await httpRequest(rig.tunnel.port, { host: rig.tunnel.grant.host, path: "/after" });
    assert.deepEqual((await list(rig)).map((r) => r.target), ["/after"]);
  } finally {
    await rig.close();
  }
});

Deno.test("a request body over the inspector's per-body cap arrives whole, is shown truncated, and replays only with a body edit", async () => {
  const rig = await startInspectedTunnel();
  try {
    const cap = DEFAULT_INSPECTOR_LIMITS.maxBodyBytes;
    const big = "x".repeat(cap + 44 * 1024);
    const res = await httpRequest(rig.tunnel.port, {
      host: rig.tunnel.grant.host,
      method: "POST",
      path: "/upload",
      headers: [["content-type", "text/plain"]],
      body: big,
    });
    assert.equal(res.status, 201);
    assert.equal(rig.received[0]!.body, big);

    const row = (await list(rig))[0]!;
    assert.equal(row.requestBytes, big.length);
    const d = (await rig.api("GET", `/api/requests/${row.id}`)).json!;
    const body = (d.request as { body: Json }).body;
    assert.deepEqual([body.bytes, body.kept, body.truncated], [big.length, cap, true]);

    const refused = await rig.api("POST", `/api/requests/${row.id}/replay`);
    assert.equal(refused.status, 502);
    const error = refused.json!.error as { code: string; message: string };
    assert.equal(error.code, "replay_failed");
    assert.match(error.message, new RegExp(`kept only up to ${cap} of ${big.length} bytes`));
    assert.match(error.message, /cannot be sent again/);
    assert.equal(rig.received.length, 1);

    const withBody = await rig.api("POST", `/api/requests/${row.id}/replay`, { body: "short" });
    assert.equal(withBody.status, 201);
    assert.equal(rig.received.length, 2);
    assert.deepEqual([rig.received[1]!.method, rig.received[1]!.path, rig.received[1]!.body], [
      "POST",
      "/upload",
      "short",
    ]);
  } finally {
    await rig.close();
  }
});

Deno.test("the inspector keeps at most maxEntries (200) exchanges: 300 requests leave the newest 200", async () => {
  const rig = await startInspectedTunnel();
  const conn = await HttpConn.open(rig.tunnel.port);
  try {
    for (let i = 0; i < 300; i++) {
      const r = await conn.request({ host: rig.tunnel.grant.host, path: `/n/${i}` });
      assert.equal(r.status, 200);
    }
    assert.equal(rig.received.length, 300);
    const rows = await list(rig);
    assert.equal(rows.length, DEFAULT_INSPECTOR_LIMITS.maxEntries);
    assert.equal(rows[0]!.target, "/n/299");
    assert.equal(rows.at(-1)!.target, "/n/100");
    const status = (await rig.api("GET", "/api/status")).json!;
    assert.equal((status.capture as { entries: number }).entries, 200);
  } finally {
    conn.close();
    await rig.close();
  }
});

Deno.test("with its --inspect port taken, the client listens on the next free port and prints it", async () => {
  const port = freeStablePort();
  const taken = Deno.listen({ hostname: "127.0.0.1", port });
  try {
    const rig = await startInspectedTunnel({ inspectPort: port });
    try {
      assert.ok(rig.inspectorPort > port && rig.inspectorPort <= port + 10, rig.inspector);
      assert.equal(rig.inspector, `http://127.0.0.1:${rig.inspectorPort}`);
      const status = await rig.api("GET", "/api/status");
      assert.equal(status.status, 200);
      const tunnels = status.json!.tunnels as { name: string; local: string }[];
      assert.deepEqual(tunnels.map((t) => t.name), ["app"]);
      assert.deepEqual(listeningPorts(rig.tunnel.client.child.pid), [rig.inspectorPort]);
      assert.ok(!rig.tunnel.client.stderr.lines.some((l) => l.includes("inspector")));
    } finally {
      await rig.close();
    }
  } finally {
    taken.close();
  }
});

Deno.test("with --no-inspect the client starts no inspector and prints no inspector line", async () => {
  const local = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () => new Response("ok"),
  );
  const rig = await startHttpTunnel({
    local: String(local.addr.port),
    clientArgs: ["--subdomain", "app", "--no-inspect"],
  });
  try {
    // A request through the tunnel: everything is up, and nothing is captured or served.
    const r = await httpRequest(rig.port, { host: rig.grant.host, path: "/" });
    assert.equal(r.status, 200);
    assert.deepEqual(listeningPorts(rig.client.child.pid), []);
    const lines = [...rig.client.stdout.lines, ...rig.client.stderr.lines];
    assert.ok(!lines.some((l) => /inspector/i.test(l)), rig.client.output());
  } finally {
    await rig.close();
    await local.shutdown();
  }
});

Deno.test("the inspector answers only requests whose Host names a loopback address (403 otherwise)", async () => {
  const rig = await startInspectedTunnel();
  try {
    const port = rig.inspectorPort;
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`]) {
      const r = await httpRequest(port, { host, path: "/api/requests" });
      assert.equal(r.status, 200, host);
    }
    for (
      const host of [`evil.example:${port}`, `app.t.test`, `127.0.0.1`, `127.0.0.1:${port + 1}`]
    ) {
      const r = await httpRequest(port, { host, path: "/" });
      assert.equal(r.status, 403, host);
      const error = (r.json() as { error: { code: string; message: string } }).error;
      assert.equal(error.code, "bad_host");
      assert.match(error.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
    }
  } finally {
    await rig.close();
  }
});
