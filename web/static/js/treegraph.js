// A supervision tree drawn in SVG, fast with 10,000+ processes.
//
// Layout (tidy, left to right): leaves take consecutive rows in order, every
// parent sits centred between its first and last child; x = depth. Only the
// rows inside the scrolled viewport (plus some overscan) are in the DOM, so a
// frame costs the same with 100 or 100,000 processes; layoutIds()/stats() tell
// what the whole drawing holds.
import { esc, fmtNum } from "./util.js";

const PAD = 16;
const OVERSCAN = 30; // rows above/below the viewport
export const STATUS_COLORS = {
  running: "#3fb950",
  waiting: "#58a6c8",
  suspended: "#d29922",
  exiting: "#f85149",
  up: "#3fb950",
  down: "#6e7681",
};
const STALE = "#6e7681";

const SANS = 'system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Roboto, sans-serif';
const FONT = `12px ${SANS}`;
const BOLD = `600 12px ${SANS}`;
const SMALL = `11px ${SANS}`;
const BADGE = `700 10px ${SANS}`;
const MONO = '11px ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace';
let measurer = null;
const widths = new Map();

/** Rendered width of a string in a font (canvas measureText, cached). */
function tw(text, font) {
  const key = font + "\u0000" + text;
  let w = widths.get(key);
  if (w === undefined) {
    if (!measurer) measurer = document.createElement("canvas").getContext("2d");
    measurer.font = font;
    w = measurer.measureText(text).width;
    if (widths.size > 200000) widths.clear();
    widths.set(key, w);
  }
  return w;
}

function color(status, stale) {
  return stale ? STALE : STATUS_COLORS[status] || "#8b98a8";
}

