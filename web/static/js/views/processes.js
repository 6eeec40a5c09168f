// Process table: server-side sort, filter and paging (one page of rows at a time).
import { debounce, esc, fmtBytes, fmtInt, fmtNum, fmtSecs, processHref, rendered, statusClass, throttle } from "../util.js";

const LIMIT = 100;
const NUMERIC = new Set(["mailbox", "rate", "handler_time", "memory", "restarts"]);
let ctx = null;
let q = { sort: "mailbox", desc: 1, q: "", supervisor: "", status: "", offset: 0 };
let total = 0;
let seq = 0;
let live = true;
let liveRefresh = null;
let userLoad = 0; // seq of a sort/filter/page load in flight: live refreshes wait for it

export function mount(root, context) {
  ctx = context;
  const url = new URL(location.href);
  for (const k of ["sort", "q", "supervisor", "status"]) if (url.searchParams.get(k)) q[k] = url.searchParams.get(k);
  if (url.searchParams.get("desc") !== null) q.desc = Number(url.searchParams.get("desc")) ? 1 : 0;
  document.getElementById("p-q").value = q.q;
  document.getElementById("p-sup").value = q.supervisor;
  document.getElementById("p-status").value = q.status;
  for (const th of document.querySelectorAll("#p-table th[data-sort]")) {
    th.addEventListener("click", () => {
      const s = th.dataset.sort;
      if (q.sort === s) q.desc = q.desc ? 0 : 1;
      else {
        q.sort = s;
        q.desc = NUMERIC.has(s) ? 1 : 0;
      }
      q.offset = 0;
      load("sort");
    });
  }
  const refilter = debounce(() => {
    q.q = document.getElementById("p-q").value.trim();
    q.supervisor = document.getElementById("p-sup").value.trim();
    q.status = document.getElementById("p-status").value;
    q.offset = 0;
    load("filter");
  }, 200);
  for (const id of ["p-q", "p-sup"]) document.getElementById(id).addEventListener("input", refilter);
  document.getElementById("p-status").addEventListener("change", refilter);
  document.getElementById("p-live").addEventListener("change", (e) => (live = e.target.checked));
  document.getElementById("p-prev").addEventListener("click", () => {
    q.offset = Math.max(0, q.offset - LIMIT);
    load("page");
  });
  document.getElementById("p-next").addEventListener("click", () => {
    if (q.offset + LIMIT < total) {
      q.offset += LIMIT;
      load("page");
    }
  });
  document.getElementById("p-rows").addEventListener("click", (e) => {
    if (e.target.closest("a")) return;
    const tr = e.target.closest("tr[data-pid]");
    if (tr) location.assign(processHref(ctx.node, tr.dataset.pid));
  });
  liveRefresh = throttle(() => load("live"), 1000);
  load("first");
}

async function load(reason) {
  if (reason === "live" && userLoad) return; // never supersede what the operator just asked for
  const mine = ++seq;
  if (reason !== "live") userLoad = mine;
  const t0 = performance.now();
  const params = { sort: q.sort, desc: q.desc, q: q.q, supervisor: q.supervisor, status: q.status, offset: q.offset, limit: LIMIT };
  let data;
  try {
    data = await ctx.api.processes(ctx.node, params);
  } catch (err) {
    if (mine === seq) {
      userLoad = 0;
      document.getElementById("p-rows").innerHTML = `<tr><td colspan="10" class="error-banner">${esc(err.message)}</td></tr>`;
    }
    return;
  }
  if (mine !== seq) return; // a newer request superseded this one
  userLoad = 0;
  total = data.total || 0;
  draw(data.rows || []);
  if (reason !== "live") {
    const u = new URL(location.href);
    for (const [k, v] of Object.entries({ sort: q.sort, desc: q.desc, q: q.q, supervisor: q.supervisor, status: q.status })) {
      if (v === "" || v === null) u.searchParams.delete(k);
      else u.searchParams.set(k, v);
    }
    history.replaceState(null, "", u);
  }
  rendered("processes", { reason, sort: q.sort, desc: q.desc, total, rows: (data.rows || []).length, ms: performance.now() - t0 });
}

function cell(v, cls = "num") {
  return `<td class="${cls}">${v}</td>`;
}

function draw(rows) {
  for (const th of document.querySelectorAll("#p-table th[data-sort]")) {
    th.classList.toggle("sorted", th.dataset.sort === q.sort);
    th.classList.toggle("asc", th.dataset.sort === q.sort && !q.desc);
  }
  const node = ctx.node;
  document.getElementById("p-rows").innerHTML = rows.length
    ? rows
        .map((r) => {
          const mb = r.mailbox || 0;
          const mbCls = mb > 1000 ? "num crit" : mb > 50 ? "num hot" : "num";
          const name = r.name ? `<b>${esc(r.name)}</b> <span class="muted">${esc(r.label || "")}</span>` : esc(r.label || "");
          const sup = r.supervisor ? `<a class="mono" href="${processHref(node, r.supervisor)}">${esc(r.supervisor)}</a>` : "";
          return `<tr data-pid="${esc(r.pid)}">
            <td class="mono"><a href="${processHref(node, r.pid)}">${esc(r.pid)}</a></td>
            <td>${name}</td>
            <td class="muted">${esc(r.kind || "")}</td>
            <td><span class="pill ${statusClass(r.status)}">${esc(r.status || "")}</span></td>
            <td>${sup}</td>
            ${cell(fmtInt(mb), mbCls)}
            ${cell(fmtNum(r.rate))}
            ${cell(fmtSecs(r.handler_time))}
            ${cell(fmtBytes(r.memory))}
            ${cell(fmtInt(r.restarts), r.restarts ? "num hot" : "num")}
          </tr>`;
        })
        .join("")
    : `<tr><td colspan="10" class="muted">No process matches.</td></tr>`;
  const end = Math.min(total, q.offset + rows.length);
  document.getElementById("p-total").textContent = `${fmtInt(total)} processes`;
  document.getElementById("p-range").textContent = total ? `${fmtInt(q.offset + 1)}–${fmtInt(end)} of ${fmtInt(total)}` : "0 of 0";
  document.getElementById("p-prev").disabled = q.offset <= 0;
  document.getElementById("p-next").disabled = q.offset + LIMIT >= total;
}

export function update(state, delta) {
  if (!live || delta.kind !== "batch" || delta.node !== ctx.node) return;
  liveRefresh();
}

export function destroy() {
  seq++;
}
