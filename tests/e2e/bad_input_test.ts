// End to end: a hostile or broken peer gets a clear error and a close code, never a crashed server.
import assert from "node:assert/strict";
import {
  legacyControlPath,
  legacyStreamPath,
  MUX_MAX_MESSAGE_BYTES,
} from "../../shared/protocol.ts";
import { readExactly, readToEnd } from "../support/tcp_services.ts";
import { sampleRss } from "../support/processes.ts";
import { within } from "../support/wait.ts";
import {
  connect,
  metric,
  refusedConnection,
  type ServerProc,
  startClient,
  startEcho,
  startServer,
  TEST_TOKEN,
  tunnelPort,
} from "./harness.ts";
import {
  CONTROL,
  ControlPeer,
  echoRoundTrip,
  metricReaches,
  refusedUpgrade,
  STREAM,
  upgrade,
} from "./raw_peers.ts";

const OTHER_TOKEN = "e2e-other-token-9876543210";
const MiB = 1024 * 1024;

/** Current value of `mport_refusals_total{reason="…"}`. */
async function refusals(server: ServerProc, reason: string): Promise<number> {
  return await metric(server, `mport_refusals_total{reason="${reason}"}`);
}

Deno.test("bad control frames and bad upgrade requests are refused clearly while a good client keeps working", async (t) => {
  const echo = startEcho();
  const server = await startServer();
  const client = startClient(["tcp", `127.0.0.1:${echo.port}`, "--server", server.wsUrl]);
  try {
    const goodPort = await tunnelPort(client);
    await echoRoundTrip(goodPort);

    await t.step("malformed control messages get an error and close 4000", async () => {
      const cases: { name: string; frame: string | Uint8Array; message: RegExp; code: number }[] = [
        {
          name: "malformed JSON",
          frame: '{"type": "hello", ',
          message: /^control message is not valid JSON$/,
          code: 4000,
        },
        {
          name: "a JSON array",
          frame: '[{"type":"hello"}]',
          message: /^control message must be a JSON object$/,
          code: 4000,
        },
        {
          name: "an unknown message type",
          frame: '{"type":"teleport","t":1}',
          message: /^unknown control message type "teleport"$/,
          code: 4000,
        },
        {
          name: "a binary frame",
          frame: new Uint8Array([1, 2, 3, 4]),
          message: /^control channel carries text frames only$/,
          code: 4000,
        },
      ];
      for (const c of cases) {
        const before = await refusals(server, "bad_message");
        const peer = await ControlPeer.open(server);
        if (typeof c.frame === "string") peer.ws.sendText(c.frame);
        else peer.ws.sendBinary(c.frame);
        const message = await peer.refused(c.code);
        assert.match(message, c.message, c.name);
        await peer.close();
        assert.equal(await refusals(server, "bad_message"), before + 1, c.name);
      }
      await echoRoundTrip(goodPort);
    });

    await t.step(
      "a control message over 64 KiB gets an error naming the limit (4013)",
      async () => {
        const before = await refusals(server, "bad_message");
        const peer = await ControlPeer.open(server);
        peer.sendJson({ type: "ping", t: 1, pad: "x".repeat(70_000) });
        const message = await peer.refused(4013);
        assert.equal(message, "control message is larger than the 65536-byte limit");
        await peer.close();
        assert.equal(await refusals(server, "bad_message"), before + 1);
      },
    );

    await t.step(
      "a control message over 128 KiB is cut off by the WebSocket layer (1009)",
      async () => {
        const before = await refusals(server, "bad_message");
        const peer = await ControlPeer.open(server);
        peer.sendJson({ type: "ping", t: 1, pad: "x".repeat(140_000) });
        const close = await within(peer.ws.closed, 5_000, "close after a 140 KB frame");
        assert.equal(close.code, 1009, `close reason: ${close.reason}`);
        assert.match(close.reason, /^message of 1400\d\d bytes exceeds the limit of 131072$/);
        await peer.close();
        assert.equal(await refusals(server, "bad_message"), before + 1);
      },
    );

    await t.step(
      "a hello with protocol version 3 is told to upgrade mport-server (4005)",
      async () => {
        const peer = await ControlPeer.open(server);
        peer.sendJson({ type: "hello", version: 3, host: "127.0.0.1", tunnels: [] });
        const message = await peer.refused(4005);
        assert.equal(
          message,
          "protocol version mismatch: the client speaks v3, the server speaks v2 (upgrade mport-server)",
        );
        await peer.close();
        assert.equal(await refusals(server, "version_mismatch"), 1);
      },
    );

    await t.step(
      "a hello with version 1 on the v2 path is told to upgrade the client (4005)",
      async () => {
        const peer = await ControlPeer.open(server);
        peer.sendJson({ type: "hello", version: 1, host: "127.0.0.1", tunnels: [] });
        const message = await peer.refused(4005);
        assert.equal(
          message,
          "protocol version mismatch: the client speaks v1, the server speaks v2 (upgrade the mport client)",
        );
        await peer.close();
        assert.equal(await refusals(server, "version_mismatch"), 2);
      },
    );

    await t.step(
      "a v1 client on the v1 paths is told to upgrade the mport client (4005)",
      async () => {
        // Exactly what a v1 client does: Deno's WebSocket, subprotocol mport.v1, the token.
        const expected =
          "protocol version mismatch: the client speaks v1, the server speaks v2 (upgrade the mport client)";
        for (const path of [legacyControlPath("/_mport"), legacyStreamPath("/_mport")]) {
          const ws = new WebSocket(server.wsUrl + path, {
            protocols: ["mport.v1"],
            headers: { authorization: `Bearer ${TEST_TOKEN}` },
          });
          const messages: string[] = [];
          ws.onmessage = (e) => messages.push(String(e.data));
          const closed = new Promise<CloseEvent>((resolve) => (ws.onclose = resolve));
          const close = await within(closed, 5_000, `close of ${path}`);
          assert.equal(close.code, 4005, `${path}: close reason ${close.reason}`);
          assert.equal(messages.length, 1, `${path}: ${messages.join(" | ")}`);
          assert.deepEqual(JSON.parse(messages[0]!), {
            type: "error",
            code: "version_mismatch",
            message: expected,
          });
          assert.match(close.reason, /^protocol version mismatch: the client speaks v1/);
        }
      },
    );

    await t.step(
      "a data connection with a bad or missing session credential gets HTTP 401",
      async () => {
        const before = await refusals(server, "unauthorized");
        for (const credential of ["no-such-session.bad-secret", "no-dot-at-all", null]) {
          const r = await refusedUpgrade(server, STREAM, credential);
          assert.equal(r.status, 401, `credential ${credential}`);
          assert.equal(r.code, "unauthorized");
          assert.equal(r.body, "unknown or expired session: reconnect the control channel\n");
        }
        // A real session id with a wrong secret is no better.
        const { peer, credential } = await ControlPeer.welcomed(server, []);
        const sessionId = credential.slice(0, credential.indexOf("."));
        const r = await refusedUpgrade(server, STREAM, `${sessionId}.${"0".repeat(64)}`);
        assert.equal(r.status, 401);
        assert.equal(r.body, "unknown or expired session: reconnect the control channel\n");
        await peer.close();
        assert.equal(await refusals(server, "unauthorized"), before + 4);
      },
    );

    await t.step(
      "a control channel without a token gets HTTP 401; plain GETs get 426",
      async () => {
        const r = await refusedUpgrade(server, CONTROL, null);
        assert.equal(r.status, 401);
        assert.equal(r.code, "unauthorized");
        assert.equal(r.body, "no token: pass --token or set MPORT_TOKEN\n");
        for (const path of [CONTROL, STREAM]) {
          const res = await fetch(server.httpUrl + path);
          assert.equal(res.status, 426, path);
          assert.equal(
            await res.text(),
            "this endpoint expects a WebSocket upgrade from an mport client\n",
          );
        }
        // An upgrade request that breaks RFC 6455 (no Sec-WebSocket-Key) is refused by name.
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
        try {
          await conn.write(
            new TextEncoder().encode(
              `GET ${CONTROL} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n` +
                `Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n` +
                `Authorization: Bearer ${TEST_TOKEN}\r\n\r\n`,
            ),
          );
          const answer = await within(readToClose(conn), 5_000, "answer to a bad upgrade");
          assert.match(answer.text, /^HTTP\/1\.1 426 Upgrade Required\r\n/);
          assert.match(answer.text, /\r\nx-mport-error: bad_message\r\n/);
          assert.match(
            answer.text,
            /\r\n\r\nthis endpoint expects a WebSocket upgrade: Sec-WebSocket-Key must be base64 of 16 bytes\n$/,
          );
        } finally {
          conn.close();
        }
      },
    );

    await t.step(
      "a port outside the range or held by another tunnel is refused by name",
      async () => {
        const { peer, welcome } = await ControlPeer.welcomed(server, [
          { name: "far", remotePort: 1 },
          { name: "taken", remotePort: goodPort },
        ]);
        assert.deepEqual(welcome.tunnels, []);
        const refused = welcome.refused as { name: string; code: string; message: string }[];
        assert.equal(refused.length, 2);
        assert.equal(refused[0]!.name, "far");
        assert.equal(refused[0]!.code, "port_out_of_range");
        assert.match(
          refused[0]!.message,
          /^port 1 is outside the server's allowed range \d+-\d+ \(choose a port in that range, or none\)$/,
        );
        assert.equal(refused[1]!.name, "taken");
        assert.equal(refused[1]!.code, "port_taken");
        // Both peers use the admin's static token: the port is reserved for the admin's other tunnel.
        assert.match(
          refused[1]!.message,
          new RegExp(
            `^port ${goodPort} is reserved for your tunnel "127\\.0\\.0\\.1-\\d+" \\(use that name, or ask the operator to release the port\\)$`,
          ),
        );
        await peer.close();
        assert.equal(await refusals(server, "port_out_of_range"), 1);
        assert.equal(await refusals(server, "port_taken"), 1);
      },
    );

    // The good client never noticed any of it: same tunnel, no reconnects.
    await echoRoundTrip(goodPort, 4 * MiB);
    assert.equal(
      client.stderr.lines.filter((l) => l.startsWith("mport:")).join("\n"),
      "",
      client.output(),
    );
    assert.equal(await metric(server, "mport_data_connections_opened_total") >= 1, true);
  } finally {
    await client.stop();
    await server.stop();
    await echo.close();
  }
});

