// Message trace: start a trace (processes, direction, limits in the manner of
// redbug), and its message sequence chart: one lane per traced process and one
// for "outside", an arrow per message in time order, a call and its reply paired
// (an activation bar on the server's lane, the latency beside the reply),
// payloads as redacted by the agent, shown on demand (click an arrow); pause,
// zoom, filter; a dropped-messages marker when the limits cut in. Arrows come
// pushed on the "trace" feed of /live, never polled. Ended traces come from the
// history and can be replayed (scrubbed, or played back in their own time).
import { esc, fmtDateTime, fmtInt, rendered, throttle } from "../util.js";

export const feeds = ["trace"];
export const followsNodes = false;

const OUTSIDE = "outside";
const END_TEXT = {
  msgs: "message limit reached",
  rate: "rate limit exceeded",
  duration: "time limit reached",
  exited: "the traced processes died",
  detached: "the observer detached",
  stopped: "stopped",
  agent_stopped: "the agent stopped",
};
const LIMIT_ENDS = new Set(["msgs", "rate", "duration"]);

let ctx = null;
let cur = null; // {id, summary, arrows: Map(n -> arrow), count, dropped, end}
let early = new Map(); // trace id -> feed items that came before its start reply
let paused = false;
let buffered = [];
let zoom = 1;
let filterText = "";
let kinds = new Set(["call", "reply", "cast", "send"]);
let selected = null;
let upTo = null; // replay: how many arrows are shown (null: all)
let playing = null; // replay: {start, t0, frame}
let drawSoon = null;
let listSoon = null;

export function mount(root, context) {
  ctx = context;
  const can = (ctx.config.actions || []).includes("trace");
  const form = document.getElementById("tr-form");
  const note = document.getElementById("tr-form-note");
  if (!can) note.textContent = "This login token does not allow tracing (it needs the trace grant).";
  else if (!ctx.node) note.textContent = "Open a node's Trace page to start a trace.";
  else form.classList.remove("hidden");
  if (ctx.config.pids) document.getElementById("tr-pids").value = String(ctx.config.pids);
  document.getElementById("tr-go").addEventListener("click", start);
  document.getElementById("tr-stop").addEventListener("click", stop);
  document.getElementById("tr-pause").addEventListener("click", togglePause);
  document.getElementById("tr-replay").addEventListener("click", replay);
  document.getElementById("tr-zoom-in").addEventListener("click", () => setZoom(zoom * 1.25));
  document.getElementById("tr-zoom-out").addEventListener("click", () => setZoom(zoom / 1.25));
  document.getElementById("tr-filter").addEventListener("input", (e) => {
    filterText = e.target.value.trim().toLowerCase();
    draw();
  });
  for (const box of document.querySelectorAll(".tr-kinds input")) {
    box.addEventListener("change", () => {
      const k = box.dataset.kind;
      const on = box.checked;
      for (const x of k === "reply" ? ["reply", "error"] : [k]) on ? kinds.add(x) : kinds.delete(x);
      draw();
    });
  }
  kinds.add("error");
  document.getElementById("tr-chart").addEventListener("click", (e) => {
    const g = e.target.closest("[data-n]");
    if (g) select(Number(g.dataset.n));
  });
  document.getElementById("tr-rows").addEventListener("click", (e) => {
    const a = e.target.closest("a[data-open]");
    if (!a) return;
    e.preventDefault();
    open(a.dataset.open);
  });
  drawSoon = throttle(draw, 100);
  listSoon = throttle(loadList, 500);
  loadList();
  if (ctx.config.trace_id) open(ctx.config.trace_id);
}

// -- starting, stopping, opening ------------------------------------------------------------------

function num(id) {
  return Number(document.getElementById(id).value);
}

