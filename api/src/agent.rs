//! `critpath agent`: samples the whole machine (on-CPU and off-CPU) until stopped, aggregates
//! per interval and writes the store's write-ahead log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use critpath_analyzer::store::{Aggregator, Batch, Retention, SeriesLabels};
use critpath_sampler::{
    Collector, Counter, Observation, OffCpuConfig, POLL_TIMEOUT, Sampler, SamplerConfig,
    Symbolizer, Target, Unwinding,
};
use regex::Regex;

use crate::writer::{Pusher, WriterHandle};

/// Settings of `critpath agent`.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The store directory. Default: `$XDG_DATA_HOME/critpath`, else `./critpath-data`.
    pub data_dir: PathBuf,
    /// On-CPU sampling frequency per CPU in Hz. Default: 19.
    pub frequency_hz: u64,
    /// Aggregation interval. Default: 10 s.
    pub interval: Duration,
    /// Off-CPU tracing; `None` turns it off. Default: on.
    pub off_cpu: Option<OffCpuConfig>,
    /// Off-CPU waits stored one by one per second (see `Aggregator::with_wait_records`).
    /// Default: 200.
    pub wait_records_per_second: u32,
    /// The `host` label. Default: this machine's host name.
    pub host: String,
    /// Stop after this long; `None` runs until SIGINT/SIGTERM.
    pub duration: Option<Duration>,
    /// Ring buffer size in bytes. Default: 8 MiB.
    pub ring_bytes: u32,
    /// How user stacks are unwound. Default: call-frame information, 32 KiB copied.
    pub unwinding: Unwinding,
    /// What the store keeps. Default: 30 days, 10 GiB.
    pub retention: Retention,
    /// Rules naming the `service` label; the first match wins, else the process name.
    pub services: Vec<ServiceRule>,
    /// Push batches to this server (`http://host:7070`) instead of the local store.
    pub push: Option<String>,
    /// The bearer token for `push`.
    pub push_token: Option<String>,
    /// Longest one push may take. Default: 30 s.
    pub push_timeout: Duration,
    /// Functions whose calls are timed and stored as requests. Default: none.
    pub probes: Vec<critpath_sampler::Probe>,
}

/// Names the `service` of processes whose executable path or cgroup matches.
#[derive(Clone, Debug)]
pub struct ServiceRule {
    /// The service name given.
    pub name: String,
    /// Matches the whole executable path.
    pub exe: Option<Regex>,
    /// Matches the whole cgroup v2 path (`/system.slice/nginx.service`).
    pub cgroup: Option<Regex>,
}

impl ServiceRule {
    fn matches(&self, exe: &str, cgroup: &str) -> bool {
        self.exe.as_ref().is_some_and(|r| r.is_match(exe))
            || self.cgroup.as_ref().is_some_and(|r| r.is_match(cgroup))
    }
}

/// How often a process's labels (exe, build-id, service) are re-read.
const PROCESS_INFO_TTL: Duration = Duration::from_secs(30);
/// Thread names cached for probed calls; past this many the cache starts again (a host
/// spawning threads without end).
const MAX_THREAD_NAMES: usize = 65_536;

/// What a running agent has done, shared with the HTTP server (`critpath run`).
#[derive(Debug, Default)]
pub struct AgentStatus {
    running: AtomicBool,
    frequency_hz: AtomicU64,
    off_cpu: AtomicBool,
    samples: AtomicU64,
    off_cpu_waits: AtomicU64,
    batches_written: AtomicU64,
    batches_dropped: AtomicU64,
    events_lost: AtomicU64,
    stack_errors: AtomicU64,
    wal_bytes: AtomicU64,
    unwinding: std::sync::Mutex<UnwindStatus>,
}

/// How user stacks were unwound, for health and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnwindStatus {
    /// `dwarf` (call-frame information over copied stacks) or `fp` (frame pointers).
    pub mode: String,
    /// User stacks unwound (samples with a user context), all processes since the start
    /// (a counter: processes forgotten by the symbolizer stay counted).
    pub stacks: u64,
    /// Those that ended in a `[truncated]` frame.
    pub truncated: u64,
    /// The processes with the most truncated stacks (at most [`UNWIND_PROCESSES_SHOWN`]).
    pub processes: Vec<ProcessUnwind>,
    /// User stacks of off-CPU waits and their wakers copied by the kernel (a counter).
    pub wait_copies: u64,
    /// Their bytes (a counter).
    pub wait_copy_bytes: u64,
    /// Captured waits kept without a user stack copy, past the capture budget's copies in a
    /// burst (their user stack shows `[truncated]`; a counter).
    pub waits_without_copy: u64,
    /// Bytes of copies held now for waits still in progress.
    pub held_wait_copy_bytes: u64,
}

