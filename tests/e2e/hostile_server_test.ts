// End to end: the real client against a scripted hostile server — an OPEN flood, terminal escapes.
import assert from "node:assert/strict";
import { FakeServer, welcome } from "../support/fake_server.ts";
import { startService, type TcpService, writeAll } from "../support/tcp_services.ts";
import { rssBytes } from "../support/processes.ts";
import { Notifier, within } from "../support/wait.ts";
import { type Proc, startClient } from "./harness.ts";

/** Clears the screen, sets the window title, rings the bell. */
const ATTACK = "\x1b[2J\x1b]0;pwned\x07";
/** C0 controls, DEL and C1 controls (U+0000-U+001F, U+007F-U+009F). */
const CONTROL_CHARS = /\p{Cc}/u;
/** The client's default `--max-connections`. */
const MAX_CONNECTIONS = 256;
const FLOOD = 10_000;
/**
 * Growth of the client's resident memory that the flood may cause: ~20 MiB with the cap here,
 * ~120 MiB (and 10,000 local connections) without it.
 */
const MAX_RSS_GROWTH_BYTES = 64 * 1024 * 1024;

/** A local echo service that counts the connections open at once. */
interface CountingService extends TcpService {
  open: number;
  peak: number;
  readonly changed: Notifier;
}

function startCountingEcho(): CountingService {
  const changed = new Notifier();
  // The handler runs only once a connection is accepted, after `state` exists.
  const service = startService(async (conn) => {
    state.open++;
    state.peak = Math.max(state.peak, state.open);
    changed.notify();
    const buf = new Uint8Array(4096);
    try {
      for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
        await writeAll(conn, buf.subarray(0, n));
      }
    } finally {
      state.open--;
      changed.notify();
    }
  });
  const state: CountingService = {
    port: service.port,
    get accepted() {
      return service.accepted;
    },
    open: 0,
    peak: 0,
    changed,
    close: () => service.close(),
  };
  return state;
}

/** Everything the client printed, both streams. */
function allOutput(client: Proc): string[] {
  return [...client.stdout.lines, ...client.stderr.lines];
}

Deno.test("a flood of 10,000 OPENs: the client bridges --max-connections, refuses the rest and stays small", async () => {
  const local = startCountingEcho();
  const fake = FakeServer.start();
  const client = startClient([
    "tcp",
    `127.0.0.1:${local.port}`,
    "--name",
    "flood",
    "--server",
    fake.url,
  ]);
  let exited = false;
  client.child.status.then(() => (exited = true));
  try {
    const control = await fake.control();
    await control.hello();
    control.send(welcome({ flood: "tcp://fake.example:10000" }));
    await client.stdout.wait(/^flood tcp:\/\/fake\.example:10000 -> /);
    const data = await fake.data();
    const rssBefore = rssBytes(client.child.pid);
    let rssPeak = rssBefore;

    for (let id = 1; id <= FLOOD; id++) {
      data.open(id, "flood");
      if (id % 500 === 0) {
        await data.ws.drained(64 * 1024);
        rssPeak = Math.max(rssPeak, rssBytes(client.child.pid));
      }
    }
    await data.changed.until(
      "RESETs for every stream beyond the cap",
      () => data.resetCount >= FLOOD - MAX_CONNECTIONS,
      60_000,
    );
    await local.changed.until("the cap's worth of local connections", () => {
      return local.open >= MAX_CONNECTIONS;
    }, 30_000);
    rssPeak = Math.max(rssPeak, rssBytes(client.child.pid));

    assert.equal(data.resets.get("rate_limited"), FLOOD - MAX_CONNECTIONS, [...data.resets].join());
    assert.equal(data.resetCount, FLOOD - MAX_CONNECTIONS);
    assert.equal(
      data.lastResetMessage,
      "the client has too many connections to flood open (--max-connections 256)",
    );
    assert.equal(local.accepted, MAX_CONNECTIONS, "local connections made");
    assert.equal(local.peak, MAX_CONNECTIONS, "local connections open at once");
    assert.ok(
      rssPeak - rssBefore < MAX_RSS_GROWTH_BYTES,
      `client RSS grew by ${((rssPeak - rssBefore) / 2 ** 20).toFixed(1)} MiB ` +
        `(from ${(rssBefore / 2 ** 20).toFixed(1)} MiB)`,
    );
    assert.equal(exited, false, `the client exited:\n${client.output()}`);

    // The server ends the bridged streams: their slots come back and a new stream is bridged.
    for (let id = 1; id <= FLOOD; id++) if (!data.resetIds.has(id)) data.reset(id);
    await local.changed.until("local connections closed", () => local.open === 0, 30_000);
    const id = FLOOD + 1;
    data.open(id, "flood");
    data.sendData(id, new TextEncoder().encode("still here"));
    await data.changed.until(
      "the echo on a stream opened after the flood",
      () => new TextDecoder().decode(data.received.get(id)) === "still here",
      15_000,
    );
    assert.equal(local.accepted, MAX_CONNECTIONS + 1);
    assert.equal(data.resetCount, FLOOD - MAX_CONNECTIONS);

    const status = await within(client.stop(), 15_000, "client exit");
    assert.equal(status.code, 0, client.output());
    const text = allOutput(client).join("\n");
    assert.doesNotMatch(text, /uncaught|unhandled/i);
    assert.match(
      text,
      /flood: 256 connections open, the --max-connections limit; refused 1 so far/,
    );
  } finally {
    await client.stop("SIGKILL");
    await fake.close();
    await local.close();
  }
});

