// Table-driven tests of an HTTP tunnel's options: the local URL and every rule flag, valid and not.
import assert from "node:assert/strict";
import { type HttpOptionValues, httpSpec, parseHttpLocal } from "../../client/http_config.ts";
import { IpRules } from "../../shared/ip_cidr.ts";

const LOCALS: [string, { scheme: "http" | "https"; host: string; port: number }][] = [
  ["3000", { scheme: "http", host: "127.0.0.1", port: 3000 }],
  ["localhost:8080", { scheme: "http", host: "localhost", port: 8080 }],
  ["192.168.1.20:80", { scheme: "http", host: "192.168.1.20", port: 80 }],
  ["http://127.0.0.1:5173", { scheme: "http", host: "127.0.0.1", port: 5173 }],
  ["http://example.lan", { scheme: "http", host: "example.lan", port: 80 }],
  ["https://host:8443", { scheme: "https", host: "host", port: 8443 }],
  ["https://host", { scheme: "https", host: "host", port: 443 }],
  ["https://host/", { scheme: "https", host: "host", port: 443 }],
  ["HTTPS://Host.Lan:9443", { scheme: "https", host: "host.lan", port: 9443 }],
  ["http://[::1]:8080", { scheme: "http", host: "::1", port: 8080 }],
];

for (const [text, want] of LOCALS) {
  Deno.test(`http local "${text}" is ${want.scheme}://${want.host}:${want.port}`, () => {
    assert.deepEqual(parseHttpLocal(text), want);
  });
}

const BAD_LOCALS: [string, string][] = [
  ["0", 'invalid port "0": expected a number from 1 to 65535'],
  ["70000", 'invalid port "70000": expected a number from 1 to 65535'],
  ["host:", 'invalid address "host:": expected HOST:PORT or PORT'],
  ["ftp://x", 'invalid address "ftp://x": expected HOST:PORT or PORT'],
  [
    "http://host/path",
    'invalid local URL "http://host/path": give no path (requests keep the path visitors ask for)',
  ],
  [
    "http://h?q=1",
    'invalid local URL "http://h?q=1": give no path (requests keep the path visitors ask for)',
  ],
  [
    "https://u:p@host",
    'invalid local URL "https://u:p@host": credentials belong in --request-header-add',
  ],
  [
    "https://host:99999",
    'invalid local URL "https://host:99999": use http://HOST:PORT or https://HOST:PORT',
  ],
];

for (const [text, message] of BAD_LOCALS) {
  Deno.test(`http local "${text}" is refused: ${message}`, () => {
    assert.throws(() => parseHttpLocal(text), { name: "TypeError", message });
  });
}

Deno.test("an HTTP tunnel without options rewrites Host and has no other rule", () => {
  assert.deepEqual(httpSpec("3000", {}), {
    target: { scheme: "http", host: "127.0.0.1", port: 3000, insecure: false },
    subdomain: null,
    domain: null,
    rules: {
      hostHeader: { kind: "rewrite" },
      basicAuth: [],
      ipRules: null,
      requestHeaderAdd: [],
      requestHeaderRemove: [],
      responseHeaderAdd: [],
      securityHeaders: false,
      maxBodyBytes: null,
    },
  });
});

Deno.test("an HTTP tunnel takes every option", () => {
  const spec = httpSpec("https://127.0.0.1:8443", {
    subdomain: "My-App",
    hostHeader: "preserve",
    basicAuth: ["ann:pw:with:colons", "bob:x"],
    allowIp: ["10.0.0.0/8", "127.0.0.1"],
    denyIp: ["10.1.0.0/16"],
    requestHeaderAdd: ["X-Env: staging", "X-Team:  blue  "],
    requestHeaderRemove: ["X-Secret", " Cookie "],
    responseHeaderAdd: ["X-Served-By: mport"],
    securityHeaders: true,
    maxBody: "10MB",
    localInsecure: true,
  });
  assert.deepEqual(spec, {
    target: { scheme: "https", host: "127.0.0.1", port: 8443, insecure: true },
    subdomain: "my-app",
    domain: null,
    rules: {
      hostHeader: { kind: "preserve" },
      basicAuth: [{ user: "ann", password: "pw:with:colons" }, { user: "bob", password: "x" }],
      ipRules: new IpRules(["10.0.0.0/8", "127.0.0.1"], ["10.1.0.0/16"]),
      requestHeaderAdd: [["x-env", "staging"], ["x-team", "blue"]],
      requestHeaderRemove: ["x-secret", "cookie"],
      responseHeaderAdd: [["x-served-by", "mport"]],
      securityHeaders: true,
      maxBodyBytes: 10_000_000,
    },
  });
  assert.equal(spec.rules.ipRules?.allows("10.2.3.4"), true);
  assert.equal(spec.rules.ipRules?.allows("10.1.3.4"), false);
  assert.equal(spec.rules.ipRules?.allows("192.168.1.1"), false);
});

