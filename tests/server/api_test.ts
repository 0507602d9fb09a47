// REST API /api/v1 on SQLite and PostgreSQL: scopes, users, tokens, ports, domains, usage, events
// and stats, with ownership (alice cannot see or touch bob's objects) and validation errors.
import assert from "node:assert/strict";
import { BACKENDS, StoreFactory } from "../e2e/accounts_harness.ts";
import { type ApiCtx, STATIC_TOKEN, withApi } from "./api_harness.ts";

const stores = new StoreFactory();

function apiTest(name: string, fn: (c: ApiCtx) => Promise<void>) {
  for (const backend of BACKENDS) {
    Deno.test(`API (${backend}) ${name}`, () => withApi(stores, backend, fn));
  }
}

apiTest("authenticates api/admin/static tokens and refuses client tokens and none", async (c) => {
  const me = await c.call("GET", "/me", { token: c.tokens.alice });
  assert.equal(me.status, 200);
  assert.equal(me.json.user.name, "alice");
  assert.equal(me.json.scope, "api");
  assert.equal(me.json.admin, false);
  assert.equal(me.json.user.passwordHash, undefined);
  const admin = await c.call("GET", "/me", { token: c.tokens.admin });
  assert.equal(admin.json.admin, true);
  const statik = await c.call("GET", "/me", { token: STATIC_TOKEN });
  assert.equal(statik.status, 200);
  assert.equal(statik.json.user.name, "admin");
  assert.equal(statik.json.admin, true);
  // An api-scoped token of an admin user acts as that user only.
  assert.equal((await c.call("GET", "/me", { token: c.tokens.adminApi })).json.admin, false);
  assert.equal((await c.call("GET", "/users", { token: c.tokens.adminApi })).status, 403);

  const client = await c.call("GET", "/me", { token: c.tokens.aliceClient });
  assert.equal(client.status, 403);
  assert.equal(client.json.error.code, "scope");
  assert.match(client.json.error.message, /--scope api/);
  const none = await c.call("GET", "/tokens");
  assert.equal(none.status, 401);
  assert.equal(none.json.error.code, "unauthorized");
  const wrong = await c.call("GET", "/me", { token: "mp_wrong-token-zzzzzzzzzzzzzzzz" });
  assert.equal(wrong.status, 401);
  assert.equal(
    (await c.call("GET", "/nope", { token: c.tokens.alice })).json.error.code,
    "not_found",
  );
});

apiTest("lets admins list, create, limit, disable and re-password users", async (c) => {
  const a = { token: c.tokens.admin };
  const list = await c.call("GET", "/users", a);
  assert.equal(list.status, 200);
  assert.deepEqual(list.json.items.map((u: { name: string }) => u.name), ["admin", "alice", "bob"]);
  assert.equal(list.json.nextCursor, null);
  const paged = await c.call("GET", "/users?limit=2", a);
  assert.equal(paged.json.items.length, 2);
  const rest = await c.call("GET", `/users?limit=2&cursor=${paged.json.nextCursor}`, a);
  assert.deepEqual(rest.json.items.map((u: { name: string }) => u.name), ["bob"]);
  assert.equal(rest.json.nextCursor, null);

  const created = await c.call("POST", "/users", {
    ...a,
    body: { name: "carol", password: "long-enough-pw", limits: { maxTunnels: 2 } },
  });
  assert.equal(created.status, 201, JSON.stringify(created.json));
  assert.equal(created.json.name, "carol");
  assert.equal(created.json.limits.maxTunnels, 2);
  assert.equal(created.json.hasPassword, true);
  const dup = await c.call("POST", "/users", {
    ...a,
    body: { name: "carol", password: "long-enough-pw" },
  });
  assert.equal(dup.status, 409);
  assert.equal(dup.json.error.code, "conflict");

  const patched = await c.call("PATCH", "/users/carol", {
    ...a,
    body: { limits: { maxTunnels: null, portLow: 20000, portHigh: 20010 }, disabled: true },
  });
  assert.equal(patched.status, 200, JSON.stringify(patched.json));
  assert.equal(patched.json.limits.maxTunnels, null);
  assert.equal(patched.json.limits.portLow, 20000);
  assert.equal(patched.json.disabled, true);
  assert.equal(
    (await c.call("PATCH", "/users/nobody", { ...a, body: { disabled: true } })).status,
    404,
  );

  const pw = await c.call("PUT", "/users/alice/password", {
    ...a,
    body: { password: "new-password-1" },
  });
  assert.equal(pw.status, 200);
  const login = await c.call("POST", "/login", {
    body: { username: "alice", password: "new-password-1" },
  });
  assert.equal(login.status, 200);
  // Users change their own password, nobody else's (others look absent).
  const own = await c.call("PUT", "/users/bob/password", {
    token: c.tokens.bob,
    body: { password: "bobs-new-password" },
  });
  assert.equal(own.status, 200);
  const other = await c.call("PUT", "/users/bob/password", {
    token: c.tokens.alice,
    body: { password: "hijacked-password" },
  });
  assert.equal(other.status, 404);

  for (
    const [method, path, body] of [
      ["GET", "/users", undefined],
      ["POST", "/users", { name: "mallory", password: "long-enough-pw" }],
      ["PATCH", "/users/bob", { disabled: true }],
    ] as const
  ) {
    const r = await c.call(method, path, { token: c.tokens.alice, body });
    assert.equal(r.status, 403, `${method} ${path}`);
    assert.equal(r.json.error.code, "forbidden");
  }
  const kinds = (await c.store.events({})).map((e) => e.kind);
  for (const k of ["user_created", "user_limits_changed", "user_disabled", "password_changed"]) {
    assert.ok(kinds.includes(k), `${k} in ${kinds}`);
  }
});

