// One-way WebSocket throughput on loopback: our RFC 6455 WsConn vs Deno's built-in pair.
//
//   deno run -A scripts/ws_throughput.ts [--mib 1024] [--message-kib 256] [--rounds 3]
//                                        [--only ours,deno]
//
// Cases run round-robin --rounds times (so background load hits them alike) and the table shows
// medians. Each case runs the receiver as a child process (this script with --receive) and the sender
// here, sends --mib MiB in --message-kib messages, and reports MB/s and CPU seconds of each
// process (process.cpuUsage: user + system, all threads). The receiver answers with a text
// message once every byte arrived, so the time covers delivery, not just queueing.
import process from "node:process";
import { parseArgs } from "node:util";
import { WsConn } from "../shared/ws_conn.ts";
import { MAX_WS_HEADER_BYTES } from "../shared/ws_frames.ts";
import {
  checkUpgradeRequest,
  clientHandshake,
  parseRequestHead,
  readHead,
  serverHandshakeResponse,
} from "../shared/ws_handshake.ts";

const LOOPBACK = "127.0.0.1";
/** Sender backpressure: pause above this many queued bytes, resume at the low mark. */
const HIGH_WATER = 4 << 20;
const LOW_WATER = 1 << 20;
const CASE_TIMEOUT_MS = 180_000;
const MAX_MIB = 16 * 1024;

type Receiver = "ours" | "deno";
type Sender = "ours-room" | "ours-copy" | "ours-random-mask" | "deno";

interface Case {
  readonly name: string;
  readonly sender: Sender;
  readonly receiver: Receiver;
}

const CASES: Case[] = [
  { name: "ours -> ours (sendBinaryWithRoom)", sender: "ours-room", receiver: "ours" },
  { name: "ours -> ours (sendBinary)", sender: "ours-copy", receiver: "ours" },
  { name: "ours (random mask) -> ours", sender: "ours-random-mask", receiver: "ours" },
  { name: "Deno WebSocket -> Deno.upgradeWebSocket", sender: "deno", receiver: "deno" },
  { name: "ours -> Deno.upgradeWebSocket", sender: "ours-room", receiver: "deno" },
  { name: "Deno WebSocket -> ours", sender: "deno", receiver: "ours" },
];

interface CpuSeconds {
  readonly user: number;
  readonly system: number;
}

function cpuSince(start: NodeJS.CpuUsage): CpuSeconds {
  const d = process.cpuUsage(start);
  return { user: d.user / 1e6, system: d.system / 1e6 };
}

// ---- receiver (child process) ----

async function receive(kind: Receiver, total: number, maxMessage: number): Promise<void> {
  if (kind === "deno") return receiveDeno(total);
  const listener = Deno.listen({ hostname: LOOPBACK, port: 0 });
  console.log(`PORT ${listener.addr.port}`);
  const conn = await listener.accept();
  listener.close();
  const cpu = process.cpuUsage();
  const { head, leftover } = await readHead(conn, { maxBytes: 16384, timeoutMs: 10_000 });
  const req = parseRequestHead(head);
  const bad = checkUpgradeRequest(req.method, req.headers);
  if (bad) throw new Error(bad);
  const response = await serverHandshakeResponse(req.headers.get("sec-websocket-key")!);
  for (let off = 0; off < response.length;) off += await conn.write(response.subarray(off));
  const ws = new WsConn(conn, { role: "server", maxMessageBytes: maxMessage, leftover });
  let got = 0;
  while (got < total) {
    const m = await ws.read();
    if (m === null) throw new Error(`sender closed after ${got} bytes`);
    got += m.data.byteLength;
  }
  ws.sendText(JSON.stringify({ bytes: got, cpu: cpuSince(cpu) }));
  // The sender closes once it has our answer.
  while ((await ws.read()) !== null) {
    // nothing else is expected
  }
  await ws.closed;
}

async function receiveDeno(total: number): Promise<void> {
  const done = Promise.withResolvers<void>();
  let cpu: NodeJS.CpuUsage | null = null;
  const server = Deno.serve({
    hostname: LOOPBACK,
    port: 0,
    onListen: ({ port }) => console.log(`PORT ${port}`),
  }, (req) => {
    cpu = process.cpuUsage();
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.binaryType = "arraybuffer";
    let got = 0;
    socket.onmessage = (e) => {
      got += (e.data as ArrayBuffer).byteLength;
      if (got === total) socket.send(JSON.stringify({ bytes: got, cpu: cpuSince(cpu!) }));
    };
    socket.onclose = () => done.resolve();
    return response;
  });
  await done.promise;
  await server.shutdown();
}

// ---- sender (this process) ----

interface Result {
  readonly seconds: number;
  readonly senderCpu: CpuSeconds;
  readonly receiverCpu: CpuSeconds;
}

async function sendOurs(kind: Sender, port: number, total: number, size: number) {
  const tcp = await Deno.connect({ hostname: LOOPBACK, port });
  const { leftover } = await clientHandshake(tcp, {
    host: `${LOOPBACK}:${port}`,
    path: "/",
    timeoutMs: 10_000,
  });
  const ws = new WsConn(tcp, {
    role: "client",
    maxMessageBytes: 1 << 20,
    leftover,
    zeroMask: kind !== "ours-random-mask",
  });
  // One buffer reused for every message: with a zero mask each header written into its room
  // is identical, so rewriting it under a queued frame changes nothing.
  const room = noise(MAX_WS_HEADER_BYTES + size);
  const plain = room.subarray(MAX_WS_HEADER_BYTES);
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (let sent = 0; sent < total; sent += size) {
    if (kind === "ours-copy") ws.sendBinary(plain);
    else ws.sendBinaryWithRoom(room, size);
    if (ws.bufferedAmount > HIGH_WATER) await ws.drained(LOW_WATER);
  }
  const answer = await ws.read();
  const seconds = (performance.now() - started) / 1000;
  const senderCpu = cpuSince(cpu);
  if (answer === null) throw new Error("receiver closed without an answer");
  await ws.close();
  return { seconds, senderCpu, answer: new TextDecoder().decode(answer.data) };
}

