//! Types shared by the eBPF programs (`critpath-ebpf`) and the user-space sampler.
//!
//! Every value that crosses a map or the ring buffer is defined here once: `#[repr(C)]`, `Copy`,
//! with explicit padding, so the kernel side and user space can never disagree on a layout.
//!
//! ```
//! use critpath_common::{EventKind, SampleEvent};
//! assert_eq!(core::mem::size_of::<SampleEvent>() % 8, 0);
//! assert_eq!(EventKind::from_u32(EventKind::OnCpu as u32), Some(EventKind::OnCpu));
//! ```
#![no_std]

/// Deepest stack captured, user and kernel each (the kernel's `perf_event_max_stack` default).
pub const MAX_STACK_DEPTH: usize = 127;

/// Length of a task's `comm` (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// Name of the ring buffer map that carries [`SampleEvent`]s to user space.
pub const MAP_EVENTS: &str = "EVENTS";
/// Name of the scratch array where an off-CPU wait's user stack is copied, one
/// [`WaitStackEvent`] per CPU (sized by the loader to the possible CPUs).
pub const MAP_WAIT_STACK_SCRATCH: &str = "WAIT_STACK_SCRATCH";
/// Name of the per-CPU counter array, indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the hash map of process ids (tgids) to sample when [`Config::filter_pids`] is set.
pub const MAP_PID_FILTER: &str = "PID_FILTER";
/// Name of the read-only global holding the [`Config`].
pub const GLOBAL_CONFIG: &str = "CONFIG";

/// Name of the stack-trace map holding the stacks of off-CPU waits and their wakers.
pub const MAP_OFFCPU_STACKS: &str = "OFFCPU_STACKS";
/// Buckets of [`MAP_OFFCPU_STACKS`]: distinct blocked/waker stacks kept (about 1 KiB each, so
/// 16 MiB of kernel memory). A new stack that hashes to an occupied bucket is not stored; the
/// wait is still emitted, its stack id set to the error, and [`Counter::StackCollisions`] counts it.
pub const OFFCPU_STACKS_CAPACITY: u32 = 16384;
/// Slots of the per-thread wait table, a direct-mapped array indexed by `tid % capacity`
/// (5.8 MiB). Array lookups are inlined by the verifier, unlike hash lookups, and every context
/// switch and wakeup does one. With `kernel.pid_max` at or below it (32768 by default) no two
/// threads share a slot; above it, two threads whose ids collide and that wait at the same time
/// share one: the newer wait wins and [`Counter::OffCpuStateFull`] counts the lost one.
pub const OFFCPU_THREADS_CAPACITY: u32 = 65536;
/// Length of one window of the off-CPU capture budget.
pub const OFFCPU_WINDOW_NS: u64 = 10_000_000;
/// `sample_prob` of a wait captured with certainty.
pub const PROB_ONE: u32 = u32::MAX;

/// `prev_state` bits of `sched_switch`: a preempted task reports `TASK_REPORT_MAX` (0x100), a
/// task that yielded reports 0 (`R`); anything in the low byte is a blocking state (`S`, `D`, ...).
pub const STATE_PREEMPTED: u64 = 0x100;
/// Mask of the blocking states in `prev_state`.
pub const STATE_BLOCKED_MASK: u64 = 0xff;
/// `TASK_INTERRUPTIBLE` as `sched_switch` reports it (`S`).
pub const STATE_INTERRUPTIBLE: u32 = 0x1;
/// `TASK_UNINTERRUPTIBLE` as `sched_switch` reports it (`D`).
pub const STATE_UNINTERRUPTIBLE: u32 = 0x2;

/// Default ring buffer size in bytes (a power of two multiple of the page size): room for about
/// 200 samples with their copied user stacks ([`StackSampleEvent`]).
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

