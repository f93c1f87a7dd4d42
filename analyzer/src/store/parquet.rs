//! Compaction of write-ahead log segments into time-partitioned Parquet parts (written with
//! polars), and reading them back.
//!
//! A segment `N` becomes one part per hour its batches cover:
//!
//! ```text
//! DIR/data/<YYYYMMDDHH>/<N>.frames.parquet    frame_id u32, function, module, build_id, file: str, line u32, kernel, inlined: bool
//! DIR/data/<YYYYMMDDHH>/<N>.stacks.parquet    up u32, frame_id u32?, is_stack bool  (row = node id)
//!                                             (a prefix tree, schema 3; schemas 1–2: stack_id, depth, frame_id u32)
//! DIR/data/<YYYYMMDDHH>/<N>.series.parquet    series_id u32, host, comm, exe, build_id, service: str, pid u32
//! DIR/data/<YYYYMMDDHH>/<N>.rollup.parquet    series_id, stack_id: u32, cpu_samples, cpu_ns, offcpu_ns: i64   (sums over the part)
//! DIR/data/<YYYYMMDDHH>/<N>.intervals.parquet start_ms, end_ms: i64, rows u32          (the part's distinct intervals)
//! DIR/data/<YYYYMMDDHH>/<N>.wakeups.parquet   start_ms, end_ms: i64, wakee_series, wakee_stack, waker_series, waker_stack: u32,
//!                                             cause: str, in_interrupt: bool, count: i64, weight: f64, blocked_ns: i64   (schema 2)
//! DIR/data/<YYYYMMDDHH>/<N>.threads.parquet   series_id, tid: u32, base_us: i64, dt_us, stack_id: u32   (schema 4)
//! DIR/data/<YYYYMMDDHH>/<N>.waits.parquet     series_id, tid: u32, base_us: i64, dt_us: u32, blocked_ns, runq_ns: i64, stack_id: u32,
//!                                             cause: str, weight: f64, waker: str, waker_series, waker_tid, waker_stack: u32   (schema 4)
//!                                             (rows by series, thread and time; times delta-coded, see `TimeCols`)
//! DIR/data/<YYYYMMDDHH>/<N>.requests.parquet  series_id, tid: u32, start_ns, duration_ns: i64   (schema 5; probed calls)
//! DIR/data/<YYYYMMDDHH>/<N>.samples.parquet   start_ms, end_ms, period_ns: i64, series_id, stack_id: u32, off_cpu: bool, value: i64
//! ```
//!
//! Parts written by schema 1 have no wakeups file, parts before schema 4 no threads or waits
//! file, parts before schema 5 no requests file; readers take them for none.
//!
//! Stacks and frames are deduplicated within a part, so each sample row is a few integers.
//! Every file is written to a temporary name and renamed; the samples file goes last. When all
//! parts of segment `N` are written, a marker `wal/N.done` is written, the segment deleted, then
//! the marker. Readers use part `N` only once segment `N` is gone or marked done, and the log
//! segment otherwise, so a crash at any point never shows a sample twice or not at all.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use super::wal::{read_segment, segment_seq, sync_dir, write_atomic};
use super::{
    Batch, RequestSpan, Row, SampleKind, SeriesLabels, StoreError, ThreadSample, WaitRecord,
    WakerKind, Wakeup,
};
use crate::offcpu::Cause;
use crate::{Frame, FrameKind};

/// Length of a partition.
pub(crate) const HOUR_MS: i64 = 3_600_000;

fn hour_dir(data: &Path, start_ms: i64) -> PathBuf {
    let ts = jiff::Timestamp::from_millisecond(start_ms.div_euclid(HOUR_MS) * HOUR_MS)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    data.join(ts.strftime("%Y%m%d%H").to_string())
}

fn hour_of(dir_name: &str) -> Option<i64> {
    let t = jiff::civil::DateTime::strptime("%Y%m%d%H", dir_name).ok()?;
    Some(
        jiff::tz::TimeZone::UTC
            .to_timestamp(t)
            .ok()?
            .as_millisecond(),
    )
}

/// Compacts one closed segment into Parquet parts and removes it. Idempotent: a compaction cut
/// short by a crash is simply redone.
pub(crate) fn compact_segment(store: &Path, segment: &Path) -> Result<usize, StoreError> {
    let seq = segment_seq(segment).expect("a segment path");
    let (batches, _) = read_segment(segment)?;
    let mut by_hour: BTreeMap<PathBuf, Vec<Batch>> = BTreeMap::new();
    for batch in batches {
        by_hour
            .entry(hour_dir(&store.join("data"), batch.start_ms))
            .or_default()
            .push(batch);
    }
    let parts = by_hour.len();
    for (dir, batches) in by_hour {
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        write_part(&dir, seq, &batches)?;
        // The parts' renames, and the hour directory's own entry, reach the disk before the
        // segment they came from is deleted: a power cut never loses both.
        sync_dir(&dir)?;
        if let Some(data) = dir.parent() {
            sync_dir(data)?;
        }
        super::crash_point();
    }
    let marker = segment.with_extension("done");
    write_atomic(&marker, b"")?;
    super::crash_point();
    std::fs::remove_file(segment).map_err(|e| StoreError::io(segment, e))?;
    super::crash_point();
    std::fs::remove_file(&marker).map_err(|e| StoreError::io(&marker, e))?;
    super::crash_point();
    Ok(parts)
}

fn write_part(dir: &Path, seq: u64, batches: &[Batch]) -> Result<(), StoreError> {
    let mut part = PartBuilder::default();
    for batch in batches {
        part.add_batch(batch);
    }
    part.write(dir, &format!("{seq:016}"))
}

/// One part under construction, out of batches (a compaction) or other parts (a merge), with
/// frames, stacks and series deduplicated across all of them.
#[derive(Default)]
struct PartBuilder {
    frames: HashMap<Frame, u32>,
    /// Prefix-tree nodes by (parent node, frame); [`NONE`] for the root and the empty stack.
    nodes: HashMap<(u32, u32), u32>,
    series: HashMap<SeriesLabels, u32>,
    frame_cols: FrameCols,
    stack_cols: StackCols,
    series_cols: SeriesCols,
    samples: SampleCols,
    wakeups: WakeupCols,
    threads: ThreadCols,
    waits: WaitCols,
    requests: Vec<RequestSpan>,
}

/// Maps a source's ids (positions in its tables) to the part's.
struct IdMap {
    stacks: Vec<u32>,
    series: Vec<u32>,
}

impl PartBuilder {
    /// Adds a source's frame, stack and series tables; returns where its ids went.
    fn tables(&mut self, frames: &[Frame], stacks: &[Vec<u32>], series: &[SeriesLabels]) -> IdMap {
        let frame_ids: Vec<u32> = frames
            .iter()
            .map(|f| {
                if let Some(&id) = self.frames.get(f) {
                    return id;
                }
                let id = self.frames.len() as u32;
                self.frame_cols.push(id, f);
                self.frames.insert(f.clone(), id);
                id
            })
            .collect();
        let stacks = stacks
            .iter()
            .map(|s| {
                // A frame index past the table (a damaged source) is left out of the stack.
                let frames = s.iter().filter_map(|&f| frame_ids.get(f as usize).copied());
                self.stack_id(frames)
            })
            .collect();
        let series = series
            .iter()
            .map(|s| {
                if let Some(&id) = self.series.get(s) {
                    return id;
                }
                let id = self.series.len() as u32;
                self.series_cols.push(id, s);
                self.series.insert(s.clone(), id);
                id
            })
            .collect();
        IdMap { stacks, series }
    }

