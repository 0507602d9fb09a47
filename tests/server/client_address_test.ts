// Tests for the client address: CIDR parsing and X-Forwarded-For believed only from trusted proxies.
import assert from "node:assert/strict";
import {
  formatCidr,
  MAX_FORWARDED_HOPS,
  normalizeIp,
  parseCidr,
  TrustedProxies,
} from "../../server/client_address.ts";

Deno.test("normalizeIp keys addresses one way and rejects what is not an address", () => {
  const cases: [string, string | null][] = [
    ["127.0.0.1", "127.0.0.1"],
    [" 203.0.113.7 ", "203.0.113.7"],
    ["::1", "::1"],
    ["2001:DB8::1", "2001:db8::1"],
    ["[2001:db8::1]", "2001:db8::1"],
    ["fe80::1%eth0", "fe80::1"],
    ["::ffff:127.0.0.1", "127.0.0.1"],
    ["::FFFF:203.0.113.7", "203.0.113.7"],
    ["", null],
    ["unknown", null],
    ["203.0.113.7:5555", null],
    ["01.2.3.4", null],
    ["1.2.3.256", null],
    ["evil, 1.2.3.4", null],
  ];
  for (const [text, want] of cases) assert.equal(normalizeIp(text), want, JSON.stringify(text));
});

Deno.test("parseCidr accepts IPv4, IPv6 and v4-mapped blocks and bare addresses", () => {
  const cases: [string, string][] = [
    ["127.0.0.1/32", "127.0.0.1/32"],
    ["127.0.0.1", "127.0.0.1/32"],
    ["10.0.0.0/8", "10.0.0.0/8"],
    ["0.0.0.0/0", "0.0.0.0/0"],
    ["::1", "::1/128"],
    ["::1/128", "::1/128"],
    ["2001:DB8::/32", "2001:db8::/32"],
    ["[fd00::]/8", "fd00::/8"],
    ["::ffff:10.0.0.0/104", "10.0.0.0/8"],
    ["::ffff:127.0.0.1", "127.0.0.1/32"],
  ];
  for (const [text, want] of cases) assert.equal(formatCidr(parseCidr(text)), want, text);
});

Deno.test("parseCidr rejects bad blocks with a message that shows the form", () => {
  const bad = [
    "",
    "localhost",
    "127.0.0.1/33",
    "::1/129",
    "10.0.0.0/-1",
    "10.0.0.0/",
    "10.0.0.0/8/8",
    "10.0.0.0/ 8",
    " 10.0.0.0/8",
    "10.0.0.0/08x",
    "fe80::1%eth0/64",
    "::ffff:10.0.0.0/8",
    "300.0.0.0/8",
  ];
  for (const text of bad) {
    assert.throws(() => parseCidr(text), {
      name: "TypeError",
      message: `invalid --trusted-proxy "${text}": expected an IPv4 or IPv6 address or CIDR ` +
        "block, such as 127.0.0.1/32, 10.0.0.0/8 or ::1/128",
    }, text);
  }
});

const xff = (value?: string) =>
  new Headers(value === undefined ? {} : { "x-forwarded-for": value });

