//! A window's evidence: interned functions and threads, stacks with their on-CPU and off-CPU
//! time, and waits with who ended them.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::Profile;
use crate::offcpu::{Cause, OFF_CPU_MODULE, ThreadRef, WakeupEdge};
use crate::query::{FlameTree, NodeId};
use crate::store::{Batch, SampleKind, SeriesLabels, WakerKind};

use super::timeline::{
    StackRef, TimedSample, TimedWait, TimedWaker, Timeline, interrupt_reason, kernel_thread_reason,
};

/// Index into [`Evidence::functions`].
pub type FunctionId = u32;
/// Index into [`Evidence::threads`].
pub type ThreadId = u32;

/// Most threads known by thread id in one window's evidence: past it (a pool that spawns a
/// thread per request), a process's further threads share one per thread name, so that thread
/// churn cannot grow the analysis without bound.
pub const MAX_THREADS: usize = 4096;

/// Who ended a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// A thread.
    Thread(ThreadId),
    /// The kernel, from interrupt context, or nobody seen: a timer (`sleep`), a device
    /// (`io`), the CPU itself (`runqueue`: waiting to run) and so on, by cause.
    Kernel(Cause),
}

impl Actor {
    /// The pseudo-actor's display name (`[timer]`, `[device]`, ...), or `None` for a thread.
    pub fn kernel_name(self) -> Option<&'static str> {
        match self {
            Actor::Thread(_) => None,
            Actor::Kernel(cause) => Some(match cause {
                Cause::Sleep => "[timer]",
                Cause::Io => "[device]",
                Cause::RunQueue => "[cpu]",
                Cause::Lock => "[kernel lock]",
                Cause::Poll => "[poll]",
                Cause::Other => "[kernel]",
            }),
        }
    }
}

/// A stack in a thread with its time.
#[derive(Clone, Debug, PartialEq)]
pub struct Stack {
    /// The thread.
    pub thread: ThreadId,
    /// Functions, root first (an off-CPU stack without its `[off-cpu: …]` pseudo frame).
    pub frames: Vec<FunctionId>,
    /// On-CPU time, ns.
    pub cpu_ns: f64,
    /// Off-CPU time by cause ([`Cause::ALL`] order), ns.
    pub off_cpu_ns: [f64; 6],
    /// For an off-CPU stack: the program function it blocked in (the innermost user frame that
    /// is neither the C library nor Rust's standard library), if any.
    pub waiting_in: Option<FunctionId>,
}

/// A hash of a thread name, the same in every run.
fn name_hash(name: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// Whether a user frame belongs to the program rather than to the C or Rust runtime (whose
/// frames sit between a program's function and the system call it blocks in).
fn is_program_frame(frame: &crate::Frame) -> bool {
    const RUNTIME_MODULES: [&str; 4] = ["libc.so", "libc-", "ld-linux", "libpthread"];
    let module = frame.module.as_deref().map(crate::module_basename);
    frame.kind == crate::FrameKind::User
        && !module.is_some_and(|m| RUNTIME_MODULES.iter().any(|p| m.starts_with(p)))
        && !is_runtime_name(&frame.function)
}

/// Whether a function's name says it is the Rust or C runtime's (`std::`, `core::`, `__futex`,
/// `[unknown]`).
fn is_runtime_name(function: &str) -> bool {
    const RUNTIME_PREFIXES: [&str; 8] = [
        "std::", "core::", "alloc::", "<std::", "<core::", "<alloc::", "__", "[",
    ];
    RUNTIME_PREFIXES.iter().any(|p| function.starts_with(p))
}

/// A wait (or the sum of several alike) and who ended it.
#[derive(Clone, Debug, PartialEq)]
pub struct Wait {
    /// The thread that waited.
    pub wakee: ThreadId,
    /// Its blocked stack, root first.
    pub wakee_frames: Vec<FunctionId>,
    /// Who woke it.
    pub waker: Actor,
    /// The waker's stack at the wakeup, root first (empty for the kernel).
    pub waker_frames: Vec<FunctionId>,
    /// Why it waited.
    pub cause: Cause,
    /// Blocked time, weighted, ns.
    pub ns: f64,
    /// How many waits this stands for.
    pub count: f64,
}

/// The wakeups file of `critpath record --wakeups`. Version 1 was the bare array of merged
/// wakeup edges; version 2 is an object with the edges and the recording's timeline as store
/// batches (every on-CPU sample and off-CPU wait with its thread and time), which a recording's
/// evidence is read from as a window of the store is.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum WakeupsFile {
    /// Version 1: the edges alone.
    Edges(Vec<WakeupEdge>),
    /// Version 2.
    Timeline {
        /// 2.
        version: u32,
        /// The merged wakeup edges.
        edges: Vec<WakeupEdge>,
        /// The timeline.
        #[serde(default)]
        batches: Vec<Batch>,
    },
}