Deno.test("escape sequences and C1 controls from a server never reach the client's terminal", async () => {
  const local = startCountingEcho();
  let controls = 0;
  const fake = FakeServer.start({
    // The first control channel is served; the reconnect is refused with a hostile body.
    refuse: (path) =>
      path.endsWith("/control") && ++controls > 1
        ? {
          status: 401,
          statusText: "Unauthorized",
          body: `denied ${ATTACK}\u009b2J body\u0085\nsecond line`,
        }
        : null,
  });
  const client = startClient([
    "tcp",
    `127.0.0.1:${local.port}`,
    "--name",
    "web",
    "--server",
    fake.url,
    "--log-level",
    "debug",
  ]);
  try {
    const control = await fake.control();
    await control.hello();
    control.send(
      welcome({ web: `tcp://evil.example:1234${ATTACK}\u009b31m\u0085` }, [{
        name: `evil${ATTACK}`,
        code: "port_taken",
        message: `taken ${ATTACK}\u009d0;title\u009c end`,
      }]),
    );
    await client.stdout.wait(/^web tcp:\/\/evil\.example:1234 -> /);
    await client.stderr.wait(/tunnel evil\S* refused: taken/);

    control.send({
      type: "notice",
      code: "quota_exceeded",
      message: `notice-text ${ATTACK}\u0090dcs\u009c\r\nmport: FAKE LINE`,
    });
    await client.stderr.wait(/notice-text/);

    // Text that reaches the logs: the user's address in OPEN, a RESET's message.
    const data = await fake.data();
    data.open(1, "web", `198.51.100.1:1${ATTACK}`);
    await client.stderr.wait(/bridging 198\.51\.100\.1:1/);
    data.reset(1, "bad_message", `reset-text ${ATTACK}`);
    await client.stderr.wait(/ended: reset-text/);
    await data.ws.close(4000, `bye${ATTACK}`);
    await client.stderr.wait(/data connection closed/);

    control.send({
      type: "tunnel_close",
      name: `web${ATTACK}`,
      reason: `closing ${ATTACK}\u009b2J`,
    });
    await client.stderr.wait(/closed by the server: closing/);

    await control.ws.close(4000, `gone${ATTACK}\u009b`);
    await client.stderr.wait(/connection closed: gone\S*; reconnecting in/);

    const status = await within(client.status(), 20_000, "client exit after the refusal");
    assert.equal(status.code, 1, client.output());
    const lines = allOutput(client);
    const text = lines.join("\n");
    assert.match(text, /mport: denied body$/m);
    for (const line of lines) {
      assert.doesNotMatch(line, CONTROL_CHARS, `a control character in ${JSON.stringify(line)}`);
    }
    // Sequences are removed whole, not just their ESC: no title text, no "[2J" left over.
    assert.ok(!text.includes("pwned"), text);
    assert.ok(!text.includes("[2J"), text);
    assert.ok(!lines.some((l) => l.startsWith("mport: FAKE LINE")), "a forged line");
  } finally {
    await client.stop("SIGKILL");
    await fake.close();
    await local.close();
  }
});
