// Tests for IP address and CIDR parsing, matching, and allow/deny rules.
import assert from "node:assert/strict";
import { cidrContains, IpRules, parseCidr, parseIp } from "../../shared/ip_cidr.ts";

const VALID_IPS: { text: string; bytes: number[] }[] = [
  { text: "0.0.0.0", bytes: [0, 0, 0, 0] },
  { text: "192.168.1.5", bytes: [192, 168, 1, 5] },
  { text: "255.255.255.255", bytes: [255, 255, 255, 255] },
  { text: "::", bytes: Array(16).fill(0) },
  { text: "::1", bytes: [...Array(15).fill(0), 1] },
  { text: "[::1]", bytes: [...Array(15).fill(0), 1] },
  { text: "2001:db8::", bytes: [0x20, 0x01, 0x0d, 0xb8, ...Array(12).fill(0)] },
  { text: "2001:DB8:0:0:0:0:0:1", bytes: [0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 1] },
  { text: "1:2:3:4:5:6:7::", bytes: [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 0] },
  { text: "::2:3:4:5:6:7:8", bytes: [0, 0, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8] },
  { text: "::ffff:1.2.3.4", bytes: [...Array(10).fill(0), 0xff, 0xff, 1, 2, 3, 4] },
  { text: "[::ffff:1.2.3.4]", bytes: [...Array(10).fill(0), 0xff, 0xff, 1, 2, 3, 4] },
  { text: "64:ff9b::10.0.0.1", bytes: [0, 0x64, 0xff, 0x9b, ...Array(8).fill(0), 10, 0, 0, 1] },
  { text: "fe80::1%eth0", bytes: [0xfe, 0x80, ...Array(13).fill(0), 1] },
];

for (const c of VALID_IPS) {
  Deno.test(`parseIp reads ${c.text}`, () => {
    assert.deepEqual(parseIp(c.text), new Uint8Array(c.bytes));
  });
}

const INVALID_IPS = [
  "",
  "1.2.3",
  "1.2.3.4.5",
  "256.1.1.1",
  "01.2.3.4",
  "1.2.3.-4",
  " 1.2.3.4",
  "1.2.3.4 ",
  "[1.2.3.4]",
  "1.2.3.4/32",
  "a.b.c.d",
  "localhost",
  ":::",
  "1::2::3",
  "1:2:3:4:5:6:7:8:9",
  "1:2:3:4:5:6:7",
  "1:2:3:4:5:6:7:8::",
  "12345::",
  "g::1",
  "::1.2.3",
  "::1.2.3.4:5",
  "::ffff:256.1.1.1",
  "[::1",
  "fe80::1%",
  "fe80::1%a b",
  "::1" + "0".repeat(100),
];

for (const text of INVALID_IPS) {
  Deno.test(`parseIp refuses ${JSON.stringify(text)}`, () => {
    assert.equal(parseIp(text), null);
  });
}

const VALID_CIDRS: { text: string; family: 4 | 6; prefix: number; bytes: number[] }[] = [
  { text: "10.0.0.0/8", family: 4, prefix: 8, bytes: [10, 0, 0, 0] },
  { text: "10.1.2.3/8", family: 4, prefix: 8, bytes: [10, 0, 0, 0] },
  { text: "192.168.1.5", family: 4, prefix: 32, bytes: [192, 168, 1, 5] },
  { text: "172.16.0.0/12", family: 4, prefix: 12, bytes: [172, 16, 0, 0] },
  { text: "172.31.255.255/12", family: 4, prefix: 12, bytes: [172, 16, 0, 0] },
  { text: "0.0.0.0/0", family: 4, prefix: 0, bytes: [0, 0, 0, 0] },
  {
    text: "2001:db8::/32",
    family: 6,
    prefix: 32,
    bytes: [0x20, 1, 0xd, 0xb8, ...Array(12).fill(0)],
  },
  { text: "::1", family: 6, prefix: 128, bytes: [...Array(15).fill(0), 1] },
  { text: "::/0", family: 6, prefix: 0, bytes: Array(16).fill(0) },
  { text: "fe80::1/10", family: 6, prefix: 10, bytes: [0xfe, 0x80, ...Array(14).fill(0)] },
  { text: "::ffff:10.0.0.0/104", family: 4, prefix: 8, bytes: [10, 0, 0, 0] },
  { text: "::ffff:1.2.3.4", family: 4, prefix: 32, bytes: [1, 2, 3, 4] },
  { text: "::ffff:0:0/80", family: 6, prefix: 80, bytes: Array(16).fill(0) },
];

