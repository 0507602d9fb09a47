// Tests for HTTP/1.1 body framing: request/response framing rules and the incremental BodyTracker.
import assert from "node:assert/strict";
import {
  type BodyFraming,
  BodyTracker,
  HttpFramingError,
  MAX_CHUNK_LINE_BYTES,
  MAX_TRAILER_BYTES,
  requestFraming,
  responseFraming,
} from "../../shared/http_framing.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const h = (pairs: [string, string][]) => {
  const headers = new Headers();
  for (const [k, v] of pairs) headers.append(k, v);
  return headers;
};

const NONE: BodyFraming = { kind: "none" };
const CHUNKED: BodyFraming = { kind: "chunked" };
const CLOSE: BodyFraming = { kind: "close" };

// --- requestFraming -----------------------------------------------------------------------------

const REQUEST_FRAMING: { name: string; headers: [string, string][]; want: BodyFraming }[] = [
  { name: "no body headers", headers: [["host", "a"]], want: NONE },
  {
    name: "Content-Length 5",
    headers: [["content-length", "5"]],
    want: { kind: "length", length: 5 },
  },
  { name: "Content-Length 0", headers: [["content-length", "0"]], want: NONE },
  {
    name: "equal list 5, 5",
    headers: [["content-length", "5, 5"]],
    want: { kind: "length", length: 5 },
  },
  {
    name: "two equal Content-Length lines",
    headers: [["content-length", "7"], ["content-length", "7"]],
    want: { kind: "length", length: 7 },
  },
  {
    name: "largest safe length",
    headers: [["content-length", String(Number.MAX_SAFE_INTEGER)]],
    want: { kind: "length", length: Number.MAX_SAFE_INTEGER },
  },
  { name: "chunked", headers: [["transfer-encoding", "chunked"]], want: CHUNKED },
  { name: "Chunked, any case", headers: [["transfer-encoding", "ChUnKeD"]], want: CHUNKED },
  { name: "gzip, chunked", headers: [["transfer-encoding", "gzip, chunked"]], want: CHUNKED },
  {
    name: "gzip then chunked on two lines",
    headers: [["transfer-encoding", "gzip"], ["transfer-encoding", "chunked"]],
    want: CHUNKED,
  },
];

for (const c of REQUEST_FRAMING) {
  Deno.test(`requestFraming: ${c.name}`, () => {
    assert.deepEqual(requestFraming(h(c.headers)), c.want);
  });
}

const BAD_REQUEST_FRAMING: {
  name: string;
  headers: [string, string][];
  status: number;
  message: string;
}[] = [
  {
    name: "TE and CL together",
    headers: [["transfer-encoding", "chunked"], ["content-length", "5"]],
    status: 400,
    message: "request has both Transfer-Encoding and Content-Length (send only one)",
  },
  {
    name: "gzip only",
    headers: [["transfer-encoding", "gzip"]],
    status: 501,
    message: 'transfer coding "gzip" is not supported',
  },
  {
    name: "chunked, gzip",
    headers: [["transfer-encoding", "chunked, gzip"]],
    status: 501,
    message: 'transfer coding "gzip" is not supported',
  },
  {
    name: "chunked twice",
    headers: [["transfer-encoding", "chunked, chunked"]],
    status: 400,
    message: "Transfer-Encoding applies chunked twice",
  },
  {
    name: "empty TE",
    headers: [["transfer-encoding", ""]],
    status: 400,
    message: 'empty Transfer-Encoding ""',
  },
  {
    name: "TE with a quoted junk",
    headers: [["transfer-encoding", '"chunked"']],
    status: 400,
    message: 'bad Transfer-Encoding "\\"chunked\\""',
  },
  {
    name: "differing lengths",
    headers: [["content-length", "5, 6"]],
    status: 400,
    message: 'conflicting Content-Length values "5, 6"',
  },
  {
    name: "differing lengths on two lines",
    headers: [["content-length", "5"], ["content-length", "6"]],
    status: 400,
    message: 'conflicting Content-Length values "5, 6"',
  },
  {
    name: "signed length",
    headers: [["content-length", "+5"]],
    status: 400,
    message: 'bad Content-Length "+5"',
  },
  {
    name: "hex length",
    headers: [["content-length", "0x10"]],
    status: 400,
    message: 'bad Content-Length "0x10"',
  },
  {
    name: "empty length",
    headers: [["content-length", ""]],
    status: 400,
    message: 'bad Content-Length ""',
  },
  {
    name: "empty list member",
    headers: [["content-length", "5,"]],
    status: 400,
    message: 'bad Content-Length "5,"',
  },
  {
    name: "length past 2^53",
    headers: [["content-length", "9007199254740993"]],
    status: 400,
    message: 'Content-Length "9007199254740993" is too large',
  },
  {
    name: "17-digit length",
    headers: [["content-length", "00000000000000005"]],
    status: 400,
    message: 'Content-Length "00000000000000005" is too large',
  },
];

