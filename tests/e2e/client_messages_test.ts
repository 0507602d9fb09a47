// End to end: what the client prints and how it exits — bad tokens, the adb line, --remote-port.
import { notStrictEqual, ok, strictEqual as assertEquals } from "node:assert/strict";
import {
  connect,
  Proc,
  roundTrip,
  sha256,
  startClient,
  startEcho,
  startServer,
  tunnelPort,
} from "./harness.ts";
import {
  closeQuietly,
  echo,
  escapeRe,
  exitWithin,
  portRange,
  randomBytes,
  startService,
  within,
} from "./scripted_services.ts";

const CLIENT_MAIN = new URL("../../client/main.ts", import.meta.url).pathname;
/** The adb daemon's port: the client prints `adb connect …` for tunnels to it. */
const ADB_PORT = 5555;

function canBind(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test("a wrong token makes the client exit non-zero saying the server rejected it", async () => {
  const server = await startServer();
  const client = startClient([
    "tcp",
    "127.0.0.1:9",
    "--server",
    server.wsUrl,
    "--token",
    "not-the-right-token-0000",
  ]);
  try {
    const status = await exitWithin(client, 10_000);
    notStrictEqual(status.code, 0, client.output());
    ok(
      client.stderr.lines.includes(
        "mport: the server rejected the token (wrong or revoked): check --token / MPORT_TOKEN",
      ),
      client.output(),
    );
    assertEquals(client.stdout.lines.length, 0, "no tunnel line may be printed");
  } finally {
    await client.stop("SIGKILL");
    await server.stop();
  }
});

Deno.test("without a token the client exits 2 before connecting and says there is no token", async () => {
  const env = Deno.env.toObject();
  delete env.MPORT_TOKEN;
  // No saved login (`mport login`) either.
  env.XDG_CONFIG_HOME = "/nonexistent/mport-test-config";
  const client = new Proc(
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLIENT_MAIN, "tcp", "127.0.0.1:9", "--server", "ws://127.0.0.1:9"],
      clearEnv: true,
      env: { ...env, NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn(),
  );
  try {
    const status = await exitWithin(client, 10_000);
    assertEquals(status.code, 2, client.output());
    ok(
      client.stderr.lines.includes(
        "mport: no token: pass --token-file FILE (or --token TOKEN), set MPORT_TOKEN, or save " +
          "one with `mport login TOKEN --server URL`",
      ),
      client.output(),
    );
  } finally {
    await client.stop("SIGKILL");
  }
});

Deno.test("a tunnel to port 5555 prints a ready-to-paste adb connect line; other ports do not", async () => {
  // The line depends only on the local port, so nothing needs to listen on 5555 here.
  const other = startEcho();
  const server = await startServer();
  const adb = startClient(["tcp", `127.0.0.1:${ADB_PORT}`, "--server", server.wsUrl]);
  const plain = startClient(["tcp", `127.0.0.1:${other.port}`, "--server", server.wsUrl]);
  try {
    const port = await tunnelPort(adb);
    await adb.stdout.wait(new RegExp(`^adb connect 127\\.0\\.0\\.1:${port}$`), 5_000);
    await tunnelPort(plain);
  } finally {
    await adb.stop();
    await plain.stop();
    await server.stop();
    await other.close();
  }
  // Once stopped, every line the plain client printed has been read.
  ok(!plain.stdout.lines.some((l) => l.includes("adb")), plain.output());
  assertEquals(adb.stdout.lines.filter((l) => l.startsWith("adb connect ")).length, 1);
});

Deno.test({
  name: "the adb connect address reaches the service on 127.0.0.1:5555",
  ignore: !canBind(ADB_PORT),
  async fn() {
    const service = startService(echo, ADB_PORT);
    const server = await startServer();
    const client = startClient(["tcp", `127.0.0.1:${ADB_PORT}`, "--server", server.wsUrl]);
    let conn: Deno.TcpConn | null = null;
    try {
      const m = await client.stdout.wait(/^adb connect 127\.0\.0\.1:(\d+)$/);
      conn = await connect(Number(m[1]));
      const data = randomBytes(128 * 1024);
      const got = await within(roundTrip(conn, data), 10_000, "round trip to :5555");
      assertEquals(await sha256(got), await sha256(data));
      assertEquals(service.accepted, 1);
    } finally {
      if (conn) closeQuietly(conn);
      await client.stop();
      await server.stop();
      await service.close();
    }
  },
});

Deno.test("--remote-port inside the range gets exactly that port; outside it the refusal names the range", async () => {
  const echoService = startEcho();
  const range = portRange();
  const server = await startServer(["--port-range", range.text]);
  // A port of the range that is free right now (the range overlaps the ephemeral ports).
  const start = Math.floor(Math.random() * 100);
  const wanted = Array.from({ length: 100 }, (_, i) => range.low + (start + i) % 100)
    .find(canBind);
  ok(wanted !== undefined, `no free port in ${range.text}`);
  const outside = range.high + 1;
  const inRange = startClient([
    "tcp",
    `127.0.0.1:${echoService.port}`,
    "--server",
    server.wsUrl,
    "--remote-port",
    String(wanted),
  ]);
  const outOfRange = startClient([
    "tcp",
    `127.0.0.1:${echoService.port}`,
    "--server",
    server.wsUrl,
    "--remote-port",
    String(outside),
    "--name",
    "too-high",
  ]);
  let conn: Deno.TcpConn | null = null;
  try {
    assertEquals(await tunnelPort(inRange), wanted, inRange.output());
    conn = await connect(wanted);
    const data = randomBytes(64 * 1024);
    assertEquals(
      await sha256(await within(roundTrip(conn, data), 10_000, "echo")),
      await sha256(data),
    );

    const refusal = `mport: tunnel too-high refused: port ${outside} is outside the server's ` +
      `allowed range ${range.low}-${range.high} (choose a port in that range, or none)`;
    await outOfRange.stderr.wait(new RegExp(`^${escapeRe(refusal)}$`));
    assertEquals(outOfRange.stdout.lines.length, 0, "a refused tunnel prints no tunnel line");
  } finally {
    if (conn) closeQuietly(conn);
    await inRange.stop();
    await outOfRange.stop();
    await server.stop();
    await echoService.close();
  }
});

Deno.test("a wrong path prefix makes the client exit 1 naming the 404 and --server's path", async () => {
  const server = await startServer();
  const client = startClient(["tcp", "127.0.0.1:9", "--server", `${server.wsUrl}/not-mport`]);
  try {
    const status = await exitWithin(client, 10_000);
    assertEquals(status.code, 1, client.output());
    ok(
      client.stderr.lines.some((l) =>
        l.startsWith(`mport: 127.0.0.1:${server.port} answered HTTP 404 Not Found`) &&
        l.includes("check --server and its path")
      ),
      client.output(),
    );
  } finally {
    await client.stop("SIGKILL");
    await server.stop();
  }
});

Deno.test("wss:// to a plain server fails at once with a TLS hint and keeps retrying", async () => {
  const server = await startServer();
  const client = startClient([
    "tcp",
    "127.0.0.1:9",
    "--server",
    `wss://127.0.0.1:${server.port}`,
  ]);
  try {
    const started = Date.now();
    await client.stderr.wait(/reconnecting in /, 5_000);
    ok(Date.now() - started < 3_000, "the TLS failure was not reported at once");
    const expected = `mport: TLS handshake with 127.0.0.1:${server.port} failed: the server ` +
      "does not speak TLS; is it a plain ws:// server (then use ws://)?; reconnecting in ";
    ok(client.stderr.lines.some((l) => l.startsWith(expected)), client.output());
  } finally {
    await client.stop("SIGKILL");
    await server.stop();
  }
});
