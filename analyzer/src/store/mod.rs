//! The embedded store: samples aggregated per interval into [`Batch`]es, made durable in an
//! append-only, checksummed, fsynced write-ahead log, compacted into hourly Parquet parts
//! (written with polars), dropped whole by retention, and read by polars lazy scans.
//!
//! # On-disk layout (store schema version 5)
//!
//! ```text
//! DIR/STORE_VERSION                          "5\n"; versions 1 (no wakeups), 2 (flat stack
//!                                            tables), 3 (no thread samples or wait records)
//!                                            and 4 (no requests) are read, and marked 5 by
//!                                            the first writer; other versions are refused
//! DIR/LOCK                                   flock(2)ed by the one writer
//! DIR/wal/<seq:016>.wal                      write-ahead log segments
//! DIR/wal/<seq:016>.done                     marker: segment <seq> is compacted (transient)
//! DIR/data/<YYYYMMDDHH>/<part>.*.parquet          a part: <seq:016> (compacted from log segment
//!                                            <seq>) or <first:016>-<last:016> (merged)
//! DIR/data/<YYYYMMDDHH>/<seq:016>.frames.parquet
//!     frame_id u32, function str, module str?, build_id str?, file str?, line u32?,
//!     kernel bool, inlined bool
//! DIR/data/<YYYYMMDDHH>/<seq:016>.stacks.parquet
//!     up u32, frame_id u32?, is_stack bool            the part's stacks as a prefix tree: one
//!                                                      row per node, the row number its id,
//!                                                      parents first; up: how many rows back
//!                                                      its parent is (0: none, a root frame);
//!                                                      a stack is the node of its last frame
//!                                                      (is_stack), the empty stack a node with
//!                                                      no parent and no frame. Versions 1–2:
//!     stack_id u32, depth u32, frame_id u32            one row per frame, root first (depth 0)
//! DIR/data/<YYYYMMDDHH>/<seq:016>.series.parquet
//!     series_id u32, host str, pid u32, comm str, exe str, build_id str, service str
//! DIR/data/<YYYYMMDDHH>/<seq:016>.rollup.parquet
//!     series_id u32, stack_id u32, cpu_samples i64, cpu_ns i64, offcpu_ns i64
//!                                                      sums over all the part's intervals
//! DIR/data/<YYYYMMDDHH>/<seq:016>.intervals.parquet
//!     start_ms i64, end_ms i64, rows u32               the part's distinct intervals
//! DIR/data/<YYYYMMDDHH>/<seq:016>.wakeups.parquet            (version 2; absent in older parts)
//!     start_ms i64, end_ms i64, wakee_series u32, wakee_stack u32, waker_series u32,
//!     waker_stack u32, cause str, in_interrupt bool, count i64, weight f64, blocked_ns i64
//!                                                      who ended the off-CPU waits, summed per
//!                                                      interval, threads and stacks
//! DIR/data/<YYYYMMDDHH>/<seq:016>.threads.parquet            (version 4; absent in older parts)
//!     series_id u32, tid u32, base_us i64, dt_us u32, stack_id u32
//!                                                      every on-CPU sample with its thread and
//!                                                      time: rows by series, thread and time,
//!                                                      each time in µs since the thread's row
//!                                                      before (its first: since base_us, the
//!                                                      part's earliest, constant)
//! DIR/data/<YYYYMMDDHH>/<seq:016>.waits.parquet              (version 4; absent in older parts)
//!     series_id u32, tid u32, base_us i64, dt_us u32 (the start, as above), blocked_ns i64,
//!     runq_ns i64, stack_id u32, cause str, weight f64, waker str (none, thread, interrupt,
//!     kernel), waker_series u32, waker_tid u32, waker_stack u32
//!                                                      off-CPU waits one by one, up to the
//!                                                      agent's budget per interval (see
//!                                                      [`WaitRecord`])
//! DIR/data/<YYYYMMDDHH>/<seq:016>.requests.parquet           (version 5; absent in older parts)
//!     series_id u32, tid u32, start_ns i64, duration_ns i64
//!                                                      calls timed by latency probes, by
//!                                                      series, thread and start (see
//!                                                      [`RequestSpan`])
//! DIR/data/<YYYYMMDDHH>/<seq:016>.samples.parquet
//!     start_ms i64, end_ms i64, period_ns i64, series_id u32, stack_id u32, off_cpu bool,
//!     value i64                                        samples (cpu) or nanoseconds (off-CPU)
//! ```
//!
//! **Log.** A segment is a sequence of records, each `magic "CPW4" | payload length (u32 LE) |
//! CRC-32 of the payload (u32 LE) | payload`, the payload a [`Batch`] encoded with postcard
//! (`CPW1` records, written by schema 1, hold batches without wakeups, `CPW2` records, schemas
//! 2–3, batches without thread samples and wait records, and `CPW3` records, schema 4, batches
//! without requests; all are still read).
//! Each record is fsynced before [`Store::append`] returns, so a crash loses at most the
//! interval being aggregated; a torn record at a segment's tail is cut off on the next open
//! (and reported), never read. A corrupt record followed by valid ones (a flipped byte, a bad
//! sector) is skipped to the next record that has the magic and a valid checksum: only it is
//! lost, and the bytes skipped are reported. A failed append (a full disk) cuts its partial
//! record off, or rotates, so later appends stay readable. Every writer starts a new segment,
//! and rotates to the next one when a batch starts a newer hour (a late batch of an earlier
//! hour joins the current segment) or the segment reaches
//! [`StoreOptions::segment_max_bytes`].
//!
//! **Parts.** A closed segment is compacted, in a background thread, into one part per hour
//! its batches cover: nine Parquet files named after the segment, with frames and stacks
//! deduplicated within the part so each sample row is a few small integers (zstd), and a
//! roll-up (sums per series and stack over the whole part) that answers windows covering the
//! part without reading its samples (see [`Index`]). Parts written before roll-ups existed get
//! them at the next maintenance; until then readers compute them. Every file
//! is written under a temporary name, fsynced and renamed; the samples file goes last. Then the
//! `.done` marker is written, the segment deleted, and the marker removed. Readers use part
//! `<seq>` only when segment `<seq>` is gone or marked done, and the segment otherwise, so a
//! crash at any point never shows a sample twice or not at all, and a query never reads a
//! half-written file. Segment numbers are never reused.
//!
//! **Merging.** Once an hour is closed (a later hour is being written, or the store is closed
//! in a later hour) and no live log segment could still add a part to it, its parts are merged
//! into one, `<first:016>-<last:016>.*.parquet`, named by the range of segment numbers it
//! replaces, so each hour repeats its frame, stack and series tables and its roll-up once, and
//! a query reads one part per hour. Readers skip any part whose range a complete merged part
//! covers; the replaced parts are deleted by a maintenance round at least a minute later (so a
//! reader that listed them just before can still read them), as are the files of a merge cut
//! short. A part pushed late into a merged hour is merged with it at the next round.
//!
//! Both claims are tested by stopping a writer at every step of a compaction and a merge in
//! turn (each step passes `crash_point`): every acknowledged batch is read exactly once
//! right after and after the next writer's recovery.
//!
//! **Retention.** After each compaction, hour directories older than [`Retention::max_age`]
//! are deleted whole, then the oldest ones until the store fits [`Retention::max_bytes`].

