// A private sshd on loopback and `ssh -tt -R` sessions through it, the benchmark's reference tunnel.
import { userInfo } from "node:os";
import { Proc } from "./mport_procs.ts";
import {
  isAlive,
  parentPid,
  peakRssKiB,
  processTree,
  treeCpuSeconds,
  treeRssKiB,
} from "./bench_sys.ts";
import type { Tunnel } from "./bench_tunnels.ts";

/** The cipher ssh users pick for speed on machines with AES instructions. */
export const SSH_CIPHER = "aes128-gcm@openssh.com";

/** Where sshd may be installed (sshd refuses to start from a relative path). */
const SSHD_PATHS = ["/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"];
/** sshd's privilege separation directory on Debian; it must exist before sshd starts. */
const PRIVSEP_DIR = "/run/sshd";
/** Bounds on starting things up. */
const READY_MS = 15_000;
const STOP_MS = 5_000;

/** A running private sshd. */
export interface Sshd {
  readonly port: number;
  readonly pid: number;
  /** Private key the server accepts for the current user. */
  readonly clientKey: string;
  readonly user: string;
  stop(): Promise<void>;
}

function which(name: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    const path = `${dir}/${name}`;
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch {
      // not here
    }
  }
  return null;
}

/** Absolute paths of sshd, ssh and ssh-keygen, or the reason the ssh column cannot run. */
export function findSsh(): { sshd: string; ssh: string; keygen: string } | { missing: string } {
  const sshd = SSHD_PATHS.find((p) => {
    try {
      return Deno.statSync(p).isFile;
    } catch {
      return false;
    }
  }) ?? which("sshd");
  const ssh = which("ssh");
  const keygen = which("ssh-keygen");
  if (!sshd) return { missing: "sshd is not installed (apt-get install openssh-server)" };
  if (!ssh || !keygen) return { missing: "ssh or ssh-keygen is not installed (openssh-client)" };
  return { sshd, ssh, keygen };
}

/** A free TCP port on 127.0.0.1 (bound and released; fine on a quiet loopback). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/**
 * Starts sshd in the foreground as the current user on 127.0.0.1 with a fresh host key and a
 * fresh client key in its authorized_keys, all in a temporary directory removed at stop.
 */
export async function startSshd(paths: { sshd: string; keygen: string }): Promise<Sshd> {
  const dir = await Deno.makeTempDir({ prefix: "mport-bench-sshd-" });
  const removeDir = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  try {
    await Deno.mkdir(PRIVSEP_DIR, { recursive: true, mode: 0o755 });
    await run(paths.keygen, ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/host_key`]);
    await run(paths.keygen, ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/client_key`]);
    await Deno.copyFile(`${dir}/client_key.pub`, `${dir}/authorized_keys`);
    const port = freePort();
    await Deno.writeTextFile(
      `${dir}/sshd_config`,
      [
        `ListenAddress 127.0.0.1:${port}`,
        `HostKey ${dir}/host_key`,
        `AuthorizedKeysFile ${dir}/authorized_keys`,
        `PidFile ${dir}/sshd.pid`,
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AllowTcpForwarding yes",
        "GatewayPorts no",
        "PrintMotd no",
        "LogLevel ERROR",
        "",
      ].join("\n"),
    );
    // -D: stay a child of ours; -e: log to stderr.
    const child = new Deno.Command(paths.sshd, {
      args: ["-D", "-e", "-f", `${dir}/sshd_config`],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const proc = new Proc("sshd", child, removeDir);
    const stop = async () => {
      // Sessions first: the listener's children outlive it.
      const sessions = processTree([proc.pid]).filter((p) => p !== proc.pid);
      await proc.stop("SIGTERM", STOP_MS);
      for (const pid of sessions) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // gone
        }
      }
    };
    const deadline = Date.now() + READY_MS;
    while (true) {
      if (proc.exited) {
        throw new Error(`sshd exited at start\n${proc.output()}`);
      }
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        break;
      } catch {
        if (Date.now() > deadline) {
          await stop();
          throw new Error(`sshd did not listen on 127.0.0.1:${port} within ${READY_MS} ms`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    return {
      port,
      pid: proc.pid,
      clientKey: `${dir}/client_key`,
      user: userInfo().username,
      stop,
    };
  } catch (e) {
    await removeDir();
    throw e;
  }
}

/** Options for {@link startSshTunnel}. */
export interface SshTunnelOptions {
  readonly ssh: string;
  readonly sshd: Sshd;
  readonly servicePort: number;
  /** Resolves once a connection through `port` reaches the service (e.g. an echo round trip). */
  readonly probe: (port: number) => Promise<void>;
}

/**
 * Runs `ssh -tt -R 127.0.0.1:PORT:127.0.0.1:SERVICE` with a login shell kept open on a piped
 * stdin, as a user's session would be, and waits until the forwarded port reaches the service.
 */
export async function startSshTunnel(opts: SshTunnelOptions): Promise<Tunnel> {
  const { sshd } = opts;
  const before = new Set(processTree([sshd.pid]));
  const port = freePort();
  const child = new Deno.Command(opts.ssh, {
    args: [
      "-tt",
      "-F",
      "/dev/null",
      "-o",
      `Ciphers=${SSH_CIPHER}`,
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "BatchMode=yes",
      "-o",
      "ExitOnForwardFailure=yes",
      "-o",
      "LogLevel=ERROR",
      "-i",
      sshd.clientKey,
      "-p",
      String(sshd.port),
      "-R",
      `127.0.0.1:${port}:127.0.0.1:${opts.servicePort}`,
      `${sshd.user}@127.0.0.1`,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const proc = new Proc("ssh", child);
  let session: number[] = [];
  const stop = async () => {
    try {
      await child.stdin.close();
    } catch {
      // closed
    }
    await proc.stop("SIGTERM", STOP_MS);
    // The session's sshd exits once the connection closes; make sure it is gone before the next.
    const deadline = Date.now() + STOP_MS;
    const alive = () => session.filter(isAlive);
    while (alive().length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const pid of alive()) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
  };
  const deadline = Date.now() + READY_MS;
  while (true) {
    if (proc.exited) throw new Error(`ssh exited before the tunnel was up\n${proc.output()}`);
    try {
      await opts.probe(port);
      break;
    } catch {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`ssh -R did not forward 127.0.0.1:${port} within ${READY_MS} ms`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  // The session's sshd process (and its shell) are the listener's new descendants.
  session = processTree([sshd.pid]).filter((pid) => !before.has(pid));
  const sessionTop = session.filter((pid) => parentPid(pid) === sshd.pid);
  return {
    port,
    cpuSeconds() {
      const a = treeCpuSeconds(sessionTop);
      const b = treeCpuSeconds([proc.pid]);
      return a === null || b === null ? null : a + b;
    },
    rssKiB: () => ({ server: treeRssKiB(sessionTop), client: treeRssKiB([proc.pid]) }),
    peakRssKiB: () => ({
      server: sessionTop.reduce<number | null>((a, p) => {
        const v = peakRssKiB(p);
        return v === null ? a : (a ?? 0) + v;
      }, null),
      client: peakRssKiB(proc.pid),
    }),
    stop,
  };
}
