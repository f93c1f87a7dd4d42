//! `critpath explain`, `critpath eval` and `critpath dataset pack`.

use std::path::Path;

use anyhow::{Context as _, bail};
use critpath_analyzer::export::pprof;
use critpath_analyzer::graph::{
    Analysis, Evidence, Explanation, MIN_SUSPECT_SHARE, Method, WakeupsFile,
};
use critpath_analyzer::model::Task;
use critpath_analyzer::{dataset, eval};

use crate::cli::{EvalArgs, ExplainArgs, PackArgs, default_data_dir};
use crate::query::Target;

/// The evidence of a recording: its profile and, when given, its wakeups file. A file with
/// the recording's timeline (version 2) is read as a window of the store is, the threads of
/// the processes `query` selects (every one when empty) and those that woke them: threads by
/// id, each wait charged to what its waker did during it.
pub(crate) fn evidence(
    profile: &Path,
    wakeups: Option<&Path>,
    query: &str,
) -> anyhow::Result<Evidence> {
    let selector = critpath_analyzer::query::Selector::parse(query).context("--query")?;
    let window = critpath_analyzer::query::Window::new(selector, i64::MIN, i64::MAX)?;
    let bytes = std::fs::read(profile).with_context(|| format!("reading {}", profile.display()))?;
    let profile_data =
        pprof::decode(&bytes).with_context(|| format!("decoding {}", profile.display()))?;
    let file = match wakeups {
        Some(wakeups) => {
            let text =
                std::fs::read(wakeups).with_context(|| format!("reading {}", wakeups.display()))?;
            WakeupsFile::parse(&text).with_context(|| {
                format!(
                    "{}: expected the wakeups file of `critpath record --wakeups`",
                    wakeups.display()
                )
            })?
        }
        None => WakeupsFile::Edges(Vec::new()),
    };
    Evidence::from_recording_file(&profile_data, &file, |s| window.selects(s))
        .with_context(|| format!("reading {}", profile.display()))
}

