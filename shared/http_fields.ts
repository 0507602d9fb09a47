// Header fields of an HTTP/1.1 head as they came: in order, with their original names, each line
// kept apart — a `Headers` without the WebIDL cost (several µs a request on a proxy's hot path),
// and without joining repeated fields (two Cookie lines stay two lines).

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** HTAB, SP, visible ASCII and obs-text: no other control characters (no CR, LF or NUL). */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** A head's header fields; usable wherever a `Headers` is expected. */
export class Fields implements Headers {
  /** Lower-case names, one per field line. */
  readonly #keys: string[] = [];
  /** Names as sent. */
  readonly #names: string[] = [];
  readonly #values: string[] = [];

  /** Fields from `[name, value]` pairs (validated), e.g. another head's. */
  constructor(init?: Iterable<readonly [string, string]>) {
    if (init) { for (const [k, v] of init) this.append(k, v); }
  }

  /** A copy (no validation: these fields were checked when they were added). */
  clone(): Fields {
    const c = new Fields();
    c.#keys.push(...this.#keys);
    c.#names.push(...this.#names);
    c.#values.push(...this.#values);
    return c;
  }

  /**
   * Adds a field the parser already checked (token name, field value): no second validation.
   * For `parseHead` only.
   */
  appendTrusted(name: string, value: string): void {
    this.#keys.push(name.toLowerCase());
    this.#names.push(name);
    this.#values.push(value);
  }

  append(name: string, value: string): void {
    const v = checked(name, value);
    this.#keys.push(name.toLowerCase());
    this.#names.push(name);
    this.#values.push(v);
  }

  delete(name: string): void {
    const key = name.toLowerCase();
    for (let i = this.#keys.length - 1; i >= 0; i--) {
      if (this.#keys[i] === key) {
        this.#keys.splice(i, 1);
        this.#names.splice(i, 1);
        this.#values.splice(i, 1);
      }
    }
  }

  /** The field's value; repeated fields joined with ", " (as `Headers` does); null if absent. */
  get(name: string): string | null {
    const key = name.toLowerCase();
    let out: string | null = null;
    const keys = this.#keys;
    for (let i = 0; i < keys.length; i++) {
      if (keys[i] === key) out = out === null ? this.#values[i]! : `${out}, ${this.#values[i]}`;
    }
    return out;
  }

  getSetCookie(): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.#keys.length; i++) {
      if (this.#keys[i] === "set-cookie") out.push(this.#values[i]!);
    }
    return out;
  }

  has(name: string): boolean {
    return this.#keys.includes(name.toLowerCase());
  }

  /** Replaces every field of that name with one (at the place of the first, else at the end). */
  set(name: string, value: string): void {
    const v = checked(name, value);
    const key = name.toLowerCase();
    const at = this.#keys.indexOf(key);
    if (at < 0) {
      this.#keys.push(key);
      this.#names.push(name);
      this.#values.push(v);
      return;
    }
    this.#values[at] = v;
    this.#names[at] = name;
    for (let i = this.#keys.length - 1; i > at; i--) {
      if (this.#keys[i] === key) {
        this.#keys.splice(i, 1);
        this.#names.splice(i, 1);
        this.#values.splice(i, 1);
      }
    }
  }

  forEach(
    callback: (value: string, key: string, parent: this) => void,
    thisArg?: unknown,
  ): void {
    for (const [k, v] of this) callback.call(thisArg, v, k, this);
  }

  /** Each field line, in order: `[name as sent, value]`. */
  *entries(): IterableIterator<[string, string]> {
    for (let i = 0; i < this.#keys.length; i++) yield [this.#names[i]!, this.#values[i]!];
  }

  *keys(): IterableIterator<string> {
    for (const n of this.#names) yield n;
  }

  *values(): IterableIterator<string> {
    for (const v of this.#values) yield v;
  }

  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }

  /** The field lines as `Name: value\r\n…`, each Set-Cookie (and every repeat) on its own line. */
  lines(): string {
    let out = "";
    for (let i = 0; i < this.#keys.length; i++) out += `${this.#names[i]}: ${this.#values[i]}\r\n`;
    return out;
  }

  get size(): number {
    return this.#keys.length;
  }
}

function checked(name: string, value: string): string {
  if (!TOKEN.test(name)) throw new TypeError(`invalid header name ${JSON.stringify(name)}`);
  const v = value.replace(/^[ \t]+|[ \t]+$/g, "");
  if (!FIELD_VALUE.test(v)) {
    throw new TypeError(`invalid value for header ${name}`);
  }
  return v;
}
