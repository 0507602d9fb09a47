// Starts or stops one throwaway PostgreSQL for a whole test run (used by .ci/run).
//
//   deno run -A scripts/test_postgres.ts start       prints "URL DIR" and leaves the server running
//   deno run -A scripts/test_postgres.ts stop DIR    stops that server and deletes DIR

import { startPostgres, stopPostgresAt } from "../tests/server/store/pg_harness.ts";

async function main(args: string[]): Promise<number> {
  const [command, dir] = args;
  if (command === "start" && dir === undefined) {
    const pg = await startPostgres({ stopOnExit: false });
    console.log(`${pg.url} ${pg.dir}`);
    return 0;
  }
  if (command === "stop" && dir !== undefined) {
    await stopPostgresAt(dir);
    return 0;
  }
  console.error("usage: test_postgres.ts start | stop DIR");
  return 2;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`test_postgres: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
