//! Why was a window slow: the call graph and the wait-for graph of a window, and the methods
//! that rank functions by their likely impact on latency and throughput.
//!
//! The input is a window's [`Evidence`]: on-CPU time and off-CPU time by stack and thread, and
//! the wakeup edges ("thread A, blocked in this stack, was woken by thread B in that stack after
//! waiting this long"). From it:
//!
//! - the [`CallGraph`]: functions, caller → callee edges, self and inclusive on-CPU and off-CPU
//!   time;
//! - the [`WaitFor`] graph: threads and kernel pseudo-actors (`[timer]`, `[device]`, ...), an
//!   edge "A waited for B" weighted by blocked time. Waiting time is redistributed along it, as
//!   in wPerf: a thread's wait for B is charged to what B spent its time on, B's own waits
//!   cascaded in turn, so that the time requests spend waiting for a lock ends up on the
//!   functions the lock holder ran. Strongly connected components without outgoing weight are
//!   the knots (wPerf's bottleneck candidates), and following the heaviest waits from the
//!   request threads gives the critical path.
//!
//! [`rank`] turns them into scores per function for each [`Method`]; [`regressions`] compares
//! a window after a deploy with one before it.
//!
//! Known limits: evidence is aggregated over the window, so a wait for B is charged to B's
//! average activity over the window, not to what B ran during that very wait; threads are told
//! apart by thread id, so a thread pool whose threads come and go within a window splits.

mod callgraph;
mod evidence;
mod explain;
mod regress;
mod resolved;
mod timeline;
mod waitfor;

pub use callgraph::{CallGraph, FunctionTimes};
pub use evidence::{
    Actor, Evidence, EvidenceError, FunctionId, MAX_THREADS, Stack, ThreadId, Wait, WakeupsFile,
};
pub use explain::{Change, Explanation, MIN_SUSPECT_SHARE, Ranked, Step};
pub use regress::{
    ALPHA, Dispersion, MIN_DEGREES_OF_FREEDOM, MIN_RELATIVE, MIN_SHARE, Pair, Pattern, Ranking,
    Report, Suspect, rank_by, regressions, z_threshold,
};
pub use resolved::{Resolved, Route, Why};
pub use timeline::{StackRef, TimedSample, TimedWait, TimedWaker, Timeline};
pub use waitfor::{Blame, Knot, PathStep, Sink, WaitFor};

use std::collections::HashMap;

use serde::Serialize;

/// A way of ranking functions by likely impact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// On-CPU self time: the classic CPU top list.
    Cpu,
    /// Inclusive wall time: on-CPU plus off-CPU time of every stack the function is on.
    Wall,
    /// Growth of on-CPU self time against a baseline window (regressions).
    CpuDelta,
    /// Share of the request threads' time charged to the function after redistributing waits
    /// along the wait-for graph.
    CriticalPath,
    /// Time others waited on the knots (wPerf), spread over the knot threads' on-CPU functions.
    Knot,
    /// The utilization of the resource the function is (its busiest request thread's share of
    /// the window in it): the throughput bottleneck of a closed system.
    Utilization,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 6] = [
        Self::Cpu,
        Self::Wall,
        Self::CpuDelta,
        Self::CriticalPath,
        Self::Knot,
        Self::Utilization,
    ];

    /// The name used in the API and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Wall => "wall",
            Self::CpuDelta => "cpu_delta",
            Self::CriticalPath => "critical_path",
            Self::Knot => "knot",
            Self::Utilization => "utilization",
        }
    }

    /// Whether the method compares the window with a baseline.
    pub fn needs_baseline(self) -> bool {
        self == Self::CpuDelta
    }
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown method {s:?}: expected one of {}",
                    Self::ALL.map(Method::name).join(", ")
                )
            })
    }
}

/// Everything known about one function in a window: the evidence behind every method's score
/// (and the model's input features).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FunctionEvidence {
    /// The function.
    pub function: String,
    /// On-CPU self time, s.
    pub cpu_self_s: f64,
    /// On-CPU time of stacks it is on, s.
    pub cpu_total_s: f64,
    /// Off-CPU time of stacks it is on, s, by cause (in [`crate::offcpu::Cause::ALL`] order).
    pub off_cpu_total_s: [f64; 6],
    /// Time threads waited in waits this function's stack ended (it was on the waker's stack), s.
    pub waits_ended_s: f64,
    /// Time threads waited with this function on the blocked stack, s (woken by a thread).
    pub waits_in_s: f64,
    /// Time charged to it after redistributing waits, over request threads, s.
    pub blame_s: f64,
    /// Share of the request threads' time charged to it.
    pub critical_path_share: f64,
    /// Time others waited on knots, charged to it, s.
    pub knot_s: f64,
    /// The utilization of the resource it is: the largest share of the window one request
    /// thread spent in it, on CPU or blocked in it on the kernel (a device's service time). A
    /// closed system's throughput is bounded by its most utilized resource.
    pub utilization: f64,
    /// Threads it ran on.
    pub threads: usize,
    /// Who ended the waits it blocked in (it was the innermost program function of the blocked
    /// stack): the waker's innermost program function, or the kernel (`[device]`, `[timer]`,
    /// ...), heaviest first, at most [`PEERS`].
    pub waited_on: Vec<Peer>,
    /// Whose waits it ended (it was the innermost program function of the waker's stack): the
    /// functions they blocked in, heaviest first, at most [`PEERS`].
    pub waited_by: Vec<Peer>,
}