    /// The node of a stack (frames root first), added with its prefixes as needed.
    fn stack_id(&mut self, frames: impl Iterator<Item = u32>) -> u32 {
        let mut node = NONE;
        let mut empty = true;
        for frame in frames {
            node = self.node(node, frame);
            empty = false;
        }
        if empty {
            node = self.node(NONE, NONE);
        }
        self.stack_cols.is_stack[node as usize] = true;
        node
    }

    fn node(&mut self, parent: u32, frame: u32) -> u32 {
        let next = self.nodes.len() as u32;
        *self.nodes.entry((parent, frame)).or_insert_with(|| {
            self.stack_cols.push(next, parent, frame);
            next
        })
    }

    fn add_batch(&mut self, batch: &Batch) {
        let ids = self.tables(&batch.frames, &batch.stacks, &batch.series);
        for row in &batch.rows {
            self.samples.push(
                (batch.start_ms, batch.end_ms, batch.period_ns),
                ids.series[row.series as usize],
                ids.stacks[row.stack as usize],
                row.kind == SampleKind::OffCpu,
                row.value,
            );
        }
        for w in &batch.wakeups {
            self.wakeups.push(
                batch.start_ms,
                batch.end_ms,
                &Wakeup {
                    wakee: ids.series[w.wakee as usize],
                    wakee_stack: ids.stacks[w.wakee_stack as usize],
                    waker: ids.series[w.waker as usize],
                    waker_stack: ids.stacks[w.waker_stack as usize],
                    ..*w
                },
            );
        }
        for t in &batch.thread_samples {
            self.threads.push(&ThreadSample {
                series: ids.series[t.series as usize],
                stack: ids.stacks[t.stack as usize],
                ..*t
            });
        }
        for w in &batch.waits {
            self.waits.push(&WaitRecord {
                series: ids.series[w.series as usize],
                stack: ids.stacks[w.stack as usize],
                waker_series: ids.series[w.waker_series as usize],
                waker_stack: ids.stacks[w.waker_stack as usize],
                ..*w
            });
        }
        for r in &batch.requests {
            self.requests.push(RequestSpan {
                series: ids.series[r.series as usize],
                ..*r
            });
        }
    }

    /// Adds every row of part `name` in `dir`.
    fn add_part(&mut self, dir: &Path, name: &str) -> Result<(), StoreError> {
        let file = |kind: &str| dir.join(format!("{name}.{kind}.parquet"));
        let (frames, stacks) = read_frames_stacks(&file("frames"), &file("stacks"))?;
        let series = read_series(&file("series"))?;
        let ids = self.tables(&frames, &stacks, &series);
        let corrupt = |kind: &str| StoreError::Parquet {
            path: file(kind),
            error: PolarsError::ComputeError(
                "a row refers to a series or stack the part does not have".into(),
            ),
        };
        let map = |ids: &[u32], id: u32, kind: &str| {
            ids.get(id as usize).copied().ok_or_else(|| corrupt(kind))
        };
        let s = read_samples(dir, name)?;
        for i in 0..s.value.len() {
            self.samples.push(
                (s.start_ms[i], s.end_ms[i], s.period_ns[i]),
                map(&ids.series, s.series[i], "samples")?,
                map(&ids.stacks, s.stack[i], "samples")?,
                s.off_cpu[i],
                s.value[i],
            );
        }
        for (start_ms, end_ms, w) in read_timed_wakeups(&file("wakeups"), i64::MIN, i64::MAX)? {
            let wakeup = Wakeup {
                wakee: map(&ids.series, w.wakee, "wakeups")?,
                wakee_stack: map(&ids.stacks, w.wakee_stack, "wakeups")?,
                waker: map(&ids.series, w.waker, "wakeups")?,
                waker_stack: map(&ids.stacks, w.waker_stack, "wakeups")?,
                ..w
            };
            self.wakeups.push(start_ms, end_ms, &wakeup);
        }
        for t in read_threads(&file("threads"), i64::MIN, i64::MAX)? {
            self.threads.push(&ThreadSample {
                series: map(&ids.series, t.series, "threads")?,
                stack: map(&ids.stacks, t.stack, "threads")?,
                ..t
            });
        }
        for w in read_waits(&file("waits"), i64::MIN, i64::MAX)? {
            self.waits.push(&WaitRecord {
                series: map(&ids.series, w.series, "waits")?,
                stack: map(&ids.stacks, w.stack, "waits")?,
                waker_series: map(&ids.series, w.waker_series, "waits")?,
                waker_stack: map(&ids.stacks, w.waker_stack, "waits")?,
                ..w
            });
        }
        for r in read_requests(&file("requests"), i64::MIN, i64::MAX)? {
            self.requests.push(RequestSpan {
                series: map(&ids.series, r.series, "requests")?,
                ..r
            });
        }
        Ok(())
    }

    /// Writes the part's files as part `name` of `dir`, the samples file last.
    fn write(self, dir: &Path, name: &str) -> Result<(), StoreError> {
        let file = |kind: &str| dir.join(format!("{name}.{kind}.parquet"));
        write_df(&file("frames"), self.frame_cols.into_df())?;
        write_df(&file("stacks"), self.stack_cols.into_df())?;
        write_df(&file("series"), self.series_cols.into_df())?;
        // Rows of an interval sorted by series and stack: consecutive intervals of a steady
        // host then repeat long runs of ids, which zstd stores once.
        let samples = self
            .samples
            .into_df()
            .and_then(|df| {
                df.lazy()
                    .sort(
                        ["start_ms", "end_ms", "off_cpu", "series_id", "stack_id"],
                        Default::default(),
                    )
                    .collect()
            })
            .map_err(|source| StoreError::Parquet {
                path: file("samples"),
                error: source,
            })?;
        write_df(
            &file("rollup"),
            rollup_frame(samples.clone().lazy()).collect(),
        )?;
        write_df(
            &file("intervals"),
            intervals_frame(samples.clone().lazy()).collect(),
        )?;
        write_df(&file("wakeups"), self.wakeups.into_df())?;
        write_df(&file("threads"), self.threads.into_df())?;
        write_df(&file("waits"), self.waits.into_df())?;
        write_df(&file("requests"), requests_df(self.requests))?;
        // Last: a part is complete once its samples file exists.
        write_df(&file("samples"), Ok(samples))
    }
}

/// The segment numbers a part's name covers: `N` (compacted from segment `N`) or `A-B` (merged
/// from the parts of its hour numbered `A` to `B`).
pub(crate) fn part_range(name: &str) -> Option<(u64, u64)> {
    match name.split_once('-') {
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
        None => name.parse().ok().map(|n| (n, n)),
    }
}

/// The complete parts of an hour directory (those with a samples file), by name, in order.
pub(crate) fn complete_parts(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e
                .file_name()
                .to_str()?
                .strip_suffix(".samples.parquet")?
                .to_owned();
            part_range(&name).is_some().then_some(name)
        })
        .collect();
    names.sort();
    names
}