/// One process's unwound and truncated user stacks.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcessUnwind {
    /// Process id.
    pub pid: u32,
    /// Its thread name in the last sample.
    pub comm: String,
    /// User stacks unwound.
    pub stacks: u64,
    /// Those truncated.
    pub truncated: u64,
}

/// Processes listed in [`UnwindStatus::processes`].
pub const UNWIND_PROCESSES_SHOWN: usize = 20;

impl UnwindStatus {
    /// The totals and the processes with the most truncated stacks (then the most stacks).
    fn new<'a>(
        mode: &str,
        totals: &critpath_sampler::SymbolizeStats,
        counts: impl IntoIterator<Item = (&'a u32, &'a critpath_sampler::UnwindCounts)>,
    ) -> Self {
        let mut status = Self {
            mode: mode.to_owned(),
            stacks: totals.user_stacks,
            truncated: totals.truncated_stacks,
            processes: counts
                .into_iter()
                .map(|(&pid, c)| ProcessUnwind {
                    pid,
                    comm: c.comm.clone(),
                    stacks: c.stacks,
                    truncated: c.truncated,
                })
                .collect(),
            ..Self::default()
        };
        status
            .processes
            .sort_by(|a, b| (b.truncated, b.stacks, a.pid).cmp(&(a.truncated, a.stacks, b.pid)));
        status.processes.truncate(UNWIND_PROCESSES_SHOWN);
        status
    }
}

/// A copy of [`AgentStatus`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AgentSnapshot {
    /// The sampler is attached and being drained.
    pub running: bool,
    /// On-CPU sampling frequency per CPU.
    pub frequency_hz: u64,
    /// Off-CPU waits are traced.
    pub off_cpu: bool,
    /// On-CPU samples aggregated.
    pub samples: u64,
    /// Off-CPU waits aggregated.
    pub off_cpu_waits: u64,
    /// Batches appended to the log (or pushed to the server).
    pub batches_written: u64,
    /// Batches dropped by failed writes (or refused by the server, or out of a full queue).
    pub batches_dropped: u64,
    /// Events lost to a full ring buffer.
    pub events_lost: u64,
    /// Failed kernel stack reads (user or kernel part).
    pub stack_errors: u64,
    /// Bytes appended to the log.
    pub wal_bytes: u64,
    /// User stack unwinding: mode, totals, and the processes with the most truncated stacks.
    pub unwinding: UnwindStatus,
}

impl AgentStatus {
    /// The current values.
    pub fn snapshot(&self) -> AgentSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AgentSnapshot {
            running: self.running.load(Ordering::Relaxed),
            frequency_hz: get(&self.frequency_hz),
            off_cpu: self.off_cpu.load(Ordering::Relaxed),
            samples: get(&self.samples),
            off_cpu_waits: get(&self.off_cpu_waits),
            batches_written: get(&self.batches_written),
            batches_dropped: get(&self.batches_dropped),
            events_lost: get(&self.events_lost),
            stack_errors: get(&self.stack_errors),
            wal_bytes: get(&self.wal_bytes),
            unwinding: self
                .unwinding
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Sets `stop` on SIGINT or SIGTERM.
pub fn stop_on_signals(stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(stop))
            .context("installing the signal handler")?;
    }
    Ok(())
}

/// Where the agent's batches go.
pub enum Sink {
    /// The local store, through its writer.
    Store(WriterHandle),
    /// A remote server.
    Push(Pusher),
}

impl Sink {
    fn send(&mut self, finished: &mut Vec<Batch>, stats: &mut AgentStats) {
        match self {
            Self::Store(writer) => {
                for batch in finished.drain(..) {
                    let rows = batch.rows.len();
                    match writer.append(vec![batch]) {
                        Ok(()) => stats.batches += 1,
                        Err(err) => {
                            stats.failed += 1;
                            log::error!("dropping a batch of {rows} rows: {err}");
                        }
                    }
                }
            }
            Self::Push(pusher) => {
                pusher.send(finished.drain(..));
                let counts = pusher.counts();
                stats.batches = counts.pushed;
                stats.failed = counts.dropped;
            }
        }
    }

    fn wal_bytes(&self) -> u64 {
        match self {
            Self::Store(writer) => writer.wal_bytes(),
            Self::Push(_) => 0,
        }
    }
}

