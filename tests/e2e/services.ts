// End-to-end test helpers: a self-signed TLS certificate, nginx and tinyproxy children.

/** How long a spawned service gets to start accepting connections. */
const START_TIMEOUT_MS = 10_000;
/** How long a service gets to exit after SIGTERM before it is sent SIGKILL. */
const STOP_TIMEOUT_MS = 5_000;
/** Tries when a service loses the race for the port {@link freePort} picked. */
const START_ATTEMPTS = 3;

import { freePort } from "../support/net.ts";

export { makeCert, type TestCert } from "../support/tls_cert.ts";

const NGINX_EXAMPLE = new URL("../../scripts/nginx.conf.example", import.meta.url);

/**
 * Resolves once `127.0.0.1:port` accepts a TCP connection; rejects after `timeoutMs`.
 * If `exited` settles first (the service died), rejects at once.
 */
export async function waitForPort(
  port: number,
  timeoutMs: number,
  exited?: Promise<unknown>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let dead = false;
  exited?.then(() => dead = true, () => dead = true);
  let lastError: unknown;
  while (!dead && Date.now() < deadline) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch (err) {
      lastError = err;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
  const why = dead ? "the process exited" : `not within ${timeoutMs} ms`;
  throw new Error(`Port 127.0.0.1:${port} did not accept connections: ${why} (${lastError})`);
}

/** A running service started by {@link startNginx} or {@link startTinyproxy}. */
export interface Service {
  /** The port it listens on, on 127.0.0.1. */
  port: number;
  /** Stops the process, waits for it to exit and removes its temporary directory. */
  close(): Promise<void>;
}

/** Options of {@link startNginx}. */
export interface NginxOptions {
  /** Port of the plain-HTTP upstream on 127.0.0.1 (replaces `127.0.0.1:8080` in the example). */
  upstreamPort: number;
  /** PEM certificate nginx presents. */
  certFile: string;
  /** PEM key of `certFile`. */
  keyFile: string;
  /**
   * HTTP tunnels' domain for the example's wildcard server block (`*.tunnels.example.com`
   * becomes `*.<tunnelDomain>`, served with the same certificate); default `tunnels.invalid`.
   */
  tunnelDomain?: string;
}

/**
 * Starts nginx with TLS on a free port of 127.0.0.1, configured from `scripts/nginx.conf.example`
 * (read now, placeholders replaced; both server blocks on that port, told apart by SNI and Host),
 * proxying to `127.0.0.1:<upstreamPort>`. Everything it writes
 * stays in a temporary directory that `close()` removes.
 */
export async function startNginx(opts: NginxOptions): Promise<Service> {
  const example = await Deno.readTextFile(NGINX_EXAMPLE);
  const without = await nginxMissingModules();
  return await startWithRetry("nginx", "mport-nginx-", async (dir, port) => {
    const site = replaceAll(example, [
      ["listen 443 ssl;", `listen 127.0.0.1:${port} ssl;`],
      ["server_name mport.example.com;", "server_name localhost;"],
      ["/etc/letsencrypt/live/mport.example.com/fullchain.pem", opts.certFile],
      ["/etc/letsencrypt/live/mport.example.com/privkey.pem", opts.keyFile],
      [
        "server_name *.tunnels.example.com;",
        `server_name *.${opts.tunnelDomain ?? "tunnels.invalid"};`,
      ],
      ["/etc/letsencrypt/live/tunnels.example.com/fullchain.pem", opts.certFile],
      ["/etc/letsencrypt/live/tunnels.example.com/privkey.pem", opts.keyFile],
      ["127.0.0.1:8080", `127.0.0.1:${opts.upstreamPort}`],
    ]);
    const tempPaths = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
      .filter((name) => name === "client_body" || !without.has(name))
      .map((name) => `    ${name}_temp_path ${dir}/${name}_temp;`);
    const conf = [
      // As root, nginx workers would otherwise switch to nobody/www-data and could not use the
      // 0700 temporary directory; as non-root the directive would only cause a warning.
      Deno.uid() === 0 ? "user root;" : "",
      "daemon off;",
      "master_process on;",
      "worker_processes 1;",
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log info;`,
      "events {",
      "    worker_connections 1024;",
      "}",
      "http {",
      "    access_log off;",
      ...tempPaths,
      site,
      "}",
      "",
    ].join("\n");
    const confFile = `${dir}/nginx.conf`;
    await Deno.writeTextFile(confFile, conf);
    return {
      // -e: the startup error log, used before the config's error_log takes over.
      command: new Deno.Command("nginx", {
        args: ["-c", confFile, "-p", `${dir}/`, "-e", `${dir}/error.log`],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }),
      logFile: `${dir}/error.log`,
    };
  });
}

/** A running tinyproxy started by {@link startTinyproxy}. */
export interface TinyproxyService extends Service {
  /** `http://127.0.0.1:<port>`, for `HTTPS_PROXY` or `Deno.createHttpClient({ proxy })`. */
  url: string;
  /** The proxy's log so far (LogLevel Connect: one line per CONNECT). */
  log(): string;
}

/**
 * Starts tinyproxy in the foreground on a free port of 127.0.0.1. CONNECT is allowed to every
 * port (no `ConnectPort` line means all ports); only 127.0.0.1 may use the proxy.
 */
export async function startTinyproxy(): Promise<TinyproxyService> {
  let logFile = "";
  const service = await startWithRetry("tinyproxy", "mport-tinyproxy-", async (dir, port) => {
    logFile = `${dir}/tinyproxy.log`;
    const conf = [
      // As root without User, tinyproxy 1.11 stays root but warns; say so explicitly so that no
      // build drops to an account that cannot write the log into the 0700 temporary directory.
      ...(Deno.uid() === 0 ? ["User root", "Group root"] : []),
      `Port ${port}`,
      "Listen 127.0.0.1",
      "Timeout 600",
      "MaxClients 200",
      "Allow 127.0.0.1",
      `LogFile "${logFile}"`,
      "LogLevel Connect",
      `PidFile "${dir}/tinyproxy.pid"`,
      "",
    ].join("\n");
    const confFile = `${dir}/tinyproxy.conf`;
    await Deno.writeTextFile(confFile, conf);
    return {
      command: new Deno.Command("tinyproxy", {
        args: ["-d", "-c", confFile],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }),
      logFile,
    };
  });
  const finalLog = logFile;
  return {
    ...service,
    url: `http://127.0.0.1:${service.port}`,
    log: () => readIfExists(finalLog),
  };
}

interface Launch {
  command: Deno.Command;
  logFile: string;
}

/**
 * Makes a temporary directory, lets `prepare` write a config for a fresh port, spawns the child
 * and waits for the port. Retries with a new port if the child exits early (another process may
 * have taken the port between {@link freePort} and the child's bind).
 */
async function startWithRetry(
  name: string,
  prefix: string,
  prepare: (dir: string, port: number) => Promise<Launch>,
): Promise<Service> {
  let lastError: unknown;
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const dir = await Deno.makeTempDir({ prefix });
    const port = freePort();
    let child: Deno.ChildProcess | undefined;
    let stderr: Promise<string> = Promise.resolve("");
    let logFile = "";
    try {
      const launch = await prepare(dir, port);
      logFile = launch.logFile;
      child = launch.command.spawn();
      stderr = collect(child.stderr);
      await waitForPort(port, START_TIMEOUT_MS, child.status);
      const running = child;
      const stderrDone = stderr;
      return {
        port,
        close: async () => {
          await stop(running);
          await stderrDone;
          await Deno.remove(dir, { recursive: true });
        },
      };
    } catch (err) {
      let exited = false;
      if (child) {
        exited = await stop(child);
      }
      const output = (await stderr).trim();
      const log = logFile ? readIfExists(logFile).trim() : "";
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      lastError = new Error(
        `${name} did not start on 127.0.0.1:${port} (attempt ${attempt}): ${
          err instanceof Error ? err.message : err
        }\n--- stderr ---\n${output}\n--- log ---\n${log}`,
      );
      // Only an early exit may be a lost port race; a hang or a spawn failure will not improve.
      if (!exited || !/address already in use/i.test(output + log)) break;
    }
  }
  throw lastError;
}

/**
 * Sends SIGTERM (then SIGKILL after {@link STOP_TIMEOUT_MS}) and awaits the exit.
 * Returns true if the child had already exited on its own.
 */
async function stop(child: Deno.ChildProcess): Promise<boolean> {
  let alreadyExited = false;
  try {
    child.kill("SIGTERM");
  } catch {
    alreadyExited = true; // kill throws when the process is gone
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const killed = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // exited meanwhile
      }
      resolve();
    }, STOP_TIMEOUT_MS);
  });
  await Promise.race([child.status, killed]);
  clearTimeout(timer);
  await child.status;
  return alreadyExited;
}

/** Reads a byte stream to its end as text (keeps the child's stderr pipe from filling up). */
async function collect(stream: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  return text + decoder.decode();
}

function readIfExists(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return "";
  }
}

function replaceAll(text: string, pairs: [from: string, to: string][]): string {
  for (const [from, to] of pairs) {
    if (!text.includes(from)) {
      throw new Error(`scripts/nginx.conf.example no longer contains the placeholder "${from}"`);
    }
    text = text.replaceAll(from, to);
  }
  return text;
}

/** Names (e.g. "uwsgi") of the optional proxy modules this nginx was built without. */
async function nginxMissingModules(): Promise<Set<string>> {
  const out = await new Deno.Command("nginx", {
    args: ["-V"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
  const missing = new Set<string>();
  for (const name of ["fastcgi", "uwsgi", "scgi"]) {
    if (text.includes(`--without-http_${name}_module`)) missing.add(name);
  }
  return missing;
}
