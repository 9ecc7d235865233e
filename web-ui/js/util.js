// Small DOM and formatting helpers shared by the pages.

/** An element with attributes/properties and children (strings become text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

/** Replaces a table body's rows. */
export function fillRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

export function fmtNumber(n, digits = 0) {
  if (n === undefined || n === null || Number.isNaN(n)) return "–";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return n.toFixed(digits);
}

export function fmtRate(n) {
  if (n === undefined || n === null) return "–";
  return n < 10 ? n.toFixed(2) : fmtNumber(n, 0);
}

export function fmtPercent(x) {
  if (x === undefined || x === null) return "–";
  return (x * 100).toFixed(x < 0.01 && x > 0 ? 2 : 1) + " %";
}

export function fmtDuration(seconds) {
  if (seconds === undefined || seconds === null) return "–";
  const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

export function fmtTime(unixMs) {
  return new Date(unixMs).toLocaleString();
}

/** "15m", "1h", "7d" → milliseconds. */
export function parseRange(text) {
  const n = parseInt(text, 10);
  const unit = text.slice(-1);
  return n * { m: 60e3, h: 3600e3, d: 86400e3 }[unit];
}
