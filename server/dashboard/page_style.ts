// The dashboard's stylesheet (served as assets/app.css), a constant so `deno compile` builds it in.
import { BASE_STYLE, NOTICE_STYLE } from "../../shared/web_ui.ts";

/** Calm light/dark styles in the inspector's palette; one column and scrolling tables on phones. */
export const PAGE_STYLE = `
${BASE_STYLE}
:root { --in: #2f6fdf; --out: #1a7f37; }
@media (prefers-color-scheme: dark) {
  :root { --in: #4c8dff; --out: #3fb950; }
}
button, input, select { font: inherit; color: inherit; }
button {
  border: 1px solid var(--accent); background: var(--accent); color: var(--accent-text);
  border-radius: 6px; padding: 6px 14px; cursor: pointer;
}
button.quiet { background: transparent; color: var(--text); border-color: var(--line); }
button.small { padding: 3px 10px; font-size: 13px; }
button.danger { background: var(--bad); border-color: var(--bad); }
button.danger-text { color: var(--bad); }
button.armed { background: var(--bad); border-color: var(--bad); color: #fff; }
button:hover { filter: brightness(1.08); }
button:disabled { opacity: .55; cursor: progress; }
button:focus-visible, input:focus-visible, select:focus-visible, a:focus-visible {
  outline: 2px solid var(--accent); outline-offset: 1px;
}
input, select {
  background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 6px 8px;
  min-width: 0;
}
a { color: var(--accent); }
h2 { font-size: 15px; margin: 0 0 12px; font-weight: 600; }
h2 small, h3 small { color: var(--muted); font-weight: 400; font-size: 12.5px; margin-left: 6px; }
h3 { font-size: 13px; margin: 18px 0 8px; font-weight: 600; }
.muted { color: var(--muted); }
.mono { font-family: var(--mono); font-size: 12.5px; }
.error { color: var(--bad); margin: 0; }
.ok { color: var(--ok); } .bad { color: var(--bad); }
.note { color: var(--muted); }

.top {
  display: flex; align-items: center; gap: 8px 18px; flex-wrap: wrap;
  padding: 10px 16px; background: var(--panel); border-bottom: 1px solid var(--line);
}
.top h1 { font-size: 16px; margin: 0; font-weight: 650; white-space: nowrap; }
.top h1 span { color: var(--muted); font-weight: 400; }
.nav { display: flex; gap: 2px; flex: 1; overflow-x: auto; }
.nav a { color: var(--muted); text-decoration: none; padding: 5px 10px; border-radius: 6px;
  white-space: nowrap; }
.nav a:hover { color: var(--text); background: var(--bg); }
.nav a[aria-current="page"] { color: var(--text); background: var(--sel); font-weight: 600; }
.who { display: flex; align-items: center; gap: 8px; color: var(--muted); font-size: 13px; }
.live { font-size: 12px; color: var(--muted); white-space: nowrap; }
.live.on::before { content: "●"; color: var(--ok); margin-right: 4px; }
body.signed-out .nav, body.signed-out .who, body.signed-out .live { display: none; }
body:not(.admin) .admin-only { display: none; }
${NOTICE_STYLE}

.main { padding: 16px; max-width: 1280px; margin: 0 auto; }
.page { display: grid; gap: 16px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px;
  padding: 14px 16px; min-width: 0; }
.card.inset { margin-top: 14px; background: var(--bg); }
.cards { display: grid; gap: 12px; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); }
.stat { display: grid; gap: 4px; }
.stat b.pair { font-size: 15px; line-height: 1.5; white-space: pre-line; }
.stat .k { color: var(--muted); font-size: 12.5px; }
.stat b { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
.two { display: grid; gap: 16px; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); }
.row { display: flex; gap: 10px; align-items: flex-end; }
.row.wrap { flex-wrap: wrap; }
.row label, .login-card label { display: grid; gap: 4px; color: var(--muted); font-size: 12.5px; }
.row label.inline { display: flex; align-items: center; gap: 6px; }
.row label.check { display: flex; align-items: center; gap: 6px; padding-bottom: 7px; }
.grow { flex: 1; }
.actions { display: flex; gap: 8px; flex-wrap: wrap; margin-top: 12px; }
.empty { color: var(--muted); padding: 18px 4px 6px; margin: 0; text-align: center; }
ul.plain { list-style: none; margin: 0; padding: 0; }
ul.plain li { padding: 6px 0; border-bottom: 1px solid var(--line); display: flex; gap: 6px;
  align-items: baseline; flex-wrap: wrap; }
ul.plain li:last-child { border-bottom: 0; }
.right { margin-left: auto; }
.pill { font-size: 11px; padding: 0 6px; border-radius: 4px; border: 1px solid currentColor; }
.pill.warn { color: var(--warn); } .pill.bad { color: var(--bad); }

.login { min-height: 60vh; place-items: center; }
.login-card { width: min(360px, 100%); display: grid; gap: 12px; padding: 22px; }
.login-card input { width: 100%; font-size: 15px; }
.login-card button { justify-self: stretch; padding: 8px; }

.scroll { overflow-x: auto; }
table.grid { width: 100%; border-collapse: collapse; font-size: 13px; }
.grid th { text-align: left; font-weight: 500; color: var(--muted); padding: 6px 10px;
  border-bottom: 1px solid var(--line); white-space: nowrap; }
.grid td { padding: 7px 10px; border-bottom: 1px solid var(--line); white-space: nowrap; }
.grid .num { text-align: right; font-variant-numeric: tabular-nums; }
.grid td.act { text-align: right; width: 1%; }
.grid td.wrap { white-space: normal; word-break: break-word; }
.grid.no-local .c-local { display: none; }
.grid tr.revoked td { color: var(--muted); text-decoration: line-through; }
.grid tr.revoked td.act { text-decoration: none; }

.chart { width: 100%; height: 160px; display: block; background: var(--bg); border-radius: 6px; }
.chart.spark { height: 80px; }
#usage-chart { height: 180px; }
.chart .gridline { stroke: var(--line); stroke-width: 1; vector-effect: non-scaling-stroke; }
.chart .line { fill: none; stroke-width: 2; vector-effect: non-scaling-stroke;
  stroke-linejoin: round; }
.chart .line.in { stroke: var(--in); } .chart .line.out { stroke: var(--out); }
.chart .bar.in { fill: var(--in); } .chart .bar.out { fill: var(--out); opacity: .8; }
.axis-row { display: flex; justify-content: space-between; color: var(--muted); font-size: 11.5px;
  margin-top: 3px; }
.legend { margin: 6px 0 0; color: var(--muted); font-size: 12.5px; display: flex; gap: 6px;
  align-items: center; }
.sw { display: inline-block; width: 10px; height: 10px; border-radius: 2px; }
.sw.in { background: var(--in); } .sw.out { background: var(--out); margin-left: 8px; }

.fields { display: grid; grid-template-columns: max-content 1fr; gap: 6px 16px; margin: 0; }
.fields dt { color: var(--muted); }
.fields dd { margin: 0; word-break: break-all; }
.back { display: inline-block; margin-bottom: 8px; text-decoration: none; }

.quotas { display: grid; gap: 10px; margin: 14px 0; }
.quota .row { align-items: baseline; margin-bottom: 4px; }
.bar-track { height: 8px; background: var(--bg); border: 1px solid var(--line); border-radius: 4px;
  overflow: hidden; }
.bar-track .fill { height: 100%; background: var(--ok); }
.bar-track .fill.warn { background: var(--warn); } .bar-track .fill.bad { background: var(--bad); }

.secret-box { margin-top: 14px; padding: 12px; border: 1px solid var(--warn); border-radius: 8px;
  display: grid; gap: 8px; }
.secret-box p { margin: 0; }
.copy-line { display: flex; gap: 8px; align-items: center; }
.copy-line code { flex: 1; min-width: 0; overflow-x: auto; white-space: nowrap; padding: 6px 8px;
  background: var(--code); border: 1px solid var(--line); border-radius: 6px;
  font: 12.5px var(--mono); user-select: all; }

@media (max-width: 720px) {
  .main { padding: 8px; }
  .top { padding: 8px 10px; }
  .nav { order: 3; flex-basis: 100%; }
  .stat b { font-size: 18px; }
  .row { flex-direction: column; align-items: stretch; }
  .copy-line { flex-direction: column; align-items: stretch; }
}
`;
