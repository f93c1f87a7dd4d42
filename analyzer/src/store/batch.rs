//! Interval aggregation: samples summed per (series, stack, kind) over a fixed interval.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::offcpu::{Cause, OffCpuWait};
use crate::{Frame, Profile, SampleLabels, ValueType};

/// The labels of one series: what a sample is attributed to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesLabels {
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Thread (or process) name.
    pub comm: String,
    /// Executable path.
    pub exe: String,
    /// GNU build-id of the executable, hex; empty when unknown.
    pub build_id: String,
    /// Service name; defaults to the process's comm.
    pub service: String,
}

impl SeriesLabels {
    /// A label value by name (`host`, `pid`, `comm`, `exe`, `build_id`, `service`).
    pub fn get(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        Some(match name {
            "host" => self.host.as_str().into(),
            "pid" => self.pid.to_string().into(),
            "comm" => self.comm.as_str().into(),
            "exe" => self.exe.as_str().into(),
            "build_id" => self.build_id.as_str().into(),
            "service" => self.service.as_str().into(),
            _ => return None,
        })
    }

    /// The label names, in a stable order.
    pub const NAMES: [&'static str; 6] = ["host", "pid", "comm", "exe", "build_id", "service"];
}

/// What a row's value measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SampleKind {
    /// On-CPU samples (a count; multiply by the period for time).
    Cpu,
    /// Off-CPU time in nanoseconds (weighted), the cause in the stack's last frame.
    OffCpu,
}

/// One aggregated row of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// Index into [`Batch::series`].
    pub series: u32,
    /// Index into [`Batch::stacks`].
    pub stack: u32,
    /// What `value` measures.
    pub kind: SampleKind,
    /// Sample count (cpu) or nanoseconds (off-CPU).
    pub value: i64,
}

/// Waits of one thread in one stack that another thread (or an interrupt) ended, summed over
/// an interval: the wakeup edges the wait-for graph is built from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wakeup {
    /// The thread that waited: an index into [`Batch::series`].
    pub wakee: u32,
    /// Its blocked stack (without the `[off-cpu: …]` frame): an index into [`Batch::stacks`].
    pub wakee_stack: u32,
    /// The waking thread (in an interrupt, which the kernel handled: the wakee itself): an
    /// index into [`Batch::series`].
    pub waker: u32,
    /// Its stack at the wakeup (empty in an interrupt): an index into [`Batch::stacks`].
    pub waker_stack: u32,
    /// Why the wakee waited.
    pub cause: Cause,
    /// The kernel ended the wait: from interrupt context (a timer, a device), or a kernel thread
    /// (a journal commit, a worker finishing I/O) or the idle task woke it.
    pub in_interrupt: bool,
    /// Waits captured.
    pub count: u64,
    /// Waits they stand for (sum of 1 / capture probability).
    pub weight: f64,
    /// Blocked time they stand for (each wait's blocked time × its weight), ns.
    pub blocked_ns: i64,
}

/// An on-CPU sample of one thread at one moment (store schema 4): with [`WaitRecord`]s, what
/// the time-resolved critical path is computed from (which thread ran what while another waited
/// for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadSample {
    /// Its series (process and thread name): an index into [`Batch::series`].
    pub series: u32,
    /// Thread id.
    pub tid: u32,
    /// When it was taken, Unix ns.
    pub time_ns: i64,
    /// Its stack: an index into [`Batch::stacks`].
    pub stack: u32,
    /// Whether the thread ran as background work then: `SCHED_IDLE`, or nice 10 or more.
    /// Such a thread is never taken for a request thread.
    #[serde(default)]
    pub background: bool,
}

/// One request of a thread, from its start to its end: a call of a function timed by a latency
/// probe (`critpath record --probe`). Where a thread has them, only its time inside them is
/// request time; the rest is idle, however busy (see [`crate::graph::Resolved`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSpan {
    /// The thread's series: an index into [`Batch::series`].
    pub series: u32,
    /// Thread id.
    pub tid: u32,
    /// Start, Unix ns.
    pub start_ns: i64,
    /// Length, ns.
    pub duration_ns: i64,
}

