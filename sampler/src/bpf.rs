//! Loading, attaching and draining the eBPF programs.

use std::collections::HashMap as StdHashMap;
use std::os::fd::{AsRawFd as _, RawFd};
use std::sync::Arc;
use std::time::Duration;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{
        PerfEvent, TracePoint, UProbe,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use critpath_common::{
    CallEntryEvent, CallEvent, Config, Counter, EventKind, ExecEvent, GLOBAL_CONFIG, MAP_COUNTERS,
    MAP_EVENTS, MAP_OFFCPU_RATE, MAP_OFFCPU_STACKS, MAP_PID_FILTER, MAP_WAIT_STACK_SCRATCH,
    OFFCPU_WINDOW_NS, OffCpuEvent, OffCpuRate, PAGE_SIZE, SampleEvent, StackSampleEvent,
    USER_STACK_MAX_PAGES, programs,
};

use crate::probe::HiddenReturns;
use crate::{Error, UserStack, sys};

/// The compiled eBPF object, built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/critpath-ebpf"));

/// Which processes to sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every process on the machine.
    AllProcesses,
    /// These processes and the children they fork from now on.
    Processes(Vec<u32>),
}

/// Off-CPU tracing settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffCpuConfig {
    /// Waits blocked at least this long are all emitted; a shorter one is emitted with
    /// probability (its blocked time / this) and weighted by the inverse, so that per-stack
    /// totals of sub-millisecond waits stay unbiased while the waits emitted stay bounded: about
    /// one per this much waiting, per thread (a context-switch storm of microsecond waits emits
    /// a few hundred per second, not hundreds of thousands). Default: 1 ms; at most
    /// [`OffCpuConfig::MAX_MIN_DURATION`].
    pub min_duration: Duration,
    /// Waits whose stacks may be captured per second per CPU. Default: 2000. Below this rate
    /// every wait is captured; above it, waits are sampled with a probability that keeps the
    /// capture rate at the budget, and each emitted wait is weighted by 1/probability so totals
    /// stay unbiased. Capturing costs about 2 stack walks (with call-frame unwinding: a kernel
    /// stack walk and a copy of the user stack, 7–12 KiB typically, at most this many per
    /// second per CPU), so the default bounds the kernel-side cost to a few milliseconds per
    /// second per CPU whatever the switch rate.
    pub budget_per_second: u32,
}

impl OffCpuConfig {
    /// The largest [`OffCpuConfig::min_duration`] (the kernel side computes the emission
    /// probability of shorter waits in 32-bit fixed point).
    pub const MAX_MIN_DURATION: Duration = Duration::from_secs(2);
}

impl Default for OffCpuConfig {
    fn default() -> Self {
        Self {
            min_duration: Duration::from_millis(1),
            budget_per_second: 2000,
        }
    }
}

/// How on-CPU samples' user stacks are unwound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unwinding {
    /// Walked by frame pointers in the kernel (`bpf_get_stack`): cheapest, but code built
    /// without frame pointers — most distribution packages, Rust's release profile — gives one
    /// or two frames and then garbage.
    FramePointers,
    /// The user registers and the top `stack_bytes` of the user stack are copied with each
    /// sample and unwound in user space with the modules' call-frame information (`.eh_frame`):
    /// full stacks with or without frame pointers. A stack deeper than the copy ends in a
    /// `[truncated]` frame.
    CallFrameInfo {
        /// Bytes of stack above the stack pointer copied at least (rounded up to pages;
        /// 4 KiB to 32 KiB).
        stack_bytes: u32,
    },
}

