// One crash report, readable: the traceback with source lines (the process's
// own frames first), the last message, the state before it, the flight
// recorder, and the ancestry drawn as a path (with a link to the tree, that path highlighted).
import { esc, fmtDateTime, fmtInt, fmtSecs, fmtTime, processHref, rendered } from "../util.js";

export const followsNodes = false;

let ctx = null;

export function mount(root, context) {
  ctx = context;
  load();
}

async function load() {
  const id = ctx.config.crash_id ?? (location.pathname.match(/^\/crash\/(\d+)/) || [])[1];
  let data;
  try {
    data = await ctx.api.crash(id);
  } catch (err) {
    document.getElementById("crash").innerHTML = `<div class="error-banner">${esc(err.message)}</div>`;
    return;
  }
  draw(data);
  rendered("crash", { id });
}

function value(v) {
  if (!v) return `<span class="muted">none</span>`;
  const notes = [v.truncated ? "truncated" : "", v.masked ? `${v.masked} value(s) masked` : ""].filter(Boolean).join(", ");
  return `<pre class="json">${esc(JSON.stringify(v.value, null, 2))}</pre>${notes ? `<div class="small muted">${esc(notes)}</div>` : ""}`;
}

function frames(list) {
  return `<ol class="stack frames">${list
    .map(
      (f) => `<li class="${f.own ? "own" : "runtime muted"}"><b>${esc(f.function)}</b> <span class="fl">${esc(f.file)}:${esc(f.line ?? "")}</span>${f.own ? "" : ' <span class="small">(runtime)</span>'}
        ${f.source ? `<pre class="src">${esc(f.source)}</pre>` : ""}</li>`,
    )
    .join("")}</ol>`;
}

function draw(data) {
  const r = data.report || {};
  const node = data.node;
  const g = data.group || {};
  const excs = r.exceptions || [];
  const path = (r.ancestry || [])
    .map((a, i, all) => {
      const label = `${esc(a.name || "")} <span class="mono small">${esc(a.pid)}</span>`;
      return i === all.length - 1 ? `<b class="crashed">${label}</b>` : `<a href="${processHref(node, a.pid)}">${label}</a>`;
    })
    .join(" › ");
  const b = r.budget;
  const flight = r.flight;
  document.getElementById("crash").innerHTML = `
    <div class="insp-head">
      <h1>${esc(r.exception || "exit")} in ${esc(r.name || r.label || r.pid)}</h1>
      <span class="mono">${esc(r.pid)}</span><span class="pill bad">${esc(r.own === false ? "killed by a signal" : "crashed")}</span>
      <span class="muted">${esc(node)} · ${esc(fmtDateTime(r.time))}</span>
    </div>
    <section class="panel full"><h2>Ancestry</h2><div class="crumbs ancestry">${path}</div>
      <div class="small" style="margin-top:6px"><a id="crash-tree" href="${esc(data.tree_url)}">show this path in the tree</a> ·
      restarts before: ${fmtInt(r.restarts)}${r.child_id != null ? " · child " + esc(r.child_id) : ""}
      ${b ? ` · supervisor budget then: ${esc(b.used)}/${esc(b.intensity)} restarts in ${esc(b.period)} s (${esc(b.strategy)})` : ""}</div></section>
    <section class="panel full"><h2>Reason</h2><div class="reason">${esc(r.reason || "")}</div>
      <div class="small muted">signature: <span class="mono">${esc(data.signature)}</span> · seen ${fmtInt(g.count || 1)} time(s), first ${esc(fmtDateTime(g.first_seen))}, last ${esc(fmtDateTime(g.last_seen))} · <a href="/crashes">all crashes</a></div>
      ${r.omitted ? `<div class="note-banner">Message, state and flight recorder left out: too many crashes per second (${esc(r.omitted)}).</div>` : ""}</section>
    <section class="panel full"><h2>Traceback <span class="small muted">(the process's own frames first)</span></h2>
      ${excs.length ? excs.map((e) => `<div class="exc">${e.relation ? `<div class="small muted">${e.relation === "cause" ? "caused by" : "raised while handling"}</div>` : ""}<h3>${esc(e.type)}: ${esc(e.message)}</h3>${frames(e.frames || [])}</div>`).join("") : `<span class="muted">no exception (${esc(r.reason)})</span>`}
      ${r.traceback ? `<details><summary>as Python prints it</summary><pre class="tb">${esc(r.traceback)}</pre></details>` : ""}</section>
    <div class="insp">
      <section class="panel"><h2>Last message in <span class="small muted">${esc(r.message_kind || "")} · redacted by the agent</span></h2>${value(r.message)}</section>
      <section class="panel"><h2>State before the handler</h2>${r.state ? value(r.state) : `<span class="muted">not a gen_server</span>`}</section>
    </div>
    <section class="panel full"><h2>Flight recorder</h2>${
      flight
        ? `<table class="data" id="flight"><thead><tr><th>time</th><th class="num">duration</th><th>kind</th><th>message</th></tr></thead><tbody>${flight
            .map((f) => `<tr${f.duration == null ? ' class="crashed"' : ""}><td class="mono">${fmtTime(f.time)}</td><td class="num">${f.duration == null ? "died" : fmtSecs(f.duration)}</td><td>${esc(f.kind)}</td><td class="mono">${esc(JSON.stringify(f.message))}</td></tr>`)
            .join("")}</tbody></table>`
        : `<span class="muted">off for this process (turn it on from the inspector)</span>`
    }</section>`;
}

export function update() {}

export function destroy() {}
