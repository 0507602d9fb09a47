// The local egress proxy over real sockets: SOCKS5 and HTTP proxy clients on one side, a dialer
// that connects directly (standing in for the mport server) or refuses, and local services.
import assert from "node:assert/strict";
import type { Logger } from "@logtape/logtape";
import {
  type EgressDialer,
  type EgressFailure,
  EgressRefused,
  type EgressStream,
  MAX_HTTP_HEAD_BYTES,
  type SocksServerOptions,
  startSocksServer,
} from "../../client/egress/socks_server.ts";
import { parseResponseHead, readHead, readShortBody } from "../../shared/http_head.ts";
import {
  closeQuietly,
  echo,
  randomBytes,
  readExactly,
  readToEnd,
  sha256,
  startService,
  type TcpService,
  writeAll,
} from "../support/tcp_services.ts";
import { Notifier, within } from "../support/wait.ts";
import { closedPort } from "../support/tcp_services.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Fixtures

/** A Logger that keeps rendered lines, so tests can wait for and assert them. */
class LogLines {
  readonly lines: string[] = [];
  readonly #changed = new Notifier();

  get logger(): Logger {
    const record = (level: string) => (msg: string, props?: Record<string, unknown>) => {
      this.lines.push(`${level} ${msg.replace(/\{(\w+)\}/g, (_, k) => String(props?.[k]))}`);
      this.#changed.notify();
    };
    const logger: Record<string, unknown> = {};
    for (const level of ["trace", "debug", "info", "warn", "warning", "error", "fatal"]) {
      logger[level] = record(level);
    }
    return logger as unknown as Logger;
  }

  has(pattern: RegExp): boolean {
    return this.lines.some((l) => pattern.test(l));
  }

  async waitFor(pattern: RegExp, ms = 5000, count = 1): Promise<void> {
    const enough = () => this.lines.filter((l) => pattern.test(l)).length >= count;
    await this.#changed.until(`${count} log line(s) ${pattern}`, enough, ms);
  }
}

/** Names the test dialer resolves itself (server-side resolution stands in for DNS). */
const NAMES: Record<string, string> = { "svc.test": "127.0.0.1" };

/** Bridges `conn` and `remote` both ways, with half-closes; closes both at the end. */
async function bridge(conn: Deno.Conn, remote: Deno.Conn, initial?: Uint8Array): Promise<void> {
  const pump = async (from: Deno.Conn, to: Deno.Conn, first?: Uint8Array) => {
    if (first && first.length > 0) await writeAll(to, first);
    const buf = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      await writeAll(to, buf.subarray(0, n));
    }
    await to.closeWrite();
  };
  try {
    await Promise.all([pump(conn, remote, initial), pump(remote, conn)]);
  } catch {
    // a reset or a close from the other side ends both
  } finally {
    closeQuietly(conn);
    closeQuietly(remote);
  }
}

/** The "server side" stand-in: connects to host:port itself and bridges. */
class DirectDialer implements EgressDialer {
  readonly opened: string[] = [];
  readonly bridges = new Set<Promise<void>>();
  readonly bridged = new Notifier();
  abandoned = 0;
  finished = 0;

  async open(host: string, port: number): Promise<EgressStream> {
    this.opened.push(`${host}|${port}`);
    let remote: Deno.TcpConn;
    try {
      remote = await Deno.connect({ hostname: NAMES[host] ?? host, port });
    } catch (e) {
      if (e instanceof Deno.errors.ConnectionRefused) {
        throw new EgressRefused("refused", "connection refused");
      }
      throw new EgressRefused("failed", String(e));
    }
    const addr = remote.remoteAddr;
    return {
      address: `${addr.hostname}:${addr.port}`,
      attach: (conn, initial) => {
        const task = bridge(conn, remote, initial).finally(() => {
          this.bridges.delete(task);
          this.finished++;
          this.bridged.notify();
        });
        this.bridges.add(task);
      },
      abandon: () => {
        this.abandoned++;
        remote.close();
      },
    };
  }

  async drain(): Promise<void> {
    await Promise.all([...this.bridges]);
  }
}

/** Answers every open with a stream whose `address` is given and which echoes on attach. */
class EchoDialer implements EgressDialer {
  readonly opened: string[] = [];
  readonly tasks = new Set<Promise<void>>();
  constructor(readonly address: string) {}

  open(host: string, port: number): Promise<EgressStream> {
    this.opened.push(`${host}|${port}`);
    return Promise.resolve({
      address: this.address,
      attach: (conn, initial) => {
        const task = (async () => {
          try {
            if (initial && initial.length > 0) await writeAll(conn, initial);
            await echo(conn as Deno.TcpConn);
          } catch {
            // closed under us
          } finally {
            closeQuietly(conn);
          }
        })();
        this.tasks.add(task);
        task.finally(() => this.tasks.delete(task));
      },
      abandon: () => {},
    });
  }