for (const c of BAD_REQUEST_FRAMING) {
  Deno.test(`requestFraming rejects ${c.name} with ${c.status}`, () => {
    assert.throws(() => requestFraming(h(c.headers)), (e: unknown) => {
      assert.ok(e instanceof HttpFramingError);
      assert.equal(e.status, c.status);
      assert.equal(e.message, c.message);
      assert.equal(e.name, "HttpFramingError");
      return true;
    });
  });
}

// --- responseFraming ----------------------------------------------------------------------------

const RESPONSE_FRAMING: {
  name: string;
  method?: string;
  status: number;
  headers: [string, string][];
  want: BodyFraming;
}[] = [
  {
    name: "HEAD with a length",
    method: "HEAD",
    status: 200,
    headers: [["content-length", "9"]],
    want: NONE,
  },
  {
    name: "HEAD chunked",
    method: "HEAD",
    status: 200,
    headers: [["transfer-encoding", "chunked"]],
    want: NONE,
  },
  { name: "100 Continue", status: 100, headers: [], want: NONE },
  { name: "101 Switching Protocols", status: 101, headers: [], want: NONE },
  { name: "204 with a length", status: 204, headers: [["content-length", "3"]], want: NONE },
  { name: "304 with a length", status: 304, headers: [["content-length", "3"]], want: NONE },
  {
    name: "2xx to CONNECT",
    method: "CONNECT",
    status: 200,
    headers: [["content-length", "3"]],
    want: CLOSE,
  },
  {
    name: "407 to CONNECT has a body",
    method: "CONNECT",
    status: 407,
    headers: [["content-length", "3"]],
    want: { kind: "length", length: 3 },
  },
  { name: "chunked", status: 200, headers: [["transfer-encoding", "chunked"]], want: CHUNKED },
  {
    name: "chunked wins over a length",
    status: 200,
    headers: [["transfer-encoding", "chunked"], ["content-length", "3"]],
    want: CHUNKED,
  },
  {
    name: "gzip only: until close",
    status: 200,
    headers: [["transfer-encoding", "gzip"]],
    want: CLOSE,
  },
  {
    name: "a length",
    status: 404,
    headers: [["content-length", "12"]],
    want: { kind: "length", length: 12 },
  },
  {
    name: "equal lengths",
    status: 200,
    headers: [["content-length", "4, 4"]],
    want: { kind: "length", length: 4 },
  },
  { name: "length 0", status: 200, headers: [["content-length", "0"]], want: NONE },
  { name: "nothing: until close", status: 200, headers: [], want: CLOSE },
  { name: "500 without framing", status: 500, headers: [], want: CLOSE },
];

for (const c of RESPONSE_FRAMING) {
  Deno.test(`responseFraming: ${c.name}`, () => {
    assert.deepEqual(responseFraming(c.method ?? "GET", c.status, h(c.headers)), c.want);
  });
}

const BAD_RESPONSE_FRAMING: { name: string; headers: [string, string][]; message: string }[] = [
  {
    name: "differing lengths",
    headers: [["content-length", "3, 4"]],
    message: 'upstream sent a conflicting Content-Length values "3, 4"',
  },
  {
    name: "negative length",
    headers: [["content-length", "-1"]],
    message: 'upstream sent a bad Content-Length "-1"',
  },
  {
    name: "chunked twice",
    headers: [["transfer-encoding", "chunked, chunked"]],
    message: "Transfer-Encoding applies chunked twice",
  },
  {
    name: "empty TE",
    headers: [["transfer-encoding", " , "]],
    message: 'empty Transfer-Encoding ","',
  },
];

