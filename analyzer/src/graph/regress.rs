//! Regression suspects: which functions changed between a window before a deploy and one
//! after it, beyond sampling noise.
//!
//! On-CPU time is sampled: a function's self samples in a window are a Poisson count. Under "no
//! change", the after-window's share of the function's samples over both windows is binomial
//! with p = T_after / (T_before + T_after), which gives a z-score for each function.
//!
//! Sampling is not the only noise: load comes in bursts, and interrupts and the scheduler move
//! kernel paths with whatever else the machine does, so many functions' counts vary more than
//! Poisson counts do. When the windows come from the store, each function's *dispersion* is
//! estimated from its counts per stored interval (quasi-Poisson, as function-level regression
//! detectors such as FBDetect model each function's own noise): Pearson's χ² of the counts
//! against the function's steady rate in its window, over its degrees of freedom, at least 1. The z-score is divided by its square root: a function that varies
//! twice as much as sampling explains needs a change √2 times larger. Two recordings without
//! time resolution (pprof files) get the Poisson model alone ([`Dispersion::poisson`]).
//!
//! A change is significant when |z| passes the Bonferroni-corrected threshold for the number
//! of functions compared (family-wise error [`ALPHA`]) *and* is large enough to matter: at
//! least [`MIN_RELATIVE`] of the function's own rate and [`MIN_SHARE`] of the process's CPU.
//! The second condition is the filter for changes too small to act on.
//!
//! A regression is a significant growth (`grew`, `new`, or a `cost_shift` that grew): a
//! function that costs less after the deploy is reported with its z-score and flagged
//! significant, but it is not a regression suspect. The beginning of a program, or another
//! process starting beside it, moves kernel entry and exit paths by several percent of a CPU
//! between two windows; those shrinkages are real and significant, and beside the point.
//!
//! Suspects are ranked by the growth of their share of the critical path — the requests' time
//! charged to them on the path of the windows' waits, as a share of the requests' time outside
//! the run queue ([`Ranking::CriticalPathDelta`],
//! [`Resolved::own_share`](super::Resolved::own_share)) — when the windows carry off-CPU
//! waits and wakeups (a significant on-CPU growth that no request waits for keeps its flag
//! but is never ranked above the requests' culprit), else regressions first, then by
//! the growth of their on-CPU rate (CPU seconds per second, [`Ranking::CpuDelta`]). A deploy
//! that makes a function wait longer, or hold a lock longer, moves its critical-path share and
//! not its CPU time. On the ground-truth dataset's deploys and stalls (shares of the whole:
//! each program ran alone) the critical-path growth finds the injected function first in 89%
//! of cases, the on-CPU growth in 60% (`models/eval/graph.json`, methods `critical_path_delta`
//! and `cpu_delta`). A trained model of pairs of windows can rank them instead ([`rank_by`],
//! [`Ranking::Model`]).
//!
//! The run queue is left out because a neighbour that starts burning the CPUs after the change
//! makes the requests wait for a CPU longer than for anything else and lowers every share of
//! the whole: in one CI run the synthetic lock holder made twice as slow fell from 27% to 17%
//! and ranked 130th; outside the run queue its share grew in every run (0.50–0.58 → 0.72–0.78,
//! 4 CPU burners started beside it). Each suspect also carries the requests' time in it per
//! second (`path_per_s_*`), which was tried as the ranking and is not it: it needs both
//! windows' request threads to be found alike, and over the store a Redis with
//! `appendfsync always` had a tenth of the request time per second of its `everysec` run, so
//! `flushAppendOnlyFile` fell from 0.038 to 0.016 s/s while its share grew from 14% to 83%. A
//! share has its limit too: a culprit that was most of the requests' time before cannot grow
//! it much (nginx's upstream `slow_backend`, 0.3 → 3 ms, kept 62% in both recordings, where
//! its time per second grew 0.16 → 0.41 s/s).
//!
//! Patterns flagged: `new` (absent before), `went_away` (absent after), `cost_shift` (a
//! significant growth or shrinkage offset by an opposite one in a function with the same
//! caller: cost moved, not added).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{Analysis, Evidence};
use crate::query::{QueryError, Reader, Selector, Window};

