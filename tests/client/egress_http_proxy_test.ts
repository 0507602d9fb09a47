// Unit tables for the local proxy's pure parts: HTTP proxy heads, SOCKS5 replies and addresses.
import assert from "node:assert/strict";
import { parseRequestHead } from "../../shared/http_head.ts";
import { decideProxyRequest, parseAuthority, statusFor } from "../../client/egress/http_proxy.ts";
import { Credentials } from "../../client/egress/handshake.ts";
import { formatIpv6, replyCodeFor, socks5Reply } from "../../client/egress/socks5.ts";
import type { EgressFailure } from "../../client/egress/egress_types.ts";

const creds = new Credentials("alice", "s3cret");
const basic = (u: string, p: string) => `Basic ${btoa(`${u}:${p}`)}`;

Deno.test("an HTTP proxy head becomes a CONNECT, a rewritten origin-form request or a refusal", () => {
  const valid: {
    name: string;
    head: string;
    auth?: Credentials;
    want: { kind: string; host: string; port: number; head?: string };
  }[] = [
    {
      name: "CONNECT host:port",
      head: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443",
      want: { kind: "connect", host: "example.com", port: 443 },
    },
    {
      name: "CONNECT [v6]:port",
      head: "CONNECT [2001:db8::1]:8443 HTTP/1.1",
      want: { kind: "connect", host: "2001:db8::1", port: 8443 },
    },
    {
      name: "CONNECT with good credentials",
      head: `CONNECT a.test:22 HTTP/1.1\r\nProxy-Authorization: ${basic("alice", "s3cret")}`,
      auth: creds,
      want: { kind: "connect", host: "a.test", port: 22 },
    },
    {
      name: "CONNECT to a 255-byte host name (the limit)",
      head: `CONNECT ${"a".repeat(255)}:80 HTTP/1.1`,
      want: { kind: "connect", host: "a".repeat(255), port: 80 },
    },
    {
      name: "absolute GET, default port, hop-by-hop fields dropped, Host replaced",
      head:
        "GET http://example.com/a/b?c=1#frag HTTP/1.1\r\nHost: wrong\r\nProxy-Connection: keep-alive\r\n" +
        "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nAccept: */*",
      want: {
        kind: "forward",
        host: "example.com",
        port: 80,
        head:
          "GET /a/b?c=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nConnection: close\r\n\r\n",
      },
    },
    {
      name: "absolute POST with a port and no path, credentials removed",
      head: `POST HTTP://h.test:8080?q HTTP/1.0\r\nProxy-Authorization: ${
        basic("alice", "s3cret")
      }\r\nContent-Length: 3`,
      auth: creds,
      want: {
        kind: "forward",
        host: "h.test",
        port: 8080,
        head:
          "POST /?q HTTP/1.0\r\nHost: h.test:8080\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
      },
    },
    {
      name: "absolute GET to an IPv6 literal",
      head: "GET http://[::1]:81/x HTTP/1.1",
      want: {
        kind: "forward",
        host: "::1",
        port: 81,
        head: "GET /x HTTP/1.1\r\nHost: [::1]:81\r\nConnection: close\r\n\r\n",
      },
    },
  ];
  for (const c of valid) {
    const d = decideProxyRequest(parseRequestHead(c.head), c.auth ?? null);
    assert.deepStrictEqual(d, c.want as typeof d, c.name);
  }
});

