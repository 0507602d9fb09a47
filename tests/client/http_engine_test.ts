// Tests for serveVisitor run in-process: the test is the visitor on one end of a memory pipe, the
// engine serves the other end, and real local services (Deno.serve or scripted TCP) answer.
import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import {
  type HttpRules,
  type HttpTunnel,
  MAX_HTTP_HEAD_BYTES,
  serveVisitor,
  type Visitor,
} from "../../client/http/engine.ts";
import { LocalPool } from "../../client/http/local_pool.ts";
import { Watchdog } from "../../client/http/watchdog.ts";
import { Capture } from "../../client/inspector/capture.ts";
import { memoryPipe, type PipeEnd } from "../../shared/mem_pipe.ts";
import { closeQuietly, writeAll } from "../../shared/net.ts";
import { within } from "../support/wait.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

const HOST = "app.t.test";
const IDLE_MS = 60;
const RESPONSE_MS = 80;

const NO_RULES: HttpRules = {
  hostHeader: { kind: "rewrite" },
  basicAuth: [],
  ipRules: null,
  requestHeaderAdd: [],
  requestHeaderRemove: [],
  responseHeaderAdd: [],
  securityHeaders: false,
  maxBodyBytes: null,
};

interface Rig {
  readonly visitor: PipeEnd;
  readonly tunnel: HttpTunnel;
  readonly reader: Reader;
  /** Resolves when serveVisitor returned. */
  readonly served: Promise<void>;
}

/** Runs `fn` with serveVisitor serving a pipe for a tunnel to `port`; cleans everything up. */
async function withEngine(
  port: number,
  fn: (rig: Rig) => Promise<void>,
  opts: { rules?: Partial<HttpRules>; capture?: Capture; visitor?: Partial<Visitor> } = {},
): Promise<void> {
  const tunnel: HttpTunnel = {
    name: "web",
    rules: { ...NO_RULES, ...opts.rules },
    pool: new LocalPool({ scheme: "http", host: "127.0.0.1", port, insecure: false }, 2_000),
    hosts: [HOST],
    capture: opts.capture ?? null,
    log: getLogger(["mport", "test"]),
    watchdog: new Watchdog(10),
    timeouts: { idleMs: IDLE_MS, responseMs: RESPONSE_MS },
  };
  const [visitor, engine] = memoryPipe();
  const served = serveVisitor(
    engine.asConn(),
    { remote: "203.0.113.7:40000", extra: undefined, ...opts.visitor },
    tunnel,
  );
  try {
    await fn({ visitor, tunnel, reader: new Reader(visitor), served });
  } finally {
    visitor.close();
    await within(served, 5_000, "serveVisitor returning");
    tunnel.pool.close();
    tunnel.watchdog.close();
  }
}

/** Reads HTTP responses off the visitor's end of the pipe. */
class Reader {
  readonly #conn: PipeEnd;
  #buf = new Uint8Array(0);

  constructor(conn: PipeEnd) {
    this.#conn = conn;
  }