impl WakeupsFile {
    /// The version this code writes.
    pub const VERSION: u32 = 2;

    /// Parses a wakeups file of either version.
    ///
    /// # Errors
    /// Not a wakeups file.
    pub fn parse(bytes: &[u8]) -> serde_json::Result<WakeupsFile> {
        serde_json::from_slice(bytes)
    }

    /// Writes a file of the current version.
    ///
    /// # Errors
    /// Encoding failed.
    pub fn to_json(edges: &[WakeupEdge], batches: &[Batch]) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&serde_json::json!({
            "version": Self::VERSION,
            "edges": edges,
            "batches": batches,
        }))
    }

    /// The merged wakeup edges.
    pub fn edges(&self) -> &[WakeupEdge] {
        match self {
            Self::Edges(edges) | Self::Timeline { edges, .. } => edges,
        }
    }

    /// The timeline's batches (none in version 1).
    pub fn batches(&self) -> &[Batch] {
        match self {
            Self::Edges(_) => &[],
            Self::Timeline { batches, .. } => batches,
        }
    }
}

/// Evidence that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The profile has no `cpu` value.
    #[error("the profile has no {0:?} sample type (record it with `critpath record`)")]
    MissingValue(&'static str),
}

/// What is known about one window.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Function names.
    pub functions: Vec<String>,
    /// Threads.
    pub threads: Vec<ThreadRef>,
    /// Stacks with on-CPU and off-CPU time.
    pub stacks: Vec<Stack>,
    /// Waits and who ended them.
    pub waits: Vec<Wait>,
    /// Length of the window, s.
    pub seconds: f64,
    /// On-CPU sampling period, ns (0 when unknown): on-CPU time over it is a sample count.
    pub sample_period_ns: f64,
    /// Threads are known by (pid, name), their tids made up (evidence from store parts without
    /// thread samples and wait records, schema 3 and older).
    pub threads_by_name: bool,
    /// What each thread did and when (evidence with thread samples and wait records): waits are
    /// then charged to what their wakers did during them ([`super::Resolved`]).
    pub timeline: Option<Timeline>,
    /// Functions seen as frames of the kernel or the C or Rust runtime.
    not_program: HashSet<FunctionId>,
    /// Functions seen as kernel frames.
    kernel: HashSet<FunctionId>,
    function_index: HashMap<String, FunctionId>,
    thread_index: HashMap<(u32, u32), ThreadId>,
}

/// A stack's functions as [`Evidence::intern_stack`] interned them.
#[derive(Clone, Debug)]
struct InternedStack {
    frames: Vec<FunctionId>,
    cause: Option<Cause>,
    waiting_in: Option<FunctionId>,
}

/// A batch's stacks interned into an [`Evidence`] once per use (on-CPU, off-CPU), on first
/// use: a part's stacks recur in many rows, and functions are numbered in the order they come
/// either way.
struct BatchStacks<'b> {
    batch: &'b Batch,
    interned: [Vec<Option<InternedStack>>; 2],
}

impl<'b> BatchStacks<'b> {
    fn new(batch: &'b Batch) -> Self {
        let none = vec![None; batch.stacks.len()];
        BatchStacks {
            batch,
            interned: [none.clone(), none],
        }
    }

    /// Stack `stack` of the batch (its non-inlined frames) interned into `ev`.
    fn get(&mut self, ev: &mut Evidence, stack: u32, off_cpu: bool) -> &InternedStack {
        let b = self.batch;
        self.interned[usize::from(off_cpu)][stack as usize].get_or_insert_with(|| {
            let frames = b.stacks[stack as usize]
                .iter()
                .map(|&f| &b.frames[f as usize])
                .filter(|f| !f.inlined)
                .collect();
            ev.intern_stack(frames, off_cpu)
        })
    }
}