mod batch;
mod index;
mod parquet;
mod scan;
pub(crate) mod wal;
pub mod wire;

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use batch::{
    Aggregator, Batch, RequestSpan, Row, SampleKind, SeriesLabels, ThreadSample, WaitRecord,
    WakerKind, Wakeup, WakeupSample,
};
pub use index::{CallPaths, DEFAULT_CACHE_BYTES, Index, MAX_TRIE_NODES};
pub use scan::{ProfileType, Scan, ScanPart, ScanRow};
pub use wal::{Recovery, StoreError, Wal};

use parquet::HOUR_MS;

/// The store schema version this code writes. It reads versions 1 (no wakeups) to 4 too, and
/// upgrades such a store it opens for writing (only additions: new log records and parts carry
/// wakeups, thread samples, wait records and requests). An older critpath refuses the upgraded
/// store rather than skipping its newer log records as damaged.
pub const STORE_VERSION: u32 = 5;

/// How long and how much the store keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Hours older than this are dropped. Default: 30 days; `None` keeps everything.
    pub max_age: Option<Duration>,
    /// The oldest hours are dropped while the store is larger than this. Default: 10 GiB;
    /// `None`: no limit. The newest hour is never dropped.
    pub max_bytes: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age: Some(Duration::from_secs(30 * 24 * 3600)),
            max_bytes: Some(10 << 30),
        }
    }
}

/// Settings of a store opened for writing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// What to keep.
    pub retention: Retention,
    /// A log segment is rotated (and compacted) when it reaches this size, or when a batch
    /// starts a new hour. Default: 256 MiB.
    pub segment_max_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            retention: Retention::default(),
            segment_max_bytes: 256 << 20,
        }
    }
}

/// What one round of background maintenance did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Segments compacted into Parquet.
    pub compacted_segments: usize,
    /// Parts written before roll-ups existed that got their roll-up files.
    pub rolled_up_parts: usize,
    /// Hour directories dropped by retention.
    pub dropped_hours: usize,
    /// Bytes they held.
    pub dropped_bytes: u64,
    /// Closed hours whose parts were merged into one.
    pub merged_hours: usize,
    /// Parts deleted after a merge replaced them.
    pub removed_parts: usize,
}

/// Crash-point testing: each step of compaction and merging that changes the disk (a file
/// written or renamed, a directory synced, a segment or a file removed) passes here. With
/// `CRITPATH_TEST_CRASH_AT=N` in the environment the process exits at once at the Nth such
/// step, as a SIGKILL would stop it (no destructor, no further write); the store's tests stop
/// it at every step in turn. Unset (always, outside those tests), a step costs one atomic
/// increment.
pub(crate) fn crash_point() {
    static CRASH_AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let n = CRASH_POINTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let at = CRASH_AT.get_or_init(|| {
        std::env::var("CRITPATH_TEST_CRASH_AT")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if *at == Some(n) {
        std::process::exit(86);
    }
}

/// Steps passed by [`crash_point`] in this process.
static CRASH_POINTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long the parts a merge replaced stay on disk after it: a reader that listed them just
/// before the merge completed can still read them.
const MERGE_GRACE: Duration = Duration::from_secs(60);

/// An open store directory.
pub struct Store {
    dir: PathBuf,
    wal: Wal,
    options: StoreOptions,
    /// The hour (Unix ms) of the current segment's batches.
    segment_hour: Option<i64>,
    /// The start (Unix ms) of the newest hour written: the open one, whose parts are not
    /// merged.
    newest_hour: Option<i64>,
    maintenance: Option<JoinHandle<Result<Maintenance, StoreError>>>,
    _lock: std::fs::File,
}

impl Store {
    /// Opens (creating if needed) a store directory for writing with default options.
    ///
    /// # Errors
    /// See [`Store::open_with`].
    pub fn open(dir: impl Into<PathBuf>) -> Result<(Self, Recovery), StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (creating if needed) a store directory for writing: checks its schema version,
    /// takes the writer's lock, recovers the log, compacts segments left by earlier writers,
    /// applies retention and starts a new segment. Returns what recovery found.
    ///
    /// # Errors
    /// I/O errors, another writer holding the lock, or a directory written by an incompatible
    /// schema version.
    pub fn open_with(
        dir: impl Into<PathBuf>,
        options: StoreOptions,
    ) -> Result<(Self, Recovery), StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        check_version(&dir, true)?;
        let lock = lock(&dir)?;
        remove_stale_temporaries(&dir);
        let next_seq = parquet::max_part_seq(&dir).map_or(1, |s| s + 1);
        let (wal, recovery) = Wal::open(dir.join("wal"), next_seq)?;
        // Earlier segments are closed (each writer starts its own): compact them now. A store
        // whose compaction fails (a full disk) still opens, for writing and for reads: the
        // segments stay and the next maintenance retries them.
        if let Err(err) = maintain(&dir, Some(wal.path()), None, &options.retention) {
            log::warn!("store maintenance at open failed, retried later: {err}");
        }
        Ok((
            Self {
                dir,
                wal,
                options,
                segment_hour: None,
                newest_hour: None,
                maintenance: None,
                _lock: lock,
            },
            recovery,
        ))
    }

    /// Closes the store: waits for background maintenance, then compacts this writer's last
    /// segment into Parquet.
    ///
    /// # Errors
    /// Compaction failures; the segment then stays and is compacted at the next open.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.finish_maintenance();
        // Every segment is closed now, this writer's included.
        maintain(&self.dir, None, self.newest_hour, &self.options.retention).map(|_| ())
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a batch durably (written and fsynced when this returns). Rotates the log first
    /// when the batch starts a new hour or the segment is full, and then compacts the closed
    /// segment in the background.
    ///
    /// # Errors
    /// Write or fsync failures (a full disk among them); the store stays readable and later
    /// appends may succeed.
    pub fn append(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let hour = batch.start_ms.div_euclid(HOUR_MS);
        self.newest_hour = self.newest_hour.max(Some(hour * HOUR_MS));
        // A new hour closes the segment; a late batch of an earlier hour (a pushing agent
        // catching up) joins the current one: compaction splits a segment by hour.
        let rotate = self.wal.needs_rotation()
            || (self.wal.segment_len() > 0
                && (self.segment_hour.is_none_or(|h| hour > h)
                    || self.wal.segment_len() >= self.options.segment_max_bytes));
        if rotate {
            // The previous round must be over before a segment is closed: it would take the
            // new segment for a closed one.
            self.finish_maintenance();
            match self.wal.rotate() {
                Ok(_) => self.start_maintenance(),
                // Keep appending to the current segment; rotation is retried next time.
                Err(err) => log::warn!("rotating the log: {err}"),
            }
        }
        self.segment_hour = if rotate {
            Some(hour)
        } else {
            self.segment_hour.max(Some(hour))
        };
        self.wal.append(batch)
    }

    /// Starts compacting closed segments and applying retention in a background thread; the
    /// caller has finished the previous round (see [`Store::append`]).
    fn start_maintenance(&mut self) {
        let dir = self.dir.clone();
        let active = self.wal.path().to_owned();
        let retention = self.options.retention.clone();
        let open_hour = self.newest_hour;
        let spawned = std::thread::Builder::new()
            .name("critpath-compact".into())
            .spawn(move || maintain(&dir, Some(&active), open_hour, &retention));
        match spawned {
            Ok(handle) => self.maintenance = Some(handle),
            Err(err) => log::warn!("starting the compaction thread: {err}"),
        }
    }

    /// Waits for the background maintenance round, if any, and logs its outcome.
    pub fn finish_maintenance(&mut self) {
        let Some(handle) = self.maintenance.take() else {
            return;
        };
        match handle.join() {
            Ok(Ok(m)) => log::info!(
                "compacted {} segment(s), merged the parts of {} hour(s) (deleted {} replaced \
                 part(s)), dropped {} hour(s) ({} bytes) by retention",
                m.compacted_segments,
                m.merged_hours,
                m.removed_parts,
                m.dropped_hours,
                m.dropped_bytes
            ),
            Ok(Err(err)) => log::error!("compacting the log: {err}; retried at the next rotation"),
            Err(_) => log::error!("the compaction thread panicked; retried at the next rotation"),
        }
    }

    /// Bytes written to the log by this process.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.bytes_written()
    }

    /// Every batch overlapping `[from_ms, to_ms)` in a store directory, read-only (safe while an
    /// agent writes it: a record being written is not yet valid and is skipped).
    ///
    /// # Errors
    /// A missing directory, an incompatible schema version, or an unreadable file.
    pub fn batches(dir: &Path, from_ms: i64, to_ms: i64) -> Result<Vec<Batch>, StoreError> {
        scan::batches(dir, from_ms, to_ms)
    }

    /// Sums the values of a window of a store directory, read-only, grouped as `request` says.
    /// Parquet parts are scanned by polars with the filter and grouping pushed down.
    ///
    /// # Errors
    /// A missing directory, an incompatible schema version, or an unreadable file.
    pub fn scan(dir: &Path, request: &Scan<'_>) -> Result<Vec<ScanPart>, StoreError> {
        scan::scan(dir, request)
    }

    /// A fingerprint of the data a query of `[from_ms, to_ms)` reads (its parts and the live
    /// log's length): equal stamps, equal answers, so answers can be cached by it.
    ///
    /// # Errors
    /// A missing directory, an incompatible schema version, or an unreadable file.
    pub fn stamp(dir: &Path, from_ms: i64, to_ms: i64) -> Result<u64, StoreError> {
        scan::sources_stamp(dir, from_ms, to_ms)
    }

    /// Bytes on disk: Parquet parts and log segments.
    pub fn disk_usage(dir: &Path) -> u64 {
        dir_size(&dir.join("data")) + dir_size(&dir.join("wal"))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.finish_maintenance();
    }
}

