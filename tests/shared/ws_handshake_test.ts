// Tests for both sides of the WebSocket upgrade handshake, against Deno's server and raw peers.
import assert from "node:assert/strict";
import {
  acceptKey,
  checkUpgradeRequest,
  clientHandshake,
  HttpHeadError,
  newClientKey,
  offeredProtocols,
  parseRequestHead,
  parseResponseHead,
  readHead,
  serverHandshakeResponse,
  WsHandshakeError,
} from "../../shared/ws_handshake.ts";
import {
  closeQuietly,
  denoServer,
  LOOPBACK,
  ourClient,
  tcpPair,
  within,
  writeAll,
} from "./ws_fixtures.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("acceptKey computes the RFC 6455 example", async () => {
  assert.equal(await acceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
});

Deno.test("newClientKey is base64 of 16 fresh random bytes", () => {
  const a = newClientKey();
  const b = newClientKey();
  assert.notEqual(a, b);
  for (const k of [a, b]) {
    assert.equal(atob(k).length, 16);
    assert.equal(checkUpgradeRequest("GET", upgradeHeaders({ "sec-websocket-key": k })), null);
  }
});

function upgradeHeaders(over: Record<string, string | null> = {}): Headers {
  const base: Record<string, string | null> = {
    host: "example.com",
    upgrade: "websocket",
    connection: "keep-alive, Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    ...over,
  };
  const h = new Headers();
  for (const [k, v] of Object.entries(base)) if (v !== null) h.set(k, v);
  return h;
}

Deno.test("checkUpgradeRequest accepts a valid upgrade with any header case", () => {
  assert.equal(checkUpgradeRequest("GET", upgradeHeaders()), null);
  assert.equal(
    checkUpgradeRequest("GET", upgradeHeaders({ upgrade: "WebSocket", connection: "upgrade" })),
    null,
  );
});

const BAD_UPGRADES: { name: string; method?: string; over: Record<string, string | null> }[] = [
  { name: "POST", method: "POST", over: {} },
  { name: "no Host", over: { host: null } },
  { name: "no Upgrade", over: { upgrade: null } },
  { name: "Upgrade: h2c", over: { upgrade: "h2c" } },
  { name: "no Connection", over: { connection: null } },
  { name: "Connection: keep-alive", over: { connection: "keep-alive" } },
  { name: "version 8", over: { "sec-websocket-version": "8" } },
  { name: "no version", over: { "sec-websocket-version": null } },
  { name: "no key", over: { "sec-websocket-key": null } },
  { name: "short key", over: { "sec-websocket-key": "c2hvcnQ=" } },
  { name: "17-byte key", over: { "sec-websocket-key": "AAAAAAAAAAAAAAAAAAAAAAA=" } },
  { name: "key with stray bits", over: { "sec-websocket-key": "AAAAAAAAAAAAAAAAAAAAAB==" } },
  { name: "not base64", over: { "sec-websocket-key": "!!!!!!!!!!!!!!!!!!!!!!==" } },
];

for (const c of BAD_UPGRADES) {
  Deno.test(`checkUpgradeRequest refuses ${c.name} with a reason`, () => {
    const why = checkUpgradeRequest(c.method ?? "GET", upgradeHeaders(c.over));
    assert.equal(typeof why, "string");
    assert.ok(why!.length > 10);
  });
}

