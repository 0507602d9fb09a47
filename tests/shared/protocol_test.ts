// Table-driven tests for the v2 protocol decoders (control channel and mux frames), their limits
// and tunnel-name validation.
import assert from "node:assert/strict";
import {
  CloseCode,
  controlPath,
  decodeClientControl,
  decodeMuxFrame,
  decodeServerControl,
  encode,
  encodeMuxFrame,
  legacyControlPath,
  legacyStreamPath,
  MAX_CLIENT_ID_LENGTH,
  MAX_CONTROL_MESSAGE_BYTES,
  MAX_NAME_LENGTH,
  MAX_TUNNELS_PER_HELLO,
  MIN_CLIENT_ID_LENGTH,
  MUX_HEADER_BYTES,
  MUX_INITIAL_WINDOW,
  MUX_MAX_CONTROL_BYTES,
  MUX_MAX_DATA_BYTES,
  MUX_MAX_MESSAGE_BYTES,
  MUX_MAX_WINDOW,
  type MuxFrame,
  MuxType,
  PROTOCOL_VERSION,
  ProtocolError,
  streamPath,
  SUBPROTOCOL,
  validateClientId,
  validateTunnelName,
  writeMuxHeader,
} from "../../shared/protocol.ts";

type Decoder = (text: string) => unknown;

const DECODERS: Record<string, Decoder> = {
  client: decodeClientControl,
  server: decodeServerControl,
};

const tunnel = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  kind: "tcp",
  local: "127.0.0.1:5555",
  remotePort: 0,
  ...extra,
});

const hello = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    type: "hello",
    version: PROTOCOL_VERSION,
    tunnels: [tunnel("adb")],
    host: "vps",
    ...extra,
  });

const welcome = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    type: "welcome",
    version: PROTOCOL_VERSION,
    sessionId: "s1",
    sessionSecret: "secret",
    heartbeatMs: 15000,
    tunnels: [],
    refused: [],
    ...extra,
  });

/** An `error` message of exactly `bytes` UTF-8 bytes, padded in an ignored field with `pad`. */
function sized(bytes: number, pad: string): string {
  const head = `{"type":"error","code":"internal","message":"m","pad":"`;
  const tail = `"}`;
  const room = bytes - new TextEncoder().encode(head + tail).byteLength;
  const unit = new TextEncoder().encode(pad).byteLength;
  const text = head + pad.repeat(Math.floor(room / unit)) + "x".repeat(room % unit) + tail;
  assert.equal(new TextEncoder().encode(text).byteLength, bytes);
  return text;
}

const LEASE = { address: "10.8.0.2", prefix: 24, gateway: "10.8.0.1", mtu: 1500, dns: ["1.1.1.1"] };