/// Who ended a recorded wait ([`WaitRecord::waker`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WakerKind {
    /// No wakeup seen: run-queue time (preempted), or a wakeup the sampler did not see.
    None,
    /// A program's thread: [`WaitRecord::waker_series`], `waker_tid`, and its stack at the
    /// wakeup in `waker_stack`.
    Thread,
    /// Interrupt context (a timer, a device completion); `waker_stack` is the kernel stack of
    /// the wakeup.
    Interrupt,
    /// A kernel thread (`jbd2/vda1-8` committing a journal, a `kworker` finishing I/O) or the
    /// idle task: `waker_series` names it, `waker_stack` is its kernel stack.
    Kernel,
}

impl WakerKind {
    /// Every kind.
    pub const ALL: [WakerKind; 4] = [Self::None, Self::Thread, Self::Interrupt, Self::Kernel];

    /// The snake_case name (the store's column value).
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Thread => "thread",
            Self::Interrupt => "interrupt",
            Self::Kernel => "kernel",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<WakerKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One off-CPU wait of one thread with its times and who ended it (store schema 4), kept beside
/// the interval's sums so that a wait can be charged to what its waker did *during* it. An
/// interval keeps at most its budget of them ([`Aggregator::with_wait_records`]), drawn with
/// probability proportional to their weighted blocked time and reweighted, so that weighted
/// sums over them stay unbiased.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WaitRecord {
    /// The waiting thread's series: an index into [`Batch::series`].
    pub series: u32,
    /// Its thread id.
    pub tid: u32,
    /// Switch-out, Unix ns.
    pub start_ns: i64,
    /// Switch-out to wakeup (to switch-in when no wakeup was seen), ns.
    pub blocked_ns: i64,
    /// Wakeup to switch-in (waiting for a CPU), ns.
    pub runq_ns: i64,
    /// The blocked stack (without the `[off-cpu: …]` frame): an index into [`Batch::stacks`].
    pub stack: u32,
    /// Why it waited.
    pub cause: Cause,
    /// How many waits it stands for (1 / the probability it was kept with).
    pub weight: f64,
    /// Who ended it.
    pub waker: WakerKind,
    /// The waker's series ([`WakerKind::Thread`], [`WakerKind::Kernel`]); else the waiter's.
    pub waker_series: u32,
    /// The waker's thread id (0 when none).
    pub waker_tid: u32,
    /// The waker's stack at the wakeup (kernel frames only for the kernel): an index into
    /// [`Batch::stacks`].
    pub waker_stack: u32,
}

/// One interval's aggregated samples, self-contained: it defines the frames, stacks and series
/// its rows refer to, so any batch can be read, recovered or compacted on its own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Interval start, Unix ms (inclusive).
    pub start_ms: i64,
    /// Interval end, Unix ms (exclusive).
    pub end_ms: i64,
    /// On-CPU sampling period in ns, to turn counts into time.
    pub period_ns: i64,
    /// Frames referred to by `stacks`.
    pub frames: Vec<Frame>,
    /// Stacks as indices into `frames`, root first.
    pub stacks: Vec<Vec<u32>>,
    /// Series referred to by rows.
    pub series: Vec<SeriesLabels>,
    /// The aggregated values.
    pub rows: Vec<Row>,
    /// Who ended the off-CPU waits (store schema 2; empty in batches of schema 1).
    pub wakeups: Vec<Wakeup>,
    /// Every on-CPU sample with its thread and time (store schema 4; empty before).
    pub thread_samples: Vec<ThreadSample>,
    /// Off-CPU waits one by one, up to the interval's budget (store schema 4; empty before).
    pub waits: Vec<WaitRecord>,
    /// Requests timed by latency probes (recordings; the write-ahead log keeps them, the
    /// store's parts not yet: the agent places no probes).
    #[serde(default)]
    pub requests: Vec<RequestSpan>,
}

impl Batch {
    /// Whether it carries thread samples or wait records (store schema 4).
    pub fn has_records(&self) -> bool {
        !self.thread_samples.is_empty() || !self.waits.is_empty()
    }

