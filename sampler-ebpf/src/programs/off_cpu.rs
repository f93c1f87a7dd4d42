//! Off-CPU waits (`sched:sched_switch`) and their wakeups (`sched:sched_waking`).
//!
//! At switch-out a followed thread's wait is *sampled*: its blocked stacks are captured into
//! `OFFCPU_STACKS` and its state kept in `OFFCPU_THREADS` until switch-in, where it is emitted
//! if it lasted at least `off_cpu_min_ns`, or, shorter, if a draw with probability proportional
//! to its blocked time (made at its wakeup) kept it; it then carries that probability too.
//! Capturing stacks is what costs (two stack walks), so
//! each CPU has a capture budget per 10 ms window: while switch-outs stay under it every wait is
//! captured (probability 1); above it, each switch-out is captured with probability
//! budget / (switch-outs in the previous window), and the emitted wait carries that probability so
//! user space weights it by 1/p: blocked time stays an unbiased estimate under context-switch
//! storms, at a bounded cost.
//!
//! Wakers are joined here, in the kernel: `sched_waking` looks up the wakee's sampled wait and
//! records who woke it, draws whether the wait will be emitted, and for those that will, captures
//! the waker's stacks. One event
//! per wait then carries both sides, and wakeups of unsampled or short waits cost one map miss.
//!
//! Kernel stacks are walked into `OFFCPU_STACKS`. User stacks are too with frame pointers; for
//! unwinding with call-frame information (`Config::user_stack_pages` > 0) the user registers and
//! stack are copied instead, into a `WaitStackEvent` submitted at once (the blocked thread's at
//! switch-out, the waker's at `sched_waking`): the stack of a blocked thread is only readable
//! in its own context, and whether its wait will be long enough to emit is only known at
//! switch-in. User space keeps each copy until its wait's event arrives, and drops the copies of
//! waits that ended below the minimum. The capture budget bounds the copies as it bounds the
//! stack walks.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_USER_STACK, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_prandom_u32,
        bpf_get_smp_processor_id,
    },
    macros::{map, tracepoint},
    maps::{Array, PerCpuArray, StackTrace},
    programs::{TracePointContext, tracing::StackIdContext as _},
};
use critpath_common::{
    Config, Counter, EventKind, OFFCPU_STACKS_CAPACITY, OFFCPU_THREADS_CAPACITY, OFFCPU_WINDOW_NS,
    OffCpuEvent, OffCpuRate, OffCpuState, PAGE_SIZE, PROB_ONE, STATE_BLOCKED_MASK, STATE_PREEMPTED,
    USER_STACK_MAX_PAGES, WAIT_STACK_HEADER_BYTES, WaitStackEvent, tracepoint_offsets, wait_copies,
};

use super::user_stack::{self, Copied};
use super::{EVENTS, add, config, count, ktime, wakeup_flags, wanted};

/// The user stack id of a wait whose user stack was copied instead of walked.
const COPIED: i32 = -1;

#[map(name = "OFFCPU_STACKS")]
static OFFCPU_STACKS: StackTrace = StackTrace::with_max_entries(OFFCPU_STACKS_CAPACITY, 0);

#[map(name = "OFFCPU_THREADS")]
static OFFCPU_THREADS: Array<OffCpuState> = Array::with_max_entries(OFFCPU_THREADS_CAPACITY, 0);

/// The wait-table slot of a thread (see `OFFCPU_THREADS_CAPACITY`).
#[inline(always)]
fn slot(tid: u32) -> Option<&'static mut OffCpuState> {
    let ptr = OFFCPU_THREADS.get_ptr_mut(tid % OFFCPU_THREADS_CAPACITY)?;
    // SAFETY: array values live as long as the map; a slot is written by its thread's
    // switch-out and read at its switch-in, which the scheduler orders; wakers racing on one
    // slot can at worst leave stale waker fields, never invalid memory.
    Some(unsafe { &mut *ptr })
}

