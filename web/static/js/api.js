// The one module that talks to the JSON twins (docs/web.md): every route has a
// function here, and no view builds an /api URL itself.
//
// One response shape: a route answers a JSON object; a list comes under its
// plural name ({"nodes": [...]}, {"events": [...]}, {"groups": [...]},
// {"audit": [...]}); an error is {"ok": false, "error": code, "message"} with a
// 4xx/5xx status, thrown here as an ApiError (status, code, message).
// Every call sends the session cookie; state changes carry X-CSRF-Token.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.error) || "http_" + status;
    this.body = body;
  }
}

const enc = encodeURIComponent;

/** Query string of the set values ("" if none), with the leading "?". */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

export function createApi(config) {
  async function request(method, path, { params, body } = {}) {
    const url = path + query(params);
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") {
      init.headers["X-CSRF-Token"] = config.csrf || "";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body ?? {});
    }
    const res = await fetch(url, init);
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    if (res.status === 401) {
      window.location.assign("/login?next=" + enc(location.pathname + location.search));
      throw new ApiError(401, data);
    }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }
  const get = (path, params) => request("GET", path, { params });
  const post = (path, body) => request("POST", path, { body: body ?? {} });
  const n = (node) => `/api/nodes/${enc(node)}`;
  const p = (node, pid) => `${n(node)}/processes/${enc(pid)}`;
  const x = (id) => `/api/chaos/experiments/${enc(id)}`;
  return {
    // overview and cluster (observer/views/pages.py, cluster.py)
    overview: (since) => get("/api/overview", { since }),
    nodes: () => get("/api/nodes"),
    cluster: () => get("/api/cluster"),
    addNode: ({ name, address, token, tls }) => post("/api/nodes", { name, address, token, tls }),
    removeNode: (node) => request("DELETE", n(node)),
    // one node (observer/views/nodes.py)
    tree: (node, { expanded = [], groupThreshold = 20, fold = 0 } = {}) =>
      get(`${n(node)}/tree`, { expanded: expanded.join(","), group_threshold: groupThreshold, fold, layout: 0 }),
    search: (node, q) => get(`${n(node)}/search`, { q }),
    links: (node, pid) => get(`${n(node)}/links/${enc(pid)}`),
    processes: (node, params) => get(`${n(node)}/processes`, params),
    process: (node, pid) => get(p(node, pid)),
    killPreview: (node, pid, reason = "kill") => get(`${p(node, pid)}/kill_preview`, { reason }),
    kill: (node, pid, reason = "kill") => post(`${p(node, pid)}/kill`, { reason }),
    suspend: (node, pid) => post(`${p(node, pid)}/suspend`),
    resume: (node, pid) => post(`${p(node, pid)}/resume`),
    send: (node, pid, message) => post(`${p(node, pid)}/send`, { message }),
    cancel: (node, pid, reason) => post(`${p(node, pid)}/cancel`, { reason }),
    // history (observer/views/history.py)
    events: (params) => get("/api/events", params),
    timeline: (node) => get(`${n(node)}/timeline`),
    treeAt: (node, t, { expanded = [] } = {}) => get(`${n(node)}/tree_at`, { t, expanded: expanded.join(","), procs: 0, layout: 0 }),
    // crashes (observer/views/crashes.py)
    crashes: ({ q, node, limit } = {}) => get("/api/crashes", { q, node, limit }),
    crash: (id) => get(`/api/crashes/${enc(id)}`),
    processCrashes: (node, pid) => get(`${p(node, pid)}/crashes`),
    flightRecorder: (node, pid, { on, subtree, size = 20 }) => post(`${p(node, pid)}/flight_recorder`, { on, subtree, size }),
    // audit (observer/views/audit.py)
    audit: ({ node, limit = 200 } = {}) => get("/api/audit", { node, limit }),
    auditExportUrl: (format, node) => "/api/audit/export" + query({ format, node }),
    // login sessions (observer/views/sessions.py)
    sessions: () => get("/api/sessions"),
    revokeSession: (id) => post(`/api/sessions/${enc(id)}/revoke`),
    revokeToken: (id) => post(`/api/sessions/${enc(id)}/revoke-token`),
    // chaos (observer/views/chaos.py)
    experiments: ({ node, limit = 50 } = {}) => get("/api/chaos/experiments", { node, limit }),
    experiment: (id, killsFrom = 0) => get(x(id), { kills_from: killsFrom }),
    startExperiment: (body) => post("/api/chaos/experiments", body),
    abortExperiment: (id) => post(`${x(id)}/abort`),
    activeKills: (node, since) => get("/api/chaos/active", { node, since }),
    // message traces (observer/views/trace.py)
    traces: (node) => get("/api/traces", { node }),
    trace: (id) => get(`/api/traces/${enc(id)}`),
    startTrace: (node, body) => post(`${n(node)}/traces`, body),
    stopTrace: (id) => post(`/api/traces/${enc(id)}/stop`),
    traceExportUrl: (id, format) => `/api/traces/${enc(id)}/export` + query({ format }),
  };
}
