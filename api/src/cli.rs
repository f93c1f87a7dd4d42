//! Command-line arguments (clap). Nothing below `main` sees these types: they convert into the
//! plain configuration of each command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use critpath_analyzer::export::Format;
use critpath_analyzer::store::ProfileType;

use crate::query::ProfileFormat;

/// critpath: a continuous profiler for Linux that finds the critical path, not just the CPU top list.
#[derive(Debug, Parser)]
#[command(name = "critpath", version, about, long_about = None)]
pub struct Cli {
    /// Log more (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample on-CPU stacks (user and kernel) with eBPF and write a profile.
    ///
    /// Needs root, or CAP_BPF + CAP_PERFMON. Choose what to profile with exactly one of
    /// -p PID, -a, or -- CMD ARGS...
    Record(RecordArgs),
    /// Run the always-on sampler on the whole machine (on-CPU and off-CPU) and keep every
    /// sample in the store until stopped (SIGINT/SIGTERM flush what it holds).
    ///
    /// Needs root, or CAP_BPF + CAP_PERFMON.
    Agent(AgentArgs),
    /// Read the store.
    #[command(subcommand)]
    Query(QueryCommand),
    /// Serve the HTTP API over a store (see README "HTTP API").
    Serve(ServeArgs),
    /// The agent and the HTTP API in one process: sample the whole machine, keep every sample
    /// in the store, and serve it (default http://127.0.0.1:7070).
    ///
    /// Needs root, or CAP_BPF + CAP_PERFMON.
    Run(RunArgs),
    /// Why was this window slow: rank its functions by likely impact on latency, from the
    /// wait-for graph (who waited for whom, and what they ran meanwhile), not only CPU time.
    ///
    /// Reads a window of the store (--from, --to, --query; the agent keeps wakeups) or a
    /// recording made with `critpath record --off-cpu --wakeups FILE` (--profile, --wakeups).
    Explain(ExplainArgs),
    /// Which functions regressed: compare the window after a deploy with the window before it
    /// (in the store, around a deploy or a moment) or two recordings, and rank functions by the
    /// growth of their on-CPU time, with sampling noise modelled (a change counts only when it
    /// is both statistically significant and large enough to matter; a significant growth is a
    /// regression, starred in the table).
    Regressions(RegressionsArgs),
    /// Mark a deploy in the store: the moment `service` changed to `version`, for
    /// `critpath regressions --deploy ID`. (Over HTTP: POST /api/v1/deploys.)
    Deploy(DeployArgs),
    /// List the deploys of a window: marked ones, and those found in the store (an
    /// executable whose build id changed).
    Deploys(DeploysArgs),
    /// Judge the ranking methods against the ground-truth dataset (`models/data`): top-1/top-3
    /// at finding the bottleneck and the injected function, NDCG@5 and Kendall τ against the
    /// measured elasticities, per template family.
    Eval(EvalArgs),
    /// Build the ground-truth dataset's tables from measured and recorded programs.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// The impact model: a small graph transformer that scores functions by their predicted
    /// elasticity of latency and throughput.
    #[command(subcommand)]
    Model(ModelCommand),
}

/// `critpath model ...`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Train the model on the dataset and judge it on held-out template families.
    ///
    /// For each family, a transformer, an MLP and a linear model are trained on the other
    /// families and predict the held-out one; their rankings are judged with the graph
    /// methods (and the noise ceiling), and the ship rule decides whether the model becomes
    /// the default ranking. Then the transformer is trained on every program and written to
    /// --out (model.safetensors, config.json, heldout.parquet, MODEL_CARD.md), the evaluation
    /// to --eval. Deterministic given --seed. --task explain (the impact model of one window:
    /// about 16 minutes on 2 cores) or regressions (pairs of windows around a deploy or a
    /// stall, judged at finding the injected function: a few minutes).
    Train(TrainArgs),
}

