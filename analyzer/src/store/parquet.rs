//! Compaction of write-ahead log segments into time-partitioned Parquet parts (written with
//! polars), and reading them back.
//!
//! A segment `N` becomes one part per hour its batches cover:
//!
//! ```text
//! DIR/data/<YYYYMMDDHH>/<N>.frames.parquet    frame_id u32, function, module, build_id, file: str, line u32, kernel, inlined: bool
//! DIR/data/<YYYYMMDDHH>/<N>.stacks.parquet    stack_id u32, depth u32, frame_id u32   (one row per frame, root first)
//! DIR/data/<YYYYMMDDHH>/<N>.series.parquet    series_id u32, host, comm, exe, build_id, service: str, pid u32
//! DIR/data/<YYYYMMDDHH>/<N>.rollup.parquet    series_id, stack_id: u32, cpu_samples, cpu_ns, offcpu_ns: i64   (sums over the part)
//! DIR/data/<YYYYMMDDHH>/<N>.intervals.parquet start_ms, end_ms: i64, rows u32          (the part's distinct intervals)
//! DIR/data/<YYYYMMDDHH>/<N>.wakeups.parquet   start_ms, end_ms: i64, wakee_series, wakee_stack, waker_series, waker_stack: u32,
//!                                             cause: str, in_interrupt: bool, count: i64, weight: f64, blocked_ns: i64   (schema 2)
//! DIR/data/<YYYYMMDDHH>/<N>.samples.parquet   start_ms, end_ms, period_ns: i64, series_id, stack_id: u32, off_cpu: bool, value: i64
//! ```
//!
//! Parts written by schema 1 have no wakeups file; readers take it for none.
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

use super::wal::{read_segment, segment_seq, write_atomic};
use super::{Batch, Row, SampleKind, SeriesLabels, StoreError, Wakeup};
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
    }
    let marker = segment.with_extension("done");
    write_atomic(&marker, b"")?;
    std::fs::remove_file(segment).map_err(|e| StoreError::io(segment, e))?;
    std::fs::remove_file(&marker).map_err(|e| StoreError::io(&marker, e))?;
    Ok(parts)
}

