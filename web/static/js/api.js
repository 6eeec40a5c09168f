// The JSON twins (docs/web.md). Every call sends the session cookie; actions carry X-CSRF-Token.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export function createApi(config) {
  async function request(method, path, { params, body } = {}) {
    let url = path;
    if (params) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(params)) {
        if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
      }
      const s = q.toString();
      if (s) url += (url.includes("?") ? "&" : "?") + s;
    }
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
      window.location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
      throw new ApiError(401, data);
    }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }
  const n = (node) => `/api/nodes/${encodeURIComponent(node)}`;
  const p = (node, pid) => `${n(node)}/processes/${encodeURIComponent(pid)}`;
  return {
    request,
    overview: () => request("GET", "/api/overview"),
    tree: (node, { expanded = [], groupThreshold = 20 } = {}) =>
      request("GET", `${n(node)}/tree`, { params: { expanded: expanded.join(","), group_threshold: groupThreshold, layout: 0 } }),
    search: (node, q) => request("GET", `${n(node)}/search`, { params: { q } }),
    links: (node, pid) => request("GET", `${n(node)}/links/${encodeURIComponent(pid)}`),
    processes: (node, params) => request("GET", `${n(node)}/processes`, { params }),
    process: (node, pid) => request("GET", p(node, pid)),
    killPreview: (node, pid, reason = "kill") => request("GET", `${p(node, pid)}/kill_preview`, { params: { reason } }),
    kill: (node, pid, reason = "kill") => request("POST", `${p(node, pid)}/kill`, { body: { reason } }),
    suspend: (node, pid) => request("POST", `${p(node, pid)}/suspend`, { body: {} }),
    resume: (node, pid) => request("POST", `${p(node, pid)}/resume`, { body: {} }),
    send: (node, pid, message) => request("POST", `${p(node, pid)}/send`, { body: { message } }),
    cancel: (node, pid, reason) => request("POST", `${p(node, pid)}/cancel`, { body: { reason } }),
    events: (params) => request("GET", "/api/events", { params }),
    timeline: (node) => request("GET", `${n(node)}/timeline`),
    treeAt: (node, t) => request("GET", `${n(node)}/tree_at`, { params: { t, layout: 0 } }),
    audit: (limit = 200) => request("GET", "/api/audit", { params: { limit } }),
  };
}

/** Lists come bare or wrapped ({"events": [...]}, {"rows": [...]}, ...): take the list. */
export function listOf(data, ...keys) {
  if (Array.isArray(data)) return data;
  for (const k of keys) if (data && Array.isArray(data[k])) return data[k];
  return [];
}
