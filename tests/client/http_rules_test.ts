// Tests for an HTTP tunnel's user options and the head helpers: headers, basic auth, Host, hop-by-hop.
import assert from "node:assert/strict";
import {
  basicAuthMatches,
  type BasicCredential,
  MAX_AUTHORIZATION_BYTES,
  MAX_BASIC_AUTH_BYTES,
  parseBasicAuth,
  parseHeaderLine,
  parseHeaderName,
  parseHostHeaderMode,
  securityHeaders,
  serializeRequestHead,
  serializeResponseHead,
  stripHopByHop,
} from "../../client/http/rules.ts";
import { parseRequestHead, parseResponseHead } from "../../shared/http_head.ts";

const ADD = "--request-header-add";
const REMOVE = "--request-header-remove";
const latin1 = (b: Uint8Array) => new TextDecoder("latin1").decode(b);

// --- parseHeaderLine / parseHeaderName -----------------------------------------------------------

const VALID_HEADER_LINES: { text: string; want: [string, string] }[] = [
  { text: "X-Foo: bar", want: ["x-foo", "bar"] },
  { text: "X-Foo:bar", want: ["x-foo", "bar"] },
  { text: "  X-Foo:  bar baz \t", want: ["x-foo", "bar baz"] },
  { text: "X-Empty:", want: ["x-empty", ""] },
  { text: "X-Url: http://a:8080/x", want: ["x-url", "http://a:8080/x"] },
  { text: "X-Obs: caf\xe9", want: ["x-obs", "caf\xe9"] },
  { text: "Authorization: Bearer abc", want: ["authorization", "Bearer abc"] },
];

for (const c of VALID_HEADER_LINES) {
  Deno.test(`parseHeaderLine reads ${JSON.stringify(c.text)}`, () => {
    assert.deepEqual(parseHeaderLine(c.text, ADD), c.want);
  });
}

const INVALID_HEADER_LINES: { text: string; message: string }[] = [
  { text: "X-Foo bar", message: `${ADD} "X-Foo bar": expected NAME: VALUE, e.g. "X-Env: staging"` },
  { text: ": bar", message: `${ADD} ": bar": the header name is empty` },
  {
    text: "X Foo: bar",
    message:
      `${ADD} "X Foo: bar": "X Foo" is not a valid header name (letters, digits and !#$%&'*+-.^_\`|~)`,
  },
  {
    text: "X-Foo : bar",
    message:
      `${ADD} "X-Foo : bar": "X-Foo " is not a valid header name (letters, digits and !#$%&'*+-.^_\`|~)`,
  },
  {
    text: "X-Foo: a\r\nX-Injected: 1",
    message:
      `${ADD} "X-Foo: a\\r\\nX-Injected: 1": the value has control characters or characters beyond Latin-1`,
  },
  {
    text: "X-Foo: a\0b",
    message:
      `${ADD} "X-Foo: a\\u0000b": the value has control characters or characters beyond Latin-1`,
  },
  {
    text: "X-Foo: ☃",
    message: `${ADD} "X-Foo: ☃": the value has control characters or characters beyond Latin-1`,
  },
  { text: "Host: a", message: `${ADD} "Host: a": the Host header is set with --host-header` },
  {
    text: "Content-Length: 5",
    message: `${ADD} "Content-Length: 5": content-length is managed by mport and cannot be changed`,
  },
  {
    text: "Transfer-Encoding: chunked",
    message:
      `${ADD} "Transfer-Encoding: chunked": transfer-encoding is managed by mport and cannot be changed`,
  },
  {
    text: "Connection: close",
    message: `${ADD} "Connection: close": connection is managed by mport and cannot be changed`,
  },
  {
    text: "Upgrade: h2c",
    message: `${ADD} "Upgrade: h2c": upgrade is managed by mport and cannot be changed`,
  },
];

for (const c of INVALID_HEADER_LINES) {
  Deno.test(`parseHeaderLine refuses ${JSON.stringify(c.text)}`, () => {
    assert.throws(() => parseHeaderLine(c.text, ADD), { name: "TypeError", message: c.message });
  });
}

Deno.test("parseHeaderLine names the flag it was given", () => {
  assert.throws(() => parseHeaderLine("nope", "--response-header-add"), {
    name: "TypeError",
    message: `--response-header-add "nope": expected NAME: VALUE, e.g. "X-Env: staging"`,
  });
});