    /// Sum of the values of one kind.
    pub fn total(&self, kind: SampleKind) -> i64 {
        self.rows
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.value)
            .sum()
    }

    /// Adds this batch's rows of `kind` whose series `keep` accepts to `profile` (one value: the
    /// row's, as is).
    pub fn add_to_profile(
        &self,
        profile: &mut Profile,
        kind: SampleKind,
        mut keep: impl FnMut(&SeriesLabels) -> bool,
    ) {
        let mut frame_ids = vec![None; self.frames.len()];
        let mut stack_ids = vec![None; self.stacks.len()];
        for row in self.rows.iter().filter(|r| r.kind == kind) {
            let series = &self.series[row.series as usize];
            if !keep(series) {
                continue;
            }
            let stack = match stack_ids[row.stack as usize] {
                Some(id) => id,
                None => {
                    let ids: Vec<_> = self.stacks[row.stack as usize]
                        .iter()
                        .map(|&f| {
                            *frame_ids[f as usize].get_or_insert_with(|| {
                                profile.intern_frame(self.frames[f as usize].clone())
                            })
                        })
                        .collect();
                    let id = profile.intern_stack(&ids);
                    stack_ids[row.stack as usize] = Some(id);
                    id
                }
            };
            profile.add_stack(
                stack,
                &[row.value],
                SampleLabels::new(series.pid, 0, series.comm.clone()),
            );
        }
    }
}

/// The identity of a stack in an interval: a 64-bit hash of its frames' function names,
/// modules and lines. Hashing the (hot) incoming frames only, instead of comparing them with a
/// stored stack that is cold in the cache, is what makes a seen stack cheap. A hash hit is
/// checked against the stored stack's depth and leaf function; a collision that passes that
/// check (odds ~n²/2⁶⁴ for n distinct stacks) would merge two stacks that differ only inside.
fn stack_hash(frames: &[Frame], tail: Option<&Frame>) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = foldhash::quality::FixedState::with_seed(0x6372_6974_7061_7468).build_hasher();
    h.write_usize(frames.len() + usize::from(tail.is_some()));
    for f in frames.iter().chain(tail) {
        h.write(f.function.as_bytes());
        h.write(f.module.as_deref().unwrap_or("").as_bytes());
        h.write_u32(f.line.unwrap_or(0));
    }
    h.finish()
}

/// A hash map with a fast (non-DoS-resistant) hasher: keys here come from our own sampler.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Sums samples per (series, stack, kind) over fixed intervals aligned to multiples of the
/// interval length, and hands out each finished interval as a [`Batch`].
///
/// A stack seen before in the interval costs one hash of its frames and one comparison; frames
/// are interned only when a new stack arrives.
pub struct Aggregator {
    interval_ms: i64,
    period_ns: i64,
    start_ms: Option<i64>,
    frames: FastMap<Frame, u32>,
    frame_list: Vec<Frame>,
    stacks: FastMap<u64, u32>,
    stack_list: Vec<Vec<u32>>,
    series: FastMap<SeriesLabels, u32>,
    series_list: Vec<SeriesLabels>,
    rows: FastMap<(u32, u32, SampleKind), i64>,
    wakeups: FastMap<WakeupKey, Wakeup>,
    thread_samples: Vec<ThreadSample>,
    waits: Vec<WaitRecord>,
    requests: Vec<RequestSpan>,
    /// Most wait records an interval keeps.
    max_waits: usize,
    /// State of the draws that thin wait records past the budget.
    rng: u64,
}

/// What makes wakeups alike: threads, stacks, cause, context.
type WakeupKey = (u32, u32, u32, u32, Cause, bool);

/// One wakeup, as [`Aggregator::add_wakeup`] takes it.
#[derive(Clone, Copy, Debug)]
pub struct WakeupSample<'a> {
    /// The thread that waited.
    pub wakee: &'a SeriesLabels,
    /// Its blocked stack, root first, without the `[off-cpu: …]` frame.
    pub wakee_frames: &'a [Frame],
    /// The waking thread (in an interrupt, the wakee itself: the kernel woke it).
    pub waker: &'a SeriesLabels,
    /// Its stack, root first (empty in an interrupt).
    pub waker_frames: &'a [Frame],
    /// Why the wakee waited.
    pub cause: Cause,
    /// From interrupt context.
    pub in_interrupt: bool,
    /// 1 / capture probability.
    pub weight: f64,
    /// Blocked time, ns (unweighted).
    pub blocked_ns: u64,
}

