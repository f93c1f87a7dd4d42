//! An in-memory index of a store, for call trees at interactive speed.
//!
//! Every call path ever read (service, then the stack's functions from the outermost) is a
//! node of one trie shared by all sources, so a tree query is a sum into one array indexed
//! by node, whatever the number of parts. Each source is cached as rows pointing at nodes:
//!
//! - a Parquet part as its roll-up (sums over all its intervals, per series and stack), which
//!   answers every window that covers all of the part's intervals; and, loaded only when a
//!   window cuts through the part, its sample rows grouped by interval;
//! - a live log segment as its rows grouped by interval (one per record), read incrementally:
//!   each query decodes only the records appended since the last one.
//!
//! Parts are immutable, so cached parts never go stale; they are evicted least recently used
//! beyond a byte budget. When the trie grows past [`MAX_TRIE_NODES`] the whole index starts
//! over (queries in flight keep the generation they started with). It starts over too when a
//! query panicked while it held one of the index's locks: the caches may be half updated, and
//! they are only caches, so later queries rebuild them instead of failing on a poisoned lock.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::parquet::{NO_NODE, read_rollup, read_samples, read_stack_functions};
use super::scan::{SourceRef, list_sources};
use super::wal::decode_records;
use super::{Batch, ProfileType, SampleKind, SeriesLabels, StoreError};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The index starts over when its trie has more nodes than this.
pub const MAX_TRIE_NODES: usize = 8 << 20;

/// Default byte budget of cached parts: [`Index::new`].
pub const DEFAULT_CACHE_BYTES: usize = 512 << 20;

/// The trie of call paths: node 0 is the root, its children the services, then frames by
/// function name. A node's parent always has a smaller id.
#[derive(Debug)]
pub struct CallPaths {
    names: Vec<String>,
    /// Per name: every frame seen with it was inlined (into another function).
    inline_only: Vec<bool>,
    name_ids: FastMap<String, u32>,
    parent: Vec<u32>,
    name: Vec<u32>,
    children: FastMap<u64, u32>,
}

impl CallPaths {
    fn new() -> Self {
        let mut paths = Self {
            names: Vec::new(),
            inline_only: Vec::new(),
            name_ids: FastMap::default(),
            parent: vec![0],
            name: vec![0],
            children: FastMap::default(),
        };
        paths.intern("", false);
        paths
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Whether only the root exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 1
    }

    /// A node's parent (the root's is itself).
    pub fn parent(&self, node: u32) -> u32 {
        self.parent[node as usize]
    }

    /// A node's name: a service (depth 1) or a function.
    pub fn name(&self, node: u32) -> &str {
        &self.names[self.name[node as usize] as usize]
    }

    /// The id of a node's name (equal ids, equal names).
    pub fn name_id(&self, node: u32) -> u32 {
        self.name[node as usize]
    }

    /// Whether every frame read with a node's name was inlined into its caller (the name is
    /// then never a function of its own on the machine: `core::hint::black_box`).
    pub fn inline_only(&self, node: u32) -> bool {
        self.inline_only[self.name[node as usize] as usize]
    }

    /// A name's id; `inlined`: it is read from an inlined frame (services: false).
    fn intern(&mut self, name: &str, inlined: bool) -> u32 {
        if let Some(&id) = self.name_ids.get(name) {
            self.inline_only[id as usize] &= inlined;
            return id;
        }
        let id = self.names.len() as u32;
        self.inline_only.push(inlined);
        self.names.push(name.to_owned());
        self.name_ids.insert(name.to_owned(), id);
        id
    }

    fn child(&mut self, parent: u32, name: u32) -> u32 {
        let key = (u64::from(parent) << 32) | u64::from(name);
        if let Some(&child) = self.children.get(&key) {
            return child;
        }
        let child = self.parent.len() as u32;
        self.parent.push(parent);
        self.name.push(name);
        self.children.insert(key, child);
        child
    }

    /// The node of a service's stack, given the stack's name ids (outermost first).
    fn path(&mut self, service: &str, names: impl IntoIterator<Item = u32>) -> u32 {
        let service = self.intern(service, false);
        names
            .into_iter()
            .fold(self.child(0, service), |node, name| self.child(node, name))
    }
}

/// Rows of one source grouped by interval, each row pointing at a call path.
#[derive(Debug, Default)]
struct Rows {
    runs: Vec<Run>,
    series: Vec<u32>,
    node: Vec<u32>,
    off_cpu: Vec<bool>,
    value: Vec<i64>,
}

