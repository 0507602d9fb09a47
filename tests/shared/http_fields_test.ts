// Tests for Fields: header fields kept line by line, read and changed like a `Headers`.
import assert from "node:assert/strict";
import { Fields } from "../../shared/http_fields.ts";
import { parseRequestHead, parseResponseHead } from "../../shared/http_head.ts";

const VALID_NAMES = [
  "Host",
  "x-forwarded-for",
  "X_Under_Score",
  "a",
  "0",
  "!#$%&'*+-.^_`|~",
  "Content-MD5",
];

const INVALID_NAMES: { name: string; why: string }[] = [
  { name: "", why: "empty" },
  { name: "a b", why: "space" },
  { name: "a:b", why: "colon" },
  { name: "a\tb", why: "tab" },
  { name: "a\r\nb", why: "CR LF" },
  { name: "a\n", why: "trailing LF" },
  { name: "a\0", why: "NUL" },
  { name: "caf\xe9", why: "obs-text" },
  { name: "a(b)", why: "separator" },
  { name: '"q"', why: "quote" },
  { name: "a/b", why: "slash" },
  { name: "x\u0100", why: "beyond Latin-1" },
];

/** A value as given, and what `get` returns for it (outer spaces and tabs dropped). */
const VALID_VALUES: { value: string; stored: string }[] = [
  { value: "", stored: "" },
  { value: "text/html; charset=utf-8", stored: "text/html; charset=utf-8" },
  { value: "  padded\t", stored: "padded" },
  { value: "\t \t", stored: "" },
  { value: "in side\tspaces", stored: "in side\tspaces" },
  { value: "caf\xe9 \x80\xff", stored: "caf\xe9 \x80\xff" },
  { value: 'a="1, 2"; b', stored: 'a="1, 2"; b' },
  { value: "~!@#$%^&*()_+{}|:<>?", stored: "~!@#$%^&*()_+{}|:<>?" },
];

const INVALID_VALUES: { value: string; why: string }[] = [
  { value: "a\rb", why: "CR" },
  { value: "a\nb", why: "LF" },
  { value: "a\r\nInjected: yes", why: "CR LF (header injection)" },
  { value: "a\0b", why: "NUL" },
  { value: "x\r\n", why: "trailing CR LF (Headers would strip it)" },
  { value: "\nx", why: "leading LF (Headers would strip it)" },
  { value: "a\x01b", why: "other control character (Headers allows it)" },
  { value: "a\x7fb", why: "DEL (Headers allows it)" },
  { value: "a\u0100", why: "beyond Latin-1" },
  { value: "\u2603", why: "emoji-range character" },
];

Deno.test("Fields accepts every valid header name in append and set", () => {
  for (const name of VALID_NAMES) {
    const f = new Fields();
    f.append(name, "1");
    f.set(name, "2");
    assert.equal(f.get(name), "2", name);
    assert.equal(f.get(name.toUpperCase()), "2", name);
    assert.deepEqual([...f], [[name, "2"]], name);
  }
});

Deno.test("Fields refuses invalid header names with a TypeError that names them", () => {
  for (const { name, why } of INVALID_NAMES) {
    const f = new Fields();
    assert.throws(() => f.append(name, "v"), TypeError, why);
    assert.throws(() => f.set(name, "v"), TypeError, why);
    assert.throws(() => new Fields([[name, "v"]]), TypeError, why);
    assert.throws(() => f.append(name, "v"), { message: /invalid header name/ }, why);
    assert.equal(f.size, 0, `${why}: nothing added`);
  }
});

Deno.test("Fields keeps valid values, without the spaces and tabs around them", () => {
  for (const { value, stored } of VALID_VALUES) {
    const f = new Fields();
    f.append("X-A", value);
    f.set("X-B", value);
    assert.equal(f.get("x-a"), stored, JSON.stringify(value));
    assert.equal(f.get("x-b"), stored, JSON.stringify(value));
    assert.equal(f.lines(), `X-A: ${stored}\r\nX-B: ${stored}\r\n`);
  }
});

Deno.test("Fields refuses CR, LF, NUL and other control characters in values", () => {
  for (const { value, why } of INVALID_VALUES) {
    const f = new Fields([["Keep", "1"]]);
    assert.throws(() => f.append("X-A", value), TypeError, why);
    assert.throws(() => f.set("Keep", value), { name: "TypeError", message: /Keep/ }, why);
    assert.equal(f.lines(), "Keep: 1\r\n", `${why}: fields unchanged`);
  }
});

