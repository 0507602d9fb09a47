// Parsers and formatters for durations (30d, 12h) and byte sizes (10GB, 512MiB).

const DURATION_UNITS: Record<string, number> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
};

/** Parses `90s`, `15m`, `12h`, `30d`, `2w` into milliseconds. */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$/i.exec(text);
  if (!m) {
    throw new TypeError(`invalid duration "${text}": use a number and s, m, h, d or w, e.g. 30d`);
  }
  const ms = Number(m[1]) * DURATION_UNITS[m[2]!.toLowerCase()]!;
  if (!(ms > 0)) throw new TypeError(`invalid duration "${text}": must be greater than zero`);
  return Math.round(ms);
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

/** Parses `500MB`, `10GB`, `1.5TiB` or a plain byte count. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new TypeError(
      `invalid size "${text}": use a number with B, KB, MB, GB, TB (or KiB, MiB, GiB, TiB)`,
    );
  }
  return Math.round(Number(m[1]) * unit);
}

/** Formats bytes with a decimal unit: `1.5 GB`. */
export function formatSize(bytes: number): string {
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let v = bytes;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[i]}`;
}

/** Parses `--since`: a duration back from now (`24h`, `7d`) or an ISO date. Returns epoch ms. */
export function parseSince(text: string, now: number): number {
  if (/^\s*\d+(?:\.\d+)?\s*[smhdw]\s*$/i.test(text)) return now - parseDuration(text);
  const t = Date.parse(text);
  if (Number.isNaN(t)) {
    throw new TypeError(
      `invalid --since "${text}": use a duration like 24h or 7d, or a date like 2026-11-01`,
    );
  }
  return t;
}

/** Start (epoch ms) of the UTC calendar month containing `t`. */
export function monthStart(t: number): number {
  const d = new Date(t);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/** Start (epoch ms) of the UTC hour containing `t`. */
export function hourStart(t: number): number {
  return Math.floor(t / 3_600_000) * 3_600_000;
}