impl Unwinding {
    /// The mode's name, as `--unwind` takes it: `dwarf` or `fp`.
    pub fn name(self) -> &'static str {
        match self {
            Self::FramePointers => "fp",
            Self::CallFrameInfo { .. } => "dwarf",
        }
    }

    /// Default bytes of user stack copied per sample: the most the record holds. Measured
    /// while this machine compiled critpath (`critpath record -a`), 16 KiB left 51% of the
    /// stacks truncated (LLVM's worker threads, rustc), 32 KiB 15%; at 19 Hz the 9 pages a
    /// sample cost a few µs (docs/design/unwinding.md).
    pub const DEFAULT_STACK_BYTES: u32 = 32 << 10;

    /// Pages copied per sample (the page of the stack pointer and `stack_bytes` above it); 0
    /// for frame pointers.
    pub fn pages(self) -> Result<u32, Error> {
        match self {
            Self::FramePointers => Ok(0),
            Self::CallFrameInfo { stack_bytes } => {
                let max = (USER_STACK_MAX_PAGES - 1) * PAGE_SIZE;
                if !(PAGE_SIZE..=max).contains(&(stack_bytes as usize)) {
                    return Err(Error::Config(format!(
                        "the user stack copy must be {} KiB to {} KiB, not {stack_bytes} bytes",
                        PAGE_SIZE >> 10,
                        max >> 10
                    )));
                }
                Ok(stack_bytes.div_ceil(PAGE_SIZE as u32) + 1)
            }
        }
    }
}

impl Default for Unwinding {
    fn default() -> Self {
        Self::CallFrameInfo {
            stack_bytes: Self::DEFAULT_STACK_BYTES,
        }
    }
}

/// One event drained from the ring buffer.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// An on-CPU sample.
    OnCpu(&'a SampleEvent),
    /// An on-CPU sample with its copied user stack, to unwind in user space
    /// ([`Unwinding::CallFrameInfo`]).
    OnCpuStack(&'a StackSampleEvent),
    /// A finished off-CPU wait; resolve its stack ids with [`Sampler::stack`]. Its copied user
    /// stacks, if any ([`OffCpuEvent::copies`]), came before it as [`Event::WaitStack`].
    OffCpu(&'a OffCpuEvent),
    /// The copied user stack of a thread that blocked, or of the thread that woke it, for the
    /// wait of thread `tid` that started at `start_ns` ([`critpath_common::WaitStackEvent`]).
    /// It comes before that wait's [`Event::OffCpu`], which may never come (a wait shorter than
    /// the minimum).
    WaitStack {
        /// [`critpath_common::wait_copies::ROLE_WAITER`] or `ROLE_WAKER`.
        role: u32,
        /// The blocked thread.
        tid: u32,
        /// Start of its wait ([`OffCpuEvent::start_ns`]).
        start_ns: u64,
        /// The copy, borrowed from the ring buffer.
        stack: UserStack<'a>,
    },
    /// This process exec'd: its mappings changed (see [`crate::Symbolizer::process_exec`]).
    Exec {
        /// Process id.
        pid: u32,
    },
    /// A call of a probed function returned; `probe` indexes [`SamplerConfig::probes`].
    Call(&'a CallEvent),
}

/// How the sampler is set up.
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// On-CPU sampling frequency per CPU, in Hz. Default: 19 (a prime, so the sampler does not
    /// run in lockstep with periodic work at round frequencies).
    pub frequency_hz: u64,
    /// Which processes to sample. Default: all.
    pub target: Target,
    /// Ring buffer size in bytes, rounded up to a power of two pages. Default: 8 MiB (about 200
    /// samples with copied stacks, 4000 without; at 19 Hz on 64 CPUs, 0.2 s of slack for the
    /// reader, which drains it continuously).
    pub ring_bytes: u32,
    /// How user stacks are unwound. Default: call-frame information with 32 KiB copied.
    pub unwinding: Unwinding,
    /// Off-CPU waits and wakeups; `None` turns them off. Default: on, with default settings.
    pub off_cpu: Option<OffCpuConfig>,
    /// Functions whose calls are timed (latency probes). Default: none.
    pub probes: Vec<crate::Probe>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            frequency_hz: 19,
            target: Target::AllProcesses,
            ring_bytes: critpath_common::DEFAULT_RING_BYTES,
            unwinding: Unwinding::default(),
            off_cpu: Some(OffCpuConfig::default()),
            probes: Vec::new(),
        }
    }
}

/// Totals of the kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    values: [u64; Counter::COUNT as usize],
}