async function sendDeno(port: number, total: number, size: number) {
  const ws = new WebSocket(`ws://${LOOPBACK}:${port}/`);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("WebSocket failed to open"));
  });
  const answered = new Promise<string>((resolve) => (ws.onmessage = (e) => resolve(e.data)));
  const closed = new Promise((resolve) => (ws.onclose = resolve));
  const msg = noise(size);
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (let sent = 0; sent < total; sent += size) {
    // The built-in client has no drain event: poll bufferedAmount, as the old data path did.
    while (ws.bufferedAmount > HIGH_WATER) await new Promise((r) => setTimeout(r, 0));
    ws.send(msg);
  }
  const answer = await answered;
  const seconds = (performance.now() - started) / 1000;
  const senderCpu = cpuSince(cpu);
  ws.close();
  await closed;
  return { seconds, senderCpu, answer };
}

async function firstLine(stream: ReadableStream<Uint8Array>): Promise<string> {
  const reader = stream.getReader();
  let text = "";
  const dec = new TextDecoder();
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += dec.decode(value, { stream: true });
  }
  reader.releaseLock();
  return text.split("\n")[0]!;
}

async function runCase(c: Case, total: number, size: number): Promise<Result> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      import.meta.filename!,
      "--receive",
      c.receiver,
      "--bytes",
      String(total),
      "--max-message",
      String(size),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let exited = false;
  const timer = setTimeout(() => child.kill("SIGKILL"), CASE_TIMEOUT_MS);
  try {
    const line = await firstLine(child.stdout);
    const port = Number(/^PORT (\d+)$/.exec(line)?.[1]);
    if (!port) throw new Error(`receiver did not start: ${JSON.stringify(line)}`);
    const r = c.sender === "deno"
      ? await sendDeno(port, total, size)
      : await sendOurs(c.sender, port, total, size);
    const report = JSON.parse(r.answer) as { bytes: number; cpu: CpuSeconds };
    if (report.bytes !== total) throw new Error(`receiver got ${report.bytes} of ${total}`);
    const status = await child.status;
    exited = true;
    if (!status.success) throw new Error(`receiver exited with ${status.code}`);
    return { seconds: r.seconds, senderCpu: r.senderCpu, receiverCpu: report.cpu };
  } finally {
    clearTimeout(timer);
    if (!exited) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      await child.status;
    }
    await child.stdout.cancel().catch(() => {});
  }
}

/** Incompressible-looking bytes (getRandomValues takes at most 64 KiB per call). */
function noise(size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let off = 0; off < size; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(size, off + 65536)));
  }
  return out;
}

function pad(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      mib: { type: "string", default: "1024" },
      "message-kib": { type: "string", default: "256" },
      only: { type: "string" },
      rounds: { type: "string", default: "3" },
      receive: { type: "string" },
      bytes: { type: "string" },
      "max-message": { type: "string" },
    },
  });
  if (values.receive) {
    const kind = values.receive === "deno" ? "deno" : "ours";
    await receive(kind, Number(values.bytes), Number(values["max-message"]));
    return;
  }
  const mib = Number(values.mib);
  const kib = Number(values["message-kib"]);
  if (!(mib > 0 && mib <= MAX_MIB) || !(kib > 0 && kib <= 1024) || (mib * 1024) % kib !== 0) {
    throw new RangeError(`--mib 1..${MAX_MIB} and --message-kib 1..1024 dividing it`);
  }
  const total = mib * 1024 * 1024;
  const size = kib * 1024;
  const only = values.only?.split(",");
  const cases = CASES.filter((c) =>
    !only || only.some((o) => c.name.toLowerCase().startsWith(o.toLowerCase()))
  );
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 9) throw new RangeError("--rounds 1..9");
  const gib = total / 2 ** 30;
  const results = new Map<Case, Result[]>(cases.map((c) => [c, []]));
  for (let round = 0; round < rounds; round++) {
    for (const c of cases) results.get(c)!.push(await runCase(c, total, size));
  }
  console.log(
    `${mib} MiB one way in ${kib} KiB messages, loopback, Deno ${Deno.version.deno}, ` +
      `median of ${rounds} round(s) (MB/s per round in brackets)`,
  );
  console.log(
    pad("case", 42) + pad("MB/s", 7, true) + pad("send CPU s", 12, true) +
      pad("recv CPU s", 12, true) + pad("CPU s/GiB", 11, true) + "  rounds",
  );
  const cpu = (c: CpuSeconds) => c.user + c.system;
  for (const c of cases) {
    const rs = results.get(c)!;
    const rates = rs.map((r) => total / 1e6 / r.seconds);
    const send = median(rs.map((r) => cpu(r.senderCpu)));
    const recv = median(rs.map((r) => cpu(r.receiverCpu)));
    const both = median(rs.map((r) => cpu(r.senderCpu) + cpu(r.receiverCpu)));
    console.log(
      pad(c.name, 42) +
        pad(median(rates).toFixed(0), 7, true) +
        pad(send.toFixed(2), 12, true) +
        pad(recv.toFixed(2), 12, true) +
        pad((both / gib).toFixed(2), 11, true) +
        `  [${rates.map((r) => r.toFixed(0)).join(", ")}]`,
    );
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

if (import.meta.main) await main();