/// Whether a part covering `inner` is replaced by a complete part covering `outer`.
fn covers(outer: (u64, u64), inner: (u64, u64)) -> bool {
    outer != inner && outer.0 <= inner.0 && inner.1 <= outer.1
}

/// The parts of an hour directory that readers use: complete ones not covered by a complete
/// merged part.
pub(crate) fn visible_parts(dir: &Path) -> Vec<String> {
    let names = complete_parts(dir);
    let ranges: Vec<(u64, u64)> = names.iter().filter_map(|n| part_range(n)).collect();
    names
        .into_iter()
        .zip(&ranges)
        .filter(|&(_, &r)| !ranges.iter().any(|&o| covers(o, r)))
        .map(|(n, _)| n)
        .collect()
}

/// Merges the visible parts of an hour directory into one part named after the range of
/// segments they cover, when there are several and no log segment up to the highest of them
/// is still live (so no part can appear later inside that range). The merged part replaces
/// them for readers once complete; [`remove_merged`] deletes them later. Returns whether it
/// merged.
pub(crate) fn merge_hour(store: &Path, dir: &Path) -> Result<bool, StoreError> {
    let parts = visible_parts(dir);
    if parts.len() < 2 {
        return Ok(false);
    }
    let ranges: Vec<(u64, u64)> = parts.iter().filter_map(|n| part_range(n)).collect();
    let first = ranges.iter().map(|r| r.0).min().unwrap_or(0);
    let last = ranges.iter().map(|r| r.1).max().unwrap_or(0);
    let live = super::wal::segments(&store.join("wal"))?
        .into_iter()
        .any(|segment| {
            segment_seq(&segment).is_some_and(|seq| seq <= last)
                && !segment.with_extension("done").exists()
        });
    if live {
        return Ok(false);
    }
    let mut merged = PartBuilder::default();
    for name in &parts {
        merged.add_part(dir, name)?;
    }
    merged.write(dir, &format!("{first:016}-{last:016}"))?;
    Ok(true)
}

/// Deletes the files of parts covered by a complete merged part written at least `grace` ago
/// (a reader that listed them just before the merge can still read them meanwhile), and the
/// files of incomplete parts so covered (a merge cut short). Returns the parts deleted.
pub(crate) fn remove_merged(dir: &Path, grace: std::time::Duration) -> Result<usize, StoreError> {
    let now = std::time::SystemTime::now();
    let settled: Vec<(u64, u64)> = complete_parts(dir)
        .iter()
        .filter(|name| {
            std::fs::metadata(dir.join(format!("{name}.samples.parquet")))
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= grace)
        })
        .filter_map(|n| part_range(n))
        .filter(|r| r.0 != r.1)
        .collect();
    if settled.is_empty() {
        return Ok(0);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    let mut removed = std::collections::BTreeSet::new();
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.split('.').next()) else {
            continue;
        };
        let Some(range) = part_range(name) else {
            continue;
        };
        if settled.iter().any(|&o| covers(o, range)) {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => super::crash_point(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&path, e)),
            }
            removed.insert(name.to_owned());
        }
    }
    Ok(removed.len())
}

/// A part's sums over all its intervals per (series, stack): what a window covering the whole
/// part needs, without reading its samples.
fn rollup_frame(samples: LazyFrame) -> LazyFrame {
    let on_cpu = |v: Expr| when(col("off_cpu")).then(lit(0i64)).otherwise(v);
    samples
        .group_by([col("series_id"), col("stack_id")])
        .agg([
            on_cpu(col("value")).sum().alias("cpu_samples"),
            on_cpu(col("value") * col("period_ns"))
                .sum()
                .alias("cpu_ns"),
            when(col("off_cpu"))
                .then(col("value"))
                .otherwise(lit(0i64))
                .sum()
                .alias("offcpu_ns"),
        ])
        .sort(["series_id", "stack_id"], Default::default())
}

/// A part's distinct intervals with their row counts, in time order.
fn intervals_frame(samples: LazyFrame) -> LazyFrame {
    samples
        .group_by([col("start_ms"), col("end_ms")])
        .agg([len().cast(DataType::UInt32).alias("rows")])
        .sort(["start_ms", "end_ms"], Default::default())
}

/// Writes the roll-up and interval files of a part written before they existed (store
/// version 1 parts from before them). Returns whether it wrote anything.
pub(crate) fn backfill_rollup(dir: &Path, seq: &str) -> Result<bool, StoreError> {
    let file = |kind: &str| dir.join(format!("{seq}.{kind}.parquet"));
    let mut wrote = false;
    for (kind, make) in [
        ("rollup", rollup_frame as fn(LazyFrame) -> LazyFrame),
        ("intervals", intervals_frame),
    ] {
        if file(kind).exists() {
            continue;
        }
        write_df(&file(kind), make(scan(&file("samples"))?).collect())?;
        wrote = true;
    }
    Ok(wrote)
}

/// One part's roll-up rows (see [`rollup_frame`]), sorted by series and stack.
#[derive(Debug, Default)]
pub(crate) struct Rollup {
    pub series: Vec<u32>,
    pub stack: Vec<u32>,
    pub cpu_samples: Vec<i64>,
    pub cpu_ns: Vec<i64>,
    pub offcpu_ns: Vec<i64>,
    /// Distinct `(start_ms, end_ms)` intervals, in time order.
    pub intervals: Vec<(i64, i64)>,
}

/// Reads a part's roll-up, computing it from the samples when the part has none.
pub(crate) fn read_rollup(dir: &Path, seq: &str) -> Result<Rollup, StoreError> {
    let file = |kind: &str| dir.join(format!("{seq}.{kind}.parquet"));
    let read = |kind: &str, make: fn(LazyFrame) -> LazyFrame| -> Result<DataFrame, StoreError> {
        let path = file(kind);
        let lf = if path.exists() {
            scan(&path)?
        } else {
            make(scan(&file("samples"))?)
        };
        lf.collect().map_err(|source| StoreError::Parquet {
            path,
            error: source,
        })
    };
    let rollup = read("rollup", rollup_frame)?;
    let intervals = read("intervals", intervals_frame)?;
    let decode = || -> PolarsResult<Rollup> {
        Ok(Rollup {
            series: u32s(&rollup, "series_id")?,
            stack: u32s(&rollup, "stack_id")?,
            cpu_samples: i64s(&rollup, "cpu_samples")?,
            cpu_ns: i64s(&rollup, "cpu_ns")?,
            offcpu_ns: i64s(&rollup, "offcpu_ns")?,
            intervals: i64s(&intervals, "start_ms")?
                .into_iter()
                .zip(i64s(&intervals, "end_ms")?)
                .collect(),
        })
    };
    decode().map_err(|source| StoreError::Parquet {
        path: file("rollup"),
        error: source,
    })
}

/// One part's sample rows, column by column, in stored order.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    pub start_ms: Vec<i64>,
    pub end_ms: Vec<i64>,
    pub period_ns: Vec<i64>,
    pub series: Vec<u32>,
    pub stack: Vec<u32>,
    pub off_cpu: Vec<bool>,
    pub value: Vec<i64>,
}