const VALID: { name: string; decoder: string; input: string; want: unknown }[] = [
  {
    name: "hello asking for the VPN",
    decoder: "client",
    input: hello({ tunnels: [], vpn: true }),
    want: { type: "hello", version: PROTOCOL_VERSION, tunnels: [], host: "vps", vpn: true },
  },
  {
    name: "a welcome with a VPN lease",
    decoder: "server",
    input: welcome({ vpn: LEASE }),
    want: { ...JSON.parse(welcome()), vpn: LEASE },
  },
  {
    name: "a welcome that says why there is no VPN",
    decoder: "server",
    input: welcome({ vpn: "user bob may not use the VPN" }),
    want: { ...JSON.parse(welcome()), vpn: "user bob may not use the VPN" },
  },
  {
    name: "hello with one tunnel",
    decoder: "client",
    input: hello(),
    want: {
      type: "hello",
      version: PROTOCOL_VERSION,
      tunnels: [{ name: "adb", kind: "tcp", local: "127.0.0.1:5555", remotePort: 0 }],
      host: "vps",
    },
  },
  {
    name: "hello with no tunnels and a fixed port elsewhere",
    decoder: "client",
    input: hello({ tunnels: [tunnel("ssh", { remotePort: 65535 })] }),
    want: {
      type: "hello",
      version: PROTOCOL_VERSION,
      tunnels: [{ name: "ssh", kind: "tcp", local: "127.0.0.1:5555", remotePort: 65535 }],
      host: "vps",
    },
  },
  {
    name: "hello with the maximum number of tunnels",
    decoder: "client",
    input: hello({
      tunnels: Array.from({ length: MAX_TUNNELS_PER_HELLO }, (_, i) => tunnel(`t${i}`)),
    }),
    want: {
      type: "hello",
      version: PROTOCOL_VERSION,
      tunnels: Array.from({ length: MAX_TUNNELS_PER_HELLO }, (_, i) => ({
        name: `t${i}`,
        kind: "tcp",
        local: "127.0.0.1:5555",
        remotePort: 0,
      })),
      host: "vps",
    },
  },
  {
    name: "hello drops unknown fields",
    decoder: "client",
    input: hello({ extra: true, tunnels: [tunnel("a", { junk: 1 })] }),
    want: {
      type: "hello",
      version: PROTOCOL_VERSION,
      tunnels: [{ name: "a", kind: "tcp", local: "127.0.0.1:5555", remotePort: 0 }],
      host: "vps",
    },
  },
  {
    name: "hello with a 16-character client id (the shortest)",
    decoder: "client",
    input: hello({ clientId: "0123456789abcdef" }),
    want: {
      type: "hello",
      version: PROTOCOL_VERSION,
      tunnels: [{ name: "adb", kind: "tcp", local: "127.0.0.1:5555", remotePort: 0 }],
      host: "vps",
      clientId: "0123456789abcdef",
    },
  },
  {
    name: "hello with a 64-character client id of every allowed kind of character",
    decoder: "client",
    input: hello({ clientId: "A-z_9".repeat(12) + "abcd" }),
    want: {
      type: "hello",
      version: PROTOCOL_VERSION,
      tunnels: [{ name: "adb", kind: "tcp", local: "127.0.0.1:5555", remotePort: 0 }],
      host: "vps",
      clientId: "A-z_9".repeat(12) + "abcd",
    },
  },
  {
    name: "bye",
    decoder: "client",
    input: '{"type":"bye"}',
    want: { type: "bye" },
  },
  {
    name: "bye with unknown fields",
    decoder: "client",
    input: '{"type":"bye","reason":"SIGTERM"}',
    want: { type: "bye" },
  },
  {
    name: "client ping",
    decoder: "client",
    input: '{"type":"ping","t":0}',
    want: { type: "ping", t: 0 },
  },
  {
    name: "client pong with the largest safe integer",
    decoder: "client",
    input: `{"type":"pong","t":${Number.MAX_SAFE_INTEGER}}`,
    want: { type: "pong", t: Number.MAX_SAFE_INTEGER },
  },
  {
    name: "welcome with a grant and a refusal",
    decoder: "server",
    input: welcome({
      tunnels: [{ name: "adb", kind: "tcp", remotePort: 10005, url: "tcp://vps:10005" }],
      refused: [{ name: "ssh", code: "port_taken", message: "port 22 is taken" }],
    }),
    want: {
      type: "welcome",
      version: PROTOCOL_VERSION,
      sessionId: "s1",
      sessionSecret: "secret",
      heartbeatMs: 15000,
      tunnels: [{ name: "adb", kind: "tcp", remotePort: 10005, url: "tcp://vps:10005" }],
      refused: [{ name: "ssh", code: "port_taken", message: "port 22 is taken" }],
    },
  },
  {
    name: "welcome refusal with an unknown code becomes internal",
    decoder: "server",
    input: welcome({ refused: [{ name: "x", code: "from_the_future", message: "m" }] }),
    want: {
      type: "welcome",
      version: PROTOCOL_VERSION,
      sessionId: "s1",
      sessionSecret: "secret",
      heartbeatMs: 15000,
      tunnels: [],
      refused: [{ name: "x", code: "internal", message: "m" }],
    },
  },
  {
    name: "tunnel_close",
    decoder: "server",
    input: '{"type":"tunnel_close","name":"adb","reason":"released"}',
    want: { type: "tunnel_close", name: "adb", reason: "released" },
  },
  {
    name: "server ping",
    decoder: "server",
    input: '{"type":"ping","t":42}',
    want: { type: "ping", t: 42 },
  },
  {
    name: "server error",
    decoder: "server",
    input: '{"type":"error","code":"unauthorized","message":"bad token"}',
    want: { type: "error", code: "unauthorized", message: "bad token" },
  },
  {
    name: "server notice",
    decoder: "server",
    input: '{"type":"notice","code":"quota_exceeded","message":"90% used"}',
    want: { type: "notice", code: "quota_exceeded", message: "90% used" },
  },
  {
    name: "a message exactly at the byte limit",
    decoder: "server",
    input: sized(MAX_CONTROL_MESSAGE_BYTES, "é"),
    want: { type: "error", code: "internal", message: "m" },
  },
];

for (const c of VALID) {
  Deno.test(`${c.decoder} decoder accepts ${c.name}`, () => {
    assert.deepEqual(DECODERS[c.decoder]!(c.input), c.want);
  });
}

Deno.test("decoded messages survive an encode/decode round trip", () => {
  for (const c of VALID) {
    const decode = DECODERS[c.decoder]!;
    const once = decode(c.input) as Parameters<typeof encode>[0];
    assert.deepEqual(decode(encode(once)), once, c.name);
  }
});

