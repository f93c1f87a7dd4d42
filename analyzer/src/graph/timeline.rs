//! What each thread did and when: the time-resolved evidence of a window.
//!
//! The store's thread samples and wait records (schema 4), or a recording's, as per-thread
//! sequences in time order: on-CPU samples, and waits with who ended them. From them a wait for
//! thread B is charged to what B did *during* that wait ([`super::resolved`]), not to B's
//! average over the window.

use crate::offcpu::Cause;

use super::evidence::{FunctionId, ThreadId};

/// Index into [`Timeline::stacks`].
pub type StackRef = u32;

/// The time-resolved evidence of a window: per thread, its on-CPU samples and its waits.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    /// Stacks (functions, root first; inlined frames left out), shared by samples and waits.
    pub stacks: Vec<Vec<FunctionId>>,
    /// Per thread ([`ThreadId`] index): on-CPU samples, by time.
    pub samples: Vec<Vec<TimedSample>>,
    /// Per thread: waits, by start.
    pub waits: Vec<Vec<TimedWait>>,
    /// Per thread: chosen by the window's selector (the others came in as wakers of those).
    pub selected: Vec<bool>,
    /// Per thread: seen running as background work (`SCHED_IDLE`, nice ≥ 10): never a request
    /// thread.
    pub background: Vec<bool>,
    /// Per thread: its requests timed by a latency probe, (start, end) Unix ns, in order and
    /// apart (overlapping ones merged): where any thread has them, they say which threads serve
    /// requests and when.
    pub requests: Vec<Vec<(i64, i64)>>,
    /// Names of the kernel's reasons for ending waits (`jbd2`, `kworker`, `timer`, `disk`),
    /// indexed by [`TimedWaker::Kernel`]'s `reason`.
    pub reasons: Vec<String>,
    /// The on-CPU sampling period, ns: each sample stands for this much CPU time.
    pub period_ns: f64,
    stack_index: std::collections::HashMap<Vec<FunctionId>, StackRef>,
}

/// An on-CPU sample of a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedSample {
    /// When, Unix ns.
    pub time_ns: i64,
    /// Its stack.
    pub stack: StackRef,
}

/// A wait of a thread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimedWait {
    /// Switch-out, Unix ns.
    pub start_ns: i64,
    /// Switch-out to wakeup, ns.
    pub blocked_ns: i64,
    /// Wakeup to running again, ns.
    pub runq_ns: i64,
    /// The blocked stack.
    pub stack: StackRef,
    /// Why it waited.
    pub cause: Cause,
    /// How many waits it stands for.
    pub weight: f64,
    /// Who ended it.
    pub waker: TimedWaker,
}

impl TimedWait {
    /// The wakeup time, Unix ns.
    pub fn wake_ns(&self) -> i64 {
        self.start_ns + self.blocked_ns
    }
}

/// Who ended a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimedWaker {
    /// Nobody seen: run-queue time, or a wakeup not captured.
    None,
    /// A program's thread, with its stack at the wakeup.
    Thread {
        /// The waking thread.
        thread: ThreadId,
        /// Its stack.
        stack: StackRef,
    },
    /// The kernel: an interrupt, a kernel thread or the idle task.
    Kernel {
        /// Index into [`Timeline::reasons`].
        reason: u32,
        /// The kernel stack of the wakeup.
        stack: StackRef,
    },
}

impl Timeline {
    /// An empty timeline of samples taken every `period_ns`.
    pub fn new(period_ns: f64) -> Timeline {
        Timeline {
            period_ns,
            ..Timeline::default()
        }
    }

    /// The id of a stack, interned when new.
    pub fn stack(&mut self, frames: &[FunctionId]) -> StackRef {
        if let Some(&id) = self.stack_index.get(frames) {
            return id;
        }
        let id = self.stacks.len() as StackRef;
        self.stacks.push(frames.to_vec());
        self.stack_index.insert(frames.to_vec(), id);
        id
    }

    /// The id of a kernel reason, interned when new.
    pub fn reason(&mut self, name: &str) -> u32 {
        match self.reasons.iter().position(|r| r == name) {
            Some(i) => i as u32,
            None => {
                self.reasons.push(name.to_owned());
                (self.reasons.len() - 1) as u32
            }
        }
    }

    /// Makes room for thread `t`.
    pub fn ensure_thread(&mut self, t: ThreadId) {
        let n = t as usize + 1;
        if self.samples.len() < n {
            self.samples.resize_with(n, Vec::new);
            self.waits.resize_with(n, Vec::new);
            self.selected.resize(n, false);
            self.background.resize(n, false);
            self.requests.resize_with(n, Vec::new);
        }
    }

