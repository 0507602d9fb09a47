// Datagrams on a stream: framing, reading across arbitrary splits, and the limits.
import assert from "node:assert/strict";
import { DatagramReader, frameDatagram } from "../../shared/datagrams.ts";
import { memoryPipe } from "../../shared/mem_pipe.ts";
import { MAX_DATAGRAM_BYTES, ProtocolError } from "../../shared/protocol.ts";

Deno.test("datagrams written in one go or a byte at a time come out whole and in order", async () => {
  const sizes = [0, 1, 2, 512, 1500, 65_507];
  const datagrams = sizes.map((n, i) => new Uint8Array(n).fill(i + 1));
  const stream = new Uint8Array(sizes.reduce((s, n) => s + n + 2, 0));
  let off = 0;
  for (const d of datagrams) {
    const f = frameDatagram(d);
    stream.set(f, off);
    off += f.byteLength;
  }
  for (const step of [stream.byteLength, 1, 7, 4096]) {
    const [a, b] = memoryPipe();
    const writing = (async () => {
      for (let i = 0; i < stream.byteLength; i += step) {
        await a.write(stream.subarray(i, Math.min(stream.byteLength, i + step)));
      }
      await a.closeWrite();
    })();
    const reader = new DatagramReader(b.asConn());
    for (const want of datagrams) assert.deepEqual(await reader.next(), want, `step ${step}`);
    assert.equal(await reader.next(), null);
    await writing;
    a.close();
    b.close();
  }
});

Deno.test("a datagram over 65,507 bytes is refused when framed and when read", async () => {
  assert.throws(() => frameDatagram(new Uint8Array(MAX_DATAGRAM_BYTES + 1)), RangeError);
  const [a, b] = memoryPipe();
  await a.write(new Uint8Array([0xff, 0xff, 0]));
  await assert.rejects(
    new DatagramReader(b.asConn()).next(),
    (e: unknown) =>
      e instanceof ProtocolError &&
      e.message === "datagram length 65535 exceeds the 65507-byte limit",
  );
  a.close();
  b.close();
});

Deno.test("a stream that ends inside a datagram is an error, not a short datagram", async () => {
  const [a, b] = memoryPipe();
  await a.write(new Uint8Array([0, 10, 1, 2, 3]));
  await a.closeWrite();
  await assert.rejects(
    new DatagramReader(b.asConn()).next(),
    (e: unknown) =>
      e instanceof ProtocolError && e.message === "the stream ended inside a datagram",
  );
  a.close();
  b.close();
});

Deno.test("offer() queues under the high-water mark and drops above it, never waiting", async () => {
  const [a, b] = memoryPipe();
  const chunk = new Uint8Array(64 * 1024);
  let accepted = 0;
  for (let i = 0; i < 10; i++) if (a.offer(chunk)) accepted++;
  assert.equal(accepted, 4, "256 KiB of queue: four 64 KiB datagrams");
  const buf = new Uint8Array(64 * 1024);
  assert.equal(await b.read(buf), 64 * 1024);
  assert.equal(a.offer(chunk), true, "room again once the reader took some");
  a.close();
  assert.equal(a.offer(chunk), false, "a closed end takes nothing");
  b.close();
});