fn write_part(dir: &Path, seq: u64, batches: &[Batch]) -> Result<(), StoreError> {
    let mut frames: HashMap<&Frame, u32> = HashMap::new();
    let mut stacks: HashMap<Vec<u32>, u32> = HashMap::new();
    let mut series: HashMap<&SeriesLabels, u32> = HashMap::new();
    let (mut f_cols, mut s_cols, mut r_cols, mut x_cols) = (
        FrameCols::default(),
        StackCols::default(),
        SeriesCols::default(),
        SampleCols::default(),
    );
    let mut w_cols = WakeupCols::default();
    for batch in batches {
        let frame_ids: Vec<u32> = batch
            .frames
            .iter()
            .map(|f| {
                let next = frames.len() as u32;
                *frames.entry(f).or_insert_with(|| {
                    f_cols.push(next, f);
                    next
                })
            })
            .collect();
        let stack_ids: Vec<u32> = batch
            .stacks
            .iter()
            .map(|s| {
                let global: Vec<u32> = s.iter().map(|&f| frame_ids[f as usize]).collect();
                let next = stacks.len() as u32;
                *stacks.entry(global.clone()).or_insert_with(|| {
                    s_cols.push(next, &global);
                    next
                })
            })
            .collect();
        let series_ids: Vec<u32> = batch
            .series
            .iter()
            .map(|s| {
                let next = series.len() as u32;
                *series.entry(s).or_insert_with(|| {
                    r_cols.push(next, s);
                    next
                })
            })
            .collect();
        for row in &batch.rows {
            x_cols.push(
                batch,
                series_ids[row.series as usize],
                stack_ids[row.stack as usize],
                row,
            );
        }
        for w in &batch.wakeups {
            w_cols.push(
                batch,
                &Wakeup {
                    wakee: series_ids[w.wakee as usize],
                    wakee_stack: stack_ids[w.wakee_stack as usize],
                    waker: series_ids[w.waker as usize],
                    waker_stack: stack_ids[w.waker_stack as usize],
                    ..*w
                },
            );
        }
    }
    let file = |kind: &str| dir.join(format!("{seq:016}.{kind}.parquet"));
    write_df(&file("frames"), f_cols.into_df())?;
    write_df(&file("stacks"), s_cols.into_df())?;
    write_df(&file("series"), r_cols.into_df())?;
    let samples = x_cols.into_df().map_err(|source| StoreError::Parquet {
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
    write_df(&file("wakeups"), w_cols.into_df())?;
    // Last: a part is complete once its samples file exists.
    write_df(&file("samples"), Ok(samples))
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

/// Reads a part's function name per frame and its stacks (frame indices, root first).
/// A part's frames and stacks, as the query index reads them.
pub(crate) struct StackFunctions {
    /// Function names by frame id.
    pub functions: Vec<String>,
    /// Whether each frame was inlined, by frame id.
    pub inlined: Vec<bool>,
    /// Frame ids by stack id, outermost first.
    pub stacks: Vec<Vec<u32>>,
}

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
    let stacks = collect_sorted(&stacks_path, &["stack_id", "depth"])?;
    let stacks = decode_stacks(&stacks).map_err(|source| StoreError::Parquet {
        path: stacks_path,
        error: source,
    })?;
    Ok(StackFunctions {
        functions,
        inlined,
        stacks,
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
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
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

#[derive(Default)]
struct StackCols {
    id: Vec<u32>,
    depth: Vec<u32>,
    frame: Vec<u32>,
}

impl StackCols {
    fn push(&mut self, id: u32, frames: &[u32]) {
        for (depth, &f) in frames.iter().enumerate() {
            self.id.push(id);
            self.depth.push(depth as u32);
            self.frame.push(f);
        }
    }

    fn into_df(self) -> PolarsResult<DataFrame> {
        DataFrame::new_infer_height(vec![
            Column::new("stack_id".into(), self.id),
            Column::new("depth".into(), self.depth),
            Column::new("frame_id".into(), self.frame),
        ])
    }
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
    fn push(&mut self, batch: &Batch, series: u32, stack: u32, row: &Row) {
        self.start.push(batch.start_ms);
        self.end.push(batch.end_ms);
        self.period.push(batch.period_ns);
        self.series.push(series);
        self.stack.push(stack);
        self.off_cpu.push(row.kind == SampleKind::OffCpu);
        self.value.push(row.value);
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
    fn push(&mut self, batch: &Batch, w: &Wakeup) {
        self.start.push(batch.start_ms);
        self.end.push(batch.end_ms);
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
    let decode = || -> PolarsResult<Vec<Wakeup>> {
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
            .map(|i| Wakeup {
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
            })
            .collect())
    };
    decode().map_err(parquet)
}

/// The highest segment number any Parquet part was compacted from.
pub(crate) fn max_part_seq(store: &Path) -> Option<u64> {
    let hours = std::fs::read_dir(store.join("data")).ok()?;
    hours
        .filter_map(Result::ok)
        .filter_map(|h| std::fs::read_dir(h.path()).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .split('.')
                .next()?
                .parse::<u64>()
                .ok()
        })
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
    let stacks = collect_sorted(stacks_path, &["stack_id", "depth"])?;
    let stacks = decode_stacks(&stacks).map_err(|source| StoreError::Parquet {
        path: stacks_path.to_owned(),
        error: source,
    })?;
    Ok((frames, stacks))
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

fn decode_stacks(stacks: &DataFrame) -> PolarsResult<Vec<Vec<u32>>> {
    let mut stack_list: Vec<Vec<u32>> = Vec::new();
    for (id, frame) in u32s(stacks, "stack_id")?
        .into_iter()
        .zip(u32s(stacks, "frame_id")?)
    {
        let id = id as usize;
        if stack_list.len() <= id {
            stack_list.resize(id + 1, Vec::new());
        }
        stack_list[id].push(frame);
    }
    Ok(stack_list)
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
        wakeups: Vec::new(),
    })
}
