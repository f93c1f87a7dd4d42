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
use critpath_analyzer::store::{Batch, Recovery, Retention, Store, StoreOptions, wire};

/// Opens a store for writing, logging what recovery found (and returning it, for health and
/// `/metrics`).
///
/// # Errors
/// The store cannot be opened (another writer holds it, a version mismatch, I/O).
pub fn open_store(dir: &Path, retention: Retention) -> anyhow::Result<(Store, Recovery)> {
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
    Ok((store, recovery))
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
    recovery: Arc<Recovery>,
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
    /// Opens the store in `dir` ([`open_store`]) and starts its writer.
    ///
    /// # Errors
    /// As [`open_store`] and [`StoreWriter::start`].
    pub fn open(dir: &Path, retention: Retention) -> anyhow::Result<Self> {
        let (store, recovery) = open_store(dir, retention)?;
        Self::start(store, recovery)
    }

    /// Starts the writer thread over `store`, which opening found as `recovery` says.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(mut store: Store, recovery: Recovery) -> anyhow::Result<Self> {
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
            handle: WriterHandle {
                tx,
                wal_bytes,
                recovery: Arc::new(recovery),
            },
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

    /// What opening the store found: log bytes cut off or skipped as corrupt (lost).
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Bytes in the store's log.
    pub fn wal_bytes(&self) -> u64 {
        self.wal_bytes.load(Ordering::Relaxed)
    }
}

/// Pushes batches to a remote server's `POST /api/v1/ingest` from its own thread, so that
/// sampling never waits on the network. Unsent batches wait encoded, in a queue bounded in
/// bytes ([`Pusher::MAX_QUEUED_BYTES`]; the oldest are dropped first), and are retried with a
/// growing delay while the server cannot be reached or answers 5xx. A request the server finds
/// too large (413) is split in two, down to one batch; batches refused as invalid are dropped
/// and counted.
pub struct Pusher {
    url: String,
    shared: Arc<PushShared>,
    thread: Option<JoinHandle<()>>,
}

struct PushShared {
    state: std::sync::Mutex<PushState>,
    wake: std::sync::Condvar,
}

#[derive(Default)]
struct PushState {
    /// Encoded batches ([`wire::encode_batch`]), oldest first.
    queue: VecDeque<Vec<u8>>,
    /// Bytes of the queue and of the request in flight.
    bytes: usize,
    /// Batches in the request in flight.
    in_flight: usize,
    pushed: u64,
    dropped: u64,
    /// Set by [`Pusher::close`]: push what is left, regardless of the retry delay, until then.
    closing: Option<Instant>,
}

/// What a [`Pusher`] has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushCounts {
    /// Batches the server accepted.
    pub pushed: u64,
    /// Batches dropped: refused by the server as invalid, or pushed out of a full queue.
    pub dropped: u64,
    /// Batches waiting (or in flight).
    pub queued: usize,
}

impl Pusher {
    /// Bytes of encoded batches kept while the server cannot be reached: an hour of a busy
    /// host's 10 s batches.
    pub const MAX_QUEUED_BYTES: usize = 128 << 20;

    /// Most batches sent in one request.
    pub const BATCHES_PER_REQUEST: usize = 32;

    /// Most bytes of batches in one request (one batch larger than this goes alone).
    pub const REQUEST_BYTES: usize = 8 << 20;

