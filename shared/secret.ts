// A wrapper for tokens and passwords that never prints its value.
const REDACTED = "***";

/** Holds a secret string; `toString`, `toJSON` and `Deno.inspect` all print `***`. */
export class Secret {
  readonly #value: string;
  constructor(value: string) {
    this.#value = value;
  }
  /** The secret itself; call only where it must go on the wire. */
  reveal(): string {
    return this.#value;
  }
  toString(): string {
    return REDACTED;
  }
  toJSON(): string {
    return REDACTED;
  }
  [Symbol.for("Deno.customInspect")](): string {
    return REDACTED;
  }
}