  async drain(): Promise<void> {
    await Promise.all([...this.tasks]);
  }
}

/** Refuses every open with `kind`. */
class RefusingDialer implements EgressDialer {
  readonly opened: string[] = [];
  constructor(readonly kind: EgressFailure, readonly message: string) {}
  open(host: string, port: number): Promise<EgressStream> {
    this.opened.push(`${host}|${port}`);
    return Promise.reject(new EgressRefused(this.kind, this.message));
  }
}

interface Proxy {
  readonly port: number;
  readonly log: LogLines;
  close(): Promise<void>;
}

async function startProxy(
  dialer: EgressDialer,
  extra: Partial<SocksServerOptions> = {},
): Promise<Proxy> {
  const log = new LogLines();
  const server = await startSocksServer({
    hostname: "127.0.0.1",
    port: 0,
    auth: null,
    dialer,
    log: log.logger,
    ...extra,
  });
  return { port: server.addr.port, log, close: () => server.close() };
}

const ALICE = { username: "alice", password: "s3cret" };

/** An 8 MiB download and a hashing upload, one request per connection. */
const DOWNLOAD = randomBytes(8 * MiB);

async function httpService(conn: Deno.TcpConn): Promise<void> {
  const { head, leftover } = await readHead(conn, { maxBytes: 64 * 1024, timeoutMs: 10_000 });
  const [method, path] = head.split(" ");
  let body: Uint8Array;
  if (path === "/download") {
    body = DOWNLOAD;
  } else if (path === "/upload") {
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? "0");
    const got = new Uint8Array(length);
    got.set(leftover.subarray(0, length));
    got.set(await readExactly(conn, length - Math.min(length, leftover.length)), leftover.length);
    body = enc.encode(sha256(got));
  } else {
    body = enc.encode(`${method} ${path}\n${head}`);
  }
  await writeAll(
    conn,
    enc.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`),
  );
  await writeAll(conn, body);
  await conn.closeWrite();
  await readToEnd(conn);
}

/** Sends 8 MiB through `conn` to an echo service while reading it back; checks both hashes. */
async function echoRoundTrip(conn: Deno.Conn): Promise<void> {
  const data = randomBytes(8 * MiB);
  const [, back] = await Promise.all([
    (async () => {
      await writeAll(conn, data);
      await conn.closeWrite();
    })(),
    readToEnd(conn),
  ]);
  assert.equal(back.end, "EOF");
  assert.equal(back.bytes, data.length);
  assert.equal(back.sha256, sha256(data));
}

// SOCKS5 client pieces

function greeting(...methods: number[]): number[] {
  return [5, methods.length, ...methods];
}
function userPass(user: string, pass: string): number[] {
  return [1, user.length, ...enc.encode(user), pass.length, ...enc.encode(pass)];
}
function portBytes(port: number): number[] {
  return [port >> 8, port & 0xff];
}
function connectIpv4(ip: string, port: number, cmd = 1): number[] {
  return [5, cmd, 0, 1, ...ip.split(".").map(Number), ...portBytes(port)];
}
function connectDomain(name: string, port: number, cmd = 1): number[] {
  return [5, cmd, 0, 3, name.length, ...enc.encode(name), ...portBytes(port)];
}
function connectIpv6(bytes: number[], port: number): number[] {
  return [5, 1, 0, 4, ...bytes, ...portBytes(port)];
}
function failureReply(code: number): number[] {
  return [5, code, 0, 1, 0, 0, 0, 0, 0, 0];
}
function successReply(ip: number[], port: number): number[] {
  return [5, 0, 0, ip.length === 4 ? 1 : 4, ...ip, ...portBytes(port)];
}

async function connect(port: number): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: "127.0.0.1", port });
}

/** Opens a SOCKS5 CONNECT through the proxy; returns the connection after a success reply. */
async function socks5Connect(
  proxyPort: number,
  request: number[],
  auth?: { username: string; password: string },
): Promise<Deno.TcpConn> {
  const conn = await connect(proxyPort);
  await writeAll(conn, new Uint8Array(auth ? greeting(2) : greeting(0)));
  assert.deepEqual([...await readExactly(conn, 2)], [5, auth ? 2 : 0]);
  if (auth) {
    await writeAll(conn, new Uint8Array(userPass(auth.username, auth.password)));
    assert.deepEqual([...await readExactly(conn, 2)], [1, 0]);
  }
  await writeAll(conn, new Uint8Array(request));
  const head = await readExactly(conn, 4);
  assert.equal(head[1], 0, `SOCKS5 reply ${head[1]}`);
  await readExactly(conn, head[3] === 1 ? 6 : 18);
  return conn;
}

/** Sends an HTTP request to the proxy; returns the response head and (short) body. */
async function httpExchange(
  proxyPort: number,
  request: string | Uint8Array,
): Promise<{ conn: Deno.TcpConn; status: number; headers: Headers; body: string; head: string }> {
  const conn = await connect(proxyPort);
  await writeAll(conn, typeof request === "string" ? enc.encode(request) : request);
  const { head, leftover } = await readHead(conn, { maxBytes: 64 * 1024, timeoutMs: 10_000 });
  const parsed = parseResponseHead(head);
  const body = parsed.status === 200 && !parsed.headers.has("content-length") ? "" : dec.decode(
    await readShortBody(conn, parsed.headers, leftover, { maxBytes: 64 * 1024, timeoutMs: 10_000 }),
  );
  return { conn, status: parsed.status, headers: parsed.headers, body, head };
}

// ---------------------------------------------------------------------------------------------
// SOCKS5

Deno.test("SOCKS5 handshakes get the exact reply bytes and then carry bytes both ways", async () => {
  const valid: {
    name: string;
    auth?: typeof ALICE;
    address?: string;
    /** Written in these pieces (several messages in one piece = a pipelining client). */
    send: number[][];
    reply: number[];
    opened: string;
  }[] = [
    {
      name: "no auth, IPv4",
      send: [greeting(0), connectIpv4("10.0.0.7", 8080)],
      reply: [5, 0, ...successReply([192, 0, 2, 1], 4242)],
      opened: "10.0.0.7|8080",
    },
    {
      name: "several methods offered, domain name passed on unresolved",
      send: [greeting(1, 2, 0), connectDomain("db.internal", 5432)],
      reply: [5, 0, ...successReply([192, 0, 2, 1], 4242)],
      opened: "db.internal|5432",
    },
    {
      name: "a 255-byte domain name (the limit)",
      send: [greeting(0), connectDomain("d".repeat(255), 80)],
      reply: [5, 0, ...successReply([192, 0, 2, 1], 4242)],
      opened: `${"d".repeat(255)}|80`,
    },
    {
      name: "IPv6 destination and bound address",
      address: "[2001:db8::5]:443",
      send: [greeting(0), connectIpv6([...new Array(15).fill(0), 1], 443)],
      reply: [5, 0, ...successReply([0x20, 1, 0xd, 0xb8, ...new Array(11).fill(0), 5], 443)],
      opened: "::1|443",
    },
    {
      name: "an address that is not ip:port is reported as 0.0.0.0:0",
      address: "somewhere",
      send: [greeting(0), connectIpv4("1.2.3.4", 1)],
      reply: [5, 0, ...successReply([0, 0, 0, 0], 0)],
      opened: "1.2.3.4|1",
    },
    {
      name: "username/password",
      auth: ALICE,
      send: [greeting(0, 2), userPass("alice", "s3cret"), connectIpv4("127.0.0.1", 9)],
      reply: [5, 2, 1, 0, ...successReply([192, 0, 2, 1], 4242)],
      opened: "127.0.0.1|9",
    },
    {
      name: "everything in one write, one byte at a time works too",
      auth: ALICE,
      send: [...greeting(2), ...userPass("alice", "s3cret"), ...connectDomain("x.test", 7)].map((
        b,
      ) => [b]),
      reply: [5, 2, 1, 0, ...successReply([192, 0, 2, 1], 4242)],
      opened: "x.test|7",
    },
  ];
  for (const c of valid) {
    const dialer = new EchoDialer(c.address ?? "192.0.2.1:4242");
    const proxy = await startProxy(dialer, { auth: c.auth ?? null });
    try {
      const conn = await connect(proxy.port);
      for (const piece of c.send) await writeAll(conn, new Uint8Array(piece));
      assert.deepEqual([...await readExactly(conn, c.reply.length)], c.reply, c.name);
      assert.deepEqual(dialer.opened, [c.opened], c.name);
      await writeAll(conn, enc.encode("ping"));
      assert.equal(dec.decode(await readExactly(conn, 4)), "ping", c.name);
      conn.close();
      await dialer.drain();
    } finally {
      await proxy.close();
    }
  }
});

Deno.test("bytes a SOCKS5 client sends right after its request reach the destination first", async () => {
  const dialer = new EchoDialer("192.0.2.1:1");
  const proxy = await startProxy(dialer);
  try {
    const conn = await connect(proxy.port);
    await writeAll(conn, new Uint8Array(greeting(0)));
    await readExactly(conn, 2);
    await writeAll(
      conn,
      new Uint8Array([...connectIpv4("1.1.1.1", 80), ...enc.encode("early")]),
    );
    await readExactly(conn, 10);
    assert.equal(dec.decode(await readExactly(conn, 5)), "early");
    conn.close();
    await dialer.drain();
  } finally {
    await proxy.close();
  }
});

Deno.test("bad SOCKS5 (or unknown) input gets the RFC's refusal bytes, a log line and a closed connection", async () => {
  const invalid: {
    name: string;
    auth?: typeof ALICE;
    send: number[];
    reply: number[];
    log: RegExp;
  }[] = [
    {
      name: "no methods",
      send: [5, 0],
      reply: [5, 0xff],
      log: /offers no authentication method/,
    },
    {
      name: "only username/password offered to a proxy without auth",
      send: greeting(2),
      reply: [5, 0xff],
      log: /info .*only authentication methods this proxy does not use/,
    },
    {
      name: "only no-auth offered to a proxy that needs credentials",
      auth: ALICE,
      send: greeting(0),
      reply: [5, 0xff],
      log: /info .*does not offer username\/password/,
    },
    {
      name: "wrong password",
      auth: ALICE,
      send: [...greeting(2), ...userPass("alice", "wrong")],
      reply: [5, 2, 1, 1],
      log: /info .*authentication failed for user "alice"/,
    },
    {
      name: "wrong user",
      auth: ALICE,
      send: [...greeting(2), ...userPass("bob", "s3cret")],
      reply: [5, 2, 1, 1],
      log: /authentication failed for user "bob"/,
    },
    {
      name: "empty credentials",
      auth: ALICE,
      send: [...greeting(2), 1, 0, 0],
      reply: [5, 2, 1, 1],
      log: /authentication failed/,
    },
    {
      name: "bad sub-negotiation version",
      auth: ALICE,
      send: [...greeting(2), 5, 0, 0],
      reply: [5, 2, 1, 1],
      log: /version 5, expected 1/,
    },
    {
      name: "request with version 4",
      send: [...greeting(0), 4, 1, 0, 1, 1, 2, 3, 4, 0, 80],
      reply: [5, 0, ...failureReply(1)],
      log: /request has version 4/,
    },
    {
      name: "BIND",
      send: [...greeting(0), ...connectIpv4("1.2.3.4", 80, 2)],
      reply: [5, 0, ...failureReply(7)],
      log: /BIND is not supported/,
    },
    {
      name: "UDP ASSOCIATE",
      send: [...greeting(0), ...connectIpv4("0.0.0.0", 0, 3)],
      reply: [5, 0, ...failureReply(7)],
      log: /UDP ASSOCIATE is not supported/,
    },
    {
      name: "unknown command",
      send: [...greeting(0), ...connectDomain("a.test", 80, 9)],
      reply: [5, 0, ...failureReply(7)],
      log: /command 9 is not supported/,
    },
    {
      name: "unknown address type",
      send: [...greeting(0), 5, 1, 0, 2],
      reply: [5, 0, ...failureReply(8)],
      log: /address type 2/,
    },
    {
      name: "empty domain name",
      send: [...greeting(0), ...connectDomain("", 80)],
      reply: [5, 0, ...failureReply(1)],
      log: /empty domain name/,
    },
    {
      name: "domain name with a space",
      send: [...greeting(0), ...connectDomain("a b", 80)],
      reply: [5, 0, ...failureReply(1)],
      log: /domain name with spaces/,
    },
    {
      name: "domain name with a control byte",
      send: [...greeting(0), 5, 1, 0, 3, 2, 0x61, 0x00, 0, 80],
      reply: [5, 0, ...failureReply(1)],
      log: /domain name with spaces, control/,
    },
    {
      name: "port 0",
      send: [...greeting(0), ...connectIpv4("1.2.3.4", 0)],
      reply: [5, 0, ...failureReply(1)],
      log: /port 0/,
    },
    {
      name: "SOCKS4 CONNECT",
      send: [4, 1, 0, 80, 127, 0, 0, 1, 0x75, 0x73, 0x65, 0x72, 0],
      reply: [],
      log: /info .*SOCKS4 is not supported/,
    },
    {
      name: "SOCKS4a CONNECT",
      send: [4, 1, 0, 80, 0, 0, 0, 1, 0, ...enc.encode("a.test"), 0],
      reply: [],
      log: /SOCKS4 is not supported/,
    },
    {
      name: "a TLS ClientHello (an https:// proxy URL)",
      send: [0x16, 3, 1, 0, 5, 1, 0, 0, 1, 3],
      reply: [],
      log: /a TLS handshake arrived: this proxy speaks plain SOCKS5 and HTTP/,
    },
    {
      name: "binary junk",
      send: [0, 1, 2, 3],
      reply: [],
      log: /neither SOCKS5 nor an HTTP proxy request \(first byte 0x00\)/,
    },
    {
      name: "greeting cut short",
      send: [5, 3, 0],
      reply: [],
      log: /closed after 3 bytes of an incomplete handshake/,
    },
    {
      name: "request cut short",
      send: [...greeting(0), 5, 1, 0, 3, 10, 0x61],
      reply: [5, 0],
      log: /closed after \d+ bytes of an incomplete handshake/,
    },
  ];
  for (const c of invalid) {
    const dialer = new EchoDialer("192.0.2.1:1");
    const proxy = await startProxy(dialer, { auth: c.auth ?? null });
    try {
      const conn = await connect(proxy.port);
      await writeAll(conn, new Uint8Array(c.send));
      await conn.closeWrite();
      const got = await within(readToEnd(conn, { keep: true }), 5000, c.name);
      conn.close();
      assert.deepEqual([...got.data!], c.reply, c.name);
      await proxy.log.waitFor(c.log);
      assert.deepEqual(dialer.opened, [], `${c.name}: nothing was dialled`);
    } finally {
      await proxy.close();
    }
  }
});

Deno.test("each way a destination fails maps to its SOCKS5 reply code", async () => {
  const table: [EgressFailure, number][] = [
    ["denied", 0x02],
    ["unreachable", 0x04],
    ["refused", 0x05],
    ["timeout", 0x06],
    ["failed", 0x01],
  ];
  for (const [kind, code] of table) {
    const dialer = new RefusingDialer(kind, `because ${kind}`);
    const proxy = await startProxy(dialer);
    try {
      const conn = await connect(proxy.port);
      await writeAll(conn, new Uint8Array([...greeting(0), ...connectDomain("x.test", 443)]));
      const got = await readToEnd(conn, { keep: true });
      conn.close();
      assert.deepEqual([...got.data!], [5, 0, ...failureReply(code)], kind);
      assert.deepEqual(dialer.opened, ["x.test|443"]);
      await proxy.log.waitFor(new RegExp(`x\\.test:443 refused \\(${kind}\\): because ${kind}`));
    } finally {
      await proxy.close();
    }
  }
});

Deno.test("a dialer that throws something other than EgressRefused is a general failure", async () => {
  const dialer: EgressDialer = { open: () => Promise.reject(new TypeError("boom")) };
  const proxy = await startProxy(dialer);
  try {
    const conn = await connect(proxy.port);
    await writeAll(conn, new Uint8Array([...greeting(0), ...connectIpv4("1.2.3.4", 80)]));
    const got = await readToEnd(conn, { keep: true });
    conn.close();
    assert.deepEqual([...got.data!], [5, 0, ...failureReply(1)]);
    await proxy.log.waitFor(/refused \(failed\): boom/);
  } finally {
    await proxy.close();
  }
});

Deno.test("SOCKS5 CONNECT carries 8 MiB both ways intact to a real echo service", async () => {
  const service = startService(echo);
  const dialer = new DirectDialer();
  const proxy = await startProxy(dialer, { auth: ALICE });
  try {
    for (
      const request of [
        connectIpv4("127.0.0.1", service.port),
        connectDomain("svc.test", service.port),
      ]
    ) {
      const conn = await socks5Connect(proxy.port, request, ALICE);
      await echoRoundTrip(conn);
      conn.close();
    }
    assert.deepEqual(dialer.opened, [`127.0.0.1|${service.port}`, `svc.test|${service.port}`]);
    await dialer.drain();
  } finally {
    await proxy.close();
    await service.close();
  }
});

Deno.test("the success reply names the address the server dialled", async () => {
  const service = startService(echo);
  const dialer = new DirectDialer();
  const proxy = await startProxy(dialer);
  try {
    const conn = await connect(proxy.port);
    await writeAll(
      conn,
      new Uint8Array([...greeting(0), ...connectDomain("svc.test", service.port)]),
    );
    assert.deepEqual(
      [...await readExactly(conn, 12)],
      [5, 0, 5, 0, 0, 1, 127, 0, 0, 1, ...portBytes(service.port)],
    );
    conn.close();
    await dialer.drain();
  } finally {
    await proxy.close();
    await service.close();
  }
});

// ---------------------------------------------------------------------------------------------
// HTTP proxy

Deno.test("HTTP CONNECT answers 200 and carries 8 MiB both ways, with early bytes first", async () => {
  const service = startService(echo);
  const dialer = new DirectDialer();
  const proxy = await startProxy(dialer);
  try {
    const r = await httpExchange(
      proxy.port,
      `CONNECT 127.0.0.1:${service.port} HTTP/1.1\r\nHost: 127.0.0.1:${service.port}\r\n\r\nearly`,
    );
    assert.equal(r.head, "HTTP/1.1 200 Connection established");
    assert.equal(dec.decode(await readExactly(r.conn, 5)), "early");
    await echoRoundTrip(r.conn);
    r.conn.close();
    await dialer.drain();
  } finally {
    await proxy.close();
    await service.close();
  }
});

Deno.test("an absolute-form request is forwarded in origin form, one per connection, 8 MiB each way", async () => {
  const service = startService(httpService);
  const dialer = new DirectDialer();
  const proxy = await startProxy(dialer, { auth: ALICE });
  const auth = `Proxy-Authorization: Basic ${btoa("alice:s3cret")}\r\n`;
  try {
    // Download.
    const down = await connect(proxy.port);
    await writeAll(
      down,
      enc.encode(
        `GET http://svc.test:${service.port}/download HTTP/1.1\r\nHost: svc.test\r\n${auth}\r\n`,
      ),
    );
    const got = await readToEnd(down, { keep: true });
    down.close();
    const text = dec.decode(got.data!.subarray(0, 200));
    const headEnd = text.indexOf("\r\n\r\n") + 4;
    assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.equal(sha256(got.data!.subarray(headEnd)), sha256(DOWNLOAD));

    // Upload, with part of the body in the same write as the head.
    const body = randomBytes(8 * MiB);
    const up = await connect(proxy.port);
    const head = enc.encode(
      `POST http://svc.test:${service.port}/upload HTTP/1.1\r\n${auth}Content-Length: ${body.length}\r\n\r\n`,
    );
    const first = new Uint8Array(head.length + 1000);
    first.set(head);
    first.set(body.subarray(0, 1000), head.length);
    const [, answer] = await Promise.all([
      (async () => {
        await writeAll(up, first);
        await writeAll(up, body.subarray(1000));
      })(),
      readToEnd(up, { keep: true }),
    ]);
    up.close();
    assert.ok(dec.decode(answer.data!).endsWith(`\r\n\r\n${sha256(body)}`));

    // What the origin saw.
    const r = await httpExchange(
      proxy.port,
      `GET http://svc.test:${service.port}/head?x=1 HTTP/1.1\r\nHost: elsewhere\r\n${auth}` +
        "Proxy-Connection: keep-alive\r\nConnection: keep-alive\r\nX-Keep: yes\r\n\r\n",
    );
    r.conn.close();
    assert.equal(
      r.body,
      `GET /head?x=1\nGET /head?x=1 HTTP/1.1\r\nHost: svc.test:${service.port}\r\nX-Keep: yes\r\nConnection: close`,
    );
    await dialer.drain();
  } finally {
    await proxy.close();
    await service.close();
  }
});

