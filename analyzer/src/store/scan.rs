//! Reading a store: which sources (Parquet parts, log segments) hold a window, and scans that sum
//! values per series, stack and time step, pushed down into polars for Parquet parts.
//!
//! Readers never lock and never block the writer. They list the log first and read every
//! segment not yet marked compacted; then they read the Parquet parts of every other segment.
//! Because a segment is deleted only after all its parts are complete, a compaction that runs
//! while a query reads is seen either as the segment or as its parts, never both or neither.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::parquet::{HOUR_MS, hour_dirs, read_frames_stacks, read_series, visible_parts};
use super::wal::{decode_records, segment_seq, segments};
use super::{Batch, SampleKind, SeriesLabels, StoreError, check_version};
use crate::Frame;

/// What a profile or series measures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileType {
    /// On-CPU samples (a count).
    #[default]
    Cpu,
    /// Off-CPU (blocked) time in nanoseconds.
    OffCpu,
    /// Wall-clock time in nanoseconds: on-CPU samples times the period, plus off-CPU time.
    Wall,
}

impl ProfileType {
    /// The name used in queries: `cpu`, `offcpu`, `wall`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::OffCpu => "offcpu",
            Self::Wall => "wall",
        }
    }

    /// The unit of values: `samples` or `nanoseconds`.
    pub const fn unit(self) -> &'static str {
        match self {
            Self::Cpu => "samples",
            Self::OffCpu | Self::Wall => "nanoseconds",
        }
    }

    /// A stored row's contribution to this type's value, or `None` when the row does not count.
    pub(crate) fn weigh(self, kind: SampleKind, value: i64, period_ns: i64) -> Option<i64> {
        match (self, kind) {
            (Self::Cpu, SampleKind::Cpu) | (Self::OffCpu | Self::Wall, SampleKind::OffCpu) => {
                Some(value)
            }
            (Self::Wall, SampleKind::Cpu) => Some(value * period_ns),
            _ => None,
        }
    }
}

impl std::str::FromStr for ProfileType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "offcpu" | "off_cpu" => Ok(Self::OffCpu),
            "wall" => Ok(Self::Wall),
            _ => Err(format!(
                "unknown profile type {s:?}: expected cpu, offcpu or wall"
            )),
        }
    }
}

impl std::fmt::Display for ProfileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to sum, over which window, grouped how.
pub struct Scan<'a> {
    /// Window start, Unix ms. Every stored interval overlapping the window counts whole.
    pub from_ms: i64,
    /// Window end (exclusive), Unix ms.
    pub to_ms: i64,
    /// The value summed.
    pub profile_type: ProfileType,
    /// Group by stack (profiles) or not (series, label values).
    pub by_stack: bool,
    /// Group by time step: a row falls in the step holding its interval's start (or the first
    /// step, for an interval starting before the window).
    pub step_ms: Option<i64>,
    /// Which series count.
    pub keep: &'a dyn Fn(&SeriesLabels) -> bool,
}

/// One summed row of a [`ScanPart`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanRow {
    /// Index into [`ScanPart::series`].
    pub series: u32,
    /// Index into [`ScanPart::stacks`]; 0 when the scan was not by stack.
    pub stack: u32,
    /// Start of the row's step, Unix ms; the window start when the scan had no step.
    pub bucket_ms: i64,
    /// The summed value.
    pub value: i64,
}

/// The result of a scan over one source: its own frame, stack and series tables and the summed
/// rows referring to them. Only selected series have rows.
#[derive(Debug, Default)]
pub struct ScanPart {
    /// Frames (empty unless the scan was by stack).
    pub frames: Vec<Frame>,
    /// Stacks as frame indices, root first (empty unless the scan was by stack).
    pub stacks: Vec<Vec<u32>>,
    /// Series.
    pub series: Vec<SeriesLabels>,
    /// Summed rows.
    pub rows: Vec<ScanRow>,
}

