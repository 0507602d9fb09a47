// The release version of both programs and the one-line `--version` text.
import { PROTOCOL_VERSION } from "./protocol.ts";

/** Release version of mport-server and mport (one number for both). */
export const MPORT_VERSION = "0.2.0";

/** `mport-server 0.2.0 (protocol v2, Deno 2.9.6)` for `program`. */
export function versionLine(program: "mport-server" | "mport"): string {
  return `${program} ${MPORT_VERSION} (protocol v${PROTOCOL_VERSION}, Deno ${Deno.version.deno})`;
}