Deno.test("HTTP proxy refusals: 400, 407 with a challenge, 431 past the head limit", async () => {
  const dialer = new EchoDialer("192.0.2.1:1");
  const open = await startProxy(dialer);
  const guarded = await startProxy(dialer, { auth: ALICE });
  const cases: {
    name: string;
    proxy: Proxy;
    request: string;
    status: number;
    body: RegExp;
    log: RegExp;
  }[] = [
    {
      name: "https in absolute form",
      proxy: open,
      request: "GET https://a.test/ HTTP/1.1\r\n\r\n",
      status: 400,
      body: /https:\/\/ URLs go through CONNECT/,
      log: /refused with 400/,
    },
    {
      name: "origin form",
      proxy: open,
      request: "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
      status: 400,
      body: /this is a proxy/,
      log: /refused with 400/,
    },
    {
      name: "CONNECT to a 256-byte host name",
      proxy: open,
      request: `CONNECT ${"h".repeat(256)}:443 HTTP/1.1\r\n\r\n`,
      status: 400,
      body: /longer than 255 bytes/,
      log: /longer than 255 bytes/,
    },
    {
      name: "malformed head",
      proxy: open,
      request: "GET http://a.test/ HTTP/1.1\r\nno colon here\r\n\r\n",
      status: 400,
      body: /not an HTTP proxy request/,
      log: /not an HTTP proxy request/,
    },
    {
      name: "a head one byte past the limit",
      proxy: open,
      request: headOfSize(MAX_HTTP_HEAD_BYTES + 1),
      status: 431,
      body: new RegExp(`exceeds ${MAX_HTTP_HEAD_BYTES} bytes`),
      log: /head too large/,
    },
    {
      name: "no credentials",
      proxy: guarded,
      request: "CONNECT a.test:443 HTTP/1.1\r\n\r\n",
      status: 407,
      body: /needs credentials/,
      log: /info .*refused with 407/,
    },
    {
      name: "wrong credentials on an absolute-form request",
      proxy: guarded,
      request: `GET http://a.test/ HTTP/1.1\r\nProxy-Authorization: Basic ${
        btoa("alice:x")
      }\r\n\r\n`,
      status: 407,
      body: /wrong proxy credentials/,
      log: /refused with 407/,
    },
  ];
  try {
    for (const c of cases) {
      const r = await httpExchange(c.proxy.port, c.request);
      const rest = await readToEnd(r.conn);
      r.conn.close();
      assert.equal(r.status, c.status, c.name);
      assert.match(r.body, c.body, c.name);
      assert.equal(r.headers.get("connection"), "close", c.name);
      assert.notEqual(rest.end, "limit");
      if (c.status === 407) {
        assert.equal(r.headers.get("proxy-authenticate"), 'Basic realm="mport"', c.name);
      }
      await c.proxy.log.waitFor(c.log);
    }
    assert.deepEqual(dialer.opened, []);
  } finally {
    await open.close();
    await guarded.close();
  }
});