const INVALID: {
  name: string;
  decoder: string;
  input: string;
  message: string;
  closeCode?: number;
}[] = [
  { name: "bad JSON", decoder: "client", input: "{", message: "control message is not valid JSON" },
  {
    name: "hello with a vpn that is not a boolean",
    decoder: "client",
    input: hello({ vpn: "yes" }),
    message: 'field "vpn" must be true or false',
  },
  {
    name: "a VPN lease with an address that is not IPv4",
    decoder: "server",
    input: welcome({ vpn: { ...LEASE, address: "10.8.0.300" } }),
    message: 'field "address" must be an IPv4 address',
  },
  {
    name: "a VPN lease with an MTU past the limit",
    decoder: "server",
    input: welcome({ vpn: { ...LEASE, mtu: 65535 } }),
    message: 'field "mtu" must be an integer from 576 to 9000',
  },
  {
    name: "a VPN lease with a /31",
    decoder: "server",
    input: welcome({ vpn: { ...LEASE, prefix: 31 } }),
    message: 'field "prefix" must be an integer from 8 to 30',
  },
  {
    name: "a VPN lease with five DNS servers",
    decoder: "server",
    input: welcome({
      vpn: { ...LEASE, dns: ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5"] },
    }),
    message: 'field "dns" must be an array of at most 4 addresses',
  },
  {
    name: "a VPN answer that is a number",
    decoder: "server",
    input: welcome({ vpn: 7 }),
    message: 'field "vpn" must be a lease object or a reason',
  },
  {
    name: "an array",
    decoder: "client",
    input: '[{"type":"ping","t":1}]',
    message: "control message must be a JSON object",
  },
  {
    name: "null",
    decoder: "server",
    input: "null",
    message: "control message must be a JSON object",
  },
  {
    name: "a missing type",
    decoder: "client",
    input: '{"t":1}',
    message: 'control message has no "type"',
  },
  {
    name: "an unknown type",
    decoder: "client",
    input: '{"type":"welcome"}',
    message: 'unknown control message type "welcome"',
  },
  {
    name: "an unknown type",
    decoder: "server",
    input: '{"type":"hello"}',
    message: 'unknown control message type "hello"',
  },
  {
    name: "idle on the control channel",
    decoder: "client",
    input: '{"type":"idle"}',
    message: 'unknown control message type "idle"',
  },
  {
    name: "a string version",
    decoder: "client",
    input: hello({ version: "1" }),
    message: 'field "version" must be an integer from 0 to 1000000',
  },
  {
    name: "a fractional version",
    decoder: "client",
    input: hello({ version: 1.5 }),
    message: 'field "version" must be an integer from 0 to 1000000',
  },
  {
    name: "tunnels that are not an array",
    decoder: "client",
    input: hello({ tunnels: {} }),
    message: 'field "tunnels" must be an array',
  },
  {
    name: "a tunnel that is not an object",
    decoder: "client",
    input: hello({ tunnels: ["adb"] }),
    message: "each tunnel must be a JSON object",
  },
  {
    name: "a tunnel that is an array",
    decoder: "client",
    input: hello({ tunnels: [[]] }),
    message: "each tunnel must be a JSON object",
  },
  {
    name: "a tunnel without a name",
    decoder: "client",
    input: hello({ tunnels: [{ kind: "tcp", local: "x", remotePort: 0 }] }),
    message: 'field "name" must be a string',
  },
  {
    name: "a tunnel of another kind",
    decoder: "client",
    input: hello({ tunnels: [tunnel("web", { kind: "sctp" })] }),
    message: 'tunnel "web": kind must be "tcp", "http" or "udp"',
  },
  {
    name: "a numeric local address",
    decoder: "client",
    input: hello({ tunnels: [tunnel("a", { local: 5555 })] }),
    message: 'field "local" must be a string',
  },
  {
    name: "a remote port above 65535",
    decoder: "client",
    input: hello({ tunnels: [tunnel("a", { remotePort: 65536 })] }),
    message: 'field "remotePort" must be an integer from 0 to 65535',
  },
  {
    name: "a negative remote port",
    decoder: "client",
    input: hello({ tunnels: [tunnel("a", { remotePort: -1 })] }),
    message: 'field "remotePort" must be an integer from 0 to 65535',
  },
  {
    name: "a string remote port",
    decoder: "client",
    input: hello({ tunnels: [tunnel("a", { remotePort: "80" })] }),
    message: 'field "remotePort" must be an integer from 0 to 65535',
  },
  {
    name: "too many tunnels",
    decoder: "client",
    input: hello({
      tunnels: Array.from({ length: MAX_TUNNELS_PER_HELLO + 1 }, (_, i) => tunnel(`t${i}`)),
    }),
    message: `hello asks for more than ${MAX_TUNNELS_PER_HELLO} tunnels`,
  },
  {
    name: "duplicate tunnel names",
    decoder: "client",
    input: hello({ tunnels: [tunnel("adb"), tunnel("adb", { remotePort: 5 })] }),
    message: "tunnel names must be unique",
  },
  {
    name: "an invalid tunnel name",
    decoder: "client",
    input: hello({ tunnels: [tunnel("my tunnel")] }),
    message: 'invalid tunnel name "my tunnel"',
  },
  {
    name: "an empty tunnel name",
    decoder: "client",
    input: hello({ tunnels: [tunnel("")] }),
    message: 'invalid tunnel name ""',
  },
  {
    name: "an overlong tunnel name",
    decoder: "client",
    input: hello({ tunnels: [tunnel("a".repeat(MAX_NAME_LENGTH + 1))] }),
    message: `field "name" is longer than ${MAX_NAME_LENGTH} characters`,
  },
  {
    name: "a missing host",
    decoder: "client",
    input: JSON.stringify({ type: "hello", version: 1, tunnels: [] }),
    message: 'field "host" must be a string',
  },
  {
    name: "an overlong host",
    decoder: "client",
    input: hello({ host: "h".repeat(256) }),
    message: 'field "host" is longer than 255 characters',
  },
  {
    name: "a client id shorter than 16 characters",
    decoder: "client",
    input: hello({ clientId: "0123456789abcde" }),
    message:
      `field "clientId": invalid client id: use ${MIN_CLIENT_ID_LENGTH}-${MAX_CLIENT_ID_LENGTH} ` +
      "letters, digits, '_' or '-'",
  },
  {
    name: "a client id longer than 64 characters",
    decoder: "client",
    input: hello({ clientId: "x".repeat(MAX_CLIENT_ID_LENGTH + 1) }),
    message: `field "clientId" is longer than ${MAX_CLIENT_ID_LENGTH} characters`,
  },
  {
    name: "a client id with a character outside [A-Za-z0-9_-]",
    decoder: "client",
    input: hello({ clientId: "0123456789abcdef.x" }),
    message: `field "clientId": invalid client id`,
  },
  {
    name: "a client id with a non-ASCII letter",
    decoder: "client",
    input: hello({ clientId: "0123456789abcdefé" }),
    message: `field "clientId": invalid client id`,
  },
  {
    name: "a client id that is not a string",
    decoder: "client",
    input: hello({ clientId: 1234567890123456 }),
    message: 'field "clientId" must be a string',
  },
  {
    name: "a null client id",
    decoder: "client",
    input: hello({ clientId: null }),
    message: 'field "clientId" must be a string',
  },
  {
    name: "bye from the server",
    decoder: "server",
    input: '{"type":"bye"}',
    message: 'unknown control message type "bye"',
  },
  {
    name: "a negative ping time",
    decoder: "client",
    input: '{"type":"ping","t":-1}',
    message: `field "t" must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}`,
  },
  {
    name: "a ping time beyond the safe integers",
    decoder: "server",
    input: '{"type":"pong","t":9007199254740993}',
    message: `field "t" must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}`,
  },
  {
    name: "a welcome without arrays",
    decoder: "server",
    input: welcome({ refused: null }),
    message: 'welcome needs "tunnels" and "refused" arrays',
  },
  {
    name: "a welcome grant that is not an object",
    decoder: "server",
    input: welcome({ tunnels: [7] }),
    message: 'field "name" must be a string',
  },
  {
    name: "a welcome grant with port 0",
    decoder: "server",
    input: welcome({ tunnels: [{ name: "a", remotePort: 0, url: "tcp://h:0" }] }),
    message: 'field "remotePort" must be an integer from 1 to 65535',
  },
  {
    name: "a welcome with a tiny heartbeat",
    decoder: "server",
    input: welcome({ heartbeatMs: 0 }),
    message: 'field "heartbeatMs" must be an integer from 1 to 3600000',
  },
  {
    name: "a welcome with a numeric session secret",
    decoder: "server",
    input: welcome({ sessionSecret: 1234 }),
    message: 'field "sessionSecret" must be a string',
  },
  {
    // v1 asked for streams with `open` on the control channel; v2 opens them on a data connection.
    name: "the v1 open message",
    decoder: "server",
    input: '{"type":"open","claim":"c-1","tunnel":"adb"}',
    message: 'unknown control message type "open"',
  },
  {
    name: "an error with a numeric code",
    decoder: "server",
    input: '{"type":"error","code":5,"message":"m"}',
    message: 'field "code" must be a string',
  },
  {
    name: "an overlong error message",
    decoder: "server",
    input: JSON.stringify({ type: "error", code: "internal", message: "m".repeat(1025) }),
    message: 'field "message" is longer than 1024 characters',
  },
  {
    name: "an oversize message (ASCII)",
    decoder: "client",
    input: hello({ host: "h".repeat(MAX_CONTROL_MESSAGE_BYTES) }),
    message: `control message is larger than the ${MAX_CONTROL_MESSAGE_BYTES}-byte limit`,
    closeCode: CloseCode.tooLarge,
  },
  {
    name: "an oversize message (ASCII)",
    decoder: "server",
    input: sized(MAX_CONTROL_MESSAGE_BYTES + 1, "x"),
    message: `control message is larger than the ${MAX_CONTROL_MESSAGE_BYTES}-byte limit`,
    closeCode: CloseCode.tooLarge,
  },
  {
    // 2-byte characters: under the limit in UTF-16 units, over it in UTF-8 bytes.
    name: "a message short in UTF-16 but oversize in UTF-8",
    decoder: "client",
    input: sized(MAX_CONTROL_MESSAGE_BYTES + 1, "é"),
    message: `control message is larger than the ${MAX_CONTROL_MESSAGE_BYTES}-byte limit`,
    closeCode: CloseCode.tooLarge,
  },
  {
    name: "a message short in UTF-16 but oversize in UTF-8",
    decoder: "server",
    input: sized(MAX_CONTROL_MESSAGE_BYTES + 2, "€"),
    message: `control message is larger than the ${MAX_CONTROL_MESSAGE_BYTES}-byte limit`,
    closeCode: CloseCode.tooLarge,
  },
];

for (const c of INVALID) {
  Deno.test(`${c.decoder} decoder rejects ${c.name}`, () => {
    assert.throws(
      () => DECODERS[c.decoder]!(c.input),
      (e: unknown) => {
        assert.ok(e instanceof ProtocolError, `expected a ProtocolError, got ${e}`);
        assert.ok(
          e.message.includes(c.message),
          `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(c.message)}`,
        );
        assert.equal(e.closeCode, c.closeCode ?? CloseCode.protocolError);
        return true;
      },
    );
  });
}

Deno.test("the UTF-8 oversize cases really are short in UTF-16 units", () => {
  const twoByte = sized(MAX_CONTROL_MESSAGE_BYTES + 1, "é");
  assert.ok(twoByte.length <= MAX_CONTROL_MESSAGE_BYTES);
  const control = sized(MAX_CONTROL_MESSAGE_BYTES + 2, "€");
  assert.ok(control.length <= MAX_CONTROL_MESSAGE_BYTES);
});

const GOOD_NAMES = ["a", "adb", "127.0.0.1-5555", "my_tunnel", "A-b.c_d", "9", "x".repeat(64)];
const BAD_NAMES = ["", "-adb", ".hidden", "_x", "a b", "a/b", "émoji", "a:b", "x".repeat(65)];

Deno.test("validateTunnelName accepts letters, digits, dots, dashes and underscores", () => {
  for (const name of GOOD_NAMES) assert.equal(validateTunnelName(name), name);
});

Deno.test("validateTunnelName rejects other names with a TypeError that says what to use", () => {
  for (const name of BAD_NAMES) {
    assert.throws(() => validateTunnelName(name), {
      name: "TypeError",
      message: `invalid tunnel name "${name}": use 1-${MAX_NAME_LENGTH} letters, digits, ` +
        `'.', '_' or '-'`,
    });
  }
});

Deno.test("validateClientId accepts 16-64 letters, digits, '_' and '-', and rejects the rest", () => {
  for (const id of ["0123456789abcdef", "a".repeat(64), "AZaz09_-AZaz09_-"]) {
    assert.equal(validateClientId(id), id);
  }
  for (const id of ["", "a".repeat(15), "a".repeat(65), "0123456789abcdef ", "0123456789/abcdef"]) {
    assert.throws(() => validateClientId(id), {
      name: "TypeError",
      message: "invalid client id: use 16-64 letters, digits, '_' or '-'",
    });
  }
});

Deno.test("protocol v2 is named in the subprotocol and the endpoint paths; v1 paths stay known", () => {
  assert.equal(PROTOCOL_VERSION, 2);
  assert.equal(SUBPROTOCOL, "mport.v2");
  assert.equal(controlPath("/_mport"), "/_mport/v2/control");
  assert.equal(streamPath("/x/_mport"), "/x/_mport/v2/stream");
  assert.equal(legacyControlPath("/_mport"), "/_mport/v1/control");
  assert.equal(legacyStreamPath("/_mport"), "/_mport/v1/stream");
});

// ---- mux frames (data connections) ----------------------------------------------------------

const utf8 = new TextEncoder();

/** A raw mux frame: type byte, 32-bit big-endian id, payload (bytes, or a string as UTF-8). */
function frame(type: number, id: number, payload: Uint8Array | string = new Uint8Array(0)) {
  const body = typeof payload === "string" ? utf8.encode(payload) : payload;
  const out = new Uint8Array(MUX_HEADER_BYTES + body.byteLength);
  out[0] = type;
  new DataView(out.buffer).setUint32(1, id);
  out.set(body, MUX_HEADER_BYTES);
  return out;
}

function u32(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

/** A JSON object of exactly `bytes` UTF-8 bytes: `base` plus a padding field. */
function jsonOfSize(bytes: number, base: Record<string, unknown>): string {
  const empty = JSON.stringify({ ...base, pad: "" });
  const text = JSON.stringify({ ...base, pad: "p".repeat(bytes - utf8.encode(empty).byteLength) });
  assert.equal(utf8.encode(text).byteLength, bytes);
  return text;
}

const bigPayload = new Uint8Array(MUX_MAX_DATA_BYTES).map((_, i) => i * 7);

const MUX_VALID: { name: string; input: Uint8Array; want: MuxFrame }[] = [
  {
    name: "a connect to a host and port (service tcp when unsaid)",
    input: frame(MuxType.connect, 0x8000_0001, '{"host":"example.com","port":443}'),
    want: { type: "connect", id: 0x8000_0001, host: "example.com", port: 443, service: "tcp" },
  },
  {
    name: "a connect for a UDP association",
    input: frame(MuxType.connect, 0x8000_0002, '{"service":"udp"}'),
    want: { type: "connect", id: 0x8000_0002, host: "", port: 0, service: "udp" },
  },
  {
    name: "a connect for the VPN's packets",
    input: frame(MuxType.connect, 0x8000_0003, '{"service":"vpn"}'),
    want: { type: "connect", id: 0x8000_0003, host: "", port: 0, service: "vpn" },
  },
  {
    name: "a one-byte data frame",
    input: frame(MuxType.data, 1, new Uint8Array([42])),
    want: { type: "data", id: 1, payload: new Uint8Array([42]) },
  },
  {
    name: "a full-size data frame for the highest stream id",
    input: frame(MuxType.data, 0xffffffff, bigPayload),
    want: { type: "data", id: 0xffffffff, payload: bigPayload },
  },
  {
    name: "a window of one byte",
    input: frame(MuxType.window, 7, u32(1)),
    want: { type: "window", id: 7, bytes: 1 },
  },
  {
    name: "a window of the initial size",
    input: frame(MuxType.window, 0x01020304, u32(MUX_INITIAL_WINDOW)),
    want: { type: "window", id: 0x01020304, bytes: MUX_INITIAL_WINDOW },
  },
  {
    name: "a window of the largest size",
    input: frame(MuxType.window, 2, u32(MUX_MAX_WINDOW)),
    want: { type: "window", id: 2, bytes: MUX_MAX_WINDOW },
  },
  {
    name: "an open",
    input: frame(MuxType.open, 3, '{"tunnel":"adb","remote":"203.0.113.9:50123"}'),
    want: { type: "open", id: 3, tunnel: "adb", remote: "203.0.113.9:50123" },
  },
  {
    name: "an open with unknown fields dropped",
    input: frame(MuxType.open, 3, '{"tunnel":"adb","remote":"[::1]:4000","later":[1,2]}'),
    want: { type: "open", id: 3, tunnel: "adb", remote: "[::1]:4000" },
  },
  {
    name: "an open exactly at the JSON size limit",
    input: frame(
      MuxType.open,
      9,
      jsonOfSize(MUX_MAX_CONTROL_BYTES, { tunnel: "t".repeat(MAX_NAME_LENGTH), remote: "r" }),
    ),
    want: { type: "open", id: 9, tunnel: "t".repeat(MAX_NAME_LENGTH), remote: "r" },
  },
  { name: "an eof", input: frame(MuxType.eof, 5), want: { type: "eof", id: 5 } },
  {
    name: "a reset",
    input: frame(MuxType.reset, 4, '{"code":"local_dial_failed","message":"connection refused"}'),
    want: { type: "reset", id: 4, code: "local_dial_failed", message: "connection refused" },
  },
  {
    name: "a reset with an unknown code, read as internal",
    input: frame(MuxType.reset, 4, '{"code":"from_the_future","message":""}'),
    want: { type: "reset", id: 4, code: "internal", message: "" },
  },
  {
    name: "a reset with a 512-character message",
    input: frame(MuxType.reset, 4, JSON.stringify({ code: "internal", message: "m".repeat(512) })),
    want: { type: "reset", id: 4, code: "internal", message: "m".repeat(512) },
  },
];

for (const c of MUX_VALID) {
  Deno.test(`decodeMuxFrame accepts ${c.name}`, () => {
    assert.deepEqual(decodeMuxFrame(c.input), c.want);
  });
}

Deno.test("decodeMuxFrame returns data payloads as views into the message, without a copy", () => {
  const msg = frame(MuxType.data, 1, new Uint8Array([1, 2, 3]));
  const f = decodeMuxFrame(msg);
  assert.equal(f.type, "data");
  if (f.type !== "data") return;
  assert.equal(f.payload.buffer, msg.buffer);
  assert.equal(f.payload.byteOffset, MUX_HEADER_BYTES);
});

const ROUND_TRIPS: Exclude<MuxFrame, { type: "data" }>[] = [
  { type: "window", id: 1, bytes: 1 },
  { type: "window", id: 0xffffffff, bytes: MUX_MAX_WINDOW },
  { type: "open", id: 2, tunnel: "ssh", remote: "[2001:db8::1]:4242" },
  { type: "open", id: 0x7fffffff, tunnel: "a".repeat(MAX_NAME_LENGTH), remote: "r".repeat(128) },
  { type: "eof", id: 3 },
  { type: "reset", id: 4, code: "rate_limited", message: "too many" },
  { type: "reset", id: 4, code: "internal", message: 'quotes " and \\ and \n and ☃' },
];

Deno.test("encodeMuxFrame output decodes to the same frame, for every non-data type", () => {
  for (const f of ROUND_TRIPS) {
    const bytes = encodeMuxFrame(f);
    assert.equal(bytes[0], MuxType[f.type]);
    assert.deepEqual(decodeMuxFrame(bytes), f, JSON.stringify(f));
  }
});

Deno.test("encodeMuxFrame shortens a reset message until it fits, even when JSON escaping inflates it", () => {
  for (const ch of ["€", "\u0001", "x"]) {
    const bytes = encodeMuxFrame({
      type: "reset",
      id: 1,
      code: "internal",
      message: ch.repeat(5000),
    });
    assert.ok(
      bytes.byteLength <= MUX_HEADER_BYTES + MUX_MAX_CONTROL_BYTES,
      `${ch}: ${bytes.byteLength}`,
    );
    const f = decodeMuxFrame(bytes);
    assert.equal(f.type, "reset");
    const message = (f as { message: string }).message;
    assert.ok(message.length >= 100, `${JSON.stringify(ch)} kept ${message.length} characters`);
    assert.equal(message, ch.repeat(message.length));
  }
});

Deno.test("a data frame written with writeMuxHeader decodes to its header and payload", () => {
  for (const id of [1, 0x00ff00ff, 0xffffffff]) {
    for (const len of [1, 1000, MUX_MAX_DATA_BYTES]) {
      const room = 3; // the header may sit anywhere in a larger buffer
      const buf = new Uint8Array(room + MUX_HEADER_BYTES + len);
      buf.set(bigPayload.subarray(0, len), room + MUX_HEADER_BYTES);
      writeMuxHeader(buf, room, MuxType.data, id);
      const f = decodeMuxFrame(buf.subarray(room));
      assert.equal(f.type, "data");
      assert.equal(f.id, id);
      if (f.type === "data") assert.deepEqual(f.payload, bigPayload.subarray(0, len));
    }
  }
});

const INVALID_UTF8 = new Uint8Array([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x7d]); // {"\xc3("}

const MUX_INVALID: { name: string; input: Uint8Array; message: string; closeCode?: number }[] = [
  {
    name: "an empty message",
    input: new Uint8Array(0),
    message: "mux frame of 0 bytes is shorter than its header",
  },
  {
    name: "a message shorter than the header",
    input: new Uint8Array([MuxType.eof, 0, 0, 1]),
    message: "mux frame of 4 bytes is shorter than its header",
  },
  {
    name: "stream id 0",
    input: frame(MuxType.data, 0, "x"),
    message: "mux frame for stream 0",
  },
  {
    name: "stream id 0 on an eof",
    input: frame(MuxType.eof, 0),
    message: "mux frame for stream 0",
  },
  {
    name: "an unknown type",
    input: frame(7, 1),
    message: "unknown mux frame type 7",
  },
  {
    name: "a connect for a server stream id",
    input: frame(MuxType.connect, 1, '{"host":"example.com","port":80}'),
    message: "connect frame for stream 1, which is not a client stream id",
  },
  {
    name: "a connect with an empty host",
    input: frame(MuxType.connect, 0x8000_0001, '{"host":"","port":80}'),
    message: 'field "host" is empty',
  },
  {
    name: "a connect with a host over the limit",
    input: frame(MuxType.connect, 0x8000_0001, JSON.stringify({ host: "a".repeat(256), port: 80 })),
    message: 'field "host" is longer than 255 characters',
  },
  {
    name: "a connect for an unknown service",
    input: frame(MuxType.connect, 0x8000_0001, '{"service":"icmp"}'),
    message: 'field "service" must be "tcp", "udp" or "vpn"',
  },
  {
    name: "a connect to port 0",
    input: frame(MuxType.connect, 0x8000_0001, '{"host":"example.com","port":0}'),
    message: 'field "port" must be an integer from 1 to 65535',
  },
  {
    name: "type 255",
    input: frame(255, 1, "x"),
    message: "unknown mux frame type 255",
  },
  {
    name: "an empty data frame",
    input: frame(MuxType.data, 1),
    message: "empty data frame",
  },
  {
    name: "a data frame one byte over the size limit",
    input: frame(MuxType.data, 1, new Uint8Array(MUX_MAX_DATA_BYTES + 1)),
    message: `mux frame of ${
      MUX_MAX_MESSAGE_BYTES + 1
    } bytes exceeds the ${MUX_MAX_MESSAGE_BYTES}-byte limit`,
    closeCode: CloseCode.tooLarge,
  },
  {
    name: "an oversized message of an unknown type",
    input: frame(77, 1, new Uint8Array(MUX_MAX_MESSAGE_BYTES)),
    message: `mux frame of ${
      MUX_MAX_MESSAGE_BYTES + MUX_HEADER_BYTES
    } bytes exceeds the ${MUX_MAX_MESSAGE_BYTES}-byte limit`,
    closeCode: CloseCode.tooLarge,
  },
  {
    name: "a window of 0",
    input: frame(MuxType.window, 1, u32(0)),
    message: `window increment must be from 1 to ${MUX_MAX_WINDOW} bytes`,
  },
  {
    name: "a window above the largest window",
    input: frame(MuxType.window, 1, u32(MUX_MAX_WINDOW + 1)),
    message: `window increment must be from 1 to ${MUX_MAX_WINDOW} bytes`,
  },
  {
    name: "a window of 2^32-1",
    input: frame(MuxType.window, 1, u32(0xffffffff)),
    message: `window increment must be from 1 to ${MUX_MAX_WINDOW} bytes`,
  },
  {
    name: "a window with no payload",
    input: frame(MuxType.window, 1),
    message: "window frame must carry 4 bytes",
  },
  {
    name: "a window with 3 bytes",
    input: frame(MuxType.window, 1, new Uint8Array([0, 0, 1])),
    message: "window frame must carry 4 bytes",
  },
  {
    name: "a window with 5 bytes",
    input: frame(MuxType.window, 1, new Uint8Array([0, 0, 0, 1, 0])),
    message: "window frame must carry 4 bytes",
  },
  {
    name: "an open with invalid UTF-8",
    input: frame(MuxType.open, 1, INVALID_UTF8),
    message: "open frame is not valid UTF-8",
  },
  {
    name: "a reset with invalid UTF-8",
    input: frame(MuxType.reset, 1, INVALID_UTF8),
    message: "reset frame is not valid UTF-8",
  },
  {
    name: "an open that is not JSON",
    input: frame(MuxType.open, 1, "{tunnel:adb}"),
    message: "open frame is not valid JSON",
  },
  {
    name: "an open with no payload",
    input: frame(MuxType.open, 1),
    message: "open frame is not valid JSON",
  },
  {
    name: "a reset that is not JSON",
    input: frame(MuxType.reset, 1, "reset"),
    message: "reset frame is not valid JSON",
  },
  {
    name: "an open carrying a JSON array",
    input: frame(MuxType.open, 1, '["adb","1.2.3.4:5"]'),
    message: "open frame must carry a JSON object",
  },
  {
    name: "a reset carrying a JSON array",
    input: frame(MuxType.reset, 1, "[]"),
    message: "reset frame must carry a JSON object",
  },
  {
    name: "a reset carrying null",
    input: frame(MuxType.reset, 1, "null"),
    message: "reset frame must carry a JSON object",
  },
  {
    name: "an open carrying a string",
    input: frame(MuxType.open, 1, '"adb"'),
    message: "open frame must carry a JSON object",
  },
  {
    name: "an open one byte over the JSON size limit",
    input: frame(
      MuxType.open,
      1,
      jsonOfSize(MUX_MAX_CONTROL_BYTES + 1, { tunnel: "adb", remote: "r" }),
    ),
    message: `open frame is larger than the ${MUX_MAX_CONTROL_BYTES}-byte limit`,
    closeCode: CloseCode.tooLarge,
  },
  {
    name: "an oversized reset that is not even JSON",
    input: frame(MuxType.reset, 1, "{".repeat(MUX_MAX_CONTROL_BYTES + 1)),
    message: `reset frame is larger than the ${MUX_MAX_CONTROL_BYTES}-byte limit`,
    closeCode: CloseCode.tooLarge,
  },
  {
    name: "an eof with a payload",
    input: frame(MuxType.eof, 1, new Uint8Array([0])),
    message: "eof frame must be empty",
  },
  {
    name: "an open without a tunnel",
    input: frame(MuxType.open, 1, '{"remote":"1.2.3.4:5"}'),
    message: 'field "tunnel" must be a string',
  },
  {
    name: "an open without a remote",
    input: frame(MuxType.open, 1, '{"tunnel":"adb"}'),
    message: 'field "remote" must be a string',
  },
  {
    name: "an open with a numeric remote",
    input: frame(MuxType.open, 1, '{"tunnel":"adb","remote":5}'),
    message: 'field "remote" must be a string',
  },
  {
    name: "an open with an overlong tunnel name",
    input: frame(
      MuxType.open,
      1,
      JSON.stringify({ tunnel: "t".repeat(MAX_NAME_LENGTH + 1), remote: "r" }),
    ),
    message: `field "tunnel" is longer than ${MAX_NAME_LENGTH} characters`,
  },
  {
    name: "an open with an overlong remote",
    input: frame(MuxType.open, 1, JSON.stringify({ tunnel: "adb", remote: "r".repeat(129) })),
    message: 'field "remote" is longer than 128 characters',
  },
  {
    name: "a reset without a code",
    input: frame(MuxType.reset, 1, '{"message":"m"}'),
    message: 'field "code" must be a string',
  },
  {
    name: "a reset without a message",
    input: frame(MuxType.reset, 1, '{"code":"internal"}'),
    message: 'field "message" must be a string',
  },
  {
    name: "a reset with an overlong message",
    input: frame(MuxType.reset, 1, JSON.stringify({ code: "internal", message: "m".repeat(513) })),
    message: 'field "message" is longer than 512 characters',
  },
];

for (const c of MUX_INVALID) {
  Deno.test(`decodeMuxFrame rejects ${c.name}`, () => {
    assert.throws(
      () => decodeMuxFrame(c.input),
      (e: unknown) => {
        assert.ok(e instanceof ProtocolError, `expected a ProtocolError, got ${e}`);
        assert.equal(e.message, c.message);
        assert.equal(e.closeCode, c.closeCode ?? CloseCode.protocolError);
        return true;
      },
    );
  });
}