/// Page size of the user stack copies ([`StackSampleEvent`]): they are read a page at a time, so
/// that a read never crosses the end of the stack's mapping.
pub const PAGE_SIZE: usize = 4096;
/// Most pages of user stack copied per sample: the page holding the stack pointer and up to
/// 32 KiB above it.
pub const USER_STACK_MAX_PAGES: usize = 9;
/// Bytes of [`StackSampleEvent::user_stack`].
pub const USER_STACK_MAX_BYTES: usize = USER_STACK_MAX_PAGES * PAGE_SIZE;
/// Capacity of [`MAP_PID_FILTER`]: processes followed by `-p`/`-- CMD`, children included.
pub const PID_FILTER_CAPACITY: u32 = 8192;

/// Program names in the object file, as user space looks them up.
pub mod programs {
    /// `perf_event` program sampling on-CPU stacks.
    pub const ON_CPU: &str = "on_cpu";
    /// `sched:sched_process_fork` tracepoint that extends the pid filter to children.
    pub const FOLLOW_FORK: &str = "follow_fork";
    /// `sched:sched_switch` tracepoint: off-CPU waits start and end here.
    pub const SCHED_SWITCH: &str = "sched_switch";
    /// `sched:sched_waking` tracepoint: who woke a sampled wait.
    pub const SCHED_WAKING: &str = "sched_waking";
    /// `sched:sched_process_exec` tracepoint: tells user space to re-read a process's mappings.
    pub const ON_EXEC: &str = "on_exec";
    /// uprobe at the entry of a probed function (latency probes).
    pub const PROBE_ENTRY: &str = "probe_entry";
    /// uretprobe at its return.
    pub const PROBE_RETURN: &str = "probe_return";
}

/// Name of the hash map of probed calls in progress: (tid, probe) → entry time.
pub const MAP_CALL_STARTS: &str = "CALL_STARTS";
/// Calls in progress tracked at once (threads inside a probed function).
pub const CALL_STARTS_CAPACITY: u32 = 65536;

/// What a [`SampleEvent`] records.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A timer sample of a running task ([`SampleEvent`]).
    OnCpu = 1,
    /// A finished off-CPU wait with its waker ([`OffCpuEvent`]).
    OffCpu = 2,
    /// A followed process called exec ([`ExecEvent`]): its mappings changed.
    Exec = 3,
    /// A call of a probed function returned ([`CallEvent`]).
    Call = 4,
    /// A timer sample of a running task with its user registers and a copy of its user stack,
    /// for unwinding in user space ([`StackSampleEvent`]).
    OnCpuStack = 5,
    /// The user registers and a copy of the user stack of a thread that blocked, or of the
    /// thread that woke it, for unwinding in user space ([`WaitStackEvent`]). It precedes the
    /// [`OffCpuEvent`] of its wait in the ring buffer.
    WaitStack = 6,
    /// A probed function was entered ([`CallEntryEvent`]): where its return address lies on
    /// the stack, and what it was before the kernel's return probe replaced it.
    CallEntry = 7,
}

impl EventKind {
    /// Converts the raw `kind` field of an event.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::OnCpu),
            2 => Some(Self::OffCpu),
            3 => Some(Self::Exec),
            4 => Some(Self::Call),
            5 => Some(Self::OnCpuStack),
            6 => Some(Self::WaitStack),
            7 => Some(Self::CallEntry),
            _ => None,
        }
    }
}

