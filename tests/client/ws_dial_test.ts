// dialWebSocket against real servers: plain and TLS echo servers, tinyproxy, and every failure kind.
import assert from "node:assert/strict";
import {
  DialError,
  type DialError as DialErrorType,
  type DialOptions,
  dialWebSocket,
  MAX_PROXY_RESPONSE_BYTES,
} from "../../client/ws_dial.ts";
import { parseProxyUrl, type ProxySpec } from "../../client/config.ts";
import type { WsConn } from "../../shared/ws_conn.ts";
import { acceptKey } from "../../shared/ws_handshake.ts";
import { makeCert, startNginx, waitForPort } from "../e2e/services.ts";
import { freePort } from "../support/net.ts";

const TOKEN = "tok_9f8e7d6c5b4a39281706f5e4d3c2b1a0";
const AUTH = { authorization: `Bearer ${TOKEN}` };
const TIMEOUT_MS = 5_000;

// ---------------------------------------------------------------------------------------------
// Fixtures

/** A private CA and a leaf for localhost, 127.0.0.1 and ::1 signed by it (PEM texts). */
interface TestPki {
  caPem: string;
  certPem: string;
  keyPem: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", {
    args,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!out.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

let pkiCache: Promise<TestPki> | null = null;

/** Made once per test run with openssl in a temporary directory (removed at once). */
function testPki(): Promise<TestPki> {
  pkiCache ??= (async () => {
    const dir = await Deno.makeTempDir({ prefix: "mport-ws-dial-pki-" });
    try {
      await Deno.writeTextFile(
        `${dir}/ca.cnf`,
        [
          "[req]",
          "distinguished_name = dn",
          "x509_extensions = ext",
          "prompt = no",
          "[dn]",
          "CN = mport ws_dial test CA",
          "[ext]",
          "basicConstraints = critical,CA:TRUE",
          "keyUsage = critical,keyCertSign,cRLSign",
          "subjectKeyIdentifier = hash",
          "",
        ].join("\n"),
      );
      await Deno.writeTextFile(
        `${dir}/leaf.ext`,
        [
          "basicConstraints = critical,CA:FALSE",
          "subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1",
          "keyUsage = critical,digitalSignature,keyEncipherment",
          "extendedKeyUsage = serverAuth",
          "",
        ].join("\n"),
      );
      const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
      await openssl(
        [
          "req",
          "-x509",
          ...ec,
          "-days",
          "2",
          "-config",
          "ca.cnf",
          "-keyout",
          "ca.key",
          "-out",
          "ca.pem",
        ],
        dir,
      );
      await openssl(
        ["req", "-new", ...ec, "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "leaf.csr"],
        dir,
      );
      await openssl(
        [
          "x509",
          "-req",
          "-in",
          "leaf.csr",
          "-CA",
          "ca.pem",
          "-CAkey",
          "ca.key",
          "-CAcreateserial",
          "-days",
          "2",
          "-extfile",
          "leaf.ext",
          "-out",
          "cert.pem",
        ],
        dir,
      );
      return {
        caPem: await Deno.readTextFile(`${dir}/ca.pem`),
        certPem: await Deno.readTextFile(`${dir}/cert.pem`),
        keyPem: await Deno.readTextFile(`${dir}/key.pem`),
      };
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  })();
  return pkiCache;
}

/** What the test server saw of one request. */
interface SeenRequest {
  url: string;
  headers: Headers;
}

interface WsServer {
  port: number;
  /** Requests seen so far, in order. */
  seen: SeenRequest[];
  close(): Promise<void>;
}

/**
 * A `Deno.serve` server (TLS when `pki` is given): `/echo…` upgrades (choosing the first offered
 * subprotocol) and echoes every message; `/status/N` answers status N with a body that quotes the
 * request's Authorization header (so the tests can check it is masked); `/redirect` answers 302.
 */
function startWsServer(opts: { pki?: TestPki; hostname?: string } = {}): Promise<WsServer> {
  const seen: SeenRequest[] = [];
  const sockets = new Set<WebSocket>();
  const listening = Promise.withResolvers<number>();
  const handler = (req: Request): Response => {
    const url = new URL(req.url);
    // Copied: the request's own headers cannot be read once it is upgraded.
    seen.push({ url: url.pathname + url.search, headers: new Headers(req.headers) });
    if (url.pathname.startsWith("/echo")) {
      const offered = (req.headers.get("sec-websocket-protocol") ?? "").split(",")[0]?.trim();
      const { socket, response } = Deno.upgradeWebSocket(req, offered ? { protocol: offered } : {});
      socket.binaryType = "arraybuffer";
      sockets.add(socket);
      socket.onmessage = (e) => socket.send(e.data);
      socket.onclose = () => sockets.delete(socket);
      socket.onerror = () => {};
      return response;
    }
    const status = /^\/status\/(\d{3})$/.exec(url.pathname)?.[1];
    if (status) {
      const auth = req.headers.get("authorization") ?? "none";
      return new Response(`\x1b[31mdenied\x07 for ${auth}\r\nsecond line\n`, {
        status: Number(status),
      });
    }
    if (url.pathname === "/redirect") {
      return new Response(null, {
        status: 302,
        headers: { location: "wss://elsewhere.example/_mport" },
      });
    }
    return new Response("not found\n", { status: 404 });
  };
  const server = Deno.serve({
    hostname: opts.hostname ?? "127.0.0.1",
    port: 0,
    onListen: ({ port }) => listening.resolve(port),
    ...(opts.pki ? { cert: opts.pki.certPem, key: opts.pki.keyPem } : {}),
  }, handler);
  return listening.promise.then((port) => ({
    port,
    seen,
    async close() {
      for (const s of sockets) s.close();
      await server.shutdown();
    },
  }));
}

/** What a scripted TCP server does with each connection. */
interface Script {
  /** Written as soon as the connection is accepted (a server that speaks first). */
  greeting?: string;
  /** Whether to read a request head at all (default true). */
  read?: boolean;
  /** Bytes to answer the request head with; nothing when absent. */
  reply?: (head: string) => Promise<string | Uint8Array> | string | Uint8Array;
  /** Close the connection after answering (default: hold it open until `close()`). */
  hangUp?: boolean;
}

interface Scripted {
  port: number;
  /** Request heads received, in order. */
  heads: string[];
  close(): Promise<void>;
}

/**
 * A TCP server on 127.0.0.1 that plays `script` on every connection: a scripted proxy, a server
 * that never answers, speaks first, hangs up, or answers with hand-made bytes.
 */
function startScripted(script: Script): Scripted {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const heads: string[] = [];
  const open = new Set<Deno.Conn>();
  const write = async (conn: Deno.Conn, data: string | Uint8Array) => {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    for (let off = 0; off < bytes.byteLength;) off += await conn.write(bytes.subarray(off));
  };
  const serveOne = async (conn: Deno.Conn) => {
    try {
      if (script.greeting !== undefined) await write(conn, script.greeting);
      if (script.read === false) return;
      const buf = new Uint8Array(4096);
      let text = "";
      for (let i = 0; i < 64 && !text.includes("\r\n\r\n"); i++) {
        const n = await conn.read(buf);
        if (n === null) return;
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
      heads.push(text);
      if (script.reply) await write(conn, await script.reply(text));
      if (script.hangUp && open.delete(conn)) conn.close();
    } catch {
      // the client went away, or close() closed the connection
    }
  };
  const pending: Promise<void>[] = [];
  const loop = (async () => {
    try {
      for await (const conn of listener) {
        open.add(conn);
        pending.push(serveOne(conn));
      }
    } catch {
      // closed
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    heads,
    async close() {
      listener.close();
      await loop;
      for (const c of open) c.close();
      open.clear();
      await Promise.all(pending);
    },
  };
}

/** Runs `fn` with a scripted HTTP proxy that answers every CONNECT with `answer` (or never, when null). */
async function withFakeProxy(
  answer: string | null,
  fn: (proxy: Scripted, spec: ProxySpec) => Promise<void>,
): Promise<void> {
  const proxy = startScripted(answer === null ? {} : { reply: () => answer });
  try {
    await fn(proxy, parseProxyUrl(`http://127.0.0.1:${proxy.port}`));
  } finally {
    await proxy.close();
  }
}

/** A real tinyproxy on a free port, optionally requiring `BasicAuth user password`. */
async function startTinyproxy(auth?: { user: string; password: string }): Promise<{
  url: string;
  port: number;
  log(): string;
  close(): Promise<void>;
}> {
  const dir = await Deno.makeTempDir({ prefix: "mport-ws-dial-tinyproxy-" });
  const port = freePort();
  const logFile = `${dir}/tinyproxy.log`;
  await Deno.writeTextFile(
    `${dir}/tinyproxy.conf`,
    [
      ...(Deno.uid() === 0 ? ["User root", "Group root"] : []),
      `Port ${port}`,
      "Listen 127.0.0.1",
      "Timeout 60",
      "Allow 127.0.0.1",
      `LogFile "${logFile}"`,
      "LogLevel Connect",
      `PidFile "${dir}/tinyproxy.pid"`,
      ...(auth ? [`BasicAuth ${auth.user} ${auth.password}`] : []),
      "",
    ].join("\n"),
  );
  const child = new Deno.Command("tinyproxy", {
    args: ["-d", "-c", `${dir}/tinyproxy.conf`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  const close = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    await child.status;
    await Deno.remove(dir, { recursive: true });
  };
  try {
    await waitForPort(port, 10_000, child.status);
  } catch (e) {
    await close();
    throw e;
  }
  const read = () => {
    try {
      return Deno.readTextFileSync(logFile);
    } catch {
      return "";
    }
  };
  return { url: `http://127.0.0.1:${port}`, port, log: read, close };
}

/** A TCP port on 127.0.0.1 with nothing listening (bound, then released). */
function closedPort(): number {
  return freePort();
}

// ---------------------------------------------------------------------------------------------
// TCP_NODELAY, observed through getsockopt (Linux only)

/** getsockopt(TCP_NODELAY) of this process's established sockets whose remote port is `port`. */
function noDelayOfSocketsTo(port: number): number[] {
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = Deno.readTextFileSync(table);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      const remote = f[2];
      // st 01 = ESTABLISHED; field 9 is the inode.
      if (!remote || f[3] !== "01") continue;
      if (parseInt(remote.split(":")[1] ?? "", 16) === port) inodes.add(f[9]!);
    }
  }
  const fds: number[] = [];
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    let link = "";
    try {
      link = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
    } catch {
      continue;
    }
    const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1];
    if (inode && inodes.has(inode)) fds.push(Number(entry.name));
  }
  const libc = Deno.dlopen("libc.so.6", {
    getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  });
  try {
    return fds.map((fd) => {
      const value = new Int32Array(1);
      const len = new Uint32Array([4]);
      const IPPROTO_TCP = 6;
      const TCP_NODELAY = 1;
      const rc = libc.symbols.getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, value, len);
      assert.equal(rc, 0, `getsockopt on fd ${fd} failed`);
      return value[0]!;
    });
  } finally {
    libc.close();
  }
}

const onLinux = Deno.build.os === "linux";

// ---------------------------------------------------------------------------------------------
// Helpers

function dialOptions(url: string, extra: Partial<DialOptions> = {}): DialOptions {
  return {
    url: new URL(url),
    headers: AUTH,
    caCert: null,
    proxy: null,
    timeoutMs: TIMEOUT_MS,
    maxMessageBytes: 1 << 20,
    ...extra,
  };
}

/** Dials and expects a DialError; checks that the token never leaks into it. */
async function dialFails(opts: DialOptions): Promise<DialErrorType> {
  let result: Awaited<ReturnType<typeof dialWebSocket>> | undefined;
  try {
    result = await dialWebSocket(opts);
  } catch (e) {
    assert.ok(e instanceof DialError, `expected a DialError, got ${e}`);
    assert.ok(!e.message.includes(TOKEN), `token in message: ${e.message}`);
    assert.ok(!(e.body ?? "").includes(TOKEN), `token in body: ${e.body}`);
    return e;
  }
  await closeWs(result.ws);
  assert.fail("the dial succeeded");
}

/** Closes a dialled WebSocket with a close handshake. */
async function closeWs(ws: WsConn): Promise<void> {
  await ws.close();
  assert.equal((await ws.closed).clean, true);
}

/** Sends a text and a binary message through `ws` and checks the echo. */
async function exchange(ws: WsConn): Promise<void> {
  // Larger than one TCP read and than a 16-bit frame length.
  const binary = new Uint8Array(70_000);
  crypto.getRandomValues(binary.subarray(0, 65_536));
  crypto.getRandomValues(binary.subarray(65_536));
  ws.sendText("hello ✓");
  ws.sendBinary(binary);
  const text = await ws.read();
  assert.ok(text?.text);
  assert.equal(new TextDecoder().decode(text.data), "hello ✓");
  const echoed = await ws.read();
  assert.equal(echoed?.text, false);
  assert.deepEqual(echoed.data, binary);
}

// ---------------------------------------------------------------------------------------------
// Successful dials

Deno.test("dials ws:// with headers, subprotocol, path and query, and exchanges messages", async () => {
  const server = await startWsServer();
  try {
    const { ws, protocol, headers } = await dialWebSocket(
      dialOptions(`ws://127.0.0.1:${server.port}/echo/control?x=1&y=%20`, {
        protocols: ["mport.v1", "mport.v0"],
      }),
    );
    try {
      assert.equal(protocol, "mport.v1");
      assert.equal(headers.get("upgrade")?.toLowerCase(), "websocket");
      const req = server.seen.at(-1)!;
      assert.equal(req.url, "/echo/control?x=1&y=%20");
      assert.equal(req.headers.get("host"), `127.0.0.1:${server.port}`);
      assert.equal(req.headers.get("authorization"), `Bearer ${TOKEN}`);
      await exchange(ws);
      if (onLinux) assert.deepEqual(noDelayOfSocketsTo(server.port), [1]);
    } finally {
      await closeWs(ws);
    }
  } finally {
    await server.close();
  }
});

Deno.test("dials wss:// trusting a private CA, with TCP_NODELAY on the TLS socket", async () => {
  const pki = await testPki();
  const server = await startWsServer({ pki });
  try {
    const { ws, protocol } = await dialWebSocket(
      dialOptions(`wss://localhost:${server.port}/echo`, { caCert: pki.caPem }),
    );
    try {
      assert.equal(protocol, null);
      assert.equal(server.seen.at(-1)!.headers.get("host"), `localhost:${server.port}`);
      await exchange(ws);
      if (onLinux) assert.deepEqual(noDelayOfSocketsTo(server.port), [1]);
    } finally {
      await closeWs(ws);
    }
  } finally {
    await server.close();
  }
});

Deno.test("dials an IPv6 literal, ws:// and wss://, with a bracketed Host header", async () => {
  const pki = await testPki();
  for (const secure of [false, true]) {
    const server = await startWsServer({ hostname: "::1", ...(secure ? { pki } : {}) });
    try {
      const scheme = secure ? "wss" : "ws";
      const { ws } = await dialWebSocket(
        dialOptions(`${scheme}://[::1]:${server.port}/echo`, { caCert: pki.caPem }),
      );
      try {
        assert.equal(server.seen.at(-1)!.headers.get("host"), `[::1]:${server.port}`);
        await exchange(ws);
      } finally {
        await closeWs(ws);
      }
    } finally {
      await server.close();
    }
  }
});

Deno.test("default ports: ws:// goes to 80 and wss:// to 443, and Host carries no port", async () => {
  // A scripted proxy shows where the dial was headed without binding 80 or 443.
  await withFakeProxy(
    "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
    async (proxy, spec) => {
      for (const url of ["ws://example.test/a", "wss://example.test/a", "ws://[2001:db8::1]/a"]) {
        await dialFails(dialOptions(url, { proxy: spec }));
      }
      assert.deepEqual(proxy.heads.map((h) => h.split("\r\n")[0]), [
        "CONNECT example.test:80 HTTP/1.1",
        "CONNECT example.test:443 HTTP/1.1",
        "CONNECT [2001:db8::1]:80 HTTP/1.1",
      ]);
    },
  );
});

Deno.test("ws:// and wss:// through tinyproxy use CONNECT, with TCP_NODELAY on the proxy socket", async () => {
  const pki = await testPki();
  const plain = await startWsServer();
  const secure = await startWsServer({ pki });
  const tinyproxy = await startTinyproxy();
  try {
    const proxy = parseProxyUrl(tinyproxy.url);
    for (
      const [url, port] of [
        [`ws://127.0.0.1:${plain.port}/echo`, plain.port],
        [`wss://localhost:${secure.port}/echo`, secure.port],
      ] as const
    ) {
      const { ws } = await dialWebSocket(dialOptions(url, { proxy, caCert: pki.caPem }));
      try {
        await exchange(ws);
        if (onLinux) assert.deepEqual(noDelayOfSocketsTo(tinyproxy.port), [1]);
      } finally {
        await closeWs(ws);
      }
      assert.match(
        tinyproxy.log(),
        new RegExp(`CONNECT (127\\.0\\.0\\.1|localhost):${port} HTTP/1\\.1`),
      );
    }
    assert.equal(plain.seen.at(-1)!.headers.get("host"), `127.0.0.1:${plain.port}`);
    assert.equal(secure.seen.at(-1)!.headers.get("host"), `localhost:${secure.port}`);
  } finally {
    await tinyproxy.close();
    await secure.close();
    await plain.close();
  }
});

Deno.test("tinyproxy with BasicAuth: right credentials pass, wrong or missing ones are refused", async () => {
  const server = await startWsServer();
  const tinyproxy = await startTinyproxy({ user: "alice", password: "s3cret-pass" });
  const url = `ws://127.0.0.1:${server.port}/echo`;
  try {
    const good = parseProxyUrl(`http://alice:s3cret-pass@127.0.0.1:${tinyproxy.port}`);
    const { ws } = await dialWebSocket(dialOptions(url, { proxy: good }));
    await exchange(ws);
    await closeWs(ws);

    const bad = parseProxyUrl(`http://alice:wrong-pass@127.0.0.1:${tinyproxy.port}`);
    const e = await dialFails(dialOptions(url, { proxy: bad }));
    assert.equal(e.kind, "proxy");
    // tinyproxy 1.11 answers wrong credentials with 401 (and missing ones with 407).
    assert.equal(e.status, 401);
    assert.equal(e.permanent, true);
    assert.equal(
      e.message,
      `proxy http://127.0.0.1:${tinyproxy.port} refused CONNECT to 127.0.0.1:${server.port} with ` +
        `"HTTP/1.0 401 Unauthorized": check the proxy user name and password`,
    );
    assert.ok(!e.message.includes("wrong-pass"));

    const none = parseProxyUrl(`http://127.0.0.1:${tinyproxy.port}`);
    const e2 = await dialFails(dialOptions(url, { proxy: none }));
    assert.equal(e2.status, 407);
    assert.equal(e2.permanent, true);
    assert.equal(
      e2.message,
      `proxy http://127.0.0.1:${tinyproxy.port} refused CONNECT to 127.0.0.1:${server.port} with ` +
        `"HTTP/1.0 407 Proxy Authentication Required": it wants credentials: put them in the ` +
        `proxy URL, http://USER:PASS@HOST:PORT`,
    );
  } finally {
    await tinyproxy.close();
    await server.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Failures

Deno.test("connection refused names host:port", async () => {
  const port = closedPort();
  const e = await dialFails(dialOptions(`ws://127.0.0.1:${port}/x`));
  assert.equal(e.kind, "refused");
  assert.equal(e.permanent, false);
  assert.equal(
    e.message,
    `connection refused by 127.0.0.1:${port}: is the mport server running and listening there?`,
  );
});

Deno.test("a name that does not resolve is a dns error", async () => {
  const e = await dialFails(dialOptions("wss://vps.mport-test.invalid/_mport/v1/control"));
  assert.equal(e.kind, "dns");
  assert.equal(e.message, "cannot resolve vps.mport-test.invalid: check the host name in --server");
});

Deno.test("a server that accepts and never answers times out, in the upgrade and in TLS", async () => {
  const silent = startScripted({ read: false });
  try {
    const e = await dialFails(dialOptions(`ws://127.0.0.1:${silent.port}/x`, { timeoutMs: 300 }));
    assert.equal(e.kind, "timeout");
    assert.equal(
      e.message,
      `timed out after 0.3 s waiting for 127.0.0.1:${silent.port} to answer the WebSocket ` +
        `upgrade: is it an mport server (a TLS port needs wss://)?`,
    );
    const t = await dialFails(dialOptions(`wss://127.0.0.1:${silent.port}/x`, { timeoutMs: 300 }));
    assert.equal(t.kind, "timeout");
    assert.equal(
      t.message,
      `timed out after 0.3 s in the TLS handshake with 127.0.0.1:${silent.port}: ` +
        `is it a plain ws:// server?`,
    );
  } finally {
    await silent.close();
  }
});

Deno.test("wss:// to a plain server is a tls error that suggests ws://", async () => {
  const server = await startWsServer();
  try {
    const e = await dialFails(dialOptions(`wss://127.0.0.1:${server.port}/echo`));
    assert.equal(e.kind, "tls");
    assert.equal(
      e.message,
      `TLS handshake with 127.0.0.1:${server.port} failed: the server does not speak TLS; ` +
        `is it a plain ws:// server (then use ws://)?`,
    );
  } finally {
    await server.close();
  }
});

Deno.test("wss:// without the private CA says to pass --ca", async () => {
  const pki = await testPki();
  const server = await startWsServer({ pki });
  try {
    const e = await dialFails(dialOptions(`wss://localhost:${server.port}/echo`));
    assert.equal(e.kind, "tls");
    assert.equal(
      e.message,
      `TLS handshake with localhost:${server.port} failed: its certificate is not trusted ` +
        `(UnknownIssuer); if the server uses a private CA or a self-signed certificate, ` +
        `pass --ca FILE`,
    );
    // A --ca that did not sign the server's certificate: a self-signed leaf made for nginx tests.
    const dir = await Deno.makeTempDir({ prefix: "mport-ws-dial-otherca-" });
    const other = await makeCert(dir).finally(() => Deno.remove(dir, { recursive: true }));
    const wrong = await dialFails(
      dialOptions(`wss://localhost:${server.port}/echo`, { caCert: other.certPem }),
    );
    assert.equal(wrong.kind, "tls");
    assert.equal(
      wrong.message,
      `TLS handshake with localhost:${server.port} failed: its certificate is not signed by the ` +
        `--ca certificate or a trusted root (UnknownIssuer): check --ca`,
    );
    const bad = await dialFails(
      dialOptions(`wss://localhost:${server.port}/echo`, { caCert: "not a certificate" }),
    );
    assert.equal(bad.kind, "tls");
    assert.equal(bad.permanent, true);
    assert.equal(
      bad.message,
      "the --ca file holds no PEM certificate (-----BEGIN CERTIFICATE-----): " +
        "pass the CA certificate in PEM form",
    );
  } finally {
    await server.close();
  }
});

Deno.test("ws:// to a TLS server says to use wss://", async () => {
  const pki = await testPki();
  const server = await startWsServer({ pki });
  try {
    const e = await dialFails(dialOptions(`ws://127.0.0.1:${server.port}/echo`));
    assert.equal(e.kind, "protocol");
    assert.equal(
      e.message,
      `127.0.0.1:${server.port} answered in TLS: use wss:// instead of ws://`,
    );
  } finally {
    await server.close();
  }
});

Deno.test('ws:// to nginx\'s TLS port: its 400 "plain HTTP request" page turns into use wss://', async () => {
  const dir = await Deno.makeTempDir({ prefix: "mport-ws-dial-nginx-" });
  try {
    const cert = await makeCert(dir);
    const nginx = await startNginx({
      upstreamPort: closedPort(),
      certFile: cert.certFile,
      keyFile: cert.keyFile,
    });
    try {
      const e = await dialFails(dialOptions(`ws://127.0.0.1:${nginx.port}/_mport/v1/control`));
      assert.equal(e.kind, "http");
      assert.equal(e.status, 400);
      assert.equal(e.permanent, false);
      assert.equal(
        e.message,
        `127.0.0.1:${nginx.port} answered HTTP 400 Bad Request ("400 The plain HTTP request was ` +
          `sent to HTTPS port") instead of a WebSocket upgrade: that port expects TLS: use wss:// ` +
          `instead of ws://`,
      );
    } finally {
      await nginx.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a server that hangs up, or speaks something other than HTTP, is a protocol error", async () => {
  const hangUp = startScripted({ hangUp: true });
  const ssh = startScripted({
    greeting: "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
    reply: () => "Invalid SSH identification string.\r\n",
    hangUp: true,
  });
  try {
    const e = await dialFails(dialOptions(`ws://127.0.0.1:${hangUp.port}/x`));
    assert.equal(e.kind, "protocol");
    assert.equal(
      e.message,
      `127.0.0.1:${hangUp.port} closed the connection without answering the WebSocket upgrade: ` +
        `is it an mport server (a TLS port needs wss://)?`,
    );
    const s = await dialFails(dialOptions(`ws://127.0.0.1:${ssh.port}/x`));
    assert.equal(s.kind, "protocol");
    assert.equal(
      s.message,
      `127.0.0.1:${ssh.port} did not answer in HTTP (it sent "SSH-2.0-OpenSSH_9.2p1 Debian-2"): ` +
        `is it an mport server?`,
    );
  } finally {
    await ssh.close();
    await hangUp.close();
  }
});

Deno.test("a 101 with a wrong Sec-WebSocket-Accept is a protocol error naming the check", async () => {
  const server = startScripted({
    reply: () =>
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
  });
  try {
    const e = await dialFails(dialOptions(`ws://127.0.0.1:${server.port}/x`));
    assert.equal(e.kind, "protocol");
    assert.equal(
      e.message,
      `the WebSocket upgrade with 127.0.0.1:${server.port} failed (Bad WebSocket upgrade ` +
        `response: Sec-WebSocket-Accept does not match the key): is it an mport server?`,
    );
  } finally {
    await server.close();
  }
});

Deno.test("a frame sent in the same packet as the 101 reaches the WsConn", async () => {
  const server = startScripted({
    reply: async (head) => {
      const key = /^sec-websocket-key: *(\S+)/im.exec(head)?.[1] ?? "";
      const answer = new TextEncoder().encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n\r\n`,
      );
      // An unmasked text frame "hi" right behind the head.
      const out = new Uint8Array(answer.byteLength + 4);
      out.set(answer);
      out.set([0x81, 0x02, 0x68, 0x69], answer.byteLength);
      return out;
    },
  });
  try {
    const { ws } = await dialWebSocket(dialOptions(`ws://127.0.0.1:${server.port}/x`));
    try {
      const msg = await ws.read();
      assert.equal(msg?.text, true);
      assert.equal(new TextDecoder().decode(msg.data), "hi");
    } finally {
      ws.abort();
    }
  } finally {
    await server.close();
  }
});

Deno.test("a refusal whose body never ends is still reported as the refusal", async () => {
  const server = startScripted({ reply: () => "HTTP/1.1 401 Unauthorized\r\n\r\nno such token\n" });
  try {
    const e = await dialFails(dialOptions(`ws://127.0.0.1:${server.port}/x`, { timeoutMs: 300 }));
    assert.equal(e.kind, "http");
    assert.equal(e.status, 401);
    assert.equal(e.permanent, true);
    assert.equal(
      e.message,
      `127.0.0.1:${server.port} answered HTTP 401 Unauthorized ("no such token") instead of a ` +
        `WebSocket upgrade: check the token (--token or MPORT_TOKEN)`,
    );
  } finally {
    await server.close();
  }
});

Deno.test("header values HTTP cannot carry are refused before dialling, without quoting them", async () => {
  const port = closedPort();
  await assert.rejects(
    () =>
      dialWebSocket(
        dialOptions(`ws://127.0.0.1:${port}/x`, {
          headers: { authorization: `Bearer ${TOKEN}\n` },
        }),
      ),
    (e: unknown) => {
      assert.ok(e instanceof TypeError);
      assert.equal(e.message, "the value of header authorization has characters HTTP cannot carry");
      return true;
    },
  );
});

Deno.test("HTTP refusals quote the body's first line, masked and cleaned; 401/403/404 are permanent", async () => {
  const server = await startWsServer();
  const where = `127.0.0.1:${server.port}`;
  const cases: [number, string, boolean][] = [
    [401, "Unauthorized", true],
    [403, "Forbidden", true],
    [404, "Not Found", true],
    [426, "Upgrade Required", false],
    [429, "Too Many Requests", false],
    [503, "Service Unavailable", false],
  ];
  const hints: Record<number, string> = {
    401: "check the token (--token or MPORT_TOKEN)",
    403: "this token (or this address) may not connect",
    404: "there is no mport endpoint at this path: check --server and its path",
    426: "is --server the mport server, and do client and server run the same version?",
    429: "too many attempts from this address: wait before retrying",
    503: "the server (or a proxy in front of it) is failing",
  };
  try {
    for (const [status, text, permanent] of cases) {
      const e = await dialFails(dialOptions(`ws://${where}/status/${status}`));
      assert.equal(e.kind, "http");
      assert.equal(e.status, status);
      assert.equal(e.permanent, permanent, `permanent for ${status}`);
      // The colour sequence is removed whole; a lone BEL shows as "?".
      assert.equal(e.body, "denied? for ***\nsecond line\n");
      assert.equal(
        e.message,
        `${where} answered HTTP ${status} ${text} ("denied? for ***") instead of a ` +
          `WebSocket upgrade: ${hints[status]}`,
      );
    }
    const r = await dialFails(dialOptions(`ws://${where}/redirect`));
    assert.equal(
      r.message,
      `${where} answered HTTP 302 Found instead of a WebSocket upgrade: it redirects to ` +
        `wss://elsewhere.example/_mport: use that address as --server`,
    );
  } finally {
    await server.close();
  }
});

Deno.test("a proxy that refuses CONNECT is named with its status line", async () => {
  const answer =
    "HTTP/1.1 403 Filtered\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nnope!";
  await withFakeProxy(answer, async (proxy, spec) => {
    const e = await dialFails(dialOptions("wss://vps.example.com:8443/_mport", { proxy: spec }));
    assert.equal(e.kind, "proxy");
    assert.equal(e.status, 403);
    assert.equal(e.permanent, false);
    assert.equal(
      e.message,
      `proxy http://127.0.0.1:${proxy.port} refused CONNECT to vps.example.com:8443 with ` +
        `"HTTP/1.1 403 Filtered": the proxy does not allow this destination or port`,
    );
  });
});

Deno.test("a proxy whose CONNECT answer exceeds 16 KiB of headers is refused as not an HTTP proxy", async () => {
  // One header line too many: the head never ends within MAX_PROXY_RESPONSE_BYTES.
  const answer = "HTTP/1.1 200 OK\r\nX-Pad: " + "x".repeat(MAX_PROXY_RESPONSE_BYTES) + "\r\n\r\n";
  await withFakeProxy(answer, async (proxy, spec) => {
    const e = await dialFails(dialOptions("ws://vps.example.com/x", { proxy: spec }));
    assert.equal(e.kind, "proxy");
    assert.equal(
      e.message,
      `proxy http://127.0.0.1:${proxy.port} answered CONNECT to vps.example.com:80 with more ` +
        `than ${MAX_PROXY_RESPONSE_BYTES} bytes of headers: is it an HTTP proxy?`,
    );
  });
});

Deno.test("a proxy that is down, or never answers CONNECT, is a proxy error or a timeout", async () => {
  const port = closedPort();
  const down = await dialFails(
    dialOptions("ws://vps.example.com/x", { proxy: parseProxyUrl(`http://127.0.0.1:${port}`) }),
  );
  assert.equal(down.kind, "proxy");
  assert.equal(
    down.message,
    `cannot connect to proxy http://127.0.0.1:${port} (connection refused): ` +
      `check --proxy (or HTTPS_PROXY / HTTP_PROXY)`,
  );

  await withFakeProxy(null, async (silent, spec) => {
    const e = await dialFails(
      dialOptions("ws://vps.example.com/x", { proxy: spec, timeoutMs: 300 }),
    );
    assert.equal(e.kind, "timeout");
    assert.equal(
      e.message,
      `timed out after 0.3 s waiting for proxy http://127.0.0.1:${silent.port} to open a tunnel ` +
        `to vps.example.com:80: is it an HTTP proxy?`,
    );
  });
});

Deno.test("bytes after the proxy's 200 (before any request) are refused as a protocol error", async () => {
  const answer = "HTTP/1.1 200 Connection established\r\n\r\nSSH-2.0-OpenSSH_9.2\r\n";
  await withFakeProxy(answer, async (proxy, spec) => {
    const e = await dialFails(dialOptions("ws://vps.example.com:22/x", { proxy: spec }));
    assert.equal(e.kind, "protocol");
    assert.equal(
      e.message,
      `vps.example.com:22 sent 21 bytes through proxy http://127.0.0.1:${proxy.port} before the ` +
        `request: is it an mport server?`,
    );
  });
});
