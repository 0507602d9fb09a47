// Entrypoint of mport-server: flags and environment → config → store → running server, or an admin command.
import { formatHostPort } from "../shared/address.ts";
import { closest } from "../shared/cli_args.ts";
import { resetSupport } from "../shared/tcp_reset.ts";
import { containStrayErrors, log, setupLogging, teardownLogging } from "../shared/log.ts";
import { controlPath } from "../shared/protocol.ts";
import { versionLine } from "../shared/version.ts";
import { Accounts } from "./accounts/accounts.ts";
import {
  ADMIN_COMMANDS,
  ADMIN_USAGE,
  adminHelpCommand,
  adminPreflight,
  adminUsage,
  runAdmin,
} from "./admin/cli.ts";
import { LIVE_COMMANDS, LIVE_USAGE, livePreflight, runLive } from "./admin/live_cli.ts";
import { parseServerArgs, SERVER_USAGE, type ServerConfig, storeLocation } from "./config.ts";
import { firstStartLines } from "./first_start.ts";
import {
  openStore,
  type OpenStoreOptions,
  parseDbTarget,
  redactDbUrl,
} from "./store/open_store.ts";
import { withDeadline } from "./store/deadline_store.ts";
import type { Store } from "./store/store.ts";
import { startServer } from "./server.ts";

async function openConfiguredStore(
  db: string,
  warn?: (message: string) => void,
  opts: OpenStoreOptions = {},
): Promise<Store | null> {
  try {
    parseDbTarget(db);
  } catch (e) {
    console.error(`mport-server: invalid --db: ${(e as Error).message}`);
    return null;
  }
  try {
    return await openStore(db, { ...opts, warn });
  } catch (e) {
    console.error(
      `mport-server: cannot open the store ${redactDbUrl(db)}: ${(e as Error).message}`,
    );
    return null;
  }
}

/** Reads a password from stdin (a line), or from the terminal without echo. */
async function readPassword(fromStdin: boolean): Promise<string> {
  const readLine = async (): Promise<string> => {
    const buf = new Uint8Array(1);
    const bytes: number[] = [];
    while (bytes.length < 4096) {
      const n = await Deno.stdin.read(buf);
      if (n === null || buf[0] === 10) break;
      if (buf[0] === 3) throw new Error("cancelled");
      if (buf[0] !== 13) bytes.push(buf[0]!);
    }
    return new TextDecoder().decode(new Uint8Array(bytes));
  };
  if (fromStdin || !Deno.stdin.isTerminal()) return await readLine();
  const ask = async (prompt: string) => {
    await Deno.stdout.write(new TextEncoder().encode(prompt));
    Deno.stdin.setRaw(true);
    try {
      return await readLine();
    } finally {
      Deno.stdin.setRaw(false);
      await Deno.stdout.write(new TextEncoder().encode("\n"));
    }
  };
  const first = await ask("Password: ");
  if ((await ask("Repeat password: ")) !== first) throw new TypeError("the passwords do not match");
  return first;
}

/** A command line that cannot work: one sentence, then where to read the usage. */
function usageError(message: string, helpCommand = "mport-server --help"): number {
  console.error(`mport-server: ${message}\nRun \`${helpCommand}\` for usage.`);
  return 2;
}

/** `mport-server help [COMMAND [ACTION]]`. */
function help(args: readonly string[]): number {
  const [group, action] = args;
  const live = (LIVE_COMMANDS as readonly string[]).includes(group ?? "")
    ? LIVE_USAGE[group as (typeof LIVE_COMMANDS)[number]]
    : null;
  const usage = group === undefined ? null : live ?? adminUsage(group, action);
  console.log(usage ?? `${SERVER_USAGE}\n${ADMIN_USAGE}`);
  return 0;
}

async function admin(args: string[]): Promise<number> {
  // Help and usage errors need no store (so they work without one, and create none).
  let usage: string | null;
  try {
    usage = adminPreflight(args);
  } catch (e) {
    return usageError((e as Error).message, adminHelpCommand(args));
  }
  if (usage !== null) {
    console.log(usage);
    return 0;
  }
  const flagValue = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0
      ? args[i + 1]
      : args.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
  };
  let db: string;
  // `--config FILE`: the server's own settings (store, port range, TTL, public URL).
  let server: ServerConfig | undefined;
  try {
    const configFile = flagValue("--config");
    if (configFile !== undefined) {
      const parsed = parseServerArgs(
        ["--config", configFile],
        Deno.env.toObject(),
        (p) => Deno.readTextFileSync(p),
      );
      if (!parsed.help && !parsed.version) server = parsed.config;
    }
    const [flagDb, flagDir] = [flagValue("--db"), flagValue("--data-dir")];
    db = flagDb === undefined && flagDir === undefined && server
      ? server.db
      : storeLocation(flagDb, flagDir, Deno.env.get("MPORT_DB"));
  } catch (e) {
    return usageError((e as Error).message, adminHelpCommand(args));
  }
  // No logging is set up for admin commands: warnings go straight to stderr.
  const store = await openConfiguredStore(db, (m) => console.error(`mport-server: warning: ${m}`));
  if (!store) return 1;
  try {
    return await runAdmin(args, store, {
      out: (line) => console.log(line),
      readPassword,
      now: Date.now,
      server,
    });
  } catch (e) {
    console.error(`mport-server: ${(e as Error).message}`);
    return e instanceof TypeError ? 2 : 1;
  } finally {
    await store.close();
  }
}