/// On-CPU self samples per function in each stored interval ([`Reader::self_by_interval`]).
type Intervals = BTreeMap<i64, HashMap<String, i64>>;

/// Family-wise false-positive rate of the significance test.
pub const ALPHA: f64 = 0.01;
/// Smallest relative change of a function's rate counted as a regression.
pub const MIN_RELATIVE: f64 = 0.1;
/// Smallest change counted, as a share of the total on-CPU rate (before).
pub const MIN_SHARE: f64 = 0.005;
/// Smallest change of a function's critical-path share that its one-line reason names.
pub const MIN_PATH_CHANGE: f64 = 0.005;
/// Fewest degrees of freedom (intervals less one per window) from which dispersions are
/// estimated; with fewer, sampling noise alone is modelled.
pub const MIN_DEGREES_OF_FREEDOM: usize = 4;

/// How much more each function's sample counts vary than sampling alone makes them vary: the
/// quasi-Poisson dispersion φ ≥ 1 of the module docs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dispersion {
    by_function: HashMap<String, f64>,
    degrees_of_freedom: usize,
}

impl Dispersion {
    /// Sampling noise alone: φ = 1 for every function.
    pub fn poisson() -> Self {
        Self::default()
    }

    /// Estimated from each window's self samples per function in each of its intervals (as
    /// [`Reader::self_by_interval`] gives them; the agent's intervals are of equal length).
    /// Under "no change within a window", a function's count in each of the window's I
    /// intervals is Poisson with mean C / I, C its count over the window; φ is the sum over
    /// both windows of (c_i − C / I)² / (C / I) over the degrees of freedom (I − 1 per
    /// window), at least 1. Rates are compared, not shares of each interval, so that one
    /// function's bursts do not show as noise in the others. An interval cut short by an
    /// agent's start or stop only makes φ larger. Fewer than [`MIN_DEGREES_OF_FREEDOM`]:
    /// [`Dispersion::poisson`].
    pub fn from_intervals(windows: &[&BTreeMap<i64, HashMap<String, i64>>]) -> Self {
        let mut chi2: HashMap<&str, f64> = HashMap::new();
        let mut degrees_of_freedom = 0;
        for intervals in windows {
            if intervals.len() < 2 {
                continue;
            }
            degrees_of_freedom += intervals.len() - 1;
            let mut sums: HashMap<&str, f64> = HashMap::new();
            for counts in intervals.values() {
                for (name, &c) in counts {
                    *sums.entry(name).or_default() += c as f64;
                }
            }
            for (&name, &c) in &sums {
                let expected = c / intervals.len() as f64;
                let x: f64 = intervals
                    .values()
                    .map(|counts| {
                        let seen = counts.get(name).copied().unwrap_or(0) as f64;
                        (seen - expected).powi(2) / expected
                    })
                    .sum();
                *chi2.entry(name).or_default() += x;
            }
        }
        if degrees_of_freedom < MIN_DEGREES_OF_FREEDOM {
            return Self::poisson();
        }
        let by_function = chi2
            .into_iter()
            .map(|(name, x)| (name.to_owned(), (x / degrees_of_freedom as f64).max(1.0)))
            .collect();
        Self {
            by_function,
            degrees_of_freedom,
        }
    }

    /// φ of `function` (1 when not estimated).
    pub fn of(&self, function: &str) -> f64 {
        self.by_function.get(function).copied().unwrap_or(1.0)
    }

    /// The degrees of freedom of the estimates; 0 for [`Dispersion::poisson`].
    pub fn degrees_of_freedom(&self) -> usize {
        self.degrees_of_freedom
    }