const VALID_HEADER_NAMES: { text: string; want: string }[] = [
  { text: "X-Foo", want: "x-foo" },
  { text: " Cookie ", want: "cookie" },
  { text: "x_weird~name", want: "x_weird~name" },
];

for (const c of VALID_HEADER_NAMES) {
  Deno.test(`parseHeaderName reads ${JSON.stringify(c.text)}`, () => {
    assert.equal(parseHeaderName(c.text, REMOVE), c.want);
  });
}

const INVALID_HEADER_NAMES: { text: string; message: string }[] = [
  { text: "", message: `${REMOVE} "": the header name is empty` },
  {
    text: "X-Foo: bar",
    message:
      `${REMOVE} "X-Foo: bar": "X-Foo: bar" is not a valid header name (letters, digits and !#$%&'*+-.^_\`|~)`,
  },
  { text: "host", message: `${REMOVE} "host": the Host header is set with --host-header` },
  {
    text: "Content-Length",
    message: `${REMOVE} "Content-Length": content-length is managed by mport and cannot be changed`,
  },
];

for (const c of INVALID_HEADER_NAMES) {
  Deno.test(`parseHeaderName refuses ${JSON.stringify(c.text)}`, () => {
    assert.throws(() => parseHeaderName(c.text, REMOVE), { name: "TypeError", message: c.message });
  });
}

// --- basic auth ---------------------------------------------------------------------------------

const VALID_BASIC: { text: string; want: BasicCredential }[] = [
  { text: "alice:secret", want: { user: "alice", password: "secret" } },
  { text: "bob:pa:ss:word", want: { user: "bob", password: "pa:ss:word" } },
  { text: "ü:p", want: { user: "ü", password: "p" } },
  { text: "a: ", want: { user: "a", password: " " } },
];

for (const c of VALID_BASIC) {
  Deno.test(`parseBasicAuth reads ${JSON.stringify(c.text)}`, () => {
    assert.deepEqual(parseBasicAuth(c.text), c.want);
  });
}

const INVALID_BASIC: { text: string; message: string }[] = [
  { text: "alice", message: "invalid --basic-auth: expected USER:PASSWORD" },
  { text: "", message: "invalid --basic-auth: expected USER:PASSWORD" },
  {
    text: ":secret",
    message: "invalid --basic-auth: the user name is empty (expected USER:PASSWORD)",
  },
  { text: "alice:", message: 'invalid --basic-auth: the password for user "alice" is empty' },
  { text: "alice:se\ncret", message: "invalid --basic-auth: control characters are not allowed" },
  {
    text: "alice:" + "x".repeat(MAX_BASIC_AUTH_BYTES),
    message: `invalid --basic-auth: USER:PASSWORD is longer than ${MAX_BASIC_AUTH_BYTES} bytes`,
  },
];

for (const c of INVALID_BASIC) {
  Deno.test(`parseBasicAuth refuses ${JSON.stringify(c.text.slice(0, 20))} without showing the password`, () => {
    assert.throws(() => parseBasicAuth(c.text), { name: "TypeError", message: c.message });
  });
}

Deno.test("parseBasicAuth accepts exactly the length limit", () => {
  const text = "a:" + "x".repeat(MAX_BASIC_AUTH_BYTES - 2);
  assert.equal(parseBasicAuth(text).password.length, MAX_BASIC_AUTH_BYTES - 2);
});

const CREDS: BasicCredential[] = [
  { user: "alice", password: "secret" },
  { user: "bob", password: "pa:ss" },
  { user: "jürgen", password: "pässwörd" },
];
const b64 = (s: string) => btoa(String.fromCharCode(...new TextEncoder().encode(s)));

