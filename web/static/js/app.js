// Wiring only: config -> state, api, socket; mount the page's view; header chrome.
import { createApi } from "./api.js";
import { connectLive } from "./socket.js";
import { applySocketEvent, createState, subscribe } from "./state.js";
import * as overview from "./views/overview.js";
import * as tree from "./views/tree.js";
import * as processes from "./views/processes.js";
import * as inspector from "./views/inspector.js";
import * as crashes from "./views/crashes.js";
import * as crash from "./views/crash.js";
import * as events from "./views/events.js";
import * as audit from "./views/audit.js";
import * as chaos from "./views/chaos.js";
import * as trace from "./views/trace.js";

// Each view module: mount(root, ctx), update(state, delta), destroy(), and
// optionally `feeds` (the /live feeds it follows: crashes, audit, chaos, cluster)
// and `followsNodes = false` (no node batches wanted).
const VIEWS = { overview, tree, processes, process: inspector, events, audit, crashes, crash, chaos, trace };

function readConfig() {
  try {
    return JSON.parse(document.getElementById("config").textContent || "{}") || {};
  } catch {
    return {};
  }
}

function nodeNames(config) {
  return (config.nodes || []).map((n) => (typeof n === "string" ? n : n.name)).filter(Boolean);
}

/** The pid of the inspector page, from /nodes/<node>/processes/<pid>. */
function pidFromPath() {
  const m = location.pathname.match(/^\/nodes\/[^/]+\/processes\/([^/]+)\/?$/);
  return m ? decodeURIComponent(m[1]) : null;
}

function nodeFromPath() {
  const m = location.pathname.match(/^\/nodes\/([^/]+)/);
  return m ? decodeURIComponent(m[1]) : null;
}

function wireHeader(state, page) {
  const node = state.node;
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.dataset.href) {
      if (node) a.href = a.dataset.href.replace("{node}", encodeURIComponent(node));
      else a.classList.add("hidden");
    }
    if (a.dataset.nav === page || (page === "process" && a.dataset.nav === "processes")) a.classList.add("active");
  }
  const sel = document.getElementById("node-select");
  const names = nodeNames(state.config);
  for (const n of names) sel.append(new Option(n, n, false, n === node));
  sel.closest("label").classList.toggle("hidden", names.length < 2);
  sel.addEventListener("change", () => {
    const next = sel.value;
    if (location.pathname.startsWith("/nodes/")) {
      const rest = page === "process" ? "/processes" : location.pathname.replace(/^\/nodes\/[^/]+/, "");
      location.assign(`/nodes/${encodeURIComponent(next)}${rest}`);
    } else {
      const u = new URL(location.href);
      u.searchParams.set("node", next);
      location.assign(u);
    }
  });
  const mode = document.getElementById("mode");
  if (state.config.allow_destructive) {
    mode.textContent = "destructive actions on";
    mode.classList.add("rw");
  }
  const conn = document.getElementById("conn");
  subscribe(state, (s, delta) => {
    if (delta.kind !== "connection" && delta.kind !== "batch") return;
    conn.className = "conn " + s.connection;
    conn.textContent = s.connection === "live" ? "live" : s.connection === "lost" ? "reconnecting" : "connecting";
  });
}

function main() {
  const config = readConfig();
  const page = document.body.dataset.page;
  const state = createState(config);
  const urlNode = nodeFromPath() || new URL(location.href).searchParams.get("node");
  if (urlNode) state.node = urlNode;
  const api = createApi(config);
  wireHeader(state, page);
  const view = VIEWS[page];
  if (!view) return;
  const root = document.getElementById("view");
  const pid = pidFromPath();
  const ctx = { state, api, config, node: state.node, pid, nodes: nodeNames(config) };
  view.mount(root, ctx);
  subscribe(state, (s, delta) => view.update(s, delta));
  const all = (page === "overview" || page === "events") && ctx.nodes.length ? ctx.nodes : [state.node];
  const subs = view.followsNodes === false ? [] : all;
  const live = connectLive(
    [
      ...subs.filter(Boolean).map((n) => ({ node: n, view: page, ...(pid ? { pid } : {}) })),
      ...(view.feeds || []).map((feed) => ({ feed })),
    ],
    (name, payload) => applySocketEvent(state, name, payload),
  );
  window.observer = { state, api, view, ctx, live };
  window.addEventListener("pagehide", () => {
    live.close();
    view.destroy();
  });
}

main();
