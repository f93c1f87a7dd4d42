use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_get_stack,
        bpf_ktime_get_ns,
    },
    macros::{map, perf_event, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{PerfEventContext, TracePointContext},
};
use critpath_common::{
    Config, Counter, DEFAULT_RING_BYTES, EventKind, MAX_STACK_DEPTH, PID_FILTER_CAPACITY,
    SampleEvent,
};

/// Settings from user space, fixed at load time (see `EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    filter_pids: 0,
    fork_parent_pid_offset: 0,
    fork_child_pid_offset: 0,
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

const STACK_BYTES: u32 = (MAX_STACK_DEPTH * 8) as u32;

#[inline(always)]
fn config() -> Config {
    // SAFETY: CONFIG is a plain global the loader may rewrite before load; a volatile read keeps
    // the compiler from folding the zero initialiser into the code.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from the per-CPU array and is valid for this CPU; preemption
        // is disabled while a BPF program runs, so nothing else writes this slot now.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn wanted(tgid: u32) -> bool {
    if config().filter_pids == 0 {
        return true;
    }
    // SAFETY: the value is only tested for presence, never held across calls.
    unsafe { PID_FILTER.get(&tgid) }.is_some()
}

/// On-CPU sampling: runs on every tick of the software CPU clock on each CPU.
#[perf_event]
pub fn on_cpu(ctx: PerfEventContext) -> u32 {
    try_on_cpu(&ctx);
    0
}

#[inline(always)]
fn try_on_cpu(ctx: &PerfEventContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tid == 0 {
        count(Counter::IdleTicks);
        return;
    }
    if !wanted(tgid) {
        count(Counter::Filtered);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<SampleEvent>(0) else {
        count(Counter::RingFull);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, writable ring buffer record of size_of::<SampleEvent>();
    // every field is written through raw pointers before submit, and bpf_get_stack writes at most
    // STACK_BYTES into each stack array.
    unsafe {
        (*ev).kind = EventKind::OnCpu as u32;
        (*ev).cpu = bpf_get_smp_processor_id();
        (*ev).pid = tgid;
        (*ev).tid = tid;
        (*ev).time_ns = bpf_ktime_get_ns();
        (*ev).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        let user = bpf_get_stack(
            ctx.as_ptr(),
            (*ev).user_stack.as_mut_ptr().cast(),
            STACK_BYTES,
            BPF_F_USER_STACK as u64,
        );
        if user < 0 {
            count(Counter::UserStackErrors);
        }
        (*ev).user_stack_bytes = user as i32;
        let kernel = bpf_get_stack(
            ctx.as_ptr(),
            (*ev).kernel_stack.as_mut_ptr().cast(),
            STACK_BYTES,
            0,
        );
        if kernel < 0 {
            count(Counter::KernelStackErrors);
        }
        (*ev).kernel_stack_bytes = kernel as i32;
    }
    entry.submit(0);
    count(Counter::OnCpuSamples);
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

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