for (const c of BAD_RESPONSE_FRAMING) {
  Deno.test(`responseFraming rejects ${c.name} with 502`, () => {
    assert.throws(() => responseFraming("GET", 200, h(c.headers)), (e: unknown) => {
      assert.ok(e instanceof HttpFramingError);
      assert.equal(e.status, 502);
      assert.equal(e.message, c.message);
      return true;
    });
  });
}

// --- BodyTracker --------------------------------------------------------------------------------

/** Feeds `input` split into pieces at `cuts`; returns consumed, decoded text and done. */
function run(framing: BodyFraming, input: Uint8Array, cuts: number[]) {
  const t = new BodyTracker(framing);
  let consumed = 0;
  let decoded = "";
  const parts: Uint8Array[] = [];
  let from = 0;
  for (const cut of [...cuts, input.length]) {
    parts.push(input.subarray(from, cut));
    from = cut;
  }
  let offset = 0;
  for (const part of parts) {
    const n = t.feed(part, (d) => decoded += dec(d));
    assert.ok(n >= 0 && n <= part.length);
    // Once the body ends nothing more is taken from this or later pieces.
    if (n < part.length) assert.ok(t.done);
    if (offset === consumed) consumed += n;
    else assert.equal(n, 0);
    offset += part.length;
  }
  return { consumed, decoded, done: t.done, bytes: t.decodedBytes, tracker: t };
}

const VALID_BODIES: {
  name: string;
  framing: BodyFraming;
  input: string;
  consumed: number;
  decoded: string;
  done: boolean;
}[] = [
  {
    name: "none takes nothing",
    framing: NONE,
    input: "GET / HTTP/1.1\r\n",
    consumed: 0,
    decoded: "",
    done: true,
  },
  {
    name: "length 0",
    framing: { kind: "length", length: 0 },
    input: "abc",
    consumed: 0,
    decoded: "",
    done: true,
  },
  {
    name: "length 5 then more",
    framing: { kind: "length", length: 5 },
    input: "helloGET",
    consumed: 5,
    decoded: "hello",
    done: true,
  },
  {
    name: "length 5 short",
    framing: { kind: "length", length: 5 },
    input: "hel",
    consumed: 3,
    decoded: "hel",
    done: false,
  },
  {
    name: "close takes all",
    framing: CLOSE,
    input: "anything\r\n0\r\n\r\n",
    consumed: 15,
    decoded: "anything\r\n0\r\n\r\n",
    done: false,
  },
  {
    name: "one chunk",
    framing: CHUNKED,
    input: "5\r\nhello\r\n0\r\n\r\n",
    consumed: 15,
    decoded: "hello",
    done: true,
  },
  {
    name: "two chunks then the next request",
    framing: CHUNKED,
    input: "3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    consumed: 28,
    decoded: "abc0123456789",
    done: true,
  },
  {
    name: "upper and lower hex",
    framing: CHUNKED,
    input: "a\r\n0123456789\r\nB\r\n0123456789a\r\n0\r\n\r\n",
    consumed: 36,
    decoded: "01234567890123456789a",
    done: true,
  },
  {
    name: "leading zeros",
    framing: CHUNKED,
    input: "0003\r\nabc\r\n000\r\n\r\n",
    consumed: 18,
    decoded: "abc",
    done: true,
  },
  {
    name: "16 hex digits",
    framing: CHUNKED,
    input: "0000000000000002\r\nab\r\n0\r\n\r\n",
    consumed: 27,
    decoded: "ab",
    done: true,
  },
  {
    name: "extensions",
    framing: CHUNKED,
    input: '3;name=value;q="a b"\r\nabc\r\n0;last\r\n\r\n',
    consumed: 37,
    decoded: "abc",
    done: true,
  },
  {
    name: "BWS before an extension",
    framing: CHUNKED,
    input: "3 ;x\r\nabc\r\n0\t;y\r\n\r\n",
    consumed: 19,
    decoded: "abc",
    done: true,
  },
  {
    name: "trailers",
    framing: CHUNKED,
    input: "2\r\nhi\r\n0\r\nX-Sum: 1\r\nEmpty:\r\n\r\nnext",
    consumed: 30,
    decoded: "hi",
    done: true,
  },
  {
    name: "CRLF inside chunk data",
    framing: CHUNKED,
    input: "4\r\n\r\n\r\n\r\n0\r\n\r\n",
    consumed: 14,
    decoded: "\r\n\r\n",
    done: true,
  },
  {
    name: "last chunk only",
    framing: CHUNKED,
    input: "0\r\n\r\n",
    consumed: 5,
    decoded: "",
    done: true,
  },
  {
    name: "truncated in data",
    framing: CHUNKED,
    input: "5\r\nhel",
    consumed: 6,
    decoded: "hel",
    done: false,
  },
  {
    name: "truncated before final CRLF",
    framing: CHUNKED,
    input: "0\r\n",
    consumed: 3,
    decoded: "",
    done: false,
  },
];

