//! Command-line arguments (clap). Nothing below `main` sees these types: they convert into the
//! plain configuration of each command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use critpath_analyzer::export::Format;

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
}

/// Where the store lives unless `--data-dir` says otherwise.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(base) if !base.is_empty() => PathBuf::from(base).join("critpath"),
        _ => PathBuf::from("critpath-data"),
    }
}

/// `critpath agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Store directory [default: $XDG_DATA_HOME/critpath, else ./critpath-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Sampling frequency per CPU, in Hz.
    #[arg(short = 'F', long = "frequency", default_value_t = 19, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub frequency: u64,
    /// Aggregation interval (e.g. 10s, 1m): samples are summed per process, thread name and
    /// stack over it, and each interval is written (and fsynced) when it ends.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// Do not trace off-CPU waits.
    #[arg(long)]
    pub no_off_cpu: bool,
    /// Shortest off-CPU wait kept, in microseconds.
    #[arg(long, default_value_t = 1000, value_name = "MICROSECONDS")]
    pub off_cpu_min_us: u64,
    /// Waits whose stacks may be captured per second per CPU.
    #[arg(long, default_value_t = 2000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub off_cpu_budget: u32,
    /// The `host` label [default: this machine's host name].
    #[arg(long)]
    pub host: Option<String>,
    /// Stop after this long (e.g. 30s) instead of running until a signal.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Ring buffer size in bytes between the kernel and critpath.
    #[arg(long, default_value_t = critpath_sampler::SamplerConfig::default().ring_bytes, value_name = "BYTES")]
    pub ring_bytes: u32,
}

/// `critpath query ...`.
#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// A merged profile of a window, as folded stacks (default), pprof or speedscope.
    Profile(QueryProfileArgs),
    /// Label names, or the values of one label, seen in a window.
    Labels(QueryLabelsArgs),
}

/// The window and selection every query takes.
#[derive(Debug, Args)]
pub struct WindowArgs {
    /// Store directory [default: $XDG_DATA_HOME/critpath, else ./critpath-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Window start: RFC 3339, Unix milliseconds, or now-DURATION.
    #[arg(long, default_value = "now-15m")]
    pub from: String,
    /// Window end (exclusive), same forms.
    #[arg(long, default_value = "now")]
    pub to: String,
    /// Label selector, e.g. '{service="api", comm=~"post.*"}'; empty selects everything.
    #[arg(long, default_value = "")]
    pub query: String,
}

/// `critpath query profile`.
#[derive(Debug, Args)]
pub struct QueryProfileArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    /// cpu (on-CPU samples) or offcpu (off-CPU nanoseconds).
    #[arg(long = "type", default_value = "cpu", value_parser = ["cpu", "offcpu"])]
    pub kind: String,
    /// Output format: folded, pprof or speedscope.
    #[arg(long, default_value = "folded", value_parser = parse_format)]
    pub format: Format,
    /// Output file [default: standard output].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `critpath query labels`.
#[derive(Debug, Args)]
pub struct QueryLabelsArgs {
    #[command(flatten)]
    pub window: WindowArgs,
    /// Print the values of this label instead of the label names.
    pub name: Option<String>,
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
    /// Also trace off-CPU waits (blocked stacks, durations, causes) and who woke them.
    #[arg(long)]
    pub off_cpu: bool,
    /// Shortest off-CPU wait recorded, in microseconds (shorter ones are counted, not kept).
    #[arg(
        long,
        default_value_t = 1000,
        value_name = "MICROSECONDS",
        requires = "off_cpu"
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
    /// Write the wakeup edges (who woke whom, with both stacks) to this file as JSON.
    #[arg(long, value_name = "FILE", requires = "off_cpu")]
    pub wakeups: Option<PathBuf>,
    /// Run this command and profile it and its children until it exits.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
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