for (const c of VALID_CIDRS) {
  Deno.test(`parseCidr reads ${c.text}`, () => {
    const cidr = parseCidr(c.text);
    assert.equal(cidr.family, c.family);
    assert.equal(cidr.prefix, c.prefix);
    assert.equal(cidr.text, c.text);
    assert.deepEqual(cidr.bytes, new Uint8Array(c.bytes));
  });
}

Deno.test("parseCidr trims whitespace around the block", () => {
  assert.equal(parseCidr(" 10.0.0.0/8 ").text, "10.0.0.0/8");
});

const ADDRESS_HINT =
  "expected an IPv4 or IPv6 address or block, such as 10.0.0.0/8, 192.168.1.5 or 2001:db8::/32";

const INVALID_CIDRS: { text: string; message: string }[] = [
  { text: "", message: `invalid CIDR "": ${ADDRESS_HINT}` },
  { text: "10.0.0/8", message: `invalid CIDR "10.0.0/8": ${ADDRESS_HINT}` },
  { text: "example.com/24", message: `invalid CIDR "example.com/24": ${ADDRESS_HINT}` },
  {
    text: "10.0.0.0/8/8",
    message: `invalid CIDR "10.0.0.0/8/8": prefix length "8/8" is not a number from 0 to 32`,
  },
  {
    text: "10.0.0.0/",
    message: `invalid CIDR "10.0.0.0/": prefix length "" is not a number from 0 to 32`,
  },
  {
    text: "10.0.0.0/08",
    message: `invalid CIDR "10.0.0.0/08": prefix length "08" is not a number from 0 to 32`,
  },
  {
    text: "10.0.0.0/-1",
    message: `invalid CIDR "10.0.0.0/-1": prefix length "-1" is not a number from 0 to 32`,
  },
  {
    text: "10.0.0.0/33",
    message: `invalid CIDR "10.0.0.0/33": prefix length 33 is more than 32 for IPv4`,
  },
  { text: "::/129", message: `invalid CIDR "::/129": prefix length 129 is more than 128 for IPv6` },
  {
    text: "::/1000",
    message: `invalid CIDR "::/1000": prefix length "1000" is not a number from 0 to 128`,
  },
  {
    text: "[::1]/128",
    message:
      `invalid CIDR "[::1]/128": expected an address without brackets or zone, such as 10.0.0.0/8 or 2001:db8::/32`,
  },
  {
    text: "fe80::%eth0/64",
    message:
      `invalid CIDR "fe80::%eth0/64": expected an address without brackets or zone, such as 10.0.0.0/8 or 2001:db8::/32`,
  },
];

for (const c of INVALID_CIDRS) {
  Deno.test(`parseCidr refuses ${JSON.stringify(c.text)}`, () => {
    assert.throws(() => parseCidr(c.text), { name: "TypeError", message: c.message });
  });
}

