// Compiles mport-server and the mport client into single executables under dist/ (deno compile).
import { parseArgs } from "node:util";

const ROOT = new URL("../", import.meta.url).pathname;

/** Targets `deno compile --target` accepts. */
export const KNOWN_TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-pc-windows-msvc",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
] as const;

/** What `--target all` builds for each program: the client everywhere, the server for Linux. */
const ALL = {
  client: KNOWN_TARGETS,
  server: ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"],
} as const;

/**
 * Permissions baked into each executable. Both read config and token files, write logs and the
 * SQLite store, and read the environment; FFI into libc resets aborted TCP connections (RST) and
 * lets the server raise its open-file limit.
 */
const PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-ffi",
  // The VPN sets addresses, routes and nftables rules with the system's tools.
  "--allow-run=ip,nft",
  // UDP tunnels (Deno.listenDatagram).
  "--unstable-net",
] as const;

/** The two programs. */
const PROGRAMS = {
  // The SQLite worker is loaded by URL at run time, so deno compile must be told to embed it.
  server: {
    entry: "server/main.ts",
    name: "mport-server",
    flags: [...PERMISSIONS, "--include", "server/store/sqlite_worker.ts"],
  },
  client: { entry: "client/main.ts", name: "mport", flags: [...PERMISSIONS] },
} as const;
type Program = keyof typeof PROGRAMS;

/** Type-checking and npm resolution take a while; the runtime download must not hang forever. */
const COMPILE_TIMEOUT_MS = 180_000;

const USAGE = `Usage: deno task compile [--target TRIPLE|all]... [--only server|client]

Builds single executables with deno compile into dist/:
  dist/mport-server[-TRIPLE]   the server (Linux; other targets only when named explicitly)
  dist/mport[-TRIPLE][.exe]    the client

  --target TRIPLE   build for TRIPLE (repeatable): ${KNOWN_TARGETS.join(", ")}
  --target all      client for all five targets, server for the two Linux ones
  --only PROGRAM    build only the server or only the client
  (no --target: build both for this machine, as dist/mport-server and dist/mport)

deno compile downloads Deno's runtime base (denort) for each target from dl.deno.land once and caches
it; without internet access set DENORT_BIN to a denort binary of this Deno version (${Deno.version.deno},
host target only).
`;

/** One executable to build; `target` null means the host. */
export interface Job {
  readonly program: Program;
  readonly target: string | null;
  readonly output: string;
}

/** Expands `--target` values and `--only` into build jobs. */
export function planJobs(targets: readonly string[], only: Program | null): Job[] {
  const programs: Program[] = only ? [only] : ["server", "client"];
  const jobs: Job[] = [];
  const add = (program: Program, target: string | null) => {
    const p = PROGRAMS[program];
    const exe = target?.includes("windows") ? ".exe" : "";
    const output = `dist/${p.name}${target ? `-${target}` : ""}${exe}`;
    if (!jobs.some((j) => j.output === output)) jobs.push({ program, target, output });
  };
  if (targets.length === 0) {
    for (const program of programs) add(program, null);
    return jobs;
  }
  for (const t of targets) {
    if (t === "all") {
      for (const program of programs) for (const target of ALL[program]) add(program, target);
    } else if ((KNOWN_TARGETS as readonly string[]).includes(t)) {
      for (const program of programs) add(program, t);
    } else {
      throw new TypeError(
        `unknown --target "${t}": use one of ${KNOWN_TARGETS.join(", ")} or all`,
      );
    }
  }
  return jobs;
}

/** Why deno compile failed, from its error output. */
export type Failure = "download" | "denort_bin" | "other";

/** Classifies deno compile's error output. */
export function classifyFailure(stderr: string): Failure {
  if (/Could not find denort at/i.test(stderr)) return "denort_bin";
  if (
    /dl\.deno\.land|error sending request|dns error|failed to lookup|Setting up base binary/i.test(
      stderr,
    )
  ) return "download";
  return "other";
}

function tail(text: string, lines = 12): string {
  const cut = text.indexOf("Stack backtrace:");
  const body = cut >= 0 ? text.slice(0, cut) : text;
  return body.trimEnd().split("\n").slice(-lines).map((l) => `    ${l}`).join("\n");
}

