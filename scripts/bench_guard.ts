// What the benchmark entrypoints share around a run: the --runs option, and cleanups that also run
// on Ctrl-C, a kill or a watchdog, so no process or namespace under test outlives the run.

/** `--runs` (1 with --quick, else 3 by default), or null after printing why it is not 1 to 20. */
export function parseRuns(prog: string, value: string | undefined, quick: boolean): number | null {
  const runs = value === undefined ? (quick ? 1 : 3) : Number(value);
  if (!Number.isSafeInteger(runs) || runs < 1 || runs > 20) {
    console.error(`${prog}: --runs must be a whole number from 1 to 20, not "${value}"`);
    return null;
  }
  return runs;
}

/** Cleanups of a benchmark run; see {@link guardRun}. */
export interface RunGuard {
  /** Adds a cleanup; they run newest first. */
  register(stop: () => Promise<void>): void;
  /** Runs the cleanups registered so far (each once; a failing one does not stop the rest). */
  cleanup(): Promise<void>;
  /** Stops the watchdog (the signal handlers stay until the process exits). */
  disarm(): void;
}

/**
 * Cleanups that run when asked, on SIGINT or SIGTERM (then exit 130, saying `onSignal`) and when
 * the run takes longer than `limitMs` (then exit 1).
 */
export function guardRun(prog: string, onSignal: string, limitMs: number): RunGuard {
  const cleanups: (() => Promise<void>)[] = [];
  const cleanup = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    cleanups.length = 0;
  };
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(sig, async () => {
      console.error(`${prog}: ${sig}, ${onSignal}`);
      await cleanup();
      Deno.exit(130);
    });
  }
  const watchdog = setTimeout(async () => {
    console.error(`${prog}: the run took longer than ${limitMs / 60_000} minutes; stopping`);
    await cleanup();
    Deno.exit(1);
  }, limitMs);
  return {
    register: (stop) => void cleanups.push(stop),
    cleanup,
    disarm: () => clearTimeout(watchdog),
  };
}