Deno.test("a control channel that never says hello is closed with 4008 after the handshake timeout", async () => {
  const server = await startServer(["--handshake-timeout", "1"]);
  try {
    const peer = await ControlPeer.open(server);
    const started = Date.now();
    const message = await peer.refused(4008);
    const elapsed = Date.now() - started;
    assert.equal(message, "no hello within 1 s");
    assert.ok(elapsed >= 800 && elapsed < 4000, `closed after ${elapsed} ms`);
    await peer.close();
    assert.equal(await refusals(server, "handshake_timeout"), 1);
  } finally {
    await server.stop();
  }
});

Deno.test("a half-sent request head is answered 408 and closed after --header-timeout while /healthz still answers", async () => {
  const server = await startServer(["--header-timeout", "1"]);
  const slow = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    const started = Date.now();
    await slow.write(
      new TextEncoder().encode("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow:"),
    );
    const closing = readToClose(slow).then((r) => ({ ...r, at: Date.now() }));
    // Others are served while the slow head waits.
    for (let i = 0; i < 3; i++) {
      const res = await within(fetch(`${server.httpUrl}/healthz`), 2_000, "/healthz");
      assert.equal(res.status, 200);
      assert.equal((await res.json()).status, "ok");
    }
    const healthy = Date.now();
    const answer = await within(closing, 5_000, "the slow connection is closed");
    assert.ok(healthy < answer.at, "the health checks ended after the slow connection");
    const elapsed = answer.at - started;
    assert.ok(elapsed >= 900 && elapsed < 3_000, `closed after ${elapsed} ms`);
    assert.match(answer.text, /^HTTP\/1\.1 408 Request Timeout\r\n/);
    assert.match(
      answer.text,
      /\r\n\r\nthe request head did not arrive in time \(limit 1000 ms\)\n$/,
    );
    assert.equal(answer.end, "eof");
    assert.equal(await refusals(server, "header_timeout"), 1);
  } finally {
    slow.close();
    await server.stop();
  }
});