async function start() {
  const msg = document.getElementById("tr-start-msg");
  const pids = document
    .getElementById("tr-pids")
    .value.split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const pattern = document.getElementById("tr-pattern").value.trim();
  const body = {
    dir: document.getElementById("tr-dir").value,
    max_msgs: num("tr-max-msgs"),
    max_rate: num("tr-max-rate"),
    duration: num("tr-duration"),
  };
  if (pids.length) body.pids = pids;
  else body.pattern = pattern;
  msg.textContent = "Starting…";
  msg.className = "small muted";
  try {
    const r = await ctx.api.startTrace(ctx.node, body);
    msg.textContent = "";
    show(r.trace, []);
    history.replaceState(null, "", `/traces/${encodeURIComponent(r.trace.id)}`);
    listSoon();
  } catch (err) {
    msg.textContent = `Not started: ${err.message}`;
    msg.className = "small error-banner";
  }
}

async function stop() {
  if (!cur) return;
  try {
    const r = await ctx.api.stopTrace(cur.id);
    ended(r.trace.end, r.trace);
  } catch (err) {
    document.getElementById("tr-start-msg").textContent = `Could not stop: ${err.message}`;
  }
}

async function open(id) {
  try {
    const data = await ctx.api.trace(id);
    show(data.trace, data.msgs || []);
  } catch (err) {
    document.getElementById("tr-start-msg").textContent = `No trace ${id}: ${err.message}`;
  }
}

function show(summary, msgs) {
  stopPlaying();
  cur = { id: summary.id, summary, arrows: new Map(), count: summary.count || 0, dropped: summary.dropped || 0, end: summary.end || null };
  selected = null;
  upTo = null;
  paused = false;
  buffered = [];
  for (const m of msgs) add(m);
  for (const it of early.get(cur.id) || []) onItem(it);
  early.delete(cur.id);
  document.getElementById("tr-live").classList.remove("hidden");
  const spec = summary.spec || {};
  const who = (spec.pids || []).map((p) => label(p)).join(", ");
  document.getElementById("tr-title").textContent = `Trace ${summary.id} on ${summary.node}: ${who}`;
  document.getElementById("tr-export-json").href = ctx.api.traceExportUrl(cur.id, "json");
  document.getElementById("tr-export-text").href = ctx.api.traceExportUrl(cur.id, "text");
  document.getElementById("tr-detail").innerHTML = "Click an arrow to see its message (as redacted by the agent).";
  chrome();
  draw();
}

function ended(reason, summary) {
  if (!cur) return;
  cur.end = reason;
  if (summary) {
    cur.summary = { ...cur.summary, ...summary };
    if (typeof summary.count === "number") cur.count = summary.count;
    if (typeof summary.dropped === "number") cur.dropped = summary.dropped;
  }
  chrome();
  draw(); // at once: the status and the chart's end marker agree
  listSoon();
}

function chrome() {
  const can = (ctx.config.actions || []).includes("trace");
  const st = document.getElementById("tr-status");
  st.textContent = cur.end ? `ended: ${END_TEXT[cur.end] || cur.end}` : paused ? `paused (${buffered.length} waiting)` : "running";
  st.className = "pill " + (cur.end ? (LIMIT_ENDS.has(cur.end) ? "st-suspended" : "st-dead") : "st-running");
  st.dataset.end = cur.end || "";
  document.getElementById("tr-counts").textContent = `${fmtInt(cur.count)} message(s)${cur.dropped ? `, ${fmtInt(cur.dropped)} dropped` : ""}`;
  document.getElementById("tr-stop").classList.toggle("hidden", !!cur.end || !can);
  document.getElementById("tr-replay").classList.toggle("hidden", !cur.end);
  const p = document.getElementById("tr-pause");
  p.textContent = paused ? "Resume" : "Pause";
  p.setAttribute("aria-pressed", String(paused));
  p.classList.toggle("hidden", !!cur.end);
}

// -- pushes -----------------------------------------------------------------------------------------

export function update(state, delta) {
  if (delta.kind === "feed" && delta.feed === "trace") {
    for (const it of delta.items) onItem(it);
  } else if (delta.kind === "connection" && delta.status === "live" && cur && !cur.end) {
    open(cur.id); // reconnected: what was pushed meanwhile is in the trace's JSON
  }
}