#[derive(Debug)]
struct Run {
    start_ms: i64,
    end_ms: i64,
    period_ns: i64,
    rows: Range<usize>,
}

impl Rows {
    fn bytes(&self) -> usize {
        self.node.len() * 17 + self.runs.len() * 40
    }

    fn push(&mut self, start_ms: i64, end_ms: i64, period_ns: i64) {
        let at = self.node.len();
        match self.runs.last_mut() {
            Some(run)
                if run.start_ms == start_ms
                    && run.end_ms == end_ms
                    && run.period_ns == period_ns
                    && run.rows.end == at => {}
            _ => self.runs.push(Run {
                start_ms,
                end_ms,
                period_ns,
                rows: at..at,
            }),
        }
        self.runs.last_mut().expect("a run").rows.end = at + 1;
    }

    fn add_to(&self, query: &Query, selected: &[bool], values: &mut Vec<i64>) {
        for run in &self.runs {
            if run.end_ms <= query.from_ms || run.start_ms >= query.to_ms {
                continue;
            }
            for i in run.rows.clone() {
                if !selected[self.series[i] as usize] {
                    continue;
                }
                let kind = if self.off_cpu[i] {
                    SampleKind::OffCpu
                } else {
                    SampleKind::Cpu
                };
                if let Some(v) = query.profile_type.weigh(kind, self.value[i], run.period_ns) {
                    let node = self.node[i] as usize;
                    if node >= values.len() {
                        values.resize(node + 1, 0);
                    }
                    values[node] += v;
                }
            }
        }
    }
}

/// A cached Parquet part.
#[derive(Debug)]
struct Part {
    /// Its hour directory and segment number, to load its rows later.
    dir: PathBuf,
    seq: String,
    series: Vec<SeriesLabels>,
    /// Sums over the whole part: (series, node, cpu samples, cpu ns, off-CPU ns).
    rollup: Vec<(u32, u32, i64, i64, i64)>,
    /// The part's distinct intervals.
    intervals: Vec<(i64, i64)>,
    /// The stack of each roll-up row, to map sample rows to nodes when they are loaded.
    rollup_stacks: Vec<u32>,
    /// The sample rows, loaded on first need.
    rows: Mutex<Option<Arc<Rows>>>,
    rows_bytes: AtomicUsize,
    last_used: AtomicU64,
}

impl Part {
    fn bytes(&self) -> usize {
        self.rollup.len() * 36 + self.rows_bytes.load(Ordering::Relaxed)
    }
}

/// A live log segment, read up to `offset`.
#[derive(Debug, Default)]
struct Log {
    offset: u64,
    series: Vec<SeriesLabels>,
    series_ids: HashMap<SeriesLabels, u32>,
    rows: Rows,
}

#[derive(Debug)]
struct Generation {
    paths: RwLock<CallPaths>,
    parts: Mutex<HashMap<PathBuf, Arc<Part>>>,
    logs: Mutex<HashMap<PathBuf, Arc<Mutex<Log>>>>,
    clock: AtomicU64,
}

/// Takes a lock of the index even when a panicking query left it poisoned (the generation is
/// then started over by [`Index::generation`]).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl Generation {
    /// Whether a query panicked while it held one of its locks.
    fn poisoned(&self) -> bool {
        self.paths.is_poisoned() || self.parts.is_poisoned() || self.logs.is_poisoned()
    }

    fn new() -> Self {
        Self {
            paths: RwLock::new(CallPaths::new()),
            parts: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
        }
    }
}

/// What a tree query sums.
struct Query {
    from_ms: i64,
    to_ms: i64,
    profile_type: ProfileType,
}

/// The in-memory index of one store directory (see the module docs). Cheap to share between
/// threads; queries run concurrently.
#[derive(Debug)]
pub struct Index {
    current: RwLock<Arc<Generation>>,
    cache_bytes: usize,
}

impl Default for Index {
    fn default() -> Self {
        Self::new(DEFAULT_CACHE_BYTES)
    }
}

impl Index {
    /// An empty index keeping at most about `cache_bytes` of parts in memory.
    pub fn new(cache_bytes: usize) -> Self {
        Self {
            current: RwLock::new(Arc::new(Generation::new())),
            cache_bytes,
        }
    }