/// Indices of the per-CPU counters in [`MAP_COUNTERS`]. Nothing the programs drop goes uncounted.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// On-CPU samples written to the ring buffer.
    OnCpuSamples = 0,
    /// Events lost because the ring buffer was full.
    RingFull = 1,
    /// Timer ticks that found the CPU idle (pid 0); not emitted.
    IdleTicks = 2,
    /// Ticks of processes outside the pid filter, or of the sampler itself; not emitted.
    Filtered = 3,
    /// `bpf_get_stack` failures for the user stack (the sample is kept with an empty user stack).
    UserStackErrors = 4,
    /// `bpf_get_stack` failures for the kernel stack.
    KernelStackErrors = 5,
    /// Children that could not be added to a full pid filter.
    PidFilterFull = 6,
    /// Switch-outs of followed threads (blocking or preempted) seen by `sched_switch` (counted in
    /// [`OffCpuRate::switches_total`]).
    OffCpuSwitches = 7,
    /// Switch-outs skipped by the capture budget (sampled out; their time is represented by the
    /// weight of the sampled ones); counted in [`OffCpuRate::unsampled_total`].
    OffCpuUnsampled = 8,
    /// Waits whose stacks were captured at switch-out.
    OffCpuSampled = 9,
    /// Sampled waits shorter than the minimum duration drawn out (not emitted): their time is
    /// represented by the short waits emitted, each weighted by 1 / its emission probability.
    OffCpuBelowMin = 10,
    /// Estimated nanoseconds of those waits drawn out (each weighted by 1 / its capture
    /// probability): already represented in the emitted waits' weights, never to be added.
    OffCpuBelowMinNs = 11,
    /// Off-CPU events written to the ring buffer.
    OffCpuEmitted = 12,
    /// Sampled waits lost because another thread's wait took their slot of the wait table.
    OffCpuStateFull = 13,
    /// Stacks not stored because their bucket in the stack map held another stack.
    StackCollisions = 14,
    /// Wakeups of sampled waits recorded.
    Wakeups = 15,
    /// Calls of probed functions reported.
    Calls = 16,
    /// Calls not timed because the table of calls in progress was full.
    CallsLost = 17,
    /// User stacks of off-CPU waits and their wakers copied to the ring buffer
    /// ([`WaitStackEvent`]).
    WaitCopies = 18,
    /// Bytes of those copies (registers and stack).
    WaitCopyBytes = 19,
    /// Captured waits whose user stack was not copied because the window's copies had reached
    /// the capture budget (a burst of switch-outs while the capture probability was still 1):
    /// the wait is kept, its user stack shows `[truncated]`.
    WaitCopiesOverBudget = 20,
    /// Waits shorter than the minimum duration emitted anyway (drawn with probability
    /// proportional to their blocked time; see [`Config::off_cpu_min_ns`]).
    OffCpuShortEmitted = 21,
}

impl Counter {
    /// Number of counters (the size of [`MAP_COUNTERS`]).
    pub const COUNT: u32 = 22;
    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Self::OnCpuSamples,
        Self::RingFull,
        Self::IdleTicks,
        Self::Filtered,
        Self::UserStackErrors,
        Self::KernelStackErrors,
        Self::PidFilterFull,
        Self::OffCpuSwitches,
        Self::OffCpuUnsampled,
        Self::OffCpuSampled,
        Self::OffCpuBelowMin,
        Self::OffCpuBelowMinNs,
        Self::OffCpuEmitted,
        Self::OffCpuStateFull,
        Self::StackCollisions,
        Self::Wakeups,
        Self::Calls,
        Self::CallsLost,
        Self::WaitCopies,
        Self::WaitCopyBytes,
        Self::WaitCopiesOverBudget,
        Self::OffCpuShortEmitted,
    ];

    /// A stable snake_case name, used in metrics and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Self::OnCpuSamples => "on_cpu_samples",
            Self::RingFull => "ring_full",
            Self::IdleTicks => "idle_ticks",
            Self::Filtered => "filtered",
            Self::UserStackErrors => "user_stack_errors",
            Self::KernelStackErrors => "kernel_stack_errors",
            Self::PidFilterFull => "pid_filter_full",
            Self::OffCpuSwitches => "off_cpu_switches",
            Self::OffCpuUnsampled => "off_cpu_unsampled",
            Self::OffCpuSampled => "off_cpu_sampled",
            Self::OffCpuBelowMin => "off_cpu_below_min",
            Self::OffCpuBelowMinNs => "off_cpu_below_min_ns",
            Self::OffCpuEmitted => "off_cpu_emitted",
            Self::OffCpuStateFull => "off_cpu_state_full",
            Self::StackCollisions => "stack_collisions",
            Self::Wakeups => "wakeups",
            Self::Calls => "calls",
            Self::CallsLost => "calls_lost",
            Self::WaitCopies => "wait_copies",
            Self::WaitCopyBytes => "wait_copy_bytes",
            Self::WaitCopiesOverBudget => "wait_copies_over_budget",
            Self::OffCpuShortEmitted => "off_cpu_short_emitted",
        }
    }
}

