// The SQLite Store run in a Worker: node:sqlite blocks its thread on disk and locks, never the server's.
import { SQLITE_BUSY_TIMEOUT_MS, type SqliteStoreOptions, warnOnStderr } from "./sqlite_store.ts";
import { STORE_TIMEOUT_MS } from "./deadline_store.ts";
import type { WorkerReply, WorkerRequest } from "./sqlite_worker_protocol.ts";
import { ConflictError, type Store } from "./store.ts";

/** Calls waiting for the worker at most; more are refused at once rather than queued. */
export const SQLITE_WORKER_MAX_PENDING = 1024;

/** Options of {@link openSqliteWorkerStore}. */
export interface SqliteWorkerStoreOptions extends SqliteStoreOptions {
  /** How long a call keeps retrying a locked database before it fails (default 5000 ms). */
  readonly callTimeoutMs?: number;
  /** The worker module (tests); default sqlite_worker.ts next to this module. */
  readonly workerUrl?: string;
}

// Every Store method but close(), which ends the worker.
const METHODS = [
  "createUser",
  "userById",
  "userByName",
  "listUsers",
  "setUserDisabled",
  "setUserLimits",
  "setUserPassword",
  "setUserPermissions",
  "touchUser",
  "createToken",
  "tokenByHash",
  "tokenById",
  "listTokens",
  "revokeToken",
  "touchToken",
  "reservePort",
  "touchReservations",
  "dropExpiredReservations",
  "trimReservations",
  "reservationFor",
  "reservationByPort",
  "listReservations",
  "releasePort",
  "reserveHost",
  "hostByName",
  "hostForTunnel",
  "listHosts",
  "releaseHost",
  "addUsage",
  "usage",
  "bytesSince",
  "addEvent",
  "events",
] as const satisfies readonly Exclude<keyof Store, "description" | "close">[];

/**
 * Opens the SQLite database at `path` (as `openSqliteStore` does: creating, securing and
 * migrating it) inside a Worker and returns a Store that forwards each call to it. A database
 * locked by another process delays only the calls that write, each up to `callTimeoutMs`; reads
 * and the server's event loop go on.
 */
export async function openSqliteWorkerStore(
  path: string,
  opts: SqliteWorkerStoreOptions = {},
): Promise<Store> {
  if (path === "") throw new TypeError("SQLite database path is empty");
  const worker = new Worker(opts.workerUrl ?? new URL("./sqlite_worker.ts", import.meta.url).href, {
    type: "module",
  });
  const store = new WorkerStore(worker, path, opts);
  try {
    await store.open(opts.busyTimeoutMs ?? SQLITE_BUSY_TIMEOUT_MS);
  } catch (e) {
    await store.close();
    throw e;
  }
  return store.asStore();
}

/** The worker itself failed (its module did not load, or it crashed), not a database call. */
export class SqliteWorkerFailed extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SqliteWorkerFailed";
  }
}

class WorkerStore {
  readonly description: string;
  readonly #worker: Worker;
  readonly #callMs: number;
  readonly #warn: (message: string) => void;
  readonly #pending = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: unknown) => void }
  >();
  #nextId = 1;
  #broken: Error | null = null;
  #closing: Promise<void> | null = null;

  constructor(worker: Worker, path: string, opts: SqliteWorkerStoreOptions) {
    this.#worker = worker;
    this.description = `sqlite:${path}`;
    this.#callMs = opts.callTimeoutMs ?? STORE_TIMEOUT_MS;
    this.#warn = opts.warn ?? warnOnStderr;
    worker.onmessage = (e: MessageEvent<WorkerReply>) => this.#onReply(e.data);
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#fail(
        new SqliteWorkerFailed(`the SQLite worker of ${this.description} failed: ${e.message}`),
      );
    };
  }

  #onReply(m: WorkerReply): void {
    if (m.type === "warn") {
      this.#warn(m.message);
      return;
    }
    const p = this.#pending.get(m.id);
    if (!p) return;
    this.#pending.delete(m.id);
    if (m.ok) p.resolve(m.value);
    else p.reject(rebuild(m.error));
  }

  #fail(e: Error): void {
    this.#broken ??= e;
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
  }

  #send(req: (id: number) => WorkerRequest, force = false): Promise<unknown> {
    if (this.#broken) return Promise.reject(this.#broken);
    if (this.#closing && !force) {
      return Promise.reject(new Error(`Store ${this.description} is closed`));
    }
    if (this.#pending.size >= SQLITE_WORKER_MAX_PENDING) {
      return Promise.reject(
        new Error(
          `Store ${this.description} is overloaded: ${this.#pending.size} calls are waiting`,
        ),
      );
    }
    const id = this.#nextId++;
    const { promise, resolve, reject } = Promise.withResolvers<unknown>();
    this.#pending.set(id, { resolve, reject });
    this.#worker.postMessage(req(id));
    return promise;
  }

  open(busyMs: number): Promise<void> {
    const path = this.description.slice("sqlite:".length);
    return this.#send((id) => ({ type: "open", id, path, busyMs })).then(() => {});
  }

  call(method: string, args: unknown[]): Promise<unknown> {
    const deadline = Date.now() + this.#callMs;
    return this.#send((id) => ({ type: "call", id, method, args, deadline }));
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (!this.#broken) {
        // Calls already sent are answered first: the worker handles messages in order.
        await this.#send((id) => ({ type: "close", id }), true).catch(() => {});
      }
      this.#fail(new Error(`Store ${this.description} is closed`));
      this.#worker.terminate();
    })();
    return this.#closing;
  }

  asStore(): Store {
    const s: Record<string, unknown> = {
      description: this.description,
      close: () => this.close(),
    };
    for (const m of METHODS) s[m] = (...args: unknown[]) => this.call(m, args);
    return s as unknown as Store;
  }
}

/** Errors cross the worker boundary as name and message; callers catch these classes. */
function rebuild(e: { readonly name: string; readonly message: string }): Error {
  switch (e.name) {
    case "ConflictError":
      return new ConflictError(e.message);
    case "RangeError":
      return new RangeError(e.message);
    case "TypeError":
      return new TypeError(e.message);
    default:
      return new Error(e.message);
  }
}
