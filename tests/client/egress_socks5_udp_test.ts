// SOCKS5 UDP ASSOCIATE on the client: the `RSV RSV FRAG` header parsed and written, and the
// local relay over real sockets with a dialer whose association is an in-memory queue.
import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import {
  encodeSocksUdp,
  parseSocksUdp,
  SOCKS_UDP_HEADER_BYTES,
} from "../../client/egress/socks5_udp.ts";
import {
  type EgressDatagrams,
  type EgressDialer,
  EgressRefused,
  type EgressStream,
  startSocksServer,
} from "../../client/egress/socks_server.ts";
import { socksUdpAssociate } from "../support/socks_client.ts";
import { UdpSocket } from "../support/udp.ts";
import { Notifier } from "../support/wait.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("a SOCKS5 UDP datagram's header is parsed: fragment, address of each type, port and payload", () => {
  const table: {
    name: string;
    packet: number[];
    want: { frag: number; host: string; port: number; isName: boolean; data: string };
  }[] = [
    {
      name: "IPv4",
      packet: [0, 0, 0, 1, 192, 0, 2, 7, 0, 53, ...enc.encode("query")],
      want: { frag: 0, host: "192.0.2.7", port: 53, isName: false, data: "query" },
    },
    {
      name: "IPv6, shortened as RFC 5952 says",
      packet: [0, 0, 0, 4, 0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1, 0x1f, 0x90, 0x78],
      want: { frag: 0, host: "2001:db8::1", port: 8080, isName: false, data: "x" },
    },
    {
      name: "a domain name",
      packet: [0, 0, 0, 3, 9, ...enc.encode("dns.test."), 0, 53, ...enc.encode("q")],
      want: { frag: 0, host: "dns.test.", port: 53, isName: true, data: "q" },
    },
    {
      name: "an empty payload",
      packet: [0, 0, 0, 1, 10, 0, 0, 1, 0xff, 0xff],
      want: { frag: 0, host: "10.0.0.1", port: 65535, isName: false, data: "" },
    },
    {
      name: "a fragment (parsed; the relay drops it)",
      packet: [0, 0, 5, 1, 10, 0, 0, 1, 0, 80, 0x61],
      want: { frag: 5, host: "10.0.0.1", port: 80, isName: false, data: "a" },
    },
  ];
  for (const c of table) {
    const packet = new Uint8Array(c.packet);
    const got = parseSocksUdp(packet);
    assert.deepEqual(
      {
        frag: got.frag,
        host: got.host,
        port: got.port,
        isName: got.isName,
        data: dec.decode(got.data),
      },
      c.want,
      c.name,
    );
    // What goes to the server is the packet without its first three bytes.
    assert.deepEqual([...got.addressed], c.packet.slice(SOCKS_UDP_HEADER_BYTES), c.name);
  }
});

Deno.test("malformed SOCKS5 UDP datagrams are refused with a reason", () => {
  const table: { name: string; packet: number[]; error: RegExp }[] = [
    { name: "empty", packet: [], error: /0 bytes has no SOCKS5 UDP header/ },
    { name: "header only", packet: [0, 0, 0], error: /no address/ },
    { name: "reserved bytes set", packet: [1, 0, 0, 1, 1, 2, 3, 4, 0, 80], error: /reserved/ },
    {
      name: "second reserved byte set",
      packet: [0, 9, 0, 1, 1, 2, 3, 4, 0, 80],
      error: /reserved/,
    },
    { name: "IPv4 cut short", packet: [0, 0, 0, 1, 1, 2, 3, 4, 0], error: /too short for an IPv4/ },
    { name: "IPv6 cut short", packet: [0, 0, 0, 4, ...new Array(17).fill(0)], error: /IPv6/ },
    { name: "no name length", packet: [0, 0, 0, 3], error: /too short for a domain name/ },
    { name: "empty name", packet: [0, 0, 0, 3, 0, 0, 80], error: /empty domain name/ },
    {
      name: "name cut short",
      packet: [0, 0, 0, 3, 5, 0x61, 0x62, 0, 80],
      error: /its domain name/,
    },
    {
      name: "name with a space",
      packet: [0, 0, 0, 3, 3, 0x61, 0x20, 0x62, 0, 80],
      error: /spaces, control or non-ASCII/,
    },
    {
      name: "name with a non-ASCII byte",
      packet: [0, 0, 0, 3, 2, 0x61, 0xe9, 0, 80],
      error: /non-ASCII/,
    },
    { name: "address type 2", packet: [0, 0, 0, 2, 1, 2, 3, 4, 0, 80], error: /address type 2/ },
    { name: "port 0", packet: [0, 0, 0, 1, 1, 2, 3, 4, 0, 0, 0x61], error: /port 0/ },
  ];
  for (const c of table) {
    assert.throws(() => parseSocksUdp(new Uint8Array(c.packet)), c.error, c.name);
  }
});