/// Settings the programs read; set by the loader before load (a read-only global).
///
/// Tracepoint field offsets are read from this kernel's tracefs format files at load time, so
/// the programs do not depend on one kernel's record layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// 1: only tgids present in [`MAP_PID_FILTER`] are sampled; 0: every process.
    pub filter_pids: u32,
    /// Offset of `parent_pid` in the `sched_process_fork` tracepoint record (read from tracefs).
    pub fork_parent_pid_offset: u32,
    /// Offset of `child_pid` in the `sched_process_fork` tracepoint record.
    pub fork_child_pid_offset: u32,
    /// 1: trace off-CPU waits and wakeups.
    pub off_cpu: u32,
    /// Waits blocked at least this long (switch-out to wakeup, or to switch-in without a
    /// wakeup), in ns, are all emitted; a shorter one, blocked for `d`, is emitted with
    /// probability `d / off_cpu_min_ns` and weighted by its inverse (probability proportional
    /// to duration): sub-millisecond waits keep their stacks in unbiased per-stack totals while
    /// the events emitted stay bounded by about one per `off_cpu_min_ns` of waiting.
    pub off_cpu_min_ns: u64,
    /// Waits whose stacks may be captured per CPU per [`OFFCPU_WINDOW_NS`]; beyond it, each
    /// switch-out is captured with probability budget / switch-outs of the previous window.
    pub off_cpu_budget: u32,
    /// Pages of user stack copied per on-CPU sample for unwinding in user space
    /// ([`StackSampleEvent`], at most [`USER_STACK_MAX_PAGES`]); 0: user stacks are walked by
    /// frame pointers in the kernel instead ([`SampleEvent`]).
    pub user_stack_pages: u32,
    /// A process never sampled (on-CPU or off-CPU): the sampler's own, so that its work and
    /// waits, and the symbolization of its own large binary, stay out of what it reports.
    pub exclude_tgid: u32,
    /// Padding; keep zero.
    pub _pad: u32,
}

/// Record offsets of the scheduler tracepoints, read by the off-CPU programs as constants.
///
/// They run on every context switch, so they read the record directly (the verifier only allows
/// constant offsets into a tracepoint context) instead of through `bpf_probe_read_kernel`. These
/// layouts have been stable for many kernel releases; the loader checks them against this
/// kernel's tracefs format files and refuses off-CPU tracing with a clear error if they differ.
pub mod tracepoint_offsets {
    /// `sched_switch.prev_pid` (`pid_t`).
    pub const SWITCH_PREV_PID: usize = 24;
    /// `sched_switch.prev_state` (`long`).
    pub const SWITCH_PREV_STATE: usize = 32;
    /// `sched_switch.next_pid` (`pid_t`).
    pub const SWITCH_NEXT_PID: usize = 56;
    /// `sched_waking.pid` (`pid_t`, the wakee's thread id).
    pub const WAKING_PID: usize = 24;
}

/// Per-CPU state of the off-CPU capture budget, with the per-switch counters (kept here rather
/// than in [`MAP_COUNTERS`] so a context switch costs one map lookup, not three).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OffCpuRate {
    /// Start of the current window (ktime ns); 0 before the first switch.
    pub window_start_ns: u64,
    /// Switch-outs seen in the current window.
    pub switches: u32,
    /// Switch-outs seen in the previous window.
    pub previous: u32,
    /// All switch-outs of followed threads ([`Counter::OffCpuSwitches`]).
    pub switches_total: u64,
    /// Switch-outs sampled out by the budget ([`Counter::OffCpuUnsampled`]).
    pub unsampled_total: u64,
    /// User stacks copied in the current window (at most the budget: see
    /// [`Counter::WaitCopiesOverBudget`]).
    pub copies: u32,
    /// Padding; zero.
    pub _pad: u32,
}