/// Peers kept per function in [`FunctionEvidence::waited_on`] and
/// [`FunctionEvidence::waited_by`].
pub const PEERS: usize = 3;

/// A function on the other side of waits, with the time waited.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Peer {
    /// The function, or a kernel actor (`[device]`).
    pub function: String,
    /// Time waited, s.
    pub waited_s: f64,
}

/// The heaviest peers of `sums`, at most [`PEERS`].
fn top_peers(sums: HashMap<String, f64>) -> Vec<Peer> {
    let mut peers: Vec<Peer> = sums
        .into_iter()
        .map(|(function, ns)| Peer {
            function,
            waited_s: ns / 1e9,
        })
        .collect();
    peers.sort_by(|a, b| {
        b.waited_s
            .total_cmp(&a.waited_s)
            .then_with(|| a.function.cmp(&b.function))
    });
    peers.truncate(PEERS);
    peers
}

impl FunctionEvidence {
    /// Names of [`FunctionEvidence::features`], in order.
    pub const FEATURES: [&'static str; 16] = [
        "cpu_self_s",
        "cpu_total_s",
        "off_lock_s",
        "off_io_s",
        "off_sleep_s",
        "off_poll_s",
        "off_runqueue_s",
        "off_other_s",
        "wall_s",
        "waits_ended_s",
        "waits_in_s",
        "blame_s",
        "critical_path_share",
        "knot_s",
        "threads",
        "utilization",
    ];

    /// The evidence as numbers (the model's raw input features, and every method's score).
    pub fn features(&self) -> [f64; 16] {
        let o = self.off_cpu_total_s;
        [
            self.cpu_self_s,
            self.cpu_total_s,
            o[0],
            o[1],
            o[2],
            o[3],
            o[4],
            o[5],
            self.cpu_total_s + o.iter().sum::<f64>(),
            self.waits_ended_s,
            self.waits_in_s,
            self.blame_s,
            self.critical_path_share,
            self.knot_s,
            self.threads as f64,
            self.utilization,
        ]
    }
}

/// The analysis of one window.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// The call graph.
    pub calls: CallGraph,
    /// The wait-for graph.
    pub waits: WaitFor,
    /// Waits redistributed.
    pub blame: Blame,
    /// Per function, in [`Evidence::functions`] order.
    pub functions: Vec<FunctionEvidence>,
    /// The time-resolved critical path, when the evidence has a timeline: it then gives the
    /// functions' `blame_s`, `critical_path_share` and `utilization`, and the request threads.
    pub resolved: Option<Resolved>,
}