for (const c of VALID_BODIES) {
  const input = enc(c.input);
  Deno.test(`BodyTracker reads ${c.name} whole, byte by byte and split anywhere`, () => {
    const splits: number[][] = [[], Array.from({ length: input.length }, (_, i) => i)];
    for (let i = 0; i <= input.length; i++) splits.push([i]);
    for (const cuts of splits) {
      const r = run(c.framing, input, cuts);
      const at = `cuts ${JSON.stringify(cuts)}`;
      assert.equal(r.consumed, c.consumed, at);
      assert.equal(r.decoded, c.decoded, at);
      assert.equal(r.bytes, enc(c.decoded).length, at);
      assert.equal(r.done, c.done, at);
    }
  });
}

Deno.test("BodyTracker gives chunk data as views into the fed bytes", () => {
  const input = enc("5\r\nhello\r\n0\r\n\r\n");
  const views: Uint8Array[] = [];
  new BodyTracker(CHUNKED).feed(input, (d) => views.push(d));
  assert.equal(views.length, 1);
  assert.equal(views[0]!.buffer, input.buffer);
  assert.equal(views[0]!.byteOffset, 3);
});

const ENDS: { name: string; framing: BodyFraming; input: string; end: boolean }[] = [
  { name: "close framing at any point", framing: CLOSE, input: "abc", end: true },
  { name: "close framing with nothing", framing: CLOSE, input: "", end: true },
  { name: "none", framing: NONE, input: "", end: true },
  {
    name: "a complete length body",
    framing: { kind: "length", length: 2 },
    input: "ab",
    end: true,
  },
  { name: "a short length body", framing: { kind: "length", length: 2 }, input: "a", end: false },
  { name: "a complete chunked body", framing: CHUNKED, input: "1\r\na\r\n0\r\n\r\n", end: true },
  {
    name: "a chunked body without its last chunk",
    framing: CHUNKED,
    input: "1\r\na\r\n",
    end: false,
  },
  {
    name: "a chunked body without its final CRLF",
    framing: CHUNKED,
    input: "0\r\nX: y\r\n",
    end: false,
  },
];

for (const c of ENDS) {
  Deno.test(`BodyTracker.end() is ${c.end} for ${c.name}`, () => {
    const t = new BodyTracker(c.framing);
    t.feed(enc(c.input));
    assert.equal(t.end(), c.end);
  });
}

Deno.test("BodyTracker takes nothing once done", () => {
  const t = new BodyTracker({ kind: "length", length: 1 });
  assert.equal(t.feed(enc("ab")), 1);
  assert.equal(t.feed(enc("cd")), 0);
  assert.equal(t.decodedBytes, 1);
});

