// Traffic page: charts over a chosen range of tunnels, upgrades/s, requests/s,
// responses by class, denials, errors and bytes — fleet-wide or for one frontend,
// backend or node — with config versions and health changes marked on the time axis.
import { api, guarded } from "./app.js";
import { panel } from "./chart.js";
import { parseRange } from "./util.js";

const PANELS = [
  ["Open tunnels and connections", ["tunnels", "connections"]],
  ["Upgrades and requests per second", ["upgrades", "requests"]],
  ["Responses per second: 4xx, 5xx, denied", ["responses_4xx", "responses_5xx", "denied"]],
  ["Errors per second", ["errors_connect", "errors_timeout", "errors_bad_response",
    "errors_no_server", "errors_queue_timeout", "errors_bad_request", "errors_tls"]],
  ["Tunnel bytes per second", ["bytes_in", "bytes_out"]],
];
const METRICS = PANELS.flatMap(([, m]) => m);

let charts = null;
let marks = [];
const range = document.getElementById("range");
const scope = document.getElementById("scope");
range.addEventListener("change", () => guarded(refresh));
scope.addEventListener("change", () => guarded(refresh));

export async function show() {
  await fillScopes();
  await refresh();
}

async function fillScopes() {
  const [fe, be, nodes] = await Promise.all([api("/frontends"), api("/backends"), api("/nodes")]);
  const keep = scope.value;
  const options = [["fleet", "fleet"]]
    .concat(fe.body.map((f) => ["frontend:" + f.name, "frontend " + f.name]))
    .concat(be.body.map((b) => ["backend:" + b.name, "backend " + b.name]))
    .concat(nodes.body.map((n) => ["node:" + n.id, "node " + n.id]));
  scope.replaceChildren(...options.map(([value, label]) => {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = label;
    return o;
  }));
  if (options.some(([v]) => v === keep)) scope.value = keep;
}

export async function refresh() {
  const span = parseRange(range.value);
  const from = Date.now() - span;
  const q = new URLSearchParams({ metric: METRICS.join(","), scope: scope.value, from: String(from) });
  const [series, versions, health] = await Promise.all([
    api("/series?" + q),
    api(`/events?kind=version_committed&from=${from}&limit=500`),
    api(`/events?kind=server_health&from=${from}&limit=500`),
  ]);
  marks = versions.body.map((e) => ({ t: e.unix_ms, kind: "version", label: "v" + e.version }))
    .concat(health.body.map((e) => ({ t: e.unix_ms, kind: "health", label: e.detail })));
  if (!charts) {
    const container = document.getElementById("charts");
    container.replaceChildren();
    charts = PANELS.map(([title, metrics]) => ({ metrics, chart: panel(container, title, metrics, () => marks) }));
  }
  const byName = Object.fromEntries(series.body.series.map((s) => [s.metric, s.values]));
  for (const { metrics, chart } of charts) {
    chart.set(series.body.times, metrics.map((m) => byName[m]));
    chart.element.dataset.max = String(Math.max(0, ...metrics.flatMap((m) => byName[m].filter((v) => v !== null))));
  }
}

export function onTick(_tick, current) {
  if (current === "traffic" && parseRange(range.value) <= 6 * 3600e3) guarded(refresh);
}

export function onEvent(e, current) {
  if (e.kind !== "version_committed" && e.kind !== "server_health") return;
  marks.push({ t: e.unix_ms, kind: e.kind === "version_committed" ? "version" : "health" });
  if (current === "traffic" && charts) charts.forEach(({ chart }) => chart.redraw());
}
