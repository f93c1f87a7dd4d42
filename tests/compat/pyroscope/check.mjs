#!/usr/bin/env node
// Renders a flamebearer JSON profile with Pyroscope's own flame graph component
// (@pyroscope/flamegraph) in headless Chromium and fails unless it renders cleanly.
//
//   node check.mjs PROFILE.json [--expect NAME]... [--screenshot OUT.png]
//
// Fails (exit 1, reasons on stderr) when: the page throws or logs a console error; the table
// view lists no functions; an --expect name is not in the rendered table; the root row's
// totals disagree with numTicks (single) or leftTicks/rightTicks (double); the flame graph
// canvas is missing, hidden or blank; hovering the root bar does not show the root's name in
// the component's tooltip; or the levels are malformed in a way the component would draw
// silently (bars outside the profile or their parent, unknown name indexes, ragged levels).
// Exit 2 on usage or setup errors. Needs no network: the page is
// bundled in memory by esbuild and served to the browser by request interception.

import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ORIGIN = 'http://pyroscope-compat.test';
const TIMEOUT_MS = 15_000;
const USAGE = 'usage: node check.mjs PROFILE.json [--expect NAME]... [--screenshot OUT.png]';

const die = (code, msg) => {
  console.error(`pyroscope-compat: ${msg}`);
  process.exit(code);
};

function parseArgs(argv) {
  const opts = { profile: null, expect: [], screenshot: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : die(2, `${a} needs a value\n${USAGE}`));
    if (a === '--expect') opts.expect.push(value());
    else if (a === '--screenshot') opts.screenshot = value();
    else if (a === '-h' || a === '--help') {
      console.log(USAGE);
      process.exit(0);
    }
    else if (a.startsWith('-') || opts.profile) die(2, `unexpected argument ${a}\n${USAGE}`);
    else opts.profile = a;
  }
  if (!opts.profile) die(2, USAGE);
  return opts;
}

async function loadProfile(file) {
  let p;
  try {
    p = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    die(1, `FAIL: cannot read ${file} as JSON: ${e.message}`);
  }
  const fb = p?.flamebearer;
  const format = p?.metadata?.format;
  const ticks = format === 'double' ? [fb?.numTicks, p.leftTicks, p.rightTicks] : [fb?.numTicks];
  if (!Array.isArray(fb?.names) || !Array.isArray(fb?.levels) || !['single', 'double'].includes(format) || !ticks.every(Number.isInteger)) {
    die(1, `FAIL: ${file} is not a flamebearer profile (needs flamebearer.names, .levels, .numTicks, ` +
      'metadata.format single|double, and leftTicks/rightTicks for double)');
  }
  return p;
}

// The layout the component draws, decoded as it decodes it (offsets are deltas from the end of
// the previous bar in the level; see src/FlameGraph/decode.ts in @pyroscope/flamegraph). The
// component silently draws malformed levels, so check that each bar names a known function and
// lies inside [0, ticks] and inside a bar of the level above (per side for a diff).
function layoutProblems(profile) {
  const { names, levels, numTicks } = profile.flamebearer;
  const double = profile.metadata.format === 'double';
  const step = double ? 7 : 4;
  const sides = double
    ? [[0, profile.leftTicks, 'left ', 'leftTicks'], [3, profile.rightTicks, 'right ', 'rightTicks']]
    : [[0, numTicks, '', 'numTicks']];
  const problems = levels.length ? [] : ['levels is empty'];
  let above = null; // per side: the non-empty [start, end) spans of the level above
  levels.forEach((level, i) => {
    if (!Array.isArray(level) || level.length === 0 || level.length % step !== 0) {
      const what = Array.isArray(level) ? `has ${level.length} numbers` : `is ${JSON.stringify(level)}`;
      problems.push(`levels[${i}] ${what}, not a non-empty array of a multiple of ${step} numbers`);
      above = null;
      return;
    }
    if (!level.every((v) => Number.isInteger(v) && v >= 0)) problems.push(`levels[${i}] holds a value that is not a non-negative integer`);
    const spans = sides.map(([at, ticks, side, ticksName], s) => {
      const out = [];
      let end = 0, p = 0;
      for (let j = 0; j < level.length; j += step) {
        const start = end + level[j + at], total = level[j + at + 1], self = level[j + at + 2];
        end = start + total;
        const bar = `levels[${i}][${j}]`;
        if (self > total) problems.push(`${bar}: ${side}self ${self} exceeds ${side}total ${total}`);
        if (end > ticks) problems.push(`${bar}: ${side}bar ends at ${end}, beyond ${ticksName} ${ticks}`);
        if (total === 0) continue;
        out.push([start, end]);
        if (!above) continue;
        while (p < above[s].length && above[s][p][1] < end) p++;
        if (p === above[s].length || above[s][p][0] > start) problems.push(`${bar}: ${side}bar [${start}, ${end}) lies under no bar of levels[${i - 1}]`);
      }
      return out;
    });
    for (let j = step - 1; j < level.length; j += step) {
      if (!(level[j] >= 0 && level[j] < names.length)) problems.push(`levels[${i}][${j}]: name index ${level[j]} is outside names (${names.length})`);
    }
    above = spans;
  });
  return problems;
}

