// End-to-end: WebSocket pass-through on an HTTP tunnel — a visitor's upgrade reaches the local
// WebSocket service, messages pass both ways intact and the local app's close code reaches the visitor.
import assert from "node:assert/strict";
import { startHttpTunnel, startLocalHttp } from "./http_harness.ts";
import { clientHandshake } from "../../shared/ws_handshake.ts";
import { WsConn } from "../../shared/ws_conn.ts";
import { randomBytes } from "../support/tcp_services.ts";
import { within } from "../support/wait.ts";

Deno.test("a WebSocket through an HTTP tunnel echoes text and binary messages intact and delivers the local app's close code", async () => {
  const local = startLocalHttp((req) => {
    if (req.headers.get("upgrade") !== "websocket") return new Response("no", { status: 426 });
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (e) => {
      if (e.data === "close please") socket.close(4001, "done here");
      else socket.send(e.data);
    };
    return response;
  });
  const rig = await startHttpTunnel({
    local: String(local.port),
    clientArgs: ["--subdomain", "app"],
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: rig.port });
  let ws: WsConn | null = null;
  try {
    const hs = await clientHandshake(conn, {
      host: rig.grant.host,
      path: "/socket?room=1",
      timeoutMs: 10_000,
    });
    ws = new WsConn(conn, {
      role: "client",
      maxMessageBytes: 4 * 1024 * 1024,
      leftover: hs.leftover,
    });
    const seen = local.requests[0]!;
    assert.equal(new URL(seen.url).pathname + new URL(seen.url).search, "/socket?room=1");

    ws.sendText("héllo ✓ wörld");
    const text = await within(ws.read(), 10_000, "text echo");
    assert.ok(text?.text);
    assert.equal(new TextDecoder().decode(text.data), "héllo ✓ wörld");

    const blob = randomBytes(1024 * 1024);
    ws.sendBinary(blob);
    const bin = await within(ws.read(), 10_000, "binary echo");
    assert.equal(bin?.text, false);
    assert.deepEqual(bin.data, blob);

    // Many small messages in a burst come back whole and in order.
    for (let i = 0; i < 200; i++) ws.sendText(`m${i}`);
    for (let i = 0; i < 200; i++) {
      const m: { data: Uint8Array } | null = await within(ws.read(), 10_000, `message ${i}`);
      assert.equal(new TextDecoder().decode(m!.data), `m${i}`);
    }

    ws.sendText("close please");
    assert.equal(await within(ws.read(), 10_000, "the close frame"), null);
    const closed = await within(ws.closed, 10_000, "the connection's end");
    assert.equal(closed.code, 4001);
    assert.equal(closed.reason, "done here");
  } finally {
    if (ws) ws.abort();
    else conn.close();
    await rig.close();
    await local.close();
  }
});
