// Tests for the inspector's web server: every API route, filters, Host and CSRF guards, live
// updates, the page's assets and the port fallback.
import assert from "node:assert/strict";
import { Capture, type CapturedExchange } from "../../client/inspector/capture.ts";
import { type ReplayEdits, startInspector } from "../../client/inspector/server.ts";
import { freeRange } from "../support/net.ts";

const enc = new TextEncoder();

interface Fixture {
  capture: Capture;
  base: string;
  port: number;
  replays: { entry: CapturedExchange; edits: ReplayEdits | undefined }[];
  close(): Promise<void>;
}

/** An inspector on a free port whose replay callback records its calls (and fails for /fail). */
async function withInspector(fn: (f: Fixture) => Promise<void>): Promise<void> {
  let now = 1_700_000_000_000;
  const capture = new Capture({ maxBodyBytes: 64 }, () => now++);
  const replays: Fixture["replays"] = [];
  const inspector = await startInspector({
    hostname: "127.0.0.1",
    port: 0,
    capture,
    replay: (entry, edits) => {
      replays.push({ entry, edits });
      if (entry.request.target === "/fail") {
        return Promise.reject(new Error("local service refused the connection"));
      }
      const h = capture.begin({
        tunnel: entry.tunnel,
        remote: "replay",
        local: entry.local,
        request: { ...entry.request, method: edits?.method ?? entry.request.method },
        replayOf: entry.id,
      });
      h.end();
      return Promise.resolve(capture.list()[0]!.id);
    },
    status: () => ({
      tunnels: [{ name: "web", url: "https://web.example.com", local: "http://127.0.0.1:3000" }],
    }),
  });
  const port = inspector.addr.port;
  try {
    await fn({ capture, base: `http://127.0.0.1:${port}`, port, replays, close: inspector.close });
  } finally {
    await inspector.close();
  }
}

/** Feeds one exchange as the engine would. */
function feed(
  capture: Capture,
  o: {
    method?: string;
    target?: string;
    tunnel?: string;
    reqType?: string;
    reqBody?: Uint8Array;
    status?: number;
    resType?: string;
    resBody?: Uint8Array;
    error?: string;
    open?: boolean;
  } = {},
): string {
  const h = capture.begin({
    tunnel: o.tunnel ?? "web",
    remote: "203.0.113.7:5123",
    local: "http://127.0.0.1:3000",
    request: {
      method: o.method ?? "GET",
      target: o.target ?? "/",
      version: "HTTP/1.1",
      headers: [
        ["Host", "web.example.com"],
        ...(o.reqType ? [["Content-Type", o.reqType] as const] : []),
      ],
    },
  });
  if (o.reqBody) h.requestBody(o.reqBody);
  if (o.status !== undefined) {
    h.response({
      status: o.status,
      statusText: o.status === 200 ? "OK" : "Other",
      headers: o.resType ? [["Content-Type", o.resType]] : [],
    });
    if (o.resBody) h.responseBody(o.resBody);
  }
  if (!o.open) h.end(o.error);
  return capture.list()[0]!.id;
}

const JSON_POST = { "content-type": "application/json" };

async function json(res: Response): Promise<unknown> {
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  return await res.json();
}

/** Sends a raw HTTP/1.1 request (fetch cannot set Host) and returns the status and body. */
async function raw(port: number, head: string): Promise<{ status: number; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(enc.encode(`${head}\r\nConnection: close\r\n\r\n`));
    const text = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
    const [headPart = "", body = ""] = text.split("\r\n\r\n");
    return { status: Number(headPart.split(" ")[1]), body };
  } catch (e) {
    conn.close();
    throw e;
  }
}

Deno.test("GET /api/requests lists summaries newest first, without bodies", async () => {
  await withInspector(async ({ capture, base }) => {
    const a = feed(capture, {
      target: "/a",
      status: 200,
      resType: "text/plain",
      resBody: enc.encode("hi"),
    });
    const b = feed(capture, {
      method: "POST",
      target: "/b",
      error: "local service refused the connection",
    });
    const res = await fetch(`${base}/api/requests`);
    assert.equal(res.status, 200);
    assert.deepEqual(await json(res), {
      requests: [
        {
          id: b,
          seq: 2,
          tunnel: "web",
          remote: "203.0.113.7:5123",
          local: "http://127.0.0.1:3000",
          startedAt: 1_700_000_000_002,
          durationMs: 1,
          method: "POST",
          target: "/b",
          status: null,
          statusText: null,
          error: "local service refused the connection",
          replayOf: null,
          requestBytes: 0,
          responseBytes: null,
          contentType: null,
        },
        {
          id: a,
          seq: 1,
          tunnel: "web",
          remote: "203.0.113.7:5123",
          local: "http://127.0.0.1:3000",
          startedAt: 1_700_000_000_000,
          durationMs: 1,
          method: "GET",
          target: "/a",
          status: 200,
          statusText: "OK",
          error: null,
          replayOf: null,
          requestBytes: 0,
          responseBytes: 2,
          contentType: "text/plain",
        },
      ],
    });
  });
});

