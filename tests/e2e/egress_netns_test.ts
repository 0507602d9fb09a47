// End to end in network namespaces: `mport socks` in a client namespace, mport-server with
// --egress in a server namespace, a web server on the "internet" between them. Traffic must leave
// from the server's address, and egress must not reach into the server's own networks.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { makeTopology, NET, netnsUnavailable, type Topology } from "../../scripts/netns.ts";
import type { Proc } from "./harness.ts";
import {
  clientIn,
  denoIn,
  SERVER_PORT,
  SERVER_URL,
  serverApiIn,
  startServerIn,
  waitLine,
} from "./netns_rig.ts";
import { within } from "../support/wait.ts";

const unavailable = netnsUnavailable();
const ignore = unavailable !== null && Deno.env.get("CI") !== "true";
if (ignore) console.log(`egress_netns_test: skipped (${unavailable})`);

const TOKEN = "netns-egress-token-0123456789";
const WEB_PORT = 8000;
/** A port of the web server's address that `--egress-deny` names. */
const DENIED_PORT = 8081;
const SOCKS_PORT = 1080;
const DOWNLOAD_MIB = 256;
const WEB_MAIN = new URL("../support/random_web.ts", import.meta.url).pathname;
const SOCKS_CLIENT = new URL("../support/socks_client.ts", import.meta.url).href;

/** The three namespaces with the web server, mport-server and `mport socks` running. */
interface Rig {
  readonly topology: Topology;
  readonly web: Proc;
  readonly server: Proc;
  readonly socks: Proc;
  /** SHA-256 of what the web server serves. */
  readonly sha256: string;
  /** XDG_CONFIG_HOME for clients (removed with the rig). */
  readonly configHome: string;
  /** Everything the processes printed, for failure messages. */
  output(): string;
}

/** `mport socks` in the client namespace on 127.0.0.1:`port` with `token` (not waited for). */
function socksIn(topology: Topology, configHome: string, port: number, token: string): Proc {
  return clientIn(topology, [
    "socks",
    "--listen",
    `127.0.0.1:${port}`,
    "--server",
    SERVER_URL,
    "--token",
    token,
  ], { XDG_CONFIG_HOME: configHome });
}

async function withRig(fn: (rig: Rig) => Promise<void>): Promise<void> {
  const topology = await makeTopology();
  const configHome = await Deno.makeTempDir({ prefix: "mport-netns-config-" });
  const procs: [string, Proc][] = [];
  const output = () => procs.map(([name, p]) => `=== ${name}\n${p.output()}`).join("\n");
  try {
    const web = denoIn(topology, topology.internet, WEB_MAIN, [
      NET.internet,
      String(WEB_PORT),
      String(DOWNLOAD_MIB),
    ]);
    procs.push(["web", web]);
    const server = await startServerIn(topology, TOKEN, [
      "--db",
      ":memory:",
      "--egress",
      "--egress-deny",
      `${NET.internet}:${DENIED_PORT}`,
    ]);
    procs.push(["server", server]);
    const sha256 = (await waitLine(web, /^ready \d+ ([0-9a-f]{64})$/, "web server"))[1]!;
    const socks = socksIn(topology, configHome, SOCKS_PORT, TOKEN);
    procs.push(["socks", socks]);
    await waitLine(socks, /^socks socks5:\/\//, "mport socks");
    await fn({ topology, web, server, socks, sha256, configHome, output });
  } finally {
    await Promise.all(procs.map(([, p]) => p.stop()));
    await topology.close();
    await Deno.remove(configHome, { recursive: true }).catch(() => {});
  }
}

/** Runs curl in the client namespace; hashes what it downloads as it arrives. */
async function curlHash(
  topology: Topology,
  args: string[],
): Promise<{ ok: boolean; bytes: number; sha256: string; stderr: string; ms: number }> {
  const started = performance.now();
  const child = topology.command(topology.client, "curl", ["-sS", "--fail", ...args]).spawn();
  const stderr = new Response(child.stderr).text();
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of child.stdout) {
    hash.update(chunk);
    bytes += chunk.byteLength;
  }
  const status = await child.status;
  return {
    ok: status.success,
    bytes,
    sha256: hash.digest("hex"),
    stderr: await stderr,
    ms: performance.now() - started,
  };
}