    /// Sums the selected series' values of `[from_ms, to_ms)` per call path, and calls `f`
    /// with the call paths and the self value of each node (indexed by node).
    ///
    /// # Errors
    /// A source could not be read.
    pub fn with_call_paths<R>(
        &self,
        store: &Path,
        from_ms: i64,
        to_ms: i64,
        profile_type: ProfileType,
        keep: &dyn Fn(&SeriesLabels) -> bool,
        f: impl FnOnce(&CallPaths, &[i64]) -> R,
    ) -> Result<R, StoreError> {
        let generation = self.generation();
        let query = Query {
            from_ms,
            to_ms,
            profile_type,
        };
        let mut logs = Vec::new();
        let mut parts = Vec::new();
        let mut live = Vec::new();
        let sources = list_sources(store, from_ms, to_ms)?;
        // Parts not in the cache are read (Parquet decoded) by a second thread while this one
        // maps the previous part's stacks into the trie.
        let missing: Vec<(PathBuf, String)> = {
            let cache = lock(&generation.parts);
            sources
                .iter()
                .filter_map(|s| match s {
                    SourceRef::Part { dir, seq, .. } if !cache.contains_key(&dir.join(seq)) => {
                        Some((dir.clone(), seq.clone()))
                    }
                    _ => None,
                })
                .collect()
        };
        std::thread::scope(|scope| -> Result<(), StoreError> {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let reading = &missing;
            if !reading.is_empty() {
                scope.spawn(move || {
                    for (dir, seq) in reading {
                        if tx.send(read_part_files(dir, seq)).is_err() {
                            break; // the query failed
                        }
                    }
                });
            }
            let mut next_missing = missing.iter().peekable();
            for source in sources {
                match source {
                    SourceRef::Log { path, file } => {
                        live.push(path.clone());
                        logs.push(read_log(&generation, path, file)?);
                    }
                    SourceRef::Part { dir, seq, .. } => {
                        let files = match next_missing.peek() {
                            Some((d, s)) if *d == dir && *s == seq => {
                                next_missing.next();
                                rx.recv().ok()
                            }
                            _ => None,
                        };
                        let path = dir.join(format!("{seq}.samples.parquet"));
                        match part(&generation, &dir, &seq, files) {
                            Ok(part) => parts.push(part),
                            // Dropped by retention while we read it.
                            Err(StoreError::Parquet { .. } | StoreError::Io { .. })
                                if !path.exists() => {}
                            Err(err) => return Err(err),
                        }
                    }
                }
            }
            Ok(())
        })?;
        lock(&generation.logs).retain(|path, _| live.contains(path));
        let mut rows = Vec::new();
        let mut rollups = Vec::new();
        for part in &parts {
            let covered = part
                .intervals
                .iter()
                .filter(|&&(s, e)| e > from_ms && s < to_ms)
                .count();
            if covered == part.intervals.len() {
                rollups.push(part);
            } else if covered > 0 {
                rows.push((part, load_rows(part)?));
            }
        }
        self.evict(&generation);

        // Never hold the trie's lock while taking a log's: a log being read takes them the
        // other way round. The trie only grows, so rows read later may point past `values`.
        let mut values = vec![0i64; read(&generation.paths).len()];
        for part in rollups {
            let selected: Vec<bool> = part.series.iter().map(keep).collect();
            for &(series, node, cpu, cpu_ns, off_ns) in &part.rollup {
                if selected[series as usize] {
                    values[node as usize] += match profile_type {
                        ProfileType::Cpu => cpu,
                        ProfileType::OffCpu => off_ns,
                        ProfileType::Wall => cpu_ns + off_ns,
                    };
                }
            }
        }
        for (part, part_rows) in &rows {
            let selected: Vec<bool> = part.series.iter().map(keep).collect();
            part_rows.add_to(&query, &selected, &mut values);
        }
        for log in &logs {
            let log = lock(log);
            let selected: Vec<bool> = log.series.iter().map(keep).collect();
            log.rows.add_to(&query, &selected, &mut values);
        }
        let paths = read(&generation.paths);
        Ok(f(&paths, &values))
    }

    /// The current generation, started over when the trie is too large.
    fn generation(&self) -> Arc<Generation> {
        let current = read(&self.current).clone();
        if !current.poisoned() && read(&current.paths).len() <= MAX_TRIE_NODES {
            return current;
        }
        let mut slot = write(&self.current);
        if Arc::ptr_eq(&slot, &current) {
            *slot = Arc::new(Generation::new());
        }
        slot.clone()
    }

    /// Drops the least recently used parts while the cache is over budget.
    fn evict(&self, generation: &Generation) {
        let mut parts = lock(&generation.parts);
        let mut total: usize = parts.values().map(|p| p.bytes()).sum();
        while total > self.cache_bytes && !parts.is_empty() {
            let oldest = parts
                .iter()
                .min_by_key(|(_, p)| p.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone())
                .expect("a part");
            if let Some(p) = parts.remove(&oldest) {
                total -= p.bytes();
            }
        }
    }
}

