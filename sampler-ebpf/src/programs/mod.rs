//! The eBPF programs and the maps they share.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_RING_SIZE},
    helpers::bpf_get_current_pid_tgid,
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use critpath_common::{
    Config, Counter, DEFAULT_RING_BYTES, EventKind, ExecEvent, PID_FILTER_CAPACITY,
};

mod off_cpu;
mod on_cpu;
mod probe;
mod user_stack;

/// Settings from user space, fixed at load time (see `EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    filter_pids: 0,
    fork_parent_pid_offset: 0,
    fork_child_pid_offset: 0,
    off_cpu: 0,
    off_cpu_min_ns: 0,
    off_cpu_budget: 0,
    user_stack_pages: 0,
    exclude_tgid: 0,
    _pad: 0,
};

/// Events to user space. A ring buffer rather than per-CPU perf buffers: one ordered stream for
/// all CPUs, no per-CPU memory to size, and reserve/submit writes stacks in place without a copy.
/// User space resizes it at load time (`--ring-bytes`).
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "PID_FILTER")]
static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(PID_FILTER_CAPACITY, 0);

#[inline(always)]
fn config() -> Config {
    // SAFETY: CONFIG is a plain global the loader may rewrite before load; a volatile read keeps
    // the compiler from folding the zero initialiser into the code.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

/// CLOCK_MONOTONIC in ns, the clock of every event.
#[inline(always)]
fn ktime() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
}

#[inline(always)]
fn count(counter: Counter) {
    add(counter, 1);
}

#[inline(always)]
fn add(counter: Counter, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from the per-CPU array and is valid for this CPU; preemption
        // is disabled while a BPF program runs, so nothing else writes this slot now.
        unsafe { *slot += n };
    }
}

/// Flags for submitting an event (on-CPU samples, finished waits): by default the kernel wakes
/// the reader only when it has read everything before the event; copies of waits' user stacks
/// are submitted without a wakeup (off_cpu.rs), so that after one, nothing would wake the reader
/// until its poll times out. Once the ring is a quarter full, the wakeup is forced. These events
/// come at times unrelated to which waits are captured, so the reader running then does not
/// lengthen the captured waits more than others.
#[inline(always)]
fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > EVENTS.query(BPF_RB_RING_SIZE as u64) / 4 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        0
    }
}

#[inline(always)]
fn wanted(tgid: u32) -> bool {
    let cfg = config();
    if tgid == cfg.exclude_tgid {
        return false;
    }
    if cfg.filter_pids == 0 {
        return true;
    }
    // SAFETY: the value is only tested for presence, never held across calls.
    unsafe { PID_FILTER.get(&tgid) }.is_some()
}

/// `sched:sched_process_fork`: when following chosen processes (`-p`, `-- CMD`), their children
/// are followed too. Runs in the parent's context.
#[tracepoint]
pub fn follow_fork(ctx: TracePointContext) -> u32 {
    let cfg = config();
    if cfg.filter_pids == 0 {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: presence test only.
    if unsafe { PID_FILTER.get(&parent) }.is_none() {
        return 0;
    }
    // SAFETY: the offset was read from this kernel's tracepoint format file by the loader.
    let Ok(child) = (unsafe { ctx.read_at::<i32>(cfg.fork_child_pid_offset as usize) }) else {
        return 0;
    };
    if PID_FILTER.insert(&(child as u32), &1, 0).is_err() {
        count(Counter::PidFilterFull);
    }
    0
}

/// `sched:sched_process_exec`: a followed process has a new image; user space re-reads its
/// mappings at once, while samples of the new image are still on their way.
#[tracepoint]
pub fn on_exec(_ctx: TracePointContext) -> u32 {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !wanted(pid) {
        return 0;
    }
    let event = ExecEvent {
        kind: EventKind::Exec as u32,
        pid,
    };
    if EVENTS.output::<ExecEvent>(&event, 0).is_err() {
        count(Counter::RingFull);
    }
    0
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
