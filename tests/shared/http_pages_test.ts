// Tests for error pages: HTML or JSON by Accept, headers, HEAD, escaping, reason phrases.
import assert from "node:assert/strict";
import { type ErrorPage, errorResponse, reasonPhrase } from "../../shared/http_pages.ts";
import { parseResponseHead } from "../../shared/http_head.ts";

const NOT_FOUND: ErrorPage = {
  status: 404,
  code: "tunnel_not_found",
  title: "Tunnel not found",
  message: 'No tunnel named "foo" on this server.',
};

/** Splits a response into its parsed head and body text. */
function split(bytes: Uint8Array) {
  const text = new TextDecoder("latin1").decode(bytes);
  const end = text.indexOf("\r\n\r\n");
  assert.ok(end > 0);
  const head = parseResponseHead(text.slice(0, end));
  const body = new TextDecoder().decode(bytes.subarray(end + 4));
  return { head, body, rawHead: text.slice(0, end) };
}

const NEGOTIATION: { accept: string | null; json: boolean }[] = [
  { accept: null, json: false },
  { accept: "", json: false },
  { accept: "*/*", json: false },
  { accept: "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", json: false },
  { accept: "application/json", json: true },
  { accept: "Application/JSON; charset=utf-8", json: true },
  { accept: "application/json, text/plain, */*", json: true },
  { accept: "application/*", json: true },
  { accept: "text/html, application/json", json: false },
  { accept: "text/html;q=0.5, application/json", json: true },
  { accept: "application/json;q=0.5, text/html", json: false },
  { accept: "application/json;q=0, */*", json: false },
  { accept: "text/plain", json: false },
];

for (const c of NEGOTIATION) {
  Deno.test(`errorResponse answers ${c.json ? "JSON" : "HTML"} to Accept ${JSON.stringify(c.accept)}`, () => {
    const { head, body } = split(errorResponse(NOT_FOUND, { accept: c.accept, close: false }));
    assert.equal(
      head.headers.get("content-type"),
      c.json ? "application/json; charset=utf-8" : "text/html; charset=utf-8",
    );
    if (c.json) {
      assert.deepEqual(JSON.parse(body), {
        error: {
          code: "tunnel_not_found",
          message: 'No tunnel named "foo" on this server.',
          status: 404,
        },
      });
    } else {
      assert.match(body, /^<!doctype html>/);
      assert.ok(body.includes("<title>404 Tunnel not found</title>"));
      assert.ok(body.includes("No tunnel named &#34;foo&#34; on this server."));
    }
  });
}

Deno.test("errorResponse writes the status line and the fixed headers, in order", () => {
  const { head, rawHead } = split(
    errorResponse(NOT_FOUND, { accept: "application/json", close: true }),
  );
  const body =
    '{"error":{"code":"tunnel_not_found","message":"No tunnel named \\"foo\\" on this server.","status":404}}';
  assert.equal(
    rawHead,
    [
      "HTTP/1.1 404 Not Found",
      "content-type: application/json; charset=utf-8",
      `content-length: ${body.length}`,
      "cache-control: no-store",
      "x-content-type-options: nosniff",
      "connection: close",
    ].join("\r\n"),
  );
  assert.equal(head.status, 404);
});

Deno.test("errorResponse says keep-alive when not closing and adds the extra headers", () => {
  const page: ErrorPage = {
    status: 401,
    code: "auth_required",
    title: "Sign in required",
    message: "This tunnel is protected by a password.",
    headers: [["www-authenticate", 'Basic realm="mport"']],
  };
  const { head } = split(errorResponse(page, { accept: null, close: false }));
  assert.equal(head.statusText, "Unauthorized");
  assert.equal(head.headers.get("connection"), "keep-alive");
  assert.equal(head.headers.get("www-authenticate"), 'Basic realm="mport"');
  assert.equal(head.headers.get("cache-control"), "no-store");
  assert.equal(head.headers.get("x-content-type-options"), "nosniff");
  assert.equal(
    head.headers.get("content-security-policy"),
    "default-src 'none'; style-src 'unsafe-inline'",
  );
});

