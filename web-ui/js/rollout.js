// The rollout panel on the Fleet page: the rollout in progress (stage, bake time, the
// gates' last reading) with pause/resume/promote/abort, or how the newest one ended.
import { api, guarded, refreshVersion, report } from "./app.js";
import { el, fmtDuration, fmtPercent, fmtTime } from "./util.js";

const RECENT_MS = 3600 * 1000;

export async function render(container, onChange) {
  const { body: list } = await api("/rollouts");
  const r = list[0];
  const active = r && (r.state === "running" || r.state === "paused");
  if (!r || (!active && Date.now() - (r.finished_unix_ms || 0) > RECENT_MS)) {
    container.replaceChildren();
    container.hidden = true;
    return;
  }
  container.hidden = false;
  container.dataset.state = r.state;
  container.dataset.version = r.version;
  const stage = r.stages[r.stage];
  const cls = { running: "lag", paused: "lag", completed: "ok", rolled_back: "bad", aborted: "bad", superseded: "muted" }[r.state];
  const head = el("h2", {}, `Rollout of v${r.version} `,
    el("span", { class: "muted" }, `from v${r.from_version}${r.leader ? ` · run by ${r.leader}` : ""} · `),
    el("span", { class: "pill " + cls, dataset: { state: r.state } }, r.state.replace("_", " ")));
  const stages = el("ol", { class: "stages" }, r.stages.map((s, i) => {
    const state = s.passed_unix_ms ? "passed" : i === r.stage && active ? "current" : i < r.stage ? "passed" : "waiting";
    const select = s.select.labels
      ? Object.entries(s.select.labels).map(([k, v]) => `${k}=${v}`).join(", ")
      : `${s.select.share}% of nodes`;
    return el("li", { class: "stage stage-" + state },
      el("strong", {}, s.name), ` — ${select}, bake ${fmtDuration(Math.round(s.bake_ms / 1000))}`,
      s.nodes.length ? el("span", { class: "muted" }, ` · ${s.nodes.length} node(s): ${s.nodes.join(", ")}`) : "");
  }));
  const parts = [head, stages];
  if (active && stage) {
    const g = stage.reading;
    parts.push(el("p", {},
      `Stage ${r.stage + 1} of ${r.stages.length}: baked ${fmtDuration(Math.round(r.baked_ms / 1000))} of ${fmtDuration(Math.round(stage.bake_ms / 1000))}. `,
      g ? `Error rate ${fmtPercent(g.error_rate)} over ${g.requests} request(s) against ${fmtPercent(g.baseline_rate)} (${g.baseline.replace("_", " ")}); servers down ${fmtPercent(g.servers_down)}.`
        : "No reading yet."));
    parts.push(el("p", { class: "actions" }, ["pause", "resume", "promote", "abort"].map((action) =>
      el("button", {
        type: "button", dataset: { action },
        disabled: (action === "pause" && r.state !== "running") || (action === "resume" && r.state !== "paused"),
        onclick: () => command(r.version, action, onChange),
      }, action))));
  } else if (r.reason) {
    parts.push(el("p", { class: cls, dataset: { reason: "" } }, r.reason,
      r.rollback_version ? el("span", { class: "muted" }, ` — committed back as v${r.rollback_version}`) : "",
      r.finished_unix_ms ? el("span", { class: "muted" }, ` · ${fmtTime(r.finished_unix_ms)}`) : ""));
  }
  container.replaceChildren(...parts);
}

async function command(version, action, onChange) {
  const effect = {
    pause: "hold it at its stage (its gates are still watched)",
    resume: "continue it",
    promote: "send it to every node now",
    abort: "send every node back to the previous version",
  }[action];
  if (!window.confirm(`${action} the rollout of v${version}? This will ${effect}.`)) return;
  await guarded(async () => {
    const { body } = await api(`/rollouts/${version}/${action}`, { method: "POST" });
    report(`rollout of v${version}: ${body.state.replace("_", " ")}`, "ok");
    await refreshVersion();
    await onChange();
  });
}
