// Overview: one card per attached node (health), live charts fed by batches, a crash feed.
// Everything starts from history (/api/overview, /api/events, /api/cluster) and then follows pushes.
import { BarChart, LiveChart } from "../chart.js";
import { seedEvents } from "../state.js";
import * as cluster from "./cluster.js";
import { ago, esc, fmtInt, fmtNum, fmtTime, kindClass, nodePath, processHref, rendered, statusClass, throttle } from "../util.js";

export const feeds = ["cluster"];

const SERIES = ["process_count", "message_rate", "restart_rate", "loop_lag_ms"];
const FEED_CAP = 60;
let ctx = null;
let charts = {};
let bars = null;
let summaries = new Map(); // node -> summary (from /api/overview, refreshed by batches)
let timer = null;
let renderCards = null;

export function mount(root, context) {
  ctx = context;
  cluster.mount(document.getElementById("cluster"), context);
  for (const k of SERIES) charts[k] = new LiveChart(document.getElementById("ch-" + k), { cap: 1200 });
  bars = new BarChart(document.getElementById("ch-top_mailboxes"));
  renderCards = throttle(drawCards, 500);
  load();
  loadRecent();
  timer = setInterval(() => renderCards(), 5000); // a clock for the "last seen" ages: redraws, fetches nothing
}

/** The recent crashes and restarts panel starts from the stored events, then follows the batches. */
async function loadRecent() {
  let data;
  try {
    data = await ctx.api.events({ kinds: "exit,restart,gave_up", limit: 200 });
  } catch (err) {
    document.getElementById("feed").innerHTML = `<li class="error-banner">Cannot load the recent events: ${esc(err.message)}</li>`;
    return;
  }
  seedEvents(ctx.state, data.events);
}

async function load() {
  let data;
  try {
    data = await ctx.api.overview();
  } catch (err) {
    document.getElementById("nodes").innerHTML = `<div class="error-banner">Cannot load the overview: ${esc(err.message)}</div>`;
    return;
  }
  for (const s of data.nodes) summaries.set(s.name, s);
  const series = (data && data.series) || {};
  for (const [node, ser] of Object.entries(series)) {
    for (const k of SERIES) {
      const pts = ser[k] || [];
      if (pts.length) charts[k].trace(node, pts.map((p) => new Date(p[0] * 1000)), pts.map((p) => p[1]));
    }
    const top = ser.top_mailboxes || [];
    if (node === ctx.node || !ctx.node) drawTop(node, top.length ? top[top.length - 1][1] : []);
  }
  drawCards();
  rendered("overview", { nodes: summaries.size });
}

function drawTop(node, rows) {
  rows = (rows || []).filter((r) => r[2] > 0);
  bars.set(
    rows.map((r) => `${r[1] || "?"} ${r[0]}`),
    rows.map((r) => r[2]),
    rows.map((r) => processHref(node, r[0])),
  );
}

function gauge(label, value) {
  return `<div><b>${value}</b><span>${label}</span></div>`;
}

function drawCards() {
  const el = document.getElementById("nodes");
  if (!summaries.size) {
    el.innerHTML = `<div class="panel muted">No nodes attached.</div>`;
    return;
  }
  el.innerHTML = [...summaries.values()]
    .map((s) => {
      const status = ctx.state.nodeStatus[s.name] || s.status;
      const st = ctx.state.stats[s.name] || {};
      const lag = st.loop_lag_ms ?? s.loop_lag_ms;
      const blocked = s.blocked ? `<div class="error-banner">Loop blocked ${fmtNum(s.blocked.blocked_ms)} ms by ${esc(s.blocked.name || s.blocked.pid)}</div>` : "";
      const gave = (s.gave_up || []).length
        ? `<div class="small" style="color:var(--bad)">${s.gave_up.length} supervisor give-up(s), last ${ago(s.gave_up[s.gave_up.length - 1].time)}</div>`
        : "";
      // an asyncio node (docs/asyncio.md): tasks instead of processes, no supervisors or mailboxes
      const aio = (s.node || {}).node_kind === "asyncio";
      const kv = aio
        ? `${gauge("tasks", fmtInt(st.tasks ?? s.tasks ?? s.process_count))}
          ${gauge("created / s", fmtNum(st.tasks_created_per_s ?? s.tasks_created_per_s))}
          ${gauge("finished / s", fmtNum(st.tasks_finished_per_s ?? s.tasks_finished_per_s))}`
        : `${gauge("processes", fmtInt(st.process_count ?? s.process_count))}
          ${gauge("supervisors", fmtInt(s.supervisor_count))}
          ${gauge("mailboxes", fmtInt(s.mailbox_total))}
          ${gauge("msgs / s", fmtNum(s.message_rate))}
          ${gauge("restarts / s", fmtNum(s.restart_rate, 2))}`;
      return `<div class="panel nodecard" data-node="${esc(s.name)}" data-kind="${aio ? "asyncio" : "actors"}">
        <div class="title"><a href="${nodePath(s.name, "/tree")}">${esc(s.name)}</a>
          <span class="pill ${statusClass(status)}">${esc(status)}</span>${aio ? ` <span class="pill" title="a plain asyncio event loop">asyncio</span>` : ""}</div>
        <div class="kv">
          ${kv}
          ${gauge("loop lag", lag == null ? "–" : fmtNum(lag, 1) + " ms")}
        </div>
        ${blocked}${gave}
        <div class="small muted">last seen ${ago(s.last_seen)} · crashes ${fmtInt(st.crashes ?? s.crashes)} · restarts ${fmtInt(st.restarts ?? s.restarts)}${s.reason ? " · " + esc(s.reason) : ""}
          · <a href="${nodePath(s.name, "/processes")}">processes</a></div>
      </div>`;
    })
    .join("");
}

