// The VPN's address pool: a client keeps its address across reconnects, addresses of clients that
// left are reclaimed only when needed, and `--vpn-pool` is parsed strictly.
import assert from "node:assert/strict";
import { parseVpnPool, VPN_LEASE_KEEP_MS, VpnPool } from "../../server/vpn/vpn_pool.ts";
import { u32ToIpv4 } from "../../shared/ipv4.ts";

function pool(text: string, clock = { now: 0 }) {
  return new VpnPool(parseVpnPool(text), () => clock.now);
}

const ip = (v: number | null) => (v === null ? null : u32ToIpv4(v));

Deno.test("a /24 pool gives the server .1 and clients .2 up to .254", () => {
  const p = pool("10.8.0.0/24");
  assert.equal(ip(p.gateway), "10.8.0.1");
  assert.equal(p.capacity, 253);
  assert.deepEqual([ip(p.acquire("1/a")), ip(p.acquire("1/b"))], ["10.8.0.2", "10.8.0.3"]);
});

Deno.test("the same client gets the same address after it reconnected, even while the old session still holds it", () => {
  const p = pool("10.8.0.0/24");
  const first = p.acquire("1/phone");
  p.acquire("1/laptop");
  // A reconnect overlaps the old session's end: hold twice, release once.
  assert.equal(p.acquire("1/phone"), first);
  p.release("1/phone");
  assert.equal(p.active, 2);
  p.release("1/phone");
  assert.equal(p.active, 1);
  assert.equal(p.acquire("1/phone"), first);
});

Deno.test("a full pool refuses, then reclaims the address held longest by a client that left", () => {
  const clock = { now: 1000 };
  const p = pool("10.8.0.0/29", clock); // .2 to .6: five clients
  const got = ["a", "b", "c", "d", "e"].map((k) => ip(p.acquire(k)));
  assert.deepEqual(got, ["10.8.0.2", "10.8.0.3", "10.8.0.4", "10.8.0.5", "10.8.0.6"]);
  assert.equal(p.acquire("f"), null);
  clock.now = 2000;
  p.release("c");
  clock.now = 3000;
  p.release("a");
  assert.equal(ip(p.acquire("f")), "10.8.0.4", "c left first");
  assert.equal(ip(p.acquire("g")), "10.8.0.2");
  // c lost its reservation; it gets whatever is free (nothing now).
  assert.equal(p.acquire("c"), null);
});

Deno.test("a reservation expires after an hour and the address goes to the next client", () => {
  const clock = { now: 0 };
  const p = pool("10.8.0.0/30", clock); // one client address: .2
  assert.equal(ip(p.acquire("old")), "10.8.0.2");
  p.release("old");
  clock.now = VPN_LEASE_KEEP_MS + 1;
  assert.equal(ip(p.acquire("new")), "10.8.0.2");
  p.release("new");
  // "old" comes back within new's hour: it is reclaimed from new only because nothing is free.
  assert.equal(ip(p.acquire("old")), "10.8.0.2");
});

for (
  const bad of ["10.8.0.0", "10.8.0.0/31", "10.8.0.0/7", "10.8.0.256/24", "fd00::/64", "x/24", ""]
) {
  Deno.test(`--vpn-pool ${JSON.stringify(bad)} is refused with an example`, () => {
    assert.throws(() => parseVpnPool(bad), {
      name: "TypeError",
      message: `invalid --vpn-pool "${bad}": give an IPv4 block from /8 to /30, e.g. 10.8.0.0/24`,
    });
  });
}

Deno.test("--vpn-pool clears host bits", () => {
  assert.equal(parseVpnPool("10.8.0.77/24").text, "10.8.0.0/24");
  assert.equal(parseVpnPool(" 172.20.5.9/16 ").text, "172.20.0.0/16");
});