/// Scratch space where a wait's user stack is copied before the used part goes to the ring
/// buffer (see [`submit_copy`]), one record per CPU, indexed by CPU number: a per-CPU array
/// cannot hold values this large. The loader sizes it to the possible CPUs.
#[map(name = "WAIT_STACK_SCRATCH")]
static WAIT_STACK_SCRATCH: Array<WaitStackEvent> = Array::with_max_entries(1, 0);

#[map(name = "OFFCPU_RATE")]
static OFFCPU_RATE: PerCpuArray<OffCpuRate> = PerCpuArray::with_max_entries(1, 0);

const EEXIST: i64 = 17;

/// Reads a field of the tracepoint record directly (no helper call).
///
/// # Safety
/// `offset` must be a constant offset of a `T` inside the record.
#[inline(always)]
unsafe fn read_ctx<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: per the contract; the verifier rejects out-of-record or misaligned reads at load.
    unsafe { ctx.as_ptr().cast::<u8>().add(offset).cast::<T>().read() }
}

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    let cfg = config();
    if cfg.off_cpu == 0 {
        return 0;
    }
    let now = ktime();
    // SAFETY: constant offsets inside the sched_switch record, checked against this kernel's
    // format file by the loader; the verifier checks each direct context read.
    let (prev, state, next) = unsafe {
        (
            read_ctx::<i32>(&ctx, tracepoint_offsets::SWITCH_PREV_PID),
            read_ctx::<i64>(&ctx, tracepoint_offsets::SWITCH_PREV_STATE),
            read_ctx::<i32>(&ctx, tracepoint_offsets::SWITCH_NEXT_PID),
        )
    };
    if prev > 0 {
        switch_out(&ctx, &cfg, prev as u32, state as u64, now);
    }
    if next > 0 {
        switch_in(&cfg, next as u32, now);
    }
    0
}