Deno.test("serverHandshakeResponse answers with the accept key, protocol and extra headers", async () => {
  const bytes = await serverHandshakeResponse("dGhlIHNhbXBsZSBub25jZQ==", "mport.v1", {
    "X-Node": "a",
  });
  const text = dec(bytes);
  assert.ok(text.startsWith("HTTP/1.1 101 Switching Protocols\r\n"));
  assert.ok(text.endsWith("\r\n\r\n"));
  const r = parseResponseHead(text);
  assert.equal(r.headers.get("sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  assert.equal(r.headers.get("sec-websocket-protocol"), "mport.v1");
  assert.equal(r.headers.get("x-node"), "a");
  await assert.rejects(serverHandshakeResponse("k", "bad protocol"), TypeError);
  await assert.rejects(
    serverHandshakeResponse("k", null, { "X-A": "b\r\nInjected: 1" }),
    TypeError,
  );
  await assert.rejects(serverHandshakeResponse("k", null, { Upgrade: "h2c" }), TypeError);
});

Deno.test("offeredProtocols lists the client's subprotocols in order", () => {
  const h = new Headers({ "sec-websocket-protocol": "mport.v2, mport.v1 ,," });
  assert.deepEqual(offeredProtocols(h), ["mport.v2", "mport.v1"]);
  assert.deepEqual(offeredProtocols(new Headers()), []);
});

Deno.test("clientHandshake negotiates a subprotocol with Deno's server and sends extra headers", async () => {
  // Headers are copied inside the handler: Deno's Request is unreadable after the upgrade.
  const seen = Promise.withResolvers<{ url: string; headers: Headers }>();
  const http = Deno.serve({ hostname: LOOPBACK, port: 0, onListen: () => {} }, (req) => {
    seen.resolve({ url: req.url, headers: new Headers(req.headers) });
    const { socket, response } = Deno.upgradeWebSocket(req, { protocol: "mport.v1" });
    socket.onopen = () => socket.close(1000, "bye");
    return response;
  });
  const conn = await Deno.connect({ hostname: LOOPBACK, port: http.addr.port });
  try {
    const res = await clientHandshake(conn, {
      host: `${LOOPBACK}:${http.addr.port}`,
      path: "/_mport/v1/control?x=1",
      headers: { Authorization: "Bearer tok" },
      protocols: ["mport.v2", "mport.v1"],
      timeoutMs: 5000,
    });
    assert.equal(res.protocol, "mport.v1");
    assert.equal(res.headers.get("upgrade")?.toLowerCase(), "websocket");
    const req = await seen.promise;
    assert.equal(new URL(req.url).pathname, "/_mport/v1/control");
    assert.equal(req.headers.get("authorization"), "Bearer tok");
    assert.equal(req.headers.get("sec-websocket-protocol"), "mport.v2, mport.v1");
  } finally {
    conn.close();
    await http.shutdown();
  }
});

Deno.test("clientHandshake refuses bad arguments before touching the network", async () => {
  const [a, b] = await tcpPair();
  const base = { host: "x", path: "/", timeoutMs: 1000 };
  await assert.rejects(clientHandshake(a, { ...base, path: "no-slash" }), TypeError);
  await assert.rejects(clientHandshake(a, { ...base, path: "/a b" }), TypeError);
  await assert.rejects(clientHandshake(a, { ...base, host: "a\r\nb" }), TypeError);
  await assert.rejects(clientHandshake(a, { ...base, protocols: ["a b"] }), TypeError);
  await assert.rejects(clientHandshake(a, { ...base, headers: { "X-A": "1\r\n2" } }), TypeError);
  await assert.rejects(clientHandshake(a, { ...base, headers: { Host: "evil" } }), TypeError);
  a.close();
  b.close();
});

/** A raw server that reads the upgrade request and answers with `respond(key)`. */
function rawServer(
  respond: (key: string) => Promise<Uint8Array | Uint8Array[] | null>,
  opts: { closeAfter?: boolean } = {},
) {
  const listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  const served = (async () => {
    const conn = await listener.accept();
    try {
      const { head } = await readHead(conn, { maxBytes: 16384, timeoutMs: 5000 });
      const key = parseRequestHead(head).headers.get("sec-websocket-key")!;
      const reply = await respond(key);
      for (const part of reply === null ? [] : Array.isArray(reply) ? reply : [reply]) {
        await writeAll(conn, part);
        // Separate parts arrive in separate reads (mostly; the test holds either way).
        await new Promise((r) => setTimeout(r, 10));
      }
      if (opts.closeAfter) return;
      // Hold the connection open until the client closes it.
      const buf = new Uint8Array(1024);
      while ((await conn.read(buf).catch(() => null)) !== null) {
        // discard
      }
    } finally {
      closeQuietly(conn);
    }
  })();
  return {
    port: listener.addr.port,
    async done() {
      listener.close();
      await served;
    },
  };
}

async function handshakeTo(port: number, timeoutMs = 5000) {
  const conn = await Deno.connect({ hostname: LOOPBACK, port });
  return clientHandshake(conn, { host: "x", path: "/", protocols: ["p1"], timeoutMs });
}

async function handshakeError(p: Promise<unknown>): Promise<WsHandshakeError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof WsHandshakeError, `expected WsHandshakeError, got ${e}`);
    return e;
  }
  assert.fail("handshake succeeded");
}