/// Name of the per-CPU [`OffCpuRate`] array (one entry).
pub const MAP_OFFCPU_RATE: &str = "OFFCPU_RATE";

/// Per-thread state of a sampled wait, from switch-out to switch-in.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OffCpuState {
    /// Switch-out time, ktime ns, taken after the blocked stacks were captured (so the capture
    /// is not counted as waiting); 0 marks a free slot.
    pub start_ns: u64,
    /// Time of the first `sched_waking` for this wait, 0 if none (preempted, or not seen).
    pub wakeup_ns: u64,
    /// Process id.
    pub pid: u32,
    /// `prev_state` at switch-out (see [`STATE_PREEMPTED`]).
    pub state: u32,
    /// Probability the wait was captured with ([`PROB_ONE`] = certainly).
    pub prob: u32,
    /// Blocked user stack id in [`MAP_OFFCPU_STACKS`] (negative errno when not stored).
    pub user_stack_id: i32,
    /// Blocked kernel stack id.
    pub kernel_stack_id: i32,
    /// Waker process id.
    pub waker_pid: u32,
    /// Waker thread id.
    pub waker_tid: u32,
    /// Waker user stack id (negative when absent).
    pub waker_user_stack_id: i32,
    /// Waker kernel stack id (negative when absent).
    pub waker_kernel_stack_id: i32,
    /// Thread id owning the slot (the table is indexed by `tid % capacity`). There is no
    /// interrupt flag: a trace record's `common_flags` would tell, but BPF programs see the
    /// record's first 8 bytes overwritten with a pt_regs pointer, so user space recognizes
    /// interrupts by the waker's kernel stack instead.
    pub tid: u32,
    /// Thread name.
    pub comm: [u8; COMM_LEN],
    /// Waker thread name.
    pub waker_comm: [u8; COMM_LEN],
    /// Time spent capturing the waker's stacks, ns: it delays the wakee, and is taken off its
    /// run-queue delay so that critpath does not report its own cost as the workload's.
    pub waker_capture_ns: u32,
    /// Which user stacks were copied into [`WaitStackEvent`]s ([`wait_copies`] bits).
    pub copies: u32,
    /// Probability, as a fraction of [`PROB_ONE`], that the wait is emitted once it ends, drawn
    /// at its wakeup (or at switch-in when no wakeup was seen): 0 before the draw and for a
    /// wait drawn out. See [`Config::off_cpu_min_ns`].
    pub emit_prob: u32,
    /// The draw has been made (at the wakeup): 1; 0 otherwise.
    pub emit_drawn: u32,
    /// Time spent after `start_ns` handing the blocked user stack's copy to the ring buffer,
    /// ns: the copy is keyed by `start_ns`, and this is taken off the wait (see
    /// [`OffCpuEvent::start_capture_ns`]).
    pub start_capture_ns: u32,
    /// Padding; zero.
    pub _pad: u32,
}

/// Bits of [`OffCpuEvent::copies`]: which user stacks of a wait were copied for unwinding in
/// user space (with [`Config::user_stack_pages`] > 0; frame-pointer stack ids otherwise).
pub mod wait_copies {
    /// The blocked thread's user stack was submitted ([`super::WaitStackEvent`], role
    /// [`ROLE_WAITER`]).
    pub const WAITER: u32 = 1;
    /// The blocked thread has no user context (a kernel thread): nothing to copy.
    pub const WAITER_NO_USER: u32 = 2;
    /// The waker's user stack was submitted (role [`ROLE_WAKER`]).
    pub const WAKER: u32 = 4;
    /// The waker had no user context (a kernel thread, or an interrupt of one).
    pub const WAKER_NO_USER: u32 = 8;
    /// [`super::WaitStackEvent::role`] of the blocked thread's stack.
    pub const ROLE_WAITER: u32 = 0;
    /// [`super::WaitStackEvent::role`] of the waker's stack.
    pub const ROLE_WAKER: u32 = 1;
}

