// Tests of the HTTP observer behind the access log and metrics: what it reports for the bytes of
// one visitor connection, and that a stream it cannot follow only ends the watching.
import assert from "node:assert/strict";
import { type HttpExchange, HttpObserver } from "../../server/http/observer.ts";

const enc = new TextEncoder();

/** An observer with a clock the test moves, and the exchanges it reported. */
function watch(): { o: HttpObserver; got: HttpExchange[]; clock: { now: number } } {
  const clock = { now: 1_000 };
  const got: HttpExchange[] = [];
  return { o: new HttpObserver((e) => got.push(e), () => clock.now), got, clock };
}

/** Feeds `text` one byte at a time (heads and bodies split at every possible place). */
function byteByByte(feed: (b: Uint8Array) => void, text: string): void {
  for (const b of enc.encode(text)) feed(Uint8Array.of(b));
}

const GET = (path: string, host = "app.t.test") => `GET ${path} HTTP/1.1\r\nhost: ${host}\r\n\r\n`;
const OK = (body: string) => `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n${body}`;

Deno.test("observer reports each exchange of a keep-alive connection in order", () => {
  const { o, got, clock } = watch();
  const req1 = GET("/one?x=1");
  const res1 = OK("hello");
  o.request(enc.encode(req1));
  clock.now += 25;
  o.response(enc.encode(res1));
  const req2 = "POST /two HTTP/1.1\r\nhost: app.t.test\r\ncontent-length: 4\r\n\r\nbody";
  const res2 = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
  o.request(enc.encode(req2));
  clock.now += 7;
  o.response(enc.encode(res2));
  assert.deepEqual(got, [
    {
      method: "GET",
      host: "app.t.test",
      target: "/one?x=1",
      status: 200,
      bytesIn: req1.length,
      bytesOut: res1.length,
      durationMs: 25,
      upgraded: false,
    },
    {
      method: "POST",
      host: "app.t.test",
      target: "/two",
      status: 404,
      bytesIn: req2.length,
      bytesOut: res2.length,
      durationMs: 7,
      upgraded: false,
    },
  ]);
});

Deno.test("observer reports nothing until a response body is complete", () => {
  const { o, got } = watch();
  o.request(enc.encode(GET("/")));
  const res = OK("0123456789");
  o.response(enc.encode(res.slice(0, -4)));
  assert.equal(got.length, 0);
  o.response(enc.encode(res.slice(-4)));
  assert.equal(got.length, 1);
  assert.equal(got[0]!.bytesOut, res.length);
});

Deno.test("observer matches pipelined requests to their responses", () => {
  const { o, got } = watch();
  o.request(enc.encode(GET("/a") + GET("/b", "other.t.test") + GET("/c")));
  const oops = "HTTP/1.1 500 Oops\r\ncontent-length: 1\r\n\r\nB";
  o.response(enc.encode(OK("A") + oops + OK("CC")));
  assert.deepEqual(
    got.map((e) => [e.target, e.host, e.status, e.bytesIn, e.bytesOut]),
    [
      ["/a", "app.t.test", 200, GET("/a").length, OK("A").length],
      ["/b", "other.t.test", 500, GET("/b", "other.t.test").length, oops.length],
      ["/c", "app.t.test", 200, GET("/c").length, OK("CC").length],
    ],
  );
});

Deno.test("observer follows chunked bodies both ways, fed one byte at a time", () => {
  const { o, got } = watch();
  const req = "PUT /up HTTP/1.1\r\nhost: app.t.test\r\ntransfer-encoding: chunked\r\n\r\n" +
    "3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
  const res = "HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n" +
    "5;ext=1\r\nhello\r\n0\r\nx-trailer: yes\r\n\r\n";
  byteByByte((b) => o.request(b), req);
  byteByByte((b) => o.response(b), res);
  byteByByte((b) => o.request(b), GET("/next"));
  byteByByte((b) => o.response(b), OK("n"));
  assert.deepEqual(
    got.map((e) => [e.method, e.target, e.status, e.bytesIn, e.bytesOut]),
    [
      ["PUT", "/up", 201, req.length, res.length],
      ["GET", "/next", 200, GET("/next").length, OK("n").length],
    ],
  );
});