/// Runs the agent until `stop` is set (or its duration ends); every accepted sample has been
/// handed to `sink` when it returns (stored durably, or pushed or still queued).
pub fn run(
    config: AgentConfig,
    mut sink: Sink,
    stop: &AtomicBool,
    status: &AgentStatus,
) -> anyhow::Result<()> {
    let mut symbolizer = Symbolizer::new();
    symbolizer.preload_kernel();
    let mut sampler = Sampler::start(SamplerConfig {
        frequency_hz: config.frequency_hz,
        target: Target::AllProcesses,
        ring_bytes: config.ring_bytes,
        unwinding: config.unwinding,
        off_cpu: config.off_cpu.clone(),
        probes: config.probes.clone(),
    })
    .context("starting the sampler")?;
    let mut collector = Collector::new(symbolizer);
    let period_ns = 1_000_000_000 / config.frequency_hz as i64;
    let interval_ms = config.interval.as_millis().max(1) as i64;
    let wait_records = (u64::from(config.wait_records_per_second) * interval_ms as u64)
        .div_ceil(1000)
        .max(1);
    let mut agg = Aggregator::new(interval_ms, period_ns)
        .with_wait_records(usize::try_from(wait_records).unwrap_or(usize::MAX));
    let mut processes = ProcessInfo::new(config.host.clone(), config.services.clone());
    let mut finished: Vec<Batch> = Vec::new();
    let mut stats = AgentStats::default();
    eprintln!(
        "critpath agent: sampling all processes at {} Hz{}, {} s intervals, store {}{}",
        config.frequency_hz,
        if config.off_cpu.is_some() {
            " with off-CPU waits"
        } else {
            ""
        },
        config.interval.as_secs_f64(),
        match &config.push {
            Some(url) => format!("pushed to {url}"),
            None => config.data_dir.display().to_string(),
        },
        if config.probes.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = config.probes.iter().map(ToString::to_string).collect();
            format!("; requests timed by {}", names.join(", "))
        }
    );
    let started = Instant::now();
    status
        .frequency_hz
        .store(config.frequency_hz, Ordering::Relaxed);
    status
        .off_cpu
        .store(config.off_cpu.is_some(), Ordering::Relaxed);
    status.running.store(true, Ordering::Relaxed);
    let mut last_status = Instant::now();
    loop {
        let timeout = POLL_TIMEOUT;
        collector
            .poll(&mut sampler, timeout, |o| {
                observe(&mut agg, &mut processes, &mut finished, &mut stats, o)
            })
            .context("reading samples")?;
        if agg.due(now_ms()) {
            finished.extend(agg.flush());
        }
        sink.send(&mut finished, &mut stats);
        if last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            update_status(status, &sampler, &collector, &sink, &stats);
        }
        if stop.load(Ordering::Relaxed) || config.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
    }
    collector
        .poll(&mut sampler, Duration::ZERO, |o| {
            observe(&mut agg, &mut processes, &mut finished, &mut stats, o)
        })
        .context("reading samples")?;
    finished.extend(agg.flush());
    sink.send(&mut finished, &mut stats);
    update_status(status, &sampler, &collector, &sink, &stats);
    status.running.store(false, Ordering::Relaxed);
    let counters = sampler
        .counters()
        .context("reading the sampler's counters")?;
    let unsent = match sink {
        Sink::Push(pusher) => {
            // What is queued goes now, with half a minute for a server that is slow to take it.
            let counts = pusher.close(Duration::from_secs(30));
            stats.batches = counts.pushed;
            stats.failed = counts.dropped;
            if counts.queued > 0 {
                format!(
                    ", {} batches not pushed (the server is unreachable)",
                    counts.queued
                )
            } else {
                String::new()
            }
        }
        Sink::Store(_) => String::new(),
    };
    let calls = if config.probes.is_empty() {
        String::new()
    } else {
        format!(
            ", {} probed calls ({} not timed: too many in progress at once)",
            stats.calls,
            counters.get(Counter::CallsLost)
        )
    };
    eprintln!(
        "critpath agent: stopped; {} batches written, {} dropped{unsent}, {} events lost to a full ring buffer{calls}",
        stats.batches,
        stats.failed,
        counters.get(Counter::RingFull)
    );
    Ok(())
}

#[derive(Default)]
struct AgentStats {
    batches: u64,
    failed: u64,
    samples: u64,
    off_cpu_waits: u64,
    /// Probed calls seen.
    calls: u64,
}

fn update_status(
    status: &AgentStatus,
    sampler: &Sampler,
    collector: &Collector,
    sink: &Sink,
    stats: &AgentStats,
) {
    let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
    set(&status.samples, stats.samples);
    set(&status.off_cpu_waits, stats.off_cpu_waits);
    set(&status.batches_written, stats.batches);
    set(&status.batches_dropped, stats.failed);
    set(&status.wal_bytes, sink.wal_bytes());
    if let Ok(c) = sampler.counters() {
        set(&status.events_lost, c.get(Counter::RingFull));
        set(
            &status.stack_errors,
            c.get(Counter::UserStackErrors) + c.get(Counter::KernelStackErrors),
        );
    }
    let symbolizer = collector.symbolizer();
    let mut unwinding = UnwindStatus::new(
        sampler.config().unwinding.name(),
        &symbolizer.stats(),
        symbolizer.unwind_counts(),
    );
    if let Ok(c) = sampler.counters() {
        unwinding.wait_copies = c.get(Counter::WaitCopies);
        unwinding.wait_copy_bytes = c.get(Counter::WaitCopyBytes);
        unwinding.waits_without_copy = c.get(Counter::WaitCopiesOverBudget);
    }
    unwinding.held_wait_copy_bytes = collector.held_wait_stacks().1 as u64;
    *status.unwinding.lock().unwrap_or_else(|e| e.into_inner()) = unwinding;
}

