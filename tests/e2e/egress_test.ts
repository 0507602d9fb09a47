// End to end: `mport socks` — a local SOCKS5 and HTTP proxy whose connections leave from the
// server, with the server's permission and rules.
import assert from "node:assert/strict";
import { startClient, startServer } from "./harness.ts";
import { api, startSocks } from "./egress_harness.ts";
import { socksConnect } from "../support/socks_client.ts";
import { MPORT_VERSION } from "../../shared/version.ts";
import { freePort } from "../support/net.ts";
import {
  echo,
  randomBytes,
  readExactly,
  readToEnd,
  sha256,
  sink,
  source,
  startService,
  writeAll,
  writeChunks,
} from "../support/tcp_services.ts";

const MiB = 1024 * 1024;

Deno.test("SOCKS5 through the server: 256 MiB each way intact, names resolved by the server, a denied destination refused and audited", async () => {
  const received = Promise.withResolvers<{ bytes: number; sha256: string }>();
  const sinkService = startService(sink((r) => received.resolve(r)));
  const down = randomBytes(256 * MiB);
  const sourceService = startService(source(down));
  const echoService = startService(echo);
  const closed = startService(echo);
  const closedPort = closed.port;
  await closed.close(); // a port nothing listens on: allowed, but refused by the host
  const server = await startServer([
    "--egress",
    "--egress-allow",
    `127.0.0.1:${sinkService.port}`,
    "--egress-allow",
    `127.0.0.1:${sourceService.port}`,
    "--egress-allow",
    `127.0.0.1:${echoService.port}`,
    "--egress-allow",
    `127.0.0.1:${closedPort}`,
  ]);
  const { client, port: proxy } = await startSocks(server.wsUrl);
  try {
    // Upload: hashed as sent and as the destination received it.
    const up = randomBytes(256 * MiB);
    const a = await socksConnect(proxy, "127.0.0.1", sinkService.port);
    assert.equal(a.code, 0);
    await writeChunks(a.conn, up);
    await a.conn.closeWrite();
    await readToEnd(a.conn);
    a.conn.close();
    const u = await received.promise;
    assert.deepEqual({ bytes: u.bytes, sha256: u.sha256 }, {
      bytes: up.byteLength,
      sha256: sha256(up),
    });

    // Download, by name: "localhost" is resolved on the server's side.
    const b = await socksConnect(proxy, "localhost", sourceService.port);
    assert.equal(b.code, 0);
    const got = await readToEnd(b.conn);
    b.conn.close();
    assert.deepEqual({ bytes: got.bytes, sha256: got.sha256, end: got.end }, {
      bytes: down.byteLength,
      sha256: sha256(down),
      end: "EOF",
    });

    // HTTP CONNECT on the same port.
    const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy });
    await writeAll(
      c,
      new TextEncoder().encode(
        `CONNECT 127.0.0.1:${echoService.port} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`,
      ),
    );
    const head = new TextDecoder().decode(await readExactly(c, 39));
    assert.match(head, /^HTTP\/1\.1 200 Connection established\r\n/);
    c.close();

    // Denied: a loopback port no rule allows (SSRF into the server's own network).
    const denied = await socksConnect(proxy, "127.0.0.1", server.port);
    assert.equal(denied.code, 2, "SOCKS reply 2: connection not allowed by ruleset");
    // Refused by the destination host: reply 5.
    const refused = await socksConnect(proxy, "127.0.0.1", closedPort);
    assert.equal(refused.code, 5);

    // The operator sees the client, its version and its token.
    const clients = await api(server.httpUrl, "/clients") as {
      items: { clientVersion: string | null; tunnels: string[] }[];
    };
    assert.deepEqual(clients.items.map((c) => [c.clientVersion, c.tunnels]), [[MPORT_VERSION, []]]);

    const events = await api(server.httpUrl, "/events?type=egress_refused") as {
      items: { type: string; detail: Record<string, unknown> }[];
    };
    const destinations = events.items.map((e) => e.detail.destination);
    assert.ok(destinations.includes(`127.0.0.1:${server.port}`), JSON.stringify(events.items));
    const done = await api(server.httpUrl, "/events?type=egress") as {
      items: { detail: Record<string, unknown> }[];
    };
    assert.ok(
      done.items.some((e) =>
        e.detail.destination === `127.0.0.1:${sinkService.port}` &&
        e.detail.bytesToDestination === up.byteLength
      ),
      JSON.stringify(done.items),
    );
  } finally {
    await client.stop();
    await server.stop();
    await Promise.all([sinkService.close(), sourceService.close(), echoService.close()]);
  }
});

function curlInstalled(): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", "command -v curl"], stdout: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}

Deno.test({
  name: "curl through mport socks: --socks5-hostname and -x (CONNECT) reach a web service by name",
  ignore: !curlInstalled() && Deno.env.get("CI") !== "true",
  async fn() {
    const body = randomBytes(4 * MiB);
    const web = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      () => new Response(body.slice()),
    );
    const server = await startServer(["--egress", "--egress-allow", `127.0.0.1:${web.addr.port}`]);
    const { client, port: proxy } = await startSocks(server.wsUrl);
    try {
      for (
        const via of [["--socks5-hostname", `127.0.0.1:${proxy}`], [
          "-x",
          `http://127.0.0.1:${proxy}`,
          "--proxytunnel",
        ]]
      ) {
        const out = await new Deno.Command("curl", {
          args: ["-sS", "--fail", "--max-time", "30", ...via, `http://localhost:${web.addr.port}/`],
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert.ok(out.success, `curl ${via.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
        assert.equal(sha256(out.stdout), sha256(body), via.join(" "));
      }
    } finally {
      await client.stop();
      await server.stop();
      await web.shutdown();
    }
  },
});

Deno.test("a user without the egress permission is refused with a sentence that says how to get it, and served once granted", async () => {
  const server = await startServer(["--egress", "--db", ":memory:"]);
  try {
    await api(server.httpUrl, "/users", {
      method: "POST",
      body: JSON.stringify({ name: "carol", password: "correct-horse-battery" }),
    });
    const made = await api(server.httpUrl, "/tokens", {
      method: "POST",
      body: JSON.stringify({ user: "carol", label: "socks" }),
    }) as { secret: string };
    const client = startClient([
      "socks",
      "--listen",
      `127.0.0.1:${freePort()}`,
      "--server",
      server.wsUrl,
      "--token",
      made.secret,
    ]);
    const status = await client.status();
    assert.equal(status.code, 1, client.output());
    assert.match(
      client.stderr.lines.join("\n"),
      /user carol may not use egress \(an admin runs: mport-server user set carol --egress\)/,
    );
    // Granted, the same token gets its proxy.
    await api(server.httpUrl, "/users/carol", {
      method: "PATCH",
      body: JSON.stringify({ egress: true }),
    });
    const again = await startSocks(server.wsUrl, ["--token", made.secret]);
    await again.client.stop();
  } finally {
    await server.stop();
  }
});

Deno.test("a server without --egress tells mport socks so, and the client stops", async () => {
  const server = await startServer();
  try {
    const client = startClient([
      "socks",
      "--listen",
      `127.0.0.1:${freePort()}`,
      "--server",
      server.wsUrl,
    ]);
    const status = await client.status();
    assert.equal(status.code, 1, client.output());
    assert.match(
      client.stderr.lines.join("\n"),
      /this server does not offer egress \(its operator starts mport-server with --egress\)/,
    );
  } finally {
    await server.stop();
  }
});
