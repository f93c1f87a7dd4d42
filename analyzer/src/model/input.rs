//! A window as the model reads it: nodes with normalized features, and the relations between
//! them as dense matrices for the attention bias.

use std::collections::VecDeque;

use crate::dataset::ModelGraph;
use crate::graph::{Analysis, Evidence};

/// Raw features per node ([`FunctionEvidence::FEATURES`](crate::graph::FunctionEvidence::FEATURES)).
pub const RAW_FEATURES: usize = 16;
/// Model inputs per node: each raw feature as a share of the window's largest value and as
/// a log-scaled share (see [`normalize`]).
pub const INPUTS: usize = 2 * RAW_FEATURES;
/// Model inputs per node of a pair of windows (the regressions model): each raw feature per
/// second of window (shares as they are) before and after, as shares of the pair's largest
/// value, their difference, and the difference log-scaled, then the z-score of the function's
/// on-CPU change (see [`normalize_pair`]).
pub const PAIR_INPUTS: usize = 4 * RAW_FEATURES + 1;
/// Relations between two nodes: `i` calls `j`, `j` calls `i`, `i` woke `j`, `j` woke `i`,
/// on CPU in the same thread.
pub const RELATIONS: usize = 5;
/// Hop-distance buckets over the undirected union of the relations: 0 (the node itself), 1,
/// 2, 3, and 4 or more (or unreachable).
pub const HOP_BUCKETS: usize = 5;
/// Targets per node: elasticities of p50 latency, p99 latency and throughput.
pub const TARGETS: usize = 3;

/// One window's graph as model input.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphInput {
    /// Function names, in node order.
    pub names: Vec<String>,
    /// `nodes × inputs`, row-major.
    pub features: Vec<f32>,
    /// Inputs per node: [`INPUTS`] for a window, [`PAIR_INPUTS`] for a pair of windows.
    pub inputs: usize,
    /// `RELATIONS × nodes × nodes`: 1 where the relation holds.
    pub relations: Vec<f32>,
    /// `HOP_BUCKETS × nodes × nodes`: one-hot hop bucket.
    pub hops: Vec<f32>,
}

impl GraphInput {
    /// Nodes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The input of nodes with raw features `raw` (one row per node, in
    /// [`FunctionEvidence::FEATURES`](crate::graph::FunctionEvidence::FEATURES) order) and `edges` `(kind, from, to)` between them, kind
    /// `call`, `wakeup` or `same_thread` (others are ignored).
    pub fn new(
        names: Vec<String>,
        raw: &[[f64; RAW_FEATURES]],
        edges: &[(&str, usize, usize)],
    ) -> Self {
        Self::with_features(names, (normalize(raw), INPUTS), edges)
    }

    /// Nodes `names` with model `features` (`inputs` per node) and their relations and hop
    /// distances from `edges`.
    fn with_features(
        names: Vec<String>,
        (features, inputs): (Vec<f32>, usize),
        edges: &[(&str, usize, usize)],
    ) -> Self {
        let n = names.len();
        let mut relations = vec![0.0f32; RELATIONS * n * n];
        let mut adjacent = vec![Vec::new(); n];
        for &(kind, i, j) in edges {
            if i >= n || j >= n || i == j {
                continue;
            }
            let (forward, backward) = match kind {
                "call" => (0, 1),
                "wakeup" => (2, 3),
                "same_thread" => (4, 4),
                _ => continue,
            };
            relations[forward * n * n + i * n + j] = 1.0;
            relations[backward * n * n + j * n + i] = 1.0;
            adjacent[i].push(j);
            adjacent[j].push(i);
        }
        let mut hops = vec![0.0f32; HOP_BUCKETS * n * n];
        for from in 0..n {
            let mut distance = vec![usize::MAX; n];
            distance[from] = 0;
            let mut queue = VecDeque::from([from]);
            while let Some(u) = queue.pop_front() {
                if distance[u] + 1 >= HOP_BUCKETS - 1 {
                    continue;
                }
                for &v in &adjacent[u] {
                    if distance[v] == usize::MAX {
                        distance[v] = distance[u] + 1;
                        queue.push_back(v);
                    }
                }
            }
            for (to, &d) in distance.iter().enumerate() {
                let bucket = d.min(HOP_BUCKETS - 1);
                hops[bucket * n * n + from * n + to] = 1.0;
            }
        }
        GraphInput {
            names,
            features,
            inputs,
            relations,
            hops,
        }
    }

    /// The input of a pair of windows: nodes with raw features `before` and `after` (zeros
    /// where a function was not seen) and the z-score of their on-CPU change (as
    /// [`crate::graph::regressions`] computes it), windows of `seconds` (before, after), and
    /// the after window's `edges`.
    pub fn pair(
        names: Vec<String>,
        (before, after, z): (&[[f64; RAW_FEATURES]], &[[f64; RAW_FEATURES]], &[f64]),
        seconds: (f64, f64),
        edges: &[(&str, usize, usize)],
    ) -> Self {
        let features = normalize_pair(before, after, z, seconds);
        Self::with_features(names, (features, PAIR_INPUTS), edges)
    }

