// Events / crash log (filterable, searchable, tracebacks expandable) and time
// travel: a timeline scrubber that redraws the tree as it was at that moment.
import { TreeGraph } from "../treegraph.js";
import { debounce, esc, fmtDateTime, fmtInt, fmtTime, kindClass, processHref, rendered, throttle } from "../util.js";

const CAP = 500;
let ctx = null;
let events = [];
let graph = null;
let timeline = null;
let tAt = null; // null: following now
let expanded = new Set();
let refreshLive = null;
let refreshTimeline = null;

function kinds() {
  return [...document.querySelectorAll('input[name="kind"]:checked')].map((i) => i.value);
}

export function mount(root, context) {
  ctx = context;
  const url = new URL(location.href);
  if (url.searchParams.get("q")) document.getElementById("ev-q").value = url.searchParams.get("q");
  const reload = debounce(() => load(), 200);
  for (const i of document.querySelectorAll('input[name="kind"]')) i.addEventListener("change", reload);
  document.getElementById("ev-crashes").addEventListener("change", () => draw());
  document.getElementById("ev-q").addEventListener("input", reload);
  document.getElementById("ev-list").addEventListener(
    "toggle",
    (e) => {
      const li = e.target.closest && e.target.closest("li[data-key]");
      if (!li) return;
      if (e.target.open) opened.add(li.dataset.key);
      else opened.delete(li.dataset.key);
    },
    true,
  );
  document.getElementById("ev-list").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-t]");
    if (b) travel(Number(b.dataset.t));
  });
  graph = new TreeGraph(document.getElementById("tl-tree"), {
    rowH: 20,
    colW: 250,
    hrefFor: (pid) => processHref(ctx.node, pid),
    onGroup: (it) => {
      expanded.add(it.d.key);
      travel(tAt, false); // the server's tree at that moment, with the group open
    },
  });
  const range = document.getElementById("tl-range");
  const scrub = debounce(() => {
    if (!timeline || timeline.start == null) return;
    const v = Number(range.value);
    travel(v >= 1000 ? null : timeline.start + ((timeline.end - timeline.start) * v) / 1000, false);
  }, 120);
  range.addEventListener("input", scrub);
  document.getElementById("tl-now").addEventListener("click", () => travel(null));
  refreshLive = throttle(() => loadNew(), 500);
  refreshTimeline = throttle(() => loadTimeline(), 4000);
  load();
  loadTimeline().then(() => travel(null));
}

function params(extra = {}) {
  return { node: ctx.node || "", kinds: kinds().join(","), q: document.getElementById("ev-q").value.trim(), limit: 200, ...extra };
}

async function load() {
  if (!kinds().length) {
    events = [];
    return draw();
  }
  try {
    events = (await ctx.api.events(params())).events;
  } catch (err) {
    document.getElementById("ev-list").innerHTML = `<li class="error-banner">${esc(err.message)}</li>`;
    return;
  }
  draw();
}

async function loadNew() {
  if (!kinds().length) return;
  const newest = events.length ? events[0].time : undefined;
  let fresh;
  try {
    fresh = (await ctx.api.events(params(newest ? { since: newest } : {}))).events;
  } catch {
    return;
  }
  const seen = new Set(events.map((e) => e.id ?? `${e.time}/${e.kind}/${e.pid}`));
  const add = fresh.filter((e) => !seen.has(e.id ?? `${e.time}/${e.kind}/${e.pid}`));
  if (!add.length) return;
  events = add.concat(events).slice(0, CAP);
  draw();
}

function describe(e) {
  const n = ctx.node;
  const pid = (p) => (p ? `<a class="mono" href="${processHref(e.node || n, p)}">${esc(p)}</a>` : "–");
  const who = e.proc_name || e.name || e.label || "";
  if (e.kind === "exit") {
    const report = e.report
      ? ` <a class="small crash-link" href="/crash/find?node=${encodeURIComponent(e.node || n || "")}&pid=${encodeURIComponent(e.pid)}&time=${encodeURIComponent(e.time)}">crash report</a>`
      : "";
    return `${pid(e.pid)} <b>${esc(who)}</b> <span class="reason">${esc(e.reason || e.reason_kind || "")}</span>${report}`;
  }
  if (e.kind === "restart") {
    return `${pid(e.supervisor)} restarted <b>${esc(e.child_id ?? who)}</b>: ${esc(e.old_pid || "–")} → ${pid(e.new_pid)} <span class="muted">(#${esc(e.restarts ?? "?")})</span>`;
  }
  if (e.kind === "gave_up") {
    return `supervisor ${pid(e.supervisor)} <b>gave up</b>: ${esc(e.restarts)} restarts > intensity ${esc(e.intensity)} in ${esc(e.period)} s (child ${esc(e.child_id ?? "?")})`;
  }
  return `${pid(e.pid)} <b>${esc(who || e.label || "")}</b>`;
}

const opened = new Set(); // tracebacks the operator expanded (kept across live redraws)

function evKey(e) {
  return String(e.id ?? `${e.time}/${e.kind}/${e.pid}`);
}

