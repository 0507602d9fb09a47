// Table-driven tests for printable(): what peer-supplied text looks like once it is safe to print.
import assert from "node:assert/strict";
import { MAX_PRINTABLE_CHARS, printable } from "../../shared/sanitize.ts";

/** A terminal attack: clear the screen, set the window title, ring the bell. */
const ATTACK = "\x1b[2J\x1b]0;pwned\x07";

const CASES: [name: string, input: string, want: string][] = [
  ["plain text is kept", "tcp://vps.example.com:10005", "tcp://vps.example.com:10005"],
  ["non-ASCII text is kept", "Tunnel für André — 東京 ✓", "Tunnel für André — 東京 ✓"],
  ["CSI and OSC sequences are removed whole", `tcp://h:1${ATTACK}`, "tcp://h:1"],
  ["an OSC ended by ESC \\ is removed whole", "a\x1b]8;;http://evil\x1b\\b", "ab"],
  [
    "DCS, PM and APC strings are removed whole",
    "a\x1bPq#0\x1b\\b\x1b^pm\x07c\x1b_apc\x1b\\d",
    "abcd",
  ],
  ["SGR colours are removed", "\x1b[1;31mred\x1b[0m", "red"],
  ["CSI with private parameters", "\x1b[?1049hx\x1b[?25l", "x"],
  ["two-byte escapes are removed", "a\x1bcb\x1b(0c\x1b7d", "abcd"],
  ["C1 CSI, OSC and ST are removed", "a\u009b2Jb\u009d0;t\u009cc", "abc"],
  ["C1 DCS ended by BEL", "a\u0090junk\x07b", "ab"],
  ["a lone ESC becomes ?", "a\x1b", "a?"],
  ["an ESC before a non-ASCII letter becomes ?", "a\x1bé", "a?é"],
  ["an unterminated OSC leaves its text but no ESC", "a\x1b]0;title", "a0;title"],
  ["BEL, NUL, BS and DEL become ?", "a\x07b\x00c\x08d\x7fe", "a?b?c?d?e"],
  ["other C1 controls become ?", "a\u0080b\u0094c\u009fd", "a?b?c?d"],
  ["line breaks and tabs become one space", "one\r\ntwo\tthree\n\n four", "one two three four"],
  ["NEL and Unicode separators become spaces", "a\u0085b\u2028c\u2029d", "a b c d"],
  ["a carriage return cannot overwrite the line", "ok\rFAKE", "ok FAKE"],
  ["bidi overrides are removed", "abc\u202eevil\u202c\u2066x\u2069", "abcevilx"],
  ["zero-width characters are removed", "a\u200bb\ufeffc\u2060d", "abcd"],
  ["leading and trailing space is trimmed", "  \n hi \t", "hi"],
  ["an unpaired surrogate becomes U+FFFD", "a\ud800b", "a\ufffdb"],
  ["only controls leaves nothing", "\x1b[2J\x07\x1b]0;x\x07", "?"],
];

for (const [name, input, want] of CASES) {
  Deno.test(`printable: ${name}`, () => {
    const got = printable(input);
    assert.equal(got, want, JSON.stringify(input));
    assert.equal(printable(got), got, "printable twice changes nothing more");
  });
}

Deno.test("printable output never holds a C0, DEL or C1 control", () => {
  // Every code point below U+00A0, each alone and each after ESC.
  let all = "";
  for (let c = 0; c < 0xa0; c++) all += String.fromCharCode(c) + "\x1b" + String.fromCharCode(c);
  const got = printable(all, 100_000);
  assert.doesNotMatch(got, /\p{Cc}/u);
});

Deno.test("printable caps the length, counting characters, with an ellipsis", () => {
  assert.equal(printable("x".repeat(MAX_PRINTABLE_CHARS)), "x".repeat(MAX_PRINTABLE_CHARS));
  assert.equal(
    printable("x".repeat(MAX_PRINTABLE_CHARS + 1)),
    "x".repeat(MAX_PRINTABLE_CHARS - 1) + "…",
  );
  assert.equal(printable("abcdef", 4), "abc…");
  // Emoji are one character each, never cut in half.
  assert.equal(printable("😀😀😀😀😀", 3), "😀😀…");
  // Removed sequences do not count.
  assert.equal(printable(`${ATTACK}abcd`, 4), "abcd");
});

Deno.test("printable is quick on a huge hostile text", () => {
  const huge = "\x1b]".repeat(500_000) + "\x1b[".repeat(500_000);
  const start = performance.now();
  const got = printable(huge);
  assert.ok(performance.now() - start < 1000, "took more than a second");
  assert.ok(got.length <= MAX_PRINTABLE_CHARS);
  assert.doesNotMatch(got, /\p{Cc}/u);
});

Deno.test("printable rejects a cap that is not a positive whole number", () => {
  assert.throws(() => printable("x", 0), RangeError);
  assert.throws(() => printable("x", 1.5), RangeError);
});