// The page: Pyroscope's component and React, bundled the way an app would ship them.
async function bundlePage(esbuild) {
  const { outputFiles } = await esbuild.build({
    entryPoints: [join(HERE, 'page.jsx')],
    absWorkingDir: HERE,
    bundle: true,
    write: false,
    outdir: 'out',
    format: 'iife',
    jsx: 'automatic',
    minify: true,
    define: { 'process.env.NODE_ENV': '"production"' },
    logLevel: 'silent',
  });
  const file = (ext) => outputFiles.find((f) => f.path.endsWith(ext)).contents;
  return {
    '/': {
      type: 'text/html',
      body: '<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="/page.css">' +
        '<style>body{margin:0;padding:16px;background:#fff}</style></head>' +
        '<body><div id="root"></div><script src="/page.js"></script></body></html>',
    },
    '/page.js': { type: 'text/javascript', body: Buffer.from(file('.js')) },
    '/page.css': { type: 'text/css', body: Buffer.from(file('.css')) },
  };
}

// Runs in the page once the component has rendered: what it shows, for the checks below.
function inspectPage() {
  const rows = [...document.querySelectorAll('[data-testid="table-view"] tr[data-row]')].map((tr) => ({
    name: tr.querySelector('.symbol-name')?.textContent ?? '',
    // data-row is "type;name;numbers..."; the name may itself contain ';', the numbers never do.
    numbers: tr.getAttribute('data-row').split(';').slice(2).map(Number),
  }));
  const canvas = document.querySelector('canvas[data-testid="flamegraph-canvas"]');
  if (!canvas) return { rows, canvas: null };
  let hidden = false;
  for (let el = canvas; el; el = el.parentElement) {
    const s = getComputedStyle(el);
    if (s.display === 'none' || s.visibility === 'hidden' || Number(s.opacity) === 0) hidden = true;
  }
  const rect = canvas.getBoundingClientRect();
  const info = { width: canvas.width, height: canvas.height, top: rect.top, left: rect.left, cssWidth: rect.width, hidden, painted: 0, colors: 0 };
  if (canvas.width > 0 && canvas.height > 0) {
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    const colors = new Set();
    for (let i = 0; i < data.length; i += 4) {
      if (data[i + 3] === 0) continue;
      info.painted++;
      colors.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
    }
    info.colors = colors.size;
    info.paintedFraction = info.painted / (canvas.width * canvas.height);
  }
  return { rows, canvas: info };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const profile = await loadProfile(opts.profile);
  const { format } = profile.metadata;
  const fb = profile.flamebearer;

  let esbuild, chromium;
  try {
    esbuild = await import('esbuild');
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    die(2, `missing dependencies (${e.message}); run: npm ci --prefix ${HERE}`);
  }
  const require = createRequire(import.meta.url);
  const versions = {
    flamegraph: require('@pyroscope/flamegraph/package.json').version,
    react: require('react/package.json').version,
  };
  const files = await bundlePage(esbuild);

  const started = Date.now();
  let browser;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  } catch (e) {
    die(2, `cannot start Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH): ${e.message.split('\n')[0]}`);
  }
  const problems = layoutProblems(profile);
  const failures = problems.slice(0, 5).map((m) => `flamebearer: ${m}`);
  if (problems.length > 5) failures.push(`flamebearer: ... and ${problems.length - 5} more layout problems`);
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1300 }, deviceScaleFactor: 1 });
    page.setDefaultTimeout(TIMEOUT_MS);
    page.on('pageerror', (e) => failures.push(`page threw: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') failures.push(`console error: ${m.text().split('\n')[0]}`);
    });
    await page.route('**/*', (route) => {
      const url = new URL(route.request().url());
      const f = url.origin === ORIGIN && files[url.pathname];
      if (f) return route.fulfill({ status: 200, contentType: f.type, body: f.body });
      failures.push(`page requested ${url.href}, which the checker does not serve`);
      return route.abort();
    });
    await page.goto(`${ORIGIN}/`);
    const threw = new Promise((resolve) => page.once('pageerror', resolve));
    await page.evaluate((p) => window.renderProfile(p), profile);
    // Rendered: the canvas has been drawn and the table has its rows (or its "No items found"),
    // or the component chose its "No data available" view; or it threw (already recorded).
    try {
      await Promise.race([threw, page.waitForFunction(() =>
        (document.querySelector('canvas[data-testid="flamegraph-canvas"][data-state="rendered"]') &&
          document.querySelector('[data-testid="table-view"] :is(tr[data-row], .unsupported-format)')) ||
        document.querySelector('[data-testid="no-data"]'),
      )]);
    } catch {
      failures.push(`the component did not finish rendering within ${TIMEOUT_MS / 1000} s`);
    }
    if (await page.locator('[data-testid="no-data"]').count()) failures.push('the component shows "No data available" (names has at most one entry)');
    // The canvas redraws on resize (debounced); let that settle.
    await page.waitForTimeout(300);
    const seen = await page.evaluate(inspectPage);

    // Table view: rows listed, expected names among them, root totals consistent.
    const byName = new Map(seen.rows.map((r) => [r.name, r]));
    if (seen.rows.length === 0) failures.push('the table view lists no functions');
    const missing = opts.expect.filter((n) => !byName.has(n));
    for (const n of missing) failures.push(`expected function not in the rendered table: ${JSON.stringify(n)}`);
    const step = format === 'double' ? 7 : 4;
    const rootName = fb.names[fb.levels[0]?.[step - 1]];
    const root = byName.get(rootName);
    if (rootName === undefined || !root) {
      failures.push(`no table row for the root node (levels[0] names ${JSON.stringify(rootName)})`);
    } else if (format === 'single' && root.numbers[1] !== fb.numTicks) {
      failures.push(`root "${rootName}" total is ${root.numbers[1]} in the table, numTicks is ${fb.numTicks}`);
    } else if (format === 'double' && (root.numbers[0] !== profile.leftTicks || root.numbers[2] !== profile.rightTicks)) {
      failures.push(`root "${rootName}" totals are ${root.numbers[0]}/${root.numbers[2]} in the table, leftTicks/rightTicks are ${profile.leftTicks}/${profile.rightTicks}`);
    }

    // Flame graph: a visible canvas with real drawing on it.
    const c = seen.canvas;
    if (!c) failures.push('the flame graph canvas is missing');
    else if (c.width === 0 || c.height === 0) failures.push(`the flame graph canvas is empty (${c.width}x${c.height})`);
    else if (c.hidden) failures.push('the flame graph canvas is hidden (the component found no data to show)');
    else if (c.paintedFraction < 0.05 || c.colors < 3) {
      failures.push(`the flame graph canvas is blank (${(100 * c.paintedFraction).toFixed(1)}% painted, ${c.colors} colours)`);
    }

    // Hit-testing: hovering the middle of the top bar must name the root in the tooltip.
    if (c && c.width > 0 && c.height > 0 && root) {
      await page.mouse.move(c.left + c.cssWidth / 2, c.top + 10);
      const tip = page.locator('[data-testid="flamegraph-view"] [data-testid="tooltip-function-name"]');
      const text = await tip.textContent({ timeout: 5000 }).catch(() => null);
      if (text !== rootName) failures.push(`hovering the root bar shows ${JSON.stringify(text)}, expected ${JSON.stringify(rootName)}`);
      await page.mouse.move(0, 0);
    }

    if (opts.screenshot) await page.screenshot({ path: opts.screenshot });
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    const what = `${opts.profile} (${format}) in @pyroscope/flamegraph ${versions.flamegraph}, React ${versions.react}, Chromium ${browser.version()}`;
    if (failures.length) {
      for (const f of failures) console.error(`pyroscope-compat: FAIL: ${f}`);
      console.error(`pyroscope-compat: FAIL: ${what}`);
      process.exitCode = 1;
      return;
    }
    console.log(`pyroscope-compat: OK: ${what}: ${seen.rows.length} table rows, ` +
      `${opts.expect.length}/${opts.expect.length} expected names found, canvas ${c.width}x${c.height} ` +
      `(${(100 * c.paintedFraction).toFixed(0)}% painted, ${c.colors} colours), tooltip "${rootName}"; ${secs} s` +
      (opts.screenshot ? `; screenshot ${opts.screenshot}` : ''));
  } finally {
    await browser.close();
  }
}

main().catch((e) => die(2, `error: ${e.stack || e}`));