apiTest("lets admins grant and withdraw egress and vpn, audited; users cannot", async (c) => {
  const a = { token: c.tokens.admin };
  const before = await c.call("GET", "/users", a);
  for (const u of before.json.items as { name: string; egress: boolean; vpn: boolean }[]) {
    assert.deepEqual([u.egress, u.vpn], [false, false], `${u.name}: nothing granted yet`);
  }

  const granted = await c.call("PATCH", "/users/alice", { ...a, body: { egress: true } });
  assert.equal(granted.status, 200, JSON.stringify(granted.json));
  assert.deepEqual([granted.json.egress, granted.json.vpn], [true, false]);
  const both = await c.call("PATCH", "/users/alice", { ...a, body: { vpn: true } });
  assert.deepEqual([both.json.egress, both.json.vpn], [true, true]);
  const withdrawn = await c.call("PATCH", "/users/alice", {
    ...a,
    body: { egress: false, limits: { maxTunnels: 3 } },
  });
  assert.equal(withdrawn.status, 200, JSON.stringify(withdrawn.json));
  assert.deepEqual([withdrawn.json.egress, withdrawn.json.vpn], [false, true]);
  assert.equal(withdrawn.json.limits.maxTunnels, 3);
  const alice = await c.store.userByName("alice");
  assert.deepEqual([alice?.egress, alice?.vpn], [false, true]);
  const me = await c.call("GET", "/me", { token: c.tokens.alice });
  assert.deepEqual([me.json.user.egress, me.json.user.vpn], [false, true]);

  const created = await c.call("POST", "/users", {
    ...a,
    body: { name: "erin", password: "long-enough-pw", egress: true },
  });
  assert.equal(created.status, 201, JSON.stringify(created.json));
  assert.deepEqual([created.json.egress, created.json.vpn], [true, false]);

  const events = (await c.store.events({})).filter((e) => e.kind === "user_permissions_changed");
  assert.deepEqual(
    events.map((e) => e.detail).reverse(),
    [{ name: "alice", egress: true, by: "admin" }, { name: "alice", vpn: true, by: "admin" }, {
      name: "alice",
      egress: false,
      by: "admin",
    }],
  );
  const erin = (await c.store.events({})).find((e) =>
    e.kind === "user_created" && e.detail.name === "erin"
  );
  assert.deepEqual(erin?.detail, { name: "erin", role: "user", egress: true, by: "admin" });

  // Users cannot grant themselves anything (admins only), nor can an api token of an admin user.
  for (const token of [c.tokens.alice, c.tokens.adminApi]) {
    const r = await c.call("PATCH", "/users/alice", { token, body: { egress: true } });
    assert.equal(r.status, 403);
    assert.equal(r.json.error.code, "forbidden");
  }
  const bad = await c.call("PATCH", "/users/bob", { ...a, body: { egress: "yes" } });
  assert.equal(bad.status, 400);
  assert.match(bad.json.error.message, /^egress: /);
  const empty = await c.call("PATCH", "/users/bob", { ...a, body: {} });
  assert.equal(empty.status, 400);
  assert.match(empty.json.error.message, /egress, vpn/);
  assert.equal((await c.store.userByName("bob"))?.egress, false);
});

