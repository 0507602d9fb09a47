// Running the system's network tools (`ip`, `nft`) for the VPN: one call, its error text, a
// clear sentence when the tool is missing.

/** Runs `program args` (stdin text optional); resolves with stdout, throws with stderr. */
export async function sys(program: string, args: string[], stdin?: string): Promise<string> {
  let child;
  try {
    child = new Deno.Command(program, {
      args,
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      env: { LC_ALL: "C" },
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(
        `${program} is not installed (the VPN needs ${
          program === "nft" ? "nftables" : "iproute2"
        }: apt-get install ${program === "nft" ? "nftables" : "iproute2"})`,
      );
    }
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new Error(`running ${program} was not allowed (${(e as Error).message})`);
    }
    throw e;
  }
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  if (!out.success) {
    const err = dec.decode(out.stderr).trim().split("\n").slice(0, 4).join("; ");
    throw new Error(`${program} ${args.join(" ")} failed: ${err || `exit code ${out.code}`}`);
  }
  return dec.decode(out.stdout);
}

/** Like {@link sys}, but a failure is returned as its message instead of thrown. */
export async function sysQuiet(
  program: string,
  args: string[],
  stdin?: string,
): Promise<string | null> {
  try {
    await sys(program, args, stdin);
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/**
 * Deletes an nftables table of ours. Null when it is gone (or was never there); otherwise why it
 * could not be deleted.
 */
export async function dropNftTable(family: string, table: string): Promise<string | null> {
  const problem = await sysQuiet("nft", ["delete", "table", family, table]);
  return problem && !/No such file|does not exist/i.test(problem) ? problem : null;
}
