// End to end: the failed-login limit blocks guessing, not the address's own clients, and believes
// X-Forwarded-For only from a --trusted-proxy.
import assert from "node:assert/strict";
import { MUX_MAX_MESSAGE_BYTES } from "../../shared/protocol.ts";
import { closeQuietly, writeAll } from "../support/tcp_services.ts";
import { adminJson } from "./accounts_harness.ts";
import { type ServerProc, startClient, startEcho, startServer, tunnelPort } from "./harness.ts";
import {
  CONTROL,
  ControlPeer,
  echoRoundTrip,
  metricReaches,
  refusedUpgrade,
  STREAM,
  upgrade,
} from "./raw_peers.ts";

const WRONG_TOKEN_MESSAGE =
  "the server rejected the token (wrong or revoked): check --token / MPORT_TOKEN\n";
const BLOCKED_MESSAGE =
  "too many failed authentication attempts from this address; try again in 5 minutes\n";

/** A TCP relay on 127.0.0.1 in front of `targetPort` whose connections the test can cut. */
interface Relay {
  readonly port: number;
  /** Closes every relayed connection (both sides); the listener stays. */
  cut(): void;
  close(): Promise<void>;
}

function startRelay(targetPort: number): Relay {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const pipe = async (from: Deno.Conn, to: Deno.Conn) => {
    const buf = new Uint8Array(64 * 1024);
    try {
      // Ends at EOF or when cut() closes either side.
      for (let n = await from.read(buf); n !== null; n = await from.read(buf)) {
        await writeAll(to, buf.subarray(0, n));
      }
    } catch {
      // cut, or reset by a peer
    }
    for (const c of [from, to]) {
      open.delete(c);
      closeQuietly(c);
    }
  };
  const loop = (async () => {
    for (;;) {
      let inbound: Deno.Conn;
      try {
        inbound = await listener.accept();
      } catch {
        return;
      }
      open.add(inbound);
      const task = (async () => {
        let outbound: Deno.Conn;
        try {
          outbound = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
        } catch {
          open.delete(inbound);
          closeQuietly(inbound);
          return;
        }
        open.add(outbound);
        await Promise.all([pipe(inbound, outbound), pipe(outbound, inbound)]);
      })();
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })();
  const cut = () => {
    for (const c of [...open]) closeQuietly(c);
    open.clear();
  };
  return {
    port: listener.addr.port,
    cut,
    async close() {
      listener.close();
      cut();
      await loop;
      await Promise.all([...tasks]);
    },
  };
}

/** `n` upgrades of the control endpoint with wrong tokens, each expected to get HTTP 401. */
async function failLogins(
  server: ServerProc,
  n: number,
  token: (i: number) => string,
  headers: (i: number) => Record<string, string> = () => ({}),
): Promise<void> {
  for (let i = 0; i < n; i++) {
    const r = await refusedUpgrade(server, CONTROL, token(i), headers(i));
    assert.equal(r.status, 401, `attempt ${i + 1}: ${r.body}`);
    assert.equal(r.body, WRONG_TOKEN_MESSAGE);
  }
}

Deno.test("10 wrong tokens from 127.0.0.1 block that token, not a running client's data connections nor its reconnect", async () => {
  const echo = startEcho();
  const server = await startServer();
  // The client goes through a relay so that the test can drop its connections and make it
  // reconnect, from the same address, with its right token.
  const relay = startRelay(server.port);
  const client = startClient([
    "tcp",
    `127.0.0.1:${echo.port}`,
    "--server",
    `ws://127.0.0.1:${relay.port}`,
  ]);
  const { peer: live, credential } = await ControlPeer.welcomed(server, []);
  try {
    const port = await tunnelPort(client);
    await echoRoundTrip(port);

    // Someone on the same address guesses (the default limit is 10 a minute).
    await failLogins(server, 10, (i) => `wrong-token-${i}`);
    const blocked = await refusedUpgrade(server, CONTROL, "wrong-token-10");
    assert.equal(blocked.status, 429);
    assert.equal(blocked.code, "too_many_attempts");
    assert.equal(blocked.body, BLOCKED_MESSAGE);

    // Data keeps flowing: user connections through the tunnel, and new data connections of an
    // authenticated session.
    await Promise.all(Array.from({ length: 8 }, () => echoRoundTrip(port, 64 * 1024)));
    for (let i = 0; i < 3; i++) {
      const data = await upgrade(server, STREAM, credential, MUX_MAX_MESSAGE_BYTES);
      assert.ok(data.ok, data.ok ? "" : `HTTP ${data.status}: ${data.body}`);
      await data.ws.close(1000);
    }

    // The client loses its connections and comes back with the right token: same port.
    const outFrom = client.stdout.lines.length;
    relay.cut();
    assert.equal(await tunnelPort(client, outFrom, 20_000), port, client.output());
    await echoRoundTrip(port);
    assert.equal(
      client.stderr.lines.filter((l) => /too many failed/.test(l)).join("\n"),
      "",
      client.output(),
    );
    // The one probe above is the only refusal of the kind.
    await metricReaches(server, 'mport_refusals_total{reason="too_many_attempts"}', 1);
  } finally {
    await live.close();
    await client.stop();
    await relay.close();
    await server.stop();
    await echo.close();
  }
});

Deno.test("rotating X-Forwarded-For from a peer that is not a --trusted-proxy does not bypass the block", async () => {
  const server = await startServer();
  try {
    // Ten addresses claimed, one real one: the tenth failure blocks the token at 127.0.0.1.
    await failLogins(
      server,
      10,
      (i) => `wrong-token-${i}`,
      (i) => ({ "x-forwarded-for": `198.51.100.${i + 1}` }),
    );
    const r = await refusedUpgrade(server, CONTROL, "wrong-token-x", {
      "x-forwarded-for": "198.51.100.200",
    });
    assert.equal(r.status, 429);
    assert.equal(r.body, BLOCKED_MESSAGE);
  } finally {
    await server.stop();
  }
});

/** One `auth_failed` row as `mport-server events --json` prints it. */
interface AuthFailedEvent {
  at: number;
  kind: string;
  detail: { address: string | null; count: number; reasons: Record<string, number> };
}

Deno.test("with --trusted-proxy 127.0.0.1/32 X-Forwarded-For names the client, and auth_failed rows are one per address per minute", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-auth-limits-" });
  const db = `${dir}/mport.db`;
  const started = Date.now();
  const server = await startServer(["--trusted-proxy", "127.0.0.1/32", "--db", db]);
  try {
    const from = (ip: string) => ({ "x-forwarded-for": ip });
    // The client's own header is to the left of what the proxy appended: not believed.
    await failLogins(server, 10, (i) => `wrong-token-${i}`, () => from("9.9.9.9, 198.51.100.7"));
    const r = await refusedUpgrade(server, CONTROL, "wrong-token-x", from("198.51.100.7"));
    assert.equal(r.status, 429);
    assert.equal(r.body, BLOCKED_MESSAGE);
    // Another client address behind the same proxy, and the proxy's own address, are not blocked.
    await failLogins(server, 1, () => "wrong-token-y", () => from("198.51.100.8"));
    await failLogins(server, 1, () => "wrong-token-z");
  } finally {
    const stopped = await server.stop();
    assert.equal(stopped.code, 0, server.output());
  }
  const minutes = Math.floor(Date.now() / 60_000) - Math.floor(started / 60_000) + 1;
  try {
    const events = (await adminJson<AuthFailedEvent[]>(db, ["events", "--limit", "1000"]))
      .filter((e) => e.kind === "auth_failed");
    const byAddress = new Map<string | null, AuthFailedEvent[]>();
    for (const e of events) {
      byAddress.set(e.detail.address, [...(byAddress.get(e.detail.address) ?? []), e]);
    }
    const summary = [...byAddress].map(([address, rows]) => ({
      address,
      count: rows.reduce((sum, e) => sum + e.detail.count, 0),
    })).sort((a, b) => String(a.address).localeCompare(String(b.address)));
    assert.deepEqual(summary, [
      { address: "127.0.0.1", count: 1 },
      { address: "198.51.100.7", count: 10 },
      { address: "198.51.100.8", count: 1 },
    ]);
    // At most one row per address per minute the test spanned.
    for (const [address, rows] of byAddress) {
      assert.ok(rows.length <= minutes, `${rows.length} rows for ${address} in ${minutes} min`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