/// Compacts every closed segment (those before `active`; all when `active` is `None`),
/// applies retention, then merges the parts of each closed hour (before `open_hour`, the hour
/// being written; before the current hour when none is) and deletes parts merged at least
/// [`MERGE_GRACE`] ago.
fn maintain(
    dir: &Path,
    active: Option<&Path>,
    open_hour: Option<i64>,
    retention: &Retention,
) -> Result<Maintenance, StoreError> {
    let mut m = Maintenance::default();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // Retention first, whatever else fails: on a full disk, dropping the oldest hours is what
    // frees the space compaction needs.
    let (hours, bytes) = apply_retention(dir, retention, now_ms)?;
    m.dropped_hours = hours;
    m.dropped_bytes = bytes;
    // A segment that fails to compact (a full disk) stays, and is compacted by a later pass;
    // the others and the merges go on.
    let mut failed = None;
    let active_seq = active.and_then(wal::segment_seq).unwrap_or(u64::MAX);
    for segment in wal::segments(&dir.join("wal"))? {
        if wal::segment_seq(&segment).is_some_and(|seq| seq < active_seq) {
            match parquet::compact_segment(dir, &segment) {
                Ok(_) => m.compacted_segments += 1,
                Err(err) => {
                    log::warn!("compacting {}: {err}", segment.display());
                    failed = failed.or(Some(err));
                }
            }
        }
    }
    // Parts from before roll-ups existed get theirs (once).
    for (hour, _) in parquet::hour_dirs(dir)? {
        let Ok(entries) = std::fs::read_dir(&hour) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            if let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".samples.parquet"))
                && parquet::backfill_rollup(&hour, seq)?
            {
                m.rolled_up_parts += 1;
            }
        }
    }
    // A hour that fails to merge (a damaged part) does not keep the others from merging.
    let open_hour = open_hour.unwrap_or(now_ms.div_euclid(HOUR_MS) * HOUR_MS);
    for (hour, hour_ms) in parquet::hour_dirs(dir)? {
        let merged = if hour_ms < open_hour {
            parquet::merge_hour(dir, &hour)
        } else {
            Ok(false)
        };
        match merged.and_then(|merged| {
            m.merged_hours += usize::from(merged);
            parquet::remove_merged(&hour, MERGE_GRACE)
        }) {
            Ok(removed) => m.removed_parts += removed,
            Err(err) => failed = failed.or(Some(err)),
        }
    }
    failed.map_or(Ok(m), Err)
}

