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
  exportLinks();
  load();
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
  } else if (delta.kind === "connection" && delta.status === "live" && loaded) {
    load(); // reconnected: rows pushed meanwhile are lost, the log is not
  }
}

export function destroy() {}
