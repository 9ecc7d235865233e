// Fleet page: every node with its status, software, the version it runs against the
// newest (behind and rejected versions flagged with the reason), uptime, traffic and a
// 15-minute tunnels sparkline; summary cards over the whole fleet; the rollout panel.
import { api, guarded, newest, refreshVersion } from "./app.js";
import { sparkline } from "./chart.js";
import * as rollout from "./rollout.js";
import { el, fillRows, fmtDuration, fmtNumber, fmtPercent, fmtRate } from "./util.js";

const sparkCells = new Map();
const sparkFetched = new Map();
let lastTick = null;

export async function show() {
  await refreshVersion();
  await refresh();
}

export async function refresh() {
  const { body: nodes } = await api("/nodes");
  await rollout.render(document.getElementById("rollout"), refresh);
  renderCards(nodes);
  fillRows(document.querySelector("#nodes tbody"), nodes.map(row));
  await Promise.all(nodes.filter((n) => n.connected).slice(0, 50).map(spark));
}

function card(label, value, cls) {
  return el("div", { class: "card" + (cls ? " " + cls : "") },
    el("div", { class: "card-value" }, value), el("div", { class: "card-label muted" }, label));
}

function renderCards(nodes) {
  const online = nodes.filter((n) => n.status === "online").length;
  const behind = nodes.filter((n) => n.connected && n.applied_version !== n.target_version).length;
  const nacked = nodes.filter((n) => n.last_nack).length;
  const sum = (f) => nodes.reduce((a, n) => a + (f(n) || 0), 0);
  const fleet = lastTick ? lastTick.fleet : {};
  const requests = fleet.requests || 0;
  const errors = ["errors_connect", "errors_timeout", "errors_bad_response", "errors_no_server",
    "errors_queue_timeout", "errors_bad_request", "errors_tls", "responses_5xx"]
    .reduce((a, k) => a + (fleet[k] || 0), 0);
  document.getElementById("fleet-cards").replaceChildren(
    card("nodes online", `${online} / ${nodes.length}`, online < nodes.length ? "lag" : "ok"),
    card("behind or rejecting", String(behind + nacked), behind + nacked ? "lag" : ""),
    card("connections", fmtNumber(sum((n) => n.traffic && n.traffic.current_connections))),
    card("tunnels", fmtNumber(sum((n) => n.traffic && n.traffic.current_tunnels))),
    card("upgrades/s", fmtRate(sum((n) => n.rates && n.rates.upgrades_per_s))),
    card("error rate", requests ? fmtPercent(errors / requests) : "–", errors ? "bad" : ""),
  );
}

function row(n) {
  const t = n.traffic || {};
  const labels = Object.entries(n.labels).map(([k, v]) => k + "=" + v).join(", ");
  const statusClass = { online: "ok", stale: "lag", offline: "bad" }[n.status];
  const config = [el("span", {}, "v" + n.applied_version)];
  if (n.connected && n.applied_version !== n.target_version) {
    config.push(el("span", { class: "lag" }, ` behind v${n.target_version}`));
  } else if (n.target_version !== newest) {
    config.push(el("span", { class: "muted", dataset: { staged: "" } }, ` staged: rollout of v${newest} not here yet`));
  }
  if (n.withheld) {
    config.push(el("div", { class: "bad" },
      `v${n.withheld.version} withheld: the node lacks ${n.withheld.missing.join(", ")}`));
  }
  if (n.drift) {
    config.push(el("div", { class: "bad", title: "digest " + n.applied_digest },
      "drift: runs something other than this version"));
  }
  if (n.last_nack) {
    config.push(el("div", { class: "bad", title: n.last_nack.reason },
      `rejected v${n.last_nack.version}: ${n.last_nack.reason}`));
  }
  let cell = sparkCells.get(n.id);
  if (!cell) {
    cell = el("td", { class: "spark" });
    sparkCells.set(n.id, cell);
  }
  const rates = n.rates || {};
  return el("tr", { dataset: { node: n.id } },
    el("td", {}, n.id),
    el("td", { class: statusClass }, n.status),
    el("td", { class: "muted replica" }, n.replica || "–"),
    el("td", { class: "muted" }, labels),
    el("td", { class: "muted" }, n.software_version),
    el("td", {}, config),
    el("td", {}, n.connected ? fmtDuration(n.uptime_s) : "–"),
    el("td", { class: "num" }, n.connected ? fmtNumber(t.current_connections) : "–"),
    el("td", { class: "num" }, n.connected ? fmtNumber(t.current_tunnels) : "–"),
    el("td", { class: "num" }, n.connected ? fmtRate(rates.upgrades_per_s) : "–"),
    el("td", { class: "num" + (rates.error_rate > 0.01 ? " bad" : "") },
      n.connected && n.rates ? fmtPercent(rates.error_rate) : "–"),
    cell,
  );
}

async function spark(n) {
  const last = sparkFetched.get(n.id) || 0;
  if (Date.now() - last < 30000) return;
  sparkFetched.set(n.id, Date.now());
  const scope = encodeURIComponent("node:" + n.id);
  const { body } = await api(`/series?metric=tunnels&scope=${scope}&from=-15m&step=30s`);
  sparkline(sparkCells.get(n.id), body.times, body.series[0].values);
}

export function onTick(tick, current) {
  lastTick = tick;
  if (current === "fleet") guarded(refresh);
}

export function onEvent(e, current) {
  if (current === "fleet" && (e.kind.startsWith("rollout_") || e.kind === "version_acked")) guarded(refresh);
}