impl Evidence {
    /// Empty evidence for a window of `seconds`.
    pub fn new(seconds: f64) -> Evidence {
        Evidence {
            seconds,
            ..Evidence::default()
        }
    }

    /// Interns a function name.
    pub fn function(&mut self, name: &str) -> FunctionId {
        if let Some(&id) = self.function_index.get(name) {
            return id;
        }
        let id = self.functions.len() as FunctionId;
        self.functions.push(name.to_owned());
        self.function_index.insert(name.to_owned(), id);
        id
    }

    /// The id of a function, if the window has it.
    pub fn function_id(&self, name: &str) -> Option<FunctionId> {
        self.function_index.get(name).copied()
    }

    /// Interns a thread (by process and thread id; the last name seen is kept: a process
    /// names itself after it starts, or execs).
    pub fn thread(&mut self, thread: &ThreadRef) -> ThreadId {
        let key = (thread.pid, thread.tid);
        if let Some(&id) = self.thread_index.get(&key) {
            if self.threads[id as usize].comm != thread.comm {
                self.threads[id as usize].comm.clone_from(&thread.comm);
            }
            return id;
        }
        let id = self.threads.len() as ThreadId;
        self.threads.push(thread.clone());
        self.thread_index.insert(key, id);
        id
    }

    /// Whether a function belongs to the program: not the kernel's, nor the C or Rust
    /// runtime's, nor a pseudo frame (`[unknown]`, `[truncated]`).
    pub fn is_program_function(&self, f: FunctionId) -> bool {
        !self.not_program.contains(&f) && !is_runtime_name(&self.functions[f as usize])
    }

    /// Whether a function was seen as a kernel frame.
    pub fn is_kernel_function(&self, f: FunctionId) -> bool {
        self.kernel.contains(&f)
    }

    /// The innermost function of a stack (root first) that belongs to the program: not a
    /// kernel function, nor the C or Rust runtime's.
    pub fn innermost_program_function(&self, frames: &[FunctionId]) -> Option<FunctionId> {
        frames.iter().rev().copied().find(|&f| {
            !self.not_program.contains(&f) && !is_runtime_name(&self.functions[f as usize])
        })
    }

    /// Interns a stack of frames, root first, noting which are not the program's.
    fn program_frames(&mut self, frames: &[&crate::Frame]) -> Vec<FunctionId> {
        frames
            .iter()
            .map(|f| {
                let id = self.function(&f.function);
                if !is_program_frame(f) {
                    self.not_program.insert(id);
                }
                if f.kind == crate::FrameKind::Kernel {
                    self.kernel.insert(id);
                }
                id
            })
            .collect()
    }

    /// Interns a stack of function names, root first.
    pub fn frames<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> Vec<FunctionId> {
        names.into_iter().map(|n| self.function(n)).collect()
    }

    /// The on-CPU evidence of a store window: its call tree of sample counts (root, services,
    /// frames; [`crate::store::ProfileType::Cpu`]) taken every `sample_period_ns`, over
    /// `seconds`. Each service stands as one thread: the store keeps stacks per process and
    /// thread name, not per thread, and no wakeups. As for recordings, functions are those the
    /// machine runs: names only ever inlined count in their caller.
    pub fn from_tree(tree: &FlameTree, seconds: f64, sample_period_ns: f64) -> Evidence {
        let mut ev = Evidence::new(seconds);
        ev.sample_period_ns = sample_period_ns;
        let root = tree.root();
        for (i, &service) in root.children.iter().enumerate() {
            let node = &tree.nodes[service as usize];
            let thread = ev.thread(&ThreadRef {
                pid: 0,
                tid: i as u32,
                comm: tree.name(node).to_owned(),
            });
            // Depth-first over the service's frames, with the path down to each node.
            let mut todo: Vec<(NodeId, usize)> = node.children.iter().map(|&c| (c, 0)).collect();
            let mut path: Vec<FunctionId> = Vec::new();
            while let Some((id, depth)) = todo.pop() {
                let node = &tree.nodes[id as usize];
                path.truncate(depth);
                let depth = if tree.inline_only[node.name as usize] {
                    depth
                } else {
                    path.push(ev.function(tree.name(node)));
                    depth + 1
                };
                if node.self_value > 0 {
                    ev.stacks.push(Stack {
                        thread,
                        frames: path.clone(),
                        cpu_ns: node.self_value as f64 * sample_period_ns,
                        off_cpu_ns: [0.0; 6],
                        waiting_in: None,
                    });
                }
                todo.extend(node.children.iter().map(|&c| (c, depth)));
            }
        }
        ev
    }