/// `critpath model train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// What the model scores: explain (each function of a window by its impact on latency
    /// and throughput) or regressions (each function of a pair of windows by how likely its
    /// change is the regression).
    #[arg(long, default_value = "explain", value_parser = ["explain", "regressions"])]
    pub task: String,
    /// The packed dataset (nodes.parquet, edges.parquet, functions.parquet; for regressions
    /// case_nodes.parquet, case_edges.parquet, cases.parquet).
    #[arg(long, value_name = "DIR", default_value = "models/data")]
    pub dataset: PathBuf,
    /// The model directory to write [default: models/impact, for regressions
    /// models/regressions].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The evaluation JSON to write [default: models/eval/model.json, for regressions
    /// models/eval/regressions.json].
    #[arg(long, value_name = "FILE")]
    pub eval: Option<PathBuf>,
    /// Seed of the initial weights and the training order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Passes over the training programs [default: the model's, 60].
    #[arg(long)]
    pub epochs: Option<usize>,
}

/// `critpath explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The window of the store (unless --profile is given).
    #[command(flatten)]
    pub window: WindowArgs,
    /// The baseline window's start: each function's change is shown against it, and
    /// cpu_delta ranks by it [default: the window of equal length just before].
    #[arg(long, value_name = "TIME", conflicts_with = "profile")]
    pub baseline_from: Option<String>,
    /// The baseline window's end.
    #[arg(long, value_name = "TIME", conflicts_with = "profile")]
    pub baseline_to: Option<String>,
    /// Instead of the store: a recording's profile (pprof from `critpath record --off-cpu`).
    #[arg(long, value_name = "FILE", requires = "wakeups")]
    pub profile: Option<PathBuf>,
    /// Its wakeup edges (`critpath record --wakeups FILE`).
    #[arg(long, value_name = "FILE", requires = "profile")]
    pub wakeups: Option<PathBuf>,
    /// A baseline recording's profile, for the delta methods.
    #[arg(long, value_name = "FILE", requires_all = ["baseline_wakeups", "profile"])]
    pub baseline_profile: Option<PathBuf>,
    /// The baseline recording's wakeup edges.
    #[arg(long, value_name = "FILE", requires = "baseline_profile")]
    pub baseline_wakeups: Option<PathBuf>,
    /// Ranking method: model (the impact model's predicted p50 elasticity), critical_path
    /// (waits redistributed along the wait-for graph), cpu (on-CPU self time), wall (on + off
    /// CPU, inclusive), knot (wPerf knots), utilization (of the resource the function is:
    /// throughput), cpu_delta (growth of on-CPU time against the baseline). auto: the model
    /// when --model holds one that the ship rule made the default, else critical_path.
    #[arg(long, default_value = "auto")]
    pub method: String,
    /// The impact model's directory (`critpath model train --out`).
    #[arg(
        long,
        value_name = "DIR",
        env = "CRITPATH_MODEL",
        default_value = "models/impact"
    )]
    pub model: PathBuf,
    /// Functions to show.
    #[arg(long, default_value_t = 15)]
    pub top: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `critpath regressions`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("change").required(true).args(["deploy", "at", "before"]))]
