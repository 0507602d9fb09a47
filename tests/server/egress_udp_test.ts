// A UDP egress association on the server, driven through its stream side with real UDP services:
// refusals audited once each and capped, names resolved once and the cache bounded, replies
// only from destinations it remembers (and how many it remembers), and the idle timeout.
import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import {
  MAX_UDP_DESTINATIONS,
  MAX_UDP_REFUSALS_AUDITED,
  UDP_RESOLVE_CACHE_ENTRIES,
  UdpAssociation,
  type UdpTotals,
} from "../../server/egress/egress_udp.ts";
import { EgressPolicy } from "../../server/egress/policy.ts";
import { DatagramReader, frameDatagram } from "../../shared/datagrams.ts";
import type { MuxStream } from "../../shared/mux_stream.ts";
import { decodeAddressed, encodeAddressed } from "../../shared/socks_address.ts";
import { udpEcho, UdpSocket } from "../support/udp.ts";
import { Notifier, ticks } from "../support/wait.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

interface Rig {
  readonly association: UdpAssociation;
  /** Sends a datagram as the client would (destination in front). */
  send(host: string, port: number, data: string): Promise<void>;
  /** The next datagram back to the client: its source and payload. */
  next(): Promise<{ host: string; port: number; data: string } | null>;
  readonly audit: { kind: string; detail: Record<string, unknown> }[];
  readonly lookups: string[];
  /** Set once the association is over. */
  ended: { totals: UdpTotals; reason: string } | null;
  readonly changed: Notifier;
  close(): Promise<void>;
}

function rig(
  opts: { allow?: string[]; idleMs?: number; names?: Record<string, string> } = {},
): Rig {
  const changed = new Notifier();
  const audit: Rig["audit"] = [];
  const lookups: string[] = [];
  let conn: Deno.Conn | null = null;
  const r: Rig = {
    association: new UdpAssociation({
      policy: new EgressPolicy(opts.allow ?? [], []),
      resolve: (host) => {
        lookups.push(host);
        const ip = opts.names?.[host];
        return Promise.resolve(ip ? [ip] : []);
      },
      resolveTimeoutMs: 1_000,
      idleMs: opts.idleMs ?? 60_000,
      log: getLogger(["mport-test"]),
      audit: (kind, detail) => audit.push({ kind, detail }),
      finished: (totals, reason) => {
        r.ended = { totals, reason };
        changed.notify();
      },
    }),
    async send(host, port, data) {
      await conn!.write(frameDatagram(encodeAddressed(host, port, enc.encode(data))));
    },
    async next() {
      const d = await reader.next();
      if (d === null) return null;
      const a = decodeAddressed(d);
      return { host: a.host, port: a.port, data: dec.decode(a.data) };
    },
    audit,
    lookups,
    ended: null,
    changed,
    async close() {
      r.association.end("test over");
      conn!.close();
      await ticks();
    },
  };
  r.association.start({ attach: (c: Deno.Conn) => (conn = c) } as unknown as MuxStream);
  const reader = new DatagramReader(conn!);
  return r;
}

Deno.test("a refused destination is dropped, counted, and audited once; past the cap refusals are only counted", async () => {
  const echo = udpEcho();
  const r = rig({ allow: [`127.0.0.1:${echo.port}`] });
  try {
    const extra = 10;
    for (let i = 0; i < MAX_UDP_REFUSALS_AUDITED + extra; i++) {
      await r.send("127.0.0.1", 1000 + i, "x");
      await r.send("127.0.0.1", 1000 + i, "again");
    }
    await r.send("10.1.2.3", 53, "x"); // a private network, too
    // Datagrams are handled in order: once this one is answered, the ones before were dealt with.
    await r.send("127.0.0.1", echo.port, "done");
    assert.deepEqual(await r.next(), { host: "127.0.0.1", port: echo.port, data: "done" });
    r.association.end("test");
    assert.equal(r.ended?.totals.denied, 2 * (MAX_UDP_REFUSALS_AUDITED + extra) + 1);
    assert.equal(r.ended?.totals.datagramsToDestinations, 1, "only the echo's");
    assert.equal(r.audit.length, MAX_UDP_REFUSALS_AUDITED, "one row per destination, capped");
    assert.deepEqual(r.audit[0], {
      kind: "egress_refused",
      detail: {
        destination: "127.0.0.1:1000",
        code: "egress_denied",
        message:
          "127.0.0.1 is in 127.0.0.0/8, which egress does not reach unless the operator allows it (--egress-allow)",
        service: "udp",
      },
    });
  } finally {
    await r.close();
    await echo.close();
  }
});