Deno.test("GET /api/requests filters by tunnel, method, status (code, class, error, pending) and text", async () => {
  await withInspector(async ({ capture, base }) => {
    feed(capture, { target: "/ok", status: 200 });
    feed(capture, { method: "POST", target: "/missing", status: 404, tunnel: "api" });
    feed(capture, { target: "/boom", status: 503 });
    feed(capture, {
      method: "DELETE",
      target: "/down",
      error: "local service refused the connection",
    });
    feed(capture, { target: "/slow", open: true });
    const targets = async (query: string) => {
      const body = await json(await fetch(`${base}/api/requests${query}`)) as {
        requests: { target: string }[];
      };
      return body.requests.map((r) => r.target);
    };
    assert.deepEqual(await targets("?tunnel=api"), ["/missing"]);
    assert.deepEqual(await targets("?method=post"), ["/missing"]);
    assert.deepEqual(await targets("?status=404"), ["/missing"]);
    assert.deepEqual(await targets("?status=5xx"), ["/boom"]);
    assert.deepEqual(await targets("?status=error"), ["/down"]);
    assert.deepEqual(await targets("?status=pending"), ["/slow"]);
    assert.deepEqual(await targets("?q=BOO"), ["/boom"]);
    assert.deepEqual(await targets("?q=refused"), ["/down"]);
    assert.deepEqual(await targets("?q=web.example.com&method=GET&status=2xx"), ["/ok"]);
    assert.deepEqual(await targets("?status="), ["/slow", "/down", "/boom", "/missing", "/ok"]);
    const bad = await fetch(`${base}/api/requests?status=teapot`);
    assert.equal(bad.status, 400);
    assert.deepEqual(await json(bad), {
      error: {
        code: "bad_filter",
        message:
          'invalid status filter "teapot": use a code (404), a class (4xx), error or pending',
      },
    });
  });
});

Deno.test("GET /api/requests/:id gives headers and bodies: JSON pretty-printed, forms as pairs, binary as hex", async () => {
  await withInspector(async ({ capture, base }) => {
    const id = feed(capture, {
      method: "POST",
      target: "/login",
      reqType: "application/x-www-form-urlencoded",
      reqBody: enc.encode("user=ann&note=a+b%21"),
      status: 200,
      resType: "application/json; charset=utf-8",
      resBody: enc.encode('{"ok":true,"n":[1,2]}'),
    });
    const res = await fetch(`${base}/api/requests/${id}`);
    assert.equal(res.status, 200);
    assert.deepEqual(await json(res), {
      id,
      seq: 1,
      tunnel: "web",
      remote: "203.0.113.7:5123",
      local: "http://127.0.0.1:3000",
      startedAt: 1_700_000_000_000,
      durationMs: 1,
      method: "POST",
      target: "/login",
      status: 200,
      statusText: "OK",
      error: null,
      replayOf: null,
      requestBytes: 20,
      responseBytes: 21,
      contentType: "application/json; charset=utf-8",
      request: {
        method: "POST",
        target: "/login",
        version: "HTTP/1.1",
        headers: [["Host", "web.example.com"], [
          "Content-Type",
          "application/x-www-form-urlencoded",
        ]],
        body: {
          bytes: 20,
          kept: 20,
          truncated: false,
          contentType: "application/x-www-form-urlencoded",
          kind: "form",
          text: "user=ann&note=a+b%21",
          form: [["user", "ann"], ["note", "a b!"]],
        },
      },
      response: {
        status: 200,
        statusText: "OK",
        headers: [["Content-Type", "application/json; charset=utf-8"]],
        body: {
          bytes: 21,
          kept: 21,
          truncated: false,
          contentType: "application/json; charset=utf-8",
          kind: "json",
          text: '{\n  "ok": true,\n  "n": [\n    1,\n    2\n  ]\n}',
        },
      },
    });

    const bin = feed(capture, {
      status: 200,
      resType: "image/png",
      resBody: new Uint8Array([
        0x89,
        0x50,
        0x4e,
        0x47,
        0x0d,
        0x0a,
        0x1a,
        0x0a,
        0,
        0,
        0,
        0x0d,
        0x49,
        0x48,
        0x44,
        0x52,
        0xff,
      ]),
    });
    const d = await json(await fetch(`${base}/api/requests/${bin}`)) as {
      request: { body: unknown };
      response: { body: unknown };
    };
    assert.deepEqual(d.request.body, {
      bytes: 0,
      kept: 0,
      truncated: false,
      contentType: null,
      kind: "empty",
    });
    assert.deepEqual(d.response.body, {
      bytes: 17,
      kept: 17,
      truncated: false,
      contentType: "image/png",
      kind: "binary",
      hex: "00000000  89 50 4e 47 0d 0a 1a 0a  00 00 00 0d 49 48 44 52  |.PNG........IHDR|\n" +
        "00000010  ff                                                |.|",
      hexBytes: 17,
    });
  });
});

