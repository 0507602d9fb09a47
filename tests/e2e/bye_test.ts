// End to end: a client that stops on purpose says `bye`, and the server frees its ports at once
// (while a crashed client's ports are still kept for --grace, see lifecycle_test.ts).
import assert from "node:assert/strict";
import { CloseCode } from "../../shared/protocol.ts";
import {
  connect,
  metric,
  type Proc,
  startClient,
  startEcho,
  startServer,
  tunnelPort,
} from "./harness.ts";
import { closedByServer, ControlPeer, echoRoundTrip, metricReaches } from "./raw_peers.ts";
import {
  closeQuietly,
  echoInHalves,
  exitWithin,
  randomBytes,
  refusesConnections,
  until,
  within,
} from "./scripted_services.ts";

Deno.test("SIGTERM: the client says bye and within 2 s its port refuses connections; the port comes back for the same name", async () => {
  const echo = startEcho();
  // The default --grace of 60 s: only the bye can free the port this fast.
  const server = await startServer();
  const args = ["tcp", `127.0.0.1:${echo.port}`, "--name", "web", "--server", server.wsUrl];
  const client = startClient(args);
  let next: Proc | null = null;
  try {
    const port = await tunnelPort(client);
    await echoRoundTrip(port);
    assert.equal(await metric(server, "mport_tunnels_active"), 1);
    const errFrom = server.stderr.lines.length;

    const signalled = Date.now();
    client.child.kill("SIGTERM");
    await refusesConnections(port, 2_000);
    await until(
      "the tunnel is gone from the metrics",
      async () => await metric(server, "mport_tunnels_active") === 0,
      2_000 - (Date.now() - signalled),
    );
    await server.stderr.wait(
      /said bye: session \S+ ends and releases 1 tunnel\(s\) now/,
      1_000,
      errFrom,
    );
    await server.stderr.wait(
      /tunnel web released port \d+: its client stopped \(bye\)/,
      1_000,
      errFrom,
    );
    assert.equal(await metric(server, "mport_tunnels_released_total"), 1);
    const status = await exitWithin(client, 10_000);
    assert.equal(status.code, 0, client.output());

    // The port was released, not its reservation: the same name gets it back.
    next = startClient(args);
    assert.equal(await tunnelPort(next), port, next.output());
    await echoRoundTrip(port);
  } finally {
    await client.stop("SIGKILL");
    await next?.stop();
    await server.stop();
    await echo.close();
  }
});

Deno.test("after a bye, a transfer already under way finishes byte-exact while new users are refused", async () => {
  const echo = startEcho();
  const server = await startServer();
  const client = startClient(["tcp", `127.0.0.1:${echo.port}`, "--server", server.wsUrl]);
  let conn: Deno.TcpConn | null = null;
  try {
    const port = await tunnelPort(client);
    const data = randomBytes(4 * 1024 * 1024);
    conn = await connect(port);
    await echoInHalves(conn, data, async () => {
      const errFrom = server.stderr.lines.length;
      client.child.kill("SIGTERM");
      await server.stderr.wait(/said bye/, 5_000, errFrom);
      await refusesConnections(port, 2_000);
    });
    const status = await exitWithin(client, 10_000);
    assert.equal(status.code, 0, client.output());
    await metricReaches(server, "mport_data_connections", 0);
  } finally {
    if (conn) closeQuietly(conn);
    await client.stop("SIGKILL");
    await server.stop();
    await echo.close();
  }
});

Deno.test("a bye resets a user connection held for the client at once instead of after --hold-timeout", async () => {
  const server = await startServer(["--hold-timeout", "15"]);
  let user: Deno.TcpConn | null = null;
  const { peer, welcome } = await ControlPeer.welcomed(server, [{ name: "held" }]);
  try {
    const port = (welcome.tunnels as { remotePort: number }[])[0]!.remotePort;
    // No data connection: the server holds the user for the client.
    user = await connect(port);
    await metricReaches(server, "mport_connections_active", 1);

    const sent = Date.now();
    peer.sendJson({ type: "bye" });
    assert.equal(await closedByServer(user, 2_000), "reset");
    await refusesConnections(port, 2_000 - (Date.now() - sent));
    const closed = await within(peer.ws.closed, 2_000, "the server closes the control channel");
    assert.equal(closed.code, CloseCode.normal);
    assert.equal(await metric(server, "mport_tunnels_active"), 0);
    assert.equal(await metric(server, "mport_connections_active"), 0);
  } finally {
    if (user) closeQuietly(user);
    await peer.close();
    await server.stop();
  }
});
