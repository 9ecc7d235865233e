// Backends page: for each backend a server × node matrix — every server once per
// connected node, with that node's health (and why), connections and tunnels — and
// ready/drain/maint buttons that ask for confirmation and act through the REST API.
// A draining server shows its tunnels left, per node and in all, falling.
import { api, guarded, newest, refreshVersion, report } from "./app.js";
import { el, fmtNumber } from "./util.js";

export async function show() {
  await refresh();
}

export async function refresh() {
  const [{ body: list }, { body: nodes }] = await Promise.all([api("/backends"), api("/nodes")]);
  const online = nodes.filter((n) => n.connected);
  const details = await Promise.all(list.map((b) => api("/backends/" + encodeURIComponent(b.name))));
  const container = document.getElementById("backends");
  container.replaceChildren(...details.map(({ body }) => matrix(body, online)));
  if (!details.length) container.append(el("p", { class: "muted" }, "No backends configured."));
}

function matrix(b, nodes) {
  const head = el("tr", {},
    el("th", {}, "Server"), el("th", {}, "Address"), el("th", {}, "State"),
    nodes.map((n) => el("th", { class: "node-col" }, n.id)),
    el("th", { class: "num" }, "Tunnels"), el("th", { class: "num" }, "Connections"));
  const rows = b.servers.map((s) => {
    const live = (b.live.find((l) => l.server === s.name) || { nodes: [] }).nodes;
    const state = s.state || "ready";
    const tunnels = live.reduce((a, n) => a + n.current_tunnels, 0);
    const conns = live.reduce((a, n) => a + n.current_connections, 0);
    const stateCell = el("td", { class: "state" },
      el("span", { class: "state-" + state, dataset: { state } }, state),
      state === "drain" ? el("span", { class: "muted drain-left" }, ` — ${tunnels} tunnel(s) left`) : "",
      el("span", { class: "actions" }, ["ready", "drain", "maint"].map((target) =>
        el("button", {
          type: "button", disabled: target === state, dataset: { action: target },
          onclick: () => setState(b.name, s.name, target),
        }, target))));
    return el("tr", { dataset: { server: s.name } },
      el("td", {}, s.name), el("td", { class: "muted" }, s.address), stateCell,
      nodes.map((n) => nodeCell(live.find((x) => x.node === n.id), n)),
      el("td", { class: "num" }, fmtNumber(tunnels)), el("td", { class: "num" }, fmtNumber(conns)));
  });
  return el("section", { class: "backend", dataset: { backend: b.name } },
    el("h2", {}, "Backend ", el("code", {}, b.name),
      el("span", { class: "muted" }, ` balance ${b.balance || "roundrobin"}`)),
    el("table", { class: "matrix" }, el("thead", {}, head), el("tbody", {}, rows)));
}

function nodeCell(on, node) {
  if (!on) return el("td", { class: "muted", dataset: { node: node.id } }, "not reported");
  const pending = node.applied_version !== newest ? ` (runs v${node.applied_version})` : "";
  const title = [on.health_reason, on.health_changed && "since " + on.health_changed].filter(Boolean).join(" — ");
  return el("td", { class: "cell health-" + on.health, dataset: { node: node.id, health: on.health }, title },
    el("span", { class: "dot" }), on.health,
    el("span", { class: "muted" }, ` · ${on.current_tunnels} t · ${on.current_connections} c${pending}`));
}

async function setState(backend, server, state) {
  const effect = {
    ready: "take new connections again",
    drain: "take no new connections except sticky ones; open tunnels stay until they close",
    maint: "take no connections at all; open tunnels stay until they close",
  }[state];
  if (!window.confirm(`Set ${backend}/${server} to ${state}? It will ${effect}.`)) return;
  await guarded(async () => {
    const path = `/backends/${encodeURIComponent(backend)}/servers/${encodeURIComponent(server)}/state`;
    const { body } = await api(path, { method: "PUT", body: { state } });
    report(`v${body.version}: ${body.summary}`, "ok");
    await refreshVersion();
    await refresh();
  });
}

export function onTick(_tick, current) {
  if (current === "backends") guarded(refresh);
}

export function onEvent(e, current) {
  if (current === "backends" && (e.kind === "version_acked" || e.kind === "server_health")) guarded(refresh);
}
