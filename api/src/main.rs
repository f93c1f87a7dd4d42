//! The `critpath` command.

mod agent;
mod cli;
mod config;
mod query;
mod record;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Parser as _;
use critpath_analyzer::export::Format;
use critpath_sampler::OffCpuConfig;

use cli::{Cli, Command, QueryCommand, RecordArgs, WindowArgs, default_data_dir};
use record::{RecordConfig, RecordTarget};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let result = match cli.command {
        Command::Record(args) => record_config(args).and_then(record::run),
        Command::Agent(args) => config::agent_config(args).and_then(agent::run),
        Command::Query(QueryCommand::Series(args)) => target(args.window).and_then(|t| {
            query::series(
                &t,
                &query::SeriesConfig {
                    profile_type: args.kind.profile_type,
                    step_ms: args.step.map(|d| d.as_millis() as i64),
                    group_by: args
                        .group_by
                        .into_iter()
                        .filter(|l| !l.is_empty())
                        .collect(),
                    limit: args.limit,
                    json: args.json,
                },
            )
        }),
        Command::Query(QueryCommand::Profile(args)) => target(args.window).and_then(|t| {
            query::profile(
                &t,
                &query::ProfileConfig {
                    profile_type: args.kind.profile_type,
                    format: if args.json {
                        query::ProfileFormat::Tree
                    } else {
                        args.format
                    },
                    max_nodes: args.max_nodes,
                    min_share: args.min_share,
                    limit: args.limit,
                    output: args.output,
                    frequency_hz: DEFAULT_FREQUENCY_HZ,
                },
            )
        }),
        Command::Query(QueryCommand::Diff(args)) => target(args.window).and_then(|t| {
            query::diff(
                &t,
                &query::DiffConfig {
                    profile_type: args.kind.profile_type,
                    baseline_from: args.baseline_from,
                    baseline_to: args.baseline_to,
                    format: if args.json {
                        "tree".to_owned()
                    } else {
                        args.format
                    },
                    max_nodes: args.max_nodes,
                    limit: args.limit,
                    output: args.output,
                    frequency_hz: DEFAULT_FREQUENCY_HZ,
                },
            )
        }),
        Command::Query(QueryCommand::Labels(args)) => {
            target(args.window).and_then(|t| query::labels(&t, args.name.as_deref(), args.json))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("critpath: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The agent's default sampling frequency (flamebearer's sample rate for CPU counts).
const DEFAULT_FREQUENCY_HZ: u64 = 19;

fn target(args: WindowArgs) -> anyhow::Result<query::Target> {
    query::Target::new(
        args.data_dir.unwrap_or_else(default_data_dir),
        &args.from,
        &args.to,
        &args.query,
    )
}

fn record_config(args: RecordArgs) -> anyhow::Result<RecordConfig> {
    let target = if args.all {
        RecordTarget::All
    } else if !args.pid.is_empty() {
        RecordTarget::Pids(args.pid)
    } else {
        RecordTarget::Command(args.command)
    };
    let duration = match args.duration {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => bail!("--duration must be a positive number of seconds, not {s}"),
    };
    let output = match args.output {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p),
        None => Some(PathBuf::from(format!(
            "profile.{}",
            args.format.extension()
        ))),
    };
    let off_cpu = args.off_cpu.then(|| OffCpuConfig {
        min_duration: Duration::from_micros(args.off_cpu_min_us),
        budget_per_second: args.off_cpu_budget,
    });
    let value = args.value.unwrap_or_else(|| {
        match (off_cpu.is_some(), args.format) {
            (true, _) => "wall",
            (false, Format::Speedscope) => "cpu",
            (false, _) => "samples",
        }
        .to_owned()
    });
    if matches!(value.as_str(), "off_cpu" | "wall") && off_cpu.is_none() {
        bail!("--value {value} needs --off-cpu");
    }
    Ok(RecordConfig {
        frequency_hz: args.frequency,
        off_cpu,
        value,
        wakeups: args.wakeups,
        duration,
        output,
        format: args.format,
        target,
        ring_bytes: args.ring_bytes,
    })
}
