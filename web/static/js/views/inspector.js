// Inspector: one process -- info, links and monitors, stack, state and mailbox
// peek (redacted by the agent), restart history; gated actions behind a
// confirmation dialog that shows the kill preview first.
import { esc, fmtBytes, fmtDateTime, fmtInt, fmtNum, fmtSecs, fmtTime, processHref, rendered, statusClass, throttle } from "../util.js";
import { actionsPanel, infoRows, isAsync, wireCancel } from "./inspector_task.js";

let ctx = null;
let proc = null; // the model record (+ restart history)
let ins = {}; // the agent's inspect result (stack, state, mailbox peek), redacted by the agent
let gone = false;
let killedAt = null; // performance.now() of our kill, for the "restarted after N ms" line
let reload = null;

export function mount(root, context) {
  ctx = context;
  reload = throttle(() => load(), 1000);
  load();
}

async function load() {
  try {
    const data = await ctx.api.process(ctx.node, ctx.pid);
    proc = data.process || data;
    if (proc.pid && proc.pid !== ctx.pid) {
      // the URL may name the process ("room:lobby" or "0.42.0"): follow its canonical pid from now on
      ctx.pid = proc.pid;
      history.replaceState(null, "", processHref(ctx.node, proc.pid));
    }
    if (data.restart_history && !proc.restart_history) proc.restart_history = data.restart_history;
    ins = data.inspect || {};
    if (data.inspect_error) ins = { ...ins, error: data.inspect_error };
    gone = false;
  } catch (err) {
    if (err.status === 404) {
      gone = true;
      if (!proc) {
        document.getElementById("insp").innerHTML =
          `<div class="exited">No process <span class="mono">${esc(ctx.pid)}</span> on ${esc(ctx.node)}: it has exited or never existed. ` +
          `<a href="/events?node=${encodeURIComponent(ctx.node)}&q=${encodeURIComponent(ctx.pid)}">Its events</a></div>`;
      }
    } else {
      document.getElementById("insp").innerHTML = `<div class="error-banner">${esc(err.message)}</div>`;
    }
    rendered("process", { pid: ctx.pid, gone });
    return;
  }
  draw();
  loadCrashes();
  rendered("process", { pid: ctx.pid });
}

function pidLinks(list) {
  if (!list || !list.length) return `<span class="muted">none</span>`;
  return `<div class="pidlist">${list.map((p) => `<a href="${processHref(ctx.node, p)}">${esc(p)}</a>`).join("")}</div>`;
}

function gaugeHtml(b) {
  if (!b || b.intensity === undefined || b.intensity === null) return "";
  const used = Number(b.used || 0);
  const cap = Math.max(1, Number(b.intensity));
  const cls = used >= cap ? "full" : used / cap >= 0.5 ? "warn" : "";
  return `<span class="gauge ${cls}" title="restarts used in the current period"><span class="bar"><i style="width:${Math.min(100, (100 * used) / cap)}%"></i></span>
    <b>${used} / ${esc(b.intensity)}</b> <span class="muted">restarts in ${esc(b.period)} s · ${esc(b.strategy || "")}</span></span>`;
}

function jsonBlock(v) {
  if (v === null || v === undefined) return `<span class="muted">none</span>`;
  let extra = "";
  let value = v;
  if (typeof v === "object" && !Array.isArray(v) && ("value" in v || "messages" in v)) {
    value = "value" in v ? v.value : v.messages;
    const bits = [];
    if (v.truncated) bits.push("truncated");
    if (v.masked) bits.push(`${v.masked} field(s) masked`);
    if (bits.length) extra = `<div class="small muted">${bits.join(" · ")}</div>`;
  }
  return `<pre class="json">${esc(JSON.stringify(value, null, 2))}</pre>${extra}`;
}

