// Pieces of the web pages that the client's inspector and the server's dashboard both serve:
// the icon, the base stylesheet and the notice banner.

/** The pages' icon (linked, so browsers do not ask for a missing /favicon.ico). */
export const FAVICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" ' +
  'rx="3" fill="#2f6fdf"/><path d="M3 11V5l2.5 3L8 5v6M10 8h3m-1.5-1.5L13 8l-1.5 1.5" ' +
  'stroke="#fff" stroke-width="1.4" fill="none"/></svg>';

/**
 * The start of both stylesheets: the light/dark palette (a page adds its own colours in a
 * `:root` rule of its own) and the page reset.
 */
export const BASE_STYLE = `:root {
  --bg: #f7f7f5; --panel: #ffffff; --text: #1f2328; --muted: #656d76; --line: #e3e3df;
  --accent: #2f6fdf; --accent-text: #ffffff; --sel: #e8f0fd; --ok: #1a7f37; --warn: #9a6700;
  --bad: #cf222e; --code: #f3f3f0;
  --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace;
  color-scheme: light dark;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #15181c; --panel: #1c2026; --text: #e6e8eb; --muted: #9aa3ad; --line: #2d333b;
    --accent: #4c8dff; --sel: #22314a; --ok: #3fb950; --warn: #d29922; --bad: #f85149;
    --code: #161a1f;
  }
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
html, body { margin: 0; }
body {
  background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}`;

/** The styles of the notice banner, `<div id="notice" class="notice">`. */
export const NOTICE_STYLE =
  `.notice { margin: 10px 16px 0; padding: 8px 12px; border-radius: 6px; background: var(--sel); }
.notice.bad { background: transparent; border: 1px solid var(--bad); color: var(--bad); }`;

/**
 * `notice(text, bad)` for a page script: shows the text in the notice banner for a few seconds
 * (longer when it reports a failure). Uses the script's `$` (getElementById); indented to sit
 * inside the script's function.
 */
export const NOTICE_SCRIPT = String.raw`  var noticeTimer = null;
  function notice(text, bad) {
    var n = $("notice");
    n.textContent = text;
    n.className = bad ? "notice bad" : "notice";
    n.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(function () { n.hidden = true; }, bad ? 8000 : 4000);
  }`;
