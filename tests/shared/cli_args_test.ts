// Tests for flag parsing shared by both programs: one-sentence errors and "did you mean".
import assert from "node:assert/strict";
import { closest, editDistance, parseFlags } from "../../shared/cli_args.ts";

const OPTIONS = {
  listen: { type: "string" },
  "path-prefix": { type: "string" },
  token: { type: "string", multiple: true },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

function parse(args: string[], allowPositionals = false) {
  return parseFlags({ args, options: OPTIONS, strict: true, allowPositionals });
}

Deno.test("edit distance counts insertions, deletions and substitutions", () => {
  const cases: [string, string, number][] = [
    ["listen", "listen", 0],
    ["lisen", "listen", 1],
    ["lsiten", "listen", 2],
    ["", "abc", 3],
    ["kitten", "sitting", 3],
  ];
  for (const [a, b, d] of cases) assert.equal(editDistance(a, b), d, `${a} ${b}`);
});

Deno.test("closest suggests within distance 2, or the only flag with that prefix", () => {
  const known = ["listen", "path-prefix", "token", "tokens-file", "db"];
  assert.equal(closest("lisen", known), "listen");
  assert.equal(closest("tokens", known), "token");
  assert.equal(closest("path", known), "path-prefix");
  assert.equal(closest("tok", known), "token"); // distance 2 wins over the ambiguous prefix
  assert.equal(closest("x", known), null); // too short to guess
  assert.equal(closest("frobnicate", known), null);
});

Deno.test("parseFlags returns parseArgs' result for a good command line", () => {
  const r = parse(["--listen", "1", "--token=a", "--token", "b", "--json", "-h"]);
  assert.deepEqual({ ...r.values }, { listen: "1", token: ["a", "b"], json: true, help: true });
  assert.deepEqual(parse(["x", "--json"], true).positionals, ["x"]);
});

const INVALID: [string[], string][] = [
  [["--lisen", "1"], "unknown flag --lisen: did you mean --listen?"],
  [["--lisen=1"], "unknown flag --lisen: did you mean --listen?"],
  [["--frobnicate"], "unknown flag --frobnicate"],
  [["-x"], "unknown flag -x"],
  [["--listen"], "--listen needs a value"],
  [
    ["--listen", "-1"],
    '--listen needs a value, and "-1" looks like a flag (write --listen=-1 if it is the value)',
  ],
  [["--json=yes"], "--json takes no value"],
  [["extra"], 'unexpected argument "extra"'],
  [["--", "--listen"], 'unexpected argument "--listen"'],
];

for (const [args, message] of INVALID) {
  Deno.test(`parseFlags refuses ${args.join(" ")} in one sentence`, () => {
    assert.throws(() => parse(args), { name: "UsageError", message });
  });
}
