//! `critpath record`: sample a command, some processes or the whole machine into one profile.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use critpath_analyzer::graph::WakeupsFile;
use critpath_analyzer::offcpu::{OffCpuWait, WakeupEdge};
use critpath_analyzer::store::{Aggregator, Batch, SeriesLabels};
use critpath_analyzer::{Profile, SampleLabels, ValueType, export};
use critpath_sampler::{
    Collector, Counter, Observation, OffCpuConfig, POLL_TIMEOUT, Probe, Sampler, SamplerConfig,
    Symbolizer, Target, Unwinding,
};

/// What to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordTarget {
    /// Every process.
    All,
    /// Existing processes.
    Pids(Vec<u32>),
    /// A command to start, with its arguments.
    Command(Vec<String>),
}

/// Settings of `critpath record`.
#[derive(Clone, Debug)]
pub struct RecordConfig {
    /// Sampling frequency per CPU in Hz. Default 19.
    pub frequency_hz: u64,
    /// Stop after this long; `None` runs until the target exits or a signal.
    pub duration: Option<Duration>,
    /// Where to write; `None` means standard output.
    pub output: Option<PathBuf>,
    /// Output format.
    pub format: export::Format,
    /// What to sample.
    pub target: RecordTarget,
    /// Ring buffer size in bytes.
    pub ring_bytes: u32,
    /// How user stacks are unwound.
    pub unwinding: Unwinding,
    /// Off-CPU tracing, when on.
    pub off_cpu: Option<OffCpuConfig>,
    /// Sample type written to folded and speedscope output (`samples`, `cpu`, `off_cpu`, `wall`).
    pub value: String,
    /// Where to write wakeup edges as JSON.
    pub wakeups: Option<PathBuf>,
    /// Functions whose calls are timed.
    pub probes: Vec<Probe>,
    /// Where to write the probed calls as JSON.
    pub calls: Option<PathBuf>,
}

/// One timed call of a probed function.
#[derive(Clone, Copy, Debug, serde::Serialize)]
struct Call {
    /// Index of the probe.
    probe: u32,
    pid: u32,
    tid: u32,
    start_unix_ns: i64,
    duration_ns: u64,
}

/// A value at quantile `q` of sorted `values` (nearest rank).
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Per probe: calls, throughput and latency percentiles over the recording.
fn report_calls(probes: &[Probe], calls: &[Call], seconds: f64) {
    for (i, probe) in probes.iter().enumerate() {
        let mut d: Vec<u64> = calls
            .iter()
            .filter(|c| c.probe as usize == i)
            .map(|c| c.duration_ns)
            .collect();
        d.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        eprintln!(
            "critpath: probe {probe}: {} calls ({:.1}/s), latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            d.len(),
            d.len() as f64 / seconds.max(1e-9),
            ms(quantile(&d, 0.5)),
            ms(quantile(&d, 0.9)),
            ms(quantile(&d, 0.99)),
            ms(d.last().copied().unwrap_or(0)),
        );
    }
}

