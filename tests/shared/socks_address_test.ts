// SOCKS5's address encoding in front of a datagram: written for each kind of host, read back,
// and refused for what it cannot carry.
import assert from "node:assert/strict";
import { decodeAddressed, encodeAddressed } from "../../shared/socks_address.ts";

const enc = new TextEncoder();

Deno.test("an address is written as ATYP, address and port, and reads back the same", () => {
  const table: { host: string; port: number; bytes: number[]; back: string; isName: boolean }[] = [
    {
      host: "192.0.2.1",
      port: 53,
      bytes: [1, 192, 0, 2, 1, 0, 53],
      back: "192.0.2.1",
      isName: false,
    },
    {
      host: "[2001:db8::1]",
      port: 443,
      bytes: [4, 0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1, 1, 0xbb],
      back: "2001:db8::1",
      isName: false,
    },
    {
      host: "::ffff:10.1.2.3",
      port: 1,
      bytes: [4, ...new Array(10).fill(0), 0xff, 0xff, 10, 1, 2, 3, 0, 1],
      back: "::ffff:a01:203",
      isName: false,
    },
    {
      host: "dns.example",
      port: 65535,
      bytes: [3, 11, ...enc.encode("dns.example"), 0xff, 0xff],
      back: "dns.example",
      isName: true,
    },
  ];
  for (const c of table) {
    const out = encodeAddressed(c.host, c.port, enc.encode("data"));
    assert.deepEqual([...out], [...c.bytes, ...enc.encode("data")], c.host);
    const d = decodeAddressed(out);
    assert.deepEqual(
      [d.host, d.port, d.isName, new TextDecoder().decode(d.data)],
      [c.back, c.port, c.isName, "data"],
      c.host,
    );
  }
});

Deno.test("what the encoding cannot carry is refused with a RangeError", () => {
  const table: { host: string; port: number; error: RegExp }[] = [
    { host: "192.0.2.1", port: 0, error: /port must be 1-65535, not 0/ },
    { host: "192.0.2.1", port: 65536, error: /not 65536/ },
    { host: "192.0.2.1", port: 1.5, error: /not 1.5/ },
    { host: "", port: 53, error: /1-255 bytes/ },
    { host: "a".repeat(256), port: 53, error: /1-255 bytes/ },
    { host: "a b", port: 53, error: /not an address or a domain name/ },
    { host: "é.example", port: 53, error: /not an address or a domain name/ },
  ];
  for (const c of table) {
    assert.throws(() => encodeAddressed(c.host, c.port, new Uint8Array(0)), c.error, c.host);
  }
});
