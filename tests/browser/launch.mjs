// Debian's Chromium, headless, as the browser tests run it (SLUICE_CHROMIUM overrides
// the path), and a page that collects the errors the dashboard throws.
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.SLUICE_CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

// A dashboard-sized page; `problems` fills with the page's uncaught errors.
export async function newPage(browser) {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  const problems = [];
  page.on("pageerror", (e) => problems.push(e.message));
  return { page, problems };
}
