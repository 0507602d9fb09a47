// End to end: a hostile or broken peer gets a clear error and a close code, never a crashed server.
import assert from "node:assert/strict";
import {
  connect,
  metric,
  roundTrip,
  type ServerProc,
  sha256,
  startClient,
  startEcho,
  startServer,
  TEST_TOKEN,
  tunnelPort,
} from "./harness.ts";

const CONTROL = "/_mport/v1/control";
const STREAM = "/_mport/v1/stream";
const OTHER_TOKEN = "e2e-other-token-9876543210";
const MiB = 1024 * 1024;

/** Rejects with `what` unless `p` settles within `ms`; the timer never outlives the race. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

type Json = Record<string, unknown>;

/** A WebSocket peer that speaks (or abuses) the mport protocol by hand. */
class RawPeer {
  readonly ws: WebSocket;
  /** Resolves true once open, false if the socket failed before opening. */
  readonly opened: Promise<boolean>;
  readonly closed: Promise<{ code: number; reason: string }>;
  /** Message of the `error` event, if the socket failed (e.g. "… Invalid status code 429 …"). */
  error = "";
  /** Text messages received and not taken yet. */
  readonly messages: Json[] = [];
  #closeInfo = "";
  #waiter: (() => void) | null = null;

  constructor(url: string, credential: string, headers: Record<string, string> = {}) {
    this.ws = new WebSocket(url, {
      protocols: ["mport.v1"],
      headers: { authorization: `Bearer ${credential}`, ...headers },
    });
    this.ws.binaryType = "arraybuffer";
    const opened = Promise.withResolvers<boolean>();
    const closed = Promise.withResolvers<{ code: number; reason: string }>();
    this.opened = opened.promise;
    this.closed = closed.promise;
    this.ws.onopen = () => opened.resolve(true);
    this.ws.onerror = (e) => {
      this.error = (e as ErrorEvent).message ?? "error";
      opened.resolve(false);
    };
    this.ws.onclose = (e) => {
      this.#closeInfo = `code ${e.code}, reason "${e.reason}"`;
      opened.resolve(false);
      closed.resolve({ code: e.code, reason: e.reason });
      this.#wake();
    };
    this.ws.onmessage = (e) => {
      if (typeof e.data === "string") this.messages.push(JSON.parse(e.data));
      this.#wake();
    };
  }

  /** Opens a control channel with `token` and waits until it is open. */
  static async control(server: ServerProc, token = TEST_TOKEN): Promise<RawPeer> {
    const peer = new RawPeer(server.wsUrl + CONTROL, token);
    assert.equal(await within(peer.opened, 5000, "control channel open"), true);
    return peer;
  }

  /** Opens a data stream with a session credential (and an optional claim id). */
  static async stream(server: ServerProc, credential: string, claim?: string): Promise<RawPeer> {
    const peer = new RawPeer(
      server.wsUrl + STREAM,
      credential,
      claim === undefined ? {} : { "x-mport-claim": claim },
    );
    assert.equal(await within(peer.opened, 5000, "stream open"), true);
    return peer;
  }

  /** Control channel plus a completed hello; returns the peer and the `welcome` message. */
  static async welcomed(
    server: ServerProc,
    tunnels: { name: string; remotePort?: number }[],
    token = TEST_TOKEN,
  ): Promise<{ peer: RawPeer; welcome: Json; credential: string }> {
    const peer = await RawPeer.control(server, token);
    peer.sendJson({
      type: "hello",
      version: 1,
      host: "127.0.0.1",
      tunnels: tunnels.map((t) => ({
        name: t.name,
        kind: "tcp",
        local: "127.0.0.1:9",
        remotePort: t.remotePort ?? 0,
      })),
    });
    const welcome = await peer.take("welcome");
    return { peer, welcome, credential: `${welcome.sessionId}.${welcome.sessionSecret}` };
  }

