// Crashes: one row per signature (exception type + innermost frame of the
// process's own code), with a count, first and last seen; links to the latest report.
import { listOf } from "../api.js";
import { debounce, esc, fmtDateTime, fmtInt, rendered } from "../util.js";

let ctx = null;
let timer = null;

export function mount(root, context) {
  ctx = context;
  document.getElementById("cr-q").addEventListener("input", debounce(() => load(), 200));
  load();
  timer = setInterval(load, 5000);
}

async function load() {
  const q = document.getElementById("cr-q").value.trim();
  let groups;
  try {
    groups = listOf(await ctx.api.request("GET", "/api/crashes", { params: { q, limit: 500 } }), "groups");
  } catch (err) {
    document.getElementById("cr-rows").innerHTML = `<tr><td colspan="6" class="error-banner">${esc(err.message)}</td></tr>`;
    return;
  }
  document.getElementById("cr-count").textContent = `${fmtInt(groups.length)} signature(s), ${fmtInt(groups.reduce((n, g) => n + g.count, 0))} crash(es)`;
  document.getElementById("cr-rows").innerHTML = groups.length
    ? groups
        .map(
          (g) => `<tr data-group="${esc(g.id)}">
        <td><a href="/crash/${encodeURIComponent(g.latest ? g.latest.id : "")}"><b>${esc(g.exception || "exit")}</b></a> <span class="mono small">${esc(g.frame || g.signature)}</span></td>
        <td>${esc(g.node)}</td><td class="num">${fmtInt(g.count)}</td>
        <td class="mono">${esc(fmtDateTime(g.first_seen))}</td><td class="mono">${esc(fmtDateTime(g.last_seen))}</td>
        <td>${g.latest ? `<a class="mono" href="/crash/${encodeURIComponent(g.latest.id)}">${esc(g.latest.pid)}</a> ${esc(g.latest.name || "")}` : "–"}</td></tr>`,
        )
        .join("")
    : `<tr><td colspan="6" class="muted">No crash recorded.</td></tr>`;
  rendered("crashes", { count: groups.length });
}

export function update() {}

export function destroy() {
  if (timer) clearInterval(timer);
}