Deno.test("Fields is stricter than Headers only for values Headers would pass on", () => {
  // Headers strips a trailing CR LF and allows other control characters; a head that is
  // written out as text must not carry either.
  for (const value of ["x\r\n", "a\x01b", "a\x7fb"]) {
    assert.doesNotThrow(() => new Headers().set("a", value));
    assert.throws(() => new Fields().set("a", value), TypeError);
  }
});

Deno.test("Fields appendTrusted adds a field without checking it", () => {
  const f = new Fields();
  f.appendTrusted("Bad Name", "a\x01b");
  assert.equal(f.get("bad name"), "a\x01b");
  assert.deepEqual([...f], [["Bad Name", "a\x01b"]]);
});

type Op =
  | readonly ["append", string, string]
  | readonly ["set", string, string]
  | readonly ["delete", string];

/** Sequences of changes; after each, get/has on every name must match a real Headers. */
const SEQUENCES: { name: string; init: [string, string][]; ops: Op[] }[] = [
  { name: "empty", init: [], ops: [] },
  { name: "one field", init: [["Content-Type", "text/plain"]], ops: [] },
  {
    name: "repeats joined by get",
    init: [["A", "1"], ["b", "x"], ["a", "2"], ["A", "3"]],
    ops: [],
  },
  { name: "append then get", init: [], ops: [["append", "X", "1"], ["append", "x", "2"]] },
  {
    name: "set replaces repeats",
    init: [["A", "1"], ["B", "2"], ["a", "3"]],
    ops: [["set", "a", "9"]],
  },
  { name: "set a new name", init: [["A", "1"]], ops: [["set", "New", "v"]] },
  {
    name: "delete all repeats",
    init: [["A", "1"], ["a", "2"], ["B", "3"]],
    ops: [["delete", "A"]],
  },
  { name: "delete an absent name", init: [["A", "1"]], ops: [["delete", "zzz"]] },
  {
    name: "delete then append",
    init: [["A", "1"]],
    ops: [["delete", "a"], ["append", "A", "2"], ["append", "a", "3"]],
  },
  { name: "set then append", init: [], ops: [["set", "A", "1"], ["append", "A", "2"]] },
  { name: "values with commas", init: [["V", 'a="1,2"'], ["V", "b"]], ops: [] },
  { name: "empty values", init: [["E", ""], ["E", ""], ["F", ""]], ops: [["append", "F", "x"]] },
  { name: "cookie lines", init: [["Cookie", "a=1"], ["cookie", "b=2"]], ops: [] },
  {
    name: "set-cookie lines",
    init: [["Set-Cookie", "a=1; Path=/"], ["Set-Cookie", "b=2, c"]],
    ops: [["append", "set-cookie", "d=4"]],
  },
  { name: "mixed case everywhere", init: [["X-Mixed", "1"]], ops: [["set", "x-MIXED", "2"]] },
  {
    name: "many changes",
    init: [["A", "1"], ["B", "2"], ["C", "3"], ["a", "4"]],
    ops: [["delete", "b"], ["set", "C", "5"], ["append", "b", "6"], ["set", "A", "7"]],
  },
];

function apply(target: Headers, op: Op): void {
  if (op[0] === "append") target.append(op[1], op[2]);
  else if (op[0] === "set") target.set(op[1], op[2]);
  else target.delete(op[1]);
}

Deno.test("Fields answers get, has and getSetCookie as Headers does after the same changes", () => {
  for (const { name, init, ops } of SEQUENCES) {
    const fields = new Fields(init);
    const headers = new Headers(init);
    const probe = new Set<string>(["absent", "set-cookie"]);
    for (const [k] of init) probe.add(k).add(k.toUpperCase()).add(k.toLowerCase());
    const check = (step: string) => {
      for (const op of ops) probe.add(op[1]);
      for (const p of probe) {
        assert.equal(fields.get(p), headers.get(p), `${name} ${step}: get(${p})`);
        assert.equal(fields.has(p), headers.has(p), `${name} ${step}: has(${p})`);
      }
      assert.deepEqual(fields.getSetCookie(), headers.getSetCookie(), `${name} ${step}`);
    };
    check("before changes");
    ops.forEach((op, i) => {
      apply(fields, op);
      apply(headers, op);
      check(`after change ${i + 1} (${op[0]} ${op[1]})`);
    });
  }
});

