// Supervision tree: live, searchable, collapsible; groups of identical children
// expand on click; links and monitors drawn on hover when toggled on.
import { LIFECYCLE } from "../state.js";
import { TreeGraph } from "../treegraph.js";
import { debounce, esc, fmtInt, processHref, rendered } from "../util.js";
import { chaosKills } from "./chaos_flash.js";

export const feeds = ["chaos"]; // experiments' kills flash on the tree

let ctx = null;
let graph = null;
let expanded = new Set();
let inflight = false;
let pending = false;
let lastFetch = 0;
let pendingFlash = [];
let budgets = new Map();
let budgetsAt = -Infinity;
let linksOn = false;
let picked = null; // the pid picked in the search (the Trace… link traces it)
let hoverTimer = null;
let sampleTimer = null;
let focusAfterLoad = null;
let applied = []; // restarts patched in place while a fetch was in flight: re-applied on its (older) answer
let drawnLifecycle = 0; // lifecycle changes received before the fetch behind the current drawing
// On a big tree (2,000+ processes) the server sends the supervisors whose 20+ children are all
// leaves folded (a count, no children): the first screen shows the shape, and a 100,000-process
// node is ~1,000 items, not 20 MB. A folded supervisor's pid in `expanded` asks for its children.
// ?expand=all (or "expand all"): nothing folded.
const FOLD = 20;
let unfoldAll = false;
const unfolded = new Set(); // supervisors sent folded that the operator opened (sent to the server with `expanded`)

export function mount(root, context) {
  ctx = context;
  graph = new TreeGraph(document.getElementById("tree"), {
    hrefFor: (pid) => processHref(ctx.node, pid),
    onGroup: (it) => {
      if (!it) return;
      expanded.add(it.d.key);
      drawGroupChips();
      refetch("expand");
    },
    onUnfold: (it) => {
      unfolded.add(it.d.pid);
      refetch("unfold");
    },
    onHover: (it) => hover(it),
    budgets,
  });
  unfoldAll = new URL(location.href).searchParams.get("expand") === "all";
  document.getElementById("tree-collapse-all").addEventListener("click", () => graph.collapseAll());
  document.getElementById("tree-expand-all").addEventListener("click", () => {
    graph.expandAll();
    if (!unfoldAll && graph.stats().folded.length) {
      unfoldAll = true;
      refetch("expand_all");
    }
  });
  const links = document.getElementById("tree-links");
  links.addEventListener("change", () => {
    linksOn = links.checked;
    if (!linksOn) graph.clearRelations();
  });
  wireSearch();
  // the trace page, for the process picked in the search (else the search text as a pattern)
  document.getElementById("tree-trace").addEventListener("click", (e) => {
    e.preventDefault();
    const q = document.getElementById("tree-search").value.trim();
    const sel = picked ? `?pids=${encodeURIComponent(picked)}` : q ? `?pids=${encodeURIComponent(q)}` : "";
    location.assign(`/nodes/${encodeURIComponent(ctx.node)}/trace${sel}`);
  });
  // /nodes/<node>/tree?path=<root>,...,<pid> (from a crash report): highlight that path
  const hl = (new URL(location.href).searchParams.get("path") || "").split(",").filter(Boolean);
  if (hl.length) focusAfterLoad = { pid: hl[hl.length - 1], path: hl };
  refetch("first");
}

