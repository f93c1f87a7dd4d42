// The icicle graph, drawn on a canvas: the root at the top, each frame as wide as its total and
// its callees below it. Profiles colour frames by name; differences colour them by how much
// their share grew (red) or shrank (blue). Click zooms into a frame, hovering shows its numbers,
// a search highlights matching frames.

const ROW = 18;
const MAX_ROWS = 160;

/** One frame of the tree being drawn, in either mode. */
export interface Frame {
  name: string;
  self: number;
  total: number;
  /** Differences only: the baseline's self and total, and the change of share. */
  baseSelf?: number;
  baseTotal?: number;
  delta?: number;
  children: Frame[];
  parent?: Frame;
}

interface Placed {
  frame: Frame;
  x: number;
  width: number;
  depth: number;
}

export interface SearchResult {
  frames: number;
  share: number;
}

export class Icicle {
  private root?: Frame;
  private zoom?: Frame;
  private placed: Placed[] = [];
  private search = "";
  private unit = "samples";
  private baseTotal = 0;
  private maxDelta = 0;

  constructor(
    private readonly canvas: HTMLCanvasElement,
    private readonly tooltip: HTMLElement,
    private readonly onZoom: (path: string[]) => void,
  ) {
    canvas.addEventListener("mousemove", (e) => this.hover(e));
    canvas.addEventListener("mouseleave", () => (this.tooltip.hidden = true));
    canvas.addEventListener("click", (e) => {
      const hit = this.at(e);
      if (hit) this.zoomTo(hit.frame);
    });
    window.addEventListener("resize", () => this.render());
  }

  /** Shows a tree; `baseTotal` is set for differences. */
  setTree(root: Frame, unit: string, baseTotal?: number) {
    link(root);
    this.root = root;
    this.zoom = root;
    this.unit = unit;
    this.baseTotal = baseTotal ?? 0;
    this.maxDelta = 0;
    walk(root, (f) => (this.maxDelta = Math.max(this.maxDelta, Math.abs(f.delta ?? 0))));
    this.render();
  }

  /** Zooms into the frame at this path of names from the root (what the URL keeps). */
  zoomToPath(path: string[]) {
    let frame = this.root;
    for (const name of path) {
      frame = frame?.children.find((c) => c.name === name);
    }
    if (frame) this.zoomTo(frame, false);
  }

  zoomTo(frame: Frame, notify = true) {
    this.zoom = frame;
    this.render();
    if (notify) this.onZoom(pathOf(frame));
  }

  resetZoom() {
    if (this.root) this.zoomTo(this.root);
  }

  /** Highlights frames whose name contains `text` (case-insensitive); returns how many frames
   * match and the share of the samples under them (each stack counted once). */
  setSearch(text: string): SearchResult {
    this.search = text.toLowerCase();
    this.render();
    if (!this.root || !this.search) return { frames: 0, share: 0 };
    let frames = 0;
    let covered = 0;
    const visit = (f: Frame) => {
      if (f.name.toLowerCase().includes(this.search)) {
        frames++;
        covered += f.total;
        countOthers(f);
        return;
      }
      f.children.forEach(visit);
    };
    // Matches below a match are counted as frames, not again as samples.
    const countOthers = (f: Frame) =>
      f.children.forEach((c) => {
        if (c.name.toLowerCase().includes(this.search)) frames++;
        countOthers(c);
      });
    visit(this.root);
    return { frames, share: this.root.total > 0 ? covered / this.root.total : 0 };
  }