Deno.test("observer knows a HEAD response has no body despite its Content-Length", () => {
  const { o, got } = watch();
  const head = "HEAD /file HTTP/1.1\r\nhost: app.t.test\r\n\r\n";
  const res = "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n";
  o.request(enc.encode(head + GET("/after")));
  o.response(enc.encode(res + OK("after")));
  assert.deepEqual(
    got.map((e) => [e.method, e.target, e.status, e.bytesOut]),
    [["HEAD", "/file", 200, res.length], ["GET", "/after", 200, OK("after").length]],
  );
});

Deno.test("observer reports a 100 Continue then the final status as one exchange", () => {
  const { o, got } = watch();
  const req = "POST /form HTTP/1.1\r\nhost: app.t.test\r\nexpect: 100-continue\r\n" +
    "content-length: 2\r\n\r\n";
  o.request(enc.encode(req));
  const interim = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n";
  o.response(enc.encode(interim));
  assert.equal(got.length, 0);
  o.request(enc.encode("hi"));
  o.response(enc.encode(OK("done")));
  assert.equal(got.length, 1);
  assert.equal(got[0]!.status, 200);
  assert.equal(got[0]!.bytesIn, req.length + 2);
  assert.equal(got[0]!.bytesOut, interim.length + OK("done").length);
});

Deno.test("observer reports a 101 upgrade and stops watching the connection", () => {
  const { o, got } = watch();
  const req = "GET /ws HTTP/1.1\r\nhost: app.t.test\r\nconnection: upgrade\r\n" +
    "upgrade: websocket\r\n\r\n";
  const res =
    "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";
  o.request(enc.encode(req));
  o.response(enc.encode(res + "\x81\x05hello"));
  // WebSocket frames that happen to look like HTTP are not taken for requests.
  o.request(enc.encode(GET("/not-http")));
  o.response(enc.encode(OK("no")));
  o.end();
  assert.deepEqual(got, [{
    method: "GET",
    host: "app.t.test",
    target: "/ws",
    status: 101,
    bytesIn: req.length,
    bytesOut: res.length,
    durationMs: 0,
    upgraded: true,
  }]);
});

const GARBAGE: { name: string; request: string; response: string; want: string[] }[] = [
  {
    name: "a request line that is not HTTP",
    request: "\x16\x03\x01\x02\x00\r\n\r\n",
    response: "",
    want: [],
  },
  {
    name: "a response before any request",
    request: "",
    response: OK("stray"),
    want: [],
  },
  {
    name: "a malformed response head",
    request: GET("/x"),
    response: "HTTP/9 nope\r\n\r\n",
    want: ["/x 0"],
  },
  {
    name: "a request with two different Content-Lengths",
    request: "POST /y HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
    response: "",
    want: ["/y 0"],
  },
  {
    name: "a request head past the observer's limit",
    request: "GET / HTTP/1.1\r\nx: " + "a".repeat(70 * 1024),
    response: "",
    want: [],
  },
];

for (const c of GARBAGE) {
  Deno.test(`observer stops watching, without throwing, after ${c.name}`, () => {
    const { o, got } = watch();
    o.request(enc.encode(c.request));
    o.response(enc.encode(c.response));
    // Whatever comes next is not looked at.
    o.request(enc.encode(GET("/later")));
    o.response(enc.encode(OK("later")));
    o.end();
    assert.deepEqual(got.map((e) => `${e.target} ${e.status}`), c.want);
  });
}

Deno.test("observer reports a body that runs to the close, and unanswered requests, at the end", () => {
  const { o, got } = watch();
  o.request(enc.encode(GET("/stream")));
  const res = "HTTP/1.1 200 OK\r\n\r\nuntil the end";
  o.response(enc.encode(res));
  assert.equal(got.length, 0);
  o.request(enc.encode(GET("/unanswered")));
  o.end();
  assert.deepEqual(
    got.map((e) => [e.target, e.status, e.bytesOut]),
    [["/stream", 200, res.length], ["/unanswered", 0, 0]],
  );
  o.end(); // twice is harmless
  assert.equal(got.length, 2);
});