/** Fetch the tree now, or once more right after the fetch in flight. */
async function refetch(reason) {
  if (inflight) {
    pending = true;
    return;
  }
  inflight = true;
  lastFetch = performance.now();
  const covered = ctx.state.lifecycle[ctx.node] || 0;
  const coveredHeld = [...heldSpawns, ...heldExits];
  applied = [];
  try {
    const data = await ctx.api.tree(ctx.node, { expanded: [...expanded, ...unfolded], fold: unfoldAll ? 0 : FOLD });
    const tree = data.tree || data;
    if (pendingFlash.length) {
      graph.flashIds(resolveFlash(tree, pendingFlash));
      pendingFlash = [];
    }
    graph.setTree(tree);
    let replayed = false;
    for (const { old, ...fields } of applied) {
      if (graph.all.has(old) && !graph.all.has(fields.id)) replayed = graph.replace(old, fields) || replayed;
    }
    if (replayed) graph.renderNow();
    drawnLifecycle = Math.max(drawnLifecycle, covered);
    if (dirtySince !== null && covered >= dirtySince) dirtySince = null;
    for (const p of coveredHeld) {
      heldSpawns.delete(p);
      heldExits.delete(p);
    }
    const st = graph.stats();
    document.getElementById("tree-count").textContent =
      `${fmtInt(st.processes)} processes · ${fmtInt(st.items - 1)} drawn items${st.groups.length ? ` · ${st.groups.length} groups` : ""}` +
      (st.folded.length ? ` · ${fmtInt(st.folded.length)} supervisors folded` : "");
    document.getElementById("tree").dataset.processCount = String(st.processes);
    rendered("tree", { reason, processes: st.processes, items: st.items });
    if (focusAfterLoad) {
      const f = focusAfterLoad;
      focusAfterLoad = null;
      // inside a folded supervisor: ask for its children, then focus
      if (!graph.focus(f.pid, f.path) && unfoldPath(f.path)) {
        focusAfterLoad = f;
        pending = true;
      }
    }
    loadBudgets(tree);
  } catch (err) {
    showError(err);
  } finally {
    inflight = false;
    if (pending) {
      pending = false;
      setTimeout(() => refetch("pending"), Math.max(0, 120 - (performance.now() - lastFetch)));
    }
  }
}

/** Unfold the folded supervisors on `path` (root first) at the next fetch; true if there was one. */
function unfoldPath(path) {
  let added = false;
  for (const p of path) {
    const d = graph.all.get(p);
    if (d && d.folded && !(d.children || []).length && !unfolded.has(p)) {
      unfolded.add(p);
      added = true;
    }
  }
  return added;
}

function showError(err) {
  const el = document.getElementById("tree-count");
  el.innerHTML = `<span style="color:var(--bad)">tree unavailable: ${esc(err.message)}</span>`;
}

/** Ids to flash for restarted pids: the pid itself, or the group or folded supervisor it is in. */
function resolveFlash(tree, items) {
  const ids = new Set();
  const pids = new Map();
  const groupsBySup = new Map();
  const walk = (d) => {
    if (d.group) {
      if (!groupsBySup.has(d.supervisor)) groupsBySup.set(d.supervisor, []);
      groupsBySup.get(d.supervisor).push(d.id);
    } else if (!d.node) pids.set(d.pid, d);
    for (const k of d.children || []) walk(k);
  };
  walk(tree);
  for (const { pid, sup } of items) {
    if (pid && pids.has(pid)) ids.add(pid);
    else if (sup && pids.has(sup) && pids.get(sup).folded && !(pids.get(sup).children || []).length) ids.add(sup);
    else for (const g of groupsBySup.get(sup) || []) ids.add(g);
  }
  return [...ids];
}

/** Restart budgets: from the tree when the server includes them, else from each supervisor's record. */
async function loadBudgets(tree, force = false) {
  const sups = [];
  const walk = (d) => {
    if (d.kind === "supervisor") sups.push(d);
    for (const k of d.children || []) walk(k);
  };
  walk(tree);
  if (!sups.length || sups.some((s) => s.budget || s.budget_now)) return;
  if (!force && performance.now() - budgetsAt < 5000) return;
  budgetsAt = performance.now();
  const results = await Promise.allSettled(sups.slice(0, 60).map((s) => ctx.api.process(ctx.node, s.pid)));
  results.forEach((r, i) => {
    if (r.status !== "fulfilled" || !r.value) return;
    const v = r.value.process || r.value;
    const b = v.budget_now || v.budget || (r.value.inspect && r.value.inspect.budget);
    if (b) budgets.set(sups[i].pid, b);
  });
  if (!graph) return;
  graph.layout();
  graph.renderNow();
}

function hover(it) {
  if (!linksOn) return;
  clearTimeout(hoverTimer);
  if (!it || !it.d.pid) return;
  hoverTimer = setTimeout(async () => {
    try {
      const r = await ctx.api.links(ctx.node, it.d.pid);
      const other = (pair) => (pair[0] === it.d.pid ? pair[1] : pair[0]);
      const links = (r.links || []).map((p) => (Array.isArray(p) ? other(p) : p));
      const mons = (r.monitors || []).map((p) => (Array.isArray(p) ? other(p) : p));
      graph.showRelations(it.d.pid, links, mons);
      document.getElementById("tree-count").textContent =
        `${it.d.name || it.d.label || it.d.pid}: ${links.length} link(s), ${mons.length} monitor(s)`;
    } catch {
      /* process gone */
    }
  }, 120);
}