Deno.test("a name is resolved once for many datagrams, the cache keeps a bounded number of names, and an unknown name is refused as unreachable", async () => {
  const echo = udpEcho();
  const names: Record<string, string> = {};
  for (let i = 0; i <= UDP_RESOLVE_CACHE_ENTRIES; i++) names[`n${i}.test`] = "127.0.0.1";
  const r = rig({ allow: [`127.0.0.1:${echo.port}`], names });
  try {
    for (let i = 0; i < 5; i++) {
      await r.send("n0.test", echo.port, `hello ${i}`);
      assert.deepEqual(await r.next(), { host: "127.0.0.1", port: echo.port, data: `hello ${i}` });
    }
    assert.deepEqual(r.lookups, ["n0.test"], "one lookup for five datagrams");
    // One name more than the cache holds pushes out the oldest (n0), which is looked up again.
    for (let i = 1; i <= UDP_RESOLVE_CACHE_ENTRIES; i++) await r.send(`n${i}.test`, echo.port, "x");
    for (let i = 1; i <= UDP_RESOLVE_CACHE_ENTRIES; i++) await r.next();
    await r.send("n0.test", echo.port, "back");
    assert.deepEqual(await r.next(), { host: "127.0.0.1", port: echo.port, data: "back" });
    assert.equal(r.lookups.length, UDP_RESOLVE_CACHE_ENTRIES + 2);
    assert.equal(r.lookups.at(-1), "n0.test");
    await r.send("nowhere.test", echo.port, "x");
    await r.send("n1.test", echo.port, "after");
    assert.deepEqual(await r.next(), { host: "127.0.0.1", port: echo.port, data: "after" });
    assert.deepEqual(r.audit.map((a) => [a.detail.destination, a.detail.code]), [
      [`nowhere.test:${echo.port}`, "egress_unreachable"],
    ]);
  } finally {
    await r.close();
    await echo.close();
  }
});

Deno.test("replies come only from destinations the association remembers, and it remembers the most recent ones up to its limit", async () => {
  const service = new UdpSocket(); // answers when told to
  const echo = udpEcho(); // its answers show that what came before was handled
  const r = rig({ allow: ["127.0.0.0/8"] });
  const port = Number(r.association.address.split(":").at(-1));
  const relay: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port };
  const sentinel = async (tag: string) => {
    await r.send("127.0.0.1", echo.port, tag);
    assert.deepEqual(await r.next(), { host: "127.0.0.1", port: echo.port, data: tag });
  };
  try {
    // Unasked: dropped (it reaches the socket before the echo's answer does).
    await service.send(enc.encode("unasked"), relay);
    await sentinel("s0");
    // Asked: let in, with the service as its source.
    await r.send("127.0.0.1", service.port, "hi");
    await service.next(5_000);
    await service.send(enc.encode("answer"), relay);
    assert.deepEqual(await r.next(), { host: "127.0.0.1", port: service.port, data: "answer" });
    // Enough other destinations (127.0.0.2, nothing listens) to push the service out: echo, service,
    // then MAX - 1 more, then echo again as the most recent.
    for (let i = 0; i < MAX_UDP_DESTINATIONS - 1; i++) await r.send("127.0.0.2", 40000 + i, "x");
    await sentinel("s1");
    await service.send(enc.encode("forgotten"), relay);
    await sentinel("s2");
    // Asked again: remembered again.
    await r.send("127.0.0.1", service.port, "again");
    await service.next(5_000);
    await service.send(enc.encode("welcome back"), relay);
    assert.deepEqual(await r.next(), {
      host: "127.0.0.1",
      port: service.port,
      data: "welcome back",
    });
    r.association.end("test");
    assert.equal(r.ended?.totals.dropped, 2, "the unasked and the forgotten reply");
    assert.equal(r.ended?.totals.datagramsFromDestinations, 5);
    assert.equal(r.ended?.totals.destinations, MAX_UDP_DESTINATIONS);
  } finally {
    await r.close();
    await service.close();
    await echo.close();
  }
});

Deno.test("an association with no datagram either way for the idle time ends, with a clean end of its stream", async () => {
  const echo = udpEcho();
  const r = rig({ allow: [`127.0.0.1:${echo.port}`], idleMs: 200 });
  try {
    await r.send("127.0.0.1", echo.port, "ping");
    assert.deepEqual(await r.next(), { host: "127.0.0.1", port: echo.port, data: "ping" });
    await r.changed.until("the idle end", () => r.ended !== null, 5_000);
    assert.equal(r.ended?.reason, "idle");
    assert.equal(await r.next(), null, "the stream side reads a clean end");
  } finally {
    await r.close();
    await echo.close();
  }
});