  sendJson(msg: unknown): void {
    this.ws.send(JSON.stringify(msg));
  }

  /** The next text message of `type` not taken before (waits for it). */
  async take(type: string, timeoutMs = 5000): Promise<Json> {
    const msg = await this.poll([type], timeoutMs);
    if (msg) return msg;
    if (this.ws.readyState === WebSocket.CLOSED) {
      throw new Error(`socket closed (${this.#closeInfo}) without a "${type}" message`);
    }
    throw new Error(`no "${type}" message within ${timeoutMs} ms`);
  }

  /**
   * The next message of one of `types` not taken before, waiting up to `timeoutMs`; null if none
   * came (or the socket closed first).
   */
  async poll(types: string[], timeoutMs: number): Promise<Json | null> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const i = this.messages.findIndex((m) => types.includes(String(m.type)));
      if (i >= 0) return this.messages.splice(i, 1)[0]!;
      const left = deadline - Date.now();
      if (this.ws.readyState === WebSocket.CLOSED || left <= 0) return null;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.#waiter = r;
        timer = setTimeout(r, left);
      });
      clearTimeout(timer);
    }
  }

  /** Expects an `error` message, then a close with `code`; returns the error text. */
  async refused(code: number): Promise<string> {
    const err = await this.take("error");
    const close = await within(this.closed, 5000, `close ${code}`);
    assert.equal(close.code, code, `close code (reason: ${close.reason})`);
    return String(err.message);
  }

  /** Closes (if still open) and waits for the close to complete. */
  async close(): Promise<void> {
    if (this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    await within(this.closed, 5000, "close");
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = null;
    w?.();
  }
}

/** `n` random bytes (getRandomValues fills at most 64 KiB per call). */
function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

/** Resolves once the server has closed `conn`: "eof" or "reset" (reads and discards data). */
async function closedByServer(conn: Deno.Conn, timeoutMs = 5000): Promise<"eof" | "reset"> {
  const buf = new Uint8Array(256 * 1024);
  const drain = async (): Promise<"eof" | "reset"> => {
    try {
      while ((await conn.read(buf)) !== null) {
        // discard what was already in flight
      }
      return "eof";
    } catch (e) {
      if (e instanceof Deno.errors.ConnectionReset) return "reset";
      throw e;
    }
  };
  return await within(drain(), timeoutMs, "server closing the user connection");
}

/** Sends `n` bytes through the tunnel on `port` (an echo) and checks the reply's hash. */
async function echoRoundTrip(port: number, n = 256 * 1024): Promise<void> {
  const data = randomBytes(n);
  const conn = await connect(port);
  try {
    const got = await within(roundTrip(conn, data), 10_000, "echo round trip");
    assert.equal(await sha256(got), await sha256(data));
  } finally {
    conn.close();
  }
}

/** Current value of `mport_refusals_total{reason="…"}`. */
async function refusals(server: ServerProc, reason: string): Promise<number> {
  return await metric(server, `mport_refusals_total{reason="${reason}"}`);
}

/** Waits until a metric reaches `value` (the server updates it after the event we saw). */
async function metricReaches(server: ServerProc, series: string, value: number): Promise<void> {
  const deadline = Date.now() + 5000;
  let last = await metric(server, series);
  while (last !== value) {
    if (Date.now() > deadline) assert.equal(last, value, `${series} never reached ${value}`);
    await new Promise((r) => setTimeout(r, 20));
    last = await metric(server, series);
  }
}

