// Tests for WsConn over loopback: interop with Deno's WebSocket, framing, close, backpressure, batching.
import assert from "node:assert/strict";
import { WsClosedError, WsConn, WsProtocolError } from "../../shared/ws_conn.ts";
import { MAX_WS_HEADER_BYTES, Opcode } from "../../shared/ws_frames.ts";
import {
  acceptKey,
  clientHandshake,
  parseRequestHead,
  readHead,
} from "../../shared/ws_handshake.ts";
import {
  acceptUpgrade,
  closeCodeOf,
  closeEvent,
  closeQuietly,
  countingConn,
  denoServer,
  LOOPBACK,
  nextMessage,
  opened,
  ourClient,
  ourServer,
  pattern,
  rawFrame,
  RawFrameReader,
  sha256,
  stillPending,
  WAIT_MS,
  within,
  withRoom,
  writeAll,
} from "./ws_fixtures.ts";

const SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20];
const decoder = new TextDecoder();

/** A text payload of exactly `size` bytes (ASCII plus some 2-byte characters). */
function textOf(size: number): string {
  const unit = "héllo wörld ";
  let s = unit.repeat(Math.ceil(size / 14) + 1);
  while (new TextEncoder().encode(s).length > size) s = s.slice(0, -1);
  return s + "x".repeat(size - new TextEncoder().encode(s).length);
}

/** Reads one message and fails the test if the connection ends first. */
async function readOne(ws: WsConn) {
  const msg = await within(ws.read(), "a message");
  assert.ok(msg !== null, "connection ended before the message");
  return msg;
}

/** Echoes every message back until the peer closes. */
async function echo(ws: WsConn): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    const msg = await ws.read();
    if (msg === null) return;
    if (msg.text) ws.sendText(decoder.decode(msg.data));
    else ws.sendBinary(msg.data);
  }
}