pub struct RegressionsArgs {
    /// A deploy's id (`critpath deploys` lists them): compare the store's windows either side.
    #[arg(long, value_name = "ID")]
    pub deploy: Option<String>,
    /// The moment of the change (RFC 3339, Unix ms, now-DURATION): compare the store's windows
    /// either side.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Length of the store's windows before and after the change.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub window: std::time::Duration,
    /// Label selector of the store's samples [default: the deploy's service; everything
    /// with --at]; with --before/--after, of the recordings' processes (their timelines).
    #[arg(long, default_value = "")]
    pub query: String,
    /// Store directory [default: $XDG_DATA_HOME/critpath, else ./critpath-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Instead of the store: the recording before the change (pprof).
    #[arg(long, value_name = "FILE", requires = "after")]
    pub before: Option<PathBuf>,
    /// The recording after it (pprof).
    #[arg(long, value_name = "FILE", requires = "before")]
    pub after: Option<PathBuf>,
    /// The wakeup edges recorded with --before (`critpath record --wakeups`): with both
    /// windows' edges, suspects are ranked by the growth of their critical-path share.
    #[arg(long, value_name = "FILE", requires = "before")]
    pub before_wakeups: Option<PathBuf>,
    /// The wakeup edges recorded with --after.
    #[arg(long, value_name = "FILE", requires = "after")]
    pub after_wakeups: Option<PathBuf>,
    /// Ranking after the regressions: graph (the growth of each function's critical-path
    /// share when the windows have off-CPU waits and wakeups, else of its on-CPU time), model
    /// (the regressions model's score of the pair of windows), or auto: the model when --model
    /// holds one that the ship rule made the default, else graph.
    #[arg(long, default_value = "auto", value_parser = ["auto", "graph", "model"])]
    pub method: String,
    /// The regressions model's directory (`critpath model train --task regressions`).
    #[arg(long, value_name = "DIR", default_value = "models/regressions")]
    pub model: PathBuf,
    /// Suspects to show (regressions first).
    #[arg(long, default_value_t = 10)]
    pub top: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `critpath deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The service deployed (the `service` label of its samples).
    #[arg(long)]
    pub service: String,
    /// The version deployed.
    #[arg(long)]
    pub version: String,
    /// When (RFC 3339, Unix ms, now-DURATION).
    #[arg(long, default_value = "now")]
    pub at: String,
    /// Store directory [default: $XDG_DATA_HOME/critpath, else ./critpath-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `critpath deploys`.
#[derive(Debug, Args)]
pub struct DeploysArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `critpath eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The packed dataset (functions.parquet, cases.parquet).
    #[arg(long, value_name = "DIR", default_value = "models/data")]
    pub dataset: PathBuf,
    /// Also write the evaluation as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Judge the learned methods instead: a model directory's held-out predictions
    /// (heldout.parquet, from `critpath model train`) next to the graph methods, with the
    /// noise ceiling and the ship rule.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Run the field benchmark instead (needs root): the scenarios of DIR/manifest.json
    /// (tests/field) run for real, each under `critpath run` (explain and regressions through
    /// the HTTP API over the store) and under `critpath record` (through the recordings),
    /// every answer scored against the scenario's measured culprit.
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    pub field: Option<PathBuf>,
    /// With --field: the scenarios' programs, built by DIR/build.sh [default: DIR/bin].
    #[arg(long, value_name = "DIR", requires = "field")]
    pub field_bin: Option<PathBuf>,
    /// With --field: seconds each scenario runs per window.
    #[arg(long, default_value_t = 10, requires = "field")]
    pub field_seconds: u64,
    /// With --field: only these scenarios (repeatable) [default: all but the held-out
    /// outside checks, which run only when named; with --quick, the manifest's quick set].
    #[arg(long = "scenario", value_name = "NAME", requires = "field")]
    pub scenarios: Vec<String>,
    /// With --field: the manifest's quick set only (the CI subset).
    #[arg(long, requires = "field")]
    pub quick: bool,
    /// With --field: which paths to score: store, recording, or both.
    #[arg(long, default_value = "both", value_parser = ["both", "store", "recording"], requires = "field")]
    pub paths: String,
}

/// `critpath dataset ...`.
#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Pack measured programs (`programs/<family>-<seed>/` as written by tests/synth's
    /// `dataset --record`) into functions.parquet, programs.parquet and cases.parquet.
    Pack(PackArgs),
}

/// `critpath dataset pack`.
#[derive(Debug, Args)]
pub struct PackArgs {
    /// The measurements: a directory with `programs/`.
    #[arg(value_name = "DIR")]
    pub input: PathBuf,
    /// Where to write the tables.
    #[arg(long, value_name = "DIR", default_value = "models/data")]
    pub out: PathBuf,
}

/// Where the store lives unless `--data-dir` says otherwise.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(base) if !base.is_empty() => PathBuf::from(base).join("critpath"),
        _ => PathBuf::from("critpath-data"),
    }
}

