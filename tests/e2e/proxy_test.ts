// End to end: the client gets out through a real HTTP CONNECT proxy (tinyproxy), by flag or env.
import assert from "node:assert/strict";
import {
  connect,
  type Proc,
  roundTrip,
  type ServerProc,
  sha256,
  startClient,
  startEcho,
  startServer,
  tunnelPort,
} from "./harness.ts";
import { makeCert, startNginx, startTinyproxy } from "./services.ts";
import { freePort } from "../support/net.ts";

/** Environment that switches off any proxy settings inherited from the test runner. */
const NO_INHERITED_PROXY = {
  HTTP_PROXY: "",
  http_proxy: "",
  HTTPS_PROXY: "",
  https_proxy: "",
  ALL_PROXY: "",
  all_proxy: "",
  NO_PROXY: "",
  no_proxy: "",
};

/** `n` random bytes (getRandomValues fills at most 64 KiB per call). */
function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

/** Waits for the client's tunnel, then sends 4 MiB through it and checks the echo's hash. */
async function hashedRoundTrip(client: Proc): Promise<void> {
  const port = await tunnelPort(client);
  const data = randomBytes(4 * 1024 * 1024);
  const conn = await connect(port);
  try {
    const got = await roundTrip(conn, data);
    assert.equal(got.byteLength, data.byteLength);
    assert.equal(await sha256(got), await sha256(data));
  } finally {
    conn.close();
  }
  assert.equal(client.stderr.lines.filter((l) => l.startsWith("mport:")).join("\n"), "");
}

/** CONNECT requests tinyproxy logged for `target` (`host:port`). */
function connects(log: string, target: string): number {
  const escaped = target.replace(/[.]/g, "\\.");
  return log.match(new RegExp(`CONNECT ${escaped} HTTP/1\\.[01]`, "g"))?.length ?? 0;
}

/**
 * Runs `body` with an echo service, a ws:// server (started with `serverArgs`) and a tinyproxy;
 * stops them all after.
 */
async function withWsServerAndProxy(
  body: (
    echoPort: number,
    server: ServerProc,
    proxy: Awaited<ReturnType<typeof startTinyproxy>>,
  ) => Promise<void>,
  serverArgs: string[] = [],
): Promise<void> {
  const echo = startEcho();
  const server = await startServer(serverArgs);
  const proxy = await startTinyproxy();
  try {
    await body(echo.port, server, proxy);
  } finally {
    await proxy.close();
    await server.stop();
    await echo.close();
  }
}

Deno.test("ws:// through tinyproxy with --proxy: control channel and streams use CONNECT", async () => {
  await withWsServerAndProxy(async (echoPort, server, proxy) => {
    const client = startClient(
      ["tcp", `127.0.0.1:${echoPort}`, "--server", server.wsUrl, "--proxy", proxy.url],
      NO_INHERITED_PROXY,
    );
    try {
      await hashedRoundTrip(client);
      // One CONNECT for the control channel and one per data stream.
      const n = connects(proxy.log(), `127.0.0.1:${server.port}`);
      assert.ok(n >= 2, `expected CONNECTs for control and streams, got ${n}:\n${proxy.log()}`);
    } finally {
      await client.stop();
    }
  });
});

Deno.test("ws:// through tinyproxy taken from HTTP_PROXY", async () => {
  await withWsServerAndProxy(async (echoPort, server, proxy) => {
    const client = startClient(
      ["tcp", `127.0.0.1:${echoPort}`, "--server", server.wsUrl],
      { ...NO_INHERITED_PROXY, HTTP_PROXY: proxy.url },
    );
    try {
      await hashedRoundTrip(client);
      const n = connects(proxy.log(), `127.0.0.1:${server.port}`);
      assert.ok(n >= 2, `expected CONNECTs for control and streams, got ${n}:\n${proxy.log()}`);
    } finally {
      await client.stop();
    }
  });
});

Deno.test("wss:// through tinyproxy (HTTPS_PROXY) and nginx with --ca", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-proxy-e2e-" });
  const cert = await makeCert(dir);
  try {
    await withWsServerAndProxy(async (echoPort, server, proxy) => {
      const nginx = await startNginx({
        upstreamPort: server.port,
        certFile: cert.certFile,
        keyFile: cert.keyFile,
      });
      const client = startClient(
        [
          "tcp",
          `127.0.0.1:${echoPort}`,
          "--server",
          `wss://localhost:${nginx.port}`,
          "--ca",
          cert.certFile,
        ],
        { ...NO_INHERITED_PROXY, HTTPS_PROXY: proxy.url },
      );
      try {
        await hashedRoundTrip(client);
        const n = connects(proxy.log(), `localhost:${nginx.port}`);
        assert.ok(n >= 2, `expected CONNECTs for control and streams, got ${n}:\n${proxy.log()}`);
      } finally {
        await client.stop();
        await nginx.close();
      }
    }, ["--trusted-proxy", "127.0.0.1/32"]); // behind nginx: as scripts/nginx.conf.example says
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("NO_PROXY=127.0.0.1 bypasses an HTTP_PROXY that points at a dead port", async () => {
  const echo = startEcho();
  const server = await startServer();
  const deadProxy = `http://127.0.0.1:${freePort()}`;
  try {
    // Without NO_PROXY the dead proxy is really used: the client cannot get through.
    const stuck = startClient(
      ["tcp", `127.0.0.1:${echo.port}`, "--server", server.wsUrl],
      { ...NO_INHERITED_PROXY, HTTP_PROXY: deadProxy },
    );
    try {
      await stuck.stderr.wait(
        /^mport: cannot connect to proxy http:\/\/127\.0\.0\.1:\d+ \(connection refused\): check --proxy .*; reconnecting in /,
      );
    } finally {
      await stuck.stop();
    }

    const client = startClient(
      ["tcp", `127.0.0.1:${echo.port}`, "--server", server.wsUrl],
      { ...NO_INHERITED_PROXY, HTTP_PROXY: deadProxy, NO_PROXY: "localhost,127.0.0.1" },
    );
    try {
      await hashedRoundTrip(client);
    } finally {
      await client.stop();
    }
  } finally {
    await server.stop();
    await echo.close();
  }
});

Deno.test('--proxy none, or proxy = "none" in the config file, beats HTTP_PROXY and ALL_PROXY', async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-proxy-none-" });
  try {
    await withWsServerAndProxy(async (echoPort, server, proxy) => {
      // A live proxy in every variable: any use of it would show in its log.
      const env = {
        ...NO_INHERITED_PROXY,
        HTTP_PROXY: proxy.url,
        http_proxy: proxy.url,
        ALL_PROXY: proxy.url,
        all_proxy: proxy.url,
      };
      const toml = `${dir}/mport.toml`;
      await Deno.writeTextFile(
        toml,
        `proxy = "none"\n[[tunnels]]\nlocal = "127.0.0.1:${echoPort}"\n`,
      );
      for (
        const args of [
          ["tcp", `127.0.0.1:${echoPort}`, "--server", server.wsUrl, "--proxy", "none"],
          ["start", "--config", toml, "--server", server.wsUrl],
        ]
      ) {
        const client = startClient(args, env);
        try {
          await hashedRoundTrip(client);
        } finally {
          await client.stop();
        }
      }
      assert.equal(connects(proxy.log(), `127.0.0.1:${server.port}`), 0, proxy.log());
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
