// The audit log: every operator action and every refused attempt, newest first; CSV/JSON export links.
import { listOf } from "../api.js";
import { esc, fmtDateTime, rendered } from "../util.js";

let ctx = null;
let rows = [];
let timer = null;

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
  timer = setInterval(load, 5000);
}

function exportLinks() {
  const node = document.getElementById("audit-node").value;
  for (const fmt of ["csv", "json"]) {
    const q = new URLSearchParams({ format: fmt });
    if (node) q.set("node", node);
    document.getElementById("audit-" + fmt).href = "/api/audit/export?" + q;
  }
}

async function load() {
  const node = document.getElementById("audit-node").value;
  try {
    const data = await ctx.api.request("GET", "/api/audit", { params: { limit: 1000, node } });
    rows = listOf(data, "audit");
  } catch (err) {
    document.getElementById("audit-count").textContent = "Cannot load the audit log: " + err.message;
    return;
  }
  draw();
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

export function update() {}

export function destroy() {
  clearInterval(timer);
}