/// Reads all of a part's sample rows.
pub(crate) fn read_samples(dir: &Path, seq: &str) -> Result<Samples, StoreError> {
    let path = dir.join(format!("{seq}.samples.parquet"));
    let parquet = |source| StoreError::Parquet {
        path: path.clone(),
        error: source,
    };
    let df = scan(&path)?.collect().map_err(parquet)?;
    let decode = || -> PolarsResult<Samples> {
        Ok(Samples {
            start_ms: i64s(&df, "start_ms")?,
            end_ms: i64s(&df, "end_ms")?,
            period_ns: i64s(&df, "period_ns")?,
            series: u32s(&df, "series_id")?,
            stack: u32s(&df, "stack_id")?,
            off_cpu: bools(&df, "off_cpu")?,
            value: i64s(&df, "value")?,
        })
    };
    decode().map_err(parquet)
}

/// A part's frames and stacks, as the query index reads them: the stacks as a prefix tree, so
/// that each shared prefix is mapped into the index's trie once.
pub(crate) struct StackFunctions {
    /// Function names by frame id.
    pub functions: Vec<String>,
    /// Whether each frame was inlined, by frame id.
    pub inlined: Vec<bool>,
    /// The tree: each node's parent ([`NO_NODE`] at the root) and frame id ([`NO_NODE`] for
    /// the empty stack), by node id; a parent's id is below its children's.
    pub tree: Nodes,
    /// The node of each stack, by stack id.
    pub stack_nodes: Vec<u32>,
}

/// No node or frame (see [`StackFunctions::tree`]).
pub(crate) const NO_NODE: u32 = NONE;

/// A part's frames and stacks.
pub(crate) fn read_stack_functions(dir: &Path, seq: &str) -> Result<StackFunctions, StoreError> {
    let frames_path = dir.join(format!("{seq}.frames.parquet"));
    let stacks_path = dir.join(format!("{seq}.stacks.parquet"));
    let frames = scan(&frames_path)?
        .select([col("frame_id"), col("function"), col("inlined")])
        .sort(["frame_id"], Default::default())
        .collect()
        .map_err(|source| StoreError::Parquet {
            path: frames_path.clone(),
            error: source,
        })?;
    let parquet = |source| StoreError::Parquet {
        path: frames_path.clone(),
        error: source,
    };
    let functions = strs(&frames, "function")
        .map_err(parquet)?
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect();
    let inlined = bools(&frames, "inlined").map_err(parquet)?;
    let (tree, stack_nodes) = read_stack_table(
        &stacks_path,
        |flat| {
            // Schemas 1–2: build the tree.
            let mut part = PartBuilder::default();
            let stack_nodes = decode_flat_stacks(flat)?
                .into_iter()
                .map(|frames| part.stack_id(frames.into_iter()))
                .collect();
            Ok((part.stack_cols.nodes, stack_nodes))
        },
        |tree| {
            let (tree, _) = decode_tree(tree)?;
            let n = tree.len() as u32;
            Ok((tree, (0..n).collect()))
        },
    )?;
    Ok(StackFunctions {
        functions,
        inlined,
        tree,
        stack_nodes,
    })
}

fn write_df(path: &Path, df: PolarsResult<DataFrame>) -> Result<(), StoreError> {
    let parquet = |source| StoreError::Parquet {
        path: path.to_owned(),
        error: source,
    };
    let mut df = df.map_err(parquet)?;
    let tmp = path.with_extension("parquet.tmp");
    let f = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    ParquetWriter::new(&f)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)
        .map_err(parquet)?;
    f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
    super::crash_point();
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    super::crash_point();
    Ok(())
}

#[derive(Default)]
struct FrameCols {
    id: Vec<u32>,
    function: Vec<String>,
    module: Vec<Option<String>>,
    build_id: Vec<Option<String>>,
    file: Vec<Option<String>>,
    line: Vec<Option<u32>>,
    kernel: Vec<bool>,
    inlined: Vec<bool>,
}

impl FrameCols {
    fn push(&mut self, id: u32, f: &Frame) {
        self.id.push(id);
        self.function.push(f.function.clone());
        self.module.push(f.module.clone());
        self.build_id.push(f.build_id.clone());
        self.file.push(f.file.clone());
        self.line.push(f.line);
        self.kernel.push(f.kind == FrameKind::Kernel);
        self.inlined.push(f.inlined);
    }

    fn into_df(self) -> PolarsResult<DataFrame> {
        DataFrame::new_infer_height(vec![
            Column::new("frame_id".into(), self.id),
            Column::new("function".into(), self.function),
            Column::new("module".into(), self.module),
            Column::new("build_id".into(), self.build_id),
            Column::new("file".into(), self.file),
            Column::new("line".into(), self.line),
            Column::new("kernel".into(), self.kernel),
            Column::new("inlined".into(), self.inlined),
        ])
    }
}

/// No node or frame: the parent of a root frame's node, the frame of the empty stack's.
const NONE: u32 = u32::MAX;

/// Prefix-tree nodes: (parent or [`NONE`], frame or [`NONE`]) by node id.
pub(crate) type Nodes = Vec<(u32, u32)>;

/// A part's stacks as a prefix tree (schema 3): one row per node in id order (the row number is
/// the node id), parents before children, a stack being the node of its last frame. Each row
/// holds `up`, the distance back to its parent's row (0 for a root frame's node): mostly 1, so
/// the column compresses to almost nothing.
#[derive(Default)]
struct StackCols {
    nodes: Nodes,
    is_stack: Vec<bool>,
}

impl StackCols {
    fn push(&mut self, id: u32, parent: u32, frame: u32) {
        debug_assert_eq!(id as usize, self.nodes.len());
        self.nodes.push((parent, frame));
        self.is_stack.push(false);
    }

    fn into_df(self) -> PolarsResult<DataFrame> {
        let up: Vec<u32> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(id, &(parent, _))| {
                if parent == NONE {
                    0
                } else {
                    id as u32 - parent
                }
            })
            .collect();
        let frame: Vec<Option<u32>> = self
            .nodes
            .iter()
            .map(|&(_, f)| (f != NONE).then_some(f))
            .collect();
        DataFrame::new_infer_height(vec![
            Column::new("up".into(), up),
            Column::new("frame_id".into(), frame),
            Column::new("is_stack".into(), self.is_stack),
        ])
    }
}

/// A prefix-tree stack table's nodes: (parent or [`NONE`], frame or [`NONE`]) by node id, and
/// whether each is a stack.
fn decode_tree(df: &DataFrame) -> PolarsResult<(Nodes, Vec<bool>)> {
    let up = u32s(df, "up")?;
    let frames = df.column("frame_id")?.u32()?;
    let mut nodes = Vec::with_capacity(up.len());
    for (id, &up) in up.iter().enumerate() {
        let parent = match up {
            0 => NONE,
            up if up as usize <= id => id as u32 - up,
            _ => {
                return Err(PolarsError::ComputeError(
                    format!("stack node {id} points {up} rows back, before the first").into(),
                ));
            }
        };
        nodes.push((parent, frames.get(id).unwrap_or(NONE)));
    }
    Ok((nodes, bools(df, "is_stack")?))
}

