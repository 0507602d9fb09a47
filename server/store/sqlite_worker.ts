// Worker side of the SQLite store: runs node:sqlite off the server's event loop (see sqlite_worker_store.ts).
import { openSqliteStore } from "./sqlite_store.ts";
import type { Store } from "./store.ts";
import type { WorkerReply, WorkerRequest } from "./sqlite_worker_protocol.ts";

/**
 * How long one SQLite statement waits for a lock inside the worker before the call is retried
 * later: short, so that reads (which WAL lets through a held write lock) are never queued behind a
 * write waiting for the lock.
 */
const LOCK_WAIT_MS = 20;
const RETRY_MS = 25;

const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<WorkerRequest>) => void) | null;
  postMessage(m: WorkerReply): void;
  close(): void;
};

let store: Store | null = null;
let path = "";

function isLocked(e: unknown): boolean {
  const text = (x: unknown) => (x instanceof Error ? x.message : "");
  const re = /database is locked|database table is locked|database is busy|in use by another/i;
  return re.test(text(e)) || (e instanceof Error && re.test(text(e.cause)));
}

function fail(id: number, e: unknown): void {
  const err = e instanceof Error ? e : new Error(String(e));
  scope.postMessage({
    type: "reply",
    id,
    ok: false,
    error: { name: err.name, message: err.message },
  });
}

async function open(id: number, p: string, busyMs: number): Promise<void> {
  path = p;
  const until = Date.now() + busyMs;
  for (;;) {
    try {
      store = await openSqliteStore(p, {
        busyTimeoutMs: LOCK_WAIT_MS,
        warn: (message) => scope.postMessage({ type: "warn", message }),
      });
      scope.postMessage({ type: "reply", id, ok: true, value: null });
      return;
    } catch (e) {
      if (!isLocked(e) || Date.now() >= until) {
        fail(id, isLocked(e) ? lockedError(busyMs) : e);
        return;
      }
      await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  }
}

function lockedError(ms: number): Error {
  return new Error(
    `SQLite database ${path} is in use by another process (still locked after ${ms} ms); ` +
      `stop the other mport-server using it or choose another database file`,
  );
}

async function call(
  req: Extract<WorkerRequest, { type: "call" }>,
  started = Date.now(),
): Promise<void> {
  const s = store;
  if (!s) return fail(req.id, new Error("the SQLite store is not open"));
  try {
    const f = (s as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[req.method];
    if (typeof f !== "function") throw new TypeError(`no store method ${req.method}`);
    const value = await f.apply(s, req.args);
    scope.postMessage({ type: "reply", id: req.id, ok: true, value });
  } catch (e) {
    // A statement that found the database locked changed nothing (its transaction rolled back):
    // try it again a little later, meanwhile serving other calls, until its time is up.
    if (isLocked(e) && Date.now() + RETRY_MS < req.deadline) {
      setTimeout(() => call(req, started), RETRY_MS);
      return;
    }
    fail(req.id, isLocked(e) ? lockedError(Date.now() - started) : e);
  }
}

scope.onmessage = (e) => {
  const req = e.data;
  switch (req.type) {
    case "open":
      open(req.id, req.path, req.busyMs);
      break;
    case "call":
      call(req);
      break;
    case "close": {
      const s = store;
      store = null;
      (s ? s.close() : Promise.resolve()).then(
        () => scope.postMessage({ type: "reply", id: req.id, ok: true, value: null }),
        (err) => fail(req.id, err),
      );
      break;
    }
    default:
      req satisfies never;
  }
};
