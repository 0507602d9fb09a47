// Browser sessions: ids stored hashed, idle and absolute expiry on an injected clock, CSRF checks.
import assert from "node:assert/strict";
import {
  ABSOLUTE_MS,
  cookieValue,
  IDLE_MS,
  MAX_WEB_SESSIONS,
  sessionCookie,
  WebSessions,
} from "../../server/api/web_sessions.ts";

function clock(start = 1_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

Deno.test("web sessions expire after 12 h idle and 7 d in all, however busy", () => {
  const c = clock();
  const s = new WebSessions(c.now);
  const { id } = s.create(7);
  assert.equal(s.lookup(id)?.userId, 7);
  c.advance(IDLE_MS - 1);
  assert.ok(s.lookup(id), "used just before the idle limit");
  c.advance(IDLE_MS - 1);
  assert.ok(s.lookup(id), "each use restarts the idle clock");
  c.advance(IDLE_MS);
  assert.equal(s.lookup(id), null, "idle for 12 h");

  const busy = s.create(8).id;
  let elapsed = 0;
  while (elapsed + IDLE_MS / 2 < ABSOLUTE_MS) {
    c.advance(IDLE_MS / 2);
    elapsed += IDLE_MS / 2;
    assert.ok(s.lookup(busy), `in use after ${elapsed / 3_600_000} h`);
  }
  c.advance(ABSOLUTE_MS - elapsed);
  assert.equal(s.lookup(busy), null, "7 days after login");
});

Deno.test("web sessions keep only a hash of the id, take 256-bit ids and check CSRF tokens", () => {
  const s = new WebSessions();
  const { id, session } = s.create(1);
  assert.equal(Buffer.from(id, "base64url").length, 32);
  assert.equal(s.lookup(id.slice(0, -1) + (id.endsWith("A") ? "B" : "A")), null);
  assert.equal(s.lookup(null), null);
  const req = (h: Record<string, string>) =>
    new Request("http://x/", { method: "POST", headers: h });
  assert.ok(s.csrfOk(session, req({ "x-csrf-token": session.csrfToken })));
  assert.ok(!s.csrfOk(session, req({ "x-csrf-token": "nope" })));
  assert.ok(!s.csrfOk(session, req({})));
  assert.equal(s.fromRequest(req({ cookie: `a=b; mport_session=${id}` }))?.userId, 1);
  assert.ok(!JSON.stringify(Deno.inspect(s)).includes(id));
  s.endUser(1);
  assert.equal(s.lookup(id), null);
});

Deno.test("web sessions are capped: past the maximum the least recently used ends", () => {
  const s = new WebSessions();
  const first = s.create(1).id;
  const second = s.create(2).id;
  for (let i = 0; i < MAX_WEB_SESSIONS - 2; i++) s.create(3);
  assert.ok(s.lookup(first)); // now the most recently used
  s.create(4);
  assert.equal(s.size, MAX_WEB_SESSIONS);
  assert.equal(s.lookup(second), null);
  assert.ok(s.lookup(first));
});

Deno.test("session cookie is HttpOnly, SameSite=Strict, Path=/ and Secure only over TLS", () => {
  assert.equal(
    sessionCookie("abc", false),
    "mport_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=604800",
  );
  assert.match(sessionCookie("abc", true), /; Secure$/);
  assert.equal(cookieValue("x=1; mport_session=v ; y=2", "mport_session"), "v");
  assert.equal(cookieValue("x=1", "mport_session"), null);
});
