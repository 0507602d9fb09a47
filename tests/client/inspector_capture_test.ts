// Tests for the inspector's capture store: ring-buffer bounds, body truncation, snapshots, updates.
import assert from "node:assert/strict";
import {
  Capture,
  type CapturedExchange,
  type CapturedRequest,
} from "../../client/inspector/capture.ts";

const GET: CapturedRequest = { method: "GET", target: "/", version: "HTTP/1.1", headers: [] };

function begin(c: Capture, target = "/", replayOf?: string) {
  return c.begin({
    tunnel: "web",
    remote: "203.0.113.7:5123",
    local: "http://127.0.0.1:3000",
    request: { ...GET, target },
    replayOf,
  });
}

const bytes = (n: number, fill = 0x61) => new Uint8Array(n).fill(fill);

Deno.test("a captured exchange records request, response, bodies and its duration on the injected clock", () => {
  let now = 1_000;
  const c = new Capture({}, () => now);
  const h = c.begin({
    tunnel: "web",
    remote: "203.0.113.7:5123",
    local: "http://127.0.0.1:3000",
    request: {
      method: "POST",
      target: "/api/items?x=1",
      version: "HTTP/1.1",
      headers: [["Host", "demo.example.com"], ["Content-Type", "application/json"]],
    },
  });
  h.requestBody(new TextEncoder().encode('{"a":'));
  h.requestBody(new TextEncoder().encode("1}"));
  now = 1_042;
  h.response({ status: 201, statusText: "Created", headers: [["X-Id", "7"]] });
  h.responseBody(new TextEncoder().encode("ok"));
  assert.equal(c.list()[0]!.durationMs, null, "in flight until end()");
  h.end();
  now = 5_000;
  h.end("late error is ignored");
  const [e] = c.list();
  assert.ok(e);
  assert.match(e.id, /^[0-9a-f]{10}$/);
  assert.deepEqual(
    { ...e, id: "" },
    {
      id: "",
      seq: 1,
      tunnel: "web",
      remote: "203.0.113.7:5123",
      startedAt: 1_000,
      durationMs: 42,
      request: {
        method: "POST",
        target: "/api/items?x=1",
        version: "HTTP/1.1",
        headers: [["Host", "demo.example.com"], ["Content-Type", "application/json"]],
        body: new TextEncoder().encode('{"a":1}'),
        bodyBytes: 7,
        truncated: false,
      },
      response: {
        status: 201,
        statusText: "Created",
        headers: [["X-Id", "7"]],
        body: new TextEncoder().encode("ok"),
        bodyBytes: 2,
        truncated: false,
      },
      error: null,
      replayOf: null,
      local: "http://127.0.0.1:3000",
    } satisfies CapturedExchange,
  );
  assert.deepEqual(c.get(e.id), e);
  assert.equal(c.get("nope"), null);
});

Deno.test("the store keeps copies: changing a chunk after it was reported changes nothing", () => {
  const c = new Capture();
  const h = begin(c);
  const chunk = bytes(4);
  h.requestBody(chunk);
  chunk.fill(0);
  assert.deepEqual(c.list()[0]!.request.body, bytes(4));
});

Deno.test("list() is newest first and seq increases, also across clear()", () => {
  const c = new Capture();
  begin(c, "/one");
  begin(c, "/two");
  assert.deepEqual(c.list().map((e) => [e.request.target, e.seq]), [["/two", 2], ["/one", 1]]);
  c.clear();
  assert.deepEqual(c.list(), []);
  begin(c, "/three");
  assert.deepEqual(c.list().map((e) => e.seq), [3]);
});

Deno.test("the ring buffer evicts the oldest exchanges beyond maxEntries", () => {
  const c = new Capture({ maxEntries: 3 });
  const ids = ["/1", "/2", "/3", "/4", "/5"].map((t) => {
    begin(c, t);
    return c.list()[0]!.id;
  });
  assert.deepEqual(c.list().map((e) => e.request.target), ["/5", "/4", "/3"]);
  assert.equal(c.get(ids[0]!), null);
  assert.equal(c.usage.entries, 3);
});