function onItem(it) {
  if (!it || !it.trace) return;
  if (it.start || it.end) listSoon();
  if (!cur || it.trace !== cur.id) {
    const q = early.get(it.trace) || [];
    if (q.length < 200) q.push(it);
    early.set(it.trace, q);
    if (early.size > 20) early.delete(early.keys().next().value);
    return;
  }
  if (Array.isArray(it.msgs)) {
    if (paused) buffered.push(...it.msgs);
    else for (const m of it.msgs) add(m);
  }
  if (typeof it.count === "number") cur.count = it.count;
  if (typeof it.dropped === "number") cur.dropped = it.dropped;
  if (it.end) ended(it.end, it.summary);
  else {
    chrome();
    drawSoon();
  }
}

function add(m) {
  if (m && typeof m.n === "number" && !cur.arrows.has(m.n)) cur.arrows.set(m.n, m);
}

function togglePause() {
  paused = !paused;
  if (!paused) {
    for (const m of buffered) add(m);
    buffered = [];
    draw();
  }
  chrome();
}

function setZoom(z) {
  zoom = Math.min(3, Math.max(0.4, z));
  draw();
}

// -- replay -------------------------------------------------------------------------------------------

function replay() {
  if (!cur) return;
  stopPlaying();
  const arrows = ordered();
  if (!arrows.length) return;
  upTo = 0;
  const t0 = arrows[0].time;
  // played back in the trace's own time, gaps over a second shortened to one
  const at = [];
  let v = 0;
  for (let i = 0; i < arrows.length; i++) {
    if (i) v += Math.min(1, Math.max(0, arrows[i].time - arrows[i - 1].time));
    at.push(v);
  }
  playing = { start: performance.now(), at, t0, frame: 0 };
  const step = () => {
    if (!playing) return;
    const el = (performance.now() - playing.start) / 1000;
    let n = upTo;
    while (n < at.length && at[n] <= el) n++;
    if (n !== upTo) {
      upTo = n;
      draw();
    }
    if (upTo >= at.length) {
      playing = null;
      upTo = null;
      draw();
      return;
    }
    playing.frame = requestAnimationFrame(step);
  };
  draw();
  playing.frame = requestAnimationFrame(step);
}

function stopPlaying() {
  if (playing) cancelAnimationFrame(playing.frame);
  playing = null;
}

// -- the chart ----------------------------------------------------------------------------------------

function label(pid) {
  const names = (cur && cur.summary.spec && cur.summary.spec.names) || {};
  const n = names[pid];
  return n && n !== pid ? `${n} ${pid}` : String(pid);
}

function ordered() {
  return [...cur.arrows.values()].sort((a, b) => a.n - b.n);
}

function brief(v) {
  let s;
  try {
    s = typeof v === "string" ? v : JSON.stringify(v, (k, x) => (x && x.__type__ === "tuple" && Array.isArray(x.items) ? x.items : x));
  } catch {
    s = String(v);
  }
  return s && s.length > 46 ? s.slice(0, 45) + "…" : s || "";
}

function visible(m) {
  if (!kinds.has(m.kind)) return false;
  if (!filterText) return true;
  const hay = `${m.kind} ${m.from || OUTSIDE} ${m.to || OUTSIDE} ${JSON.stringify(m.msg)}`.toLowerCase();
  return hay.includes(filterText);
}