function draw() {
  const crashesOnly = document.getElementById("ev-crashes").checked;
  const shown = crashesOnly ? events.filter((e) => e.kind === "exit" && (e.reason_kind === "exception" || e.traceback)) : events;
  document.getElementById("ev-count").textContent = `${fmtInt(shown.length)} event(s)${events.length >= CAP ? ` (latest ${CAP})` : ""}`;
  document.getElementById("ev-list").innerHTML = shown.length
    ? shown
        .map(
          (e) => `<li data-kind="${esc(e.kind)}" data-pid="${esc(e.pid || "")}" data-key="${esc(evKey(e))}">
        <div class="row"><span class="t" title="${esc(fmtDateTime(e.time))}">${fmtTime(e.time)}</span>
          <span class="pill ${kindClass(e.kind)}">${esc(e.kind)}</span>${describe(e)}
          <span class="grow"></span><button type="button" class="small" data-t="${e.time - 0.001}" title="show the tree just before this event">tree before</button></div>
        ${e.traceback ? `<details${opened.has(evKey(e)) ? " open" : ""}><summary>${esc(e.exception || "traceback")}</summary><pre class="tb">${esc(e.traceback)}</pre></details>` : ""}
      </li>`,
        )
        .join("")
    : `<li class="muted">No event matches.</li>`;
  rendered("events", { count: shown.length });
}

async function loadTimeline() {
  try {
    timeline = await ctx.api.timeline(ctx.node);
  } catch {
    return;
  }
  const b = timeline.buckets || [];
  const x = b.map((r) => new Date(r.t * 1000));
  const tr = (name, key, color) => ({ type: "bar", name, x, y: b.map((r) => r[key] || 0), marker: { color } });
  window.Plotly.react(
    document.getElementById("tl-chart"),
    [tr("exits", "exits", "#f85149"), tr("restarts", "restarts", "#58a6c8"), tr("crashes", "crashes", "#d29922")],
    {
      barmode: "group", paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", margin: { l: 30, r: 8, t: 4, b: 22 },
      font: { color: "#8b98a8", size: 10 }, showlegend: false, bargap: 0.05,
      xaxis: { type: "date", gridcolor: "#222a34", tickformat: "%H:%M:%S" }, yaxis: { gridcolor: "#222a34" },
      shapes: marker(),
    },
    { displayModeBar: false, responsive: true },
  );
  const chart = document.getElementById("tl-chart");
  if (!chart.dataset.wired) {
    chart.dataset.wired = "1";
    chart.on("plotly_click", (ev) => {
      const pt = ev.points && ev.points[0];
      if (pt) travel(new Date(pt.x).getTime() / 1000 + (timeline.bucket_width || 0));
    });
  }
}

function marker() {
  if (!timeline || timeline.start == null) return [];
  const t = tAt ?? timeline.end;
  return [{ type: "line", xref: "x", yref: "paper", x0: new Date(t * 1000), x1: new Date(t * 1000), y0: 0, y1: 1, line: { color: "#4ea1ff", width: 2 } }];
}

/** Show the tree at unix time t (null: now). */
async function travel(t, moveSlider = true) {
  tAt = t;
  const range = document.getElementById("tl-range");
  if (moveSlider && timeline && timeline.start != null) {
    range.value = t == null ? 1000 : String(Math.round((1000 * (t - timeline.start)) / Math.max(1e-9, timeline.end - timeline.start)));
  }
  const label = document.getElementById("tl-time");
  label.textContent = t == null ? "now (latest stored)" : fmtDateTime(t);
  if (timeline && timeline.start != null) window.Plotly.relayout(document.getElementById("tl-chart"), { shapes: marker() });
  const when = t ?? Date.now() / 1000;
  let data;
  try {
    data = await ctx.api.treeAt(ctx.node, when, { expanded: [...expanded] });
  } catch (err) {
    document.getElementById("tl-info").textContent = err.status === 404 ? "Nothing stored that early." : err.message;
    graph.setTree(null);
    rendered("tree_at", { t: when, processes: 0 });
    return;
  }
  if (tAt !== t) return; // scrubbed on meanwhile
  graph.setTree((data && data.tree) || null); // grouped by the server, as the live tree
  const st = graph.stats();
  document.getElementById("tl-info").textContent =
    `${fmtInt(st.processes)} processes at ${fmtTime(when)}` +
    (data && data.checkpoint_time ? ` · from the checkpoint at ${fmtTime(data.checkpoint_time)} + ${fmtInt(data.replayed)} replayed event(s)` : "");
  document.getElementById("tl-tree").dataset.t = String(when);
  rendered("tree_at", { t: when, processes: st.processes });
}

export function update(state, delta) {
  if (delta.kind !== "batch" || (ctx.node && delta.node !== ctx.node)) return;
  if (delta.changes.some((c) => c.kind === "exit" || c.kind === "restart" || c.kind === "gave_up" || c.kind === "spawn")) {
    refreshLive();
    refreshTimeline();
  }
}

/** For tests: what the time-travel tree holds, and for which moment. */
export function timeTravelStats() {
  return graph ? { t: tAt, ...graph.stats() } : null;
}

export function destroy() {
  graph && graph.destroy();
}