async function compile(job: Job): Promise<{ ok: boolean; failure: Failure | null }> {
  const p = PROGRAMS[job.program];
  const args = [
    "compile",
    ...p.flags,
    "--exclude-unused-npm",
    ...(job.target ? ["--target", job.target] : []),
    "--output",
    job.output,
    p.entry,
  ];
  const label = `${p.name} (${job.target ?? "this machine"})`;
  console.log(`… deno ${args.join(" ")}`);
  const t0 = performance.now();
  const signal = AbortSignal.timeout(COMPILE_TIMEOUT_MS);
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal,
  }).output();
  const seconds = ((performance.now() - t0) / 1000).toFixed(1);
  const stderr = new TextDecoder().decode(out.stderr);
  if (out.code === 0) {
    const size = (await Deno.stat(`${ROOT}${job.output}`)).size;
    console.log(`✓ ${label} → ${job.output} (${(size / 1048576).toFixed(1)} MiB, ${seconds} s)`);
    return { ok: true, failure: null };
  }
  if (signal.aborted) {
    console.error(
      `✗ ${label}: deno compile did not finish within ${COMPILE_TIMEOUT_MS / 1000} s and was ` +
        `stopped. It was most likely waiting for the download of Deno's runtime base (denort) ` +
        `for ${job.target ?? "this machine"} from dl.deno.land.\n${tail(stderr)}`,
    );
    return { ok: false, failure: "download" };
  }
  const failure = classifyFailure(stderr);
  const why = {
    download: `: it could not download Deno's runtime base (denort) for ${
      job.target ?? "this machine"
    } from dl.deno.land.`,
    denort_bin: `: DENORT_BIN is set to ${
      Deno.env.get("DENORT_BIN")
    }, which is not a denort binary.`,
    other: ".",
  }[failure];
  console.error(
    `✗ ${label}: deno compile failed after ${seconds} s (exit ${out.code})${why}\n${tail(stderr)}`,
  );
  return { ok: false, failure };
}

async function main(): Promise<number> {
  let targets: string[];
  let only: Program | null;
  try {
    const { values } = parseArgs({
      args: Deno.args,
      strict: true,
      allowPositionals: false,
      options: {
        target: { type: "string", multiple: true },
        only: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (values.only !== undefined && values.only !== "server" && values.only !== "client") {
      throw new TypeError(`--only must be "server" or "client", not "${values.only}"`);
    }
    only = (values.only as Program | undefined) ?? null;
    targets = values.target ?? [];
  } catch (e) {
    console.error(`compile: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  let jobs: Job[];
  try {
    jobs = planJobs(targets, only);
  } catch (e) {
    console.error(`compile: ${(e as Error).message}`);
    return 2;
  }
  await Deno.mkdir(`${ROOT}dist`, { recursive: true });
  let failed = 0;
  for (const job of jobs) {
    const r = await compile(job);
    if (r.ok) continue;
    failed++;
    if (r.failure === "denort_bin") return 3;
    if (r.failure === "download") {
      // Every further target needs its own download; do not wait for each to fail the same way.
      const skipped = jobs.length - jobs.indexOf(job) - 1;
      console.error(
        `\ncompile: deno compile needs Deno's runtime base binary (denort ${Deno.version.deno}) for ` +
          `each target. It downloads it once from https://dl.deno.land and caches it, so this ` +
          `machine needs internet access once (dl.deno.land, not only the npm registry). ` +
          `Alternatively set DENORT_BIN=/path/to/denort (a denort of Deno ${Deno.version.deno} ` +
          `for this machine's target) and build without --target.` +
          (skipped > 0 ? `\nSkipped the remaining ${skipped} build(s).` : "") +
          `\nThe JavaScript bundles (deno task bundle) need no download.`,
      );
      return 3;
    }
  }
  if (failed > 0) {
    console.error(`compile: ${failed} of ${jobs.length} build(s) failed`);
    return 1;
  }
  console.log(`compile: ${jobs.length} executable(s) in dist/`);
  return 0;
}

if (import.meta.main) Deno.exit(await main());
