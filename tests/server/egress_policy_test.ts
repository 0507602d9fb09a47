// Egress rules: parsing (valid and invalid tables) and the decisions, defaults included.
import assert from "node:assert/strict";
import { EgressPolicy, parseEgressRule } from "../../server/egress/policy.ts";

const VALID: readonly [string, string][] = [
  ["10.0.0.0/8", "cidr 10.0.0.0/8 any"],
  ["203.0.113.7", "cidr 203.0.113.7/32 any"],
  ["203.0.113.0/24:443", "cidr 203.0.113.0/24 443-443"],
  ["0.0.0.0/0:25", "cidr 0.0.0.0/0 25-25"],
  ["10.0.0.0/8:8000-8999", "cidr 10.0.0.0/8 8000-8999"],
  ["[2001:db8::/32]:443", "cidr 2001:db8::/32 443-443"],
  ["2001:db8::/32", "cidr 2001:db8::/32 any"],
  ["::1", "cidr ::1/128 any"],
  [".example.com", "domain example.com suffix any"],
  ["example.com", "domain example.com exact any"],
  [".Example.COM:443", "domain example.com suffix 443-443"],
  ["intranet.corp.example:80-81", "domain intranet.corp.example exact 80-81"],
];

for (const [text, want] of VALID) {
  Deno.test(`egress rule ${JSON.stringify(text)} parses`, () => {
    const r = parseEgressRule(text);
    const ports = r.ports ? `${r.ports[0]}-${r.ports[1]}` : "any";
    const got = r.kind === "cidr"
      ? `cidr ${ipText(r.cidr.bytes)}/${r.cidr.prefix} ${ports}`
      : `domain ${r.domain} ${r.suffix ? "suffix" : "exact"} ${ports}`;
    assert.equal(got, want);
  });
}

const INVALID: readonly [string, string][] = [
  ["10.0.0.0/33", 'invalid --egress-allow "10.0.0.0/33": '],
  ["10.0.0.0/8:0", "the port must be N or LOW-HIGH within 1-65535"],
  ["10.0.0.0/8:70000", "the port must be N or LOW-HIGH within 1-65535"],
  ["10.0.0.0/8:90-80", "the port must be N or LOW-HIGH within 1-65535"],
  ["10.0.0.0/8:http", "the port must be N or LOW-HIGH within 1-65535"],
  ["2001:db8::/32:443", "put an IPv6 address in brackets"],
  ["localhost", "use a CIDR block (10.0.0.0/8, 203.0.113.7) or a domain (.example.com)"],
  ["exa mple.com", "use a CIDR block"],
  ["-bad.example.com", "use a CIDR block"],
  ["", "use a CIDR block"],
];

for (const [text, want] of INVALID) {
  Deno.test(`egress rule ${JSON.stringify(text)} is refused with a reason`, () => {
    assert.throws(() => parseEgressRule(text), (e: unknown) => {
      assert.ok(e instanceof TypeError);
      assert.ok(e.message.includes(want), e.message);
      return true;
    });
  });
}

Deno.test("by default egress reaches public addresses and refuses the server's own networks", () => {
  const p = new EgressPolicy([], []);
  for (const ip of ["93.184.216.34", "1.1.1.1", "2606:4700::1111"]) {
    assert.deepEqual(p.checkAddress(ip, 443), { ok: true }, ip);
  }
  const refused: [string, string][] = [
    ["127.0.0.1", "127.0.0.0/8"],
    ["10.1.2.3", "10.0.0.0/8"],
    ["172.20.0.1", "172.16.0.0/12"],
    ["192.168.1.1", "192.168.0.0/16"],
    ["169.254.169.254", "169.254.0.0/16"],
    ["100.64.0.1", "100.64.0.0/10"],
    ["0.0.0.0", "0.0.0.0/8"],
    ["::1", "::1/128"],
    ["fe80::1", "fe80::/10"],
    ["fd00::1", "fc00::/7"],
    ["::ffff:127.0.0.1", "127.0.0.0/8"],
  ];
  for (const [ip, block] of refused) {
    const v = p.checkAddress(ip, 80);
    assert.equal(v.ok, false, ip);
    assert.equal(
      !v.ok && v.reason,
      `${ip} is in ${block}, which egress does not reach unless the operator allows it (--egress-allow)`,
    );
  }
});

Deno.test("an allow rule opens a private block (on its ports only); a deny rule wins over everything", () => {
  const p = new EgressPolicy(["10.0.0.0/8:80", "127.0.0.1"], ["0.0.0.0/0:25", "10.9.0.0/16"]);
  assert.deepEqual(p.checkAddress("10.1.2.3", 80), { ok: true });
  assert.equal(p.checkAddress("10.1.2.3", 22).ok, false);
  assert.deepEqual(p.checkAddress("127.0.0.1", 5432), { ok: true });
  const mail = p.checkAddress("93.184.216.34", 25);
  assert.deepEqual(mail, {
    ok: false,
    reason: "93.184.216.34:25 is denied by --egress-deny 0.0.0.0/0:25",
  });
  assert.equal(p.checkAddress("10.9.1.1", 80).ok, false);
});

Deno.test("domain rules: a denied name is refused before resolving; an allowed one passes its addresses", () => {
  const p = new EgressPolicy([".corp.example"], [".ads.example", "evil.example"]);
  assert.deepEqual(p.checkName("tracker.ads.example", 443), {
    ok: false,
    reason: "tracker.ads.example is denied by --egress-deny .ads.example",
  });
  assert.equal((p.checkName("ads.example", 443) as { ok: boolean }).ok, false);
  assert.equal((p.checkName("evil.example", 80) as { ok: boolean }).ok, false);
  assert.deepEqual(p.checkName("sub.evil.example", 80), { ok: true });
  assert.equal(p.checkName("wiki.corp.example", 80), "allowed");
  // The name was allowed on purpose: its private address passes.
  assert.deepEqual(p.checkAddress("10.0.0.5", 80, true), { ok: true });
  assert.deepEqual(p.checkName("example.org", 80), { ok: true });
});

function ipText(bytes: Uint8Array): string {
  if (bytes.length === 4) return [...bytes].join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return groups.join(":").replace(/(^|:)0(:0)+(:|$)/, "::").replace(/:{3,}/, "::");
}
