// Loads the dashboard's fleet page in Debian's Chromium and waits until it shows the
// expected nodes online, each on its control-plane replica, with its traffic, for
// tests/tests/replicas.rs. Environment:
//   SLUICE_URL      the control plane's API base (http://127.0.0.1:PORT)
//   SLUICE_TOKEN    the admin token
//   SLUICE_FLEET    node=replica pairs, comma-separated (e.g. n1=cp-b,n2=cp-b)
//   SLUICE_SHOTS    where to save fleet-replica.png
//   SLUICE_CHROMIUM the browser (default /usr/bin/chromium)
// Prints OK, or exits non-zero with what the page showed.
import { launch, newPage } from "./launch.mjs";
import { join } from "node:path";

const want = Object.fromEntries(process.env.SLUICE_FLEET.split(",").map((p) => p.split("=")));
const browser = await launch();
let page;
try {
  let problems;
  ({ page, problems } = await newPage(browser));
  await page.goto(`${process.env.SLUICE_URL}/#token=${process.env.SLUICE_TOKEN}`);
  const shown = () => page.evaluate(() => [...document.querySelectorAll("#nodes tbody tr")].map((tr) => ({
    node: tr.dataset.node,
    status: tr.children[1].textContent,
    replica: tr.children[2].textContent,
  })));
  try {
    await page.waitForFunction((want) => {
      const rows = [...document.querySelectorAll("#nodes tbody tr")];
      return rows.length === Object.keys(want).length && rows.every((tr) =>
        tr.children[1].textContent === "online" && tr.children[2].textContent === want[tr.dataset.node]);
    }, want, { timeout: 30000 });
  } catch (e) {
    throw new Error(`the fleet page shows ${JSON.stringify(await shown())}, not ${JSON.stringify(want)}`);
  }
  if (problems.length) throw new Error("page errors: " + problems.join("; "));
  await page.screenshot({ path: join(process.env.SLUICE_SHOTS, "fleet-replica.png"), fullPage: true });
  console.log("OK");
} catch (e) {
  console.error(e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