Deno.test("the ring buffer evicts the oldest exchanges when kept body bytes pass maxBytes", () => {
  const c = new Capture({ maxBytes: 1000, maxBodyBytes: 400 });
  for (const t of ["/1", "/2", "/3"]) {
    const h = begin(c, t);
    h.requestBody(bytes(150));
    h.response({ status: 200, statusText: "OK", headers: [] });
    h.responseBody(bytes(150));
    h.end();
  }
  assert.equal(c.usage.bytes, 900);
  const h = begin(c, "/4");
  h.requestBody(bytes(250)); // 1150 > 1000: /1 goes
  assert.deepEqual(c.list().map((e) => e.request.target), ["/4", "/3", "/2"]);
  assert.equal(c.usage.bytes, 850);
  h.responseBody(bytes(400)); // capped... and 1250 > 1000: /2 goes, then 950
  assert.deepEqual(c.list().map((e) => e.request.target), ["/4", "/3"]);
  assert.equal(c.usage.bytes, 950);
});

Deno.test("an evicted in-flight exchange ignores later reports and frees its bytes for good", () => {
  const c = new Capture({ maxEntries: 1 });
  const old = begin(c, "/old");
  old.requestBody(bytes(10));
  const seen: string[] = [];
  c.subscribe((e) => seen.push(e.request.target));
  begin(c, "/new");
  old.requestBody(bytes(10));
  old.response({ status: 200, statusText: "OK", headers: [] });
  old.end();
  assert.deepEqual(c.list().map((e) => e.request.target), ["/new"]);
  assert.equal(c.usage.bytes, 0);
  assert.deepEqual(seen, ["/new"]);
});

Deno.test("a body beyond maxBodyBytes is kept truncated while bodyBytes counts every byte", () => {
  const c = new Capture({ maxBodyBytes: 10 });
  const h = begin(c);
  h.requestBody(bytes(6, 0x31));
  h.requestBody(bytes(6, 0x32));
  h.requestBody(bytes(6, 0x33));
  h.response({ status: 200, statusText: "OK", headers: [] });
  h.responseBody(bytes(10));
  h.end();
  const e = c.list()[0]!;
  assert.equal(new TextDecoder().decode(e.request.body), "1111112222");
  assert.equal(e.request.bodyBytes, 18);
  assert.equal(e.request.truncated, true);
  assert.equal(e.response!.truncated, false, "exactly maxBodyBytes is not truncated");
  assert.equal(c.usage.bytes, 20);
});

Deno.test("subscribers hear of a new entry, its response and its end, and not after unsubscribing", () => {
  const c = new Capture({}, () => 1_000); // a fixed clock: the duration is exactly 0
  const seen: [string, number | null, number | null][] = [];
  const off = c.subscribe((e) =>
    seen.push([e.request.target, e.response?.status ?? null, e.durationMs])
  );
  c.subscribe(() => {
    throw new Error("a broken subscriber does not disturb the engine");
  });
  const h = begin(c, "/a");
  h.requestBody(bytes(3)); // body bytes alone do not notify
  h.response({ status: 204, statusText: "No Content", headers: [] });
  h.end();
  off();
  begin(c, "/b");
  assert.equal(seen.length, 3);
  assert.deepEqual(seen.map(([t, s]) => [t, s]), [["/a", null], ["/a", 204], ["/a", 204]]);
  assert.equal(seen[2]![2], 0);
});

Deno.test("an exchange that fails records the error; a replay records what it replays", () => {
  const c = new Capture();
  const h = begin(c, "/down");
  h.end("local service refused the connection");
  const first = c.list()[0]!;
  assert.equal(first.error, "local service refused the connection");
  assert.equal(first.response, null);
  c.begin({
    tunnel: "web",
    remote: "replay",
    local: "http://127.0.0.1:3000",
    request: GET,
    replayOf: first.id,
  });
  assert.equal(c.list()[0]!.replayOf, first.id);
  assert.equal(c.list()[0]!.remote, "replay");
});

Deno.test("invalid limits are refused with the limit's name", () => {
  assert.throws(() => new Capture({ maxEntries: 0 }), {
    name: "RangeError",
    message: "invalid inspector limit maxEntries: 0",
  });
  assert.throws(() => new Capture({ maxBytes: -1 }), {
    message: "invalid inspector limit maxBytes: -1",
  });
  assert.throws(() => new Capture({ maxBodyBytes: 1.5 }), {
    message: "invalid inspector limit maxBodyBytes: 1.5",
  });
});
