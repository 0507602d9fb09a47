// End-to-end harness: spawns the real mport-server and mport client processes and TCP test services.

import { CLIENT_MAIN, LineReader, SERVER_MAIN } from "../../scripts/mport_procs.ts";
import { echo, readToEnd, startService, type TcpService } from "../support/tcp_services.ts";

/** A spawned mport process. */
export class Proc {
  readonly child: Deno.ChildProcess;
  readonly stdout: LineReader;
  readonly stderr: LineReader;
  #status: Promise<Deno.CommandStatus>;

  constructor(child: Deno.ChildProcess) {
    this.child = child;
    this.stdout = new LineReader(child.stdout);
    this.stderr = new LineReader(child.stderr);
    this.#status = child.status;
  }

  /** Resolves with the exit status once the process is gone and its output read. */
  async status(): Promise<Deno.CommandStatus> {
    const s = await this.#status;
    await Promise.all([this.stdout.done, this.stderr.done]);
    return s;
  }

  /** Sends a signal (ignores a process that is already gone) and waits for the exit. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    try {
      this.child.kill(signal);
    } catch {
      // already exited
    }
    return await this.status();
  }

  /** Everything the process printed, for failure messages. */
  output(): string {
    return `--- stdout\n${this.stdout.lines.join("\n")}\n--- stderr\n${
      this.stderr.lines.join("\n")
    }`;
  }
}

function spawn(main: string, args: string[], env: Record<string, string> = {}): Proc {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-net", main, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  return new Proc(child);
}

/** A running mport-server process. */
export interface ServerProc extends Proc {
  /** `ws://127.0.0.1:PORT` for clients. */
  readonly wsUrl: string;
  readonly httpUrl: string;
  readonly port: number;
}

/** Default token used by e2e tests. */
export const TEST_TOKEN = "e2e-test-token-0123456789";

/**
 * Starts mport-server on 127.0.0.1 (port 0 unless `--listen` is among `args`) and waits for its
 * "listening" line. Public ports come from `range` (default: a random block of 50).
 */
export async function startServer(
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<ServerProc> {
  const hasListen = args.includes("--listen");
  const hasRange = args.includes("--port-range");
  const hasToken = args.includes("--token") || args.includes("--tokens-file");
  const hasDb = args.includes("--db");
  // Below Linux's ephemeral range (32768+), so outgoing sockets never hold a test's public port.
  const low = 20000 + Math.floor(Math.random() * 120) * 100;
  const full = [
    ...(hasListen ? [] : ["--listen", "127.0.0.1:0"]),
    ...(hasRange ? [] : ["--port-range", `${low}-${low + 99}`]),
    ...(hasToken ? [] : ["--token", TEST_TOKEN]),
    ...(hasDb ? [] : ["--db", ":memory:"]),
    "--bind",
    "127.0.0.1",
    "--stats-interval",
    "0",
    ...args,
  ];
  const p = spawn(SERVER_MAIN, full, env);
  let m: RegExpMatchArray;
  try {
    m = await p.stdout.wait(/listening on (https?):\/\/([^ ]+):(\d+)/);
  } catch (e) {
    await p.stop("SIGKILL");
    throw new Error(`${(e as Error).message}\n${p.output()}`);
  }
  const port = Number(m[3]);
  const ws = m[1] === "https" ? "wss" : "ws";
  return Object.assign(p, {
    port,
    wsUrl: `${ws}://127.0.0.1:${port}`,
    httpUrl: `${m[1]}://127.0.0.1:${port}`,
  });
}

let configHome: string | null = null;

/**
 * A config directory for the client processes of this test run (removed when it ends), so they
 * keep their client id there rather than in the user's home. They all share one id, like several
 * runs on one machine, unless a test passes `--client-id-file`.
 */
function testConfigHome(): string {
  if (configHome === null) {
    const dir = Deno.makeTempDirSync({ prefix: "mport-e2e-config-" });
    configHome = dir;
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // already gone
      }
    });
  }
  return configHome;
}