const CLIENT_IP_CASES: {
  name: string;
  trusted: string[];
  peer: string;
  xff?: string;
  want: string;
}[] = [
  // Nothing is trusted by default: a loopback peer is a client like any other.
  {
    name: "default, loopback peer",
    trusted: [],
    peer: "127.0.0.1",
    xff: "1.2.3.4",
    want: "127.0.0.1",
  },
  { name: "default, ::1 peer", trusted: [], peer: "::1", xff: "1.2.3.4", want: "::1" },
  {
    name: "default, v4-mapped loopback peer",
    trusted: [],
    peer: "::ffff:127.0.0.1",
    xff: "1.2.3.4",
    want: "127.0.0.1",
  },
  {
    name: "untrusted peer",
    trusted: ["10.0.0.0/8"],
    peer: "127.0.0.1",
    xff: "1.2.3.4",
    want: "127.0.0.1",
  },
  {
    name: "trusted IPv4 peer",
    trusted: ["127.0.0.1/32"],
    peer: "127.0.0.1",
    xff: "1.2.3.4",
    want: "1.2.3.4",
  },
  { name: "trusted, no header", trusted: ["127.0.0.1/32"], peer: "127.0.0.1", want: "127.0.0.1" },
  {
    name: "trusted, empty header",
    trusted: ["127.0.0.1/32"],
    peer: "127.0.0.1",
    xff: "",
    want: "127.0.0.1",
  },
  {
    name: "trusted v4-mapped peer",
    trusted: ["127.0.0.1/32"],
    peer: "::ffff:127.0.0.1",
    xff: "1.2.3.4",
    want: "1.2.3.4",
  },
  {
    name: "trusted IPv6 peer",
    trusted: ["::1/128"],
    peer: "::1",
    xff: "2001:db8::7",
    want: "2001:db8::7",
  },
  { name: "IPv6 block", trusted: ["fd00::/8"], peer: "fd12::9", xff: "1.2.3.4", want: "1.2.3.4" },
  {
    name: "IPv6 block, outside",
    trusted: ["fd00::/8"],
    peer: "fe12::9",
    xff: "1.2.3.4",
    want: "fe12::9",
  },
  {
    name: "v4-mapped hop",
    trusted: ["127.0.0.1/32"],
    peer: "127.0.0.1",
    xff: "::ffff:198.51.100.7",
    want: "198.51.100.7",
  },
  // The client can write anything left of what the proxy appended: the last hop counts.
  {
    name: "forged hops on the left",
    trusted: ["127.0.0.1/32"],
    peer: "127.0.0.1",
    xff: "9.9.9.9, 8.8.8.8, 198.51.100.7",
    want: "198.51.100.7",
  },
  // Chained proxies: trusted hops are skipped from the right.
  {
    name: "chain of trusted proxies",
    trusted: ["127.0.0.1/32", "10.0.0.0/8"],
    peer: "127.0.0.1",
    xff: "9.9.9.9, 198.51.100.7, 10.1.2.3",
    want: "198.51.100.7",
  },
  {
    name: "garbage appended by the proxy",
    trusted: ["127.0.0.1/32"],
    peer: "127.0.0.1",
    xff: "198.51.100.7, unknown",
    want: "127.0.0.1",
  },
  {
    name: "garbage left of a trusted hop",
    trusted: ["127.0.0.1/32", "10.0.0.0/8"],
    peer: "127.0.0.1",
    xff: "junk, 10.1.2.3",
    want: "10.1.2.3",
  },
  {
    name: "hops without spaces",
    trusted: ["127.0.0.1/32"],
    peer: "127.0.0.1",
    xff: "1.1.1.1,198.51.100.7",
    want: "198.51.100.7",
  },
];

for (const c of CLIENT_IP_CASES) {
  Deno.test(`client address: ${c.name}`, () => {
    const proxies = new TrustedProxies(c.trusted);
    assert.equal(proxies.clientIp(xff(c.xff), c.peer), c.want);
  });
}

Deno.test("client address: several X-Forwarded-For lines read as one list", () => {
  const headers = new Headers();
  headers.append("x-forwarded-for", "9.9.9.9");
  headers.append("x-forwarded-for", "198.51.100.7");
  assert.equal(new TrustedProxies(["127.0.0.1/32"]).clientIp(headers, "127.0.0.1"), "198.51.100.7");
});

Deno.test("client address: a long chain of trusted hops is walked only so far", () => {
  const proxies = new TrustedProxies(["10.0.0.0/8"]);
  const hops = Array.from({ length: 40 }, (_, i) => `10.0.0.${i + 1}`);
  const got = proxies.clientIp(xff(["1.2.3.4", ...hops].join(", ")), "10.9.9.9");
  assert.equal(got, hops[hops.length - MAX_FORWARDED_HOPS]);
});

Deno.test("TrustedProxies rejects a bad block", () => {
  assert.throws(() => new TrustedProxies(["127.0.0.1/40"]), {
    name: "TypeError",
    message: /^invalid --trusted-proxy "127\.0\.0\.1\/40"/,
  });
});
