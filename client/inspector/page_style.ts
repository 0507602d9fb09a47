// The inspector page's stylesheet (served as /app.css), a constant so `deno compile` builds it in.
import { BASE_STYLE, NOTICE_STYLE } from "../../shared/web_ui.ts";

/** Calm light/dark styles; one column on narrow screens. */
export const PAGE_STYLE = `
${BASE_STYLE}
:root { --redirect: #8250df; }
@media (prefers-color-scheme: dark) {
  :root { --redirect: #b390f5; }
}
button, input, textarea { font: inherit; color: inherit; }
button {
  border: 1px solid var(--accent); background: var(--accent); color: var(--accent-text);
  border-radius: 6px; padding: 5px 12px; cursor: pointer;
}
button.quiet { background: transparent; color: var(--text); border-color: var(--line); }
button:hover { filter: brightness(1.08); }
button:disabled { opacity: .55; cursor: progress; }
button:focus-visible, input:focus-visible, textarea:focus-visible, tr:focus-visible {
  outline: 2px solid var(--accent); outline-offset: 1px;
}
input, textarea {
  background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 5px 8px;
}
textarea { width: 100%; font-family: var(--mono); font-size: 12.5px; resize: vertical; }

.top {
  display: flex; align-items: center; gap: 16px; flex-wrap: wrap;
  padding: 10px 16px; background: var(--panel); border-bottom: 1px solid var(--line);
}
.top h1 { font-size: 16px; margin: 0; font-weight: 650; }
.top h1 span { color: var(--muted); font-weight: 400; }
.tunnels { list-style: none; margin: 0; padding: 0; display: flex; gap: 14px; flex-wrap: wrap;
  flex: 1; color: var(--muted); font-size: 13px; }
.tunnels b { color: var(--text); font-weight: 600; }
.tunnels a { color: var(--accent); text-decoration: none; }
.live { font-size: 12px; color: var(--muted); }
.live.on::before { content: "●"; color: var(--ok); margin-right: 4px; }
${NOTICE_STYLE}

.layout { display: flex; gap: 16px; padding: 16px; align-items: flex-start; }
.pane { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; min-width: 0; }
.list-pane { flex: 1 1 100%; }
body.has-detail .list-pane { flex: 1 1 45%; }
.detail-pane { flex: 1 1 55%; padding: 14px 16px; }
.toolbar { display: flex; gap: 8px; padding: 10px; border-bottom: 1px solid var(--line); }
.toolbar input { flex: 1; min-width: 0; }

.requests { width: 100%; border-collapse: collapse; font-size: 13px; }
.requests th { text-align: left; font-weight: 500; color: var(--muted); padding: 6px 10px;
  border-bottom: 1px solid var(--line); white-space: nowrap; }
.requests td { padding: 7px 10px; border-bottom: 1px solid var(--line); white-space: nowrap; }
.requests tbody tr { cursor: pointer; }
.requests tbody tr:hover { background: var(--bg); }
.requests tbody tr.selected { background: var(--sel); }
.requests td.c-path { width: 100%; max-width: 0; overflow: hidden; text-overflow: ellipsis;
  font-family: var(--mono); font-size: 12.5px; }
.requests td.c-method { font-weight: 600; }
.requests .c-dur, .requests .c-size { text-align: right; color: var(--muted); }
.requests .c-time { color: var(--muted); }
.tag { display: inline-block; margin-right: 6px; padding: 0 5px; border-radius: 4px; font-size: 11px;
  font-family: system-ui, sans-serif; background: var(--sel); color: var(--accent); }
.s-2 { color: var(--ok); } .s-3 { color: var(--redirect); } .s-4 { color: var(--warn); }
.s-5, .s-err { color: var(--bad); } .s-pending { color: var(--muted); }
.empty { color: var(--muted); padding: 24px 16px; margin: 0; text-align: center; }

.detail-head h2 { font-size: 15px; margin: 0 0 4px; font-family: var(--mono); word-break: break-all; }
.meta { margin: 0 0 10px; color: var(--muted); font-size: 13px; }
.meta a { color: var(--accent); }
.actions { display: flex; gap: 8px; flex-wrap: wrap; }
.back { display: none; margin-bottom: 10px; }
.error { color: var(--bad); }
.edit { margin: 14px 0 0; padding: 12px; border: 1px solid var(--line); border-radius: 8px;
  display: grid; gap: 10px; }
.edit label { display: grid; gap: 4px; color: var(--muted); font-size: 12.5px; }
.edit-line { display: flex; gap: 10px; }
.edit-line input { width: 100%; font-family: var(--mono); }
.edit-line label:first-child { flex: 0 0 110px; }
.grow { flex: 1; }
.msg h3 { font-size: 12px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted);
  margin: 18px 0 6px; font-weight: 600; }
.msg .line { font-family: var(--mono); font-size: 12.5px; margin: 0 0 6px; }
.headers { border-collapse: collapse; width: 100%; font-family: var(--mono); font-size: 12.5px; }
.headers td { padding: 2px 8px 2px 0; vertical-align: top; word-break: break-all; }
.headers td:first-child { color: var(--muted); white-space: nowrap; width: 1%; }
pre.body { background: var(--code); border: 1px solid var(--line); border-radius: 6px; padding: 10px;
  margin: 6px 0 0; font: 12.5px/1.5 var(--mono); overflow: auto; max-height: 60vh;
  white-space: pre-wrap; word-break: break-word; }
pre.body.hex { white-space: pre; }
.note { color: var(--muted); font-size: 12.5px; margin: 6px 0 0; }
.note.trunc { color: var(--warn); }

.egress { margin: 16px 16px 0; padding: 14px 16px; }
.egress-head { display: flex; align-items: center; gap: 12px; flex-wrap: wrap; }
.egress-head h2 { font-size: 15px; margin: 0; font-weight: 650; }
.egress-head button { margin-left: auto; }
.state { font-size: 13px; color: var(--muted); }
.state::before { content: "●"; margin-right: 5px; }
.state.ok::before { color: var(--ok); } .state.warn::before { color: var(--warn); }
.state.off::before { color: var(--muted); }
button.danger { background: transparent; color: var(--bad); border-color: var(--bad); }
.egress .error { margin: 8px 0 0; }
.stopped { margin: 10px 0 0; padding: 8px 12px; border-radius: 6px; background: var(--sel); }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 5px 18px; margin: 12px 0 0;
  font-size: 13px; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; font-family: var(--mono); font-size: 12.5px; word-break: break-all; }
.facts dd.rate { color: var(--accent); }

@media (max-width: 820px) {
  .egress { margin: 8px 8px 0; }
  .layout { padding: 8px; flex-direction: column; }
  .pane { width: 100%; }
  body.has-detail .list-pane { display: none; }
  .back { display: inline-block; }
  .requests .c-time, .requests .c-size { display: none; }
  .top { padding: 8px 10px; }
}
`;
