//! Latency probes: a uprobe at a function's entry and a uretprobe at its return time each call
//! per thread. The attach cookie says which probe fired. The entry also reports the call's
//! return address and where it lies, which the return probe hides until the call returns (see
//! [`CallEntryEvent`]).

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_get_attach_cookie},
    macros::{map, uprobe, uretprobe},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext},
};
use critpath_common::{CALL_STARTS_CAPACITY, CallEntryEvent, CallEvent, Counter, EventKind};

use super::{EVENTS, count, ktime, wanted};

/// Calls in progress: (tid << 32 | probe) → entry time. A recursive call of a probed function
/// restarts its thread's clock; the outer return then finds no entry and is not reported.
#[map(name = "CALL_STARTS")]
static CALL_STARTS: HashMap<u64, u64> = HashMap::with_max_entries(CALL_STARTS_CAPACITY, 0);

#[inline(always)]
fn key(tid: u32, cookie: u64) -> u64 {
    (u64::from(tid) << 32) | (cookie & 0xffff_ffff)
}

#[uprobe]
pub fn probe_entry(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !wanted((pid_tgid >> 32) as u32) {
        return 0;
    }
    // SAFETY: the context is the program's own.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    if CALL_STARTS
        .insert(&key(pid_tgid as u32, cookie), &ktime(), 0)
        .is_err()
    {
        count(Counter::CallsLost);
    }
    // At the entry the stack pointer points at the return address; the return probe replaces it
    // only after the entry programs ran.
    // SAFETY: the context's registers are the probed task's, saved by the kernel.
    let slot = unsafe { (*ctx.regs).rsp };
    // SAFETY: a user read that fails cleanly.
    if let Ok(return_address) = unsafe { bpf_probe_read_user(slot as *const u64) } {
        let event = CallEntryEvent {
            kind: EventKind::CallEntry as u32,
            pid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            _pad: 0,
            slot,
            return_address,
        };
        // Read with the events after it: the reader need not wake for it.
        if EVENTS
            .output::<CallEntryEvent>(&event, BPF_RB_NO_WAKEUP as u64)
            .is_err()
        {
            count(Counter::RingFull);
        }
    }
    0
}

#[uretprobe]
pub fn probe_return(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // SAFETY: the context is the program's own.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let key = key(tid, cookie);
    // SAFETY: the value is copied out at once.
    let Some(&start_ns) = (unsafe { CALL_STARTS.get(&key) }) else {
        return 0;
    };
    let _ = CALL_STARTS.remove(&key);
    let event = CallEvent {
        kind: EventKind::Call as u32,
        probe: cookie as u32,
        pid,
        tid,
        start_ns,
        end_ns: ktime(),
    };
    if EVENTS.output::<CallEvent>(&event, 0).is_err() {
        count(Counter::RingFull);
    } else {
        count(Counter::Calls);
    }
    0
}