Deno.test("clientHandshake rejects a wrong Sec-WebSocket-Accept", async () => {
  const server = rawServer(async () =>
    enc(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${await acceptKey("not the key")}\r\n\r\n`,
    )
  );
  const e = await handshakeError(handshakeTo(server.port));
  assert.equal(e.status, 101);
  assert.match(e.message, /Sec-WebSocket-Accept/);
  await server.done();
});

const BAD_101S: { name: string; head: (accept: string) => string; match: RegExp }[] = [
  {
    name: "no Upgrade header",
    head: (a) => `Connection: Upgrade\r\nSec-WebSocket-Accept: ${a}`,
    match: /Upgrade/,
  },
  {
    name: "no Connection header",
    head: (a) => `Upgrade: websocket\r\nSec-WebSocket-Accept: ${a}`,
    match: /Connection/,
  },
  {
    name: "an unoffered subprotocol",
    head: (a) =>
      `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${a}\r\n` +
      "Sec-WebSocket-Protocol: p2",
    match: /subprotocol/,
  },
  {
    name: "an extension nobody asked for",
    head: (a) =>
      `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${a}\r\n` +
      "Sec-WebSocket-Extensions: permessage-deflate",
    match: /extension/,
  },
];

for (const c of BAD_101S) {
  Deno.test(`clientHandshake rejects a 101 with ${c.name}`, async () => {
    const server = rawServer(async (key) =>
      enc(`HTTP/1.1 101 Switching Protocols\r\n${c.head(await acceptKey(key))}\r\n\r\n`)
    );
    const e = await handshakeError(handshakeTo(server.port));
    assert.equal(e.status, 101);
    assert.match(e.message, c.match);
    await server.done();
  });
}

Deno.test("a 401 refusal from Deno's server carries status and body", async () => {
  const http = Deno.serve(
    { hostname: LOOPBACK, port: 0, onListen: () => {} },
    () => new Response("token revoked\n", { status: 401, statusText: "Unauthorized" }),
  );
  try {
    const e = await handshakeError(handshakeTo(http.addr.port));
    assert.equal(e.status, 401);
    assert.equal(e.statusText, "Unauthorized");
    assert.equal(e.body, "token revoked\n");
    assert.match(e.message, /401 Unauthorized: token revoked/);
  } finally {
    await http.shutdown();
  }
});

const REFUSALS: { name: string; response: string[]; body: string; closeAfter?: boolean }[] = [
  {
    name: "Content-Length body that arrives after the head",
    response: ["HTTP/1.1 403 Forbidden\r\nContent-Length: 19\r\n\r\n", "|account ", "disabled\r\n"],
    body: "|account disabled\r\n",
  },
  {
    name: "chunked body",
    response: [
      "HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nslow \r\n",
      "5\r\ndown!\r\n0\r\n\r\n",
    ],
    body: "slow down!",
  },
  {
    name: "body until EOF",
    response: ["HTTP/1.1 502 Bad Gateway\r\n\r\nupstream ", "is down"],
    body: "upstream is down",
    closeAfter: true,
  },
];

for (const c of REFUSALS) {
  Deno.test(`a refusal with a ${c.name} is read into the error`, async () => {
    const server = rawServer(() => Promise.resolve(c.response.map(enc)), {
      closeAfter: c.closeAfter ?? false,
    });
    const e = await handshakeError(handshakeTo(server.port));
    assert.equal(e.status, Number(c.response[0]!.slice(9, 12)));
    assert.equal(e.body, c.body);
    await server.done();
  });
}

Deno.test("a refusal body is cut at 4 KiB", async () => {
  const big = "a".repeat(10_000);
  const server = rawServer(() =>
    Promise.resolve(enc(`HTTP/1.1 400 Bad\r\nContent-Length: ${big.length}\r\n\r\n${big}`))
  );
  const e = await handshakeError(handshakeTo(server.port));
  assert.equal(e.status, 400);
  assert.equal(e.body.length, 4096);
  await server.done();
});

Deno.test("a response head over 16 KiB fails the handshake", async () => {
  const server = rawServer(() =>
    Promise.resolve(
      enc("HTTP/1.1 101 Switching Protocols\r\nX: " + "y".repeat(17_000) + "\r\n\r\n"),
    )
  );
  const e = await handshakeError(handshakeTo(server.port));
  assert.equal(e.status, 0);
  assert.ok(e.cause instanceof HttpHeadError && e.cause.kind === "too_large");
  await server.done();
});

Deno.test("a silent server fails the handshake after the timeout", async () => {
  const server = rawServer(() => Promise.resolve(null));
  const started = performance.now();
  const e = await handshakeError(within(handshakeTo(server.port, 200), "handshake"));
  const took = performance.now() - started;
  assert.equal(e.status, 0);
  assert.ok(e.cause instanceof HttpHeadError && e.cause.kind === "timeout");
  assert.ok(took >= 190 && took < 3000, `took ${took} ms`);
  await server.done();
});

Deno.test("a garbage response fails the handshake with status 0", async () => {
  const server = rawServer(() => Promise.resolve(enc("SSH-2.0-OpenSSH_9.6\r\n\r\n")), {
    closeAfter: true,
  });
  const e = await handshakeError(handshakeTo(server.port));
  assert.equal(e.status, 0);
  assert.ok(e.cause instanceof HttpHeadError && e.cause.kind === "malformed");
  await server.done();
});

Deno.test("our client completes the handshake with Deno's server and is ready to talk", async () => {
  const http = denoServer((socket) => {
    socket.onmessage = (e) => socket.send(`got ${e.data}`);
  });
  try {
    const ws = await ourClient(http.addr.port);
    ws.sendText("hi");
    const m = await within(ws.read(), "reply");
    assert.equal(dec(m!.data), "got hi");
    await within(ws.close(), "close");
  } finally {
    await http.shutdown();
  }
});
