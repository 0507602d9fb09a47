// End to end: who may hold a tunnel — the per-user limit under simultaneous sessions, and a tunnel
// name that only its own client (by persistent client id) may resume or take over.
import assert from "node:assert/strict";
import { CloseCode } from "../../shared/protocol.ts";
import {
  metric,
  type Proc,
  type ServerProc,
  startClient,
  startEcho,
  startServer,
  TEST_TOKEN,
  tunnelPort,
} from "./harness.ts";
import { ControlPeer, echoRoundTrip, metricReaches } from "./raw_peers.ts";
import { exitWithin } from "./scripted_services.ts";

async function refusals(server: ServerProc, reason: string): Promise<number> {
  return await metric(server, `mport_refusals_total{reason="${reason}"}`);
}

/** The refusal a client gets for a name that another client id holds, as a RegExp source. */
const IN_USE = (name: string) =>
  `tunnel ${name} is in use by another client \\(127\\.0\\.0\\.1, since ` +
  `\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ\\); pick another --name or stop that client`;

const ID_A = "machine-a-0123456789";
const ID_B = "machine-b-0123456789";

type Grant = { name: string; remotePort: number };
type Refusal = { name: string; code: string; message: string };

Deno.test("20 control connections at once asking for one tunnel each get exactly --max-tunnels-per-client 2", async () => {
  const server = await startServer(["--max-tunnels-per-client", "2"]);
  const peers: ControlPeer[] = [];
  try {
    for (let i = 0; i < 20; i++) peers.push(await ControlPeer.open(server));
    // Every hello leaves before the first welcome can arrive.
    peers.forEach((p, i) => p.sendHello([{ name: `t${i}` }], `machine-${i}-0123456789`));
    const welcomes = await Promise.all(peers.map((p) => p.take("welcome", 15_000)));
    const granted = welcomes.flatMap((w) => w.tunnels as Grant[]);
    const refused = welcomes.flatMap((w) => w.refused as Refusal[]);
    assert.equal(granted.length, 2, JSON.stringify(granted));
    assert.equal(refused.length, 18);
    for (const r of refused) {
      assert.equal(r.code, "tunnel_limit");
      assert.equal(r.message, "tunnel limit reached: at most 2 tunnels per user");
    }
    assert.equal(await metric(server, "mport_tunnels_active"), 2);
    assert.equal(await refusals(server, "tunnel_limit"), 18);
  } finally {
    for (const p of peers) await p.close();
    await server.stop();
  }
});

Deno.test("a second machine with the same token and tunnel name is refused, and the first keeps serving without flapping", async () => {
  const echo = startEcho();
  const server = await startServer();
  const dir = Deno.makeTempDirSync({ prefix: "mport-ids-" });
  const args = (idFile: string) => [
    "tcp",
    `127.0.0.1:${echo.port}`,
    "--name",
    "shared",
    "--server",
    server.wsUrl,
    "--client-id-file",
    `${dir}/${idFile}`,
  ];
  const first = startClient(args("a"));
  let second: Proc | null = null;
  try {
    const port = await tunnelPort(first);
    await echoRoundTrip(port);
    // The real client made its id file on first run, readable by its owner only.
    assert.match(Deno.readTextFileSync(`${dir}/a`), /^[0-9a-f]{32}\n$/);
    assert.equal(Deno.statSync(`${dir}/a`).mode! & 0o777, 0o600);

    second = startClient(args("b"));
    const status = await exitWithin(second, 15_000);
    assert.equal(status.code, 1, second.output());
    assert.equal(second.stdout.lines.length, 0, second.output());
    assert.ok(
      second.stderr.lines.some((l) =>
        new RegExp(`^mport: tunnel shared refused: ${IN_USE("shared")}$`).test(l)
      ),
      second.output(),
    );
    assert.ok(
      second.stderr.lines.includes("mport: the server refused every tunnel"),
      second.output(),
    );

    // For 5 s the tunnel stays with the first client: a round trip every 50 ms works, and
    // nothing moves the tunnel.
    const end = Date.now() + 5_000;
    let trips = 0;
    while (Date.now() < end && trips < 1_000) {
      await echoRoundTrip(port, 16 * 1024);
      trips++;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(trips >= 20, `only ${trips} round trips in 5 s`);
    assert.deepEqual(first.stderr.lines, [], first.output());
    assert.equal(await metric(server, "mport_tunnels_created_total"), 1);
    assert.equal(await metric(server, "mport_tunnels_active"), 1);
    assert.equal(await refusals(server, "name_in_use"), 1);
    assert.ok(
      !server.stderr.lines.some((l) => /resumed by session/.test(l)),
      server.output(),
    );
  } finally {
    await second?.stop("SIGKILL");
    await first.stop();
    await server.stop();
    await echo.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("the same client id comes back after kill -9 to the same public port", async () => {
  const echo = startEcho();
  const server = await startServer();
  const dir = Deno.makeTempDirSync({ prefix: "mport-ids-" });
  const args = [
    "tcp",
    `127.0.0.1:${echo.port}`,
    "--name",
    "mine",
    "--server",
    server.wsUrl,
    "--client-id-file",
    `${dir}/id`,
  ];
  const first = startClient(args);
  let second: Proc | null = null;
  try {
    const port = await tunnelPort(first);
    await first.stop("SIGKILL");
    second = startClient(args);
    assert.equal(await tunnelPort(second), port, second.output());
    await echoRoundTrip(port);
    assert.equal(await metric(server, "mport_tunnels_created_total"), 1);
  } finally {
    await first.stop("SIGKILL");
    await second?.stop();
    await server.stop();
    await echo.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("only the same client id takes over a live tunnel; another id or none is refused, and anyone resumes a detached one", async () => {
  const server = await startServer();
  const peers: ControlPeer[] = [];
  const welcomed = async (clientId?: string) => {
    const r = await ControlPeer.welcomed(server, [{ name: "adb" }], TEST_TOKEN, clientId);
    peers.push(r.peer);
    return r;
  };
  try {
    const a = await welcomed(ID_A);
    const port = (a.welcome.tunnels as Grant[])[0]!.remotePort;

    for (const other of [ID_B, undefined]) {
      const { welcome } = await welcomed(other);
      assert.deepEqual(welcome.tunnels, []);
      const refused = welcome.refused as Refusal[];
      assert.equal(refused.length, 1);
      assert.equal(refused[0]!.code, "name_in_use");
      assert.match(refused[0]!.message, new RegExp(`^${IN_USE("adb")}$`));
    }
    assert.equal(a.peer.messages.length, 0, "the holder is told nothing");

    // The same id (a reconnect the server has not noticed yet) takes it over, port and all.
    const again = await welcomed(ID_A);
    assert.deepEqual((again.welcome.tunnels as Grant[]).map((g) => g.remotePort), [port]);
    const closed = await a.peer.take("tunnel_close");
    assert.equal(closed.reason, "taken over by a newer connection of the same client");
    assert.equal(
      await a.peer.refused(CloseCode.replaced),
      "every tunnel of this session was taken over by a newer connection of the same client",
    );

    // Once its holder is gone (in the grace period), a client without an id may resume it.
    for (const p of peers) await p.close();
    await metricReaches(server, "mport_clients_connected", 0);
    const anon = await welcomed();
    assert.deepEqual((anon.welcome.tunnels as Grant[]).map((g) => g.remotePort), [port]);
    assert.equal(await metric(server, "mport_tunnels_created_total"), 1);
  } finally {
    for (const p of peers) await p.close();
    await server.stop();
  }
});