function fmtClock(t) {
  const d = new Date(t * 1000);
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function draw() {
  if (!cur) return;
  const spec = cur.summary.spec || {};
  const traced = spec.pids || [];
  const lanes = [OUTSIDE, ...traced];
  const laneW = Math.round(230 * zoom);
  const rowH = Math.max(12, Math.round(26 * zoom));
  const left = 96;
  const top = 54;
  const x = (lane) => left + lanes.indexOf(lane) * laneW + laneW / 2;
  const laneOf = (pid) => (pid && traced.includes(pid) ? pid : OUTSIDE);
  let all = ordered();
  if (upTo !== null) all = all.slice(0, upTo);
  const rows = all.filter(visible);
  const width = left + lanes.length * laneW + 20;
  const cut = cur.end && LIMIT_ENDS.has(cur.end) && upTo === null;
  const height = top + (rows.length + 1) * rowH + (cut || cur.dropped ? 40 : 10);
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img">`);
  out.push(`<defs>${["call", "reply", "error", "cast", "send"].map((k) => `<marker id="ah-${k}" class="k-${k}" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="${arrowColor(k)}"/></marker>`).join("")}</defs>`);
  for (const lane of lanes) {
    const lx = x(lane);
    const name = lane === OUTSIDE ? "outside" : ((spec.names || {})[lane] || lane);
    out.push(`<text class="lane-head" x="${lx}" y="18" text-anchor="middle">${esc(name)}</text>`);
    if (lane !== OUTSIDE) out.push(`<text class="lane-sub" x="${lx}" y="34" text-anchor="middle">${esc(lane)}</text>`);
    out.push(`<line class="lane" x1="${lx}" y1="42" x2="${lx}" y2="${height - 4}"/>`);
  }
  // calls paired with their replies: an activation bar on the callee's lane
  const rowOf = new Map(rows.map((m, i) => [m.n, i]));
  const calls = new Map();
  for (const m of rows) if (m.kind === "call" && m.call != null) calls.set(m.call, m);
  for (const m of rows) {
    if ((m.kind === "reply" || m.kind === "error") && m.call != null && calls.has(m.call)) {
      const c = calls.get(m.call);
      const y1 = top + rowOf.get(c.n) * rowH;
      const y2 = top + rowOf.get(m.n) * rowH;
      const lx = x(laneOf(c.to));
      out.push(`<rect class="activation" data-call="${esc(m.call)}" x="${lx - 4}" y="${y1}" width="8" height="${Math.max(2, y2 - y1)}"/>`);
    }
  }
  rows.forEach((m, i) => {
    const y = top + i * rowH;
    const xa = x(laneOf(m.from));
    const xb = x(laneOf(m.to));
    const kind = m.kind;
    const peer = (p, name) => (p && !traced.includes(p) ? ` ${name || p}` : "");
    const text = `${kind}${m.call != null ? " #" + m.call : ""}${peer(m.from)}${peer(m.to, m.to_name) ? " →" + peer(m.to, m.to_name) : ""} ${brief(m.msg)}`;
    const lat = (kind === "reply" || kind === "error") && m.latency_ms != null ? `${m.latency_ms} ms` : "";
    out.push(`<g class="arrow k-${esc(kind)}${selected === m.n ? " sel" : ""}" data-n="${m.n}" data-kind="${esc(kind)}" data-call="${m.call ?? ""}">`);
    out.push(`<text class="time" x="4" y="${y + 4}">${esc(fmtClock(m.time))}</text>`);
    if (xa === xb) {
      out.push(`<path d="M${xa},${y - 6} h28 v12 h-24" fill="none" stroke="${arrowColor(kind)}" stroke-width="1.5" marker-end="url(#ah-${esc(kind)})"/>`);
      out.push(`<line x1="${xa}" y1="${y - 6}" x2="${xa + 28}" y2="${y - 6}" stroke="transparent"/>`);
    } else {
      const pad = 5 * Math.sign(xb - xa);
      out.push(`<line x1="${xa + pad}" y1="${y}" x2="${xb - pad}" y2="${y}" marker-end="url(#ah-${esc(kind)})"/>`);
    }
    const tx = Math.min(xa, xb) + 8;
    out.push(`<text x="${tx}" y="${y - 4}">${esc(text)}${m.masked ? ` <tspan class="masked">[${esc(m.masked)} masked]</tspan>` : ""}</text>`);
    if (lat) out.push(`<text class="latency" x="${Math.max(xa, xb) + 8}" y="${y + 4}">${esc(lat)}</text>`);
    out.push(`</g>`);
  });
  if (upTo === null && (cut || cur.dropped)) {
    const y = top + rows.length * rowH + 8;
    const why = cur.end && LIMIT_ENDS.has(cur.end) ? END_TEXT[cur.end] : "limits cut in";
    out.push(`<g class="dropped" data-dropped="${cur.dropped}"><line x1="${left - 20}" y1="${y}" x2="${width - 10}" y2="${y}"/>`);
    out.push(`<text x="${left}" y="${y + 18}">✂ ${esc(why)}${cur.dropped ? `: ${esc(fmtInt(cur.dropped))} message(s) dropped` : ""}</text></g>`);
  }
  out.push(`</svg>`);
  const chart = document.getElementById("tr-chart");
  chart.innerHTML = out.join("");
  if (!cur.end && !paused && upTo === null) chart.scrollTop = chart.scrollHeight;
  rendered("trace", { trace: cur.id, arrows: rows.length, total: cur.arrows.size, end: cur.end, dropped: cur.dropped });
}

function arrowColor(kind) {
  return { call: "#4ea1ff", reply: "#3fb950", error: "#f85149", cast: "#bc8cff", send: "#58a6c8" }[kind] || "#d7dee7";
}

function select(n) {
  selected = n;
  const m = cur.arrows.get(n);
  if (!m) return;
  const pair = m.call != null ? [...cur.arrows.values()].filter((x) => x.call === m.call && x.n !== n) : [];
  const about = [
    `<b>${esc(m.kind)}</b>${m.call != null ? ` #${esc(m.call)}` : ""} from <span class="mono">${esc(m.from ? label(m.from) : OUTSIDE)}</span> to <span class="mono">${esc(m.to ? label(m.to) : OUTSIDE)}</span> at ${esc(fmtClock(m.time))}`,
    m.latency_ms != null ? ` · replied after ${esc(m.latency_ms)} ms` : "",
    pair.length ? ` · paired with ${pair.map((p) => `<a href="#" data-pair="${p.n}">${esc(p.kind)}</a>`).join(", ")}` : "",
    m.masked ? ` · <span class="masked">${esc(m.masked)} value(s) masked by the agent</span>` : "",
    m.truncated ? " · truncated by the agent" : "",
  ].join("");
  const det = document.getElementById("tr-detail");
  det.innerHTML = `<div>${about}</div><pre class="mono" id="tr-payload">${esc(JSON.stringify(m.msg, null, 2))}</pre>`;
  det.querySelectorAll("a[data-pair]").forEach((a) =>
    a.addEventListener("click", (e) => {
      e.preventDefault();
      select(Number(a.dataset.pair));
    }),
  );
  draw();
}

// -- history --------------------------------------------------------------------------------------------

async function loadList() {
  let data;
  try {
    data = await ctx.api.traces(ctx.node || undefined);
  } catch (err) {
    document.getElementById("tr-rows").innerHTML = `<tr><td colspan="8" class="error-banner">${esc(err.message)}</td></tr>`;
    return;
  }
  const all = [...(data.live || []), ...(data.stored || [])];
  document.getElementById("tr-rows").innerHTML = all.length
    ? all
        .map((t) => {
          const spec = t.spec || {};
          const who = (spec.pids || []).map((p) => ((spec.names || {})[p] ? `${spec.names[p]} ${p}` : p)).join(", ");
          return `<tr data-trace="${esc(t.id)}"><td class="mono">${esc(fmtDateTime(t.started))}</td><td>${esc(t.node)}</td>
            <td class="mono small">${esc(who)}</td><td class="num">${fmtInt(t.count)}</td><td class="num">${fmtInt(t.dropped)}</td>
            <td>${t.end ? esc(END_TEXT[t.end] || t.end) : "<b>running</b>"}</td><td class="small">${esc(t.who || "")}</td>
            <td><a href="/traces/${encodeURIComponent(t.id)}" data-open="${esc(t.id)}">${t.end ? "replay" : "watch"}</a>
            · <a href="${ctx.api.traceExportUrl(t.id, "text")}" download>text</a> · <a href="${ctx.api.traceExportUrl(t.id, "json")}" download>JSON</a></td></tr>`;
        })
        .join("")
    : `<tr><td colspan="8" class="muted">No trace yet.</td></tr>`;
  rendered("trace-list", { count: all.length });
}

export function destroy() {
  stopPlaying();
}