/// A finished off-CPU wait, emitted at switch-in when it lasted at least the minimum.
///
/// Kernel stacks travel as ids into [`MAP_OFFCPU_STACKS`]: they are captured at switch-out and
/// must live in the per-thread state until switch-in, where 8 bytes of ids beat 2 KiB of frames.
/// User stacks are ids too when walked by frame pointers; when copied for unwinding in user
/// space they travel ahead of this event as [`WaitStackEvent`]s (see [`Self::copies`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OffCpuEvent {
    /// [`EventKind::OffCpu`].
    pub kind: u32,
    /// CPU of the switch-in.
    pub cpu: u32,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Switch-out (block start), ktime ns.
    pub start_ns: u64,
    /// Switch-in, ktime ns.
    pub end_ns: u64,
    /// Wakeup, ktime ns; 0 when not seen.
    pub wakeup_ns: u64,
    /// `prev_state` at switch-out.
    pub state: u32,
    /// Capture probability as a fraction of [`PROB_ONE`]; the wait stands for 1/p of its kind.
    pub sample_prob: u32,
    /// Thread name.
    pub comm: [u8; COMM_LEN],
    /// Blocked user stack id (negative errno when absent).
    pub user_stack_id: i32,
    /// Blocked kernel stack id.
    pub kernel_stack_id: i32,
    /// Waker process id (0 when no wakeup was seen).
    pub waker_pid: u32,
    /// Waker thread id.
    pub waker_tid: u32,
    /// Waker thread name.
    pub waker_comm: [u8; COMM_LEN],
    /// Waker user stack id (negative when absent).
    pub waker_user_stack_id: i32,
    /// Waker kernel stack id (negative when absent).
    pub waker_kernel_stack_id: i32,
    /// Time spent capturing the waker's stacks, ns (see [`OffCpuState::waker_capture_ns`]).
    pub waker_capture_ns: u32,
    /// Which user stacks were copied ahead of this event ([`wait_copies`] bits).
    pub copies: u32,
    /// Probability it was emitted with, as a fraction of [`PROB_ONE`]: below the minimum
    /// duration a wait is emitted with probability (blocked time / minimum); the wait then
    /// stands for 1 / (`sample_prob` × `emit_prob`) waits of its kind.
    pub emit_prob: u32,
    /// Time the switch-out spent after `start_ns` submitting the blocked user stack's copy
    /// (keyed by `start_ns`), ns: the wait begins after it. Only captured waits pay it, so
    /// counting it would lengthen exactly the waits that stand for many others (with copies
    /// of 32 KiB, a ping-pong's weighted off-CPU time came to 3.3× its wall time).
    pub start_capture_ns: u32,
}

/// A followed process replaced its image (`exec`): user space must re-read its mappings before
/// symbolizing anything it sampled afterwards.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    /// [`EventKind::Exec`].
    pub kind: u32,
    /// Process id.
    pub pid: u32,
}

/// A call of a probed function, from entry to return (a latency probe).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CallEvent {
    /// [`EventKind::Call`].
    pub kind: u32,
    /// Which probe: its attach cookie, the index of the probe in the sampler's configuration.
    pub probe: u32,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Entry, CLOCK_MONOTONIC ns.
    pub start_ns: u64,
    /// Return, CLOCK_MONOTONIC ns.
    pub end_ns: u64,
}

