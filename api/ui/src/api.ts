// The HTTP API's answers, as the page uses them, and one way to ask.

export interface TreeNode {
  name: string;
  self: number;
  total: number;
  children: TreeNode[];
}

export interface Profile {
  type: string;
  unit: string;
  total: number;
  root: TreeNode;
}

export interface DiffNode {
  name: string;
  base_self: number;
  base_total: number;
  comparison_self: number;
  comparison_total: number;
  delta_share: number;
  children: DiffNode[];
}

export interface Diff {
  type: string;
  unit: string;
  base_total: number;
  comparison_total: number;
  root: DiffNode;
}

export interface Series {
  type: string;
  unit: string;
  step_ms: number;
  timestamps: number[];
  series: { labels: Record<string, string>; values: (number | null)[]; total: number }[];
}

export interface Deploy {
  id: string;
  service: string;
  version: string;
  at_ms: number;
  source: string;
}

export interface ExplainFunction {
  function: string;
  score: number;
  latency_impact: number;
  throughput_impact: number;
  evidence: {
    cpu_self_s: number;
    cpu_total_s: number;
    off_cpu_total_s: number[];
    critical_path_share: number;
    blame_s: number;
    threads: number;
    waited_by: { function: string; waited_s: number }[];
  };
}

export interface Explanation {
  method: string;
  seconds: number;
  functions: ExplainFunction[];
  critical_path: { actor: string; waited_s: number; functions: [string, number][] }[];
}

export interface Regressions {
  deploy: string;
  method: string;
  regressions: number;
  significant: number;
  suspects: {
    function: string;
    before: number;
    after: number;
    critical_path_before: number;
    critical_path_after: number;
    score: number;
    z: number;
    significant: boolean;
    regression: boolean;
  }[];
}

/** GETs an API endpoint; a failure carries the server's message. */
export async function get<T>(path: string, params: Record<string, string | number | undefined>): Promise<T> {
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== "") query.set(k, String(v));
  }
  const response = await fetch(`${path}?${query}`);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      message = body.error ?? body.message ?? message;
    } catch {
      // not JSON: keep the status line
    }
    throw new Error(`${path}: ${message}`);
  }
  return (await response.json()) as T;
}
