//! What `explain` answers, from a recording or a window of the store: functions ranked by a
//! method with their evidence, the request threads and the critical path.

use serde::Serialize;

use super::{Actor, Analysis, Evidence, FunctionEvidence, Method, Route, Why, rank};
use crate::query::Window;
use crate::store::{Store, StoreError};

/// The least share of the request threads' time that makes a function a suspect of the
/// critical path (with a timeline): below it, a function is the noise of a few waits or
/// samples — a queue's lock taken in passing, a stray preemption — and listing it would put
/// functions that cost the requests nothing among the first answers.
pub const MIN_SUSPECT_SHARE: f64 = 0.01;

/// One ranked function.
#[derive(Clone, Debug, Serialize)]
pub struct Ranked {
    /// The function.
    pub function: String,
    /// Its score under the method (higher: more likely to matter).
    pub score: f64,
    /// Its estimated impact on request latency: the share of the request threads' time
    /// charged to it by the critical path ([`FunctionEvidence::critical_path_share`]), or
    /// with the model, its predicted p50 elasticity.
    pub latency_impact: f64,
    /// Its estimated impact on throughput: the utilization of the resource it is
    /// ([`FunctionEvidence::utilization`]), or with the model, its predicted throughput
    /// elasticity negated (larger: more impact).
    pub throughput_impact: f64,
    /// Everything known about it in the window.
    pub evidence: FunctionEvidence,
    /// Its change against the baseline window, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    /// Why, in one line: how the request threads' time came to it. With a timeline, by its
    /// routes, e.g. "requests spent 58% of their time waiting (lock) for flusher (pid 7, tid 9)
    /// while it ran flush_journal, 6.1 ms per wait"; a function reached by several routes gets
    /// its whole share and the heaviest three of 1% or more (`requests spent 46% of their time
    /// in audit_log: 28% blocked in it (io, ended by [jbd2]), 0.90 ms per wait; 18% waiting
    /// (lock) for …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The heaviest route of its time, with a timeline: `on_cpu` (request threads ran it),
    /// `blocked` (they blocked in it), `waited_running` (they waited for a thread that ran it),
    /// `waited_blocked` (for a thread blocked in it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'static str>,
}

/// A function's change from the baseline window to this one.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// On-CPU self time per second of window, this window's minus the baseline's.
    pub cpu_self_per_s: f64,
    /// Share of the request threads' time charged to it, this window's minus the baseline's.
    pub critical_path_share: f64,
}

/// One hop of the critical path, named.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// The thread (`name (pid P[, tid T])`) or kernel actor (`[device]`, `[timer]`, ...).
    pub actor: String,
    /// Time the previous step waited for it, s (the first step: its own time).
    pub waited_s: f64,
    /// Its heaviest on-CPU functions with their self time, s.
    pub functions: Vec<(String, f64)>,
}

/// Why a window was slow, by one method.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// The ranking method.
    pub method: &'static str,
    /// The window's length, s.
    pub seconds: f64,
    /// The threads on the request path.
    pub request_threads: Vec<String>,
    /// With a timeline: the request threads' time, idle time left out, s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_s: Option<f64>,
    /// With a timeline: their idle time (waits for new work: a client, a timer between jobs),
    /// s, ranked nowhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_s: Option<f64>,
    /// The first functions by score (by the critical path with a timeline: those charged at
    /// least [`MIN_SUSPECT_SHARE`] of the requests' time).
    pub functions: Vec<Ranked>,
    /// The critical path from the request threads.
    pub critical_path: Vec<Step>,
}

impl Explanation {
    /// The explanation of a window's `evidence` and `analysis` by `method` (with `baseline`,
    /// the analysis of the window to compare with, for the methods that need one), keeping the
    /// first `top` functions.
    pub fn new(
        evidence: &Evidence,
        analysis: &Analysis,
        method: Method,
        baseline: Option<(&Analysis, &Evidence)>,
        top: usize,
    ) -> Explanation {
        let mut ranked = rank(evidence, analysis, method, baseline);
        // With a timeline the critical path's shares are of the requests' time: a function
        // under `MIN_SUSPECT_SHARE` of it is no suspect.
        if method == Method::CriticalPath && analysis.resolved.is_some() {
            ranked.retain(|&(_, share)| share >= MIN_SUSPECT_SHARE);
        }
        Self::from_ranking(
            evidence,
            analysis,
            method.name(),
            ranked,
            None,
            baseline,
            top,
        )
    }