/** A CONNECT head of exactly `size` bytes, blank line included. */
function headOfSize(size: number): string {
  const start = "CONNECT a.test:443 HTTP/1.1\r\nX-Pad: ";
  return start + "p".repeat(size - start.length - 4) + "\r\n\r\n";
}

Deno.test("a head of exactly the limit is read, and a 255-byte host name is passed on", async () => {
  const dialer = new RefusingDialer("unreachable", "no route");
  const proxy = await startProxy(dialer);
  try {
    const r = await httpExchange(proxy.port, headOfSize(MAX_HTTP_HEAD_BYTES));
    r.conn.close();
    assert.equal(r.status, 502);
    const name = "h".repeat(255);
    const r2 = await httpExchange(proxy.port, `CONNECT ${name}:443 HTTP/1.1\r\n\r\n`);
    r2.conn.close();
    assert.equal(r2.status, 502);
    assert.deepEqual(dialer.opened, ["a.test|443", `${name}|443`]);
  } finally {
    await proxy.close();
  }
});

Deno.test("each way a destination fails maps to its HTTP status with host:port and the reason", async () => {
  const table: [EgressFailure, number][] = [
    ["denied", 403],
    ["unreachable", 502],
    ["refused", 502],
    ["timeout", 504],
    ["failed", 502],
  ];
  for (const [kind, status] of table) {
    const dialer = new RefusingDialer(kind, `server said ${kind}`);
    const proxy = await startProxy(dialer);
    try {
      for (
        const request of [
          "CONNECT db.test:5432 HTTP/1.1\r\n\r\n",
          "GET http://db.test:5432/ HTTP/1.1\r\n\r\n",
        ]
      ) {
        const r = await httpExchange(proxy.port, request);
        r.conn.close();
        assert.equal(r.status, status, kind);
        assert.equal(r.body, `mport: cannot open db.test:5432: server said ${kind}\n`);
      }
    } finally {
      await proxy.close();
    }
  }
});