function cut(s, n) {
  s = String(s ?? "");
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

export class TreeGraph {
  /**
   * @param {HTMLElement} container  scrollable element (.tree-wrap)
   * @param {object} opts  hrefFor(pid) -> url|null; onGroup(item); onHover(item|null); budgets: Map pid -> budget
   */
  constructor(container, opts = {}) {
    this.el = container;
    this.opts = opts;
    this.rowH = opts.rowH || 24;
    this.colW = opts.colW || 290;
    this.tree = null;
    this.items = [];
    this.byRow = [];
    this.byId = new Map();
    this.collapsed = new Set();
    this.flash = new Map(); // id -> until (ms)
    this.hit = null;
    this.onPath = new Set();
    this.overlay = ""; // links/monitors svg
    this.budgets = opts.budgets || new Map();
    this.all = new Map();
    this.svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    this.svg.classList.add("tree");
    this.el.replaceChildren(this.svg);
    this._raf = 0;
    this._onScroll = () => this.schedule();
    this.el.addEventListener("scroll", this._onScroll, { passive: true });
    this._ro = new ResizeObserver(() => this.schedule());
    this._ro.observe(this.el);
    this.svg.addEventListener("click", (e) => this._click(e));
    this.svg.addEventListener("mouseover", (e) => {
      const g = e.target.closest("[data-id]");
      if (opts.onHover) opts.onHover(g ? this.byId.get(g.dataset.id) : null);
    });
  }

  setTree(tree) {
    this.tree = tree;
    this.all = new Map(); // every node of the data, folded ones included
    const stack = tree ? [tree] : [];
    while (stack.length) {
      const d = stack.pop();
      this.all.set(d.id, d);
      for (const k of d.children || []) stack.push(k);
    }
    this.layout();
    this.renderNow();
  }

  layout() {
    const items = [];
    let next = 0;
    let maxDepth = 0;
    const collapsed = this.collapsed;
    const place = (d, depth, parent) => {
      const it = { d, depth, parent, kids: [], row: 0, hidden: 0 };
      items.push(it);
      if (depth > maxDepth) maxDepth = depth;
      const ch = d.children || [];
      if (ch.length && collapsed.has(d.id)) it.hidden = ch.length;
      else if (!ch.length && d.folded) it.hidden = d.folded; // sent folded: children on request (opts.onUnfold)
      if (!ch.length || it.hidden) {
        it.row = next++;
      } else {
        for (const k of ch) it.kids.push(place(k, depth + 1, it));
        it.row = (it.kids[0].row + it.kids[it.kids.length - 1].row) / 2;
      }
      return it;
    };
    if (this.tree) place(this.tree, 0, null);
    this.items = items;
    this.byId = new Map(items.map((it) => [it.d.id, it]));
    this.byRow = items.slice().sort((a, b) => a.row - b.row);
    this.internal = items.filter((it) => it.kids.length);
    this.rows = next;
    this.maxDepth = maxDepth;
    // column x per depth: wide enough for the widest item of the column before it
    const colMax = new Array(maxDepth + 1).fill(0);
    for (const it of items) {
      const w = this._width(it.d);
      it.w = w;
      if (w > colMax[it.depth]) colMax[it.depth] = w;
    }
    this.colX = [PAD + 10];
    for (let i = 1; i <= maxDepth + 1; i++) this.colX[i] = this.colX[i - 1] + Math.min(this.colW * 1.6, colMax[i - 1]) + 48;
    const w = this.colX[maxDepth] + colMax[maxDepth] + PAD + 80;
    const h = PAD * 2 + Math.max(1, next) * this.rowH;
    this.svg.setAttribute("width", w);
    this.svg.setAttribute("height", h);
    this.el.classList.toggle("stale", !!(this.tree && this.tree.stale));
  }

  x(it) {
    return this.colX[it.depth];
  }

  /** Where the connector to an item's children runs (and its collapse toggle sits). */
  busX(it) {
    return this.colX[it.depth + 1] - 24;
  }

  y(it) {
    return PAD + this.rowH / 2 + it.row * this.rowH;
  }

  schedule() {
    if (!this._raf) this._raf = requestAnimationFrame(() => this.renderNow());
  }

  /** Rows in view (plus overscan) -> SVG. Returns the number of items drawn. */
  renderNow() {
    cancelAnimationFrame(this._raf);
    this._raf = 0;
    if (!this.tree) return 0;
    const r0 = (this.el.scrollTop - PAD) / this.rowH - OVERSCAN;
    const r1 = (this.el.scrollTop + this.el.clientHeight - PAD) / this.rowH + OVERSCAN;
    const byRow = this.byRow;
    let lo = 0;
    let hi = byRow.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (byRow[mid].row < r0) lo = mid + 1;
      else hi = mid;
    }
    const now = performance.now();
    const stale = !!this.tree.stale;
    const edges = [];
    const hot = [];
    const nodes = [];
    // buses of internal nodes crossing the viewport (their children may be off-screen)
    for (const it of this.internal) {
      const a = it.kids[0].row;
      const b = it.kids[it.kids.length - 1].row;
      if (b < r0 || a > r1) continue;
      const bx = this.busX(it);
      edges.push(`M${bx} ${PAD + this.rowH / 2 + Math.max(a, r0) * this.rowH}V${PAD + this.rowH / 2 + Math.min(b, r1) * this.rowH}`);
    }
    let drawn = 0;
    for (let i = lo; i < byRow.length && byRow[i].row <= r1; i++) {
      const it = byRow[i];
      const x = this.x(it);
      const y = this.y(it);
      if (it.kids.length) edges.push(`M${x + Math.min(it.w, this.busX(it) - x - 8)} ${y}H${this.busX(it)}`);
      if (it.parent) {
        const px = this.busX(it.parent);
        edges.push(`M${px} ${y}H${x - 8}`);
        if (this.onPath.has(it.d.id) && this.onPath.has(it.parent.d.id)) {
          const py = this.y(it.parent);
          hot.push(`M${this.x(it.parent) + it.parent.w} ${py}H${px}V${y}H${x - 8}`);
        }
      }
      nodes.push(this._node(it, x, y, now, stale));
      drawn++;
    }
    for (const [id, until] of this.flash) if (until < now) this.flash.delete(id);
    this.svg.innerHTML =
      `<path class="edge" d="${edges.join("")}"/>` +
      (hot.length ? `<path class="edge path" d="${hot.join("")}"/>` : "") +
      `<g>${nodes.join("")}</g>` +
      this.overlay;
    this.drawn = drawn;
    return drawn;
  }

  /** The pieces drawn right of a glyph, with their widths (shared by layout and drawing). */
  _parts(d) {
    const parts = [];
    const add = (kind, text, font, extra = {}) => parts.push({ kind, text, w: tw(text, font), font, ...extra });
    if (d.node) {
      add("label", cut(d.label || d.name, 40), BOLD);
      add("sub", d.status || "", SMALL);
    } else if (d.group) {
      add("label", cut(`${Number(d.count).toLocaleString("en-US")} × ${d.label}`, 40), BOLD);
      parts.push({ kind: "groupbar", w: 44 });
      if (d.mailbox_total) add("mail", `✉ ${fmtNum(d.mailbox_total)}`, BADGE, { fill: "#d29922" });
      if (d.restarts_total) add("restarts", `↻${fmtNum(d.restarts_total)}`, BADGE, { fill: "#8b98a8" });
    } else {
      add("label", cut(d.name || d.label || d.pid, 32), FONT);
      if (d.name || d.label) add("sub", d.pid, MONO);
      if (d.kind === "supervisor") {
        const b = d.budget || d.budget_now || this.budgets.get(d.pid);
        if (b && b.intensity !== undefined && b.intensity !== null) parts.push({ kind: "budget", b, w: 34 + 6 + tw(`${b.used || 0}/${b.intensity}`, BADGE) });
      }
      const mb = d.mailbox || 0;
      if (mb) add("mail", `✉ ${fmtNum(mb)}`, BADGE, { fill: mb > 100 ? "#f85149" : "#d29922" });
      if (d.restarts) add("restarts", `↻${d.restarts}`, BADGE, { fill: "#8b98a8" });
    }
    return parts;
  }

  _width(d) {
    let w = 14;
    for (const p of this._parts(d)) w += p.w + 7;
    return w;
  }

  _node(it, x, y, now, stale) {
    const d = it.d;
    const cls = ["n"];
    if ((this.flash.get(d.id) || 0) > now) cls.push("flash");
    if (this.hit === d.id) cls.push("hit");
    if (this.onPath.has(d.id)) cls.push("onpath");
    let glyph;
    let attrs = `data-id="${esc(d.id)}"`;
    let title = "";
    if (d.node) {
      glyph = `<path class="glyph" d="M${x} ${y - 8}L${x + 8} ${y}L${x} ${y + 8}L${x - 8} ${y}Z" fill="${color(d.status === "up" ? "up" : "down", false)}"/>`;
      attrs += ` data-kind="node"`;
    } else if (d.group) {
      const sc = d.status_counts || {};
      const fill = color(Object.keys(sc).sort((a, b) => sc[b] - sc[a])[0], stale);
      glyph =
        `<circle class="glyph" cx="${x + 3}" cy="${y - 3}" r="6" fill="${fill}" opacity=".55"/>` +
        `<circle class="glyph" cx="${x}" cy="${y}" r="6.5" fill="${fill}"/><circle class="halo" cx="${x}" cy="${y}" r="6"/>`;
      attrs += ` data-group="${esc(d.key)}" data-count="${d.count}"`;
      title = `<title>${esc(d.count)} × ${esc(d.label)}: ${esc(Object.entries(sc).map(([k, v]) => `${v} ${k}`).join(", "))} (click to expand)</title>`;
    } else {
      const fill = color(d.status, stale);
      if (d.kind === "supervisor") {
        glyph = `<rect class="glyph" x="${x - 6.5}" y="${y - 6.5}" width="13" height="13" rx="2.5" fill="${fill}"/>`;
      } else {
        const r = 4.5 + Math.min(7, 1.6 * Math.log2(1 + (d.mailbox || 0)));
        glyph = `<circle class="glyph" cx="${x}" cy="${y}" r="${r.toFixed(1)}" fill="${fill}"/>`;
      }
      glyph += `<circle class="halo" cx="${x}" cy="${y}" r="6"/>`;
      attrs += ` data-pid="${esc(d.pid)}" data-kind="${esc(d.kind || "")}" data-status="${esc(d.status || "")}"`;
      title = `<title>${esc(d.pid)} ${esc(d.name || "")} ${esc(d.label || "")} · ${esc(d.status || "")} · mailbox ${esc(d.mailbox ?? 0)} · restarts ${esc(d.restarts ?? 0)}</title>`;
    }
    let bx = x + 14;
    let body = "";
    for (const p of this._parts(d)) {
      if (p.kind === "label") {
        body += `<text class="lbl" x="${bx}" y="${y}"${p.font === BOLD ? ' font-weight="600"' : ""}>${esc(p.text)}</text>`;
      } else if (p.kind === "sub") {
        body += `<text class="sub${p.font === MONO ? " mono" : ""}" x="${bx}" y="${y}">${esc(p.text)}</text>`;
      } else if (p.kind === "groupbar") {
        const sc = d.status_counts || {};
        const total = d.count || 1;
        let gx = bx;
        for (const [st, n] of Object.entries(sc)) {
          const w = Math.max(1, (44 * n) / total);
          body += `<rect class="grpbar" x="${gx}" y="${y - 3}" width="${w}" height="6" fill="${color(st, stale)}"/>`;
          gx += w;
        }
      } else if (p.kind === "budget") {
        const b = p.b;
        const used = Number(b.used || 0);
        const cap = Math.max(1, Number(b.intensity));
        const frac = Math.min(1, used / cap);
        const c = used >= cap ? "#f85149" : frac >= 0.5 ? "#d29922" : "#3fb950";
        body +=
          `<g class="budget" data-used="${used}" data-intensity="${esc(b.intensity)}"><title>restart budget: ${used} of ${esc(b.intensity)} used in ${esc(b.period)} s (${esc(b.strategy || "")})</title>` +
          `<rect class="budget-bg" x="${bx}" y="${y - 3.5}" width="34" height="7" rx="3.5"/>` +
          `<rect x="${bx}" y="${y - 3.5}" width="${used ? Math.max(4, 34 * frac) : 0}" height="7" rx="3.5" fill="${c}"/>` +
          `<text class="badge" x="${bx + 40}" y="${y}" fill="${c}">${used}/${esc(b.intensity)}</text></g>`;
      } else {
        body += `<text class="badge" x="${bx}" y="${y}" fill="${p.fill}">${esc(p.text)}</text>`;
      }
      bx += p.w + 7;
    }
    let toggle = "";
    const nkids = (d.children || []).length || d.folded || 0;
    if (nkids && !d.node) {
      const tx2 = this.busX(it);
      toggle = `<g class="toggle" data-toggle="${esc(d.id)}"><circle cx="${tx2}" cy="${y}" r="6" fill="#1c232c" stroke="#3b4656"/>` +
        `<text x="${tx2}" y="${y + 0.5}" text-anchor="middle" font-size="11">${it.hidden ? "+" : "−"}</text>` +
        (it.hidden ? `<text class="sub" x="${tx2 + 10}" y="${y}">${it.hidden} hidden</text>` : "") +
        `<title>${it.hidden ? "expand" : "collapse"}</title></g>`;
    }
    const href = !d.group && !d.node && this.opts.hrefFor ? this.opts.hrefFor(d.pid) : null;
    const inner = glyph + body + title;
    return `<g class="${cls.join(" ")}" ${attrs}>${href ? `<a href="${esc(href)}">${inner}</a>` : inner}${toggle}</g>`;
  }

  _click(e) {
    const t = e.target.closest("[data-toggle]");
    if (t) {
      e.preventDefault();
      const id = t.dataset.toggle;
      const it = this.byId.get(id);
      if (it && it.d.folded && !(it.d.children || []).length) {
        if (this.opts.onUnfold) this.opts.onUnfold(it);
        return;
      }
      if (this.collapsed.has(id)) this.collapsed.delete(id);
      else this.collapsed.add(id);
      this.layout();
      this.renderNow();
      return;
    }
    const g = e.target.closest("[data-group]");
    if (g && this.opts.onGroup) this.opts.onGroup(this.byId.get(g.dataset.id));
  }

  /** Swap one drawn item's identity and fields (a restart: same place, new pid). */
  replace(oldId, fields) {
    const d = this.all.get(oldId);
    if (!d) return false;
    Object.assign(d, fields);
    this.all.delete(oldId);
    this.all.set(d.id, d);
    const it = this.byId.get(oldId);
    if (!it) return true; // folded away: nothing to redraw
    this.byId.delete(oldId);
    this.byId.set(it.d.id, it);
    if (this.hit === oldId) this.hit = it.d.id;
    return true;
  }

  collapseAll() {
    this.collapsed = new Set(this.items.filter((it) => it.depth >= 1 && (it.d.children || []).length).map((it) => it.d.id));
    this.layout();
    this.renderNow();
  }

  expandAll() {
    this.collapsed.clear();
    this.layout();
    this.renderNow();
  }

  /** Highlight `id` and its path (ids, root first); uncollapse and scroll it into view. */
  focus(id, path = []) {
    this.hit = id;
    this.onPath = new Set(["node", ...path]);
    let changed = false;
    for (const p of path) if (p !== id && this.collapsed.delete(p)) changed = true;
    if (changed) this.layout();
    const it = this.byId.get(id);
    if (it) {
      this.el.scrollTop = Math.max(0, this.y(it) - this.el.clientHeight / 2);
      this.el.scrollLeft = Math.max(0, this.x(it) - this.el.clientWidth / 3);
    }
    this.renderNow();
    return !!it;
  }

  clearFocus() {
    this.hit = null;
    this.onPath = new Set();
    this.renderNow();
  }

  flashIds(ids, ms = 2400) {
    const until = performance.now() + ms;
    for (const id of ids) this.flash.set(id, until);
  }

  /** Links (solid) and monitors (dashed) of one item, as curves to whatever is drawn. */
  showRelations(fromId, links = [], monitors = []) {
    const a = this.byId.get(fromId);
    if (!a) {
      this.overlay = "";
      return this.renderNow();
    }
    const curve = (b, cls) => {
      const x1 = this.x(a);
      const y1 = this.y(a);
      const x2 = this.x(b);
      const y2 = this.y(b);
      const bend = 60 + Math.min(200, Math.abs(y2 - y1) / 3);
      return `<path class="${cls}" d="M${x1} ${y1}C${x1 - bend} ${y1},${x2 - bend} ${y2},${x2} ${y2}"/>`;
    };
    const parts = [];
    for (const pid of links) {
      const b = this.byId.get(pid);
      if (b && b !== a) parts.push(curve(b, "lnk"));
    }
    for (const pid of monitors) {
      const b = this.byId.get(pid);
      if (b && b !== a) parts.push(curve(b, "mon"));
    }
    this.overlay = `<g>${parts.join("")}</g>`;
    this.renderNow();
  }

  clearRelations() {
    if (!this.overlay) return;
    this.overlay = "";
    this.renderNow();
  }

  /** What the whole drawing holds (not only the rows in view; `folded`: supervisors sent without their children). */
  stats() {
    const pids = [];
    const groups = [];
    const folded = [];
    const walk = (d) => {
      if (d.group) groups.push({ key: d.key, count: d.count, sample: d.sample || [] });
      else if (!d.node) pids.push(d.pid);
      if (d.folded && !(d.children || []).length) folded.push({ pid: d.pid, count: d.folded });
      for (const k of d.children || []) walk(k);
    };
    if (this.tree) walk(this.tree);
    const grouped = groups.reduce((n, g) => n + (g.count || 0), 0) + folded.reduce((n, f) => n + f.count, 0);
    return { pids, groups, folded, processes: pids.length + grouped, items: this.items.length, drawn: this.drawn || 0 };
  }

  destroy() {
    cancelAnimationFrame(this._raf);
    this._ro.disconnect();
    this.el.removeEventListener("scroll", this._onScroll);
    this.el.replaceChildren();
  }
}