/// `critpath agent`. Every setting can also come from a TOML file (`--config`); a flag given
/// on the command line wins over the file.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// TOML configuration file: the settings below by their long names (data_dir, frequency,
    /// interval, off_cpu, off_cpu_min_us, off_cpu_budget, wait_records, host, ring_bytes,
    /// unwind, user_stack_bytes), a [retention]
    /// table (max_age, max_bytes) and [[service]] rules (name, exe or cgroup regex) naming the
    /// `service` label of matching processes. See README "Agent configuration".
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Store directory [default: $XDG_DATA_HOME/critpath, else ./critpath-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Sampling frequency per CPU, in Hz [default: 19].
    #[arg(short = 'F', long = "frequency", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub frequency: Option<u64>,
    /// Aggregation interval (e.g. 10s, 1m): samples are summed per process, thread name and
    /// stack over it, and each interval is written (and fsynced) when it ends [default: 10s].
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<std::time::Duration>,
    /// Do not trace off-CPU waits [default: traced].
    #[arg(long)]
    pub no_off_cpu: bool,
    /// Off-CPU waits blocked at least this long, in microseconds, are all kept with their
    /// stacks; a shorter one is kept with probability (its blocked time / this) and weighted by
    /// the inverse, so sub-millisecond waits add up without bias (0 keeps every wait; at most
    /// 2000000) [default: 1000].
    #[arg(long, value_name = "MICROSECONDS", value_parser = clap::value_parser!(u64).range(0..=2_000_000))]
    pub off_cpu_min_us: Option<u64>,
    /// Waits whose stacks may be captured per second per CPU [default: 2000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub off_cpu_budget: Option<u32>,
    /// Off-CPU waits kept one by one (with their start, thread, waker and stacks) per second,
    /// for the time-resolved critical path of `explain` and `regressions`; past it, waits are
    /// drawn with probability proportional to their time and reweighted. Every wait still
    /// counts in the stored sums [default: 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub wait_records: Option<u32>,
    /// The `host` label [default: this machine's host name].
    #[arg(long)]
    pub host: Option<String>,
    /// Stop after this long (e.g. 30s) instead of running until a signal.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Ring buffer size in bytes between the kernel and critpath [default: 8 MiB].
    #[arg(long, value_name = "BYTES")]
    pub ring_bytes: Option<u32>,
    /// How user stacks are unwound: dwarf (call-frame information, works without frame
    /// pointers) or fp (frame pointers only, cheaper) [default: dwarf].
    #[arg(long, value_enum)]
    pub unwind: Option<UnwindMode>,
    /// With --unwind dwarf, bytes of user stack copied per on-CPU sample and per captured
    /// off-CPU wait and its waker (4096 to 32768): deeper stacks end in a [truncated] frame
    /// [default: 32768].
    #[arg(long, value_name = "BYTES")]
    pub user_stack_bytes: Option<u32>,
    /// Drop stored hours older than this (e.g. 7d, 12h; "0" keeps everything) [default: 30d].
    #[arg(long, value_name = "DURATION")]
    pub retention_max_age: Option<String>,
    /// Drop the oldest stored hours while the store is larger than this (e.g. 500MiB, 20GiB;
    /// "0" for no limit) [default: 10GiB].
    #[arg(long, value_name = "SIZE")]
    pub retention_max_bytes: Option<String>,
    /// Push batches to a critpath server (`http://host:7070`, its `POST /api/v1/ingest`)
    /// instead of storing them here; the host label says where they came from. While the
    /// server cannot be reached, up to 128 MiB of encoded batches (an hour of a busy host's)
    /// wait in memory.
    #[arg(long, value_name = "URL")]
    pub push: Option<String>,
    /// The bearer token for --push: this file's content (trimmed).
    #[arg(long, value_name = "FILE", requires = "push")]
    pub push_token_file: Option<PathBuf>,
    /// Longest one push may take (a server that accepts and never answers is retried after
    /// it), e.g. 30s. Pushes run beside sampling, never in its way.
    #[arg(long, default_value = "30s", value_parser = parse_duration, requires = "push")]
    pub push_timeout: std::time::Duration,
    /// Time every call of a function in every process that runs the binary (a latency probe:
    /// a uprobe at its entry and a uretprobe at its return). The calls are stored as requests:
    /// `explain` then takes the threads that made them for the request threads, and only their
    /// time inside the calls for request time. FUNCTION is a symbol or a Rust path without the
    /// hash (`/srv/api:api::handle_request`). Repeatable; replaces the file's `probes`.
    #[arg(long, value_name = "BINARY:FUNCTION")]
    pub probe: Vec<critpath_sampler::Probe>,
}

