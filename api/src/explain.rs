//! `critpath explain`, `critpath eval` and `critpath dataset pack`.

use std::path::Path;

use anyhow::{Context as _, bail};
use critpath_analyzer::export::pprof;
use critpath_analyzer::graph::{self, Actor, Analysis, Evidence, Method};
use critpath_analyzer::offcpu::WakeupEdge;
use critpath_analyzer::{dataset, eval};
use serde::Serialize;

use crate::cli::{EvalArgs, ExplainArgs, PackArgs};

/// The evidence of a recording: its profile and, when given, its wakeup edges.
pub(crate) fn evidence(profile: &Path, wakeups: Option<&Path>) -> anyhow::Result<Evidence> {
    let bytes = std::fs::read(profile).with_context(|| format!("reading {}", profile.display()))?;
    let profile_data =
        pprof::decode(&bytes).with_context(|| format!("decoding {}", profile.display()))?;
    let edges: Vec<WakeupEdge> = match wakeups {
        Some(wakeups) => {
            let text =
                std::fs::read(wakeups).with_context(|| format!("reading {}", wakeups.display()))?;
            serde_json::from_slice(&text).with_context(|| {
                format!(
                    "{}: expected the wakeup edges of `critpath record --wakeups`",
                    wakeups.display()
                )
            })?
        }
        None => Vec::new(),
    };
    Evidence::from_recording(&profile_data, &edges)
        .with_context(|| format!("reading {}", profile.display()))
}

#[derive(Serialize)]
struct Ranked<'a> {
    function: &'a str,
    score: f64,
    evidence: &'a graph::FunctionEvidence,
}

#[derive(Serialize)]
struct Step {
    actor: String,
    waited_s: f64,
    functions: Vec<(String, f64)>,
}

#[derive(Serialize)]
struct Explanation<'a> {
    method: &'static str,
    seconds: f64,
    request_threads: Vec<String>,
    functions: Vec<Ranked<'a>>,
    critical_path: Vec<Step>,
}

fn actor_name(ev: &Evidence, actor: Actor) -> String {
    match actor {
        Actor::Thread(t) => {
            let t = &ev.threads[t as usize];
            format!("{} (pid {}, tid {})", t.comm, t.pid, t.tid)
        }
        kernel => kernel.kernel_name().unwrap_or_default().to_owned(),
    }
}

/// `critpath explain`.
pub fn explain(args: &ExplainArgs) -> anyhow::Result<()> {
    let method: Method = args.method.parse().map_err(anyhow::Error::msg)?;
    let ev = evidence(&args.profile, Some(&args.wakeups))?;
    let analysis = Analysis::new(&ev);
    let baseline = match (&args.baseline_profile, &args.baseline_wakeups) {
        (Some(p), Some(w)) => {
            let b = evidence(p, Some(w))?;
            let a = Analysis::new(&b);
            Some((a, b))
        }
        _ if method.needs_baseline() => {
            bail!(
                "--method {} compares with a baseline: give --baseline-profile and --baseline-wakeups",
                method.name()
            )
        }
        _ => None,
    };
    let ranked = graph::rank(
        &ev,
        &analysis,
        method,
        baseline.as_ref().map(|(a, e)| (a, e)),
    );
    let path = analysis
        .waits
        .critical_path(&analysis.blame.request_threads);
    let explanation = Explanation {
        method: method.name(),
        seconds: ev.seconds,
        request_threads: analysis
            .blame
            .request_threads
            .iter()
            .map(|&t| actor_name(&ev, Actor::Thread(t)))
            .collect(),
        functions: ranked
            .iter()
            .take(args.top)
            .map(|(name, score)| Ranked {
                function: name,
                score: *score,
                evidence: &analysis.functions
                    [ev.function_id(name).expect("a ranked function") as usize],
            })
            .collect(),
        critical_path: path
            .iter()
            .map(|s| Step {
                actor: actor_name(&ev, s.actor),
                waited_s: s.waited_ns / 1e9,
                functions: s
                    .functions
                    .iter()
                    .map(|&(f, ns)| (ev.functions[f as usize].clone(), ns / 1e9))
                    .collect(),
            })
            .collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
        return Ok(());
    }
    println!(
        "{} request threads, {:.1} s; ranked by {}:",
        explanation.request_threads.len(),
        ev.seconds,
        method.name()
    );
    println!(
        "{:>10} {:>9} {:>9} {:>9} {:>9}  function",
        "score", "cpu s", "off s", "blame s", "ended s"
    );
    for r in &explanation.functions {
        let e = r.evidence;
        println!(
            "{:>10.4} {:>9.3} {:>9.3} {:>9.3} {:>9.3}  {}",
            r.score,
            e.cpu_self_s,
            e.off_cpu_total_s.iter().sum::<f64>(),
            e.blame_s,
            e.waits_ended_s,
            r.function
        );
    }
    println!("critical path:");
    for (i, s) in explanation.critical_path.iter().enumerate() {
        let top: Vec<String> = s
            .functions
            .iter()
            .map(|(f, sec)| format!("{f} {sec:.3} s"))
            .collect();
        println!(
            "  {}{} (waited {:.3} s){}{}",
            if i == 0 { "" } else { "→ " },
            s.actor,
            s.waited_s,
            if top.is_empty() { "" } else { ": " },
            top.join(", ")
        );
    }
    Ok(())
}

/// `critpath eval`.
pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let evaluation = eval::evaluate(&args.dataset)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&evaluation)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "ranking work functions by measured elasticity (mean over programs with a bottleneck):"
    );
    println!(
        "{:<15} {:<11} {:<10} {:>4} {:>6} {:>6} {:>7} {:>7}",
        "method", "family", "target", "n", "top1", "top3", "ndcg@5", "tau"
    );
    for (method, families) in &evaluation.elasticity {
        for (family, targets) in families {
            for (target, m) in targets {
                println!(
                    "{:<15} {:<11} {:<10} {:>4} {:>6.2} {:>6.2} {:>7.3} {:>7.3}",
                    method, family, target, m.programs, m.top1, m.top3, m.ndcg5, m.kendall_tau
                );
            }
        }
    }
    if !evaluation.cases.is_empty() {
        println!("\nfinding the injected function (deploys: regressions; stalls: slow windows):");
        println!(
            "{:<23} {:<7} {:<11} {:>4} {:>6} {:>6}",
            "method", "case", "family", "n", "top1", "top3"
        );
        for (method, kinds) in &evaluation.cases {
            for (kind, families) in kinds {
                for (family, m) in families {
                    println!(
                        "{:<23} {:<7} {:<11} {:>4} {:>6.2} {:>6.2}",
                        method, kind, family, m.programs, m.top1, m.top3
                    );
                }
            }
        }
    }
    Ok(())
}

/// `critpath dataset pack`.
pub fn pack(args: &PackArgs) -> anyhow::Result<()> {
    let packed = dataset::pack(&args.input, &args.out, |p| {
        eprintln!("critpath: packing {p}")
    })?;
    if packed.programs == 0 {
        bail!(
            "no recorded programs under {}/programs (run tests/synth's dataset with --record)",
            args.input.display()
        );
    }
    eprintln!(
        "critpath: wrote {} programs ({} function rows, {} cases) to {}{}",
        packed.programs,
        packed.functions,
        packed.cases,
        args.out.display(),
        if packed.unrecorded.is_empty() {
            String::new()
        } else {
            format!(
                "; {} measured but not recorded, left out",
                packed.unrecorded.len()
            )
        }
    );
    Ok(())
}
