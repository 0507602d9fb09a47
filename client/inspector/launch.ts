// Starting the inspector from a client's composition root: in the background, reported to the user.
import type { InspectorServerOptions, RunningInspector } from "./server.ts";
import { startInspector } from "./server.ts";

/** What the user is told: the page's URL once it listens, or why it did not start. */
export interface InspectorReports {
  /** `http://127.0.0.1:4040` (main.ts prints `inspector URL`). */
  inspector?(url: string): void;
  problem(message: string): void;
}

/** An inspector being started; `close()` waits for the start and stops it. */
export interface LaunchedInspector {
  /** Its address once it listens (null: off, failed or not yet). */
  addr(): Deno.NetAddr | null;
  /** Resolves once it listens or failed (never rejects). */
  readonly started: Promise<void>;
  close(): Promise<void>;
}

/** The page's URL for an address (IPv6 in brackets). */
export function inspectorUrl(addr: Deno.NetAddr): string {
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return `http://${host}:${addr.port}`;
}

/**
 * Starts the inspector at `at` (the config's `inspect`; null: off, nothing starts). A failure to
 * listen is reported as a problem and does not stop the client.
 */
export function launchInspector(
  at: { readonly host: string; readonly port: number } | null,
  opts: Omit<InspectorServerOptions, "hostname" | "port">,
  reports: InspectorReports,
): LaunchedInspector {
  let running: RunningInspector | null = null;
  const started = at
    ? startInspector({ ...opts, hostname: at.host, port: at.port }).then((r) => {
      running = r;
      reports.inspector?.(inspectorUrl(r.addr));
    }, (e) => {
      const what = opts.capture ? "request inspector" : "status page";
      reports.problem(`${what} not started: ${(e as Error).message}`);
    })
    : Promise.resolve();
  return {
    addr: () => (running as RunningInspector | null)?.addr ?? null,
    started,
    async close() {
      await started;
      await (running as RunningInspector | null)?.close();
    },
  };
}