/// A probed function was entered. The kernel's return probe replaces the return address at
/// `slot` with its trampoline until the call returns, so a stack copied meanwhile cannot be
/// unwound past the call; user space puts `return_address` back into such copies.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CallEntryEvent {
    /// [`EventKind::CallEntry`].
    pub kind: u32,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// User address of the return address: the stack pointer at the function's entry.
    pub slot: u64,
    /// The return address there at entry, before the return probe replaced it.
    pub return_address: u64,
}

/// Reads a NUL-padded comm up to its first NUL.
pub fn comm_str(comm: &[u8; COMM_LEN]) -> &[u8] {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    &comm[..end]
}

/// What every on-CPU sample starts with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SampleHeader {
    /// An [`EventKind`].
    pub kind: u32,
    /// CPU the sample was taken on.
    pub cpu: u32,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub time_ns: u64,
    /// Thread name, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

impl SampleHeader {
    /// The thread name up to its first NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        comm_str(&self.comm)
    }
}

/// One sample with its stacks, as written to the ring buffer.
///
/// Stacks travel inline (about 2 KiB an event) rather than as ids into a stack-trace map: a
/// stack-trace map loses stacks silently on hash collisions unless ids are reused, and ids
/// outlive the stacks they name when user space clears it. At 19 Hz per CPU the bytes are
/// negligible, and each event is self-contained.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SampleEvent {
    /// Kind ([`EventKind::OnCpu`]), CPU, process, thread, time, thread name.
    pub header: SampleHeader,
    /// Bytes of `user_stack` filled by `bpf_get_stack`, or a negative errno.
    pub user_stack_bytes: i32,
    /// Bytes of `kernel_stack` filled, or a negative errno.
    pub kernel_stack_bytes: i32,
    /// User return addresses, innermost first.
    pub user_stack: [u64; MAX_STACK_DEPTH],
    /// Kernel return addresses, innermost first.
    pub kernel_stack: [u64; MAX_STACK_DEPTH],
}

impl SampleEvent {
    /// Number of valid frames in a stack given its `*_stack_bytes` field.
    pub fn frames(bytes: i32) -> usize {
        if bytes <= 0 {
            0
        } else {
            (bytes as usize / 8).min(MAX_STACK_DEPTH)
        }
    }

    /// The valid user frames, innermost first.
    pub fn user_frames(&self) -> &[u64] {
        &self.user_stack[..Self::frames(self.user_stack_bytes)]
    }

    /// The valid kernel frames, innermost first.
    pub fn kernel_frames(&self) -> &[u64] {
        &self.kernel_stack[..Self::frames(self.kernel_stack_bytes)]
    }
}

/// The user registers an unwinder starts from (x86-64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    /// Instruction pointer.
    pub ip: u64,
    /// Stack pointer.
    pub sp: u64,
    /// Frame pointer register (`rbp`; any value in code built without frame pointers).
    pub bp: u64,
}

/// One on-CPU sample with the user registers and a copy of the user stack, for binaries built
/// without frame pointers: user space unwinds it with the modules' call-frame information
/// (`.eh_frame`), which the kernel cannot do. The kernel stack is walked in the kernel as in
/// [`SampleEvent`].
///
/// The copy starts at the page holding the stack pointer and goes up a page at a time until
/// [`Config::user_stack_pages`] pages or the end of the stack's mapping: `user_stack[i]` is the
/// byte at `user_stack_base + i`, valid for `i < user_stack_pages * PAGE_SIZE`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackSampleEvent {
    /// Kind ([`EventKind::OnCpuStack`]), CPU, process, thread, time, thread name.
    pub header: SampleHeader,
    /// Bytes of `kernel_stack` filled, or a negative errno.
    pub kernel_stack_bytes: i32,
    /// Pages of `user_stack` copied; 0 when the task has no user context (a kernel thread) or
    /// its stack could not be read.
    pub user_stack_pages: u32,
    /// The user registers at the sample (the interrupted ones, or those saved at kernel entry).
    pub regs: UserRegs,
    /// User address of `user_stack[0]`: the stack pointer rounded down to its page.
    pub user_stack_base: u64,
    /// Kernel return addresses, innermost first.
    pub kernel_stack: [u64; MAX_STACK_DEPTH],
    /// The copied user stack.
    pub user_stack: [u8; USER_STACK_MAX_BYTES],
}