/// A readable source of a window.
enum Source {
    /// Batches read from a log segment.
    Log(Vec<Batch>),
    /// A complete Parquet part.
    Part {
        dir: PathBuf,
        seq: String,
        hour_ms: i64,
    },
}

/// A source of a window, listed but not read yet.
#[derive(Debug)]
pub(crate) enum SourceRef {
    /// A log segment not compacted yet, opened when listed: an open segment stays readable
    /// after a compaction deletes it, and its parts are not listed.
    Log { path: PathBuf, file: File },
    /// A complete Parquet part.
    Part {
        dir: PathBuf,
        seq: String,
        hour_ms: i64,
    },
}

/// The sources that may hold rows of `[from_ms, to_ms)`: every live log segment first (see
/// the module docs), then the Parquet parts of the window's hours not read from the log.
pub(crate) fn list_sources(
    store: &Path,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<SourceRef>, StoreError> {
    check_version(store, false)?;
    let wal = store.join("wal");
    let mut out = Vec::new();
    let mut from_log = HashSet::new();
    for segment in segments(&wal)? {
        if segment.with_extension("done").exists() {
            continue;
        }
        let file = match File::open(&segment) {
            Ok(file) => file,
            // Compacted since it was listed: its parts are complete.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(StoreError::io(&segment, error)),
        };
        from_log.insert(segment_seq(&segment).expect("a segment path"));
        out.push(SourceRef::Log {
            path: segment,
            file,
        });
    }
    for (dir, hour_ms) in hour_dirs(store)? {
        if hour_ms >= to_ms || hour_ms + HOUR_MS <= from_ms {
            continue;
        }
        // Empty when dropped by retention meanwhile.
        for seq in visible_parts(&dir) {
            if let Ok(n) = seq.parse::<u64>() {
                let segment = wal.join(format!("{seq}.wal"));
                if from_log.contains(&n)
                    || (segment.exists() && !segment.with_extension("done").exists())
                {
                    // Read from the log, or still being compacted.
                    continue;
                }
            }
            out.push(SourceRef::Part {
                dir: dir.clone(),
                seq,
                hour_ms,
            });
        }
    }
    Ok(out)
}

/// A fingerprint of what a query of `[from_ms, to_ms)` reads: the parts it reads and the
/// length of every live log segment. It changes whenever such a query could answer
/// differently (a part written or dropped, the log grown), so answers can be cached by it.
pub(crate) fn sources_stamp(store: &Path, from_ms: i64, to_ms: i64) -> Result<u64, StoreError> {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for source in list_sources(store, from_ms, to_ms)? {
        match source {
            SourceRef::Log { path, file } => {
                path.hash(&mut h);
                file.metadata()
                    .map_err(|e| StoreError::io(&path, e))?
                    .len()
                    .hash(&mut h);
            }
            SourceRef::Part { dir, seq, .. } => {
                dir.hash(&mut h);
                seq.hash(&mut h);
            }
        }
    }
    Ok(h.finish())
}

/// The sources overlapping `[from_ms, to_ms)`, log segments read.
fn sources(store: &Path, from_ms: i64, to_ms: i64) -> Result<Vec<Source>, StoreError> {
    let mut out = Vec::new();
    for source in list_sources(store, from_ms, to_ms)? {
        match source {
            SourceRef::Log { path, mut file } => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)
                    .map_err(|e| StoreError::io(&path, e))?;
                let batches: Vec<Batch> = decode_records(&bytes)
                    .0
                    .into_iter()
                    .filter(|b| b.end_ms > from_ms && b.start_ms < to_ms)
                    .collect();
                if !batches.is_empty() {
                    out.push(Source::Log(batches));
                }
            }
            SourceRef::Part { dir, seq, hour_ms } => out.push(Source::Part { dir, seq, hour_ms }),
        }
    }
    Ok(out)
}

