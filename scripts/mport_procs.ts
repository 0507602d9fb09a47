// Spawning the real mport-server and mport client as child processes for the demo and benchmark.
import { SERVER_USAGE } from "../server/config.ts";

/** Repository root (this file lives in scripts/). */
export const ROOT = new URL("../", import.meta.url);
/** Entrypoint of the server program. */
export const SERVER_MAIN = new URL("server/main.ts", ROOT).pathname;
/** Entrypoint of the client program. */
export const CLIENT_MAIN = new URL("client/main.ts", ROOT).pathname;

/** Reads a child's output line by line and lets callers wait for a matching line. */
export class LineReader {
  readonly lines: string[] = [];
  readonly done: Promise<void>;
  readonly #waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  #onLine: ((line: string) => void) | null = null;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      let buf = "";
      const dec = new TextDecoder();
      for await (const chunk of stream) {
        buf += dec.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          this.#push(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      }
      if (buf) this.#push(buf);
    })().catch(() => {});
  }

  /** Calls `fn` for every line from now on (and for none already read). */
  follow(fn: ((line: string) => void) | null): void {
    this.#onLine = fn;
  }

  #push(line: string): void {
    this.lines.push(line);
    this.#onLine?.(line);
    for (const w of [...this.#waiters]) {
      const m = line.match(w.re);
      if (m) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  }

  /** Resolves with the first line (from index `from` on) matching `re`; rejects after `timeoutMs`. */
  wait(re: RegExp, timeoutMs = 20_000, from = 0): Promise<RegExpMatchArray> {
    for (let i = from; i < this.lines.length; i++) {
      const m = this.lines[i]!.match(re);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      const w = {
        re,
        resolve: (m: RegExpMatchArray) => {
          clearTimeout(t);
          resolve(m);
        },
      };
      const t = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        reject(
          new Error(
            `no line matching ${re} within ${timeoutMs} ms; got:\n${this.lines.join("\n")}`,
          ),
        );
      }, timeoutMs);
      this.#waiters.push(w);
    });
  }
}

/** A spawned child process with line-buffered stdout and stderr. */
export class Proc {
  readonly name: string;
  readonly child: Deno.ChildProcess;
  readonly stdout: LineReader;
  readonly stderr: LineReader;
  readonly #status: Promise<Deno.CommandStatus>;
  #exited = false;

  /** `afterExit` runs once the child has exited (e.g. removes its working directory). */
  constructor(name: string, child: Deno.ChildProcess, afterExit?: () => Promise<void>) {
    this.name = name;
    this.child = child;
    this.stdout = new LineReader(child.stdout);
    this.stderr = new LineReader(child.stderr);
    this.#status = child.status.then(async (s) => {
      this.#exited = true;
      await afterExit?.().catch(() => {});
      return s;
    });
  }

  /** Process id, for /proc sampling. */
  get pid(): number {
    return this.child.pid;
  }

  /** True once the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** Resolves with the exit status once the process is gone and its output read. */
  async status(): Promise<Deno.CommandStatus> {
    const s = await this.#status;
    await Promise.all([this.stdout.done, this.stderr.done]);
    return s;
  }

  /**
   * Sends `signal`, waits up to `graceMs` for the exit, then sends SIGKILL. Ignores a process that
   * is already gone.
   */
  async stop(signal: Deno.Signal = "SIGTERM", graceMs = 5_000): Promise<Deno.CommandStatus> {
    if (!this.#exited) {
      try {
        this.child.kill(signal);
      } catch {
        // already exited
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), graceMs)));
      const first = await Promise.race([this.#status, late]);
      clearTimeout(timer);
      if (first === "late") {
        try {
          this.child.kill("SIGKILL");
        } catch {
          // exited just now
        }
      }
    }
    return await this.status();
  }

  /** Everything the process printed, for error messages. */
  output(): string {
    return `--- ${this.name} stdout\n${this.stdout.lines.join("\n")}\n--- ${this.name} stderr\n${
      this.stderr.lines.join("\n")
    }`;
  }
}

/** The arguments of `deno run [denoFlags] -A --unstable-net main args…` with the repository's config. */
export function denoRunArgs(
  main: string,
  args: readonly string[],
  denoFlags: readonly string[] = [],
): string[] {
  return [
    "run",
    "--config",
    new URL("deno.json", ROOT).pathname,
    ...denoFlags,
    "-A",
    "--unstable-net",
    main,
    ...args,
  ];
}

/**
 * Runs `deno run [denoFlags] -A main args…` as a child with piped output, in `cwd` (default the
 * repository root); `afterExit` runs once it has exited.
 */
