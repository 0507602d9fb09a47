// The client installation's persistent id: read from its file, or made (128 random bits) on first run.
import { dirname } from "node:path";
import { validateClientId } from "../shared/protocol.ts";

/** Bytes of randomness in a new client id (shown as 32 hex digits). */
const CLIENT_ID_BYTES = 16;

/** A new random client id. */
export function newClientId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(CLIENT_ID_BYTES));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Returns the client id kept in `path`, creating the file (mode 0600, its directory 0700) with a
 * new id when there is none. Two clients starting at once agree on one id: the file appears
 * complete or not at all (written aside, then hard-linked into place, which fails if it exists),
 * and the loser reads the winner's. `path` null means no config directory is known. Throws an
 * `Error` that says what to do.
 */
export function loadClientId(path: string | null): string {
  if (path === null) {
    throw new Error(
      "cannot tell where to keep this client's id: set HOME (XDG_CONFIG_HOME, or APPDATA on " +
        "Windows) or pass --client-id-file FILE",
    );
  }
  const existing = readId(path);
  if (existing !== null) return existing;
  const id = newClientId();
  const aside = `${path}.${newClientId().slice(0, 8)}.tmp`;
  try {
    Deno.mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    Deno.writeTextFileSync(aside, id + "\n", { createNew: true, mode: 0o600 });
    Deno.linkSync(aside, path);
    return id;
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) {
      const theirs = readId(path);
      if (theirs !== null) return theirs;
    }
    throw new Error(
      `cannot create the client id file ${path}: ${(e as Error).message} ` +
        "(fix its directory's permissions or pass --client-id-file FILE)",
    );
  } finally {
    try {
      Deno.removeSync(aside);
    } catch {
      // never written
    }
  }
}

/** The id in `path`, or null when the file does not exist; throws when it holds no valid id. */
function readId(path: string): string | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new Error(
      `cannot read the client id file ${path}: ${(e as Error).message} ` +
        "(fix it or pass --client-id-file FILE)",
    );
  }
  const id = text.trim();
  try {
    return validateClientId(id);
  } catch (e) {
    throw new Error(
      `the client id file ${path} holds no valid id (${(e as TypeError).message}); ` +
        "delete it to make a new one",
    );
  }
}
