// IP packets on a mux stream (the VPN's transport): order, content and sizes kept both ways over
// a real WebSocket pair, batches split by the receiver, a full stream dropping (and counting) in
// drop mode instead of growing; and the IPv4 header fields the gateway reads.
import assert from "node:assert/strict";
import { Mux } from "../../shared/mux.ts";
import { type MuxStream, SEND_ROOM } from "../../shared/mux_stream.ts";
import { PacketLink } from "../../shared/packet_link.ts";
import {
  ipv4ToU32,
  isIpv4,
  packetDestination,
  packetDestinationPort,
  packetSource,
  u32ToIpv4,
} from "../../shared/ipv4.ts";
import { resetSupport } from "../../shared/tcp_reset.ts";
import { wsConnPair } from "../support/mux_pair.ts";

// Loads libc before any test (closing a stream's pipe may reset), so the sanitizer does not count
// it against the first test.
resetSupport();

/** A server and a client Mux whose client opens one `vpn` stream; both ends as PacketLinks. */
async function linkPair(
  onServer: (p: Uint8Array) => void,
  onClient: (p: Uint8Array) => void,
  serverFull: "wait" | "drop" = "drop",
) {
  const { server, client } = await wsConnPair();
  const serverLink = Promise.withResolvers<PacketLink>();
  const serverMux: Mux = new Mux(server, {
    role: "server",
    budget: null,
    onConnect: (stream: MuxStream, _h, _p, service) => {
      assert.equal(service, "vpn");
      serverMux.sendConnected(stream.id, "10.8.0.2");
      serverLink.resolve(new PacketLink(stream, onServer, serverFull));
    },
  });
  const clientMux = new Mux(client, { role: "client", budget: null });
  const { stream, connected } = clientMux.connect("", 0, {}, "vpn");
  assert.equal(await connected, "10.8.0.2");
  const c = new PacketLink(stream, onClient, "wait");
  const s = await serverLink.promise;
  return {
    client: c,
    server: s,
    async close() {
      c.close();
      s.close();
      clientMux.close();
      serverMux.close();
      await Promise.all([c.done, s.done, clientMux.done, serverMux.done]);
    },
  };
}

function packet(i: number, size: number): Uint8Array {
  const p = new Uint8Array(size);
  new DataView(p.buffer).setUint32(0, i);
  for (let j = 4; j < size; j++) p[j] = (i * 31 + j) & 0xff;
  return p;
}

Deno.test("10,000 packets from 1 to 9,000 bytes cross both ways in order and intact", async () => {
  const sizes = Array.from({ length: 10_000 }, (_, i) => 4 + ((i * 7919) % 8997));
  const got: Uint8Array[][] = [[], []];
  const all = Promise.withResolvers<void>();
  const check = () => {
    if (got[0]!.length === sizes.length && got[1]!.length === sizes.length) all.resolve();
  };
  const pair = await linkPair(
    (p) => (got[0]!.push(p.slice()), check()),
    (p) => (got[1]!.push(p.slice()), check()),
    "wait",
  );
  try {
    for (let i = 0; i < sizes.length; i++) {
      await pair.client.queue(packet(i, sizes[i]!));
      await pair.server.queue(packet(i, sizes[i]!));
      if (i % 50 === 49) {
        await pair.client.flush();
        await pair.server.flush();
      }
    }
    await pair.client.flush();
    await pair.server.flush();
    await all.promise;
    for (const side of got) {
      side.forEach((p, i) => assert.deepEqual(p, packet(i, sizes[i]!), `packet ${i}`));
    }
    assert.equal(pair.client.counters.packetsOut, sizes.length);
    assert.equal(pair.server.counters.packetsIn, sizes.length);
    assert.equal(pair.client.counters.dropped, 0);
  } finally {
    await pair.close();
  }
});

