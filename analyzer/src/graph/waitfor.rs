//! The wait-for graph: "A waited for B", weighted by blocked time; waiting time redistributed
//! along it (wPerf's cascade), knots, and the critical path.

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef as _;
use serde::Serialize;

use super::evidence::{Actor, Evidence, FunctionId, ThreadId};
use crate::offcpu::Cause;

/// Redistribution rounds: waits cascade this many hops (the rest counts as a knot's).
const ROUNDS: usize = 32;
/// Shares below this are dropped from a thread's blame during redistribution.
const EPSILON: f64 = 1e-6;
/// A wait edge lighter than this share of the wakee's time is left out of knots and paths.
const MIN_EDGE_SHARE: f64 = 0.05;

/// Where waiting time ends up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sink {
    /// A function, on CPU.
    Function(FunctionId),
    /// The kernel or the hardware: timers, devices, the run queue, by cause.
    Kernel(Cause),
    /// Waits going round in circles (threads waiting for each other) past the cascade depth.
    Knot,
}

/// Threads, kernel pseudo-actors and who waited for whom.
#[derive(Clone, Debug)]
pub struct WaitFor {
    /// Nodes are actors; an edge is wakee → waker, weighted by blocked time (ns).
    pub graph: DiGraph<Actor, f64>,
    nodes: HashMap<Actor, NodeIndex>,
    /// Per thread: on-CPU self time by leaf function, ns.
    own: Vec<HashMap<FunctionId, f64>>,
    /// Per thread: waits the kernel ended or nobody was seen ending, by cause, ns (all of them:
    /// the part spent in a known function is also in `waiting_in`).
    kernel: Vec<[f64; 6]>,
    /// Per thread: the part of `kernel` spent blocked inside a program function (a sleep or a
    /// device read in `device_service`), by that function, ns.
    waiting_in: Vec<HashMap<FunctionId, f64>>,
    /// Per thread: the rest of `kernel`, by cause, ns.
    kernel_left: Vec<[f64; 6]>,
    /// Per thread: waits other threads ended, ns.
    on_threads: Vec<HashMap<ThreadId, f64>>,
    /// Per thread: how many waits other threads ended.
    wait_counts: Vec<f64>,
}

/// Waits redistributed: per thread, where its time went.
#[derive(Clone, Debug, Default)]
pub struct Blame {
    /// Threads on the request path: the connected part of the wait-for graph with the most
    /// waiting between threads (all threads when none waited for another).
    pub request_threads: Vec<ThreadId>,
    /// Per thread: shares of its time by sink (summing to 1 for a thread with any time).
    pub shares: Vec<HashMap<Sink, f64>>,
    /// Per thread: its time, ns.
    pub totals: Vec<f64>,
}

impl Blame {
    /// Time charged to each of `functions` functions over the request threads, ns (indexed by
    /// [`FunctionId`]), in one pass over the threads' shares.
    pub fn functions_ns(&self, functions: usize) -> Vec<f64> {
        let mut out = vec![0.0; functions];
        for &t in &self.request_threads {
            for (sink, &share) in &self.shares[t as usize] {
                if let Sink::Function(f) = *sink
                    && let Some(v) = out.get_mut(f as usize)
                {
                    *v += self.totals[t as usize] * share;
                }
            }
        }
        out
    }

    /// Time charged to each sink over the request threads, ns, heaviest first.
    pub fn sinks(&self) -> Vec<(Sink, f64)> {
        let mut out: HashMap<Sink, f64> = HashMap::new();
        for &t in &self.request_threads {
            for (&sink, &share) in &self.shares[t as usize] {
                *out.entry(sink).or_default() += share * self.totals[t as usize];
            }
        }
        let mut out: Vec<_> = out.into_iter().collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

/// A knot: threads that wait only for each other (a strongly connected part of the wait-for
/// graph with no heavy wait leaving it) and that others wait for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Knot {
    /// Its threads.
    pub threads: Vec<ThreadId>,
    /// Time threads outside it waited for it, ns.
    pub waited_on_ns: f64,
}

/// One hop of the critical path.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PathStep {
    /// The thread or kernel actor.
    pub actor: Actor,
    /// Time the previous step waited for it, ns (the first step: its own time).
    pub waited_ns: f64,
    /// Its heaviest on-CPU functions with their self time, ns.
    pub functions: Vec<(FunctionId, f64)>,
}