export function spawnDeno(
  name: string,
  main: string,
  args: readonly string[],
  denoFlags: readonly string[] = [],
  cwd: string = ROOT.pathname,
  afterExit?: () => Promise<void>,
): Proc {
  const child = new Deno.Command(Deno.execPath(), {
    args: denoRunArgs(main, args, denoFlags),
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  return new Proc(name, child, afterExit);
}

/** A running mport-server child. */
export interface ServerProc {
  readonly proc: Proc;
  /** HTTP port of the server on 127.0.0.1. */
  readonly port: number;
  /** `http://127.0.0.1:PORT`, for /metrics. */
  readonly httpUrl: string;
  /** `ws://127.0.0.1:PORT`, for `--server`. */
  readonly wsUrl: string;
}

/** Options for {@link startServerProc}. */
export interface ServerProcOptions {
  readonly token: string;
  /** `HOST:PORT` to listen on (default 127.0.0.1:0). */
  readonly listen?: string;
  /** Public port range `LOW-HIGH` (default a random block of 100 in 20000-31999). */
  readonly portRange?: string;
  readonly logLevel?: string;
  readonly extraArgs?: readonly string[];
  readonly denoFlags?: readonly string[];
}

/**
 * Starts mport-server (public ports bound to 127.0.0.1) and waits for its "listening" line. It runs
 * in a temporary working directory, removed when it exits, with an in-memory store where the
 * server has one, so nothing is left in the repository.
 */
export async function startServerProc(opts: ServerProcOptions): Promise<ServerProc> {
  const extra = opts.extraArgs ?? [];
  const inMemoryStore = SERVER_USAGE.includes("--db ") && !extra.includes("--db")
    ? ["--db", ":memory:"]
    : [];
  // Below Linux's ephemeral range (32768+), so outgoing sockets never hold a public port.
  const low = 20000 + Math.floor(Math.random() * 120) * 100;
  const args = [
    "--listen",
    opts.listen ?? "127.0.0.1:0",
    "--port-range",
    opts.portRange ?? `${low}-${low + 99}`,
    "--bind",
    "127.0.0.1",
    "--token",
    opts.token,
    "--stats-interval",
    "0",
    "--log-level",
    opts.logLevel ?? "warning",
    ...inMemoryStore,
    ...extra,
  ];
  const cwd = await Deno.makeTempDir({ prefix: "mport-server-" });
  const removeCwd = () => Deno.remove(cwd, { recursive: true });
  const proc = spawnDeno("server", SERVER_MAIN, args, opts.denoFlags, cwd, removeCwd);
  let m: RegExpMatchArray;
  try {
    m = await Promise.race([
      proc.stdout.wait(/listening on https?:\/\/[^ ]*:(\d+)/, 60_000),
      proc.status().then((s) => {
        throw new Error(`mport-server exited with code ${s.code} before it was ready`);
      }),
    ]);
  } catch (e) {
    await proc.stop("SIGKILL");
    throw new Error(`${(e as Error).message}\n${proc.output()}`);
  }
  const port = Number(m[1]);
  return {
    proc,
    port,
    httpUrl: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}`,
  };
}

/** A running mport client child with its one tunnel up. */
export interface ClientProc {
  readonly proc: Proc;
  /** The client's tunnel line, `NAME tcp://HOST:PORT -> LOCAL`. */
  readonly tunnelLine: string;
  /** Public port of the tunnel. */
  readonly publicPort: number;
  /** Public host of the tunnel as the server reported it. */
  readonly publicHost: string;
}

/** Options for {@link startClientProc}. */
export interface ClientProcOptions {
  readonly serverUrl: string;
  readonly token: string;
  /** Local service, `HOST:PORT`. */
  readonly local: string;
  readonly pool?: number;
  readonly name?: string;
  readonly logLevel?: string;
  readonly extraArgs?: readonly string[];
  readonly denoFlags?: readonly string[];
}

/** Starts `mport tcp LOCAL` and waits for its tunnel line. */
export async function startClientProc(opts: ClientProcOptions): Promise<ClientProc> {
  const args = [
    "tcp",
    opts.local,
    "--server",
    opts.serverUrl,
    "--token",
    opts.token,
    // The client's own default (1 data connection) unless a caller asks for more.
    ...(opts.pool !== undefined ? ["--pool", String(opts.pool)] : []),
    "--log-level",
    opts.logLevel ?? "warning",
    ...(opts.name ? ["--name", opts.name] : []),
    ...(opts.extraArgs ?? []),
  ];
  const proc = spawnDeno("client", CLIENT_MAIN, args, opts.denoFlags);
  let m: RegExpMatchArray;
  try {
    m = await Promise.race([
      proc.stdout.wait(/^\S+ tcp:\/\/(.+):(\d+) -> \S+$/, 60_000),
      proc.status().then((s) => {
        throw new Error(`mport client exited with code ${s.code} before its tunnel was up`);
      }),
    ]);
  } catch (e) {
    await proc.stop("SIGKILL");
    throw new Error(`${(e as Error).message}\n${proc.output()}`);
  }
  return {
    proc,
    tunnelLine: m[0],
    publicHost: m[1]!.replace(/^\[|\]$/g, ""),
    publicPort: Number(m[2]),
  };
}

/** A random token for a throwaway server (128 bits, hex). */
export function randomToken(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Memory figures of a live process from /proc/PID/status, in KiB: `VmHWM` (peak resident set) and
 * `VmRSS` (current). Null where /proc is not available (macOS, Windows) or the process is gone.
 */
export function procMemory(pid: number): { peakKiB: number; rssKiB: number } | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return null;
  }
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1]);
  const peakKiB = field("VmHWM");
  const rssKiB = field("VmRSS");
  return Number.isFinite(peakKiB) && Number.isFinite(rssKiB) ? { peakKiB, rssKiB } : null;
}

/** Clock ticks per second of /proc/PID/stat times (USER_HZ; 100 on every common Linux). */
const USER_HZ = 100;

/** CPU time (user + system) a live process has used so far, in seconds; null without /proc. */
export function procCpuSeconds(pid: number): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  // Fields after the parenthesised command name; utime and stime are fields 14 and 15 overall.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return Number.isFinite(utime) && Number.isFinite(stime) ? (utime + stime) / USER_HZ : null;
}

/**
 * Busy CPU time of the whole machine so far (all CPUs: user, nice, system, steal), in seconds.
 * Interrupt time is left out: on loopback it is mostly the benchmark's own traffic.
 */
export function machineBusySeconds(): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/stat");
  } catch {
    return null;
  }
  // Fields: user nice system idle iowait irq softirq steal ...
  const f = /^cpu\s+(.*)$/m.exec(text)?.[1]?.split(/\s+/).map(Number);
  if (!f || f.length < 8) return null;
  return (f[0]! + f[1]! + f[2]! + f[7]!) / USER_HZ;
}
