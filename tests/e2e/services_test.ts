// Tests of the e2e harness itself (nginx with TLS, tinyproxy CONNECT), without mport in the path.
import assert from "node:assert/strict";
import { makeCert, startNginx, startTinyproxy } from "./services.ts";

Deno.test("nginx from the example config proxies HTTPS and WebSocket upgrades to the upstream", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-cert-" });
  const cert = await makeCert(dir);
  const upstream = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/healthz") {
      return new Response(`ok via ${req.headers.get("x-forwarded-proto")}`);
    }
    if (req.headers.get("upgrade") === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (e) => socket.send(`echo:${e.data}`);
      return response;
    }
    return new Response("not found", { status: 404 });
  });
  const nginx = await startNginx({
    upstreamPort: upstream.addr.port,
    certFile: cert.certFile,
    keyFile: cert.keyFile,
  });
  const client = Deno.createHttpClient({ caCerts: [cert.certPem] });
  try {
    const res = await fetch(`https://localhost:${nginx.port}/healthz`, { client });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "ok via https");

    const ws = new WebSocket(`wss://localhost:${nginx.port}/x`, { client });
    const opened = Promise.withResolvers<void>();
    const reply = Promise.withResolvers<string>();
    const closed = Promise.withResolvers<void>();
    ws.onopen = () => opened.resolve();
    ws.onmessage = (e) => reply.resolve(String(e.data));
    ws.onerror = (e) => {
      const err = new Error(`WebSocket error: ${(e as ErrorEvent).message}`);
      opened.reject(err);
      reply.reject(err);
    };
    ws.onclose = () => closed.resolve();
    await opened.promise;
    ws.send("hello");
    assert.equal(await reply.promise, "echo:hello");
    ws.close();
    await closed.promise;
  } finally {
    client.close();
    await nginx.close();
    await upstream.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tinyproxy relays bytes through an HTTP CONNECT tunnel to any port", async () => {
  const echo = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // One connection is all this test makes; echo it until EOF.
  const echoed = echo.accept().then((conn) => conn.readable.pipeTo(conn.writable));
  const proxy = await startTinyproxy();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  try {
    const target = `127.0.0.1:${echo.addr.port}`;
    await write(conn, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    const head = await readUntil(conn, "\r\n\r\n");
    assert.match(head, /^HTTP\/1\.[01] 200 /, head);

    await write(conn, "ping through the proxy");
    assert.equal(await readUntil(conn, "proxy"), "ping through the proxy");
    conn.closeWrite();
    await echoed;
    assert.match(proxy.log(), new RegExp(`CONNECT.*${echo.addr.port}`));
  } finally {
    conn.close();
    echo.close();
    await proxy.close();
  }
});

async function write(conn: Deno.Conn, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
}

/** Reads until the text received so far ends with `end` (the tests never over-read past it). */
async function readUntil(conn: Deno.Conn, end: string): Promise<string> {
  const decoder = new TextDecoder();
  const buf = new Uint8Array(4096);
  let text = "";
  while (!text.endsWith(end)) {
    const n = await conn.read(buf);
    if (n === null) throw new Error(`connection closed after ${JSON.stringify(text)}`);
    text += decoder.decode(buf.subarray(0, n), { stream: true });
  }
  return text;
}
