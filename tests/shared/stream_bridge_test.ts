// Tests for the StreamBridge over real loopback WebSockets and TCP: bytes, half-close, credit window.
import assert from "node:assert/strict";
import { CloseCode, MAX_DATA_FRAME_BYTES } from "../../shared/protocol.ts";
import {
  StreamBridge,
  type StreamBridgeOptions,
  type StreamEnd,
  writeAll,
} from "../../shared/stream_bridge.ts";
import { type WsPair, wsPair } from "./ws_pair.ts";

const LOOPBACK = "127.0.0.1";
const SMALL: StreamBridgeOptions = { window: 64 * 1024, ackThreshold: 16 * 1024 };

/** Two ends of one loopback TCP connection. */
async function tcpPair(): Promise<[Deno.TcpConn, Deno.TcpConn]> {
  const listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  const [a, b] = await Promise.all([
    Deno.connect({ hostname: LOOPBACK, port: listener.addr.port }),
    listener.accept(),
  ]);
  listener.close();
  return [a, b];
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** Reads until EOF; a reset after data counts as the end too. */
async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(256 * 1024);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
    total += n;
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

/** Reads until EOF or reset, counting bytes only. */
async function drain(conn: Deno.Conn): Promise<number> {
  const buf = new Uint8Array(256 * 1024);
  let total = 0;
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) return total;
      total += n;
    }
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BadResource) {
      return total;
    }
    throw e;
  }
}

/** Pseudo-random bytes (xorshift), so a shifted or dropped chunk changes the hash. */
function pattern(size: number, seed = 0x9e3779b9): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