/// Every batch overlapping `[from_ms, to_ms)`, one per log record and one per Parquet part.
pub(crate) fn batches(store: &Path, from_ms: i64, to_ms: i64) -> Result<Vec<Batch>, StoreError> {
    let mut out = Vec::new();
    for source in sources(store, from_ms, to_ms)? {
        match source {
            Source::Log(batches) => out.extend(batches),
            Source::Part { dir, seq, .. } => {
                if let Some(batch) = super::parquet::read_part(&dir, &seq, from_ms, to_ms)? {
                    out.push(batch);
                }
            }
        }
    }
    Ok(out)
}

/// Runs a scan over a store directory.
pub(crate) fn scan(store: &Path, scan: &Scan<'_>) -> Result<Vec<ScanPart>, StoreError> {
    let mut out = Vec::new();
    for source in sources(store, scan.from_ms, scan.to_ms)? {
        let part = match source {
            Source::Log(batches) => Some(scan_batches(&batches, scan)),
            Source::Part { dir, seq, hour_ms } => match scan_part(&dir, &seq, hour_ms, scan) {
                Err(StoreError::Parquet { path, .. } | StoreError::Io { path, .. })
                    if !path.exists() =>
                {
                    None // dropped by retention while we read it
                }
                other => other?,
            },
        };
        out.extend(part.filter(|p| !p.rows.is_empty()));
    }
    Ok(out)
}

fn bucket(scan: &Scan<'_>, start_ms: i64) -> i64 {
    match scan.step_ms {
        Some(step) => scan.from_ms + (start_ms.max(scan.from_ms) - scan.from_ms) / step * step,
        None => scan.from_ms,
    }
}

/// Scans log batches (small: at most one hour of one writer) in memory.
fn scan_batches(batches: &[Batch], scan: &Scan<'_>) -> ScanPart {
    let mut part = ScanPart::default();
    let mut series_ids: HashMap<&SeriesLabels, u32> = HashMap::new();
    let mut frame_ids: HashMap<&Frame, u32> = HashMap::new();
    let mut stack_ids: HashMap<Vec<u32>, u32> = HashMap::new();
    let mut sums: HashMap<(u32, u32, i64), i64> = HashMap::new();
    for batch in batches {
        let series: Vec<Option<u32>> = batch
            .series
            .iter()
            .map(|s| {
                (scan.keep)(s).then(|| {
                    let next = series_ids.len() as u32;
                    *series_ids.entry(s).or_insert_with(|| {
                        part.series.push(s.clone());
                        next
                    })
                })
            })
            .collect();
        let mut stacks: Vec<Option<u32>> = vec![None; batch.stacks.len()];
        let bucket_ms = bucket(scan, batch.start_ms);
        for row in &batch.rows {
            let Some(series) = series[row.series as usize] else {
                continue;
            };
            let Some(value) = scan
                .profile_type
                .weigh(row.kind, row.value, batch.period_ns)
            else {
                continue;
            };
            let stack = if scan.by_stack {
                *stacks[row.stack as usize].get_or_insert_with(|| {
                    let frames: Vec<u32> = batch.stacks[row.stack as usize]
                        .iter()
                        .map(|&f| {
                            let frame = &batch.frames[f as usize];
                            let next = frame_ids.len() as u32;
                            *frame_ids.entry(frame).or_insert_with(|| {
                                part.frames.push(frame.clone());
                                next
                            })
                        })
                        .collect();
                    let next = stack_ids.len() as u32;
                    *stack_ids.entry(frames.clone()).or_insert_with(|| {
                        part.stacks.push(frames);
                        next
                    })
                })
            } else {
                0
            };
            *sums.entry((series, stack, bucket_ms)).or_default() += value;
        }
    }
    part.rows = sums
        .into_iter()
        .map(|((series, stack, bucket_ms), value)| ScanRow {
            series,
            stack,
            bucket_ms,
            value,
        })
        .collect();
    part
}

/// Selected series ids are pushed into the Parquet scan as a filter up to this many.
const MAX_PUSHED_SERIES: usize = 32;