/// How the HTTP server listens.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address to serve on; loopback by default.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Longest a query may take before it is answered 503, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: std::time::Duration,
    /// Require `Authorization: Bearer <token>` on every endpoint but health; the token is this
    /// file's content (trimmed).
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// Serve beyond loopback without --auth-token-file (refused otherwise).
    #[arg(long)]
    pub insecure: bool,
    /// Host names the server answers to (the request's `Host` header, port aside); repeat or
    /// separate with commas. Default: on a loopback address, `localhost`, `127.0.0.1` and
    /// `[::1]` only — a web page of another site cannot rebind its name to this server and
    /// read it; on other addresses, any.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub allow_host: Vec<String>,
    /// Memory for the query index (parts' roll-ups and rows kept for fast trees), e.g. 512MiB,
    /// 2GiB. At startup the last 24 h are loaded into it in the background.
    #[arg(long, default_value = "512MiB", value_name = "SIZE")]
    pub cache_size: String,
    /// Body bytes a second each pushing host (peer address) may send to `POST /api/v1/ingest`,
    /// e.g. 8MiB, with bursts of eight seconds' worth (at least one 64 MiB body); past it, 429
    /// with `Retry-After`, and the agent retries.
    #[arg(long, default_value = "8MiB", value_name = "SIZE")]
    pub ingest_host_rate: String,
    /// The impact model's directory (`critpath model train --out`), loaded once at start;
    /// explain's `method=model` uses it (and `auto`, when the ship rule made it the default).
    #[arg(
        long,
        value_name = "DIR",
        env = "CRITPATH_MODEL",
        default_value = "models/impact"
    )]
    pub model: PathBuf,
    /// The regressions model's directory (`critpath model train --task regressions --out`),
    /// loaded once at start; regressions' `method=model` uses it (and `auto`, when the ship
    /// rule made it the default).
    #[arg(
        long,
        value_name = "DIR",
        env = "CRITPATH_REGRESSIONS_MODEL",
        default_value = "models/regressions"
    )]
    pub regressions_model: PathBuf,
}

/// `critpath serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Store directory [default: $XDG_DATA_HOME/critpath, else ./critpath-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Accept batches pushed by agents on other hosts (`critpath agent --push`) on
    /// `POST /api/v1/ingest`; this server then writes the store (no local agent may).
    #[arg(long)]
    pub ingest: bool,
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// `critpath run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// `critpath query ...`.
#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Values over time per group of series (default: per service), as a table or JSON.
    Series(QuerySeriesArgs),
    /// The merged profile of a window: a table of the top functions (default), the call tree
    /// as JSON, or an export (flamebearer, pprof, folded, speedscope).
    Profile(QueryProfileArgs),
    /// Compare a window with a baseline (default: the window just before, of equal length):
    /// functions ordered most grown first, by share of each window's total.
    Diff(QueryDiffArgs),
    /// Label names, or the values of one label, seen in a window.
    Labels(QueryLabelsArgs),
}

/// The window and selection every query takes.
#[derive(Debug, Args)]
pub struct WindowArgs {
    /// Store directory [default: $XDG_DATA_HOME/critpath, else ./critpath-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Window start: RFC 3339 (2026-11-25T10:00:00Z), Unix milliseconds, or now-DURATION
    /// (now-15m, now-2h, now-1d). Stored intervals overlapping the window count whole.
    #[arg(long, default_value = "now-15m")]
    pub from: String,
    /// Window end (exclusive), same forms.
    #[arg(long, default_value = "now")]
    pub to: String,
    /// Label selector, e.g. '{service="api", comm=~"post.*", pid!="1"}'; operators =, !=, =~,
    /// !~; labels host, pid, comm, exe, build_id, service. Empty selects everything.
    #[arg(long, default_value = "")]
    pub query: String,
}

/// What values a query reads.
#[derive(Debug, Args)]
pub struct TypeArgs {
    /// cpu (on-CPU samples), offcpu (blocked time) or wall (on-CPU time + blocked time).
    #[arg(long = "type", default_value = "cpu", value_parser = parse_profile_type)]
    pub profile_type: ProfileType,
}

/// `critpath query series`.
#[derive(Debug, Args)]
pub struct QuerySeriesArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    #[command(flatten)]
    pub kind: TypeArgs,
    /// Step (e.g. 10s, 1m) [default: the window / 60, in whole seconds, at least 10s].
    #[arg(long, value_parser = parse_duration)]
    pub step: Option<std::time::Duration>,
    /// Labels to group by, comma-separated; empty for one series of everything.
    #[arg(long, default_value = "service", value_delimiter = ',')]
    pub group_by: Vec<String>,
    /// Series shown as table columns (the rest are summed into "other").
    #[arg(long, default_value_t = 6)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `critpath query profile`.
