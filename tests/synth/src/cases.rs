//! Regression and slow-window cases: one work function made slower at a known moment of a run,
//! with the function as the label, for judging regression-suspect ranking ("what regressed
//! after this deploy?") and window explanation ("why was this window slow?").
//!
//! Every case runs one program for [`Case::SECONDS`] at a fixed offered rate; it is recorded
//! once before the change and once after it, and the latency of each part is measured from the
//! request log (the first second of each left out):
//!
//! ```text
//! 0 s   1 s ── before ── 5.5 s change   6.5 s ── after ── 11.5 s (a stall ends)   12 s
//! ```
//!
//! Scales are moderate (deploys 1.3–1.6×, stalls 1.4–1.6×): at the dataset's 60% load a
//! bottleneck slowed this much stays just below saturation, so the windows show queueing, not
//! an ever-growing backlog.
//!
//! - **deploy**: a function on the request path does `scale`× its work from 5.5 s on (a
//!   regression shipped by a deploy); any request-path function may be picked, including ones
//!   whose slowdown barely moves latency (a regression in cost, not in latency).
//! - **stall**: the lock holder or the device does `scale`× its work (service time, for a
//!   device) from 5.5 s until the run's last half second, then returns to normal: a slow
//!   window.
//!   Only programs with a lock or a device have one.

use std::time::Duration;

use serde::Serialize;

use crate::runtime::Change;
pub use crate::runtime::WindowLatency;
use crate::spec::{Rng, Spec, Stage};

/// What is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseKind {
    /// A permanent slowdown from a moment on.
    Deploy,
    /// A temporary slowdown of a lock holder or a device.
    Stall,
}

impl CaseKind {
    /// Both kinds.
    pub const ALL: [CaseKind; 2] = [Self::Deploy, Self::Stall];

    /// The name used in directories and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Stall => "stall",
        }
    }
}

impl std::str::FromStr for CaseKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown case {s:?}: expected deploy or stall"))
    }
}

/// One injected change and the two windows around it, in seconds since the run started.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Case {
    /// What is injected.
    pub kind: CaseKind,
    /// The injected function (`w17`): the label.
    pub function: String,
    /// Its role in the program.
    pub role: String,
    /// Its scale after the change.
    pub scale: f64,
    /// When the change happens.
    pub at: f64,
    /// When a stall ends (none for a deploy).
    pub until: Option<f64>,
    /// The window before the change: `[start, end)`.
    pub before: (f64, f64),
    /// The window after it.
    pub after: (f64, f64),
}

impl Case {
    /// Length of a case's run, s.
    pub const SECONDS: f64 = 12.0;
    /// When the change happens, s.
    pub const AT: f64 = 5.5;

    /// The case of a kind for a program (the same program, the same case), if it has one.
    pub fn choose(spec: &Spec, kind: CaseKind) -> Option<Case> {
        let mut rng = Rng::new(spec.seed.wrapping_mul(31).wrapping_add(kind as u64 + 7));
        let (function, scale, until) = match kind {
            CaseKind::Deploy => {
                let on_path = request_path_functions(spec);
                let f = on_path[rng.range(0, on_path.len() as u64 - 1) as usize];
                (f, 1.3 + 0.3 * rng.unit(), None)
            }
            CaseKind::Stall => {
                let candidates: Vec<usize> = spec
                    .path
                    .iter()
                    .filter_map(|stage| match stage {
                        Stage::Locked { function, .. } => Some(*function),
                        Stage::Io { device } => Some(spec.devices[*device].function),
                        _ => None,
                    })
                    .collect();
                if candidates.is_empty() {
                    return None;
                }
                let f = candidates[rng.range(0, candidates.len() as u64 - 1) as usize];
                (f, 1.4 + 0.2 * rng.unit(), Some(Self::SECONDS - 0.5))
            }
        };
        let f = &spec.functions[function];
        Some(Case {
            kind,
            function: f.name.clone(),
            role: f.role.clone(),
            scale: (scale * 100.0).round() / 100.0,
            at: Self::AT,
            until,
            before: (1.0, Self::AT),
            after: (Self::AT + 1.0, Self::SECONDS - 0.5),
        })
    }

    /// The scale changes that inject the case.
    pub fn changes(&self) -> Vec<Change> {
        let mut changes = vec![Change {
            at: Duration::from_secs_f64(self.at),
            function: self.function.clone(),
            scale: self.scale,
        }];
        if let Some(until) = self.until {
            changes.push(Change {
                at: Duration::from_secs_f64(until),
                function: self.function.clone(),
                scale: 1.0,
            });
        }
        changes
    }
}

/// Functions that run for every request (on its thread, under its locks, in its pools, or as
/// the devices it waits for), in spec order.
pub fn request_path_functions(spec: &Spec) -> Vec<usize> {
    let mut out = Vec::new();
    for stage in &spec.path {
        match stage {
            Stage::Cpu { function }
            | Stage::Locked { function, .. }
            | Stage::Handoff { function, .. } => out.push(*function),
            Stage::FanOut { functions, .. } => out.extend(functions),
            Stage::Io { device } => out.push(spec.devices[*device].function),
            Stage::Sleep { .. } => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Request;
    use crate::spec::Family;

    /// Every family has a deploy case on its request path; stalls exist exactly where a lock or
    /// a device does, and end inside the run.
    #[test]
    fn cases_fit_their_programs() {
        for family in Family::ALL {
            for seed in 1..20 {
                let spec = Spec::generate(family, seed);
                let deploy = Case::choose(&spec, CaseKind::Deploy).expect("a deploy");
                assert_ne!(deploy.role, "housekeeping");
                assert!(deploy.before.1 <= deploy.at && deploy.at <= deploy.after.0);
                let has_wait = spec
                    .path
                    .iter()
                    .any(|s| matches!(s, Stage::Locked { .. } | Stage::Io { .. }));
                let stall = Case::choose(&spec, CaseKind::Stall);
                assert_eq!(stall.is_some(), has_wait, "{family:?} {seed}");
                if let Some(stall) = stall {
                    assert!(stall.after.1 <= stall.until.unwrap());
                    assert_eq!(stall.changes().len(), 2);
                }
            }
        }
    }

    #[test]
    fn window_latency_counts_arrivals_in_the_window() {
        let r = |arrival_ms: u64, latency_us: u64| Request {
            arrival_ns: arrival_ms * 1_000_000,
            start_ns: arrival_ms * 1_000_000,
            end_ns: arrival_ms * 1_000_000 + latency_us * 1_000,
        };
        let requests = [r(100, 5), r(600, 10), r(700, 30), r(900, 20), r(1_200, 99)];
        let w = WindowLatency::of(&requests, (0.5, 1.0));
        assert_eq!(w.requests, 3);
        assert_eq!(w.p50_us, 20.0);
        assert_eq!(w.p99_us, 30.0);
    }
}
