// Builds the page into OUTDIR (argv[2]): type-checks the sources (tsc), bundles
// src/main.ts with esbuild into app.js (uPlot included, nothing fetched at run time), and
// copies index.html and the styles. Run by api/build.rs; `npm run build` writes to dist/.
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error("usage: node build.mjs OUTDIR");
  process.exit(2);
}
mkdirSync(out, { recursive: true });
execFileSync(process.execPath, [join(here, "node_modules/typescript/bin/tsc"), "--noEmit", "-p", here], {
  stdio: "inherit",
});
await esbuild.build({
  entryPoints: [join(here, "src/main.ts")],
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2022",
  outfile: join(out, "app.js"),
  logLevel: "warning",
});
const css =
  readFileSync(join(here, "node_modules/uplot/dist/uPlot.min.css"), "utf8") +
  "\n" +
  readFileSync(join(here, "src/app.css"), "utf8");
writeFileSync(join(out, "app.css"), css);
copyFileSync(join(here, "index.html"), join(out, "index.html"));