/// Drops hour directories older than the maximum age, then the oldest while the store is over
/// its size (never the newest hour). Returns the hours and bytes dropped.
fn apply_retention(
    dir: &Path,
    retention: &Retention,
    now_ms: i64,
) -> Result<(usize, u64), StoreError> {
    let hours = parquet::hour_dirs(dir)?;
    let mut sizes: Vec<(PathBuf, i64, u64)> = hours
        .into_iter()
        .map(|(path, hour)| {
            let size = dir_size(&path);
            (path, hour, size)
        })
        .collect();
    let mut total: u64 = sizes.iter().map(|h| h.2).sum::<u64>() + dir_size(&dir.join("wal"));
    let (mut dropped, mut dropped_bytes) = (0, 0);
    let oldest_kept = retention.max_age.map(|age| now_ms - age.as_millis() as i64);
    while sizes.len() > 1 {
        let (path, hour, size) = &sizes[0];
        let too_old = oldest_kept.is_some_and(|t| hour + HOUR_MS <= t);
        let too_big = retention.max_bytes.is_some_and(|max| total > max);
        if !too_old && !too_big {
            break;
        }
        std::fs::remove_dir_all(path).map_err(|e| StoreError::io(path, e))?;
        log::info!(
            "retention: dropped {} ({size} bytes, {})",
            path.display(),
            if too_old {
                "too old"
            } else {
                "store over its size"
            }
        );
        total -= size;
        dropped += 1;
        dropped_bytes += size;
        sizes.remove(0);
    }
    Ok((dropped, dropped_bytes))
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Takes the writer's lock on a store directory.
/// Removes the temporary files of writes cut short (`*.tmp`: a part or a marker being written
/// when the writer died or the disk filled). Only the writer, holding the lock, writes them.
fn remove_stale_temporaries(dir: &Path) {
    let mut dirs = vec![dir.to_owned(), dir.join("wal")];
    if let Ok(hours) = parquet::hour_dirs(dir) {
        dirs.extend(hours.into_iter().map(|(path, _)| path));
    }
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp") && path.is_file() {
                match std::fs::remove_file(&path) {
                    Ok(()) => log::info!("removed {}, left by a write cut short", path.display()),
                    Err(err) => log::warn!("removing {}: {err}", path.display()),
                }
            }
        }
    }
}

