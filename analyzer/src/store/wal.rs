//! The write-ahead log: append-only segments of checksummed, length-prefixed records.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use super::Batch;

/// The record magic: `CPW4` since batches carry probed requests; `CPW3` (thread samples and
/// wait records, schema 4), `CPW2` (schema 2–3, wakeups) and `CPW1` records (schema 1, no
/// wakeups) are still read.
const MAGIC: [u8; 4] = *b"CPW4";
const MAGIC_V3: [u8; 4] = *b"CPW3";
const MAGIC_V2: [u8; 4] = *b"CPW2";
const MAGIC_V1: [u8; 4] = *b"CPW1";
const HEADER: usize = 12;
/// A record larger than this is taken for corruption, not allocated.
const MAX_RECORD: usize = 1 << 30;

/// Write-ahead log errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error (in the message, so it is not repeated as a source).
        error: std::io::Error,
    },
    /// The directory holds no store.
    #[error(
        "no critpath store in {0} (no STORE_VERSION file): run `critpath agent` to create one, or pass --data-dir"
    )]
    NoStore(PathBuf),
    /// The directory holds a store of another schema version.
    #[error(
        "{dir} holds a store of schema version {found}, this critpath reads versions 1 to {}; use another --data-dir",
        super::STORE_VERSION
    )]
    Version {
        /// The store directory.
        dir: PathBuf,
        /// The version found.
        found: String,
    },
    /// A batch could not be encoded.
    #[error("encoding a batch: {0}")]
    Encode(#[source] postcard::Error),
    /// A Parquet file could not be written or read.
    #[error("{path}: {error}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error (in the message, so it is not repeated as a source).
        error: polars::error::PolarsError,
    },
    /// Another process writes this store.
    #[error("{0} is in use by another critpath agent (it holds {0}/LOCK)")]
    Locked(PathBuf),
}

impl StoreError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            error,
        }
    }
}

/// What opening the log found in existing segments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segments found.
    pub segments: usize,
    /// Valid batches in them.
    pub batches: usize,
    /// Segments whose tail held a torn or corrupt record (cut off).
    pub truncated_segments: usize,
    /// Bytes cut off.
    pub truncated_bytes: u64,
    /// Corrupt bytes inside segments, skipped to the next valid record (kept in the file:
    /// every reader skips them the same way).
    pub skipped_bytes: u64,
}

/// An open log: appends go to a new segment per process, and to a new one at each rotation.
pub struct Wal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Bytes written by this process, all segments.
    bytes: u64,
    /// Length of the valid records in the current segment.
    len: u64,
    /// An append failed and its partial record could not be cut off: the next append must go
    /// to a new segment, or readers would stop at the partial record and miss it.
    broken: bool,
}

impl Wal {
    /// Opens the log directory: repairs torn tails of existing segments and starts a new one,
    /// numbered after every existing segment and at least `min_seq` (sequence numbers name the
    /// Parquet parts compacted from segments, so they are never reused).
    ///
    /// # Errors
    /// I/O errors on the directory or its segments.
    pub fn open(dir: PathBuf, min_seq: u64) -> Result<(Self, Recovery), StoreError> {
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let mut recovery = Recovery::default();
        let mut next = min_seq.max(1);
        for segment in segments(&dir)? {
            let decoded = read_decoded(&segment)?;
            let (batches, valid_len) = (decoded.batches, decoded.len as u64);
            if decoded.skipped > 0 {
                log::warn!(
                    "{}: skipped {} corrupt bytes to the next valid record",
                    segment.display(),
                    decoded.skipped
                );
            }
            recovery.skipped_bytes += decoded.skipped as u64;
            recovery.segments += 1;
            recovery.batches += batches.len();
            let len = decoded.file_len as u64;
            if valid_len < len {
                // A crash mid-append: cut the torn record so the segment reads cleanly.
                let f = OpenOptions::new()
                    .write(true)
                    .open(&segment)
                    .map_err(|e| StoreError::io(&segment, e))?;
                f.set_len(valid_len)
                    .map_err(|e| StoreError::io(&segment, e))?;
                f.sync_all().map_err(|e| StoreError::io(&segment, e))?;
                recovery.truncated_segments += 1;
                recovery.truncated_bytes += len - valid_len;
            }
            next = next.max(segment_seq(&segment).unwrap_or(0) + 1);
        }
        let (path, file) = create_segment(&dir, next)?;
        Ok((
            Self {
                dir,
                path,
                file,
                bytes: 0,
                len: 0,
                broken: false,
            },
            recovery,
        ))
    }

