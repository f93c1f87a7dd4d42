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
//! Compaction of the log into time-partitioned Parquet files, and the query layer over them,
//! come next; [`Store::batches`] reads the log meanwhile.

mod batch;
mod wal;

use std::path::{Path, PathBuf};

pub use batch::{Aggregator, Batch, Row, SampleKind, SeriesLabels};
pub use wal::{Recovery, Wal, WalError};

/// The store schema version this code reads and writes.
pub const STORE_VERSION: u32 = 1;

/// An open store directory.
pub struct Store {
    dir: PathBuf,
    wal: Wal,
}

impl Store {
    /// Opens (creating if needed) a store directory for writing: checks its schema version and
    /// starts a new log segment. Returns what recovery found in existing segments.
    ///
    /// # Errors
    /// I/O errors, or a directory written by an incompatible schema version.
    pub fn open(dir: impl Into<PathBuf>) -> Result<(Self, Recovery), WalError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| WalError::io(&dir, e))?;
        check_version(&dir, true)?;
        let (wal, recovery) = Wal::open(dir.join("wal"))?;
        Ok((Self { dir, wal }, recovery))
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a batch durably (written and fsynced when this returns).
    ///
    /// # Errors
    /// Write or fsync failures (a full disk among them); the store stays readable.
    pub fn append(&mut self, batch: &Batch) -> Result<(), WalError> {
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
    pub fn batches(dir: &Path, from_ms: i64, to_ms: i64) -> Result<Vec<Batch>, WalError> {
        check_version(dir, false)?;
        let mut out = Vec::new();
        for segment in wal::segments(&dir.join("wal"))? {
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

fn check_version(dir: &Path, create: bool) -> Result<(), WalError> {
    let path = dir.join("STORE_VERSION");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found = text.trim();
            if found != STORE_VERSION.to_string() {
                return Err(WalError::Version {
                    dir: dir.to_owned(),
                    found: found.to_owned(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            if dir.join("wal").exists() {
                return Err(WalError::Version {
                    dir: dir.to_owned(),
                    found: "none".into(),
                });
            }
            wal::write_atomic(&path, format!("{STORE_VERSION}\n").as_bytes())
        }
        Err(e) => Err(WalError::io(&path, e)),
    }
}
