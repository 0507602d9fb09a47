// REST API browser sessions: login, cookie, CSRF, logout and login rate limiting; the OpenAPI
// document; and /api/v1 never answering on a tunnel's host name.
import assert from "node:assert/strict";
import { Validator } from "@seriousme/openapi-schema-validator";
import { BACKENDS, StoreFactory } from "../e2e/accounts_harness.ts";
import { ControlPeer } from "../e2e/raw_peers.ts";
import { API_PASSWORD, type ApiCtx, withApi } from "./api_harness.ts";

const stores = new StoreFactory();

async function login(c: ApiCtx, username: string, password = API_PASSWORD, ip?: string) {
  return await c.call("POST", "/login", {
    body: { username, password },
    headers: ip ? { "x-forwarded-for": ip } : {},
  });
}

function cookieOf(setCookie: string | null): string {
  assert.ok(setCookie, "a Set-Cookie header");
  return setCookie.split(";")[0]!;
}

for (const backend of BACKENDS) {
  Deno.test(`API (${backend}) logs in with a cookie and asks for the CSRF token on changes`, () =>
    withApi(stores, backend, async (c) => {
      const wrong = await login(c, "alice", "not-the-password");
      assert.equal(wrong.status, 401);
      assert.equal(wrong.json.error.code, "unauthorized");
      assert.equal((await login(c, "nobody")).status, 401);

      const ok = await login(c, "alice");
      assert.equal(ok.status, 200);
      assert.equal(ok.json.user.name, "alice");
      const setCookie = ok.headers.get("set-cookie")!;
      assert.match(setCookie, /^mport_session=[A-Za-z0-9_-]{43};/);
      for (const attr of ["HttpOnly", "SameSite=Strict", "Path=/"]) {
        assert.ok(setCookie.includes(attr), `${attr} in ${setCookie}`);
      }
      assert.ok(!setCookie.includes("Secure"), "no Secure over plain HTTP");
      const cookie = { cookie: cookieOf(setCookie) };
      const csrf = ok.json.csrfToken as string;

      const me = await c.call("GET", "/me", { headers: cookie });
      assert.equal(me.status, 200);
      assert.equal(me.json.auth, "session");
      assert.equal(me.json.csrfToken, csrf);
      assert.equal((await c.call("GET", "/tokens", { headers: cookie })).status, 200);

      const noCsrf = await c.call("POST", "/tokens", { headers: cookie, body: { label: "x" } });
      assert.equal(noCsrf.status, 403);
      assert.equal(noCsrf.json.error.code, "csrf");
      const badCsrf = await c.call("POST", "/tokens", {
        headers: { ...cookie, "x-csrf-token": "forged" },
        body: { label: "x" },
      });
      assert.equal(badCsrf.status, 403);
      const good = await c.call("POST", "/tokens", {
        headers: { ...cookie, "x-csrf-token": csrf },
        body: { label: "from the browser" },
      });
      assert.equal(good.status, 201);
      const del = await c.call("DELETE", `/tokens/${good.json.token.id}`, { headers: cookie });
      assert.equal(del.status, 403);

      assert.equal((await c.call("POST", "/logout", { headers: cookie })).status, 403);
      const out = await c.call("POST", "/logout", { headers: { ...cookie, "x-csrf-token": csrf } });
      assert.equal(out.status, 200);
      assert.match(out.headers.get("set-cookie") ?? "", /mport_session=; .*Max-Age=0/);
      assert.equal((await c.call("GET", "/me", { headers: cookie })).status, 401);

      const kinds = (await c.store.events({ userId: c.ids.alice })).map((e) => e.kind);
      for (const k of ["login_failed", "login", "logout", "token_created"]) {
        assert.ok(kinds.includes(k), `${k} in ${kinds}`);
      }
    }));
}

Deno.test("API marks the session cookie Secure behind a trusted proxy over https", () =>
  withApi(stores, "sqlite", async (c) => {
    const r = await c.call("POST", "/login", {
      body: { username: "bob", password: API_PASSWORD },
      headers: { "x-forwarded-proto": "https" },
    });
    assert.equal(r.status, 200);
    assert.match(r.headers.get("set-cookie") ?? "", /; Secure/);
  }, { trustedProxies: ["127.0.0.1"] }));

Deno.test("API ends the sessions of a user an admin disables", () =>
  withApi(stores, "sqlite", async (c) => {
    const ok = await login(c, "bob");
    const cookie = { cookie: cookieOf(ok.headers.get("set-cookie")) };
    assert.equal((await c.call("GET", "/me", { headers: cookie })).status, 200);
    await c.call("PATCH", "/users/bob", { token: c.tokens.admin, body: { disabled: true } });
    assert.equal((await c.call("GET", "/me", { headers: cookie })).status, 401);
    assert.equal((await login(c, "bob")).status, 401);
  }));

