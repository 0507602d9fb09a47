// A guided demo: real server, client and echo service on 127.0.0.1, traffic through the tunnel.
import { parseArgs } from "node:util";
import {
  type ClientProc,
  type Proc,
  randomToken,
  type ServerProc,
  startClientProc,
  startServerProc,
} from "./mport_procs.ts";

const USAGE = `Usage: deno task demo [--keep]

Starts mport-server on 127.0.0.1 (random token), a local echo service (on 127.0.0.1:5555 when that
port is free) and the mport client as real processes, sends messages and a 16 MiB hashed transfer
through the public port, prints the server's /metrics and stops everything.

  --keep      keep everything running until Ctrl-C, to try the tunnel by hand (nc 127.0.0.1 PORT)
  -h, --help  show this help
`;

/** The port adb uses; the demo's echo service takes it when free so the client prints `adb connect`. */
const ADB_PORT = 5555;
/** Size of the hashed transfer. */
const TRANSFER_BYTES = 16 * 1024 * 1024;
/** Bound on everything except `--keep`'s wait (first runs may fetch npm packages). */
const DEMO_TIMEOUT_MS = 180_000;
/** Bound on one network step. */
const STEP_TIMEOUT_MS = 30_000;
const MESSAGES = ["hello through the tunnel", "mport keeps the public side raw TCP", "bye"];
/** Metric series shown at the end. */
const METRIC_NAMES = [
  "mport_connections_total",
  "mport_connections_active",
  "mport_connections_peak",
  "mport_bytes_in_total",
  "mport_bytes_out_total",
  "mport_tunnels_active",
  "mport_clients_connected",
  "mport_data_connections",
  "mport_streams_opened_total",
];

/** A TCP echo service that logs connections when asked to. */
interface Echo {
  readonly port: number;
  verbose: boolean;
  close(): Promise<void>;
}

function listenEcho(): { listener: Deno.TcpListener; onAdbPort: boolean } {
  try {
    return { listener: Deno.listen({ hostname: "127.0.0.1", port: ADB_PORT }), onAdbPort: true };
  } catch (e) {
    if (!(e instanceof Deno.errors.AddrInUse) && !(e instanceof Deno.errors.PermissionDenied)) {
      throw e;
    }
    return { listener: Deno.listen({ hostname: "127.0.0.1", port: 0 }), onAdbPort: false };
  }
}

function startEcho(listener: Deno.TcpListener): Echo {
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  const echo: Echo = {
    port: (listener.addr as Deno.NetAddr).port,
    verbose: false,
    async close() {
      try {
        listener.close();
      } catch {
        // closed
      }
      for (const c of conns) closeQuietly(c);
      await loop;
      await Promise.all([...tasks]);
    },
  };
  const serve = async (conn: Deno.Conn) => {
    const from = conn.remoteAddr as Deno.NetAddr;
    if (echo.verbose) say(`echo service: connection from ${from.hostname}:${from.port}`);
    const buf = new Uint8Array(64 * 1024);
    let total = 0;
    try {
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        total += n;
        await writeAll(conn, buf.subarray(0, n));
      }
      await conn.closeWrite();
    } catch {
      // peer went away
    }
    if (echo.verbose) {
      say(`echo service: ${from.hostname}:${from.port} closed after ${total} bytes`);
    }
  };
  const loop = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      const task = serve(conn).finally(() => {
        conns.delete(conn);
        closeQuietly(conn);
      });
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })().catch(() => {});
  return echo;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // closed
  }
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.byteLength) off += await conn.write(data.subarray(off));
}

function say(line = ""): void {
  console.log(line);
}

/** Runs `work` on a new connection to 127.0.0.1:port, closing it when done or after the timeout. */
async function withConn<T>(port: number, what: string, work: (c: Deno.TcpConn) => Promise<T>) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    closeQuietly(conn);
  }, STEP_TIMEOUT_MS);
  try {
    return await work(conn);
  } catch (e) {
    if (timedOut) throw new Error(`${what} did not finish within ${STEP_TIMEOUT_MS / 1000} s`);
    throw e;
  } finally {
    clearTimeout(timer);
    closeQuietly(conn);
  }
}