    /// Adds a stack of a thread: on-CPU time `cpu_ns`, or, when it ends in an `[off-cpu: …]`
    /// pseudo frame and `off_ns` is known, that much off-CPU time of the frame's cause.
    fn push_stack(
        &mut self,
        thread: ThreadId,
        frames: Vec<&crate::Frame>,
        cpu_ns: f64,
        off_ns: Option<f64>,
    ) {
        let interned = self.intern_stack(frames, off_ns.is_some());
        self.push_interned(thread, &interned, cpu_ns, off_ns);
    }

    /// Adds a stack [`Evidence::intern_stack`] made, as [`Evidence::push_stack`] does.
    fn push_interned(
        &mut self,
        thread: ThreadId,
        interned: &InternedStack,
        cpu_ns: f64,
        off_ns: Option<f64>,
    ) {
        let (mut cpu, mut off_cpu_ns) = (0.0, [0.0; 6]);
        match interned.cause {
            Some(cause) => off_cpu_ns[cause as usize] = off_ns.unwrap_or(0.0),
            None => cpu = cpu_ns,
        }
        if cpu > 0.0 || off_cpu_ns.iter().any(|&v| v > 0.0) {
            self.stacks.push(Stack {
                thread,
                frames: interned.frames.clone(),
                cpu_ns: cpu,
                off_cpu_ns,
                waiting_in: interned.waiting_in,
            });
        }
    }

    /// Interns a stack's functions: with `off_cpu`, a final `[off-cpu: …]` pseudo frame is
    /// taken off and gives the wait's cause and the function waited in.
    fn intern_stack(&mut self, mut frames: Vec<&crate::Frame>, off_cpu: bool) -> InternedStack {
        let cause = match frames.last() {
            Some(f) if off_cpu && f.module.as_deref() == Some(OFF_CPU_MODULE) => {
                let cause = Cause::ALL
                    .into_iter()
                    .find(|c| c.frame().function == f.function)
                    .unwrap_or(Cause::Other);
                frames.pop();
                Some(cause)
            }
            _ => None,
        };
        let waiting_in = cause.and_then(|_| {
            let f = frames.iter().rev().find(|f| is_program_frame(f))?;
            Some(f.function.clone())
        });
        let waiting_in = waiting_in.map(|name| self.function(&name));
        InternedStack {
            frames: self.program_frames(&frames),
            cause,
            waiting_in,
        }
    }

    /// The evidence of a window of the store: its batches' thread samples and wait records
    /// (store schema 4), or, for batches without them, their on-CPU and off-CPU rows and
    /// wakeups; for the series `keep` accepts and every thread that ended one of their waits
    /// (and so on, transitively: the waits are charged to what those threads ran). With records,
    /// threads are (pid, tid) and the evidence has a [`Timeline`]; without, (pid, thread name),
    /// so a process's same-named threads are one.
    pub fn from_batches(
        batches: &[Batch],
        seconds: f64,
        keep: impl Fn(&SeriesLabels) -> bool,
    ) -> Evidence {
        let mut ev = Evidence::new(seconds);
        ev.sample_period_ns = batches
            .iter()
            .map(|b| b.period_ns)
            .find(|&p| p > 0)
            .unwrap_or(0) as f64;
        let (timed, untimed): (Vec<&Batch>, Vec<&Batch>) =
            batches.iter().partition(|b| b.has_records());
        if !timed.is_empty() {
            ev.add_timed(&timed, &keep);
        }
        if !untimed.is_empty() {
            ev.threads_by_name = timed.is_empty();
            ev.add_untimed(&untimed, &keep);
        }
        ev
    }

