// Makes peer-supplied text safe to print on a terminal: no escape sequences, no control characters.

/** Default cap, in characters, on one piece of peer-supplied text. */
export const MAX_PRINTABLE_CHARS = 300;

/**
 * Terminal escape sequences, removed whole so that no stray `[2J` or `0;title` is left behind:
 * CSI (`ESC [` or C1 `0x9b`, parameters, intermediates, a final byte); OSC, DCS, SOS, PM and APC
 * strings (`ESC ]`, `ESC P`, `ESC X`, `ESC ^`, `ESC _` or their C1 forms) up to their terminator
 * (BEL, `ESC \` or C1 ST); and two-byte escapes (`ESC` plus intermediates and a final byte).
 * Every part is a single character class, so matching is linear in the length of the text.
 */
const ESCAPE_SEQUENCE = new RegExp(
  [
    "(?:\\x1b\\[|\\x9b)[\\x30-\\x3f]*[\\x20-\\x2f]*[\\x40-\\x7e]",
    "(?:\\x1b[\\]PX^_]|[\\x90\\x98\\x9d\\x9e\\x9f])[^\\x07\\x1b\\x9c]*(?:\\x07|\\x1b\\\\|\\x9c)",
    "\\x1b[\\x20-\\x2f]*[\\x30-\\x7e]",
  ].join("|"),
  "g",
);
/**
 * Line breaks, tabs (including Unicode's line and paragraph separators) and runs of spaces read
 * as one space.
 */
const BREAKS = /[ \t\n\v\f\r\u0085\u2028\u2029]+/g;
/** Every other C0 control, DEL and C1 control left over (an unterminated or lone `ESC`, BEL, …). */
const CONTROLS = /\p{Cc}/gu;
/**
 * Bidirectional overrides and isolates, which reorder what the terminal shows (the "Trojan Source"
 * trick), and zero-width characters that hide text.
 */
const INVISIBLE = /[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;

/**
 * One line of peer-supplied text (a server's URL, notice, refusal or close reason; an HTTP body)
 * that is safe to print: escape sequences removed whole; line breaks, tabs and runs of spaces
 * turned into one space; every other control character (C0, DEL, C1) replaced by `?`;
 * bidirectional and zero-width characters removed; unpaired surrogates replaced by U+FFFD; and at
 * most `max` characters (a longer text ends in `…`). Applying it twice changes nothing more.
 */
export function printable(text: string, max: number = MAX_PRINTABLE_CHARS): string {
  if (!Number.isSafeInteger(max) || max < 1) {
    throw new RangeError(`printable: max must be a positive whole number, got ${max}`);
  }
  // Cap first (with room for what the cleaning removes) so a huge text costs no more than a short.
  let s = text.length > max * 8 ? text.slice(0, max * 8) : text;
  s = s.toWellFormed()
    .replace(ESCAPE_SEQUENCE, "")
    .replace(INVISIBLE, "")
    .replace(BREAKS, " ")
    .replace(CONTROLS, "?")
    .trim();
  const chars = Array.from(s);
  return chars.length > max ? chars.slice(0, max - 1).join("").trimEnd() + "…" : s;
}