    /// The input of a pair of windows, before and after a change: the after window's
    /// functions pruned as [`GraphInput::of_window`] prunes them, each with its features in
    /// both windows and the z-score of its on-CPU change from `z` (by function; 0 where absent).
    pub fn of_pair(
        before: (&Evidence, &Analysis),
        after: (&Evidence, &Analysis),
        z: &std::collections::HashMap<String, f64>,
    ) -> Self {
        let ((eb, ab), (ea, aa)) = (before, after);
        let graph = ModelGraph::new(ea, aa, &[]);
        let names: Vec<String> = graph
            .nodes
            .iter()
            .map(|&f| ea.functions[f as usize].clone())
            .collect();
        let raw_after: Vec<[f64; RAW_FEATURES]> = graph
            .nodes
            .iter()
            .map(|&f| aa.functions[f as usize].features())
            .collect();
        let raw_before: Vec<[f64; RAW_FEATURES]> = names
            .iter()
            .map(|name| {
                eb.function_id(name).map_or([0.0; RAW_FEATURES], |id| {
                    ab.functions[id as usize].features()
                })
            })
            .collect();
        let edges: Vec<(&str, usize, usize)> =
            graph.edges.iter().map(|&(k, i, j, _)| (k, i, j)).collect();
        let z: Vec<f64> = names
            .iter()
            .map(|name| z.get(name).copied().unwrap_or(0.0))
            .collect();
        Self::pair(
            names,
            (&raw_before, &raw_after, &z),
            (eb.seconds, ea.seconds),
            &edges,
        )
    }

    /// The input of a window: its functions pruned as [`ModelGraph`] prunes them (the heaviest
    /// by on-CPU and off-CPU inclusive time plus critical-path blame, at most
    /// [`crate::dataset::MAX_NODES`]).
    pub fn of_window(evidence: &Evidence, analysis: &Analysis) -> Self {
        let graph = ModelGraph::new(evidence, analysis, &[]);
        let names = graph
            .nodes
            .iter()
            .map(|&f| evidence.functions[f as usize].clone())
            .collect();
        let raw: Vec<[f64; RAW_FEATURES]> = graph
            .nodes
            .iter()
            .map(|&f| analysis.functions[f as usize].features())
            .collect();
        let edges: Vec<(&str, usize, usize)> =
            graph.edges.iter().map(|&(k, i, j, _)| (k, i, j)).collect();
        Self::new(names, &raw, &edges)
    }
}

/// ln(1 + 100 |s|) / ln 101 with the sign of `s`: spreads the small shares most functions have.
fn log_share(share: f64) -> f32 {
    (share.signum() * (1.0 + 100.0 * share.abs()).ln() / 101f64.ln()) as f32
}