    /// Closes the current segment and starts the next one; returns the closed segment's path.
    ///
    /// # Errors
    /// The new segment could not be created (appends keep going to the current one).
    pub fn rotate(&mut self) -> Result<PathBuf, StoreError> {
        let seq = segment_seq(&self.path).expect("a segment path") + 1;
        let (path, file) = create_segment(&self.dir, seq)?;
        let closed = std::mem::replace(&mut self.path, path);
        self.file = file;
        self.len = 0;
        self.broken = false;
        Ok(closed)
    }

    /// Length of the valid records in the current segment.
    pub fn segment_len(&self) -> u64 {
        self.len
    }

    /// Whether the current segment must be rotated before the next append (a failed append
    /// left a partial record that could not be cut off).
    pub fn needs_rotation(&self) -> bool {
        self.broken
    }

    /// Appends one batch and fsyncs it.
    ///
    /// # Errors
    /// Encoding, write or fsync failures. A failed append may leave a partial record, which the
    /// next open cuts off; readers skip it meanwhile.
    pub fn append(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let payload = postcard::to_stdvec(batch).map_err(StoreError::Encode)?;
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&MAGIC);
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        if let Err(e) = self
            .file
            .write_all(&record)
            .and_then(|()| self.file.sync_data())
        {
            // Cut the partial record off so later appends stay readable (a full disk may free
            // up); if that fails too, the next append goes to a new segment.
            if self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data())
                .is_err()
            {
                self.broken = true;
            }
            return Err(StoreError::io(&self.path, e));
        }
        self.bytes += record.len() as u64;
        self.len += record.len() as u64;
        Ok(())
    }

    /// Bytes appended by this process.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// The segment this process appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn create_segment(dir: &Path, seq: u64) -> Result<(PathBuf, File), StoreError> {
    let path = dir.join(format!("{seq:016}.wal"));
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    sync_dir(dir)?;
    Ok((path, file))
}

/// The segments of a log directory, oldest first.
pub(crate) fn segments(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| segment_seq(p).is_some())
        .collect();
    out.sort();
    Ok(out)
}

pub(crate) fn segment_seq(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".wal")?.parse().ok()
}

/// Reads a segment's valid records; returns them and the length up to the end of the last
/// one (see [`decode_records`]).
pub(crate) fn read_segment(path: &Path) -> Result<(Vec<Batch>, u64), StoreError> {
    let d = read_decoded(path)?;
    Ok((d.batches, d.len as u64))
}

/// Reads and decodes a whole segment ([`decode`]).
fn read_decoded(path: &Path) -> Result<Decoded, StoreError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| StoreError::io(path, e))?;
    Ok(decode(&bytes))
}

/// Decodes the valid records of `bytes`; returns them and the length up to the end of the last
/// one. A corrupt record (a flipped byte, a bad sector) followed by valid ones is skipped: the
/// next record is found by its magic and checksum, and only the damaged one is lost. After the
/// last valid record, a torn or incomplete one (a crash mid-append, an append in progress) is
/// left out.
pub(crate) fn decode_records(bytes: &[u8]) -> (Vec<Batch>, usize) {
    let d = decode(bytes);
    (d.batches, d.len)
}

/// What [`decode`] found.
struct Decoded {
    batches: Vec<Batch>,
    /// The end of the last valid record.
    len: usize,
    /// Bytes skipped between valid records.
    skipped: usize,
    /// Bytes decoded: the valid records, those skipped, and a torn tail after them.
    file_len: usize,
}

fn decode(bytes: &[u8]) -> Decoded {
    let mut d = Decoded {
        batches: Vec::new(),
        len: 0,
        skipped: 0,
        file_len: bytes.len(),
    };
    let mut pos = 0;
    while pos < bytes.len() {
        if let Some((batch, next)) = record_at(bytes, pos) {
            d.batches.push(batch);
            pos = next;
            d.len = pos;
            continue;
        }
        // Resynchronize: the next offset where a valid record starts. None: the rest is a torn
        // tail, or an append in progress.
        let next = (pos + 1..bytes.len().saturating_sub(HEADER - 1))
            .filter(|&i| {
                [MAGIC, MAGIC_V3, MAGIC_V2, MAGIC_V1]
                    .iter()
                    .any(|m| bytes[i..].starts_with(m))
            })
            .find(|&i| record_at(bytes, i).is_some());
        match next {
            Some(i) => {
                d.skipped += i - pos;
                pos = i;
            }
            None => break,
        }
    }
    d
}