/** Reads `conn` until the server closes it; returns the text and how it ended. */
async function readToClose(conn: Deno.Conn): Promise<{ text: string; end: "eof" | "reset" }> {
  const buf = new Uint8Array(4096);
  const dec = new TextDecoder();
  let text = "";
  try {
    for (let i = 0; i < 1000; i++) {
      const n = await conn.read(buf);
      if (n === null) return { text, end: "eof" };
      text += dec.decode(buf.subarray(0, n), { stream: true });
    }
    throw new Error(`the server kept sending: ${text.slice(0, 200)}`);
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionReset) return { text, end: "reset" };
    throw e;
  }
}

Deno.test("wrong tokens get HTTP 401, and after 3 failures that token gets HTTP 429 saying for how long (but not the right token, nor a live session's data connections)", async () => {
  const server = await startServer(["--auth-failures-per-minute", "3"]);
  // Welcomed before the block: its data connections must keep working afterwards.
  const { peer: live, credential } = await ControlPeer.welcomed(server, []);
  try {
    const tokenMessage =
      "the server rejected the token (wrong or revoked): check --token / MPORT_TOKEN";
    for (let i = 0; i < 2; i++) {
      const r = await refusedUpgrade(server, CONTROL, "wrong-token-" + i);
      assert.equal(r.status, 401);
      assert.equal(r.code, "unauthorized");
      assert.equal(r.body, tokenMessage + "\n");
    }
    // The real client says the same and gives up (retrying cannot fix a token).
    const wrong = startClient([
      "tcp",
      "127.0.0.1:9",
      "--server",
      server.wsUrl,
      "--token",
      "wrong-token-2",
    ]);
    const status = await within(wrong.status(), 10_000, "client with a wrong token exits");
    assert.equal(status.code, 1, wrong.output());
    assert.ok(wrong.stderr.lines.includes(`mport: ${tokenMessage}`), wrong.output());
    assert.equal(await refusals(server, "unauthorized"), 3);

    // That token (the same first 8 characters) is blocked now, and the answer says how long.
    const blockedMessage =
      "too many failed authentication attempts from this address; try again in 5 minutes";
    const r = await refusedUpgrade(server, CONTROL, "wrong-token-3");
    assert.equal(r.status, 429);
    assert.equal(r.code, "too_many_attempts");
    assert.equal(r.body, blockedMessage + "\n");
    assert.equal(await refusals(server, "too_many_attempts"), 1);

    // The right token from the same address still logs in.
    const again = await ControlPeer.open(server);
    await again.close();
    // A bad data credential is its own key: refused as unknown, not as blocked.
    const stale = await refusedUpgrade(server, STREAM, "no-such.session");
    assert.equal(stale.status, 401);

    // A session that authenticated before still opens data connections.
    const data = await upgrade(server, STREAM, credential, MUX_MAX_MESSAGE_BYTES);
    assert.ok(data.ok, data.ok ? "" : `HTTP ${data.status}: ${data.body}`);
    await data.ws.close(1000);

    // The real client explains the 429 and keeps retrying.
    const blocked = startClient([
      "tcp",
      "127.0.0.1:9",
      "--server",
      server.wsUrl,
      "--token",
      "wrong-token-4",
    ]);
    try {
      await blocked.stderr.wait(
        /^mport: too many failed authentication attempts from this address; try again in 5 minutes; reconnecting in /,
        10_000,
      );
    } finally {
      await blocked.stop();
    }
  } finally {
    await live.close();
    await server.stop();
  }
});

