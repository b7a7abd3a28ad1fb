// Loads the gateway's built-in dashboard page in headless Chromium and
// reports what it shows (tests/dashboard_page.rs compares it with SQL).
// Usage: node page.mjs <page url> <screenshot path>
import { chromium } from "playwright-core";

const [url, shot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("requestfailed", (r) => errors.push(`${r.url()}: ${r.failure() && r.failure().errorText}`));
  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector("body[data-loaded]", { timeout: 15000 });
  const shown = await page.evaluate(() => {
    const figures = {};
    for (const f of document.querySelectorAll("[data-figure]")) {
      figures[f.dataset.figure] = f.querySelector(".value").textContent;
    }
    const rows = (id) =>
      [...document.querySelectorAll(`#${id} tbody tr`)].map((tr) => [...tr.children].map((td) => td.textContent));
    return {
      from: document.body.dataset.from,
      to: document.body.dataset.to,
      site: document.getElementById("site").value,
      sites: [...document.querySelectorAll("#site option")].map((o) => o.value),
      figures,
      pages: rows("pages"),
      countries: rows("countries"),
      chart_points: document.querySelectorAll("#chart polyline").length,
      error: document.getElementById("error").textContent,
    };
  });
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify({ ...shown, errors }));
} finally {
  await browser.close();
}
