// A running server (composition root, port 0) on a fresh SQLite or PostgreSQL store, with users
// admin/alice/bob and their tokens, and a small client for /api/v1.
import { Secret } from "../../shared/secret.ts";
import { hashPassword, hashToken } from "../../server/accounts/secrets.ts";
import { type ServerConfig, serverConfig } from "../../server/config.ts";
import { type RunningServer, startServer } from "../../server/server.ts";
import { openStore } from "../../server/store/open_store.ts";
import type { Store, TokenScope } from "../../server/store/store.ts";
import type { Backend, StoreFactory } from "../e2e/accounts_harness.ts";
import type { ServerProc } from "../e2e/harness.ts";

/** The password every seeded user has. */
export const API_PASSWORD = "correct-horse-battery";
/** The static --token (acts as the admin user, scope admin). */
export const STATIC_TOKEN = "mp_static-admin-token-0123456789";

/** What one API test gets. */
export interface ApiCtx {
  readonly server: RunningServer;
  readonly store: Store;
  readonly base: string;
  readonly ids: { admin: number; alice: number; bob: number };
  readonly tokens: {
    admin: string;
    alice: string;
    bob: string;
    aliceClient: string;
    adminApi: string;
  };
  call(method: string, path: string, opts?: CallOpts): Promise<ApiAnswer>;
  /** A stand-in for ServerProc for the raw peers (which only use `port`). */
  readonly proc: ServerProc;
}

export interface CallOpts {
  token?: string | null;
  body?: unknown;
  rawBody?: string;
  headers?: Record<string, string>;
}

export interface ApiAnswer {
  readonly status: number;
  // deno-lint-ignore no-explicit-any
  readonly json: any;
  readonly headers: Headers;
}

async function token(store: Store, userId: number, scope: TokenScope, value: string) {
  await store.createToken({ userId, label: scope, hash: hashToken(value), expiresAt: null, scope });
  return value;
}

/** Runs `body` against a fresh server on `backend`; stops and drops everything afterwards. */
export async function withApi(
  stores: StoreFactory,
  backend: Backend,
  body: (ctx: ApiCtx) => Promise<void>,
  config: Partial<ServerConfig> = {},
): Promise<void> {
  const t = await stores.fresh(backend);
  const store = await openStore(t.db);
  let server: RunningServer | null = null;
  try {
    const hash = await hashPassword(API_PASSWORD);
    const admin = await store.createUser({ name: "admin", role: "admin", passwordHash: hash });
    const alice = await store.createUser({ name: "alice", role: "user", passwordHash: hash });
    const bob = await store.createUser({ name: "bob", role: "user", passwordHash: hash });
    const tokens = {
      admin: await token(store, admin.id, "admin", "mp_admin-token-aaaaaaaaaaaaaaaa"),
      adminApi: await token(store, admin.id, "api", "mp_admin-api-token-bbbbbbbbbbbbbb"),
      alice: await token(store, alice.id, "api", "mp_alice-api-token-cccccccccccccc"),
      bob: await token(store, bob.id, "api", "mp_bob-api-token-dddddddddddddddd"),
      aliceClient: await token(store, alice.id, "client", "mp_alice-client-token-eeeeeeeeee"),
    };
    const low = 20000 + Math.floor(Math.random() * 400) * 100;
    server = await startServer(
      serverConfig({
        tokens: [new Secret(STATIC_TOKEN)],
        listenHost: "127.0.0.1",
        listenPort: 0,
        portRange: { low, high: low + 99 },
        httpDomain: "t.test",
        statsIntervalMs: 0,
        ...config,
      }),
      store,
    );
    const base = `${server.url}/api/v1`;
    const s = server;
    const call = async (method: string, path: string, o: CallOpts = {}): Promise<ApiAnswer> => {
      const headers: Record<string, string> = { ...o.headers };
      if (o.token) headers.authorization = `Bearer ${o.token}`;
      let reqBody: string | undefined = o.rawBody;
      if (o.body !== undefined) {
        headers["content-type"] = "application/json";
        reqBody = JSON.stringify(o.body);
      }
      const res = await fetch(`${base}${path}`, { method, headers, body: reqBody });
      const text = await res.text();
      let json: unknown = null;
      try {
        json = JSON.parse(text);
      } catch {
        json = text;
      }
      return { status: res.status, json, headers: res.headers };
    };
    await body({
      server: s,
      store,
      base,
      ids: { admin: admin.id, alice: alice.id, bob: bob.id },
      tokens,
      call,
      proc: { port: s.addr.port } as ServerProc,
    });
  } finally {
    await server?.close();
    await store.close();
    await t.drop();
  }
}