const AUTH_HEADERS: { name: string; header: string | null; want: boolean }[] = [
  { name: "the first user", header: `Basic ${b64("alice:secret")}`, want: true },
  {
    name: "the second user, colon in the password",
    header: `Basic ${b64("bob:pa:ss")}`,
    want: true,
  },
  { name: "a UTF-8 user", header: `Basic ${b64("jürgen:pässwörd")}`, want: true },
  { name: "a lower-case scheme", header: `basic ${b64("alice:secret")}`, want: true },
  { name: "extra spaces", header: `Basic   ${b64("alice:secret")}  `, want: true },
  { name: "no header", header: null, want: false },
  { name: "an empty header", header: "", want: false },
  { name: "a wrong password", header: `Basic ${b64("alice:Secret")}`, want: false },
  { name: "a password of another user", header: `Basic ${b64("alice:pa:ss")}`, want: false },
  { name: "no colon", header: `Basic ${b64("alicesecret")}`, want: false },
  { name: "a Bearer token", header: `Bearer ${b64("alice:secret")}`, want: false },
  { name: "no credentials", header: "Basic", want: false },
  { name: "bad base64", header: "Basic !!!!", want: false },
  { name: "bad base64 length", header: "Basic YWxpY2U6c2VjcmV0x", want: false },
  { name: "not UTF-8", header: `Basic ${btoa("alice:\xff")}`, want: false },
  {
    name: "an over-long header",
    header: `Basic ${b64("alice:secret")}` + " ".repeat(MAX_AUTHORIZATION_BYTES),
    want: false,
  },
];

for (const c of AUTH_HEADERS) {
  Deno.test(`basicAuthMatches: ${c.name} → ${c.want}`, () => {
    assert.equal(basicAuthMatches(c.header, CREDS), c.want);
  });
}

Deno.test("basicAuthMatches with no credentials matches nothing", () => {
  assert.equal(basicAuthMatches(`Basic ${b64("alice:secret")}`, []), false);
});

// --- Host header mode ---------------------------------------------------------------------------

const VALID_HOST_MODES: { text: string; want: ReturnType<typeof parseHostHeaderMode> }[] = [
  { text: "preserve", want: { kind: "preserve" } },
  { text: "rewrite", want: { kind: "rewrite" } },
  { text: "example.com", want: { kind: "value", value: "example.com" } },
  { text: "localhost:8080", want: { kind: "value", value: "localhost:8080" } },
  { text: "my_app.internal.", want: { kind: "value", value: "my_app.internal." } },
  { text: "127.0.0.1:3000", want: { kind: "value", value: "127.0.0.1:3000" } },
  { text: "[::1]", want: { kind: "value", value: "[::1]" } },
  { text: "[::1]:65535", want: { kind: "value", value: "[::1]:65535" } },
];

for (const c of VALID_HOST_MODES) {
  Deno.test(`parseHostHeaderMode reads ${JSON.stringify(c.text)}`, () => {
    assert.deepEqual(parseHostHeaderMode(c.text), c.want);
  });
}

const INVALID_HOST_MODES = [
  "",
  "Preserve ",
  "a b",
  "a:0",
  "a:65536",
  "a:",
  "a:b",
  "-a.com",
  "a-.com",
  "a..com",
  "http://a.com",
  "a.com/x",
  "1.2.3",
  "999.1.1.1",
  "::1",
  "[1.2.3.4]",
  "[::1%eth0]",
  "a".repeat(64) + ".com",
  "a\r\nX: y",
];

for (const text of INVALID_HOST_MODES) {
  Deno.test(`parseHostHeaderMode refuses ${JSON.stringify(text)}`, () => {
    assert.throws(() => parseHostHeaderMode(text), {
      name: "TypeError",
      message: `invalid --host-header ${JSON.stringify(text)}: expected preserve, rewrite or ` +
        "HOST[:PORT], e.g. app.local or localhost:8080",
    });
  });
}

// --- security headers ---------------------------------------------------------------------------

Deno.test("securityHeaders adds HSTS only for https", () => {
  const base = [
    ["x-frame-options", "DENY"],
    ["x-content-type-options", "nosniff"],
    ["referrer-policy", "no-referrer"],
    ["content-security-policy", "default-src 'self'; frame-ancestors 'none'"],
  ];
  assert.deepEqual(securityHeaders(false), base);
  assert.deepEqual(securityHeaders(true), [
    ...base,
    ["strict-transport-security", "max-age=31536000"],
  ]);
});

// --- hop-by-hop ---------------------------------------------------------------------------------