Deno.test("per-client limits: tunnels per client and concurrent connections", async (t) => {
  const echo = startEcho();
  const server = await startServer([
    "--token",
    TEST_TOKEN,
    "--token",
    OTHER_TOKEN,
    "--max-tunnels-per-client",
    "1",
    "--max-connections-per-client",
    "2",
    // Both static tokens act as the admin user, each as an owner of its own (own limits); the
    // raw peer's tunnel is released as soon as it leaves, so the step below starts from none.
    "--grace",
    "0",
  ]);
  const clients: ReturnType<typeof startClient>[] = [];
  try {
    await t.step(
      "a hello asking for 2 tunnels gets 1 and a 'tunnel limit reached' refusal",
      async () => {
        const { peer, welcome } = await ControlPeer.welcomed(
          server,
          [{ name: "one" }, { name: "two" }],
          OTHER_TOKEN,
        );
        assert.deepEqual((welcome.tunnels as { name: string }[]).map((g) => g.name), ["one"]);
        assert.deepEqual(welcome.refused, [{
          name: "two",
          code: "tunnel_limit",
          message: "tunnel limit reached: at most 1 tunnels per user",
        }]);
        await peer.close();
        assert.equal(await refusals(server, "tunnel_limit"), 1);
      },
    );

    await t.step("the 3rd concurrent user connection is reset at once", async () => {
      await metricReaches(server, "mport_tunnels_active", 0);
      const client = startClient(["tcp", `127.0.0.1:${echo.port}`, "--server", server.wsUrl]);
      clients.push(client);
      const port = await tunnelPort(client);
      const ping = new TextEncoder().encode("ping");
      const open: Deno.TcpConn[] = [];
      try {
        for (let i = 0; i < 2; i++) {
          const conn = await connect(port);
          open.push(conn);
          await conn.write(ping);
          await within(readExactly(conn, 4), 5000, "echo");
        }
        assert.deepEqual(await refusedConnection(port, 2000), { end: "reset", bytes: 0 });
        assert.equal(await refusals(server, "connection_limit"), 1);
        // Closing one frees its slot.
        open.shift()!.close();
        await metricReaches(server, "mport_connections_active", 1);
      } finally {
        for (const c of open) c.close();
      }
      await echoRoundTrip(port);
      assert.equal(await refusals(server, "connection_limit"), 1);
    });
  } finally {
    for (const c of clients) await c.stop();
    await server.stop();
    await echo.close();
  }
});

