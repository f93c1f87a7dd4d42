// critpath's page: the series of the busiest threads over a range, the icicle graph of a window
// chosen on the chart, a differential view of two windows, and the explain and regression panels.
// Everything the page shows is in its URL (range, selector, type, windows, zoom, search), so a
// view can be shared by its address.

import uPlot from "uplot";

import {
  type Deploy,
  type Diff,
  type DiffNode,
  type Explanation,
  type Profile,
  type Regressions,
  type Series,
  type TreeNode,
  get,
} from "./api";
import { type Frame, Icicle } from "./icicle";

interface Window {
  from: number;
  to: number;
}

interface State {
  range: string;
  from: string;
  to: string;
  query: string;
  type: string;
  group: string;
  compare: boolean;
  /** The window shown (the comparison window in compare mode). */
  window?: Window;
  /** Compare mode: the baseline window. */
  base?: Window;
  zoom: string[];
  search: string;
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const SERIES_SHOWN = 10;

function readState(): State {
  const p = new URLSearchParams(location.search);
  const win = (v: string | null): Window | undefined => {
    const m = v?.match(/^(\d+)-(\d+)$/);
    return m ? { from: Number(m[1]), to: Number(m[2]) } : undefined;
  };
  return {
    range: p.get("range") ?? "15m",
    from: p.get("from") ?? "",
    to: p.get("to") ?? "",
    query: p.get("query") ?? "",
    type: p.get("type") ?? "cpu",
    group: p.get("group") ?? "comm",
    compare: p.get("compare") === "1",
    window: win(p.get("window")),
    base: win(p.get("base")),
    zoom: p.get("zoom")?.split(";").filter((s) => s !== "") ?? [],
    search: p.get("search") ?? "",
  };
}

function writeState() {
  const p = new URLSearchParams();
  p.set("range", state.range);
  if (state.range === "custom") {
    p.set("from", state.from);
    p.set("to", state.to);
  }
  if (state.query) p.set("query", state.query);
  if (state.type !== "cpu") p.set("type", state.type);
  if (state.group !== "comm") p.set("group", state.group);
  if (state.compare) p.set("compare", "1");
  if (state.window) p.set("window", `${state.window.from}-${state.window.to}`);
  if (state.base) p.set("base", `${state.base.from}-${state.base.to}`);
  if (state.zoom.length) p.set("zoom", state.zoom.join(";"));
  if (state.search) p.set("search", state.search);
  history.replaceState(null, "", `${location.pathname}?${p}`);
}

const state = readState();
const icicle = new Icicle($<HTMLCanvasElement>("icicle"), $("tooltip"), (path) => {
  state.zoom = path;
  writeState();
});
let chart: uPlot | undefined;
let deploys: Deploy[] = [];

function status(text: string, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

function rangeParams(): { from: string; to: string } {
  return state.range === "custom"
    ? { from: state.from || "now-15m", to: state.to || "now" }
    : { from: `now-${state.range}`, to: "now" };
}

function rangeMs(): number {
  const units: Record<string, number> = { m: 60e3, h: 3600e3 };
  const m = state.range.match(/^(\d+)([mh])$/);
  return m ? Number(m[1]) * units[m[2]] : 3600e3;
}

function fmtTime(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

/** The series of the busiest threads over the range, with the deploys as dashed lines. */
async function loadSeries() {
  const range = rangeParams();
  const stepMs = Math.max(1000, Math.round(rangeMs() / 300 / 1000) * 1000);
  document.body.dataset.series = "loading";
  const [series, deployList] = await Promise.all([
    get<Series>("/api/v1/series", {
      query: state.query,
      ...range,
      step: `${stepMs / 1000}s`,
      type: state.type,
      group_by: state.group,
    }),
    get<{ deploys: Deploy[] }>("/api/v1/deploys", { query: state.query, ...range }).catch(() => ({ deploys: [] })),
  ]);
  deploys = deployList.deploys;
  const busiest = [...series.series].sort((a, b) => b.total - a.total).slice(0, SERIES_SHOWN);
  const data: uPlot.AlignedData = [
    series.timestamps.map((t) => t / 1000),
    ...busiest.map((s) => s.values.map((v) => v ?? 0)),
  ];
  const palette = ["#e65100", "#1565c0", "#2e7d32", "#6a1b9a", "#c62828", "#00838f", "#9e9d24", "#4e342e", "#ad1457", "#37474f"];
  const opts: uPlot.Options = {
    width: $("chart").clientWidth || 900,
    height: 220,
    series: [
      {},
      ...busiest.map((s, i) => ({
        label: s.labels[state.group] ?? Object.values(s.labels).join(","),
        stroke: palette[i % palette.length],
        width: 1.5,
      })),
    ],
    axes: [{}, { label: `${series.type} (${series.unit}) per ${series.step_ms / 1000} s`, size: 60 }],
    cursor: { drag: { x: true, y: false, setScale: false } },
    hooks: {
      setSelect: [(u) => {
        if (u.select.width < 3) return;
        const from = u.posToVal(u.select.left, "x") * 1000;
        const to = u.posToVal(u.select.left + u.select.width, "x") * 1000;
        u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
        choose({ from: Math.round(from), to: Math.round(to) });
      }],
      draw: [(u) => drawDeploys(u)],
      // The time range drawn, in seconds (tests click at a given time with it).
      setScale: [(u, key) => {
        if (key !== "x") return;
        $("chart").dataset.xmin = String(u.scales.x.min);
        $("chart").dataset.xmax = String(u.scales.x.max);
      }],
    },
  };
  chart?.destroy();
  $("chart").textContent = "";
  chart = new uPlot(opts, data, $("chart"));
  // A click without a drag takes the few steps around it.
  let down = 0;
  chart.over.addEventListener("mousedown", (e) => (down = e.clientX));
  chart.over.addEventListener("mouseup", (e) => {
    if (Math.abs(e.clientX - down) >= 3 || !chart) return;
    const at = chart.posToVal(chart.cursor.left ?? 0, "x") * 1000;
    const half = Math.max(5 * series.step_ms, 5000);
    choose({ from: Math.round(at - half), to: Math.round(at + half) });
  });
  renderDeploys();
  document.body.dataset.series = busiest.length ? "ready" : "empty";
  if (!busiest.length) status("nothing sampled in this range");
}

function drawDeploys(u: uPlot) {
  const ctx = u.ctx;
  ctx.save();
  // The chosen windows: the baseline in blue, the window shown in orange.
  for (const [w, colour] of [
    [state.compare ? state.base : undefined, "rgba(21, 101, 192, 0.15)"],
    [state.window, "rgba(239, 108, 0, 0.18)"],
  ] as const) {
    if (!w) continue;
    const x0 = u.valToPos(w.from / 1000, "x", true);
    const x1 = u.valToPos(w.to / 1000, "x", true);
    ctx.fillStyle = colour;
    ctx.fillRect(x0, u.bbox.top, Math.max(x1 - x0, 2), u.bbox.height);
  }
  ctx.strokeStyle = "#6a1b9a";
  ctx.setLineDash([5, 4]);
  for (const d of deploys) {
    const x = u.valToPos(d.at_ms / 1000, "x", true);
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
  }
  ctx.restore();
}

function renderDeploys() {
  const list = $("deploys");
  list.textContent = "";
  for (const d of deploys) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.textContent = `deploy ${d.service} ${d.version} at ${fmtTime(d.at_ms)}`;
    button.addEventListener("click", () => loadRegressions(d).catch((e) => status(String(e), true)));
    li.append(button);
    list.append(li);
  }
}

/** A window chosen on the chart: the profile's, or in compare mode first the baseline. */
function choose(w: Window) {
  if (state.compare && !state.base) {
    state.base = w;
    status(`baseline ${fmtTime(w.from)}–${fmtTime(w.to)} chosen; now choose the window to compare with it`);
    writeState();
    chart?.redraw(false);
    return;
  }
  state.window = w;
  state.zoom = [];
  writeState();
  chart?.redraw(false);
  loadProfile().catch((e) => status(String(e), true));
}

function fromTree(n: TreeNode): Frame {
  return { name: n.name, self: n.self, total: n.total, children: n.children.map(fromTree) };
}

function fromDiff(n: DiffNode): Frame {
  return {
    name: n.name,
    self: n.comparison_self,
    total: n.comparison_total,
    baseSelf: n.base_self,
    baseTotal: n.base_total,
    delta: n.delta_share,
    children: n.children.map(fromDiff),
  };
}

/** The icicle graph of the chosen window (and in compare mode the difference table). */
async function loadProfile() {
  const w = state.window;
  if (!w) return;
  document.body.dataset.profile = "loading";
  $<HTMLButtonElement>("explain").disabled = false;
  const params = { query: state.query, from: w.from, to: w.to, type: state.type, max_nodes: 8000 };
  if (state.compare && state.base) {
    const diff = await get<Diff>("/api/v1/diff", {
      ...params,
      baseline_from: state.base.from,
      baseline_to: state.base.to,
    });
    $("window-label").textContent =
      `${fmtTime(state.base.from)}–${fmtTime(state.base.to)} → ${fmtTime(w.from)}–${fmtTime(w.to)}: ` +
      `${diff.base_total} → ${diff.comparison_total} ${diff.unit}`;
    icicle.setTree(fromDiff(diff.root), diff.unit, diff.base_total);
    renderDiffTable(diff);
  } else {
    const profile = await get<Profile>("/api/v1/profile", params);
    $("window-label").textContent = `${fmtTime(w.from)}–${fmtTime(w.to)}: ${profile.total} ${profile.unit}`;
    icicle.setTree(fromTree(profile.root), profile.unit);
    $("diff-table").hidden = true;
  }
  if (state.zoom.length) icicle.zoomToPath(state.zoom);
  applySearch();
  status("");
  document.body.dataset.profile = "ready";
}

interface DiffRow {
  function: string;
  base: number;
  comparison: number;
  delta: number;
}

let diffRows: DiffRow[] = [];
let diffSort: keyof DiffRow = "delta";

/** Self shares per function in both windows, most grown first. */
function renderDiffTable(diff: Diff) {
  const byName = new Map<string, DiffRow>();
  const visit = (n: DiffNode, depth: number) => {
    // Depth 1 is the thread name: its self is nothing.
    if (depth > 1) {
      const row = byName.get(n.name) ?? { function: n.name, base: 0, comparison: 0, delta: 0 };
      row.base += n.base_self / Math.max(diff.base_total, 1);
      row.comparison += n.comparison_self / Math.max(diff.comparison_total, 1);
      byName.set(n.name, row);
    }
    n.children.forEach((c) => visit(c, depth + 1));
  };
  visit(diff.root, 0);
  diffRows = [...byName.values()].map((r) => ({ ...r, delta: r.comparison - r.base }));
  $("diff-table").hidden = false;
  sortDiffTable();
}

function sortDiffTable() {
  const rows = [...diffRows].sort((a, b) =>
    diffSort === "function" ? a.function.localeCompare(b.function) : (b[diffSort] as number) - (a[diffSort] as number),
  );
  const body = $("diff-table").querySelector("tbody")!;
  body.textContent = "";
  const pct = (v: number) => `${(100 * v).toFixed(2)}%`;
  for (const r of rows.slice(0, 50)) {
    const tr = document.createElement("tr");
    for (const [text, cls] of [
      [r.function, ""],
      [pct(r.base), ""],
      [pct(r.comparison), ""],
      [`${r.delta >= 0 ? "+" : ""}${(100 * r.delta).toFixed(2)} pts`, r.delta > 0 ? "grown" : r.delta < 0 ? "shrunk" : ""],
    ]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    body.append(tr);
  }
}

function applySearch() {
  const result = icicle.setSearch(state.search);
  $("search-result").textContent = state.search
    ? `${result.frames} matching frames, ${(100 * result.share).toFixed(1)}% of the window`
    : "";
}

/** Ranked functions with their evidence, and the critical path, for the chosen window. */
async function loadExplain() {
  const w = state.window;
  if (!w) return;
  document.body.dataset.explain = "loading";
  const answer = await get<Explanation>("/api/v1/explain", {
    query: state.query,
    from: w.from,
    to: w.to,
    top: 10,
    baseline_from: state.compare ? state.base?.from : undefined,
    baseline_to: state.compare ? state.base?.to : undefined,
  });
  const list = $("explain-list");
  list.textContent = "";
  for (const f of answer.functions) {
    const li = document.createElement("li");
    const name = document.createElement("strong");
    name.textContent = f.function;
    const e = f.evidence;
    const evidence = document.createElement("div");
    evidence.className = "evidence";
    evidence.textContent =
      `score ${f.score.toFixed(3)} · on the critical path ${(100 * e.critical_path_share).toFixed(0)}% · ` +
      `CPU ${e.cpu_self_s.toFixed(2)} s self · others waited on it ${e.blame_s.toFixed(2)} s · ${e.threads} threads`;
    li.append(name, evidence);
    list.append(li);
  }
  const path = $("critical-path");
  path.textContent = answer.critical_path.length ? `critical path (${answer.method}):` : "";
  for (const hop of answer.critical_path) {
    const div = document.createElement("div");
    div.className = "hop";
    const top = hop.functions.slice(0, 3).map(([n, s]) => `${n} ${s.toFixed(2)} s`).join(", ");
    div.textContent = `${hop.actor}${hop.waited_s > 0 ? ` (waited ${hop.waited_s.toFixed(2)} s)` : ""}: ${top}`;
    path.append(div);
  }
  document.body.dataset.explain = "ready";
}

async function loadRegressions(d: Deploy) {
  const answer = await get<Regressions>("/api/v1/regressions", { deploy: d.id, query: state.query, top: 20 });
  $("regressions-title").hidden = false;
  $("regressions-title").textContent =
    `Regression suspects of ${d.service} ${d.version}: ${answer.regressions} regressions, ` +
    `then ranked by ${answer.method.replaceAll("_", " ")}`;
  const list = $("regressions-list");
  list.textContent = "";
  // The regressions (significant growths) first, then the other suspects that grew.
  const pct = (share: number) => `${(100 * share).toFixed(1)}%`;
  for (const s of answer.suspects.filter((s) => s.regression || s.score > 0).slice(0, 10)) {
    const li = document.createElement("li");
    li.textContent =
      `${s.function}: ${s.before.toFixed(3)} → ${s.after.toFixed(3)} CPU-s/s (z ${s.z.toFixed(1)}), ` +
      `critical-path share ${pct(s.critical_path_before)} → ${pct(s.critical_path_after)}` +
      (s.regression ? " — regression" : "");
    list.append(li);
  }
}

/** Label values for the selector's autocompletion. */
async function loadLabels() {
  const range = rangeParams();
  const options = $("label-values");
  options.textContent = "";
  for (const name of ["service", "comm"]) {
    const answer = await get<{ values: { value: string }[] }>(`/api/v1/labels/${name}/values`, range).catch(() => ({
      values: [],
    }));
    for (const v of answer.values.slice(0, 100)) {
      const option = document.createElement("option");
      option.value = `{${name}="${v.value}"}`;
      options.append(option);
    }
  }
}

async function refresh() {
  try {
    status("loading…");
    await loadSeries();
    if (state.window) await loadProfile();
    else status(state.compare ? "choose a baseline window on the chart" : "choose a window on the chart");
    loadLabels().catch(() => undefined);
  } catch (e) {
    status(String(e instanceof Error ? e.message : e), true);
    document.body.dataset.series = "error";
  }
}

function bind() {
  const range = $<HTMLSelectElement>("range");
  const from = $<HTMLInputElement>("from");
  const to = $<HTMLInputElement>("to");
  const query = $<HTMLInputElement>("query");
  const type = $<HTMLSelectElement>("type");
  const group = $<HTMLSelectElement>("group");
  const compare = $<HTMLInputElement>("compare");
  const search = $<HTMLInputElement>("search");
  range.value = state.range;
  from.value = state.from;
  to.value = state.to;
  query.value = state.query;
  type.value = state.type;
  group.value = state.group;
  compare.checked = state.compare;
  search.value = state.search;
  $("custom-range").hidden = state.range !== "custom";
  const changed = () => {
    state.range = range.value;
    state.from = from.value;
    state.to = to.value;
    state.query = query.value.trim();
    state.type = type.value;
    state.group = group.value;
    $("custom-range").hidden = state.range !== "custom";
    writeState();
    refresh();
  };
  range.addEventListener("change", changed);
  type.addEventListener("change", changed);
  group.addEventListener("change", changed);
  for (const input of [from, to, query]) input.addEventListener("keydown", (e) => e.key === "Enter" && changed());
  $("refresh").addEventListener("click", changed);
  compare.addEventListener("change", () => {
    state.compare = compare.checked;
    state.base = undefined;
    writeState();
    status(state.compare ? "choose a baseline window on the chart" : "");
    if (!state.compare && state.window) loadProfile().catch((e) => status(String(e), true));
  });
  search.addEventListener("input", () => {
    state.search = search.value.trim();
    writeState();
    applySearch();
  });
  $("reset-zoom").addEventListener("click", () => icicle.resetZoom());
  $("explain").addEventListener("click", () => loadExplain().catch((e) => status(String(e), true)));
  for (const th of $("diff-table").querySelectorAll("th")) {
    th.addEventListener("click", () => {
      diffSort = (th.dataset.key ?? "delta") as keyof DiffRow;
      sortDiffTable();
    });
  }
  window.addEventListener("resize", () => chart?.setSize({ width: $("chart").clientWidth, height: 220 }));
}

bind();
refresh();