#[derive(Default)]
struct SeriesCols {
    id: Vec<u32>,
    host: Vec<String>,
    pid: Vec<u32>,
    comm: Vec<String>,
    exe: Vec<String>,
    build_id: Vec<String>,
    service: Vec<String>,
}

impl SeriesCols {
    fn push(&mut self, id: u32, s: &SeriesLabels) {
        self.id.push(id);
        self.host.push(s.host.clone());
        self.pid.push(s.pid);
        self.comm.push(s.comm.clone());
        self.exe.push(s.exe.clone());
        self.build_id.push(s.build_id.clone());
        self.service.push(s.service.clone());
    }

    fn into_df(self) -> PolarsResult<DataFrame> {
        DataFrame::new_infer_height(vec![
            Column::new("series_id".into(), self.id),
            Column::new("host".into(), self.host),
            Column::new("pid".into(), self.pid),
            Column::new("comm".into(), self.comm),
            Column::new("exe".into(), self.exe),
            Column::new("build_id".into(), self.build_id),
            Column::new("service".into(), self.service),
        ])
    }
}

#[derive(Default)]
struct SampleCols {
    start: Vec<i64>,
    end: Vec<i64>,
    period: Vec<i64>,
    series: Vec<u32>,
    stack: Vec<u32>,
    off_cpu: Vec<bool>,
    value: Vec<i64>,
}

impl SampleCols {
    /// One row of the interval `(start_ms, end_ms, period_ns)`.
    fn push(
        &mut self,
        interval: (i64, i64, i64),
        series: u32,
        stack: u32,
        off_cpu: bool,
        value: i64,
    ) {
        self.start.push(interval.0);
        self.end.push(interval.1);
        self.period.push(interval.2);
        self.series.push(series);
        self.stack.push(stack);
        self.off_cpu.push(off_cpu);
        self.value.push(value);
    }

    fn into_df(self) -> PolarsResult<DataFrame> {
        DataFrame::new_infer_height(vec![
            Column::new("start_ms".into(), self.start),
            Column::new("end_ms".into(), self.end),
            Column::new("period_ns".into(), self.period),
            Column::new("series_id".into(), self.series),
            Column::new("stack_id".into(), self.stack),
            Column::new("off_cpu".into(), self.off_cpu),
            Column::new("value".into(), self.value),
        ])
    }
}

/// A part's wakeups, columns of `<seq>.wakeups.parquet`.
#[derive(Default)]
struct WakeupCols {
    start: Vec<i64>,
    end: Vec<i64>,
    wakee: Vec<u32>,
    wakee_stack: Vec<u32>,
    waker: Vec<u32>,
    waker_stack: Vec<u32>,
    cause: Vec<&'static str>,
    in_interrupt: Vec<bool>,
    count: Vec<i64>,
    weight: Vec<f64>,
    blocked_ns: Vec<i64>,
}

impl WakeupCols {
    /// `w`'s indices are the part's.
    fn push(&mut self, start_ms: i64, end_ms: i64, w: &Wakeup) {
        self.start.push(start_ms);
        self.end.push(end_ms);
        self.wakee.push(w.wakee);
        self.wakee_stack.push(w.wakee_stack);
        self.waker.push(w.waker);
        self.waker_stack.push(w.waker_stack);
        self.cause.push(w.cause.name());
        self.in_interrupt.push(w.in_interrupt);
        self.count.push(w.count as i64);
        self.weight.push(w.weight);
        self.blocked_ns.push(w.blocked_ns);
    }

    fn into_df(self) -> PolarsResult<DataFrame> {
        DataFrame::new_infer_height(vec![
            Column::new("start_ms".into(), self.start),
            Column::new("end_ms".into(), self.end),
            Column::new("wakee_series".into(), self.wakee),
            Column::new("wakee_stack".into(), self.wakee_stack),
            Column::new("waker_series".into(), self.waker),
            Column::new("waker_stack".into(), self.waker_stack),
            Column::new("cause".into(), self.cause),
            Column::new("in_interrupt".into(), self.in_interrupt),
            Column::new("count".into(), self.count),
            Column::new("weight".into(), self.weight),
            Column::new("blocked_ns".into(), self.blocked_ns),
        ])
    }
}

/// A part's wakeups overlapping `[from_ms, to_ms)` (none for a part of schema 1).
fn read_wakeups(path: &Path, from_ms: i64, to_ms: i64) -> Result<Vec<Wakeup>, StoreError> {
    Ok(read_timed_wakeups(path, from_ms, to_ms)?
        .into_iter()
        .map(|(_, _, w)| w)
        .collect())
}

/// A part's wakeups overlapping `[from_ms, to_ms)` with their intervals' start and end.
fn read_timed_wakeups(
    path: &Path,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(i64, i64, Wakeup)>, StoreError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let parquet = |source| StoreError::Parquet {
        path: path.to_owned(),
        error: source,
    };
    let df = scan(path)?
        .filter(
            col("end_ms")
                .gt(lit(from_ms))
                .and(col("start_ms").lt(lit(to_ms))),
        )
        .collect()
        .map_err(parquet)?;
    let decode = || -> PolarsResult<Vec<(i64, i64, Wakeup)>> {
        let (start, end) = (i64s(&df, "start_ms")?, i64s(&df, "end_ms")?);
        let (wakee, wakee_stack, waker, waker_stack) = (
            u32s(&df, "wakee_series")?,
            u32s(&df, "wakee_stack")?,
            u32s(&df, "waker_series")?,
            u32s(&df, "waker_stack")?,
        );
        let (cause, in_interrupt) = (strs(&df, "cause")?, bools(&df, "in_interrupt")?);
        let (count, blocked_ns) = (i64s(&df, "count")?, i64s(&df, "blocked_ns")?);
        let weight: Vec<f64> = df
            .column("weight")?
            .f64()?
            .iter()
            .map(|v| v.unwrap_or(0.0))
            .collect();
        Ok((0..wakee.len())
            .map(|i| {
                let w = Wakeup {
                    wakee: wakee[i],
                    wakee_stack: wakee_stack[i],
                    waker: waker[i],
                    waker_stack: waker_stack[i],
                    cause: Cause::ALL
                        .into_iter()
                        .find(|c| Some(c.name()) == cause[i].as_deref())
                        .unwrap_or(Cause::Other),
                    in_interrupt: in_interrupt[i],
                    count: count[i].max(0) as u64,
                    weight: weight[i],
                    blocked_ns: blocked_ns[i],
                };
                (start[i], end[i], w)
            })
            .collect())
    };
    decode().map_err(parquet)
}

/// Times of a part's records, delta-coded for compression: rows sorted by (series, thread,
/// time), each time stored as microseconds since the previous row of the same thread (the first
/// of a thread: since `base_us`, the part's earliest, a constant column). zstd then finds the
/// 52.6 ms steps of a thread sampled at 19 Hz as repeats, where raw nanoseconds since the epoch
/// looked like noise; microseconds are finer than any sample or wait needs.
#[derive(Default)]
struct TimeCols {
    base_us: i64,
    dt_us: Vec<u32>,
}

