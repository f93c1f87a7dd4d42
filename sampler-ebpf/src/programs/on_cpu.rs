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
use critpath_common::{Counter, EventKind, MAX_STACK_DEPTH, SampleEvent};

use super::{EVENTS, count, wanted};

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