async function sha256(data: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

const text = (s: string) => new TextEncoder().encode(s);
const str = (b: Uint8Array) => new TextDecoder().decode(b);

/**
 * The full path of one stream: appA ⇄ [TCP] ⇄ server bridge ⇄ [WebSocket] ⇄ client bridge ⇄ [TCP] ⇄
 * appB. `appA` plays the public user, `appB` the local service.
 */
interface Path {
  readonly appA: Deno.TcpConn;
  readonly appB: Deno.TcpConn;
  readonly serverBridge: StreamBridge;
  readonly clientBridge: StreamBridge;
  readonly serverEnd: Promise<StreamEnd>;
  readonly clientEnd: Promise<StreamEnd>;
  /** Bytes the server bridge has sent into the WebSocket so far. */
  serverSent(): number;
  /** Bytes the client bridge has written to its TCP connection so far. */
  clientReceived(): number;
  close(): Promise<void>;
}

async function bridgedPath(opts: StreamBridgeOptions = {}): Promise<Path> {
  const ws = await wsPair();
  const [appA, serverSide] = await tcpPair();
  const [clientSide, appB] = await tcpPair();
  const serverEnd = Promise.withResolvers<StreamEnd>();
  const clientEnd = Promise.withResolvers<StreamEnd>();
  let sent = 0;
  let received = 0;
  const serverBridge = new StreamBridge(
    ws.server,
    { onEnd: serverEnd.resolve, onSent: (n) => (sent += n) },
    opts,
  );
  const clientBridge = new StreamBridge(
    ws.client,
    { onEnd: clientEnd.resolve, onReceived: (n) => (received += n) },
    opts,
  );
  serverBridge.attach(serverSide);
  clientBridge.attach(clientSide);
  return {
    appA,
    appB,
    serverBridge,
    clientBridge,
    serverEnd: serverEnd.promise,
    clientEnd: clientEnd.promise,
    serverSent: () => sent,
    clientReceived: () => received,
    async close() {
      closeQuietly(appA);
      closeQuietly(appB);
      if (!serverBridge.ended) serverBridge.abort("test over");
      if (!clientBridge.ended) clientBridge.abort("test over");
      await Promise.all([serverEnd.promise, clientEnd.promise]);
      await ws.close();
    },
  };
}

Deno.test("stream bridge carries bytes intact in both directions at once", async () => {
  const p = await bridgedPath();
  try {
    const up = pattern(3 * 1024 * 1024 + 17, 1);
    const down = pattern(2 * 1024 * 1024 + 5, 2);
    const [, , gotUp, gotDown] = await Promise.all([
      writeAll(p.appA, up).then(() => p.appA.closeWrite()),
      writeAll(p.appB, down).then(() => p.appB.closeWrite()),
      readAll(p.appB),
      readAll(p.appA),
    ]);
    assert.equal(gotUp.byteLength, up.byteLength);
    assert.equal(await sha256(gotUp), await sha256(up));
    assert.equal(gotDown.byteLength, down.byteLength);
    assert.equal(await sha256(gotDown), await sha256(down));
    assert.deepEqual(await p.serverEnd, { clean: true });
    assert.deepEqual(await p.clientEnd, { clean: true });
  } finally {
    await p.close();
  }
});

Deno.test("stream bridge preserves a half-close from the public side: the reply still arrives", async () => {
  const p = await bridgedPath();
  try {
    await writeAll(p.appA, text("request"));
    await p.appA.closeWrite();
    // The local service sees EOF only after the whole request, and can still answer.
    assert.equal(str(await readAll(p.appB)), "request");
    const reply = pattern(512 * 1024, 3);
    await writeAll(p.appB, reply);
    await p.appB.closeWrite();
    const got = await readAll(p.appA);
    assert.equal(await sha256(got), await sha256(reply));
    assert.deepEqual(await p.serverEnd, { clean: true });
    assert.deepEqual(await p.clientEnd, { clean: true });
  } finally {
    await p.close();
  }
});

Deno.test("stream bridge preserves a half-close from the local side: the user can still send", async () => {
  const p = await bridgedPath();
  try {
    await writeAll(p.appB, text("banner"));
    await p.appB.closeWrite();
    assert.equal(str(await readAll(p.appA)), "banner");
    await writeAll(p.appA, text("still talking after your EOF"));
    await p.appA.closeWrite();
    assert.equal(str(await readAll(p.appB)), "still talking after your EOF");
    assert.deepEqual(await p.serverEnd, { clean: true });
    assert.deepEqual(await p.clientEnd, { clean: true });
  } finally {
    await p.close();
  }
});

Deno.test("stream bridge with a 64 KiB window and 16 KiB acks still moves 8 MiB intact", async () => {
  const p = await bridgedPath(SMALL);
  try {
    const data = pattern(8 * 1024 * 1024, 4);
    const [, got] = await Promise.all([
      writeAll(p.appA, data).then(() => p.appA.closeWrite()),
      readAll(p.appB),
    ]);
    assert.equal(got.byteLength, data.byteLength);
    assert.equal(await sha256(got), await sha256(data));
    await p.appB.closeWrite();
    assert.deepEqual(await p.serverEnd, { clean: true });
    assert.deepEqual(await p.clientEnd, { clean: true });
  } finally {
    await p.close();
  }
});

Deno.test("stream bridge stops reading from TCP while the far receiver does not read", async () => {
  const p = await bridgedPath(SMALL);
  const total = 32 * 1024 * 1024;
  const data = pattern(total, 5);
  let written = 0;
  const writer = (async () => {
    for (let off = 0; off < total; off += 64 * 1024) {
      const chunk = data.subarray(off, Math.min(total, off + 64 * 1024));
      await writeAll(p.appA, chunk);
      written += chunk.byteLength;
    }
    await p.appA.closeWrite();
  })();
  try {
    // Wait until the user's writes stall (no progress for 300 ms), with 3 s at most.
    let last = -1;
    let stableSince = Date.now();
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      if (written !== last) {
        last = written;
        stableSince = Date.now();
      } else if (Date.now() - stableSince >= 300) {
        break;
      }
    }
    const stalledAt = written;
    assert.ok(Date.now() - stableSince >= 300, `writes never stalled (${stalledAt} bytes)`);
    // Without flow control the user could write all 32 MiB into memory. With it, only the window
    // plus the kernel socket buffers of both TCP legs (about 8 MiB on loopback here) get through.
    assert.ok(stalledAt < 16 * 1024 * 1024, `user wrote ${stalledAt} bytes before stalling`);
    // In flight between the bridges is never more than one window, whatever the kernel buffers.
    const inFlight = p.serverSent() - p.clientReceived();
    assert.ok(inFlight <= 64 * 1024, `${inFlight} bytes in flight with a 64 KiB window`);
    assert.ok(p.serverSent() < stalledAt, "the server bridge stopped reading the user's TCP");

    // Once the receiver reads, the rest flows and nothing was lost.
    const got = await readAll(p.appB);
    await writer;
    assert.equal(got.byteLength, total);
    assert.equal(await sha256(got), await sha256(data));
  } finally {
    await writer.catch(() => {});
    await p.close();
  }
});

