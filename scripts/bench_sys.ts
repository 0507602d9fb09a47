// /proc readings for the benchmark: CPU and RSS summed over process trees, descriptor limits.
import { procCpuSeconds, procMemory } from "./mport_procs.ts";

/** Parent pid of `pid` from /proc/PID/stat; null if it is gone. */
export function parentPid(pid: number): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  // The field after the parenthesised command name and the state letter.
  const ppid = Number(text.slice(text.lastIndexOf(")") + 2).split(" ")[1]);
  return Number.isFinite(ppid) ? ppid : null;
}

/** True while `pid` runs (not gone, not a zombie waiting for its parent). */
export function isAlive(pid: number): boolean {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return text.slice(text.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** `pids` and all their live descendants (scans /proc once). */
export function processTree(pids: readonly number[]): number[] {
  const children = new Map<number, number[]>();
  try {
    for (const entry of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(entry.name)) continue;
      const pid = Number(entry.name);
      const ppid = parentPid(pid);
      if (ppid === null) continue;
      const list = children.get(ppid);
      if (list) list.push(pid);
      else children.set(ppid, [pid]);
    }
  } catch {
    return [...pids];
  }
  const out: number[] = [];
  const todo = [...pids];
  while (todo.length > 0) {
    const pid = todo.pop()!;
    if (out.includes(pid)) continue;
    out.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** CPU seconds (user + system) used so far by `pids` and their descendants; null without /proc. */
export function treeCpuSeconds(pids: readonly number[]): number | null {
  let sum: number | null = null;
  for (const pid of processTree(pids)) {
    const s = procCpuSeconds(pid);
    if (s !== null) sum = (sum ?? 0) + s;
  }
  return sum;
}

/** Resident set size in KiB of `pids` and their descendants; null without /proc. */
export function treeRssKiB(pids: readonly number[]): number | null {
  let sum: number | null = null;
  for (const pid of processTree(pids)) {
    const m = procMemory(pid);
    if (m !== null) sum = (sum ?? 0) + m.rssKiB;
  }
  return sum;
}

/** Peak resident set size (VmHWM) in KiB of one process; null without /proc. */
export function peakRssKiB(pid: number): number | null {
  return procMemory(pid)?.peakKiB ?? null;
}

/** Soft limit on open descriptors of this process (children inherit it); null without /proc. */
export function openFilesSoftLimit(): number | null {
  try {
    const text = Deno.readTextFileSync("/proc/self/limits");
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(text);
    if (!m) return null;
    return m[1] === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    return null;
  }
}