Deno.test("--max-pending 2: a 3rd user connection waiting for a client without data connections is reset at once", async () => {
  const server = await startServer(["--max-pending", "2"]);
  const users: Deno.TcpConn[] = [];
  try {
    // Welcomed, but it never opens a data connection: user connections wait for one.
    const { peer, welcome } = await ControlPeer.welcomed(server, [{ name: "silent" }]);
    const port = (welcome.tunnels as { remotePort: number }[])[0]!.remotePort;
    for (let i = 0; i < 2; i++) {
      users.push(await connect(port));
      await metricReaches(server, "mport_connections_active", i + 1);
    }
    assert.deepEqual(await refusedConnection(port, 2000), { end: "reset", bytes: 0 });
    assert.equal(await refusals(server, "pending_limit"), 1);
    assert.equal(await metric(server, "mport_connections_active"), 2);
    await peer.close();
  } finally {
    for (const u of users) u.close();
    await server.stop();
  }
});

/**
 * Writes as fast as `conn` accepts for up to `ms` or `limit` bytes; stops when one write has not
 * completed for `stallMs`. Returns the bytes accepted and the still-pending write, if it stalled.
 */
async function pushUntilStalled(
  conn: Deno.Conn,
  ms: number,
  limit: number,
  stallMs = 1000,
): Promise<{ accepted: number; stalled: Promise<number> | null }> {
  const chunk = crypto.getRandomValues(new Uint8Array(64 * 1024));
  const big = new Uint8Array(MiB);
  for (let off = 0; off < MiB; off += chunk.byteLength) big.set(chunk, off);
  const deadline = Date.now() + ms;
  let accepted = 0;
  while (Date.now() < deadline && accepted < limit) {
    const w = conn.write(big);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stall = new Promise<null>((r) => (timer = setTimeout(() => r(null), stallMs)));
    const n = await Promise.race([w, stall]);
    clearTimeout(timer);
    if (n === null) {
      w.catch(() => {}); // observed later, or rejected by close() when the test failed early
      return { accepted, stalled: w };
    }
    accepted += n;
  }
  return { accepted, stalled: null };
}