    /// Adds batches without thread samples and wait records (see [`Evidence::from_batches`]).
    fn add_untimed(&mut self, batches: &[&Batch], keep: &impl Fn(&SeriesLabels) -> bool) {
        let key = |s: &SeriesLabels| (s.pid, s.comm.clone());
        // The selected threads, then those that woke them, until none is added.
        let mut included: HashSet<(u32, String)> = batches
            .iter()
            .flat_map(|b| b.series.iter().filter(|s| keep(s)).map(key))
            .collect();
        loop {
            let before = included.len();
            for b in batches {
                for w in b.wakeups.iter().filter(|w| !w.in_interrupt) {
                    if included.contains(&key(&b.series[w.wakee as usize])) {
                        included.insert(key(&b.series[w.waker as usize]));
                    }
                }
            }
            if included.len() == before {
                break;
            }
        }
        let ev = self;
        // Thread ids: one per (pid, name), numbered in order of appearance (above any thread
        // id a timed batch brought: a made-up id never meets a real one of the same process).
        let mut tids: HashMap<(u32, String), u32> = HashMap::new();
        let mut thread = |ev: &mut Evidence, s: &SeriesLabels| {
            let next = u32::MAX - tids.len() as u32;
            let tid = *tids.entry(key(s)).or_insert(next);
            ev.thread(&ThreadRef {
                pid: s.pid,
                tid,
                comm: s.comm.clone(),
            })
        };
        for b in batches {
            // Per series of the batch, its thread when included, looked up once (on first use,
            // so that threads are numbered in the order their rows and waits come).
            let mut threads: Vec<Option<Option<ThreadId>>> = vec![None; b.series.len()];
            let mut series_thread = |ev: &mut Evidence, i: u32| -> Option<ThreadId> {
                *threads[i as usize].get_or_insert_with(|| {
                    let s = &b.series[i as usize];
                    included.contains(&key(s)).then(|| thread(ev, s))
                })
            };
            let mut stacks = BatchStacks::new(b);
            for row in &b.rows {
                let Some(t) = series_thread(ev, row.series) else {
                    continue;
                };
                let value = row.value as f64;
                match row.kind {
                    SampleKind::Cpu => {
                        let s = stacks.get(ev, row.stack, false);
                        ev.push_interned(t, s, value * b.period_ns as f64, None);
                    }
                    SampleKind::OffCpu => {
                        let s = stacks.get(ev, row.stack, true);
                        ev.push_interned(t, s, 0.0, Some(value));
                    }
                }
            }
            for w in &b.wakeups {
                let Some(wakee) = series_thread(ev, w.wakee) else {
                    continue;
                };
                let wakee_frames = stacks.get(ev, w.wakee_stack, false).frames.clone();
                let (waker, waker_frames) = if w.in_interrupt {
                    (Actor::Kernel(w.cause), Vec::new())
                } else {
                    // A waker of an included thread is included.
                    let waker = series_thread(ev, w.waker).expect("an included waker");
                    (
                        Actor::Thread(waker),
                        stacks.get(ev, w.waker_stack, false).frames.clone(),
                    )
                };
                ev.waits.push(Wait {
                    wakee,
                    wakee_frames,
                    waker,
                    waker_frames,
                    cause: w.cause,
                    ns: w.blocked_ns as f64,
                    count: w.weight,
                });
            }
        }
    }

