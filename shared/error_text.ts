// The text of a thrown value, for log lines and one-sentence errors (no dependencies).

/** The message of a thrown value: an Error's message, anything else as a string. */
export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
