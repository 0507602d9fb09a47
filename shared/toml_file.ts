// Reading TOML config files for both programs: parse errors and key errors that name FILE:LINE.
import { parse, TomlError } from "smol-toml";

/** Parses a TOML document; a syntax error becomes `FILE:LINE:COLUMN: what is wrong`. */
export function parseTomlFile(text: string, path: string): Record<string, unknown> {
  try {
    return parse(text) as Record<string, unknown>;
  } catch (e) {
    const first = (e as Error).message.split("\n")[0]!.replace(/^Invalid TOML document: /, "");
    if (e instanceof TomlError) {
      throw new TypeError(`cannot parse ${path}:${e.line}:${e.column}: ${first}`);
    }
    throw new TypeError(`cannot parse ${path}: ${first}`);
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * The 1-based line where `key` is set in `text`: at the top level, or (with `table`) inside the
 * `index`-th `[[table]]` (or `[table]`). Null when it cannot be told (then messages omit it).
 */
export function keyLine(
  text: string,
  key: string,
  within?: { readonly table: string; readonly index: number },
): number | null {
  const lines = text.split(/\r?\n/);
  const k = escapeRegExp(key);
  const assign = new RegExp(`^\\s*(?:${k}|"${k}"|'${k}')\\s*[=.]`);
  const header = new RegExp(`^\\s*\\[\\[?\\s*(?:${k}|"${k}"|'${k}')\\s*[\\].]`);
  let table: string | null = null;
  let seen = -1;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const h = /^\s*\[\[?\s*([^\]]+?)\s*\]\]?/.exec(line);
    if (h) {
      table = h[1]!.replace(/^["']|["']$/g, "");
      if (within && table === within.table) seen++;
      if (!within && header.test(line)) return i + 1;
      continue;
    }
    const here = within ? table === within.table && seen === within.index : table === null;
    if (here && assign.test(line)) return i + 1;
  }
  return null;
}

/** The 1-based line of the `index`-th `[[table]]` header in `text`, or null. */
export function tableLine(text: string, table: string, index: number): number | null {
  const lines = text.split(/\r?\n/);
  const t = escapeRegExp(table);
  const re = new RegExp(`^\\s*\\[\\[\\s*(?:${t}|"${t}"|'${t}')\\s*\\]\\]`);
  let seen = -1;
  for (let i = 0; i < lines.length; i++) {
    if (re.test(lines[i]!) && ++seen === index) return i + 1;
  }
  return null;
}

/** `FILE:LINE` (or `FILE` when the line is unknown), to start a message about a key. */
export function where(path: string, line: number | null): string {
  return line === null ? path : `${path}:${line}`;
}