fn observe(
    agg: &mut Aggregator,
    processes: &mut ProcessInfo,
    finished: &mut Vec<Batch>,
    stats: &mut AgentStats,
    observation: Observation,
) {
    match observation {
        Observation::OnCpu {
            time_unix_ns,
            pid,
            tid,
            comm,
            frames,
        } => {
            stats.samples += 1;
            let labels = processes.labels(pid, comm);
            let background = processes.background.get(pid, tid);
            finished.extend(agg.add_on_cpu(time_unix_ns, &labels, (tid, background), &frames));
        }
        Observation::Call {
            pid,
            tid,
            start_unix_ns,
            duration_ns,
            ..
        } => {
            stats.calls += 1;
            // A thread gone by now (its process exited) leaves its call out.
            let Some(comm) = processes.thread_name(pid, tid) else {
                return;
            };
            let labels = processes.labels(pid, comm);
            let duration = duration_ns.min(i64::MAX as u64) as i64;
            finished.extend(agg.add_request(&labels, tid, start_unix_ns, duration));
        }
        Observation::OffCpu(wait) => {
            stats.off_cpu_waits += 1;
            let labels = processes.labels(wait.thread.pid, wait.thread.comm.clone());
            // In an interrupt the kernel woke it: the interrupted thread is beside the point
            // (and its process need not be looked up).
            let waker_labels = wait
                .waker
                .as_ref()
                .filter(|w| !w.in_interrupt)
                .map(|w| processes.labels(w.thread.pid, w.thread.comm.clone()));
            finished.extend(agg.add_wait(&labels, waker_labels.as_ref(), &wait));
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Per-process labels, read from /proc and cached.
struct ProcessInfo {
    host: String,
    services: Vec<ServiceRule>,
    cache: HashMap<u32, (Instant, String, String, String)>,
    /// Thread names by thread id, for probed calls (which come without one).
    thread_names: HashMap<u32, (Instant, String)>,
    /// Which threads run as background work (`SCHED_IDLE`, nice ≥ 10).
    background: critpath_sampler::sys::BackgroundThreads,
}

impl ProcessInfo {
    fn new(host: String, services: Vec<ServiceRule>) -> Self {
        Self {
            host,
            services,
            cache: HashMap::new(),
            thread_names: HashMap::new(),
            background: Default::default(),
        }
    }

    /// Thread `tid`'s name, read from /proc and cached; `None` when it is gone.
    fn thread_name(&mut self, pid: u32, tid: u32) -> Option<String> {
        if let Some((at, name)) = self.thread_names.get(&tid)
            && at.elapsed() < PROCESS_INFO_TTL
        {
            return Some(name.clone());
        }
        let name = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
        let name = name.trim_end_matches('\n').to_owned();
        if self.thread_names.len() >= MAX_THREAD_NAMES {
            self.thread_names.clear();
        }
        self.thread_names
            .insert(tid, (Instant::now(), name.clone()));
        Some(name)
    }

    fn labels(&mut self, pid: u32, comm: String) -> SeriesLabels {
        let fresh = self
            .cache
            .get(&pid)
            .is_some_and(|(at, ..)| at.elapsed() < PROCESS_INFO_TTL);
        if !fresh {
            // A process that is gone keeps what it had (or empty labels): never an error.
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let build_id = if exe.is_empty() {
                String::new()
            } else {
                critpath_sampler::sys::build_id(&format!("/proc/{pid}/exe"))
            };
            let cgroup = if self.services.iter().any(|r| r.cgroup.is_some()) {
                cgroup_path(pid)
            } else {
                String::new()
            };
            let service = match self.services.iter().find(|r| r.matches(&exe, &cgroup)) {
                Some(rule) => rule.name.clone(),
                None => std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_else(|_| comm.clone()),
            };
            self.cache
                .insert(pid, (Instant::now(), exe, build_id, service));
        }
        let (_, exe, build_id, service) = &self.cache[&pid];
        SeriesLabels {
            host: self.host.clone(),
            pid,
            comm,
            exe: exe.clone(),
            build_id: build_id.clone(),
            service: service.clone(),
        }
    }
}

/// A process's cgroup v2 path (`0::/system.slice/x.service` → `/system.slice/x.service`).
fn cgroup_path(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        })
        .unwrap_or_default()
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}