Deno.test("a destination refusing the connection reaches the client as 502 and reply 0x05", async () => {
  const port = closedPort();
  const dialer = new DirectDialer();
  const proxy = await startProxy(dialer);
  try {
    const r = await httpExchange(proxy.port, `CONNECT 127.0.0.1:${port} HTTP/1.1\r\n\r\n`);
    r.conn.close();
    assert.equal(r.status, 502);
    assert.match(r.body, /connection refused/);
    const conn = await connect(proxy.port);
    await writeAll(conn, new Uint8Array([...greeting(0), ...connectIpv4("127.0.0.1", port)]));
    const got = await readToEnd(conn, { keep: true });
    conn.close();
    assert.deepEqual([...got.data!], [5, 0, ...failureReply(5)]);
  } finally {
    await proxy.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Limits

Deno.test("a handshake not complete within the timeout is closed, for each protocol", async () => {
  const dialer = new EchoDialer("192.0.2.1:1");
  const proxy = await startProxy(dialer, { handshakeTimeoutMs: 150 });
  try {
    for (
      const partial of [[], [5, 1], [...greeting(0), 5, 1, 0], [
        ...enc.encode("CONNECT a.test:1 HTTP/1.1\r\n"),
      ]]
    ) {
      const conn = await connect(proxy.port);
      await writeAll(conn, new Uint8Array(partial));
      const started = performance.now();
      const got = await within(readToEnd(conn, { keep: true }), 5000, "closed by the deadline");
      conn.close();
      assert.ok(performance.now() - started >= 100, "not before the deadline");
      assert.deepEqual([...got.data!], partial[0] === 5 && partial.length > 2 ? [5, 0] : []);
    }
    await proxy.log.waitFor(/did not complete its handshake within 150 ms/, 5000, 4);
    assert.deepEqual(dialer.opened, []);
  } finally {
    await proxy.close();
  }
});

Deno.test("connections past the maximum are closed at once, and admitted again once one ends", async () => {
  const service = startService(echo);
  const dialer = new DirectDialer();
  const proxy = await startProxy(dialer, { maxConnections: 2 });
  try {
    // Two carried connections fill the proxy.
    const a = await socks5Connect(proxy.port, connectIpv4("127.0.0.1", service.port));
    const b = await socks5Connect(proxy.port, connectIpv4("127.0.0.1", service.port));
    const extra = await connect(proxy.port);
    await writeAll(extra, new Uint8Array(greeting(0)));
    const refused = await within(readToEnd(extra, { keep: true }), 5000, "the third is closed");
    extra.close();
    assert.equal(refused.bytes, 0);
    await proxy.log.waitFor(/warn .*refused .*: 2 connections are open/);
    // One ends: the bridge closes its side, which frees a place.
    a.close();
    await dialer.bridged.until("a's bridge ends", () => dialer.finished >= 1, 5000);
    const c = await socks5Connect(proxy.port, connectIpv4("127.0.0.1", service.port));
    await writeAll(c, enc.encode("hi"));
    assert.equal(dec.decode(await readExactly(c, 2)), "hi");
    c.close();
    b.close();
    await dialer.drain();
  } finally {
    await proxy.close();
    await service.close();
  }
});

Deno.test("closing the proxy closes carried connections and ends their streams", async () => {
  const service = startService(echo);
  const dialer = new DirectDialer();
  const proxy = await startProxy(dialer);
  const conn = await socks5Connect(proxy.port, connectIpv4("127.0.0.1", service.port));
  const idle = await connect(proxy.port);
  try {
    await proxy.close();
    await dialer.drain();
    const end = await readToEnd(conn);
    const idleEnd = await readToEnd(idle);
    assert.equal(end.bytes, 0);
    assert.equal(idleEnd.bytes, 0);
  } finally {
    conn.close();
    idle.close();
    await service.close();
  }
});

Deno.test("a proxy closed while a destination opens abandons the stream once it is open", async () => {
  const release = Promise.withResolvers<void>();
  const called = Promise.withResolvers<void>();
  const inner = new DirectDialer();
  const service = startService(echo);
  const dialer: EgressDialer = {
    async open(host, port) {
      called.resolve();
      await release.promise;
      return await inner.open(host, port);
    },
  };
  const proxy = await startProxy(dialer);
  const conn = await connect(proxy.port);
  try {
    await writeAll(
      conn,
      new Uint8Array([...greeting(0), ...connectIpv4("127.0.0.1", service.port)]),
    );
    await readExactly(conn, 2);
    await called.promise;
    const closing = proxy.close();
    release.resolve();
    await closing;
    assert.equal(inner.abandoned, 1);
    assert.equal(inner.finished, 0);
    assert.equal((await readToEnd(conn)).bytes, 0);
  } finally {
    release.resolve();
    conn.close();
    await proxy.close();
    await service.close();
  }
});

Deno.test("bad options are refused with a RangeError, and a taken port names the address", async () => {
  const dialer = new EchoDialer("192.0.2.1:1");
  const log = new LogLines().logger;
  const base = { hostname: "127.0.0.1", port: 0, auth: null, dialer, log };
  await assert.rejects(startSocksServer({ ...base, maxConnections: 0 }), RangeError);
  await assert.rejects(startSocksServer({ ...base, handshakeTimeoutMs: -1 }), RangeError);
  await assert.rejects(
    startSocksServer({ ...base, auth: { username: "u".repeat(256), password: "p" } }),
    /--username must be 1 to 255 bytes/,
  );
  await assert.rejects(
    startSocksServer({ ...base, auth: { username: "u", password: "" } }),
    /--password must be 1 to 255 bytes/,
  );
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    await assert.rejects(
      startSocksServer({ ...base, port: taken.addr.port }),
      /Cannot listen on 127\.0\.0\.1:\d+ for the local proxy: address already in use/,
    );
  } finally {
    taken.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Real clients

const hasCurl = await (async () => {
  try {
    const r = await new Deno.Command("sh", {
      args: ["-c", "command -v curl"],
      stdout: "null",
      stderr: "null",
    }).output();
    return r.success;
  } catch {
    return false;
  }
})();
const ignoreCurl = !hasCurl && Deno.env.get("CI") !== "true";

async function curl(args: string[]): Promise<string> {
  const r = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "20", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(r.success, `curl failed: ${dec.decode(r.stderr)}`);
  return dec.decode(r.stdout);
}

async function withCurlSetup(
  fn: (service: TcpService, proxy: Proxy, dialer: DirectDialer) => Promise<void>,
) {
  const service = startService(httpService);
  const dialer = new DirectDialer();
  const proxy = await startProxy(dialer, { auth: ALICE });
  try {
    await fn(service, proxy, dialer);
    await dialer.drain();
  } finally {
    await proxy.close();
    await service.close();
  }
}

Deno.test({
  name: "curl --socks5-hostname fetches a page through the proxy, the name resolved server-side",
  ignore: ignoreCurl,
  fn: () =>
    withCurlSetup(async (service, proxy, dialer) => {
      const body = await curl([
        "--socks5-hostname",
        `127.0.0.1:${proxy.port}`,
        "--proxy-user",
        "alice:s3cret",
        `http://svc.test:${service.port}/hello`,
      ]);
      assert.match(body, /^GET \/hello\n/);
      assert.deepEqual(dialer.opened, [`svc.test|${service.port}`]);
    }),
});

Deno.test({
  name: "curl -x http:// fetches a page through the proxy (absolute form and CONNECT)",
  ignore: ignoreCurl,
  fn: () =>
    withCurlSetup(async (service, proxy, dialer) => {
      const proxyUrl = `http://alice:s3cret@127.0.0.1:${proxy.port}`;
      const body = await curl(["-x", proxyUrl, `http://svc.test:${service.port}/plain`]);
      assert.match(body, /^GET \/plain\n/);
      assert.doesNotMatch(body, /Proxy-Authorization/i);
      const tunnelled = await curl([
        "-x",
        proxyUrl,
        "--proxytunnel",
        `http://svc.test:${service.port}/tunnel`,
      ]);
      assert.match(tunnelled, /^GET \/tunnel\n/);
      assert.equal(dialer.opened.length, 2);
    }),
});
