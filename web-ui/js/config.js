// Config page: the version history (who, when, what), a readable diff between any two
// versions, and rollback to any version still in the history (a new version equal to
// it: history stays append-only).
import { api, guarded, refreshVersion, report } from "./app.js";
import { el, fmtTime } from "./util.js";

const from = document.getElementById("diff-from");
const to = document.getElementById("diff-to");
document.getElementById("diff-form").addEventListener("submit", (e) => {
  e.preventDefault();
  guarded(() => diff(Number(from.value), Number(to.value)));
});

export async function show() {
  await refresh();
  if (!to.value) {
    const newest = await refreshVersion();
    if (newest > 1) await diff(newest - 1, newest);
  }
}

export async function refresh() {
  const { body } = await api("/snapshots?limit=50");
  const newest = body.length ? body[0].version : 0;
  document.querySelector("#history tbody").replaceChildren(...body.map((s) => el("tr", { dataset: { version: s.version } },
    el("td", {}, "v" + s.version),
    el("td", { class: "muted", title: s.created }, fmtTime(Date.parse(s.created))),
    el("td", {}, s.actor || "—"),
    el("td", { class: "detail" }, s.summary),
    el("td", {},
      s.version > 1 ? el("button", { type: "button", onclick: () => guarded(() => diff(s.version - 1, s.version)) }, "diff") : "",
      s.version !== newest ? el("button", { type: "button", dataset: { rollback: s.version }, onclick: () => rollback(s.version) }, "roll back") : ""))));
}

async function diff(a, b) {
  if (!a || !b) throw new Error("Choose two versions to compare.");
  const { body } = await api(`/snapshots/${a}/diff/${b}`);
  from.value = a;
  to.value = b;
  document.getElementById("diff-title").textContent = `Changes from v${a} to v${b}`;
  const list = document.getElementById("diff-changes");
  const show = (v) => (v === undefined ? "" : JSON.stringify(v));
  list.replaceChildren(...(body.changes.length ? body.changes.map((c) => el("li", { class: "change-" + c.change },
    el("code", {}, c.path), ` ${c.change}`,
    c.change === "changed" ? `: ${show(c.before)} → ${show(c.after)}` : c.change === "added" ? `: ${show(c.after)}` : ""))
    : [el("li", { class: "muted" }, "No difference.")]));
  const pre = document.getElementById("diff-unified");
  pre.replaceChildren(...body.unified.split("\n").map((line) => el("span", {
    class: line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : "",
  }, line + "\n")));
}

async function rollback(version) {
  if (!window.confirm(`Roll back to v${version}? A new version with v${version}'s configuration is pushed to every node.`)) return;
  await guarded(async () => {
    const { body } = await api(`/snapshots/${version}/rollback`, { method: "POST" });
    report(body.changed === false ? `Already the same as v${version}: nothing to do.` : `v${body.version}: ${body.summary}`, "ok");
    const newest = await refreshVersion();
    await refresh();
    await diff(newest - 1, newest);
  });
}

export function onEvent(e, current) {
  if (current === "config" && e.kind === "version_committed") guarded(refresh);
}
