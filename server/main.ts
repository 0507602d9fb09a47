// Entrypoint of mport-server: flags and environment → config → running server; signals → shutdown.
import { formatHostPort } from "../shared/address.ts";
import { log, setupLogging, teardownLogging } from "../shared/log.ts";
import { controlPath } from "../shared/protocol.ts";
import { parseServerArgs, SERVER_USAGE } from "./config.ts";
import { startServer } from "./server.ts";

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseServerArgs(Deno.args, Deno.env.toObject(), (p) => Deno.readTextFileSync(p));
  } catch (e) {
    console.error(`mport-server: ${(e as Error).message}\nRun mport-server --help for usage.`);
    return 2;
  }
  if (parsed.help) {
    console.log(SERVER_USAGE);
    return 0;
  }
  const config = parsed.config;
  await setupLogging(config.logLevel, config.logFile);
  let server;
  try {
    server = await startServer(config);
  } catch (e) {
    console.error(`mport-server: ${(e as Error).message}`);
    return 1;
  }
  const { hostname, port } = server.addr;
  console.log(
    `mport-server listening on ${server.url} (control ${
      controlPath(config.pathPrefix)
    }, public ports ${config.portRange.low}-${config.portRange.high} on ${config.bindHost})`,
  );
  log("server").info("listening on {addr}", { addr: formatHostPort(hostname, port) });
  const stopped = Promise.withResolvers<void>();
  const onSignal = () => stopped.resolve();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  await stopped.promise;
  log("server").info("shutting down (draining for up to {s} s)", { s: config.drainMs / 1000 });
  await server.close();
  await teardownLogging();
  return 0;
}

if (import.meta.main) Deno.exit(await main());
