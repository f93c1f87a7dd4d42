//! Turning raw off-CPU events into symbolized, classified waits.

use critpath_analyzer::FrameKind;
use critpath_analyzer::offcpu::{self, Cause, OffCpuWait, ThreadRef, Waker};
use critpath_common::{OffCpuEvent, PROB_ONE, comm_str};

use crate::{Sampler, Symbolizer};

/// Resolves an off-CPU event's stack ids, symbolizes both sides and classifies the cause.
/// `unix_offset_ns` converts the event's monotonic times ([`crate::sys::monotonic_to_unix_offset_ns`]).
pub fn resolve(
    sampler: &mut Sampler,
    symbolizer: &mut Symbolizer,
    event: &OffCpuEvent,
    unix_offset_ns: i64,
) -> OffCpuWait {
    let mut stacks = |pid, user_id, kernel_id| {
        let user = sampler.stack(user_id);
        let kernel = sampler.stack(kernel_id);
        symbolizer.symbolize_stacks(
            pid,
            user.as_deref().unwrap_or_default(),
            kernel.as_deref().unwrap_or_default(),
        )
    };
    let frames = stacks(event.pid, event.user_stack_id, event.kernel_stack_id);
    let cause = offcpu::classify(
        frames
            .iter()
            .rev()
            .take_while(|f| f.kind == FrameKind::Kernel)
            .map(|f| f.function.as_str()),
        event.state,
    );
    // A wait captured at switch-out starts after its stack walks; clamp in case the switch-in
    // raced ahead of that timestamp.
    let event = &OffCpuEvent {
        start_ns: event.start_ns.min(event.end_ns),
        ..*event
    };
    let woke_at = if event.wakeup_ns != 0 && cause != Cause::RunQueue {
        event.wakeup_ns.clamp(event.start_ns, event.end_ns)
    } else if cause == Cause::RunQueue {
        event.start_ns
    } else {
        event.end_ns
    };
    let waker = (event.wakeup_ns != 0 && cause != Cause::RunQueue).then(|| {
        let mut frames = stacks(
            event.waker_pid,
            event.waker_user_stack_id,
            event.waker_kernel_stack_id,
        );
        let in_interrupt = offcpu::is_interrupt_stack(
            frames
                .iter()
                .filter(|f| f.kind == FrameKind::Kernel)
                .map(|f| f.function.as_str()),
        );
        if in_interrupt {
            // The user frames belong to whichever task the interrupt hit, not to a waker.
            frames.retain(|f| f.kind == FrameKind::Kernel);
        }
        Waker {
            thread: ThreadRef {
                pid: event.waker_pid,
                tid: event.waker_tid,
                comm: String::from_utf8_lossy(comm_str(&event.waker_comm)).into_owned(),
            },
            in_interrupt,
            frames,
        }
    });
    OffCpuWait {
        thread: ThreadRef {
            pid: event.pid,
            tid: event.tid,
            comm: String::from_utf8_lossy(comm_str(&event.comm)).into_owned(),
        },
        start_unix_ns: event.start_ns as i64 + unix_offset_ns,
        blocked_ns: woke_at - event.start_ns,
        runq_delay_ns: (event.end_ns - woke_at).saturating_sub(u64::from(event.waker_capture_ns)),
        cause,
        weight: if event.sample_prob == PROB_ONE {
            1.0
        } else {
            f64::from(PROB_ONE) / f64::from(event.sample_prob.max(1))
        },
        frames,
        waker,
    }
}
