// The saved login of `mport login`: where it lives, its TOML format, and writing it (mode 0600).
import { dirname } from "node:path";
import { parse as parseToml, stringify as stringifyToml } from "smol-toml";
import { Secret } from "../shared/secret.ts";

/** File name of the saved login in the client's config directory. */
export const LOGIN_FILE_NAME = "config.toml";

/** A server and the token `mport` uses for it when neither --server nor --token is given. */
export interface SavedLogin {
  /** The server URL as `mport login` normalized it (`ws[s]://host[:port][/prefix]`). */
  readonly server: string;
  readonly token: Secret;
}

/** Parses the saved login file; throws a `TypeError` that names the file and says what to do. */
export function parseLoginFile(text: string, path: string): SavedLogin {
  const bad = (why: string) =>
    new TypeError(`${path}: ${why} (run \`mport login TOKEN --server URL\` again to rewrite it)`);
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    throw bad(`cannot parse it: ${(e as Error).message.split("\n")[0]}`);
  }
  for (const k of Object.keys(doc)) {
    if (k !== "server" && k !== "token") throw bad(`unknown key "${k}"`);
  }
  if (typeof doc.server !== "string" || doc.server === "") throw bad(`"server" must be a URL`);
  if (typeof doc.token !== "string" || doc.token === "") throw bad(`"token" must be a string`);
  return { server: doc.server, token: new Secret(doc.token) };
}

/**
 * Writes the saved login to `path` with mode 0600 (its directory 0700): written aside, then
 * renamed into place, so a reader never sees half a file and the token is never world-readable.
 */
export function saveLogin(path: string, login: SavedLogin): void {
  const text =
    "# Written by `mport login`: the server and token used when no --server or --token\n" +
    "# is given (flags, MPORT_SERVER / MPORT_TOKEN and --config win over it).\n" +
    stringifyToml({ server: login.server, token: login.token.reveal() }) + "\n";
  const aside = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    Deno.mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    Deno.writeTextFileSync(aside, text, { createNew: true, mode: 0o600 });
    Deno.renameSync(aside, path);
  } catch (e) {
    try {
      Deno.removeSync(aside);
    } catch {
      // never written
    }
    throw new Error(`cannot save the login to ${path}: ${(e as Error).message}`);
  }
}
