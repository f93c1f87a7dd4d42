//! A window as the model reads it: nodes with normalized features, and the relations between
//! them as dense matrices for the attention bias.

use std::collections::VecDeque;

use crate::dataset::ModelGraph;
use crate::graph::{Analysis, Evidence};

/// Raw features per node ([`FunctionEvidence::FEATURES`]).
pub const RAW_FEATURES: usize = 16;
/// Model inputs per node: each raw feature as a share of the window's largest value and as
/// a log-scaled share (see [`normalize`]).
pub const INPUTS: usize = 2 * RAW_FEATURES;
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
    /// `nodes × INPUTS`, row-major.
    pub features: Vec<f32>,
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
    /// [`FunctionEvidence::FEATURES`] order) and `edges` `(kind, from, to)` between them, kind
    /// `call`, `wakeup` or `same_thread` (others are ignored).
    pub fn new(
        names: Vec<String>,
        raw: &[[f64; RAW_FEATURES]],
        edges: &[(&str, usize, usize)],
    ) -> Self {
        let n = names.len();
        let features = normalize(raw);
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
            relations,
            hops,
        }
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
            out.push((share.signum() * (1.0 + 100.0 * share.abs()).ln() / 101f64.ln()) as f32);
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
}