    /// Starts pushing to a server's base URL (`http://host:7070`); each request may take
    /// `timeout`.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(base_url: &str, token: Option<String>, timeout: Duration) -> anyhow::Result<Self> {
        let url = format!("{}/api/v1/ingest", base_url.trim_end_matches('/'));
        let shared = Arc::new(PushShared {
            state: std::sync::Mutex::new(PushState::default()),
            wake: std::sync::Condvar::new(),
        });
        let client = PushClient {
            url: url.clone(),
            token,
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(timeout))
                .http_status_as_error(false)
                .build()
                .into(),
        };
        let thread = std::thread::Builder::new()
            .name("critpath-push".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || client.run(&shared)
            })
            .context("starting the push thread")?;
        Ok(Self {
            url,
            shared,
            thread: Some(thread),
        })
    }

    /// Queues batches for the push thread; never waits on the network.
    pub fn send(&self, batches: impl IntoIterator<Item = Batch>) {
        let parts: Vec<Vec<u8>> = batches
            .into_iter()
            .map(|b| wire::encode_batch(&b))
            .collect();
        if parts.is_empty() {
            return;
        }
        let mut st = self.shared.lock();
        for part in parts {
            st.bytes += part.len();
            st.queue.push_back(part);
        }
        let mut evicted = 0;
        while st.bytes > Self::MAX_QUEUED_BYTES
            && let Some(old) = st.queue.pop_front()
        {
            st.bytes -= old.len();
            st.dropped += 1;
            evicted += 1;
        }
        drop(st);
        if evicted > 0 {
            log::error!(
                "{}: the queue of unsent batches is full ({} MiB): dropped the {evicted} oldest",
                self.url,
                Self::MAX_QUEUED_BYTES >> 20
            );
        }
        self.shared.wake.notify_all();
    }

    /// What has been pushed, dropped and is still queued.
    pub fn counts(&self) -> PushCounts {
        let st = self.shared.lock();
        PushCounts {
            pushed: st.pushed,
            dropped: st.dropped,
            queued: st.queue.len() + st.in_flight,
        }
    }

    /// Pushes what is queued (retrying for at most `within`), stops the thread and says what
    /// was done; `queued` is then what could not be pushed.
    pub fn close(mut self, within: Duration) -> PushCounts {
        self.shared.lock().closing = Some(Instant::now() + within);
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.counts()
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            // Dropped without close: stop at once.
            self.shared.lock().closing = Some(Instant::now());
            self.shared.wake.notify_all();
            let _ = thread.join();
        }
    }
}