apiTest("answers bad bodies with 400 naming the field", async (c) => {
  const a = { token: c.tokens.admin };
  const cases: [string, string, unknown, RegExp][] = [
    ["POST", "/users", { name: "dave", password: "short" }, /^password: /],
    ["POST", "/users", { name: "bad name!", password: "long-enough-pw" }, /^name: /],
    ["POST", "/users", { password: "long-enough-pw" }, /^name: /],
    ["POST", "/users", { name: "dave", password: "long-enough-pw", extra: 1 }, /extra/],
    ["PATCH", "/users/bob", { limits: { maxTunnels: -1 } }, /^limits\.maxTunnels: /],
    ["POST", "/tokens", { scope: "root" }, /^scope: /],
    ["POST", "/tokens", { expiresInSeconds: "soon" }, /^expiresInSeconds: /],
    ["POST", "/ports", { port: 70000 }, /^port: /],
    ["POST", "/domains", { host: "x.example.org" }, /^user: /],
    ["POST", "/login", { username: "alice" }, /^password: /],
  ];
  for (const [method, path, body, field] of cases) {
    const r = await c.call(method, path, { ...a, body });
    assert.equal(r.status, 400, `${method} ${path} ${JSON.stringify(body)}`);
    assert.equal(r.json.error.code, "bad_request");
    assert.match(r.json.error.message, field, `${method} ${path}: ${r.json.error.message}`);
  }
  const broken = await c.call("POST", "/users", {
    ...a,
    rawBody: "{not json",
    headers: { "content-type": "application/json" },
  });
  assert.equal(broken.status, 400);
  assert.equal(broken.json.error.code, "bad_request");
  const q = await c.call("GET", "/users?limit=0", a);
  assert.equal(q.status, 400);
  assert.match(q.json.error.message, /^limit: /);
  const cur = await c.call("GET", "/users?cursor=zzz", a);
  assert.equal(cur.status, 400);
  assert.match(cur.json.error.message, /^cursor: /);
});

apiTest("keeps tokens to their owners: alice cannot see or revoke bob's", async (c) => {
  const made = await c.call("POST", "/tokens", {
    token: c.tokens.alice,
    body: { label: "ci", scope: "api", expiresInSeconds: 3600 },
  });
  assert.equal(made.status, 201, JSON.stringify(made.json));
  assert.equal(made.json.token.user, "alice");
  assert.equal(made.json.token.scope, "api");
  assert.ok(made.json.token.expiresAt > Date.now());
  assert.match(made.json.secret, /^mp_/);
  assert.equal(made.json.token.hash, undefined);
  const viaNew = await c.call("GET", "/me", { token: made.json.secret });
  assert.equal(viaNew.json.user.name, "alice");

  const mine = await c.call("GET", "/tokens", { token: c.tokens.alice });
  assert.ok(mine.json.items.every((t: { user: string }) => t.user === "alice"));
  assert.ok(mine.json.items.every((t: { hash?: string }) => t.hash === undefined));
  const all = await c.call("GET", "/tokens", { token: c.tokens.admin });
  assert.ok(all.json.items.some((t: { user: string }) => t.user === "bob"));
  const bobs = await c.call("GET", "/tokens?user=bob", { token: c.tokens.admin });
  assert.ok(bobs.json.items.every((t: { user: string }) => t.user === "bob"));
  assert.equal((await c.call("GET", "/tokens?user=bob", { token: c.tokens.alice })).status, 404);

  const bobToken = bobs.json.items[0].id;
  const steal = await c.call("DELETE", `/tokens/${bobToken}`, { token: c.tokens.alice });
  assert.equal(steal.status, 404);
  assert.equal(steal.json.error.code, "not_found");
  assert.equal((await c.call("GET", "/me", { token: c.tokens.bob })).status, 200);
  // Users may not mint admin tokens, nor tokens for others.
  const escalate = await c.call("POST", "/tokens", {
    token: c.tokens.alice,
    body: { scope: "admin" },
  });
  assert.equal(escalate.status, 400);
  const forBob = await c.call("POST", "/tokens", { token: c.tokens.alice, body: { user: "bob" } });
  assert.equal(forBob.status, 404);
  const adminMade = await c.call("POST", "/tokens", {
    token: c.tokens.admin,
    body: { user: "bob", label: "for bob" },
  });
  assert.equal(adminMade.status, 201);
  assert.equal(adminMade.json.token.scope, "client");

  const revoke = await c.call("DELETE", `/tokens/${made.json.token.id}`, { token: c.tokens.alice });
  assert.equal(revoke.status, 200);
  assert.equal((await c.call("GET", "/me", { token: made.json.secret })).status, 401);
  assert.equal((await c.call("DELETE", "/tokens/999999", { token: c.tokens.admin })).status, 404);
  const kinds = (await c.store.events({ userId: c.ids.alice })).map((e) => e.kind);
  assert.ok(kinds.includes("token_created") && kinds.includes("token_revoked"), String(kinds));
});