    /// Sorts every thread's samples and waits by time (after they were added in any order).
    pub fn sort(&mut self) {
        for s in &mut self.samples {
            s.sort_by_key(|s| s.time_ns);
        }
        for w in &mut self.waits {
            w.sort_by_key(|w| w.start_ns);
        }
        for spans in &mut self.requests {
            spans.sort_unstable();
            // A nested probed call (a probed function calling another) is inside its caller's.
            let mut merged: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
            for &(start, end) in spans.iter() {
                match merged.last_mut() {
                    Some(last) if start <= last.1 => last.1 = last.1.max(end),
                    _ => merged.push((start, end)),
                }
            }
            *spans = merged;
        }
    }

    /// Whether any thread has requests timed by a probe.
    pub fn has_requests(&self) -> bool {
        self.requests.iter().any(|r| !r.is_empty())
    }

    /// The parts of `interval` (start, end) inside thread `t`'s requests.
    pub fn inside_requests(&self, t: usize, interval: (i64, i64)) -> Vec<(i64, i64)> {
        self.request_parts(t, interval).collect()
    }

    /// Whether any of `interval` (start, end) lies inside thread `t`'s requests.
    pub fn in_requests(&self, t: usize, interval: (i64, i64)) -> bool {
        self.request_parts(t, interval).next().is_some()
    }

    fn request_parts(&self, t: usize, (s, e): (i64, i64)) -> impl Iterator<Item = (i64, i64)> + '_ {
        let spans = self.requests.get(t).map_or(&[][..], Vec::as_slice);
        let first = spans.partition_point(|&(_, end)| end <= s);
        spans[first..]
            .iter()
            .take_while(move |&&(start, _)| start < e)
            .map(move |&(start, end)| (start.max(s), end.min(e)))
            .filter(|(a, b)| b > a)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.samples.iter().all(Vec::is_empty) && self.waits.iter().all(Vec::is_empty)
    }
}

/// The reason named for a kernel thread that ended a wait, from its name: `jbd2/vda1-8` →
/// `jbd2`, `kworker/u4:2` → `kworker`, `swapper/1` (the idle task) → `idle`.
pub fn kernel_thread_reason(comm: &str) -> String {
    let base = comm.split('/').next().unwrap_or(comm);
    match base {
        "swapper" | "" => "idle".to_owned(),
        b => b.to_owned(),
    }
}

/// The reason named for an interrupt that ended a wait, from the kernel functions of its stack
/// (any order): `timer`, `disk`, `network`, else `interrupt`.
pub fn interrupt_reason<'a>(kernel_functions: impl IntoIterator<Item = &'a str>) -> &'static str {
    let mut reason = "interrupt";
    for f in kernel_functions {
        if f.starts_with("hrtimer") || f.starts_with("run_timer") || f.contains("timer_fn") {
            return "timer";
        }
        if f.starts_with("blk_")
            || f.starts_with("scsi_")
            || f.starts_with("nvme_")
            || f.starts_with("virtblk")
            || f.starts_with("bio_endio")
        {
            reason = "disk";
        } else if (f.starts_with("net_rx") || f.starts_with("napi_")) && reason == "interrupt" {
            reason = "network";
        }
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests are merged when nested and cut to an interval.
    #[test]
    fn requests_inside_an_interval() {
        let mut tl = Timeline::new(1.0);
        tl.ensure_thread(0);
        tl.requests[0] = vec![(50, 60), (10, 20), (12, 15), (30, 40)];
        tl.sort();
        assert_eq!(tl.requests[0], [(10, 20), (30, 40), (50, 60)]);
        assert_eq!(
            tl.inside_requests(0, (15, 55)),
            [(15, 20), (30, 40), (50, 55)]
        );
        assert_eq!(tl.inside_requests(0, (20, 30)), []);
        assert!(tl.in_requests(0, (19, 21)) && !tl.in_requests(0, (20, 30)));
        assert_eq!(tl.inside_requests(1, (0, 100)), []);
    }

    /// Kernel threads are named by their kind, not their instance; the idle task as idle.
    #[test]
    fn kernel_reasons() {
        assert_eq!(kernel_thread_reason("jbd2/vda1-8"), "jbd2");
        assert_eq!(kernel_thread_reason("kworker/u4:2"), "kworker");
        assert_eq!(kernel_thread_reason("swapper/1"), "idle");
        assert_eq!(
            interrupt_reason([
                "asm_sysvec_apic_timer_interrupt",
                "hrtimer_interrupt",
                "hrtimer_wakeup"
            ]),
            "timer"
        );
        assert_eq!(
            interrupt_reason(["common_interrupt", "blk_mq_complete_request"]),
            "disk"
        );
        assert_eq!(interrupt_reason(["common_interrupt"]), "interrupt");
    }
}
