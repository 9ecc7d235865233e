// Events page: the fleet's timeline, newest first, filtered by kind, node, backend and
// server, paged backwards, with new events arriving live.
import { api, guarded } from "./app.js";
import { el, fmtTime } from "./util.js";

const tbody = document.querySelector("#events tbody");
const form = document.getElementById("event-filter");
let oldest = null;

form.addEventListener("submit", (e) => {
  e.preventDefault();
  guarded(refresh);
});
document.getElementById("events-older").addEventListener("click", () => guarded(older));

function filter() {
  const q = new URLSearchParams();
  for (const [key, id] of [["kind", "event-kind"], ["node", "event-node"], ["backend", "event-backend"], ["server", "event-server"]]) {
    const v = document.getElementById(id).value.trim();
    if (v) q.set(key, v);
  }
  return q;
}

function matches(e) {
  for (const [key, v] of filter()) if (e[key] !== v) return false;
  return true;
}

function row(e) {
  const cls = { version_nacked: "bad", node_disconnected: "lag", node_stale: "bad" }[e.kind]
    || (e.kind === "server_health" ? (e.detail.startsWith("down") ? "bad" : "ok") : "");
  return el("tr", { class: cls, dataset: { kind: e.kind } },
    el("td", { class: "muted", title: e.time }, fmtTime(e.unix_ms)),
    el("td", {}, e.kind.replace("_", " ")),
    el("td", {}, e.node || ""),
    el("td", {}, e.backend ? `${e.backend}${e.server ? "/" + e.server : ""}` : ""),
    el("td", {}, e.version ? "v" + e.version : ""),
    el("td", { class: "detail" }, e.detail),
    el("td", { class: "muted" }, e.actor || ""));
}

export async function show() {
  await refresh();
}

export async function refresh() {
  const q = filter();
  q.set("limit", "100");
  const { body } = await api("/events?" + q);
  tbody.replaceChildren(...body.map(row));
  oldest = body.length ? body[body.length - 1].id : null;
}

async function older() {
  if (oldest === null) return;
  const q = filter();
  q.set("limit", "100");
  q.set("before", String(oldest));
  const { body } = await api("/events?" + q);
  tbody.append(...body.map(row));
  if (body.length) oldest = body[body.length - 1].id;
}

export function onEvent(e) {
  if (matches(e)) tbody.prepend(row(e));
}
