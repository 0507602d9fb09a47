// Private modes for the SQLite database (token and password hashes, client addresses): the
// directory mport-server creates for it is 0700, the database and its -wal and -shm files 0600.
import { errorText } from "../../shared/error_text.ts";

/** Mode of a directory created for the database. */
export const DATA_DIR_MODE = 0o700;
/** Mode of the database file and its -wal and -shm files. */
export const DATA_FILE_MODE = 0o600;

/** The database file and the two files SQLite keeps next to it in WAL mode. */
export function databaseFiles(path: string): string[] {
  return [path, `${path}-wal`, `${path}-shm`];
}

/**
 * Creates `dir` and its missing parents with mode 0700 (directories that exist are left as they
 * are: they may be shared, like /var/lib). Throws what `Deno.mkdir` throws.
 */
export async function makeDataDir(dir: string): Promise<void> {
  let existed = true;
  try {
    await Deno.stat(dir);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    existed = false;
  }
  await Deno.mkdir(dir, { recursive: true, mode: DATA_DIR_MODE });
  // The umask may have taken bits away but never adds any; set it exactly anyway.
  if (!existed && Deno.build.os !== "windows") await Deno.chmod(dir, DATA_DIR_MODE);
}

/**
 * Before SQLite opens `path`: creates it empty with mode 0600 when missing (SQLite would create
 * it with the umask's mode, 0644 typically, and gives its -wal and -shm files the database's
 * mode), and tightens existing database files that group or others may read to 0600, telling
 * `warn` once which ones. Failures are left for SQLite's own open to report.
 */
export async function secureDatabaseFiles(
  path: string,
  warn: (message: string) => void,
): Promise<void> {
  if (Deno.build.os === "windows") return;
  try {
    (await Deno.open(path, { createNew: true, write: true, mode: DATA_FILE_MODE })).close();
    await Deno.chmod(path, DATA_FILE_MODE);
  } catch {
    // It exists (checked below), or cannot be created: SQLite's open then says why.
  }
  const loose: string[] = [];
  const failed: string[] = [];
  for (const file of databaseFiles(path)) {
    let mode: number | null;
    try {
      mode = (await Deno.stat(file)).mode;
    } catch {
      continue;
    }
    if (mode === null || (mode & 0o077) === 0) continue;
    const was = (mode & 0o777).toString(8).padStart(4, "0");
    try {
      await Deno.chmod(file, DATA_FILE_MODE);
      loose.push(`${file} (was ${was})`);
    } catch (e) {
      failed.push(`${file} (${was}: ${errorText(e)})`);
    }
  }
  if (loose.length > 0) {
    warn(
      `the database files ${loose.join(", ")} were readable by other users; ` +
        `changed them to 0600 (they hold token and password hashes)`,
    );
  }
  if (failed.length > 0) {
    warn(
      `the database files ${failed.join(", ")} are readable by other users and could not be ` +
        `changed; make them 0600 (chmod 600)`,
    );
  }
}

/**
 * After SQLite opened the database: makes sure the -wal and -shm files it may have created are
 * 0600 too (SQLite copies the database's mode; this holds whatever it did).
 */
export async function tightenCompanions(path: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  for (const file of databaseFiles(path).slice(1)) {
    try {
      const { mode } = await Deno.stat(file);
      if (mode !== null && (mode & 0o077) !== 0) await Deno.chmod(file, DATA_FILE_MODE);
    } catch {
      // Not there (yet), or not ours to change: nothing to do.
    }
  }
}