  render() {
    const ctx = this.canvas.getContext("2d");
    if (!ctx) return;
    const width = this.canvas.clientWidth || 800;
    this.placed = [];
    if (!this.zoom || this.zoom.total <= 0) {
      this.canvas.height = ROW * 2;
      ctx.clearRect(0, 0, width, this.canvas.height);
      ctx.fillStyle = "#777";
      ctx.font = "12px system-ui, sans-serif";
      ctx.fillText("nothing sampled in this window", 8, 20);
      return;
    }
    // The zoomed frame's ancestors stay above it, full width.
    const ancestors: Frame[] = [];
    for (let f = this.zoom.parent; f; f = f.parent) ancestors.unshift(f);
    ancestors.forEach((f, depth) => this.placed.push({ frame: f, x: 0, width: 1, depth }));
    this.place(this.zoom, 0, 1, ancestors.length);
    const rows = Math.min(MAX_ROWS, 1 + Math.max(...this.placed.map((p) => p.depth)));
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(rows * ROW * ratio);
    this.canvas.style.height = `${rows * ROW}px`;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, rows * ROW);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    for (const p of this.placed) {
      if (p.depth >= rows) continue;
      const x = p.x * width;
      const w = p.width * width;
      if (w < 0.5) continue;
      ctx.fillStyle = this.colour(p.frame);
      ctx.fillRect(x, p.depth * ROW, Math.max(w - 0.5, 0.5), ROW - 1);
      if (w > 30) {
        ctx.fillStyle = "#111";
        ctx.save();
        ctx.beginPath();
        ctx.rect(x, p.depth * ROW, w - 2, ROW);
        ctx.clip();
        ctx.fillText(p.frame.name, x + 3, p.depth * ROW + ROW / 2);
        ctx.restore();
      }
    }
  }

  private place(frame: Frame, x: number, width: number, depth: number) {
    this.placed.push({ frame, x, width, depth });
    if (depth >= MAX_ROWS || frame.total <= 0) return;
    let cx = x;
    for (const child of frame.children) {
      const w = (child.total / frame.total) * width;
      if (w > 0) this.place(child, cx, w, depth + 1);
      cx += w;
    }
  }

  private colour(frame: Frame): string {
    const matched = this.search !== "" && frame.name.toLowerCase().includes(this.search);
    if (this.search !== "" && !matched) return "#e0e0e0";
    if (matched) return "#ab47bc";
    if (frame.delta !== undefined) {
      const t = this.maxDelta > 0 ? Math.min(1, Math.abs(frame.delta) / this.maxDelta) : 0;
      const light = Math.round(92 - 45 * t);
      return frame.delta > 0 ? `hsl(0, 75%, ${light}%)` : frame.delta < 0 ? `hsl(215, 75%, ${light}%)` : "hsl(0, 0%, 90%)";
    }
    if (frame.name.endsWith("_[k]") || frame.name.startsWith("[off-cpu")) return `hsl(30, 20%, ${70 + (hash(frame.name) % 15)}%)`;
    const h = hash(frame.name);
    return `hsl(${10 + (h % 45)}, ${70 + (h % 20)}%, ${58 + ((h >> 8) % 14)}%)`;
  }

  private at(e: MouseEvent): Placed | undefined {
    const rect = this.canvas.getBoundingClientRect();
    const x = (e.clientX - rect.left) / rect.width;
    const depth = Math.floor((e.clientY - rect.top) / ROW);
    return this.placed.find((p) => p.depth === depth && x >= p.x && x < p.x + p.width);
  }

  private hover(e: MouseEvent) {
    const hit = this.at(e);
    if (!hit || !this.root) {
      this.tooltip.hidden = true;
      return;
    }
    const f = hit.frame;
    const share = (v: number, of: number) => (of > 0 ? `${((100 * v) / of).toFixed(2)}%` : "–");
    let text = `${f.name}\ntotal ${f.total} ${this.unit} (${share(f.total, this.root.total)}), self ${f.self} (${share(f.self, this.root.total)})`;
    if (f.delta !== undefined) {
      text =
        `${f.name}\nbaseline ${share(f.baseTotal ?? 0, this.baseTotal)} → comparison ${share(f.total, this.root.total)} of the total` +
        `\nchange ${(100 * f.delta).toFixed(2)} points`;
    }
    this.tooltip.textContent = text;
    this.tooltip.style.whiteSpace = "pre";
    this.tooltip.hidden = false;
    const rect = this.canvas.getBoundingClientRect();
    this.tooltip.style.left = `${Math.min(e.clientX - rect.left + 12, rect.width - 300)}px`;
    this.tooltip.style.top = `${e.clientY - rect.top + 14}px`;
  }
}

function link(frame: Frame) {
  for (const c of frame.children) {
    c.parent = frame;
    link(c);
  }
}

function walk(frame: Frame, f: (frame: Frame) => void) {
  f(frame);
  frame.children.forEach((c) => walk(c, f));
}

function pathOf(frame: Frame): string[] {
  const path: string[] = [];
  for (let f: Frame | undefined = frame; f?.parent; f = f.parent) path.unshift(f.name);
  return path;
}

/** A small, stable string hash (FNV-1a) for colours. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
