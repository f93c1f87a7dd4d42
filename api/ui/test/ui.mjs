// Drives critpath's page in headless Chromium (Debian's, through playwright-core) against a
// running `critpath run`, as a user would, and saves a screenshot of each step. Called by
// tests/tests/suite/ui.rs, which runs the workloads and passes what it expects:
//
//   node ui.mjs BASE_URL OUT_DIR SCENARIO_JSON
//
// SCENARIO_JSON: {hot: {at_ms, function}, compare: {base: [from, to], comparison: [from, to]},
// explain: {window: [from, to], query}, deploy: {service, version, at}}. Prints one JSON line of what it saw;
// exits 1 with a message when a step fails.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, out, scenarioJson] = process.argv.slice(2);
const scenario = JSON.parse(scenarioJson);
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const seen = {};

function fail(message) {
  console.error(`ui test: ${message}`);
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.on("request", (r) => {
    if (r.url().includes("/api/v1/explain")) seen.explain_request = r.url();
  });

  // 1. The series: the workload's thread among the busiest.
  await page.goto(`${base}/?range=5m`);
  await page.waitForSelector('body[data-series="ready"]', { timeout: 30000 });
  seen.legend = await page.locator(".u-legend .u-series .u-label").allTextContents();
  await page.screenshot({ path: join(out, "ui-1-series.png") });

  // Pixel of a time on the chart's plotting area.
  const over = page.locator(".u-over");
  const xOf = async (ms) => {
    const box = await over.boundingBox();
    const [min, max] = await page.evaluate(() => [Number(document.getElementById("chart").dataset.xmin), Number(document.getElementById("chart").dataset.xmax)]);
    return { x: box.x + ((ms / 1000 - min) / (max - min)) * box.width, y: box.y + box.height / 2 };
  };
  const drag = async ([from, to]) => {
    const a = await xOf(from);
    const b = await xOf(to);
    await page.mouse.move(a.x, a.y);
    await page.mouse.down();
    await page.mouse.move((a.x + b.x) / 2, a.y, { steps: 4 });
    await page.mouse.move(b.x, b.y, { steps: 4 });
    await page.mouse.up();
  };

  // 2. A click on the chart at the hot workload's time: its icicle graph; the search finds the
  // hot function under most of the window.
  const at = await xOf(scenario.hot.at_ms);
  await page.mouse.click(at.x, at.y);
  await page.waitForSelector('body[data-profile="ready"]', { timeout: 30000 });
  await page.screenshot({ path: join(out, "ui-2-icicle.png") });
  await page.fill("#search", scenario.hot.function);
  seen.search = await page.textContent("#search-result");
  seen.url_after_click = page.url();
  await page.screenshot({ path: join(out, "ui-3-search.png") });
  await page.fill("#search", "");

  // 3. Compare: a baseline window, then the comparison window; the most grown function first.
  await page.check("#compare");
  await drag(scenario.compare.base);
  await page.waitForFunction(() => document.getElementById("status").textContent.includes("baseline"));
  await page.evaluate(() => (document.body.dataset.profile = "waiting"));
  await drag(scenario.compare.comparison);
  await page.waitForSelector('body[data-profile="ready"]', { timeout: 30000 });
  seen.diff_rows = await page.locator("#diff-table tbody tr").evaluateAll((rows) =>
    rows.slice(0, 5).map((r) => [...r.children].map((td) => td.textContent)),
  );
  await page.screenshot({ path: join(out, "ui-4-compare.png") });

  // 4. Explain the lock-bound workload's window (selected by its pid, through the URL: shared
  // views work).
  const [from, to] = scenario.explain.window;
  await page.goto(`${base}/?range=5m&query=${encodeURIComponent(scenario.explain.query)}&window=${from}-${to}`);
  await page.waitForSelector('body[data-profile="ready"]', { timeout: 30000 });
  await page.click("#explain");
  await page.waitForSelector('body[data-explain="ready"]', { timeout: 60000 });
  seen.explain = await page.locator("#explain-list li strong").allTextContents();
  seen.critical_path = await page.textContent("#critical-path");
  await page.screenshot({ path: join(out, "ui-5-explain.png") });

  // 5. A deploy marked between the windows shows on the chart; its regression suspects list
  // what the new version runs more.
  await page.evaluate(async (deploy) => {
    const r = await fetch("/api/v1/deploys", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(deploy),
    });
    if (!r.ok) throw new Error(`marking the deploy: ${r.status} ${await r.text()}`);
  }, scenario.deploy);
  await page.goto(`${base}/?range=5m`);
  await page.waitForSelector('body[data-series="ready"]', { timeout: 30000 });
  await page.click("#deploys button");
  await page.waitForSelector("#regressions-list li", { timeout: 30000 });
  seen.regressions = await page.locator("#regressions-list li").allTextContents();
  await page.screenshot({ path: join(out, "ui-6-regressions.png") });
  seen.errors = errors;
  writeFileSync(join(out, "ui-seen.json"), JSON.stringify(seen, null, 2));
  console.log(JSON.stringify(seen));
} catch (e) {
  fail(`${e.message.split("\n")[0]}; seen so far: ${JSON.stringify(seen)}`);
} finally {
  await browser.close();
}