Deno.test("a truncated JSON body is shown as text with the truncation noted", async () => {
  await withInspector(async ({ capture, base }) => {
    const big = JSON.stringify({ items: Array.from({ length: 30 }, (_, i) => i) }); // > 64 bytes
    const id = feed(capture, {
      method: "PUT",
      reqType: "application/json",
      reqBody: enc.encode(big),
    });
    const d = await json(await fetch(`${base}/api/requests/${id}`)) as {
      request: { body: unknown };
    };
    assert.deepEqual(d.request.body, {
      bytes: big.length,
      kept: 64,
      truncated: true,
      contentType: "application/json",
      kind: "text",
      text: big.slice(0, 64),
    });
  });
});

Deno.test("unknown ids and paths get 404 with an error object", async () => {
  await withInspector(async ({ base }) => {
    const res = await fetch(`${base}/api/requests/nope`);
    assert.equal(res.status, 404);
    assert.deepEqual(await json(res), {
      error: { code: "unknown_request", message: "no captured request nope (cleared or evicted?)" },
    });
    const replay = await fetch(`${base}/api/requests/nope/replay`, {
      method: "POST",
      headers: JSON_POST,
    });
    assert.equal(replay.status, 404);
    assert.equal(
      ((await json(replay)) as { error: { code: string } }).error.code,
      "unknown_request",
    );
    const other = await fetch(`${base}/api/nothing`);
    assert.equal(other.status, 404);
    assert.deepEqual(await json(other), {
      error: { code: "not_found", message: "no such path: /api/nothing" },
    });
  });
});

Deno.test("POST /api/requests/:id/replay calls the replay callback with the edits and answers 201 {id}", async () => {
  await withInspector(async ({ capture, base, replays }) => {
    const id = feed(capture, { method: "POST", target: "/items", status: 200 });
    const plain = await fetch(`${base}/api/requests/${id}/replay`, {
      method: "POST",
      headers: JSON_POST,
    });
    assert.equal(plain.status, 201);
    const first = await json(plain) as { id: string };
    assert.equal(replays.length, 1);
    assert.equal(replays[0]!.entry.id, id);
    assert.equal(replays[0]!.edits, undefined);
    assert.equal(capture.get(first.id)?.replayOf, id);

    const edits = {
      method: "PUT",
      target: "/items/7?dry=1",
      headers: [["Content-Type", "application/json"], ["X-Trace", "abc"]],
      body: '{"name":"edited"}',
    };
    const edited = await fetch(`${base}/api/requests/${id}/replay`, {
      method: "POST",
      headers: JSON_POST,
      body: JSON.stringify(edits),
    });
    assert.equal(edited.status, 201);
    assert.deepEqual(replays[1]!.edits, edits);
    assert.equal(capture.get(((await json(edited)) as { id: string }).id)?.request.method, "PUT");
  });
});

