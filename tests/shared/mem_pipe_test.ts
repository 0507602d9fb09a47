// Tests of the in-process duplex pipe: order, backpressure, clean EOF and aborts, like a TCP pair.
import assert from "node:assert/strict";
import { memoryPipe, PIPE_HIGH_WATER, type PipeEnd } from "../../shared/mem_pipe.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Reads until EOF. */
async function readToEof(end: PipeEnd, size = 7): Promise<Uint8Array> {
  const parts: number[] = [];
  const buf = new Uint8Array(size);
  for (;;) {
    const n = await end.read(buf);
    if (n === null) return Uint8Array.from(parts);
    parts.push(...buf.subarray(0, n));
  }
}

/** "pending" if `p` has not settled once every queued task ran, else its outcome. */
async function state(p: Promise<unknown>): Promise<"pending" | "resolved" | "rejected"> {
  let s: "pending" | "resolved" | "rejected" = "pending";
  p.then(() => (s = "resolved"), () => (s = "rejected"));
  await new Promise((r) => setTimeout(r, 0));
  return s;
}

Deno.test("a pipe delivers bytes in order, across reads of any size, both ways", async () => {
  const [a, b] = memoryPipe();
  for (const piece of ["hello ", "pipe ", "", "world", "!"]) await a.write(enc.encode(piece));
  await a.closeWrite();
  assert.equal(dec.decode(await readToEof(b, 3)), "hello pipe world!");
  await b.write(enc.encode("back"));
  await b.closeWrite();
  assert.equal(dec.decode(await readToEof(a)), "back");
  a.close();
  b.close();
});

Deno.test("a pipe copies what is written: later changes to the buffer are not seen", async () => {
  const [a, b] = memoryPipe();
  const data = enc.encode("abc");
  await a.write(data);
  data[0] = 120;
  const buf = new Uint8Array(8);
  assert.equal(await b.read(buf), 3);
  assert.equal(dec.decode(buf.subarray(0, 3)), "abc");
  a.close();
  b.close();
});

Deno.test("a writer waits once PIPE_HIGH_WATER bytes are unread, and goes on when read", async () => {
  const [a, b] = memoryPipe();
  await a.write(new Uint8Array(PIPE_HIGH_WATER));
  const blocked = a.write(new Uint8Array([1, 2, 3]));
  assert.equal(await state(blocked), "pending");
  const buf = new Uint8Array(1024);
  assert.equal(await b.read(buf), 1024);
  assert.equal(await blocked, 3);
  // Everything arrives: the high-water mark's bytes, then the three that waited.
  let total = 1024;
  let last: number[] = [];
  while (total < PIPE_HIGH_WATER + 3) {
    const n = (await b.read(buf))!;
    total += n;
    last = [...buf.subarray(0, n)];
  }
  assert.equal(total, PIPE_HIGH_WATER + 3);
  assert.deepEqual(last.slice(-3), [1, 2, 3]);
  a.close();
  b.close();
});

Deno.test("a reader waits for data and gets EOF after the peer's closeWrite", async () => {
  const [a, b] = memoryPipe();
  const buf = new Uint8Array(16);
  const first = b.read(buf);
  assert.equal(await state(first), "pending");
  await a.write(enc.encode("late"));
  assert.equal(await first, 4);
  await a.write(enc.encode("tail"));
  await a.closeWrite();
  assert.equal(await b.read(buf), 4);
  assert.equal(dec.decode(buf.subarray(0, 4)), "tail");
  assert.equal(await b.read(buf), null);
  assert.equal(await b.read(buf), null);
  // The other direction stays open after a half-close.
  await b.write(enc.encode("reply"));
  assert.equal(await a.read(buf), 5);
  a.close();
  b.close();
});

Deno.test("writing after closeWrite fails with BrokenPipe", async () => {
  const [a, b] = memoryPipe();
  await a.closeWrite();
  await assert.rejects(() => a.write(enc.encode("x")), Deno.errors.BrokenPipe);
  a.close();
  b.close();
});

Deno.test("close() without closeWrite aborts: the peer's read throws ConnectionReset", async () => {
  const [a, b] = memoryPipe();
  await a.write(enc.encode("never read"));
  a.close();
  await assert.rejects(() => b.read(new Uint8Array(16)), Deno.errors.ConnectionReset);
  await assert.rejects(() => b.write(enc.encode("x")), Deno.errors.BrokenPipe);
  b.close();
});

Deno.test("close() wakes a peer blocked in read with ConnectionReset", async () => {
  const [a, b] = memoryPipe();
  const pending = b.read(new Uint8Array(16));
  assert.equal(await state(pending), "pending");
  a.close();
  await assert.rejects(() => pending, Deno.errors.ConnectionReset);
  b.close();
});

Deno.test("close() wakes a peer blocked in write at the high-water mark with BrokenPipe", async () => {
  const [a, b] = memoryPipe();
  await b.write(new Uint8Array(PIPE_HIGH_WATER));
  const blocked = b.write(new Uint8Array(1));
  assert.equal(await state(blocked), "pending");
  a.close();
  await assert.rejects(() => blocked, Deno.errors.BrokenPipe);
  b.close();
});

Deno.test("data written before closeWrite is still delivered after close()", async () => {
  const [a, b] = memoryPipe();
  await a.write(enc.encode("every "));
  await a.write(enc.encode("byte"));
  await a.closeWrite();
  a.close();
  assert.equal(dec.decode(await readToEof(b)), "every byte");
});

Deno.test("a closed end refuses reads, writes and closeWrite with BadResource", async () => {
  const [a, b] = memoryPipe();
  a.close();
  assert.equal(a.closed, true);
  assert.equal(b.closed, false);
  await assert.rejects(() => a.read(new Uint8Array(1)), Deno.errors.BadResource);
  await assert.rejects(() => a.write(new Uint8Array(1)), Deno.errors.BadResource);
  await assert.rejects(() => a.closeWrite(), Deno.errors.BadResource);
  a.close(); // twice is harmless
  b.close();
});