/// A part's files as read from disk, before its stacks are mapped into the trie.
struct PartFiles {
    series: Vec<SeriesLabels>,
    rollup: super::parquet::Rollup,
    stacks: super::parquet::StackFunctions,
}

fn read_part_files(dir: &Path, seq: &str) -> Result<PartFiles, StoreError> {
    Ok(PartFiles {
        series: super::parquet::read_series(&dir.join(format!("{seq}.series.parquet")))?,
        rollup: read_rollup(dir, seq)?,
        stacks: read_stack_functions(dir, seq)?,
    })
}

/// A cached part, loaded (roll-up and call paths) on first use, from `files` when they were
/// read already.
fn part(
    generation: &Generation,
    dir: &Path,
    seq: &str,
    files: Option<Result<PartFiles, StoreError>>,
) -> Result<Arc<Part>, StoreError> {
    let key = dir.join(seq);
    let tick = generation.clock.fetch_add(1, Ordering::Relaxed);
    if let Some(part) = lock(&generation.parts).get(&key) {
        part.last_used.store(tick, Ordering::Relaxed);
        return Ok(part.clone());
    }
    let PartFiles {
        series,
        rollup,
        stacks:
            super::parquet::StackFunctions {
                functions,
                inlined,
                tree,
                stack_nodes,
            },
    } = match files {
        Some(files) => files?,
        None => read_part_files(dir, seq)?,
    };
    let mut rows = Vec::with_capacity(rollup.series.len());
    {
        let mut paths = write(&generation.paths);
        let names: Vec<u32> = functions
            .iter()
            .zip(&inlined)
            .map(|(f, &inlined)| paths.intern(f, inlined))
            .collect();
        let services: Vec<u32> = series
            .iter()
            .map(|s| paths.intern(&s.service, false))
            .collect();
        // Trie node of (service name, part's tree node): each prefix is looked up once. A node
        // is nearly always under one service: its first one is kept by position, others hashed.
        let mut first: Vec<(u32, u32)> = vec![(NO_NODE, NO_NODE); tree.len()];
        let mut others: FastMap<(u32, u32), u32> = FastMap::default();
        let mut chain = Vec::new();
        for i in 0..rollup.series.len() {
            let (s, stack) = (rollup.series[i], rollup.stack[i]);
            let service = *services.get(s as usize).ok_or_else(|| corrupt(dir, seq))?;
            let leaf = *stack_nodes
                .get(stack as usize)
                .ok_or_else(|| corrupt(dir, seq))?;
            chain.clear();
            let mut at = leaf;
            let mut node = loop {
                if at == NO_NODE {
                    break paths.child(0, service);
                }
                match first.get(at as usize) {
                    Some(&(s, node)) if s == service => break node,
                    Some(&(s, _)) if s != NO_NODE => {
                        if let Some(&node) = others.get(&(service, at)) {
                            break node;
                        }
                    }
                    _ => {}
                }
                chain.push(at);
                // Parents come before their children (the reader checks): the walk ends.
                let &(parent, _) = tree.get(at as usize).ok_or_else(|| corrupt(dir, seq))?;
                at = parent;
            };
            for &at in chain.iter().rev() {
                let frame = tree[at as usize].1;
                if frame != NO_NODE {
                    let name = *names.get(frame as usize).ok_or_else(|| corrupt(dir, seq))?;
                    node = paths.child(node, name);
                }
                let slot = &mut first[at as usize];
                if slot.0 == NO_NODE {
                    *slot = (service, node);
                } else {
                    others.insert((service, at), node);
                }
            }

            rows.push((
                s,
                node,
                rollup.cpu_samples[i],
                rollup.cpu_ns[i],
                rollup.offcpu_ns[i],
            ));
        }
    }
    let part = Arc::new(Part {
        dir: dir.to_owned(),
        seq: seq.to_owned(),
        series,
        rollup: rows,
        intervals: rollup.intervals,
        rollup_stacks: rollup.stack,
        rows: Mutex::new(None),
        rows_bytes: AtomicUsize::new(0),
        last_used: AtomicU64::new(tick),
    });
    lock(&generation.parts).insert(key, part.clone());
    Ok(part)
}

fn corrupt(dir: &Path, seq: &str) -> StoreError {
    StoreError::Parquet {
        path: dir.join(format!("{seq}.rollup.parquet")),
        error: polars::prelude::PolarsError::ComputeError(
            "a roll-up row refers to a series or stack the part does not have".into(),
        ),
    }
}