Deno.test("invalid replay edits are refused with 400 before the callback runs", async () => {
  await withInspector(async ({ capture, base, replays }) => {
    const id = feed(capture);
    const cases: [unknown, string][] = [
      [[1], "replay edits must be a JSON object"],
      [{ method: "GE T" }, "invalid method"],
      [{ target: "/a b" }, "invalid target: use a path like /api/items?x=1, without spaces"],
      [{ headers: [["X-A", "1\r\nX-B: 2"]] }, "invalid value of header X-A"],
      [{ headers: [["Bad Name", "1"]] }, 'invalid header name "Bad Name"'],
      [{ headers: [["only-name"]] }, "headers must be a list of [name, value] pairs"],
      [{ body: 7 }, "body must be a string"],
      [{ verb: "GET" }, 'unknown replay edit "verb": use method, target, headers or body'],
    ];
    for (const [edits, message] of cases) {
      const res = await fetch(`${base}/api/requests/${id}/replay`, {
        method: "POST",
        headers: JSON_POST,
        body: JSON.stringify(edits),
      });
      assert.equal(res.status, 400, message);
      assert.deepEqual(await json(res), { error: { code: "bad_edits", message } });
    }
    assert.equal(replays.length, 0);
  });
});

Deno.test("a failing replay answers 502 with the callback's message", async () => {
  await withInspector(async ({ capture, base }) => {
    const id = feed(capture, { target: "/fail" });
    const res = await fetch(`${base}/api/requests/${id}/replay`, {
      method: "POST",
      headers: JSON_POST,
    });
    assert.equal(res.status, 502);
    assert.deepEqual(await json(res), {
      error: { code: "replay_failed", message: "local service refused the connection" },
    });
  });
});

Deno.test("DELETE /api/requests clears the store and answers 204", async () => {
  await withInspector(async ({ capture, base }) => {
    feed(capture);
    feed(capture);
    const res = await fetch(`${base}/api/requests`, {
      method: "DELETE",
      headers: { "x-mport-inspector": "1" },
    });
    assert.equal(res.status, 204);
    assert.equal(await res.text(), "");
    assert.deepEqual(capture.list(), []);
  });
});

Deno.test("GET /api/status gives the tunnels and the store's usage and limits", async () => {
  await withInspector(async ({ capture, base }) => {
    feed(capture, { method: "POST", reqBody: enc.encode("12345") });
    assert.deepEqual(await json(await fetch(`${base}/api/status`)), {
      tunnels: [{ name: "web", url: "https://web.example.com", local: "http://127.0.0.1:3000" }],
      capture: {
        entries: 1,
        bytes: 5,
        limits: { maxEntries: 200, maxBytes: 32 * 1024 * 1024, maxBodyBytes: 64 },
      },
      egress: false,
      disconnect: false,
    });
  });
});

Deno.test("requests for another Host name (DNS rebinding) are refused with 403", async () => {
  await withInspector(async ({ port }) => {
    for (const host of [`evil.example.com:${port}`, "127.0.0.1", `127.0.0.1:${port + 1}`]) {
      const res = await raw(port, `GET /api/requests HTTP/1.1\r\nHost: ${host}`);
      assert.equal(res.status, 403, host);
      assert.deepEqual(JSON.parse(res.body), {
        error: {
          code: "bad_host",
          message: `the inspector answers only requests for 127.0.0.1:${port} or localhost:${port}`,
        },
      });
    }
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`]) {
      assert.equal(
        (await raw(port, `GET /api/requests HTTP/1.1\r\nHost: ${host}`)).status,
        200,
        host,
      );
    }
  });
});

Deno.test("POST and DELETE without a JSON content type or the custom header are refused (CSRF)", async () => {
  await withInspector(async ({ capture, base, port, replays }) => {
    const id = feed(capture);
    // What a foreign page can send without a CORS preflight: a form or text/plain POST.
    for (
      const type of [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
      ]
    ) {
      const res = await fetch(`${base}/api/requests/${id}/replay`, {
        method: "POST",
        headers: { "content-type": type },
        body: "{}",
      });
      assert.equal(res.status, 403);
      assert.deepEqual(await json(res), {
        error: {
          code: "csrf",
          message: 'changes need "content-type: application/json" or an "x-mport-inspector" header',
        },
      });
    }
    const del = await fetch(`${base}/api/requests`, { method: "DELETE" });
    assert.equal(del.status, 403);
    await del.body?.cancel();
    const foreign = await fetch(`${base}/api/requests`, {
      method: "DELETE",
      headers: { ...JSON_POST, origin: "https://evil.example.com" },
    });
    assert.equal(foreign.status, 403);
    assert.deepEqual(await json(foreign), {
      error: {
        code: "bad_origin",
        message: "requests from https://evil.example.com are not allowed",
      },
    });
    const same = await fetch(`${base}/api/requests`, {
      method: "DELETE",
      headers: { ...JSON_POST, origin: `http://localhost:${port}` },
    });
    assert.equal(same.status, 204);
    assert.equal(replays.length, 0);
  });
});