#[derive(Debug, Args)]
pub struct QueryProfileArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    #[command(flatten)]
    pub kind: TypeArgs,
    /// table (top functions), tree (JSON call tree), flamebearer (Pyroscope JSON), pprof,
    /// folded or speedscope.
    #[arg(long, default_value = "table", value_parser = parse_output_format)]
    pub format: ProfileFormat,
    /// The call tree as JSON (the same as --format tree).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Keep at most this many tree nodes, the largest (tree and flamebearer; 0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_nodes: usize,
    /// Drop tree nodes under this share of the total (tree and flamebearer), e.g. 0.001.
    #[arg(long, default_value_t = 0.0)]
    pub min_share: f64,
    /// Rows of the table.
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
    /// Output file [default: standard output].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `critpath query diff`.
#[derive(Debug, Args)]
pub struct QueryDiffArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    #[command(flatten)]
    pub kind: TypeArgs,
    /// Baseline start [default: --from minus the window's length].
    #[arg(long)]
    pub baseline_from: Option<String>,
    /// Baseline end [default: --from].
    #[arg(long)]
    pub baseline_to: Option<String>,
    /// table (functions, most grown first), tree (JSON diff tree) or flamebearer (Pyroscope's
    /// double format).
    #[arg(long, default_value = "table", value_parser = ["table", "tree", "flamebearer"])]
    pub format: String,
    /// The diff tree as JSON (the same as --format tree).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Keep at most this many nodes of each window's tree before comparing (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_nodes: usize,
    /// Rows of the table.
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
    /// Output file [default: standard output].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `critpath query labels`.
#[derive(Debug, Args)]
pub struct QueryLabelsArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    /// Print the values of this label (with their on-CPU samples) instead of the label names.
    pub name: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_output_format(s: &str) -> Result<ProfileFormat, String> {
    match s {
        "table" => Ok(ProfileFormat::Table),
        "tree" => Ok(ProfileFormat::Tree),
        "flamebearer" => Ok(ProfileFormat::Flamebearer),
        _ => s.parse().map(ProfileFormat::Export).map_err(|_| {
            format!("unknown format {s:?}; expected table, tree, flamebearer, pprof, folded or speedscope")
        }),
    }
}

fn parse_profile_type(s: &str) -> Result<ProfileType, String> {
    s.parse()
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    critpath_analyzer::query::parse_duration_ms(s)
        .map(|ms| std::time::Duration::from_millis(ms as u64))
        .map_err(|e| e.to_string())
}