/// Scans one Parquet part with polars: filter (kind, window, series), group, sum.
fn scan_part(
    dir: &Path,
    seq: &str,
    hour_ms: i64,
    scan: &Scan<'_>,
) -> Result<Option<ScanPart>, StoreError> {
    let file = |kind: &str| dir.join(format!("{seq}.{kind}.parquet"));
    let series = read_series(&file("series"))?;
    let selected: Vec<bool> = series.iter().map(|s| (scan.keep)(s)).collect();
    let n_selected = selected.iter().filter(|&&s| s).count();
    if n_selected == 0 {
        return Ok(None);
    }

    let samples_path = file("samples");
    let mut predicates = Vec::new();
    match scan.profile_type {
        ProfileType::Cpu => predicates.push(col("off_cpu").not()),
        ProfileType::OffCpu => predicates.push(col("off_cpu")),
        ProfileType::Wall => {}
    }
    if hour_ms < scan.from_ms || hour_ms + HOUR_MS > scan.to_ms {
        // An edge hour; inner hours need no time filter.
        predicates.push(
            col("end_ms")
                .gt(lit(scan.from_ms))
                .and(col("start_ms").lt(lit(scan.to_ms))),
        );
    }
    let post_filter = n_selected < series.len();
    if post_filter && n_selected <= MAX_PUSHED_SERIES {
        let any = selected
            .iter()
            .enumerate()
            .filter(|(_, s)| **s)
            .map(|(id, _)| col("series_id").eq(lit(id as u32)))
            .reduce(Expr::or)
            .expect("at least one series");
        predicates.push(any);
    }
    let value = match scan.profile_type {
        ProfileType::Wall => when(col("off_cpu"))
            .then(col("value"))
            .otherwise(col("value") * col("period_ns")),
        _ => col("value"),
    };
    let parquet_err = |source| StoreError::Parquet {
        path: samples_path.clone(),
        error: source,
    };
    if !scan.by_stack {
        // Sums per series (and step) only: rows are stored sorted by interval and series, so one
        // pass summing runs of equal keys does what a hash grouping over every row would, at a
        // fraction of the cost (the series of a day read 86 M rows).
        let mut lf = super::parquet::scan(&samples_path)?;
        if let Some(p) = predicates.into_iter().reduce(Expr::and) {
            lf = lf.filter(p);
        }
        let df = lf
            .select([
                col("start_ms").cast(DataType::Int64),
                col("series_id").cast(DataType::UInt32),
                value.cast(DataType::Int64).alias("value"),
            ])
            .collect()
            .map_err(parquet_err)?;
        let rows = sum_runs(&df, scan, &selected).map_err(parquet_err)?;
        return Ok(Some(ScanPart {
            series,
            rows,
            ..ScanPart::default()
        }));
    }
    // One integer key (series << 32 | stack) groups much faster than two columns.
    let mut keys = vec![if scan.by_stack {
        (col("series_id").cast(DataType::UInt64) * lit(1u64 << 32)
            + col("stack_id").cast(DataType::UInt64))
        .alias("key")
    } else {
        col("series_id").cast(DataType::UInt64).alias("key")
    }];
    if let Some(step) = scan.step_ms {
        let start = when(col("start_ms").lt(lit(scan.from_ms)))
            .then(lit(scan.from_ms))
            .otherwise(col("start_ms"));
        // start ≥ from here, so the remainder is the offset into the step.
        keys.push((start.clone() - (start - lit(scan.from_ms)) % lit(step)).alias("bucket"));
    }
    let mut lf = super::parquet::scan(&samples_path)?;
    if let Some(p) = predicates.into_iter().reduce(Expr::and) {
        lf = lf.filter(p);
    }
    let df = lf
        .group_by(keys)
        .agg([value.sum().alias("value")])
        .collect()
        .map_err(parquet_err)?;
    let rows = sum_rows(&df, scan, &selected).map_err(parquet_err)?;
    let (frames, stacks) = if scan.by_stack {
        read_frames_stacks(&file("frames"), &file("stacks"))?
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Some(ScanPart {
        frames,
        stacks,
        series,
        rows,
    }))
}