  async #more(): Promise<boolean> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await this.#conn.read(chunk);
    if (n === null) return false;
    const next = new Uint8Array(this.#buf.byteLength + n);
    next.set(this.#buf);
    next.set(chunk.subarray(0, n), this.#buf.byteLength);
    this.#buf = next;
    return true;
  }

  /** One response (head and a Content-Length body; a 1xx head alone). */
  async response(): Promise<{ status: number; head: string; headers: Headers; body: string }> {
    let end: number;
    while ((end = dec(this.#buf).indexOf("\r\n\r\n")) < 0) {
      if (!(await this.#more())) throw new Error(`EOF inside a head: ${dec(this.#buf)}`);
    }
    const head = dec(this.#buf.subarray(0, end));
    this.#buf = this.#buf.subarray(end + 4);
    const lines = head.split("\r\n");
    const status = Number(lines[0]!.split(" ")[1]);
    const headers = new Headers();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      headers.append(line.slice(0, colon), line.slice(colon + 1).trim());
    }
    const length = Number(headers.get("content-length") ?? 0);
    if (status < 200) return { status, head, headers, body: "" };
    while (this.#buf.byteLength < length) {
      if (!(await this.#more())) throw new Error("EOF inside a body");
    }
    const body = dec(this.#buf.subarray(0, length));
    this.#buf = this.#buf.subarray(length);
    return { status, head, headers, body };
  }

  /** Everything until the end: `end` is "EOF" for a clean end, else the error's name. */
  async rest(): Promise<{ text: string; end: string }> {
    let end = "EOF";
    try {
      while (await this.#more());
    } catch (e) {
      end = (e as Error).name;
    }
    const text = dec(this.#buf);
    this.#buf = new Uint8Array(0);
    return { text, end };
  }
}

/** A Deno.serve local service on port 0. */
function httpService(handler: (req: Request) => Response | Promise<Response>) {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  return { port: server.addr.port, close: () => server.shutdown() };
}

/** A raw TCP local service; `script` plays each accepted connection byte by byte. */
function scriptedService(script: (conn: Deno.TcpConn, index: number) => Promise<void>) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.TcpConn>();
  const running: Promise<void>[] = [];
  let accepted = 0;
  const loop = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      running.push(script(conn, accepted++).catch(() => {}).finally(() => conns.delete(conn)));
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get accepted() {
      return accepted;
    },
    async close() {
      listener.close();
      await loop;
      for (const c of conns) closeQuietly(c);
      await Promise.all(running);
    },
  };
}

/** Reads one request head (and nothing after it) from a local connection. */
async function readRequestHead(conn: Deno.Conn): Promise<string | null> {
  let text = "";
  const one = new Uint8Array(1);
  while (!text.endsWith("\r\n\r\n")) {
    const n = await conn.read(one);
    if (n === null) return null;
    text += String.fromCharCode(one[0]!);
  }
  return text;
}

async function readN(conn: Deno.Conn, n: number): Promise<string> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(buf.subarray(got));
    if (r === null) throw new Error("EOF");
    got += r;
  }
  return dec(buf);
}

const get = (path: string, extra = "") => `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\n${extra}\r\n`;

Deno.test("engine ends an idle keep-alive visitor connection with a clean EOF", async () => {
  const svc = httpService(() => new Response("hi"));
  try {
    await withEngine(svc.port, async ({ visitor, reader, served }) => {
      await visitor.write(enc(get("/")));
      const res = await reader.response();
      assert.equal(res.status, 200);
      assert.equal(res.body, "hi");
      // Nothing more is asked: after the idle time the engine closes, cleanly.
      const rest = await within(reader.rest(), 2_000, "idle close");
      assert.deepEqual(rest, { text: "", end: "EOF" });
      await served;
    });
  } finally {
    await svc.close();
  }
});

Deno.test("engine closes a visitor connection that never sends a request cleanly", async () => {
  const svc = httpService(() => new Response("hi"));
  try {
    await withEngine(svc.port, async ({ reader }) => {
      assert.deepEqual(await within(reader.rest(), 2_000, "idle close"), { text: "", end: "EOF" });
    });
  } finally {
    await svc.close();
  }
});

Deno.test("engine answers 504 when the local service sends no response in time", async () => {
  let heard!: () => void;
  const gotRequest = new Promise<void>((r) => (heard = r));
  const svc = scriptedService(async (conn) => {
    await readRequestHead(conn);
    heard();
    // Accepts and reads, never answers: waits for the engine to give up and close.
    await conn.read(new Uint8Array(1)).catch(() => null);
    conn.close();
  });
  try {
    await withEngine(svc.port, async ({ visitor, reader }) => {
      await visitor.write(enc(get("/slow")));
      await gotRequest;
      const res = await within(reader.response(), 2_000, "the 504 page");
      assert.equal(res.status, 504);
      assert.match(res.body, /sent no response within 0\.08 s/);
      assert.equal(res.headers.get("connection"), "close");
      assert.deepEqual(await reader.rest(), { text: "", end: "EOF" });
    });
  } finally {
    await svc.close();
  }
});

/** Answers every request with "ok <n>" and closes right after, without `connection: close`. */
function closeAfterEachResponse() {
  return scriptedService(async (conn, index) => {
    const head = await readRequestHead(conn);
    if (head === null) return conn.close();
    const length = /content-length: (\d+)/i.exec(head);
    if (length) await readN(conn, Number(length[1]));
    const body = `ok ${index}`;
    await writeAll(conn, enc(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`));
    conn.close();
  });
}

/** Waits until the engine's pooled connection has the local service's FIN. */
async function poolHoldsClosedConn(tunnel: HttpTunnel): Promise<void> {
  // The service closes right after writing; a round trip through a new connection is enough for
  // the FIN to have arrived too (same loopback, sent earlier).
  const probe = await Deno.connect({ hostname: "127.0.0.1", port: tunnel.pool.target.port });
  await probe.write(enc("GET / HTTP/1.1\r\n\r\n"));
  await readToNull(probe);
  probe.close();
}

async function readToNull(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(1024);
  while ((await conn.read(buf).catch(() => null)) !== null);
}

Deno.test("engine retries a GET on a fresh connection when the pooled one was closed", async () => {
  const svc = closeAfterEachResponse();
  try {
    await withEngine(svc.port, async ({ visitor, reader, tunnel }) => {
      await visitor.write(enc(get("/one")));
      assert.equal((await reader.response()).body, "ok 0");
      await poolHoldsClosedConn(tunnel); // accepted as connection 1
      await visitor.write(enc(get("/two")));
      const res = await reader.response();
      assert.equal(res.status, 200);
      assert.equal(res.body, "ok 2", "answered on a new connection");
      assert.equal(svc.accepted, 3);
    });
  } finally {
    await svc.close();
  }
});

Deno.test("engine does not retry a POST when the pooled connection was closed: 502", async () => {
  const svc = closeAfterEachResponse();
  try {
    await withEngine(svc.port, async ({ visitor, reader, tunnel }) => {
      await visitor.write(enc(get("/one")));
      assert.equal((await reader.response()).body, "ok 0");
      await poolHoldsClosedConn(tunnel);
      await visitor.write(
        enc(`POST /pay HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 5\r\n\r\nhello`),
      );
      const res = await reader.response();
      assert.equal(res.status, 502);
      assert.match(res.body, /local service/);
      assert.equal(svc.accepted, 2, "the POST was not sent again");
      assert.deepEqual(await reader.rest(), { text: "", end: "EOF" });
    });
  } finally {
    await svc.close();
  }
});

Deno.test("engine answers pipelined requests in order", async () => {
  const svc = httpService(async (req) => {
    const path = new URL(req.url).pathname;
    // The first answer is the slow one: the order must still hold.
    if (path === "/first") await new Promise((r) => setTimeout(r, 20));
    return new Response(`answer to ${path}`);
  });
  try {
    await withEngine(svc.port, async ({ visitor, reader }) => {
      await visitor.write(enc(get("/first") + get("/second")));
      assert.equal((await reader.response()).body, "answer to /first");
      assert.equal((await reader.response()).body, "answer to /second");
    });
  } finally {
    await svc.close();
  }
});

Deno.test("engine answers a malformed request with 400 and then a clean EOF", async () => {
  const svc = httpService(() => new Response("never"));
  try {
    await withEngine(svc.port, async ({ visitor, reader }) => {
      await visitor.write(enc("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n"));
      const res = await reader.response();
      assert.equal(res.status, 400);
      assert.match(res.body, /folded header line/);
      assert.deepEqual(await reader.rest(), { text: "", end: "EOF" });
    });
  } finally {
    await svc.close();
  }
});

Deno.test("engine answers a request head over MAX_HTTP_HEAD_BYTES with 431", async () => {
  const svc = httpService(() => new Response("never"));
  try {
    await withEngine(svc.port, async ({ visitor, reader }) => {
      const big = `GET / HTTP/1.1\r\nHost: ${HOST}\r\nX-Big: ${"a".repeat(MAX_HTTP_HEAD_BYTES)}`;
      await visitor.write(enc(big));
      const res = await reader.response();
      assert.equal(res.status, 431);
      assert.match(res.body, new RegExp(`larger than ${MAX_HTTP_HEAD_BYTES} bytes`));
      assert.deepEqual(await reader.rest(), { text: "", end: "EOF" });
    });
  } finally {
    await svc.close();
  }
});

Deno.test("engine resets the visitor when the local response is cut off mid-body", async () => {
  const svc = scriptedService(async (conn) => {
    await readRequestHead(conn);
    await writeAll(conn, enc(`HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n${"x".repeat(50)}`));
    conn.close();
  });
  try {
    await withEngine(svc.port, async ({ visitor, reader }) => {
      await visitor.write(enc(get("/")));
      const rest = await within(reader.rest(), 2_000, "the end of the response");
      assert.equal(rest.end, "ConnectionReset", "a cut-off body must not look complete");
      assert.ok(!rest.text.includes("x".repeat(51)));
    });
  } finally {
    await svc.close();
  }
});

Deno.test("engine passes a close-delimited response whole, then a clean EOF", async () => {
  const body = "streamed until the close ".repeat(100);
  const svc = scriptedService(async (conn) => {
    await readRequestHead(conn);
    await writeAll(conn, enc(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n`));
    await writeAll(conn, enc(body));
    conn.close();
  });
  try {
    await withEngine(svc.port, async ({ visitor, reader }) => {
      await visitor.write(enc(get("/")));
      const rest = await within(reader.rest(), 2_000, "the response");
      assert.equal(rest.end, "EOF");
      const [head, got] = rest.text.split("\r\n\r\n", 2) as [string, string];
      assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(head, /\r\nconnection: close(\r\n|$)/i);
      assert.equal(got, body);
    });
  } finally {
    await svc.close();
  }
});

Deno.test("engine captures request and response bodies of an exchange", async () => {
  const svc = httpService(async (req) => new Response(`got:${await req.text()}`));
  const capture = new Capture();
  const ids: string[] = [];
  try {
    await withEngine(svc.port, async ({ visitor, reader, served }) => {
      await visitor.write(
        enc(
          `POST /form?a=1 HTTP/1.1\r\nHost: ${HOST}\r\nContent-Length: 5\r\n` +
            `Connection: close\r\n\r\nhello`,
        ),
      );
      const res = await reader.response();
      assert.equal(res.body, "got:hello");
      await served; // the exchange ends before the connection does
    }, { capture, visitor: { captured: (id) => ids.push(id) } });
    const [entry] = capture.list();
    assert.ok(entry);
    assert.deepEqual(ids, [entry.id]);
    assert.equal(entry.tunnel, "web");
    assert.equal(entry.remote, "203.0.113.7:40000");
    assert.equal(entry.request.method, "POST");
    assert.equal(entry.request.target, "/form?a=1");
    assert.equal(dec(entry.request.body), "hello");
    assert.equal(entry.response?.status, 200);
    assert.equal(dec(entry.response!.body), "got:hello");
    assert.equal(entry.error, null);
    assert.notEqual(entry.durationMs, null);
  } finally {
    await svc.close();
  }
});

/** Answers each request with a fixed head (and "ok") on a kept-alive connection. */
function fixedHeadService(headLines: string) {
  return scriptedService(async (conn) => {
    while ((await readRequestHead(conn)) !== null) {
      await writeAll(conn, enc(`HTTP/1.1 200 OK\r\n${headLines}Content-Length: 2\r\n\r\nok`));
    }
    conn.close();
  });
}

Deno.test("engine applies response header rules and adds missing security headers", async () => {
  const svc = fixedHeadService(
    "X-Frame-Options: SAMEORIGIN\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
  );
  try {
    await withEngine(svc.port, async ({ visitor, reader }) => {
      await visitor.write(enc(get("/")));
      const res = await reader.response();
      assert.equal(res.body, "ok");
      const h = res.headers;
      assert.equal(h.get("x-frame-options"), "SAMEORIGIN", "the service's own value is kept");
      assert.equal(h.get("x-content-type-options"), "nosniff");
      assert.equal(h.get("referrer-policy"), "no-referrer");
      assert.equal(h.get("content-security-policy"), "default-src 'self'; frame-ancestors 'none'");
      assert.equal(h.get("strict-transport-security"), null, "no HSTS over http");
      assert.equal(h.get("x-env"), "test");
      assert.equal(h.get("keep-alive"), null, "hop-by-hop header dropped");
      assert.match(res.head, /Set-Cookie: a=1\r\nSet-Cookie: b=2/, "cookies stay apart");
    }, {
      rules: { securityHeaders: true, responseHeaderAdd: [["x-env", "test"]] },
    });
  } finally {
    await svc.close();
  }
});

Deno.test("engine adds HSTS among the security headers when the visitor came over https", async () => {
  const svc = fixedHeadService("");
  try {
    await withEngine(svc.port, async ({ visitor, reader }) => {
      await visitor.write(enc(get("/")));
      const res = await reader.response();
      assert.equal(res.headers.get("strict-transport-security"), "max-age=31536000");
    }, { rules: { securityHeaders: true }, visitor: { extra: { proto: "https" } } });
  } finally {
    await svc.close();
  }
});

Deno.test("engine passes 100 Continue to the visitor and then the body to the service", async () => {
  const seen: string[] = [];
  const svc = scriptedService(async (conn) => {
    const head = await readRequestHead(conn);
    seen.push(head ?? "");
    await writeAll(conn, enc("HTTP/1.1 100 Continue\r\n\r\n"));
    const body = await readN(conn, 5);
    await writeAll(conn, enc(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n${body}`));
    await readRequestHead(conn);
    conn.close();
  });
  try {
    await withEngine(svc.port, async ({ visitor, reader }) => {
      await visitor.write(
        enc(
          `PUT /up HTTP/1.1\r\nHost: ${HOST}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n`,
        ),
      );
      const interim = await within(reader.response(), 2_000, "the 100 Continue");
      assert.equal(interim.status, 100);
      await visitor.write(enc("hello"));
      const res = await reader.response();
      assert.equal(res.status, 200);
      assert.equal(res.body, "hello");
      assert.match(seen[0]!, /\r\nExpect: 100-continue\r\n/i);
    });
  } finally {
    await svc.close();
  }
});
