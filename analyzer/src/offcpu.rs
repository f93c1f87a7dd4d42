//! Off-CPU waits: why a thread was off CPU (the cause, from its kernel stack and state) and who
//! woke it (wakeup edges).

use serde::{Deserialize, Serialize};

use crate::Frame;

/// Why a thread was off CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Waiting for a lock: futex (pthread/Rust mutexes, condition variables), kernel mutexes,
    /// rwsems.
    Lock,
    /// Waiting for I/O: block devices, page cache, network sockets, pipes, terminals.
    Io,
    /// Sleeping: nanosleep, timers.
    Sleep,
    /// Waiting in poll, select or epoll for any of several events.
    Poll,
    /// Runnable but not running: preempted, or woken and waiting for a CPU.
    RunQueue,
    /// Anything else (waiting for a child, signals, ...).
    Other,
}

impl Cause {
    /// Every cause.
    pub const ALL: [Cause; 6] = [
        Self::Lock,
        Self::Io,
        Self::Sleep,
        Self::Poll,
        Self::RunQueue,
        Self::Other,
    ];

    /// The snake_case name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Lock => "lock",
            Self::Io => "io",
            Self::Sleep => "sleep",
            Self::Poll => "poll",
            Self::RunQueue => "runqueue",
            Self::Other => "other",
        }
    }

    /// The pseudo frame that ends an off-CPU stack in profiles: `[off-cpu: lock]`.
    pub fn frame(self) -> Frame {
        let mut frame = Frame::kernel(format!("[off-cpu: {}]", self.name()));
        frame.module = Some(OFF_CPU_MODULE.to_owned());
        frame
    }
}

/// Module of the pseudo frames that name off-CPU causes.
pub const OFF_CPU_MODULE: &str = "[off-cpu]";

/// Kernel function name prefixes that identify a cause, matched from the innermost kernel frame
/// outwards; the first frame matching any rule decides. Generic scheduler frames (`schedule`,
/// `schedule_timeout`, `schedule_hrtimeout_range`) match nothing, so the caller that chose to
/// wait decides: `poll_schedule_timeout` → poll, not sleep.
pub const RULES: &[(&str, Cause)] = &[
    // Locks.
    ("futex_wait", Cause::Lock),
    ("__futex_wait", Cause::Lock),
    ("futex_lock_pi", Cause::Lock),
    ("__mutex_lock", Cause::Lock),
    ("mutex_lock", Cause::Lock),
    ("rwsem_down_", Cause::Lock),
    ("rt_mutex_", Cause::Lock),
    ("percpu_rwsem_wait", Cause::Lock),
    ("__down", Cause::Lock),
    // Poll / select / epoll, before the I/O rules: a poll on a socket is a poll.
    ("ep_poll", Cause::Poll),
    ("do_epoll_wait", Cause::Poll),
    ("poll_schedule_timeout", Cause::Poll),
    ("do_sys_poll", Cause::Poll),
    ("do_select", Cause::Poll),
    ("io_cqring_wait", Cause::Poll),
    // Sleeps and timers.
    ("do_nanosleep", Cause::Sleep),
    ("hrtimer_nanosleep", Cause::Sleep),
    ("msleep", Cause::Sleep),
    ("usleep_range", Cause::Sleep),
    ("timerfd_read", Cause::Sleep),
    // I/O: block and page cache, pipes, sockets, terminals.
    ("io_schedule", Cause::Io),
    ("bit_wait_io", Cause::Io),
    ("folio_wait", Cause::Io),
    ("wait_on_page", Cause::Io),
    ("submit_bio_wait", Cause::Io),
    ("blk_", Cause::Io),
    ("jbd2_", Cause::Io),
    ("pipe_read", Cause::Io),
    ("pipe_write", Cause::Io),
    ("anon_pipe_read", Cause::Io),
    ("anon_pipe_write", Cause::Io),
    ("sk_wait_data", Cause::Io),
    ("sk_stream_wait", Cause::Io),
    ("inet_csk_accept", Cause::Io),
    ("unix_stream_read", Cause::Io),
    ("unix_stream_data_wait", Cause::Io),
    ("__skb_wait_for_more_packets", Cause::Io),
    ("n_tty_read", Cause::Io),
    ("wait_woken", Cause::Io),
    ("wait_for_completion_io", Cause::Io),
    // Generic waits that must not fall through to the uninterruptible → I/O fallback.
    ("wait_for_completion", Cause::Other),
    ("do_wait", Cause::Other),
];