const RSS_LIMIT = 300 * MiB;
const ACCEPTED_LIMIT = 64 * MiB;

Deno.test("a local service that never reads stalls the user's writes; server memory stays bounded", async () => {
  const local = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const server = await startServer();
  const client = startClient(["tcp", `127.0.0.1:${local.addr.port}`, "--server", server.wsUrl]);
  let user: Deno.TcpConn | null = null;
  let service: Deno.TcpConn | null = null;
  try {
    const port = await tunnelPort(client);
    const serverRss = sampleRss(server.child.pid);
    const clientRss = sampleRss(client.child.pid);
    user = await connect(port);
    const accepting = local.accept();
    const { accepted, stalled } = await pushUntilStalled(user, 5000, 256 * MiB);
    service = await within(accepting, 5000, "local service accept");
    const serverPeak = serverRss.stop();
    const clientPeak = clientRss.stop();
    assert.ok(stalled, `writes never stalled; ${accepted} bytes accepted`);
    assert.ok(accepted < ACCEPTED_LIMIT, `${accepted} bytes accepted before the stall`);
    assert.ok(serverPeak < RSS_LIMIT, `server RSS peaked at ${serverPeak} bytes`);
    assert.ok(clientPeak < RSS_LIMIT, `client RSS peaked at ${clientPeak} bytes`);

    // Once the service reads, everything accepted arrives: backpressure lost nothing.
    const received = readToEnd(service);
    const last = await within(stalled, 10_000, "stalled write completes");
    await user.closeWrite();
    const got = await within(received, 10_000, "service reads to EOF");
    assert.equal(got.end, "EOF");
    assert.equal(got.bytes, accepted + last);
  } finally {
    user?.close();
    service?.close();
    local.close();
    await client.stop();
    await server.stop();
  }
});

Deno.test("a user who never reads stalls the local service's writes; server memory stays bounded", async () => {
  const local = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const server = await startServer();
  const client = startClient(["tcp", `127.0.0.1:${local.addr.port}`, "--server", server.wsUrl]);
  let user: Deno.TcpConn | null = null;
  let service: Deno.TcpConn | null = null;
  try {
    const port = await tunnelPort(client);
    const serverRss = sampleRss(server.child.pid);
    const clientRss = sampleRss(client.child.pid);
    user = await connect(port);
    service = await within(local.accept(), 5000, "local service accept");
    const { accepted, stalled } = await pushUntilStalled(service, 5000, 256 * MiB);
    const serverPeak = serverRss.stop();
    const clientPeak = clientRss.stop();
    assert.ok(stalled, `writes never stalled; ${accepted} bytes accepted`);
    assert.ok(accepted < ACCEPTED_LIMIT, `${accepted} bytes accepted before the stall`);
    assert.ok(serverPeak < RSS_LIMIT, `server RSS peaked at ${serverPeak} bytes`);
    assert.ok(clientPeak < RSS_LIMIT, `client RSS peaked at ${clientPeak} bytes`);

    const received = readToEnd(user);
    const last = await within(stalled, 10_000, "stalled write completes");
    await service.closeWrite();
    const got = await within(received, 10_000, "user reads to EOF");
    assert.equal(got.end, "EOF");
    assert.equal(got.bytes, accepted + last);
  } finally {
    user?.close();
    service?.close();
    local.close();
    await client.stop();
    await server.stop();
  }
});