/// Runs a recording and writes the profile.
pub fn run(config: RecordConfig) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }

    let (mut child, target) = match &config.target {
        RecordTarget::All => (None, Target::AllProcesses),
        RecordTarget::Pids(pids) => {
            for &pid in pids {
                if !critpath_sampler::sys::process_exists(pid) {
                    bail!("no process with pid {pid}");
                }
            }
            (None, Target::Processes(pids.clone()))
        }
        RecordTarget::Command(argv) => {
            let child = GatedChild::spawn(argv)?;
            let pid = child.pid();
            (Some(child), Target::Processes(vec![pid]))
        }
    };

    let mut symbolizer = Symbolizer::new();
    symbolizer.preload_kernel();
    let mut sampler = Sampler::start(SamplerConfig {
        frequency_hz: config.frequency_hz,
        target,
        ring_bytes: config.ring_bytes,
        unwinding: config.unwinding,
        off_cpu: config.off_cpu.clone(),
        probes: config.probes.clone(),
    })
    .context("starting the sampler")?;
    // The command may exec only now that its pid is in the filter.
    if let Some(c) = child.as_mut() {
        c.release();
    }

    let mut rec = Recording::new(&config);
    let mut collector = Collector::new(symbolizer);
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let mut last_prune = Instant::now();
    let mut target_exited = false;
    loop {
        collector
            .poll(&mut sampler, POLL_TIMEOUT, |o| rec.observe(o))
            .context("reading samples")?;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if config.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let exited = match (child.as_mut(), &config.target) {
            (Some(c), _) => c.try_wait()?.is_some(),
            (None, RecordTarget::Pids(pids)) => pids
                .iter()
                .all(|&p| !critpath_sampler::sys::process_exists(p)),
            (None, _) => false,
        };
        if exited {
            target_exited = true;
            break;
        }
        if last_prune.elapsed() >= Duration::from_secs(5) {
            sampler.prune_followed();
            last_prune = Instant::now();
        }
        if progress && last_progress.elapsed() >= Duration::from_secs(1) {
            eprint!(
                "\rrecording: {:.0} s, {} samples",
                started.elapsed().as_secs_f64(),
                rec.samples
            );
            last_progress = Instant::now();
        }
    }
    // What is still in the ring buffer belongs to the recording.
    collector
        .poll(&mut sampler, Duration::ZERO, |o| rec.observe(o))
        .context("reading samples")?;
    let in_calls = rec.attribute(&config.probes);
    let elapsed = started.elapsed();
    rec.profile.duration_ns = elapsed.as_nanos() as i64;
    if progress {
        eprintln!();
    }

    if let Some(c) = child.as_mut() {
        if !target_exited {
            // The recording ended first (duration or signal): the command is ours to stop.
            c.terminate();
        }
        let status = c.wait()?;
        if status != 0 && target_exited {
            log::warn!("the command exited with wait status {status:#x}");
        }
    }

    let counters = sampler
        .counters()
        .context("reading the sampler's counters")?;
    let lost = counters.get(Counter::RingFull);
    let stats = collector.symbolizer().stats();
    eprintln!(
        "critpath: {} samples in {:.1} s at {} Hz ({} events lost to a full ring buffer, {} user / {} kernel stack errors, {} unresolved frames)",
        rec.samples,
        elapsed.as_secs_f64(),
        config.frequency_hz,
        lost,
        counters.get(Counter::UserStackErrors),
        counters.get(Counter::KernelStackErrors),
        stats.unresolved + stats.unmapped,
    );
    if lost > 0 {
        eprintln!("critpath: events were lost; raise --ring-bytes");
    }
    if let Unwinding::CallFrameInfo { .. } = config.unwinding {
        let (stacks, truncated, bytes) = (
            stats.user_stacks,
            stats.truncated_stacks,
            stats.user_stack_bytes,
        );
        eprintln!(
            "critpath: user stacks: {stacks} unwound with call-frame information, {truncated} truncated ({:.1}%), {:.1} KiB of stack copied per unwound stack",
            100.0 * truncated as f64 / stacks.max(1) as f64,
            bytes as f64 / 1024.0 / stacks.max(1) as f64,
        );
    }
    if config.off_cpu.is_some() {
        eprintln!(
            "critpath: off-CPU: {} waits kept ({} of them shorter than the minimum, drawn in proportion to their length and weighted), {} wakeup edges; {} switch-outs, {} sampled out by the budget, {} short waits drawn out (their ~{:.3} s counted through the weights of those kept), {} stack collisions, {} dropped with the thread table full",
            rec.waits,
            counters.get(Counter::OffCpuShortEmitted),
            rec.edges.len(),
            counters.get(Counter::OffCpuSwitches),
            counters.get(Counter::OffCpuUnsampled),
            counters.get(Counter::OffCpuBelowMin),
            counters.get(Counter::OffCpuBelowMinNs) as f64 / 1e9,
            counters.get(Counter::StackCollisions),
            counters.get(Counter::OffCpuStateFull),
        );
        if config.unwinding != Unwinding::FramePointers {
            let copies = counters.get(Counter::WaitCopies);
            eprintln!(
                "critpath: off-CPU user stacks: {copies} copied at switch-out or wakeup ({:.0}/s, {:.1} KiB each), {} waits kept without one (past the budget's copies, shown [truncated])",
                copies as f64 / elapsed.as_secs_f64().max(1e-9),
                counters.get(Counter::WaitCopyBytes) as f64 / 1024.0 / copies.max(1) as f64,
                counters.get(Counter::WaitCopiesOverBudget),
            );
        }
    }
    if !config.probes.is_empty() {
        report_calls(&config.probes, &rec.calls, elapsed.as_secs_f64());
        for (probe, (inside, of_threads)) in config.probes.iter().zip(&in_calls) {
            eprintln!(
                "critpath: probe {probe}: {inside} of its threads' {of_threads} on-CPU samples were inside its calls (pprof label request={})",
                probe.function
            );
        }
        let lost = counters.get(Counter::CallsLost);
        if lost > 0 {
            eprintln!("critpath: {lost} calls were not timed: too many calls in progress at once");
        }
    }
    if let Some(path) = &config.calls {
        let probes: Vec<String> = config.probes.iter().map(ToString::to_string).collect();
        let json = serde_json::json!({ "probes": probes, "calls": rec.calls });
        std::fs::write(path, serde_json::to_vec(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "critpath: wrote {} calls to {}",
            rec.calls.len(),
            path.display()
        );
    }
    if let Some(path) = &config.wakeups {
        let waits = rec.edges.len();
        let edges = WakeupEdge::merge(std::mem::take(&mut rec.edges));
        let batches: Vec<Batch> = rec
            .timeline
            .take()
            .map(|(mut agg, mut batches, _)| {
                batches.extend(agg.flush());
                batches
            })
            .unwrap_or_default();
        let records: usize = batches.iter().map(|b| b.waits.len()).sum();
        let json = WakeupsFile::to_json(&edges, &batches).context("encoding wakeup edges")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "critpath: wrote {} wakeup edges ({waits} waits) and the timeline ({records} waits, {} samples, by thread and time) to {}",
            edges.len(),
            batches
                .iter()
                .map(|b| b.thread_samples.len())
                .sum::<usize>(),
            path.display()
        );
    }

    let profile = &rec.profile;
    let value = profile
        .sample_type_index(&config.value)
        .with_context(|| format!("the profile has no {:?} values", config.value))?;
    let bytes = config.format.encode(profile, value, "critpath record");
    match &config.output {
        Some(path) => {
            std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("critpath: wrote {} ({})", path.display(), config.format);
        }
        None => std::io::stdout()
            .write_all(&bytes)
            .context("writing to standard output")?,
    }
    Ok(())
}