const VALID: { values: HttpOptionValues; check: (s: ReturnType<typeof httpSpec>) => unknown }[] = [
  { values: { domain: "App.Example.com." }, check: (s) => s.domain === "app.example.com" },
  { values: { subdomain: "a" }, check: (s) => s.subdomain === "a" },
  { values: { subdomain: "a".repeat(63) }, check: (s) => s.subdomain === "a".repeat(63) },
  { values: { hostHeader: "rewrite" }, check: (s) => s.rules.hostHeader.kind === "rewrite" },
  {
    values: { hostHeader: "localhost:8080" },
    check: (s) =>
      s.rules.hostHeader.kind === "value" && s.rules.hostHeader.value === "localhost:8080",
  },
  { values: { hostHeader: "[::1]:80" }, check: (s) => s.rules.hostHeader.kind === "value" },
  { values: { maxBody: "512" }, check: (s) => s.rules.maxBodyBytes === 512 },
  { values: { maxBody: "1KB" }, check: (s) => s.rules.maxBodyBytes === 1000 },
  { values: { maxBody: "1MiB" }, check: (s) => s.rules.maxBodyBytes === 1_048_576 },
  { values: { maxBody: "none" }, check: (s) => s.rules.maxBodyBytes === null },
  { values: { denyIp: ["::1"] }, check: (s) => s.rules.ipRules?.allows("::1") === false },
];

for (const c of VALID) {
  Deno.test(`an HTTP tunnel accepts ${JSON.stringify(c.values)}`, () => {
    assert.ok(c.check(httpSpec("3000", c.values)));
  });
}

const INVALID: { local?: string; values: HttpOptionValues; message: string }[] = [
  { values: { localInsecure: true }, message: "--local-insecure is for https:// local services" },
  {
    values: { subdomain: "a", domain: "b.example.com" },
    message: "--subdomain and --domain both name the public host: pass one of them",
  },
  ...["-bad", "bad-", "a_b", "a.b", "", "a".repeat(64)].map((sub) => ({
    values: { subdomain: sub },
    message: `invalid --subdomain "${sub}": use 1-63 letters, digits and '-' (not at either end)`,
  })),
  ...["nodot", "bad domain.com", "-a.example.com", ""].map((domain) => ({
    values: { domain },
    message: `invalid --domain "${domain}": use a host name like app.example.com`,
  })),
  ...["a b", "h:0", "h:70000", "http://h", "[::1"].map((hostHeader) => ({
    values: { hostHeader },
    message: `invalid --host-header ${JSON.stringify(hostHeader)}: expected preserve, rewrite ` +
      `or HOST[:PORT], e.g. app.local or localhost:8080`,
  })),
  { values: { basicAuth: ["nopass"] }, message: "invalid --basic-auth: expected USER:PASSWORD" },
  {
    values: { basicAuth: [":x"] },
    message: "invalid --basic-auth: the user name is empty (expected USER:PASSWORD)",
  },
  {
    values: { basicAuth: ["ok:1", "u:"] },
    message: 'invalid --basic-auth: the password for user "u" is empty',
  },
  {
    values: { basicAuth: [`u:${"p".repeat(1100)}`] },
    message: "invalid --basic-auth: USER:PASSWORD is longer than 1024 bytes",
  },
  {
    values: { allowIp: ["300.0.0.0/8"] },
    message: 'invalid --allow-ip: invalid CIDR "300.0.0.0/8": expected an IPv4 or IPv6 address ' +
      "or block, such as 10.0.0.0/8, 192.168.1.5 or 2001:db8::/32",
  },
  {
    values: { allowIp: ["10.0.0.0/8"], denyIp: ["10.0.0.0/33"] },
    message: 'invalid --deny-ip: invalid CIDR "10.0.0.0/33": prefix length 33 is more than 32 ' +
      "for IPv4",
  },
  ...["lots", "-1", "1XB"].map((maxBody) => ({
    values: { maxBody },
    message: `invalid --max-body "${maxBody}": invalid size "${maxBody}": use a number with B, ` +
      "KB, MB, GB, TB (or KiB, MiB, GiB, TiB)",
  })),
  {
    values: { requestHeaderAdd: ["NoColon"] },
    message: '--request-header-add "NoColon": expected NAME: VALUE, e.g. "X-Env: staging"',
  },
  {
    values: { requestHeaderAdd: ["Host: x"] },
    message: '--request-header-add "Host: x": the Host header is set with --host-header',
  },
  {
    values: { requestHeaderAdd: ["content-length: 5"] },
    message: '--request-header-add "content-length: 5": content-length is managed by mport and ' +
      "cannot be changed",
  },
  {
    values: { requestHeaderRemove: ["bad name"] },
    message: '--request-header-remove "bad name": "bad name" is not a valid header name ' +
      "(letters, digits and !#$%&'*+-.^_`|~)",
  },
  {
    values: { requestHeaderRemove: ["Connection"] },
    message: '--request-header-remove "Connection": connection is managed by mport and cannot ' +
      "be changed",
  },
  {
    values: { responseHeaderAdd: ["X-A: \x01"] },
    message: '--response-header-add "X-A: \\u0001": the value has control characters or ' +
      "characters beyond Latin-1",
  },
  {
    values: { responseHeaderAdd: ["Transfer-Encoding: x"] },
    message: '--response-header-add "Transfer-Encoding: x": transfer-encoding is managed by ' +
      "mport and cannot be changed",
  },
  {
    local: "http://host/app",
    values: {},
    message:
      'invalid local URL "http://host/app": give no path (requests keep the path visitors ask for)',
  },
];

for (const c of INVALID) {
  Deno.test(`an HTTP tunnel refuses ${JSON.stringify(c.values)}: ${c.message}`, () => {
    assert.throws(() => httpSpec(c.local ?? "3000", c.values), {
      name: "TypeError",
      message: c.message,
    });
  });
}

Deno.test("a refused --basic-auth never shows the password", () => {
  assert.throws(() => httpSpec("3000", { basicAuth: ["u:\x07topsecret"] }), (e: unknown) => {
    assert.ok(e instanceof TypeError);
    assert.equal(e.message, "invalid --basic-auth: control characters are not allowed");
    return true;
  });
});
