//! On-CPU sampling.

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_get_stack,
        bpf_ktime_get_ns,
        generated::{
            bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs,
        },
    },
    macros::perf_event,
    programs::PerfEventContext,
};
use critpath_common::{
    Counter, EventKind, MAX_STACK_DEPTH, PAGE_SIZE, SampleEvent, SampleHeader, StackSampleEvent,
    USER_STACK_MAX_PAGES, UserRegs,
};

use super::{EVENTS, config, count, wanted};

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
    entry.submit(0);
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

/// `struct pt_regs` on x86-64, as the kernel saves it at entry (only the fields read here named).
#[repr(C)]
struct PtRegs {
    r15_to_r12: [u64; 4],
    bp: u64,
    bx_to_orig_ax: [u64; 11],
    ip: u64,
    cs: u64,
    flags: u64,
    sp: u64,
    ss: u64,
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

        // The user registers: those the kernel saved when the task entered it (the interrupt
        // itself when it hit user code), found whatever the task was doing when sampled.
        let task = bpf_get_current_task_btf();
        let saved = bpf_task_pt_regs(task) as *const PtRegs;
        let mut regs = core::mem::MaybeUninit::<PtRegs>::uninit();
        let read = bpf_probe_read_kernel(
            regs.as_mut_ptr().cast(),
            size_of::<PtRegs>() as u32,
            saved.cast(),
        );
        if read != 0 {
            count(Counter::UserStackErrors);
            entry.submit(0);
            count(Counter::OnCpuSamples);
            return;
        }
        let regs = regs.assume_init();
        // A kernel thread has no user context: its saved segment is not a user one.
        if regs.cs & 3 == 3 {
            (*ev).regs = UserRegs {
                ip: regs.ip,
                sp: regs.sp,
                bp: regs.bp,
            };
            let base = regs.sp & !(PAGE_SIZE as u64 - 1);
            (*ev).user_stack_base = base;
            let dst = (*ev).user_stack.as_mut_ptr();
            let mut copied = 0u32;
            for i in 0..USER_STACK_MAX_PAGES {
                if i as u32 >= pages {
                    break;
                }
                let offset = i * PAGE_SIZE;
                let rc = bpf_probe_read_user(
                    dst.add(offset).cast(),
                    PAGE_SIZE as u32,
                    (base + offset as u64) as *const _,
                );
                // The end of the stack's mapping (or a page not in memory): stop there.
                if rc != 0 {
                    break;
                }
                copied += 1;
            }
            if copied == 0 {
                count(Counter::UserStackErrors);
            }
            (*ev).user_stack_pages = copied;
        }
    }
    entry.submit(0);
    count(Counter::OnCpuSamples);
}
