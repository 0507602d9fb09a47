// The benchmark's local TCP service (sink, source, echo on one port), in-process or as a child.
//
// The first byte a user sends picks the behaviour:
//   "U" then data ... EOF  → the service counts the bytes and replies with the count (8 bytes, BE)
//   "D" + 8-byte BE length → the service sends that many bytes, then half-closes
//   "E" then data          → the service echoes everything, half-closing at EOF
//   "A" + 4-byte BE chunk size, then data ... EOF → the service sends an ACK_BYTES acknowledgement
//                             at once and after every full chunk (adb's OKAY after each WRTE),
//                             then half-closes at EOF

/** Mode bytes of the service protocol. */
export const MODE = { upload: 0x55, download: 0x44, echo: 0x45, ack: 0x41 } as const;

/** Size of the acknowledgement the "A" mode sends per chunk (an adb message header). */
export const ACK_BYTES = 24;

/** Bytes the service reads or writes per call; large, so the load generator costs little CPU. */
export const IO_CHUNK_BYTES = 1024 * 1024;

/** Longest a download request may ask for (bounds the source loop). */
const MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024 * 1024;

/** Largest chunk the "A" mode accepts (bounds what it counts before acknowledging). */
const MAX_ACK_CHUNK_BYTES = 64 * 1024 * 1024;

/** A running benchmark service. */
export interface BenchService {
  readonly port: number;
  close(): Promise<void>;
}

/** A buffer of pseudo-random bytes (incompressible, cheap to make). */
export function payload(bytes: number): Uint8Array {
  const buf = new Uint8Array(bytes);
  for (let off = 0; off < bytes; off += 65536) {
    crypto.getRandomValues(buf.subarray(off, Math.min(bytes, off + 65536)));
  }
  return buf;
}

/** Writes every byte of `data`. */
export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.byteLength) off += await conn.write(off === 0 ? data : data.subarray(off));
}

/** Reads exactly `buf.byteLength` bytes; throws at an early EOF. */
export async function readExactly(conn: Deno.Conn, buf: Uint8Array): Promise<void> {
  let got = 0;
  while (got < buf.byteLength) {
    const n = await conn.read(got === 0 ? buf : buf.subarray(got));
    if (n === null) throw new Error(`connection ended after ${got} of ${buf.byteLength} bytes`);
    got += n;
  }
}

function safeClose(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

async function serveConn(conn: Deno.TcpConn, source: Uint8Array): Promise<void> {
  conn.setNoDelay(true);
  const buf = new Uint8Array(IO_CHUNK_BYTES);
  const first = await conn.read(buf);
  if (first === null) return;
  switch (buf[0]) {
    case MODE.upload: {
      let count = first - 1;
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        count += n;
      }
      const reply = new Uint8Array(8);
      new DataView(reply.buffer).setBigUint64(0, BigInt(count));
      await writeAll(conn, reply);
      await conn.closeWrite();
      return;
    }
    case MODE.download: {
      let have = first;
      while (have < 9) {
        const n = await conn.read(buf.subarray(have, 9));
        if (n === null) return;
        have += n;
      }
      const want = Number(new DataView(buf.buffer, 1, 8).getBigUint64(0));
      if (want > MAX_DOWNLOAD_BYTES) return;
      let sent = 0;
      while (sent < want) {
        const n = Math.min(source.byteLength, want - sent);
        await writeAll(conn, source.subarray(0, n));
        sent += n;
      }
      await conn.closeWrite();
      // Wait for the user's EOF so the user, not the service, closes first.
      while ((await conn.read(buf)) !== null) {
        // discard
      }
      return;
    }
    case MODE.ack: {
      let have = first;
      while (have < 5) {
        const n = await conn.read(buf.subarray(have, 5));
        if (n === null) return;
        have += n;
      }
      const chunk = new DataView(buf.buffer, 1, 4).getUint32(0);
      if (chunk < 1 || chunk > MAX_ACK_CHUNK_BYTES) return;
      const ack = new Uint8Array(ACK_BYTES);
      // The first acknowledgement says the connection reached the service.
      await writeAll(conn, ack);
      let pending = have - 5;
      while (true) {
        // A sender waits for each acknowledgement, so at most one chunk is ever outstanding.
        while (pending >= chunk) {
          pending -= chunk;
          await writeAll(conn, ack);
        }
        const n = await conn.read(buf);
        if (n === null) break;
        pending += n;
      }
      await conn.closeWrite();
      return;
    }
    case MODE.echo: {
      if (first > 1) await writeAll(conn, buf.subarray(1, first));
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        await writeAll(conn, buf.subarray(0, n));
      }
      await conn.closeWrite();
      return;
    }
    default:
      return;
  }
}

/** Starts the service on `hostname:port` (port 0 = any). */
export function startBenchService(hostname = "127.0.0.1", port = 0): BenchService {
  const listener = Deno.listen({ hostname, port });
  const source = payload(IO_CHUNK_BYTES);
  const conns = new Set<Deno.TcpConn>();
  const tasks = new Set<Promise<void>>();
  const loop = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      const task = serveConn(conn, source).catch(() => {}).finally(() => {
        conns.delete(conn);
        safeClose(conn);
      });
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      try {
        listener.close();
      } catch {
        // already closed
      }
      for (const c of conns) safeClose(c);
      await loop;
      await Promise.all([...tasks]);
    },
  };
}

if (import.meta.main) {
  const service = startBenchService("127.0.0.1", Number(Deno.args[0] ?? 0));
  console.log(`bench service on 127.0.0.1:${service.port}`);
  const stop = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGTERM", () => stop.resolve());
  Deno.addSignalListener("SIGINT", () => stop.resolve());
  await stop.promise;
  await service.close();
  Deno.exit(0);
}