    /// Adds batches with thread samples and wait records (see [`Evidence::from_batches`]):
    /// threads by (pid, tid), at most [`MAX_THREADS`] (past it, a process's further threads
    /// share one per name), and the [`Timeline`].
    fn add_timed(&mut self, batches: &[&Batch], keep: &impl Fn(&SeriesLabels) -> bool) {
        // The selected threads, then those that woke them, until none is added.
        let selected: HashSet<(u32, u32)> = batches
            .iter()
            .flat_map(|b| {
                let samples = b
                    .thread_samples
                    .iter()
                    .filter(|t| keep(&b.series[t.series as usize]))
                    .map(|t| (b.series[t.series as usize].pid, t.tid));
                let waits = b
                    .waits
                    .iter()
                    .filter(|w| keep(&b.series[w.series as usize]))
                    .map(|w| (b.series[w.series as usize].pid, w.tid));
                samples.chain(waits)
            })
            .collect();
        let mut included = selected.clone();
        loop {
            let before = included.len();
            for b in batches {
                for w in b.waits.iter().filter(|w| w.waker == WakerKind::Thread) {
                    if included.contains(&(b.series[w.series as usize].pid, w.tid)) {
                        included.insert((b.series[w.waker_series as usize].pid, w.waker_tid));
                    }
                }
            }
            if included.len() == before {
                break;
            }
        }
        let mut timeline = Timeline::new(self.sample_period_ns);
        // Per (thread, stack, on-CPU or cause): the index of its entry in `self.stacks`.
        let mut sums: HashMap<(ThreadId, StackRef, u8), usize> = HashMap::new();
        // Per (wakee, its stack, waker, its stack, cause): the index of its entry in `waits`.
        let mut edges: HashMap<(ThreadId, StackRef, Actor, StackRef, Cause), usize> =
            HashMap::new();
        for b in batches {
            let mut threads: HashMap<(u32, u32), Option<ThreadId>> = HashMap::new();
            let mut thread_of = |ev: &mut Evidence, series: u32, tid: u32| -> Option<ThreadId> {
                let s = &b.series[series as usize];
                *threads.entry((series, tid)).or_insert_with(|| {
                    included
                        .contains(&(s.pid, tid))
                        .then(|| ev.capped_thread(s, tid))
                })
            };
            // Per stack of the batch: its functions in the timeline, and the program function
            // a wait in it blocked in.
            let mut refs: Vec<Option<(StackRef, Option<FunctionId>)>> = vec![None; b.stacks.len()];
            let mut stack_ref = |ev: &mut Evidence, tl: &mut Timeline, i: u32| {
                *refs[i as usize].get_or_insert_with(|| {
                    let frames: Vec<&crate::Frame> = b.stacks[i as usize]
                        .iter()
                        .map(|&f| &b.frames[f as usize])
                        .filter(|f| !f.inlined)
                        .collect();
                    let ids = ev.program_frames(&frames);
                    let waiting_in = frames
                        .iter()
                        .rev()
                        .find(|f| is_program_frame(f))
                        .map(|f| f.function.clone());
                    let waiting_in = waiting_in.map(|name| ev.function(&name));
                    (tl.stack(&ids), waiting_in)
                })
            };
            for t in &b.thread_samples {
                let Some(thread) = thread_of(self, t.series, t.tid) else {
                    continue;
                };
                let (stack, _) = stack_ref(self, &mut timeline, t.stack);
                timeline.ensure_thread(thread);
                if t.background {
                    timeline.background[thread as usize] = true;
                }
                timeline.samples[thread as usize].push(TimedSample {
                    time_ns: t.time_ns,
                    stack,
                });
                let i = self.stack_sum(&mut sums, &timeline, thread, stack, None, None);
                self.stacks[i].cpu_ns += b.period_ns as f64;
            }
            for w in &b.waits {
                let Some(thread) = thread_of(self, w.series, w.tid) else {
                    continue;
                };
                let (stack, waiting_in) = stack_ref(self, &mut timeline, w.stack);
                let (waker_stack, _) = stack_ref(self, &mut timeline, w.waker_stack);
                let waker_series = &b.series[w.waker_series as usize];
                let waker = match w.waker {
                    WakerKind::None => TimedWaker::None,
                    // A timed sleep ends when its timer fires, whichever thread's context the
                    // expiry ran in (one whose interrupt frames were not captured looks like a
                    // thread that woke the sleeper): the timer, not that thread, ended it.
                    WakerKind::Thread if w.cause == Cause::Sleep => TimedWaker::Kernel {
                        reason: timeline.reason("timer"),
                        stack: waker_stack,
                    },
                    WakerKind::Thread => match thread_of(self, w.waker_series, w.waker_tid) {
                        Some(waker) => TimedWaker::Thread {
                            thread: waker,
                            stack: waker_stack,
                        },
                        None => TimedWaker::None,
                    },
                    WakerKind::Kernel => TimedWaker::Kernel {
                        reason: timeline.reason(&if waker_series.pid == 0 {
                            "idle".to_owned()
                        } else {
                            kernel_thread_reason(&waker_series.comm)
                        }),
                        stack: waker_stack,
                    },
                    WakerKind::Interrupt => {
                        let stack = &timeline.stacks[waker_stack as usize];
                        let reason = interrupt_reason(
                            stack.iter().map(|&f| self.functions[f as usize].as_str()),
                        );
                        TimedWaker::Kernel {
                            reason: timeline.reason(reason),
                            stack: waker_stack,
                        }
                    }
                };
                timeline.ensure_thread(thread);
                timeline.waits[thread as usize].push(TimedWait {
                    start_ns: w.start_ns,
                    blocked_ns: w.blocked_ns,
                    runq_ns: w.runq_ns,
                    stack,
                    cause: w.cause,
                    weight: w.weight,
                    waker,
                });
                let (blocked, runq) = (w.blocked_ns as f64 * w.weight, w.runq_ns as f64 * w.weight);
                let i = self.stack_sum(
                    &mut sums,
                    &timeline,
                    thread,
                    stack,
                    Some(w.cause),
                    waiting_in,
                );
                self.stacks[i].off_cpu_ns[w.cause as usize] += blocked;
                if runq > 0.0 {
                    let i = self.stack_sum(
                        &mut sums,
                        &timeline,
                        thread,
                        stack,
                        Some(Cause::RunQueue),
                        waiting_in,
                    );
                    self.stacks[i].off_cpu_ns[Cause::RunQueue as usize] += runq;
                }
                let (actor, waker_stack) = match waker {
                    TimedWaker::None => continue,
                    TimedWaker::Thread { thread, stack } => (Actor::Thread(thread), stack),
                    TimedWaker::Kernel { .. } => (Actor::Kernel(w.cause), StackRef::MAX),
                };
                let key = (thread, stack, actor, waker_stack, w.cause);
                let i = *edges.entry(key).or_insert_with(|| {
                    self.waits.push(Wait {
                        wakee: thread,
                        wakee_frames: timeline.stacks[stack as usize].clone(),
                        waker: actor,
                        waker_frames: match actor {
                            Actor::Thread(_) => timeline.stacks[waker_stack as usize].clone(),
                            Actor::Kernel(_) => Vec::new(),
                        },
                        cause: w.cause,
                        ns: 0.0,
                        count: 0.0,
                    });
                    self.waits.len() - 1
                });
                self.waits[i].ns += blocked;
                self.waits[i].count += w.weight;
            }
            // Requests of the selected threads (those of a waker are not this window's).
            for r in &b.requests {
                let pid = b.series[r.series as usize].pid;
                if !selected.contains(&(pid, r.tid)) {
                    continue;
                }
                let Some(thread) = thread_of(self, r.series, r.tid) else {
                    continue;
                };
                timeline.ensure_thread(thread);
                timeline.requests[thread as usize]
                    .push((r.start_ns, r.start_ns.saturating_add(r.duration_ns)));
            }
        }
        for &(pid, tid) in &selected {
            if let Some(&t) = self.thread_index.get(&(pid, tid)) {
                timeline.ensure_thread(t);
                timeline.selected[t as usize] = true;
            }
        }
        if let Some(last) = self.threads.len().checked_sub(1) {
            timeline.ensure_thread(last as ThreadId);
        }
        timeline.sort();
        self.timeline = Some(timeline);
    }

