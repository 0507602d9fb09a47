// Logging setup shared by both programs: human lines on stderr, optional JSON lines in a file.
import {
  configure,
  getLogger,
  type Logger,
  type LogLevel,
  type LogRecord,
  reset,
  type Sink,
} from "@logtape/logtape";

/** Log levels accepted by `--log-level`. */
export const LOG_LEVELS = ["trace", "debug", "info", "warning", "error", "fatal"] as const;

/** Parses a `--log-level` value (`warn` is accepted for `warning`). */
export function parseLogLevel(text: string): LogLevel {
  const t = text.trim().toLowerCase();
  const level = t === "warn" ? "warning" : t;
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new TypeError(`invalid log level "${text}": use one of ${LOG_LEVELS.join(", ")}`);
  }
  return level as LogLevel;
}

/** Returns the logger for a component, e.g. `log("server", "session")`. */
export function log(...category: string[]): Logger {
  return getLogger(["mport", ...category]);
}

function render(record: LogRecord): string {
  return record.message.map((part) => (typeof part === "string" ? part : fmt(part))).join("");
}

function fmt(v: unknown): string {
  if (typeof v === "string") return v;
  if (v instanceof Error) return v.message;
  try {
    return typeof v === "object" ? JSON.stringify(v) : String(v);
  } catch {
    return String(v);
  }
}

function stderrSink(): Sink {
  const enc = new TextEncoder();
  return (record) => {
    const time = new Date(record.timestamp).toISOString().slice(11, 23);
    const cat = record.category.slice(1).join(".");
    const line = `${time} ${record.level.toUpperCase().padEnd(7)} ${cat}: ${render(record)}\n`;
    try {
      Deno.stderr.writeSync(enc.encode(line));
    } catch {
      // stderr closed: nothing useful to do
    }
  };
}

function jsonFileSink(path: string): Sink & Disposable {
  const file = Deno.openSync(path, { append: true, create: true });
  const enc = new TextEncoder();
  const sink = (record: LogRecord) => {
    const line = JSON.stringify({
      time: new Date(record.timestamp).toISOString(),
      level: record.level,
      category: record.category.slice(1).join("."),
      message: render(record),
      ...record.properties,
    }) + "\n";
    file.writeSync(enc.encode(line));
  };
  return Object.assign(sink, { [Symbol.dispose]: () => file.close() });
}

/** Configures logging for a program; called once from a `main.ts`. */
export async function setupLogging(level: LogLevel, file: string | null): Promise<void> {
  const sinks: Record<string, Sink> = { stderr: stderrSink() };
  if (file) sinks.file = jsonFileSink(file);
  await configure({
    reset: true,
    sinks,
    loggers: [
      { category: ["mport"], lowestLevel: level, sinks: file ? ["stderr", "file"] : ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

/** Undoes `setupLogging` (flushes and closes the file sink). */
export async function teardownLogging(): Promise<void> {
  await reset();
}

/**
 * Last line of defence for a program: an error that escaped its handler is logged under
 * `category`, not fatal, so one broken connection can never take the process (and every other
 * tunnel) down. Called once from a `main.ts`.
 */
export function containStrayErrors(category: string): void {
  const report = (what: string, e: unknown) => {
    try {
      log(category).error("{what}: {error}", {
        what,
        error: e instanceof Error ? e.stack ?? e.message : String(e),
      });
    } catch {
      // logging itself failed; nothing more to do
    }
  };
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    report("unhandled rejection", e.reason);
  });
  globalThis.addEventListener("error", (e) => {
    e.preventDefault();
    report("uncaught error", e.error);
  });
}
