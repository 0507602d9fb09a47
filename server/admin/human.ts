// Human-readable times and sizes for the admin tables (the --json output keeps raw values).

/** `2026-12-01 14:02 UTC` ("-" for null). */
export function humanTime(t: number | null): string {
  if (t === null) return "-";
  return new Date(t).toISOString().replace(/^(\d{4}-\d\d-\d\d)T(\d\d:\d\d).*$/, "$1 $2 UTC");
}

/** `just now`, `42 s ago`, `3 min ago`, `5 h ago`, `12 days ago` (or `in 3 min` ahead). */
export function humanAgo(t: number, now: number): string {
  const ms = now - t;
  const s = Math.round(Math.abs(ms) / 1000);
  let span: string;
  if (s < 5) return "just now";
  if (s < 60) span = `${s} s`;
  else if (s < 3600) span = `${Math.floor(s / 60)} min`;
  else if (s < 48 * 3600) span = `${Math.floor(s / 3600)} h`;
  else span = `${Math.floor(s / 86_400)} days`;
  return ms >= 0 ? `${span} ago` : `in ${span}`;
}

/** Bytes with a binary unit: `512 B`, `1.5 MiB`, `12 GiB`. */
export function humanBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${v} B`;
  const text = v < 10 ? v.toFixed(1) : String(Math.round(v));
  return `${text.replace(/\.0$/, "")} ${units[i]}`;
}
