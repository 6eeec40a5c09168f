// A live time-series chart: buffers points and flushes them with one
// Plotly.extendTraces call per frame, keeping at most `cap` points per trace.

const LAYOUT = {
  paper_bgcolor: "rgba(0,0,0,0)",
  plot_bgcolor: "rgba(0,0,0,0)",
  margin: { l: 44, r: 10, t: 6, b: 28 },
  font: { color: "#8b98a8", size: 11 },
  xaxis: { type: "date", gridcolor: "#222a34", linecolor: "#2a333f", tickformat: "%H:%M:%S" },
  yaxis: { gridcolor: "#222a34", zerolinecolor: "#2a333f", rangemode: "tozero" },
  showlegend: true,
  legend: { orientation: "h", y: 1.12, x: 0, font: { size: 11 } },
  hovermode: "x unified",
};
export const COLORS = ["#4ea1ff", "#3fb950", "#d29922", "#bc8cff", "#f85149", "#39c5cf", "#f0883e"];

export class LiveChart {
  constructor(el, { cap = 1200, flushMs = 250, yTitle = "" } = {}) {
    this.el = el;
    this.cap = cap;
    this.flushMs = flushMs;
    this.traces = new Map(); // name -> index
    this.buf = new Map(); // index -> {x: [], y: []}
    this.timer = null;
    const layout = structuredClone(LAYOUT);
    if (yTitle) layout.yaxis.title = { text: yTitle };
    window.Plotly.newPlot(el, [], layout, { displayModeBar: false, responsive: true });
  }

  /** Index of a named trace, created on first use (optionally with initial points). */
  trace(name, x = [], y = []) {
    let i = this.traces.get(name);
    if (i === undefined) {
      i = this.traces.size;
      this.traces.set(name, i);
      const color = COLORS[i % COLORS.length];
      window.Plotly.addTraces(this.el, {
        name, x: x.slice(-this.cap), y: y.slice(-this.cap), type: "scatter", mode: "lines",
        line: { color, width: 2, shape: "linear" }, fill: "tozeroy", fillcolor: color + "18",
      });
    }
    return i;
  }

  push(name, t, v) {
    if (v === null || v === undefined || Number.isNaN(v)) return;
    const i = this.trace(name);
    let b = this.buf.get(i);
    if (!b) this.buf.set(i, (b = { x: [], y: [] }));
    b.x.push(new Date(t * 1000));
    b.y.push(v);
    if (!this.timer) this.timer = setTimeout(() => this.flush(), this.flushMs);
  }

  flush() {
    this.timer = null;
    if (!this.buf.size) return;
    const idx = [];
    const xs = [];
    const ys = [];
    for (const [i, b] of this.buf) {
      idx.push(i);
      xs.push(b.x);
      ys.push(b.y);
    }
    this.buf.clear();
    window.Plotly.extendTraces(this.el, { x: xs, y: ys }, idx, this.cap);
  }

  destroy() {
    clearTimeout(this.timer);
    window.Plotly.purge(this.el);
  }
}

/** A horizontal bar chart replaced wholesale (for "top N right now" data). */
export class BarChart {
  constructor(el) {
    this.el = el;
    const layout = structuredClone(LAYOUT);
    layout.xaxis = { gridcolor: "#222a34", rangemode: "tozero" };
    layout.yaxis = { automargin: true, range: [4.5, -0.5] }; // five slots, top first: one bar stays a bar
    layout.margin = { l: 10, r: 10, t: 6, b: 28 };
    layout.showlegend = false;
    layout.hovermode = "closest";
    this.layout = layout;
    window.Plotly.newPlot(el, [], layout, { displayModeBar: false, responsive: true });
  }

  set(labels, values, links = []) {
    const layout = { ...this.layout };
    if (!labels.length) {
      layout.annotations = [{ text: "no messages waiting in any mailbox", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5, font: { color: "#8b98a8", size: 12 } }];
      layout.xaxis = { ...layout.xaxis, visible: false };
      layout.yaxis = { ...layout.yaxis, visible: false };
    }
    window.Plotly.react(
      this.el,
      [{ type: "bar", orientation: "h", y: labels, x: values, customdata: links, marker: { color: "#d29922" },
        hovertemplate: "%{y}: %{x} messages<extra></extra>" }],
      layout,
      { displayModeBar: false, responsive: true },
    );
  }

  destroy() {
    window.Plotly.purge(this.el);
  }
}