Deno.test("the page, script and style are served with a strict Content-Security-Policy", async () => {
  await withInspector(async ({ base }) => {
    const cases: [string, RegExp][] = [
      ["/", /^text\/html/],
      ["/app.js", /^text\/javascript/],
      ["/status.js", /^text\/javascript/],
      ["/app.css", /^text\/css/],
      ["/favicon.svg", /^image\/svg\+xml/],
    ];
    for (const [path, type] of cases) {
      const res = await fetch(`${base}${path}`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", type);
      assert.match(res.headers.get("content-security-policy") ?? "", /^default-src 'self';/);
      assert.equal(res.headers.get("x-content-type-options"), "nosniff");
      const text = await res.text();
      if (path === "/") {
        assert.match(text, /<script src="\/app.js" defer><\/script>/);
        assert.match(text, /<script src="\/status.js" defer><\/script>/);
        assert.doesNotMatch(
          text,
          /<script>|<style>|https?:\/\//,
          "no inline code, no external resources",
        );
        assert.match(text, /<link rel="icon" href="\/favicon.svg"/);
      }
    }
    const refused = await fetch(`${base}/api/requests/x`);
    assert.match(refused.headers.get("content-security-policy") ?? "", /^default-src 'self';/);
    await refused.body?.cancel();
  });
});

/** Reads Server-Sent Events from a response until `count` events arrived. */
async function readEvents(
  res: Response,
  count: number,
): Promise<{ event: string; data: unknown }[]> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  const events: { event: string; data: unknown }[] = [];
  let buffer = "";
  while (events.length < count) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += value;
    let at;
    while ((at = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, at);
      buffer = buffer.slice(at + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1];
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (event && data) events.push({ event, data: JSON.parse(data) });
    }
  }
  await reader.cancel();
  return events;
}

Deno.test("GET /api/events pushes each new, answered and ended exchange, and a clear", async () => {
  await withInspector(async ({ capture, base }) => {
    const res = await fetch(`${base}/api/events`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
    const reading = readEvents(res, 4);
    // The stream subscribed before its headers were sent, so these changes are all seen.
    const id = feed(capture, { target: "/live", status: 201 });
    const cleared = await fetch(`${base}/api/requests`, { method: "DELETE", headers: JSON_POST });
    assert.equal(cleared.status, 204);
    const events = await reading;
    assert.deepEqual(
      events.map((e) => [e.event, (e.data as { id?: string; status?: number | null }).status]),
      [["request", null], ["request", 201], ["request", 201], ["clear", undefined]],
    );
    assert.equal((events[0]!.data as { id: string }).id, id);
  });
});

Deno.test("close() ends open live-update streams and stops the server", async () => {
  await withInspector(async ({ base, close }) => {
    const res = await fetch(`${base}/api/events`);
    const text = res.body!.pipeThrough(new TextDecoderStream());
    await close();
    let all = "";
    for await (const chunk of text) all += chunk;
    assert.equal(all, "retry: 1000\n\n");
  });
});

Deno.test("a taken port makes the inspector try the next ones, and all ten taken fail clearly", async () => {
  const range = freeRange(11);
  const held = [0, 1, 2].map((i) => Deno.listen({ hostname: "127.0.0.1", port: range.low + i }));
  const options = {
    hostname: "127.0.0.1",
    capture: new Capture(),
    replay: () => Promise.resolve("x"),
    status: () => ({ tunnels: [] }),
  };
  try {
    const inspector = await startInspector({ ...options, port: range.low });
    assert.equal(inspector.addr.port, range.low + 3);
    await inspector.close();
    for (let i = 3; i <= 10; i++) {
      held.push(Deno.listen({ hostname: "127.0.0.1", port: range.low + i }));
    }
    await assert.rejects(() => startInspector({ ...options, port: range.low }), {
      message: `cannot listen on 127.0.0.1:${range.low}–${range.high}: address already in use ` +
        "(stop what uses these ports or choose another inspector port)",
    });
  } finally {
    for (const l of held) l.close();
  }
});