impl PushShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PushState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The push thread's side: the HTTP client and the retry policy.
struct PushClient {
    url: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl PushClient {
    fn run(&self, shared: &PushShared) {
        let mut retry_at: Option<Instant> = None;
        let mut backoff = Duration::from_secs(1);
        // Batches per request: halved on each 413, grown back on success.
        let mut limit = Pusher::BATCHES_PER_REQUEST;
        loop {
            let (parts, closing) = {
                let mut st = shared.lock();
                loop {
                    let now = Instant::now();
                    if st.closing.is_some_and(|deadline| now >= deadline) {
                        return;
                    }
                    if st.queue.is_empty() {
                        if st.closing.is_some() {
                            return;
                        }
                        st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                        continue;
                    }
                    match retry_at {
                        Some(at) if now < at && st.closing.is_none() => {
                            st = shared
                                .wake
                                .wait_timeout(st, at - now)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        _ => break,
                    }
                }
                let (mut n, mut size) = (0, 0);
                for part in &st.queue {
                    if n == limit || (n > 0 && size + part.len() > Pusher::REQUEST_BYTES) {
                        break;
                    }
                    n += 1;
                    size += part.len();
                }
                let parts: Vec<Vec<u8>> = st.queue.drain(..n).collect();
                st.in_flight = n;
                (parts, st.closing.is_some())
            };
            let n = parts.len();
            let size: usize = parts.iter().map(Vec::len).sum();
            let body = wire::request(parts.iter().map(Vec::as_slice));
            let result = self.post(&body);
            drop(body);
            let mut st = shared.lock();
            st.in_flight = 0;
            match result {
                Ok(()) => {
                    st.bytes -= size;
                    st.pushed += n as u64;
                    retry_at = None;
                    backoff = Duration::from_secs(1);
                    limit = (limit * 2).min(Pusher::BATCHES_PER_REQUEST);
                }
                Err(Failure::TooLarge(why)) if n > 1 => {
                    log::warn!("{}: {why}; splitting the {n} batches in two", self.url);
                    for part in parts.into_iter().rev() {
                        st.queue.push_front(part);
                    }
                    limit = n / 2;
                }
                Err(Failure::Refused(why) | Failure::TooLarge(why)) => {
                    log::error!("{}: refused {n} batches, dropping them: {why}", self.url);
                    st.bytes -= size;
                    st.dropped += n as u64;
                }
                Err(Failure::Retry(why)) => {
                    for part in parts.into_iter().rev() {
                        st.queue.push_front(part);
                    }
                    if closing {
                        log::warn!("{}: {why}; {} batches not pushed", self.url, st.queue.len());
                        return;
                    }
                    log::warn!(
                        "{}: {why}; keeping {} batches, retrying in {} s",
                        self.url,
                        st.queue.len(),
                        backoff.as_secs()
                    );
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
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
        // A request too large is split; invalid batches (400, 415, 422) are refused for good;
        // the rest may pass later (401/403 after the token is fixed, 408/429/5xx when the
        // server recovers).
        match status {
            413 => Err(Failure::TooLarge(why)),
            400 | 415 | 422 => Err(Failure::Refused(why)),
            _ => Err(Failure::Retry(why)),
        }
    }
}

enum Failure {
    TooLarge(String),
    Refused(String),
    Retry(String),
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::TcpListener;

    use critpath_analyzer::store::{Row, SampleKind, SeriesLabels};

    use super::*;

    fn batch(start_ms: i64) -> Batch {
        Batch {
            start_ms,
            end_ms: start_ms + 10_000,
            period_ns: 52_631_578,
            frames: vec![critpath_analyzer::Frame::user("main", "/srv/app")],
            stacks: vec![vec![0]],
            series: vec![SeriesLabels {
                host: "h".into(),
                pid: 1,
                comm: "app".into(),
                exe: "/srv/app".into(),
                build_id: String::new(),
                service: "app".into(),
            }],
            rows: vec![Row {
                series: 0,
                stack: 0,
                kind: SampleKind::Cpu,
                value: 1,
            }],
            ..Batch::default()
        }
    }

    /// A one-thread HTTP server answering each ingest request with `answer(batches in it)`;
    /// returns its address and the batches it answered 200, in order.
    fn server(
        answer: impl Fn(usize) -> u16 + Send + 'static,
    ) -> (String, Arc<std::sync::Mutex<Vec<i64>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let stored = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = Arc::clone(&stored);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).unwrap();
                        let batches = wire::decode(&body).unwrap();
                        let status = answer(batches.len());
                        if status == 200 {
                            kept.lock()
                                .unwrap()
                                .extend(batches.iter().map(|b| b.start_ms));
                        }
                        write!(
                            stream,
                            "HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\n{{}}"
                        )
                        .unwrap();
                        length = 0;
                    }
                }
            }
        });
        (addr, stored)
    }

    /// A server that takes at most 3 batches per request (413 beyond): every batch arrives,
    /// once and in order, through requests split in two until they fit (a 413 dropped them all
    /// before).
    #[test]
    fn too_large_requests_are_split() {
        let (url, stored) = server(|n| if n > 3 { 413 } else { 200 });
        let pusher = Pusher::start(&url, None, Duration::from_secs(5)).unwrap();
        pusher.send((0..20).map(|i| batch(i * 10_000)));
        let counts = pusher.close(Duration::from_secs(10));
        assert_eq!(
            counts,
            PushCounts {
                pushed: 20,
                dropped: 0,
                queued: 0
            }
        );
        let expected: Vec<i64> = (0..20).map(|i| i * 10_000).collect();
        assert_eq!(*stored.lock().unwrap(), expected);
    }

    /// A server that accepts connections and never answers: queuing never waits on it (it ran
    /// inside the sampling loop before, 30 s per push), and what is queued is kept, not lost,
    /// until the close gives up.
    #[test]
    fn a_silent_server_never_blocks_the_sender() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                held.push(stream.unwrap()); // kept open, never answered
            }
        });
        let pusher = Pusher::start(&url, None, Duration::from_secs(2)).unwrap();
        let mut slowest = Duration::ZERO;
        for i in 0..30 {
            let started = Instant::now();
            pusher.send([batch(i * 10_000)]);
            slowest = slowest.max(started.elapsed());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(slowest < Duration::from_millis(500), "{slowest:?}");
        let counts = pusher.close(Duration::from_millis(100));
        assert_eq!(
            counts,
            PushCounts {
                pushed: 0,
                dropped: 0,
                queued: 30
            }
        );
    }
}