Deno.test("stream bridge delivers every byte to a slow reader after the far side finished", async () => {
  // The public side sends and half-closes at once, so the server bridge is done (and closes the
  // WebSocket) while the client bridge still holds megabytes for a local service that reads slowly.
  // A late ack from the client used to reset the socket, and the client then dropped its queue.
  // The race is timing-dependent, so a few rounds.
  const up = pattern(3 * 1024 * 1024, 6);
  const upHash = await sha256(up);
  for (let round = 0; round < 3; round++) {
    const p = await bridgedPath();
    try {
      const slowRead = async () => {
        const buf = new Uint8Array(32 * 1024);
        const chunks: Uint8Array[] = [];
        while (true) {
          const n = await p.appB.read(buf);
          if (n === null) break;
          chunks.push(buf.slice(0, n));
          await new Promise((r) => setTimeout(r, 1));
        }
        const out = new Uint8Array(chunks.reduce((a, c) => a + c.byteLength, 0));
        chunks.reduce((off, c) => (out.set(c, off), off + c.byteLength), 0);
        return out;
      };
      await writeAll(p.appB, text("ok"));
      await p.appB.closeWrite();
      const [, got, reply] = await Promise.all([
        writeAll(p.appA, up).then(() => p.appA.closeWrite()),
        slowRead(),
        readAll(p.appA),
      ]);
      assert.equal(str(reply), "ok");
      assert.equal(
        got.byteLength,
        up.byteLength,
        `round ${round}: local service got a truncated stream`,
      );
      assert.equal(await sha256(got), upHash);
      assert.deepEqual(await p.serverEnd, { clean: true });
      assert.deepEqual(await p.clientEnd, { clean: true });
    } finally {
      await p.close();
    }
  }
});

/** A server-side bridge whose peer is a raw client WebSocket the test drives by hand. */
async function rawPeer(opts: StreamBridgeOptions, attach: boolean) {
  const ws = await wsPair();
  const [appA, bridgeSide] = await tcpPair();
  const end = Promise.withResolvers<StreamEnd>();
  const bridge = new StreamBridge(ws.server, { onEnd: end.resolve }, opts);
  if (attach) bridge.attach(bridgeSide);
  const texts: string[] = [];
  ws.client.addEventListener("message", (e) => {
    if (typeof e.data === "string") texts.push(e.data);
  });
  return {
    ws,
    appA,
    bridge,
    end: end.promise,
    texts,
    async close() {
      closeQuietly(appA);
      if (!attach) closeQuietly(bridgeSide);
      if (!bridge.ended) bridge.abort("test over");
      await end.promise;
      await ws.close();
    },
  };
}