/// What a recording accumulates.
struct Recording {
    profile: Profile,
    on_cpu_values: Vec<i64>,
    /// On-CPU samples.
    samples: u64,
    /// Off-CPU waits.
    waits: u64,
    edges: Vec<WakeupEdge>,
    /// With `--wakeups`: every sample and wait by thread and time, the batches done, and each
    /// process's executable.
    timeline: Option<(
        Aggregator,
        Vec<Batch>,
        std::collections::HashMap<u32, String>,
    )>,
    /// Which threads run as background work (`SCHED_IDLE`, nice ≥ 10), for the timeline.
    background: critpath_sampler::sys::BackgroundThreads,
    /// Probed calls.
    calls: Vec<Call>,
    /// With probes: samples and waits held until the calls they fall in are known.
    deferred: Option<Vec<Observation>>,
}

impl Recording {
    fn new(config: &RecordConfig) -> Self {
        let period_ns = 1_000_000_000 / config.frequency_hz as i64;
        let mut sample_types = vec![
            ValueType::new("samples", "count"),
            ValueType::new("cpu", "nanoseconds"),
        ];
        if config.off_cpu.is_some() {
            sample_types.push(ValueType::new("off_cpu", "nanoseconds"));
            sample_types.push(ValueType::new("wall", "nanoseconds"));
        }
        let on_cpu_values = [1, period_ns, 0, period_ns][..sample_types.len()].to_vec();
        let mut profile = Profile::new(sample_types);
        profile.period_type = Some(ValueType::new("cpu", "nanoseconds"));
        profile.period = period_ns;
        profile.start_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        Self {
            profile,
            on_cpu_values,
            samples: 0,
            waits: 0,
            edges: Vec::new(),
            timeline: config.wakeups.is_some().then(|| {
                (
                    Aggregator::new(TIMELINE_INTERVAL_MS, period_ns),
                    Vec::new(),
                    std::collections::HashMap::new(),
                )
            }),
            background: Default::default(),
            calls: Vec::new(),
            deferred: (!config.probes.is_empty()).then(Vec::new),
        }
    }

