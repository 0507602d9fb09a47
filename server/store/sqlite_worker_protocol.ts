// Messages between the SQLite worker store (server thread) and its worker (sqlite_worker.ts).

/** Server thread → worker. `deadline` (epoch ms): past it, a call waiting for a lock gives up. */
export type WorkerRequest =
  | { readonly type: "open"; readonly id: number; readonly path: string; readonly busyMs: number }
  | {
    readonly type: "call";
    readonly id: number;
    readonly method: string;
    readonly args: unknown[];
    readonly deadline: number;
  }
  | { readonly type: "close"; readonly id: number };

/** Worker → server thread. Errors travel as name and message and are rebuilt on arrival. */
export type WorkerReply =
  | { readonly type: "warn"; readonly message: string }
  | { readonly type: "reply"; readonly id: number; readonly ok: true; readonly value: unknown }
  | {
    readonly type: "reply";
    readonly id: number;
    readonly ok: false;
    readonly error: { readonly name: string; readonly message: string };
  };