#[inline(always)]
fn switch_out(ctx: &TracePointContext, cfg: &Config, tid: u32, state: u64, now: u64) {
    // Every context switch runs this: helper calls are kept off the common path (no pid filter,
    // switch-out sampled out by the budget).
    if cfg.filter_pids != 0 && !wanted((bpf_get_current_pid_tgid() >> 32) as u32) {
        return;
    }
    let Some((prob, may_copy)) = capture_probability(cfg, now) else {
        return;
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == cfg.exclude_tgid {
        return;
    }
    let Some(slot) = slot(tid) else {
        return;
    };
    let (user, copies, copy) = if cfg.user_stack_pages > 0 && !may_copy {
        count(Counter::WaitCopiesOverBudget);
        (COPIED, 0, None)
    } else if cfg.user_stack_pages > 0 {
        let (bits, copy) = copy_user_stack(
            wait_copies::ROLE_WAITER,
            tid,
            tgid,
            cfg.user_stack_pages,
            (wait_copies::WAITER, wait_copies::WAITER_NO_USER),
        );
        (COPIED, bits, copy)
    } else {
        (stack_id(ctx, BPF_F_USER_STACK as u64), 0, None)
    };
    let kernel = stack_id(ctx, 0);
    // After the stack walks and the copy: their cost is ours, not the thread's wait.
    let start_ns = ktime();
    // The copy is keyed by the wait's start; handing it to the ring buffer (up to 32 KiB) is
    // our cost too, and the wait is measured from its end.
    let start_capture_ns = match copy {
        Some(copy) => {
            submit_copy(copy, start_ns);
            ktime().wrapping_sub(start_ns).min(u32::MAX as u64) as u32
        }
        None => 0,
    };
    if slot.start_ns != 0 && slot.tid != tid {
        count(Counter::OffCpuStateFull);
    }
    *slot = OffCpuState {
        start_ns,
        wakeup_ns: 0,
        pid: tgid,
        state: state as u32,
        prob,
        user_stack_id: user,
        kernel_stack_id: kernel,
        waker_pid: 0,
        waker_tid: 0,
        waker_user_stack_id: -1,
        waker_kernel_stack_id: -1,
        tid,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        waker_comm: [0; 16],
        waker_capture_ns: 0,
        copies,
        emit_prob: 0,
        emit_drawn: 0,
        start_capture_ns,
        _pad: 0,
    };
    count(Counter::OffCpuSampled);
}

/// Copies the current task's user registers and up to `pages` pages of its user stack into this
/// CPU's [`WaitStackEvent`] scratch record, for the wait of thread `tid`. Returns the
/// [`wait_copies`] bits to record (`bits.0` when a record is returned, `bits.1` when the task has
/// no user context) and the record, which the caller completes with the wait's `start_ns` and
/// hands to [`submit_copy`].
#[inline(always)]
fn copy_user_stack(
    role: u32,
    tid: u32,
    pid: u32,
    pages: u32,
    bits: (u32, u32),
) -> (u32, Option<&'static mut WaitStackEvent>) {
    // SAFETY: no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(ev) = WAIT_STACK_SCRATCH.get_ptr_mut(cpu) else {
        return (0, None);
    };
    // SAFETY: this CPU's scratch record; BPF programs are not preempted, and tracing programs
    // do not nest on a CPU (the kernel skips a program that would run inside another), so
    // nothing else uses it until this program returns. Its user_stack holds
    // USER_STACK_MAX_PAGES pages.
    let ev = unsafe { &mut *ev };
    // SAFETY: as above.
    match unsafe { user_stack::copy(ev.user_stack.as_mut_ptr(), pages) } {
        Copied::Stack { regs, base, pages } => {
            if pages == 0 {
                count(Counter::UserStackErrors);
            }
            ev.kind = EventKind::WaitStack as u32;
            ev.role = role;
            ev.tid = tid;
            ev.pid = pid;
            ev.start_ns = 0;
            ev.user_stack_pages = pages;
            ev._pad = 0;
            ev.regs = regs;
            ev.user_stack_base = base;
            (bits.0, Some(ev))
        }
        Copied::NoUser => (bits.1, None),
        Copied::Failed => {
            count(Counter::UserStackErrors);
            (0, None)
        }
    }
}

/// Writes a wait's copied stack to the ring buffer: only the pages copied (a record of the
/// full size would take 36 KiB of the ring for the 8 KiB a stack typically holds), and never
/// waking the reader, which reads it with a later event (see [`super::wakeup_flags`]). Waking
/// it here would make it run while the wait is in progress, and on the waiting thread's CPU
/// lengthen exactly the waits that were captured: their weighted total would no longer estimate
/// the real one.
#[inline(always)]
fn submit_copy(ev: &mut WaitStackEvent, start_ns: u64) {
    // The key is written last: the record was filled before the wait's start was known.
    ev.start_ns = start_ns;
    let pages = ev.user_stack_pages as usize;
    if pages > USER_STACK_MAX_PAGES {
        return;
    }
    // Hidden from the compiler, so that it keeps the bound below on `len` itself: it would
    // otherwise test `pages` only and build `len` with a shift and an or, whose bounds the
    // verifier tracks too loosely to accept the read.
    let len = core::hint::black_box(WAIT_STACK_HEADER_BYTES + pages * PAGE_SIZE);
    if len > size_of::<WaitStackEvent>() {
        return;
    }
    // SAFETY: the record is size_of::<WaitStackEvent>() bytes, of which the first `len`
    // (≤ the header and USER_STACK_MAX_PAGES pages) are read.
    let bytes =
        unsafe { core::slice::from_raw_parts((ev as *const WaitStackEvent).cast::<u8>(), len) };
    if EVENTS
        .output::<[u8]>(bytes, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        count(Counter::RingFull);
        return;
    }
    count(Counter::WaitCopies);
    add(Counter::WaitCopyBytes, len as u64);
}

