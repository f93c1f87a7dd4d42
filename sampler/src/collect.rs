//! Draining the sampler into symbolized observations: what `record` and the agent consume.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use critpath_analyzer::Frame;
use critpath_analyzer::offcpu::OffCpuWait;
use critpath_common::{OffCpuEvent, SampleHeader};

use crate::offcpu::WaitStacks;
use crate::{Error, Event, OwnedUserStack, Sampler, Symbolizer, UserStack, offcpu, sys};

/// One symbolized observation.
#[derive(Clone, Debug)]
pub enum Observation {
    /// An on-CPU sample.
    OnCpu {
        /// When it was taken, Unix ns.
        time_unix_ns: i64,
        /// Process id.
        pid: u32,
        /// Thread id.
        tid: u32,
        /// Thread name.
        comm: String,
        /// The stack, root first.
        frames: Vec<Frame>,
    },
    /// A finished off-CPU wait.
    OffCpu(OffCpuWait),
    /// A call of a probed function (a latency probe) returned.
    Call {
        /// Index of the probe in [`crate::SamplerConfig::probes`].
        probe: u32,
        /// Process id.
        pid: u32,
        /// Thread id.
        tid: u32,
        /// Entry, Unix ns.
        start_unix_ns: i64,
        /// Entry to return, ns.
        duration_ns: u64,
    },
}

/// How long a reader should wait for events at most ([`Collector::poll`]'s timeout). Wait stacks
/// are copied into the ring buffer without waking the reader (the eBPF `wakeup_flags`), so after
/// one, events wait for this timeout: it must be short enough that a short-lived process (a shell
/// command, a script's interpreter) is still alive when its first event is read, so that its
/// mappings can be. At 100 ms, most samples of a churn of 70-ms Python processes could not be
/// symbolized (`bench/churn.py`: 79% of them held an address in no known mapping; 2.8% at 20 ms).
pub const POLL_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(20);

/// Turns the sampler's raw events into [`Observation`]s: symbolizes stacks, resolves off-CPU
/// stack ids, and re-reads a process's mappings when it execs.
pub struct Collector {
    symbolizer: Symbolizer,
    /// Off-CPU events waiting for their stack ids (which need the sampler, busy while polling),
    /// with their copied user stacks.
    pending: Vec<(OffCpuEvent, WaitStacks)>,
    /// User stacks copied for waits whose events have not come (yet).
    wait_copies: WaitCopies,
    unix_offset_ns: i64,
    /// When processes not seen for [`FORGET_IDLE`] were last forgotten.
    forgot_at: Instant,
}

/// Processes whose samples stopped this long ago are forgotten by the symbolizer (their
/// mappings are read again if they come back).
const FORGET_IDLE: Duration = Duration::from_secs(600);
/// How long the files opened for symbols stay open (see [`Symbolizer::release_files`]).
const RELEASE_FILES: Duration = Duration::from_secs(300);

impl Collector {
    /// A collector symbolizing with `symbolizer`.
    pub fn new(symbolizer: Symbolizer) -> Self {
        Self {
            symbolizer,
            pending: Vec::new(),
            wait_copies: WaitCopies::new(WAIT_COPIES_MAX_BYTES),
            unix_offset_ns: sys::monotonic_to_unix_offset_ns(),
            forgot_at: Instant::now(),
        }
    }

    /// The symbolizer, for its statistics.
    pub fn symbolizer(&self) -> &Symbolizer {
        &self.symbolizer
    }

