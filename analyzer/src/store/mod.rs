//! The embedded store's ingest side: samples aggregated per interval into [`Batch`]es, made
//! durable in an append-only, checksummed, fsynced write-ahead log.
//!
//! # On-disk layout (store schema version 1)
//!
//! ```text
//! DIR/STORE_VERSION          "1\n"
//! DIR/wal/<seq:016>.wal      write-ahead log segments, appended in order
//! ```
//!
//! A segment is a sequence of records, each `magic (4 bytes "CPW1") | payload length (u32 LE) |
//! CRC-32 of the payload (u32 LE) | payload`, the payload a [`Batch`] encoded with postcard. Each
//! record is fsynced before `append` returns, so a crash loses at most the batch being written;
//! a torn record at a segment's tail is cut off on the next open (and reported), never read.
//! Every agent start opens a new segment.
//!
//! Closed segments are compacted into time-partitioned Parquet parts (see the `parquet`
//! module's docs for their schema) when a store is opened for writing and when the writer
//! closes it; [`Store::batches`] reads the parts (pruning hours outside the window) and the
//! segments not compacted yet. One writer at a time holds `DIR/LOCK`.

mod batch;
mod parquet;
mod wal;

use std::path::{Path, PathBuf};

pub use batch::{Aggregator, Batch, Row, SampleKind, SeriesLabels};
pub use wal::{Recovery, StoreError, Wal};

/// The store schema version this code reads and writes.
pub const STORE_VERSION: u32 = 1;

/// An open store directory.
pub struct Store {
    dir: PathBuf,
    wal: Wal,
    _lock: std::fs::File,
}

impl Store {
    /// Opens (creating if needed) a store directory for writing: checks its schema version and
    /// starts a new log segment. Returns what recovery found in existing segments.
    ///
    /// # Errors
    /// I/O errors, or a directory written by an incompatible schema version.
    pub fn open(dir: impl Into<PathBuf>) -> Result<(Self, Recovery), StoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        check_version(&dir, true)?;
        let lock = lock(&dir)?;
        let next_seq = parquet::max_part_seq(&dir).map_or(1, |s| s + 1);
        let (wal, recovery) = Wal::open(dir.join("wal"), next_seq)?;
        // Earlier segments are closed (each writer starts its own): compact them now.
        for segment in wal::segments(&dir.join("wal"))? {
            if segment != wal.path() {
                parquet::compact_segment(&dir, &segment)?;
            }
        }
        Ok((
            Self {
                dir,
                wal,
                _lock: lock,
            },
            recovery,
        ))
    }

    /// Closes the store: compacts this writer's segment into Parquet.
    ///
    /// # Errors
    /// Compaction failures; the segment then stays and is compacted at the next open.
    pub fn close(self) -> Result<(), StoreError> {
        let Self { dir, wal, _lock } = self;
        let segment = wal.path().to_owned();
        drop(wal);
        parquet::compact_segment(&dir, &segment).map(|_| ())
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a batch durably (written and fsynced when this returns).
    ///
    /// # Errors
    /// Write or fsync failures (a full disk among them); the store stays readable.
    pub fn append(&mut self, batch: &Batch) -> Result<(), StoreError> {
        self.wal.append(batch)
    }

    /// Bytes written to the log by this process.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.bytes_written()
    }

    /// Every batch overlapping `[from_ms, to_ms)` in a store directory, read-only (safe while an
    /// agent writes it: a record being written is not yet valid and is skipped).
    ///
    /// # Errors
    /// A missing directory or an incompatible schema version.
    pub fn batches(dir: &Path, from_ms: i64, to_ms: i64) -> Result<Vec<Batch>, StoreError> {
        check_version(dir, false)?;
        let mut out = parquet::read_parts(dir, from_ms, to_ms)?;
        for segment in wal::segments(&dir.join("wal"))? {
            if segment.with_extension("done").exists() {
                // Compacted; its Parquet parts are read instead.
                continue;
            }
            let (batches, _) = wal::read_segment(&segment)?;
            out.extend(
                batches
                    .into_iter()
                    .filter(|b| b.end_ms > from_ms && b.start_ms < to_ms),
            );
        }
        Ok(out)
    }
}

/// Takes the writer's lock on a store directory.
fn lock(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::os::fd::AsRawFd as _;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    // SAFETY: flock on a valid open file descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(StoreError::Locked(dir.to_owned()));
    }
    Ok(file)
}

fn check_version(dir: &Path, create: bool) -> Result<(), StoreError> {
    let path = dir.join("STORE_VERSION");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found = text.trim();
            if found != STORE_VERSION.to_string() {
                return Err(StoreError::Version {
                    dir: dir.to_owned(),
                    found: found.to_owned(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            if dir.join("wal").exists() {
                return Err(StoreError::Version {
                    dir: dir.to_owned(),
                    found: "none".into(),
                });
            }
            wal::write_atomic(&path, format!("{STORE_VERSION}\n").as_bytes())
        }
        Err(e) => Err(StoreError::io(&path, e)),
    }
}