function draw() {
  const p = proc;
  const get = (k) => (ins[k] !== undefined ? ins[k] : p[k]);
  const title = p.name || p.label || p.pid;
  const path = (p.path || []).map((q) => (q === p.pid ? `<b class="mono">${esc(q)}</b>` : `<a href="${processHref(ctx.node, q)}">${esc(q)}</a>`)).join(" › ");
  const stack = get("stack") || [];
  const budget = p.budget_now || get("budget");
  const hist = p.restart_history || [];
  const allow = !!ctx.config.allow_destructive;
  const task = isAsync(p); // an asyncio node's task, scope or loop: its own info rows and action
  const actions = task
    ? actionsPanel(p, allow)
    : allow
    ? `<section class="panel full"><h2>Actions</h2>
        <div class="actions">
          <input id="kill-reason" value="kill" aria-label="exit reason" style="width:160px" title="exit reason: kill (untrappable), shutdown, normal, or any text">
          <button id="act-kill" class="danger" type="button">Kill…</button>
          <button id="act-suspend" type="button">Suspend…</button>
          <button id="act-resume" type="button">Resume…</button>
        </div>
        <div style="margin-top:10px"><textarea id="send-msg" aria-label="message as JSON" placeholder='message as JSON, e.g. {"op": "ping"} or ["cast", "hello"]'></textarea>
        <div class="actions" style="margin-top:6px"><button id="act-send" type="button">Send message…</button><span id="act-result" class="muted"></span></div></div>
      </section>`
    : `<section class="panel full muted small">Read-only: kill, suspend, resume and send are off (start the observer with <code>--allow-destructive-actions</code>).</section>`;
  const actorRows = task
    ? ""
    : `<dt>mailbox</dt><dd>${fmtInt(get("mailbox"))}</dd>
        <dt>messages in / out</dt><dd>${fmtInt(get("msgs_in"))} / ${fmtInt(get("msgs_out"))}</dd>
        <dt>handled</dt><dd>${fmtInt(get("handled"))} · ${fmtSecs(get("handler_time"))} in handlers</dd>
        <dt>rate</dt><dd>${fmtNum(p.rate)} msgs/s</dd>
        <dt>memory</dt><dd>${fmtBytes(get("memory"))}</dd>
        <dt>trap_exit</dt><dd>${esc(String(get("trap_exit") ?? "unknown"))}</dd>
        <dt>started</dt><dd>${fmtDateTime(p.started_at)}</dd>
        <dt>restarts</dt><dd>${fmtInt(p.restarts)}</dd>
        <dt>supervisor</dt><dd>${p.supervisor ? `<a href="${processHref(ctx.node, p.supervisor)}">${esc(p.supervisor)}</a>` : "–"} ${p.child_id != null ? "· child " + esc(p.child_id) : ""}</dd>
        ${budget ? `<dt>restart budget</dt><dd>${gaugeHtml(budget)}</dd>` : ""}`;
  document.getElementById("insp").innerHTML = `
    <div class="insp-head">
      <h1>${esc(title)}</h1>
      <span class="mono">${esc(p.pid)}</span>
      <span class="pill ${statusClass(gone ? "dead" : p.status)}">${esc(gone ? "exited" : p.status)}</span>
      <span class="muted">${esc(p.kind || "")}${p.label && p.name ? " · " + esc(p.label) : ""}</span>
      ${(ctx.config.actions || []).includes("trace") && !gone ? `<a id="act-trace" href="/nodes/${encodeURIComponent(ctx.node)}/trace?pids=${encodeURIComponent(p.name || p.pid)}">Trace messages…</a>` : ""}
    </div>
    <div class="crumbs" style="margin:6px 0 12px">${path}</div>
    <div class="insp">
      <section class="panel"><h2>Info</h2><dl class="info">
        ${task ? infoRows(p, ins, ctx.node) : actorRows}
      </dl></section>
      <section class="panel"><h2>Links and monitors</h2><dl class="info">
        <dt>links</dt><dd>${pidLinks(p.links)}</dd>
        <dt>monitors</dt><dd>${pidLinks(p.monitors)}</dd>
        <dt>monitored by</dt><dd>${pidLinks(p.monitored_by || get("monitored_by"))}</dd>
        ${p.kind === "supervisor" ? `<dt>children</dt><dd>${pidLinks(p.children)}</dd>` : ""}
      </dl></section>
      ${ins.error ? `<div class="note-banner full">The agent did not answer inspect: ${esc(ins.error.message || ins.error.error)}; showing the observer's picture only.</div>` : ""}
      <section class="panel"><h2>Stack</h2>${
        stack.length
          ? `<ol class="stack">${stack.map((f) => `<li>${esc(f.function || f.name || "?")} <span class="fl">${esc(f.file || "")}:${esc(f.line ?? "")}</span></li>`).join("")}</ol>`
          : `<span class="muted">no stack (not running a coroutine, or unavailable)</span>`
      }</section>
      <section class="panel"><h2>Restart history</h2>${
        hist.length
          ? `<table class="data"><thead><tr><th>time</th><th>old pid</th><th>new pid</th><th class="num">restarts</th></tr></thead><tbody>${hist
              .slice()
              .reverse()
              .map((h) => `<tr><td class="mono">${fmtTime(h.time)}</td><td class="mono">${esc(h.old_pid || "–")}</td><td class="mono">${h.new_pid ? `<a href="${processHref(ctx.node, h.new_pid)}">${esc(h.new_pid)}</a>` : "–"}</td><td class="num">${esc(h.restarts ?? "")}</td></tr>`)
              .join("")}</tbody></table>`
          : `<span class="muted">never restarted</span>`
      }</section>
      <section class="panel"><h2>State <span class="small muted">(redacted by the agent)</span></h2>${jsonBlock(get("state"))}</section>
      <section class="panel"><h2>Mailbox peek</h2>${jsonBlock(get("mailbox_peek"))}</section>
      <section class="panel" id="insp-crashes">${crashPanel}</section>
      ${actions}
    </div>`;
  if (allow && task) wireCancel(ctx, proc, ins, { ask, run });
  else if (allow) {
    wireActions();
    hideUnpermitted();
  }
}

// The login token's grant (page config "actions"): the server refuses the others anyway.
function hideUnpermitted() {
  const can = new Set(ctx.config.actions || []);
  const buttons = { "act-kill": "kill", "act-suspend": "suspend", "act-resume": "suspend", "act-send": "send" };
  for (const [id, action] of Object.entries(buttons)) {
    if (!can.has(action)) document.getElementById(id).classList.add("hidden");
  }
  if (!can.has("kill")) document.getElementById("kill-reason").classList.add("hidden");
  if (!can.has("send")) document.getElementById("send-msg").classList.add("hidden");
}

function wireActions() {
  document.getElementById("act-kill").addEventListener("click", () => confirmKill());
  document.getElementById("act-suspend").addEventListener("click", () =>
    confirmAction("Suspend " + ctx.pid, `<p>The process stops taking messages; they queue in its mailbox until it is resumed. Links and monitors are unaffected.</p>`, () => ctx.api.suspend(ctx.node, ctx.pid)),
  );
  document.getElementById("act-resume").addEventListener("click", () =>
    confirmAction("Resume " + ctx.pid, `<p>The process goes back to handling its mailbox (${fmtInt(proc.mailbox)} queued).</p>`, () => ctx.api.resume(ctx.node, ctx.pid)),
  );
  document.getElementById("act-send").addEventListener("click", () => {
    const raw = document.getElementById("send-msg").value;
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch (err) {
      document.getElementById("act-result").innerHTML = `<span style="color:var(--bad)">not JSON: ${esc(err.message)}</span>`;
      return;
    }
    confirmAction("Send a message to " + ctx.pid, `<p>This message goes into the mailbox (JSON arrays become tuples):</p><pre class="json">${esc(JSON.stringify(msg, null, 2))}</pre>`, () => ctx.api.send(ctx.node, ctx.pid, msg));
  });
}

/** Open the dialog; resolves true on confirm. */
function ask(title, bodyHtml, okLabel = "Confirm") {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-body").innerHTML = bodyHtml;
  document.getElementById("confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
    dlg.returnValue = "";
    dlg.showModal();
  });
}

function previewHtml(pv) {
  if (!pv || pv.exists === false) return `<div class="preview-warn">${esc((pv && pv.warnings && pv.warnings[0]) || "This process is not in the picture any more.")}</div>`;
  const list = (pids, n) => (pids && pids.length ? `<ul>${pids.slice(0, 12).map((p) => `<li class="mono">${esc(p)}</li>`).join("")}${n > 12 ? `<li class="muted">… ${n - 12} more</li>` : ""}</ul>` : "");
  const parts = [];
  const gu = pv.gives_up || [];
  if (gu.length) {
    parts.push(
      `<div class="preview-warn">This kill exhausts a restart budget: ${gu
        .map((g) => `${esc(g.name || g.supervisor)} (${esc(g.used)}/${esc(g.intensity)} used in ${esc(g.period)} s) gives up`)
        .join("; ")}. ${pv.escalation && pv.escalation.length > 1 ? "It escalates up the tree." : ""}</div>`,
    );
  } else if (pv.target_dies) {
    parts.push(`<div class="preview-ok">Within budget: no supervisor gives up.${pv.budget ? ` Budget after: ${esc((pv.budget.used || 0) + 1)}/${esc(pv.budget.intensity)} in ${esc(pv.budget.period)} s.` : ""}</div>`);
  } else {
    parts.push(`<div class="note-banner">The target survives: it traps exits or ignores reason <code>${esc(pv.reason)}</code>${pv.notified && pv.notified.length ? "; it gets an exit message" : ""}.</div>`);
  }
  parts.push(`<div><b>${fmtInt(pv.down_count ?? (pv.down || []).length)}</b> process(es) go down${list(pv.down, pv.down_count ?? 0)}</div>`);
  if ((pv.linked_down || []).length) parts.push(`<div>Through links: <b>${fmtInt(pv.linked_down_count)}</b>${list(pv.linked_down, pv.linked_down_count)}</div>`);
  if (pv.is_supervisor) parts.push(`<div>Its subtree: <b>${fmtInt(pv.subtree_count)}</b> process(es)</div>`);
  for (const r of pv.restarts || []) {
    parts.push(`<div>${esc(r.name || r.supervisor)} (${esc(r.strategy)}) restarts <b>${fmtInt(r.restarted_count ?? r.restarted.length)}</b> child(ren)${list(r.restarted, r.restarted_count ?? 0)}<span class="small muted">budget ${esc(r.used_after)}/${esc(r.intensity)}</span></div>`);
  }
  if ((pv.notified || []).length) parts.push(`<div>Notified (trap exits, survive): ${list(pv.notified, pv.notified.length)}</div>`);
  for (const w of pv.warnings || []) parts.push(`<div class="small muted">⚠ ${esc(w)}</div>`);
  return `<div class="preview">${parts.join("")}</div>`;
}

async function confirmKill() {
  const reason = document.getElementById("kill-reason").value.trim() || "kill";
  let pv = null;
  let pvErr = "";
  try {
    pv = await ctx.api.killPreview(ctx.node, ctx.pid, reason);
  } catch (err) {
    pvErr = `<div class="error-banner">No preview: ${esc(err.message)}</div>`;
  }
  const ok = await ask(`Kill ${proc.name || proc.label || ctx.pid} with reason "${reason}"?`, pvErr || previewHtml(pv), "Kill");
  if (!ok) return;
  killedAt = performance.now();
  await run(() => ctx.api.kill(ctx.node, ctx.pid, reason), "kill");
}

async function confirmAction(title, body, fn) {
  if (await ask(title, body)) await run(fn, title);
}

async function run(fn, what) {
  const out = document.getElementById("act-result");
  try {
    const r = await fn();
    if (r && r.ok === false) throw new Error(r.message || r.error);
    if (out) out.innerHTML = `<span style="color:var(--ok)">done</span>`;
    rendered("process-action", { what, ok: true });
  } catch (err) {
    if (out) out.innerHTML = `<span style="color:var(--bad)">${esc(err.message)}</span>`;
    rendered("process-action", { what, ok: false, error: err.message });
  }
  reload();
}

export const feeds = ["crashes"]; // the "Latest crash" panel follows new reports of this process or its slot

export function update(state, delta) {
  if (delta.kind === "feed" && delta.feed === "crashes" && proc) {
    const slot = (c) => c.supervisor && c.supervisor === proc.supervisor && c.child_id != null && String(c.child_id) === String(proc.child_id);
    if (delta.items.some((c) => c.node === ctx.node && (c.pid === ctx.pid || slot(c)))) loadCrashes();
    return;
  }
  if (delta.kind !== "batch" || delta.node !== ctx.node) return;
  const banner = document.getElementById("insp-banner");
  let mine = false;
  for (const c of delta.changes) {
    const d = c.data || {};
    if (c.kind === "restart" && d.old_pid === ctx.pid) {
      const after = killedAt ? Math.round(performance.now() - killedAt) : null;
      const ms = after !== null ? ` ${after} ms after the kill` : "";
      banner.innerHTML = `<div class="restarted" data-new-pid="${esc(d.new_pid || "")}" data-ms="${after ?? ""}">Restarted by its supervisor as ${
        d.new_pid ? `<a href="${processHref(ctx.node, d.new_pid)}" class="mono">${esc(d.new_pid)}</a>` : "nothing (ignored)"
      } (restart #${esc(d.restarts ?? "?")})${ms}.</div>` + banner.innerHTML.replace(/<div class="restarted"[\s\S]*?<\/div>/, "");
      rendered("process-restarted", { pid: ctx.pid, new_pid: d.new_pid });
    } else if (c.kind === "exit" && c.pid === ctx.pid) {
      gone = true;
      banner.insertAdjacentHTML("beforeend", `<div class="exited">Exited: <span class="mono">${esc(d.reason || d.reason_kind || "")}</span> at ${fmtTime(Date.now() / 1000)}</div>`);
      if (proc) draw();
      rendered("process-exited", { pid: ctx.pid });
    } else if (c.pid === ctx.pid) mine = true;
  }
  if (mine && !gone) reload();
}

