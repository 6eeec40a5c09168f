// Chaos: configure, start (confirmed, audited server-side), watch and stop an experiment;
// past experiments from the history (docs/chaos.md). The page loads a journal
// once, then follows the "chaos" feed: progress (the journal's head and the
// kills resolved since the last push) and "saved" (the final journal is in the history). No timer.
import { LiveChart } from "../chart.js";
import { esc, fmtDateTime, fmtTime, rendered, throttle } from "../util.js";

export const feeds = ["chaos"];
export const followsNodes = false;

const KILLS_SHOWN = 200;
const KILLS_KEPT = 2000;
let ctx = null;
let chart = null;
let current = null; // id of the experiment shown
let head = null; // its journal, without the kills
let kills = new Map(); // n -> kill record (pending ones are replaced when they resolve)
let charted = new Set(); // kill numbers whose recovery is on the chart
let listed = new Map(); // id -> status, as the history list shows it
let reloadHistory = null;

const $ = (id) => document.getElementById(id);
const list = (s) => (s || "").split(",").map((x) => x.trim()).filter(Boolean);
const num = (v) => (v === "" || v === null || v === undefined ? undefined : Number(v));

export function mount(root, context) {
  ctx = context;
  chart = new LiveChart($("chaos-chart"), { cap: 5000, flushMs: 300, yTitle: "ms" });
  const may = !!ctx.config.may_chaos;
  $("chaos-gate").textContent = may
    ? "Kills processes of the selected node through its agent; every experiment and every kill is audited."
    : "Starting experiments needs --allow-destructive-actions on the server and a login token granted 'chaos'.";
  if (may) {
    const sel = $("chaos-node");
    for (const n of ctx.nodes) sel.append(new Option(n, n, false, n === ctx.node));
    $("chaos-form").classList.remove("hidden");
    $("chaos-form").addEventListener("submit", (e) => {
      e.preventDefault();
      start();
    });
  }
  $("chaos-stop").addEventListener("click", stop);
  $("chaos-history").addEventListener("click", (e) => {
    const li = e.target.closest("li[data-id]");
    if (li) show(li.dataset.id);
  });
  reloadHistory = throttle(() => loadHistory(false), 500);
  loadHistory(true);
}

export function update(state, delta) {
  if (delta.kind === "connection" && delta.status === "live" && current) {
    show(current); // reconnected: pushes were lost meanwhile, the journal was not
    return;
  }
  if (delta.kind !== "feed" || delta.feed !== "chaos") return;
  for (const item of delta.items) {
    if (item.saved || listed.get(item.id) !== item.status) reloadHistory();
    if (item.saved || item.id !== current || !head) continue;
    if (item.kills_dropped) {
      show(current); // more kills than a push carries: read the journal again
      return;
    }
    merge(item.kills || []);
    head = item;
    draw();
  }
}

export function destroy() {
  if (chart) chart.destroy();
}

function body() {
  const f = new FormData($("chaos-form"));
  const g = (k) => (f.get(k) || "").toString().trim();
  const kill = {
    policy: g("policy"),
    interval_ms: num(g("interval_ms")),
    jitter_ms: num(g("jitter_ms")),
    burst_size: num(g("burst_size")),
    reason: g("reason") || "kill",
    mode: g("mode"),
    budget_margin: num(g("budget_margin")),
    duration_s: num(g("duration_s")),
    kills: num(g("kills")),
    protected: list(g("protected")),
  };
  if (g("root")) kill.root = g("root");
  if (list(g("names")).length) kill.names = list(g("names"));
  if (list(g("labels")).length) kill.labels = list(g("labels"));
  if (kill.policy === "sequence") kill.sequence = list(g("sequence"));
  for (const k of Object.keys(kill)) if (kill[k] === undefined) delete kill[k];
  const mailbox = list(g("mailbox")).map((s) => {
    const i = s.lastIndexOf("=");
    return { name: s.slice(0, i), max: Number(s.slice(i + 1)) };
  });
  return {
    node: g("node"),
    kill,
    hypothesis: {
      recovery_ms: num(g("recovery_ms")),
      max_give_ups: num(g("max_give_ups")),
      process_tolerance: g("process_tolerance") ? (g("process_tolerance").endsWith("%") ? g("process_tolerance") : Number(g("process_tolerance"))) : null,
      children_restored: f.get("children_restored") === "on",
      mailbox,
      alive: list(g("alive")),
      http: list(g("http")),
    },
    abort_on_deviation: f.get("abort_on_deviation") === "on",
    settle_s: num(g("settle_s")) ?? 10,
    confirm: false,
  };
}

