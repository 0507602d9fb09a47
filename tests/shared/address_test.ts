// Table-driven tests for HOST:PORT, port and port-range parsing and address formatting.
import assert from "node:assert/strict";
import { formatHostPort, parseHostPort, parsePort, parsePortRange } from "../../shared/address.ts";

const HOST_PORT_VALID: { input: string; allowZero?: boolean; host: string; port: number }[] = [
  { input: "5555", host: "127.0.0.1", port: 5555 },
  { input: " 80 ", host: "127.0.0.1", port: 80 },
  { input: "0", allowZero: true, host: "127.0.0.1", port: 0 },
  { input: "localhost:8080", host: "localhost", port: 8080 },
  { input: "192.168.100.148:5555", host: "192.168.100.148", port: 5555 },
  { input: "vps.example.com:65535", host: "vps.example.com", port: 65535 },
  { input: "0.0.0.0:0", allowZero: true, host: "0.0.0.0", port: 0 },
  { input: "[::1]:22", host: "::1", port: 22 },
  { input: "[::]:8080", host: "::", port: 8080 },
  { input: "[fe80::1:2]:1", host: "fe80::1:2", port: 1 },
  { input: "[::ffff:10.0.0.1]:443", host: "::ffff:10.0.0.1", port: 443 },
  { input: "[2001:DB8::1]:80", host: "2001:DB8::1", port: 80 },
];

for (const c of HOST_PORT_VALID) {
  Deno.test(`parseHostPort accepts "${c.input}"`, () => {
    assert.deepEqual(parseHostPort(c.input, "127.0.0.1", c.allowZero), {
      host: c.host,
      port: c.port,
    });
  });
}

const HOST_PORT_INVALID: { input: string; allowZero?: boolean; message: string }[] = [
  { input: "", message: 'invalid address "": expected HOST:PORT or PORT' },
  { input: "localhost", message: 'invalid address "localhost": expected HOST:PORT or PORT' },
  { input: "localhost:", message: 'invalid address "localhost:": expected HOST:PORT or PORT' },
  { input: ":80", message: 'invalid address ":80": expected HOST:PORT or PORT' },
  { input: "::1:80", message: 'invalid address "::1:80": expected HOST:PORT or PORT' },
  { input: "[::1]", message: 'invalid address "[::1]": expected HOST:PORT or PORT' },
  { input: "[::1]:", message: 'invalid address "[::1]:": expected HOST:PORT or PORT' },
  { input: "[zz]:80", message: 'invalid address "[zz]:80": expected HOST:PORT or PORT' },
  { input: "[host:80", message: 'invalid address "[host:80": expected HOST:PORT or PORT' },
  { input: "a b:80", message: 'invalid address "a b:80": expected HOST:PORT or PORT' },
  {
    input: "http://x:80",
    message: 'invalid address "http://x:80": expected HOST:PORT or PORT',
  },
  { input: "host:-1", message: 'invalid address "host:-1": expected HOST:PORT or PORT' },
  { input: "host:http", message: 'invalid address "host:http": expected HOST:PORT or PORT' },
  { input: "0", message: 'invalid port "0": expected a number from 1 to 65535' },
  { input: "host:0", message: 'invalid port "0": expected a number from 1 to 65535' },
  { input: "host:65536", message: 'invalid port "65536": expected a number from 1 to 65535' },
  {
    input: "[::1]:99999",
    message: 'invalid port "99999": expected a number from 1 to 65535',
  },
  { input: "123456", message: 'invalid port "123456": expected a number from 1 to 65535' },
  {
    input: "65536",
    allowZero: true,
    message: 'invalid port "65536": expected a number from 0 to 65535',
  },
];

for (const c of HOST_PORT_INVALID) {
  Deno.test(`parseHostPort rejects "${c.input}" with a message that quotes it`, () => {
    assert.throws(() => parseHostPort(c.input, "127.0.0.1", c.allowZero), {
      name: "TypeError",
      message: c.message,
    });
  });
}

