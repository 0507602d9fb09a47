// Table-driven tests for the v1 protocol decoders, their limits and tunnel-name validation.
import assert from "node:assert/strict";
import {
  CloseCode,
  decodeClientControl,
  decodeServerControl,
  decodeStreamControl,
  encode,
  MAX_CONTROL_MESSAGE_BYTES,
  MAX_NAME_LENGTH,
  MAX_STREAM_CONTROL_BYTES,
  MAX_TUNNELS_PER_HELLO,
  ProtocolError,
  STREAM_WINDOW_BYTES,
  validateTunnelName,
} from "../../shared/protocol.ts";

type Decoder = (text: string) => unknown;

const DECODERS: Record<string, Decoder> = {
  client: decodeClientControl,
  server: decodeServerControl,
  stream: decodeStreamControl,
};

const tunnel = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  kind: "tcp",
  local: "127.0.0.1:5555",
  remotePort: 0,
  ...extra,
});

const hello = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ type: "hello", version: 1, tunnels: [tunnel("adb")], host: "vps", ...extra });

const welcome = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    type: "welcome",
    version: 1,
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

const VALID: { name: string; decoder: string; input: string; want: unknown }[] = [
  {
    name: "hello with one tunnel",
    decoder: "client",
    input: hello(),
    want: {
      type: "hello",
      version: 1,
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
      version: 1,
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
      version: 1,
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
      version: 1,
      tunnels: [{ name: "a", kind: "tcp", local: "127.0.0.1:5555", remotePort: 0 }],
      host: "vps",
    },
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
      version: 1,
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
      version: 1,
      sessionId: "s1",
      sessionSecret: "secret",
      heartbeatMs: 15000,
      tunnels: [],
      refused: [{ name: "x", code: "internal", message: "m" }],
    },
  },
  {
    name: "server open",
    decoder: "server",
    input: '{"type":"open","claim":"c-1","tunnel":"adb"}',
    want: { type: "open", claim: "c-1", tunnel: "adb" },
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
    name: "stream ack at the window size",
    decoder: "stream",
    input: `{"type":"ack","bytes":${STREAM_WINDOW_BYTES}}`,
    want: { type: "ack", bytes: STREAM_WINDOW_BYTES },
  },
  {
    name: "stream ack of one byte",
    decoder: "stream",
    input: '{"type":"ack","bytes":1}',
    want: { type: "ack", bytes: 1 },
  },
  { name: "stream eof", decoder: "stream", input: '{"type":"eof"}', want: { type: "eof" } },
  {
    name: "stream eof with an ack folded in",
    decoder: "stream",
    input: '{"type":"eof","bytes":17}',
    want: { type: "eof", bytes: 17 },
  },
  { name: "stream idle", decoder: "stream", input: '{"type":"idle"}', want: { type: "idle" } },
  {
    name: "stream idle drops unknown fields",
    decoder: "stream",
    input: '{"type":"idle","bytes":5,"junk":[1]}',
    want: { type: "idle" },
  },
  {
    name: "stream open",
    decoder: "stream",
    input: '{"type":"open","tunnel":"adb","remote":"[::1]:4000"}',
    want: { type: "open", tunnel: "adb", remote: "[::1]:4000" },
  },
  {
    name: "stream open offering reuse",
    decoder: "stream",
    input: '{"type":"open","tunnel":"adb","remote":"[::1]:4000","reuse":true}',
    want: { type: "open", tunnel: "adb", remote: "[::1]:4000", reuse: true },
  },
  {
    name: "stream open with reuse false",
    decoder: "stream",
    input: '{"type":"open","tunnel":"adb","remote":"[::1]:4000","reuse":false}',
    want: { type: "open", tunnel: "adb", remote: "[::1]:4000" },
  },
  {
    name: "stream error",
    decoder: "stream",
    input: '{"type":"error","code":"local_dial_failed","message":"refused"}',
    want: { type: "error", code: "local_dial_failed", message: "refused" },
  },
  {
    name: "stream message exactly at the byte limit",
    decoder: "stream",
    input: sized(MAX_STREAM_CONTROL_BYTES, "é"),
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
    name: "bad JSON",
    decoder: "stream",
    input: "ack",
    message: "stream message is not valid JSON",
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
    name: "a string",
    decoder: "stream",
    input: '"eof"',
    message: "stream message must be a JSON object",
  },
  {
    name: "a missing type",
    decoder: "client",
    input: '{"t":1}',
    message: 'control message has no "type"',
  },
  {
    name: "a numeric type",
    decoder: "stream",
    input: '{"type":1}',
    message: 'stream message has no "type"',
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
    name: "an unknown type, quoted only in part",
    decoder: "stream",
    input: JSON.stringify({ type: "z".repeat(100) }),
    message: `unknown stream message type "${"z".repeat(32)}"`,
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
    input: hello({ tunnels: [tunnel("web", { kind: "http" })] }),
    message: 'tunnel "web": kind must be "tcp"',
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
    name: "an open without a claim",
    decoder: "server",
    input: '{"type":"open","tunnel":"adb"}',
    message: 'field "claim" must be a string',
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
    name: "an ack of zero bytes",
    decoder: "stream",
    input: '{"type":"ack","bytes":0}',
    message: `field "bytes" must be an integer from 1 to ${STREAM_WINDOW_BYTES}`,
  },
  {
    name: "an ack beyond the window",
    decoder: "stream",
    input: `{"type":"ack","bytes":${STREAM_WINDOW_BYTES + 1}}`,
    message: `field "bytes" must be an integer from 1 to ${STREAM_WINDOW_BYTES}`,
  },
  {
    name: "an ack with a string count",
    decoder: "stream",
    input: '{"type":"ack","bytes":"10"}',
    message: `field "bytes" must be an integer from 1 to ${STREAM_WINDOW_BYTES}`,
  },
  {
    name: "a stream open with a numeric remote",
    decoder: "stream",
    input: '{"type":"open","tunnel":"a","remote":1}',
    message: 'field "remote" must be a string',
  },
  {
    name: "a stream eof acknowledging zero bytes",
    decoder: "stream",
    input: '{"type":"eof","bytes":0}',
    message: 'field "bytes" must be an integer from 1 to 4194304',
  },
  {
    name: "a stream open with a string reuse",
    decoder: "stream",
    input: '{"type":"open","tunnel":"a","remote":"b","reuse":"yes"}',
    message: 'field "reuse" must be a boolean',
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
    name: "an oversize message that is not even JSON",
    decoder: "stream",
    input: "{".repeat(MAX_STREAM_CONTROL_BYTES + 1),
    message: `stream message is larger than the ${MAX_STREAM_CONTROL_BYTES}-byte limit`,
    closeCode: CloseCode.tooLarge,
  },
  {
    // 2-byte characters: under the limit in UTF-16 units, over it in UTF-8 bytes.
    name: "a message short in UTF-16 but oversize in UTF-8",
    decoder: "stream",
    input: sized(MAX_STREAM_CONTROL_BYTES + 1, "é"),
    message: `stream message is larger than the ${MAX_STREAM_CONTROL_BYTES}-byte limit`,
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
  const stream = sized(MAX_STREAM_CONTROL_BYTES + 1, "é");
  assert.ok(stream.length <= MAX_STREAM_CONTROL_BYTES);
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
