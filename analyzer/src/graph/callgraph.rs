//! The call graph of a window: functions, caller → callee edges, self and inclusive times.

use std::collections::{HashMap, HashSet};

use petgraph::graph::{DiGraph, NodeIndex};

use super::evidence::{Evidence, FunctionId};

/// Times of one function in a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionTimes {
    /// On-CPU time with the function as the leaf, ns.
    pub cpu_self_ns: f64,
    /// On-CPU time of stacks it is on (once per stack, recursion or not), ns.
    pub cpu_total_ns: f64,
    /// Off-CPU time of stacks it is on, by cause, ns.
    pub off_cpu_total_ns: [f64; 6],
    /// Threads whose stacks it is on.
    pub threads: usize,
}

/// A call edge's weight.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Call {
    /// On-CPU time through this edge, ns.
    pub cpu_ns: f64,
    /// Off-CPU time through this edge, ns.
    pub off_cpu_ns: f64,
}

/// Functions and who calls whom, with times.
#[derive(Clone, Debug)]
pub struct CallGraph {
    /// Nodes are functions ([`FunctionId`]); an edge is caller → callee.
    pub graph: DiGraph<FunctionId, Call>,
    /// Times per function, in [`Evidence::functions`] order.
    pub times: Vec<FunctionTimes>,
}

impl CallGraph {
    /// Builds the call graph of a window.
    pub fn build(evidence: &Evidence) -> CallGraph {
        let mut graph = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..evidence.functions.len())
            .map(|f| graph.add_node(f as FunctionId))
            .collect();
        let mut times = vec![FunctionTimes::default(); evidence.functions.len()];
        let mut edges: HashMap<(FunctionId, FunctionId), Call> = HashMap::new();
        let mut threads: Vec<HashSet<u32>> = vec![HashSet::new(); evidence.functions.len()];
        let mut seen = HashSet::new();
        for stack in &evidence.stacks {
            let off: f64 = stack.off_cpu_ns.iter().sum();
            if let Some(&leaf) = stack.frames.last() {
                times[leaf as usize].cpu_self_ns += stack.cpu_ns;
            }
            seen.clear();
            for &f in &stack.frames {
                if seen.insert(f) {
                    let t = &mut times[f as usize];
                    t.cpu_total_ns += stack.cpu_ns;
                    for (total, v) in t.off_cpu_total_ns.iter_mut().zip(stack.off_cpu_ns) {
                        *total += v;
                    }
                    threads[f as usize].insert(stack.thread);
                }
            }
            for pair in stack.frames.windows(2) {
                let e = edges.entry((pair[0], pair[1])).or_default();
                e.cpu_ns += stack.cpu_ns;
                e.off_cpu_ns += off;
            }
        }
        for (t, set) in times.iter_mut().zip(&threads) {
            t.threads = set.len();
        }
        let mut edges: Vec<_> = edges.into_iter().collect();
        edges.sort_by_key(|&(k, _)| k);
        for ((from, to), call) in edges {
            graph.add_edge(nodes[from as usize], nodes[to as usize], call);
        }
        CallGraph { graph, times }
    }

    /// The callers of a function with the time through each edge.
    pub fn callers(&self, function: FunctionId) -> Vec<(FunctionId, Call)> {
        self.graph
            .edges_directed(
                NodeIndex::new(function as usize),
                petgraph::Direction::Incoming,
            )
            .map(|e| {
                use petgraph::visit::EdgeRef as _;
                (self.graph[e.source()], *e.weight())
            })
            .collect()
    }
}