function drawGroupChips() {
  const el = document.getElementById("tree-groups");
  el.innerHTML = [...expanded].map((k) => `<span class="chip">${esc(k.split("/").slice(1).join("/"))} expanded<button data-key="${esc(k)}" title="fold the group again">×</button></span>`).join(" ");
  el.querySelectorAll("button").forEach((b) =>
    b.addEventListener("click", () => {
      expanded.delete(b.dataset.key);
      drawGroupChips();
      refetch("fold");
    }),
  );
}

function wireSearch() {
  const input = document.getElementById("tree-search");
  const list = document.getElementById("tree-search-results");
  let results = [];
  const run = debounce(async () => {
    const q = input.value.trim();
    if (!q) {
      list.classList.add("hidden");
      graph.clearFocus();
      return;
    }
    try {
      const data = await ctx.api.search(ctx.node, q);
      results = Array.isArray(data) ? data : data.matches || data.results || [];
    } catch {
      results = [];
    }
    list.innerHTML = results.length
      ? results
          .map((r, i) => `<li data-i="${i}"><b>${esc(r.name || r.label || r.pid)}</b> <span class="mono">${esc(r.pid)}</span><div class="path">${esc((r.path || []).join(" › "))}</div></li>`)
          .join("")
      : `<li class="muted">no match</li>`;
    list.classList.remove("hidden");
  }, 180);
  input.addEventListener("input", run);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && results.length) pick(results[0]);
    if (e.key === "Escape") {
      input.value = "";
      list.classList.add("hidden");
      graph.clearFocus();
    }
  });
  list.addEventListener("click", (e) => {
    const li = e.target.closest("li[data-i]");
    if (li) pick(results[Number(li.dataset.i)]);
  });
  function pick(r) {
    picked = r.pid;
    list.classList.add("hidden");
    const path = r.path || [r.pid];
    if (!graph.focus(r.pid, path)) {
      // folded into a group (key = "<supervisor>/<label>") or under a folded supervisor:
      // expand them and focus after the reload
      const sup = path.length > 1 ? path[path.length - 2] : "root";
      expanded.add(`${sup}/${r.label}`);
      unfoldPath(path);
      drawGroupChips();
      focusAfterLoad = { pid: r.pid, path };
      refetch("search");
    }
  }
}

// Kinds that never change the drawing's shape: patched in place.
const FIELD_KINDS = new Set(["update", "suspend", "resume", "register", "link", "unlink", "monitor", "demonitor", "trace", "samples"]);
let dirtySince = null; // lifecycle count when the first change the drawing could not absorb arrived
let consistency = null;

const heldSpawns = new Set(); // spawns waiting for the restart that explains them (usually in the next batch)
const heldExits = new Set(); // exits drawn as "exiting", waiting for their restart

/** A refetch soon (not now), if some spawn or exit is still unexplained by a restart by then. */
function refetchSoon(ms = 1000) {
  if (consistency) return;
  consistency = setTimeout(() => {
    consistency = null;
    if (heldSpawns.size || heldExits.size) refetch("consistency");
  }, ms);
}

/**
 * Apply a batch to the drawing without a round trip when possible: a restart
 * replaces the old pid by the new one in place (and flashes it), an exit
 * marks the process as exiting until its restart arrives. Anything else that
 * changes the shape (a new child, a give-up, a reset, a lost batch) refetches.
 */