    /// The thread (pid, `tid`) of series `s`, added when new; past [`MAX_THREADS`], a
    /// process's further threads share one per name.
    fn capped_thread(&mut self, s: &SeriesLabels, tid: u32) -> ThreadId {
        if self.threads.len() >= MAX_THREADS && !self.thread_index.contains_key(&(s.pid, tid)) {
            let shared = u32::MAX - (name_hash(&s.comm) as u32 & 0x7fff_ffff);
            return self.thread(&ThreadRef {
                pid: s.pid,
                tid: shared,
                comm: s.comm.clone(),
            });
        }
        self.thread(&ThreadRef {
            pid: s.pid,
            tid,
            comm: s.comm.clone(),
        })
    }

    /// The entry of `self.stacks` summing thread `t`'s time in `stack` on CPU (`cause` `None`)
    /// or off CPU for `cause`, added when new.
    fn stack_sum(
        &mut self,
        sums: &mut HashMap<(ThreadId, StackRef, u8), usize>,
        timeline: &Timeline,
        t: ThreadId,
        stack: StackRef,
        cause: Option<Cause>,
        waiting_in: Option<FunctionId>,
    ) -> usize {
        let kind = cause.map_or(u8::MAX, |c| c as u8);
        *sums.entry((t, stack, kind)).or_insert_with(|| {
            self.stacks.push(Stack {
                thread: t,
                frames: timeline.stacks[stack as usize].clone(),
                cpu_ns: 0.0,
                off_cpu_ns: [0.0; 6],
                waiting_in: cause.and(waiting_in),
            });
            self.stacks.len() - 1
        })
    }

