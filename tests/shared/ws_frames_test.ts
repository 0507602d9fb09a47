// Tests for the RFC 6455 frame codec: headers, masking, close payloads, and invalid frames.
import assert from "node:assert/strict";
import {
  applyMask,
  decodeClosePayload,
  decodeTextPayload,
  encodeClosePayload,
  encodeHeader,
  type FrameRole,
  headerLength,
  MAX_WS_HEADER_BYTES,
  Opcode,
  parseFrameHeader,
  truncateCloseReason,
  WsProtocolError,
} from "../../shared/ws_frames.ts";

const HEADER_CASES: {
  name: string;
  fin: boolean;
  opcode: number;
  length: number;
  maskKey: number | null;
  bytes: number;
}[] = [
  { name: "empty text", fin: true, opcode: Opcode.Text, length: 0, maskKey: null, bytes: 2 },
  { name: "1 byte", fin: true, opcode: Opcode.Binary, length: 1, maskKey: null, bytes: 2 },
  { name: "125 bytes", fin: false, opcode: Opcode.Binary, length: 125, maskKey: null, bytes: 2 },
  { name: "126 bytes", fin: true, opcode: Opcode.Binary, length: 126, maskKey: null, bytes: 4 },
  { name: "65535 bytes", fin: true, opcode: Opcode.Text, length: 65535, maskKey: null, bytes: 4 },
  {
    name: "65536 bytes",
    fin: true,
    opcode: Opcode.Binary,
    length: 65536,
    maskKey: null,
    bytes: 10,
  },
  { name: "4 GiB", fin: true, opcode: Opcode.Binary, length: 2 ** 32, maskKey: null, bytes: 10 },
  {
    name: "2^53-1",
    fin: true,
    opcode: Opcode.Binary,
    length: Number.MAX_SAFE_INTEGER,
    maskKey: null,
    bytes: 10,
  },
  { name: "masked ping", fin: true, opcode: Opcode.Ping, length: 4, maskKey: 0xdeadbeef, bytes: 6 },
  { name: "zero mask", fin: true, opcode: Opcode.Binary, length: 300, maskKey: 0, bytes: 8 },
  {
    name: "masked 64-bit",
    fin: true,
    opcode: Opcode.Continuation,
    length: 70000,
    maskKey: 0x01020304,
    bytes: 14,
  },
  { name: "close", fin: true, opcode: Opcode.Close, length: 2, maskKey: null, bytes: 2 },
];

for (const c of HEADER_CASES) {
  Deno.test(`frame header round-trips: ${c.name}`, () => {
    const buf = new Uint8Array(MAX_WS_HEADER_BYTES + 3);
    const n = encodeHeader(buf, 3, c);
    assert.equal(n, c.bytes);
    assert.equal(headerLength(c.length, c.maskKey !== null), c.bytes);
    const role: FrameRole = c.maskKey === null ? "client" : "server";
    const h = parseFrameHeader(buf.subarray(3, 3 + n), role);
    assert.ok(typeof h !== "number");
    assert.deepEqual(h, {
      fin: c.fin,
      opcode: c.opcode,
      masked: c.maskKey !== null,
      maskKey: c.maskKey ?? 0,
      headerBytes: c.bytes,
      payloadLength: c.length,
    });
    // Every shorter prefix asks for more bytes than it has, never for fewer.
    for (let k = 0; k < n; k++) {
      const need = parseFrameHeader(buf.subarray(3, 3 + k), role);
      assert.equal(typeof need, "number");
      assert.ok((need as number) > k && (need as number) <= n);
    }
  });
}

Deno.test("encodeHeader refuses a header that does not fit or bad fields", () => {
  const fields = { fin: true, opcode: Opcode.Binary, length: 70000, maskKey: 1 };
  assert.throws(() => encodeHeader(new Uint8Array(13), 0, fields), RangeError);
  assert.throws(() => encodeHeader(new Uint8Array(14), 1, fields), RangeError);
  assert.throws(() => encodeHeader(new Uint8Array(14), 0, { ...fields, opcode: 16 }), RangeError);
  assert.throws(() => encodeHeader(new Uint8Array(14), 0, { ...fields, length: -1 }), RangeError);
  assert.throws(
    () => encodeHeader(new Uint8Array(14), 0, { ...fields, length: 2 ** 53 }),
    RangeError,
  );
});

