// Checks the service files in scripts/ offline: systemd units (verify, hardening), the launchd plist.
//
// `systemd-analyze verify` needs no running systemd (it works in a container), but it insists that
// the ExecStart binary exists and is executable. The units name /usr/local/bin/mport-server and
// /usr/local/bin/mport, which CI does not have (`deno compile` cannot run offline), so each unit
// is verified as a copy in a temporary directory whose ExecStart points at a placeholder
// executable there. verify exits 0 even for unknown keys or bad values (it only warns), so any
// output counts as a failure.
//
// Usage: deno run -A scripts/verify_services.ts

const SCRIPTS = new URL("./", import.meta.url).pathname;
const INSTALLED = "/usr/local/bin/";

/** Directives each unit must keep (the hardening the README promises). */
const REQUIRED: Record<string, readonly string[]> = {
  "mport-server.service": [
    "ExecStart=/usr/local/bin/mport-server --db /var/lib/mport/mport.db",
    "DynamicUser=yes",
    "StateDirectory=mport",
    "WorkingDirectory=/var/lib/mport",
    "LimitNOFILE=1048576",
    "Restart=on-failure",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=",
  ],
  "mport-client.service": [
    "ExecStart=/usr/local/bin/mport start --config %d/client.toml",
    "LoadCredential=client.toml:/etc/mport/client.toml",
    "DynamicUser=yes",
    "Restart=on-failure",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "CapabilityBoundingSet=",
  ],
};

/** Problems with one unit's text: missing directives, and a MemoryDenyWriteExecute that breaks V8. */
function hardeningProblems(name: string, text: string): string[] {
  const lines = text.split("\n").map((l) => l.trim());
  // A directive matches a line that is it, or starts with it and goes on with more arguments.
  const has = (d: string) => lines.some((l) => l === d || l.startsWith(`${d} `));
  const problems = (REQUIRED[name] ?? []).filter((d) => !has(d)).map((d) =>
    `${name}: missing "${d}"`
  );
  if (/^MemoryDenyWriteExecute=(yes|true|1)/m.test(text)) {
    problems.push(`${name}: MemoryDenyWriteExecute breaks V8's JIT`);
  }
  return problems;
}

/**
 * The launchd plist cannot be tried here (no macOS); it is at least parsed, with Python's
 * plistlib when python3 is there, and its program must be the client started with a config.
 */
async function plistProblems(): Promise<string[]> {
  const path = `${SCRIPTS}com.mport.client.plist`;
  const code =
    "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))";
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("python3", { args: ["-c", code, path], stdin: "null" }).output();
  } catch {
    console.log("python3 not found: com.mport.client.plist not parsed");
    return [];
  }
  if (!out.success) {
    return [
      `com.mport.client.plist: ${new TextDecoder().decode(out.stderr).trim().split("\n").pop()}`,
    ];
  }
  const plist = JSON.parse(new TextDecoder().decode(out.stdout)) as Record<string, unknown>;
  const args = JSON.stringify(plist.ProgramArguments);
  return plist.Label === "com.mport.client" &&
      args.startsWith('["/usr/local/bin/mport","start","--config"')
    ? []
    : ["com.mport.client.plist: Label or ProgramArguments is not the client's"];
}

async function main(): Promise<number> {
  const units = Object.keys(REQUIRED);
  const problems: string[] = [];
  const tmp = await Deno.makeTempDir({ prefix: "mport-units-" });
  try {
    await Deno.mkdir(`${tmp}/bin`);
    for (const exe of ["mport-server", "mport"]) {
      await Deno.writeTextFile(`${tmp}/bin/${exe}`, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    }
    const copies: string[] = [];
    for (const name of units) {
      const text = await Deno.readTextFile(`${SCRIPTS}${name}`);
      problems.push(...hardeningProblems(name, text));
      const copy = `${tmp}/${name}`; // same file name: it is the unit's name
      await Deno.writeTextFile(copy, text.replaceAll(INSTALLED, `${tmp}/bin/`));
      copies.push(copy);
    }
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command("systemd-analyze", {
        args: ["verify", "--man=no", ...copies],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        env: { SYSTEMD_LOG_COLOR: "0", SYSTEMD_PAGER: "cat" },
      }).output();
    } catch (e) {
      console.error(`cannot run systemd-analyze (install the systemd package): ${e}`);
      return 1;
    }
    const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    if (!out.success) problems.push(`systemd-analyze verify exited ${out.code}`);
    if (said.trim() !== "") {
      const plain = (l: string) => l.replaceAll(`${tmp}/bin/`, INSTALLED).replaceAll(`${tmp}/`, "");
      problems.push(...said.trim().split("\n").map(plain));
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
  problems.push(...await plistProblems());
  for (const p of problems) console.error(p);
  if (problems.length === 0) console.log(`verified: ${units.join(", ")}, com.mport.client.plist`);
  return problems.length === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