/// How long opening a store waits for its lock before it is taken to be another writer's: a
/// lock released a moment ago can still be held by a process the previous holder forked, until
/// that one's `exec` closes the descriptor it inherited (a `flock` belongs to the open file,
/// shared by every descriptor of it).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn lock(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::os::fd::AsRawFd as _;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a valid open file descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(StoreError::io(&path, err));
        }
        if std::time::Instant::now() >= deadline {
            return Err(StoreError::Locked(dir.to_owned()));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

pub(crate) fn check_version(dir: &Path, create: bool) -> Result<(), StoreError> {
    let path = dir.join("STORE_VERSION");
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim() {
            "5" => Ok(()),
            // Readable as is; a writer marks it version 5 before writing wakeups, prefix-tree
            // stack tables, thread samples, wait records or requests into it.
            "1" | "2" | "3" | "4" if create => {
                wal::write_atomic(&path, format!("{STORE_VERSION}\n").as_bytes())
            }
            "1" | "2" | "3" | "4" => Ok(()),
            found => Err(StoreError::Version {
                dir: dir.to_owned(),
                found: found.to_owned(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            if dir.join("wal").exists() {
                return Err(StoreError::Version {
                    dir: dir.to_owned(),
                    found: "none".into(),
                });
            }
            wal::write_atomic(&path, format!("{STORE_VERSION}\n").as_bytes())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(StoreError::NoStore(dir.to_owned()))
        }
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::wal::tests::batch;
    use super::*;

    fn total(dir: &Path) -> i64 {
        Store::batches(dir, 0, i64::MAX)
            .unwrap()
            .iter()
            .map(|b| b.total(SampleKind::Cpu))
            .sum()
    }

    /// Options that keep everything (no retention).
    fn keep_all() -> StoreOptions {
        StoreOptions {
            retention: Retention {
                max_age: None,
                max_bytes: None,
            },
            ..StoreOptions::default()
        }
    }

    /// A waiter blocked in `main → lock`, woken by a holder in `main → unlock`, both of pid 7.
    struct LockThreads {
        waiter: SeriesLabels,
        holder: SeriesLabels,
        wait: [crate::Frame; 2],
        work: [crate::Frame; 2],
    }

    impl LockThreads {
        fn new() -> Self {
            use crate::Frame;
            let thread = |comm: &str| SeriesLabels {
                pid: 7,
                comm: comm.into(),
                ..SeriesLabels::default()
            };
            Self {
                waiter: thread("waiter"),
                holder: thread("holder"),
                wait: [Frame::user("main", "/x"), Frame::user("lock", "/x")],
                work: [Frame::user("main", "/x"), Frame::user("unlock", "/x")],
            }
        }

        /// The holder waking the waiter from a lock wait of `blocked_ns`.
        fn wakeup(&self, weight: f64, blocked_ns: u64) -> WakeupSample<'_> {
            WakeupSample {
                wakee: &self.waiter,
                wakee_frames: &self.wait,
                waker: &self.holder,
                waker_frames: &self.work,
                cause: crate::offcpu::Cause::Lock,
                in_interrupt: false,
                weight,
                blocked_ns,
            }
        }
    }

    fn parts(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for (hour, _) in parquet::hour_dirs(dir).unwrap() {
            for e in std::fs::read_dir(&hour).unwrap() {
                let name = e.unwrap().file_name().into_string().unwrap();
                if let Some(seq) = name.strip_suffix(".samples.parquet") {
                    out.push(format!(
                        "{}/{seq}",
                        hour.file_name().unwrap().to_str().unwrap()
                    ));
                }
            }
        }
        out.sort();
        out
    }

    /// Wakeups as the reader sees them: resolved to thread names and leaf functions.
    fn wakeups(dir: &Path) -> Vec<(String, String, String, String, u64, i64)> {
        let mut out: Vec<_> = Store::batches(dir, 0, i64::MAX)
            .unwrap()
            .iter()
            .flat_map(|b| {
                let leaf = |s: u32| {
                    b.stacks[s as usize]
                        .last()
                        .map_or(String::new(), |&f| b.frames[f as usize].function.clone())
                };
                b.wakeups.iter().map(move |w| {
                    (
                        b.series[w.wakee as usize].comm.clone(),
                        leaf(w.wakee_stack),
                        b.series[w.waker as usize].comm.clone(),
                        leaf(w.waker_stack),
                        w.count,
                        w.blocked_ns,
                    )
                })
            })
            .collect();
        out.sort();
        out
    }

    /// Wakeups aggregated by the agent's aggregator are kept by the log and by the Parquet parts
    /// the log is compacted into, with their threads and stacks.
    #[test]
    fn wakeups_survive_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        let mut agg = Aggregator::new(10_000, 1);
        let lock = LockThreads::new();
        for (t, blocked_ns) in [(1_000, 300), (2_000, 500), (12_000, 100)] {
            if let Some(b) = agg.add_wakeup(t, &lock.wakeup(2.0, blocked_ns)) {
                assert_eq!(b.wakeups.len(), 1, "alike wakeups are summed");
                store.append(&b).unwrap();
            }
        }
        store.append(&agg.flush().unwrap()).unwrap();
        let w = |n, ns| {
            (
                "waiter".into(),
                "lock".into(),
                "holder".into(),
                "unlock".into(),
                n,
                ns,
            )
        };
        let want = vec![w(1, 200), w(2, 1_600)];
        assert_eq!(wakeups(dir.path()), want, "from the log");
        store.close().unwrap();
        assert!(!parts(dir.path()).is_empty());
        assert_eq!(wakeups(dir.path()), want, "from the parts");
    }

    /// Thread samples and wait records come back from the log and from the Parquet parts as
    /// they went in (times to the microsecond in parts), with their threads, stacks and
    /// wakers, and a window reads only those inside it.
    #[test]
    fn records_survive_compaction() {
        use crate::Frame;
        use crate::offcpu::{Cause, OffCpuWait, ThreadRef, Waker};
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        let mut agg = Aggregator::new(10_000, 1_000_000);
        let s = |comm: &str| SeriesLabels {
            pid: 7,
            comm: comm.into(),
            ..Default::default()
        };
        let thread = |tid| ThreadRef {
            pid: 7,
            tid,
            comm: "app".into(),
        };
        let mut finished = Vec::new();
        for i in 0..30i64 {
            let t = 1_000_000_000 + i * 700_123_457;
            let frames = [
                Frame::user("main", "/a"),
                Frame::user(format!("f{}", i % 3), "/a"),
            ];
            finished.extend(agg.add_on_cpu(
                t,
                &s("app"),
                (10 + (i % 2) as u32, i % 3 == 0),
                &frames,
            ));
            let wait = OffCpuWait {
                thread: thread(10),
                start_unix_ns: t + 1_000,
                blocked_ns: 2_000_000 + i as u64,
                runq_delay_ns: 5_000,
                cause: Cause::Lock,
                weight: 1.5,
                frames: vec![Frame::user("main", "/a"), Frame::user("lock", "/a")],
                waker: Some(Waker {
                    thread: thread(11),
                    in_interrupt: false,
                    kernel_thread: false,
                    frames: vec![Frame::user("main", "/a"), Frame::user("unlock", "/a")],
                }),
            };
            finished.extend(agg.add_wait(&s("app"), Some(&s("app")), &wait));
            finished.extend(agg.add_request(&s("app"), 12, t + 2_000, 3_000_000 + i));
        }
        finished.extend(agg.flush());
        for b in &finished {
            store.append(b).unwrap();
        }
        let records = |dir: &Path, from_ms, to_ms| {
            let batches = Store::batches(dir, from_ms, to_ms).unwrap();
            let mut samples: Vec<(u32, i64, String, bool)> = Vec::new();
            let mut waits: Vec<(u32, i64, i64, String, u32, String)> = Vec::new();
            let mut requests: Vec<(String, u32, i64, i64)> = Vec::new();
            for b in &batches {
                for r in &b.requests {
                    let comm = b.series[r.series as usize].comm.clone();
                    requests.push((comm, r.tid, r.start_ns, r.duration_ns));
                }
                let leaf = |stack: u32| {
                    b.stacks[stack as usize]
                        .last()
                        .map_or(String::new(), |&f| b.frames[f as usize].function.clone())
                };
                for t in &b.thread_samples {
                    samples.push((t.tid, t.time_ns / 1000, leaf(t.stack), t.background));
                }
                for w in &b.waits {
                    assert_eq!(w.waker, WakerKind::Thread);
                    assert_eq!((w.weight, w.runq_ns), (1.5, 5_000));
                    waits.push((
                        w.tid,
                        w.start_ns / 1000,
                        w.blocked_ns,
                        leaf(w.stack),
                        w.waker_tid,
                        leaf(w.waker_stack),
                    ));
                }
            }
            samples.sort();
            waits.sort();
            requests.sort();
            (samples, waits, requests)
        };
        let from_log = records(dir.path(), 0, i64::MAX / 2_000_000);
        assert_eq!(from_log.0.len(), 30);
        assert_eq!(from_log.2.len(), 30, "requests");
        assert_eq!(
            from_log.2[3],
            (
                "app".into(),
                12,
                1_000_000_000 + 3 * 700_123_457 + 2_000,
                3_000_003
            )
        );
        assert_eq!(
            from_log.0.iter().filter(|s| s.3).count(),
            10,
            "background samples"
        );
        assert_eq!(from_log.1.len(), 30);
        assert_eq!(
            from_log.1[3],
            (
                10,
                (1_000_000_000 + 3 * 700_123_457 + 1_000) / 1000,
                2_000_003,
                "lock".into(),
                11,
                "unlock".into()
            )
        );
        store.close().unwrap();
        assert!(!parts(dir.path()).is_empty());
        assert_eq!(
            records(dir.path(), 0, i64::MAX / 2_000_000),
            from_log,
            "from the parts"
        );
        // A window of 5 s (1.0 s to 6.0 s) holds the samples taken in it, by time.
        let window = records(dir.path(), 1_000, 6_000);
        let inside = from_log
            .0
            .iter()
            .filter(|(_, us, ..)| (1_000_000..6_000_000).contains(us))
            .count();
        assert_eq!(window.0.len(), inside);
    }

    /// Once an hour is closed, its parts are merged into one that holds each frame once:
    /// readers see every sample and wakeup exactly once before the merge, while the merged and
    /// the replaced parts are both on disk, and after the replaced ones are deleted; the open
    /// hour is left alone; a part added to a merged hour later is merged with it.
    #[test]
    fn closed_hours_are_merged() {
        let dir = tempfile::tempdir().unwrap();
        let every_batch_rotates = StoreOptions {
            segment_max_bytes: 1,
            ..keep_all()
        };
        let (mut store, _) = Store::open_with(dir.path(), every_batch_rotates.clone()).unwrap();
        let mut agg = Aggregator::new(10_000, 1);
        let lock = LockThreads::new();
        for i in 0..3_i64 {
            let t = i * 10_000;
            agg.add(t, &lock.holder, &lock.work, SampleKind::Cpu, 1 + i);
            agg.add_wakeup(t + 1, &lock.wakeup(1.0, 100 * (i as u64 + 1)));
            store.append(&agg.flush().unwrap()).unwrap();
            store.finish_maintenance();
        }
        let hour0 = dir.path().join("data/1970010100");
        let (cpu, woken) = (total(dir.path()), wakeups(dir.path()));
        assert_eq!(cpu, 6);
        assert_eq!(woken.len(), 3, "{woken:?}");
        assert_eq!(
            parquet::complete_parts(&hour0).len(),
            2,
            "the open hour is not merged"
        );

        store.append(&batch(HOUR_MS, 4)).unwrap(); // closes hour 0
        store.finish_maintenance();
        let merged = "0000000000000001-0000000000000003";
        assert_eq!(parquet::visible_parts(&hour0), [merged]);
        assert_eq!(
            parquet::complete_parts(&hour0).len(),
            4,
            "replaced parts kept a while"
        );
        assert_eq!(total(dir.path()), cpu + 4);
        assert_eq!(wakeups(dir.path()), woken);
        let frames = |name: &str| {
            parquet::read_frames_stacks(
                &hour0.join(format!("{name}.frames.parquet")),
                &hour0.join(format!("{name}.stacks.parquet")),
            )
            .unwrap()
        };
        let (merged_frames, merged_stacks) = frames(merged);
        assert_eq!(
            merged_frames.len(),
            3,
            "main, lock, unlock: {merged_frames:?}"
        );
        let stacks: Vec<&Vec<u32>> = merged_stacks.iter().filter(|s| !s.is_empty()).collect();
        assert_eq!(stacks.len(), 2, "main→lock, main→unlock: {merged_stacks:?}");

        assert_eq!(parquet::remove_merged(&hour0, MERGE_GRACE).unwrap(), 0);
        assert_eq!(parquet::remove_merged(&hour0, Duration::ZERO).unwrap(), 3);
        assert_eq!(parquet::complete_parts(&hour0), [merged]);
        assert_eq!(
            std::fs::read_dir(&hour0).unwrap().count(),
            10,
            "one part's files"
        );
        assert_eq!(total(dir.path()), cpu + 4);
        assert_eq!(wakeups(dir.path()), woken);

        // A batch for the merged hour arrives late (a pushing agent's queue): its part is
        // read at once, and merged at the next round.
        store.append(&batch(30_000, 5)).unwrap();
        store.append(&batch(HOUR_MS + 10_000, 1)).unwrap();
        store.finish_maintenance();
        assert_eq!(
            parquet::visible_parts(&hour0),
            ["0000000000000001-0000000000000005"]
        );
        assert_eq!(total(dir.path()), cpu + 10);
        store.close().unwrap();
        assert_eq!(total(dir.path()), cpu + 10);
        assert_eq!(wakeups(dir.path()), woken);
        // A writer opening the store later merges the last hour too (it is past), and the
        // next one starts after the highest segment any part covers, merged ones included.
        let (store, _) = Store::open_with(dir.path(), every_batch_rotates.clone()).unwrap();
        store.close().unwrap();
        let hour1 = dir.path().join("data/1970010101");
        assert_eq!(
            parquet::visible_parts(&hour1),
            ["0000000000000004-0000000000000006"]
        );
        for hour in [&hour0, &hour1] {
            parquet::remove_merged(hour, Duration::ZERO).unwrap();
        }
        assert_eq!(total(dir.path()), cpu + 10);
        let (store, _) = Store::open_with(dir.path(), every_batch_rotates).unwrap();
        assert!(
            store.wal.path().ends_with("0000000000000007.wal"),
            "{}",
            store.wal.path().display()
        );
    }

    /// A stack table is a prefix tree: a stack that is a prefix of another, and the empty
    /// stack, come back as they went in, each shared prefix stored once. Parts of schema 2 (a
    /// row per frame of each stack) are still read, and merged into the tree layout.
    #[test]
    fn stacks_are_a_prefix_tree_and_flat_tables_still_read() {
        use crate::Frame;
        use polars::prelude::*;
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            segment_max_bytes: 1,
            ..keep_all()
        };
        let (mut store, _) = Store::open_with(dir.path(), options).unwrap();
        let s = SeriesLabels {
            pid: 7,
            comm: "w".into(),
            ..SeriesLabels::default()
        };
        let f = |name: &str| Frame::user(name, "/x");
        // The empty stack first: a table of schema 2 could not end with one.
        let stacks: [Vec<Frame>; 4] = [
            vec![],
            vec![f("main"), f("a"), f("b")],
            vec![f("main"), f("a")],
            vec![f("main"), f("c")],
        ];
        for (i, start) in [0, 10_000].into_iter().enumerate() {
            let mut agg = Aggregator::new(10_000, 1);
            for (n, stack) in stacks.iter().enumerate() {
                agg.add(start, &s, stack, SampleKind::Cpu, (n + 1 + 4 * i) as i64);
            }
            store.append(&agg.flush().unwrap()).unwrap();
        }
        store.finish_maintenance();
        let hour0 = dir.path().join("data/1970010100");
        let part = parquet::complete_parts(&hour0).remove(0);
        let file = |kind: &str| hour0.join(format!("{part}.{kind}.parquet"));
        let (frames, read) = parquet::read_frames_stacks(&file("frames"), &file("stacks")).unwrap();
        let mut named: Vec<Vec<&str>> = read
            .iter()
            .map(|st| {
                st.iter()
                    .map(|&i| frames[i as usize].function.as_str())
                    .collect()
            })
            .collect();
        let tree_rows = parquet::scan(&file("stacks"))
            .unwrap()
            .collect()
            .unwrap()
            .height();
        assert_eq!(tree_rows, 5, "the empty stack, main, a, b and c: {named:?}");
        named.retain(|st| !st.is_empty());
        named.sort();
        assert_eq!(
            named,
            [vec!["main", "a"], vec!["main", "a", "b"], vec!["main", "c"]],
            "a stack ends at a and another below it; main alone is no stack"
        );

        // As schema 2 wrote it: one row per frame of each stack.
        let (mut ids, mut depths, mut frame_ids) = (Vec::new(), Vec::new(), Vec::new());
        for (id, st) in read.iter().enumerate() {
            for (depth, &frame) in st.iter().enumerate() {
                ids.push(id as u32);
                depths.push(depth as u32);
                frame_ids.push(frame);
            }
        }
        let mut flat = DataFrame::new_infer_height(vec![
            Column::new("stack_id".into(), ids),
            Column::new("depth".into(), depths),
            Column::new("frame_id".into(), frame_ids),
        ])
        .unwrap();
        let out = std::fs::File::create(file("stacks")).unwrap();
        ParquetWriter::new(out).finish(&mut flat).unwrap();
        let profile = |dir: &Path| {
            let all = Store::batches(dir, 0, i64::MAX).unwrap();
            let p = Aggregator::profile(&all, SampleKind::Cpu, |_| true);
            ["main", "a", "b", "c"].map(|name| p.inclusive_value(0, |fr| fr.function == name))
        };
        // Values 1–4 in the first interval, 5–8 in the second, in the order of `stacks`.
        let want = [2 + 6 + 3 + 7 + 4 + 8, 2 + 6 + 3 + 7, 2 + 6, 4 + 8];
        assert_eq!(total(dir.path()), 1 + 2 + 3 + 4 + 5 + 6 + 7 + 8);
        assert_eq!(profile(dir.path()), want);
        store.append(&batch(HOUR_MS, 1)).unwrap(); // hour 0 closes and is merged
        store.finish_maintenance();
        assert_eq!(parquet::visible_parts(&hour0).len(), 1);
        assert_ne!(parquet::visible_parts(&hour0)[0], part);
        assert_eq!(profile(dir.path()), want);
        store.close().unwrap();
    }

    /// A store of schema 1 is read as it is, and marked version 5 by the first writer; other
    /// versions are refused.
    #[test]
    fn schema_1_is_read_and_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("STORE_VERSION"), "1\n").unwrap();
        check_version(dir.path(), false).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("STORE_VERSION")).unwrap(),
            "1\n"
        );
        Store::open(dir.path()).unwrap().0.close().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("STORE_VERSION")).unwrap(),
            "5\n"
        );
        std::fs::write(dir.path().join("STORE_VERSION"), "6\n").unwrap();
        assert!(matches!(
            check_version(dir.path(), false),
            Err(StoreError::Version { .. })
        ));
    }

    /// A batch of a new hour rotates the log, and the closed segment is compacted in the
    /// background while appends go on; every sample is read exactly once throughout.
    #[test]
    fn rotates_per_hour_and_compacts_in_background() {
        let dir = tempfile::tempdir().unwrap();
        let keep_all = keep_all();
        let (mut store, _) = Store::open_with(dir.path(), keep_all).unwrap();
        store.append(&batch(0, 3)).unwrap();
        store.append(&batch(10_000, 2)).unwrap();
        assert_eq!(total(dir.path()), 5);
        store.append(&batch(HOUR_MS, 4)).unwrap(); // rotates
        assert_eq!(total(dir.path()), 9, "during compaction");
        store.finish_maintenance();
        assert_eq!(parts(dir.path()), ["1970010100/0000000000000001"]);
        assert_eq!(wal::segments(&dir.path().join("wal")).unwrap().len(), 1);
        assert_eq!(total(dir.path()), 9, "after compaction");

        // A full segment rotates too.
        store.options.segment_max_bytes = 1;
        store.append(&batch(HOUR_MS + 10_000, 1)).unwrap();
        store.finish_maintenance();
        assert_eq!(
            parts(dir.path()),
            ["1970010100/0000000000000001", "1970010101/0000000000000002"]
        );
        assert_eq!(total(dir.path()), 10);
        store.close().unwrap();
        assert_eq!(parts(dir.path()).len(), 3);
        assert_eq!(total(dir.path()), 10);
    }

    /// A segment whose compaction was cut short (parts written, no marker) is read from the log
    /// only; once marked done, from its parts only. Never both, never neither.
    #[test]
    fn visibility_rule() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.append(&batch(0, 3)).unwrap();
        drop(store);
        let segment = wal::segments(&dir.path().join("wal")).unwrap().remove(0);
        let copy = std::fs::read(&segment).unwrap();
        parquet::compact_segment(dir.path(), &segment).unwrap();
        // Back to "parts written, segment still there": as after a crash mid-compaction.
        std::fs::write(&segment, &copy).unwrap();
        assert_eq!(parts(dir.path()).len(), 1);
        assert_eq!(total(dir.path()), 3, "log only");
        wal::write_atomic(&segment.with_extension("done"), b"").unwrap();
        assert_eq!(total(dir.path()), 3, "parts only");
        // The next writer finishes the job.
        let (store, _) = Store::open(dir.path()).unwrap();
        assert_eq!(total(dir.path()), 3);
        store.close().unwrap();
        assert_eq!(total(dir.path()), 3);
    }

    /// Pushes that alternate between two hours (agents catching up beside current ones) do
    /// not rotate the log on every push: one segment per hour, and every batch kept.
    #[test]
    fn late_batches_join_the_current_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open_with(dir.path(), keep_all()).unwrap();
        for i in 0..1000 {
            let hour = i % 2;
            store.append(&batch(hour * HOUR_MS + i, 1)).unwrap();
        }
        let segments = wal::segments(&dir.path().join("wal")).unwrap().len();
        assert!(segments <= 2, "{segments} segments");
        store.close().unwrap();
        assert!(parts(dir.path()).len() <= 4, "{:?}", parts(dir.path()));
        assert_eq!(total(dir.path()), 1000);
    }

    /// The batches of the crash test: two per hour in two hours (1970-01-01 00:00 and 01:00),
    /// `round` 0 before the crash, 1 written by the process that crashes.
    fn crash_batches(round: i64) -> Vec<Batch> {
        let mut out = Vec::new();
        for hour in [0, HOUR_MS] {
            for k in 0..2 {
                let start = hour + (round * 2 + k) * 10_000;
                let mut b = batch(start, 2 + round + k);
                // Each batch its own process, so that readers' totals tell every batch apart
                // (compaction and merging regroup intervals).
                b.series[0].pid = 100 + (start / 10_000) as u32;
                out.push(b);
            }
        }
        out
    }

    /// Every process's CPU total, as readers see the store.
    fn totals(dir: &Path) -> BTreeMap<u32, i64> {
        let mut out = BTreeMap::new();
        for b in Store::batches(dir, 0, i64::MAX).unwrap() {
            for r in &b.rows {
                *out.entry(b.series[r.series as usize].pid).or_default() += r.value;
            }
        }
        out
    }

    /// The crashing side of [`a_crash_at_any_step_of_compaction_or_merge_loses_nothing`]:
    /// with `CRITPATH_CRASH_DIR` set, appends the second round of batches to that store (two
    /// more log segments, acknowledged) and closes it — compaction, then the merge of both
    /// closed hours — printing the steps passed. In every ordinary run it does nothing.
    #[test]
    fn crash_child() {
        let Some(dir) = std::env::var_os("CRITPATH_CRASH_DIR") else {
            return;
        };
        let (mut store, _) = Store::open_with(Path::new(&dir), keep_all()).unwrap();
        // With CRITPATH_CRASH_MAINTAIN set, only the maintenance of opening and closing.
        if std::env::var_os("CRITPATH_CRASH_MAINTAIN").is_none() {
            for b in crash_batches(1) {
                store.append(&b).unwrap();
            }
        }
        store.close().unwrap();
        println!(
            "crash points: {}",
            CRASH_POINTS.load(std::sync::atomic::Ordering::Relaxed)
        );
    }

    /// Stops the writer (as a SIGKILL would) at every step of compaction and merging in turn —
    /// each part file written and renamed, each directory synced, the done marker, the
    /// segment's and the marker's removal, the merged part's files, and (once the merge's grace
    /// is over) each removal of a replaced part's file — and checks that every acknowledged
    /// batch is read exactly once, right after the crash and after the next writer's recovery
    /// and maintenance.
    #[test]
    fn a_crash_at_any_step_of_compaction_or_merge_loses_nothing() {
        let child = |dir: &Path, crash_at: Option<u64>, maintain_only: bool| {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap());
            child
                .args(["--exact", "store::tests::crash_child", "--nocapture"])
                .args(["--test-threads", "1"])
                .env("CRITPATH_CRASH_DIR", dir)
                .env_remove("CRITPATH_TEST_CRASH_AT")
                .env_remove("CRITPATH_CRASH_MAINTAIN");
            if let Some(n) = crash_at {
                child.env("CRITPATH_TEST_CRASH_AT", n.to_string());
            }
            if maintain_only {
                child.env("CRITPATH_CRASH_MAINTAIN", "1");
            }
            child.output().unwrap()
        };
        let run = |crash_at: Option<u64>| {
            let dir = tempfile::tempdir().unwrap();
            let (mut store, _) = Store::open_with(dir.path(), keep_all()).unwrap();
            for b in crash_batches(0) {
                store.append(&b).unwrap();
            }
            store.close().unwrap();
            let out = child(dir.path(), crash_at, false);
            (dir, out)
        };
        let steps_of = |out: &std::process::Output| -> u64 {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{stdout}");
            stdout
                .lines()
                .find_map(|l| l.split("crash points: ").nth(1))
                .unwrap_or_else(|| panic!("{stdout}"))
                .trim()
                .parse()
                .unwrap()
        };
        let mut expected = BTreeMap::new();
        for b in crash_batches(0).into_iter().chain(crash_batches(1)) {
            expected.insert(b.series[0].pid, b.total(SampleKind::Cpu));
        }
        let (dir, out) = run(None);
        let steps = steps_of(&out);
        assert!(steps >= 20, "{steps} steps");
        assert_eq!(totals(dir.path()), expected);
        for n in 1..=steps {
            let (dir, out) = run(Some(n));
            assert_eq!(out.status.code(), Some(86), "step {n}: {out:?}");
            assert_eq!(
                totals(dir.path()),
                expected,
                "read right after a crash at step {n}"
            );
            let (store, _) = Store::open_with(dir.path(), keep_all()).unwrap();
            store.close().unwrap();
            assert_eq!(
                totals(dir.path()),
                expected,
                "after recovering from step {n}"
            );
            assert!(
                wal::segments(&dir.path().join("wal")).unwrap().is_empty(),
                "step {n}: segments left"
            );
        }
        // The parts a merge replaced are removed only MERGE_GRACE after it. With the merged
        // store's files backdated past it, the next writer's maintenance removes them: a crash
        // at each removal loses nothing either.
        let merged = dir;
        backdate(merged.path(), 2 * MERGE_GRACE);
        let files_before = count_files(merged.path());
        let removal = |crash_at: Option<u64>| {
            let dir = tempfile::tempdir().unwrap();
            copy_tree(merged.path(), dir.path());
            let out = child(dir.path(), crash_at, true);
            (dir, out)
        };
        let (dir, out) = removal(None);
        let removals = steps_of(&out);
        assert!(removals >= 4, "{removals} removal steps");
        eprintln!("crash steps: {steps} of compaction and merge, {removals} of removal");
        assert!(count_files(dir.path()) < files_before, "nothing removed");
        assert_eq!(totals(dir.path()), expected);
        for n in 1..=removals {
            let (dir, out) = removal(Some(n));
            assert_eq!(out.status.code(), Some(86), "removal step {n}: {out:?}");
            assert_eq!(totals(dir.path()), expected, "right after removal step {n}");
            let (store, _) = Store::open_with(dir.path(), keep_all()).unwrap();
            store.close().unwrap();
            assert_eq!(totals(dir.path()), expected, "after removal step {n}");
        }
    }

    /// Sets every file's modification time under `dir` to `ago` before now.
    fn backdate(dir: &Path, ago: Duration) {
        let at = std::time::SystemTime::now() - ago;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                backdate(&path, ago);
            } else {
                let file = std::fs::File::options().write(true).open(&path).unwrap();
                file.set_modified(at).unwrap();
            }
        }
    }

    fn count_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { count_files(&p) } else { 1 })
            .sum()
    }

    /// Copies the tree `from` into `to` (which exists), modification times kept.
    fn copy_tree(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let target = to.join(path.file_name().unwrap());
            if path.is_dir() {
                std::fs::create_dir(&target).unwrap();
                copy_tree(&path, &target);
            } else {
                std::fs::copy(&path, &target).unwrap();
                let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
                let file = std::fs::File::options().write(true).open(&target).unwrap();
                file.set_modified(modified).unwrap();
            }
        }
    }

    /// A store whose compaction fails (here its hour's directory cannot be created; on a
    /// host, a full disk) still opens, its segment readable, and the segment is compacted once
    /// the cause is gone. Temporary files of a write cut short are removed at open.
    #[test]
    fn a_failed_compaction_does_not_keep_the_store_closed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open_with(dir.path(), keep_all()).unwrap();
        store.append(&batch(0, 3)).unwrap();
        drop(store); // as after a crash: the segment is left to the next writer
        let data = dir.path().join("data");
        let stale = data.join("1970010105");
        std::fs::create_dir_all(&stale).unwrap();
        let tmp = stale.join("0000000000000009.samples.parquet.tmp");
        std::fs::write(&tmp, b"half a part").unwrap();
        let blocker = data.join("1970010100");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let (store, _) =
            Store::open_with(dir.path(), keep_all()).expect("opens despite the failed compaction");
        assert!(!tmp.exists());
        assert_eq!(total(dir.path()), 3);
        assert!(store.close().is_err(), "still blocked");
        assert_eq!(total(dir.path()), 3);
        std::fs::remove_file(&blocker).unwrap();
        let (store, _) = Store::open_with(dir.path(), keep_all()).unwrap();
        store.close().unwrap();
        assert_eq!(parts(dir.path()), ["1970010100/0000000000000001"]);
        assert_eq!(total(dir.path()), 3);
    }

    /// Retention drops whole hours: those past the maximum age, then the oldest while the
    /// store is over its size, never the newest.
    #[test]
    fn retention_drops_whole_hours() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let hour = |h: i64| (now / HOUR_MS - h) * HOUR_MS;
        let options = keep_all();
        let (mut store, _) = Store::open_with(dir.path(), options).unwrap();
        for h in [50, 30, 3, 2, 1] {
            store.append(&batch(hour(h), 2)).unwrap();
        }
        store.close().unwrap();
        assert_eq!(parts(dir.path()).len(), 5, "{:?}", parts(dir.path()));

        let by_age = Retention {
            max_age: Some(Duration::from_secs(24 * 3600)),
            max_bytes: None,
        };
        let (dropped, bytes) = apply_retention(dir.path(), &by_age, now).unwrap();
        assert_eq!((dropped, parts(dir.path()).len()), (2, 3));
        assert!(bytes > 0);
        assert_eq!(total(dir.path()), 6);

        let one_hour = dir_size(&parquet::hour_dirs(dir.path()).unwrap()[2].0);
        let by_size = Retention {
            max_age: None,
            max_bytes: Some(one_hour + one_hour / 2),
        };
        apply_retention(dir.path(), &by_size, now).unwrap();
        assert_eq!(parts(dir.path()).len(), 1, "the newest hour stays");
        let tiny = Retention {
            max_age: None,
            max_bytes: Some(1),
        };
        apply_retention(dir.path(), &tiny, now).unwrap();
        assert_eq!(parts(dir.path()).len(), 1, "never the newest");
        assert_eq!(total(dir.path()), 2);
    }
}