impl TimeCols {
    /// Encodes `times_ns`, already in (series, thread, time) order, whose thread changes where
    /// `new_thread` is true.
    fn encode(times_ns: &[i64], new_thread: impl Fn(usize) -> bool) -> TimeCols {
        let base_us = times_ns
            .iter()
            .map(|t| t.div_euclid(1000))
            .min()
            .unwrap_or(0);
        let mut prev = base_us;
        let dt_us = times_ns
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let us = t.div_euclid(1000);
                if new_thread(i) {
                    prev = base_us;
                }
                let dt = (us - prev).clamp(0, i64::from(u32::MAX)) as u32;
                prev = us;
                dt
            })
            .collect();
        TimeCols { base_us, dt_us }
    }

    /// The times back, in ns (microsecond precision).
    fn decode(base_us: &[i64], dt_us: &[u32], new_thread: impl Fn(usize) -> bool) -> Vec<i64> {
        let mut prev = 0i64;
        dt_us
            .iter()
            .enumerate()
            .map(|(i, &dt)| {
                if new_thread(i) {
                    prev = base_us[i];
                }
                prev += i64::from(dt);
                prev * 1000
            })
            .collect()
    }
}

/// A part's thread samples, columns of `<seq>.threads.parquet`.
#[derive(Default)]
struct ThreadCols {
    rows: Vec<ThreadSample>,
}

impl ThreadCols {
    /// `t`'s indices are the part's.
    fn push(&mut self, t: &ThreadSample) {
        self.rows.push(*t);
    }

    fn into_df(mut self) -> PolarsResult<DataFrame> {
        self.rows.sort_by_key(|t| (t.series, t.tid, t.time_ns));
        let r = &self.rows;
        let times: Vec<i64> = r.iter().map(|t| t.time_ns).collect();
        let time = TimeCols::encode(&times, |i| {
            i == 0 || (r[i].series, r[i].tid) != (r[i - 1].series, r[i - 1].tid)
        });
        DataFrame::new_infer_height(vec![
            Column::new(
                "series_id".into(),
                r.iter().map(|t| t.series).collect::<Vec<_>>(),
            ),
            Column::new("tid".into(), r.iter().map(|t| t.tid).collect::<Vec<_>>()),
            Column::new("base_us".into(), vec![time.base_us; r.len()]),
            Column::new("dt_us".into(), time.dt_us),
            Column::new(
                "stack_id".into(),
                r.iter().map(|t| t.stack).collect::<Vec<_>>(),
            ),
            Column::new(
                "background".into(),
                r.iter().map(|t| t.background).collect::<Vec<_>>(),
            ),
        ])
    }
}

/// A part's wait records, columns of `<seq>.waits.parquet`.
#[derive(Default)]
struct WaitCols {
    rows: Vec<WaitRecord>,
}

impl WaitCols {
    /// `w`'s indices are the part's.
    fn push(&mut self, w: &WaitRecord) {
        self.rows.push(*w);
    }

    fn into_df(mut self) -> PolarsResult<DataFrame> {
        self.rows.sort_by_key(|w| (w.series, w.tid, w.start_ns));
        let r = &self.rows;
        let starts: Vec<i64> = r.iter().map(|w| w.start_ns).collect();
        let start = TimeCols::encode(&starts, |i| {
            i == 0 || (r[i].series, r[i].tid) != (r[i - 1].series, r[i - 1].tid)
        });
        let col = |name: &str, f: &dyn Fn(&WaitRecord) -> u32| {
            Column::new(name.into(), r.iter().map(f).collect::<Vec<u32>>())
        };
        DataFrame::new_infer_height(vec![
            col("series_id", &|w| w.series),
            col("tid", &|w| w.tid),
            Column::new("base_us".into(), vec![start.base_us; r.len()]),
            Column::new("dt_us".into(), start.dt_us),
            Column::new(
                "blocked_ns".into(),
                r.iter().map(|w| w.blocked_ns).collect::<Vec<_>>(),
            ),
            Column::new(
                "runq_ns".into(),
                r.iter().map(|w| w.runq_ns).collect::<Vec<_>>(),
            ),
            col("stack_id", &|w| w.stack),
            Column::new(
                "cause".into(),
                r.iter().map(|w| w.cause.name()).collect::<Vec<_>>(),
            ),
            Column::new(
                "weight".into(),
                r.iter().map(|w| w.weight).collect::<Vec<_>>(),
            ),
            Column::new(
                "waker".into(),
                r.iter().map(|w| w.waker.name()).collect::<Vec<_>>(),
            ),
            col("waker_series", &|w| w.waker_series),
            col("waker_tid", &|w| w.waker_tid),
            col("waker_stack", &|w| w.waker_stack),
        ])
    }
}

/// A part's records file, read whole (`None` when absent: a part of schema 3 or older), with
/// its times decoded (see [`TimeCols`]).
fn read_records(path: &Path) -> Result<Option<(DataFrame, Vec<i64>)>, StoreError> {
    let Some(df) = read_optional(path)? else {
        return Ok(None);
    };
    let parquet = |source| StoreError::Parquet {
        path: path.to_owned(),
        error: source,
    };
    let decode = || -> PolarsResult<Vec<i64>> {
        let (series, tid) = (u32s(&df, "series_id")?, u32s(&df, "tid")?);
        let base_us = i64s(&df, "base_us")?;
        let dt_us = u32s(&df, "dt_us")?;
        Ok(TimeCols::decode(&base_us, &dt_us, |i| {
            i == 0 || (series[i], tid[i]) != (series[i - 1], tid[i - 1])
        }))
    };
    let times = decode().map_err(parquet)?;
    Ok(Some((df, times)))
}

/// A part's requests, columns of `<seq>.requests.parquet`, by series, thread and start.
fn requests_df(mut rows: Vec<RequestSpan>) -> PolarsResult<DataFrame> {
    rows.sort_by_key(|r| (r.series, r.tid, r.start_ns));
    DataFrame::new_infer_height(vec![
        Column::new(
            "series_id".into(),
            rows.iter().map(|r| r.series).collect::<Vec<_>>(),
        ),
        Column::new("tid".into(), rows.iter().map(|r| r.tid).collect::<Vec<_>>()),
        Column::new(
            "start_ns".into(),
            rows.iter().map(|r| r.start_ns).collect::<Vec<_>>(),
        ),
        Column::new(
            "duration_ns".into(),
            rows.iter().map(|r| r.duration_ns).collect::<Vec<_>>(),
        ),
    ])
}

/// A part's requests that started in `[from_ns, to_ns)` (none in parts before schema 5).
fn read_requests(path: &Path, from_ns: i64, to_ns: i64) -> Result<Vec<RequestSpan>, StoreError> {
    let Some(df) = read_optional(path)? else {
        return Ok(Vec::new());
    };
    let decode = || -> PolarsResult<Vec<RequestSpan>> {
        let (series, tid) = (u32s(&df, "series_id")?, u32s(&df, "tid")?);
        let (start, duration) = (i64s(&df, "start_ns")?, i64s(&df, "duration_ns")?);
        Ok((0..series.len())
            .filter(|&i| (from_ns..to_ns).contains(&start[i]))
            .map(|i| RequestSpan {
                series: series[i],
                tid: tid[i],
                start_ns: start[i],
                duration_ns: duration[i],
            })
            .collect())
    };
    decode().map_err(|source| StoreError::Parquet {
        path: path.to_owned(),
        error: source,
    })
}

