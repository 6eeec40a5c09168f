// The cluster table on the overview: every node (health, link, processes, restart rate);
// operators add and remove nodes here (POST /api/nodes, DELETE /api/nodes/<name>; audited server-side).
// Starts from /api/cluster, then follows pushes: each node's batch stats and
// node_status, and the "cluster" feed (nodes added or removed), no timer.
import { ago, esc, fmtInt, fmtNum, nodePath, statusClass, throttle } from "../util.js";

let ctx = null;
let el = null;
let data = null;
let drawSoon = null;

export function mount(root, context) {
  ctx = context;
  el = root;
  drawSoon = throttle(() => data && draw(), 500);
  refresh();
}

async function refresh() {
  try {
    data = await ctx.api.cluster();
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
  const rows = (data.nodes || []).map(row).join("") || `<tr><td colspan="8" class="muted">No nodes attached.</td></tr>`;
  const head = `${fmtInt(t.up)} of ${fmtInt(t.nodes)} up · ${fmtInt(t.processes)} processes · ${fmtNum(t.restart_rate || 0, 2)} restarts/s`;
  const table = el.querySelector("#cluster-table");
  if (table && table.dataset.manage === String(!!data.can_manage)) {
    // redraw the rows only: the add-node form keeps what the operator is typing
    el.querySelector("h2 .small").textContent = head;
    table.tBodies[0].innerHTML = rows;
  } else {
    const form = data.can_manage
      ? `<form id="add-node" autocomplete="off" style="display:flex;gap:6px;align-items:center;margin-top:8px;flex-wrap:wrap">
        <input name="name" placeholder="name" required pattern="[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}" aria-label="node name">
        <input name="address" placeholder="host:port" required aria-label="agent address">
        <input name="token" type="password" placeholder="agent token (default: the server's)" aria-label="agent token">
        <label class="small"><input name="tls" type="checkbox"> TLS</label>
        <button type="submit">Attach</button><span id="add-node-result" class="small muted"></span></form>`
      : "";
    el.innerHTML = `<h2>Cluster <span class="small muted">${esc(head)}</span></h2>
    <table class="data" id="cluster-table" data-manage="${!!data.can_manage}"><thead><tr><th>node</th><th>status</th><th>agent</th><th>processes</th><th>restarts/s</th><th>crashes</th><th></th>${data.can_manage ? "<th></th>" : ""}</tr></thead>
    <tbody>${rows}</tbody></table>${form}`;
    el.querySelector("#cluster-table").addEventListener("click", (e) => {
      const b = e.target.closest("[data-remove]");
      if (b) removeNode(b.dataset.remove);
    });
    const f = el.querySelector("#add-node");
    if (f) f.addEventListener("submit", addNode);
  }
}

async function addNode(e) {
  e.preventDefault();
  const f = e.target;
  const out = f.querySelector("#add-node-result");
  const body = { name: f.name.value.trim(), address: f.address.value.trim(), tls: f.tls.checked };
  if (f.token.value) body.token = f.token.value;
  try {
    await ctx.api.addNode(body);
    location.reload(); // the page config and the live subscriptions list the new node
  } catch (err) {
    out.textContent = err.message;
  }
}

async function removeNode(name) {
  if (!window.confirm(`Detach ${name}? Its history stays in the store.`)) return;
  try {
    await ctx.api.removeNode(name);
    location.reload();
  } catch (err) {
    el.insertAdjacentHTML("afterbegin", `<div class="error-banner">${esc(err.message)}</div>`);
  }
}

/** The row's health from a node's batch stats (its model summary, as /api/cluster has it). */
function fromStats(node, st) {
  const n = data.nodes.find((r) => r.name === node);
  if (!n) return;
  for (const k of ["status", "process_count", "restart_rate", "message_rate", "restarts", "crashes", "last_seen", "down_since"]) {
    if (st[k] !== undefined) n[k] = st[k];
  }
  if (st.reason) n.reason = st.reason;
}

function totals() {
  const nodes = data.nodes;
  data.totals = {
    nodes: nodes.length,
    up: nodes.filter((n) => (ctx.state.nodeStatus[n.name] || n.status) === "up").length,
    processes: nodes.reduce((s, n) => s + (n.process_count || 0), 0),
    restart_rate: nodes.reduce((s, n) => s + (n.restart_rate || 0), 0),
  };
}

export function update(state, delta) {
  if (!data) return;
  if (delta.kind === "batch" && delta.stats) {
    fromStats(delta.node, delta.stats);
    if (delta.points && delta.points.restart_rate !== undefined) fromStats(delta.node, { restart_rate: delta.points.restart_rate });
  } else if (delta.kind === "node_status") {
    fromStats(delta.node, { status: delta.status });
  } else if (delta.kind === "feed" && delta.feed === "cluster") {
    const last = delta.items[delta.items.length - 1];
    if (last && Array.isArray(last.nodes)) data = { ...data, nodes: last.nodes, totals: last.totals };
    return draw();
  } else if (delta.kind === "connection" && delta.status === "live") {
    return refresh(); // reconnected: read the whole table again
  } else {
    return;
  }
  totals();
  drawSoon();
}

export function destroy() {}