// An asyncio node's experiment cancels tasks (docs/chaos.md): the form's target, pace and
// count, with coroutine patterns; no budgets, no supervisor checks.
function cancelBody(b) {
  const k = b.kill;
  const f = new FormData($("chaos-form"));
  const cancel = { policy: k.policy === "sequence" ? "interval" : k.policy, interval_ms: k.interval_ms,
    jitter_ms: k.jitter_ms, burst_size: k.burst_size, duration_s: k.duration_s, cancels: k.kills,
    protected: k.protected, root: k.root, names: k.names, coros: list((f.get("coros") || "").toString()) };
  if (k.reason && k.reason !== "kill") cancel.reason = k.reason;
  if (!cancel.coros.length) delete cancel.coros;
  for (const key of Object.keys(cancel)) if (cancel[key] === undefined) delete cancel[key];
  // tasks come and go with the traffic: their count is no steady state unless asked in a file
  return { node: b.node, cancel, hypothesis: { http: b.hypothesis.http },
    abort_on_deviation: b.abort_on_deviation, settle_s: b.settle_s, confirm: false };
}

async function nodeKind(node) {
  try {
    const o = await ctx.api.overview();
    const n = (o.nodes || []).find((x) => x.name === node || x.node?.name === node);
    return n?.node?.node_kind || "actors";
  } catch {
    return "actors";
  }
}

async function start() {
  const err = $("chaos-form-error");
  err.classList.add("hidden");
  let b = body();
  const asyncio = (await nodeKind(b.node)) === "asyncio";
  let what;
  if (asyncio) {
    b = cancelBody(b);
    what = `cancel tasks on ${b.node} (asyncio node: no restart budgets)`;
  } else {
    what = `${b.kill.mode === "unbounded" ? "UNBOUNDED" : "within-budget"} kills on ${b.node}` +
      (b.kill.root ? ` under ${b.kill.root}` : " (whole node)");
  }
  if (!window.confirm(`Start ${asyncio ? "cancelling tasks" : "killing processes"}: ${what}?\nEvery ${asyncio ? "cancel" : "kill"} is audited.`)) return;
  b.confirm = true;
  try {
    const res = await ctx.api.startExperiment(b);
    show(res.id);
    reloadHistory();
  } catch (e) {
    err.textContent = e.message;
    err.classList.remove("hidden");
  }
}

async function stop() {
  if (!current) return;
  $("chaos-stop").disabled = true;
  try {
    await ctx.api.abortExperiment(current);
  } catch (e) {
    $("chaos-status").textContent = `could not stop: ${e.message}`;
  }
}

async function loadHistory(first) {
  let data;
  try {
    data = await ctx.api.experiments({ limit: 50 });
  } catch (e) {
    $("chaos-history").innerHTML = `<li class="error-banner">${esc(e.message)}</li>`;
    return;
  }
  const rows = [];
  listed = new Map();
  for (const j of [...(data.running || []), ...(data.history || [])]) {
    if (listed.has(j.id)) continue;
    listed.set(j.id, j.status);
    const held = j.hypothesis_held ?? j.held;
    const cls = j.status === "running" ? "" : held ? "chaos-ok" : "chaos-bad";
    rows.push(
      `<li data-id="${esc(j.id)}"><span class="${cls}">${esc(j.status)}</span> ${esc(j.title || j.id)} ` +
        `<span class="muted small">${esc(j.node)} · ${fmtDateTime(j.started)}</span></li>`,
    );
  }
  $("chaos-history").innerHTML = rows.join("") || '<li class="muted">none yet</li>';
  const running = (data.running || [])[0];
  if (running && (first || !current)) show(running.id); // also one another operator started
  if (first) rendered("chaos", { experiments: rows.length });
}

/** Load an experiment's journal (all its kills so far, page by page), then follow its pushes. */
async function show(id) {
  current = id;
  head = null;
  kills = new Map();
  charted = new Set();
  chart.destroy();
  chart = new LiveChart($("chaos-chart"), { cap: 5000, flushMs: 300, yTitle: "ms" });
  $("chaos-stop").disabled = false;
  let from = 0;
  let j;
  do {
    try {
      j = await ctx.api.experiment(id, from);
    } catch (e) {
      $("chaos-status").textContent = `cannot load ${id}: ${e.message}`;
      return;
    }
    if (id !== current) return;
    merge(j.kills);
    from += j.kills.length;
  } while (j.kills.length && from < j.kills_total);
  head = j;
  draw();
}