export function destroy() {}

// Crash reports of this process (and of the earlier incarnations of its child
// slot), and the flight recorder switch (operator only; the server checks again).
let crashPanel = `<h2>Latest crash</h2><span class="muted">…</span>`;
let flightNote = "";

async function loadCrashes() {
  let list = [];
  try {
    const data = await ctx.api.processCrashes(ctx.node, ctx.pid);
    list = data.crashes || [];
  } catch {
    list = [];
  }
  const last = list[0];
  const toggle = ctx.config.allow_destructive
    ? `<div class="actions" style="margin-top:8px">Flight recorder <span id="fr-state" class="pill">${esc(recorderState())}</span>
        <button type="button" id="fr-on">on</button><button type="button" id="fr-off">off</button>
        <label class="check"><input type="checkbox" id="fr-subtree"> whole subtree</label>
        <span id="fr-result" class="small muted">${esc(flightNote)}</span></div>`
    : `<div class="small muted" style="margin-top:8px">The flight recorder is switched by operators (destructive actions on).</div>`;
  crashPanel = `<h2>Latest crash</h2>${
    last
      ? `<a id="insp-crash-link" href="/crash/${encodeURIComponent(last.id)}"><b>${esc(last.exception || "exit")}</b></a> <span class="mono small">${esc(last.pid)}</span> ${esc(fmtDateTime(last.time))}
         <div class="small muted">${esc(last.reason || "")}</div>${list.length > 1 ? `<div class="small muted">${list.length} crash report(s) for this slot</div>` : ""}`
      : `<span class="muted">no crash recorded</span>`
  }${toggle}`;
  const el = document.getElementById("insp-crashes");
  if (!el) return;
  el.innerHTML = crashPanel;
  for (const on of [true, false]) {
    const b = document.getElementById(on ? "fr-on" : "fr-off");
    if (!b) continue;
    b.addEventListener("click", async () => {
      const subtree = document.getElementById("fr-subtree").checked;
      try {
        const res = await ctx.api.flightRecorder(ctx.node, ctx.pid, { on, subtree, size: 20 });
        flightNote = `${on ? "on" : "off"} for ${(res.result && res.result.pids ? res.result.pids.length : 0)} process(es)`;
      } catch (err) {
        flightNote = err.message;
      }
      document.getElementById("fr-result").textContent = flightNote;
      reload();
    });
  }
}

function recorderState() {
  const fr = ins.flight_recorder;
  if (fr === undefined) return "unknown";
  return fr ? `on (last ${fr.size}${fr.subtree ? ", subtree" : ""})` : "off";
}
