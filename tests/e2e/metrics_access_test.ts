// /metrics protection on a real server process: --metrics-allow, --metrics-token, --trusted-proxy.
import assert from "node:assert/strict";
import { startServer } from "./harness.ts";

const METRICS_TOKEN = "scrape-token-0123456789";

Deno.test("the server serves /metrics to allowed addresses and the token, and refuses the rest", async () => {
  const server = await startServer([
    "--metrics-allow",
    "10.0.0.0/8",
    "--metrics-token",
    METRICS_TOKEN,
    "--trusted-proxy",
    "127.0.0.1/32",
  ]);
  try {
    const get = async (headers: Record<string, string>) => {
      const res = await fetch(`${server.httpUrl}/metrics`, { headers });
      return { status: res.status, body: await res.text() };
    };
    // Loopback is not in the list any more: a one-line refusal.
    const plain = await get({});
    assert.equal(plain.status, 403);
    assert.equal(
      plain.body,
      "metrics are not served to 127.0.0.1: allow it with --metrics-allow CIDR or send the --metrics-token\n",
    );
    // Through the trusted proxy, the forwarded client address counts, both ways.
    assert.equal((await get({ "x-forwarded-for": "10.20.30.40" })).status, 200);
    const outside = await get({ "x-forwarded-for": "203.0.113.9" });
    assert.equal(outside.status, 403);
    assert.match(outside.body, /not served to 203\.0\.113\.9/);
    // The token works from anywhere; a wrong one is a 401.
    const withToken = await get({
      authorization: `Bearer ${METRICS_TOKEN}`,
      "x-forwarded-for": "203.0.113.9",
    });
    assert.equal(withToken.status, 200);
    assert.match(withToken.body, /^mport_connections_total /m);
    const wrong = await get({ authorization: "Bearer guessed-token-000000" });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body, "wrong metrics token (expected Authorization: Bearer TOKEN)\n");
  } finally {
    await server.stop();
  }
});

Deno.test("a server with default settings serves /metrics over loopback only", async () => {
  const server = await startServer(["--trusted-proxy", "127.0.0.1/32"]);
  try {
    const local = await fetch(`${server.httpUrl}/metrics`);
    assert.equal(local.status, 200);
    await local.body?.cancel();
    const remote = await fetch(`${server.httpUrl}/metrics`, {
      headers: { "x-forwarded-for": "198.51.100.23" },
    });
    assert.equal(remote.status, 403);
    assert.match(await remote.text(), /^metrics are not served to 198\.51\.100\.23: /);
  } finally {
    await server.stop();
  }
});