    /// The evidence of a recording and its wakeups file: from the file's timeline, when it has
    /// one, for the processes `keep` selects and those that woke them ([`Evidence::from_batches`]
    /// over the recording's length); else from the profile and the edges
    /// ([`Evidence::from_recording`]).
    ///
    /// # Errors
    /// When the profile lacks the values.
    pub fn from_recording_file(
        profile: &Profile,
        wakeups: &WakeupsFile,
        keep: impl Fn(&SeriesLabels) -> bool,
    ) -> Result<Evidence, EvidenceError> {
        if wakeups.batches().iter().any(Batch::has_records) {
            let seconds = profile.duration_ns as f64 / 1e9;
            return Ok(Evidence::from_batches(wakeups.batches(), seconds, keep));
        }
        Evidence::from_recording(profile, wakeups.edges())
    }

    /// The evidence of a recording: a profile with `cpu` values and, recorded with `critpath
    /// record --off-cpu`, `off_cpu` values, and its wakeup edges (none without off-CPU
    /// recording: then only on-CPU evidence is known). The stacks' functions are the profile's
    /// non-inlined frames; wakeup edges carry names only, so their stacks keep every frame.
    ///
    /// # Errors
    ///
    /// When the profile lacks the values.
    pub fn from_recording(
        profile: &Profile,
        edges: &[WakeupEdge],
    ) -> Result<Evidence, EvidenceError> {
        let cpu = profile
            .sample_type_index("cpu")
            .ok_or(EvidenceError::MissingValue("cpu"))?;
        let off = profile.sample_type_index("off_cpu");
        let mut ev = Evidence::new(profile.duration_ns as f64 / 1e9);
        ev.sample_period_ns = profile.period as f64;
        for sample in profile.samples() {
            let thread = ev.thread(&ThreadRef {
                pid: sample.labels.pid,
                tid: sample.labels.tid,
                comm: sample.labels.comm.clone(),
            });
            // Functions as the machine runs them: inlined frames belong to the function they
            // were inlined into.
            let frames: Vec<&crate::Frame> = profile
                .stack(sample.stack)
                .iter()
                .map(|&f| profile.frame(f))
                .filter(|f| !f.inlined)
                .collect();
            let off_ns = off.map(|i| sample.values[i] as f64);
            ev.push_stack(thread, frames, sample.values[cpu] as f64, off_ns);
        }
        for e in edges {
            let wakee = ev.thread(&e.wakee);
            let waker = if e.waker_in_interrupt {
                Actor::Kernel(e.cause)
            } else {
                Actor::Thread(ev.thread(&e.waker))
            };
            let wakee_frames = ev.frames(e.wakee_stack.iter().map(String::as_str));
            let waker_frames = if e.waker_in_interrupt {
                Vec::new()
            } else {
                ev.frames(e.waker_stack.iter().map(String::as_str))
            };
            // Edges carry names only, and how many innermost frames are the kernel's.
            for (frames, kernel) in [
                (&wakee_frames, e.wakee_kernel_frames),
                (&waker_frames, e.waker_kernel_frames),
            ] {
                let kernel_part = frames.len().saturating_sub(kernel as usize);
                ev.not_program.extend(&frames[kernel_part..]);
                ev.kernel.extend(&frames[kernel_part..]);
            }
            ev.waits.push(Wait {
                wakee,
                wakee_frames,
                waker,
                waker_frames,
                cause: e.cause,
                ns: e.blocked_ns as f64 * e.weight,
                count: e.weight,
            });
        }
        Ok(ev)
    }
}
