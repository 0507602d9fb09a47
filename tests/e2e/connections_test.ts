// End to end: many user connections at once, half-close in both directions, a local service down.
import { ok, strictEqual as assertEquals } from "node:assert/strict";
import {
  connect,
  metric,
  readAll,
  roundTrip,
  sha256,
  startClient,
  startEcho,
  startServer,
  tunnelPort,
} from "./harness.ts";
import { freePort } from "../support/net.ts";
import {
  closeQuietly,
  echo,
  escapeRe,
  randomBytes,
  startService,
  until,
  within,
  writeAll,
} from "./scripted_services.ts";

Deno.test("200 concurrent connections through one tunnel each get their own bytes back intact", async () => {
  const service = startEcho();
  // All 200 arrive within a millisecond or two, before the client has answered the first stream
  // requests: above the default per-tunnel limit of 64 unbridged connections (--max-pending).
  const server = await startServer(["--max-pending", "256"]);
  const client = startClient(["tcp", `127.0.0.1:${service.port}`, "--server", server.wsUrl]);
  const conns: Deno.TcpConn[] = [];
  try {
    const port = await tunnelPort(client);
    const one = async () => {
      const data = randomBytes((20 + Math.floor(Math.random() * 181)) * 1024);
      const conn = await connect(port);
      conns.push(conn);
      const got = await roundTrip(conn, data);
      closeQuietly(conn);
      return { sent: await sha256(data), got: await sha256(got), size: got.byteLength };
    };
    const results = await within(
      Promise.all(Array.from({ length: 200 }, one)),
      30_000,
      "200 round trips",
    );
    const bad = results.filter((r) => r.got !== r.sent);
    assertEquals(bad.length, 0, `${bad.length} echoes differ\n${server.output()}`);
    assertEquals(service.accepted, 200);
    assertEquals(await metric(server, "mport_connections_total"), 200);
  } finally {
    for (const c of conns) closeQuietly(c);
    await client.stop();
    await server.stop();
    await service.close();
  }
});

Deno.test("a reply written after the user's half-close still arrives in full", async () => {
  // The service answers only at EOF, with the SHA-256 of everything it read.
  const service = startService(async (conn) => {
    const got = await readAll(conn);
    await writeAll(conn, new TextEncoder().encode(await sha256(got)));
  });
  const server = await startServer();
  const client = startClient(["tcp", `127.0.0.1:${service.port}`, "--server", server.wsUrl]);
  let conn: Deno.TcpConn | null = null;
  try {
    const port = await tunnelPort(client);
    const data = randomBytes(6 * 1024 * 1024); // more than one credit window
    conn = await connect(port);
    const reply = await within(roundTrip(conn, data), 15_000, "reply after half-close");
    assertEquals(new TextDecoder().decode(reply), await sha256(data));
  } finally {
    if (conn) closeQuietly(conn);
    await client.stop();
    await server.stop();
    await service.close();
  }
});

Deno.test("the user keeps sending after the service half-closed, and the service receives it all", async () => {
  const greeting = "hello from a service that has nothing more to say\n";
  const received = Promise.withResolvers<Uint8Array>();
  const service = startService(async (conn) => {
    await writeAll(conn, new TextEncoder().encode(greeting));
    await conn.closeWrite();
    received.resolve(await readAll(conn));
  });
  const server = await startServer();
  const client = startClient(["tcp", `127.0.0.1:${service.port}`, "--server", server.wsUrl]);
  let conn: Deno.TcpConn | null = null;
  try {
    const port = await tunnelPort(client);
    conn = await connect(port);
    // The greeting, then EOF: the service's half-close reached the user.
    const got = await within(readAll(conn), 10_000, "greeting and EOF");
    assertEquals(new TextDecoder().decode(got), greeting);
    const data = randomBytes(5 * 1024 * 1024);
    await writeAll(conn, data);
    await conn.closeWrite();
    const atService = await within(received.promise, 15_000, "bytes at the service");
    assertEquals(atService.byteLength, data.byteLength);
    assertEquals(await sha256(atService), await sha256(data));
  } finally {
    if (conn) closeQuietly(conn);
    await client.stop();
    await server.stop();
    await service.close();
  }
});

