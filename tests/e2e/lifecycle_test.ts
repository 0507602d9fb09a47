// End to end: the tunnel survives a killed client and a restarted server, and ends on schedule.
import { strictEqual as assertEquals } from "node:assert/strict";
import {
  connect,
  metric,
  roundTrip,
  sha256,
  startClient,
  startEcho,
  startServer,
  tunnelPort,
} from "./harness.ts";
import { freeStablePort } from "../support/net.ts";
import {
  closeQuietly,
  echoInHalves,
  portRange,
  randomBytes,
  refusesConnections,
  until,
  within,
} from "./scripted_services.ts";

/** Sends `data` through the public port and checks that the echo is byte-exact. */
async function assertEchoes(port: number, data: Uint8Array): Promise<void> {
  const conn = await connect(port);
  try {
    const got = await within(roundTrip(conn, data), 15_000, "echo round trip");
    assertEquals(got.byteLength, data.byteLength);
    assertEquals(await sha256(got), await sha256(data));
  } finally {
    closeQuietly(conn);
  }
}

Deno.test("a connection held while the client was killed is bridged by its successor on the same port", async () => {
  const echo = startEcho();
  const server = await startServer(["--hold-timeout", "20"]);
  const args = ["tcp", `127.0.0.1:${echo.port}`, "--server", server.wsUrl];
  const first = startClient(args);
  let second: ReturnType<typeof startClient> | null = null;
  let conn: Deno.TcpConn | null = null;
  try {
    const port = await tunnelPort(first);
    await assertEchoes(port, randomBytes(64 * 1024));

    await first.stop("SIGKILL");
    await until(
      "server notices the killed client",
      async () => await metric(server, "mport_clients_connected") === 0,
    );

    // Nobody serves the tunnel now: the server must hold this connection, not refuse it.
    conn = await connect(port);
    const data = randomBytes(512 * 1024);
    const reply = roundTrip(conn, data);
    reply.catch(() => {}); // awaited below; avoid an unhandled rejection if the test fails first
    await until(
      "server holds the user connection",
      async () => await metric(server, "mport_connections_active") === 1,
    );
    assertEquals(echo.accepted, 1, "nothing may reach the service while no client runs");

    second = startClient(args);
    assertEquals(await tunnelPort(second), port, "the new client must get the same public port");
    const got = await within(reply, 15_000, "held connection's round trip");
    assertEquals(got.byteLength, data.byteLength);
    assertEquals(await sha256(got), await sha256(data));
  } finally {
    if (conn) closeQuietly(conn);
    await first.stop("SIGKILL");
    await second?.stop();
    await server.stop();
    await echo.close();
  }
});

Deno.test("after a server restart on the same address the client returns with the same public port", async () => {
  const echo = startEcho();
  const listen = `127.0.0.1:${freeStablePort()}`;
  const serverArgs = ["--listen", listen, "--port-range", portRange().text];
  let server = await startServer(serverArgs);
  const client = startClient(["tcp", `127.0.0.1:${echo.port}`, "--server", `ws://${listen}`]);
  try {
    const port = await tunnelPort(client);
    await assertEchoes(port, randomBytes(100 * 1024));

    const outFrom = client.stdout.lines.length;
    const errFrom = client.stderr.lines.length;
    const stopped = await server.stop("SIGTERM");
    assertEquals(stopped.code, 0, server.output());
    // One sentence: what happened, then what the client does about it.
    await client.stderr.wait(
      /^mport: the server is shutting down; reconnecting in \d+\.\d s$/,
      10_000,
      errFrom,
    );

    server = await startServer(serverArgs);
    assertEquals(await tunnelPort(client, outFrom, 20_000), port, client.output());
    await assertEchoes(port, randomBytes(100 * 1024));
  } finally {
    await client.stop();
    await server.stop();
    await echo.close();
  }
});

Deno.test("after the grace period a vanished client's public port is released and refuses connections", async () => {
  const echo = startEcho();
  const server = await startServer(["--grace", "1"]);
  const client = startClient(["tcp", `127.0.0.1:${echo.port}`, "--server", server.wsUrl]);
  try {
    const port = await tunnelPort(client);
    await client.stop("SIGKILL");
    await until(
      "the tunnel is released",
      async () => await metric(server, "mport_tunnels_released_total") === 1,
    );
    assertEquals(await metric(server, "mport_tunnels_active"), 0);
    await refusesConnections(port);
  } finally {
    await client.stop("SIGKILL");
    await server.stop();
    await echo.close();
  }
});

Deno.test("SIGTERM lets a transfer in flight finish byte-exact within --drain, then the server exits 0", async () => {
  const echo = startEcho();
  const server = await startServer(["--drain", "5"]);
  const client = startClient(["tcp", `127.0.0.1:${echo.port}`, "--server", server.wsUrl]);
  let conn: Deno.TcpConn | null = null;
  try {
    const port = await tunnelPort(client);
    const data = randomBytes(16 * 1024 * 1024);
    conn = await connect(port);
    await echoInHalves(conn, data, async () => {
      const errFrom = server.stderr.lines.length;
      server.child.kill("SIGTERM");
      await server.stderr.wait(/shutting down/, 5_000, errFrom);
      // New users are turned away; only the open transfer is waited for.
      await refusesConnections(port);
    });
    const status = await within(server.status(), 10_000, "server exit");
    assertEquals(status.code, 0, server.output());
  } finally {
    if (conn) closeQuietly(conn);
    await client.stop();
    await server.stop("SIGKILL");
    await echo.close();
  }
});
