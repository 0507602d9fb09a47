// Table-driven tests of who may read /metrics: loopback by default, --metrics-allow, --metrics-token.
import assert from "node:assert/strict";
import { buildApp } from "../../server/app.ts";
import { DEFAULT_METRICS_ALLOW, MetricsAccess } from "../../server/metrics_access.ts";
import { Stats } from "../../server/stats.ts";
import { Secret } from "../../shared/secret.ts";

const TOKEN = "metrics-token-0123456789";

const CASES: {
  what: string;
  allow?: readonly string[];
  token?: string;
  auth?: string;
  ip: string;
  want: 200 | 401 | 403;
}[] = [
  { what: "IPv4 loopback by default", ip: "127.0.0.1", want: 200 },
  { what: "any 127/8 address by default", ip: "127.8.9.10", want: 200 },
  { what: "IPv6 loopback by default", ip: "::1", want: 200 },
  { what: "IPv4-mapped loopback by default", ip: "::ffff:127.0.0.1", want: 200 },
  { what: "a remote address by default", ip: "203.0.113.7", want: 403 },
  { what: "a LAN address by default", ip: "192.168.1.20", want: 403 },
  { what: "an address in --metrics-allow", allow: ["10.0.0.0/8"], ip: "10.1.2.3", want: 200 },
  {
    what: "loopback once --metrics-allow replaces the default",
    allow: ["10.0.0.0/8"],
    ip: "127.0.0.1",
    want: 403,
  },
  { what: "an IPv6 block", allow: ["fd00::/8"], ip: "fd12::5", want: 200 },
  { what: "no address with an empty list", allow: [], ip: "127.0.0.1", want: 403 },
  {
    what: "the right bearer token from anywhere",
    token: TOKEN,
    auth: `Bearer ${TOKEN}`,
    ip: "203.0.113.7",
    want: 200,
  },
  {
    what: "a bearer token with a lower-case scheme",
    token: TOKEN,
    auth: `bearer ${TOKEN}`,
    ip: "203.0.113.7",
    want: 200,
  },
  {
    what: "a wrong bearer token",
    token: TOKEN,
    auth: "Bearer not-the-token-at-all",
    ip: "203.0.113.7",
    want: 401,
  },
  {
    what: "a wrong bearer token even from loopback",
    token: TOKEN,
    auth: "Bearer not-the-token-at-all",
    ip: "127.0.0.1",
    want: 401,
  },
  {
    what: "Basic auth instead of a bearer token",
    token: TOKEN,
    auth: "Basic eDp5",
    ip: "::1",
    want: 401,
  },
  { what: "no token from a remote address", token: TOKEN, ip: "203.0.113.7", want: 403 },
  { what: "no token from loopback", token: TOKEN, ip: "127.0.0.1", want: 200 },
  {
    what: "a bearer header when no token is configured (the address decides)",
    auth: "Bearer whatever",
    ip: "127.0.0.1",
    want: 200,
  },
];

for (const c of CASES) {
  Deno.test(`/metrics access: ${c.what} → ${c.want}`, async () => {
    const access = new MetricsAccess(
      c.allow ?? DEFAULT_METRICS_ALLOW,
      c.token === undefined ? null : new Secret(c.token),
    );
    const app = buildApp({
      pathPrefix: "/_mport",
      stats: new Stats(),
      metricsAccess: access,
      health: () => ({ ok: true, detail: {} }),
    });
    const headers: Record<string, string> = c.auth ? { authorization: c.auth } : {};
    const res = await app.fetch(new Request("http://mport.test/metrics", { headers }), {
      ip: c.ip,
    });
    const body = await res.text();
    assert.equal(res.status, c.want, body);
    if (c.want === 200) {
      assert.match(body, /^# HELP /m);
    } else {
      // One line saying why, without the metrics.
      assert.equal(body.trim().split("\n").length, 1);
      assert.doesNotMatch(body, /# HELP/);
      assert.match(body, c.want === 401 ? /wrong metrics token/ : /--metrics-allow/);
    }
    if (c.want === 401) assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="metrics"');
  });
}

Deno.test("/metrics refusal names the address and how to allow it", () => {
  const r = new MetricsAccess(DEFAULT_METRICS_ALLOW, null).check(null, "198.51.100.4");
  assert.deepEqual(r, {
    status: 403,
    reason:
      "metrics are not served to 198.51.100.4: allow it with --metrics-allow CIDR or set --metrics-token",
  });
});

Deno.test("/metrics access rejects a malformed --metrics-allow block", () => {
  assert.throws(() => new MetricsAccess(["10.0.0.0/33"], null), {
    name: "TypeError",
    message: /^invalid --metrics-allow "10\.0\.0\.0\/33"/,
  });
});