    fn observe(&mut self, observation: Observation) {
        if matches!(observation, Observation::OnCpu { .. }) {
            self.samples += 1;
        }
        if let Some(deferred) = &mut self.deferred
            && !matches!(observation, Observation::Call { .. })
        {
            // Probed calls are reported when they return: samples wait for them.
            deferred.push(observation);
            return;
        }
        self.add(observation, None);
    }

    /// Adds an observation; `request`: the probed function its thread was inside.
    fn add(&mut self, observation: Observation, request: Option<String>) {
        match observation {
            Observation::OnCpu {
                time_unix_ns,
                pid,
                tid,
                comm,
                frames,
            } => {
                if let Some((agg, batches, exes)) = &mut self.timeline {
                    let series = record_series(exes, pid, &comm);
                    let background = self.background.get(pid, tid);
                    batches.extend(agg.add_on_cpu(
                        time_unix_ns,
                        &series,
                        (tid, background),
                        &frames,
                    ));
                }
                let mut labels = SampleLabels::new(pid, tid, comm);
                labels.request = request;
                self.profile.add(frames, &self.on_cpu_values, labels);
            }
            Observation::OffCpu(wait) => self.add_wait(&wait, request),
            Observation::Call {
                probe,
                pid,
                tid,
                start_unix_ns,
                duration_ns,
            } => self.calls.push(Call {
                probe,
                pid,
                tid,
                start_unix_ns,
                duration_ns,
            }),
        }
    }

    /// Adds a wait to the profile: its blocked time under `[off-cpu: <cause>]` and its run-queue
    /// delay under `[off-cpu: runqueue]`, both as off-CPU and as wall time.
    fn add_wait(&mut self, wait: &OffCpuWait, request: Option<String>) {
        self.waits += 1;
        let mut labels =
            SampleLabels::new(wait.thread.pid, wait.thread.tid, wait.thread.comm.clone());
        labels.request = request;
        for (frames, ns) in wait.split_by_cause() {
            self.profile.add(frames, &[0, 0, ns, ns], labels.clone());
        }
        self.edges.extend(wait.edge());
        if let Some((agg, batches, exes)) = &mut self.timeline {
            let series = record_series(exes, wait.thread.pid, &wait.thread.comm);
            let waker = wait
                .waker
                .as_ref()
                .filter(|w| !w.in_interrupt)
                .map(|w| record_series(exes, w.thread.pid, &w.thread.comm));
            batches.extend(agg.add_wait(&series, waker.as_ref(), wait));
        }
    }
}

/// Intervals of a recording's timeline batches: one batch an hour.
const TIMELINE_INTERVAL_MS: i64 = 3_600_000;