impl StackSampleEvent {
    /// The valid kernel frames, innermost first.
    pub fn kernel_frames(&self) -> &[u64] {
        &self.kernel_stack[..SampleEvent::frames(self.kernel_stack_bytes)]
    }

    /// The copied user stack, starting at [`Self::user_stack_base`].
    pub fn user_stack(&self) -> &[u8] {
        &self.user_stack[..self.user_stack_len()]
    }

    /// The copied user stack, to mend in place (see the sampler's hidden return addresses).
    pub fn user_stack_mut(&mut self) -> &mut [u8] {
        let len = self.user_stack_len();
        &mut self.user_stack[..len]
    }

    fn user_stack_len(&self) -> usize {
        (self.user_stack_pages as usize).min(USER_STACK_MAX_PAGES) * PAGE_SIZE
    }
}

/// The user registers and a copy of the user stack of a thread that blocked (at its switch-out)
/// or of the thread that woke it (at `sched_waking`), for unwinding in user space as
/// [`StackSampleEvent`]'s copy is. Submitted before the wait is known to be long enough to
/// emit: user space keeps it until the [`OffCpuEvent`] of the same `tid` and `start_ns`
/// arrives, and drops it when the thread's next wait replaces it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WaitStackEvent {
    /// [`EventKind::WaitStack`].
    pub kind: u32,
    /// Whose stack: [`wait_copies::ROLE_WAITER`] or [`wait_copies::ROLE_WAKER`].
    pub role: u32,
    /// The blocked thread (the wait's key, with `start_ns`).
    pub tid: u32,
    /// Process of the copied stack: the blocked thread's, or the waker's.
    pub pid: u32,
    /// Switch-out time of the wait ([`OffCpuEvent::start_ns`]).
    pub start_ns: u64,
    /// Pages of `user_stack` copied.
    pub user_stack_pages: u32,
    /// Padding; zero.
    pub _pad: u32,
    /// The user registers saved when the thread entered the kernel.
    pub regs: UserRegs,
    /// User address of `user_stack[0]`: the stack pointer rounded down to its page.
    pub user_stack_base: u64,
    /// The copied user stack.
    pub user_stack: [u8; USER_STACK_MAX_BYTES],
}

/// Bytes of a [`WaitStackEvent`] before its `user_stack`.
pub const WAIT_STACK_HEADER_BYTES: usize = 64;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), Copy, only integer fields, no padding (checked by the size assertions below).
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SampleEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SampleHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for StackSampleEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for OffCpuEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for WaitStackEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ExecEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CallEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CallEntryEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for OffCpuState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for OffCpuRate {}
}

const _: () = assert!(core::mem::size_of::<Config>() == 40);
const _: () = assert!(core::mem::size_of::<CallEvent>() == 32);
const _: () = assert!(core::mem::size_of::<CallEntryEvent>() == 32);
const _: () = assert!(core::mem::size_of::<OffCpuEvent>() == 120);
const _: () = assert!(core::mem::size_of::<OffCpuState>() == 112);
const _: () = assert!(core::mem::size_of::<OffCpuRate>() == 40);
const _: () = assert!(core::mem::size_of::<SampleHeader>() == 40);
const _: () = assert!(
    core::mem::size_of::<WaitStackEvent>() == WAIT_STACK_HEADER_BYTES + USER_STACK_MAX_BYTES
);
const _: () = assert!(core::mem::size_of::<SampleEvent>() == 48 + 2 * 8 * MAX_STACK_DEPTH);
const _: () = assert!(
    core::mem::size_of::<StackSampleEvent>()
        == 48 + 24 + 8 + 8 * MAX_STACK_DEPTH + USER_STACK_MAX_BYTES
);