impl Counters {
    /// The value of one counter.
    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize]
    }

    /// Every counter with its name.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.into_iter().map(|c| (c, self.get(c)))
    }
}

/// The loaded and attached eBPF sampler.
pub struct Sampler {
    // Holds the programs and their links; dropping it detaches everything.
    _ebpf: Ebpf,
    events: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    pid_filter: HashMap<MapData, u32, u8>,
    stacks: StackTraceMap<MapData>,
    rate: PerCpuArray<MapData, OffCpuRate>,
    /// Stacks already read, by id. Ids are stable: the programs never reuse a bucket.
    stack_cache: StdHashMap<i32, Arc<[u64]>>,
    /// Where each sample with a copied stack is read to: 38 KiB, reused rather than allocated
    /// per sample, and kept off the stack of the (possibly small) polling thread.
    stack_event: Box<StackSampleEvent>,
    /// Return addresses the latency probes hide while their calls run, put back into the
    /// stacks copied meanwhile.
    hidden_returns: HiddenReturns,
    /// Where a wait's copied stack is mended when it holds hidden return addresses (the ring
    /// buffer's record is read-only).
    mended_copy: Vec<u8>,
    config: SamplerConfig,
    cpus: Vec<u32>,
}

impl Sampler {
    /// Loads the programs into the kernel and starts sampling.
    ///
    /// # Errors
    /// Missing privileges (needs root, or CAP_BPF + CAP_PERFMON), a kernel without the needed
    /// program types, or tracefs that cannot be mounted.
    pub fn start(config: SamplerConfig) -> Result<Self, Error> {
        if config.frequency_hz == 0 {
            return Err(Error::Config(
                "the sampling frequency must be at least 1 Hz".into(),
            ));
        }
        sys::raise_memlock_rlimit();
        let tracefs = sys::ensure_tracefs()?;
        let filter = matches!(config.target, Target::Processes(_));
        let offset = |event, field| sys::tracepoint_field_offset(&tracefs, "sched", event, field);
        let off_cpu = config.off_cpu.clone().unwrap_or_default();
        if off_cpu.min_duration > OffCpuConfig::MAX_MIN_DURATION {
            return Err(Error::Config(format!(
                "the off-CPU minimum duration is at most {} ms (got {} ms)",
                OffCpuConfig::MAX_MIN_DURATION.as_millis(),
                off_cpu.min_duration.as_millis()
            )));
        }
        let windows_per_second = 1_000_000_000 / OFFCPU_WINDOW_NS;
        let bpf_config = Config {
            filter_pids: u32::from(filter),
            fork_parent_pid_offset: offset("sched_process_fork", "parent_pid")?,
            fork_child_pid_offset: offset("sched_process_fork", "child_pid")?,
            off_cpu: u32::from(config.off_cpu.is_some()),
            off_cpu_min_ns: off_cpu.min_duration.as_nanos().min(u64::MAX as u128) as u64,
            off_cpu_budget: (u64::from(off_cpu.budget_per_second) / windows_per_second).max(1)
                as u32,
            user_stack_pages: config.unwinding.pages()?,
            exclude_tgid: std::process::id(),
            _pad: 0,
        };
        if config.off_cpu.is_some() {
            use critpath_common::tracepoint_offsets as tp;
            for (event, field, expected) in [
                ("sched_switch", "prev_pid", tp::SWITCH_PREV_PID),
                ("sched_switch", "prev_state", tp::SWITCH_PREV_STATE),
                ("sched_switch", "next_pid", tp::SWITCH_NEXT_PID),
                ("sched_waking", "pid", tp::WAKING_PID),
            ] {
                let found = offset(event, field)?;
                if found as usize != expected {
                    return Err(Error::TracepointFormat {
                        tracepoint: format!("sched:{event}"),
                        reason: format!(
                            "field {field} is at offset {found} on this kernel, but critpath's \
                             off-CPU programs read it at {expected}; run without --off-cpu"
                        ),
                    });
                }
            }
        }
        let ring_bytes = ring_size(config.ring_bytes);
        let mut ebpf = EbpfLoader::new()
            .override_global(GLOBAL_CONFIG, &bpf_config, true)
            .map_max_entries(MAP_EVENTS, ring_bytes)
            .map_max_entries(MAP_WAIT_STACK_SCRATCH, possible_cpus()?)
            .load(EBPF_OBJECT)
            .map_err(Error::load)?;

        let events = RingBuf::try_from(take_map(&mut ebpf, MAP_EVENTS)?).map_err(Error::map)?;
        let counters =
            PerCpuArray::try_from(take_map(&mut ebpf, MAP_COUNTERS)?).map_err(Error::map)?;
        let mut pid_filter =
            HashMap::try_from(take_map(&mut ebpf, MAP_PID_FILTER)?).map_err(Error::map)?;
        let stacks =
            StackTraceMap::try_from(take_map(&mut ebpf, MAP_OFFCPU_STACKS)?).map_err(Error::map)?;
        let rate =
            PerCpuArray::try_from(take_map(&mut ebpf, MAP_OFFCPU_RATE)?).map_err(Error::map)?;
        if let Target::Processes(pids) = &config.target {
            for &pid in pids {
                insert_pid(&mut pid_filter, pid)?;
            }
            let fork: &mut TracePoint = program(&mut ebpf, programs::FOLLOW_FORK)?;
            fork.load()
                .map_err(Error::program("load", programs::FOLLOW_FORK))?;
            fork.attach("sched", "sched_process_fork")
                .map_err(Error::program("attach", programs::FOLLOW_FORK))?;
        }

        let exec: &mut TracePoint = program(&mut ebpf, programs::ON_EXEC)?;
        exec.load()
            .map_err(Error::program("load", programs::ON_EXEC))?;
        exec.attach("sched", "sched_process_exec")
            .map_err(Error::program("attach", programs::ON_EXEC))?;
        if config.off_cpu.is_some() {
            for (name, event) in [
                (programs::SCHED_SWITCH, "sched_switch"),
                (programs::SCHED_WAKING, "sched_waking"),
            ] {
                let tp: &mut TracePoint = program(&mut ebpf, name)?;
                tp.load().map_err(Error::program("load", name))?;
                tp.attach("sched", event)
                    .map_err(Error::program("attach", name))?;
            }
        }

        if !config.probes.is_empty() {
            // Resolve every probe first: a typo fails before anything is attached.
            let symbols = config
                .probes
                .iter()
                .map(|p| crate::probe::resolve(&p.binary, &p.function))
                .collect::<Result<Vec<_>, _>>()?;
            for name in [programs::PROBE_ENTRY, programs::PROBE_RETURN] {
                let probe: &mut UProbe = program(&mut ebpf, name)?;
                probe.load().map_err(Error::program("load", name))?;
                for (i, (p, symbol)) in config.probes.iter().zip(&symbols).enumerate() {
                    let point = UProbeAttachPoint {
                        location: UProbeAttachLocation::Symbol(symbol),
                        cookie: Some(i as u64),
                    };
                    probe
                        .attach(point, &p.binary, UProbeScope::AllProcesses)
                        .map_err(|e| Error::Probe {
                            probe: p.to_string(),
                            reason: format!("attaching {name}: {e}"),
                        })?;
                }
            }
        }

        let cpus = aya::util::online_cpus().map_err(|(path, source)| Error::Io {
            what: path.to_owned(),
            source,
        })?;
        let on_cpu: &mut PerfEvent = program(&mut ebpf, programs::ON_CPU)?;
        on_cpu
            .load()
            .map_err(Error::program("load", programs::ON_CPU))?;
        for &cpu in &cpus {
            on_cpu
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(config.frequency_hz),
                    false,
                )
                .map_err(Error::program("attach", programs::ON_CPU))?;
        }
        log::info!(
            "sampling {} at {} Hz on {} CPUs, off-CPU {:?}",
            match &config.target {
                Target::AllProcesses => "all processes".to_owned(),
                Target::Processes(p) => format!("pids {p:?} and their children"),
            },
            config.frequency_hz,
            cpus.len(),
            config.off_cpu,
        );
        Ok(Self {
            _ebpf: ebpf,
            events,
            counters,
            pid_filter,
            stacks,
            rate,
            stack_cache: StdHashMap::new(),
            // SAFETY: StackSampleEvent is Pod (integers only): all zeroes is a valid value.
            stack_event: unsafe { Box::new_zeroed().assume_init() },
            hidden_returns: HiddenReturns::default(),
            mended_copy: Vec::new(),
            config,
            cpus,
        })
    }

    /// The configuration the sampler runs with.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// The CPUs sampled.
    pub fn cpus(&self) -> &[u32] {
        &self.cpus
    }

    /// Adds a process to follow (only meaningful with [`Target::Processes`]).
    ///
    /// # Errors
    /// The filter map is full.
    pub fn follow_pid(&mut self, pid: u32) -> Result<(), Error> {
        insert_pid(&mut self.pid_filter, pid)
    }

    /// Drops followed ids whose process or thread no longer exists, so the filter never fills
    /// with dead entries. Returns how many were removed.
    pub fn prune_followed(&mut self) -> usize {
        let dead: Vec<u32> = self
            .pid_filter
            .keys()
            .filter_map(Result::ok)
            .filter(|&pid| !sys::process_exists(pid))
            .collect();
        self.hidden_returns.retain(sys::process_exists);
        dead.iter()
            .filter(|pid| self.pid_filter.remove(pid).is_ok())
            .count()
    }

    /// Waits up to `timeout` for events, then hands every available event to `f`. Returns how
    /// many events were read.
    ///
    /// # Errors
    /// `poll(2)` failing for a reason other than a signal.
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(Event<'_>),
    ) -> Result<usize, Error> {
        wait_readable(self.events.as_raw_fd(), timeout)?;
        let mut n = 0;
        while let Some(item) = self.events.next() {
            let kind = item
                .get(..4)
                .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")));
            match kind.and_then(EventKind::from_u32) {
                Some(EventKind::OnCpu) => {
                    let Some(event) = read_record::<SampleEvent>(&item) else {
                        continue;
                    };
                    f(Event::OnCpu(&event));
                }
                Some(EventKind::OnCpuStack) => {
                    if !read_record_into(&item, &mut *self.stack_event) {
                        continue;
                    }
                    let event = &mut *self.stack_event;
                    let (pid, base) = (event.header.pid, event.user_stack_base);
                    self.hidden_returns
                        .restore(pid, base, event.user_stack_mut());
                    f(Event::OnCpuStack(&self.stack_event));
                }
                Some(EventKind::OffCpu) => {
                    let Some(event) = read_record::<OffCpuEvent>(&item) else {
                        continue;
                    };
                    f(Event::OffCpu(&event));
                }
                Some(EventKind::WaitStack) => {
                    let Some((role, tid, start_ns, mut stack)) = UserStack::of_wait_record(&item)
                    else {
                        continue;
                    };
                    if self
                        .hidden_returns
                        .hides_in(stack.pid, stack.base, stack.bytes.len())
                    {
                        self.mended_copy.clear();
                        self.mended_copy.extend_from_slice(stack.bytes);
                        self.hidden_returns
                            .restore(stack.pid, stack.base, &mut self.mended_copy);
                        stack.bytes = &self.mended_copy;
                    }
                    f(Event::WaitStack {
                        role,
                        tid,
                        start_ns,
                        stack,
                    });
                }
                Some(EventKind::Exec) => {
                    let Some(event) = read_record::<ExecEvent>(&item) else {
                        continue;
                    };
                    self.hidden_returns.forget(event.pid);
                    f(Event::Exec { pid: event.pid });
                }
                Some(EventKind::Call) => {
                    let Some(event) = read_record::<CallEvent>(&item) else {
                        continue;
                    };
                    self.hidden_returns.returned(event.pid, event.tid);
                    f(Event::Call(&event));
                }
                Some(EventKind::CallEntry) => {
                    let Some(event) = read_record::<CallEntryEvent>(&item) else {
                        continue;
                    };
                    self.hidden_returns.enter(
                        event.pid,
                        event.tid,
                        event.slot,
                        event.return_address,
                    );
                    continue;
                }
                None => {
                    log::warn!("event of unknown kind {kind:?} ignored");
                    continue;
                }
            }
            n += 1;
        }
        Ok(n)
    }

    /// The frames of an off-CPU stack id, innermost first; `None` for a negative id (the stack
    /// was not stored: collision or no user stack) or one that cannot be read.
    pub fn stack(&mut self, id: i32) -> Option<Arc<[u64]>> {
        if id < 0 {
            return None;
        }
        if let Some(frames) = self.stack_cache.get(&id) {
            return Some(Arc::clone(frames));
        }
        let trace = self.stacks.get(&(id as u32), 0).ok()?;
        let frames: Arc<[u64]> = trace.frames().iter().map(|f| f.ip).collect();
        self.stack_cache.insert(id, Arc::clone(&frames));
        Some(frames)
    }

    /// The kernel-side counters, summed over CPUs.
    ///
    /// # Errors
    /// The counter map cannot be read.
    pub fn counters(&self) -> Result<Counters, Error> {
        let mut out = Counters::default();
        for counter in Counter::ALL {
            let per_cpu = self
                .counters
                .get(&(counter as u32), 0)
                .map_err(Error::map)?;
            out.values[counter as usize] = per_cpu.iter().sum();
        }
        let rates = self.rate.get(&0, 0).map_err(Error::map)?;
        out.values[Counter::OffCpuSwitches as usize] = rates.iter().map(|r| r.switches_total).sum();
        out.values[Counter::OffCpuUnsampled as usize] =
            rates.iter().map(|r| r.unsampled_total).sum();
        Ok(out)
    }
}