/// A part's file read whole; `None` when the part has none (written by an older schema).
fn read_optional(path: &Path) -> Result<Option<DataFrame>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let df = scan(path)?
        .collect()
        .map_err(|source| StoreError::Parquet {
            path: path.to_owned(),
            error: source,
        })?;
    Ok(Some(df))
}

/// A part's thread samples taken in `[from_ns, to_ns)`.
fn read_threads(path: &Path, from_ns: i64, to_ns: i64) -> Result<Vec<ThreadSample>, StoreError> {
    let Some((df, times)) = read_records(path)? else {
        return Ok(Vec::new());
    };
    let decode = || -> PolarsResult<Vec<ThreadSample>> {
        let (series, tid, stack) = (
            u32s(&df, "series_id")?,
            u32s(&df, "tid")?,
            u32s(&df, "stack_id")?,
        );
        let background: Vec<bool> = match df.column("background") {
            Ok(c) => c.bool()?.iter().map(|b| b.unwrap_or(false)).collect(),
            Err(_) => vec![false; times.len()],
        };
        Ok((0..times.len())
            .filter(|&i| (from_ns..to_ns).contains(&times[i]))
            .map(|i| ThreadSample {
                series: series[i],
                tid: tid[i],
                time_ns: times[i],
                stack: stack[i],
                background: background[i],
            })
            .collect())
    };
    decode().map_err(|source| StoreError::Parquet {
        path: path.to_owned(),
        error: source,
    })
}

/// A part's wait records that started in `[from_ns, to_ns)`.
fn read_waits(path: &Path, from_ns: i64, to_ns: i64) -> Result<Vec<WaitRecord>, StoreError> {
    let Some((df, starts)) = read_records(path)? else {
        return Ok(Vec::new());
    };
    let decode = || -> PolarsResult<Vec<WaitRecord>> {
        let (series, tid, stack) = (
            u32s(&df, "series_id")?,
            u32s(&df, "tid")?,
            u32s(&df, "stack_id")?,
        );
        let (blocked, runq) = (i64s(&df, "blocked_ns")?, i64s(&df, "runq_ns")?);
        let (cause, waker) = (strs(&df, "cause")?, strs(&df, "waker")?);
        let weight: Vec<f64> = df
            .column("weight")?
            .f64()?
            .iter()
            .map(|v| v.unwrap_or(0.0))
            .collect();
        let (waker_series, waker_tid, waker_stack) = (
            u32s(&df, "waker_series")?,
            u32s(&df, "waker_tid")?,
            u32s(&df, "waker_stack")?,
        );
        Ok((0..starts.len())
            .filter(|&i| (from_ns..to_ns).contains(&starts[i]))
            .map(|i| WaitRecord {
                series: series[i],
                tid: tid[i],
                start_ns: starts[i],
                blocked_ns: blocked[i],
                runq_ns: runq[i],
                stack: stack[i],
                cause: Cause::ALL
                    .into_iter()
                    .find(|c| Some(c.name()) == cause[i].as_deref())
                    .unwrap_or(Cause::Other),
                weight: weight[i],
                waker: waker[i]
                    .as_deref()
                    .and_then(WakerKind::from_name)
                    .unwrap_or(WakerKind::None),
                waker_series: waker_series[i],
                waker_tid: waker_tid[i],
                waker_stack: waker_stack[i],
            })
            .collect())
    };
    decode().map_err(|source| StoreError::Parquet {
        path: path.to_owned(),
        error: source,
    })
}

/// The highest segment number any Parquet part was compacted from.
pub(crate) fn max_part_seq(store: &Path) -> Option<u64> {
    let hours = std::fs::read_dir(store.join("data")).ok()?;
    hours
        .filter_map(Result::ok)
        .filter_map(|h| std::fs::read_dir(h.path()).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| Some(part_range(e.file_name().to_str()?.split('.').next()?)?.1))
        .max()
}

/// The hour directories of a store with their start (Unix ms), oldest first.
pub(crate) fn hour_dirs(store: &Path) -> Result<Vec<(PathBuf, i64)>, StoreError> {
    let data = store.join("data");
    let entries = match std::fs::read_dir(&data) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(&data, e)),
    };
    let mut dirs: Vec<(PathBuf, i64)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let hour = hour_of(e.file_name().to_str()?)?;
            Some((e.path(), hour))
        })
        .collect();
    dirs.sort_by_key(|(_, hour)| *hour);
    Ok(dirs)
}

pub(crate) fn scan(path: &Path) -> Result<LazyFrame, StoreError> {
    let p = path.to_string_lossy();
    LazyFrame::scan_parquet(PlRefPath::from(p.as_ref()), ScanArgsParquet::default()).map_err(
        |source| StoreError::Parquet {
            path: path.to_owned(),
            error: source,
        },
    )
}