Deno.test("a link in drop mode drops and counts what a full stream cannot take, and memory stays bounded", async () => {
  // The client side never reads: its handler blocks nothing, but we stop its reader by not
  // letting the stream drain (the client link is closed for reading below).
  let received = 0;
  const pair = await linkPair(() => {}, () => received++, "drop");
  try {
    // Far more than the stream's window and the pipe can hold, in one burst without yielding.
    const p = packet(1, 1400);
    for (let i = 0; i < 20_000; i++) pair.server.queue(p);
    pair.server.flush();
    const c = pair.server.counters;
    assert.ok(c.dropped > 0, "some packets were dropped");
    assert.equal(c.packetsOut + c.dropped, 20_000);
    // What was not dropped arrives.
    const deadline = Date.now() + 10_000;
    while (received < c.packetsOut && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(received, c.packetsOut);
  } finally {
    await pair.close();
  }
});

Deno.test("IPv4 header fields: addresses, the destination port of TCP/UDP, nothing for ICMP or fragments", () => {
  const p = new Uint8Array(28);
  p[0] = 0x45;
  p[9] = 17; // UDP
  p.set([10, 8, 0, 2], 12);
  p.set([203, 0, 113, 1], 16);
  p.set([0x13, 0x88, 0x00, 0x35], 20); // 5000 → 53
  assert.ok(isIpv4(p));
  assert.equal(u32ToIpv4(packetSource(p)), "10.8.0.2");
  assert.equal(u32ToIpv4(packetDestination(p)), "203.0.113.1");
  assert.equal(packetDestinationPort(p), 53);
  p[9] = 1; // ICMP
  assert.equal(packetDestinationPort(p), 0);
  p[9] = 6;
  p[7] = 8; // a later fragment: no ports in it
  assert.equal(packetDestinationPort(p), 0);
  assert.ok(!isIpv4(new Uint8Array([0x60, ...new Uint8Array(39)])), "IPv6 is not IPv4");
  assert.ok(!isIpv4(p.subarray(0, 19)), "too short");
  assert.equal(ipv4ToU32("255.255.255.255"), 0xffffffff);
  assert.equal(ipv4ToU32("256.0.0.1"), null);
  assert.equal(ipv4ToU32("10.8.0"), null);
});

Deno.test("a packet split across two DATA frames arrives whole, and an EOF ends the stream both ways, cleanly", async () => {
  const { server, client } = await wsConnPair();
  const got: Uint8Array[] = [];
  const linked = Promise.withResolvers<PacketLink>();
  const serverMux: Mux = new Mux(server, {
    role: "server",
    budget: null,
    onConnect: (stream) => {
      serverMux.sendConnected(stream.id, "10.8.0.2");
      linked.resolve(new PacketLink(stream, (p) => got.push(p.slice()), "drop"));
    },
  });
  const clientMux = new Mux(client, { role: "client", budget: null });
  const ended = Promise.withResolvers<boolean>();
  const { stream, connected } = clientMux.connect("", 0, {
    onEnd: (end) => ended.resolve(end.clean),
  }, "vpn");
  await connected;
  // The client side speaks the framing by hand: a 1,000-byte packet cut in two frames, then a
  // 3-byte one in the second frame.
  stream.attachMessages(() => {});
  const big = packet(7, 1000);
  const frame = (bytes: number[] | Uint8Array) => {
    const b = new Uint8Array(SEND_ROOM + bytes.length);
    b.set(bytes, SEND_ROOM);
    return [b, bytes.length] as const;
  };
  const first = frame([1000 >> 8, 1000 & 0xff, ...big.subarray(0, 500)]);
  assert.equal(stream.sendMessage(first[0], first[1]), true);
  const second = frame([...big.subarray(500), 0, 3, 97, 98, 99]);
  assert.equal(stream.sendMessage(second[0], second[1]), true);
  const link = await linked.promise;
  try {
    const deadline = Date.now() + 5_000;
    while (got.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(got, [big, new Uint8Array([97, 98, 99])]);
    stream.endMessages();
    await link.done;
    assert.equal(await ended.promise, true, "both EOFs: a clean end");
    assert.equal(link.closed, true);
  } finally {
    clientMux.close();
    serverMux.close();
    await Promise.all([link.done, clientMux.done, serverMux.done]);
  }
});