/// Number of possible CPUs (the size of per-CPU state).
fn possible_cpus() -> Result<u32, Error> {
    aya::util::nr_cpus()
        .map(|n| n as u32)
        .map_err(|(path, err)| Error::Config(format!("reading {path}: {err}")))
}

/// Copies a ring buffer record into a `T`, if it is long enough.
fn read_record<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        log::warn!("short event of {} bytes ignored", bytes.len());
        return None;
    }
    // SAFETY: the record holds at least size_of::<T>() bytes written by the eBPF program as a T
    // (a Pod: repr(C), integers only, any bit pattern valid); read_unaligned copes with the ring
    // buffer's 8-byte record alignment.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// As [`read_record`], into `out` (for records too large to copy around).
fn read_record_into<T: aya::Pod>(bytes: &[u8], out: &mut T) -> bool {
    if bytes.len() < size_of::<T>() {
        log::warn!("short event of {} bytes ignored", bytes.len());
        return false;
    }
    // SAFETY: as in read_record: the record holds a whole T written by the eBPF program, any
    // bit pattern is a valid T, and the byte copy needs no alignment.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (out as *mut T).cast::<u8>(), size_of::<T>());
    }
    true
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, Error> {
    ebpf.take_map(name)
        .ok_or_else(|| Error::Config(format!("map {name} missing from the eBPF object")))
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Config(format!("program {name} missing from the eBPF object")))?;
    program.try_into().map_err(Error::program("load", name))
}

fn insert_pid(map: &mut HashMap<MapData, u32, u8>, pid: u32) -> Result<(), Error> {
    map.insert(pid, 1, 0).map_err(Error::map)
}

/// Rounds a ring buffer size up to a power of two, at least one page.
fn ring_size(bytes: u32) -> u32 {
    bytes.max(4096).next_power_of_two()
}

fn wait_readable(fd: RawFd, timeout: Duration) -> Result<(), Error> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `pfd` is a valid pollfd array of length 1 for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::Io {
                what: "poll on the ring buffer".into(),
                source: err,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ring sizes become powers of two of at least a page.
    #[test]
    fn ring_sizes() {
        assert_eq!(ring_size(1), 4096);
        assert_eq!(ring_size(5000), 8192);
        assert_eq!(ring_size(4 << 20), 4 << 20);
    }
}