Deno.test("stream bridge closes a stream whose peer sends beyond the credit window", async () => {
  const peer = await rawPeer(SMALL, false);
  try {
    // Nothing is attached yet, so nothing is written or acknowledged: 64 KiB fit, one more byte not.
    for (let i = 0; i < 4; i++) peer.ws.client.send(new Uint8Array(16 * 1024));
    peer.ws.client.send(new Uint8Array(1));
    const message = "peer sent beyond the 65536-byte credit window";
    const ev = await peer.ws.clientClosed;
    assert.equal(ev.code, CloseCode.protocolError);
    assert.equal(ev.reason, message);
    assert.deepEqual(peer.texts.map((t) => JSON.parse(t)), [
      { type: "error", code: "bad_message", message },
    ]);
    assert.deepEqual(await peer.end, { clean: false, reason: message, kind: "protocol" });
  } finally {
    await peer.close();
  }
});

Deno.test("stream bridge closes a flooding peer once the unread TCP backs up", async () => {
  const peer = await rawPeer(SMALL, true);
  try {
    // The user never reads, so the bridge's TCP writes stall and credit stops coming back; a
    // peer that ignores credit is cut off instead of filling the server's memory.
    const frame = new Uint8Array(64 * 1024);
    for (let i = 0; i < 512 && peer.ws.client.readyState === WebSocket.OPEN; i++) {
      peer.ws.client.send(frame);
    }
    const message = "peer sent beyond the 65536-byte credit window";
    assert.deepEqual(await peer.end, { clean: false, reason: message, kind: "protocol" });
    // The flooder is still sending when the server closes, so its close frame may be lost to a
    // TCP reset: only that the socket closed is certain.
    await peer.ws.clientClosed;
    // The user's connection is closed too, after at most what the kernel buffered.
    assert.ok((await drain(peer.appA)) < 32 * 1024 * 1024);
  } finally {
    await peer.close();
  }
});

const VIOLATIONS: {
  name: string;
  send: (ws: WebSocket) => void;
  message: string;
  closeCode: number;
}[] = [
  {
    name: "a data frame above the frame limit",
    send: (ws) => ws.send(new Uint8Array(MAX_DATA_FRAME_BYTES + 1)),
    message: `data frame of ${
      MAX_DATA_FRAME_BYTES + 1
    } bytes exceeds the ${MAX_DATA_FRAME_BYTES}-byte limit`,
    closeCode: CloseCode.tooLarge,
  },
  {
    name: "an ack for bytes never sent",
    send: (ws) => ws.send('{"type":"ack","bytes":1}'),
    message: "peer acknowledged more than was sent",
    closeCode: CloseCode.protocolError,
  },
  {
    name: "data after eof",
    send: (ws) => {
      ws.send('{"type":"eof"}');
      ws.send(new Uint8Array(1));
    },
    message: "data after eof",
    closeCode: CloseCode.protocolError,
  },
  {
    name: "a duplicate eof",
    send: (ws) => {
      ws.send('{"type":"eof"}');
      ws.send('{"type":"eof"}');
    },
    message: "duplicate eof",
    closeCode: CloseCode.protocolError,
  },
  {
    name: "an idle to a bridge that does not reuse streams",
    send: (ws) => ws.send('{"type":"idle"}'),
    message: "unexpected idle on this stream",
    closeCode: CloseCode.protocolError,
  },
  {
    name: "an undecodable text frame",
    send: (ws) => ws.send("not json"),
    message: "stream message is not valid JSON",
    closeCode: CloseCode.protocolError,
  },
  {
    name: "an oversize text frame",
    send: (ws) => ws.send(JSON.stringify({ type: "eof", pad: "x".repeat(5000) })),
    message: "stream message is larger than the 4096-byte limit",
    closeCode: CloseCode.tooLarge,
  },
];