Deno.test("API blocks logins per user name and per address, never the user's tunnel clients", () =>
  withApi(stores, "sqlite", async (c) => {
    // Three failures for bob from one address block bob's logins from every address.
    for (let i = 0; i < 3; i++) {
      assert.equal((await login(c, "bob", "wrong-password", "10.0.0.1")).status, 401);
    }
    const blocked = await login(c, "bob", API_PASSWORD, "10.0.0.1");
    assert.equal(blocked.status, 429);
    assert.equal(blocked.json.error.code, "too_many_attempts");
    assert.ok(Number(blocked.headers.get("retry-after")) > 0);
    assert.equal((await login(c, "bob", API_PASSWORD, "10.0.0.2")).status, 429);
    assert.equal((await login(c, "alice", API_PASSWORD, "10.0.0.2")).status, 200);

    // An address that sprays names is blocked as a whole (ceiling: 5 × 3 failures).
    for (let i = 0; i < 15; i++) await login(c, `user${i}`, "wrong-password", "10.0.0.3");
    assert.equal((await login(c, "alice", API_PASSWORD, "10.0.0.3")).status, 429);

    // Block alice's logins from the address her tunnel client uses: the client still connects
    // and her API token still works.
    for (let i = 0; i < 3; i++) await login(c, "alice", "wrong-password");
    assert.equal((await login(c, "alice")).status, 429);
    const { peer } = await ControlPeer.welcomed(c.proc, [{ name: "web" }], c.tokens.aliceClient);
    assert.equal((await c.call("GET", "/tunnels", { token: c.tokens.alice })).json.items.length, 1);
    await peer.close();
    const failed = (await c.store.events({})).filter((e) => e.kind === "login_failed");
    assert.ok(failed.length >= 3);
  }, { authFailuresPerMinute: 3, trustedProxies: ["127.0.0.1"] }));

Deno.test("API publishes a valid OpenAPI 3.1 document naming every route", () =>
  withApi(stores, "sqlite", async (c) => {
    const r = await c.call("GET", "/openapi.json");
    assert.equal(r.status, 200);
    assert.equal(r.json.openapi, "3.1.0");
    const validator = new Validator();
    const result = await validator.validate(r.json);
    assert.ok(result.valid, JSON.stringify(result.errors, null, 2));
    assert.equal(validator.version, "3.1");
    const ops = Object.entries(r.json.paths as Record<string, Record<string, unknown>>)
      .flatMap(([path, item]) => Object.keys(item).map((m) => `${m.toUpperCase()} ${path}`));
    for (
      const op of [
        "POST /login",
        "POST /logout",
        "GET /me",
        "GET /users",
        "POST /users",
        "PATCH /users/{name}",
        "PUT /users/{name}/password",
        "GET /tokens",
        "POST /tokens",
        "DELETE /tokens/{id}",
        "GET /clients",
        "DELETE /clients/{id}",
        "GET /tunnels",
        "DELETE /tunnels/{id}",
        "GET /ports",
        "POST /ports",
        "DELETE /ports/{port}",
        "GET /domains",
        "POST /domains",
        "DELETE /domains/{host}",
        "GET /usage",
        "GET /events",
        "GET /stats",
        "GET /events/stream",
      ]
    ) assert.ok(ops.includes(op), `${op} documented`);
    assert.equal(ops.length, 24);
  }));

Deno.test("API is never reached on a tunnel's host name: the request goes to the tunnel", () =>
  withApi(stores, "sqlite", async (c) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: c.server.addr.port });
    try {
      const req = "GET /api/v1/me HTTP/1.1\r\nHost: app.t.test\r\n" +
        `Authorization: Bearer ${c.tokens.admin}\r\nAccept: application/json\r\n` +
        "Connection: close\r\n\r\n";
      await conn.write(new TextEncoder().encode(req));
      let text = "";
      const buf = new Uint8Array(16 * 1024);
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
      assert.match(text, /^HTTP\/1\.1 404/);
      assert.match(text, /tunnel_not_found|No tunnel serves app\.t\.test/);
      assert.ok(!text.includes('"admin"'), "not the API's answer");
    } finally {
      conn.close();
    }
    // The same path on the server's own host is the API.
    assert.equal((await c.call("GET", "/me", { token: c.tokens.admin })).status, 200);
  }));

Deno.test("API session tests cleanup", () => stores.close());