    /// The explanation of a window by the impact model: functions ranked by their predicted
    /// p50 elasticity, latency and throughput impact the model's predictions (functions
    /// outside the model's nodes are not ranked).
    ///
    /// # Errors
    /// The model failed.
    pub fn by_model(
        evidence: &Evidence,
        analysis: &Analysis,
        model: &crate::model::Model,
        baseline: Option<(&Analysis, &Evidence)>,
        top: usize,
    ) -> Result<Explanation, crate::model::ModelError> {
        let scored = model.score(evidence, analysis)?;
        let mut ranked: Vec<(String, f64)> =
            scored.iter().map(|(f, s)| (f.clone(), s[0])).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let impacts: std::collections::HashMap<String, [f64; 3]> = scored.into_iter().collect();
        Ok(Self::from_ranking(
            evidence,
            analysis,
            "model",
            ranked,
            Some(&impacts),
            baseline,
            top,
        ))
    }

    fn from_ranking(
        evidence: &Evidence,
        analysis: &Analysis,
        method: &'static str,
        ranked: Vec<(String, f64)>,
        impacts: Option<&std::collections::HashMap<String, [f64; 3]>>,
        baseline: Option<(&Analysis, &Evidence)>,
        top: usize,
    ) -> Explanation {
        let request_threads = match &analysis.resolved {
            Some(r) => &r.roots,
            None => &analysis.blame.request_threads,
        };
        let path = analysis.waits.critical_path(request_threads);
        Explanation {
            method,
            seconds: evidence.seconds,
            request_threads: request_threads
                .iter()
                .map(|&t| evidence.actor_name(Actor::Thread(t)))
                .collect(),
            request_s: analysis.resolved.as_ref().map(|r| r.request_ns / 1e9),
            idle_s: analysis.resolved.as_ref().map(|r| r.idle_ns / 1e9),
            functions: ranked
                .into_iter()
                .take(top)
                .map(|(function, score)| {
                    let id = evidence.function_id(&function).expect("a ranked function");
                    let now = &analysis.functions[id as usize];
                    let change = baseline.map(|(base, base_evidence)| {
                        let before = base_evidence
                            .function_id(&function)
                            .map(|b| &base.functions[b as usize]);
                        let per_s = |e: &Evidence, f: Option<&FunctionEvidence>| {
                            f.map_or(0.0, |f| f.cpu_self_s) / e.seconds.max(1e-9)
                        };
                        Change {
                            cpu_self_per_s: per_s(evidence, Some(now))
                                - per_s(base_evidence, before),
                            critical_path_share: now.critical_path_share
                                - before.map_or(0.0, |f| f.critical_path_share),
                        }
                    });
                    let predicted = impacts.and_then(|m| m.get(&function));
                    let why = why(evidence, analysis, id, now);
                    let route = analysis
                        .resolved
                        .as_ref()
                        .and_then(|r| r.routes.get(&id)?.first())
                        .map(|w| w.route.kind());
                    Ranked {
                        why,
                        route,
                        latency_impact: predicted.map_or(now.critical_path_share, |p| p[0]),
                        throughput_impact: predicted.map_or(now.utilization, |p| p[2]),
                        evidence: now.clone(),
                        function,
                        score,
                        change,
                    }
                })
                .collect(),
            critical_path: path
                .iter()
                .map(|s| Step {
                    actor: evidence.actor_name(s.actor),
                    waited_s: s.waited_ns / 1e9,
                    functions: s
                        .functions
                        .iter()
                        .map(|&(f, ns)| (evidence.functions[f as usize].clone(), ns / 1e9))
                        .collect(),
                })
                .collect(),
        }
    }
}

