// Crashes: one row per signature (exception type + innermost frame of the
// process's own code), with a count, first and last seen; links to the latest report.
// Starts from /api/crashes, then follows the "crashes" feed: each new stored
// report refetches the groups (at most twice a second), no timer.
import { debounce, esc, fmtDateTime, fmtInt, rendered, throttle } from "../util.js";

export const feeds = ["crashes"];
export const followsNodes = false;

let ctx = null;
let refresh = null;
let pushed = 0; // crash reports pushed since the page loaded

export function mount(root, context) {
  ctx = context;
  document.getElementById("cr-q").addEventListener("input", debounce(() => load(), 200));
  refresh = throttle(() => load(), 500);
  load();
}

async function load() {
  const q = document.getElementById("cr-q").value.trim();
  let groups;
  try {
    groups = (await ctx.api.crashes({ q, limit: 500 })).groups;
  } catch (err) {
    document.getElementById("cr-rows").innerHTML = `<tr><td colspan="6" class="error-banner">${esc(err.message)}</td></tr>`;
    return;
  }
  document.getElementById("cr-count").textContent = `${fmtInt(groups.length)} signature(s), ${fmtInt(groups.reduce((n, g) => n + g.count, 0))} crash(es)`;
  document.getElementById("cr-rows").innerHTML = groups.length
    ? groups
        .map(
          (g) => `<tr data-group="${esc(g.id)}" data-signature="${esc(g.signature)}">
        <td><a href="/crash/${encodeURIComponent(g.latest ? g.latest.id : "")}"><b>${esc(g.exception || "exit")}</b></a> <span class="mono small">${esc(g.frame || g.signature)}</span></td>
        <td>${esc(g.node)}</td><td class="num">${fmtInt(g.count)}</td>
        <td class="mono">${esc(fmtDateTime(g.first_seen))}</td><td class="mono">${esc(fmtDateTime(g.last_seen))}</td>
        <td>${g.latest ? `<a class="mono" href="/crash/${encodeURIComponent(g.latest.id)}">${esc(g.latest.pid)}</a> ${esc(g.latest.name || "")}` : "–"}</td></tr>`,
        )
        .join("")
    : `<tr><td colspan="6" class="muted">No crash recorded.</td></tr>`;
  rendered("crashes", { count: groups.length, pushed });
}

export function update(state, delta) {
  if (delta.kind === "feed" && delta.feed === "crashes") {
    pushed += delta.items.length;
    refresh();
  } else if (delta.kind === "connection" && delta.status === "live") {
    refresh(); // reconnected: what was pushed meanwhile is lost, the list is not
  }
}

export function destroy() {}