/// Classifies a wait from its kernel frames, innermost first, and its `sched_switch` state.
///
/// `runnable` (preempted or yielded) is run-queue time whatever the stack says; an
/// uninterruptible wait (`D`) that no rule names is taken for I/O, which it nearly always is.
pub fn classify<'a>(
    kernel_innermost_first: impl IntoIterator<Item = &'a str>,
    state: u32,
) -> Cause {
    if state_is_runnable(state) {
        return Cause::RunQueue;
    }
    for function in kernel_innermost_first {
        if let Some(&(_, cause)) = RULES.iter().find(|(p, _)| function.starts_with(p)) {
            return cause;
        }
    }
    if state & STATE_UNINTERRUPTIBLE != 0 {
        Cause::Io
    } else {
        Cause::Other
    }
}

/// Kernel functions that only run in interrupt context (hard IRQ, softirq, timers): a wakeup
/// with one of them on the waker's stack came from an interrupt, not from the task it hit.
pub const INTERRUPT_FUNCTIONS: &[&str] = &[
    "asm_sysvec_",
    "sysvec_",
    "__sysvec_",
    "asm_common_interrupt",
    "common_interrupt",
    "handle_softirqs",
    "__do_softirq",
    "irq_exit_rcu",
    "hrtimer_interrupt",
    "__hrtimer_run_queues",
    "hrtimer_wakeup",
    "run_timer_softirq",
    "blk_mq_complete_request",
    "net_rx_action",
];

/// Kernel functions of a task's own transmit path, and of a softirq run synchronously when
/// that task re-enabled bottom halves (not on an interrupt's exit).
const OWN_SOFTIRQ_FUNCTIONS: (&[&str], &[&str]) = (
    &["__dev_queue_xmit", "dev_hard_start_xmit", "loopback_xmit"],
    &["__local_bh_enable_ip", "do_softirq"],
);

/// Kernel functions of a hardware interrupt's entry or exit.
const HARD_IRQ_FUNCTIONS: &[&str] = &[
    "asm_sysvec_",
    "sysvec_",
    "__sysvec_",
    "asm_common_interrupt",
    "common_interrupt",
    "irq_exit_rcu",
    "hrtimer_interrupt",
];

/// Whether a waker's kernel stack shows interrupt context. A softirq that a task ran itself,
/// synchronously, right after transmitting (a loopback TCP send delivered to its receiver on the
/// sender's CPU) is the sending task's doing, not an interrupt's.
pub fn is_interrupt_stack<'a>(kernel_functions: impl IntoIterator<Item = &'a str>) -> bool {
    let functions: Vec<&str> = kernel_functions.into_iter().collect();
    let any = |names: &[&str]| {
        functions
            .iter()
            .any(|f| names.iter().any(|p| f.starts_with(p)))
    };
    if !any(INTERRUPT_FUNCTIONS) {
        return false;
    }
    let (transmit, synchronous) = OWN_SOFTIRQ_FUNCTIONS;
    !(any(transmit) && any(synchronous) && !any(HARD_IRQ_FUNCTIONS))
}

/// `sched_switch` reports a preempted task as `TASK_REPORT_MAX` (0x100) and a yielding one as 0.
pub fn state_is_runnable(state: u32) -> bool {
    state & 0x100 != 0 || state & 0xff == 0
}

const STATE_UNINTERRUPTIBLE: u32 = 0x2;

/// A thread, as wakeup edges name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ThreadRef {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
}