/// Sums `value` over runs of rows with the same series and step (`start_ms`, `series_id`,
/// `value` columns, in the part's order); a key may recur in several runs, whose rows the caller
/// adds up.
fn sum_runs(df: &DataFrame, scan: &Scan<'_>, selected: &[bool]) -> PolarsResult<Vec<ScanRow>> {
    let start = df.column("start_ms")?.i64()?;
    let series = df.column("series_id")?.u32()?;
    let value = df.column("value")?.i64()?;
    let no_nulls = start.null_count() + series.null_count() + value.null_count() == 0;
    let aligned = start.chunk_lengths().eq(series.chunk_lengths())
        && start.chunk_lengths().eq(value.chunk_lengths());
    if no_nulls && aligned {
        // Aligned chunks without nulls, as the part's columns are read: plain slices, the
        // fast loop, and no copy.
        let rows = start
            .downcast_iter()
            .zip(series.downcast_iter())
            .zip(value.downcast_iter())
            .flat_map(|((start, series), value)| {
                start
                    .values()
                    .iter()
                    .copied()
                    .zip(series.values().iter().copied())
                    .zip(value.values().iter().copied())
            });
        return Ok(sum_runs_of(rows, scan, selected));
    }
    Ok(sum_runs_of(
        start
            .iter()
            .zip(series.iter())
            .zip(value.iter())
            .filter_map(|((start, series), value)| Some(((start?, series?), value?))),
        scan,
        selected,
    ))
}

fn sum_runs_of(
    rows_in: impl Iterator<Item = ((i64, u32), i64)>,
    scan: &Scan<'_>,
    selected: &[bool],
) -> Vec<ScanRow> {
    let mut rows: Vec<ScanRow> = Vec::new();
    if scan.step_ms.is_none() {
        // One sum per series.
        let mut sums: Vec<Option<i64>> = vec![None; selected.len()];
        for ((_, series), value) in rows_in {
            if selected.get(series as usize).copied().unwrap_or(false) {
                *sums[series as usize].get_or_insert(0) += value;
            }
        }
        rows.extend(sums.iter().enumerate().filter_map(|(series, sum)| {
            sum.map(|value| ScanRow {
                series: series as u32,
                stack: 0,
                bucket_ms: scan.from_ms,
                value,
            })
        }));
        return rows;
    }
    let mut last_start = None;
    let mut last_bucket = scan.from_ms;
    let mut run: Option<ScanRow> = None;
    for ((start, series), value) in rows_in {
        if !selected.get(series as usize).copied().unwrap_or(false) {
            continue;
        }
        if last_start != Some(start) {
            last_start = Some(start);
            last_bucket = bucket(scan, start);
        }
        match &mut run {
            Some(r) if r.series == series && r.bucket_ms == last_bucket => r.value += value,
            _ => {
                rows.extend(run.take());
                run = Some(ScanRow {
                    series,
                    stack: 0,
                    bucket_ms: last_bucket,
                    value,
                });
            }
        }
    }
    rows.extend(run);
    rows
}

fn sum_rows(df: &DataFrame, scan: &Scan<'_>, selected: &[bool]) -> PolarsResult<Vec<ScanRow>> {
    let key = df.column("key")?.u64()?;
    let bucket = scan
        .step_ms
        .is_some()
        .then(|| df.column("bucket").and_then(|c| c.i64().cloned()))
        .transpose()?;
    let value = df.column("value")?.i64()?;
    let mut rows = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let k = key.get(i).unwrap_or(0);
        let (s, stack) = if scan.by_stack {
            ((k >> 32) as u32, k as u32)
        } else {
            (k as u32, 0)
        };
        if !selected.get(s as usize).copied().unwrap_or(false) {
            continue;
        }
        rows.push(ScanRow {
            series: s,
            stack,
            bucket_ms: bucket
                .as_ref()
                .and_then(|c| c.get(i))
                .unwrap_or(scan.from_ms),
            value: value.get(i).unwrap_or(0),
        });
    }
    Ok(rows)
}