Deno.test("parsePort accepts 1-65535 and 0 only when allowed", () => {
  const table: [string, boolean, number][] = [
    ["1", false, 1],
    ["65535", false, 65535],
    [" 22 ", false, 22],
    ["00080", false, 80],
    ["0", true, 0],
  ];
  for (const [text, allowZero, want] of table) {
    assert.equal(parsePort(text, "port", allowZero), want, text);
  }
});

Deno.test("parsePort rejects other input, naming what was being parsed", () => {
  const table: [string, string, boolean, string][] = [
    ["0", "--remote-port", false, 'invalid --remote-port "0": expected a number from 1 to 65535'],
    ["65536", "port", true, 'invalid port "65536": expected a number from 0 to 65535'],
    ["-1", "port", true, 'invalid port "-1": expected a number from 0 to 65535'],
    ["1.5", "port", false, 'invalid port "1.5": expected a number from 1 to 65535'],
    ["0x50", "port", false, 'invalid port "0x50": expected a number from 1 to 65535'],
    ["1e3", "port", false, 'invalid port "1e3": expected a number from 1 to 65535'],
    ["", "port", false, 'invalid port "": expected a number from 1 to 65535'],
    ["80a", "port", false, 'invalid port "80a": expected a number from 1 to 65535'],
  ];
  for (const [text, what, allowZero, message] of table) {
    assert.throws(() => parsePort(text, what, allowZero), { name: "TypeError", message }, text);
  }
});

Deno.test("parsePortRange accepts LOW-HIGH, spaces and a single port", () => {
  const table: [string, number, number][] = [
    ["10000-10999", 10000, 10999],
    [" 5 - 6 ", 5, 6],
    ["8080", 8080, 8080],
    ["1-65535", 1, 65535],
    ["7-7", 7, 7],
  ];
  for (const [text, low, high] of table) {
    assert.deepEqual(parsePortRange(text), { low, high }, text);
  }
});

Deno.test("parsePortRange rejects bad ranges with a message that quotes the whole range", () => {
  const table: [string, string][] = [
    ["", 'invalid port range "": expected LOW-HIGH, e.g. 10000-10999'],
    ["a-b", 'invalid port range "a-b": expected LOW-HIGH, e.g. 10000-10999'],
    ["1-", 'invalid port range "1-": expected LOW-HIGH, e.g. 10000-10999'],
    ["-1", 'invalid port range "-1": expected LOW-HIGH, e.g. 10000-10999'],
    ["1--2", 'invalid port range "1--2": expected LOW-HIGH, e.g. 10000-10999'],
    ["1:2", 'invalid port range "1:2": expected LOW-HIGH, e.g. 10000-10999'],
    ["10999-10000", 'invalid port range "10999-10000": 10999 is greater than 10000'],
    ["0-5", 'invalid port range "0-5": 0 is not a port from 1 to 65535'],
    ["1-65536", 'invalid port range "1-65536": 65536 is not a port from 1 to 65535'],
    ["70000", 'invalid port range "70000": 70000 is not a port from 1 to 65535'],
  ];
  for (const [text, message] of table) {
    assert.throws(() => parsePortRange(text), { name: "TypeError", message }, text);
  }
});

Deno.test("formatHostPort brackets IPv6 literals only", () => {
  const table: [string, number, string][] = [
    ["127.0.0.1", 80, "127.0.0.1:80"],
    ["vps.example.com", 10005, "vps.example.com:10005"],
    ["::1", 22, "[::1]:22"],
    ["fe80::1", 0, "[fe80::1]:0"],
  ];
  for (const [host, port, want] of table) assert.equal(formatHostPort(host, port), want);
});

Deno.test("formatHostPort output parses back to the same host and port", () => {
  for (const [host, port] of [["10.0.0.1", 1], ["::1", 65535], ["example.com", 443]] as const) {
    assert.deepEqual(parseHostPort(formatHostPort(host, port), "x"), { host, port });
  }
});