/// The series of a thread in a recording's timeline: process, thread name and executable
/// (read once per process; empty when it is gone or a kernel thread).
fn record_series(
    exes: &mut std::collections::HashMap<u32, String>,
    pid: u32,
    comm: &str,
) -> SeriesLabels {
    let exe = exes.entry(pid).or_insert_with(|| {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    SeriesLabels {
        pid,
        comm: comm.to_owned(),
        exe: exe.clone(),
        service: comm.to_owned(),
        ..SeriesLabels::default()
    }
}

impl Recording {
    /// Adds the held samples and waits, each labelled with the probed function its thread was
    /// inside at the time (on-CPU: when sampled; off-CPU: when it blocked). Returns, per probe,
    /// the on-CPU samples inside its calls and those of the threads that made them.
    fn attribute(&mut self, probes: &[Probe]) -> Vec<(u64, u64)> {
        let Some(deferred) = self.deferred.take() else {
            return Vec::new();
        };
        // Per thread: its calls (start, end, probe), by start.
        let mut calls: std::collections::HashMap<u32, Vec<(i64, i64, u32)>> =
            std::collections::HashMap::new();
        for c in &self.calls {
            let end = c.start_unix_ns + c.duration_ns as i64;
            calls
                .entry(c.tid)
                .or_default()
                .push((c.start_unix_ns, end, c.probe));
        }
        for list in calls.values_mut() {
            list.sort_unstable();
        }
        let inside = |tid: u32, t: i64| -> Option<u32> {
            let list = calls.get(&tid)?;
            // The last call starting at or before t, if it has not returned by t (an inner
            // call of another probe starts later, so it wins).
            let i = list.partition_point(|&(start, ..)| start <= t);
            let &(_, end, probe) = list.get(i.checked_sub(1)?)?;
            (t < end).then_some(probe)
        };
        // Thread names, for the requests' series in the timeline.
        let mut comms: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
        for o in &deferred {
            match o {
                Observation::OnCpu { tid, comm, .. } => {
                    comms.entry(*tid).or_insert_with(|| comm.clone());
                }
                Observation::OffCpu(w) => {
                    comms
                        .entry(w.thread.tid)
                        .or_insert_with(|| w.thread.comm.clone());
                }
                Observation::Call { .. } => {}
            }
        }
        let mut counts = vec![(0, 0); probes.len()];
        for o in deferred {
            let (tid, t, on_cpu) = match &o {
                Observation::OnCpu {
                    tid, time_unix_ns, ..
                } => (*tid, *time_unix_ns, true),
                Observation::OffCpu(w) => (w.thread.tid, w.start_unix_ns, false),
                Observation::Call { .. } => continue,
            };
            let probe = inside(tid, t);
            if on_cpu {
                for (i, c) in counts.iter_mut().enumerate() {
                    let of_thread = calls
                        .get(&tid)
                        .is_some_and(|l| l.iter().any(|&(.., p)| p as usize == i));
                    c.1 += u64::from(of_thread);
                    c.0 += u64::from(probe == Some(i as u32));
                }
            }
            let request = probe
                .and_then(|p| probes.get(p as usize))
                .map(|p| p.function.clone());
            self.add(o, request);
        }
        // The calls are the timeline's requests: `explain` counts only the time inside them.
        if let Some((agg, batches, exes)) = &mut self.timeline {
            for c in &self.calls {
                let Some(comm) = comms.get(&c.tid) else {
                    continue;
                };
                let series = record_series(exes, c.pid, comm);
                let duration = c.duration_ns.min(i64::MAX as u64) as i64;
                batches.extend(agg.add_request(&series, c.tid, c.start_unix_ns, duration));
            }
        }
        counts
    }
}

/// A command started by `record`, held before `exec` until released.
struct GatedChild {
    pid: libc::pid_t,
    gate: Option<std::fs::File>,
    status: Option<i32>,
}

impl GatedChild {
    /// Forks and, in the child, waits for [`GatedChild::release`] before exec'ing `argv`, so that
    /// its pid can be put in the sampler's filter before it runs a single instruction of its own.
    /// (`std::process::Command::spawn` cannot do this: it waits for the exec.)
    fn spawn(argv: &[String]) -> anyhow::Result<Self> {
        let cargs: Vec<std::ffi::CString> = argv
            .iter()
            .map(|a| std::ffi::CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .context("the command contains a NUL byte")?;
        let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error()).context("creating a pipe");
        }
        let [read_end, write_end] = fds;
        // SAFETY: after fork the child only calls async-signal-safe functions (close, read,
        // execvp, write, _exit) on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).context("fork");
        }
        if pid == 0 {
            // SAFETY: see above; every pointer was built before the fork and is still valid.
            unsafe {
                libc::close(write_end);
                let mut byte = 0u8;
                // Returns on the parent's close (EOF) or write; either way, go on to exec.
                libc::read(read_end, (&raw mut byte).cast(), 1);
                libc::execvp(ptrs[0], ptrs.as_ptr());
                let msg = b"critpath: cannot execute the command\n";
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::_exit(127);
            }
        }
        // SAFETY: read_end is a valid fd owned here; the child has its own copy.
        unsafe { libc::close(read_end) };
        // SAFETY: write_end is a valid, open fd that nothing else owns.
        let gate = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(write_end) };
        Ok(Self {
            pid,
            gate: Some(gate),
            status: None,
        })
    }

    fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Lets the command exec.
    fn release(&mut self) {
        self.gate = None;
    }

    /// The exit status, if it has exited.
    fn try_wait(&mut self) -> anyhow::Result<Option<i32>> {
        self.wait_flags(libc::WNOHANG)
    }

    fn wait(&mut self) -> anyhow::Result<i32> {
        Ok(self.wait_flags(0)?.unwrap_or(0))
    }

    fn wait_flags(&mut self, flags: i32) -> anyhow::Result<Option<i32>> {
        if self.status.is_some() {
            return Ok(self.status);
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, flags) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error()).context("waiting for the command");
        }
        if rc == 0 {
            return Ok(None);
        }
        self.status = Some(status);
        Ok(self.status)
    }

    fn terminate(&self) {
        // SAFETY: kill(2) on our own unreaped child; no memory involved.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
    }
}