/// "Who woke whom": an off-CPU wait and the thread (or interrupt) that ended it; or, merged by
/// [`WakeupEdge::merge`], every wait with the same threads, stacks and cause.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WakeupEdge {
    /// When the (first) wakeup happened, Unix ns.
    pub time_unix_ns: i64,
    /// How long the wakee had been blocked when woken, ns (merged: the weighted mean).
    pub blocked_ns: u64,
    /// Wakeup to running again (run-queue delay), ns (merged: the weighted mean).
    pub runq_delay_ns: u64,
    /// Why the wakee waited.
    pub cause: Cause,
    /// How many waits this one stands for (1 / capture probability; merged: the sum), so that
    /// `blocked_ns × weight` is the blocked time the edge accounts for.
    pub weight: f64,
    /// Captured waits merged into this edge.
    #[serde(default = "one")]
    pub count: u64,
    /// The thread that waited.
    pub wakee: ThreadRef,
    /// Its blocked stack, function names root first.
    pub wakee_stack: Vec<String>,
    /// The waking thread; in an interrupt, the interrupted one.
    pub waker: ThreadRef,
    /// The wakeup came from interrupt context (timer, device): the waker is the kernel.
    pub waker_in_interrupt: bool,
    /// The waker is a kernel thread (a journal commit, an I/O worker) or the idle task: the
    /// kernel ended the wait, as from an interrupt (false in files written before this was
    /// recorded).
    #[serde(default)]
    pub waker_kernel_thread: bool,
    /// The waker's stack, function names root first (kernel side only in an interrupt).
    pub waker_stack: Vec<String>,
    /// How many of `wakee_stack`'s innermost frames are the kernel's (0 in files written
    /// before this was recorded).
    #[serde(default)]
    pub wakee_kernel_frames: u32,
    /// How many of `waker_stack`'s innermost frames are the kernel's.
    #[serde(default)]
    pub waker_kernel_frames: u32,
}

fn one() -> u64 {
    1
}

impl WakeupEdge {
    /// Merges edges with the same wakee, waker, stacks, cause and interrupt flag into one each
    /// (blocked time and run-queue delay become weighted means, weights and counts add up), in
    /// order of first appearance. A recording's edges are mostly repeats of a few waits: merged,
    /// they take a few hundred kilobytes instead of tens of megabytes.
    pub fn merge(edges: impl IntoIterator<Item = WakeupEdge>) -> Vec<WakeupEdge> {
        type Key = (
            u32,
            u32,
            Vec<String>,
            u32,
            u32,
            Vec<String>,
            Cause,
            bool,
            bool,
        );
        let mut index: std::collections::HashMap<Key, usize> = std::collections::HashMap::new();
        let mut out: Vec<WakeupEdge> = Vec::new();
        // Weighted sums of blocked and run-queue time, per merged edge.
        let mut sums: Vec<(f64, f64)> = Vec::new();
        for e in edges {
            let key = (
                e.wakee.pid,
                e.wakee.tid,
                e.wakee_stack.clone(),
                e.waker.pid,
                e.waker.tid,
                e.waker_stack.clone(),
                e.cause,
                e.waker_in_interrupt,
                e.waker_kernel_thread,
            );
            let (b, r) = (
                e.blocked_ns as f64 * e.weight,
                e.runq_delay_ns as f64 * e.weight,
            );
            match index.get(&key) {
                Some(&i) => {
                    let m = &mut out[i];
                    m.weight += e.weight;
                    m.count += e.count;
                    sums[i].0 += b;
                    sums[i].1 += r;
                }
                None => {
                    index.insert(key, out.len());
                    out.push(e);
                    sums.push((b, r));
                }
            }
        }
        for (e, (b, r)) in out.iter_mut().zip(sums) {
            if e.weight > 0.0 {
                e.blocked_ns = (b / e.weight).round() as u64;
                e.runq_delay_ns = (r / e.weight).round() as u64;
            }
        }
        out
    }
}

/// One off-CPU wait, symbolized: the unit the sampler hands to profiles, edges and graphs.
#[derive(Clone, Debug, PartialEq)]
pub struct OffCpuWait {
    /// The thread that waited.
    pub thread: ThreadRef,
    /// Switch-out, Unix ns.
    pub start_unix_ns: i64,
    /// Blocked time: switch-out to wakeup (to switch-in when no wakeup was seen), ns.
    pub blocked_ns: u64,
    /// Wakeup to switch-in, ns (all of the time off CPU for a preempted thread).
    pub runq_delay_ns: u64,
    /// Why it waited.
    pub cause: Cause,
    /// How many waits this one stands for (1 / capture probability).
    pub weight: f64,
    /// The blocked stack, root first (user frames, then kernel frames).
    pub frames: Vec<Frame>,
    /// Who woke it, when a wakeup was seen.
    pub waker: Option<Waker>,
}

/// The waking side of a wait.
#[derive(Clone, Debug, PartialEq)]
pub struct Waker {
    /// The waking thread (in an interrupt: the interrupted one).
    pub thread: ThreadRef,
    /// The wakeup came from interrupt context.
    pub in_interrupt: bool,
    /// The waker is a kernel thread (`jbd2/…`, `kworker/…`: it finished I/O the wait was for)
    /// or the idle task: like an interrupt, the kernel ended the wait, not a program's thread.
    pub kernel_thread: bool,
    /// The waker's stack, root first; empty when it was not captured.
    pub frames: Vec<Frame>,
}