function patch(delta) {
  const changes = delta.changes;
  const restarts = changes.filter((c) => c.kind === "restart");
  const replacedOld = new Set(restarts.map((c) => c.data && c.data.old_pid).filter(Boolean));
  const spawnedNew = new Set(restarts.map((c) => (c.data && c.data.new_pid) || c.pid).filter(Boolean));
  let absorbed = !delta.missed;
  let drew = false;
  for (const c of changes) {
    const d = c.data || {};
    if (c.kind === "restart") {
      budgetsAt = -Infinity; // re-read the budget gauge
      const neu = d.new_pid || c.pid;
      heldSpawns.delete(neu);
      heldExits.delete(d.old_pid);
      if (!d.old_pid || !neu) {
        absorbed = false;
        continue;
      }
      if (graph.all.has(neu)) {
        graph.flashIds([neu]);
        if (graph.all.has(d.old_pid)) absorbed = false; // both there: let the server sort it out
        drew = true;
      } else if (graph.all.has(d.old_pid)) {
        const fields = { id: neu, pid: neu, status: "running", restarts: d.restarts, mailbox: 0, rate: 0 };
        graph.replace(d.old_pid, fields);
        if (inflight) applied.push({ old: d.old_pid, ...fields });
        graph.flashIds([neu]);
        drew = true;
      } else {
        const groups = resolveFlash(graph.tree, [{ pid: neu, sup: d.supervisor }]);
        if (groups.length) graph.flashIds(groups);
        else absorbed = false;
        drew = true;
      }
    } else if (c.kind === "exit") {
      if (replacedOld.has(c.pid)) continue;
      const it = graph.byId.get(c.pid);
      if (it) {
        it.d.status = "exiting";
        drew = true;
      }
      if (graph.all.has(c.pid)) {
        heldExits.add(c.pid);
        refetchSoon(); // gone for good unless a restart follows
      }
    } else if (c.kind === "spawn") {
      if (!spawnedNew.has(c.pid)) {
        heldSpawns.add(c.pid);
        refetchSoon(); // a new process: drawn by the next fetch, unless a restart explains it first
      }
    } else if (FIELD_KINDS.has(c.kind)) {
      const it = c.pid && graph.byId.get(c.pid);
      if (it && c.kind !== "samples") {
        for (const k of ["status", "mailbox", "restarts", "rate", "name", "label", "budget"]) if (d[k] !== undefined) it.d[k] = d[k];
        drew = true;
      }
    } else {
      absorbed = false; // reset, gave_up, node status, ...
    }
  }
  return { absorbed, drew };
}

export function update(state, delta) {
  const killed = chaosKills(delta, ctx.node);
  if (killed.length && graph) {
    graph.flashIds(killed.flatMap((k) => [k.pid, k.new_pid, k.supervisor]).filter((id) => id && graph.all.has(id)));
    return;
  }
  if (delta.kind === "node_status" && delta.node === ctx.node) return refetch("node_status");
  if (delta.kind !== "batch" || delta.node !== ctx.node || !graph || !graph.tree) return;
  const { absorbed, drew } = patch(delta);
  const received = state.lifecycle[ctx.node] || 0;
  if (!absorbed) {
    if (dirtySince === null) dirtySince = received - delta.changes.filter((c) => LIFECYCLE.has(c.kind)).length;
    for (const c of delta.changes) if (c.kind === "restart") pendingFlash.push({ pid: (c.data && c.data.new_pid) || c.pid, sup: c.data && c.data.supervisor });
    if (drew) {
      graph.renderNow();
      rendered("tree", { reason: "patch" });
    }
    return refetch("batch");
  }
  if (drew) graph.renderNow();
  if (dirtySince === null) drawnLifecycle = received - heldSpawns.size;
  if (drew) rendered("tree", { reason: "patch" });
  // counters (mailbox, status, rate) arrive as samples: refresh the picture every few seconds
  if (!sampleTimer) {
    const every = graph.items.length > 2000 ? 10000 : 3000; // a big tree costs the server more to build
    sampleTimer = setTimeout(() => ((sampleTimer = null), refetch("samples")), every);
  }
}

/** For tests and benchmarks: what the whole tree holds (processes, pids, groups). */
export function stats() {
  if (!graph) return null;
  return { ...graph.stats(), drawnLifecycle, receivedLifecycle: ctx.state.lifecycle[ctx.node] || 0 };
}

/** For benchmarks: the id of the item `id` hangs from in the drawing (null if not drawn). */
export function parentOf(id) {
  const it = graph && graph.byId.get(id);
  return it && it.parent ? it.parent.d.id : null;
}

/** For benchmarks: the ids drawn under item `id` now. */
export function childrenOf(id) {
  const it = graph && graph.byId.get(id);
  return it ? it.kids.map((k) => k.d.id) : [];
}

/** For tests: whether item `id` is flashing now (drawn or scrolled out of view). */
export function flashing(id) {
  return !!(graph && (graph.flash.get(id) || 0) > performance.now());
}

export function has(pid) {
  return !!(graph && graph.all.has(pid));
}

export function destroy() {
  clearTimeout(sampleTimer);
  graph && graph.destroy();
  graph = null;
}