Deno.test("bad control frames, bad streams and bad requests are refused clearly while a good client keeps working", async (t) => {
  const echo = startEcho();
  const server = await startServer();
  const client = startClient(["tcp", `127.0.0.1:${echo.port}`, "--server", server.wsUrl]);
  try {
    const goodPort = await tunnelPort(client);
    await echoRoundTrip(goodPort);

    await t.step("malformed control messages get an error and close 4000/4013", async () => {
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
        {
          name: "a 70 KB text frame",
          frame: JSON.stringify({ type: "ping", t: 1, pad: "x".repeat(70_000) }),
          message: /^control message is larger than the 65536-byte limit$/,
          code: 4013,
        },
      ];
      for (const c of cases) {
        const before = await refusals(server, "bad_message");
        const peer = await RawPeer.control(server);
        peer.ws.send(c.frame);
        const message = await peer.refused(c.code);
        assert.match(message, c.message, c.name);
        await peer.close();
        assert.equal(await refusals(server, "bad_message"), before + 1, c.name);
      }
      await echoRoundTrip(goodPort);
    });

    await t.step(
      "a hello with protocol version 2 is told to upgrade mport-server (4005)",
      async () => {
        const peer = await RawPeer.control(server);
        peer.sendJson({ type: "hello", version: 2, host: "127.0.0.1", tunnels: [] });
        const message = await peer.refused(4005);
        assert.match(message, /client speaks v2, the server speaks v1 \(upgrade mport-server\)/);
        await peer.close();
        assert.equal(await refusals(server, "version_mismatch"), 1);
      },
    );

    await t.step("a data stream with a bad session credential is refused with 4001", async () => {
      const before = await refusals(server, "unauthorized");
      const peer = new RawPeer(server.wsUrl + STREAM, "no-such-session.bad-secret");
      assert.equal(await within(peer.opened, 5000, "stream open"), true);
      const message = await peer.refused(4001);
      assert.equal(message, "unknown or expired session: reconnect the control channel");
      await peer.close();
      assert.equal(await refusals(server, "unauthorized"), before + 1);
    });

    await t.step(
      "a stream with a valid session but an unknown claim id is refused with 4040",
      async () => {
        const { peer, credential } = await RawPeer.welcomed(server, []);
        const stream = await RawPeer.stream(server, credential, "made-up-claim-id");
        const message = await stream.refused(4040);
        assert.match(message, /^unknown stream id "made-up-claim-id": it was never issued/);
        await stream.close();
        await peer.close();
        assert.equal(await refusals(server, "unknown_claim"), 1);
      },
    );

    await t.step(
      "abuse on a bridged stream closes that stream and its user connection only",
      async () => {
        const { peer, welcome, credential } = await RawPeer.welcomed(server, [{ name: "raw" }]);
        const port = (welcome.tunnels as { remotePort: number }[])[0]!.remotePort;

        /** A pooled stream bridged to a fresh user connection. */
        const bridged = async () => {
          const stream = await RawPeer.stream(server, credential);
          const user = await connect(port);
          const open = await stream.take("open");
          assert.equal(open.tunnel, "raw");
          assert.match(String(open.remote), /^127\.0\.0\.1:\d+$/);
          return { stream, user };
        };

        const protocolErrors = () => metric(server, 'mport_errors_total{kind="protocol"}');
        const errorsBefore = await protocolErrors();

        // A data frame larger than the 256 KiB limit.
        {
          const { stream, user } = await bridged();
          stream.ws.send(new Uint8Array(256 * 1024 + 1));
          const message = await stream.refused(4013);
          assert.equal(message, "data frame of 262145 bytes exceeds the 262144-byte limit");
          assert.equal(await closedByServer(user), "eof");
          user.close();
          await stream.close();
        }

        // Data beyond the credit window while the user does not read. The peer first spends the
        // credit it is given (counting acks) until the acks stop, then sends one frame more than
        // it was granted, and waits: a peer that kept blasting would make the server's close a
        // TCP reset that can overtake the error message.
        {
          const { stream, user } = await bridged();
          const frame = new Uint8Array(256 * 1024);
          let credit = 4 * MiB;
          let sent = 0;
          while (sent < 64 * MiB) {
            if (credit > 0) {
              const size = Math.min(frame.byteLength, credit);
              stream.ws.send(frame.subarray(0, size));
              credit -= size;
              sent += size;
            }
            const msg = await stream.poll(["ack", "error"], credit > 0 ? 0 : 300);
            if (msg?.type === "ack") credit += Number(msg.bytes);
            if (msg?.type === "error" || stream.ws.readyState !== WebSocket.OPEN) break;
            if (msg === null && credit <= 0) {
              // The acks stopped: the user's socket is full. One frame beyond the window.
              stream.ws.send(frame);
              sent += frame.byteLength;
              credit -= frame.byteLength;
              const reply = await stream.poll(["ack", "error"], 5000);
              if (reply?.type !== "ack") {
                if (reply) stream.messages.unshift(reply);
                break;
              }
              credit += Number(reply.bytes);
            }
          }
          const message = await stream.refused(4000);
          assert.equal(message, "peer sent beyond the 4194304-byte credit window");
          await server.stderr.wait(/ended: peer sent beyond the 4194304-byte credit window/);
          // Whatever reached the user's socket before the abort is readable; then EOF.
          assert.equal(await closedByServer(user), "eof");
          user.close();
          await stream.close();
        }

        // A stream control message that is not JSON.
        {
          const { stream, user } = await bridged();
          stream.ws.send("{ack 5");
          const message = await stream.refused(4000);
          assert.equal(message, "stream message is not valid JSON");
          assert.equal(await closedByServer(user), "eof");
          user.close();
          await stream.close();
        }

        assert.equal(await protocolErrors(), errorsBefore + 3);
        await peer.close();
        const health = await fetch(`${server.httpUrl}/healthz`);
        assert.equal(health.status, 200);
        await health.body?.cancel();
        await echoRoundTrip(goodPort);
      },
    );

    await t.step(
      "a port outside the range or held by another tunnel is refused by name",
      async () => {
        const { peer, welcome } = await RawPeer.welcomed(server, [
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
  } finally {
    await client.stop();
    await server.stop();
    await echo.close();
  }
});

Deno.test("a control channel that never says hello is closed with 4008 after the handshake timeout", async () => {
  const server = await startServer(["--handshake-timeout", "1"]);
  try {
    const peer = await RawPeer.control(server);
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

/** Sends a WebSocket upgrade request by hand and returns the raw HTTP response text. */
async function rawUpgrade(port: number, token: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const req = [
      `GET ${CONTROL} HTTP/1.1`,
      `Host: 127.0.0.1:${port}`,
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version: 13",
      "Sec-WebSocket-Protocol: mport.v1",
      `Authorization: Bearer ${token}`,
      "",
      "",
    ].join("\r\n");
    await conn.write(new TextEncoder().encode(req));
    const dec = new TextDecoder();
    const buf = new Uint8Array(4096);
    let text = "";
    // The 429 body ends with a newline; a 101 would have no body at all.
    while (!/\r\n\r\n[^]*\n$/.test(text) && !text.startsWith("HTTP/1.1 101")) {
      const n = await within(conn.read(buf), 5000, "HTTP response");
      if (n === null) break;
      text += dec.decode(buf.subarray(0, n), { stream: true });
    }
    return text;
  } finally {
    conn.close();
  }
}

Deno.test("wrong tokens are refused with 4001, and after 3 failures the address gets HTTP 429", async () => {
  const server = await startServer(["--auth-failures-per-minute", "3"]);
  try {
    const tokenMessage =
      "the server rejected the token (wrong or revoked): check --token / MPORT_TOKEN";
    for (let i = 0; i < 2; i++) {
      const peer = await RawPeer.control(server, "wrong-token-" + i);
      assert.equal(await peer.refused(4001), tokenMessage);
      await peer.close();
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

    // Blocked now, even with the right token: a plain HTTP 429 instead of an upgrade.
    const response = await rawUpgrade(server.port, TEST_TOKEN);
    assert.match(response, /^HTTP\/1\.1 429 /);
    assert.match(response, /too many failed authentication attempts from this address/);

    // A WebSocket just fails to open.
    const peer = new RawPeer(server.wsUrl + CONTROL, TEST_TOKEN);
    assert.equal(await within(peer.opened, 5000, "open attempt"), false);
    await within(peer.closed, 5000, "close");
    assert.match(peer.error, /429/);
    assert.equal(await refusals(server, "too_many_attempts"), 2);

    // The real client explains the 429 and keeps retrying.
    const blocked = startClient(["tcp", "127.0.0.1:9", "--server", server.wsUrl]);
    try {
      await blocked.stderr.wait(
        /^mport: the server refused: too many failed attempts from this address, try later; reconnecting in /,
        10_000,
      );
    } finally {
      await blocked.stop();
    }
  } finally {
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
    // Both static tokens belong to the admin user, so the limits are shared: release the raw
    // peer's tunnel as soon as it leaves so that the real client below gets its one tunnel.
    "--grace",
    "0",
  ]);
  const clients: ReturnType<typeof startClient>[] = [];
  try {
    await t.step(
      "a hello asking for 2 tunnels gets 1 and a 'tunnel limit reached' refusal",
      async () => {
        const { peer, welcome } = await RawPeer.welcomed(
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

    await t.step("the 3rd concurrent user connection is closed at once", async () => {
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
          const buf = new Uint8Array(4);
          let got = 0;
          while (got < 4) {
            const n = await within(conn.read(buf.subarray(got)), 5000, "echo");
            assert.notEqual(n, null);
            got += n!;
          }
        }
        const third = await connect(port);
        try {
          assert.equal(await closedByServer(third, 2000), "eof");
        } finally {
          third.close();
        }
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

Deno.test("--max-pending 2: a 3rd user connection waiting for an unresponsive client is closed at once", async () => {
  const server = await startServer(["--max-pending", "2"]);
  const users: Deno.TcpConn[] = [];
  try {
    const { peer, welcome } = await RawPeer.welcomed(server, [{ name: "silent" }]);
    const port = (welcome.tunnels as { remotePort: number }[])[0]!.remotePort;
    for (let i = 0; i < 2; i++) {
      users.push(await connect(port));
      const open = await peer.take("open"); // asked for a stream; the peer never opens one
      assert.equal(open.tunnel, "silent");
    }
    const third = await connect(port);
    users.push(third);
    assert.equal(await closedByServer(third, 2000), "eof");
    assert.equal(await refusals(server, "pending_limit"), 1);
    assert.equal(await metric(server, "mport_connections_active"), 2);
    await peer.close();
  } finally {
    for (const u of users) u.close();
    await server.stop();
  }
});

/** Peak VmRSS (bytes) of a process, sampled every 50 ms until `stop()`. */
function sampleRss(pid: number): { stop(): number } {
  let peak = 0;
  const read = () => {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
    peak = Math.max(peak, kb * 1024);
  };
  read();
  const timer = setInterval(read, 50);
  return {
    stop() {
      clearInterval(timer);
      read();
      return peak;
    },
  };
}

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

/** Reads `conn` to EOF and returns the byte count. */
async function countToEof(conn: Deno.Conn): Promise<number> {
  const buf = new Uint8Array(MiB);
  let total = 0;
  while (true) {
    const n = await conn.read(buf);
    if (n === null) return total;
    total += n;
  }
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
    const received = countToEof(service);
    const last = await within(stalled, 10_000, "stalled write completes");
    await user.closeWrite();
    assert.equal(await within(received, 10_000, "service reads to EOF"), accepted + last);
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

    const received = countToEof(user);
    const last = await within(stalled, 10_000, "stalled write completes");
    await service.closeWrite();
    assert.equal(await within(received, 10_000, "user reads to EOF"), accepted + last);
  } finally {
    user?.close();
    service?.close();
    local.close();
    await client.stop();
    await server.stop();
  }
});