Deno.test("a user connection to a service that is down is closed promptly and the client keeps serving", async () => {
  const localPort = freePort(); // nothing listens here until later in the test
  const server = await startServer();
  const client = startClient(["tcp", `127.0.0.1:${localPort}`, "--server", server.wsUrl]);
  let exited = false;
  client.status().then(() => (exited = true));
  let conn: Deno.TcpConn | null = null;
  let service: ReturnType<typeof startService> | null = null;
  try {
    const port = await tunnelPort(client);
    conn = await connect(port);
    const c = conn;
    const started = Date.now();
    const closed = (async () => {
      try {
        return (await c.read(new Uint8Array(1024))) === null ? "eof" : "data";
      } catch (e) {
        return e instanceof Deno.errors.ConnectionReset ? "reset" : String(e);
      }
    })();
    const how = await within(closed, 5_000, "the user connection closes");
    ok(how === "eof" || how === "reset", `read gave ${how}`);
    ok(Date.now() - started < 5_000);
    closeQuietly(conn);
    conn = null;

    await client.stderr.wait(
      new RegExp(`cannot connect to local service ${escapeRe(`127.0.0.1:${localPort}`)}`),
    );
    ok(await metric(server, 'mport_errors_total{kind="local_dial"}') >= 1);
    assertEquals(exited, false, `the client exited:\n${client.output()}`);

    service = startService(echo, localPort);
    conn = await connect(port);
    const data = randomBytes(256 * 1024);
    const got = await within(roundTrip(conn, data), 10_000, "round trip once the service is up");
    assertEquals(await sha256(got), await sha256(data));
  } finally {
    if (conn) closeQuietly(conn);
    await client.stop();
    await server.stop();
    await service?.close();
  }
});

Deno.test("50 sequential connections ride on the client's one data connection", async () => {
  const service = startEcho();
  const server = await startServer();
  const client = startClient(["tcp", `127.0.0.1:${service.port}`, "--server", server.wsUrl]);
  try {
    const port = await tunnelPort(client);
    await until(
      "the client opens its data connection",
      async () => await metric(server, "mport_data_connections") === 1,
    );
    for (let i = 0; i < 50; i++) {
      const data = randomBytes(1024 + i * 997);
      const conn = await connect(port);
      try {
        const got = await within(roundTrip(conn, data), 10_000, `connection ${i + 1}`);
        assertEquals(await sha256(got), await sha256(data), `connection ${i + 1} echo differs`);
      } finally {
        closeQuietly(conn);
      }
    }
    assertEquals(service.accepted, 50);
    assertEquals(await metric(server, "mport_connections_total"), 50);
    assertEquals(await metric(server, "mport_streams_opened_total"), 50, server.output());
    // --pool defaults to 1: every connection was a stream on the same WebSocket.
    assertEquals(await metric(server, "mport_data_connections_opened_total"), 1, server.output());
    assertEquals(await metric(server, "mport_data_connections"), 1);
    await until(
      "every stream has ended",
      async () => await metric(server, "mport_connections_active") === 0,
    );
    assertEquals(clientServerConns(client.child.pid, server.port).length, 2, "control + 1 data");
  } finally {
    await client.stop();
    await server.stop();
    await service.close();
  }
});

/**
 * The client's established TCP connections to the server's port, with the bytes each has
 * received (from `ss`, which reads the kernel's per-socket counters).
 */
function clientServerConns(pid: number, serverPort: number): { received: number }[] {
  const out = new Deno.Command("ss", {
    args: ["-tinpOH", "state", "established", "dport", "=", `:${serverPort}`],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  ok(out.success, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).split("\n")
    .filter((line) => line.includes(`pid=${pid},`))
    .map((line) => ({ received: Number(/ bytes_received:(\d+)/.exec(line)?.[1] ?? 0) }));
}

Deno.test("with --pool 3 the client keeps 3 data connections and spreads connections over them", async () => {
  const service = startEcho();
  const server = await startServer();
  const client = startClient([
    "tcp",
    `127.0.0.1:${service.port}`,
    "--server",
    server.wsUrl,
    "--pool",
    "3",
  ]);
  const conns: Deno.TcpConn[] = [];
  try {
    const port = await tunnelPort(client);
    await until(
      "the client opens 3 data connections",
      async () => await metric(server, "mport_data_connections") === 3,
    );
    // 9 connections open at once: each new one goes to the data connection with the fewest.
    for (let i = 0; i < 9; i++) conns.push(await connect(port));
    await until("the service has all 9", () => service.accepted === 9);
    const size = 2 * 1024 * 1024;
    const results = await within(
      Promise.all(conns.map(async (conn) => {
        const data = randomBytes(size);
        const got = await roundTrip(conn, data);
        return (await sha256(got)) === (await sha256(data));
      })),
      30_000,
      "9 concurrent round trips",
    );
    ok(results.every(Boolean), "an echo differs");
    assertEquals(await metric(server, "mport_streams_opened_total"), 9);
    assertEquals(await metric(server, "mport_data_connections_opened_total"), 3, server.output());
    assertEquals(await metric(server, "mport_data_connections"), 3);
    // 3 streams each: every data connection carried about a third of the 18 MiB the users sent.
    const tcp = clientServerConns(client.child.pid, server.port);
    assertEquals(tcp.length, 4, `control + 3 data connections: ${JSON.stringify(tcp)}`);
    const busy = tcp.map((c) => c.received).sort((a, b) => b - a).slice(0, 3);
    ok(
      busy.every((bytes) => bytes >= 3 * size && bytes < 4 * size),
      `bytes received per data connection: ${busy.join(", ")}`,
    );
  } finally {
    for (const c of conns) closeQuietly(c);
    await client.stop();
    await server.stop();
    await service.close();
  }
});