/// The one-line reason a function ranks where it does (see [`Ranked::why`]).
fn why(
    evidence: &Evidence,
    analysis: &Analysis,
    f: super::FunctionId,
    now: &FunctionEvidence,
) -> Option<String> {
    let name = &evidence.functions[f as usize];
    let Some(resolved) = &analysis.resolved else {
        if now.critical_path_share <= 0.0 {
            return None;
        }
        let waited_by = now
            .waited_by
            .first()
            .map(|p| {
                format!(
                    "; threads blocked in {} waited {:.3} s for it",
                    p.function, p.waited_s
                )
            })
            .unwrap_or_default();
        return Some(format!(
            "{:.0}% of the request threads' time is charged to {name} by the critical path{waited_by}",
            100.0 * now.critical_path_share
        ));
    };
    let routes = resolved.routes.get(&f)?;
    let total = resolved.request_ns.max(1e-9);
    let pct = |ns: f64| 100.0 * ns / total;
    // The heaviest route, and the next ones worth naming (up to three in all).
    let shown: Vec<&Why> = routes
        .iter()
        .enumerate()
        .take_while(|&(i, w)| i == 0 || (i < MAX_ROUTES && pct(w.ns) >= MIN_ROUTE_PCT))
        .map(|(_, w)| w)
        .collect();
    let [first] = shown.as_slice() else {
        let all: f64 = routes.iter().map(|w| w.ns).sum();
        let rest = all - shown.iter().map(|w| w.ns).sum::<f64>();
        let mut parts: Vec<String> = shown
            .iter()
            .map(|w| format!("{:.0}% {}", pct(w.ns), route_phrase(evidence, w, "it")))
            .collect();
        if pct(rest) >= 0.5 {
            parts.push(format!("{:.0}% otherwise", pct(rest)));
        }
        return Some(format!(
            "requests spent {:.0}% of their time in {name}: {}",
            pct(all),
            parts.join("; ")
        ));
    };
    Some(format!(
        "requests spent {:.0}% of their time {}",
        pct(first.ns),
        route_phrase(evidence, first, name)
    ))
}

/// Routes named in a function's reason, at most.
const MAX_ROUTES: usize = 3;
/// Smallest share of the requests' time, in percent, of a route named after the heaviest.
const MIN_ROUTE_PCT: f64 = 1.0;

/// How the requests' time came to function `name` by `way`: "blocked in NAME (io, ended by
/// [jbd2]), 0.90 ms per wait".
fn route_phrase(evidence: &Evidence, way: &Why, name: &str) -> String {
    let per_wait = if way.waits > 0.0 {
        format!(", {:.2} ms per wait", way.ns / way.waits / 1e6)
    } else {
        String::new()
    };
    let ended = |reason: &str| {
        if reason.is_empty() {
            String::new()
        } else {
            format!(", ended by [{reason}]")
        }
    };
    match &way.route {
        Route::OnCpu => format!("on CPU in {name}"),
        Route::Blocked { reason, cause } => format!(
            "blocked in {name} ({}{}){per_wait}",
            cause.name(),
            ended(reason)
        ),
        Route::WaitedRunning { thread, cause } => format!(
            "waiting ({}) for {} while it ran {name}{per_wait}",
            cause.name(),
            evidence.actor_name(Actor::Thread(*thread))
        ),
        Route::WaitedBlocked {
            thread,
            cause,
            reason,
        } => format!(
            "waiting ({}) for {} while it was blocked in {name}{}{per_wait}",
            cause.name(),
            evidence.actor_name(Actor::Thread(*thread)),
            ended(reason)
        ),
    }
}

impl Evidence {
    /// The evidence of a window of the store `dir` (its selector applies; see
    /// [`Evidence::from_batches`]).
    ///
    /// # Errors
    /// A store error.
    pub fn from_store(dir: &std::path::Path, window: &Window) -> Result<Evidence, StoreError> {
        let batches = Store::batches(dir, window.from_ms, window.to_ms)?;
        let seconds = (window.to_ms - window.from_ms) as f64 / 1e3;
        Ok(Evidence::from_batches(&batches, seconds, |s| {
            window.selects(s)
        }))
    }

    /// A display name: `name (pid P, tid T)` for a thread of a recording, `name (pid P)` for
    /// one of the store (which knows threads by name), `[device]` and the like for the kernel.
    pub fn actor_name(&self, actor: Actor) -> String {
        match actor {
            Actor::Thread(t) => {
                let t = &self.threads[t as usize];
                if self.threads_by_name {
                    format!("{} (pid {})", t.comm, t.pid)
                } else {
                    format!("{} (pid {}, tid {})", t.comm, t.pid, t.tid)
                }
            }
            kernel => kernel.kernel_name().unwrap_or_default().to_owned(),
        }
    }
}
