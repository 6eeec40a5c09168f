// Small DOM and formatting helpers shared by the views.

const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** Escape text for innerHTML (pids look like tags: "<0.42.0>"). */
export function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ESC[c]);
}

/** Create an element: h("a", {href, class: "x", onclick}, child, "text", ...). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function $(sel, root = document) {
  return root.querySelector(sel);
}

export function fmtInt(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}

export function fmtNum(n, digits = 1) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const x = Number(n);
  if (Math.abs(x) >= 1e6) return (x / 1e6).toFixed(1) + "M";
  if (Math.abs(x) >= 1e4) return (x / 1e3).toFixed(1) + "k";
  return x.toFixed(digits).replace(/\.0+$/, "");
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "KB", "MB", "GB"];
  let x = Number(n);
  let i = 0;
  while (x >= 1024 && i < u.length - 1) {
    x /= 1024;
    i++;
  }
  return (i ? x.toFixed(1) : String(x)) + " " + u[i];
}

export function fmtSecs(s) {
  if (s === null || s === undefined) return "–";
  const x = Number(s);
  if (x < 1e-3) return (x * 1e6).toFixed(0) + " µs";
  if (x < 1) return (x * 1e3).toFixed(1) + " ms";
  return x.toFixed(2) + " s";
}

/** Unix seconds -> "12:03:04.123". */
export function fmtTime(t) {
  if (!t) return "–";
  const d = new Date(t * 1000);
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

export function fmtDateTime(t) {
  if (!t) return "–";
  const d = new Date(t * 1000);
  return `${d.toLocaleDateString("en-CA")} ${fmtTime(t)}`;
}

export function ago(t) {
  if (!t) return "–";
  const s = Date.now() / 1000 - t;
  if (s < 1) return "just now";
  if (s < 90) return `${s.toFixed(0)} s ago`;
  if (s < 5400) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

export function nodePath(node, rest = "") {
  return `/nodes/${encodeURIComponent(node)}${rest}`;
}

export function processHref(node, pid) {
  return nodePath(node, `/processes/${encodeURIComponent(pid)}`);
}

/** Call fn at most once per `ms`, trailing call guaranteed. */
export function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  return (...args) => {
    const wait = last + ms - performance.now();
    if (wait <= 0 && !timer) {
      last = performance.now();
      fn(...args);
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = null;
        last = performance.now();
        fn(...args);
      }, Math.max(0, wait));
    }
  };
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Tell tests and benchmarks that a view has drawn something (performance.now() stamp). */
export function rendered(view, detail = {}) {
  const d = { view, t: performance.now(), wall: Date.now(), ...detail };
  window.dispatchEvent(new CustomEvent("observer:rendered", { detail: d }));
}

export function statusClass(s) {
  return "st-" + String(s || "unknown").replace(/[^a-z_]/gi, "");
}

export function kindClass(k) {
  return ["exit", "restart", "gave_up", "spawn"].includes(k) ? "k-" + k : "k-other";
}
