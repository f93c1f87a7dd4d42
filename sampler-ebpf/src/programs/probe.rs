//! Latency probes: a uprobe at a function's entry and a uretprobe at its return time each call
//! per thread. The attach cookie says which probe fired.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_attach_cookie},
    macros::{map, uprobe, uretprobe},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext},
};
use critpath_common::{CALL_STARTS_CAPACITY, CallEvent, Counter, EventKind};

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