/// Decides whether this switch-out is captured; returns the probability it was captured with,
/// and whether its user stack may be copied (at most the budget's number of copies per window:
/// past it, a captured wait is kept, unbiased, without its user stack). Counts the switch-out,
/// and it if it is sampled out.
///
/// Captures aim at half the budget per window, at the rate of the previous window or, when this
/// one is busier, of this one so far doubled: a burst lowers the probability as it goes, so it
/// rarely runs out of copies. Each wait carries the probability it was drawn with, so the
/// estimate stays unbiased however it changes.
#[inline(always)]
fn capture_probability(cfg: &Config, now: u64) -> Option<(u32, bool)> {
    let rate = OFFCPU_RATE.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, valid for this CPU; BPF programs are not preempted on it.
    let rate = unsafe { &mut *rate };
    if rate.window_start_ns == 0 {
        rate.previous = 0;
        rate.window_start_ns = now;
    } else if now.wrapping_sub(rate.window_start_ns) >= OFFCPU_WINDOW_NS {
        rate.previous = rate.switches;
        rate.switches = 0;
        rate.copies = 0;
        rate.window_start_ns = now;
    }
    rate.switches = rate.switches.saturating_add(1);
    rate.switches_total += 1;
    let budget = cfg.off_cpu_budget as u64;
    let seen = (rate.previous as u64).max(2 * rate.switches as u64);
    let prob = if 2 * seen <= budget {
        PROB_ONE
    } else {
        // 2·seen > budget ≥ 0, so the quotient is below 2^32.
        ((budget << 31) / seen) as u32
    };
    // SAFETY: no preconditions.
    if prob == PROB_ONE || unsafe { bpf_get_prandom_u32() } < prob {
        let may_copy = rate.copies < cfg.off_cpu_budget;
        rate.copies += u32::from(may_copy);
        Some((prob, may_copy))
    } else {
        rate.unsampled_total += 1;
        None
    }
}

#[inline(always)]
fn stack_id(ctx: &TracePointContext, flags: u64) -> i32 {
    match ctx.get_stackid(&OFFCPU_STACKS, flags) {
        Ok(id) => id as i32,
        Err(err) => {
            if err as i64 == -EEXIST {
                count(Counter::StackCollisions);
            }
            err
        }
    }
}

/// The probability, as a fraction of [`PROB_ONE`], with which a wait blocked `blocked_ns` is
/// emitted, drawn now: [`PROB_ONE`] from the minimum duration on; below it, `blocked / min`
/// when the draw keeps the wait and 0 when it does not. Drawing with probability proportional to
/// the duration keeps the weighted total of every stack's short waits unbiased while the events
/// emitted stay bounded (about one per minimum's worth of waiting).
#[inline(always)]
fn draw_emission(cfg: &Config, blocked_ns: u64) -> u32 {
    if blocked_ns >= cfg.off_cpu_min_ns {
        return PROB_ONE;
    }
    // blocked < min < 2^31 ns (the loader refuses larger minimums), so the shift cannot
    // overflow and the quotient is below 2^32.
    let prob = ((blocked_ns << 32) / cfg.off_cpu_min_ns.max(1)) as u32;
    // SAFETY: no preconditions.
    if prob != 0 && unsafe { bpf_get_prandom_u32() } < prob {
        prob
    } else {
        0
    }
}