const HOP_BY_HOP: {
  name: string;
  headers: [string, string][];
  keep?: string[];
  want: [string, string][];
}[] = [
  {
    name: "the standard list goes",
    headers: [
      ["connection", "keep-alive"],
      ["keep-alive", "timeout=5"],
      ["proxy-connection", "keep-alive"],
      ["te", "trailers"],
      ["trailer", "x-sum"],
      ["upgrade", "h2c"],
      ["host", "a"],
      ["proxy-authorization", "Basic x"],
    ],
    want: [["host", "a"], ["proxy-authorization", "Basic x"]],
  },
  {
    name: "headers named in Connection go",
    headers: [["connection", "X-Secret, close, , bad name"], ["x-secret", "1"], ["x-other", "2"]],
    want: [["x-other", "2"]],
  },
  {
    name: "framing headers stay even when Connection names them",
    headers: [
      ["connection", "transfer-encoding, content-length"],
      ["transfer-encoding", "chunked"],
      ["content-length", "3"],
    ],
    want: [["content-length", "3"], ["transfer-encoding", "chunked"]],
  },
  {
    name: "a WebSocket handshake keeps connection and upgrade",
    headers: [["connection", "Upgrade"], ["upgrade", "websocket"], ["keep-alive", "x"]],
    keep: ["Upgrade", "connection"],
    want: [["connection", "Upgrade"], ["upgrade", "websocket"]],
  },
  { name: "nothing to strip", headers: [["accept", "*/*"]], want: [["accept", "*/*"]] },
];

for (const c of HOP_BY_HOP) {
  Deno.test(`stripHopByHop: ${c.name}`, () => {
    const headers = new Headers(c.headers);
    const out = stripHopByHop(headers, c.keep);
    assert.equal(out, headers);
    assert.deepEqual([...out], c.want);
  });
}

// --- serializing heads --------------------------------------------------------------------------

Deno.test("serializeRequestHead writes a head that parses back", () => {
  const headers = new Headers([["Host", "a.example"], ["X-Obs", "caf\xe9"], ["Accept", "*/*"]]);
  const bytes = serializeRequestHead("POST", "/x?y=1", headers);
  assert.equal(
    latin1(bytes),
    "POST /x?y=1 HTTP/1.1\r\naccept: */*\r\nhost: a.example\r\nx-obs: caf\xe9\r\n\r\n",
  );
  assert.equal(bytes[bytes.length - 5], 0xe9);
  const back = parseRequestHead(latin1(bytes));
  assert.deepEqual([back.method, back.target, back.headers.get("x-obs")], [
    "POST",
    "/x?y=1",
    "caf\xe9",
  ]);
});

Deno.test("serializeResponseHead writes each Set-Cookie on its own line", () => {
  const headers = new Headers();
  headers.append("Set-Cookie", "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT");
  headers.append("content-type", "text/plain");
  headers.append("Set-Cookie", "b=2");
  headers.append("x-z", "last");
  assert.equal(
    latin1(serializeResponseHead(200, "OK", headers)),
    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n" +
      "set-cookie: a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT\r\nset-cookie: b=2\r\n" +
      "x-z: last\r\n\r\n",
  );
});

Deno.test("serializeResponseHead keeps an empty reason phrase", () => {
  const text = latin1(serializeResponseHead(599, "", new Headers()));
  assert.equal(text, "HTTP/1.1 599 \r\n\r\n");
  assert.equal(parseResponseHead(text).status, 599);
});

const BAD_SERIALIZE: { name: string; run: () => unknown; message: string }[] = [
  {
    name: "a method with a space",
    run: () => serializeRequestHead("GE T", "/", new Headers()),
    message: 'invalid HTTP method "GE T"',
  },
  {
    name: "a target with a space",
    run: () => serializeRequestHead("GET", "/a b", new Headers()),
    message: 'invalid request target "/a b"',
  },
  {
    name: "an empty target",
    run: () => serializeRequestHead("GET", "", new Headers()),
    message: 'invalid request target ""',
  },
  {
    name: "status 99",
    run: () => serializeResponseHead(99, "x", new Headers()),
    message: "invalid HTTP status 99: expected 100-999",
  },
  {
    name: "a reason with CRLF",
    run: () => serializeResponseHead(200, "OK\r\nX: y", new Headers()),
    message: 'invalid HTTP reason phrase "OK\\r\\nX: y"',
  },
];

for (const c of BAD_SERIALIZE) {
  Deno.test(`serializing a head refuses ${c.name}`, () => {
    assert.throws(c.run, { name: "TypeError", message: c.message });
  });
}