/// Reads one part's rows overlapping `[from_ms, to_ms)` as a batch (`None` when none does).
pub(crate) fn read_part(
    dir: &Path,
    seq: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Option<Batch>, StoreError> {
    let file = |kind: &str| dir.join(format!("{seq}.{kind}.parquet"));
    let samples_path = file("samples");
    let samples = scan(&samples_path)?
        .filter(
            col("end_ms")
                .gt(lit(from_ms))
                .and(col("start_ms").lt(lit(to_ms))),
        )
        .collect()
        .map_err(|source| StoreError::Parquet {
            path: samples_path.clone(),
            error: source,
        })?;
    let wakeups = read_wakeups(&file("wakeups"), from_ms, to_ms)?;
    let (from_ns, to_ns) = (
        from_ms.saturating_mul(1_000_000),
        to_ms.saturating_mul(1_000_000),
    );
    let thread_samples = read_threads(&file("threads"), from_ns, to_ns)?;
    let waits = read_waits(&file("waits"), from_ns, to_ns)?;
    let requests = read_requests(&file("requests"), from_ns, to_ns)?;
    if samples.height() == 0 && wakeups.is_empty() {
        return Ok(None);
    }
    let (frames, stacks) = read_frames_stacks(&file("frames"), &file("stacks"))?;
    let series = read_series(&file("series"))?;
    let mut batch =
        decode_samples(&samples, frames, stacks, series, from_ms, to_ms).map_err(|source| {
            StoreError::Parquet {
                path: samples_path,
                error: source,
            }
        })?;
    batch.wakeups = wakeups;
    // Records that refer past the part's tables (a damaged part) are left out.
    let (n_series, n_stacks) = (batch.series.len() as u32, batch.stacks.len() as u32);
    batch.thread_samples = thread_samples
        .into_iter()
        .filter(|t| t.series < n_series && t.stack < n_stacks)
        .collect();
    batch.waits = waits
        .into_iter()
        .filter(|w| {
            w.series < n_series
                && w.waker_series < n_series
                && w.stack < n_stacks
                && w.waker_stack < n_stacks
        })
        .collect();
    batch.requests = requests
        .into_iter()
        .filter(|r| r.series < n_series)
        .collect();
    Ok(Some(batch))
}

fn collect_sorted(path: &Path, by: &[&str]) -> Result<DataFrame, StoreError> {
    scan(path)?
        .sort(by.to_vec(), Default::default())
        .collect()
        .map_err(|source| StoreError::Parquet {
            path: path.to_owned(),
            error: source,
        })
}

/// Reads a part's frame and stack tables (ids are positions).
pub(crate) fn read_frames_stacks(
    frames_path: &Path,
    stacks_path: &Path,
) -> Result<(Vec<Frame>, Vec<Vec<u32>>), StoreError> {
    let frames = collect_sorted(frames_path, &["frame_id"])?;
    let frames = decode_frames(&frames).map_err(|source| StoreError::Parquet {
        path: frames_path.to_owned(),
        error: source,
    })?;
    Ok((frames, read_stacks(stacks_path)?))
}

/// Reads a part's series table (ids are positions).
pub(crate) fn read_series(path: &Path) -> Result<Vec<SeriesLabels>, StoreError> {
    let df = collect_sorted(path, &["series_id"])?;
    decode_series(&df).map_err(|source| StoreError::Parquet {
        path: path.to_owned(),
        error: source,
    })
}

fn strs(df: &DataFrame, name: &str) -> PolarsResult<Vec<Option<String>>> {
    Ok(df
        .column(name)?
        .str()?
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect())
}

fn u32s(df: &DataFrame, name: &str) -> PolarsResult<Vec<u32>> {
    Ok(df
        .column(name)?
        .u32()?
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect())
}

fn i64s(df: &DataFrame, name: &str) -> PolarsResult<Vec<i64>> {
    Ok(df
        .column(name)?
        .i64()?
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect())
}

fn bools(df: &DataFrame, name: &str) -> PolarsResult<Vec<bool>> {
    Ok(df
        .column(name)?
        .bool()?
        .iter()
        .map(|v| v.unwrap_or(false))
        .collect())
}

fn decode_frames(frames: &DataFrame) -> PolarsResult<Vec<Frame>> {
    let (function, module, build_id, file) = (
        strs(frames, "function")?,
        strs(frames, "module")?,
        strs(frames, "build_id")?,
        strs(frames, "file")?,
    );
    let line: Vec<Option<u32>> = frames.column("line")?.u32()?.iter().collect();
    let (kernel, inlined) = (bools(frames, "kernel")?, bools(frames, "inlined")?);
    Ok((0..function.len())
        .map(|i| Frame {
            function: function[i].clone().unwrap_or_default(),
            module: module[i].clone(),
            build_id: build_id[i].clone(),
            file: file[i].clone(),
            line: line[i],
            kind: if kernel[i] {
                FrameKind::Kernel
            } else {
                FrameKind::User
            },
            inlined: inlined[i],
        })
        .collect())
}

/// Reads a part's stacks (frame ids, root first) by stack id, from either layout: a prefix
/// tree (schema 3) or one row per frame of each stack (`stack_id, depth, frame_id`, schemas 1
/// and 2).
fn read_stacks(path: &Path) -> Result<Vec<Vec<u32>>, StoreError> {
    read_stack_table(path, decode_flat_stacks, decode_stack_tree)
}

/// Reads a part's stack table and decodes it with `flat` (schemas 1–2: a row per frame of each
/// stack) or `tree` (schema 3: a prefix tree).
fn read_stack_table<T>(
    path: &Path,
    flat: impl FnOnce(&DataFrame) -> PolarsResult<T>,
    tree: impl FnOnce(&DataFrame) -> PolarsResult<T>,
) -> Result<T, StoreError> {
    let parquet = |source| StoreError::Parquet {
        path: path.to_owned(),
        error: source,
    };
    let df = scan(path)?.collect().map_err(parquet)?;
    let decoded = if df.column("depth").is_ok() {
        flat(&df)
    } else {
        tree(&df)
    };
    decoded.map_err(parquet)
}

fn decode_flat_stacks(stacks: &DataFrame) -> PolarsResult<Vec<Vec<u32>>> {
    let mut rows: Vec<(u32, u32, u32)> = u32s(stacks, "stack_id")?
        .into_iter()
        .zip(u32s(stacks, "depth")?)
        .zip(u32s(stacks, "frame_id")?)
        .map(|((id, depth), frame)| (id, depth, frame))
        .collect();
    rows.sort_unstable();
    let mut stack_list: Vec<Vec<u32>> = Vec::new();
    for (id, _, frame) in rows {
        let id = id as usize;
        if stack_list.len() <= id {
            stack_list.resize(id + 1, Vec::new());
        }
        stack_list[id].push(frame);
    }
    Ok(stack_list)
}

/// Rebuilds the stacks of a prefix tree; nodes that are no stack are left empty.
fn decode_stack_tree(tree: &DataFrame) -> PolarsResult<Vec<Vec<u32>>> {
    let (nodes, is_stack) = decode_tree(tree)?;
    let mut out = vec![Vec::new(); nodes.len()];
    for (id, _) in is_stack.iter().enumerate().filter(|&(_, &s)| s) {
        // Parents come before their children (checked by decode_tree): the walk ends.
        let mut path = Vec::new();
        let mut at = id as u32;
        while at != NONE {
            let (parent, frame) = nodes[at as usize];
            if frame != NONE {
                path.push(frame);
            }
            at = parent;
        }
        path.reverse();
        out[id] = path;
    }
    Ok(out)
}

fn decode_series(series: &DataFrame) -> PolarsResult<Vec<SeriesLabels>> {
    let (host, comm, exe, sbuild, service) = (
        strs(series, "host")?,
        strs(series, "comm")?,
        strs(series, "exe")?,
        strs(series, "build_id")?,
        strs(series, "service")?,
    );
    let pid = u32s(series, "pid")?;
    Ok((0..pid.len())
        .map(|i| SeriesLabels {
            host: host[i].clone().unwrap_or_default(),
            pid: pid[i],
            comm: comm[i].clone().unwrap_or_default(),
            exe: exe[i].clone().unwrap_or_default(),
            build_id: sbuild[i].clone().unwrap_or_default(),
            service: service[i].clone().unwrap_or_default(),
        })
        .collect())
}

fn decode_samples(
    samples: &DataFrame,
    frames: Vec<Frame>,
    stacks: Vec<Vec<u32>>,
    series: Vec<SeriesLabels>,
    from_ms: i64,
    to_ms: i64,
) -> PolarsResult<Batch> {
    let (start, end, period) = (
        i64s(samples, "start_ms")?,
        i64s(samples, "end_ms")?,
        i64s(samples, "period_ns")?,
    );
    let (series_id, stack_id, off_cpu, value) = (
        u32s(samples, "series_id")?,
        u32s(samples, "stack_id")?,
        bools(samples, "off_cpu")?,
        i64s(samples, "value")?,
    );
    let rows = (0..value.len())
        .map(|i| Row {
            series: series_id[i],
            stack: stack_id[i],
            kind: if off_cpu[i] {
                SampleKind::OffCpu
            } else {
                SampleKind::Cpu
            },
            value: value[i],
        })
        .collect();
    Ok(Batch {
        start_ms: start.iter().copied().min().unwrap_or(from_ms).max(from_ms),
        end_ms: end.iter().copied().max().unwrap_or(to_ms).min(to_ms),
        period_ns: period.first().copied().unwrap_or(0),
        frames,
        stacks,
        series,
        rows,
        ..Batch::default()
    })
}
