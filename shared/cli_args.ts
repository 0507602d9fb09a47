// Flag parsing for both programs: node:util parseArgs, with one-sentence errors and "did you mean".
import { parseArgs, type ParseArgsConfig } from "node:util";

/** A command line that cannot be parsed; its message is one sentence for the user. */
export class UsageError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Levenshtein distance between two short strings. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row.push(Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + cost));
    }
    prev = row;
  }
  return prev[b.length]!;
}

/**
 * The known word closest to `typed`: within edit distance 2 (and less than its length, so that
 * `--x` suggests nothing), else the only known word that starts with it (3+ characters).
 */
export function closest(typed: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(typed, k);
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  if (best !== null && bestDistance <= 2 && bestDistance < typed.length) return best;
  const prefixed = typed.length >= 3 ? known.filter((k) => k.startsWith(typed)) : [];
  return prefixed.length === 1 ? prefixed[0]! : null;
}

/** `unknown flag --lisen: did you mean --listen?` (or without the question). */
function unknownFlag(rawName: string, options: ParseArgsConfig["options"]): string {
  const long = Object.keys(options ?? {});
  const typed = rawName.replace(/^--?/, "");
  const guess = rawName.startsWith("--") ? closest(typed, long) : null;
  return guess === null
    ? `unknown flag ${rawName}`
    : `unknown flag ${rawName}: did you mean --${guess}?`;
}

/** Finds the first problem in a command line that `parseArgs` refused, as one sentence. */
function diagnose(config: ParseArgsConfig): string | null {
  const { tokens } = parseArgs({ ...config, strict: false, allowPositionals: true, tokens: true });
  const options = config.options ?? {};
  for (const t of tokens) {
    if (t.kind === "option-terminator") continue;
    if (t.kind === "positional") {
      if (config.allowPositionals) continue;
      return `unexpected argument "${t.value}"`;
    }
    const def = Object.hasOwn(options, t.name) ? options[t.name] : undefined;
    if (!def) return unknownFlag(t.rawName, options);
    if (def.type === "boolean" && t.inlineValue) return `${t.rawName} takes no value`;
    if (def.type === "string") {
      if (t.value === undefined) return `${t.rawName} needs a value`;
      if (!t.inlineValue && t.value.startsWith("-")) {
        return `${t.rawName} needs a value, and "${t.value}" looks like a flag ` +
          `(write ${t.rawName}=${t.value} if it is the value)`;
      }
    }
  }
  return null;
}

/**
 * `parseArgs` (strict by default) whose errors are `UsageError`s of one sentence, e.g.
 * `unknown flag --lisen: did you mean --listen?`, instead of Node's multi-line texts.
 */
export function parseFlags<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config); // strict unless the caller says otherwise
  } catch (e) {
    if (
      !(e instanceof TypeError) ||
      !String((e as { code?: unknown }).code).startsWith("ERR_PARSE_ARGS")
    ) {
      throw e;
    }
    throw new UsageError(diagnose(config) ?? e.message.split("\n")[0]!.replace(/\.$/, ""));
  }
}
