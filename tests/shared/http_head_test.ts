// Tests for the HTTP head reader and its strict request/response parsers, and short bodies.
import assert from "node:assert/strict";
import {
  HttpHeadError,
  MAX_HEAD_LINES,
  parseRequestHead,
  parseResponseHead,
  readHead,
  readShortBody,
} from "../../shared/http_head.ts";
import { tcpPair, writeAll } from "./ws_fixtures.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("parseRequestHead reads the request line and headers", () => {
  const r = parseRequestHead(
    "GET /_mport/v1/stream?x=1 HTTP/1.1\r\nHost: a.example\r\nX-Two: 1\r\nx-two:  2 \r\n" +
      "Empty:\r\nObs: caf\xe9\r\n\r\n",
  );
  assert.equal(r.method, "GET");
  assert.equal(r.target, "/_mport/v1/stream?x=1");
  assert.equal(r.version, "HTTP/1.1");
  assert.equal(r.headers.get("host"), "a.example");
  assert.equal(r.headers.get("x-two"), "1, 2");
  assert.equal(r.headers.get("empty"), "");
  assert.equal(r.headers.get("obs"), "caf\xe9");
  assert.equal(parseRequestHead("OPTIONS * HTTP/1.0").target, "*");
});

Deno.test("parseResponseHead reads the status line with or without a reason", () => {
  const r = parseResponseHead("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket");
  assert.deepEqual([r.version, r.status, r.statusText], ["HTTP/1.1", 101, "Switching Protocols"]);
  assert.equal(r.headers.get("upgrade"), "websocket");
  assert.equal(parseResponseHead("HTTP/1.1 204").statusText, "");
  assert.equal(parseResponseHead("HTTP/1.0 401 ").statusText, "");
});

const BAD_HEADS: { name: string; text: string; kind?: string; response?: boolean }[] = [
  { name: "folded header", text: "GET / HTTP/1.1\r\nA: b\r\n  c" },
  { name: "tab-folded header", text: "GET / HTTP/1.1\r\nA: b\r\n\tc" },
  { name: "space before colon", text: "GET / HTTP/1.1\r\nHost : x" },
  { name: "space in name", text: "GET / HTTP/1.1\r\nBad Name: x" },
  { name: "empty name", text: "GET / HTTP/1.1\r\n: x" },
  { name: "no colon", text: "GET / HTTP/1.1\r\nHost" },
  { name: "NUL in value", text: "GET / HTTP/1.1\r\nA: b\0c" },
  { name: "bare LF in value", text: "GET / HTTP/1.1\r\nA: b\nInjected: x" },
  { name: "bare CR in value", text: "GET / HTTP/1.1\r\nA: b\rc" },
  { name: "empty line inside", text: "GET / HTTP/1.1\r\n\r\nA: b" },
  { name: "HTTP/2.0", text: "GET / HTTP/2.0" },
  { name: "lowercase version", text: "GET / http/1.1" },
  { name: "two spaces", text: "GET  / HTTP/1.1" },
  { name: "space in target", text: "GET /a b HTTP/1.1" },
  { name: "no target", text: "GET HTTP/1.1" },
  {
    name: `more than ${MAX_HEAD_LINES} lines`,
    text: "GET / HTTP/1.1" + "\r\nA: b".repeat(MAX_HEAD_LINES),
    kind: "too_large",
  },
  { name: "status 99", text: "HTTP/1.1 99 Low", response: true },
  { name: "status 1000", text: "HTTP/1.1 1000 High", response: true },
  { name: "status line without status", text: "HTTP/1.1 OK", response: true },
  { name: "request line as response", text: "GET / HTTP/1.1", response: true },
];

for (const c of BAD_HEADS) {
  Deno.test(`HTTP head parser rejects ${c.name}`, () => {
    const parse = c.response ? parseResponseHead : parseRequestHead;
    assert.throws(
      () => parse(c.text),
      (e: unknown) => e instanceof HttpHeadError && e.kind === (c.kind ?? "malformed"),
    );
  });
}

Deno.test("parseRequestHead accepts exactly the line limit", () => {
  const text = "GET / HTTP/1.1" + "\r\nA: b".repeat(MAX_HEAD_LINES - 1);
  assert.equal(parseRequestHead(text).headers.get("a")!.split(", ").length, MAX_HEAD_LINES - 1);
});