    /// The noise model: `poisson` or `intervals` (estimated dispersions).
    pub fn model(&self) -> &'static str {
        if self.degrees_of_freedom == 0 {
            "poisson"
        } else {
            "intervals"
        }
    }
}

/// How suspects are ordered after the regressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ranking {
    /// The growth of on-CPU time per second (windows without off-CPU evidence).
    CpuDelta,
    /// The growth of the share of the critical path charged to the function.
    CriticalPathDelta,
    /// A trained model's score of the pair of windows.
    Model,
}

impl Ranking {
    /// The ranking [`regressions`] uses for the windows `before` and `after`: the critical
    /// path's when either window has waits with their wakers (without them the critical path
    /// is each thread's CPU time, and on-CPU growth ranks as well).
    pub fn of(before: &Evidence, after: &Evidence) -> Ranking {
        if !before.waits.is_empty() || !after.waits.is_empty() {
            Ranking::CriticalPathDelta
        } else {
            Ranking::CpuDelta
        }
    }

    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Ranking::CpuDelta => "cpu_delta",
            Ranking::CriticalPathDelta => "critical_path_delta",
            Ranking::Model => "model",
        }
    }
}

/// What a change looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// More on-CPU time.
    Grew,
    /// Less on-CPU time.
    Shrank,
    /// Not seen before.
    New,
    /// Not seen after.
    WentAway,
    /// Changed, offset by an opposite change in a sibling (same caller).
    CostShift,
}

/// One function's change between the windows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Suspect {
    /// The function.
    pub function: String,
    /// On-CPU self time per second before, s/s.
    pub before: f64,
    /// After, s/s.
    pub after: f64,
    /// `after − before`.
    pub delta: f64,
    /// Its share of the critical path before: of the requests' time outside the run queue
    /// ([`Resolved::own_share`](super::Resolved::own_share); of all of it without a
    /// timeline; 0 without off-CPU evidence).
    pub critical_path_before: f64,
    /// After.
    pub critical_path_after: f64,
    /// The requests' time charged to it before, per second of the window, s/s (with a
    /// timeline in both windows).
    pub path_per_s_before: Option<f64>,
    /// After.
    pub path_per_s_after: Option<f64>,
    /// What the ranking ordered it by (larger first): the growth of its critical-path share,
    /// of its on-CPU rate, or the model's score.
    pub score: f64,
    /// Its z-score under "no change", sampling noise scaled by its dispersion.
    pub z: f64,
    /// Its dispersion φ: how much more its counts vary than sampling explains (1: not more,
    /// or not estimated).
    pub dispersion: f64,
    /// Whether the change passes both the significance and the size thresholds.
    pub significant: bool,
    /// Whether it is a significant growth: a regression suspect.
    pub regression: bool,
    /// What the change looks like.
    pub pattern: Pattern,
    /// The heaviest route of its share of the requests' time in the window where that share
    /// is larger (`on_cpu`, `blocked`, `waited_on_cpu`, `waited_blocked`, `knot`; see
    /// [`super::Route::kind`]); none without a timeline or a share.
    pub route: Option<&'static str>,
    /// One line on why it ranks where it does.
    pub why: String,
}

impl Suspect {
    /// The one-line reason: the change of its share of the requests' time, then of its
    /// on-CPU time with its significance.
    fn describe(&self) -> String {
        let pct = |x: f64| 100.0 * x;
        let cpu = format!(
            "on CPU {:.3} → {:.3} s/s ({}z {:.1})",
            self.before,
            self.after,
            if self.regression {
                "a significant growth, "
            } else if self.significant {
                "a significant change, "
            } else {
                ""
            },
            self.z
        );
        let (b, a) = (self.critical_path_before, self.critical_path_after);
        let per_s = match (self.path_per_s_before, self.path_per_s_after) {
            (Some(pb), Some(pa)) => format!(" ({pb:.3} → {pa:.3} s per second)"),
            _ => String::new(),
        };
        if (a - b).abs() >= MIN_PATH_CHANGE {
            format!(
                "its share of the requests' time went from {:.0}% to {:.0}%{per_s}; {cpu}",
                pct(b),
                pct(a)
            )
        } else if self.regression {
            format!("{cpu}, but requests do not wait on it more than before")
        } else {
            cpu
        }
    }
}