for (const v of VIOLATIONS) {
  Deno.test(`stream bridge closes a stream whose peer sends ${v.name}`, async () => {
    const peer = await rawPeer(SMALL, true);
    try {
      v.send(peer.ws.client);
      const ev = await peer.ws.clientClosed;
      assert.equal(ev.code, v.closeCode);
      assert.equal(ev.reason, v.message);
      assert.deepEqual(peer.texts.map((t) => JSON.parse(t)), [
        { type: "error", code: "bad_message", message: v.message },
      ]);
      assert.deepEqual(await peer.end, { clean: false, reason: v.message, kind: "protocol" });
    } finally {
      await peer.close();
    }
  });
}

Deno.test("stream bridge reports a peer's error message and closes the TCP side", async () => {
  const peer = await rawPeer(SMALL, true);
  try {
    peer.ws.client.send('{"type":"error","code":"local_dial_failed","message":"refused"}');
    assert.deepEqual(await peer.end, { clean: false, reason: "refused", kind: "local_dial" });
    assert.equal(await drain(peer.appA), 0);
  } finally {
    await peer.close();
  }
});

// Stream reuse: one WebSocket carries several connections in turn.

/** Rejects if `p` takes longer than `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads exactly `n` bytes. */
async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const got = await conn.read(out.subarray(off));
    if (got === null) throw new Error(`EOF after ${off} of ${n} bytes`);
    off += got;
  }
  return out;
}

/** A server bridge that accepts `idle` and a client bridge that offers it, on one WebSocket. */
interface ReusePair {
  readonly ws: WsPair;
  readonly server: StreamBridge;
  readonly client: StreamBridge;
  /** Every `onEnd` either side reported, in order. */
  readonly serverEnds: StreamEnd[];
  readonly clientEnds: StreamEnd[];
  /** Whether the client offers reuse after a clean end. */
  offer: boolean;
  /** How many times the server got the stream back. */
  reused(): number;
  /** Resolves at the server's next `onReused`. */
  nextReuse(): Promise<void>;
  /** Bridges one new connection: the server sends `open`, both sides attach fresh TCP. */
  connect(): Promise<Conn>;
  close(): Promise<void>;
}

/** One connection over a reused stream, with its own byte counters. */
interface Conn {
  readonly appA: Deno.TcpConn;
  readonly appB: Deno.TcpConn;
  readonly serverEnd: Promise<StreamEnd>;
  readonly clientEnd: Promise<StreamEnd>;
  readonly bytes: {
    serverSent: number;
    serverReceived: number;
    clientSent: number;
    clientReceived: number;
  };
}

async function reusePair(opts: StreamBridgeOptions = SMALL): Promise<ReusePair> {
  const ws = await wsPair();
  const serverEnds: StreamEnd[] = [];
  const clientEnds: StreamEnd[] = [];
  const server = new StreamBridge(ws.server, {}, opts);
  const client = new StreamBridge(ws.client, {}, opts);
  let reusedCount = 0;
  let waiter = Promise.withResolvers<void>();
  server.onReused = () => {
    reusedCount++;
    waiter.resolve();
    waiter = Promise.withResolvers<void>();
  };
  const apps: Deno.TcpConn[] = [];
  const pair: ReusePair = {
    ws,
    server,
    client,
    serverEnds,
    clientEnds,
    offer: true,
    reused: () => reusedCount,
    nextReuse: () => waiter.promise,
    async connect() {
      const [appA, serverSide] = await tcpPair();
      const [clientSide, appB] = await tcpPair();
      apps.push(appA, appB);
      const serverEnd = Promise.withResolvers<StreamEnd>();
      const clientEnd = Promise.withResolvers<StreamEnd>();
      const bytes = { serverSent: 0, serverReceived: 0, clientSent: 0, clientReceived: 0 };
      const opened = Promise.withResolvers<void>();
      client.setHooks({
        onOpen: () => {
          client.attach(clientSide);
          opened.resolve();
        },
        onSent: (n) => (bytes.clientSent += n),
        onReceived: (n) => (bytes.clientReceived += n),
        onEnd: (e) => {
          clientEnds.push(e);
          clientEnd.resolve(e);
        },
      });
      client.offerReuse = () => pair.offer;
      server.setHooks({
        onSent: (n) => (bytes.serverSent += n),
        onReceived: (n) => (bytes.serverReceived += n),
        onEnd: (e) => {
          serverEnds.push(e);
          serverEnd.resolve(e);
        },
      });
      assert.ok(server.idle && client.idle, "both sides idle before open");
      assert.ok(server.sendControl({ type: "open", tunnel: "t", remote: "r", reuse: true }));
      server.attach(serverSide);
      await opened.promise;
      return { appA, appB, serverEnd: serverEnd.promise, clientEnd: clientEnd.promise, bytes };
    },
    async close() {
      for (const c of apps) closeQuietly(c);
      if (!server.ended) server.abort("test over");
      if (!client.ended) client.abort("test over");
      await ws.close();
    },
  };
  return pair;
}