impl Waker {
    /// Whether the kernel ended the wait (an interrupt, a kernel thread) rather than a thread
    /// of a program.
    pub fn is_kernel(&self) -> bool {
        self.in_interrupt || self.kernel_thread
    }
}

impl OffCpuWait {
    /// Weighted blocked time, ns.
    pub fn weighted_blocked_ns(&self) -> i64 {
        (self.blocked_ns as f64 * self.weight).round() as i64
    }

    /// Weighted run-queue delay, ns.
    pub fn weighted_runq_ns(&self) -> i64 {
        (self.runq_delay_ns as f64 * self.weight).round() as i64
    }

    /// The wait's stacks with their weighted time: the blocked time under the cause's pseudo
    /// frame, the run-queue delay under `[off-cpu: runqueue]` (each only when non-zero).
    pub fn split_by_cause(&self) -> impl Iterator<Item = (Vec<Frame>, i64)> + '_ {
        self.causes().map(|(cause, ns)| {
            let mut frames = Vec::with_capacity(self.frames.len() + 1);
            frames.extend(self.frames.iter().cloned());
            frames.push(cause.frame());
            (frames, ns)
        })
    }

    /// The wait's weighted time per cause, without its frames: its own cause's blocked time
    /// and its run-queue delay, each when not zero (what [`OffCpuWait::split_by_cause`] adds a
    /// cause frame to).
    pub fn causes(&self) -> impl Iterator<Item = (Cause, i64)> + use<> {
        [
            (self.cause, self.weighted_blocked_ns()),
            (Cause::RunQueue, self.weighted_runq_ns()),
        ]
        .into_iter()
        .filter(|&(_, ns)| ns > 0)
    }

    /// The wait as a wakeup edge, when a waker was seen.
    pub fn edge(&self) -> Option<WakeupEdge> {
        let waker = self.waker.as_ref()?;
        let names = |frames: &[Frame]| frames.iter().map(|f| f.function.clone()).collect();
        let kernel = |frames: &[Frame]| {
            frames
                .iter()
                .rev()
                .take_while(|f| f.kind == crate::FrameKind::Kernel)
                .count() as u32
        };
        Some(WakeupEdge {
            time_unix_ns: self.start_unix_ns + self.blocked_ns as i64,
            blocked_ns: self.blocked_ns,
            runq_delay_ns: self.runq_delay_ns,
            cause: self.cause,
            weight: self.weight,
            count: 1,
            wakee: self.thread.clone(),
            wakee_stack: names(&self.frames),
            waker: waker.thread.clone(),
            waker_in_interrupt: waker.in_interrupt,
            waker_kernel_thread: waker.kernel_thread,
            waker_stack: names(&waker.frames),
            wakee_kernel_frames: kernel(&self.frames),
            waker_kernel_frames: kernel(&waker.frames),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(stack: &[&str], state: u32) -> Cause {
        classify(stack.iter().copied(), state)
    }

    /// Each kind of wait is named by the kernel function that chose to wait, whatever generic
    /// scheduler frames sit below it.
    #[test]
    fn classifies_by_kernel_stack() {
        let s = 0x1;
        assert_eq!(
            cause(
                &[
                    "__schedule",
                    "schedule",
                    "futex_wait_queue",
                    "__futex_wait",
                    "futex_wait"
                ],
                s
            ),
            Cause::Lock
        );
        assert_eq!(
            cause(
                &[
                    "__schedule",
                    "schedule",
                    "do_nanosleep",
                    "hrtimer_nanosleep"
                ],
                s
            ),
            Cause::Sleep
        );
        assert_eq!(
            cause(
                &[
                    "__schedule",
                    "schedule",
                    "schedule_hrtimeout_range_clock",
                    "poll_schedule_timeout",
                    "do_sys_poll"
                ],
                s
            ),
            Cause::Poll
        );
        assert_eq!(
            cause(
                &[
                    "__schedule",
                    "schedule",
                    "schedule_hrtimeout_range",
                    "ep_poll",
                    "do_epoll_wait"
                ],
                s
            ),
            Cause::Poll
        );
        assert_eq!(
            cause(&["__schedule", "schedule", "pipe_read", "vfs_read"], s),
            Cause::Io
        );
        assert_eq!(
            cause(
                &[
                    "__schedule",
                    "schedule",
                    "schedule_timeout",
                    "wait_woken",
                    "sk_wait_data",
                    "tcp_recvmsg_locked"
                ],
                s
            ),
            Cause::Io
        );
        assert_eq!(
            cause(&["__schedule", "io_schedule", "folio_wait_bit_common"], 0x2),
            Cause::Io
        );
        assert_eq!(
            cause(&["__schedule", "schedule", "do_wait"], s),
            Cause::Other
        );
    }

    /// Merging keeps the blocked time each edge accounts for (`blocked_ns × weight`) and counts
    /// the waits; different wakers stay apart.
    #[test]
    fn merging_edges_keeps_totals() {
        let t = |tid| ThreadRef {
            pid: 1,
            tid,
            comm: "w".into(),
        };
        let edge = |waker, blocked_ns, weight| WakeupEdge {
            time_unix_ns: 0,
            blocked_ns,
            runq_delay_ns: 10,
            cause: Cause::Lock,
            weight,
            count: 1,
            wakee: t(1),
            wakee_stack: vec!["main".into(), "lock".into()],
            waker: t(waker),
            waker_in_interrupt: false,
            waker_kernel_thread: false,
            waker_stack: vec!["main".into(), "unlock".into()],
            wakee_kernel_frames: 0,
            waker_kernel_frames: 0,
        };
        let merged = WakeupEdge::merge([edge(2, 100, 1.0), edge(3, 50, 1.0), edge(2, 300, 3.0)]);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].waker.tid, merged[0].count), (2, 2));
        assert_eq!(merged[0].weight, 4.0);
        assert_eq!(
            merged[0].blocked_ns as f64 * merged[0].weight,
            100.0 + 900.0
        );
        assert_eq!(merged[0].runq_delay_ns, 10);
        assert_eq!((merged[1].waker.tid, merged[1].blocked_ns), (3, 50));
    }

    /// Preempted and yielding switch-outs are run-queue time; an unnamed `D` wait is I/O.
    #[test]
    fn classifies_by_state() {
        assert_eq!(cause(&["futex_wait"], 0x100), Cause::RunQueue);
        assert_eq!(cause(&["__schedule"], 0), Cause::RunQueue);
        assert_eq!(
            cause(&["__schedule", "schedule", "mystery"], 0x2),
            Cause::Io
        );
        assert_eq!(cause(&[], 0x1), Cause::Other);
    }

    /// Timer and device wakeups are recognized as interrupts; a futex_wake from a syscall is not.
    #[test]
    fn interrupt_wakers() {
        assert!(is_interrupt_stack([
            "asm_sysvec_apic_timer_interrupt",
            "hrtimer_interrupt",
            "__hrtimer_run_queues",
            "hrtimer_wakeup",
            "try_to_wake_up"
        ]));
        assert!(!is_interrupt_stack([
            "entry_SYSCALL_64_after_hwframe",
            "do_syscall_64",
            "__x64_sys_futex",
            "futex_wake",
            "try_to_wake_up"
        ]));
        // A loopback TCP send: the receive softirq runs in the sender's context.
        let loopback_send = [
            "do_syscall_64",
            "__sys_sendto",
            "tcp_sendmsg",
            "ip_finish_output2",
            "__dev_queue_xmit",
            "__local_bh_enable_ip",
            "do_softirq",
            "handle_softirqs",
            "net_rx_action",
            "tcp_v4_rcv",
            "sock_def_readable",
            "try_to_wake_up",
        ];
        assert!(!is_interrupt_stack(loopback_send));
        // The same receive path entered from a device interrupt's exit is an interrupt's.
        assert!(is_interrupt_stack([
            "asm_common_interrupt",
            "irq_exit_rcu",
            "handle_softirqs",
            "net_rx_action",
            "tcp_v4_rcv",
            "sock_def_readable",
            "try_to_wake_up",
        ]));
    }

    /// The cause's pseudo frame names it.
    #[test]
    fn pseudo_frames() {
        assert_eq!(Cause::Lock.frame().function, "[off-cpu: lock]");
        assert_eq!(
            Cause::RunQueue.frame().module.as_deref(),
            Some(OFF_CPU_MODULE)
        );
    }
}