/** Our client with a raw server peer (the server side is bare TCP after the upgrade). */
async function clientWithRawServer(
  opts: { zeroMask?: boolean; maxMessageBytes?: number; firstBytes?: Uint8Array } = {},
) {
  const listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  const accepted = listener.accept();
  const tcp = await Deno.connect({ hostname: LOOPBACK, port: listener.addr.port });
  const raw = await accepted;
  listener.close();
  // A minimal upgrade by hand, so the raw side can then write anything it likes.
  const serverSide = (async () => {
    const { head, leftover } = await readHead(raw, { maxBytes: 16384, timeoutMs: WAIT_MS });
    const req = parseRequestHead(head);
    const accept = await acceptKey(req.headers.get("sec-websocket-key")!);
    const reply = new TextEncoder().encode(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    const first = opts.firstBytes ?? new Uint8Array(0);
    await writeAll(raw, new Uint8Array([...reply, ...first]));
    return leftover;
  })();
  const { leftover } = await clientHandshake(tcp, { host: "x", path: "/", timeoutMs: WAIT_MS });
  const rawLeftover = await serverSide;
  const ws = new WsConn(tcp, {
    role: "client",
    maxMessageBytes: opts.maxMessageBytes ?? 1 << 20,
    leftover,
    ...(opts.zeroMask !== undefined ? { zeroMask: opts.zeroMask } : {}),
  });
  return { ws, raw, reader: new RawFrameReader(raw, "server", rawLeftover) };
}

/** Our server with a raw client peer that has done the upgrade with clientHandshake. */
async function serverWithRawClient(maxMessageBytes = 1 << 20) {
  const server = ourServer({ maxMessageBytes });
  const raw = await Deno.connect({ hostname: LOOPBACK, port: server.port });
  const [ws, { leftover }] = await Promise.all([
    server.next(),
    clientHandshake(raw, { host: "x", path: "/", timeoutMs: WAIT_MS }),
  ]);
  server.close();
  return { ws, raw, reader: new RawFrameReader(raw, "client", leftover) };
}

for (const zeroMask of [true, false]) {
  Deno.test(
    `our client (${zeroMask ? "zero" : "random"} mask) echoes text and binary through ` +
      "Deno's WebSocket server, then closes with code and reason",
    async () => {
      const serverClosed = Promise.withResolvers<CloseEvent>();
      const http = denoServer((socket) => {
        socket.onmessage = (e) => socket.send(e.data);
        socket.onclose = (e) => serverClosed.resolve(e);
      });
      try {
        const ws = await ourClient(http.addr.port, { zeroMask, maxMessageBytes: 2 << 20 });
        for (const size of SIZES) {
          const bin = pattern(size, size + 1);
          ws.sendBinary(bin);
          const back = await readOne(ws);
          assert.equal(back.text, false);
          assert.equal(back.data.length, size);
          assert.equal(await sha256(back.data), await sha256(bin), `binary ${size}`);
          const text = textOf(size);
          ws.sendText(text);
          const tback = await readOne(ws);
          assert.equal(tback.text, true);
          assert.equal(decoder.decode(tback.data), text, `text ${size}`);
        }
        await within(ws.close(4001, "client says bye"), "close");
        assert.deepEqual(await ws.closed, { code: 4001, reason: "client says bye", clean: true });
        const e = await within(serverClosed.promise, "server close event");
        assert.equal(e.code, 4001);
        assert.equal(e.reason, "client says bye");
      } finally {
        await http.shutdown();
      }
    },
  );
}

Deno.test("Deno's WebSocket client echoes text and binary through our server", async () => {
  const server = ourServer({ maxMessageBytes: 2 << 20 });
  const client = new WebSocket(`ws://${LOOPBACK}:${server.port}/echo`);
  client.binaryType = "arraybuffer";
  const clientClosed = closeEvent(client);
  const ws = await within(server.next(), "upgrade");
  server.close();
  const echoing = echo(ws);
  try {
    await within(opened(client), "client open");
    for (const size of SIZES) {
      const bin = pattern(size, size + 7);
      const got = nextMessage(client);
      client.send(bin);
      const back = await within(got, `binary echo ${size}`);
      assert.ok(back instanceof ArrayBuffer);
      assert.equal(await sha256(new Uint8Array(back)), await sha256(bin), `binary ${size}`);
      const text = textOf(size);
      const gotText = nextMessage(client);
      client.send(text);
      assert.equal(await within(gotText, `text echo ${size}`), text, `text ${size}`);
    }
    client.close(4002, "done here");
    const e = await within(clientClosed, "client close event");
    assert.equal(e.code, 4002);
    assert.equal(e.reason, "done here");
    assert.equal(e.wasClean, true);
    await within(echoing, "echo loop ends");
    assert.deepEqual(await ws.closed, { code: 4002, reason: "done here", clean: true });
  } finally {
    ws.abort();
    await ws.closed;
  }
});

Deno.test("our server's close reaches Deno's client with code and reason", async () => {
  const server = ourServer();
  const client = new WebSocket(`ws://${LOOPBACK}:${server.port}/`);
  const clientClosed = closeEvent(client);
  const ws = await within(server.next(), "upgrade");
  server.close();
  await within(opened(client), "client open");
  await within(ws.close(4003, "server going away"), "close");
  assert.deepEqual(await ws.closed, { code: 4003, reason: "server going away", clean: true });
  const e = await within(clientClosed, "client close event");
  assert.equal(e.code, 4003);
  assert.equal(e.reason, "server going away");
  assert.equal(e.wasClean, true);
});

Deno.test("Deno's server closing with code and reason ends our client's reads with null", async () => {
  const http = denoServer((socket) => {
    socket.onopen = () => socket.close(4004, "server done");
  });
  try {
    const ws = await ourClient(http.addr.port);
    assert.equal(await within(ws.read(), "read"), null);
    assert.equal(ws.isOpen, false);
    assert.deepEqual(await within(ws.closed, "closed"), {
      code: 4004,
      reason: "server done",
      clean: true,
    });
    assert.equal(await ws.read(), null, "reads after the end stay null");
  } finally {
    await http.shutdown();
  }
});

Deno.test("our client and our server exchange messages of every size class both ways", async () => {
  const server = ourServer({ maxMessageBytes: 2 << 20 });
  const [client, srv] = await Promise.all([ourClient(server.port), server.next()]);
  server.close();
  const echoing = echo(srv);
  const sizes = [
    0,
    1,
    13,
    14,
    125,
    126,
    2047,
    2048,
    2049,
    16383,
    16384,
    16385,
    65535,
    65536,
    262143,
    262144,
    262145,
    1 << 20,
  ];
  // Send everything in one task (batched and large frames interleaved), then read it back.
  const sent = sizes.map((s, i) => pattern(s, i + 100));
  for (const [i, data] of sent.entries()) {
    if (i % 2 === 0) client.sendBinary(data);
    else client.sendBinaryWithRoom(withRoom(data), data.length);
  }
  for (const [i, data] of sent.entries()) {
    const back = await readOne(client);
    assert.equal(back.data.length, data.length, `message ${i}`);
    assert.equal(await sha256(back.data), await sha256(data), `message ${i}`);
  }
  await within(client.close(), "close");
  await within(echoing, "echo loop ends");
  assert.equal((await srv.closed).clean, true);
  assert.equal((await client.closed).clean, true);
});

Deno.test("fragmented messages from a raw client are joined, with a ping answered in between", async () => {
  const { ws, raw, reader } = await serverWithRawClient();
  try {
    const enc = new TextEncoder();
    await writeAll(raw, rawFrame({ opcode: Opcode.Text, fin: false, payload: enc.encode("Hé") }));
    await writeAll(raw, rawFrame({ opcode: Opcode.Ping, payload: enc.encode("are you there") }));
    // The 'é' is split across fragments: UTF-8 is checked on the whole message.
    const e = enc.encode("éllo");
    await writeAll(
      raw,
      rawFrame({ opcode: Opcode.Continuation, fin: false, payload: e.subarray(0, 1) }),
    );
    await writeAll(raw, rawFrame({ opcode: Opcode.Continuation, payload: e.subarray(1) }));
    const msg = await readOne(ws);
    assert.equal(msg.text, true);
    assert.equal(decoder.decode(msg.data), "Hééllo");
    const pong = await within(reader.next(), "pong");
    assert.equal(pong?.opcode, Opcode.Pong);
    assert.equal(pong?.masked, false);
    assert.equal(decoder.decode(pong?.payload), "are you there");

    // A binary message in 2,000 one-byte fragments, written in one go.
    const data = pattern(2000, 5);
    const frames = [...data].map((b, i) =>
      rawFrame({
        opcode: i === 0 ? Opcode.Binary : Opcode.Continuation,
        fin: i === data.length - 1,
        payload: new Uint8Array([b]),
        mask: (i * 2654435761) >>> 0,
      })
    );
    const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    frames.reduce((off, f) => (all.set(f, off), off + f.length), 0);
    await writeAll(raw, all);
    const bin = await readOne(ws);
    assert.deepEqual(bin.data, data);
  } finally {
    closeQuietly(raw);
    await within(ws.read().catch(() => null), "read ends");
    await ws.closed;
  }
});

Deno.test("our client masks with a fresh random key per frame when zeroMask is false", async () => {
  const { ws, raw, reader } = await clientWithRawServer({ zeroMask: false });
  try {
    const payloads = [pattern(10, 1), pattern(300, 2), pattern(70000, 3)];
    ws.sendBinary(payloads[0]!);
    ws.sendText("hello");
    ws.sendBinary(payloads[1]!);
    ws.sendBinaryWithRoom(withRoom(payloads[2]!), payloads[2]!.length);
    const frames = [];
    for (let i = 0; i < 4; i++) frames.push(await within(reader.next(), `frame ${i}`));
    const keys = new Set(frames.map((f) => f!.maskKey));
    assert.equal(keys.size, 4, "a different key for every frame");
    assert.ok(frames.every((f) => f!.masked && f!.maskKey !== 0));
    assert.deepEqual(frames[0]!.payload, payloads[0]);
    assert.equal(decoder.decode(frames[1]!.payload), "hello");
    assert.deepEqual(frames[2]!.payload, payloads[1]);
    assert.deepEqual(frames[3]!.payload, payloads[2]);
  } finally {
    ws.abort();
    closeQuietly(raw);
    await ws.closed;
  }
});

Deno.test("our client with zeroMask sends mask key 0 and the payload unchanged", async () => {
  const { ws, raw, reader } = await clientWithRawServer();
  try {
    ws.sendBinary(pattern(50, 9));
    const f = await within(reader.next(), "frame");
    assert.equal(f?.masked, true);
    assert.equal(f?.maskKey, 0);
    assert.deepEqual(f?.payload, pattern(50, 9));
  } finally {
    ws.abort();
    closeQuietly(raw);
    await ws.closed;
  }
});

Deno.test("frames the server sends along with its 101 reach the client through leftover", async () => {
  const first = new Uint8Array([
    ...rawFrame({ opcode: Opcode.Text, payload: new TextEncoder().encode("early"), mask: null }),
    ...rawFrame({ opcode: Opcode.Binary, payload: pattern(3000, 4), mask: null }),
  ]);
  const { ws, raw } = await clientWithRawServer({ firstBytes: first });
  try {
    assert.equal(decoder.decode((await readOne(ws)).data), "early");
    assert.deepEqual((await readOne(ws)).data, pattern(3000, 4));
  } finally {
    ws.abort();
    closeQuietly(raw);
    await ws.closed;
  }
});

Deno.test("an abrupt TCP close fails reads with WsClosedError and closed.clean=false", async () => {
  const { ws, raw } = await serverWithRawClient();
  const pending = ws.read();
  // Half a frame, then gone.
  await writeAll(
    raw,
    rawFrame({ opcode: Opcode.Binary, payload: pattern(5000, 1) }).subarray(0, 100),
  );
  raw.close();
  await assert.rejects(within(pending, "read"), WsClosedError);
  const info = await within(ws.closed, "closed");
  assert.equal(info.clean, false);
  assert.equal(info.code, 1006);
  await assert.rejects(ws.read(), WsClosedError);
  assert.equal(ws.isOpen, false);
});

Deno.test("abort() ends a pending read with WsClosedError and resolves closed once", async () => {
  const { ws, raw } = await serverWithRawClient();
  try {
    const pending = ws.read();
    ws.abort();
    ws.abort();
    await assert.rejects(within(pending, "read"), WsClosedError);
    assert.deepEqual(await ws.closed, { code: 1006, reason: "aborted", clean: false });
    await ws.close(); // idempotent after the end
  } finally {
    closeQuietly(raw);
  }
});

Deno.test("a message over maxMessageBytes from Deno's client fails with close 1009", async () => {
  const server = ourServer({ maxMessageBytes: 64 * 1024 });
  const client = new WebSocket(`ws://${LOOPBACK}:${server.port}/`);
  const clientClosed = closeEvent(client);
  const ws = await within(server.next(), "upgrade");
  server.close();
  await within(opened(client), "client open");
  client.send(pattern(64 * 1024, 1)); // exactly the limit: fine
  assert.equal((await readOne(ws)).data.length, 64 * 1024);
  client.send(pattern(200 * 1024, 2));
  await assert.rejects(
    within(ws.read(), "read"),
    (e: unknown) => e instanceof WsProtocolError && e.closeCode === 1009,
  );
  const e = await within(clientClosed, "client close event");
  assert.equal(e.code, 1009);
  const info = await within(ws.closed, "closed");
  assert.equal(info.code, 1009);
  assert.equal(info.clean, false);
});

Deno.test("a fragmented message whose total crosses maxMessageBytes fails with 1009", async () => {
  const { ws, raw, reader } = await serverWithRawClient(1000);
  try {
    await writeAll(raw, rawFrame({ opcode: Opcode.Binary, fin: false, payload: pattern(600) }));
    await writeAll(
      raw,
      rawFrame({ opcode: Opcode.Continuation, fin: false, payload: pattern(400) }),
    );
    await writeAll(raw, rawFrame({ opcode: Opcode.Continuation, payload: pattern(1) }));
    await assert.rejects(
      within(ws.read(), "read"),
      (e: unknown) => e instanceof WsProtocolError && e.closeCode === 1009,
    );
    const close = await within(reader.next(), "close frame");
    assert.equal(close?.opcode, Opcode.Close);
    assert.equal(closeCodeOf(close!), 1009);
  } finally {
    closeQuietly(raw);
    await ws.closed;
  }
});

Deno.test("a message over maxMessageBytes from Deno's server fails our client with 1009", async () => {
  const serverClosed = Promise.withResolvers<CloseEvent>();
  const http = denoServer((socket) => {
    socket.onopen = () => socket.send(pattern(100_000));
    socket.onclose = (e) => serverClosed.resolve(e);
  });
  try {
    const ws = await ourClient(http.addr.port, { maxMessageBytes: 50_000 });
    await assert.rejects(
      within(ws.read(), "read"),
      (e: unknown) => e instanceof WsProtocolError && e.closeCode === 1009,
    );
    assert.equal((await within(serverClosed.promise, "server close")).code, 1009);
    assert.equal((await ws.closed).code, 1009);
  } finally {
    await http.shutdown();
  }
});

const enc = (s: string) => new TextEncoder().encode(s);

/** Bad input from a raw client, and the close code our server must answer with. */
const INVALID_INPUT: { name: string; frames: Uint8Array[]; code: number }[] = [
  { name: "reserved bit", frames: [rawFrame({ opcode: Opcode.Binary, rsv: 4 })], code: 1002 },
  { name: "unknown opcode 0x3", frames: [rawFrame({ opcode: 3 })], code: 1002 },
  { name: "unmasked frame", frames: [rawFrame({ opcode: Opcode.Text, mask: null })], code: 1002 },
  {
    name: "oversized ping",
    frames: [rawFrame({ opcode: Opcode.Ping, payload: new Uint8Array(126) })],
    code: 1002,
  },
  { name: "fragmented ping", frames: [rawFrame({ opcode: Opcode.Ping, fin: false })], code: 1002 },
  {
    name: "continuation without a message",
    frames: [rawFrame({ opcode: Opcode.Continuation })],
    code: 1002,
  },
  {
    name: "new message inside a fragmented one",
    frames: [
      rawFrame({ opcode: Opcode.Text, fin: false, payload: enc("a") }),
      rawFrame({ opcode: Opcode.Text, payload: enc("b") }),
    ],
    code: 1002,
  },
  {
    name: "close with a 1-byte payload",
    frames: [rawFrame({ opcode: Opcode.Close, payload: new Uint8Array([3]) })],
    code: 1002,
  },
  {
    name: "close with code 1005",
    frames: [rawFrame({ opcode: Opcode.Close, payload: new Uint8Array([3, 0xed]) })],
    code: 1002,
  },
  {
    name: "close with code 999",
    frames: [rawFrame({ opcode: Opcode.Close, payload: new Uint8Array([3, 0xe7]) })],
    code: 1002,
  },
  {
    name: "close reason not UTF-8",
    frames: [rawFrame({ opcode: Opcode.Close, payload: new Uint8Array([3, 0xe8, 0xc3]) })],
    code: 1007,
  },
  {
    name: "text not UTF-8",
    frames: [rawFrame({ opcode: Opcode.Text, payload: new Uint8Array([0x61, 0xff, 0x62]) })],
    code: 1007,
  },
  {
    name: "fragmented text not UTF-8",
    frames: [
      rawFrame({ opcode: Opcode.Text, fin: false, payload: new Uint8Array([0xe2, 0x82]) }),
      rawFrame({ opcode: Opcode.Continuation, payload: new Uint8Array([0x41]) }),
    ],
    code: 1007,
  },
];

for (const c of INVALID_INPUT) {
  Deno.test(`our server fails the connection on ${c.name} with close ${c.code}`, async () => {
    const { ws, raw, reader } = await serverWithRawClient();
    try {
      for (const f of c.frames) await writeAll(raw, f);
      await assert.rejects(
        within(ws.read(), "read"),
        (e: unknown) => e instanceof WsProtocolError && e.closeCode === c.code,
      );
      const close = await within(reader.next(), "close frame");
      assert.equal(close?.opcode, Opcode.Close);
      assert.equal(closeCodeOf(close!), c.code);
      // The server half-closes after its close frame and drains until the client goes.
      assert.equal(await within(reader.next(), "EOF"), null);
      raw.close();
      const info = await within(ws.closed, "closed");
      assert.equal(info.code, c.code);
      assert.equal(info.clean, false);
    } finally {
      closeQuietly(raw);
      await ws.closed;
    }
  });
}

Deno.test("our client fails the connection on a masked frame from the server with 1002", async () => {
  const bad = rawFrame({ opcode: Opcode.Text, payload: enc("hi"), mask: 0x01020304 });
  const { ws, raw, reader } = await clientWithRawServer({ firstBytes: bad });
  try {
    await assert.rejects(
      within(ws.read(), "read"),
      (e: unknown) => e instanceof WsProtocolError && e.closeCode === 1002,
    );
    const close = await within(reader.next(), "close frame");
    assert.equal(closeCodeOf(close!), 1002);
  } finally {
    closeQuietly(raw);
    await ws.closed;
  }
});

Deno.test("close() gives up after its timeout when the peer never answers", async () => {
  const { ws, raw, reader } = await clientWithRawServer();
  try {
    const started = performance.now();
    const closing = ws.close(1000, "bye", 300);
    const f = await within(reader.next(), "close frame");
    assert.equal(closeCodeOf(f!), 1000);
    await within(closing, "close");
    const took = performance.now() - started;
    assert.ok(took >= 250 && took < 5000, `close took ${took} ms`);
    const info = await ws.closed;
    assert.equal(info.clean, false);
    assert.equal(info.code, 1006);
  } finally {
    closeQuietly(raw);
  }
});

Deno.test("close() discards data that arrives before the peer's close and is idempotent", async () => {
  const { ws, raw, reader } = await serverWithRawClient();
  try {
    const a = ws.close(4005, "enough");
    const b = ws.close(1000, "ignored");
    const f = await within(reader.next(), "close frame");
    assert.equal(closeCodeOf(f!), 4005);
    ws.sendBinary(pattern(10)); // dropped: the close frame was the last frame
    await writeAll(raw, rawFrame({ opcode: Opcode.Binary, payload: pattern(100) }));
    await writeAll(raw, rawFrame({ opcode: Opcode.Close, payload: new Uint8Array([0x0f, 0xa5]) }));
    await within(Promise.all([a, b]), "close");
    assert.deepEqual(await ws.closed, { code: 4005, reason: "", clean: true });
    assert.equal(await within(reader.next(), "EOF"), null, "nothing after the close frame");
    assert.equal(await ws.read(), null);
  } finally {
    closeQuietly(raw);
  }
});

Deno.test("a peer that does not read: bufferedAmount grows and drained() waits until it reads", async () => {
  const { ws, raw } = await clientWithRawServer();
  try {
    // 128 MiB queued without copying (one 1 MiB buffer, 128 times): far beyond what the socket
    // buffers can take (wmem 4 MiB, rmem 32 MiB at most here) while nobody reads.
    const chunk = pattern(1 << 20, 3);
    const messages = 128;
    for (let i = 0; i < messages; i++) ws.sendBinary(chunk);
    const total = messages * (chunk.length + MAX_WS_HEADER_BYTES);
    assert.ok(ws.bufferedAmount >= messages * chunk.length);
    const drained = ws.drained();
    const half = ws.drained(64 << 20);
    // The kernel can absorb at most ~36 MiB of the 128: drained() cannot resolve yet.
    assert.ok(
      await stillPending(drained, 200),
      "drained() resolved while the peer was not reading",
    );
    assert.ok(ws.bufferedAmount > 64 << 20, `bufferedAmount ${ws.bufferedAmount}`);
    assert.ok(await stillPending(half, 0));

    // Now the peer reads everything; drained() must resolve on its own (no polling).
    let received = 0;
    const reading = (async () => {
      const buf = new Uint8Array(256 * 1024);
      while (received < messages * chunk.length) {
        const n = await raw.read(buf);
        if (n === null) break;
        received += n;
      }
    })();
    await within(half, "drained(64 MiB)");
    assert.ok(ws.bufferedAmount <= 64 << 20);
    await within(drained, "drained()");
    assert.equal(ws.bufferedAmount, 0);
    await within(reading, "peer read everything");
    assert.ok(received >= messages * chunk.length && received <= total);
  } finally {
    ws.abort();
    closeQuietly(raw);
    await ws.closed;
  }
});

Deno.test("reads pause when the caller stops reading: the sender's queue backs up", async () => {
  const server = ourServer({ maxMessageBytes: 2 << 20 });
  const [client, srv] = await Promise.all([ourClient(server.port), server.next()]);
  server.close();
  try {
    const chunk = pattern(1 << 20, 4);
    for (let i = 0; i < 128; i++) client.sendBinary(chunk);
    const drained = client.drained();
    assert.ok(await stillPending(drained, 200), "the sender drained with nobody reading");
    for (let i = 0; i < 128; i++) {
      const m = await readOne(srv);
      assert.equal(m.data.length, chunk.length);
    }
    await within(drained, "drained after the server read everything");
  } finally {
    await within(Promise.all([client.close(), srv.read()]), "close");
    assert.equal((await srv.closed).clean, true);
  }
});

/** A sender whose `conn.write` calls are counted, and a receiver, over loopback. */
async function countedPair(role: "client" | "server") {
  const listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  let counter: ReturnType<typeof countingConn> | undefined;
  const accepted = listener.accept().then(async (c) => {
    if (role === "client") return (await acceptUpgrade(c)).ws;
    counter = countingConn(c);
    return (await acceptUpgrade(counter.conn)).ws;
  });
  const client = await ourClient(listener.addr.port, {
    ...(role === "client" ? { wrap: (c: Deno.Conn) => (counter = countingConn(c)).conn } : {}),
  });
  const server = await accepted;
  listener.close();
  return role === "client"
    ? { sender: client, receiver: server, writes: counter!.writes }
    : { sender: server, receiver: client, writes: counter!.writes };
}

for (const role of ["client", "server"] as const) {
  Deno.test(`1,000 tiny frames queued in one task take far fewer writes (${role})`, async () => {
    const { sender, receiver, writes } = await countedPair(role);
    const before = writes();
    for (let i = 0; i < 1000; i++) sender.sendBinary(new Uint8Array([i & 0xff, i >> 8]));
    assert.ok(sender.bufferedAmount > 0);
    for (let i = 0; i < 1000; i++) {
      const m = await readOne(receiver);
      assert.deepEqual([...m.data], [i & 0xff, i >> 8]);
    }
    await within(sender.drained(), "drained");
    const used = writes() - before;
    assert.ok(used <= 10, `${used} writes for 1,000 frames`);
    await within(Promise.all([sender.close(), receiver.read()]), "close");
    await receiver.closed;
  });
}

Deno.test("a large frame sent with room goes out header and payload in one write", async () => {
  const { sender, receiver, writes } = await countedPair("client");
  const data = pattern(200_000, 8);
  const before = writes();
  sender.sendBinaryWithRoom(withRoom(data), data.length);
  const m = await readOne(receiver);
  await within(sender.drained(), "drained");
  assert.equal(await sha256(m.data), await sha256(data));
  // Loopback takes 200 KB in one write unless the socket buffer is full; allow a partial one.
  assert.ok(writes() - before <= 2, `${writes() - before} writes`);
  await within(Promise.all([sender.close(), receiver.read()]), "close");
  await receiver.closed;
});

Deno.test("a ping flood from a peer that never reads leaves at most one pong queued", async () => {
  const { ws, raw } = await serverWithRawClient();
  try {
    const ping = rawFrame({ opcode: Opcode.Ping, payload: pattern(125, 3) });
    const flood = new Uint8Array(ping.length * 20_000);
    for (let i = 0; i < 20_000; i++) flood.set(ping, i * ping.length);
    const writing = writeAll(raw, flood);
    // A data message after the flood: by the time it is read, every ping was processed.
    const reading = ws.read();
    await within(writing, "flood written");
    await writeAll(raw, rawFrame({ opcode: Opcode.Binary, payload: pattern(10, 4) }));
    const m = await within(reading, "message after the flood");
    assert.deepEqual(m?.data, pattern(10, 4));
    // Pongs are written as the socket takes them; the rest were replaced, never piled up.
    assert.ok(ws.bufferedAmount <= 2 * 127, `bufferedAmount ${ws.bufferedAmount}`);
  } finally {
    ws.abort();
    closeQuietly(raw);
    await ws.closed;
  }
});

Deno.test("concurrent read() calls are served in call order", async () => {
  const server = ourServer();
  const [client, srv] = await Promise.all([ourClient(server.port), server.next()]);
  server.close();
  const reads = [srv.read(), srv.read(), srv.read()];
  client.sendText("one");
  client.sendText("two");
  client.sendText("three");
  const got = await within(Promise.all(reads), "three reads");
  assert.deepEqual(got.map((m) => decoder.decode(m!.data)), ["one", "two", "three"]);
  await within(Promise.all([client.close(), srv.read()]), "close");
});

Deno.test("a peer that sends its close and hangs up at once still reports its code", async () => {
  const { ws, raw } = await serverWithRawClient();
  await writeAll(raw, rawFrame({ opcode: Opcode.Close, payload: new Uint8Array([0x0f, 0xa7]) }));
  raw.close();
  assert.equal(await within(ws.read(), "read"), null);
  const info = await within(ws.closed, "closed");
  assert.equal(info.code, 4007);
});

Deno.test("close() cuts a long reason to 123 bytes of UTF-8", async () => {
  const { ws, raw, reader } = await serverWithRawClient();
  try {
    const closing = ws.close(4000, "ü".repeat(100), 200);
    const f = await within(reader.next(), "close frame");
    assert.ok(f!.payload.length <= 125);
    assert.ok(
      new TextDecoder("utf-8", { fatal: true }).decode(f!.payload.subarray(2)).endsWith("..."),
    );
    await closing;
    await assert.rejects(ws.close(1005), RangeError);
  } finally {
    closeQuietly(raw);
  }
});

Deno.test("bursts, trickles and bursts again arrive intact as the read buffer grows and shrinks", async () => {
  const server = ourServer({ maxMessageBytes: 1 << 20, readBufferBytes: 64 });
  const [client, srv] = await Promise.all([ourClient(server.port), server.next()]);
  server.close();
  try {
    let seq = 0;
    const expect = async (count: number) => {
      for (let i = 0; i < count; i++) {
        const m = await readOne(srv);
        const want = pattern(m.data.length, seq);
        assert.deepEqual(m.data, want, `message ${seq}`);
        assert.equal(m.data.length, (seq * 37) % 3000, `length of message ${seq}`);
        seq++;
      }
    };
    let next = 0;
    const burst = (count: number) => {
      for (let i = 0; i < count; i++, next++) client.sendBinary(pattern((next * 37) % 3000, next));
    };
    burst(2000); // many frames per read: the buffer grows from 64 bytes
    await expect(2000);
    for (let i = 0; i < 40; i++) { // one small frame per read: it shrinks back
      burst(1);
      await expect(1);
    }
    burst(2000);
    await expect(2000);
  } finally {
    await within(Promise.all([client.close(), srv.read()]), "close");
  }
});
