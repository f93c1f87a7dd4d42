//! Interval aggregation: samples summed per (series, stack, kind) over a fixed interval.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::offcpu::Cause;
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
    /// The wakeup came from interrupt context: the kernel (a timer, a device) ended the wait.
    pub in_interrupt: bool,
    /// Waits captured.
    pub count: u64,
    /// Waits they stand for (sum of 1 / capture probability).
    pub weight: f64,
    /// Blocked time they stand for (each wait's blocked time × its weight), ns.
    pub blocked_ns: i64,
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
}

impl Batch {
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
fn stack_hash(frames: &[Frame]) -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = foldhash::quality::FixedState::with_seed(0x6372_6974_7061_7468).build_hasher();
    h.write_usize(frames.len());
    for f in frames {
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
        }
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
        let finished = self.enter(time_ms);
        let stack_id = self.stack(frames);
        let series_id = intern(&mut self.series, &mut self.series_list, series);
        *self.rows.entry((series_id, stack_id, kind)).or_default() += value;
        finished
    }

    /// The id of a stack of this interval, interned when new.
    fn stack(&mut self, frames: &[Frame]) -> u32 {
        let hash = stack_hash(frames);
        let seen = self.stacks.get(&hash).copied().filter(|&id| {
            let stored = &self.stack_list[id as usize];
            stored.len() == frames.len()
                && stored
                    .last()
                    .map(|&f| &self.frame_list[f as usize].function)
                    == frames.last().map(|f| &f.function)
        });
        match seen {
            Some(id) => id,
            None => {
                let ids = frames
                    .iter()
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
        let batch = Batch {
            start_ms: start,
            end_ms: start + self.interval_ms,
            period_ns: self.period_ns,
            frames: std::mem::take(&mut self.frame_list),
            stacks: std::mem::take(&mut self.stack_list),
            series: std::mem::take(&mut self.series_list),
            rows,
            wakeups,
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
}