Deno.test("a datagram from the server gets the header of a whole datagram in front", () => {
  const addressed = [1, 203, 0, 113, 1, 0, 53, ...enc.encode("answer")];
  const out = encodeSocksUdp(new Uint8Array(addressed));
  assert.deepEqual([...out], [0, 0, 0, ...addressed]);
  const back = parseSocksUdp(out);
  assert.deepEqual([back.host, back.port, dec.decode(back.data)], ["203.0.113.1", 53, "answer"]);
});

/** An association kept in memory: what the relay sent, and replies pushed by the test. */
class MemoryAssociation implements EgressDatagrams {
  readonly sent: Uint8Array[] = [];
  readonly changed = new Notifier();
  closed = false;
  readonly #replies: (Uint8Array | null)[] = [];

  send(datagram: Uint8Array): boolean {
    if (this.closed) return false;
    this.sent.push(datagram.slice());
    this.changed.notify();
    return true;
  }

  reply(datagram: Uint8Array | null): void {
    this.#replies.push(datagram);
    this.changed.notify();
  }

  async receive(): Promise<Uint8Array | null> {
    await this.changed.until("a reply", () => this.#replies.length > 0 || this.closed, 60_000);
    return this.closed ? null : this.#replies.shift()!;
  }

  close(): void {
    this.closed = true;
    this.changed.notify();
  }
}

class MemoryDialer implements EgressDialer {
  readonly associations: MemoryAssociation[] = [];
  constructor(readonly refusal: EgressRefused | null = null) {}
  open(): Promise<EgressStream> {
    return Promise.reject(new EgressRefused("failed", "no TCP here"));
  }
  openUdp(): Promise<EgressDatagrams> {
    if (this.refusal) return Promise.reject(this.refusal);
    const a = new MemoryAssociation();
    this.associations.push(a);
    return Promise.resolve(a);
  }
}

async function withProxy(
  dialer: EgressDialer,
  fn: (port: number) => Promise<void>,
): Promise<void> {
  const proxy = await startSocksServer({
    hostname: "127.0.0.1",
    port: 0,
    auth: null,
    dialer,
    log: getLogger(["mport", "test"]),
  });
  try {
    await fn(proxy.addr.port);
  } finally {
    await proxy.close();
  }
}

Deno.test("the relay takes datagrams from the first sender's port only, drops fragments, sends replies back with the header, and ends with the control connection", async () => {
  const dialer = new MemoryDialer();
  await withProxy(dialer, async (port) => {
    const first = new UdpSocket();
    const other = new UdpSocket(); // same IP, another port: not the association's client
    try {
      const a = await socksUdpAssociate(port);
      assert.equal(a.code, 0);
      assert.equal(a.relay.hostname, "127.0.0.1");
      const assoc = dialer.associations[0]!;
      const datagram = (payload: string, frag = 0) =>
        new Uint8Array([0, 0, frag, 1, 192, 0, 2, 1, 0, 7, ...enc.encode(payload)]);
      await first.send(datagram("one"), a.relay);
      await other.send(datagram("intruder"), a.relay);
      await first.send(datagram("fragment", 1), a.relay);
      await first.send(datagram("two"), a.relay);
      await assoc.changed.until("two datagrams sent on", () => assoc.sent.length >= 2, 5_000);
      assert.deepEqual(
        assoc.sent.map((d) => [...d.subarray(0, 7), dec.decode(d.subarray(7))]),
        [[1, 192, 0, 2, 1, 0, 7, "one"], [1, 192, 0, 2, 1, 0, 7, "two"]],
      );
      assoc.reply(new Uint8Array([1, 192, 0, 2, 1, 0, 7, ...enc.encode("back")]));
      const got = await first.next(5_000, "the reply");
      assert.deepEqual([...got.data], [0, 0, 0, 1, 192, 0, 2, 1, 0, 7, ...enc.encode("back")]);
      assert.equal(other.pending, 0);
      a.control.close();
      await assoc.changed.until("the association closed", () => assoc.closed, 5_000);
    } finally {
      await first.close();
      await other.close();
    }
  });
});

Deno.test("a refused UDP association is answered with the SOCKS reply for its reason", async () => {
  for (
    const [kind, code] of [["denied", 2], ["failed", 1], ["timeout", 6]] as const
  ) {
    await withProxy(new MemoryDialer(new EgressRefused(kind, `because ${kind}`)), async (port) => {
      const a = await socksUdpAssociate(port);
      assert.equal(a.code, code, kind);
    });
  }
});

Deno.test("the association ends when the server ends it: the control connection is closed", async () => {
  const dialer = new MemoryDialer();
  await withProxy(dialer, async (port) => {
    const a = await socksUdpAssociate(port);
    try {
      assert.equal(a.code, 0);
      dialer.associations[0]!.reply(null); // the server's side is over
      const buf = new Uint8Array(16);
      assert.equal(await a.control.read(buf), null, "EOF on the control connection");
    } finally {
      a.control.close();
    }
  });
});