Deno.test("errorResponse content-length counts UTF-8 bytes of the body", () => {
  const page = { ...NOT_FOUND, message: "Kein Tunnel namens »föö« — 🚇" };
  for (const accept of [null, "application/json"]) {
    const bytes = errorResponse(page, { accept, close: false });
    const { head, body } = split(bytes);
    assert.equal(Number(head.headers.get("content-length")), new TextEncoder().encode(body).length);
    assert.ok(body.includes("Kein Tunnel namens »föö« — 🚇"));
  }
});

Deno.test("errorResponse to HEAD has no body but the same content-length", () => {
  for (const accept of [null, "application/json"]) {
    const full = split(errorResponse(NOT_FOUND, { accept, close: false }));
    const bytes = errorResponse(NOT_FOUND, { accept, close: false, head: true });
    const text = new TextDecoder().decode(bytes);
    assert.ok(text.endsWith("\r\n\r\n"));
    assert.equal(text.indexOf("\r\n\r\n"), text.length - 4);
    const { head, body } = split(bytes);
    assert.equal(body, "");
    assert.equal(head.headers.get("content-length"), full.head.headers.get("content-length"));
  }
});

Deno.test("errorResponse escapes HTML and loads nothing from outside", () => {
  const page: ErrorPage = {
    status: 502,
    code: "<code>",
    title: "<script>alert(1)</script>",
    message: `It's <b>down</b> & "out"`,
  };
  const { body } = split(errorResponse(page, { accept: "text/html", close: true }));
  assert.ok(!body.includes("<script>"));
  assert.ok(!body.includes("<b>"));
  assert.ok(body.includes("502 &#60;script&#62;alert(1)&#60;/script&#62;"));
  assert.ok(body.includes("It&#39;s &#60;b&#62;down&#60;/b&#62; &#38; &#34;out&#34;"));
  assert.ok(body.includes("&#60;code&#62;"));
  assert.ok(body.includes("<footer>mport</footer>"));
  assert.doesNotMatch(body, /https?:|src=|href=/);
});

const BAD_PAGES: { name: string; page: ErrorPage; message: string }[] = [
  {
    name: "status 99",
    page: { ...NOT_FOUND, status: 99 },
    message: "invalid HTTP status 99: expected 100-999",
  },
  {
    name: "status 1000",
    page: { ...NOT_FOUND, status: 1000 },
    message: "invalid HTTP status 1000: expected 100-999",
  },
  {
    name: "a header name with a space",
    page: { ...NOT_FOUND, headers: [["bad name", "x"]] },
    message: 'invalid header for an error page: "bad name"',
  },
  {
    name: "a header value with CRLF",
    page: { ...NOT_FOUND, headers: [["x-a", "1\r\nset-cookie: a=b"]] },
    message: 'invalid header for an error page: "x-a"',
  },
];

for (const c of BAD_PAGES) {
  Deno.test(`errorResponse refuses ${c.name}`, () => {
    assert.throws(() => errorResponse(c.page, { accept: null, close: true }), {
      name: "TypeError",
      message: c.message,
    });
  });
}

const REASONS: [number, string][] = [
  [200, "OK"],
  [101, "Switching Protocols"],
  [401, "Unauthorized"],
  [403, "Forbidden"],
  [404, "Not Found"],
  [413, "Content Too Large"],
  [421, "Misdirected Request"],
  [431, "Request Header Fields Too Large"],
  [502, "Bad Gateway"],
  [503, "Service Unavailable"],
  [504, "Gateway Timeout"],
  [299, ""],
  [999, ""],
];

for (const [status, phrase] of REASONS) {
  Deno.test(`reasonPhrase(${status}) is ${JSON.stringify(phrase)}`, () => {
    assert.equal(reasonPhrase(status), phrase);
  });
}

Deno.test("errorResponse for a status without a reason phrase still parses", () => {
  const { head } = split(
    errorResponse({ ...NOT_FOUND, status: 599 }, { accept: null, close: true }),
  );
  assert.equal(head.status, 599);
  assert.equal(head.statusText, "");
});