/** Kill records into the map (a resolved one replaces its pending self); recoveries onto the chart. */
function merge(records) {
  for (const k of records) {
    kills.set(k.n, k);
    if (k.recovery_ms !== null && k.recovery_ms !== undefined && !charted.has(k.n)) {
      charted.add(k.n);
      chart.push("recovery", k.time, k.recovery_ms);
    }
  }
  if (kills.size > KILLS_KEPT) {
    const keep = [...kills.keys()].sort((a, b) => a - b).slice(-KILLS_SHOWN);
    kills = new Map(keep.map((n) => [n, kills.get(n)]));
  }
}

function draw() {
  const j = head;
  const s = j.summary;
  const r = s.recovery_ms;
  const held = j.hypothesis_held;
  $("chaos-title").textContent = `${j.title} (${j.node})`;
  $("chaos-stop").classList.toggle("hidden", j.status !== "running" || !ctx.config.may_chaos);
  $("chaos-status").innerHTML =
    `<b class="${j.status === "running" ? "" : held ? "chaos-ok" : "chaos-bad"}">${esc(j.status)}</b>` +
    (held === null || held === undefined ? "" : held ? " · hypothesis held" : " · hypothesis NOT held") +
    ` · started ${fmtTime(j.started)}` +
    (j.action ? ` · ${esc(j.action)}` : "") +
    (j.aborted_at ? ` · stopped at ${fmtTime(j.aborted_at)} (${esc(j.abort_reason || "")})` : "") +
    (j.error ? ` · <span class="chaos-bad">${esc(j.error)}</span>` : "");
  const stat = (label, v) => `<div><b>${v ?? "–"}</b><span>${label}</span></div>`;
  $("chaos-stats").innerHTML = [
    stat("attempted", s.attempted),
    stat("carried out", s.carried_out),
    stat("skipped (budget)", s.skipped.would_exceed_budget),
    stat("recovered", s.recovered),
    stat("not restarted", s.not_restarted),
    stat("give-ups", s.give_ups),
    stat("p50 ms", r.p50),
    stat("p90 ms", r.p90),
    stat("p99 ms", r.p99),
    stat("max ms", r.max),
  ].join("");
  const budgets = Object.entries(j.budgets || {});
  $("chaos-budgets").innerHTML =
    "<tr><th>supervisor</th><th>strategy</th><th>peak used / intensity</th><th>period</th><th>kills</th></tr>" +
    budgets
      .map(([pid, b]) =>
        `<tr class="${b.gave_up ? "chaos-bad" : ""}"><td>${esc(b.name || "?")} <span class="muted">${esc(pid)}</span></td>` +
          `<td>${esc(b.strategy)}</td><td>${b.peak_used} / ${b.intensity}${b.gave_up ? " GAVE UP" : ""}</td>` +
          `<td>${b.period} s</td><td>${b.kills}</td></tr>`)
      .join("");
  const bad = [
    ...(j.deviations || []).map((d) => `<li class="chaos-bad">[${esc(d.phase)}] ${esc(d.message)}</li>`),
    ...(j.checks || []).filter((c) => !c.ok).slice(0, 20)
      .map((c) => `<li class="chaos-bad">check ${esc(c.probe)} (${esc(c.phase)}): ${esc(JSON.stringify(c.value))} ` +
        `<span class="muted small">${esc(JSON.stringify(c.evidence).slice(0, 400))}</span></li>`),
  ];
  $("chaos-deviations").innerHTML = bad.join("") || '<li class="muted">none</li>';
  const shown = [...kills.values()].sort((a, b) => b.n - a.n).slice(0, KILLS_SHOWN);
  $("chaos-kills").innerHTML =
    "<tr><th>#</th><th>time</th><th>victim</th><th>supervisor</th><th>status</th><th>recovery ms</th><th>restarted</th></tr>" +
    shown
      .map((k) =>
        `<tr><td>${k.n}</td><td>${fmtTime(k.time)}</td><td>${esc(k.name || k.label || "")} <span class="muted">${esc(k.pid)}</span></td>` +
          `<td class="muted">${esc(k.supervisor || "")}</td><td class="${k.status === "recovered" ? "chaos-ok" : k.status === "pending" || k.status.endsWith("temporary") || k.status === "survives" ? "muted" : "chaos-bad"}">${esc(k.status)}</td>` +
          `<td>${k.recovery_ms ?? ""}</td><td class="muted">${esc((k.restarted || []).map((x) => x.child_id ?? x.new_pid).join(", "))}</td></tr>`)
      .join("");
}