/// `critpath record`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["pid", "all", "command"]))]
pub struct RecordArgs {
    /// Sampling frequency per CPU, in Hz.
    #[arg(short = 'F', long = "frequency", default_value_t = 19, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub frequency: u64,
    /// Stop after this many seconds (default: when the command or processes exit, or on Ctrl-C).
    #[arg(short, long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Output file; "-" writes to standard output. Default: profile.<format extension>.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format: pprof (gzipped profile.proto), folded (collapsed stacks), speedscope (JSON).
    #[arg(long, default_value = "pprof", value_parser = parse_format)]
    pub format: Format,
    /// Profile these processes (comma-separated or repeated), and the children they start.
    #[arg(short, long, value_delimiter = ',', value_name = "PID")]
    pub pid: Vec<u32>,
    /// Profile every process on the machine.
    #[arg(short, long)]
    pub all: bool,
    /// Ring buffer size in bytes between the kernel and critpath (rounded up to a power of two).
    #[arg(long, default_value_t = critpath_sampler::SamplerConfig::default().ring_bytes, value_name = "BYTES")]
    pub ring_bytes: u32,
    /// How user stacks are unwound: dwarf copies the top of each sampled user stack (on-CPU
    /// samples, off-CPU waits and their wakers) and unwinds it with the modules' call-frame
    /// information (.eh_frame), so code built without frame pointers gets full stacks; fp walks
    /// frame pointers in the kernel (cheaper; garbage past code without them).
    #[arg(long, value_enum, default_value_t = UnwindMode::Dwarf)]
    pub unwind: UnwindMode,
    /// With --unwind dwarf, bytes of user stack copied per on-CPU sample and per captured
    /// off-CPU wait and its waker (4096 to 32768): deeper stacks end in a [truncated] frame.
    #[arg(long, default_value_t = critpath_sampler::Unwinding::DEFAULT_STACK_BYTES, value_name = "BYTES")]
    pub user_stack_bytes: u32,
    /// Also trace off-CPU waits (blocked stacks, durations, causes) and who woke them.
    #[arg(long)]
    pub off_cpu: bool,
    /// Off-CPU waits blocked at least this long, in microseconds, are all recorded with their
    /// stacks; a shorter one is recorded with probability (its blocked time / this) and
    /// weighted by the inverse, so sub-millisecond waits add up without bias (0 keeps every
    /// wait; at most 2000000).
    #[arg(
        long,
        default_value_t = 1000,
        value_name = "MICROSECONDS",
        requires = "off_cpu",
        value_parser = clap::value_parser!(u64).range(0..=2_000_000)
    )]
    pub off_cpu_min_us: u64,
    /// Waits whose stacks may be captured per second per CPU; beyond it waits are sampled and
    /// weighted so totals stay unbiased.
    #[arg(long, default_value_t = 2000, value_name = "N", requires = "off_cpu", value_parser = clap::value_parser!(u32).range(1..))]
    pub off_cpu_budget: u32,
    /// Value written to folded and speedscope output: samples, cpu, off_cpu or wall (on + off CPU
    /// time). Default: wall with --off-cpu, otherwise samples (folded) / cpu (speedscope).
    #[arg(long, value_name = "VALUE", value_parser = ["samples", "cpu", "off_cpu", "wall"])]
    pub value: Option<String>,
    /// Write the wakeup edges (who woke whom, with both stacks) to this file as JSON; waits with
    /// the same threads, stacks and cause are merged into one edge with their count.
    #[arg(long, value_name = "FILE", requires = "off_cpu")]
    pub wakeups: Option<PathBuf>,
    /// Time every call of a function (a latency probe, no change to the program): a uprobe at
    /// its entry and a uretprobe at its return. FUNCTION is a symbol or a Rust path without the
    /// hash (`./server:server::handle_request`). Repeatable. Prints calls, throughput and
    /// latency percentiles per probe. With --wakeups the calls are the requests `explain`
    /// reads: the threads that made them are the request threads, and only their time inside
    /// the calls counts.
    #[arg(long, value_name = "BINARY:FUNCTION")]
    pub probe: Vec<critpath_sampler::Probe>,
    /// Write every probed call (probe, pid, tid, start, duration) to this file as JSON.
    #[arg(long, value_name = "FILE", requires = "probe")]
    pub calls: Option<PathBuf>,
    /// Run this command and profile it and its children until it exits.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// How user stacks are unwound (`--unwind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnwindMode {
    /// Call-frame information (`.eh_frame`/`.debug_frame`) over a copy of the user stack.
    Dwarf,
    /// Frame pointers, walked in the kernel.
    Fp,
}

impl UnwindMode {
    /// The sampler's setting, with `stack_bytes` copied for `dwarf`.
    pub fn unwinding(self, stack_bytes: u32) -> critpath_sampler::Unwinding {
        match self {
            Self::Dwarf => critpath_sampler::Unwinding::CallFrameInfo { stack_bytes },
            Self::Fp => critpath_sampler::Unwinding::FramePointers,
        }
    }
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    /// The clap definition is consistent (no conflicting names, valid defaults).
    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// A target is required and the command after `--` is captured whole.
    #[test]
    fn record_targets() {
        assert!(Cli::try_parse_from(["critpath", "record"]).is_err());
        let cli =
            Cli::try_parse_from(["critpath", "record", "-F", "99", "--", "ls", "-l"]).unwrap();
        let Command::Record(r) = cli.command else {
            panic!("record")
        };
        assert_eq!(r.frequency, 99);
        assert_eq!(r.command, ["ls", "-l"]);
        let cli =
            Cli::try_parse_from(["critpath", "record", "-p", "1,2", "--format", "folded"]).unwrap();
        let Command::Record(r) = cli.command else {
            panic!("record")
        };
        assert_eq!(r.pid, [1, 2]);
        assert_eq!(r.format, Format::Folded);
        assert!(Cli::try_parse_from(["critpath", "record", "-a", "--format", "svg"]).is_err());
        assert!(Cli::try_parse_from(["critpath", "record", "-a", "-F", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["critpath", "record", "-a", "--wakeups", "w.json"]).is_err(),
            "--wakeups needs --off-cpu"
        );
        assert!(Cli::try_parse_from(["critpath", "record", "-a", "--value", "bogus"]).is_err());
    }
}
