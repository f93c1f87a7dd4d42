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
/// Name of the per-CPU counter array, indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Name of the hash map of process ids (tgids) to sample when [`Config::filter_pids`] is set.
pub const MAP_PID_FILTER: &str = "PID_FILTER";
/// Name of the read-only global holding the [`Config`].
pub const GLOBAL_CONFIG: &str = "CONFIG";

/// Default ring buffer size in bytes (a power of two multiple of the page size).
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;
/// Capacity of [`MAP_PID_FILTER`]: processes followed by `-p`/`-- CMD`, children included.
pub const PID_FILTER_CAPACITY: u32 = 8192;

/// Program names in the object file, as user space looks them up.
pub mod programs {
    /// `perf_event` program sampling on-CPU stacks.
    pub const ON_CPU: &str = "on_cpu";
    /// `sched:sched_process_fork` tracepoint that extends the pid filter to children.
    pub const FOLLOW_FORK: &str = "follow_fork";
}

/// What a [`SampleEvent`] records.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A timer sample of a running task.
    OnCpu = 1,
}

impl EventKind {
    /// Converts the raw `kind` field of an event.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::OnCpu),
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
    /// Ticks of processes outside the pid filter; not emitted.
    Filtered = 3,
    /// `bpf_get_stack` failures for the user stack (the sample is kept with an empty user stack).
    UserStackErrors = 4,
    /// `bpf_get_stack` failures for the kernel stack.
    KernelStackErrors = 5,
    /// Children that could not be added to a full pid filter.
    PidFilterFull = 6,
}

impl Counter {
    /// Number of counters (the size of [`MAP_COUNTERS`]).
    pub const COUNT: u32 = 7;
    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Self::OnCpuSamples,
        Self::RingFull,
        Self::IdleTicks,
        Self::Filtered,
        Self::UserStackErrors,
        Self::KernelStackErrors,
        Self::PidFilterFull,
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
        }
    }
}

/// Settings the programs read; set by the loader before load (a read-only global).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// 1: only tgids present in [`MAP_PID_FILTER`] are sampled; 0: every process.
    pub filter_pids: u32,
    /// Offset of `parent_pid` in the `sched_process_fork` tracepoint record (read from tracefs).
    pub fork_parent_pid_offset: u32,
    /// Offset of `child_pid` in the `sched_process_fork` tracepoint record.
    pub fork_child_pid_offset: u32,
    /// Padding; keep zero.
    pub _pad: u32,
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

    /// The thread name up to its first NUL.
    pub fn comm_bytes(&self) -> &[u8] {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        &self.comm[..end]
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), Copy, only integer fields, no padding (checked by the size assertions below).
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SampleEvent {}
}

const _: () = assert!(core::mem::size_of::<Config>() == 16);
const _: () = assert!(core::mem::size_of::<SampleEvent>() == 48 + 2 * 8 * MAX_STACK_DEPTH);
