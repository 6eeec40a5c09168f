// The client-side state, and the ONE function that maps every socket event onto it.
//
// Views never read socket payloads: they get (state, delta) in update(), where
// delta says what just changed ({kind: "batch" | "node_status" | "feed" | "connection"}).
// A page starts from history (seedEvents) and then follows the pushes.

export const EVENT_CAP = 500; // lifecycle changes kept for feeds (newest first)
export const LIFECYCLE = new Set(["exit", "restart", "gave_up", "spawn"]);
export const STRUCTURAL = new Set([
  "reset", "spawn", "exit", "restart", "update", "register", "gave_up", "link", "unlink", "status",
]);

export function createState(config) {
  const nodes = config.nodes || [];
  return {
    config,
    node: config.node || (nodes.length ? (typeof nodes[0] === "string" ? nodes[0] : nodes[0].name) : null),
    connection: "connecting", // connecting | live | lost
    nodeStatus: {}, // node -> "up" | "down" | ...
    stats: {}, // node -> latest stats from a batch
    seq: {}, // node -> last batch seq
    gaps: 0, // batches we know we missed
    events: [], // [{node, kind, pid, data, at}] newest first, capped
    lastBatchAt: null,
    pointAt: {}, // node -> time of the last chart point
    lifecycle: {}, // node -> lifecycle changes (spawn/exit/restart/gave_up) received so far
    listeners: new Set(),
  };
}

export function subscribe(state, fn) {
  state.listeners.add(fn);
  return () => state.listeners.delete(fn);
}

function notify(state, delta) {
  for (const fn of state.listeners) {
    try {
      fn(state, delta);
    } catch (err) {
      console.error("view update failed", err);
    }
  }
}

/** Node-level chart points from a batch's stats (the node's summary; derived rates if only counters). */
function points(state, node, prev, cur) {
  const t = Number(cur.time) || Date.now() / 1000;
  const last = state.pointAt[node] || 0;
  if (t - last < 0.9) return null; // at most about one point a second per node
  state.pointAt[node] = t;
  const out = { t, process_count: cur.process_count ?? null, loop_lag_ms: cur.loop_lag_ms ?? null };
  if (cur.message_rate !== undefined) out.message_rate = cur.message_rate;
  if (cur.restart_rate !== undefined) out.restart_rate = cur.restart_rate;
  if (prev && cur.time && prev.time && Number(prev.time) < t) {
    const dt = t - Number(prev.time);
    if (out.message_rate === undefined && cur.messages !== undefined) out.message_rate = Number(cur.messages || 0) / dt;
    if (out.restart_rate === undefined && cur.restarts !== undefined) {
      out.restart_rate = Math.max(0, Number(cur.restarts || 0) - Number(prev.restarts || 0)) / dt;
    }
  }
  return out;
}

function eventKey(e) {
  return `${e.node}|${e.kind}|${e.pid}|${Number(e.at).toFixed(3)}`;
}

/**
 * Lifecycle events from the history (/api/events rows, newest first) behind the
 * ones pushed since the page loaded, without doubles; tells the views
 * ({kind: "history"}).
 */
export function seedEvents(state, rows) {
  const seen = new Set(state.events.map(eventKey));
  for (const r of rows || []) {
    if (!LIFECYCLE.has(r.kind) || r.kind === "spawn") continue;
    const e = { node: r.node, kind: r.kind, pid: r.pid, data: r, at: r.time };
    if (!seen.has(eventKey(e))) state.events.push(e);
  }
  state.events.sort((a, b) => b.at - a.at);
  if (state.events.length > EVENT_CAP) state.events.length = EVENT_CAP;
  notify(state, { kind: "history" });
}

/** Every socket event goes through here: update state, then tell the views what changed. */
export function applySocketEvent(state, name, payload) {
  payload = payload || {};
  switch (name) {
    case "connect":
      state.connection = "live";
      return notify(state, { kind: "connection", status: "live" });
    case "disconnect":
    case "connect_error":
      state.connection = "lost";
      return notify(state, { kind: "connection", status: "lost", reason: payload.reason || payload.message });
    case "ack":
      return notify(state, { kind: "ack", ...payload });
    case "node_status": {
      state.nodeStatus[payload.node] = payload.status;
      return notify(state, { kind: "node_status", node: payload.node, status: payload.status });
    }
    case "batch": {
      const node = payload.node;
      const changes = Array.isArray(payload.changes) ? payload.changes : [];
      const prevSeq = state.seq[node];
      const seq = payload.seq;
      const missed = typeof seq === "number" && typeof prevSeq === "number" && seq > prevSeq + 1;
      if (missed) state.gaps += seq - prevSeq - 1;
      if (typeof seq === "number") state.seq[node] = seq;
      let pts = null;
      if (payload.stats && typeof payload.stats === "object") {
        pts = points(state, node, state.stats[node], payload.stats);
        state.stats[node] = payload.stats;
      }
      const at = Date.now() / 1000;
      let structural = missed || !!payload.truncated;
      const touched = new Set();
      for (const c of changes) {
        if (!c) continue;
        if (STRUCTURAL.has(c.kind)) structural = true;
        if (c.kind === "status" && c.data && c.data.status && !c.pid) state.nodeStatus[node] = c.data.status;
        if (c.pid) touched.add(c.pid);
        if (c.kind === "restart" && c.data && c.data.old_pid) touched.add(c.data.old_pid);
        if (LIFECYCLE.has(c.kind) && c.kind !== "spawn") {
          state.events.unshift({ node, kind: c.kind, pid: c.pid, data: c.data || {}, at: (c.data && c.data.time) || at });
        }
      }
      let n = payload.truncated || 0;
      for (const c of changes) if (c && LIFECYCLE.has(c.kind)) n++;
      state.lifecycle[node] = (state.lifecycle[node] || 0) + n;
      if (state.events.length > EVENT_CAP) state.events.length = EVENT_CAP;
      state.lastBatchAt = at;
      return notify(state, { kind: "batch", node, seq, changes, stats: payload.stats, points: pts, structural, touched, missed });
    }
    case "feed":
      // crashes, audit rows, chaos progress, cluster changes: the views keep their own lists
      return notify(state, { kind: "feed", feed: payload.feed, items: Array.isArray(payload.items) ? payload.items : [], truncated: payload.truncated || 0 });
    default:
      return notify(state, { kind: name, ...payload });
  }
}
