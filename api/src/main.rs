//! The `critpath` command.

mod agent;
mod cli;
mod config;
mod deploys;
mod explain;
mod field;
mod model;
mod query;
mod record;
mod server;
mod writer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, bail};
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
    if !matches!(
        cli.command,
        Command::Record(_) | Command::Agent(_) | Command::Serve(_) | Command::Run(_)
    ) {
        // Commands that only print end quietly when their reader goes away (`| head`), as
        // other command-line tools do, instead of panicking on the failed write.
        // SAFETY: called before any thread is started; SIG_DFL is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if matches!(
        cli.command,
        Command::Agent(_) | Command::Serve(_) | Command::Run(_)
    ) {
        // The store holds every process's stacks, written as root: its files are 0640 and its
        // directories 0750, never readable by other local users.
        // SAFETY: umask(2) only sets the process's file mode mask.
        unsafe { libc::umask(0o027) };
    }
    let result = match cli.command {
        Command::Record(args) => record_config(args).and_then(record::run),
        Command::Agent(args) => config::agent_config(args).and_then(run_agent),
        Command::Serve(args) => serve(args),
        Command::Run(args) => run(args),
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
        Command::Explain(args) => explain::explain(&args),
        Command::Eval(args) => explain::eval(&args),
        Command::Regressions(args) => deploys::regressions(&args),
        Command::Deploy(args) => deploys::deploy(&args),
        Command::Deploys(args) => deploys::list(args),
        Command::Dataset(cli::DatasetCommand::Pack(args)) => explain::pack(&args),
        Command::Model(cli::ModelCommand::Train(args)) => model::train(&args),
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

fn run_agent(config: agent::AgentConfig) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    agent::stop_on_signals(&stop)?;
    let status = agent::AgentStatus::default();
    if let Some(url) = &config.push {
        let pusher = writer::Pusher::start(url, config.push_token.clone(), config.push_timeout)?;
        return agent::run(config, agent::Sink::Push(pusher), &stop, &status);
    }
    let writer = writer::StoreWriter::open(&config.data_dir, config.retention.clone())?;
    let ran = agent::run(config, agent::Sink::Store(writer.handle()), &stop, &status);
    ran.and(writer.close())
}

fn server_config(
    data_dir: PathBuf,
    listen: cli::ListenArgs,
) -> anyhow::Result<server::ServerConfig> {
    let auth_token = listen
        .auth_token_file
        .as_deref()
        .map(config::read_token)
        .transpose()?;
    let cache_bytes = config::parse_bytes(&listen.cache_size)
        .with_context(|| format!("--cache-size {:?}", listen.cache_size))?;
    let ingest_host_rate = config::parse_bytes(&listen.ingest_host_rate)
        .with_context(|| format!("--ingest-host-rate {:?}", listen.ingest_host_rate))?;
    if ingest_host_rate == 0 {
        bail!("--ingest-host-rate 0 would refuse every push");
    }
    let config = server::ServerConfig {
        listen: listen.listen,
        data_dir,
        cache_bytes: usize::try_from(cache_bytes).unwrap_or(usize::MAX),
        request_timeout: listen.request_timeout,
        auth_token,
        insecure: listen.insecure,
        allowed_hosts: (!listen.allow_host.is_empty()).then_some(listen.allow_host),
        model_dir: Some(listen.model),
        regressions_model_dir: Some(listen.regressions_model),
        ingest_host_rate,
        ingest_host_burst: ingest_host_rate
            .saturating_mul(8)
            .max(server::ServerConfig::default().ingest_host_burst),
        ..server::ServerConfig::default()
    };
    config.check_exposure()?;
    Ok(config)
}

/// Resolves when `stop` is set.
async fn stopped(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve(args: cli::ServeArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    if !args.ingest && !data_dir.join("STORE_VERSION").exists() {
        bail!(
            "no critpath store in {}: run `critpath agent` or `critpath run` first, pass --data-dir, or --ingest to receive pushes into a new store",
            data_dir.display()
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    agent::stop_on_signals(&stop)?;
    let config = server_config(data_dir, args.listen)?;
    let writer = if args.ingest {
        Some(writer::StoreWriter::open(
            &config.data_dir,
            Default::default(),
        )?)
    } else {
        None
    };
    let state = server::AppState::new(config, None, writer.as_ref().map(|w| w.handle()));
    let served = runtime()?.block_on(server::serve(state, stopped(stop)));
    match writer {
        Some(writer) => served.and(writer.close()),
        None => served,
    }
}

fn run(args: cli::RunArgs) -> anyhow::Result<()> {
    let config = config::agent_config(args.agent)?;
    if config.push.is_some() {
        bail!(
            "critpath run keeps its samples in its own store; use `critpath agent --push URL` to push to another server"
        );
    }
    let mut server_config = server_config(config.data_dir.clone(), args.listen)?;
    // Pushes the store's retention would drop are refused, not acknowledged.
    if let Some(max_age) = config.retention.max_age {
        server_config.ingest_max_age = server_config.ingest_max_age.min(max_age);
    }
    let writer = writer::StoreWriter::open(&config.data_dir, config.retention.clone())?;
    let stop = Arc::new(AtomicBool::new(false));
    agent::stop_on_signals(&stop)?;
    let status = Arc::new(agent::AgentStatus::default());
    let state = server::AppState::new(
        server_config,
        Some(Arc::clone(&status)),
        Some(writer.handle()),
    );
    let agent = {
        let (stop, status) = (Arc::clone(&stop), Arc::clone(&status));
        let sink = agent::Sink::Store(writer.handle());
        std::thread::Builder::new()
            .name("critpath-agent".into())
            .spawn(move || {
                let result = agent::run(config, sink, &stop, &status);
                // The server stops with the agent, whatever ended it.
                stop.store(true, Ordering::Relaxed);
                result
            })
            .context("starting the agent thread")?
    };
    let served = runtime()?.block_on(server::serve(state, stopped(Arc::clone(&stop))));
    stop.store(true, Ordering::Relaxed);
    let agent_result = agent
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the agent thread panicked")));
    served.and(agent_result).and(writer.close())
}

/// The agent's default sampling frequency (flamebearer's sample rate for CPU counts).
pub(crate) const DEFAULT_FREQUENCY_HZ: u64 = 19;

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
        probes: args.probe,
        calls: args.calls,
        duration,
        output,
        format: args.format,
        target,
        ring_bytes: args.ring_bytes,
        unwinding: args.unwind.unwinding(args.user_stack_bytes),
    })
}
