//! Turning raw off-CPU events into symbolized, classified waits.

use critpath_analyzer::offcpu::{self, Cause, OffCpuWait, ThreadRef, Waker};
use critpath_analyzer::{Frame, FrameKind};
use critpath_common::{OffCpuEvent, PROB_ONE, comm_str, wait_copies};

use crate::{OwnedUserStack, Sampler, Symbolizer, Unwinding};

/// The user stacks copied for a wait ([`crate::Event::WaitStack`]), found by its blocked thread
/// and start.
#[derive(Clone, Debug, Default)]
pub struct WaitStacks {
    /// The blocked thread's.
    pub waiter: Option<OwnedUserStack>,
    /// The waker's.
    pub waker: Option<OwnedUserStack>,
}

/// Where one side's user stack is.
enum User<'a> {
    /// Walked by frame pointers in the kernel: an id in the stack map (negative when absent).
    Walked(i32),
    /// Copied, to unwind with call-frame information.
    Copied(&'a OwnedUserStack),
    /// Known to exist but lost (ring buffer full, or the copy was dropped): `[truncated]`.
    Lost,
    /// None to show: a kernel thread, or a waker whose stacks were not captured.
    Absent,
}

/// One side of a wait as frames, root first: its user frames, then its kernel frames. For a
/// waker (`waker`), the kernel side comes first: in an interrupt the user stack belongs to
/// whichever task the interrupt hit, not to a waker, and is neither shown nor unwound; the
/// second value says so.
fn side_frames(
    sampler: &mut Sampler,
    symbolizer: &mut Symbolizer,
    (pid, comm): (u32, &[u8]),
    user: &User<'_>,
    kernel_id: i32,
    waker: bool,
) -> (Vec<Frame>, bool) {
    let kernel = sampler.stack(kernel_id);
    let kernel = symbolizer.symbolize_stacks(pid, &[], kernel.as_deref().unwrap_or_default());
    if waker && offcpu::is_interrupt_stack(kernel.iter().map(|f| f.function.as_str())) {
        return (kernel, true);
    }
    let mut frames = match user {
        User::Walked(id) => {
            let user = sampler.stack(*id);
            symbolizer.symbolize_stacks(pid, user.as_deref().unwrap_or_default(), &[])
        }
        User::Copied(copy) => symbolizer.symbolize_copied(pid, Some(&copy.as_stack()), &[], comm),
        User::Lost => symbolizer.symbolize_lost_user(pid, &[], comm),
        User::Absent => Vec::new(),
    };
    frames.extend(kernel);
    (frames, false)
}

/// How many waits one drawn with probability `prob` (a fraction of [`PROB_ONE`]) stands for.
fn weight(prob: u32) -> f64 {
    if prob == PROB_ONE {
        1.0
    } else {
        f64::from(PROB_ONE) / f64::from(prob.max(1))
    }
}

/// Resolves an off-CPU event's stacks — ids in the stack map, and the user stacks copied ahead of
/// it (`copies`) — symbolizes both sides and classifies the cause. `unix_offset_ns` converts the
/// event's monotonic times ([`crate::sys::monotonic_to_unix_offset_ns`]).
pub fn resolve(
    sampler: &mut Sampler,
    symbolizer: &mut Symbolizer,
    event: &OffCpuEvent,
    copies: &WaitStacks,
    unix_offset_ns: i64,
) -> OffCpuWait {
    let copied = sampler.config().unwinding != Unwinding::FramePointers;
    fn side(
        copies: u32,
        copy: Option<&OwnedUserStack>,
        bits: (u32, u32),
        attempted: bool,
    ) -> User<'_> {
        match copy {
            Some(copy) if copies & bits.0 != 0 => User::Copied(copy),
            _ if copies & bits.1 != 0 || !attempted => User::Absent,
            _ => User::Lost,
        }
    }
    let waiter_user = if copied {
        side(
            event.copies,
            copies.waiter.as_ref(),
            (wait_copies::WAITER, wait_copies::WAITER_NO_USER),
            true,
        )
    } else {
        User::Walked(event.user_stack_id)
    };
    let waker_user = if copied {
        side(
            event.copies,
            copies.waker.as_ref(),
            (wait_copies::WAKER, wait_copies::WAKER_NO_USER),
            // The waker's stacks are captured only for waits drawn to be emitted at the wakeup.
            event.waker_capture_ns != 0,
        )
    } else {
        User::Walked(event.waker_user_stack_id)
    };
    let (frames, _) = side_frames(
        sampler,
        symbolizer,
        (event.pid, comm_str(&event.comm)),
        &waiter_user,
        event.kernel_stack_id,
        false,
    );
    let cause = offcpu::classify(
        frames
            .iter()
            .rev()
            .take_while(|f| f.kind == FrameKind::Kernel)
            .map(|f| f.function.as_str()),
        event.state,
    );
    // A wait captured at switch-out starts after its stack walks and the submission of its
    // stack's copy (keyed by the earlier `start_ns`); clamp in case the switch-in raced ahead
    // of that.
    let event = &OffCpuEvent {
        start_ns: (event.start_ns + u64::from(event.start_capture_ns)).min(event.end_ns),
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
        let (frames, in_interrupt) = side_frames(
            sampler,
            symbolizer,
            (event.waker_pid, comm_str(&event.waker_comm)),
            &waker_user,
            event.waker_kernel_stack_id,
            true,
        );
        // The kernel ended the wait when the waker is a kernel thread (no user context: a
        // journal commit, an I/O worker) or the idle task; critpath's own sampler is never an
        // actor either (its stacks are not captured).
        let kernel_thread = !in_interrupt
            && (event.waker_pid == 0
                || event.waker_pid == std::process::id()
                || event.copies & wait_copies::WAKER_NO_USER != 0
                || (!copied && crate::sys::is_kernel_thread(event.waker_pid)));
        Waker {
            kernel_thread,
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
        weight: weight(event.sample_prob) * weight(event.emit_prob),
        frames,
        waker,
    }
}
