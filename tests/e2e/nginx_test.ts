// End to end: mport-server behind a real nginx that terminates TLS (scripts/nginx.conf.example).
import assert from "node:assert/strict";
import {
  connect,
  roundTrip,
  sha256,
  startClient,
  startEcho,
  startServer,
  tunnelPort,
} from "./harness.ts";
import { makeCert, startNginx } from "./services.ts";

/** `n` random bytes (getRandomValues fills at most 64 KiB per call). */
function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

Deno.test("a client reaches the server through nginx with wss:// and --ca: 8 MiB round trip intact", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-nginx-e2e-" });
  const cert = await makeCert(dir);
  const echo = startEcho();
  // As scripts/nginx.conf.example says: believe nginx's X-Forwarded-For, and only nginx's.
  const server = await startServer(["--trusted-proxy", "127.0.0.1/32"]);
  const nginx = await startNginx({
    upstreamPort: server.port,
    certFile: cert.certFile,
    keyFile: cert.keyFile,
  });
  const client = startClient([
    "tcp",
    `127.0.0.1:${echo.port}`,
    "--server",
    `wss://localhost:${nginx.port}`,
    "--ca",
    cert.certFile,
  ]);
  const http = Deno.createHttpClient({ caCerts: [cert.certPem] });
  try {
    const port = await tunnelPort(client);
    // The public address is named after the host the client dialled (nginx's), not the upstream.
    assert.ok(
      client.stdout.lines.includes(
        `127.0.0.1-${echo.port} tcp://localhost:${port} -> 127.0.0.1:${echo.port}`,
      ),
      client.output(),
    );

    const data = randomBytes(8 * 1024 * 1024);
    const conn = await connect(port);
    try {
      const got = await roundTrip(conn, data);
      assert.equal(got.byteLength, data.byteLength);
      assert.equal(await sha256(got), await sha256(data));
    } finally {
      conn.close();
    }

    const health = await fetch(`https://localhost:${nginx.port}/healthz`, { client: http });
    assert.equal(health.status, 200);
    const body = await health.json();
    assert.equal(body.status, "ok");
    assert.equal(body.clients, 1);

    // Control channel and streams came in through nginx without a single refusal.
    const metrics = await (await fetch(`https://localhost:${nginx.port}/metrics`, { client: http }))
      .text();
    assert.match(metrics, /^mport_clients_connected 1$/m);
    assert.match(metrics, /^mport_bytes_in_total 8388608$/m);
    assert.doesNotMatch(metrics, /mport_refusals_total\{/);
    assert.equal(client.stderr.lines.filter((l) => l.startsWith("mport:")).join("\n"), "");
  } finally {
    http.close();
    await client.stop();
    await nginx.close();
    await server.stop();
    await echo.close();
    await Deno.remove(dir, { recursive: true });
  }
});