impl Aggregator {
    /// An aggregator with `interval_ms` intervals (the agent's default is 10 000) for samples
    /// taken every `period_ns`.
    ///
    /// # Panics
    /// If `interval_ms` is not positive.
    pub fn new(interval_ms: i64, period_ns: i64) -> Self {
        assert!(interval_ms > 0, "the interval must be positive");
        Self {
            interval_ms,
            period_ns,
            start_ms: None,
            frames: FastMap::default(),
            frame_list: Vec::new(),
            stacks: FastMap::default(),
            stack_list: Vec::new(),
            series: FastMap::default(),
            series_list: Vec::new(),
            rows: FastMap::default(),
            wakeups: FastMap::default(),
            thread_samples: Vec::new(),
            waits: Vec::new(),
            requests: Vec::new(),
            max_waits: usize::MAX,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// Keeps at most `max_per_interval` [`WaitRecord`]s per interval (default: all). Past it,
    /// an interval's records are drawn with probability proportional to the time each stands
    /// for (its weighted blocked and run-queue time; 16 times that for a wait another thread
    /// ended), every long wait kept, and reweighted by the inverse, so that weighted sums over
    /// them stay unbiased; the interval's sums (rows, wakeups) keep every wait.
    pub fn with_wait_records(mut self, max_per_interval: usize) -> Self {
        self.max_waits = max_per_interval;
        self
    }

    /// Adds an on-CPU sample of thread `tid` taken at `time_ns` (Unix ns): its row, and its
    /// [`ThreadSample`] (`background`: see [`ThreadSample::background`]). Returns the previous
    /// interval's batch when this sample starts a new interval.
    pub fn add_on_cpu(
        &mut self,
        time_ns: i64,
        series: &SeriesLabels,
        (tid, background): (u32, bool),
        frames: &[Frame],
    ) -> Option<Batch> {
        let finished = self.enter(time_ns.div_euclid(1_000_000));
        let stack = self.stack(frames);
        let series = intern(&mut self.series, &mut self.series_list, series);
        *self
            .rows
            .entry((series, stack, SampleKind::Cpu))
            .or_default() += 1;
        self.thread_samples.push(ThreadSample {
            series,
            tid,
            time_ns,
            stack,
            background,
        });
        finished
    }

    /// Adds an off-CPU wait of a thread of `series` (the series of its waker, a thread or a
    /// kernel thread, in `waker_series`): its rows (blocked time under the cause's pseudo
    /// frame, run-queue delay under `[off-cpu: runqueue]`), its wakeup edge and its
    /// [`WaitRecord`]. Returns the previous interval's batch when this wait starts a new one.
    pub fn add_wait(
        &mut self,
        series: &SeriesLabels,
        waker_series: Option<&SeriesLabels>,
        wait: &OffCpuWait,
    ) -> Option<Batch> {
        let time_ms = wait.start_unix_ns.div_euclid(1_000_000);
        let mut finished = None;
        // The wait's stack with its cause's frame appended, interned without copying it.
        for (cause, ns) in wait.causes() {
            let frames = (&wait.frames[..], Some(&cause.frame()));
            finished = finished.or(self.add_with(time_ms, series, frames, SampleKind::OffCpu, ns));
        }
        finished = finished.or(self.enter(time_ms));
        let kind = match &wait.waker {
            None => WakerKind::None,
            Some(w) if w.in_interrupt => WakerKind::Interrupt,
            Some(w) if w.kernel_thread => WakerKind::Kernel,
            Some(_) => WakerKind::Thread,
        };
        if let Some(waker) = &wait.waker {
            // The kernel's waits name no program thread as waker: the wakee stands in.
            let thread = kind == WakerKind::Thread;
            let sample = WakeupSample {
                wakee: series,
                wakee_frames: &wait.frames,
                waker: waker_series.filter(|_| thread).unwrap_or(series),
                waker_frames: if thread { &waker.frames } else { &[] },
                cause: wait.cause,
                in_interrupt: !thread,
                weight: wait.weight,
                blocked_ns: wait.blocked_ns,
            };
            finished = finished.or(self.add_wakeup(time_ms, &sample));
        }
        let series_id = intern(&mut self.series, &mut self.series_list, series);
        let waker_id = match waker_series {
            Some(w) if matches!(kind, WakerKind::Thread | WakerKind::Kernel) => {
                intern(&mut self.series, &mut self.series_list, w)
            }
            _ => series_id,
        };
        let stack = self.stack(&wait.frames);
        let waker_stack = self.stack(wait.waker.as_ref().map_or(&[][..], |w| &w.frames));
        self.waits.push(WaitRecord {
            series: series_id,
            tid: wait.thread.tid,
            start_ns: wait.start_unix_ns,
            blocked_ns: wait.blocked_ns.min(i64::MAX as u64) as i64,
            runq_ns: wait.runq_delay_ns.min(i64::MAX as u64) as i64,
            stack,
            cause: wait.cause,
            weight: wait.weight,
            waker: kind,
            waker_series: waker_id,
            waker_tid: wait.waker.as_ref().map_or(0, |w| w.thread.tid),
            waker_stack,
        });
        finished
    }

    /// Adds a request of thread `tid` (a probed call) from `start_ns` (Unix ns) for
    /// `duration_ns`. Returns the previous interval's batch when it starts a new interval.
    pub fn add_request(
        &mut self,
        series: &SeriesLabels,
        tid: u32,
        start_ns: i64,
        duration_ns: i64,
    ) -> Option<Batch> {
        let finished = self.enter(start_ns.div_euclid(1_000_000));
        let series = intern(&mut self.series, &mut self.series_list, series);
        self.requests.push(RequestSpan {
            series,
            tid,
            start_ns,
            duration_ns: duration_ns.max(0),
        });
        finished
    }

    /// Thins the interval's wait records to the budget (see [`Aggregator::with_wait_records`]).
    fn thin_waits(&mut self) {
        if self.waits.len() <= self.max_waits {
            return;
        }
        // A wait another thread ended is an edge of the wait-for graph, and it is what the
        // time-resolved critical path follows from one thread to the next: such waits are
        // drawn with THREAD_EDGE_PRIORITY times the probability of a kernel-ended wait of the
        // same length (a sleep between jobs, a poll for clients), and weighted accordingly.
        let size = |w: &WaitRecord| {
            let priority = if w.waker == WakerKind::Thread {
                THREAD_EDGE_PRIORITY
            } else {
                1.0
            };
            w.weight * (w.blocked_ns + w.runq_ns) as f64 * priority
        };
        let sizes: Vec<f64> = self.waits.iter().map(size).collect();
        let c = pps_scale(&sizes, self.max_waits as f64);
        let mut kept = Vec::with_capacity(self.max_waits + self.max_waits / 8);
        for (w, x) in self.waits.drain(..).zip(sizes) {
            let p = (c * x).min(1.0);
            // splitmix64: a fixed sequence, so that an interval thins the same way every run.
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let u = (z ^ (z >> 31)) as f64 / u64::MAX as f64;
            if p > 0.0 && u < p {
                kept.push(WaitRecord {
                    weight: w.weight / p,
                    ..w
                });
            }
        }
        self.waits = kept;
    }

    /// Moves to the interval of `time_ms`; returns the previous interval's batch when that is a
    /// new one.
    fn enter(&mut self, time_ms: i64) -> Option<Batch> {
        let interval = time_ms.div_euclid(self.interval_ms) * self.interval_ms;
        let finished = match self.start_ms {
            Some(start) if interval > start => self.flush(),
            _ => None,
        };
        if self.start_ms.is_none() {
            self.start_ms = Some(interval);
        }
        finished
    }

    /// Adds a wakeup seen at `time_ms` (when the wait began). Returns the previous interval's
    /// batch when this starts a new interval.
    pub fn add_wakeup(&mut self, time_ms: i64, w: &WakeupSample<'_>) -> Option<Batch> {
        let finished = self.enter(time_ms);
        let wakee = intern(&mut self.series, &mut self.series_list, w.wakee);
        let waker = intern(&mut self.series, &mut self.series_list, w.waker);
        let wakee_stack = self.stack(w.wakee_frames);
        let waker_stack = self.stack(w.waker_frames);
        let key = (
            wakee,
            wakee_stack,
            waker,
            waker_stack,
            w.cause,
            w.in_interrupt,
        );
        let sum = self.wakeups.entry(key).or_insert(Wakeup {
            wakee,
            wakee_stack,
            waker,
            waker_stack,
            cause: w.cause,
            in_interrupt: w.in_interrupt,
            count: 0,
            weight: 0.0,
            blocked_ns: 0,
        });
        sum.count += 1;
        sum.weight += w.weight;
        sum.blocked_ns += (w.blocked_ns as f64 * w.weight).round() as i64;
        finished
    }

    /// Adds a sample taken at `time_ms`. Returns the previous interval's batch when this sample
    /// starts a new interval.
    pub fn add(
        &mut self,
        time_ms: i64,
        series: &SeriesLabels,
        frames: &[Frame],
        kind: SampleKind,
        value: i64,
    ) -> Option<Batch> {
        self.add_with(time_ms, series, (frames, None), kind, value)
    }

    /// [`Aggregator::add`] of the stack `frames.0` followed by the frame `frames.1`.
    fn add_with(
        &mut self,
        time_ms: i64,
        series: &SeriesLabels,
        (frames, tail): (&[Frame], Option<&Frame>),
        kind: SampleKind,
        value: i64,
    ) -> Option<Batch> {
        let finished = self.enter(time_ms);
        let stack_id = self.stack_with(frames, tail);
        let series_id = intern(&mut self.series, &mut self.series_list, series);
        *self.rows.entry((series_id, stack_id, kind)).or_default() += value;
        finished
    }

    /// The id of a stack of this interval, interned when new.
    fn stack(&mut self, frames: &[Frame]) -> u32 {
        self.stack_with(frames, None)
    }

    /// The id of the stack `frames` followed by `tail`, interned when new.
    fn stack_with(&mut self, frames: &[Frame], tail: Option<&Frame>) -> u32 {
        let hash = stack_hash(frames, tail);
        let len = frames.len() + usize::from(tail.is_some());
        let last = tail.or(frames.last()).map(|f| &f.function);
        let seen = self.stacks.get(&hash).copied().filter(|&id| {
            let stored = &self.stack_list[id as usize];
            stored.len() == len
                && stored
                    .last()
                    .map(|&f| &self.frame_list[f as usize].function)
                    == last
        });
        match seen {
            Some(id) => id,
            None => {
                let ids = frames
                    .iter()
                    .chain(tail)
                    .map(|f| intern(&mut self.frames, &mut self.frame_list, f))
                    .collect();
                let id = self.stack_list.len() as u32;
                self.stack_list.push(ids);
                // On a (detected) collision the first stack keeps the hash; this one stays
                // uncached, still correct.
                self.stacks.entry(hash).or_insert(id);
                id
            }
        }
    }

    /// Whether the current interval has ended by `now_ms` (so [`Aggregator::flush`] should run
    /// even if no further sample arrives).
    pub fn due(&self, now_ms: i64) -> bool {
        self.start_ms
            .is_some_and(|start| now_ms >= start + self.interval_ms)
    }

    /// Ends the current interval now and returns its batch (`None` when empty).
    pub fn flush(&mut self) -> Option<Batch> {
        let start = self.start_ms.take()?;
        let mut rows: Vec<Row> = self
            .rows
            .drain()
            .map(|((series, stack, kind), value)| Row {
                series,
                stack,
                kind,
                value,
            })
            .collect();
        rows.sort_by_key(|r| (r.series, r.stack, r.kind));
        self.frames.clear();
        self.stacks.clear();
        self.series.clear();
        let mut wakeups: Vec<Wakeup> = self.wakeups.drain().map(|(_, w)| w).collect();
        wakeups.sort_by_key(|w| (w.wakee, w.wakee_stack, w.waker, w.waker_stack, w.cause));
        self.thin_waits();
        let mut waits = std::mem::take(&mut self.waits);
        waits.sort_by_key(|w| (w.start_ns, w.tid));
        let mut thread_samples = std::mem::take(&mut self.thread_samples);
        thread_samples.sort_by_key(|s| (s.time_ns, s.tid));
        let mut requests = std::mem::take(&mut self.requests);
        requests.sort_by_key(|r| (r.start_ns, r.tid));
        let batch = Batch {
            start_ms: start,
            end_ms: start + self.interval_ms,
            period_ns: self.period_ns,
            frames: std::mem::take(&mut self.frame_list),
            stacks: std::mem::take(&mut self.stack_list),
            series: std::mem::take(&mut self.series_list),
            rows,
            wakeups,
            thread_samples,
            waits,
            requests,
        };
        (!batch.rows.is_empty() || !batch.wakeups.is_empty()).then_some(batch)
    }

    /// A profile of `kind` from batches, for series the selector-like `keep` accepts, with one
    /// sample type: `samples/count` for CPU, `off_cpu/nanoseconds` for off-CPU.
    pub fn profile<'a>(
        batches: impl IntoIterator<Item = &'a Batch>,
        kind: SampleKind,
        mut keep: impl FnMut(&SeriesLabels) -> bool,
    ) -> Profile {
        let value_type = match kind {
            SampleKind::Cpu => ValueType::new("samples", "count"),
            SampleKind::OffCpu => ValueType::new("off_cpu", "nanoseconds"),
        };
        let mut profile = Profile::new(vec![value_type]);
        for batch in batches {
            batch.add_to_profile(&mut profile, kind, &mut keep);
        }
        profile
    }
}

/// How much likelier a wait ended by another thread is to be kept past the record budget than
/// a wait the kernel ended, at equal length (see `Aggregator::thin_waits`).
const THREAD_EDGE_PRIORITY: f64 = 16.0;

/// The scale `c` of probability-proportional-to-size sampling: items of sizes `x` are kept with
/// probability `min(1, c·x)`, and `c` makes the expected number kept `n` (all items with a size
/// when fewer have one).
fn pps_scale(x: &[f64], n: f64) -> f64 {
    let mut sorted: Vec<f64> = x.iter().copied().filter(|&v| v > 0.0).collect();
    if (sorted.len() as f64) <= n {
        return f64::INFINITY;
    }
    sorted.sort_by(|a, b| b.total_cmp(a));
    // The k largest are kept with certainty; the rest share n - k in proportion to size:
    // c = (n - k) / Σ_{i ≥ k} x_i, valid once c·x_k ≤ 1.
    let mut rest: f64 = sorted.iter().sum();
    for (k, &xk) in sorted.iter().enumerate() {
        let c = (n - k as f64) / rest;
        if c * xk <= 1.0 {
            return c;
        }
        rest -= xk;
    }
    f64::INFINITY
}

/// The index of `key` in `list`, appending it (and indexing it in `map`) when new. Clones the
/// key only the first time it is seen.
fn intern<K: std::hash::Hash + Eq + Clone>(
    map: &mut FastMap<K, u32>,
    list: &mut Vec<K>,
    key: &K,
) -> u32 {
    if let Some(&id) = map.get(key) {
        return id;
    }
    let id = list.len() as u32;
    list.push(key.clone());
    map.insert(key.clone(), id);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(pid: u32) -> SeriesLabels {
        SeriesLabels {
            host: "h".into(),
            pid,
            comm: format!("p{pid}"),
            service: format!("p{pid}"),
            ..SeriesLabels::default()
        }
    }

    /// Samples of one interval sum per (series, stack, kind); the next interval's first sample
    /// hands out the finished batch with its own frame, stack and series tables.
    #[test]
    fn aggregates_per_interval() {
        let mut agg = Aggregator::new(10_000, 52_631_578);
        let a = [Frame::user("main", "/a"), Frame::user("f", "/a")];
        let b = [Frame::user("main", "/a"), Frame::user("g", "/a")];
        assert!(agg.add(1_000, &series(1), &a, SampleKind::Cpu, 1).is_none());
        assert!(agg.add(2_000, &series(1), &a, SampleKind::Cpu, 1).is_none());
        assert!(agg.add(3_000, &series(1), &b, SampleKind::Cpu, 1).is_none());
        assert!(
            agg.add(4_000, &series(2), &a, SampleKind::OffCpu, 5_000_000)
                .is_none()
        );
        let batch = agg
            .add(12_000, &series(1), &a, SampleKind::Cpu, 1)
            .expect("interval over");
        assert_eq!((batch.start_ms, batch.end_ms), (0, 10_000));
        assert_eq!(batch.frames.len(), 3, "main is shared");
        assert_eq!(batch.stacks.len(), 2);
        assert_eq!(batch.series.len(), 2);
        assert_eq!(batch.total(SampleKind::Cpu), 3);
        assert_eq!(batch.total(SampleKind::OffCpu), 5_000_000);
        let next = agg.flush().unwrap();
        assert_eq!((next.start_ms, next.total(SampleKind::Cpu)), (10_000, 1));
        assert!(agg.flush().is_none());

        let p = Aggregator::profile([&batch, &next], SampleKind::Cpu, |s| s.pid == 1);
        assert_eq!(p.totals(), vec![4]);
        assert_eq!(p.inclusive_value(0, |f| f.function == "g"), 1);
    }

    fn wait(tid: u32, start_ns: i64, blocked_ns: u64, by_thread: bool) -> OffCpuWait {
        use crate::offcpu::{ThreadRef, Waker};
        let thread = |tid| ThreadRef {
            pid: 1,
            tid,
            comm: "w".into(),
        };
        OffCpuWait {
            thread: thread(tid),
            start_unix_ns: start_ns,
            blocked_ns,
            runq_delay_ns: 0,
            cause: Cause::Lock,
            weight: 1.0,
            frames: vec![Frame::user("main", "/a"), Frame::user("lock", "/a")],
            waker: Some(Waker {
                thread: thread(99),
                in_interrupt: !by_thread,
                kernel_thread: false,
                frames: Vec::new(),
            }),
        }
    }

    /// A wait's time goes under its stack with the cause's frame appended — the stacks that
    /// `split_by_cause` gives — and that stack is the same one (one id) as when it comes as
    /// plain frames.
    #[test]
    fn a_waits_stacks_are_its_frames_and_cause() {
        let mut w = wait(1, 1_000_000, 3_000_000, true);
        w.runq_delay_ns = 1_000_000;
        let mut agg = Aggregator::new(10_000, 1);
        agg.add_wait(&series(1), Some(&series(1)), &w);
        for (frames, ns) in w.split_by_cause() {
            agg.add(2, &series(1), &frames, SampleKind::OffCpu, ns);
        }
        let batch = agg.flush().unwrap();
        let mut stacks: Vec<(Vec<String>, i64)> = batch
            .rows
            .iter()
            .filter(|r| r.kind == SampleKind::OffCpu)
            .map(|r| {
                let names = batch.stacks[r.stack as usize]
                    .iter()
                    .map(|&f| batch.frames[f as usize].function.clone())
                    .collect();
                (names, r.value)
            })
            .collect();
        stacks.sort();
        let mut expected: Vec<(Vec<String>, i64)> = w
            .split_by_cause()
            .map(|(frames, ns)| (frames.into_iter().map(|f| f.function).collect(), 2 * ns))
            .collect();
        expected.sort();
        assert_eq!(stacks, expected);
        assert_eq!(stacks.len(), 2, "blocked and run-queue time, each one row");
    }

    /// Past the budget, wait records are drawn with probability proportional to their time
    /// (waits other threads ended sixteen times likelier) and reweighted: the weighted total
    /// of each kind stays what it was, within sampling error, while every wait still counts in
    /// the interval's sums.
    #[test]
    fn wait_records_are_thinned_without_bias() {
        let mut agg = Aggregator::new(10_000, 1).with_wait_records(100);
        let s = series(1);
        let mut truth = [0.0f64; 2];
        let mut sizes = Vec::new();
        for i in 0..4000u64 {
            // Lengths from 10 µs to 4 ms; every fourth wait ended by a thread.
            let blocked = 10_000 + (i * 7919 % 400) * 10_000;
            let by_thread = i % 4 == 0;
            truth[usize::from(by_thread)] += blocked as f64;
            let priority = if by_thread { THREAD_EDGE_PRIORITY } else { 1.0 };
            sizes.push((blocked as f64, priority, usize::from(by_thread)));
            agg.add_wait(
                &s,
                Some(&s),
                &wait(1, 1_000_000 + i as i64 * 1000, blocked, by_thread),
            );
        }
        // The Horvitz–Thompson estimator's standard deviation per kind:
        // √(Σ x²·(1 − π)/π), π = min(1, c·x·priority).
        let c = pps_scale(
            &sizes.iter().map(|&(x, p, _)| x * p).collect::<Vec<_>>(),
            100.0,
        );
        let mut variance = [0.0f64; 2];
        for &(x, priority, k) in &sizes {
            let pi = (c * x * priority).min(1.0);
            variance[k] += x * x * (1.0 - pi) / pi;
        }
        let batch = agg.flush().unwrap();
        assert!(
            (80..=120).contains(&batch.waits.len()),
            "{} kept",
            batch.waits.len()
        );
        let mut kept = [0.0f64; 2];
        let mut counts = [0usize; 2];
        for w in &batch.waits {
            let k = usize::from(w.waker == WakerKind::Thread);
            kept[k] += w.weight * w.blocked_ns as f64;
            counts[k] += 1;
        }
        for k in 0..2 {
            // Four standard deviations: the draws are a fixed sequence, so this is not flaky,
            // and a biased estimator would miss by more.
            let sd = variance[k].sqrt();
            assert!(
                (kept[k] - truth[k]).abs() <= 4.0 * sd,
                "kind {k}: {} against {} (sd {sd})",
                kept[k],
                truth[k]
            );
            assert!(sd < 0.5 * truth[k], "kind {k}: sd {sd} of {}", truth[k]);
        }
        // A quarter of the waits, a quarter of the time: ended by threads, but most records.
        assert!(counts[1] > 3 * counts[0], "{counts:?}");
        assert_eq!(
            batch.total(SampleKind::OffCpu),
            (truth[0] + truth[1]) as i64
        );
    }
}
