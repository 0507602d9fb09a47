// Temporary directories for store tests, removed once the test process unloads.

const dirs: string[] = [];

/** A new temporary directory, removed after the last test (also when a filter skipped some). */
export async function tempDir(prefix = "mport-store-test-"): Promise<string> {
  if (dirs.length === 0) {
    globalThis.addEventListener("unload", () => {
      for (const dir of dirs) Deno.removeSync(dir, { recursive: true });
    });
  }
  const dir = await Deno.makeTempDir({ prefix });
  dirs.push(dir);
  return dir;
}
