// Processes under test: running a command to its exit, and their resident memory (once or a peak).
import { procMemory } from "../../scripts/mport_procs.ts";

/** Resident memory (VmRSS) of a live process in bytes; throws where /proc does not show it. */
export function rssBytes(pid: number): number {
  const mem = procMemory(pid);
  if (mem === null) throw new Error(`no VmRSS for process ${pid}`);
  return mem.rssKiB * 1024;
}

/** Peak VmRSS (bytes) of a process, sampled every 50 ms until `stop()`. */
export function sampleRss(pid: number): { stop(): number } {
  let peak = 0;
  const read = () => {
    peak = Math.max(peak, (procMemory(pid)?.rssKiB ?? 0) * 1024);
  };
  read();
  const timer = setInterval(read, 50);
  return {
    stop() {
      clearInterval(timer);
      read();
      return peak;
    },
  };
}

/** What a command that ran to its exit printed, and its exit code. */
export interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs `program ARGS` (in `cwd`, with `env` over the inherited environment and NO_COLOR=1) until it
 * exits; one still running after `timeoutMs` is killed with SIGKILL and reported as it ended.
 */
export async function runToExit(
  program: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; timeoutMs: number },
): Promise<Ran> {
  const child = new Deno.Command(program, {
    args,
    cwd: opts.cwd,
    env: { NO_COLOR: "1", ...opts.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs);
  try {
    const out = await child.output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}