const CONTAINS: { cidr: string; ip: string; want: boolean }[] = [
  { cidr: "10.0.0.0/8", ip: "10.255.1.2", want: true },
  { cidr: "10.0.0.0/8", ip: "11.0.0.0", want: false },
  { cidr: "10.0.0.0/8", ip: "::ffff:10.1.1.1", want: true },
  { cidr: "10.0.0.0/8", ip: "[::ffff:10.1.1.1]", want: true },
  { cidr: "10.0.0.0/8", ip: "::ffff:11.1.1.1", want: false },
  { cidr: "10.0.0.0/8", ip: "::a01:101", want: false },
  { cidr: "172.16.0.0/12", ip: "172.31.255.255", want: true },
  { cidr: "172.16.0.0/12", ip: "172.32.0.0", want: false },
  { cidr: "192.168.1.5", ip: "192.168.1.5", want: true },
  { cidr: "192.168.1.5", ip: "192.168.1.6", want: false },
  { cidr: "0.0.0.0/0", ip: "8.8.8.8", want: true },
  { cidr: "0.0.0.0/0", ip: "::1", want: false },
  { cidr: "::1", ip: "::1", want: true },
  { cidr: "::1", ip: "[::1]", want: true },
  { cidr: "::1", ip: "127.0.0.1", want: false },
  { cidr: "2001:db8::/32", ip: "2001:db8:ffff::1", want: true },
  { cidr: "2001:db8::/32", ip: "2001:db9::1", want: false },
  { cidr: "fe80::/10", ip: "febf::1%eth0", want: true },
  { cidr: "fe80::/10", ip: "fec0::1", want: false },
  { cidr: "::/0", ip: "2001:db8::1", want: true },
  { cidr: "::/0", ip: "1.2.3.4", want: false },
  { cidr: "::ffff:10.0.0.0/104", ip: "10.9.9.9", want: true },
  { cidr: "::ffff:0:0/96", ip: "203.0.113.9", want: true },
  { cidr: "10.0.0.0/8", ip: "not an ip", want: false },
  { cidr: "10.0.0.0/8", ip: "", want: false },
  { cidr: "10.0.0.0/8", ip: "10.0.0.1:8080", want: false },
];

for (const c of CONTAINS) {
  Deno.test(`cidrContains(${c.cidr}, ${JSON.stringify(c.ip)}) is ${c.want}`, () => {
    assert.equal(cidrContains(parseCidr(c.cidr), c.ip), c.want);
  });
}

const RULES: { name: string; allow: string[]; deny: string[]; ip: string; want: boolean }[] = [
  { name: "no rules pass anything", allow: [], deny: [], ip: "1.2.3.4", want: true },
  { name: "no rules pass non-IP text", allow: [], deny: [], ip: "unix", want: true },
  { name: "allow list match", allow: ["10.0.0.0/8"], deny: [], ip: "10.1.1.1", want: true },
  { name: "allow list miss", allow: ["10.0.0.0/8"], deny: [], ip: "11.1.1.1", want: false },
  { name: "deny list match", allow: [], deny: ["10.0.0.0/8"], ip: "10.1.1.1", want: false },
  { name: "deny list miss", allow: [], deny: ["10.0.0.0/8"], ip: "11.1.1.1", want: true },
  {
    name: "deny wins over allow",
    allow: ["10.0.0.0/8"],
    deny: ["10.1.0.0/16"],
    ip: "10.1.2.3",
    want: false,
  },
  {
    name: "allow outside the deny",
    allow: ["10.0.0.0/8"],
    deny: ["10.1.0.0/16"],
    ip: "10.2.2.3",
    want: true,
  },
  {
    name: "mapped address denied by an IPv4 block",
    allow: [],
    deny: ["10.0.0.0/8"],
    ip: "::ffff:10.0.0.1",
    want: false,
  },
  { name: "mixed families", allow: ["::1", "127.0.0.1"], deny: [], ip: "::1", want: true },
  {
    name: "non-IP text with rules fails closed",
    allow: [],
    deny: ["10.0.0.0/8"],
    ip: "unix",
    want: false,
  },
];

for (const c of RULES) {
  Deno.test(`IpRules: ${c.name}`, () => {
    const rules = new IpRules(c.allow, c.deny);
    assert.equal(rules.allows(c.ip), c.want);
    assert.equal(rules.empty, c.allow.length === 0 && c.deny.length === 0);
  });
}

Deno.test("IpRules refuses a bad CIDR in either list", () => {
  assert.throws(() => new IpRules(["10.0.0.0/33"], []), {
    name: "TypeError",
    message: 'invalid CIDR "10.0.0.0/33": prefix length 33 is more than 32 for IPv4',
  });
  assert.throws(() => new IpRules([], ["nope"]), {
    name: "TypeError",
    message: `invalid CIDR "nope": ${ADDRESS_HINT}`,
  });
});
