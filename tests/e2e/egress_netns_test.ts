// End to end in network namespaces: `mport socks` in a client namespace, mport-server with
// --egress in a server namespace, a web server on the "internet" between them. Traffic must leave
// from the server's address, and egress must not reach into the server's own networks.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { makeTopology, NET, netnsUnavailable, type Topology } from "../../scripts/netns.ts";
import { CLIENT_MAIN, LineReader, SERVER_MAIN } from "../../scripts/mport_procs.ts";
import { within } from "../support/wait.ts";

const unavailable = netnsUnavailable();
const ignore = unavailable !== null && Deno.env.get("CI") !== "true";
if (ignore) console.log(`egress_netns_test: skipped (${unavailable})`);

const TOKEN = "netns-egress-token-0123456789";
const SERVER_PORT = 8080;
const WEB_PORT = 8000;
/** A port of the web server's address that `--egress-deny` names. */
const DENIED_PORT = 8081;
const SOCKS_PORT = 1080;
const DOWNLOAD_MIB = 256;
const WEB_MAIN = new URL("../support/random_web.ts", import.meta.url).pathname;
const SOCKS_CLIENT = new URL("../support/socks_client.ts", import.meta.url).href;

/** A process inside a namespace, its output read line by line. */
class NsProc {
  readonly child: Deno.ChildProcess;
  readonly stdout: LineReader;
  readonly stderr: LineReader;

  constructor(readonly name: string, command: Deno.Command) {
    this.child = command.spawn();
    this.stdout = new LineReader(this.child.stdout);
    this.stderr = new LineReader(this.child.stderr);
  }

  async stop(): Promise<Deno.CommandStatus> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // already exited
    }
    const status = await this.child.status;
    await Promise.all([this.stdout.done, this.stderr.done]);
    return status;
  }

  output(): string {
    return `--- ${this.name} stdout\n${this.stdout.lines.join("\n")}\n--- ${this.name} stderr\n${
      this.stderr.lines.join("\n")
    }`;
  }
}

/** The three namespaces with the web server, mport-server and `mport socks` running. */
interface Rig {
  readonly topology: Topology;
  readonly web: NsProc;
  readonly server: NsProc;
  readonly socks: NsProc;
  /** SHA-256 of what the web server serves. */
  readonly sha256: string;
  /** XDG_CONFIG_HOME for clients (removed with the rig). */
  readonly configHome: string;
  /** Everything the processes printed, for failure messages. */
  output(): string;
}

async function withRig(fn: (rig: Rig) => Promise<void>): Promise<void> {
  const topology = await makeTopology();
  const configHome = await Deno.makeTempDir({ prefix: "mport-netns-config-" });
  const procs: NsProc[] = [];
  const output = () => procs.map((p) => p.output()).join("\n");
  try {
    const web = new NsProc(
      "web",
      topology.command(topology.internet, Deno.execPath(), [
        "run",
        "-A",
        WEB_MAIN,
        NET.internet,
        String(WEB_PORT),
        String(DOWNLOAD_MIB),
      ]),
    );
    procs.push(web);
    const server = new NsProc(
      "server",
      topology.command(topology.server, Deno.execPath(), [
        "run",
        "-A",
        "--unstable-net",
        SERVER_MAIN,
        "--listen",
        `0.0.0.0:${SERVER_PORT}`,
        "--token",
        TOKEN,
        "--db",
        ":memory:",
        "--stats-interval",
        "0",
        "--egress",
        "--egress-deny",
        `${NET.internet}:${DENIED_PORT}`,
      ]),
    );
    procs.push(server);
    let sha256: string;
    try {
      const [ready] = await Promise.all([
        web.stdout.wait(/^ready \d+ ([0-9a-f]{64})$/, 30_000),
        server.stdout.wait(/listening on/, 30_000),
      ]);
      sha256 = ready[1]!;
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${output()}`);
    }
    const socks = new NsProc(
      "socks",
      topology.command(topology.client, Deno.execPath(), [
        "run",
        "-A",
        "--unstable-net",
        CLIENT_MAIN,
        "socks",
        "--listen",
        `127.0.0.1:${SOCKS_PORT}`,
        "--server",
        `ws://${NET.server}:${SERVER_PORT}`,
        "--token",
        TOKEN,
      ], { env: { XDG_CONFIG_HOME: configHome } }),
    );
    procs.push(socks);
    try {
      await socks.stdout.wait(/^socks socks5:\/\//, 30_000);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${output()}`);
    }
    await fn({ topology, web, server, socks, sha256, configHome, output });
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
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

/** The server's REST API, called with curl inside the server namespace. */
async function api(
  topology: Topology,
  path: string,
  body?: unknown,
  method = body === undefined ? "GET" : "POST",
): Promise<unknown> {
  const out = await topology.run(topology.server, "curl", [
    "-sS",
    "--fail-with-body",
    "-X",
    method,
    "-H",
    `authorization: Bearer ${TOKEN}`,
    "-H",
    "content-type: application/json",
    ...(body === undefined ? [] : ["-d", JSON.stringify(body)]),
    `http://127.0.0.1:${SERVER_PORT}/api/v1${path}`,
  ]);
  return JSON.parse(out);
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
      const events = await api(topology, "/events?type=egress_refused") as {
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
      await api(topology, "/users", { name: "dave", password: "correct-horse-battery" });
      const made = await api(topology, "/tokens", { user: "dave", label: "socks" }) as {
        secret: string;
      };
      const refused = await within(
        topology.command(topology.client, Deno.execPath(), [
          "run",
          "-A",
          "--unstable-net",
          CLIENT_MAIN,
          "socks",
          "--listen",
          `127.0.0.1:${SOCKS_PORT + 1}`,
          "--server",
          `ws://${NET.server}:${SERVER_PORT}`,
          "--token",
          made.secret,
        ], { env: { XDG_CONFIG_HOME: configHome } }).output(),
        30_000,
        "mport socks with a user that may not use egress",
      );
      const stderr = new TextDecoder().decode(refused.stderr);
      assert.equal(refused.code, 1, stderr);
      assert.match(
        stderr,
        /user dave may not use egress \(an admin runs: mport-server user set dave --egress\)/,
      );
    });
  },
});