Deno.test("Fields iterates each line in order with its name as sent, unlike Headers", () => {
  const init: [string, string][] = [["Zeta", "1"], ["alpha", "2"], ["ZETA", "3"], [
    "Cookie",
    "a=1",
  ]];
  const f = new Fields(init);
  const h = new Headers(init);
  assert.deepEqual([...f], init);
  assert.deepEqual([...f.entries()], init);
  assert.deepEqual([...f.keys()], ["Zeta", "alpha", "ZETA", "Cookie"]);
  assert.deepEqual([...f.values()], ["1", "2", "3", "a=1"]);
  // Headers sorts, lower-cases and joins repeats.
  assert.deepEqual([...h], [["alpha", "2"], ["cookie", "a=1"], ["zeta", "1, 3"]]);
  const seen: string[] = [];
  f.forEach((v, k, parent) => {
    assert.equal(parent, f);
    seen.push(`${k}=${v}`);
  });
  assert.deepEqual(seen, ["Zeta=1", "alpha=2", "ZETA=3", "Cookie=a=1"]);
  assert.equal(f.size, 4);
});

Deno.test("Fields keeps two Cookie lines apart where Headers joins them", () => {
  const init: [string, string][] = [["Cookie", "a=1"], ["Cookie", "b=2"]];
  const f = new Fields(init);
  assert.equal(f.lines(), "Cookie: a=1\r\nCookie: b=2\r\n");
  assert.deepEqual([...new Headers(init)], [["cookie", "a=1, b=2"]]);
  assert.equal(f.get("cookie"), new Headers(init).get("cookie"));
});

Deno.test("Fields set replaces every repeat at the place of the first", () => {
  const f = new Fields([["A", "1"], ["X-Dup", "2"], ["B", "3"], ["x-dup", "4"], ["C", "5"]]);
  f.set("x-DUP", "new");
  assert.equal(f.lines(), "A: 1\r\nx-DUP: new\r\nB: 3\r\nC: 5\r\n");
  f.set("D", "6");
  assert.equal(f.lines(), "A: 1\r\nx-DUP: new\r\nB: 3\r\nC: 5\r\nD: 6\r\n");
});

Deno.test("Fields delete removes every line of the name, whatever its case", () => {
  const f = new Fields([["A", "1"], ["b", "2"], ["a", "3"], ["C", "4"]]);
  f.delete("A");
  assert.equal(f.lines(), "b: 2\r\nC: 4\r\n");
  assert.equal(f.has("a"), false);
  f.delete("nothing");
  assert.equal(f.size, 2);
});

Deno.test("Fields getSetCookie returns each Set-Cookie line whole, commas and all", () => {
  const f = new Fields([
    ["Set-Cookie", "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT"],
    ["Content-Type", "text/plain"],
    ["set-cookie", "b=2"],
  ]);
  assert.deepEqual(f.getSetCookie(), ["a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT", "b=2"]);
  assert.equal(
    f.lines(),
    "Set-Cookie: a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT\r\nContent-Type: text/plain\r\n" +
      "set-cookie: b=2\r\n",
  );
  assert.deepEqual(new Fields().getSetCookie(), []);
});

Deno.test("Fields clone is a copy that changes on its own", () => {
  const f = new Fields([["A", "1"], ["a", "2"]]);
  const c = f.clone();
  c.set("A", "x");
  c.append("B", "y");
  assert.equal(f.lines(), "A: 1\r\na: 2\r\n");
  assert.equal(c.lines(), "A: x\r\nB: y\r\n");
  assert.ok(c instanceof Fields);
});

Deno.test("Fields is usable where a Headers is expected", () => {
  const f = new Fields([["Content-Type", "text/plain"], ["X-A", "1"], ["x-a", "2"]]);
  const h = new Headers(f);
  assert.equal(h.get("x-a"), "1, 2");
  const res = new Response("hi", { headers: f });
  assert.equal(res.headers.get("content-type"), "text/plain");
});

Deno.test("parsed request and response heads keep their fields as sent", () => {
  const req = parseRequestHead(
    "GET / HTTP/1.1\r\nHost: a.test\r\nCookie: a=1\r\nX-Tab:\tv \r\ncookie: b=2\r\n\r\n",
  );
  assert.ok(req.headers instanceof Fields);
  assert.deepEqual([...req.headers], [
    ["Host", "a.test"],
    ["Cookie", "a=1"],
    ["X-Tab", "v"],
    ["cookie", "b=2"],
  ]);
  assert.equal(req.headers.get("COOKIE"), "a=1, b=2");
  const res = parseResponseHead("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n");
  assert.ok(res.headers instanceof Fields);
  assert.equal((res.headers as Fields).lines(), "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n");
  assert.deepEqual(res.headers.getSetCookie(), ["a=1", "b=2"]);
});
