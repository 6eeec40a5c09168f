// The cluster table on the overview: every node (health, link, processes, restart rate);
// operators add and remove nodes here (POST /api/nodes, DELETE /api/nodes/<name>; audited server-side).
import { ago, esc, fmtInt, fmtNum, nodePath, statusClass, throttle } from "../util.js";

let ctx = null;
let el = null;
let timer = null;
let data = null;
let refreshSoon = null;

export function mount(root, context) {
  ctx = context;
  el = root;
  refreshSoon = throttle(refresh, 500);
  refresh();
  timer = setInterval(refresh, 3000);
}

async function refresh() {
  try {
    data = await ctx.api.request("GET", "/api/cluster");
  } catch (err) {
    el.innerHTML = `<div class="error-banner">Cannot load the cluster: ${esc(err.message)}</div>`;
    return;
  }
  draw();
}

function row(n) {
  const status = ctx.state.nodeStatus[n.name] || n.status;
  const remove = data.can_manage
    ? `<td><button type="button" class="danger small" data-remove="${esc(n.name)}">Remove</button></td>`
    : "";
  const why = status === "up" ? "" : n.reason ? esc(n.reason) : "";
  return `<tr data-node="${esc(n.name)}" data-status="${esc(status)}" class="${status === "up" ? "" : "muted"}">
    <td><a href="${nodePath(n.name, "/tree")}">${esc(n.name)}</a></td>
    <td><span class="pill ${statusClass(status)}">${esc(status)}</span></td>
    <td class="mono">${esc(n.direction === "dial-in" ? "⇠ " : "")}${esc(n.address)}${n.tls ? " 🔒" : ""}</td>
    <td class="num">${fmtInt(n.process_count)}</td>
    <td class="num">${n.restart_rate == null ? "–" : fmtNum(n.restart_rate, 2)}</td>
    <td class="num">${fmtInt(n.crashes ?? 0)}</td>
    <td class="small">${status === "up" ? "since " + ago(n.last_seen) : why}</td>${remove}</tr>`;
}

function draw() {
  const t = data.totals || {};
  const rows = (data.nodes || []).map(row).join("");
  const form = data.can_manage
    ? `<form id="add-node" autocomplete="off" style="display:flex;gap:6px;align-items:center;margin-top:8px;flex-wrap:wrap">
        <input name="name" placeholder="name" required pattern="[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}" aria-label="node name">
        <input name="address" placeholder="host:port" required aria-label="agent address">
        <input name="token" type="password" placeholder="agent token (default: the server's)" aria-label="agent token">
        <label class="small"><input name="tls" type="checkbox"> TLS</label>
        <button type="submit">Attach</button><span id="add-node-result" class="small muted"></span></form>`
    : "";
  el.innerHTML = `<h2>Cluster <span class="small muted">${fmtInt(t.up)} of ${fmtInt(t.nodes)} up · ${fmtInt(t.processes)} processes · ${fmtNum(t.restart_rate || 0, 2)} restarts/s</span></h2>
    <table class="data" id="cluster-table"><thead><tr><th>node</th><th>status</th><th>agent</th><th>processes</th><th>restarts/s</th><th>crashes</th><th></th>${data.can_manage ? "<th></th>" : ""}</tr></thead>
    <tbody>${rows || `<tr><td colspan="8" class="muted">No nodes attached.</td></tr>`}</tbody></table>${form}`;
  for (const b of el.querySelectorAll("[data-remove]")) b.addEventListener("click", () => removeNode(b.dataset.remove));
  const f = el.querySelector("#add-node");
  if (f) f.addEventListener("submit", addNode);
}

async function addNode(e) {
  e.preventDefault();
  const f = e.target;
  const out = f.querySelector("#add-node-result");
  const body = { name: f.name.value.trim(), address: f.address.value.trim(), tls: f.tls.checked };
  if (f.token.value) body.token = f.token.value;
  try {
    await ctx.api.request("POST", "/api/nodes", { body });
    location.reload(); // the page config and the live subscriptions list the new node
  } catch (err) {
    out.textContent = err.message;
  }
}

async function removeNode(name) {
  if (!window.confirm(`Detach ${name}? Its history stays in the store.`)) return;
  try {
    await ctx.api.request("DELETE", `/api/nodes/${encodeURIComponent(name)}`);
    location.reload();
  } catch (err) {
    el.insertAdjacentHTML("afterbegin", `<div class="error-banner">${esc(err.message)}</div>`);
  }
}

export function update(state, delta) {
  if (delta.kind === "node_status" && data) {
    draw();
    refreshSoon();
  }
}

export function destroy() {
  clearInterval(timer);
}
