// End to end: abuse on a data connection (mux frames by hand) closes that connection with a reason
// and resets its users, while a good client's tunnel keeps working.
import assert from "node:assert/strict";
import {
  encodeMuxFrame,
  MAX_DATA_CONNS_PER_SESSION,
  MUX_HEADER_BYTES,
  MUX_INITIAL_WINDOW,
  MUX_MAX_DATA_BYTES,
  MUX_MAX_MESSAGE_BYTES,
  MuxType,
  writeMuxHeader,
} from "../../shared/protocol.ts";
import { readExactly } from "../support/tcp_services.ts";
import { connect, metric, startClient, startEcho, startServer, tunnelPort } from "./harness.ts";
import {
  closeData,
  closedByServer,
  ControlPeer,
  dataFrame,
  echoRoundTrip,
  metricReaches,
  type MuxPeer,
  openData,
  serverClose,
} from "./raw_peers.ts";

const MiB = 1024 * 1024;

Deno.test("abuse on a data connection closes it with a reason and resets its users, while a good client keeps working", async (t) => {
  const echo = startEcho();
  const server = await startServer();
  const client = startClient(["tcp", `127.0.0.1:${echo.port}`, "--server", server.wsUrl]);
  try {
    const goodPort = await tunnelPort(client);
    await echoRoundTrip(goodPort);
    const { peer, welcome, credential } = await ControlPeer.welcomed(server, [{ name: "raw" }]);
    const port = (welcome.tunnels as { remotePort: number }[])[0]!.remotePort;
    try {
      await t.step("a 9th data connection of one session is closed with 4029", async () => {
        const open: MuxPeer[] = [];
        try {
          for (let i = 0; i < MAX_DATA_CONNS_PER_SESSION; i++) {
            open.push(await openData(server, credential));
          }
          await metricReaches(server, "mport_data_connections", 1 + MAX_DATA_CONNS_PER_SESSION);
          const ninth = await openData(server, credential);
          assert.deepEqual(await serverClose(ninth), {
            code: 4029,
            reason: `too many data connections: at most ${MAX_DATA_CONNS_PER_SESSION} per session`,
          });
          assert.ok(open.every((d) => d.readEnd === null), "the first 8 stay open");
        } finally {
          for (const d of open) await closeData(d);
        }
        await metricReaches(server, "mport_data_connections", 1);
      });

      await t.step("a frame for a stream that was never opened: 4000", async () => {
        const data = await openData(server, credential);
        data.send({ type: "window", id: 7, bytes: 1024 });
        assert.deepEqual(await serverClose(data), {
          code: 4000,
          reason: "frame for stream 7, which was never opened",
        });
      });

      await t.step("a text message on a data connection: 4000", async () => {
        const data = await openData(server, credential);
        data.ws.sendText("hello?");
        assert.deepEqual(await serverClose(data), {
          code: 4000,
          reason: "data connections carry binary frames only",
        });
      });

      await t.step("an unknown frame type: 4000", async () => {
        const data = await openData(server, credential);
        const frame = new Uint8Array(MUX_HEADER_BYTES);
        writeMuxHeader(frame, 0, 9, 1);
        data.ws.sendBinary(frame);
        assert.deepEqual(await serverClose(data), {
          code: 4000,
          reason: "unknown mux frame type 9",
        });
      });

      await t.step("a RESET frame with more than 1 KiB of JSON: 4013", async () => {
        const data = await openData(server, credential);
        const big = new TextEncoder().encode(
          JSON.stringify({ code: "internal", message: "y".repeat(2000) }),
        );
        const frame = new Uint8Array(MUX_HEADER_BYTES + big.byteLength);
        writeMuxHeader(frame, 0, MuxType.reset, 1);
        frame.set(big, MUX_HEADER_BYTES);
        data.ws.sendBinary(frame);
        assert.deepEqual(await serverClose(data), {
          code: 4013,
          reason: "reset frame is larger than the 1024-byte limit",
        });
      });

      await t.step("a message one byte over the largest mux frame: 1009", async () => {
        const data = await openData(server, credential);
        data.ws.sendBinary(dataFrame(1, new Uint8Array(MUX_MAX_DATA_BYTES + 1)));
        assert.deepEqual(await serverClose(data), {
          code: 1009,
          reason: `message of ${
            MUX_MAX_MESSAGE_BYTES + 1
          } bytes exceeds the limit of ${MUX_MAX_MESSAGE_BYTES}`,
        });
      });

      await t.step(
        "DATA beyond the credit window closes the data connection (4000) and resets the user",
        async () => {
          const data = await openData(server, credential);
          const user = await connect(port);
          try {
            const open = await data.nextOpen();
            assert.equal(open.tunnel, "raw");
            assert.match(open.remote, /^127\.0\.0\.1:\d+$/);
            // Spend every byte of credit the server grants while the user does not read. Once
            // no WINDOW has come for 300 ms the user's socket is full: send one byte beyond the
            // credit. (Should a WINDOW still have been on its way, that byte was within the
            // window after all, and spending goes on.)
            const frame = new Uint8Array(MUX_MAX_DATA_BYTES);
            const windowOrEnd = async (ms: number) => {
              const windows = data.windows;
              try {
                await data.changed.until(
                  "a WINDOW",
                  () => data.windows > windows || data.readEnd !== null,
                  ms,
                );
                return true;
              } catch {
                return false;
              }
            };
            let sent = 0;
            let beyond = 0;
            while (data.readEnd === null && sent < 64 * MiB) {
              const credit = MUX_INITIAL_WINDOW + (data.granted.get(open.id) ?? 0) - sent;
              if (credit > 0) {
                const n = Math.min(credit, frame.byteLength);
                data.sendData(open.id, frame.subarray(0, n));
                sent += n;
                await data.ws.drained(MiB);
              } else if (!(await windowOrEnd(300))) {
                data.sendData(open.id, new Uint8Array(1));
                sent += 1;
                beyond++;
                await windowOrEnd(5_000);
              }
            }
            assert.ok(beyond >= 1 && sent < 64 * MiB, `sent ${sent} bytes, ${beyond} beyond`);
            assert.deepEqual(await serverClose(data), {
              code: 4000,
              reason: `peer sent beyond the credit window on stream ${open.id}`,
            });
            // What reached the user's socket is readable; then a reset, never a clean end.
            assert.equal(await closedByServer(user), "reset");
          } finally {
            user.close();
          }
          await echoRoundTrip(goodPort);
        },
      );

      await t.step(
        "a RESET from the client resets the user; late frames for that stream are ignored",
        async () => {
          const peerResets = () => metric(server, 'mport_errors_total{kind="peer_reset"}');
          const resetsBefore = await peerResets();
          const data = await openData(server, credential);
          const user = await connect(port);
          let user2: Deno.TcpConn | null = null;
          try {
            const open = await data.nextOpen();
            data.send({
              type: "reset",
              id: open.id,
              code: "internal",
              message: "raw peer aborts",
            });
            assert.equal(await closedByServer(user), "reset");
            await metricReaches(
              server,
              'mport_errors_total{kind="peer_reset"}',
              resetsBefore + 1,
            );

            // Frames that crossed the RESET are not a protocol error: the connection stays up.
            data.sendData(open.id, new TextEncoder().encode("too late"));
            data.ws.sendBinary(encodeMuxFrame({ type: "eof", id: open.id }));
            user2 = await connect(port);
            const open2 = await data.nextOpen();
            assert.equal(open2.id, open.id + 1);
            await user2.write(new TextEncoder().encode("ping"));
            const got = await data.next(
              "DATA on the second stream",
              (f) => f.type === "data" && f.id === open2.id,
            );
            assert.equal(
              got.type === "data" ? new TextDecoder().decode(got.payload) : "",
              "ping",
            );
            data.sendData(open2.id, new TextEncoder().encode("pong"));
            assert.equal(new TextDecoder().decode(await readExactly(user2, 4)), "pong");
            // Both half-closes, and only then a clean end of stream for the user.
            data.send({ type: "eof", id: open2.id });
            await user2.closeWrite();
            await data.next(
              "EOF on the second stream",
              (f) => f.type === "eof" && f.id === open2.id,
            );
            assert.equal(await closedByServer(user2), "eof");
            assert.equal(data.readEnd, null, "the data connection stayed open");
          } finally {
            user.close();
            user2?.close();
            await closeData(data);
          }
        },
      );
    } finally {
      await peer.close();
    }
    const health = await fetch(`${server.httpUrl}/healthz`);
    assert.equal(health.status, 200);
    await health.body?.cancel();

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