apiTest("reserves and releases ports for their owners only", async (c) => {
  const low = await portLow(c);
  const r = await c.call("POST", "/ports", {
    token: c.tokens.alice,
    body: { port: low, tunnel: "ssh" },
  });
  assert.equal(r.status, 201, JSON.stringify(r.json));
  assert.equal(r.json.user, "alice");
  assert.equal(r.json.explicit, true);
  assert.equal(r.json.expiresAt, null);
  const taken = await c.call("POST", "/ports", { token: c.tokens.bob, body: { port: low } });
  assert.equal(taken.status, 409);
  assert.equal(taken.json.error.message, `port ${low} is already reserved by another user`);
  const outside = await c.call("POST", "/ports", { token: c.tokens.bob, body: { port: 22 } });
  assert.equal(outside.status, 400);
  assert.match(outside.json.error.message, /outside the server's port range/);

  assert.equal((await c.call("GET", "/ports", { token: c.tokens.bob })).json.items.length, 0);
  assert.equal((await c.call("GET", "/ports", { token: c.tokens.alice })).json.items.length, 1);
  assert.equal((await c.call("GET", "/ports", { token: c.tokens.admin })).json.items.length, 1);
  assert.equal((await c.call("DELETE", `/ports/${low}`, { token: c.tokens.bob })).status, 404);
  const adminFor = await c.call("POST", "/ports", {
    token: c.tokens.admin,
    body: { port: low + 1, user: "bob" },
  });
  assert.equal(adminFor.status, 201);
  assert.equal(adminFor.json.user, "bob");
  assert.equal((await c.call("DELETE", `/ports/${low}`, { token: c.tokens.alice })).status, 200);
  assert.equal((await c.call("DELETE", `/ports/${low}`, { token: c.tokens.alice })).status, 404);
  assert.equal(
    (await c.call("DELETE", `/ports/${low + 1}`, { token: c.tokens.admin })).status,
    200,
  );
  const kinds = (await c.store.events({})).map((e) => e.kind);
  assert.ok(kinds.includes("port_reserved") && kinds.includes("port_released"));
});

async function portLow(c: ApiCtx): Promise<number> {
  // The harness picks a random range; a port outside it is refused with the range in the text.
  const r = await c.call("POST", "/ports", { token: c.tokens.admin, body: { port: 1 } });
  const m = /range (\d+)-(\d+)/.exec(r.json.error.message);
  assert.ok(m, r.json.error.message);
  return Number(m[1]);
}

apiTest("assigns domains (admins) and frees them for their owners", async (c) => {
  const made = await c.call("POST", "/domains", {
    token: c.tokens.admin,
    body: { host: "App.Example.org", user: "alice" },
  });
  assert.equal(made.status, 201, JSON.stringify(made.json));
  assert.equal(made.json.host, "app.example.org");
  assert.equal(made.json.kind, "domain");
  const byBob = await c.call("POST", "/domains", {
    token: c.tokens.bob,
    body: { host: "bob.example.org", user: "bob" },
  });
  assert.equal(byBob.status, 403);
  const under = await c.call("POST", "/domains", {
    token: c.tokens.admin,
    body: { host: "x.t.test", user: "bob" },
  });
  assert.equal(under.status, 400);
  const held = await c.call("POST", "/domains", {
    token: c.tokens.admin,
    body: { host: "app.example.org", user: "bob" },
  });
  assert.equal(held.status, 409);
  assert.deepEqual(
    (await c.call("GET", "/domains", { token: c.tokens.alice })).json.items.map((
      h: { host: string },
    ) => h.host),
    ["app.example.org"],
  );
  assert.equal((await c.call("GET", "/domains", { token: c.tokens.bob })).json.items.length, 0);
  assert.equal(
    (await c.call("DELETE", "/domains/app.example.org", { token: c.tokens.bob })).status,
    404,
  );
  assert.equal(
    (await c.call("DELETE", "/domains/app.example.org", { token: c.tokens.alice })).status,
    200,
  );
  assert.equal((await c.call("GET", "/domains", { token: c.tokens.admin })).json.items.length, 0);
});

apiTest("reports usage by hour or day, events and stats, each user only their own", async (c) => {
  const H = 3_600_000;
  const day = Date.UTC(2026, 10, 20);
  await c.store.addUsage([
    {
      userId: c.ids.alice,
      tunnel: "web",
      hour: day + H,
      bytesIn: 10,
      bytesOut: 20,
      connections: 1,
      errors: 0,
    },
    {
      userId: c.ids.alice,
      tunnel: "web",
      hour: day + 5 * H,
      bytesIn: 1,
      bytesOut: 2,
      connections: 3,
      errors: 1,
    },
    {
      userId: c.ids.bob,
      tunnel: "db",
      hour: day + 2 * H,
      bytesIn: 7,
      bytesOut: 7,
      connections: 1,
      errors: 0,
    },
  ]);
  const hourly = await c.call("GET", `/usage?from=${new Date(day).toISOString()}`, {
    token: c.tokens.alice,
  });
  assert.equal(hourly.status, 200, JSON.stringify(hourly.json));
  assert.deepEqual(hourly.json.items.map((r: { start: number }) => r.start), [
    day + H,
    day + 5 * H,
  ]);
  const daily = await c.call("GET", "/usage?granularity=day", { token: c.tokens.alice });
  assert.equal(daily.json.items.length, 1);
  assert.deepEqual(
    { ...daily.json.items[0] },
    {
      start: day,
      userId: c.ids.alice,
      user: "alice",
      tunnel: "web",
      bytesIn: 11,
      bytesOut: 22,
      connections: 4,
      errors: 1,
    },
  );
  const all = await c.call("GET", `/usage?granularity=day&to=${day + 3 * H}`, {
    token: c.tokens.admin,
  });
  assert.deepEqual(
    all.json.items.map((r: { user: string; bytesIn: number }) => [r.user, r.bytesIn]),
    [
      ["alice", 10],
      ["bob", 7],
    ],
  );
  const bad = await c.call("GET", "/usage?granularity=week", { token: c.tokens.alice });
  assert.equal(bad.status, 400);
  assert.match(bad.json.error.message, /^granularity: /);
  assert.equal(
    (await c.call("GET", "/usage?from=yesterday", { token: c.tokens.alice })).status,
    400,
  );

  await c.call("POST", "/tokens", { token: c.tokens.alice, body: { label: "a" } });
  await c.call("POST", "/tokens", { token: c.tokens.bob, body: { label: "b" } });
  const mine = await c.call("GET", "/events", { token: c.tokens.alice });
  assert.ok(mine.json.items.length >= 1);
  assert.ok(mine.json.items.every((e: { user: string }) => e.user === "alice"));
  const typed = await c.call("GET", "/events?type=token_created&user=bob", {
    token: c.tokens.admin,
  });
  assert.equal(typed.json.items.length, 1);
  assert.equal(typed.json.items[0].detail.label, "b");
  const since = await c.call("GET", `/events?since=${Date.now() + 60_000}`, {
    token: c.tokens.admin,
  });
  assert.equal(since.json.items.length, 0);

  const stats = await c.call("GET", "/stats", { token: c.tokens.alice });
  assert.equal(stats.status, 200);
  assert.equal(typeof stats.json.uptimeSeconds, "number");
  assert.equal(typeof stats.json.connectionsTotal, "number");
});

Deno.test("API tests cleanup", () => stores.close());