/** `mport-server clients|tunnels`: asks the running server, needs no store. */
async function live(args: string[]): Promise<number> {
  const helpCommand = `mport-server ${args[0]} --help`;
  try {
    const usage = livePreflight(args);
    if (usage !== null) {
      console.log(usage);
      return 0;
    }
    return await runLive(args, Deno.env.toObject(), {
      out: (line) => console.log(line),
      fetch: (url, init) => fetch(url, init),
      readFile: (path) => Deno.readTextFileSync(path),
      now: Date.now,
    });
  } catch (e) {
    if (e instanceof TypeError) return usageError((e as Error).message, helpCommand);
    console.error(`mport-server: ${(e as Error).message}`);
    return 1;
  }
}

async function main(): Promise<number> {
  const first = Deno.args[0];
  const commands: readonly string[] = [...ADMIN_COMMANDS, ...LIVE_COMMANDS];
  if (first === "help") return help(Deno.args.slice(1));
  if (first !== undefined && (LIVE_COMMANDS as readonly string[]).includes(first)) {
    return await live(Deno.args);
  }
  if (first !== undefined && commands.includes(first)) return await admin(Deno.args);
  if (first !== undefined && !first.startsWith("-")) {
    const guess = closest(first, [...commands, "help"]);
    return usageError(`unknown command "${first}"${guess ? `: did you mean ${guess}?` : ""}`);
  }
  let parsed;
  try {
    parsed = parseServerArgs(Deno.args, Deno.env.toObject(), (p) => Deno.readTextFileSync(p));
  } catch (e) {
    return usageError((e as Error).message);
  }
  if (parsed.help) {
    console.log(SERVER_USAGE);
    console.log(ADMIN_USAGE);
    return 0;
  }
  if (parsed.version) {
    console.log(versionLine("mport-server"));
    return 0;
  }
  const config = parsed.config;
  await setupLogging(config.logLevel, config.logFile);
  const reset = resetSupport();
  if (!reset.ok) {
    // Aborted transfers then end with a FIN; say so once rather than let users guess.
    log("tcp").warning("aborted connections cannot be reset (RST): {why}", { why: reset.why });
  }
  const opened = await openConfiguredStore(config.db, undefined, {
    offThread: true,
    callTimeoutMs: config.storeTimeoutMs,
  });
  if (!opened) return 1;
  // Every call of the running server has a deadline: a stalled database fails calls, not tunnels.
  const store = withDeadline(opened, config.storeTimeoutMs);
  // Listen for signals before anything is printed: a stop right after start is still graceful.
  const stopped = Promise.withResolvers<void>();
  const onSignal = () => stopped.resolve();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  let server;
  try {
    // Bootstrap only once the port is bound: a busy --listen must not create (and so lose) the
    // first token. Tunnel connections wait for it.
    const accounts = new Accounts(store, config.tokens);
    const envDb = Deno.env.get("MPORT_DB");
    server = await startServer(config, store, {
      afterBind: async (addr) => {
        for (const line of await firstStartLines(accounts, config, addr, envDb)) console.log(line);
      },
    });
  } catch (e) {
    console.error(`mport-server: ${(e as Error).message}`);
    await store.close();
    return 1;
  }
  const { hostname, port } = server.addr;
  console.log(
    `mport-server listening on ${server.url} (control ${
      controlPath(config.pathPrefix)
    }, public ports ${config.portRange.low}-${config.portRange.high} on ${config.bindHost}, store ${
      redactDbUrl(config.db)
    })`,
  );
  log("server").info("listening on {addr}", { addr: formatHostPort(hostname, port) });
  await stopped.promise;
  log("server").info("shutting down (draining for up to {s} s)", { s: config.drainMs / 1000 });
  await server.close();
  await store.close().catch((e) => {
    log("server").error("cannot close the store: {error}", { error: String(e) });
  });
  await teardownLogging();
  return 0;
}

if (import.meta.main) {
  containStrayErrors("server");
  Deno.exit(await main());
}