    /// Waits up to `timeout` for events and hands every resulting observation to `f`, in order
    /// (off-CPU waits of a poll after its on-CPU samples). Returns the number of events read.
    ///
    /// # Errors
    /// As [`Sampler::poll`].
    pub fn poll(
        &mut self,
        sampler: &mut Sampler,
        timeout: Duration,
        mut f: impl FnMut(Observation),
    ) -> Result<usize, Error> {
        let n = sampler.poll(timeout, |event| match event {
            Event::OnCpu(event) => {
                let frames = self.symbolizer.symbolize_event(event);
                f(on_cpu(&event.header, self.unix_offset_ns, frames));
            }
            Event::OnCpuStack(event) => {
                let frames = self.symbolizer.symbolize_stack_event(event);
                f(on_cpu(&event.header, self.unix_offset_ns, frames));
            }
            Event::OffCpu(event) => {
                // Read the mappings now, while the processes surely live.
                self.symbolizer.observe_process(event.pid);
                self.symbolizer.observe_process(event.waker_pid);
                let stacks = self.wait_copies.take(event.tid, event.start_ns);
                self.pending.push((*event, stacks));
            }
            Event::WaitStack {
                role,
                tid,
                start_ns,
                stack,
            } => self.wait_copies.insert(role, tid, start_ns, &stack),
            Event::Exec { pid } => self.symbolizer.process_exec(pid),
            Event::Call(call) => f(Observation::Call {
                probe: call.probe,
                pid: call.pid,
                tid: call.tid,
                start_unix_ns: call.start_ns as i64 + self.unix_offset_ns,
                duration_ns: call.end_ns.saturating_sub(call.start_ns),
            }),
        })?;
        if self.forgot_at.elapsed() >= FORGET_IDLE / 10 {
            self.forgot_at = Instant::now();
            if self.symbolizer.release_files(RELEASE_FILES) {
                log::debug!("released the files opened for symbols");
            }
            let forgotten = self.symbolizer.forget_idle(FORGET_IDLE);
            if forgotten > 0 {
                log::debug!("forgot {forgotten} processes idle for {FORGET_IDLE:?}");
            }
            let dropped = self
                .wait_copies
                .retain_processes(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
            if dropped > 0 {
                log::debug!("dropped {dropped} copied stacks of waits of exited processes");
            }
        }
        for (event, stacks) in std::mem::take(&mut self.pending) {
            f(Observation::OffCpu(offcpu::resolve(
                sampler,
                &mut self.symbolizer,
                &event,
                &stacks,
                self.unix_offset_ns,
            )));
        }
        Ok(n)
    }

    /// Copied user stacks held for waits still in progress, and their bytes.
    pub fn held_wait_stacks(&self) -> (usize, usize) {
        (self.wait_copies.copies.len(), self.wait_copies.bytes)
    }
}

/// Most bytes of copied user stacks held for waits in progress. Each thread blocked right now
/// (and sampled by the capture budget) holds its copy until it wakes: a few KiB each, the
/// stack above its stack pointer. Past this, the oldest copies are dropped, and the waits they
/// belonged to show a `[truncated]` user stack: on a host with thousands of idle threads, the
/// ones that have been blocked longest.
const WAIT_COPIES_MAX_BYTES: usize = 32 << 20;

/// User stacks copied at switch-out or wakeup ([`Event::WaitStack`]), kept by blocked thread and
/// role until the wait's event comes; a thread's next copy replaces the last (whose wait ended
/// below the minimum, or was lost).
struct WaitCopies {
    copies: HashMap<(u32, u32), HeldCopy>,
    /// Insertion order, for dropping the oldest; entries replaced since are skipped.
    order: VecDeque<((u32, u32), u64)>,
    bytes: usize,
    max_bytes: usize,
    next_seq: u64,
}

struct HeldCopy {
    start_ns: u64,
    seq: u64,
    stack: OwnedUserStack,
}

impl WaitCopies {
    fn new(max_bytes: usize) -> Self {
        Self {
            copies: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            max_bytes,
            next_seq: 0,
        }
    }

    fn insert(&mut self, role: u32, tid: u32, start_ns: u64, stack: &UserStack<'_>) {
        let stack = stack.to_owned();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += stack.len();
        let key = (tid, role);
        if let Some(old) = self.copies.insert(
            key,
            HeldCopy {
                start_ns,
                seq,
                stack,
            },
        ) {
            self.bytes -= old.stack.len();
        }
        self.order.push_back((key, seq));
        while self.bytes > self.max_bytes {
            let Some((key, seq)) = self.order.pop_front() else {
                break;
            };
            if self.copies.get(&key).is_some_and(|c| c.seq == seq) {
                let dropped = self.copies.remove(&key).expect("present");
                self.bytes -= dropped.stack.len();
            }
        }
        // Replaced entries stay in `order` until they reach its front; compact it when they
        // outnumber the live ones.
        if self.order.len() > 2 * self.copies.len() + 1024 {
            let copies = &self.copies;
            self.order
                .retain(|(key, seq)| copies.get(key).is_some_and(|c| c.seq == *seq));
        }
    }

    /// Drops the copies of processes for which `alive` is false (exited: their waits will never
    /// be reported); returns how many were dropped.
    fn retain_processes(&mut self, mut alive: impl FnMut(u32) -> bool) -> usize {
        let mut known = HashMap::new();
        let before = self.copies.len();
        let mut freed = 0;
        self.copies.retain(|_, held| {
            let keep = *known
                .entry(held.stack.pid())
                .or_insert_with(|| alive(held.stack.pid()));
            if !keep {
                freed += held.stack.len();
            }
            keep
        });
        self.bytes -= freed;
        before - self.copies.len()
    }

