// End to end: SOCKS5 UDP ASSOCIATE through `mport socks` and the server — datagrams leave from
// the server, checked against its rules one by one, for as long as the control connection lives.
import assert from "node:assert/strict";
import { startServer } from "./harness.ts";
import { auditEvents, startSocks } from "./egress_harness.ts";
import {
  parseSocksUdpReply,
  type SocksAssociation,
  socksUdpAssociate,
  socksUdpDatagram,
} from "../support/socks_client.ts";
import {
  dnsQuery,
  dnsResponder,
  numbered,
  parseDnsAnswer,
  udpEcho,
  UdpSocket,
} from "../support/udp.ts";

const ECHO_COUNT = 1_000;
const ECHO_SIZE = 512;
const WINDOW = 100;

/** Sends one datagram through the association to host:port. */
function sendVia(
  user: UdpSocket,
  a: SocksAssociation,
  host: string,
  port: number,
  data: Uint8Array,
) {
  return user.send(socksUdpDatagram(host, port, data), a.relay);
}

Deno.test("SOCKS5 UDP ASSOCIATE through the server: DNS answered, 1,000 datagrams echoed without loss, a denied destination gets nothing and is audited once, closing the control connection ends the association", async () => {
  const dns = dnsResponder("192.0.2.53");
  const echo = udpEcho();
  const forbidden = udpEcho(); // listening, but no rule lets egress reach it
  // Answers from its own port and, unasked, from another one: only the first may come back.
  const stranger = new UdpSocket();
  const twoFaced = new UdpSocket(async (d, s) => {
    await s.send(new TextEncoder().encode("answer"), d.from);
    await stranger.send(new TextEncoder().encode("stranger"), d.from);
  });
  const server = await startServer([
    "--egress",
    "--egress-allow",
    `127.0.0.1:${dns.port}`,
    "--egress-allow",
    `127.0.0.1:${echo.port}`,
    "--egress-allow",
    `127.0.0.1:${twoFaced.port}`,
  ]);
  const { client, port: proxy } = await startSocks(server.wsUrl);
  const user = new UdpSocket();
  let control: Deno.TcpConn | null = null;
  try {
    const a = await socksUdpAssociate(proxy);
    control = a.control;
    assert.equal(a.code, 0, "UDP ASSOCIATE succeeds");
    assert.equal(a.relay.hostname, "127.0.0.1", "the relay is on the proxy's address");

    // A DNS query to a name ("localhost", resolved by the server), answered from its address.
    await sendVia(user, a, "localhost", dns.port, dnsQuery(0x4d50, "printer.example"));
    const got = parseSocksUdpReply((await user.next(10_000, "the DNS answer")).data);
    assert.deepEqual([got.frag, got.host, got.port], [0, "127.0.0.1", dns.port]);
    assert.deepEqual(parseDnsAnswer(got.data), {
      id: 0x4d50,
      rcode: 0,
      addresses: ["192.0.2.53"],
    });
    assert.deepEqual(dns.questions, [{ id: 0x4d50, name: "printer.example", qtype: 1 }]);

    // 1,000 datagrams in windows of 100, each one back, intact.
    const back = new Uint8Array(ECHO_COUNT);
    let wrong = 0;
    const started = performance.now();
    for (let base = 0; base < ECHO_COUNT; base += WINDOW) {
      const end = Math.min(ECHO_COUNT, base + WINDOW);
      for (let seq = base; seq < end; seq++) {
        await sendVia(user, a, "127.0.0.1", echo.port, numbered(seq, ECHO_SIZE));
      }
      await user.changed.until(
        `echo replies ${base}-${end - 1}`,
        () => {
          for (const d of user.drain()) {
            const r = parseSocksUdpReply(d.data);
            const seq = new DataView(r.data.buffer, r.data.byteOffset).getUint32(0);
            const want = numbered(seq, ECHO_SIZE);
            if (r.port !== echo.port || !r.data.every((b, i) => b === want[i])) wrong++;
            else back[seq] = 1;
          }
          return back.subarray(base, end).every((x) => x === 1);
        },
        5_000,
      ).catch(() => {});
    }
    const ms = performance.now() - started;
    const delivered = back.reduce((x, y) => x + y, 0);
    console.log(
      `udp associate echo: sent ${ECHO_COUNT}, back ${delivered}, lost ${
        ECHO_COUNT - delivered
      }, wrong ${wrong}, ${ms.toFixed(0)} ms`,
    );
    assert.equal(wrong, 0, "every reply equals what was sent");
    assert.equal(ECHO_COUNT - delivered, 0, "no datagram lost on loopback");

    // Denied (loopback, no rule for the port): never delivered, never answered, audited once.
    for (let i = 0; i < 3; i++) {
      await sendVia(user, a, "127.0.0.1", forbidden.port, new TextEncoder().encode(`no ${i}`));
    }
    // A datagram after them that does arrive: by then the denied ones were dealt with.
    await sendVia(user, a, "127.0.0.1", echo.port, numbered(7, ECHO_SIZE));
    const probe = parseSocksUdpReply((await user.next(5_000, "the probe's echo")).data);
    assert.equal(probe.port, echo.port, "only the allowed destination answers");
    assert.equal(forbidden.received, 0, "the denied destination received nothing");
    assert.equal(user.pending, 0, "nothing else came back");
    const refused = await auditEvents(
      server.httpUrl,
      "egress_refused",
      (items) => items.some((e) => e.detail.destination === `127.0.0.1:${forbidden.port}`),
    );
    assert.equal(
      refused.filter((e) => e.detail.destination === `127.0.0.1:${forbidden.port}`).length,
      1,
      "one audit row for the destination, not one per datagram",
    );

    // Replies only from where the association sent to: the stranger's datagram is dropped.
    await sendVia(user, a, "127.0.0.1", twoFaced.port, new TextEncoder().encode("hi"));
    const answer = parseSocksUdpReply((await user.next(5_000, "the answer")).data);
    assert.deepEqual([answer.port, new TextDecoder().decode(answer.data)], [
      twoFaced.port,
      "answer",
    ]);
    // A fragment (FRAG 1) is not sent on: the echo never sees it.
    const echoed = echo.received;
    const fragment = socksUdpDatagram("127.0.0.1", echo.port, numbered(8, ECHO_SIZE));
    fragment[2] = 1;
    await user.send(fragment, a.relay);
    await sendVia(user, a, "127.0.0.1", echo.port, numbered(9, ECHO_SIZE));
    const last = parseSocksUdpReply((await user.next(5_000, "the last echo")).data);
    assert.deepEqual(
      [last.port, new DataView(last.data.buffer, last.data.byteOffset).getUint32(0)],
      [
        echo.port,
        9,
      ],
    );
    assert.equal(echo.received, echoed + 1, "the fragment was dropped by the proxy");
    assert.equal(user.pending, 0, "no stranger's datagram came back");

    // Closing the control connection ends the association on the server.
    a.control.close();
    control = null;
    const [ended] = await auditEvents(server.httpUrl, "egress_udp", (items) => items.length > 0);
    // DNS, the echoes with their two probes, and the two-faced service.
    const sent = 1 + ECHO_COUNT + 2 + 1;
    assert.deepEqual(
      {
        out: ended!.detail.datagramsToDestinations,
        back: ended!.detail.datagramsFromDestinations,
        bytesOut: ended!.detail.bytesToDestinations,
        denied: ended!.detail.denied,
        dropped: ended!.detail.dropped,
        // The client's end of the stream, seen as its EOF or (a moment later) its reset.
        ended: /^the (client ended it|stream ended)$/.test(String(ended!.detail.ended)),
      },
      {
        out: sent,
        back: sent,
        bytesOut: dnsQuery(0x4d50, "printer.example").byteLength +
          (ECHO_COUNT + 2) * ECHO_SIZE + 2,
        denied: 3,
        dropped: 1, // the stranger's
        ended: true,
      },
      JSON.stringify(ended),
    );
  } finally {
    control?.close();
    await user.close();
    await client.stop();
    await server.stop();
    await Promise.all([
      dns.close(),
      echo.close(),
      forbidden.close(),
      twoFaced.close(),
      stranger.close(),
    ]);
  }
});

Deno.test("UDP ASSOCIATE asks for the proxy's username and password like CONNECT does", async () => {
  const echo = udpEcho();
  const server = await startServer(["--egress", "--egress-allow", `127.0.0.1:${echo.port}`]);
  const { client, port: proxy } = await startSocks(server.wsUrl, [
    "--username",
    "alice",
    "--password",
    "s3cret-pass",
  ]);
  const user = new UdpSocket();
  try {
    const anonymous = await socksUdpAssociate(proxy);
    assert.equal(anonymous.code, 0xff, "no acceptable method without credentials");
    const wrong = await socksUdpAssociate(proxy, { username: "alice", password: "nope" });
    assert.equal(wrong.code, 0x101, "authentication failed");
    const a = await socksUdpAssociate(proxy, { username: "alice", password: "s3cret-pass" });
    assert.equal(a.code, 0);
    try {
      await sendVia(user, a, "127.0.0.1", echo.port, new TextEncoder().encode("hello"));
      const r = parseSocksUdpReply((await user.next(10_000, "the echo")).data);
      assert.equal(new TextDecoder().decode(r.data), "hello");
    } finally {
      a.control.close();
    }
  } finally {
    await user.close();
    await client.stop();
    await server.stop();
    await echo.close();
  }
});
