// Drives the dashboard in Debian's Chromium as an operator would, for
// tests/tests/dashboard.rs, which starts the control plane, three nodes, backends and
// traffic, and passes:
//   SLUICE_URL      the control plane's API base (http://127.0.0.1:PORT)
//   SLUICE_TOKEN    the admin token
//   SLUICE_NODES    the node ids, comma-separated
//   SLUICE_SHOTS    where to save a screenshot of each page
//   SLUICE_CHROMIUM the browser (default /usr/bin/chromium)
// It prints `STEP <name>` lines the test answers on stdin with `GO` (e.g. after
// `STEP drained`, the test closes the drained server's tunnels), and exits non-zero
// with the reason when something a user would see is wrong.
import { launch, newPage } from "./launch.mjs";
import { createInterface } from "node:readline";
import { join } from "node:path";

const url = process.env.SLUICE_URL;
const token = process.env.SLUICE_TOKEN;
const nodes = process.env.SLUICE_NODES.split(",");
const shots = process.env.SLUICE_SHOTS;
const WAIT = 30000;

const stdin = createInterface({ input: process.stdin });
const replies = stdin[Symbol.asyncIterator]();
async function step(name) {
  console.log("STEP " + name);
  const { value } = await replies.next();
  if (value !== "GO") throw new Error(`test answered ${JSON.stringify(value)} to ${name}`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await launch();
let page;
try {
  let problems;
  ({ page, problems } = await newPage(browser));
  page.on("dialog", (d) => d.accept());

  // Signed in by the link's fragment; the token does not stay in the address bar.
  await page.goto(`${url}/#token=${token}`);
  check(!page.url().includes(token), "the token stayed in the address bar");

  // Fleet: three nodes online, each with its uptime and a config version.
  const rows = page.locator("#nodes tbody tr");
  await page.waitForFunction((n) => {
    const cells = [...document.querySelectorAll("#nodes tbody tr td:nth-child(2)")];
    return cells.length === n && cells.every((c) => c.textContent === "online");
  }, nodes.length, { timeout: WAIT });
  const ids = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.node));
  check(JSON.stringify(ids.sort()) === JSON.stringify([...nodes].sort()), `fleet shows ${ids}`);
  await page.waitForFunction(() => document.querySelectorAll("td.spark canvas").length >= 3, null, { timeout: WAIT });
  await page.screenshot({ path: join(shots, "fleet.png"), fullPage: true });

  // Traffic: the upgrades chart has non-zero points.
  await page.click("nav a[data-page=traffic]");
  await page.waitForFunction(() => {
    const fig = [...document.querySelectorAll("figure.chart")].find((f) => f.textContent.startsWith("Upgrades"));
    return fig && Number(fig.dataset.max) > 0 && fig.querySelector("canvas");
  }, null, { timeout: WAIT });
  await page.screenshot({ path: join(shots, "traffic.png"), fullPage: true });

  // Backends: every server once per node, ws-01 carrying tunnels on every node.
  await page.click("nav a[data-page=backends]");
  const matrix = page.locator("section.backend[data-backend=ws] table.matrix");
  await matrix.waitFor({ timeout: WAIT });
  await page.waitForFunction((n) => {
    const trs = [...document.querySelectorAll("section.backend[data-backend=ws] tbody tr")];
    return trs.length === 3 && trs.every((tr) => {
      const cells = [...tr.querySelectorAll("td[data-node]")].map((td) => td.dataset.node);
      return cells.length === n && new Set(cells).size === n && tr.querySelector("td[data-health]");
    });
  }, nodes.length, { timeout: WAIT });
  const tunnelsOf = (server) => page.evaluate((s) => {
    const tr = document.querySelector(`section.backend[data-backend=ws] tr[data-server=${s}]`);
    return [...tr.querySelectorAll("td[data-node]")].map((td) => Number((td.textContent.match(/(\d+) t/) || [])[1]));
  }, server);
  const before = await tunnelsOf("ws-01");
  check(before.every((t) => t > 0), `ws-01 tunnels per node before the drain: ${before}`);
  const downCells = await page.locator("section.backend[data-backend=ws] tr[data-server=ws-03] td[data-health=down]").count();
  check(downCells === nodes.length, `ws-03 is down on ${downCells} nodes, not ${nodes.length}`);
  await page.screenshot({ path: join(shots, "backends.png"), fullPage: true });

  // Drain ws-01 from the UI (confirmed): its state changes, every node applies it.
  await page.click("section.backend[data-backend=ws] tr[data-server=ws-01] button[data-action=drain]");
  await page.waitForFunction(() => {
    const tr = document.querySelector("section.backend[data-backend=ws] tr[data-server=ws-01]");
    return tr && tr.querySelector("[data-state=drain]") && !tr.textContent.includes("(runs v");
  }, null, { timeout: WAIT });
  await step("drained");
  // The test closes ws-01's tunnels one node at a time: the count falls to zero.
  await page.waitForFunction(() => {
    const tr = document.querySelector("section.backend[data-backend=ws] tr[data-server=ws-01]");
    return tr && tr.querySelector(".drain-left") && tr.querySelector(".drain-left").textContent.includes(" 0 tunnel");
  }, null, { timeout: WAIT });
  const after = await tunnelsOf("ws-01");
  check(after.every((t) => t === 0), `ws-01 tunnels per node after the drain: ${after}`);

  // Events: the down server's failed health checks, with the reason, per node.
  await page.click("nav a[data-page=events]");
  await page.selectOption("#event-kind", "server_health");
  await page.fill("#event-server", "ws-03");
  await page.click("#event-filter button[type=submit]");
  await page.waitForFunction((n) => {
    const trs = [...document.querySelectorAll("#events tbody tr[data-kind=server_health]")];
    return new Set(trs.filter((tr) => tr.textContent.includes("down:")).map((tr) => tr.children[2].textContent)).size === n;
  }, nodes.length, { timeout: WAIT });
  await page.selectOption("#event-kind", "");
  await page.fill("#event-server", "");
  await page.click("#event-filter button[type=submit]");
  await page.locator("#events tbody tr[data-kind=server_state]").first().waitFor({ timeout: WAIT });
  await page.screenshot({ path: join(shots, "events.png"), fullPage: true });

  // Config: the drain is the newest version, by the dashboard; its diff names the
  // field; roll back to the version before it.
  await page.click("nav a[data-page=config]");
  await page.waitForFunction(() => document.querySelector("#diff-changes code"), null, { timeout: WAIT });
  const newest = await page.locator("#history tbody tr").first().getAttribute("data-version");
  const who = await page.locator("#history tbody tr").first().locator("td").nth(2).textContent();
  check(who === "dashboard", `the drain was made by ${who}`);
  const change = await page.locator("#diff-changes").textContent();
  check(change.includes("backends[ws].servers[ws-01].state added"), `diff shows: ${change}`);
  await page.click(`#history button[data-rollback="${Number(newest) - 1}"]`);
  await page.waitForFunction((v) => {
    const first = document.querySelector("#history tbody tr");
    return first && Number(first.dataset.version) === v + 1 && first.textContent.includes(`rollback to v${v - 1}`);
  }, Number(newest), { timeout: WAIT });
  await page.waitForFunction(() => document.querySelector("#diff-changes").textContent.includes("backends[ws].servers[ws-01].state removed"), null, { timeout: WAIT });
  await page.screenshot({ path: join(shots, "config.png"), fullPage: true });

  // A staged rollout (the test sets a policy of one node, then all, and commits a
  // change): the fleet page shows it with its stages and the nodes not reached yet;
  // pause, then promote it to every node from the panel.
  await step("rollout");
  await page.click("nav a[data-page=fleet]");
  await page.waitForFunction(() => {
    const r = document.querySelector("#rollout");
    return r && !r.hidden && r.dataset.state === "running" && document.querySelectorAll("#nodes [data-staged]").length === 2;
  }, null, { timeout: WAIT });
  await page.screenshot({ path: join(shots, "rollout.png"), fullPage: true });
  await page.click("#rollout button[data-action=pause]");
  await page.waitForFunction(() => document.querySelector("#rollout").dataset.state === "paused", null, { timeout: WAIT });
  await page.click("#rollout button[data-action=promote]");
  await page.waitForFunction(() => document.querySelector("#rollout").dataset.state === "completed"
    && document.querySelectorAll("#nodes [data-staged]").length === 0
    && document.querySelector("#rollout").textContent.includes("promoted by dashboard"), null, { timeout: WAIT });

  check(problems.length === 0, "page errors: " + problems.join("; "));
  console.log("OK");
} catch (err) {
  if (page) {
    await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
    const status = await page.locator("#status").textContent().catch(() => "");
    console.error("status line: " + status);
  }
  console.error("FAILED: " + (err.stack || err.message));
  process.exitCode = 1;
} finally {
  await browser.close();
  stdin.close();
}