Deno.test("readHead returns the head and the bytes after it, across split writes", async () => {
  const [a, b] = await tcpPair();
  try {
    const writing = (async () => {
      for (const part of ["GET / HTTP/1.1\r", "\nHost: x\r\n\r", "\nFRAME", "-BYTES"]) {
        await writeAll(a, enc(part));
        // Let the reader see each piece on its own, so the terminator search spans reads.
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const got = await readHead(b, { maxBytes: 1024, timeoutMs: 5000 });
    assert.equal(got.head, "GET / HTTP/1.1\r\nHost: x");
    await writing;
    // Leftover is whatever arrived with the head; read the rest to check nothing was lost.
    let rest = dec(got.leftover);
    const buf = new Uint8Array(64);
    while (rest.length < "FRAME-BYTES".length) {
      const n = await b.read(buf);
      if (n === null) break;
      rest += dec(buf.subarray(0, n));
    }
    assert.equal(rest, "FRAME-BYTES");
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("readHead uses a prefix and needs no read when it holds the whole head", async () => {
  const [a, b] = await tcpPair();
  try {
    const got = await readHead(b, {
      maxBytes: 1024,
      timeoutMs: 1000,
      prefix: enc("GET / HTTP/1.1\r\nHost: x\r\n\r\nabc"),
    });
    assert.equal(got.head, "GET / HTTP/1.1\r\nHost: x");
    assert.equal(dec(got.leftover), "abc");
    const partial = readHead(b, { maxBytes: 1024, timeoutMs: 5000, prefix: enc("GET / HT") });
    await writeAll(a, enc("TP/1.1\r\n\r\n"));
    assert.equal((await partial).head, "GET / HTTP/1.1");
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("readHead refuses a head larger than maxBytes", async () => {
  const [a, b] = await tcpPair();
  try {
    const writing = writeAll(a, enc("GET / HTTP/1.1\r\nX: " + "y".repeat(5000) + "\r\n\r\n"));
    await assert.rejects(
      readHead(b, { maxBytes: 4096, timeoutMs: 5000 }),
      (e: unknown) => e instanceof HttpHeadError && e.kind === "too_large",
    );
    await writing;
    // A head of exactly maxBytes is fine.
    const exact = "GET / HTTP/1.1\r\nX: " + "z".repeat(100 - 23) + "\r\n\r\n";
    assert.equal(exact.length, 100);
    const [c, d] = await tcpPair();
    await writeAll(c, enc(exact));
    assert.ok((await readHead(d, { maxBytes: 100, timeoutMs: 5000 })).head.startsWith("GET"));
    c.close();
    d.close();
  } finally {
    a.close();
    b.close();
  }
});

Deno.test("readHead times out on a silent peer and reports EOF on a closed one", async () => {
  const [a, b] = await tcpPair();
  const started = performance.now();
  await assert.rejects(
    readHead(b, { maxBytes: 1024, timeoutMs: 150 }),
    (e: unknown) => e instanceof HttpHeadError && e.kind === "timeout",
  );
  const took = performance.now() - started;
  assert.ok(took >= 140 && took < 3000, `took ${took} ms`);
  b.close(); // ends the read that readHead left pending
  const [c, d] = await tcpPair();
  await writeAll(c, enc("GET / HT"));
  c.close();
  await assert.rejects(
    readHead(d, { maxBytes: 1024, timeoutMs: 5000 }),
    (e: unknown) => e instanceof HttpHeadError && e.kind === "eof",
  );
  d.close();
  a.close();
});

const SHORT_BODIES: {
  name: string;
  headers: Record<string, string>;
  parts: string[];
  body: string;
}[] = [
  {
    name: "Content-Length, partly in leftover",
    headers: { "content-length": "11" },
    parts: ["hello", " world", "IGNORED"],
    body: "hello world",
  },
  {
    name: "chunked, split mid-chunk",
    headers: { "transfer-encoding": "chunked" },
    parts: ["4\r\nwi", "ki\r\n5\r\npedia\r\n0\r\n\r\n"],
    body: "wikipedia",
  },
  { name: "until EOF", headers: {}, parts: ["no ", "length"], body: "no length" },
  {
    name: "longer than the limit",
    headers: { "content-length": "100" },
    parts: ["x".repeat(100)],
    body: "x".repeat(16),
  },
];

for (const c of SHORT_BODIES) {
  Deno.test(`readShortBody reads a body with ${c.name}`, async () => {
    const [a, b] = await tcpPair();
    try {
      const [first, ...more] = c.parts;
      for (const part of more) await writeAll(a, enc(part));
      if (!("content-length" in c.headers) && !("transfer-encoding" in c.headers)) a.close();
      const body = await readShortBody(b, new Headers(c.headers), enc(first!), {
        maxBytes: 16,
        timeoutMs: 5000,
      });
      assert.equal(dec(body), c.body);
    } finally {
      try {
        a.close();
      } catch {
        // closed for the EOF case
      }
      b.close();
    }
  });
}

Deno.test("readShortBody returns what arrived when the peer goes quiet", async () => {
  const [a, b] = await tcpPair();
  const started = performance.now();
  const body = await readShortBody(b, new Headers({ "content-length": "50" }), enc("part"), {
    maxBytes: 4096,
    timeoutMs: 100,
  });
  assert.equal(dec(body), "part");
  assert.ok(performance.now() - started < 3000);
  a.close();
  b.close(); // ends the read left pending by the timeout
});

Deno.test("readHead refuses a TLS handshake or binary junk at once instead of waiting for a head", async () => {
  const cases = [
    {
      bytes: new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]),
      message: /TLS handshake arrived where an HTTP request was expected/,
    },
    { bytes: new Uint8Array([0x00, 0xff, 0x10]), message: /did not send an HTTP request/ },
    { bytes: enc("\r\n\x16"), message: /TLS handshake arrived/ },
  ];
  for (const c of cases) {
    const [a, b] = await tcpPair();
    try {
      await writeAll(a, c.bytes);
      const started = Date.now();
      await assert.rejects(
        readHead(b, { maxBytes: 1024, timeoutMs: 5000 }),
        (e: unknown) =>
          e instanceof HttpHeadError && e.kind === "malformed" && c.message.test(e.message),
      );
      assert.ok(Date.now() - started < 1000, "refused without waiting for the timeout");
    } finally {
      a.close();
      b.close();
    }
  }
});