function drawFeed() {
  const el = document.getElementById("feed");
  // the shared, capped list of lifecycle events (state.events, newest first), minus clean exits
  const feed = ctx.state.events
    .filter((e) => !(e.kind === "exit" && ["normal", "shutdown"].includes(e.data && e.data.reason_kind)))
    .slice(0, FEED_CAP);
  if (!feed.length) {
    el.innerHTML = `<li class="muted">Nothing yet: exits, restarts and give-ups show up here as they happen.</li>`;
    return;
  }
  el.innerHTML = feed
    .map((e) => {
      const d = e.data || {};
      const pid = e.pid || d.old_pid || d.supervisor;
      const what =
        e.kind === "restart"
          ? `restarted ${esc(d.child_id ?? "")} ${esc(d.old_pid || "")} → <a href="${processHref(e.node, d.new_pid || e.pid)}">${esc(d.new_pid || e.pid)}</a>`
          : e.kind === "gave_up"
            ? `supervisor <a href="${processHref(e.node, pid)}">${esc(pid)}</a> gave up (${esc(d.restarts)}/${esc(d.intensity)} in ${esc(d.period)} s)`
            : `${esc(pid)} <span class="mono" style="color:#ffb4ab">${esc(d.reason || d.reason_kind || "")}</span>`;
      return `<li><span class="t">${fmtTime(e.at)}</span><span class="pill ${kindClass(e.kind)}">${esc(e.kind)}</span><span>${esc(e.node)}</span><span>${what}</span></li>`;
    })
    .join("");
}

export function update(state, delta) {
  cluster.update(state, delta);
  if (delta.kind === "history") {
    drawFeed();
    rendered("overview_feed", { events: state.events.length });
    return;
  }
  if (delta.kind === "node_status") {
    const s = summaries.get(delta.node);
    if (s) s.status = delta.status;
    renderCards();
    return;
  }
  if (delta.kind !== "batch") return;
  const st = delta.stats || {};
  // a batch's stats are the node's whole summary (as /api/overview has it): no polling
  const s = summaries.has(delta.node) ? { ...summaries.get(delta.node), ...st, name: delta.node } : null;
  if (s) {
    if (delta.points) {
      if (delta.points.message_rate !== undefined) s.message_rate = delta.points.message_rate;
      if (delta.points.restart_rate !== undefined) s.restart_rate = delta.points.restart_rate;
    }
    s.status = state.nodeStatus[delta.node] || s.status;
    summaries.set(delta.node, s);
  }
  if (delta.points) {
    for (const k of SERIES) charts[k].push(delta.node, delta.points.t, delta.points[k]);
  }
  if ((delta.node === ctx.node || !ctx.node) && Array.isArray(st.top_mailboxes)) drawTop(delta.node, st.top_mailboxes);
  let fed = false;
  for (const c of delta.changes) {
    if (c.kind === "exit" || c.kind === "restart" || c.kind === "gave_up") fed = true;
    if (c.kind === "gave_up" && s) (s.gave_up = s.gave_up || []).push(c.data || {});
  }
  if (fed || !state.events.length) drawFeed();
  renderCards();
}

export function destroy() {
  cluster.destroy();
  clearInterval(timer);
  for (const c of Object.values(charts)) c.destroy();
  bars && bars.destroy();
  charts = {};
  summaries = new Map();
}
