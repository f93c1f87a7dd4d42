//! The ground-truth harness: how much each work function really moves a program's latency and
//! throughput, measured by perturbing it.
//!
//! Protocol, for one program:
//! 1. Measure capacity closed-loop, then fix the arrival rate at `utilisation × capacity` for
//!    every run (a perturbation must change latency, not the offered load). Latency comes from
//!    these open-loop runs; throughput is the capacity of each variant, measured closed-loop
//!    right after it (below saturation an open-loop program's throughput is just the offered
//!    rate).
//! 2. For every function f, run it scaled by 1+δ and by 1−δ, each next to a baseline run, in
//!    the order A U A D A U A D … (A: baseline), so slow drifts of the machine hit every variant
//!    alike.
//! 3. The noise floor is the standard deviation of ln(metric) over the baseline runs.
//! 4. The elasticity of a metric m to f is e = (ln m₊ − ln m₋) / (ln(1+δ) − ln(1−δ)), the mean
//!    over the rounds; its 95% interval is e ± 1.96·σ·√(2/rounds) / (ln(1+δ) − ln(1−δ)), σ the
//!    noise floor. An elasticity whose interval contains 0 is labelled 0.
//!
//! Known limits: this machine has 2 cores, so CPU-heavy programs interfere with themselves and
//! with anything else running; CPU frequency and co-tenants drift (interleaving and the noise
//! floor account for slow drift, not for bursts); a function off the throughput bottleneck
//! still adds its own time to every request's latency, so "no impact" holds for throughput,
//! and for latency only as far as its time is small next to the queueing it does not cause.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::runtime::{Load, RunConfig, Summary, run};
use crate::spec::Spec;

/// How to measure one program.
#[derive(Clone, Debug)]
pub struct Protocol {
    /// Offered load as a share of measured capacity.
    pub utilisation: f64,
    /// Relative perturbation.
    pub delta: f64,
    /// Length of each run.
    pub run: Duration,
    /// Warm-up left out of each run's summary.
    pub warmup: Duration,
    /// Up/down pairs per function.
    pub rounds: usize,
    /// Roles whose functions are measured; empty: every function.
    pub roles: Vec<String>,
}

impl Default for Protocol {
    fn default() -> Self {
        Self {
            utilisation: 0.6,
            delta: 0.3,
            run: Duration::from_secs(4),
            warmup: Duration::from_secs(1),
            rounds: 2,
            roles: Vec::new(),
        }
    }
}

/// An elasticity with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Elasticity {
    /// The estimate (0 when the interval contains 0).
    pub value: f64,
    /// The raw estimate.
    pub raw: f64,
    /// Half-width of the 95% interval.
    pub ci95: f64,
}

/// One function's measured impact.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FunctionTruth {
    /// Symbol's last component (`w17`).
    pub name: String,
    /// Its role in the program.
    pub role: String,
    /// Elasticity of median latency.
    pub p50: Elasticity,
    /// Elasticity of 99th percentile latency.
    pub p99: Elasticity,
    /// Elasticity of throughput (closed-loop capacity).
    pub throughput: Elasticity,
}

/// The ground truth of one program.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Truth {
    /// Measured closed-loop capacity, requests/s.
    pub capacity: f64,
    /// The offered rate of every run.
    pub rate: f64,
    /// Baseline summaries.
    pub baselines: Vec<Summary>,
    /// Noise floor: standard deviation of ln p50, ln p99, ln throughput over the baselines.
    pub noise: [f64; 3],
    /// Per function.
    pub functions: Vec<FunctionTruth>,
}

fn metrics(s: &Summary) -> [f64; 3] {
    [
        s.p50_us.max(1e-9).ln(),
        s.p99_us.max(1e-9).ln(),
        s.throughput.max(1e-9).ln(),
    ]
}

/// Measures a program's ground truth; `progress` hears about every run.
pub fn measure(spec: &Spec, protocol: &Protocol, mut progress: impl FnMut(&str)) -> Truth {
    let config = |load, scales: HashMap<String, f64>, seed| RunConfig {
        load,
        duration: protocol.run,
        warmup: protocol.warmup,
        scales,
        seed,
        changes: Vec::new(),
    };
    let probe = RunConfig {
        duration: Duration::from_millis(1500),
        warmup: Duration::from_millis(500),
        ..config(Load::Closed, HashMap::new(), 1)
    };
    let capacity = run(spec, &probe).summary().throughput;
    let rate = protocol.utilisation * capacity;
    progress(&format!("capacity {capacity:.0}/s, offering {rate:.0}/s"));
    let mut seed = 0;
    let mut once = |scales: HashMap<String, f64>, what: &str| {
        seed += 1;
        let mut s = run(spec, &config(Load::Rate(rate), scales.clone(), seed)).summary();
        // Throughput is capacity: what the program serves when requests never wait to arrive.
        s.throughput = run(
            spec,
            &RunConfig {
                scales,
                ..probe.clone()
            },
        )
        .summary()
        .throughput;
        progress(&format!(
            "{what}: p50 {:.0} µs, p99 {:.0} µs, capacity {:.0}/s",
            s.p50_us, s.p99_us, s.throughput
        ));
        s
    };
    let measured: Vec<_> = spec
        .functions
        .iter()
        .filter(|f| protocol.roles.is_empty() || protocol.roles.contains(&f.role))
        .collect();
    let mut baselines = vec![once(HashMap::new(), "baseline")];
    let mut diffs: Vec<Vec<[f64; 3]>> = vec![Vec::new(); measured.len()];
    for _ in 0..protocol.rounds {
        for (i, f) in measured.iter().enumerate() {
            let up = once(
                HashMap::from([(f.name.clone(), 1.0 + protocol.delta)]),
                &format!("{} ({}) ×{:.2}", f.name, f.role, 1.0 + protocol.delta),
            );
            baselines.push(once(HashMap::new(), "baseline"));
            let down = once(
                HashMap::from([(f.name.clone(), 1.0 - protocol.delta)]),
                &format!("{} ({}) ×{:.2}", f.name, f.role, 1.0 - protocol.delta),
            );
            baselines.push(once(HashMap::new(), "baseline"));
            let (u, d) = (metrics(&up), metrics(&down));
            diffs[i].push([u[0] - d[0], u[1] - d[1], u[2] - d[2]]);
        }
    }
    let logs: Vec<[f64; 3]> = baselines.iter().map(metrics).collect();
    let mut noise = [0.0; 3];
    for (k, n) in noise.iter_mut().enumerate() {
        let mean = logs.iter().map(|m| m[k]).sum::<f64>() / logs.len() as f64;
        let var = logs.iter().map(|m| (m[k] - mean).powi(2)).sum::<f64>()
            / (logs.len() as f64 - 1.0).max(1.0);
        *n = var.sqrt();
    }
    let span = (1.0 + protocol.delta).ln() - (1.0 - protocol.delta).ln();
    let functions = measured
        .iter()
        .zip(&diffs)
        .map(|(f, d)| {
            let e = |k: usize| {
                let raw = d.iter().map(|x| x[k]).sum::<f64>() / d.len() as f64 / span;
                let ci95 = 1.96 * noise[k] * (2.0 / d.len() as f64).sqrt() / span;
                Elasticity {
                    value: if raw.abs() <= ci95 { 0.0 } else { raw },
                    raw,
                    ci95,
                }
            };
            FunctionTruth {
                name: f.name.clone(),
                role: f.role.clone(),
                p50: e(0),
                p99: e(1),
                throughput: e(2),
            }
        })
        .collect();
    Truth {
        capacity,
        rate,
        baselines,
        noise,
        functions,
    }
}