/// A part's sample rows, loaded on first need.
fn load_rows(part: &Part) -> Result<Arc<Rows>, StoreError> {
    let mut slot = lock(&part.rows);
    if let Some(rows) = &*slot {
        return Ok(rows.clone());
    }
    let (dir, seq) = (part.dir.as_path(), part.seq.as_str());
    let samples = read_samples(dir, seq)?;
    // (series << 32 | stack) → node, from the roll-up, which has every pair of the part.
    let nodes: FastMap<u64, u32> = part
        .rollup
        .iter()
        .zip(&part.rollup_stacks)
        .map(|(&(s, node, ..), &stack)| ((u64::from(s) << 32) | u64::from(stack), node))
        .collect();
    let mut rows = Rows::default();
    for i in 0..samples.value.len() {
        let key = (u64::from(samples.series[i]) << 32) | u64::from(samples.stack[i]);
        let Some(&node) = nodes.get(&key) else {
            return Err(corrupt(dir, seq));
        };
        rows.push(samples.start_ms[i], samples.end_ms[i], samples.period_ns[i]);
        rows.series.push(samples.series[i]);
        rows.node.push(node);
        rows.off_cpu.push(samples.off_cpu[i]);
        rows.value.push(samples.value[i]);
    }
    part.rows_bytes.store(rows.bytes(), Ordering::Relaxed);
    let rows = Arc::new(rows);
    *slot = Some(rows.clone());
    Ok(rows)
}

/// A live log segment's cached rows, brought up to date with what was appended since.
fn read_log(
    generation: &Generation,
    path: PathBuf,
    mut file: File,
) -> Result<Arc<Mutex<Log>>, StoreError> {
    let log = lock(&generation.logs)
        .entry(path.clone())
        .or_default()
        .clone();
    {
        let mut log = lock(&log);
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(log.offset))
            .and_then(|_| file.read_to_end(&mut bytes))
            .map_err(|e| StoreError::io(&path, e))?;
        let (batches, len) = decode_records(&bytes);
        if !batches.is_empty() {
            let mut paths = write(&generation.paths);
            for batch in &batches {
                add_batch(&mut log, &mut paths, batch);
            }
        }
        log.offset += len as u64;
    }
    Ok(log)
}

fn add_batch(log: &mut Log, paths: &mut CallPaths, batch: &Batch) {
    let series: Vec<u32> = batch
        .series
        .iter()
        .map(|s| {
            let next = log.series.len() as u32;
            *log.series_ids.entry(s.clone()).or_insert_with(|| {
                log.series.push(s.clone());
                next
            })
        })
        .collect();
    let names: Vec<u32> = batch
        .frames
        .iter()
        .map(|f| paths.intern(&f.function, f.inlined))
        .collect();
    let mut nodes: FastMap<(u32, u32), u32> = FastMap::default();
    for row in &batch.rows {
        let s = series[row.series as usize];
        let node = *nodes.entry((s, row.stack)).or_insert_with(|| {
            paths.path(
                &log.series[s as usize].service,
                batch.stacks[row.stack as usize]
                    .iter()
                    .map(|&f| names[f as usize]),
            )
        });
        log.rows.push(batch.start_ms, batch.end_ms, batch.period_ns);
        log.rows.series.push(s);
        log.rows.node.push(node);
        log.rows.off_cpu.push(row.kind == SampleKind::OffCpu);
        log.rows.value.push(row.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::wal::tests::batch;

    /// A query that panicked while it held the trie's lock poisons it; the next query starts
    /// a new generation and answers in full instead of failing.
    #[test]
    fn a_panic_under_a_lock_does_not_break_later_queries() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        store.append(&batch(1_000_000, 5)).unwrap();
        store.close().unwrap();
        let index = Index::new(DEFAULT_CACHE_BYTES);
        let total = || {
            index
                .with_call_paths(
                    dir.path(),
                    0,
                    2_000_000,
                    ProfileType::Cpu,
                    &|_| true,
                    |_, v| v.iter().sum::<i64>(),
                )
                .unwrap()
        };
        assert_eq!(total(), 5);
        let generation = index.generation();
        let poisoner = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _paths = generation.paths.write().unwrap();
            let _parts = generation.parts.lock().unwrap();
            panic!("a query's bug");
        }));
        assert!(poisoner.is_err() && generation.poisoned());
        assert_eq!(total(), 5);
        assert!(!Arc::ptr_eq(&generation, &index.generation()));
    }
}
