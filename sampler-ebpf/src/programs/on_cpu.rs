//! On-CPU sampling.

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_get_stack,
        bpf_ktime_get_ns,
    },
    macros::perf_event,
    programs::PerfEventContext,
};
use critpath_common::{
    Counter, EventKind, MAX_STACK_DEPTH, SampleEvent, SampleHeader, StackSampleEvent, UserRegs,
};

use super::user_stack::{self, Copied};
use super::{EVENTS, config, count, wakeup_flags, wanted};

const STACK_BYTES: u32 = (MAX_STACK_DEPTH * 8) as u32;

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
    let pages = config().user_stack_pages;
    if pages > 0 {
        sample_with_user_stack(ctx, tgid, tid, pages);
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
        (*ev).header = header(EventKind::OnCpu, tgid, tid);
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
        (*ev).kernel_stack_bytes = kernel_stack(ctx, &mut (*ev).kernel_stack);
    }
    entry.submit(wakeup_flags());
    count(Counter::OnCpuSamples);
}

/// Walks the kernel stack into `dst`; returns the bytes written or a negative errno (counted).
#[inline(always)]
fn kernel_stack(ctx: &PerfEventContext, dst: &mut [u64; MAX_STACK_DEPTH]) -> i32 {
    // SAFETY: bpf_get_stack writes at most STACK_BYTES, the size of `dst`.
    let bytes = unsafe { bpf_get_stack(ctx.as_ptr(), dst.as_mut_ptr().cast(), STACK_BYTES, 0) };
    if bytes < 0 {
        count(Counter::KernelStackErrors);
    }
    bytes as i32
}

/// The header of a sample of the current task.
#[inline(always)]
fn header(kind: EventKind, tgid: u32, tid: u32) -> SampleHeader {
    SampleHeader {
        kind: kind as u32,
        // SAFETY: no preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        pid: tgid,
        tid,
        // SAFETY: no preconditions.
        time_ns: unsafe { bpf_ktime_get_ns() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

/// A sample with the user registers and up to `pages` pages of the user stack, for unwinding
/// with call-frame information in user space ([`StackSampleEvent`]).
#[inline(always)]
fn sample_with_user_stack(ctx: &PerfEventContext, tgid: u32, tid: u32, pages: u32) {
    let Some(mut entry) = EVENTS.reserve::<StackSampleEvent>(0) else {
        count(Counter::RingFull);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved, writable ring buffer record of
    // size_of::<StackSampleEvent>(); every header field is written before submit; the kernel
    // stack write is bounded by STACK_BYTES and each user stack read by one page at an offset
    // below USER_STACK_MAX_PAGES pages. The task's saved user registers are read with
    // bpf_probe_read_kernel, which fails cleanly on a bad pointer.
    unsafe {
        (*ev).header = header(EventKind::OnCpuStack, tgid, tid);
        (*ev).kernel_stack_bytes = kernel_stack(ctx, &mut (*ev).kernel_stack);
        (*ev).user_stack_pages = 0;
        (*ev).regs = UserRegs::default();
        (*ev).user_stack_base = 0;
        match user_stack::copy((*ev).user_stack.as_mut_ptr(), pages) {
            Copied::NoUser => {}
            Copied::Failed => count(Counter::UserStackErrors),
            Copied::Stack { regs, base, pages } => {
                if pages == 0 {
                    count(Counter::UserStackErrors);
                }
                (*ev).regs = regs;
                (*ev).user_stack_base = base;
                (*ev).user_stack_pages = pages;
            }
        }
    }
    entry.submit(wakeup_flags());
    count(Counter::OnCpuSamples);
}
