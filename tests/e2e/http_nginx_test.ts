// End to end: HTTP tunnels behind a real nginx with a wildcard certificate (scripts/nginx.conf.example).
import assert from "node:assert/strict";
import https from "node:https";
import { clientHandshake } from "../../shared/ws_handshake.ts";
import { WsConn } from "../../shared/ws_conn.ts";
import { sha256, startClient, startServer } from "./harness.ts";
import { httpGrant, startLocalHttp, TEST_DOMAIN } from "./http_harness.ts";
import { makeCert, startNginx } from "./services.ts";

const HOST = `app.${TEST_DOMAIN}`;
/** The visitor's own address: another loopback address, so that it differs from nginx's. */
const VISITOR_IP = "127.0.0.2";
const MiB = 1024 * 1024;

/** `n` bytes of a fixed pattern (cheap, the same on both ends). */
function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

/** A response read through nginx. */
interface Got {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Uint8Array;
}

/**
 * One HTTPS request to nginx on 127.0.0.1 from {@link VISITOR_IP}, with SNI and Host `HOST`
 * (which no resolver knows); `onData` sees each piece of the body as it arrives.
 */
function viaNginx(
  port: number,
  ca: string,
  req: { method?: string; path: string; body?: Uint8Array },
  onData?: (piece: Uint8Array) => void,
): Promise<Got> {
  return new Promise((resolve, reject) => {
    const r = https.request({
      host: "127.0.0.1",
      port,
      localAddress: VISITOR_IP,
      servername: HOST,
      ca,
      agent: false,
      method: req.method ?? "GET",
      path: req.path,
      headers: {
        host: HOST,
        ...(req.body ? { "content-length": String(req.body.byteLength) } : {}),
      },
    }, (res) => {
      const parts: Uint8Array[] = [];
      res.on("data", (d: Uint8Array) => {
        parts.push(d);
        onData?.(d);
      });
      res.on("end", () => {
        const body = new Uint8Array(parts.reduce((s, p) => s + p.byteLength, 0));
        let off = 0;
        for (const p of parts) {
          body.set(p, off);
          off += p.byteLength;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
      res.on("error", reject);
    });
    r.on("error", reject);
    r.end(req.body);
  });
}

Deno.test("an HTTP tunnel behind nginx: https URL without a port, forwarding headers, 2 MiB upload, streamed download and a WebSocket intact", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-http-nginx-e2e-" });
  const cert = await makeCert(dir, [`*.${TEST_DOMAIN}`]);
  // The streamed response sends its first piece, then waits until the visitor has it: buffering
  // anywhere on the way (proxy_buffering on) would hold that piece back and fail the test.
  const firstPieceSeen = Promise.withResolvers<void>();
  const streamed = [pattern(64 * 1024, 1), pattern(3 * MiB, 2)];
  const local = startLocalHttp(async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/ws") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (e) => socket.send(`echo ${e.data}`);
      return response;
    }
    if (url.pathname === "/upload") {
      const body = new Uint8Array(await req.arrayBuffer());
      return Response.json({ bytes: body.byteLength, sha256: await sha256(body) });
    }
    if (url.pathname === "/stream") {
      const body = new ReadableStream<Uint8Array>({
        async start(c) {
          c.enqueue(streamed[0]!);
          await firstPieceSeen.promise;
          c.enqueue(streamed[1]!);
          c.close();
        },
      });
      return new Response(body);
    }
    return Response.json({
      host: req.headers.get("host"),
      xfh: req.headers.get("x-forwarded-host"),
      xff: req.headers.get("x-forwarded-for"),
      proto: req.headers.get("x-forwarded-proto"),
    });
  });
  const server = await startServer([
    "--http-domain",
    TEST_DOMAIN,
    "--trusted-proxy",
    "127.0.0.1/32",
    "--public-http-url-scheme",
    "https",
  ]);
  const nginx = await startNginx({
    upstreamPort: server.port,
    certFile: cert.certFile,
    keyFile: cert.keyFile,
    tunnelDomain: TEST_DOMAIN,
  });
  const client = startClient([
    "http",
    String(local.port),
    "--subdomain",
    "app",
    "--no-inspect",
    "--server",
    `wss://localhost:${nginx.port}`,
    "--ca",
    cert.certFile,
  ]);
  try {
    const grant = await httpGrant(client).catch((e) => {
      throw new Error(`${e.message}\n${client.output()}\n${server.output()}`);
    });
    assert.equal(grant.url, `https://${HOST}`);

    const hello = await viaNginx(nginx.port, cert.certPem, { path: "/hello" });
    assert.equal(hello.status, 200);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(hello.body)), {
      // mport's default: Host names the local service, X-Forwarded-Host the tunnel.
      host: `127.0.0.1:${local.port}`,
      xfh: HOST,
      // The visitor as nginx saw it, then nginx as mport-server saw it.
      xff: `${VISITOR_IP}, 127.0.0.1`,
      proto: "https",
    });

    const upload = pattern(2 * MiB, 7);
    const up = await viaNginx(nginx.port, cert.certPem, {
      method: "POST",
      path: "/upload",
      body: upload,
    });
    assert.equal(up.status, 200);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(up.body)), {
      bytes: upload.byteLength,
      sha256: await sha256(upload),
    });

    const down = await viaNginx(
      nginx.port,
      cert.certPem,
      { path: "/stream" },
      () => firstPieceSeen.resolve(),
    );
    assert.equal(down.status, 200);
    const whole = new Uint8Array(streamed[0]!.byteLength + streamed[1]!.byteLength);
    whole.set(streamed[0]!);
    whole.set(streamed[1]!, streamed[0]!.byteLength);
    assert.equal(down.body.byteLength, whole.byteLength);
    assert.equal(await sha256(down.body), await sha256(whole));

    // A WebSocket: the Upgrade and Connection headers pass nginx and mport both ways.
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: nginx.port });
    tcp.setNoDelay(true);
    const tls = await Deno.startTls(tcp, { hostname: HOST, caCerts: [cert.certPem] });
    const shake = await clientHandshake(tls, { host: HOST, path: "/ws", timeoutMs: 10_000 });
    const ws = new WsConn(tls, { role: "client", maxMessageBytes: 1024, leftover: shake.leftover });
    try {
      for (const text of ["one", "two"]) {
        ws.sendText(text);
        const msg = await ws.read();
        assert.ok(msg !== null);
        assert.equal(new TextDecoder().decode(msg.data), `echo ${text}`);
      }
    } finally {
      await ws.close(1000, "done");
    }
    assert.equal(client.stderr.lines.filter((l) => l.startsWith("mport:")).join("\n"), "");
  } finally {
    await client.stop();
    await nginx.close();
    await server.stop();
    await local.close();
    await Deno.remove(dir, { recursive: true });
  }
});