/// Upper tail of the standard normal distribution (Abramowitz & Stegun 26.2.17, error
/// below 7.5e-8).
fn normal_tail(z: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.231_641_9 * z.abs());
    let poly = t
        * (0.319_381_530
            + t * (-0.356_563_782
                + t * (1.781_477_937 + t * (-1.821_255_978 + t * 1.330_274_429))));
    let tail = (-z * z / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt() * poly;
    if z >= 0.0 { tail } else { 1.0 - tail }
}

/// The |z| a two-sided test needs at family-wise error `alpha` over `tests` tests.
pub fn z_threshold(alpha: f64, tests: usize) -> f64 {
    let target = alpha / 2.0 / tests.max(1) as f64;
    let (mut lo, mut hi) = (0.0, 40.0);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if normal_tail(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Functions ranked as regression suspects between `before` and `after`, each function's
/// sampling noise scaled by its `dispersion`.
pub fn regressions(
    before: (&Evidence, &Analysis),
    after: (&Evidence, &Analysis),
    dispersion: &Dispersion,
) -> Vec<Suspect> {
    let (eb, ab) = before;
    let (ea, aa) = after;
    let (tb, ta) = (eb.seconds.max(1e-9), ea.seconds.max(1e-9));
    let period = |e: &Evidence| {
        if e.sample_period_ns > 0.0 {
            e.sample_period_ns
        } else {
            1e9 / 19.0
        }
    };
    let (pb, pa) = (period(eb), period(ea));
    let total_before: f64 = ab.functions.iter().map(|f| f.cpu_self_s).sum::<f64>() / tb;
    let mut names: Vec<&str> = eb
        .functions
        .iter()
        .chain(&ea.functions)
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names.dedup();
    let self_s = |e: &Evidence, a: &Analysis, name: &str| {
        e.function_id(name)
            .map_or(0.0, |id| a.functions[id as usize].cpu_self_s)
    };
    let path_share = |e: &Evidence, a: &Analysis, name: &str| {
        e.function_id(name).map_or(0.0, |id| match &a.resolved {
            Some(r) => r.own_share(id),
            None => a.functions[id as usize].critical_path_share,
        })
    };
    // The requests' time charged to a function per second (see the module docs).
    let timed = ab.resolved.is_some() && aa.resolved.is_some();
    let path_per_s = |e: &Evidence, a: &Analysis, t: f64, name: &str| {
        let r = a.resolved.as_ref().filter(|_| timed)?;
        let ns = e.function_id(name).map_or(0.0, |id| {
            r.function_ns.get(id as usize).copied().unwrap_or(0.0)
        });
        Some(ns / 1e9 / t)
    };
    let ranking = Ranking::of(eb, ea);
    let threshold = z_threshold(ALPHA, names.len());
    let mut suspects: Vec<Suspect> = names
        .iter()
        .map(|&name| {
            let (sb, sa) = (self_s(eb, ab, name), self_s(ea, aa, name));
            let (kb, ka) = (sb * 1e9 / pb, sa * 1e9 / pa);
            let n = kb + ka;
            // Expected share of the after-window's samples, from the windows' sampled time.
            let p = (ta / pa) / (tb / pb + ta / pa);
            let phi = dispersion.of(name);
            let z = if n > 0.0 {
                (ka - n * p) / (n * p * (1.0 - p) * phi).sqrt()
            } else {
                0.0
            };
            let (before, after) = (sb / tb, sa / ta);
            let delta = after - before;
            let (critical_path_before, critical_path_after) =
                (path_share(eb, ab, name), path_share(ea, aa, name));
            let (path_per_s_before, path_per_s_after) =
                (path_per_s(eb, ab, tb, name), path_per_s(ea, aa, ta, name));
            let (re, ra) = if critical_path_after >= critical_path_before {
                (ea, aa)
            } else {
                (eb, ab)
            };
            let route = re.function_id(name).and_then(|id| {
                let r = ra.resolved.as_ref()?.routes.get(&id)?.first()?;
                Some(r.route.kind())
            });
            let big =
                delta.abs() >= MIN_RELATIVE * before && delta.abs() >= MIN_SHARE * total_before;
            let pattern = match (before > 0.0, after > 0.0) {
                (false, true) => Pattern::New,
                (true, false) => Pattern::WentAway,
                _ if delta >= 0.0 => Pattern::Grew,
                _ => Pattern::Shrank,
            };
            Suspect {
                function: name.to_owned(),
                before,
                after,
                delta,
                critical_path_before,
                critical_path_after,
                path_per_s_before,
                path_per_s_after,
                score: match ranking {
                    Ranking::CriticalPathDelta => critical_path_after - critical_path_before,
                    _ => delta,
                },
                z,
                dispersion: phi,
                significant: z.abs() >= threshold && big,
                regression: z >= threshold && big,
                pattern,
                route,
                why: String::new(),
            }
        })
        .map(|mut s| {
            s.why = s.describe();
            s
        })
        .collect();
    // Cost shifts: a significant change with an opposite significant change under a common
    // caller, of at least half its size.
    let callers = |name: &str| -> Vec<String> {
        let mut out = Vec::new();
        for (e, a) in [(eb, ab), (ea, aa)] {
            if let Some(id) = e.function_id(name) {
                out.extend(
                    a.calls
                        .callers(id)
                        .into_iter()
                        .map(|(c, _)| e.functions[c as usize].clone()),
                );
            }
        }
        out
    };
    let significant: Vec<(usize, Vec<String>)> = suspects
        .iter()
        .enumerate()
        .filter(|(_, s)| s.significant)
        .map(|(i, s)| (i, callers(&s.function)))
        .collect();
    for &(i, ref ci) in &significant {
        let shifted = significant.iter().any(|&(j, ref cj)| {
            let (a, b) = (&suspects[i], &suspects[j]);
            i != j
                && a.delta * b.delta < 0.0
                && b.delta.abs() >= 0.5 * a.delta.abs()
                && ci.iter().any(|c| cj.contains(c))
        });
        if shifted && matches!(suspects[i].pattern, Pattern::Grew | Pattern::Shrank) {
            suspects[i].pattern = Pattern::CostShift;
        }
    }
    sort(&mut suspects, ranking);
    suspects
}

/// By the ranking's score. With the critical path's growth, the score is the change in the
/// requests' time charged to the function: a significant on-CPU growth that no request waited
/// for (a background or idle-priority thread) keeps its `regression` flag and its z-score,
/// but never outranks a function the requests spent more time on. Without waits (on-CPU
/// growth, or a model), regressions come first.
fn sort(suspects: &mut [Suspect], ranking: Ranking) {
    suspects.sort_by(|a, b| {
        let first = match ranking {
            Ranking::CriticalPathDelta => std::cmp::Ordering::Equal,
            Ranking::CpuDelta | Ranking::Model => b.regression.cmp(&a.regression),
        };
        first
            .then(b.score.total_cmp(&a.score))
            .then(b.regression.cmp(&a.regression))
            .then(b.delta.total_cmp(&a.delta))
            .then(a.function.cmp(&b.function))
    });
}

/// Orders `suspects` by `scores` (a model's, by function; larger first), the regressions
/// still first. A function the model did not score (pruned from its graph) comes after those
/// it scored.
pub fn rank_by(suspects: &mut [Suspect], scores: &HashMap<String, f64>) {
    let lowest = scores.values().copied().fold(f64::INFINITY, f64::min);
    for s in suspects.iter_mut() {
        s.score = scores.get(&s.function).copied().unwrap_or(lowest - 1.0);
    }
    sort(suspects, Ranking::Model);
}

/// What `regressions` answers: the suspects shown, with the counts and thresholds behind them.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The ranking after the regressions: `critical_path_delta`, `cpu_delta` or `model`
    /// ([`Ranking`]).
    pub method: &'static str,
    /// Significant growths among all suspects.
    pub regressions: usize,
    /// Significant changes either way among all suspects.
    pub significant: usize,
    /// [`ALPHA`].
    pub alpha: f64,
    /// [`MIN_RELATIVE`].
    pub min_relative: f64,
    /// [`MIN_SHARE`].
    pub min_share: f64,
    /// The noise model: `poisson` (sampling alone) or `intervals` (each function's dispersion
    /// estimated from its counts per stored interval).
    pub noise: &'static str,
    /// Degrees of freedom of the dispersions (0 with `poisson`).
    pub degrees_of_freedom: usize,
    /// The first `top` suspects, in ranking order.
    pub suspects: Vec<Suspect>,
}

impl Report {
    /// The report of `suspects` (as [`regressions`] or [`rank_by`] ordered them by `ranking`,
    /// with `dispersion`) showing the first `top`.
    pub fn new(
        mut suspects: Vec<Suspect>,
        ranking: Ranking,
        dispersion: &Dispersion,
        top: usize,
    ) -> Report {
        let regressions = suspects.iter().filter(|s| s.regression).count();
        let significant = suspects.iter().filter(|s| s.significant).count();
        suspects.truncate(top);
        Report {
            method: ranking.as_str(),
            regressions,
            significant,
            alpha: ALPHA,
            min_relative: MIN_RELATIVE,
            min_share: MIN_SHARE,
            noise: dispersion.model(),
            degrees_of_freedom: dispersion.degrees_of_freedom(),
            suspects,
        }
    }
}

/// Two windows of the store compared: each one's evidence and analysis, and the
/// dispersions of their functions.
pub struct Pair {
    /// The window before the change.
    pub before: (Evidence, Analysis),
    /// The window after it.
    pub after: (Evidence, Analysis),
    /// Each function's dispersion, from both windows' intervals.
    pub dispersion: Dispersion,
}

impl Pair {
    /// The windows `before` and `after` of the store (each with its selector): on-CPU and
    /// off-CPU rows and wakeups as `explain` reads them ([`Evidence::from_store`]: the
    /// selected threads and those that woke them, threads by name). The dispersions come from
    /// the windows' intervals of every process with a thread in the evidence, so that a
    /// waker's functions are judged against their own noise too.
    ///
    /// # Errors
    /// A store error.
    pub fn in_store(reader: &Reader, before: &Window, after: &Window) -> Result<Pair, QueryError> {
        let read = |w: &Window| -> Result<(Evidence, Analysis, Intervals), QueryError> {
            let evidence = Evidence::from_store(reader.dir(), w)?;
            let mut pids: Vec<u32> = evidence.threads.iter().map(|t| t.pid).collect();
            pids.sort_unstable();
            pids.dedup();
            let judged = if pids.is_empty() {
                w.clone()
            } else {
                let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                let selector = Selector::parse(&format!("{{pid=~\"{}\"}}", pids.join("|")))
                    .map_err(|e| QueryError::Invalid {
                        param: "query",
                        message: e.to_string(),
                    })?;
                Window::new(selector, w.from_ms, w.to_ms)?
            };
            let intervals = reader.self_by_interval(&judged)?;
            let analysis = Analysis::new(&evidence);
            Ok((evidence, analysis, intervals))
        };
        let (eb, ab, ib) = read(before)?;
        let (ea, aa, ia) = read(after)?;
        Ok(Pair {
            before: (eb, ab),
            after: (ea, aa),
            dispersion: Dispersion::from_intervals(&[&ib, &ia]),
        })
    }

    /// [`regressions`] of the pair, and the ranking it used.
    pub fn regressions(&self) -> (Vec<Suspect>, Ranking) {
        let (eb, ab) = &self.before;
        let (ea, aa) = &self.after;
        (
            regressions((eb, ab), (ea, aa), &self.dispersion),
            Ranking::of(eb, ea),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Stack;
    use crate::offcpu::ThreadRef;

    fn window(seconds: f64, functions: &[(&str, f64)]) -> (Evidence, Analysis) {
        let mut ev = Evidence::new(seconds);
        ev.sample_period_ns = 1e7; // 100 Hz
        let t = ev.thread(&ThreadRef {
            pid: 1,
            tid: 1,
            comm: "x".into(),
        });
        for &(f, cpu_s) in functions {
            let frames = ev.frames(["main", f]);
            ev.stacks.push(Stack {
                thread: t,
                frames,
                cpu_ns: cpu_s * 1e9,
                off_cpu_ns: [0.0; 6],
                waiting_in: None,
            });
        }
        let a = Analysis::new(&ev);
        (ev, a)
    }

    /// A window of 1-s intervals at 100 Hz from each function's samples per interval, with
    /// the intervals as [`Reader::self_by_interval`] gives them.
    fn intervals(
        counts: &[(&str, &[i64])],
    ) -> (Evidence, Analysis, BTreeMap<i64, HashMap<String, i64>>) {
        let n = counts[0].1.len();
        let mut by_interval: BTreeMap<i64, HashMap<String, i64>> = BTreeMap::new();
        for (i, start) in (0..n).map(|i| (i, i as i64 * 1000)) {
            let interval = by_interval.entry(start).or_default();
            for &(f, c) in counts {
                interval.insert(f.to_owned(), c[i]);
            }
        }
        let totals: Vec<(&str, f64)> = counts
            .iter()
            .map(|&(f, c)| (f, c.iter().sum::<i64>() as f64 / 100.0))
            .collect();
        let (ev, a) = window(n as f64, &totals);
        (ev, a, by_interval)
    }

    /// A kernel path that comes in bursts moves a lot between two windows with no change in
    /// the program: sampling noise alone calls it a regression, its dispersion from the
    /// intervals does not. A function whose rate steps up between steady windows stays a
    /// regression, and too few intervals leave the Poisson model.
    #[test]
    fn dispersion_from_intervals_filters_bursty_functions() {
        let (eb, ab, ib) = intervals(&[
            ("a", &[100, 98, 103, 99, 100]),
            ("b", &[20, 21, 19, 20, 20]),
            ("irq", &[0, 20, 0, 20, 0]),
        ]);
        let (ea, aa, ia) = intervals(&[
            ("a", &[101, 100, 97, 102, 100]),
            ("b", &[40, 39, 41, 40, 40]),
            ("irq", &[40, 0, 40, 0, 40]),
        ]);
        let get = |s: &[Suspect], f: &str| s.iter().find(|x| x.function == f).unwrap().clone();
        let poisson = regressions((&eb, &ab), (&ea, &aa), &Dispersion::poisson());
        assert!(get(&poisson, "irq").regression, "{poisson:?}");
        assert!(get(&poisson, "b").regression, "{poisson:?}");

        let dispersion = Dispersion::from_intervals(&[&ib, &ia]);
        assert_eq!(
            (dispersion.model(), dispersion.degrees_of_freedom()),
            ("intervals", 8)
        );
        assert!(dispersion.of("irq") > 10.0, "{dispersion:?}");
        // Counts steadier than sampling makes them: no less noise than sampling.
        assert_eq!((dispersion.of("a"), dispersion.of("b")), (1.0, 1.0));
        let s = regressions((&eb, &ab), (&ea, &aa), &dispersion);
        let irq = get(&s, "irq");
        assert!(!irq.significant && irq.dispersion > 10.0, "{s:?}");
        assert!((irq.z * irq.dispersion.sqrt() - get(&poisson, "irq").z).abs() < 1e-9);
        assert_eq!(s[0].function, "b");
        assert!(s[0].regression && !s[1].significant, "{s:?}");

        // Two intervals a window: 2 degrees of freedom, too few.
        let first_two = |m: &BTreeMap<i64, HashMap<String, i64>>| {
            m.iter().take(2).map(|(k, v)| (*k, v.clone())).collect()
        };
        let (b2, a2) = (first_two(&ib), first_two(&ia));
        assert_eq!(
            Dispersion::from_intervals(&[&b2, &a2]),
            Dispersion::poisson()
        );
        assert_eq!(Dispersion::poisson().model(), "poisson");
    }

    #[test]
    fn thresholds() {
        assert!((normal_tail(1.96) - 0.025).abs() < 1e-4);
        assert!((z_threshold(0.05, 1) - 1.96).abs() < 1e-3);
        assert!(z_threshold(0.01, 100) > z_threshold(0.01, 10));
    }

    /// A function 50% slower after a deploy tops the list and is significant; functions that
    /// only moved by noise are not, and a window twice as long compares fairly.
    #[test]
    fn finds_the_grown_function() {
        let (eb, ab) = window(10.0, &[("a", 5.0), ("b", 2.0), ("c", 1.0)]);
        let (ea, aa) = window(20.0, &[("a", 10.1), ("b", 6.0), ("c", 1.95)]);
        let s = regressions((&eb, &ab), (&ea, &aa), &Dispersion::poisson());
        assert_eq!(s[0].function, "b");
        assert!(s[0].regression && s[0].pattern == Pattern::Grew, "{s:?}");
        assert!((s[0].delta - 0.1).abs() < 1e-9);
        assert!(s.iter().skip(1).all(|x| !x.significant), "{s:?}");
    }

    /// The same program twice: nothing significant.
    #[test]
    fn no_false_positives_on_noise() {
        let (eb, ab) = window(10.0, &[("a", 5.0), ("b", 2.0), ("c", 1.0)]);
        let (ea, aa) = window(10.0, &[("a", 4.9), ("b", 2.08), ("c", 0.97)]);
        assert!(
            regressions((&eb, &ab), (&ea, &aa), &Dispersion::poisson())
                .iter()
                .all(|x| !x.significant)
        );
    }

    /// Cost moved from one callee to its sibling is flagged as a shift; a function gone is
    /// flagged as gone.
    #[test]
    fn patterns() {
        let (eb, ab) = window(10.0, &[("a", 5.0), ("b", 2.0), ("old", 1.0)]);
        let (ea, aa) = window(10.0, &[("a", 3.0), ("b", 4.0)]);
        let s = regressions((&eb, &ab), (&ea, &aa), &Dispersion::poisson());
        let get = |f: &str| s.iter().find(|x| x.function == f).unwrap();
        assert_eq!(get("b").pattern, Pattern::CostShift);
        assert_eq!(get("a").pattern, Pattern::CostShift);
        assert_eq!(get("old").pattern, Pattern::WentAway);
        assert!(get("old").significant);
        assert!(get("b").regression && !get("a").regression && !get("old").regression);
    }

    /// A function that shrank a lot is a significant change, not a regression; the ranking
    /// puts the grown function first even when the shrinkage is larger.
    #[test]
    fn shrinking_is_not_a_regression() {
        let (eb, ab) = window(10.0, &[("a", 5.0), ("kernel_entry", 1.0)]);
        let (ea, aa) = window(10.0, &[("a", 6.0), ("kernel_entry", 0.1)]);
        let s = regressions((&eb, &ab), (&ea, &aa), &Dispersion::poisson());
        assert_eq!(s[0].function, "a");
        assert!(s[0].regression, "{s:?}");
        let entry = s.iter().find(|x| x.function == "kernel_entry").unwrap();
        assert!(entry.significant && !entry.regression, "{s:?}");
    }
}