impl WaitFor {
    /// Builds the wait-for graph of a window.
    pub fn build(evidence: &Evidence) -> WaitFor {
        let n = evidence.threads.len();
        let mut own = vec![HashMap::new(); n];
        let mut off = vec![[0.0; 6]; n];
        for s in &evidence.stacks {
            if let (Some(&leaf), true) = (s.frames.last(), s.cpu_ns > 0.0) {
                *own[s.thread as usize].entry(leaf).or_insert(0.0) += s.cpu_ns;
            }
            for (o, v) in off[s.thread as usize].iter_mut().zip(s.off_cpu_ns) {
                *o += v;
            }
        }
        let mut kernel = vec![[0.0; 6]; n];
        let mut explained = vec![[0.0; 6]; n];
        let mut on_threads: Vec<HashMap<ThreadId, f64>> = vec![HashMap::new(); n];
        let mut wait_counts = vec![0.0; n];
        for w in &evidence.waits {
            let t = w.wakee as usize;
            explained[t][w.cause as usize] += w.ns;
            match w.waker {
                Actor::Thread(b) if b != w.wakee => {
                    *on_threads[t].entry(b).or_insert(0.0) += w.ns;
                    wait_counts[t] += w.count;
                }
                Actor::Thread(_) => kernel[t][Cause::Other as usize] += w.ns,
                Actor::Kernel(c) => kernel[t][c as usize] += w.ns,
            }
        }
        // Off-CPU time without a wakeup edge (waits shorter than the recording's minimum keep
        // no edge; run-queue time never has one) is the kernel's, by cause.
        for t in 0..n {
            for c in 0..6 {
                kernel[t][c] += (off[t][c] - explained[t][c]).max(0.0);
            }
        }
        // The kernel's waits are charged to the program function the thread blocked in, where
        // the stack shows one (each stack's share of its thread's kernel time for that cause);
        // waiting to run (run queue) stays the CPU's.
        let mut waiting_in: Vec<HashMap<FunctionId, f64>> = vec![HashMap::new(); n];
        let mut kernel_left = kernel.clone();
        for s in &evidence.stacks {
            let (t, Some(f)) = (s.thread as usize, s.waiting_in) else {
                continue;
            };
            for c in Cause::ALL {
                let (i, ns) = (c as usize, s.off_cpu_ns[c as usize]);
                if c == Cause::RunQueue || ns <= 0.0 || off[t][i] <= 0.0 {
                    continue;
                }
                let charged = (ns * kernel[t][i] / off[t][i]).min(kernel_left[t][i]);
                if charged > 0.0 {
                    *waiting_in[t].entry(f).or_insert(0.0) += charged;
                    kernel_left[t][i] -= charged;
                }
            }
        }
        let mut graph = DiGraph::new();
        let mut nodes = HashMap::new();
        let mut node = |graph: &mut DiGraph<Actor, f64>, a: Actor| {
            *nodes.entry(a).or_insert_with(|| graph.add_node(a))
        };
        for t in 0..n {
            node(&mut graph, Actor::Thread(t as ThreadId));
        }
        for t in 0..n {
            let from = node(&mut graph, Actor::Thread(t as ThreadId));
            let mut targets: Vec<_> = on_threads[t].iter().map(|(&b, &ns)| (b, ns)).collect();
            targets.sort_by_key(|&(b, _)| b);
            for (b, ns) in targets {
                let to = node(&mut graph, Actor::Thread(b));
                graph.add_edge(from, to, ns);
            }
            for c in Cause::ALL {
                let ns = kernel[t][c as usize];
                if ns > 0.0 {
                    let to = node(&mut graph, Actor::Kernel(c));
                    graph.add_edge(from, to, ns);
                }
            }
        }
        WaitFor {
            graph,
            nodes,
            own,
            kernel,
            waiting_in,
            kernel_left,
            on_threads,
            wait_counts,
        }
    }

    /// A thread's on-CPU self time by function, ns.
    pub fn thread_functions(&self, t: ThreadId) -> &HashMap<FunctionId, f64> {
        &self.own[t as usize]
    }