    /// The copies of thread `tid`'s wait that started at `start_ns`.
    fn take(&mut self, tid: u32, start_ns: u64) -> WaitStacks {
        let mut take = |role| {
            let key = (tid, role);
            if self.copies.get(&key)?.start_ns != start_ns {
                return None;
            }
            let held = self.copies.remove(&key)?;
            self.bytes -= held.stack.len();
            Some(held.stack)
        };
        WaitStacks {
            waiter: take(critpath_common::wait_copies::ROLE_WAITER),
            waker: take(critpath_common::wait_copies::ROLE_WAKER),
        }
    }
}

/// The observation of an on-CPU sample with its symbolized stack.
fn on_cpu(header: &SampleHeader, unix_offset_ns: i64, frames: Vec<Frame>) -> Observation {
    Observation::OnCpu {
        time_unix_ns: header.time_ns as i64 + unix_offset_ns,
        pid: header.pid,
        tid: header.tid,
        comm: String::from_utf8_lossy(header.comm_bytes()).into_owned(),
        frames,
    }
}

#[cfg(test)]
mod tests {
    use critpath_common::UserRegs;
    use critpath_common::wait_copies::{ROLE_WAITER, ROLE_WAKER};

    use super::*;

    fn stack(bytes: &[u8]) -> UserStack<'_> {
        UserStack {
            pid: 7,
            regs: UserRegs {
                ip: 1,
                sp: 0x1000,
                bp: 0,
            },
            base: 0x1000,
            bytes,
        }
    }

    /// A wait's copies are found by thread and start, a thread's next copy replaces the last,
    /// and past the byte limit the oldest copies go.
    #[test]
    fn wait_copies_are_matched_replaced_and_bounded() {
        let mut copies = WaitCopies::new(300);
        copies.insert(ROLE_WAITER, 1, 10, &stack(&[1; 100]));
        copies.insert(ROLE_WAKER, 1, 10, &stack(&[2; 50]));
        copies.insert(ROLE_WAITER, 2, 20, &stack(&[3; 100]));
        assert_eq!(copies.bytes, 250);

        // Another start: not this wait's copies.
        let none = copies.take(1, 11);
        assert!(none.waiter.is_none() && none.waker.is_none());
        let both = copies.take(1, 10);
        assert_eq!(both.waiter.unwrap().as_stack().bytes, &[1; 100][..]);
        assert_eq!(both.waker.unwrap().as_stack().bytes, &[2; 50][..]);
        assert_eq!(copies.bytes, 100);

        // Thread 2 blocks again before its first wait was reported: the copy is replaced.
        copies.insert(ROLE_WAITER, 2, 30, &stack(&[4; 100]));
        assert_eq!(copies.bytes, 100);
        assert!(copies.take(2, 20).waiter.is_none());
        copies.insert(ROLE_WAITER, 2, 40, &stack(&[5; 100]));

        // Over the limit: the oldest held copy (thread 2's) is dropped, not the newest.
        copies.insert(ROLE_WAITER, 3, 50, &stack(&[6; 150]));
        copies.insert(ROLE_WAITER, 4, 60, &stack(&[7; 100]));
        assert!(copies.bytes <= 300, "{}", copies.bytes);
        assert!(copies.take(2, 40).waiter.is_none());
        assert!(copies.take(4, 60).waiter.is_some());
        assert!(copies.take(3, 50).waiter.is_some());
        assert_eq!(copies.bytes, 0);

        // Copies of exited processes go.
        copies.insert(ROLE_WAITER, 5, 70, &stack(&[8; 10]));
        let mut other = stack(&[9; 20]);
        other.pid = 8;
        copies.insert(ROLE_WAITER, 6, 80, &other);
        assert_eq!(copies.retain_processes(|pid| pid != 7), 1);
        assert_eq!(copies.bytes, 20);
        assert!(copies.take(6, 80).waiter.is_some());
    }

    /// A copy keeps only the stack from the stack pointer up: the rest of its page is dead.
    #[test]
    fn held_copies_start_at_the_stack_pointer() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut copy = stack(&bytes);
        copy.regs.sp = 0x1000 + 200;
        let owned = copy.to_owned();
        assert_eq!(owned.len(), 56);
        assert_eq!(owned.as_stack().base, 0x1000 + 200);
        assert_eq!(owned.as_stack().bytes[0], 200);
    }
}
