// Charts drawn by uPlot (vendored under /ui/vendor/uplot): time-series panels with
// vertical markers for config versions and health changes, and per-node sparklines.
/* global uPlot */

const COLORS = ["#2f6fdd", "#1f9d55", "#d97706", "#c53030", "#7c3aed", "#0e7490"];

/** Points are drawn where a series has few values (e.g. just after start-up). */
function sparse(u, seriesIndex) {
  const values = u.data[seriesIndex] || [];
  return values.filter((v) => v !== null && v !== undefined).length < 60;
}

/** A uPlot plugin drawing vertical lines at `marks()` ({t: unix ms, kind, label}). */
function markers(marks) {
  return {
    hooks: {
      draw: [(u) => {
        const ctx = u.ctx;
        const { top, height } = u.bbox;
        ctx.save();
        for (const m of marks()) {
          const x = Math.round(u.valToPos(m.t / 1000, "x", true));
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.strokeStyle = m.kind === "version" ? "rgba(124,58,237,0.7)" : "rgba(197,48,48,0.7)";
          ctx.setLineDash(m.kind === "version" ? [4, 3] : [2, 2]);
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
        }
        ctx.restore();
      }],
    },
  };
}

/**
 * A panel: `title`, series labels, and a `marks` callback. Returns
 * `{ set(times, columns) }` where times are Unix ms and columns arrays of numbers/null.
 */
export function panel(container, title, labels, marks) {
  const box = document.createElement("figure");
  box.className = "chart";
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  box.append(caption);
  container.append(box);
  let plot = null;
  const width = () => Math.max(320, box.clientWidth - 8);
  const opts = {
    width: width(),
    height: 180,
    series: [{}, ...labels.map((label, i) => ({
      label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false,
      points: { show: sparse, size: 5, fill: COLORS[i % COLORS.length] },
      value: (u, v) => (v === null || v === undefined ? "–" : v.toFixed(v < 10 ? 2 : 0)),
    }))],
    axes: [{}, { size: 50 }],
    scales: { x: { time: true } },
    legend: { live: true },
    plugins: [markers(marks)],
  };
  return {
    element: box,
    set(times, columns) {
      const data = [times.map((t) => t / 1000), ...columns];
      if (!plot) {
        plot = new uPlot(opts, data, box);
        new ResizeObserver(() => plot.setSize({ width: width(), height: 180 })).observe(box);
      } else {
        plot.setData(data);
      }
    },
    redraw() { if (plot) plot.redraw(); },
    destroy() { if (plot) plot.destroy(); box.remove(); },
  };
}

/** A small line with no axes, for a table cell. */
export function sparkline(cell, times, values) {
  const data = [times.map((t) => t / 1000), values];
  if (cell._plot) {
    cell._plot.setData(data);
    return;
  }
  cell._plot = new uPlot({
    width: 120, height: 28,
    cursor: { show: false }, legend: { show: false },
    axes: [{ show: false }, { show: false }],
    scales: { x: { time: true } },
    series: [{}, { stroke: COLORS[0], width: 1, fill: "rgba(47,111,221,0.12)", points: { show: sparse, size: 3 } }],
  }, data, cell);
}