/// The valid record at `pos` and the offset after it.
fn record_at(bytes: &[u8], pos: usize) -> Option<(Batch, usize)> {
    let header = bytes.get(pos..pos + HEADER)?;
    let (v1, v2, v3) = (
        header[..4] == MAGIC_V1,
        header[..4] == MAGIC_V2,
        header[..4] == MAGIC_V3,
    );
    if header[..4] != MAGIC && !v1 && !v2 && !v3 {
        return None;
    }
    let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(pos + HEADER..pos + HEADER + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let decoded = if v1 {
        postcard::from_bytes::<BatchV1>(payload).map(Batch::from)
    } else if v2 {
        postcard::from_bytes::<BatchV2>(payload).map(Batch::from)
    } else if v3 {
        postcard::from_bytes::<BatchV3>(payload).map(Batch::from)
    } else {
        postcard::from_bytes::<Batch>(payload)
    };
    Some((decoded.ok()?, pos + HEADER + len))
}

/// A batch as schema 1 encoded it: no wakeups.
#[derive(serde::Deserialize)]
struct BatchV1 {
    start_ms: i64,
    end_ms: i64,
    period_ns: i64,
    frames: Vec<crate::Frame>,
    stacks: Vec<Vec<u32>>,
    series: Vec<super::SeriesLabels>,
    rows: Vec<super::Row>,
}

impl From<BatchV1> for Batch {
    fn from(b: BatchV1) -> Batch {
        Batch {
            start_ms: b.start_ms,
            end_ms: b.end_ms,
            period_ns: b.period_ns,
            frames: b.frames,
            stacks: b.stacks,
            series: b.series,
            rows: b.rows,
            ..Batch::default()
        }
    }
}

/// A batch as schemas 2 and 3 encoded it: wakeups, no thread samples or wait records.
#[derive(serde::Deserialize)]
struct BatchV2 {
    start_ms: i64,
    end_ms: i64,
    period_ns: i64,
    frames: Vec<crate::Frame>,
    stacks: Vec<Vec<u32>>,
    series: Vec<super::SeriesLabels>,
    rows: Vec<super::Row>,
    wakeups: Vec<super::Wakeup>,
}

impl From<BatchV2> for Batch {
    fn from(b: BatchV2) -> Batch {
        Batch {
            start_ms: b.start_ms,
            end_ms: b.end_ms,
            period_ns: b.period_ns,
            frames: b.frames,
            stacks: b.stacks,
            series: b.series,
            rows: b.rows,
            wakeups: b.wakeups,
            ..Batch::default()
        }
    }
}

/// A batch as `CPW3` records encoded it: thread samples and wait records, no requests.
#[derive(serde::Serialize, serde::Deserialize)]
struct BatchV3 {
    start_ms: i64,
    end_ms: i64,
    period_ns: i64,
    frames: Vec<crate::Frame>,
    stacks: Vec<Vec<u32>>,
    series: Vec<super::SeriesLabels>,
    rows: Vec<super::Row>,
    wakeups: Vec<super::Wakeup>,
    thread_samples: Vec<super::ThreadSample>,
    waits: Vec<super::WaitRecord>,
}

impl From<BatchV3> for Batch {
    fn from(b: BatchV3) -> Batch {
        Batch {
            start_ms: b.start_ms,
            end_ms: b.end_ms,
            period_ns: b.period_ns,
            frames: b.frames,
            stacks: b.stacks,
            series: b.series,
            rows: b.rows,
            wakeups: b.wakeups,
            thread_samples: b.thread_samples,
            waits: b.waits,
            requests: Vec::new(),
        }
    }
}

/// Writes a small file atomically: a temporary file, fsynced, renamed over the target.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|e| StoreError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Fsyncs a directory, so that the entries created or renamed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Frame;
    use crate::store::{Aggregator, SampleKind, SeriesLabels, Store};

    /// A batch of `n` one-sample stacks `f0..f<n>` of pid 7 starting at `start_ms`.
    pub(crate) fn batch(start_ms: i64, n: i64) -> Batch {
        let mut agg = Aggregator::new(10_000, 1);
        let s = SeriesLabels {
            pid: 7,
            comm: "w".into(),
            ..Default::default()
        };
        for i in 0..n {
            agg.add(
                start_ms + i,
                &s,
                &[Frame::user(format!("f{i}"), "/x")],
                SampleKind::Cpu,
                1,
            );
        }
        agg.flush().unwrap()
    }

    /// Records of schema 1 (magic `CPW1`, batches without wakeups) are still read.
    #[test]
    fn reads_schema_1_records() {
        #[derive(serde::Serialize)]
        struct V1<'a> {
            start_ms: i64,
            end_ms: i64,
            period_ns: i64,
            frames: &'a [crate::Frame],
            stacks: &'a [Vec<u32>],
            series: &'a [SeriesLabels],
            rows: &'a [super::super::Row],
        }
        let b = batch(10_000, 3);
        let payload = postcard::to_stdvec(&V1 {
            start_ms: b.start_ms,
            end_ms: b.end_ms,
            period_ns: b.period_ns,
            frames: &b.frames,
            stacks: &b.stacks,
            series: &b.series,
            rows: &b.rows,
        })
        .unwrap();
        let mut record = b"CPW1".to_vec();
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let (batches, len) = decode_records(&record);
        assert_eq!((batches, len), (vec![b], record.len()));
    }

    /// Records of schemas 2–3 (magic `CPW2`, batches with wakeups but without thread samples
    /// and wait records) are still read.
    #[test]
    fn reads_schema_2_records() {
        #[derive(serde::Serialize)]
        struct V2<'a> {
            start_ms: i64,
            end_ms: i64,
            period_ns: i64,
            frames: &'a [crate::Frame],
            stacks: &'a [Vec<u32>],
            series: &'a [SeriesLabels],
            rows: &'a [super::super::Row],
            wakeups: &'a [super::super::Wakeup],
        }
        let b = batch(10_000, 3);
        let payload = postcard::to_stdvec(&V2 {
            start_ms: b.start_ms,
            end_ms: b.end_ms,
            period_ns: b.period_ns,
            frames: &b.frames,
            stacks: &b.stacks,
            series: &b.series,
            rows: &b.rows,
            wakeups: &b.wakeups,
        })
        .unwrap();
        let mut record = b"CPW2".to_vec();
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let (batches, len) = decode_records(&record);
        assert_eq!((batches, len), (vec![b], record.len()));
    }

    fn cpu_total(batches: &[Batch]) -> i64 {
        batches.iter().map(|b| b.total(SampleKind::Cpu)).sum()
    }

    /// Appended batches read back whole; reopening compacts the closed segment into Parquet
    /// parts, which read back the same rows, while new appends go to a new segment.
    #[test]
    fn append_reopen_and_compact() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, recovery) = Store::open(dir.path()).unwrap();
        assert_eq!(recovery, Recovery::default());
        store.append(&batch(0, 3)).unwrap();
        store.append(&batch(10_000, 2)).unwrap();
        let all = Store::batches(dir.path(), 0, i64::MAX).unwrap();
        assert_eq!(
            all,
            vec![batch(0, 3), batch(10_000, 2)],
            "read from the log"
        );
        drop(store);

        let (mut store, recovery) = Store::open(dir.path()).unwrap();
        assert_eq!((recovery.segments, recovery.batches), (1, 2));
        assert_eq!(
            segments(&dir.path().join("wal")).unwrap().len(),
            1,
            "compacted"
        );
        let parts: Vec<_> = std::fs::read_dir(dir.path().join("data/1970010100"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            parts.iter().any(|p| p.ends_with(".samples.parquet")),
            "{parts:?}"
        );
        assert!(
            parts.iter().any(|p| p.ends_with(".stacks.parquet")),
            "{parts:?}"
        );
        store.append(&batch(20_000, 1)).unwrap();

        let all = Store::batches(dir.path(), 0, i64::MAX).unwrap();
        assert_eq!(cpu_total(&all), 6);
        let profile = Aggregator::profile(&all, SampleKind::Cpu, |s| s.pid == 7);
        assert_eq!(profile.inclusive_value(0, |f| f.function == "f2"), 1);
        assert_eq!(profile.inclusive_value(0, |f| f.function == "f0"), 3);
        assert_eq!(
            cpu_total(&Store::batches(dir.path(), 10_000, 20_000).unwrap()),
            2
        );
        assert_eq!(
            cpu_total(&Store::batches(dir.path(), 20_000, 30_000).unwrap()),
            1
        );

        store.close().unwrap();
        assert!(segments(&dir.path().join("wal")).unwrap().is_empty());
        assert_eq!(
            cpu_total(&Store::batches(dir.path(), 0, i64::MAX).unwrap()),
            6
        );
    }

    /// A second writer is refused while the first holds the store.
    #[test]
    fn one_writer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, _) = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("in use by another critpath agent"), "{err}");
    }

    /// A lock held a moment longer than its writer (by a child it forked, until that one's
    /// `exec`) is waited for, not taken for another writer.
    #[test]
    fn a_lock_released_a_moment_later_is_waited_for() {
        use std::os::fd::AsRawFd as _;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        store.close().unwrap();
        let held = std::fs::File::open(dir.path().join("LOCK")).unwrap();
        // SAFETY: flock on a valid open file descriptor.
        assert_eq!(
            unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let (store, _) = Store::open(dir.path()).expect("opens once the lock is released");
        release.join().unwrap();
        store.close().unwrap();
    }

    /// A torn record at the tail (a crash mid-append) is skipped by readers and cut off at the
    /// next open; everything before it survives.
    #[test]
    fn torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.append(&batch(0, 3)).unwrap();
        store.append(&batch(10_000, 3)).unwrap();
        drop(store);
        let segment = segments(&dir.path().join("wal")).unwrap().remove(0);
        let len = std::fs::metadata(&segment).unwrap().len();

        // Corruption inside a record is caught by its checksum.
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[len as usize - 10] ^= 0xff;
        std::fs::write(&segment, &bytes).unwrap();
        assert_eq!(Store::batches(dir.path(), 0, i64::MAX).unwrap().len(), 1);

        let f = OpenOptions::new().write(true).open(&segment).unwrap();
        f.set_len(len - 5).unwrap();
        assert_eq!(Store::batches(dir.path(), 0, i64::MAX).unwrap().len(), 1);
        let (_, recovery) = Store::open(dir.path()).unwrap();
        assert_eq!(recovery.truncated_segments, 1);
        assert_eq!(recovery.batches, 1);
        assert_eq!(
            cpu_total(&Store::batches(dir.path(), 0, i64::MAX).unwrap()),
            3
        );
    }

    /// One flipped byte in the first record of a segment loses that record only: readers skip
    /// to the next valid record, the next open keeps the segment whole and counts the skipped
    /// bytes, and compaction keeps the rest.
    #[test]
    fn a_corrupt_record_loses_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        for i in 0..3 {
            store.append(&batch(i * 10_000, 3)).unwrap();
        }
        drop(store);
        let segment = segments(&dir.path().join("wal")).unwrap().remove(0);
        let mut bytes = std::fs::read(&segment).unwrap();
        let first = HEADER + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
        bytes[HEADER + 3] ^= 0x01;
        std::fs::write(&segment, &bytes).unwrap();
        assert_eq!(Store::batches(dir.path(), 0, i64::MAX).unwrap().len(), 2);
        let (store, recovery) = Store::open(dir.path()).unwrap();
        assert_eq!(recovery.truncated_segments, 0);
        assert_eq!(recovery.skipped_bytes, first as u64);
        assert_eq!(recovery.batches, 2);
        store.close().unwrap();
        assert_eq!(
            cpu_total(&Store::batches(dir.path(), 0, i64::MAX).unwrap()),
            6
        );
    }

    /// A directory of another schema version is refused with a message naming it.
    #[test]
    fn refuses_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("STORE_VERSION"), "99\n").unwrap();
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("schema version 99"), "{err}");
        assert!(Store::batches(Path::new("/nonexistent/critpath"), 0, 1).is_err());
    }

    /// Requests survive the log; a `CPW3` record, written before batches had them, still reads
    /// (with none).
    #[test]
    fn requests_are_logged_and_older_records_read() {
        let mut with = batch(1_000, 2);
        with.requests.push(crate::store::RequestSpan {
            series: 0,
            tid: 9,
            start_ns: 1_000_000_123,
            duration_ns: 456,
        });
        let record = |magic: [u8; 4], payload: Vec<u8>| {
            let mut r = magic.to_vec();
            r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            r.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            r.extend_from_slice(&payload);
            r
        };
        let old = batch(2_000, 3);
        let v3 = BatchV3 {
            start_ms: old.start_ms,
            end_ms: old.end_ms,
            period_ns: old.period_ns,
            frames: old.frames.clone(),
            stacks: old.stacks.clone(),
            series: old.series.clone(),
            rows: old.rows.clone(),
            wakeups: old.wakeups.clone(),
            thread_samples: old.thread_samples.clone(),
            waits: old.waits.clone(),
        };
        let mut bytes = record(MAGIC, postcard::to_stdvec(&with).unwrap());
        bytes.extend(record(MAGIC_V3, postcard::to_stdvec(&v3).unwrap()));
        let (batches, len) = decode_records(&bytes);
        assert_eq!(len, bytes.len());
        assert_eq!(batches, [with, old]);
    }
}