Deno.test("an HTTP proxy head that cannot be served is refused with a status and a reason", () => {
  const invalid: {
    name: string;
    head: string;
    auth?: Credentials;
    status: number;
    reason: RegExp;
  }[] = [
    {
      name: "CONNECT without a port",
      head: "CONNECT example.com HTTP/1.1",
      status: 400,
      reason: /no port/,
    },
    { name: "CONNECT port 0", head: "CONNECT a.test:0 HTTP/1.1", status: 400, reason: /bad port/ },
    {
      name: "CONNECT port 65536",
      head: "CONNECT a.test:65536 HTTP/1.1",
      status: 400,
      reason: /bad port/,
    },
    { name: "CONNECT empty host", head: "CONNECT :80 HTTP/1.1", status: 400, reason: /no host/ },
    {
      name: "CONNECT unbracketed IPv6",
      head: "CONNECT ::1:80 HTTP/1.1",
      status: 400,
      reason: /bad host:port/,
    },
    {
      name: "CONNECT bad bracketed IP",
      head: "CONNECT [zz]:80 HTTP/1.1",
      status: 400,
      reason: /bad host/,
    },
    {
      name: "CONNECT to a 256-byte host name (past the limit)",
      head: `CONNECT ${"a".repeat(256)}:80 HTTP/1.1`,
      status: 400,
      reason: /longer than 255 bytes/,
    },
    {
      name: "https absolute form",
      head: "GET https://a.test/ HTTP/1.1",
      status: 400,
      reason: /CONNECT/,
    },
    {
      name: "origin form",
      head: "GET /index.html HTTP/1.1",
      status: 400,
      reason: /this is a proxy/,
    },
    { name: "ftp URL", head: "GET ftp://a.test/ HTTP/1.1", status: 400, reason: /this is a proxy/ },
    {
      name: "userinfo in URL",
      head: "GET http://u:p@a.test/ HTTP/1.1",
      status: 400,
      reason: /user information/,
    },
    { name: "URL without host", head: "GET http:///x HTTP/1.1", status: 400, reason: /no host/ },
    {
      name: "no credentials when they are required",
      head: "CONNECT a.test:443 HTTP/1.1",
      auth: creds,
      status: 407,
      reason: /needs credentials/,
    },
    {
      name: "wrong password",
      head: `CONNECT a.test:443 HTTP/1.1\r\nProxy-Authorization: ${basic("alice", "nope")}`,
      auth: creds,
      status: 407,
      reason: /wrong proxy credentials/,
    },
    {
      name: "wrong user",
      head: `GET http://a.test/ HTTP/1.1\r\nProxy-Authorization: ${basic("bob", "s3cret")}`,
      auth: creds,
      status: 407,
      reason: /wrong proxy credentials/,
    },
    {
      name: "not Basic",
      head: "GET http://a.test/ HTTP/1.1\r\nProxy-Authorization: Bearer abc",
      auth: creds,
      status: 407,
      reason: /wrong proxy credentials/,
    },
    {
      name: "Basic without a colon",
      head: `GET http://a.test/ HTTP/1.1\r\nProxy-Authorization: Basic ${btoa("alice")}`,
      auth: creds,
      status: 407,
      reason: /wrong/,
    },
  ];
  for (const c of invalid) {
    const d = decideProxyRequest(parseRequestHead(c.head), c.auth ?? null);
    if (d.kind !== "reject") throw new Error(`${c.name}: not refused: ${JSON.stringify(d)}`);
    assert.deepStrictEqual(d.status, c.status, c.name);
    assert.match(d.reason, c.reason, c.name);
    if (c.status === 407) {
      assert.deepStrictEqual(d.headers, { "Proxy-Authenticate": 'Basic realm="mport"' });
    }
  }
});

Deno.test("authorities parse with and without a default port", () => {
  assert.deepStrictEqual(parseAuthority("a.test", 80), { host: "a.test", port: 80 });
  assert.deepStrictEqual(parseAuthority("a.test:", 80), { host: "a.test", port: 80 });
  assert.deepStrictEqual(parseAuthority("[::1]", 80), { host: "::1", port: 80 });
  assert.deepStrictEqual("error" in parseAuthority("a.test:123456", 80), true);
  assert.deepStrictEqual("error" in parseAuthority("a b:1", 80), true);
});

Deno.test("every failure kind maps to its SOCKS5 reply code and HTTP status", () => {
  const table: [EgressFailure, number, number][] = [
    ["denied", 0x02, 403],
    ["unreachable", 0x04, 502],
    ["refused", 0x05, 502],
    ["timeout", 0x06, 504],
    ["failed", 0x01, 502],
  ];
  for (const [kind, rep, status] of table) {
    assert.deepStrictEqual(replyCodeFor(kind), rep, kind);
    assert.deepStrictEqual(statusFor(kind), status, kind);
  }
});

Deno.test("a SOCKS5 reply carries the dialled address, or 0.0.0.0:0 when it is not ip:port", () => {
  const table: [string | undefined, number[]][] = [
    ["10.1.2.3:8080", [1, 10, 1, 2, 3, 0x1f, 0x90]],
    ["[2001:db8::1]:443", [4, 0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1, 0x01, 0xbb]],
    ["::1:443", [4, ...new Array(15).fill(0), 1, 0x01, 0xbb]],
    [undefined, [1, 0, 0, 0, 0, 0, 0]],
    ["example.com:80", [1, 0, 0, 0, 0, 0, 0]],
    ["10.1.2.3", [1, 0, 0, 0, 0, 0, 0]],
    ["10.1.2.3:99999", [1, 0, 0, 0, 0, 0, 0]],
    ["", [1, 0, 0, 0, 0, 0, 0]],
  ];
  for (const [address, bound] of table) {
    assert.deepStrictEqual([...socks5Reply(0, address)], [5, 0, 0, ...bound], String(address));
  }
});

Deno.test("IPv6 addresses from SOCKS5 requests are written as RFC 5952 text", () => {
  const v6 = (...groups: number[]) => {
    const b = new Uint8Array(16);
    groups.forEach((g, i) => {
      b[2 * i] = g >> 8;
      b[2 * i + 1] = g & 0xff;
    });
    return b;
  };
  const table: [Uint8Array, string][] = [
    [v6(0, 0, 0, 0, 0, 0, 0, 1), "::1"],
    [v6(0, 0, 0, 0, 0, 0, 0, 0), "::"],
    [v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), "2001:db8::1"],
    [v6(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1), "2001:db8:0:1::1"],
    [v6(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1), "2001:db8::1:0:0:1"],
    [v6(1, 0, 2, 3, 4, 5, 6, 7), "1:0:2:3:4:5:6:7"],
    [v6(0xfe80, 0, 0, 0, 0, 0, 0, 0), "fe80::"],
  ];
  for (const [bytes, text] of table) assert.deepStrictEqual(formatIpv6(bytes), text);
});