/** SOCKS5 CONNECT reply codes for each target, asked from inside the client namespace. */
async function socksCodes(topology: Topology, targets: [string, number][]): Promise<number[]> {
  const code = `import { socksConnect } from ${JSON.stringify(SOCKS_CLIENT)};
const codes = [];
for (const [host, port] of ${JSON.stringify(targets)}) {
  const r = await socksConnect(${SOCKS_PORT}, host, port);
  if (r.code === 0) r.conn.close();
  codes.push(r.code);
}
console.log(JSON.stringify(codes));`;
  return JSON.parse(await topology.run(topology.client, Deno.execPath(), ["eval", code]));
}

Deno.test({
  name:
    `curl in a client namespace downloads ${DOWNLOAD_MIB} MiB through mport socks (--socks5-hostname and -x --proxytunnel) intact, and the target sees the server's address`,
  ignore,
  async fn() {
    await withRig(async ({ topology, web, sha256, output }) => {
      const url = `http://${NET.internet}:${WEB_PORT}/`;
      for (
        const via of [
          ["--socks5-hostname", `127.0.0.1:${SOCKS_PORT}`],
          ["-x", `http://127.0.0.1:${SOCKS_PORT}`, "--proxytunnel"],
        ]
      ) {
        const got = await curlHash(topology, ["--max-time", "25", ...via, url]);
        console.log(
          `curl ${via[0]}: ${got.bytes} bytes in ${got.ms.toFixed(0)} ms (${
            (got.bytes / 1024 / 1024 / (got.ms / 1000)).toFixed(0)
          } MiB/s)`,
        );
        assert.ok(got.ok, `curl ${via.join(" ")}: ${got.stderr}\n${output()}`);
        assert.deepEqual(
          { bytes: got.bytes, sha256: got.sha256 },
          { bytes: DOWNLOAD_MIB * 1024 * 1024, sha256 },
          via.join(" "),
        );
      }
      const peers = web.stdout.lines.filter((l) => l.startsWith("peer ")).map((l) => l.slice(5));
      assert.deepEqual(peers, [NET.server, NET.server], "each request came from the server");
      // Without the proxy the client reaches the target from its own address (the control).
      const direct = await curlHash(topology, ["--max-time", "25", "-r", "0-9", url]);
      assert.ok(direct.ok, direct.stderr);
      assert.equal(
        web.stdout.lines.filter((l) => l.startsWith("peer ")).at(-1),
        `peer ${NET.client}`,
      );
    });
  },
});

Deno.test({
  name:
    "egress refuses the server's loopback, its private network and a --egress-deny port with SOCKS reply 2, each audited; a user without the egress permission is refused",
  ignore,
  async fn() {
    await withRig(async ({ topology, configHome, output }) => {
      const denied: [string, number][] = [
        ["127.0.0.1", SERVER_PORT], // the server's own loopback
        [NET.serverPrivate, SERVER_PORT], // the server's LAN (mport-server listens there too)
        [NET.internet, DENIED_PORT], // named by --egress-deny
      ];
      // The allowed target first: the refusals below are the rules', not a broken path.
      const codes = await socksCodes(topology, [[NET.internet, WEB_PORT], ...denied]);
      assert.deepEqual(codes, [0, 2, 2, 2], output());
      const events = await serverApiIn(topology, TOKEN, "/events?type=egress_refused") as {
        items: { detail: { destination: string; code: string; message: string } }[];
      };
      for (const [host, port] of denied) {
        const row = events.items.find((e) => e.detail.destination === `${host}:${port}`);
        assert.ok(row, `an egress_refused event for ${host}:${port}: ${JSON.stringify(events)}`);
        assert.equal(row.detail.code, "egress_denied");
      }
      assert.match(
        events.items.find((e) => e.detail.destination === `${NET.internet}:${DENIED_PORT}`)!
          .detail.message,
        /denied by --egress-deny/,
      );

      // A user of the server's own (not a static token) has no egress until an admin grants it.
      await serverApiIn(topology, TOKEN, "/users", "POST", {
        name: "dave",
        password: "correct-horse-battery",
      });
      const made = await serverApiIn(topology, TOKEN, "/tokens", "POST", {
        user: "dave",
        label: "socks",
      }) as {
        secret: string;
      };
      const refused = socksIn(topology, configHome, SOCKS_PORT + 1, made.secret);
      try {
        const status = await within(
          refused.status(),
          30_000,
          "mport socks with a user that may not use egress",
        );
        assert.equal(status.code, 1, refused.output());
      } finally {
        await refused.stop("SIGKILL");
      }
      const stderr = refused.stderr.lines.join("\n");
      assert.match(
        stderr,
        /user dave may not use egress \(an admin runs: mport-server user set dave --egress\)/,
      );
    });
  },
});