/** Invalid frame headers: every one is a protocol error (1002) for the given parsing role. */
const INVALID_FRAMES: { name: string; bytes: number[]; role: FrameRole }[] = [
  { name: "RSV1 set", bytes: [0xc2, 0x80, 0, 0, 0, 0], role: "server" },
  { name: "RSV2 set", bytes: [0xa2, 0x80, 0, 0, 0, 0], role: "server" },
  { name: "RSV3 set", bytes: [0x92, 0x00], role: "client" },
  { name: "opcode 0x3", bytes: [0x83, 0x80, 0, 0, 0, 0], role: "server" },
  { name: "opcode 0x7", bytes: [0x87, 0x00], role: "client" },
  { name: "opcode 0xB", bytes: [0x8b, 0x80, 0, 0, 0, 0], role: "server" },
  { name: "opcode 0xF", bytes: [0x8f, 0x00], role: "client" },
  { name: "ping of 126 bytes", bytes: [0x89, 0xfe, 0, 126, 0, 0, 0, 0], role: "server" },
  {
    name: "close of 127-coded length",
    bytes: [0x88, 0x7f, 0, 0, 0, 0, 0, 0, 0, 5],
    role: "client",
  },
  { name: "fragmented ping", bytes: [0x09, 0x80, 0, 0, 0, 0], role: "server" },
  { name: "fragmented close", bytes: [0x08, 0x00], role: "client" },
  { name: "unmasked frame to a server", bytes: [0x82, 0x01, 0x00], role: "server" },
  { name: "masked frame to a client", bytes: [0x82, 0x81, 1, 2, 3, 4, 0], role: "client" },
  {
    name: "64-bit length with the top bit set",
    bytes: [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0],
    role: "client",
  },
  {
    name: "64-bit length of 2^53",
    bytes: [0x82, 0x7f, 0x00, 0x20, 0, 0, 0, 0, 0, 0],
    role: "client",
  },
];

for (const c of INVALID_FRAMES) {
  Deno.test(`frame parser rejects ${c.name} with 1002`, () => {
    assert.throws(
      () => parseFrameHeader(new Uint8Array(c.bytes), c.role),
      (e: unknown) => e instanceof WsProtocolError && e.closeCode === 1002,
    );
  });
}

function naiveMask(data: Uint8Array, key: number, phase: number): Uint8Array {
  const out = data.slice();
  for (let i = 0; i < out.length; i++) out[i]! ^= (key >>> (24 - 8 * ((phase + i) & 3))) & 0xff;
  return out;
}

Deno.test("applyMask matches byte-wise masking at every alignment, phase and length", () => {
  const backing = new Uint8Array(2100);
  for (let i = 0; i < backing.length; i++) backing[i] = (i * 31 + 7) & 0xff;
  for (const key of [0xdeadbeef, 0x01020304, 0xff000000, 0x000000ff]) {
    for (let offset = 0; offset < 4; offset++) {
      for (let phase = 0; phase < 4; phase++) {
        for (const len of [0, 1, 3, 4, 5, 15, 16, 17, 31, 64, 1000, 2048]) {
          const data = backing.slice().subarray(offset, offset + len);
          const expected = naiveMask(data, key, phase);
          applyMask(data, key, phase);
          assert.deepEqual(data, expected, `key ${key} offset ${offset} phase ${phase} len ${len}`);
        }
      }
    }
  }
});

Deno.test("applyMask in pieces equals applyMask in one go", () => {
  const data = new Uint8Array(1001).map((_, i) => i & 0xff);
  const whole = data.slice();
  applyMask(whole, 0xa1b2c3d4);
  const pieces = data.slice();
  for (const [from, to] of [[0, 7], [7, 300], [300, 301], [301, 1001]] as const) {
    applyMask(pieces.subarray(from, to), 0xa1b2c3d4, from & 3);
  }
  assert.deepEqual(pieces, whole);
});