/// `critpath explain`: a recording (`--profile`, `--wakeups`) or a window of the store.
pub fn explain(args: &ExplainArgs) -> anyhow::Result<()> {
    let model = crate::model::chosen(&args.method, &args.model, Task::Explain)?;
    let method: Method = match args.method.as_str() {
        "model" | "auto" => Method::CriticalPath,
        m => m.parse().map_err(anyhow::Error::msg)?,
    };
    let (ev, baseline) = match (&args.profile, &args.wakeups) {
        (Some(profile), Some(wakeups)) => {
            let query = &args.window.query;
            let ev = evidence(profile, Some(wakeups), query)?;
            let baseline = match (&args.baseline_profile, &args.baseline_wakeups) {
                (Some(p), Some(w)) => Some(evidence(p, Some(w), query)?),
                _ if method.needs_baseline() => bail!(
                    "--method {} compares with a baseline: give --baseline-profile and --baseline-wakeups",
                    method.name()
                ),
                _ => None,
            };
            (ev, baseline)
        }
        _ => {
            let target = Target::new(
                args.window
                    .data_dir
                    .clone()
                    .unwrap_or_else(default_data_dir),
                &args.window.from,
                &args.window.to,
                &args.window.query,
            )?;
            let dir = target.reader.dir();
            let read = |w: &critpath_analyzer::query::Window| {
                Evidence::from_store(dir, w)
                    .with_context(|| format!("reading the store in {}", dir.display()))
            };
            // Every function's change is reported against the baseline, not only by cpu_delta.
            let base =
                target.baseline(args.baseline_from.as_deref(), args.baseline_to.as_deref())?;
            let baseline = Some(read(&base)?);
            let w = &target.window;
            (read(w)?, baseline)
        }
    };
    let analysis = Analysis::new(&ev);
    let baseline = baseline.map(|b| (Analysis::new(&b), b));
    let base = baseline.as_ref().map(|(a, e)| (a, e));
    let explanation = match &model {
        Some(m) => Explanation::by_model(&ev, &analysis, m, base, args.top)?,
        None => Explanation::new(&ev, &analysis, method, base, args.top),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
        return Ok(());
    }
    if ev.stacks.is_empty() {
        eprintln!("critpath: nothing was sampled in the window");
    }
    let idle = match (explanation.request_s, explanation.idle_s) {
        (Some(busy), Some(idle)) => format!(
            " ({busy:.1} s in requests, {idle:.1} s idle: waiting for new work, not ranked)"
        ),
        _ => String::new(),
    };
    println!(
        "{} request threads, {:.1} s{idle}; ranked by {}:",
        explanation.request_threads.len(),
        ev.seconds,
        model.as_ref().map_or(method.name().to_owned(), |m| format!(
            "the model {}",
            m.version()
        ))
    );
    println!(
        "{:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  function",
        "score", "cpu s", "off s", "blame s", "ended s", "Δcpu s/s"
    );
    for r in &explanation.functions {
        let e = &r.evidence;
        let change = r
            .change
            .as_ref()
            .map_or("-".to_owned(), |c| format!("{:+.3}", c.cpu_self_per_s));
        println!(
            "{:>10.4} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9}  {}",
            r.score,
            e.cpu_self_s,
            e.off_cpu_total_s.iter().sum::<f64>(),
            e.blame_s,
            e.waits_ended_s,
            change,
            r.function
        );
    }
    if explanation.functions.is_empty() && explanation.request_s.is_some() {
        println!(
            "  (no function holds {:.0}% of the requests' time)",
            100.0 * MIN_SUSPECT_SHARE
        );
    }
    let whys: Vec<(&str, &str)> = explanation
        .functions
        .iter()
        .filter_map(|r| Some((r.function.as_str(), r.why.as_deref()?)))
        .take(3)
        .collect();
    if !whys.is_empty() {
        println!("why:");
        for (f, why) in whys {
            println!("  {f}: {why}");
        }
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

/// Writes `value` as pretty JSON to `path`, creating its directory.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Every (method, family, target, metrics) of an elasticity report.
pub(crate) fn elasticity_rows(
    report: &eval::Report,
) -> impl Iterator<Item = (&str, &str, &str, &eval::Metrics)> {
    report.iter().flat_map(|(method, families)| {
        families.iter().flat_map(move |(family, targets)| {
            targets
                .iter()
                .map(move |(target, m)| (method.as_str(), family.as_str(), target.as_str(), m))
        })
    })
}

/// Prints elasticity metrics as a table, one row per (method, family, target).
pub(crate) fn print_metrics<'a>(
    rows: impl IntoIterator<Item = (&'a str, &'a str, &'a str, &'a eval::Metrics)>,
) {
    println!(
        "{:<15} {:<11} {:<10} {:>4} {:>6} {:>6} {:>7} {:>7}",
        "method", "family", "target", "n", "top1", "top3", "ndcg@5", "tau"
    );
    for (method, family, target, m) in rows {
        println!(
            "{:<15} {:<11} {:<10} {:>4} {:>6.2} {:>6.2} {:>7.3} {:>7.3}",
            method, family, target, m.programs, m.top1, m.top3, m.ndcg5, m.kendall_tau
        );
    }
}

/// `critpath eval`.
pub fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.field {
        let report = crate::field::eval(args, dir)?;
        if let Some(path) = &args.json {
            write_json(path, &report)?;
        }
        crate::field::print(&report);
        return Ok(());
    }
    if let Some(dir) = &args.model {
        return crate::model::eval(&args.dataset, dir, args.json.as_deref());
    }
    let evaluation = eval::evaluate(&args.dataset)?;
    if let Some(path) = &args.json {
        write_json(path, &evaluation)?;
    }
    println!(
        "ranking work functions by measured elasticity (mean over programs with a bottleneck):"
    );
    print_metrics(elasticity_rows(&evaluation.elasticity));
    if !evaluation.cases.is_empty() {
        println!("\nfinding the injected function (deploys: regressions; stalls: slow windows):");
        print_cases(&evaluation.cases);
    }
    Ok(())
}

/// Prints a case report as a table, one row per (method, case kind, family).
pub(crate) fn print_cases(cases: &eval::CaseReport) {
    println!(
        "{:<23} {:<7} {:<11} {:>4} {:>6} {:>6}",
        "method", "case", "family", "n", "top1", "top3"
    );
    for (method, kinds) in cases {
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
