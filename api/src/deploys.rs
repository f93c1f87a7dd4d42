//! `critpath deploy`, `critpath deploys` and `critpath regressions`.
use std::path::PathBuf;

use anyhow::Context as _;
use critpath_analyzer::deploys::{self, Source};
use critpath_analyzer::graph::{Analysis, Dispersion, Evidence, Pair, Ranking, Report};
use critpath_analyzer::model::Task;
use critpath_analyzer::query::{Reader, Selector, parse_time_ms};

use crate::cli::{DeployArgs, DeploysArgs, RegressionsArgs, default_data_dir};
use crate::explain::evidence;
use crate::query::{Target, now_ms, timestamp};

/// `critpath deploy`.
pub fn deploy(args: &DeployArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let at_ms = parse_time_ms(&args.at, now_ms()).context("--at")?;
    let d = deploys::mark(&dir, &args.service, &args.version, at_ms)?;
    println!(
        "deploy {}: {} {} at {} (critpath regressions --deploy {} --data-dir {})",
        d.id,
        d.service,
        d.version,
        timestamp(d.at_ms),
        d.id,
        dir.display()
    );
    Ok(())
}

/// `critpath deploys`.
pub fn list(args: DeploysArgs) -> anyhow::Result<()> {
    let json = args.json;
    let target = Target::new(
        args.window.data_dir.unwrap_or_else(default_data_dir),
        &args.window.from,
        &args.window.to,
        &args.window.query,
    )?;
    let w = &target.window;
    let all = deploys::in_window(&target.reader, w)
        .with_context(|| format!("reading {}", target.reader.dir().display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<20} {:<24} {:<20} version",
        "at", "id", "service", "source"
    );
    for d in &all {
        let source = match d.source {
            Source::Marked => "marked".to_owned(),
            Source::BuildId => format!("build id of {}", d.exe.as_deref().unwrap_or("?")),
        };
        println!(
            "{:<20} {:<20} {:<24} {:<20} {}",
            timestamp(d.at_ms),
            d.id,
            d.service,
            source,
            d.version
        );
    }
    if all.is_empty() {
        eprintln!(
            "no deploys between {} and {}",
            timestamp(w.from_ms),
            timestamp(w.to_ms)
        );
    }
    Ok(())
}

/// `critpath regressions`: between two recordings, or the store's windows around a deploy.
pub fn regressions(args: &RegressionsArgs) -> anyhow::Result<()> {
    let pair = if let (Some(before), Some(after)) = (&args.before, &args.after) {
        // Recordings carry no time within them: sampling noise alone is modelled.
        let window =
            |path: &PathBuf, wakeups: &Option<PathBuf>| -> anyhow::Result<(Evidence, Analysis)> {
                let evidence = evidence(path, wakeups.as_deref(), &args.query)?;
                let analysis = Analysis::new(&evidence);
                Ok((evidence, analysis))
            };
        Pair {
            before: window(before, &args.before_wakeups)?,
            after: window(after, &args.after_wakeups)?,
            dispersion: Dispersion::poisson(),
        }
    } else {
        let reader = Reader::new(args.data_dir.clone().unwrap_or_else(default_data_dir));
        let selector = Selector::parse(&args.query).context("--query")?;
        let now = now_ms();
        let at = args
            .at
            .as_deref()
            .map(|t| parse_time_ms(t, now).context("--at"))
            .transpose()?;
        let around = deploys::around(
            &reader,
            args.deploy.as_deref(),
            at,
            args.window.as_millis() as i64,
            &selector,
            now,
        )
        .map_err(|e| match e {
            deploys::AroundError::Invalid { field, message } => {
                anyhow::anyhow!("--{field}: {message}")
            }
            e => anyhow::Error::new(e).context(format!("reading {}", reader.dir().display())),
        })?;
        if !args.json {
            eprintln!(
                "comparing {} – {} with {} – {}",
                timestamp(around.before.from_ms),
                timestamp(around.before.to_ms),
                timestamp(around.after.from_ms),
                timestamp(around.after.to_ms)
            );
        }
        Pair::in_store(&reader, &around.before, &around.after)
            .with_context(|| format!("reading the store in {}", reader.dir().display()))?
    };
    let (mut suspects, mut ranking) = pair.regressions();
    if let Some(model) = crate::model::chosen(&args.method, &args.model, Task::Regressions)? {
        model
            .rank_suspects(&pair, &mut suspects)
            .with_context(|| format!("--method model ({})", args.model.display()))?;
        ranking = Ranking::Model;
    }
    let report = Report::new(suspects, ranking, &pair.dispersion, args.top);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:>11} {:>11} {:>11} {:>8} {:>7} {:>5}  {:<13} function",
        "before s/s", "after s/s", "delta", "path Δ", "z", "φ", "change"
    );
    for s in &report.suspects {
        // Significant changes are named; a regression (significant growth) is starred.
        let change = if s.significant {
            serde_json::to_value(s.pattern)?
                .as_str()
                .unwrap_or_default()
                .to_owned()
                + if s.regression { " *" } else { "" }
        } else {
            "-".to_owned()
        };
        println!(
            "{:>11.4} {:>11.4} {:>+11.4} {:>+8.3} {:>7.1} {:>5.2}  {:<13} {}",
            s.before,
            s.after,
            s.delta,
            s.critical_path_after - s.critical_path_before,
            s.z,
            s.dispersion,
            change,
            s.function
        );
    }
    println!(
        "{} regressions (*), {} significant changes, the rest ranked by {} (path Δ: change of \
         the share of the critical path, waits for a CPU left out); noise: {}",
        report.regressions,
        report.significant,
        report.method,
        if report.degrees_of_freedom > 0 {
            format!(
                "each function's dispersion φ from its counts per interval ({} degrees of freedom)",
                report.degrees_of_freedom
            )
        } else {
            "sampling only (φ = 1: recordings, or too few intervals)".to_owned()
        }
    );
    if !report.suspects.is_empty() {
        println!("why:");
        for s in report.suspects.iter().take(3) {
            println!("  {}: {}", s.function, s.why);
        }
    }
    Ok(())
}