Deno.test("applyMask with key 0 leaves data alone and masking twice restores it", () => {
  const data = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
  const copy = data.slice();
  applyMask(data, 0);
  assert.deepEqual(data, copy);
  applyMask(data, 0x55aa55aa, 2);
  assert.notDeepEqual(data, copy);
  applyMask(data, 0x55aa55aa, 2);
  assert.deepEqual(data, copy);
});

const CLOSE_CASES: { code?: number; reason: string; bytes: number[] }[] = [
  { reason: "", bytes: [] },
  { code: 1000, reason: "", bytes: [0x03, 0xe8] },
  { code: 1001, reason: "bye", bytes: [0x03, 0xe9, 0x62, 0x79, 0x65] },
  { code: 4000, reason: "é", bytes: [0x0f, 0xa0, 0xc3, 0xa9] },
  { code: 3000, reason: "", bytes: [0x0b, 0xb8] },
  { code: 1014, reason: "", bytes: [0x03, 0xf6] },
];

for (const c of CLOSE_CASES) {
  Deno.test(`close payload round-trips: ${c.code ?? "no code"} ${JSON.stringify(c.reason)}`, () => {
    const bytes = encodeClosePayload(c.code, c.reason);
    assert.deepEqual([...bytes], c.bytes);
    assert.deepEqual(decodeClosePayload(bytes), { code: c.code ?? 1005, reason: c.reason });
  });
}

const INVALID_CLOSE_PAYLOADS: { name: string; bytes: number[]; code: number }[] = [
  { name: "1-byte payload", bytes: [0x03], code: 1002 },
  { name: "code 999", bytes: [0x03, 0xe7], code: 1002 },
  { name: "code 1004", bytes: [0x03, 0xec], code: 1002 },
  { name: "code 1005", bytes: [0x03, 0xed], code: 1002 },
  { name: "code 1006", bytes: [0x03, 0xee], code: 1002 },
  { name: "code 1015", bytes: [0x03, 0xf7], code: 1002 },
  { name: "code 2000", bytes: [0x07, 0xd0], code: 1002 },
  { name: "code 5000", bytes: [0x13, 0x88], code: 1002 },
  { name: "reason not UTF-8", bytes: [0x03, 0xe8, 0xff, 0xfe], code: 1007 },
  { name: "reason with a lone surrogate", bytes: [0x03, 0xe8, 0xed, 0xa0, 0x80], code: 1007 },
];

for (const c of INVALID_CLOSE_PAYLOADS) {
  Deno.test(`close payload decoder rejects ${c.name} with ${c.code}`, () => {
    assert.throws(
      () => decodeClosePayload(new Uint8Array(c.bytes)),
      (e: unknown) => e instanceof WsProtocolError && e.closeCode === c.code,
    );
  });
}

Deno.test("encodeClosePayload refuses reserved codes, long reasons and a reason without code", () => {
  for (const code of [0, 999, 1005, 1006, 1015, 2999, 5000, 1000.5]) {
    assert.throws(() => encodeClosePayload(code), RangeError, `code ${code}`);
  }
  assert.throws(() => encodeClosePayload(1000, "x".repeat(124)), RangeError);
  assert.equal(encodeClosePayload(1000, "x".repeat(123)).length, 125);
  assert.throws(() => encodeClosePayload(undefined, "why"), RangeError);
});

Deno.test("truncateCloseReason keeps at most 123 bytes and never splits a character", () => {
  assert.equal(truncateCloseReason("short"), "short");
  for (const ch of ["a", "é", "€", "😀"]) {
    const cut = truncateCloseReason(ch.repeat(200));
    const bytes = new TextEncoder().encode(cut);
    assert.ok(bytes.length <= 123, `${ch}: ${bytes.length} bytes`);
    assert.ok(cut.endsWith("..."));
    assert.ok(!cut.includes("\uFFFD"), `${ch}: split a character`);
  }
});

Deno.test("decodeTextPayload rejects invalid UTF-8 with 1007", () => {
  assert.equal(decodeTextPayload(new TextEncoder().encode("héllo")), "héllo");
  for (const bad of [[0xff], [0xc3], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80]]) {
    assert.throws(
      () => decodeTextPayload(new Uint8Array(bad)),
      (e: unknown) => e instanceof WsProtocolError && e.closeCode === 1007,
    );
  }
});
