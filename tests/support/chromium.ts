// A headless Chromium for the browser tests: where it is installed, whether a test may skip it, and
// a launch through Puppeteer with a throwaway profile (optionally inside a network namespace).
import puppeteer, { type Browser } from "puppeteer-core";

/** Where the browser tests expect Chromium. */
export const CHROMIUM = "/usr/bin/chromium";

/** Flags for a quiet, headless Chromium that reaches nothing but the pages a test opens. */
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** Whether {@link CHROMIUM} is installed. */
export function chromiumInstalled(): boolean {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
}

/**
 * True when a browser test should be skipped: Chromium is missing and this is not CI (under CI a
 * missing Chromium fails the test instead).
 */
export function skipWithoutChromium(): boolean {
  return !chromiumInstalled() && Deno.env.get("CI") !== "true";
}

/** Options of {@link launchChromium}. */
export interface ChromiumOptions {
  /** The page size (Puppeteer's default 800×600 otherwise). */
  readonly viewport?: { readonly width: number; readonly height: number };
  /**
   * A network namespace to run Chromium in (`ip netns exec`), so that its 127.0.0.1 is the
   * namespace's; Puppeteer then talks to it over pipes, which cross namespaces.
   */
  readonly netns?: string;
}

/** A launched Chromium; `close()` ends it and removes its profile. */
export interface Chromium {
  readonly browser: Browser;
  close(): Promise<void>;
}

/** Launches a headless Chromium with a fresh profile in a temporary directory. */
export async function launchChromium(opts: ChromiumOptions = {}): Promise<Chromium> {
  const dir = await Deno.makeTempDir({ prefix: "mport-chromium-" });
  let executablePath = CHROMIUM;
  if (opts.netns !== undefined) {
    executablePath = `${dir}/chromium-in-ns`;
    await Deno.writeTextFile(
      executablePath,
      `#!/bin/sh\nexec ip netns exec ${opts.netns} ${CHROMIUM} "$@"\n`,
      { mode: 0o755 },
    );
  }
  let browser: Browser;
  try {
    browser = await puppeteer.launch({
      executablePath,
      pipe: opts.netns !== undefined,
      headless: true,
      userDataDir: `${dir}/profile`,
      ...(opts.viewport === undefined ? {} : { defaultViewport: { ...opts.viewport } }),
      args: CHROMIUM_ARGS,
    });
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw e;
  }
  return {
    browser,
    async close() {
      await browser.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