/** Starts an mport client process with `args` (e.g. `["tcp", "127.0.0.1:9", "--server", url]`). */
export function startClient(args: string[], env: Record<string, string> = {}): Proc {
  const hasToken = args.includes("--token");
  return spawn(CLIENT_MAIN, [...args, ...(hasToken ? [] : ["--token", TEST_TOKEN])], {
    XDG_CONFIG_HOME: testConfigHome(),
    ...env,
  });
}

/** Waits for the client's tunnel line and returns the public port. */
export async function tunnelPort(client: Proc, from = 0, timeoutMs = 15_000): Promise<number> {
  const m = await client.stdout.wait(/ tcp:\/\/[^ ]+:(\d+) -> /, timeoutMs, from);
  return Number(m[1]);
}

/** A TCP echo service that honours half-close: echoes, then closes its write side at EOF. */
export type EchoServer = TcpService;

/** Starts an in-process TCP echo service on 127.0.0.1. */
export function startEcho(): EchoServer {
  return startService(echo);
}

/** Reads until EOF, returning every byte (bounded by `limit`); rejects on a reset or past `limit`. */
export async function readAll(conn: Deno.Conn, limit = 512 * 1024 * 1024): Promise<Uint8Array> {
  const r = await readToEnd(conn, { keep: true, limit });
  if (r.end === "limit") throw new Error(`more than ${limit} bytes`);
  if (r.end !== "EOF") throw new Error(`read ended with ${r.end} after ${r.bytes} bytes`);
  return r.data ?? new Uint8Array();
}

/** SHA-256 of bytes, hex. */
export async function sha256(data: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Connects to 127.0.0.1:port, retrying briefly while the listener comes up (connection refused).
 * Any other failure is thrown at once: a connection the server accepted and reset (a refusal) can
 * fail `Deno.connect` with ConnectionReset, and a retry would be a second connection.
 */
export async function connect(port: number, timeoutMs = 5000): Promise<Deno.TcpConn> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      return await Deno.connect({ hostname: "127.0.0.1", port });
    } catch (e) {
      if (!(e instanceof Deno.errors.ConnectionRefused) || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

/** How a connection that the server refuses ended, and the bytes read before that. */
export interface RefusedConnection {
  readonly end: "eof" | "reset";
  readonly bytes: number;
}

/**
 * Connects once to a public port whose server is expected to refuse the connection, and reads
 * until it is closed. A server that accepts and resets at once can fail `Deno.connect` itself
 * with ConnectionReset: that is a "reset" with 0 bytes, not a reason to connect again.
 */
export async function refusedConnection(
  port: number,
  timeoutMs = 5000,
): Promise<RefusedConnection> {
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionReset) return { end: "reset", bytes: 0 };
    throw e;
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const buf = new Uint8Array(64 * 1024);
    let bytes = 0;
    const read = (async (): Promise<RefusedConnection> => {
      try {
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) return { end: "eof", bytes };
          bytes += n;
        }
      } catch (e) {
        if (e instanceof Deno.errors.ConnectionReset) return { end: "reset", bytes };
        throw e;
      }
    })();
    read.catch(() => {}); // after a timeout, close() below makes the pending read fail
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`port ${port} kept the connection open for ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    return await Promise.race([read, late]);
  } finally {
    clearTimeout(timer);
    conn.close();
  }
}

/** Sends `data` then half-closes, while reading the reply to EOF; returns the reply. */
export async function roundTrip(conn: Deno.Conn, data: Uint8Array): Promise<Uint8Array> {
  const reading = readAll(conn);
  let off = 0;
  while (off < data.byteLength) off += await conn.write(data.subarray(off));
  await conn.closeWrite();
  return await reading;
}

/** Fetches the server's /metrics and returns the value of one series (0 when absent). */
export async function metric(server: ServerProc, series: string): Promise<number> {
  const text = await (await fetch(`${server.httpUrl}/metrics`)).text();
  for (const line of text.split("\n")) {
    if (line.startsWith(series + " ")) return Number(line.slice(series.length + 1));
  }
  return 0;
}