impl Analysis {
    /// Analyzes a window.
    pub fn new(evidence: &Evidence) -> Analysis {
        let calls = CallGraph::build(evidence);
        let waits = WaitFor::build(evidence);
        // With a timeline, waits are charged to what their wakers did during them; the
        // aggregated redistribution (which costs rounds × threads × sinks, and which the
        // resolved analysis replaces) is left out.
        let resolved = Resolved::new(evidence);
        if let Some(r) = &resolved {
            log::debug!(
                "resolved: {} request threads, {:.3} s of request time, {:.3} s idle",
                r.roots.len(),
                r.request_ns / 1e9,
                r.idle_ns / 1e9
            );
        } else {
            log::debug!("no timeline: aggregated redistribution");
        }
        let resolved = resolved.filter(|r| r.request_ns > 0.0);
        let blame = match &resolved {
            Some(r) => Blame {
                request_threads: r.roots.clone(),
                shares: vec![HashMap::new(); evidence.threads.len()],
                totals: vec![0.0; evidence.threads.len()],
            },
            None => waits.redistribute(),
        };
        let knots = waits.knots();
        let request_total: f64 = blame
            .request_threads
            .iter()
            .map(|&t| waits.thread_total_ns(t))
            .sum();
        let blame_ns = match &resolved {
            Some(r) => r.function_ns.clone(),
            None => blame.functions_ns(evidence.functions.len()),
        };
        let mut functions: Vec<FunctionEvidence> = evidence
            .functions
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let t = &calls.times[i];
                FunctionEvidence {
                    function: name.clone(),
                    cpu_self_s: t.cpu_self_ns / 1e9,
                    cpu_total_s: t.cpu_total_ns / 1e9,
                    off_cpu_total_s: t.off_cpu_total_ns.map(|ns| ns / 1e9),
                    threads: t.threads,
                    blame_s: blame_ns[i] / 1e9,
                    critical_path_share: match &resolved {
                        Some(r) => r.share(i as FunctionId),
                        None if request_total > 0.0 => blame_ns[i] / request_total,
                        None => 0.0,
                    },
                    ..FunctionEvidence::default()
                }
            })
            .collect();
        // Utilization: the busiest request thread's share of the window in each function.
        let window_ns = evidence.seconds * 1e9;
        if window_ns > 0.0 {
            match &resolved {
                Some(r) => {
                    for per_root in &r.root_function_ns {
                        for (&f, &ns) in per_root {
                            let u = &mut functions[f as usize].utilization;
                            *u = u.max(ns / window_ns);
                        }
                    }
                }
                None => {
                    for &t in &blame.request_threads {
                        for (f, ns) in waits.thread_busy(t) {
                            let u = &mut functions[f as usize].utilization;
                            *u = u.max(ns / window_ns);
                        }
                    }
                }
            }
        }
        // Who waited on whom, function to function.
        let mut on: Vec<HashMap<String, f64>> = vec![HashMap::new(); functions.len()];
        let mut by: Vec<HashMap<String, f64>> = vec![HashMap::new(); functions.len()];
        for w in &evidence.waits {
            let Some(blocked) = evidence.innermost_program_function(&w.wakee_frames) else {
                continue;
            };
            let waker = match w.waker {
                Actor::Thread(_) => evidence
                    .innermost_program_function(&w.waker_frames)
                    .map(|f| evidence.functions[f as usize].clone()),
                kernel => kernel.kernel_name().map(str::to_owned),
            };
            let Some(waker) = waker else { continue };
            if let Some(f) = evidence.function_id(&waker) {
                *by[f as usize]
                    .entry(evidence.functions[blocked as usize].clone())
                    .or_default() += w.ns;
            }
            *on[blocked as usize].entry(waker).or_default() += w.ns;
        }
        for (f, (on, by)) in functions.iter_mut().zip(on.into_iter().zip(by)) {
            f.waited_on = top_peers(on);
            f.waited_by = top_peers(by);
        }
        for w in &evidence.waits {
            let mut seen = Vec::new();
            for &f in &w.waker_frames {
                if !seen.contains(&f) {
                    seen.push(f);
                    functions[f as usize].waits_ended_s += w.ns / 1e9;
                }
            }
            if matches!(w.waker, Actor::Thread(_)) {
                seen.clear();
                for &f in &w.wakee_frames {
                    if !seen.contains(&f) {
                        seen.push(f);
                        functions[f as usize].waits_in_s += w.ns / 1e9;
                    }
                }
            }
        }
        for knot in &knots {
            let cpu: f64 = knot.threads.iter().map(|&t| waits.thread_cpu_ns(t)).sum();
            if cpu <= 0.0 {
                continue;
            }
            for &t in &knot.threads {
                for (&f, &ns) in waits.thread_functions(t) {
                    functions[f as usize].knot_s += knot.waited_on_ns * ns / cpu / 1e9;
                }
            }
        }
        Analysis {
            calls,
            waits,
            blame,
            functions,
            resolved,
        }
    }

    /// Scores per function for a method (higher: more likely to matter), in
    /// [`Evidence::functions`] order. `baseline` is the analysis of the window to compare with,
    /// for methods that need one (without it they score 0).
    pub fn scores(
        &self,
        evidence: &Evidence,
        method: Method,
        baseline: Option<(&Analysis, &Evidence)>,
    ) -> Vec<f64> {
        self.functions
            .iter()
            .map(|f| match method {
                Method::Cpu => f.cpu_self_s,
                Method::Wall => f.cpu_total_s + f.off_cpu_total_s.iter().sum::<f64>(),
                Method::CriticalPath => f.critical_path_share,
                Method::Knot => f.knot_s,
                Method::Utilization => f.utilization,
                Method::CpuDelta => {
                    let Some((base, base_evidence)) = baseline else {
                        return 0.0;
                    };
                    // Normalized by each window's length, so windows of different lengths
                    // compare fairly.
                    let before = base_evidence
                        .function_id(&f.function)
                        .map_or(0.0, |id| base.functions[id as usize].cpu_self_s)
                        / base_evidence.seconds.max(1e-9);
                    f.cpu_self_s / evidence.seconds.max(1e-9) - before
                }
            })
            .collect()
    }
}

/// Functions ranked by a method's score, highest first (ties by name), with their scores.
pub fn rank(
    evidence: &Evidence,
    analysis: &Analysis,
    method: Method,
    baseline: Option<(&Analysis, &Evidence)>,
) -> Vec<(String, f64)> {
    let scores = analysis.scores(evidence, method, baseline);
    let mut ranked: Vec<(String, f64)> = evidence.functions.iter().cloned().zip(scores).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked
}

#[cfg(test)]
mod tests;
