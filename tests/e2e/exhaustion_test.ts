// End to end: a server that runs out of file descriptors keeps its listener and serves a client.
import assert from "node:assert/strict";
import { LineReader, SERVER_MAIN } from "../../scripts/mport_procs.ts";
import { connect, startClient, startEcho, TEST_TOKEN, tunnelPort } from "./harness.ts";
import { within } from "../support/wait.ts";

/** Descriptor limit of the server process under test (`ulimit -n`, soft and hard). */
const FD_LIMIT = 300;
/** Silent connections opened against it: well past the limit. */
const FLOOD = 450;

Deno.test(`a server at its descriptor limit (ulimit -n ${FD_LIMIT}) keeps accepting: after ${FLOOD} silent connections a client connects and its tunnel works`, async () => {
  const echo = startEcho();
  const low = 20000 + Math.floor(Math.random() * 120) * 100;
  // Caps far above the descriptor limit, so the flood really exhausts descriptors instead of
  // being refused by a cap; a long header timeout keeps the silent connections open meanwhile.
  const args = [
    "--listen",
    "127.0.0.1:0",
    "--port-range",
    `${low}-${low + 99}`,
    "--bind",
    "127.0.0.1",
    "--token",
    TEST_TOKEN,
    "--db",
    ":memory:",
    "--stats-interval",
    "0",
    "--header-timeout",
    "60",
    "--max-http-connections",
    "100000",
    "--max-http-connections-per-ip",
    "100000",
    "--max-unauthenticated-per-ip",
    "100000",
  ];
  const quoted = [Deno.execPath(), "run", "-A", SERVER_MAIN, ...args].map((a) => `'${a}'`);
  const child = new Deno.Command("bash", {
    args: ["-c", `ulimit -n ${FD_LIMIT} && exec ${quoted.join(" ")}`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const stdout = new LineReader(child.stdout);
  const stderr = new LineReader(child.stderr);
  const silent: Deno.TcpConn[] = [];
  let client: ReturnType<typeof startClient> | null = null;
  try {
    const m = await stdout.wait(/listening on http:\/\/127\.0\.0\.1:(\d+)/, 20_000);
    const port = Number(m[1]);
    for (let i = 0; i < FLOOD; i++) {
      try {
        silent.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      } catch {
        break; // the kernel backlog may fill up too; enough pressure either way
      }
    }
    assert.ok(silent.length > FD_LIMIT, `only ${silent.length} connections opened`);
    await within(
      stderr.wait(/cannot accept connections on port \d+: .*Too many open files/, 15_000),
      20_000,
      "the fd-exhaustion warning",
    );
    let alive = true;
    child.status.then(() => (alive = false));
    for (const c of silent.splice(0)) c.close();

    // The listener survived: a real client connects, gets its tunnel, and bytes go through.
    client = startClient(["tcp", `127.0.0.1:${echo.port}`, "--server", `ws://127.0.0.1:${port}`]);
    const publicPort = await tunnelPort(client, 0, 20_000);
    const user = await connect(publicPort);
    const hello = new TextEncoder().encode("still serving after EMFILE");
    await user.write(hello);
    const buf = new Uint8Array(64);
    let got = 0;
    while (got < hello.length) {
      const n = await within(user.read(buf.subarray(got)), 5000, "echo");
      assert.notEqual(n, null);
      got += n!;
    }
    assert.deepEqual(buf.subarray(0, got), hello);
    user.close();
    assert.ok(alive, "the server process exited");
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    for (const c of silent) c.close();
    await client?.stop();
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    await child.status;
    await Promise.all([stdout.done, stderr.done]);
    await echo.close();
  }
});