/** Sends `up` from the user and `down` from the service, user half-closes first; checks hashes. */
async function exchange(c: Conn, up: Uint8Array, down: Uint8Array): Promise<void> {
  const [gotUp, gotDown] = await Promise.all([
    readAll(c.appB),
    readAll(c.appA),
    (async () => {
      await writeAll(c.appA, up);
      await c.appA.closeWrite();
    })(),
    (async () => {
      await writeAll(c.appB, down);
      await c.appB.closeWrite();
    })(),
  ]);
  assert.equal(gotUp.byteLength, up.byteLength);
  assert.equal(await sha256(gotUp), await sha256(up));
  assert.equal(gotDown.byteLength, down.byteLength);
  assert.equal(await sha256(gotDown), await sha256(down));
}

Deno.test("stream bridge reuses a cleanly finished stream for a second and third connection with fresh credit", async () => {
  const p = await reusePair();
  try {
    // 1: half-close from the user first; the service replies after it saw EOF.
    const c1 = await p.connect();
    const reuse1 = p.nextReuse();
    await writeAll(c1.appA, text("request one"));
    await c1.appA.closeWrite();
    assert.equal(str(await readAll(c1.appB)), "request one");
    const reply = pattern(100 * 1024, 11);
    await writeAll(c1.appB, reply);
    await c1.appB.closeWrite();
    assert.equal(await sha256(await readAll(c1.appA)), await sha256(reply));
    assert.deepEqual(await c1.serverEnd, { clean: true, reused: true });
    assert.deepEqual(await c1.clientEnd, { clean: true, reused: true });
    await reuse1;
    assert.equal(p.reused(), 1);
    assert.equal(p.ws.client.readyState, WebSocket.OPEN);
    assert.ok(p.server.idle && p.client.idle && !p.server.ended && !p.client.ended);
    closeQuietly(c1.appA);
    closeQuietly(c1.appB);

    // 2 and 3: each moves several times the 64 KiB window each way, so the window must have
    // been reset to full (a leftover deficit would stall, a surplus would trip the peer).
    for (const [i, seed] of [[2, 20], [3, 30]] as const) {
      const c = await p.connect();
      const reuse = p.nextReuse();
      const up = pattern(5 * 64 * 1024 + i, seed);
      const down = pattern(3 * 64 * 1024 + 7 * i, seed + 1);
      await within(exchange(c, up, down), 10_000, `connection ${i}`);
      assert.deepEqual(await c.serverEnd, { clean: true, reused: true });
      assert.deepEqual(await c.clientEnd, { clean: true, reused: true });
      await reuse;
      assert.equal(p.reused(), i);
      // The hooks of this connection saw exactly its own bytes.
      assert.deepEqual(c.bytes, {
        serverSent: up.byteLength,
        serverReceived: down.byteLength,
        clientSent: down.byteLength,
        clientReceived: up.byteLength,
      });
      closeQuietly(c.appA);
      closeQuietly(c.appB);
    }
    // Each side reported each connection's end exactly once.
    assert.equal(p.serverEnds.length, 3);
    assert.equal(p.clientEnds.length, 3);
    assert.equal(p.ws.server.readyState, WebSocket.OPEN);
  } finally {
    await p.close();
  }
});