/// Features of a pair of windows as the regressions model sees them, `nodes × PAIR_INPUTS`:
/// each raw feature made a rate (times per second of its window; shares, thread counts and
/// utilization as they are), divided by its largest value in either window, before then
/// after, then after − before, then that difference log-scaled as in [`normalize`]; last the
/// z-score, sign(z) ln(1 + |z|) / ln 101 (a z of 100 is 1).
pub fn normalize_pair(
    before: &[[f64; RAW_FEATURES]],
    after: &[[f64; RAW_FEATURES]],
    z: &[f64],
    seconds: (f64, f64),
) -> Vec<f32> {
    use crate::graph::FunctionEvidence;
    let rate = |row: &[f64; RAW_FEATURES], s: f64| -> [f64; RAW_FEATURES] {
        std::array::from_fn(|k| {
            if FunctionEvidence::FEATURES[k].ends_with("_s") {
                row[k] / s.max(1e-9)
            } else {
                row[k]
            }
        })
    };
    let before: Vec<_> = before.iter().map(|r| rate(r, seconds.0)).collect();
    let after: Vec<_> = after.iter().map(|r| rate(r, seconds.1)).collect();
    let mut max = [0.0f64; RAW_FEATURES];
    for row in before.iter().chain(&after) {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let share = |v: f64, k: usize| if max[k] > 0.0 { v / max[k] } else { 0.0 };
    let mut out = Vec::with_capacity(after.len() * PAIR_INPUTS);
    for ((b, a), &z) in before.iter().zip(&after).zip(z) {
        out.extend((0..RAW_FEATURES).map(|k| share(b[k], k) as f32));
        out.extend((0..RAW_FEATURES).map(|k| share(a[k], k) as f32));
        out.extend((0..RAW_FEATURES).map(|k| (share(a[k], k) - share(b[k], k)) as f32));
        out.extend((0..RAW_FEATURES).map(|k| log_share(share(a[k], k) - share(b[k], k))));
        out.push((z.signum() * (1.0 + z.abs()).ln() / 101f64.ln()) as f32);
    }
    out
}

/// Features as the model sees them, `nodes × INPUTS`: each raw feature divided by its largest
/// value in the window (so windows of any length and load compare), then the same share
/// log-scaled, ln(1 + 100 s) / ln 101, which spreads the small shares most functions have.
/// Shares and counts that are already scale-free (critical-path share, utilization, threads)
/// go through the same two steps.
pub fn normalize(raw: &[[f64; RAW_FEATURES]]) -> Vec<f32> {
    let mut max = [0.0f64; RAW_FEATURES];
    for row in raw {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let mut out = Vec::with_capacity(raw.len() * INPUTS);
    for row in raw {
        for (k, &v) in row.iter().enumerate() {
            let share = if max[k] > 0.0 { v / max[k] } else { 0.0 };
            out.push(share as f32);
        }
        for (k, &v) in row.iter().enumerate() {
            let share = if max[k] > 0.0 { v / max[k] } else { 0.0 };
            out.push(log_share(share));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_and_hops() {
        // 0 calls 1, 1 woke 2, 3 alone.
        let raw = [
            [1.0; RAW_FEATURES],
            [0.5; RAW_FEATURES],
            [0.0; RAW_FEATURES],
            [0.25; RAW_FEATURES],
        ];
        let names = (0..4).map(|i| format!("f{i}")).collect();
        let g = GraphInput::new(
            names,
            &raw,
            &[("call", 0, 1), ("wakeup", 1, 2), ("bogus", 0, 3)],
        );
        let n = 4;
        let rel = |r: usize, i: usize, j: usize| g.relations[r * n * n + i * n + j];
        assert_eq!((rel(0, 0, 1), rel(1, 1, 0), rel(0, 1, 0)), (1.0, 1.0, 0.0));
        assert_eq!((rel(2, 1, 2), rel(3, 2, 1)), (1.0, 1.0));
        let hop = |i: usize, j: usize| {
            (0..HOP_BUCKETS)
                .find(|&b| g.hops[b * n * n + i * n + j] == 1.0)
                .unwrap()
        };
        assert_eq!((hop(0, 0), hop(0, 1), hop(0, 2), hop(0, 3)), (0, 1, 2, 4));
        // Each pair has exactly one bucket.
        assert_eq!(g.hops.iter().sum::<f32>(), (n * n) as f32);
        // Shares of the largest value, then log-scaled.
        assert_eq!(g.features[INPUTS], 0.5);
        assert!((g.features[INPUTS + RAW_FEATURES] - (51f32.ln() / 101f32.ln())).abs() < 1e-6);
        assert_eq!(g.features[2 * INPUTS + RAW_FEATURES], 0.0);
    }

    /// A pair: times become rates of their own window, both windows share one scale, the
    /// difference comes plain and log-scaled; the relations are the after window's.
    #[test]
    fn pair_features() {
        // Node 0: 2 s of on-CPU self time in a 10-s window before, 4 s in a 5-s window after
        // (0.2 s/s, then 0.8 s/s); node 1 new after: 0.4 s/s. Utilization (not a time) 0.5,
        // then 1.
        let mut b0 = [0.0; RAW_FEATURES];
        let mut a0 = [0.0; RAW_FEATURES];
        let mut a1 = [0.0; RAW_FEATURES];
        (b0[0], a0[0], a1[0]) = (2.0, 4.0, 2.0);
        (b0[15], a0[15]) = (0.5, 1.0);
        let names = vec!["f0".to_owned(), "f1".to_owned()];
        let g = GraphInput::pair(
            names,
            (&[b0, [0.0; RAW_FEATURES]], &[a0, a1], &[100.0, -3.0]),
            (10.0, 5.0),
            &[("call", 0, 1)],
        );
        assert_eq!((g.inputs, g.features.len()), (PAIR_INPUTS, 2 * PAIR_INPUTS));
        let f = |node: usize, block: usize, k: usize| {
            g.features[node * PAIR_INPUTS + block * RAW_FEATURES + k]
        };
        assert_eq!((f(0, 0, 0), f(0, 1, 0), f(0, 2, 0)), (0.25, 1.0, 0.75));
        assert_eq!((f(1, 0, 0), f(1, 1, 0), f(1, 2, 0)), (0.0, 0.5, 0.5));
        assert!((f(0, 3, 0) - (76f32.ln() / 101f32.ln())).abs() < 1e-6);
        assert_eq!((f(0, 0, 15), f(0, 1, 15)), (0.5, 1.0));
        assert_eq!(f(0, 4, 0), 1.0);
        assert!((f(1, 4, 0) + 4f32.ln() / 101f32.ln()).abs() < 1e-6);
        // Relation 0 (calls) from node 0 to node 1.
        assert_eq!(g.relations[1], 1.0);
    }
}
