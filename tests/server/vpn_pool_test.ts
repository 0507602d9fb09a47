// The VPN's address pool: a client keeps its address across reconnects, addresses of clients that
// left are reclaimed only when needed, one user cannot take the whole pool, and `--vpn-pool` is
// parsed strictly.
import assert from "node:assert/strict";
import {
  parseVpnPool,
  VPN_LEASE_KEEP_MS,
  VPN_LEASES_PER_USER,
  VpnPool,
} from "../../server/vpn/vpn_pool.ts";
import { u32ToIpv4 } from "../../shared/ipv4.ts";

function pool(text: string, clock = { now: 0 }) {
  return new VpnPool(parseVpnPool(text), () => clock.now);
}

/** The address as text, or the refusal as it is. */
const ip = (v: number | string) => (typeof v === "string" ? v : u32ToIpv4(v));

Deno.test("a /24 pool gives the server .1 and clients .2 up to .254", () => {
  const p = pool("10.8.0.0/24");
  assert.equal(ip(p.gateway), "10.8.0.1");
  assert.equal(p.capacity, 253);
  assert.deepEqual([ip(p.acquire(1, "a")), ip(p.acquire(1, "b"))], ["10.8.0.2", "10.8.0.3"]);
});

Deno.test("the same client gets the same address after it reconnected, even while the old session still holds it", () => {
  const p = pool("10.8.0.0/24");
  const first = p.acquire(1, "phone");
  p.acquire(1, "laptop");
  // A reconnect overlaps the old session's end: hold twice, release once.
  assert.equal(p.acquire(1, "phone"), first);
  p.release(1, "phone");
  assert.equal(p.active, 2);
  p.release(1, "phone");
  assert.equal(p.active, 1);
  assert.equal(p.acquire(1, "phone"), first);
  // The same client id of another user is another client.
  assert.notEqual(p.acquire(2, "phone"), first);
});

Deno.test("a full pool refuses with a sentence, then reclaims the address held longest by a client that left", () => {
  const clock = { now: 1000 };
  const p = pool("10.8.0.0/29", clock); // .2 to .6: five clients
  const got = ["a", "b", "c", "d", "e"].map((k, i) => ip(p.acquire(i, k)));
  assert.deepEqual(got, ["10.8.0.2", "10.8.0.3", "10.8.0.4", "10.8.0.5", "10.8.0.6"]);
  assert.equal(p.acquire(9, "f"), "the VPN pool 10.8.0.0/29 is full (every address is in use)");
  clock.now = 2000;
  p.release(2, "c");
  clock.now = 3000;
  p.release(0, "a");
  assert.equal(ip(p.acquire(9, "f")), "10.8.0.4", "c left first");
  assert.equal(ip(p.acquire(9, "g")), "10.8.0.2");
  // c lost its reservation; nothing is free now.
  assert.match(ip(p.acquire(2, "c")), /is full/);
});

Deno.test("a reservation expires after an hour and the address goes to the next client", () => {
  const clock = { now: 0 };
  const p = pool("10.8.0.0/30", clock); // one client address: .2
  assert.equal(ip(p.acquire(1, "old")), "10.8.0.2");
  p.release(1, "old");
  clock.now = VPN_LEASE_KEEP_MS + 1;
  assert.equal(ip(p.acquire(2, "new")), "10.8.0.2");
});

Deno.test("one user with ever new client ids takes back their own reservations, never more than their share", () => {
  const p = pool("10.8.0.0/24");
  for (let i = 0; i < VPN_LEASES_PER_USER; i++) p.acquire(7, `client-${i}`);
  // All connected: the next one is refused, and other users are not affected.
  assert.equal(
    p.acquire(7, "one-more"),
    `at most ${VPN_LEASES_PER_USER} VPN clients per user are connected at once`,
  );
  assert.equal(ip(p.acquire(8, "x")), `10.8.0.${2 + VPN_LEASES_PER_USER}`);
  // One left: its address goes to the user's next client.
  p.release(7, "client-3");
  assert.equal(ip(p.acquire(7, "one-more")), "10.8.0.5");
  assert.equal(p.active, VPN_LEASES_PER_USER + 1);
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