Deno.test("stream bridge does not reuse a stream whose connection ended uncleanly", async () => {
  const p = await reusePair();
  try {
    const c1 = await p.connect();
    const reuse1 = p.nextReuse();
    await exchange(c1, text("ping"), text("pong"));
    await reuse1;
    // 2: the client side gives up mid-connection (as on a local TCP failure).
    const c2 = await p.connect();
    await writeAll(c2.appA, text("half a request"));
    p.client.abort("local service reset");
    const serverEnd = await c2.serverEnd;
    assert.equal(serverEnd.clean, false);
    assert.equal((await c2.clientEnd).clean, false);
    await p.ws.serverClosed;
    assert.ok(p.server.ended && p.client.ended);
    assert.equal(p.reused(), 1);
    assert.equal(p.serverEnds.length, 2);
    assert.equal(p.clientEnds.length, 2);
    // The user's connection was closed, not left hanging.
    assert.equal((await drain(c2.appA)) >= 0, true);
  } finally {
    await p.close();
  }
});

Deno.test("stream bridge closes a clean stream when the client does not offer reuse (older client, full pool)", async () => {
  const p = await reusePair();
  try {
    p.offer = false;
    const c1 = await p.connect();
    await exchange(c1, pattern(70 * 1024, 5), pattern(90 * 1024, 6));
    assert.deepEqual(await c1.clientEnd, { clean: true });
    // The server kept its side open for an `idle` that does not come; the client's close ends it.
    assert.deepEqual(await c1.serverEnd, { clean: true, reused: true });
    const ev = await p.ws.serverClosed;
    assert.equal(ev.code, CloseCode.normal);
    assert.ok(p.server.ended && p.client.ended);
    assert.equal(p.reused(), 0);
    assert.equal(p.serverEnds.length, 1);
  } finally {
    await p.close();
  }
});

Deno.test("stream bridge treats an idle before the connection finished as a protocol error", async () => {
  const p = await reusePair();
  try {
    const c1 = await p.connect();
    await writeAll(c1.appA, text("still going"));
    assert.equal(str(await readExactly(c1.appB, 11)), "still going");
    p.ws.client.send('{"type":"idle"}');
    const end = await c1.serverEnd;
    assert.deepEqual(end, {
      clean: false,
      reason: "idle before the connection on this stream finished",
      kind: "protocol",
    });
    const ev = await p.ws.serverClosed;
    assert.equal(ev.code, CloseCode.protocolError);
    assert.equal(p.reused(), 0);
  } finally {
    await p.close();
  }
});

Deno.test("a server-side bridge acknowledges small interactive writes at once, bulk only by threshold", async () => {
  // The ack frame is what carries the TCP ACK back to a client whose Nagle's algorithm is on.
  for (const ackWhenIdle of [true, false]) {
    const peer = await rawPeer({ ackWhenIdle }, true);
    try {
      peer.ws.client.send(new Uint8Array([1, 2, 3]));
      const got = await readExactly(peer.appA, 3);
      assert.deepEqual([...got], [1, 2, 3]);
      if (ackWhenIdle) {
        const deadline = Date.now() + 5000;
        while (peer.texts.length === 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 5));
        }
        assert.deepEqual(peer.texts.map((t) => JSON.parse(t)), [{ type: "ack", bytes: 3 }]);
      } else {
        // Round-trip a second frame so any ack would have arrived, then check there was none.
        peer.ws.client.send(new Uint8Array([4]));
        await readExactly(peer.appA, 1);
        assert.deepEqual(peer.texts, []);
      }
    } finally {
      await peer.close();
    }
  }
});