    /// A thread's busy time by function: on CPU in it, or blocked in it on the kernel (a
    /// device's service, a sleep), ns.
    pub fn thread_busy(&self, t: ThreadId) -> impl Iterator<Item = (FunctionId, f64)> + '_ {
        let t = t as usize;
        let mut busy: HashMap<FunctionId, f64> = self.own[t].clone();
        for (&f, &ns) in &self.waiting_in[t] {
            *busy.entry(f).or_default() += ns;
        }
        busy.into_iter()
    }

    /// A thread's on-CPU time, ns.
    pub fn thread_cpu_ns(&self, t: ThreadId) -> f64 {
        self.own[t as usize].values().sum()
    }

    /// A thread's time in the window (on CPU and waiting), ns.
    pub fn thread_total_ns(&self, t: ThreadId) -> f64 {
        let t = t as usize;
        self.own[t].values().sum::<f64>()
            + self.kernel[t].iter().sum::<f64>()
            + self.on_threads[t].values().sum::<f64>()
    }

    /// Threads on the request path: the weakly connected part of the thread-to-thread waits
    /// (edges of at least [`MIN_EDGE_SHARE`] of either end's time) with the most waiting in it.
    fn request_threads(&self) -> Vec<ThreadId> {
        let n = self.own.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        let totals: Vec<f64> = (0..n)
            .map(|t| self.thread_total_ns(t as ThreadId))
            .collect();
        let mut any = false;
        for (t, targets) in self.on_threads.iter().enumerate() {
            for (&b, &ns) in targets {
                let b = b as usize;
                if ns >= MIN_EDGE_SHARE * totals[t].min(totals[b]) {
                    any = true;
                    let (ra, rb) = (find(&mut parent, t), find(&mut parent, b));
                    parent[ra] = rb;
                }
            }
        }
        if !any {
            return (0..n as ThreadId).collect();
        }
        let mut weight: HashMap<usize, f64> = HashMap::new();
        for (t, targets) in self.on_threads.iter().enumerate() {
            let r = find(&mut parent, t);
            *weight.entry(r).or_default() += targets.values().sum::<f64>();
        }
        let best = weight
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(r, _)| r);
        (0..n)
            .filter(|&t| Some(find(&mut parent, t)) == best)
            .map(|t| t as ThreadId)
            .collect()
    }

    /// Redistributes every thread's waits onto what the threads it waited for spent their time
    /// on, cascading: shares(t) = (own(t) + kernel(t) + Σ_b waited(t, b) · shares(b)) / total(t),
    /// where own(t) is its on-CPU time by function and kernel(t) its waits the kernel ended,
    /// charged to the program function it blocked in where its stack shows one (a device's
    /// service time is the device function's), else to the kernel by cause.
    pub fn redistribute(&self) -> Blame {
        let n = self.own.len();
        let totals: Vec<f64> = (0..n)
            .map(|t| self.thread_total_ns(t as ThreadId))
            .collect();
        let mut shares: Vec<HashMap<Sink, f64>> = vec![HashMap::new(); n];
        for _ in 0..ROUNDS {
            let mut next: Vec<HashMap<Sink, f64>> = Vec::with_capacity(n);
            for (t, &total) in totals.iter().enumerate() {
                let mut s: HashMap<Sink, f64> = HashMap::new();
                if total <= 0.0 {
                    next.push(s);
                    continue;
                }
                for (&f, &ns) in self.own[t].iter().chain(&self.waiting_in[t]) {
                    *s.entry(Sink::Function(f)).or_default() += ns / total;
                }
                for c in Cause::ALL {
                    let ns = self.kernel_left[t][c as usize];
                    if ns > 0.0 {
                        *s.entry(Sink::Kernel(c)).or_default() += ns / total;
                    }
                }
                for (&b, &ns) in &self.on_threads[t] {
                    let w = ns / total;
                    for (&sink, &share) in &shares[b as usize] {
                        *s.entry(sink).or_default() += w * share;
                    }
                }
                s.retain(|_, v| *v >= EPSILON);
                next.push(s);
            }
            shares = next;
        }
        for (t, s) in shares.iter_mut().enumerate() {
            if totals[t] > 0.0 {
                let left = 1.0 - s.values().sum::<f64>();
                if left > EPSILON {
                    *s.entry(Sink::Knot).or_default() += left;
                }
            }
        }
        Blame {
            request_threads: self.request_threads(),
            shares,
            totals,
        }
    }

    /// Knots: strongly connected sets of threads (over waits of at least `MIN_EDGE_SHARE` (5%) of
    /// the wakee's time) with no such wait leaving them, that other threads waited for.
    pub fn knots(&self) -> Vec<Knot> {
        let n = self.own.len();
        let totals: Vec<f64> = (0..n)
            .map(|t| self.thread_total_ns(t as ThreadId))
            .collect();
        let mut g: DiGraph<ThreadId, f64> = DiGraph::new();
        let idx: Vec<NodeIndex> = (0..n).map(|t| g.add_node(t as ThreadId)).collect();
        for (t, targets) in self.on_threads.iter().enumerate() {
            for (&b, &ns) in targets {
                if ns >= MIN_EDGE_SHARE * totals[t] {
                    g.add_edge(idx[t], idx[b as usize], ns);
                }
            }
        }
        let sccs = petgraph::algo::tarjan_scc(&g);
        let mut component = vec![0usize; n];
        for (i, scc) in sccs.iter().enumerate() {
            for &node in scc {
                component[node.index()] = i;
            }
        }
        let mut knots = Vec::new();
        for (i, scc) in sccs.iter().enumerate() {
            let leaves = scc
                .iter()
                .any(|&node| g.edges(node).any(|e| component[e.target().index()] != i));
            if leaves {
                continue;
            }
            let waited_on_ns: f64 = g
                .edge_indices()
                .filter_map(|e| {
                    let (a, b) = g.edge_endpoints(e)?;
                    (component[a.index()] != i && component[b.index()] == i).then(|| g[e])
                })
                .sum();
            if waited_on_ns > 0.0 {
                let mut threads: Vec<ThreadId> = scc.iter().map(|&x| g[x]).collect();
                threads.sort_unstable();
                knots.push(Knot {
                    threads,
                    waited_on_ns,
                });
            }
        }
        knots.sort_by(|a, b| b.waited_on_ns.total_cmp(&a.waited_on_ns));
        knots
    }

    /// The critical path: from the request thread that waited for other threads most often (a
    /// thread serving requests waits once or more per request; one joining others waits once),
    /// follow the heaviest wait (of at least `MIN_EDGE_SHARE` (5%) of the thread's time) to the
    /// thread or kernel actor it waited for, until an actor waits for nobody else, spends more
    /// time on CPU than waiting for others (its own work is then what bounds it), or a thread
    /// comes round again.
    pub fn critical_path(&self, request_threads: &[ThreadId]) -> Vec<PathStep> {
        let top = |t: ThreadId| {
            let mut f: Vec<(FunctionId, f64)> = self.own[t as usize]
                .iter()
                .map(|(&f, &ns)| (f, ns))
                .collect();
            f.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            f.truncate(3);
            f
        };
        let Some(&start) = request_threads.iter().max_by(|&&a, &&b| {
            let w = |t: ThreadId| self.wait_counts[t as usize];
            w(a).total_cmp(&w(b)).then(b.cmp(&a))
        }) else {
            return Vec::new();
        };
        let mut path = vec![PathStep {
            actor: Actor::Thread(start),
            waited_ns: self.thread_total_ns(start),
            functions: top(start),
        }];
        let mut current = start;
        let mut visited = vec![start];
        loop {
            let node = self.nodes[&Actor::Thread(current)];
            let total = self.thread_total_ns(current);
            let waits: Vec<(Actor, f64)> = self
                .graph
                .edges(node)
                .map(|e| (self.graph[e.target()], *e.weight()))
                .filter(|&(a, _)| !matches!(a, Actor::Kernel(Cause::RunQueue)))
                .collect();
            // A thread waiting for several others in turn (a lock queue: the holder, then each
            // waiter that let go before it) is bound by its waits as a whole, not by the
            // heaviest one alone.
            if waits.iter().map(|w| w.1).sum::<f64>() <= self.thread_cpu_ns(current) {
                break;
            }
            let heaviest = waits
                .into_iter()
                .filter(|&(a, ns)| {
                    ns >= MIN_EDGE_SHARE * total
                        && !matches!(a, Actor::Thread(b) if visited.contains(&b))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
            let Some((actor, ns)) = heaviest else {
                break;
            };
            let functions = match actor {
                Actor::Thread(b) => top(b),
                Actor::Kernel(_) => Vec::new(),
            };
            path.push(PathStep {
                actor,
                waited_ns: ns,
                functions,
            });
            match actor {
                Actor::Thread(b) => {
                    visited.push(b);
                    current = b;
                }
                Actor::Kernel(_) => break,
            }
        }
        path
    }
}
