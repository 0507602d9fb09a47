// Tests for resetConn: over real loopback sockets the peer sees ConnectionReset, never a clean EOF.
import assert from "node:assert/strict";
import { parseIp, resetConn, resetSupport } from "../../shared/tcp_reset.ts";
import { makeCert } from "../support/tls_cert.ts";

// Loads libc once for the life of the process, before any test, so the resource sanitizer does not
// count the library as leaked by whichever test first resets a connection.
const SUPPORT = resetSupport();

const V4 = "127.0.0.1";
const V6 = "::1";
const HAS_V6 = canListen(V6);
const V6_NOTE = HAS_V6 ? "" : " (skipped: ::1 is not available on this machine)";

function canListen(hostname: string): boolean {
  try {
    Deno.listen({ hostname, port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

/** Both ends of one loopback connection: `accepted` from a listener, `connected` from connect. */
async function tcpPair(
  hostname: string,
): Promise<{ accepted: Deno.TcpConn; connected: Deno.TcpConn }> {
  const listener = Deno.listen({ hostname, port: 0 });
  try {
    const [connected, accepted] = await Promise.all([
      Deno.connect({ hostname, port: listener.addr.port }),
      listener.accept(),
    ]);
    return { accepted, connected };
  } finally {
    listener.close();
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** What a pending read ends with: bytes, a clean EOF (`null`), or the error's class name. */
async function readOutcome(conn: Deno.Conn): Promise<number | null | string> {
  try {
    return await conn.read(new Uint8Array(1024));
  } catch (e) {
    return e instanceof Error ? e.name : String(e);
  }
}

/** Reads to the end; returns the bytes read and how it ended (`"EOF"` or an error name). */
async function readToEnd(conn: Deno.Conn): Promise<{ bytes: number; end: string }> {
  const buf = new Uint8Array(64 * 1024);
  let bytes = 0;
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) return { bytes, end: "EOF" };
      bytes += n;
    }
  } catch (e) {
    return { bytes, end: e instanceof Error ? e.name : String(e) };
  }
}

/** Writes `total` bytes in 1 MiB chunks; returns how many went out and what stopped it. */
async function writeMany(
  conn: Deno.Conn,
  total: number,
  progress?: (written: number) => void,
): Promise<{ written: number; error?: string }> {
  const chunk = new Uint8Array(1024 * 1024).fill(0x61);
  let written = 0;
  try {
    while (written < total) {
      written += await conn.write(chunk.subarray(0, Math.min(chunk.byteLength, total - written)));
      progress?.(written);
    }
    return { written };
  } catch (e) {
    return { written, error: e instanceof Error ? e.name : String(e) };
  }
}

Deno.test("resetSupport reports an RST through FFI when --allow-ffi is granted", () => {
  assert.equal(SUPPORT.ok, true, SUPPORT.why);
  assert.match(SUPPORT.how ?? "", /AF_UNSPEC/);
  assert.equal(resetSupport(), SUPPORT, "computed once");
});

for (const [family, hostname, ignore] of [["IPv4", V4, false], ["IPv6", V6, !HAS_V6]] as const) {
  const note = family === "IPv6" ? V6_NOTE : "";

  Deno.test(
    `an accepted conn reset fails the peer's pending read with ConnectionReset (${family})${note}`,
    {
      ignore,
    },
    async () => {
      const { accepted, connected } = await tcpPair(hostname);
      try {
        const pending = readOutcome(connected);
        assert.equal(resetConn(accepted), true);
        assert.equal(await pending, "ConnectionReset");
      } finally {
        closeQuietly(connected);
      }
    },
  );

  Deno.test(
    `a connected conn reset fails the peer's pending read with ConnectionReset (${family})${note}`,
    {
      ignore,
    },
    async () => {
      const { accepted, connected } = await tcpPair(hostname);
      try {
        const pending = readOutcome(accepted);
        assert.equal(resetConn(connected), true);
        assert.equal(await pending, "ConnectionReset");
      } finally {
        closeQuietly(accepted);
      }
    },
  );
}

Deno.test("a plain close reads as a clean EOF, which is why aborts need resetConn", async () => {
  const { accepted, connected } = await tcpPair(V4);
  const pending = readOutcome(connected);
  accepted.close();
  assert.equal(await pending, null);
  connected.close();
});

Deno.test("resetConn while the peer is uploading makes the peer's write fail", async () => {
  const { accepted, connected } = await tcpPair(V4);
  const total = 256 * 1024 * 1024;
  const upload = writeMany(connected, total);
  try {
    const buf = new Uint8Array(64 * 1024);
    let received = 0;
    while (received < 4 * 1024 * 1024) {
      const n = await accepted.read(buf);
      assert.notEqual(n, null);
      received += n!;
    }
    assert.equal(resetConn(accepted), true);
    const result = await upload;
    assert.ok(result.written < total, "the upload stopped short");
    assert.ok(
      result.error === "ConnectionReset" || result.error === "BrokenPipe",
      `the uploader's write failed (got ${result.error ?? "no error"})`,
    );
  } finally {
    closeQuietly(connected);
    closeQuietly(accepted);
  }
});

Deno.test("a reset mid-download ends the reader with ConnectionReset, not EOF", async () => {
  const { accepted, connected } = await tcpPair(V4);
  const total = 256 * 1024 * 1024;
  const download = writeMany(accepted, total);
  try {
    // Read 8 MiB, then stop reading: the sender's socket buffer fills and its write waits.
    const buf = new Uint8Array(64 * 1024);
    let received = 0;
    while (received < 8 * 1024 * 1024) {
      const n = await connected.read(buf);
      assert.notEqual(n, null);
      received += n!;
    }
    assert.equal(resetConn(accepted), true);
    const sent = await download;
    assert.ok(sent.error, "the sender's pending write was cancelled");
    const rest = await readToEnd(connected);
    assert.equal(rest.end, "ConnectionReset");
    assert.ok(received + rest.bytes < total, `received ${received + rest.bytes} of ${total}`);
  } finally {
    closeQuietly(connected);
  }
});

Deno.test("resetConn resets many connected conns at once, and one opened after that", async () => {
  const pairs = await Promise.all(Array.from({ length: 50 }, () => tcpPair(V4)));
  const pending = pairs.map((p) => readOutcome(p.accepted));
  for (const p of pairs) assert.equal(resetConn(p.connected), true);
  assert.deepEqual(await Promise.all(pending), pairs.map(() => "ConnectionReset"));
  const late = await tcpPair(V4);
  const latePending = readOutcome(late.accepted);
  assert.equal(resetConn(late.connected), true);
  assert.equal(await latePending, "ConnectionReset");
  for (const p of [...pairs, late]) closeQuietly(p.accepted);
});

Deno.test("resetConn on an already closed conn does not throw and sends nothing", async () => {
  const { accepted, connected } = await tcpPair(V4);
  const pending = readOutcome(connected);
  accepted.close();
  assert.equal(await pending, null);
  assert.equal(resetConn(accepted), false);
  assert.equal(resetConn(accepted), false);
  connected.close();
  assert.equal(resetConn(connected), false);
});

Deno.test("resetConn twice on the same conn resets once and does not throw", async () => {
  const { accepted, connected } = await tcpPair(V4);
  const pending = readOutcome(accepted);
  assert.equal(resetConn(connected), true);
  assert.equal(resetConn(connected), false);
  assert.equal(await pending, "ConnectionReset");
  accepted.close();
});

Deno.test("resetConn on a conn the peer already reset just closes it", async () => {
  const { accepted, connected } = await tcpPair(V4);
  const pending = readOutcome(connected);
  assert.equal(resetConn(accepted), true);
  assert.equal(await pending, "ConnectionReset");
  assert.equal(resetConn(connected), false);
});

/** A self-signed certificate for localhost from openssl; undefined without openssl. */
async function selfSigned(): Promise<{ cert: string; key: string } | undefined> {
  const dir = await Deno.makeTempDir({ prefix: "mport_tcp_reset_" });
  try {
    const made = await makeCert(dir);
    return { cert: made.certPem, key: await Deno.readTextFile(made.keyFile) };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a TlsConn reset fails the TLS peer's read with ConnectionReset", async (t) => {
  const pki = await selfSigned();
  if (!pki) {
    console.warn("skipped: openssl is not installed, so no certificate for the TLS case");
    return;
  }
  const listener = Deno.listenTls({ hostname: V4, port: 0, ...pki });
  const pair = async () => {
    const [connected, accepted] = await Promise.all([
      Deno.connectTls({ hostname: "localhost", port: listener.addr.port, caCerts: [pki.cert] }),
      listener.accept(),
    ]);
    await Promise.all([connected.handshake(), accepted.handshake()]);
    return { accepted, connected };
  };
  try {
    await t.step("accepted side reset", async () => {
      const { accepted, connected } = await pair();
      const pending = readOutcome(connected);
      assert.equal(resetConn(accepted), true);
      assert.equal(await pending, "ConnectionReset");
      connected.close();
    });
    await t.step("connected side reset", async () => {
      const { accepted, connected } = await pair();
      const pending = readOutcome(accepted);
      assert.equal(resetConn(connected), true);
      assert.equal(await pending, "ConnectionReset");
      accepted.close();
      assert.equal(resetConn(connected), false, "already closed");
    });
  } finally {
    listener.close();
  }
});

Deno.test("without --allow-ffi, resetConn falls back to a plain close and says why", async () => {
  const module = new URL("../../shared/tcp_reset.ts", import.meta.url).href;
  const script = `
    import { resetConn, resetSupport } from ${JSON.stringify(module)};
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const [connected, accepted] = await Promise.all([
      Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
      listener.accept(),
    ]);
    listener.close();
    const pending = connected.read(new Uint8Array(16)).catch((e) => e.name);
    const armed = resetConn(accepted);
    console.log(JSON.stringify({ support: resetSupport(), armed, read: await pending }));
    connected.close();
  `;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--allow-net=127.0.0.1", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(script));
  await writer.close();
  const out = await child.output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.ok(out.success, stderr);
  const result = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(result.support.ok, false);
  assert.match(result.support.why, /--allow-ffi/);
  assert.equal(result.armed, false);
  assert.equal(result.read, null, "the fallback is a clean close");
});

const IP_CASES: [string, string][] = [
  ["127.0.0.1", "00000000000000000000ffff7f000001"],
  ["0.0.0.0", "00000000000000000000ffff00000000"],
  ["::1", "00000000000000000000000000000001"],
  ["::", "00000000000000000000000000000000"],
  ["[::1]", "00000000000000000000000000000001"],
  ["fe80::1%eth0", "fe800000000000000000000000000001"],
  ["2001:db8::8:800:200c:417a", "20010db80000000000080800200c417a"],
  ["1:2:3:4:5:6:7:8", "00010002000300040005000600070008"],
  ["1:2:3:4:5:6:7::", "00010002000300040005000600070000"],
  ["::ffff:192.0.2.128", "00000000000000000000ffffc0000280"],
  ["64:ff9b::192.0.2.33", "0064ff9b0000000000000000c0000221"],
  ["ABCD::EF", "abcd00000000000000000000000000ef"],
];

const IP_INVALID = [
  "",
  "localhost",
  "1.2.3",
  "1.2.3.256",
  "1.2.3.4.5",
  "1::2::3",
  ":::",
  "1:2:3:4:5:6:7:8:9",
  "1:2:3:4:5:6:7:8::",
  "12345::",
  "1.2.3.4::",
  "::g",
];

Deno.test("parseIp reads IPv4 and IPv6 literals to 16 bytes", () => {
  for (const [text, hex] of IP_CASES) {
    const bytes = parseIp(text);
    assert.ok(bytes, text);
    assert.equal(Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""), hex, text);
  }
});

Deno.test("parseIp rejects what is not an IP literal", () => {
  for (const text of IP_INVALID) assert.equal(parseIp(text), undefined, text);
});
