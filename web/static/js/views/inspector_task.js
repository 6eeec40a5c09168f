// The inspector's parts for an asyncio node (node_kind "asyncio"): a task's
// info (coroutine, state, where it was created, what it waits on) and its one
// action, cancel -- the asyncio kill, gated and audited like kill, previewed
// with what structured concurrency will do (the agent's `cancel_preview`).
import { esc, fmtBytes, fmtDateTime, fmtInt, processHref } from "../util.js";

/** Kinds of records an asyncio node sends (see docs/asyncio.md). */
export const ASYNC_KINDS = new Set(["task", "taskgroup", "gather", "timeout", "loop", "callback", "logged"]);

export function isAsync(proc) {
  return !!proc && ASYNC_KINDS.has(proc.kind);
}

function waitsOn(w, node) {
  if (!w) return `<span class="muted">–</span>`;
  if (w.kind === "task" && w.pid) return `task <a href="${processHref(node, w.pid)}" class="mono">${esc(w.pid)}</a> ${esc(w.name || "")}`;
  const bits = [esc(w.kind)];
  if (w.delay !== undefined) bits.push(`${esc(w.delay)} s`);
  if (w.object) bits.push(`<span class="mono small">${esc(w.object)}</span>`);
  if (w.type) bits.push(`<span class="mono small">${esc(w.type)}</span>`);
  return bits.join(" ");
}

function left(s) {
  return s === null || s === undefined ? "no deadline" : s > 0 ? `${Number(s).toFixed(1)} s left` : "due";
}

/** An asyncio.timeout() scope: its deadline, time left, state and task. */
function timeoutRows(p, ins, node) {
  return `
    <dt>deadline</dt><dd>${ins.deadline ? fmtDateTime(ins.deadline) : "none"} <span class="muted">(${esc(left(ins.remaining_s))}, as the agent answered)</span></dd>
    <dt>state</dt><dd>${esc(ins.timeout_state || "–")}</dd>
    <dt>task</dt><dd>${ins.task ? `<a href="${processHref(node, ins.task)}" class="mono">${esc(ins.task)}</a>` : "–"}</dd>
    <dt>started</dt><dd>${fmtDateTime(p.started_at)} <span class="muted">(first seen)</span></dd>
    <dt>holds</dt><dd>${(ins.children || []).map((c) => `<a href="${processHref(node, c)}" class="mono">${esc(c)}</a>`).join(" ") || "–"}</dd>`;
}

/** The Info panel's rows for a task, a scope or the loop. */
export function infoRows(p, ins, node) {
  if (p.kind === "timeout") return timeoutRows(p, ins, node);
  const get = (k) => (ins[k] !== undefined ? ins[k] : p[k]);
  const scope = get("scope");
  const tmos = ins.timeouts || [];
  return `
    <dt>coroutine</dt><dd class="mono">${esc(get("coro") || p.label || "–")}</dd>
    <dt>state</dt><dd>${esc(get("task_state") || p.kind)}${get("cancelling") ? ` · cancel requested ${fmtInt(get("cancelling"))}×` : ""}</dd>
    <dt>created at</dt><dd class="mono small">${esc(get("created_at") || "unknown")} ${get("origin") ? `<span class="muted">(${esc(get("origin"))})</span>` : ""}</dd>
    <dt>started</dt><dd>${fmtDateTime(p.started_at)}</dd>
    <dt>waits on</dt><dd>${waitsOn(get("waits_on"), node)}</dd>
    <dt>steps seen</dt><dd>${fmtInt(get("handled"))}</dd>
    <dt>memory</dt><dd>${fmtBytes(get("memory"))}</dd>
    <dt>scope</dt><dd>${scope ? `${esc(scope.kind)} <a href="${processHref(node, scope.pid)}" class="mono">${esc(scope.pid)}</a>` : "–"}</dd>
    ${tmos.length ? `<dt>timeouts</dt><dd>${tmos.map((t) => `<a href="${processHref(node, t.pid)}" class="mono">${esc(t.pid)}</a> ${esc(left(t.remaining_s))}`).join(" · ")}</dd>` : ""}
    <dt>parent</dt><dd>${p.parent ? `<a href="${processHref(node, p.parent)}" class="mono">${esc(p.parent)}</a>` : "–"}</dd>`;
}

/** The Actions panel: cancel, for tasks only. */
export function actionsPanel(p, allow) {
  if (p.kind !== "task") return "";
  if (!allow) return `<section class="panel full muted small">Read-only: cancel is off (start the observer with <code>--allow-destructive-actions</code>).</section>`;
  return `<section class="panel full"><h2>Actions</h2>
    <div class="actions">
      <input id="cancel-reason" value="cancelled by an operator" aria-label="cancel message" style="width:220px">
      <button id="act-cancel" class="danger" type="button">Cancel task…</button>
      <span id="act-result" class="muted"></span>
    </div></section>`;
}

/** Wire the cancel button: `ask(title, html, ok)` and `run(fn, what)` are the inspector's. */
export function wireCancel(ctx, proc, ins, { ask, run }) {
  const btn = document.getElementById("act-cancel");
  if (!btn) return;
  if (!new Set(ctx.config.actions || []).has("kill")) {
    btn.classList.add("hidden");
    document.getElementById("cancel-reason").classList.add("hidden");
    return;
  }
  btn.addEventListener("click", async () => {
    const reason = document.getElementById("cancel-reason").value.trim() || "cancelled by an operator";
    const lines = ins.cancel_preview || [];
    const body = `<div class="preview">${lines.map((l) => `<div>${esc(l)}</div>`).join("") || "<div>The task gets CancelledError where it waits.</div>"}</div>`;
    if (await ask(`Cancel ${proc.name || proc.label || ctx.pid}?`, body, "Cancel task")) {
      await run(() => ctx.api.cancel(ctx.node, ctx.pid, reason), "cancel");
    }
  });
}