const BAD_BODIES: {
  name: string;
  input: string;
  message: string;
  limits?: { maxChunkLineBytes?: number; maxTrailerBytes?: number };
}[] = [
  { name: "no size", input: "\r\nabc", message: "chunk size missing" },
  { name: "non-hex size", input: "g\r\n", message: "chunk size missing" },
  { name: "0x prefix", input: "0x5\r\nhello\r\n", message: "chunk size is not hexadecimal" },
  { name: "negative size", input: "-5\r\n", message: "chunk size missing" },
  {
    name: "17 hex digits",
    input: "00000000000000001\r\n",
    message: "chunk size has more than 16 hex digits",
  },
  { name: "size past 2^53", input: "20000000000001\r\n", message: "chunk size too large" },
  {
    name: "bare LF after the size",
    input: "5\nhello\r\n",
    message: "bare LF ending a chunk-size line",
  },
  {
    name: "bare LF after an extension",
    input: "5;a\nhello\r\n",
    message: "bare LF ending a chunk-size line",
  },
  {
    name: "CR without LF after the size",
    input: "5\rhello",
    message: "CR without LF after a chunk size",
  },
  {
    name: "data longer than its size",
    input: "3\r\nabcd\r\n",
    message: "chunk data longer than its size (expected CRLF)",
  },
  {
    name: "bare LF after data",
    input: "3\r\nabc\n0\r\n\r\n",
    message: "chunk data longer than its size (expected CRLF)",
  },
  {
    name: "CR without LF after data",
    input: "3\r\nabc\rx",
    message: "CR without LF after chunk data",
  },
  {
    name: "NUL in an extension",
    input: "3;a\0\r\n",
    message: "control character in a chunk-size line",
  },
  { name: "bare LF ending the body", input: "0\r\n\n", message: "bare LF in the trailer section" },
  {
    name: "CR without LF ending the body",
    input: "0\r\n\rx",
    message: "CR without LF at the end of the body",
  },
  {
    name: "trailer without a name",
    input: "0\r\n: v\r\n\r\n",
    message: "trailer line without a field name",
  },
  {
    name: "trailer with a space in its name",
    input: "0\r\nA b: v\r\n\r\n",
    message: "bad character in a trailer field name",
  },
  {
    name: "trailer without a colon",
    input: "0\r\nAbc\r\n\r\n",
    message: "bad character in a trailer field name",
  },
  {
    name: "bare LF in a trailer",
    input: "0\r\nA: v\nB: w\r\n\r\n",
    message: "bad character in a trailer field value",
  },
  {
    name: "folded trailer",
    input: "0\r\nA: v\r\n w\r\n\r\n",
    message: "trailer line without a field name",
  },
  {
    name: "a chunk line over the default limit",
    input: "1;" + "x".repeat(MAX_CHUNK_LINE_BYTES) + "\r\n",
    message: `chunk-size line exceeds ${MAX_CHUNK_LINE_BYTES} bytes`,
  },
  {
    name: "trailers over the default limit",
    input: "0\r\nX: " + "v".repeat(MAX_TRAILER_BYTES) + "\r\n\r\n",
    message: `trailer section exceeds ${MAX_TRAILER_BYTES} bytes`,
  },
  {
    name: "a chunk line over a set limit",
    input: "1;abcdef\r\n",
    message: "chunk-size line exceeds 6 bytes",
    limits: { maxChunkLineBytes: 6 },
  },
  {
    name: "trailers over a set limit",
    input: "0\r\nA: 1234\r\n\r\n",
    message: "trailer section exceeds 10 bytes",
    limits: { maxTrailerBytes: 10 },
  },
];

for (const c of BAD_BODIES) {
  Deno.test(`BodyTracker rejects ${c.name}, whole and byte by byte`, () => {
    const input = enc(c.input);
    const check = (e: unknown) => {
      assert.ok(e instanceof HttpFramingError);
      assert.equal(e.status, 400);
      assert.equal(e.message, `Malformed chunked body: ${c.message}`);
      return true;
    };
    const whole = new BodyTracker(CHUNKED, c.limits);
    assert.throws(() => whole.feed(input), check);
    assert.equal(whole.end(), false);
    assert.throws(() => whole.feed(enc("0\r\n\r\n")), HttpFramingError);
    const bytewise = new BodyTracker(CHUNKED, c.limits);
    assert.throws(() => {
      for (let i = 0; i < input.length; i++) bytewise.feed(input.subarray(i, i + 1));
    }, check);
  });
}

Deno.test("BodyTracker accepts a chunk line and trailers exactly at their limits", () => {
  const line = "1;" + "x".repeat(4) + "\r\na\r\n0\r\n\r\n"; // size line is 6 bytes
  const t = new BodyTracker(CHUNKED, { maxChunkLineBytes: 6 });
  assert.equal(t.feed(enc(line)), line.length);
  assert.ok(t.done);
  const trailers = "0\r\nA: 12\r\n\r\n"; // trailer section "A: 12\r\n\r\n" is 9 bytes
  const u = new BodyTracker(CHUNKED, { maxTrailerBytes: 9 });
  assert.equal(u.feed(enc(trailers)), trailers.length);
  assert.ok(u.done);
});

Deno.test("BodyTracker refuses a length framing that is not a safe integer", () => {
  assert.throws(() => new BodyTracker({ kind: "length", length: -1 }), {
    name: "RangeError",
    message: "invalid body length -1",
  });
});
