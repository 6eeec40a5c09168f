// The audit log: every operator action and every refused attempt, newest first; CSV/JSON export links.
// Starts from /api/audit, then follows the "audit" feed: new rows are added and
// results filled in as the server writes them, no timer.
import { esc, fmtDateTime, rendered } from "../util.js";

export const feeds = ["audit"];
export const followsNodes = false;

const CAP = 1000;
let ctx = null;
let rows = [];
let loaded = false;
let early = []; // pushes that arrived before the first load answered

export function mount(root, context) {
  ctx = context;
  const sel = document.getElementById("audit-node");
  for (const n of ctx.nodes) sel.append(new Option(n, n));
  sel.addEventListener("change", () => {
    exportLinks();
    load();
  });
  document.getElementById("audit-refused").addEventListener("change", draw);
  document.getElementById("sessions-table").addEventListener("click", onSessionClick);
  exportLinks();
  load();
  loadSessions();
}

// -- login sessions (server-side; observer/sessions.py) --------------------------------------------

let sessions = [];
let operator = false;

async function loadSessions() {
  const count = document.getElementById("sessions-count");
  try {
    ({ sessions, operator } = await ctx.api.sessions());
  } catch (err) {
    count.textContent = "Cannot load the sessions: " + err.message;
    return;
  }
  drawSessions();
}

function sessionButtons(s) {
  if (s.status !== "live") return "";
  const out = [];
  if (s.current || operator) out.push(`<button type="button" data-revoke="${esc(s.id)}">${s.current ? "log out" : "end"}</button>`);
  if (operator) out.push(`<button type="button" data-revoke-token="${esc(s.id)}" title="end every session logged in with this token">end all of this token</button>`);
  return out.join(" ");
}

function drawSessions() {
  const live = sessions.filter((s) => s.status === "live").length;
  document.getElementById("sessions-count").textContent = `${live} live of ${sessions.length} recent sessions`;
  document.querySelector("#sessions-table tbody").innerHTML = sessions
    .map(
      (s) => `<tr data-session="${esc(s.id)}" data-status="${esc(s.status)}"${s.current ? ' class="current"' : ""}>
        <td>${esc(s.who)}${s.current ? " <span class=\"muted\">(you)</span>" : ""}</td><td>${esc(s.role)}</td>
        <td class="mono">${esc(s.from_addr || "")}</td><td>${fmtDateTime(s.created)}</td><td>${fmtDateTime(s.last_seen)}</td>
        <td>${s.status === "live" ? fmtDateTime(s.expires) : ""}</td>
        <td>${s.status === "revoked" ? `revoked by ${esc(s.revoked_by || "")}` : esc(s.status)}</td><td>${sessionButtons(s)}</td></tr>`,
    )
    .join("") || `<tr><td colspan="8" class="muted">No session.</td></tr>`;
}

async function onSessionClick(ev) {
  const btn = ev.target.closest("button");
  if (!btn) return;
  try {
    if (btn.dataset.revoke) await ctx.api.revokeSession(btn.dataset.revoke);
    else if (btn.dataset.revokeToken) await ctx.api.revokeToken(btn.dataset.revokeToken);
  } catch (err) {
    document.getElementById("sessions-count").textContent = "Refused: " + err.message;
    return;
  }
  loadSessions();
}

function exportLinks() {
  const node = document.getElementById("audit-node").value;
  for (const fmt of ["csv", "json"]) document.getElementById("audit-" + fmt).href = ctx.api.auditExportUrl(fmt, node);
}

async function load() {
  const node = document.getElementById("audit-node").value;
  try {
    rows = (await ctx.api.audit({ limit: CAP, node })).audit;
  } catch (err) {
    document.getElementById("audit-count").textContent = "Cannot load the audit log: " + err.message;
    return;
  }
  loaded = true;
  const pending = early;
  early = [];
  apply(pending);
  draw();
}

/** Feed items ({kind: "audit" | "audit_result", row}) onto the rows. */
function apply(items) {
  const node = document.getElementById("audit-node").value;
  for (const { kind, row } of items) {
    if (!row) continue;
    const have = rows.find((r) => r.id === row.id);
    if (kind === "audit_result") {
      if (have) Object.assign(have, { ok: row.ok, result: row.result, done_time: row.done_time });
    } else if (!have && (!node || row.node === node)) {
      rows.unshift(row);
    }
  }
  rows.sort((a, b) => b.id - a.id);
  if (rows.length > CAP) rows.length = CAP;
}

function outcome(r) {
  if (r.ok === null || r.ok === undefined) return `<span class="pill">pending</span>`;
  return r.ok ? `<span class="pill st-up">ok</span>` : `<span class="pill st-down">refused / failed</span>`;
}

function detail(r) {
  const res = r.result || {};
  if (!r.ok && res.message) return esc(res.message);
  const args = r.args && Object.keys(r.args).length ? JSON.stringify(r.args) : "";
  return esc(args.length > 160 ? args.slice(0, 160) + "…" : args);
}

function draw() {
  const refusedOnly = document.getElementById("audit-refused").checked;
  const shown = refusedOnly ? rows.filter((r) => r.ok === 0 || r.ok === false) : rows;
  document.getElementById("audit-count").textContent = `${shown.length} of ${rows.length} rows`;
  document.querySelector("#audit-table tbody").innerHTML = shown
    .map(
      (r) => `<tr data-id="${esc(r.id)}" data-action="${esc(r.action)}" data-ok="${esc(r.ok)}">
        <td>${fmtDateTime(r.time)}</td><td>${esc(r.who || "")}</td><td class="mono">${esc(r.from_addr || "")}</td>
        <td>${esc(r.node || "")}</td><td><b>${esc(r.action)}</b></td><td class="mono">${esc(r.target || "")}</td>
        <td>${outcome(r)}</td><td class="small">${detail(r)}</td></tr>`,
    )
    .join("") || `<tr><td colspan="8" class="muted">Nothing audited${refusedOnly ? " was refused" : " yet"}: operator actions, node changes and every refused attempt show up here.</td></tr>`;
  rendered("audit", { rows: shown.length });
}

export function update(state, delta) {
  if (delta.kind === "feed" && delta.feed === "audit") {
    if (delta.truncated) return load(); // more than a push carries: read the log again
    if (!loaded) {
      early.push(...delta.items);
      return;
    }
    apply(delta.items);
    draw();
    if (delta.items.some((i) => i.row && String(i.row.action || "").startsWith("session_"))) loadSessions();
  } else if (delta.kind === "connection" && delta.status === "live" && loaded) {
    load(); // reconnected: rows pushed meanwhile are lost, the log is not
  }
}

export function destroy() {}
