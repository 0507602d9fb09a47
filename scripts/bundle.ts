// Bundles server and client into one JavaScript file each under dist/, then smoke-checks --help.

/** Repository root (this file lives in scripts/). */
const ROOT = new URL("../", import.meta.url).pathname;
const DIST = `${ROOT}dist`;
/** `deno bundle` resolves npm packages from the cache (or npm); offline it needs a warm cache. */
const BUNDLE_TIMEOUT_MS = 300_000;
const SMOKE_TIMEOUT_MS = 60_000;

/** One program to bundle. */
interface Target {
  readonly entry: string;
  readonly output: string;
  /** Text `--help` must print. */
  readonly usage: RegExp;
}

/** The two programs and their bundle files. */
export const TARGETS: readonly Target[] = [
  { entry: "server/main.ts", output: "dist/mport-server.js", usage: /^Usage: mport-server/m },
  { entry: "client/main.ts", output: "dist/mport.js", usage: /^\s*mport tcp \[HOST:\]PORT/m },
];

/** The server's SQLite worker, bundled where the server bundle looks for it (see sqlite_worker_store.ts). */
export const WORKER = { entry: "server/store/sqlite_worker.ts", output: "dist/sqlite_worker.ts" };

/** Runs `deno ARGS` in the repository root; returns the exit code and output. */
export async function runDeno(
  args: readonly string[],
  timeoutMs: number,
): Promise<{ code: number; stdout: string; stderr: string; ms: number; timedOut: boolean }> {
  const t0 = performance.now();
  const signal = AbortSignal.timeout(timeoutMs);
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
    signal,
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    ms: performance.now() - t0,
    timedOut: signal.aborted,
  };
}

function tail(text: string, lines = 15): string {
  return text.trimEnd().split("\n").slice(-lines).map((l) => `    ${l}`).join("\n");
}

async function main(): Promise<number> {
  if (Deno.args.includes("-h") || Deno.args.includes("--help")) {
    console.log(
      "Usage: deno task bundle\n\nWrites dist/mport-server.js and dist/mport.js with `deno bundle`" +
        " and checks that each prints its usage with --help.",
    );
    return 0;
  }
  await Deno.mkdir(DIST, { recursive: true });
  let failed = 0;
  for (const t of TARGETS) {
    const bundled = await runDeno(
      ["bundle", "--platform", "deno", "--output", t.output, t.entry],
      BUNDLE_TIMEOUT_MS,
    );
    if (bundled.code !== 0) {
      failed++;
      const why = bundled.timedOut ? `timed out after ${BUNDLE_TIMEOUT_MS / 1000} s` : "failed";
      console.error(
        `✗ deno bundle ${t.entry} ${why} (exit ${bundled.code}):\n${tail(bundled.stderr)}`,
      );
      continue;
    }
    const size = (await Deno.stat(`${ROOT}${t.output}`)).size;
    console.log(
      `✓ ${t.entry} → ${t.output} (${(size / 1024).toFixed(0)} KiB, ${
        (bundled.ms / 1000).toFixed(1)
      } s)`,
    );
    // --no-config: the bundle must run without deno.json and its import map.
    const smoke = await runDeno(["run", "--no-config", "-A", t.output, "--help"], SMOKE_TIMEOUT_MS);
    if (smoke.code !== 0 || !t.usage.test(smoke.stdout)) {
      failed++;
      console.error(
        `✗ deno run -A ${t.output} --help did not print usage (exit ${smoke.code}):\n${
          tail(smoke.stdout + smoke.stderr)
        }`,
      );
      continue;
    }
    console.log(`✓ deno run -A ${t.output} --help prints: ${smoke.stdout.split("\n")[0]}`);
  }
  // The server loads its SQLite worker by URL next to itself: bundle it there under its own name.
  const worker = await runDeno(
    ["bundle", "--platform", "deno", "--output", WORKER.output, WORKER.entry],
    BUNDLE_TIMEOUT_MS,
  );
  if (worker.code !== 0) {
    failed++;
    console.error(
      `✗ deno bundle ${WORKER.entry} failed (exit ${worker.code}):\n${tail(worker.stderr)}`,
    );
  } else {
    console.log(`✓ ${WORKER.entry} → ${WORKER.output} (loaded by dist/mport-server.js)`);
  }
  if (failed > 0) {
    console.error(`${failed} step(s) failed`);
    return 1;
  }
  console.log(
    "Run them with: deno run -A dist/mport-server.js …  and  deno run -A dist/mport.js …",
  );
  return 0;
}

if (import.meta.main) Deno.exit(await main());