#[inline(always)]
fn switch_in(cfg: &Config, tid: u32, now: u64) {
    let Some(slot) = slot(tid) else {
        return;
    };
    if slot.start_ns == 0 || slot.tid != tid {
        return;
    }
    let st = *slot;
    slot.start_ns = 0;
    let off = now.wrapping_sub(st.start_ns);
    // Drawn at the wakeup (on the blocked time), else now (preempted, or no wakeup seen).
    let emit_prob = if st.emit_drawn != 0 {
        st.emit_prob
    } else {
        draw_emission(cfg, off)
    };
    if emit_prob == 0 {
        count(Counter::OffCpuBelowMin);
        // Weight 1/p, in ns: off < 2^31 ns here (a wait past the minimum is always emitted,
        // and a drawn-out one blocked below it) so the shift cannot overflow.
        let prob = st.prob.max(1) as u64;
        add(Counter::OffCpuBelowMinNs, (off.min(1 << 31) << 32) / prob);
        return;
    }
    if emit_prob != PROB_ONE {
        count(Counter::OffCpuShortEmitted);
    }
    let Some(mut entry) = EVENTS.reserve::<OffCpuEvent>(0) else {
        count(Counter::RingFull);
        return;
    };
    entry.write(OffCpuEvent {
        kind: EventKind::OffCpu as u32,
        // SAFETY: no preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        pid: st.pid,
        tid,
        start_ns: st.start_ns,
        end_ns: now,
        wakeup_ns: st.wakeup_ns,
        state: st.state,
        sample_prob: st.prob,
        comm: st.comm,
        user_stack_id: st.user_stack_id,
        kernel_stack_id: st.kernel_stack_id,
        waker_pid: st.waker_pid,
        waker_tid: st.waker_tid,
        waker_comm: st.waker_comm,
        waker_user_stack_id: st.waker_user_stack_id,
        waker_kernel_stack_id: st.waker_kernel_stack_id,
        waker_capture_ns: st.waker_capture_ns,
        copies: st.copies,
        emit_prob,
        start_capture_ns: st.start_capture_ns,
    });
    entry.submit(wakeup_flags());
    count(Counter::OffCpuEmitted);
}

/// `sched:sched_waking`, in the waker's context (or an interrupt's).
#[tracepoint]
pub fn sched_waking(ctx: TracePointContext) -> u32 {
    let cfg = config();
    if cfg.off_cpu == 0 {
        return 0;
    }
    // SAFETY: constant offset inside the sched_waking record, checked by the loader.
    let wakee = unsafe { read_ctx::<i32>(&ctx, tracepoint_offsets::WAKING_PID) };
    let Some(st) = slot(wakee as u32) else {
        return 0;
    };
    let state = st.state as u64;
    if st.start_ns == 0
        || st.tid != wakee as u32
        || state & STATE_PREEMPTED != 0
        || state & STATE_BLOCKED_MASK == 0
        || st.wakeup_ns != 0
    {
        return 0;
    }
    let now = ktime();
    let pid_tgid = bpf_get_current_pid_tgid();
    st.wakeup_ns = now;
    st.waker_pid = (pid_tgid >> 32) as u32;
    st.waker_tid = pid_tgid as u32;
    st.waker_comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // Whether the wait will be emitted is drawn here, on its blocked time.
    st.emit_prob = draw_emission(&cfg, now.wrapping_sub(st.start_ns));
    st.emit_drawn = 1;
    // The sampler's own stacks stay out of its reports (and out of its symbolizer: its binary
    // is large), even as a waker; the wakeup itself is kept.
    if st.emit_prob != 0 && st.waker_pid != cfg.exclude_tgid {
        // Only waits that will be emitted pay for the waker's stacks. (In an interrupt the user
        // stack is the interrupted task's; user space sees that in the kernel stack and drops it.)
        if cfg.user_stack_pages > 0 {
            let (bits, copy) = copy_user_stack(
                wait_copies::ROLE_WAKER,
                wakee as u32,
                st.waker_pid,
                cfg.user_stack_pages,
                (wait_copies::WAKER, wait_copies::WAKER_NO_USER),
            );
            if let Some(copy) = copy {
                submit_copy(copy, st.start_ns);
            }
            st.copies |= bits;
            st.waker_user_stack_id = COPIED;
        } else {
            st.waker_user_stack_id = stack_id(&ctx, BPF_F_USER_STACK as u64);
        }
        st.waker_kernel_stack_id = stack_id(&ctx, 0);
        st.waker_capture_ns = ktime().wrapping_sub(now).min(u32::MAX as u64) as u32;
    }
    count(Counter::Wakeups);
    0
}
