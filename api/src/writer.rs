//! Where an agent's batches go: the local store, through the process's one [`StoreWriter`]
//! (shared with the HTTP ingest endpoint in `critpath run` and `critpath serve --ingest`), or
//! a remote server (`critpath agent --push URL`).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use critpath_analyzer::store::{Batch, Retention, Store, StoreOptions, wire};

/// Opens a store for writing, reporting what recovery found.
///
/// # Errors
/// The store cannot be opened (another writer holds it, a version mismatch, I/O).
pub fn open_store(dir: &Path, retention: Retention) -> anyhow::Result<Store> {
    let options = StoreOptions {
        retention,
        ..StoreOptions::default()
    };
    let (store, recovery) = Store::open_with(dir, options)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    if recovery.truncated_segments > 0 {
        log::warn!(
            "recovered the log: cut {} torn bytes from {} segment(s)",
            recovery.truncated_bytes,
            recovery.truncated_segments
        );
    }
    if recovery.skipped_bytes > 0 {
        log::warn!(
            "recovered the log: skipped {} corrupt bytes inside segments (the records there are lost, the rest kept)",
            recovery.skipped_bytes
        );
    }
    Ok(store)
}

enum Message {
    Append(Vec<Batch>, mpsc::SyncSender<Result<(), String>>),
    Close,
}

/// The thread that owns a store and appends what every [`WriterHandle`] sends, one request
/// at a time, answering each once its batches are durable.
pub struct StoreWriter {
    handle: WriterHandle,
    thread: JoinHandle<anyhow::Result<()>>,
}

/// Sends batches to a [`StoreWriter`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    tx: mpsc::SyncSender<Message>,
    wal_bytes: Arc<AtomicU64>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Append(batches, _) => write!(f, "Append({} batches)", batches.len()),
            Self::Close => f.write_str("Close"),
        }
    }
}

impl StoreWriter {
    /// Starts the writer thread.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(mut store: Store) -> anyhow::Result<Self> {
        // A few requests queue; more wait for the writer (back-pressure, not memory).
        let (tx, rx) = mpsc::sync_channel::<Message>(16);
        let wal_bytes = Arc::new(AtomicU64::new(store.wal_bytes()));
        let thread = std::thread::Builder::new()
            .name("critpath-writer".into())
            .spawn({
                let wal_bytes = Arc::clone(&wal_bytes);
                move || {
                    while let Ok(Message::Append(batches, reply)) = rx.recv() {
                        let mut result = Ok(());
                        for (i, batch) in batches.iter().enumerate() {
                            if let Err(err) = store.append(batch) {
                                result = Err(format!("storing batch {i}: {err}"));
                                break;
                            }
                        }
                        wal_bytes.store(store.wal_bytes(), Ordering::Relaxed);
                        let _ = reply.send(result);
                    }
                    store.close().context("compacting the log at shutdown")
                }
            })
            .context("starting the store writer")?;
        Ok(Self {
            handle: WriterHandle { tx, wal_bytes },
            thread,
        })
    }

    /// A handle to send batches with.
    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Stops the writer once the requests sent before are done, and closes the store
    /// (compacting its log).
    ///
    /// # Errors
    /// Closing the store failed (the log is then compacted at the next start).
    pub fn close(self) -> anyhow::Result<()> {
        let _ = self.handle.tx.send(Message::Close);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the store writer panicked")))
    }
}

impl WriterHandle {
    /// Appends batches; returns once they are durable (fsynced).
    ///
    /// # Errors
    /// The store failed (a full disk, say): batches before the failing one are stored, the
    /// rest not. Or the writer has stopped.
    pub fn append(&self, batches: Vec<Batch>) -> Result<(), String> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx
            .send(Message::Append(batches, reply))
            .map_err(|_| "the store writer has stopped".to_owned())?;
        answer
            .recv()
            .unwrap_or_else(|_| Err("the store writer has stopped".to_owned()))
    }

    /// Bytes in the store's log.
    pub fn wal_bytes(&self) -> u64 {
        self.wal_bytes.load(Ordering::Relaxed)
    }
}

/// Pushes batches to a remote server's `POST /api/v1/ingest`, keeping them in memory (up to
/// [`Pusher::MAX_QUEUED`] batches, the oldest dropped first) while the server cannot be
/// reached, and retrying with a growing delay.
pub struct Pusher {
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
    queue: VecDeque<Batch>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Batches the server accepted.
    pub pushed: u64,
    /// Batches dropped: refused by the server as invalid, or pushed out of a full queue.
    pub dropped: u64,
}

impl Pusher {
    /// Batches kept while the server cannot be reached: one hour of 10 s intervals.
    pub const MAX_QUEUED: usize = 360;

    /// Most batches sent in one request.
    pub const BATCHES_PER_REQUEST: usize = 32;

    /// A pusher to a server's base URL (`http://host:7070`).
    pub fn new(base_url: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            url: format!("{}/api/v1/ingest", base_url.trim_end_matches('/')),
            token,
            agent,
            queue: VecDeque::new(),
            retry_at: None,
            backoff: Duration::from_secs(1),
            pushed: 0,
            dropped: 0,
        }
    }

    /// Queues batches and pushes what is queued, unless waiting to retry. `force` pushes
    /// regardless of the retry delay (at shutdown).
    pub fn send(&mut self, batches: impl IntoIterator<Item = Batch>, force: bool) {
        self.queue.extend(batches);
        while self.queue.len() > Self::MAX_QUEUED {
            self.queue.pop_front();
            self.dropped += 1;
        }
        if self.queue.is_empty() || (!force && self.retry_at.is_some_and(|t| Instant::now() < t)) {
            return;
        }
        while !self.queue.is_empty() {
            let n = self.queue.len().min(Self::BATCHES_PER_REQUEST);
            let body = wire::encode(&self.queue.make_contiguous()[..n]);
            match self.post(&body) {
                Ok(()) => {
                    self.queue.drain(..n);
                    self.pushed += n as u64;
                    self.retry_at = None;
                    self.backoff = Duration::from_secs(1);
                }
                Err(Failure::Refused(why)) => {
                    log::error!("{}: refused {n} batches, dropping them: {why}", self.url);
                    self.queue.drain(..n);
                    self.dropped += n as u64;
                }
                Err(Failure::Retry(why)) => {
                    log::warn!(
                        "{}: {why}; keeping {} batches, retrying in {} s",
                        self.url,
                        self.queue.len(),
                        self.backoff.as_secs()
                    );
                    self.retry_at = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(60));
                    return;
                }
            }
        }
    }

    /// Batches waiting to be pushed.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn post(&self, body: &[u8]) -> Result<(), Failure> {
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", wire::CONTENT_TYPE);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response = request
            .send(body)
            .map_err(|e| Failure::Retry(e.to_string()))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let text = response
            .body_mut()
            .read_to_string()
            .unwrap_or_default()
            .chars()
            .take(500)
            .collect::<String>();
        let why = format!("HTTP {status}: {text}");
        // Invalid batches (400, 413, 415) are refused for good; the rest may pass later
        // (401/403 after the token is fixed, 429/5xx when the server recovers).
        if matches!(status, 400 | 413 | 415 | 422) {
            Err(Failure::Refused(why))
        } else {
            Err(Failure::Retry(why))
        }
    }
}

enum Failure {
    Refused(String),
    Retry(String),
}