/** Sends each message as a line and reads its echo back. */
async function sendMessages(port: number): Promise<void> {
  await withConn(port, "sending messages", async (conn) => {
    const enc = new TextEncoder();
    const dec = new TextDecoder();
    const buf = new Uint8Array(4096);
    let pending = "";
    for (const msg of MESSAGES) {
      const t0 = performance.now();
      await writeAll(conn, enc.encode(msg + "\n"));
      while (!pending.includes("\n")) {
        const n = await conn.read(buf);
        if (n === null) {
          throw new Error("the tunnel closed the connection before the echo came back");
        }
        pending += dec.decode(buf.subarray(0, n), { stream: true });
      }
      const i = pending.indexOf("\n");
      const back = pending.slice(0, i);
      pending = pending.slice(i + 1);
      if (back !== msg) throw new Error(`sent "${msg}" but got back "${back}"`);
      say(`  sent "${msg}"  →  got back "${back}"  (${(performance.now() - t0).toFixed(1)} ms)`);
    }
    await conn.closeWrite();
  });
}

async function sha256(data: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Echoes 16 MiB of random bytes through the tunnel and compares SHA-256 of both ends. */
async function hashedTransfer(port: number): Promise<void> {
  const data = new Uint8Array(TRANSFER_BYTES);
  for (let off = 0; off < data.byteLength; off += 65536) {
    crypto.getRandomValues(data.subarray(off, off + 65536));
  }
  const sentHash = await sha256(data);
  const received = new Uint8Array(TRANSFER_BYTES);
  const seconds = await withConn(port, "the 16 MiB transfer", async (conn) => {
    const t0 = performance.now();
    const reading = (async () => {
      let got = 0;
      while (true) {
        const n = await conn.read(received.subarray(Math.min(got, TRANSFER_BYTES - 1)));
        if (n === null) return got;
        got += n;
        if (got > TRANSFER_BYTES) throw new Error("the echo returned more bytes than were sent");
      }
    })();
    await writeAll(conn, data);
    await conn.closeWrite();
    const got = await reading;
    if (got !== TRANSFER_BYTES) throw new Error(`sent ${TRANSFER_BYTES} bytes, got ${got} back`);
    return (performance.now() - t0) / 1000;
  });
  const backHash = await sha256(received);
  if (backHash !== sentHash) throw new Error(`SHA-256 differs: sent ${sentHash}, got ${backHash}`);
  const mbps = TRANSFER_BYTES / 1e6 / seconds;
  say(
    `  16 MiB there and back in ${(seconds * 1000).toFixed(0)} ms ` +
      `(${mbps.toFixed(0)} MB/s each way, both directions at once)`,
  );
  say(`  SHA-256 sent = received = ${sentHash}`);
}

async function showMetrics(server: ServerProc): Promise<void> {
  const res = await fetch(`${server.httpUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  const lines = text.split("\n").filter((l) => METRIC_NAMES.some((n) => l.startsWith(n + " ")));
  say(`  GET ${server.httpUrl}/metrics (excerpt)`);
  for (const l of lines) say(`    ${l}`);
  const errors = text.split("\n").filter((l) => l.startsWith("mport_errors_total{"));
  for (const l of errors) say(`    ${l}`);
}

async function stopAll(procs: Proc[], echo: Echo | null): Promise<boolean> {
  let ok = true;
  for (const p of procs) {
    const s = await p.stop("SIGTERM", 15_000);
    if (s.code !== 0 && s.signal === null) {
      ok = false;
      console.error(`demo: ${p.name} exited with code ${s.code}\n${p.output()}`);
    } else if (s.signal !== null) {
      ok = false;
      console.error(`demo: ${p.name} did not stop on SIGTERM and was killed\n${p.output()}`);
    }
  }
  await echo?.close();
  return ok;
}

async function main(): Promise<number> {
  let keep = false;
  try {
    const { values } = parseArgs({
      args: Deno.args,
      strict: true,
      allowPositionals: false,
      options: { keep: { type: "boolean" }, help: { type: "boolean", short: "h" } },
    });
    if (values.help) {
      say(USAGE);
      return 0;
    }
    keep = values.keep ?? false;
  } catch (e) {
    console.error(`demo: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }

  const procs: Proc[] = [];
  let echo: Echo | null = null;
  let interrupted = false;
  const interrupt = Promise.withResolvers<void>();
  const onSignal = () => {
    interrupted = true;
    interrupt.resolve();
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const watchdog = setTimeout(() => {
    console.error(`demo: not finished after ${DEMO_TIMEOUT_MS / 1000} s; stopping`);
    interrupt.resolve();
  }, DEMO_TIMEOUT_MS);
  const steps = (async () => {
    const token = randomToken();
    say("== 1. mport-server on 127.0.0.1 (random port and token)");
    const server: ServerProc = await startServerProc({
      token,
      extraArgs: ["--drain", "2"],
    });
    procs.push(server.proc);
    say(`  ${server.proc.stdout.lines.find((l) => l.includes("listening on")) ?? ""}`);

    say("\n== 2. a local echo service");
    const { listener, onAdbPort } = listenEcho();
    echo = startEcho(listener);
    if (onAdbPort) {
      say(`  listening on 127.0.0.1:${ADB_PORT} (the adb port, so the client prints adb connect)`);
    } else {
      say(
        `  port ${ADB_PORT} is taken on this machine, so the echo service listens on ` +
          `127.0.0.1:${echo.port} instead (the client prints adb connect only for port ${ADB_PORT})`,
      );
    }

    say(`\n== 3. the client: mport tcp 127.0.0.1:${echo.port} --server ${server.wsUrl}`);
    const client: ClientProc = await startClientProc({
      serverUrl: server.wsUrl,
      token,
      local: `127.0.0.1:${echo.port}`,
      name: "demo-echo",
    });
    procs.unshift(client.proc);
    client.proc.stderr.follow((l) => console.error(`  [client] ${l}`));
    server.proc.stderr.follow((l) => console.error(`  [server] ${l}`));
    say(`  ${client.tunnelLine}`);
    if (onAdbPort) {
      const adb = await client.proc.stdout.wait(/^adb connect \S+$/, 5_000).catch(() => null);
      say(`  ${adb?.[0] ?? "(the client printed no adb connect line)"}`);
    } else {
      say(
        `  (with a phone's adb on port ${ADB_PORT} this would read: adb connect ` +
          `${client.publicHost}:${client.publicPort})`,
      );
    }
    const port = client.publicPort;

    say(`\n== 4. messages through the public port 127.0.0.1:${port}`);
    await sendMessages(port);

    say(`\n== 5. a hashed transfer through the tunnel`);
    await hashedTransfer(port);

    say(`\n== 6. server metrics`);
    await showMetrics(server);
    return { port, echo: echo! };
  })();

  let ok = true;
  try {
    const result = await Promise.race([steps, interrupt.promise.then(() => null)]);
    if (result === null) {
      ok = false;
      if (interrupted) say("\ninterrupted");
      steps.catch(() => {});
    } else if (keep) {
      clearTimeout(watchdog);
      result.echo.verbose = true;
      say(`\n== running until Ctrl-C. Try it by hand:`);
      say(`  nc 127.0.0.1 ${result.port}      (type a line, it comes back)`);
      await interrupt.promise;
      say("\nstopping");
    }
  } catch (e) {
    ok = false;
    console.error(`\ndemo failed: ${(e as Error).message}`);
    for (const p of procs) console.error(p.output());
  } finally {
    clearTimeout(watchdog);
  }

  say("\n== stopping the client, the server and the echo service");
  const stoppedCleanly = await stopAll(procs, echo);
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  if (ok && stoppedCleanly) say("  all stopped cleanly");
  return ok && stoppedCleanly ? 0 : (interrupted && stoppedCleanly ? 130 : 1);
}

if (import.meta.main) Deno.exit(await main());
