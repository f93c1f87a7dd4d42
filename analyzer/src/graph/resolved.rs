//! The time-resolved critical path: each wait charged to what its waker did *during* it.
//!
//! The aggregated wait-for graph ([`super::WaitFor`]) charges a wait for thread B to B's
//! average activity over the window, sleeps between its own jobs included. With a
//! [`Timeline`] (the store's thread samples and wait records, or a recording's) the charge is
//! exact in time, as in wPerf: a request thread's wait for B over `[s, e]` is split into
//!
//! - the parts of `[s, e]` where B itself waited, each charged in turn — to the program
//!   function B blocked in when the kernel ended B's wait (a device, a timer, a journal
//!   commit), or, cascading, to what B's own waker did during that part;
//! - the rest, where B ran (or waited for a CPU): charged to B's functions by the on-CPU
//!   samples B took inside such intervals (pooled over all the waits for B, since at 19 Hz a
//!   single wait holds few samples), else to what B ran under the function its stack showed
//!   when it ended the wait (see [`Analyzer::distribution`]).
//!
//! **Lock hand-offs.** A wait to acquire a mutex ends when the holder releases it, but a
//! convoy hands the lock on: A waits while C holds it, C wakes B (queued first), B takes it,
//! releases it and wakes A. What B did in `[s, e]` before it queued for the lock (its own
//! request's work, a sleep between requests) is not what A waited for; A waited for the lock
//! all along. So when a mutex wait's waker was itself last blocked on a mutex inside the
//! interval, that wait of B stands for the whole of `[s, e]` up to B's wake-up and is cascaded
//! as one (to C), and only B's run after it (its hold of the lock) is B's.
//!
//! Samples and wait records may be drawn with weights (the capture budget, short waits kept
//! with probability proportional to their length, the store's record budget); every charge is
//! weighted so that the sums stay unbiased. "The rest" of `[s, e]`, B's run, is measured two
//! ways, both unbiased: as `[s, e]` less B's kept waits, exact when none of B's waits was drawn
//! but with a spread that grows with B's drawn *waiting* time (a load generator that sleeps
//! between arrivals, its sleeps drawn at one in four, leaves seconds of noise around zero, and
//! a sum kept only when positive charged it to the generator's loop); and as B's on-CPU samples
//! inside `[s, e]` times the sampling period, never negative, with a spread that grows with B's
//! *running* time over the sampling period (at 19 Hz a lock holder's few dozen samples, and a
//! periodic timer beating against a periodic holder). Each thread's two sums, over all the
//! waits for it, are blended by the inverse of their estimated variances (the
//! Horvitz–Thompson variance of its drawn waits; the samples' count times the period squared),
//! so the complement is used as it is where nothing was drawn, the samples where the waits
//! were drawn heavily, and a mix between. The requests' time is the sum of what was charged,
//! so that shares are of one estimate, not of the interval lengths less noisy idle parts.
//!
//! **Idle time.** A thread blocked at its outermost loop (its *loop level*: no program function
//! below the frames common to all of its stacks, but wrappers and sleep helpers; and none the
//! thread does not also go through where it wakes others, so that a critical section that is
//! most of a lock holder's time is not taken for its loop) waiting for new work — a client, a
//! timer, a poll, a condition or a pipe — is idle, not slow: such waits are counted apart and
//! charged to nothing. A mutex wait or disk I/O is never idle. A loop-level wait for another
//! thread of the same process, or of a process that waits for this one at *its* loop level (a
//! server this one calls, as a proxy calls its upstream), is charged to what that thread did
//! meanwhile, which is idle in turn when it was itself waiting for new work (a worker waiting
//! for its next task from an idle dispatcher). A process whose threads wait for this one
//! inside the functions that made their requests is a client — waits for it are idle — unless
//! its blocked time during our waits for it lies mostly away from its loop level: an upstream
//! that reads each request through a function of its own, then sleeps or blocks inside the
//! work of answering it, is a server whatever its read path looks like.
//!
//! **Wrappers.** A program function that blocks on behalf of several callers (an event-set
//! or latch wait, a condition-variable helper) does not say why a thread waited; its caller
//! does. The function named for a blocked stack is the innermost program function, stepping
//! out of wrappers.
//!
//! **Request threads.** Threads of the selection that wait for others, or receive work, and
//! are not mostly waited on: a lock holder or a device thread whose time others wait for is
//! reached through their waits, not counted as requests itself. Threads that no request
//! waits for (a housekeeping thread burning CPU) are charged nothing.
//!
//! **Probed requests.** Where the evidence has requests timed by a latency probe
//! (`critpath record --probe BIN:FUNCTION`: each call's start and end), they replace the
//! guesses above: the selected threads that made probed calls are the request threads, and
//! only their time inside those calls is request time. Everything else of theirs is idle,
//! whatever it looks like — the CPU a worker spends between requests compacting a cache, a
//! sleep between requests called from inside the loop's own work — and a wait that began
//! before a request and ended inside it counts from the request's start.

use std::collections::HashMap;

use serde::Serialize;

use super::evidence::{Evidence, FunctionId, ThreadId};
use super::timeline::{StackRef, TimedSample, TimedWait, TimedWaker, Timeline};
use crate::offcpu::Cause;

/// The waits a thread must have ended (weighted) before where it ended them bounds its loop
/// function: fewer, from start-up or an exit path, say nothing of its loop.
const MIN_LOOP_WAKES: f64 = 16.0;

/// A function on CPU for more than this share of the time it sleeps (and in more than one
/// sample: one says little at 19 Hz) is no sleep helper.
const SLEEP_HELPER_MAX_CPU: f64 = 0.2;

/// Deepest cascade of waits followed (the rest counts as a knot's).
const MAX_DEPTH: usize = 12;
/// A wait between threads lighter than this share of either end's time does not connect them
/// into one request path.
const MIN_EDGE_SHARE: f64 = 0.05;

/// Kernel functions of a waker's stack that show it woke the thread by sending it a signal.
const SIGNAL_FUNCTIONS: &[&str] = &[
    "signal_wake_up",
    "complete_signal",
    "__send_signal",
    // A process exiting (`exit_group`) wakes its other threads to end them; `signal_wake_up`
    // is inlined there.
    "zap_other_threads",
];

/// Kernel functions of a blocked stack that show a wait for data from outside: a socket, a
/// pipe, a terminal, a connection to accept.
const RECEIVE_FUNCTIONS: &[&str] = &[
    "sk_wait_data",
    "inet_csk_accept",
    "unix_stream_read",
    "unix_stream_data_wait",
    "unix_dgram_recvmsg",
    "__skb_wait_for_more_packets",
    "__skb_recv",
    "pipe_read",
    "anon_pipe_read",
    "n_tty_read",
    "tcp_recvmsg",
    "udp_recvmsg",
    "eventfd_read",
    "signalfd",
    "do_sigtimedwait",
    "sys_pause",
    "__x64_sys_pause",
];

/// User functions of a blocked stack that show a wait for a condition (a signal to go on, a
/// thread to finish), not for a lock to be released.
const CONDITION_FUNCTIONS: &[&str] = &[
    "pthread_join",
    "::join",
    "cond_wait",
    "cond_timedwait",
    "cond_clockwait",
    "Condvar",
    "sem_wait",
    "sem_timedwait",
    "sem_clockwait",
    "::park",
    "park_timeout",
];

/// How a request thread's time came to a function.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Route {
    /// Request threads ran it.
    OnCpu,
    /// Request threads blocked in it until the kernel ended the wait.
    Blocked {
        /// What ended it: `jbd2`, `kworker`, `disk`, `timer`, `interrupt`, ... (empty when no
        /// wakeup was seen).
        reason: String,
        /// Why they waited.
        cause: Cause,
    },
    /// Request threads waited for a thread while it ran the function.
    WaitedRunning {
        /// The thread waited for.
        thread: ThreadId,
        /// Why the request threads waited (lock, I/O, ...).
        cause: Cause,
    },
    /// Request threads waited for a thread while it was blocked in the function on the kernel
    /// (a lock holder sleeping, a device thread's service).
    WaitedBlocked {
        /// The thread waited for.
        thread: ThreadId,
        /// Why the request threads waited.
        cause: Cause,
        /// What ended the thread's own wait.
        reason: String,
    },
}

impl Route {
    /// The route's kind, as serialized (`on_cpu`, `blocked`, `waited_running`,
    /// `waited_blocked`).
    pub fn kind(&self) -> &'static str {
        match self {
            Route::OnCpu => "on_cpu",
            Route::Blocked { .. } => "blocked",
            Route::WaitedRunning { .. } => "waited_running",
            Route::WaitedBlocked { .. } => "waited_blocked",
        }
    }
}

/// One route of a function's charged time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Why {
    /// How the time came.
    pub route: Route,
    /// Time charged, ns.
    pub ns: f64,
    /// The request threads' waits it came through (weighted; 0 for on-CPU time).
    pub waits: f64,
}

/// The time-resolved analysis of a window (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    /// The request threads.
    pub roots: Vec<ThreadId>,
    /// Their time in the window, idle time left out, ns: the sum of what was charged (to
    /// functions, the kernel, knots), so that with drawn waits the shares are of one sum.
    pub request_ns: f64,
    /// Their idle time (waits for new work), ns.
    pub idle_ns: f64,
    /// Time charged to each function ([`FunctionId`] order), ns.
    pub function_ns: Vec<f64>,
    /// Per request thread (in [`Resolved::roots`] order): time charged to each function, ns.
    pub root_function_ns: Vec<HashMap<FunctionId, f64>>,
    /// Time charged to the kernel (no program function to name), by cause, ns.
    pub kernel_ns: [f64; 6],
    /// Time in cycles of waits or past the cascade depth, ns.
    pub knot_ns: f64,
    /// Per function: the routes its time came by, heaviest first.
    pub routes: HashMap<FunctionId, Vec<Why>>,
    /// Per thread: the function each of its waits is named by (the innermost program function,
    /// stepping out of wrappers), in the timeline's wait order.
    pub named_waits: Vec<Vec<Option<FunctionId>>>,
    /// Per thread: whether each of its waits is idle.
    pub idle_waits: Vec<Vec<bool>>,
}

impl Resolved {
    /// The analysis of `evidence`'s timeline; `None` without one.
    pub fn new(evidence: &Evidence) -> Option<Resolved> {
        let tl = evidence.timeline.as_ref()?;
        let mut a = Analyzer::new(evidence, tl);
        a.classify();
        let roots = a.roots();
        Some(a.charge_all(roots))
    }

    /// A function's share of the request threads' time.
    pub fn share(&self, f: FunctionId) -> f64 {
        self.share_of(f, self.request_ns)
    }

    /// A function's share of the request threads' time outside the run queue: of the time
    /// that the program's own work and waits made. Waiting for a CPU grows and shrinks with
    /// whatever else the machine runs, so two windows' shares of the whole move together when
    /// only the neighbours changed; these do not.
    pub fn own_share(&self, f: FunctionId) -> f64 {
        self.share_of(
            f,
            self.request_ns - self.kernel_ns[Cause::RunQueue as usize],
        )
    }

    fn share_of(&self, f: FunctionId, total: f64) -> f64 {
        if total > 0.0 {
            self.function_ns.get(f as usize).copied().unwrap_or(0.0) / total
        } else {
            0.0
        }
    }
}

/// Wait-for totals of the non-idle and idle waits between two threads.
#[derive(Clone, Copy, Default)]
struct Edge {
    busy: f64,
    idle: f64,
}

struct Analyzer<'a> {
    ev: &'a Evidence,
    tl: &'a Timeline,
    /// Per stack: the function a wait in it is named by.
    named: Vec<Option<FunctionId>>,
    /// Per stack: the function on-CPU time in it is charged to.
    on_cpu: Vec<FunctionId>,
    /// Per stack: whether it shows a condition wait (a futex wait that is no mutex's).
    condition: Vec<bool>,
    /// Per stack: its program frames, root first.
    program: Vec<Vec<FunctionId>>,
    /// Per thread: the program frames that nine tenths of its time (in untruncated stacks) goes
    /// through, grown one frame at a time, wrappers and sleep helpers at the end left out: the last one
    /// is its loop function. A few stacks from elsewhere (a thread's start-up, an exit path, a
    /// stack walk that stopped early) do not erase the loop.
    loop_prefix: Vec<Vec<FunctionId>>,
    /// Functions that wrap waits for several callers.
    wrappers: std::collections::HashSet<FunctionId>,
    /// Functions that only ever sleep (see [`Analyzer::new`]): stepped out of to find a wait's
    /// loop level, not to name it.
    sleep_helpers: std::collections::HashSet<FunctionId>,
    idle: Vec<Vec<bool>>,
    out: Resolved,
    /// Per thread: time waited for it while it ran, measured both ways (see the module docs),
    /// to share out by its samples.
    running: Vec<Running>,
    /// Per thread: its samples inside those intervals, by the function charged.
    inside: Vec<HashMap<FunctionId, f64>>,
    /// Per thread: how many samples were found inside those intervals (each time found).
    inside_count: Vec<f64>,
    /// Per thread: the function its stack showed when it ended those waits, weighted by time.
    ended_in: Vec<HashMap<FunctionId, f64>>,
}

/// How many samples' worth of a thread's whole-window profile is added to the few samples
/// taken inside the intervals waited for it, when those are shared out (see
/// [`Analyzer::distribution`]).
const PRIOR_SAMPLES: f64 = 2.0;

/// How one estimate of a thread's run inside the intervals waited for it is kept.
const BY_SAMPLES: usize = 0;
/// The other: the intervals less the thread's kept waits.
const BY_COMPLEMENT: usize = 1;

/// A thread's run inside the intervals that requests waited for it, as two estimates (indexed
/// by [`BY_SAMPLES`] and [`BY_COMPLEMENT`]) and their variances, blended once all are in.
#[derive(Clone, Default)]
struct Running {
    /// Time, by the request wait's cause.
    by_cause: [[f64; 6]; 2],
    /// Time, by the root whose waits reached the thread.
    by_root: [HashMap<usize, f64>; 2],
    /// The request waits (weighted) that reached it while it ran, by their cause.
    waits: [[f64; 6]; 2],
    /// Estimated variance of each sum, ns².
    variance: [f64; 2],
    /// The sampling period, ns, once a sample estimate was added.
    period_ns: f64,
}

impl Running {
    /// The weight of the complement in the blend: 1 when none of the thread's waits in the
    /// intervals was drawn, towards 0 as their variance outgrows the samples'. The samples'
    /// variance has one sample's worth added, so that a thread seen in no sample is not taken
    /// as measured exactly.
    fn complement_weight(&self) -> f64 {
        let (s, c) = (
            self.variance[BY_SAMPLES] + self.period_ns * self.period_ns,
            self.variance[BY_COMPLEMENT],
        );
        if c <= 0.0 { 1.0 } else { s / (s + c) }
    }

    fn blend(&self, a: f64, b: f64) -> f64 {
        let w = self.complement_weight();
        (1.0 - w) * a + w * b
    }
}

fn overlap(a: (i64, i64), b: (i64, i64)) -> (i64, i64) {
    (a.0.max(b.0), a.1.min(b.1))
}

impl<'a> Analyzer<'a> {
    fn new(ev: &'a Evidence, tl: &'a Timeline) -> Self {
        let truncated = ev.function_id(crate::TRUNCATED);
        let program: Vec<Vec<FunctionId>> = tl
            .stacks
            .iter()
            .map(|s| {
                s.iter()
                    .copied()
                    .filter(|&f| ev.is_program_function(f))
                    .collect()
            })
            .collect();
        // Wrappers: functions that are the innermost program frame of blocked stacks under
        // two or more different callers.
        let mut callers: HashMap<FunctionId, Vec<Option<FunctionId>>> = HashMap::new();
        for waits in &tl.waits {
            for w in waits {
                let p = &program[w.stack as usize];
                if let Some((&inner, rest)) = p.split_last() {
                    let caller = rest.last().copied();
                    let c = callers.entry(inner).or_default();
                    if !c.contains(&caller) {
                        c.push(caller);
                    }
                }
            }
        }
        let wrappers = callers
            .iter()
            .filter(|(_, c)| c.len() >= 2)
            .map(|(&f, _)| f)
            .collect::<std::collections::HashSet<_>>();
        // Sleep helpers: program functions that only ever sleep — every blocked stack they are
        // the innermost program frame of is a sleep, they call no program function, and no
        // thread in them ever woke another (a sleep taken holding a lock others wait for is
        // not a helper's). Like a wrapper it names no reason for the sleep: its caller does —
        // the loop (think time) or a step that another thread waited for (a slow backend's).
        let mut sleeps_only: HashMap<FunctionId, bool> = HashMap::new();
        // Per function as the innermost program frame: (on-CPU ns, asleep ns).
        let mut self_ns: HashMap<FunctionId, (f64, f64)> = HashMap::new();
        for waits in &tl.waits {
            for w in waits {
                // A preemption says nothing of what a function blocks on (a busy host
                // preempts a thread anywhere, a sleep helper's few instructions included).
                if w.cause == Cause::RunQueue {
                    continue;
                }
                if let Some(&inner) = program[w.stack as usize].last() {
                    let sleep = w.cause == Cause::Sleep;
                    *sleeps_only.entry(inner).or_insert(true) &= sleep;
                    if sleep {
                        self_ns.entry(inner).or_default().1 += w.blocked_ns as f64 * w.weight;
                    }
                }
            }
        }
        let mut not_helper: std::collections::HashSet<FunctionId> =
            std::collections::HashSet::new();
        for p in &program {
            if let Some((_, outer)) = p.split_last() {
                not_helper.extend(outer.iter().copied());
            }
        }
        for waits in &tl.waits {
            for w in waits {
                if let TimedWaker::Thread { stack, .. } = w.waker {
                    not_helper.extend(program[stack as usize].iter().copied());
                }
            }
        }
        // Nor does a helper compute: a function that works on CPU, then sleeps (a critical
        // section whose work was inlined into it, then its I/O under the lock) is a step of
        // its own, whatever it calls.
        for s in tl.samples.iter().flatten() {
            if let Some(&inner) = program[s.stack as usize].last() {
                self_ns.entry(inner).or_default().0 += tl.period_ns;
            }
        }
        let computes = |f: &FunctionId| {
            self_ns.get(f).is_some_and(|&(cpu, slept)| {
                cpu > SLEEP_HELPER_MAX_CPU * slept && cpu > 1.5 * tl.period_ns
            })
        };
        let sleep_helpers: std::collections::HashSet<FunctionId> = sleeps_only
            .into_iter()
            .filter(|&(f, only)| only && !not_helper.contains(&f) && !computes(&f))
            .map(|(f, _)| f)
            .collect();
        // A sleep helper names no reason either: the sleep is its caller's (a slow backend's
        // step, a loop's think time).
        let named = program
            .iter()
            .map(|p| {
                let mut i = p.len();
                while i > 1 && (wrappers.contains(&p[i - 1]) || sleep_helpers.contains(&p[i - 1])) {
                    i -= 1;
                }
                i.checked_sub(1).map(|i| p[i])
            })
            .collect();
        let on_cpu = tl
            .stacks
            .iter()
            .zip(&program)
            .map(|(s, p)| p.last().or(s.last()).copied().unwrap_or(FunctionId::MAX))
            .collect();
        let n = tl.samples.len();
        // Per thread: the program stacks it ended others' waits from, with their weights.
        let mut wakes: Vec<Vec<(&Vec<FunctionId>, f64)>> = vec![Vec::new(); n];
        for w in tl.waits.iter().flatten() {
            if let TimedWaker::Thread { thread, stack } = w.waker
                && let Some(list) = wakes.get_mut(thread as usize)
                && !program[stack as usize].is_empty()
            {
                list.push((&program[stack as usize], w.weight));
            }
        }
        let loop_prefix: Vec<Vec<FunctionId>> = (0..n)
            .map(|t| {
                // Each stack with the time the thread spent in it: on CPU, or blocked.
                let stacks: Vec<(&Vec<FunctionId>, f64)> = tl.samples[t]
                    .iter()
                    .map(|s| (s.stack, tl.period_ns))
                    .chain(
                        tl.waits[t]
                            .iter()
                            .map(|w| (w.stack, w.blocked_ns as f64 * w.weight)),
                    )
                    .filter(|&(s, _)| {
                        truncated.is_none_or(|tr| tl.stacks[s as usize].first() != Some(&tr))
                    })
                    .map(|(s, ns)| (&program[s as usize], ns))
                    .collect();
                // Grown one frame at a time while nine tenths of the time in the stacks that
                // share the prefix so far goes on through the same function: a few stacks from
                // elsewhere (start-up, an exit path, a walk that stopped early) do not erase the
                // loop, and waits inside requests do not outweigh the time between them. The
                // loop also holds what the thread does for others: where it ended enough waits,
                // nine tenths of those must go on through the function too, so a section that
                // is most of its time but is left to wake them (a lock held through a long
                // step, released by its caller) is not taken for the loop.
                let mut prefix: Vec<FunctionId> = Vec::new();
                loop {
                    let depth = prefix.len();
                    let through = |list: &[(&Vec<FunctionId>, f64)]| {
                        let mut sharing = 0.0;
                        let mut next: HashMap<FunctionId, f64> = HashMap::new();
                        for (p, ns) in list {
                            if p.len() >= depth && p[..depth] == prefix[..] {
                                sharing += ns;
                                if let Some(&f) = p.get(depth) {
                                    *next.entry(f).or_default() += ns;
                                }
                            }
                        }
                        (sharing, next)
                    };
                    let (sharing, next) = through(&stacks);
                    let Some((f, ns)) = next
                        .into_iter()
                        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                    else {
                        break;
                    };
                    if ns <= 0.0 || ns < 0.9 * sharing {
                        break;
                    }
                    let (woke, next) = through(&wakes[t]);
                    if woke >= MIN_LOOP_WAKES && next.get(&f).copied().unwrap_or(0.0) < 0.9 * woke {
                        break;
                    }
                    prefix.push(f);
                }
                while prefix
                    .last()
                    .is_some_and(|f| wrappers.contains(f) || sleep_helpers.contains(f))
                {
                    prefix.pop();
                }
                prefix
            })
            .collect();
        let condition = tl
            .stacks
            .iter()
            .map(|st| {
                st.iter().any(|&f| {
                    let name = &ev.functions[f as usize];
                    CONDITION_FUNCTIONS.iter().any(|n| name.contains(n))
                })
            })
            .collect();
        Analyzer {
            ev,
            tl,
            named,
            on_cpu,
            condition,
            program,
            loop_prefix,
            wrappers,
            sleep_helpers,
            idle: Vec::new(),
            out: Resolved {
                function_ns: vec![0.0; ev.functions.len()],
                ..Resolved::default()
            },
            running: vec![Running::default(); n],
            inside: vec![HashMap::new(); n],
            inside_count: vec![0.0; n],
            ended_in: vec![HashMap::new(); n],
        }
    }

    /// Whether a wait of thread `t` is at its loop level: its innermost program function, once
    /// out of wrappers, is the thread's loop function (see [`Analyzer::loop_prefix`]).
    fn loop_level(&self, t: usize, w: &TimedWait) -> bool {
        let p = &self.program[w.stack as usize];
        let Some(&loop_fn) = self.loop_prefix[t].last() else {
            return p.iter().all(|f| self.steps_out(f));
        };
        let mut i = p.len();
        while i > 0 && self.steps_out(&p[i - 1]) {
            i -= 1;
        }
        i > 0 && p[i - 1] == loop_fn
    }

    fn stack_has(&self, stack: StackRef, names: &[&str], kernel_only: bool) -> bool {
        self.tl.stacks[stack as usize].iter().any(|&f| {
            (!kernel_only || self.ev.is_kernel_function(f)) && {
                let name = &self.ev.functions[f as usize];
                names.iter().any(|n| name.contains(n))
            }
        })
    }

    /// Whether a function is stepped out of to find a wait's loop level: a wrapper or a sleep
    /// helper.
    fn steps_out(&self, f: &FunctionId) -> bool {
        self.wrappers.contains(f) || self.sleep_helpers.contains(f)
    }

    /// Whether a wait is one to acquire a mutex (a futex wait that is no condition's).
    fn is_mutex(&self, w: &TimedWait) -> bool {
        w.cause == Cause::Lock && !self.condition[w.stack as usize]
    }

    /// Whether a wait looks like one for new work: anything but a mutex and disk I/O.
    fn waits_for_work(&self, w: &TimedWait) -> bool {
        match w.cause {
            Cause::Lock => self.stack_has(w.stack, CONDITION_FUNCTIONS, false),
            Cause::Io => self.stack_has(w.stack, RECEIVE_FUNCTIONS, true),
            Cause::RunQueue => false,
            Cause::Sleep | Cause::Poll | Cause::Other => true,
        }
    }

    /// Per (process, other process): whether the other is the first one's client, from the
    /// waits of the other's threads that the first one's threads ended. A client waits for its
    /// answers inside the functions that made the requests; a server upstream of the process
    /// waits for them at its loop level, for new work. Without such waits (the wakeups came
    /// through the network stack, in interrupts), it is taken for a client.
    ///
    /// Where a server reads its requests through a function of its own, its waits for them
    /// look like a client's. What the other did while the first one waited for it at its loop
    /// then tells: a client's time before its next request is its own pace (a think time at
    /// its loop level), a server's time before its answer is spent blocked inside the
    /// function that makes the answer (a slower call, a disk). The other is a server when its
    /// blocked time there outside its loop level outweighs that at it.
    fn clients(&self) -> HashMap<(u32, u32), bool> {
        let tl = self.tl;
        // (waker pid, waiter pid) → (loop-level time, all time).
        let mut sums: HashMap<(u32, u32), (f64, f64)> = HashMap::new();
        // (waiter pid, waker pid) → the waker's blocked time inside the waiter's loop-level
        // waits for it: (at its loop level, elsewhere).
        let mut turns: HashMap<(u32, u32), (f64, f64)> = HashMap::new();
        for (t, waits) in tl.waits.iter().enumerate() {
            let pid = self.ev.threads[t].pid;
            for w in waits {
                if let TimedWaker::Thread { thread, .. } = w.waker {
                    let waker_pid = self.ev.threads[thread as usize].pid;
                    if waker_pid == pid {
                        continue;
                    }
                    let ns = w.blocked_ns as f64 * w.weight;
                    let e = sums.entry((waker_pid, pid)).or_default();
                    e.1 += ns;
                    if self.loop_level(t, w) {
                        e.0 += ns;
                        let turn = turns.entry((pid, waker_pid)).or_default();
                        let (at, off) = self.blocked_inside(thread as usize, w, pid);
                        turn.0 += at * w.weight;
                        turn.1 += off * w.weight;
                    }
                }
            }
        }
        sums.into_iter()
            .map(|((waker, waiter), (at_loop, all))| {
                // `waiter` serves `waker` when its turns for it are spent blocked outside its
                // loop.
                let serves = turns
                    .get(&(waker, waiter))
                    .is_some_and(|&(at, off)| off > at);
                ((waker, waiter), at_loop < 0.5 * all && !serves)
            })
            .collect()
    }

    /// Thread `b`'s blocked time inside `w` (a wait it ended), not counting its waits that
    /// `w`'s process ended (`b` waiting for it in turn): (at `b`'s loop level, elsewhere),
    /// weighted.
    fn blocked_inside(&self, b: usize, w: &TimedWait, waiter_pid: u32) -> (f64, f64) {
        let (s, e) = (w.start_ns, w.wake_ns());
        let waits = &self.tl.waits[b];
        let first = waits.partition_point(|x| x.wake_ns() <= s);
        let (mut at, mut off) = (0.0, 0.0);
        for x in waits[first..].iter().take_while(|x| x.start_ns < e) {
            if let TimedWaker::Thread { thread, .. } = x.waker
                && self.ev.threads[thread as usize].pid == waiter_pid
            {
                continue;
            }
            let (from, to) = overlap((x.start_ns, x.wake_ns()), (s, e));
            let ns = (to - from).max(0) as f64 * x.weight;
            if self.loop_level(b, x) {
                at += ns;
            } else {
                off += ns;
            }
        }
        (at, off)
    }

    /// Marks each wait idle or not (see the module docs).
    fn classify(&mut self) {
        let tl = self.tl;
        let clients = self.clients();
        let mut idle = Vec::with_capacity(tl.waits.len());
        for (t, waits) in tl.waits.iter().enumerate() {
            let pid = self.ev.threads[t].pid;
            idle.push(
                waits
                    .iter()
                    .map(|w| {
                        // A signal (a process told to stop, a timer's signal) is no work
                        // another thread did for this one.
                        if let TimedWaker::Thread { stack, .. } = w.waker
                            && self.stack_has(stack, SIGNAL_FUNCTIONS, true)
                        {
                            return true;
                        }
                        if !self.loop_level(t, w) || !self.waits_for_work(w) {
                            return false;
                        }
                        match w.waker {
                            // A thread of the same process, or of a server this process calls:
                            // charged to what it did meanwhile. A client's new request: idle.
                            TimedWaker::Thread { thread, .. } => {
                                let waker_pid = self.ev.threads[thread as usize].pid;
                                waker_pid != pid
                                    && clients.get(&(pid, waker_pid)).copied().unwrap_or(true)
                            }
                            TimedWaker::None | TimedWaker::Kernel { .. } => true,
                        }
                    })
                    .collect(),
            );
        }
        self.idle = idle;
    }

    /// A thread's time in the window: on CPU and waiting, idle waits included or not.
    fn thread_ns(&self, t: usize, with_idle: bool) -> f64 {
        let cpu = self.tl.samples[t].len() as f64 * self.tl.period_ns;
        let waits: f64 = self.tl.waits[t]
            .iter()
            .zip(&self.idle[t])
            .filter(|(_, idle)| with_idle || !**idle)
            .map(|(w, _)| (w.blocked_ns + w.runq_ns) as f64 * w.weight)
            .sum();
        cpu + waits
    }

    /// The request threads (see the module docs).
    fn roots(&self) -> Vec<ThreadId> {
        let tl = self.tl;
        let n = tl.samples.len();
        if tl.has_requests() {
            let probed: Vec<ThreadId> = (0..n)
                .filter(|&t| tl.selected.get(t).copied().unwrap_or(false))
                .filter(|&t| !tl.requests[t].is_empty())
                .map(|t| t as ThreadId)
                .collect();
            if !probed.is_empty() {
                return probed;
            }
        }
        let mut edges: HashMap<(usize, usize), Edge> = HashMap::new();
        let mut idle_any = vec![false; n];
        let mut idle_external = vec![false; n];
        for (t, waits) in tl.waits.iter().enumerate() {
            for (w, &idle) in waits.iter().zip(&self.idle[t]) {
                if idle {
                    idle_any[t] = true;
                    // Woken by another process, a socket or a poll: work from outside.
                    if matches!(w.waker, TimedWaker::Thread { .. }) || w.cause != Cause::Sleep {
                        idle_external[t] = true;
                    }
                }
                if let TimedWaker::Thread { thread, .. } = w.waker
                    && thread as usize != t
                {
                    let e = edges.entry((t, thread as usize)).or_default();
                    let ns = w.blocked_ns as f64 * w.weight;
                    if idle {
                        e.idle += ns;
                    } else {
                        e.busy += ns;
                    }
                }
            }
        }
        let totals: Vec<f64> = (0..n).map(|t| self.thread_ns(t, true)).collect();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(parent: &mut [usize], mut x: usize) -> usize {
            while parent[x] != x {
                parent[x] = parent[parent[x]];
                x = parent[x];
            }
            x
        }
        let mut any = false;
        // A wait between threads heavy enough to connect them.
        let heavy = |a: usize, b: usize, e: &Edge| {
            e.busy > 0.0 && e.busy >= MIN_EDGE_SHARE * totals[a].min(totals[b])
        };
        // Only waits that are not idle connect threads into one request path: a wait for new
        // work (a signal from the process that started this one, a client's next request)
        // would join unrelated threads, up to the whole machine.
        for (&(a, b), e) in &edges {
            if heavy(a, b, e) {
                any = true;
                let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
                parent[ra] = rb;
            }
        }
        // Background threads (idle priority, nice ≥ 10) are never requests: what waits for
        // them reaches them through its waits.
        let selected = |t: usize| {
            tl.selected.get(t).copied().unwrap_or(false)
                && !tl.background.get(t).copied().unwrap_or(false)
        };
        // Per selected process, the connected part with the most waiting between threads
        // among those holding its threads (weighed by its own threads' waits, so that a busy
        // part of the rest of the machine that one of its threads reaches does not win). Each
        // process is asked about on its own: a window across a deploy holds the old server and
        // the new one, replicas are several processes, and the busiest of them is not the
        // only one serving requests. A selected process with no such part: its threads that
        // receive work from outside.
        let pid = |t: usize| self.ev.threads[t].pid;
        let candidates: Vec<usize> = if any {
            let mut weight: HashMap<(u32, usize), f64> = HashMap::new();
            for (&(a, b), e) in &edges {
                // Heavy waits only: two connections' threads that meet now and then on a lock
                // do not make one of them the process's request path.
                if selected(a) && heavy(a, b, e) {
                    let r = find(&mut parent, a);
                    *weight.entry((pid(a), r)).or_default() += e.busy;
                }
            }
            let mut best: HashMap<u32, (usize, f64)> = HashMap::new();
            for ((p, r), w) in weight {
                let b = best.entry(p).or_insert((r, 0.0));
                if w > 0.0 && (w > b.1 || (w == b.1 && r < b.0)) {
                    *b = (r, w);
                }
            }
            let best: HashMap<u32, usize> = best
                .into_iter()
                .filter(|(_, (_, w))| *w > 0.0)
                .map(|(p, (r, _))| (p, r))
                .collect();
            if best.is_empty() {
                Vec::new()
            } else {
                (0..n)
                    .filter(|&t| {
                        selected(t)
                            && match best.get(&pid(t)) {
                                Some(&r) => find(&mut parent, t) == r,
                                None => idle_external[t],
                            }
                    })
                    .collect()
            }
        } else {
            Vec::new()
        };
        log::debug!(
            "roots: {n} threads, {} selected, {} edges, any {any}, {} candidates, {} idle",
            (0..n).filter(|&t| selected(t)).count(),
            edges.len(),
            candidates.len(),
            idle_any.iter().filter(|&&i| i).count()
        );
        let candidates = if candidates.is_empty() {
            // No thread waits for another: the selected threads that receive work from
            // outside, else those that wait for any work.
            let external: Vec<usize> = (0..n)
                .filter(|&t| selected(t) && idle_external[t])
                .collect();
            if external.is_empty() {
                let waiting: Vec<usize> = (0..n).filter(|&t| selected(t) && idle_any[t]).collect();
                if waiting.is_empty() {
                    // Nothing tells requests from the rest: every selected thread.
                    (0..n).filter(|&t| selected(t)).collect()
                } else {
                    waiting
                }
            } else {
                external
            }
        } else {
            candidates
        };
        // Not the servers: threads the selected ones wait for (busy) twice as long as they
        // wait for others. Only waits heavy enough to connect threads count: two request
        // threads that now and then meet on a lock (appending to one file) are peers, and a
        // light wait of one for the other makes no server of it.
        let waited_on = |t: usize| -> f64 {
            edges
                .iter()
                .filter(|((a, b), e)| *b == t && selected(*a) && heavy(*a, *b, e))
                .map(|(_, e)| e.busy)
                .sum()
        };
        let waits = |t: usize| -> f64 {
            edges
                .iter()
                .filter(|((a, b), e)| *a == t && heavy(*a, *b, e))
                .map(|(_, e)| e.busy)
                .sum()
        };
        let roots: Vec<ThreadId> = candidates
            .iter()
            .copied()
            .filter(|&t| {
                let on = waited_on(t);
                on <= 0.0 || on < 2.0 * waits(t)
            })
            .map(|t| t as ThreadId)
            .collect();
        if roots.is_empty() {
            candidates.into_iter().map(|t| t as ThreadId).collect()
        } else {
            roots
        }
    }

    fn route(&mut self, f: FunctionId, route: Route, ns: f64, waits: f64) {
        let routes = self.out.routes.entry(f).or_default();
        match routes.iter_mut().find(|w| w.route == route) {
            Some(w) => {
                w.ns += ns;
                w.waits += waits;
            }
            None => routes.push(Why { route, ns, waits }),
        }
    }

    /// Charges `ns` to function `f` (or the kernel's `cause` when there is none) for root `r`.
    fn sink(&mut self, r: usize, f: Option<FunctionId>, cause: Cause, ns: f64) {
        if ns <= 0.0 {
            return;
        }
        self.out.request_ns += ns;
        match f.filter(|&f| (f as usize) < self.out.function_ns.len()) {
            Some(f) => {
                self.out.function_ns[f as usize] += ns;
                *self.out.root_function_ns[r].entry(f).or_default() += ns;
            }
            None => self.out.kernel_ns[cause as usize] += ns,
        }
    }

    fn reason(&self, waker: TimedWaker) -> String {
        match waker {
            TimedWaker::Kernel { reason, .. } => self.tl.reasons[reason as usize].clone(),
            _ => String::new(),
        }
    }

    fn charge_all(mut self, roots: Vec<ThreadId>) -> Resolved {
        self.out.root_function_ns = vec![HashMap::new(); roots.len()];
        let tl = self.tl;
        let length = |parts: &[(i64, i64)]| parts.iter().map(|(s, e)| (e - s) as f64).sum::<f64>();
        // Probed threads: a wait is idle when none of it lies inside a request.
        for &root in &roots {
            let t = root as usize;
            if !tl.requests[t].is_empty() {
                for (i, w) in tl.waits[t].iter().enumerate() {
                    let end = w.wake_ns() + w.runq_ns;
                    self.idle[t][i] = !tl.in_requests(t, (w.start_ns, end));
                }
            }
        }
        for (r, &root) in roots.iter().enumerate() {
            let t = root as usize;
            let probed = !tl.requests[t].is_empty();
            for s in &tl.samples[t] {
                if probed && !tl.in_requests(t, (s.time_ns, s.time_ns + 1)) {
                    self.out.idle_ns += tl.period_ns;
                    continue;
                }
                let f = self.on_cpu[s.stack as usize];
                self.sink(r, Some(f), Cause::Other, tl.period_ns);
                self.route(f, Route::OnCpu, tl.period_ns, 0.0);
            }
            for (i, w) in tl.waits[t].iter().enumerate() {
                let (blocked, runq) = (w.blocked_ns as f64 * w.weight, w.runq_ns as f64 * w.weight);
                if self.idle[t][i] {
                    self.out.idle_ns += blocked + runq;
                    continue;
                }
                // The parts of the wait that count: all of it, or those inside requests.
                let whole = [(w.start_ns, w.wake_ns())];
                let inside;
                let (parts, runq_in): (&[(i64, i64)], f64) = if probed {
                    let wake = w.wake_ns();
                    inside = tl.inside_requests(t, (w.start_ns, wake));
                    let runq_parts = tl.inside_requests(t, (wake, wake + w.runq_ns));
                    (&inside, length(&runq_parts) * w.weight)
                } else {
                    (&whole, runq)
                };
                let blocked_in = length(parts) * w.weight;
                self.out.idle_ns += (blocked - blocked_in).max(0.0) + (runq - runq_in).max(0.0);
                self.sink(r, None, Cause::RunQueue, runq_in);
                // The share of the wait each part stands for, in the "per wait" figures.
                let of_wait = |part: (i64, i64)| {
                    if w.blocked_ns > 0 {
                        w.weight * (part.1 - part.0) as f64 / w.blocked_ns as f64
                    } else {
                        w.weight
                    }
                };
                match w.waker {
                    TimedWaker::Thread { thread, stack } if thread != root => {
                        let mutex = self.is_mutex(w);
                        for &part in parts {
                            let mut visited = vec![root];
                            let ends_here = part.1 == w.wake_ns();
                            self.charge(
                                r,
                                thread,
                                part,
                                w.weight,
                                (w.cause, of_wait(part)),
                                (ends_here.then_some(stack), mutex),
                                1,
                                &mut visited,
                            );
                        }
                    }
                    waker => {
                        let f = self.named[w.stack as usize];
                        self.sink(r, f, w.cause, blocked_in);
                        if let Some(f) = f {
                            let reason = self.reason(waker);
                            let waits = parts.iter().map(|&p| of_wait(p)).sum();
                            self.route(
                                f,
                                Route::Blocked {
                                    reason,
                                    cause: w.cause,
                                },
                                blocked_in,
                                waits,
                            );
                        }
                    }
                }
            }
        }
        // The time waited for threads while they ran, shared out by what they ran then.
        for b in 0..self.running.len() {
            let run = std::mem::take(&mut self.running[b]);
            let by_cause: [f64; 6] = std::array::from_fn(|c| {
                run.blend(
                    run.by_cause[BY_SAMPLES][c].max(0.0),
                    run.by_cause[BY_COMPLEMENT][c].max(0.0),
                )
            });
            let total: f64 = by_cause.iter().sum();
            if total <= 0.0 {
                continue;
            }
            let mut by_root: HashMap<usize, f64> = HashMap::new();
            for (k, m) in run.by_root.iter().enumerate() {
                let w = if k == BY_SAMPLES {
                    run.blend(1.0, 0.0)
                } else {
                    run.blend(0.0, 1.0)
                };
                for (&r, &ns) in m {
                    *by_root.entry(r).or_default() += w * ns.max(0.0);
                }
            }
            let sum: f64 = by_root.values().sum();
            if sum > 0.0 {
                by_root.values_mut().for_each(|ns| *ns *= total / sum);
            }
            let waits: [f64; 6] = std::array::from_fn(|c| {
                run.blend(run.waits[BY_SAMPLES][c], run.waits[BY_COMPLEMENT][c])
            });
            let dist = self.distribution(b);
            if dist.is_empty() {
                // Nothing says what b ran: the time still counts, charged to no function.
                for (&r, &ns) in &by_root {
                    self.sink(r, None, Cause::Other, ns);
                }
            }
            for (f, share) in dist {
                for (&r, &ns) in &by_root {
                    self.sink(r, Some(f), Cause::Other, ns * share);
                }
                for c in Cause::ALL {
                    let ns = by_cause[c as usize];
                    if ns > 0.0 {
                        self.route(
                            f,
                            Route::WaitedRunning {
                                thread: b as ThreadId,
                                cause: c,
                            },
                            ns * share,
                            waits[c as usize],
                        );
                    }
                }
            }
        }
        for routes in self.out.routes.values_mut() {
            routes.sort_by(|a, b| b.ns.total_cmp(&a.ns));
        }
        self.out.roots = roots;
        self.out.named_waits = tl
            .waits
            .iter()
            .map(|ws| ws.iter().map(|w| self.named[w.stack as usize]).collect())
            .collect();
        self.out.idle_waits = std::mem::take(&mut self.idle);
        self.out
    }

    /// Whether thread `b`'s sample `s` may say what others waited for while `b` ran: any
    /// sample, but for a probed thread only those inside its calls (its time outside them was
    /// declared no request's; a worker that takes a lock right after parsing its own request
    /// would otherwise charge the parsing to the requests that waited for its hold).
    fn request_work(&self, b: usize, s: &TimedSample) -> bool {
        self.tl.requests[b].is_empty() || self.tl.in_requests(b, (s.time_ns, s.time_ns + 1))
    }

    /// How thread `b`'s running time during the waits for it is shared out among functions:
    /// by its samples inside those waits; else by what it ran under the functions its stacks
    /// showed when it ended them (its samples whose stacks go through such a function: a
    /// stage that signals from its loop after the work its loop called, a holder that unlocks
    /// in its critical section), or those functions themselves when no sample goes through
    /// them; else by all its samples in the window. At 19 Hz the waits for a thread that works
    /// in short bursts (a stage handed 0.1-ms jobs, the waits for it drawn at one in twenty)
    /// hold few of its samples: those are shrunk towards the profile the fallbacks give by
    /// [`PRIOR_SAMPLES`], so that one sample in the loop's own code does not name the loop
    /// for all of it. A probed thread's samples outside its calls are none of these
    /// ([`Analyzer::request_work`]).
    fn distribution(&self, b: usize) -> Vec<(FunctionId, f64)> {
        let norm = |m: &HashMap<FunctionId, f64>| -> HashMap<FunctionId, f64> {
            let total: f64 = m.values().sum();
            if total <= 0.0 {
                return HashMap::new();
            }
            m.iter().map(|(&f, &x)| (f, x / total)).collect()
        };
        let samples: Vec<&TimedSample> = self.tl.samples[b]
            .iter()
            .filter(|s| self.request_work(b, s))
            .collect();
        let mut all: HashMap<FunctionId, f64> = HashMap::new();
        for s in &samples {
            *all.entry(self.on_cpu[s.stack as usize]).or_default() += 1.0;
        }
        // What b ran under the functions it ended the waits in.
        let mut located: HashMap<FunctionId, f64> = HashMap::new();
        for (&f, &weight) in &norm(&self.ended_in[b]) {
            let mut under: HashMap<FunctionId, f64> = HashMap::new();
            for s in &samples {
                if self.program[s.stack as usize].contains(&f) {
                    *under.entry(self.on_cpu[s.stack as usize]).or_default() += 1.0;
                }
            }
            if under.is_empty() {
                // No sample to go by: the function itself, unless it is b's loop, which says
                // nothing of what b did for the waiter.
                if self.loop_prefix[b].last() == Some(&f) {
                    continue;
                }
                under.insert(f, 1.0);
            }
            for (g, x) in norm(&under) {
                *located.entry(g).or_default() += weight * x;
            }
        }
        let fallback = if !located.is_empty() {
            located
        } else {
            norm(&all)
        };
        let dist = if self.inside[b].is_empty() {
            fallback
        } else {
            let mut dist = norm(&self.inside[b]);
            if !fallback.is_empty() {
                let n = self.inside_count[b];
                let prior = PRIOR_SAMPLES / (n + PRIOR_SAMPLES);
                dist.values_mut().for_each(|x| *x *= 1.0 - prior);
                for (f, x) in fallback {
                    *dist.entry(f).or_default() += prior * x;
                }
            }
            dist
        };
        let mut v: Vec<(FunctionId, f64)> = dist.into_iter().collect();
        v.sort_by_key(|&(f, _)| f);
        v
    }

    /// Charges root `r`'s wait for thread `b` over `interval` (weighted by `mass`) to what `b`
    /// did then (see the module docs). `request` is the root wait's cause and weight;
    /// `waker_stack` `b`'s stack when it ended the wait, when the interval ends with that.
    #[allow(clippy::too_many_arguments)]
    fn charge(
        &mut self,
        r: usize,
        b: ThreadId,
        interval: (i64, i64),
        mass: f64,
        request: (Cause, f64),
        (waker_stack, mutex): (Option<StackRef>, bool),
        depth: usize,
        visited: &mut Vec<ThreadId>,
    ) {
        let (s, e) = interval;
        let len = (e - s) as f64;
        if len <= 0.0 || mass <= 0.0 {
            return;
        }
        if depth > MAX_DEPTH || visited.contains(&b) {
            self.out.knot_ns += mass * len;
            self.out.request_ns += mass * len;
            return;
        }
        visited.push(b);
        let bi = b as usize;
        let tl = self.tl;
        let waits = &tl.waits[bi];
        // Waits of b overlapping [s, e]: b's waits do not overlap each other, so they are in
        // order of their ends too.
        let first = waits.partition_point(|x| x.wake_ns() + x.runq_ns <= s);
        let mut parts: Vec<(usize, (i64, i64), f64, f64)> = Vec::new();
        for (i, x) in waits.iter().enumerate().skip(first) {
            if x.start_ns >= e {
                break;
            }
            let blocked = overlap((x.start_ns, x.wake_ns()), (s, e));
            let runq = overlap((x.wake_ns(), x.wake_ns() + x.runq_ns), (s, e));
            let (ob, or) = (
                (blocked.1 - blocked.0).max(0) as f64 * x.weight,
                (runq.1 - runq.0).max(0) as f64 * x.weight,
            );
            if ob + or > 0.0 {
                parts.push((i, blocked, ob, or));
            }
        }
        // A lock handed on (see the module docs): b's last wait, for the same kind of lock,
        // stands for the interval up to its end; b's samples before that are not its hold.
        let mut run_from = s;
        if mutex
            && let Some(&(i, blocked, _, or)) = parts.last()
            && self.is_mutex(&waits[i])
            && !self.idle[bi][i]
            && matches!(waits[i].waker, TimedWaker::Thread { .. })
        {
            let blocked = (s, blocked.1);
            let ob = (blocked.1 - blocked.0).max(0) as f64 * waits[i].weight;
            parts = vec![(i, blocked, ob, or)];
            run_from = blocked.1;
        }
        // b's run in [run_from, e), both ways (see the module docs): its samples there, and
        // what its kept waits leave of the interval, with the variance each adds.
        let samples = &tl.samples[bi];
        let from = samples.partition_point(|x| x.time_ns < run_from);
        let inside = samples[from..].iter().take_while(|x| x.time_ns < e);
        let kept: f64 = parts.iter().map(|&(_, _, ob, or)| ob + or).sum();
        let sampled = inside.clone().count() as f64;
        // The complement is kept signed: a drawn wait's weighted part may cover more than the
        // interval, and one drawn out leaves it looking run through; clamped per interval the
        // sum would only grow (a load generator's thinned sleeps read as its run), so it is
        // clamped only once summed over b.
        let run = [sampled * tl.period_ns, len - kept];
        // A kept wait of weight w standing for x ns adds (w − 1)·w·x² (Horvitz–Thompson).
        let drawn: f64 = parts
            .iter()
            .map(|&(i, _, ob, or)| {
                let w = waits[i].weight;
                (w - 1.0).max(0.0) / w * (ob + or) * (ob + or)
            })
            .sum();
        let variance = [sampled * tl.period_ns * tl.period_ns, drawn];
        for (i, blocked, ob, or) in parts {
            let x = waits[i];
            self.sink(r, None, Cause::RunQueue, mass * or);
            // A sleep b began while the request already waited for it is part of serving it (a
            // slow backend's, a batcher's pause to collect more), even through a sleep helper
            // called from b's loop; one taken in the loop function itself is b's own pace (a
            // load generator's time between arrivals). For a mutex wait, so is a sleep b began
            // before: b slept holding the lock (a critical section's I/O).
            let served = x.cause == Cause::Sleep
                && (x.start_ns > s || mutex)
                && self.named[x.stack as usize] != self.loop_prefix[bi].last().copied();
            if self.idle[bi][i] && !served {
                self.out.idle_ns += mass * ob;
                continue;
            }
            match x.waker {
                TimedWaker::Thread { thread, stack } => {
                    let ends_here = x.wake_ns() <= e;
                    let mutex = self.is_mutex(&x);
                    self.charge(
                        r,
                        thread,
                        blocked,
                        mass * x.weight,
                        request,
                        (ends_here.then_some(stack), mutex),
                        depth + 1,
                        visited,
                    );
                }
                waker => {
                    let f = self.named[x.stack as usize];
                    self.sink(r, f, x.cause, mass * ob);
                    if let Some(f) = f {
                        let reason = self.reason(waker);
                        self.route(
                            f,
                            Route::WaitedBlocked {
                                thread: b,
                                cause: request.0,
                                reason,
                            },
                            mass * ob,
                            request.1,
                        );
                    }
                }
            }
        }
        // The waits that b's run served. By the samples: a wait whose interval held none of
        // b's samples still had (on average) its part of b's run, so each counts by the part of
        // its interval that b's kept waits leave; counting only the waits with a sample would
        // make every "per wait" figure one sampling period. By the complement: each wait with
        // some of it left.
        let counted = [
            (1.0 - kept / len).clamp(0.0, 1.0),
            if run[BY_COMPLEMENT] > 0.0 { 1.0 } else { 0.0 },
        ];
        let running = &mut self.running[bi];
        running.period_ns = tl.period_ns;
        for k in [BY_SAMPLES, BY_COMPLEMENT] {
            running.waits[k][request.0 as usize] += request.1 * counted[k];
            running.variance[k] += mass * mass * variance[k];
            let rest = run[k] * mass;
            if rest != 0.0 {
                running.by_cause[k][request.0 as usize] += rest;
                *running.by_root[k].entry(r).or_default() += rest;
            }
        }
        if run.iter().any(|&ns| ns > 0.0) && mass > 0.0 {
            let work: Vec<FunctionId> = inside
                .filter(|x| self.request_work(bi, x))
                .map(|x| self.on_cpu[x.stack as usize])
                .collect();
            for f in work {
                *self.inside[bi].entry(f).or_default() += mass;
                self.inside_count[bi] += 1.0;
            }
            // A stack with no program function (a kernel thread's, a user stack cut short)
            // would name its leaf, the kernel's wake-up code: it says nothing.
            if let Some(f) = waker_stack.and_then(|stack| self.named[stack as usize]) {
                *self.ended_in[bi].entry(f).or_default() += mass;
            }
        }
        visited.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Frame;
    use crate::graph::{Analysis, Explanation};
    use crate::offcpu::{OffCpuWait, ThreadRef, Waker};
    use crate::store::{Aggregator, Batch, SeriesLabels};

    /// A program's threads doing things at given times, through the agent's aggregation.
    struct Sim {
        agg: Aggregator,
        batches: Vec<Batch>,
        /// Run-queue delay after each wait that follows, ms (a busy host).
        runq_ms: f64,
        /// The weight of each wait that follows (one kept of that many drawn).
        weight: f64,
    }

    /// Frames root first; names starting with `k:` are the kernel's, with `c:` the C
    /// library's.
    fn frames(stack: &[&str]) -> Vec<Frame> {
        stack
            .iter()
            .map(|n| {
                if let Some(k) = n.strip_prefix("k:") {
                    Frame::kernel(k)
                } else if let Some(c) = n.strip_prefix("c:") {
                    Frame::user(c, "/lib/x86_64-linux-gnu/libc.so.6")
                } else {
                    Frame::user(*n, "/bin/app")
                }
            })
            .collect()
    }

    fn series(pid: u32, comm: &str) -> SeriesLabels {
        SeriesLabels {
            pid,
            comm: comm.into(),
            service: comm.into(),
            ..SeriesLabels::default()
        }
    }

    fn thread(pid: u32, tid: u32, comm: &str) -> ThreadRef {
        ThreadRef {
            pid,
            tid,
            comm: comm.into(),
        }
    }

    /// Who ends a simulated wait.
    enum By<'a> {
        Thread(ThreadRef, &'a [&'a str]),
        KernelThread(ThreadRef, &'a [&'a str]),
        Timer,
        /// An interrupt (a disk's completion), with its kernel frames.
        Interrupt(&'a [&'a str]),
    }

    const T0: i64 = 1_700_000_000_000_000_000;

    impl Sim {
        fn new() -> Self {
            Sim {
                agg: Aggregator::new(1_000, 1_000_000),
                batches: Vec::new(),
                runq_ms: 0.0,
                weight: 1.0,
            }
        }

        /// On-CPU samples every ms of [from, to) ms.
        fn run(&mut self, t: &ThreadRef, from: f64, to: f64, stack: &[&str]) {
            self.run_as(t, from, to, stack, false);
        }

        /// The same, as background work or not.
        fn run_as(&mut self, t: &ThreadRef, from: f64, to: f64, stack: &[&str], bg: bool) {
            let mut at = from;
            while at < to {
                let s = series(t.pid, &t.comm);
                let time = T0 + (at * 1e6) as i64;
                self.batches
                    .extend(self.agg.add_on_cpu(time, &s, (t.tid, bg), &frames(stack)));
                at += 1.0;
            }
        }

        fn wait(
            &mut self,
            t: &ThreadRef,
            from: f64,
            to: f64,
            stack: &[&str],
            cause: Cause,
            by: By,
        ) {
            let irq: &[&str] = match by {
                By::Interrupt(s) => s,
                _ => &["k:hrtimer_wakeup"],
            };
            let waker = match by {
                By::Thread(w, s) => Some((w, s, false)),
                By::KernelThread(w, s) => Some((w, s, true)),
                By::Timer | By::Interrupt(_) => None,
            };
            let wait = OffCpuWait {
                thread: t.clone(),
                start_unix_ns: T0 + (from * 1e6) as i64,
                blocked_ns: ((to - from) * 1e6) as u64,
                runq_delay_ns: (self.runq_ms * 1e6) as u64,
                cause,
                weight: self.weight,
                frames: frames(stack),
                waker: Some(match &waker {
                    Some((w, s, kernel)) => Waker {
                        thread: w.clone(),
                        in_interrupt: false,
                        kernel_thread: *kernel,
                        frames: frames(s),
                    },
                    None => Waker {
                        thread: t.clone(),
                        in_interrupt: true,
                        kernel_thread: false,
                        frames: frames(irq),
                    },
                }),
            };
            let waker_series = waker.as_ref().map(|(w, ..)| series(w.pid, &w.comm));
            self.batches.extend(self.agg.add_wait(
                &series(t.pid, &t.comm),
                waker_series.as_ref(),
                &wait,
            ));
        }

        /// A request of worker `w` in the cycle starting at `c` ms: it waits 1–6 ms for the
        /// lock `h` releases in `flush`, handles it for 1 ms, then thinks until `c` + 51 ms.
        fn lock_request(&mut self, w: &ThreadRef, h: &ThreadRef, c: f64) {
            self.wait(
                w,
                c + 1.0,
                c + 6.0,
                &["w_loop", "handle", "c:pthread_mutex_lock"],
                Cause::Lock,
                By::Thread(h.clone(), &["h_loop", "flush", "c:pthread_mutex_unlock"]),
            );
            self.run(w, c + 6.0, c + 7.0, &["w_loop", "handle"]);
            self.wait(
                w,
                c + 7.0,
                c + 51.0,
                &["w_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
        }

        /// A request of `t` over [from, to) ms, timed by a latency probe.
        fn request(&mut self, t: &ThreadRef, from: f64, to: f64) {
            let start = T0 + (from * 1e6) as i64;
            let s = series(t.pid, &t.comm);
            let duration = ((to - from) * 1e6) as i64;
            self.batches
                .extend(self.agg.add_request(&s, t.tid, start, duration));
        }

        fn analyze(mut self, seconds: f64) -> (Evidence, Analysis) {
            self.batches.extend(self.agg.flush());
            let ev = Evidence::from_batches(&self.batches, seconds, |s| s.pid == 1);
            let analysis = Analysis::new(&ev);
            (ev, analysis)
        }
    }

    fn share(ev: &Evidence, a: &Analysis, f: &str) -> f64 {
        ev.function_id(f)
            .map_or(0.0, |id| a.functions[id as usize].critical_path_share)
    }

    /// A request that waits for a lock is charged to what the holder ran while it waited (its
    /// critical section), not to the holder's average, which here is mostly work outside the
    /// lock; the request thread's think time between requests is idle, ranked nowhere.
    #[test]
    fn waits_are_charged_to_what_the_waker_did_meanwhile() {
        let mut sim = Sim::new();
        let (h, w) = (thread(1, 2, "app"), thread(1, 3, "app"));
        for cycle in 0..40 {
            let c = cycle as f64 * 50.0;
            sim.run(&h, c, c + 6.0, &["h_loop", "flush"]);
            sim.run(&h, c + 6.0, c + 36.0, &["h_loop", "compact"]);
            sim.wait(
                &h,
                c + 36.0,
                c + 50.0,
                &["h_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
            sim.lock_request(&w, &h, c);
        }
        let (ev, a) = sim.analyze(2.0);
        let r = a.resolved.as_ref().expect("a timeline");
        assert_eq!(r.roots.len(), 1, "the worker alone: {:?}", r.roots);
        assert_eq!(ev.threads[r.roots[0] as usize].tid, 3);
        assert!(
            share(&ev, &a, "flush") > 0.7,
            "flush {}",
            share(&ev, &a, "flush")
        );
        assert!(
            share(&ev, &a, "compact") < 0.02,
            "compact {}",
            share(&ev, &a, "compact")
        );
        assert!(
            share(&ev, &a, "w_loop") < 0.02,
            "think time {}",
            share(&ev, &a, "w_loop")
        );
        // 40 think times of 44 ms are idle.
        assert!(
            (r.idle_ns / 1e6 - 40.0 * 44.0).abs() < 1.0,
            "idle {}",
            r.idle_ns / 1e6
        );
        // The answer lists the flush and nothing charged under 1% of the requests' time.
        let answer = Explanation::new(&ev, &a, crate::graph::Method::CriticalPath, None, 10);
        let listed: Vec<&str> = answer
            .functions
            .iter()
            .map(|f| f.function.as_str())
            .collect();
        assert_eq!(listed.first(), Some(&"flush"), "{listed:?}");
        assert!(
            answer
                .functions
                .iter()
                .all(|f| f.latency_impact >= crate::graph::MIN_SUSPECT_SHARE),
            "{listed:?}"
        );
        assert!(!listed.contains(&"compact"), "{listed:?}");
    }

    /// Threads alike in shape — work, then sleep at their loop level — but one runs at idle
    /// priority: it is no request thread, however much CPU it burns.
    #[test]
    fn background_threads_are_no_requests() {
        let mut sim = Sim::new();
        let (req, hog) = (thread(1, 2, "app"), thread(1, 3, "app"));
        for cycle in 0..100 {
            let c = cycle as f64 * 10.0;
            sim.run(&req, c, c + 2.0, &["r_loop", "checksum"]);
            sim.wait(
                &req,
                c + 2.0,
                c + 10.0,
                &["r_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
            sim.run_as(&hog, c, c + 6.0, &["h_loop", "bloom"], true);
            sim.wait(
                &hog,
                c + 6.0,
                c + 10.0,
                &["h_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
        }
        let (ev, a) = sim.analyze(1.0);
        let r = a.resolved.as_ref().expect("a timeline");
        assert_eq!(r.roots.len(), 1, "{:?}", r.roots);
        assert_eq!(ev.threads[r.roots[0] as usize].tid, 2);
        assert!(share(&ev, &a, "checksum") > 0.95);
        assert_eq!(share(&ev, &a, "bloom"), 0.0);
    }

    /// An event-loop proxy (pid 1) between a client that thinks at its loop (pid 2) and an
    /// upstream that reads its requests through a function of its own (pid 3), as nginx in
    /// front of an application server: both other processes wait for the proxy outside their
    /// loop functions, but the upstream spends the proxy's waits for it blocked in
    /// `slow_backend`, the client at its loop. The proxy's waits for the upstream are its
    /// requests' time, charged to `slow_backend`; its waits for the client are idle.
    #[test]
    fn a_proxys_upstream_that_reads_through_a_helper_is_its_server() {
        let mut sim = Sim::new();
        let (proxy, client, upstream) = (
            thread(1, 1, "proxy"),
            thread(2, 2, "client"),
            thread(3, 3, "upstream"),
        );
        let epoll = &["p_loop", "c:epoll_wait"];
        for cycle in 0..100 {
            let c = cycle as f64 * 12.0;
            // The client: thinks 2 ms at its loop, sends, waits for the answer.
            sim.wait(
                &client,
                c,
                c + 2.0,
                &["client_loop", "sleep_us", "c:nanosleep"],
                Cause::Sleep,
                By::Timer,
            );
            sim.wait(
                &client,
                c + 2.0,
                c + 10.0,
                &["client_loop", "read_response", "c:read", "k:tcp_recvmsg"],
                Cause::Io,
                By::Thread(proxy.clone(), &["p_loop", "send_response", "c:write"]),
            );
            // The proxy: waits for the client, forwards, waits for the upstream, answers.
            let (from, to) = (c - 2.0, c + 2.0);
            let by = By::Thread(client.clone(), &["client_loop", "c:write"]);
            sim.wait(&proxy, from.max(0.0), to, epoll, Cause::Poll, by);
            sim.run(&proxy, c + 2.0, c + 3.0, &["p_loop", "forward"]);
            let by = By::Thread(upstream.clone(), &["serve_conn", "c:write"]);
            sim.wait(&proxy, c + 3.0, c + 9.0, epoll, Cause::Poll, by);
            sim.run(&proxy, c + 9.0, c + 10.0, &["p_loop", "send_response"]);
            // The upstream: reads the request, works 2 ms, sleeps 4 ms in the same call.
            sim.wait(
                &upstream,
                (c - 3.0).max(0.0),
                c + 3.0,
                &["serve_conn", "read_request", "c:read", "k:tcp_recvmsg"],
                Cause::Io,
                By::Thread(proxy.clone(), &["p_loop", "forward", "c:write"]),
            );
            let work = &["serve_conn", "slow_backend", "burn"];
            sim.run(&upstream, c + 3.0, c + 5.0, work);
            sim.wait(
                &upstream,
                c + 5.0,
                c + 9.0,
                &["serve_conn", "slow_backend", "c:nanosleep"],
                Cause::Sleep,
                By::Timer,
            );
        }
        let (ev, a) = sim.analyze(1.2);
        let r = a.resolved.as_ref().expect("a timeline");
        // The upstream's 4 ms asleep and 2 ms on CPU of each 8 ms the proxy spends on a request.
        let backend = share(&ev, &a, "slow_backend");
        assert!(backend > 0.45, "{backend}: {:?}", r.routes);
        assert!(share(&ev, &a, "burn") > 0.2, "{:?}", r.routes);
        assert!(share(&ev, &a, "forward") < 0.15, "{:?}", r.routes);
        assert!(share(&ev, &a, "client_loop") < 0.05, "{:?}", r.routes);
        assert!(share(&ev, &a, "sleep_us") < 0.05, "{:?}", r.routes);
    }

    /// Requests handed to a worker by a generator thread of the same process that paces them
    /// with a sleep in its loop: the worker's wait for the next one is idle, the generator's
    /// pace is no request's time.
    #[test]
    fn a_generators_pace_is_idle() {
        let mut sim = Sim::new();
        let (worker, generator) = (thread(1, 2, "app"), thread(1, 3, "app"));
        for cycle in 0..100 {
            let c = cycle as f64 * 10.0;
            sim.run(&worker, c, c + 2.0, &["w_loop", "lookup_row"]);
            sim.wait(
                &worker,
                c + 2.0,
                c + 10.0,
                &["w_loop", "c:poll"],
                Cause::Poll,
                By::Thread(generator.clone(), &["g_loop", "c:write"]),
            );
            sim.wait(
                &generator,
                c + 2.01,
                c + 10.0,
                &["g_loop", "c:nanosleep"],
                Cause::Sleep,
                By::Timer,
            );
        }
        let (ev, a) = sim.analyze(1.0);
        let r = a.resolved.as_ref().expect("a timeline");
        assert!(share(&ev, &a, "lookup_row") > 0.95, "{:?}", r.routes);
        assert!(share(&ev, &a, "g_loop") < 0.01, "{:?}", r.routes);
    }

    /// The same, the generator pacing with many short sleeps and the store keeping one wait
    /// record in ten, drawn and weighted: what is left of a wait for the generator once its
    /// kept sleeps are taken out is noise around zero, and is not charged to its loop.
    #[test]
    fn a_generators_drawn_sleeps_are_not_its_run() {
        // Runs of different lengths draw different waits.
        for cycles in 100..108 {
            let mut sim = Sim::new();
            sim.agg = Aggregator::new(1_000, 1_000_000).with_wait_records(300);
            let (worker, generator) = (thread(1, 2, "app"), thread(1, 3, "app"));
            for cycle in 0..cycles {
                let c = cycle as f64 * 10.0;
                sim.run(&worker, c, c + 2.0, &["w_loop", "lookup_row"]);
                sim.wait(
                    &worker,
                    c + 2.0,
                    c + 10.0,
                    &["w_loop", "c:poll"],
                    Cause::Poll,
                    By::Thread(generator.clone(), &["g_loop", "c:write"]),
                );
                for k in 0..8 {
                    let at = c + 2.0 + k as f64;
                    sim.wait(
                        &generator,
                        at,
                        at + 1.0,
                        &["g_loop", "c:nanosleep"],
                        Cause::Sleep,
                        By::Timer,
                    );
                }
            }
            let (ev, a) = sim.analyze(1.0);
            let r = a.resolved.as_ref().expect("a timeline");
            assert!(
                share(&ev, &a, "lookup_row") > 0.9,
                "{cycles}: {:?}",
                r.routes
            );
            assert!(share(&ev, &a, "g_loop") < 0.02, "{cycles}: {:?}", r.routes);
        }
    }

    /// A lock holder whose flushes the 19-Hz timer keeps missing (a periodic holder beats with
    /// a periodic sampler: here one flush in ten holds samples), with a few short waits of its
    /// own drawn by length, none of them inside the flushes. Its samples would say the requests
    /// waited a fifth of what they did; what its kept waits leave of each wait is exact here,
    /// and is what counts: the requests' time is the time they waited and ran.
    #[test]
    fn a_holder_the_sampler_misses_is_measured_by_what_its_waits_leave() {
        let mut sim = Sim::new();
        let (h, w) = (thread(1, 2, "app"), thread(1, 3, "app"));
        for cycle in 0..40 {
            let c = cycle as f64 * 50.0;
            if cycle % 10 == 0 {
                sim.run(&h, c, c + 6.0, &["h_loop", "flush"]);
            }
            sim.run(&h, c + 6.0, c + 36.0, &["h_loop", "compact"]);
            sim.weight = 5.0;
            sim.wait(
                &h,
                c + 36.0,
                c + 36.2,
                &["h_loop", "compact", "c:sched_yield"],
                Cause::RunQueue,
                By::Timer,
            );
            sim.weight = 1.0;
            sim.wait(
                &h,
                c + 37.0,
                c + 50.0,
                &["h_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
            sim.lock_request(&w, &h, c);
        }
        let (ev, a) = sim.analyze(2.0);
        let r = a.resolved.as_ref().expect("a timeline");
        // 40 requests of a 5-ms wait and 1 ms of work.
        assert!(
            (r.request_ns / 1e6 - 240.0).abs() < 12.0,
            "{} ms: {:?}",
            r.request_ns / 1e6,
            r.routes
        );
        assert!(share(&ev, &a, "flush") > 0.75, "{:?}", r.routes);
    }

    /// Requests hand a job to a stage thread, which runs it in `stage_work` (called from its
    /// loop) and signals from its loop; none of the stage's samples falls inside a request's
    /// wait (short jobs, a 19-Hz timer). The wait is charged to what the stage ran under the
    /// function it signalled from — `stage_work` — not to that function, the loop.
    #[test]
    fn a_stage_that_signals_from_its_loop_is_charged_its_work() {
        let mut sim = Sim::new();
        let (requester, stage) = (thread(1, 2, "app"), thread(1, 3, "app"));
        for request in 0..100 {
            let c = request as f64 * 10.0;
            sim.run(&requester, c, c + 0.1, &["r_loop", "handle"]);
            sim.wait(
                &requester,
                c + 0.1,
                c + 0.5,
                &["r_loop", "handle", "c:pthread_cond_wait"],
                Cause::Lock,
                By::Thread(stage.clone(), &["s_loop", "c:pthread_cond_signal"]),
            );
            sim.wait(
                &requester,
                c + 0.5,
                c + 10.0,
                &["r_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
            // The stage: woken for the job, runs it (no sample), sleeps, runs stage_work for
            // another client (a sample), sleeps until the next job.
            sim.wait(
                &stage,
                c - 0.05,
                c + 0.1,
                &["s_loop", "c:pthread_cond_wait"],
                Cause::Lock,
                By::Thread(
                    requester.clone(),
                    &["r_loop", "handle", "c:pthread_cond_signal"],
                ),
            );
            sim.wait(
                &stage,
                c + 0.5,
                c + 4.9,
                &["s_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
            sim.run(&stage, c + 5.0, c + 5.1, &["s_loop", "stage_work"]);
            sim.wait(
                &stage,
                c + 5.1,
                c + 9.95,
                &["s_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
        }
        let (ev, a) = sim.analyze(1.0);
        let r = a.resolved.as_ref().expect("a timeline");
        // The requester's waits for the stage's run: 100 of 0.4 ms.
        let id = ev.function_id("stage_work").expect("stage_work");
        let waited: f64 = r.routes[&id]
            .iter()
            .filter(|w| matches!(w.route, Route::WaitedRunning { .. }))
            .map(|w| w.ns)
            .sum();
        assert!((waited / 1e6 - 40.0).abs() < 2.0, "{:?}", r.routes);
        assert!(share(&ev, &a, "s_loop") < 0.01, "{:?}", r.routes);
    }

    /// A timed sleep whose wake-up ran in another thread's context (the timer's expiry, its
    /// interrupt frames not captured) is ended by the timer, not by that thread: the timeline
    /// says so, and the other thread's sleep helper is still a helper (a stray waker stack
    /// through it made a client's think time a server's step).
    #[test]
    fn a_sleep_is_ended_by_its_timer_whatever_thread_woke_it() {
        let mut sim = Sim::new();
        let (c1, c2) = (thread(1, 2, "app"), thread(1, 3, "app"));
        sim.wait(
            &c1,
            0.0,
            5.0,
            &["c_loop", "sleep_us", "c:nanosleep"],
            Cause::Sleep,
            By::Thread(c2.clone(), &["c_loop", "sleep_us", "c:nanosleep"]),
        );
        let (ev, _) = sim.analyze(1.0);
        let tl = ev.timeline.as_ref().expect("a timeline");
        let t = ev.threads.iter().position(|t| t.tid == 2).expect("c1");
        match tl.waits[t][0].waker {
            TimedWaker::Kernel { reason, .. } => assert_eq!(tl.reasons[reason as usize], "timer"),
            other => panic!("{other:?}"),
        }
    }

    /// Requests of 10 hand-offs of 0.2 ms each to a stage thread whose waits are drawn, with
    /// think time between requests; the stage is sampled far less often than it is waited for
    /// (one hand-off in 5 holds a sample, as does one prepare in 5). The time per wait is the stage's 0.2 ms, not one
    /// sampling period, and the stage's work is what is charged.
    #[test]
    fn short_waits_on_a_drawn_waker_say_their_own_length() {
        let mut sim = Sim::new();
        sim.agg = Aggregator::new(1_000, 1_000_000).with_wait_records(200);
        let (requester, stage) = (thread(1, 2, "app"), thread(1, 3, "app"));
        let mut handoffs = 0;
        for request in 0..100 {
            let base = request as f64 * 4.0;
            for i in 0..10 {
                let t = base + i as f64 * 0.3;
                if handoffs % 5 == 2 {
                    sim.run(&requester, t, t + 0.1, &["r_loop", "handle", "prepare"]);
                }
                sim.wait(
                    &requester,
                    t + 0.1,
                    t + 0.3,
                    &["r_loop", "handle", "hand_off", "c:pthread_cond_wait"],
                    Cause::Lock,
                    By::Thread(stage.clone(), &["s_loop", "c:pthread_cond_signal"]),
                );
                if handoffs % 5 == 0 {
                    sim.run(&stage, t + 0.15, t + 0.3, &["s_loop", "stage_work"]);
                }
                handoffs += 1;
                let next = if i < 9 { t + 0.4 } else { base + 4.1 };
                sim.wait(
                    &stage,
                    t + 0.3,
                    next,
                    &["s_loop", "c:pthread_cond_wait"],
                    Cause::Lock,
                    By::Thread(
                        requester.clone(),
                        &["r_loop", "handle", "hand_off", "c:pthread_cond_signal"],
                    ),
                );
            }
            sim.wait(
                &requester,
                base + 3.0,
                base + 4.0,
                &["r_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
        }
        let (ev, a) = sim.analyze(0.4);
        let r = a.resolved.as_ref().expect("a timeline");
        assert!(r.roots.iter().any(|&t| ev.threads[t as usize].tid == 2));
        let id = ev.function_id("stage_work").expect("stage_work");
        // The requester's waits for the stage while it ran (the stage waits for the requester
        // too, so it is a request thread as well, with its own samples on its own route).
        let top = r.routes[&id]
            .iter()
            .find(|w| matches!(w.route, Route::WaitedRunning { .. }))
            .expect("a route through the stage's run");
        let per_wait_ms = top.ns / top.waits / 1e6;
        eprintln!("DBG roots {:?} id {id} {:?}", r.roots, r.routes);
        assert!(
            (0.1..0.4).contains(&per_wait_ms),
            "{per_wait_ms} ms per wait: {:?}",
            r.routes
        );
        assert!(share(&ev, &a, "s_loop") < 0.05, "{:?}", r.routes);
    }

    /// A critical section that computes and then sleeps holding the lock (its work inlined into
    /// it, so that it looks like a sleep helper called from the loop): its sleep, begun before
    /// the waiter queued, is what the waiter waits for, not the holder's think time, and the
    /// section comes first, above the waiter's own work.
    #[test]
    fn a_sleep_under_a_lock_is_the_holders_not_think_time() {
        sleep_under_a_lock(2.0, 6.0, 2.0);
    }

    /// The same where the section is nearly all of the holder's time (4 ms of work and 12 ms
    /// asleep in it, 1 ms out, as `mutex_contention --held-sleep-us` runs): most of its time
    /// goes through the section, but it releases the lock, waking the waiters, from its loop,
    /// so the section is not taken for the loop and its sleep is not the holder's pace.
    #[test]
    fn a_sleep_under_a_lock_that_is_most_of_the_holders_time_is_no_pace() {
        sleep_under_a_lock(4.0, 12.0, 1.0);
    }

    fn sleep_under_a_lock(section_ms: f64, sleep_ms: f64, outside_ms: f64) {
        let mut sim = Sim::new();
        let (waiter, holder) = (thread(1, 2, "app"), thread(1, 3, "app"));
        let held_ms = section_ms + sleep_ms;
        let cycle_ms = held_ms + outside_ms;
        for cycle in 0..100 {
            let c = cycle as f64 * cycle_ms;
            // The holder: work in the section, then asleep in it, then some out.
            // Its work inlined: the section is the leaf of its samples.
            sim.run(
                &holder,
                c,
                c + section_ms,
                &["holder_loop", "critical_section"],
            );
            sim.wait(
                &holder,
                c + section_ms,
                c + held_ms,
                &["holder_loop", "critical_section", "c:nanosleep"],
                Cause::Sleep,
                By::Timer,
            );
            sim.run(&holder, c + held_ms, c + cycle_ms, &["holder_loop", "burn"]);
            // The waiter: 2 ms of its own work, then waits for the lock until the holder
            // releases it.
            sim.run(&waiter, c, c + 2.0, &["waiter_loop", "own_work"]);
            sim.wait(
                &waiter,
                c + 2.0,
                c + held_ms,
                &["waiter_loop", "c:__lll_lock_wait"],
                Cause::Lock,
                By::Thread(holder.clone(), &["holder_loop", "c:__lll_lock_wake"]),
            );
        }
        let (ev, a) = sim.analyze(1.0);
        let r = a.resolved.as_ref().expect("a timeline");
        let section = share(&ev, &a, "critical_section");
        assert!(section > 0.5, "{section}: {:?}", r.routes);
        assert!(section > 2.0 * share(&ev, &a, "own_work"), "{:?}", r.routes);
    }

    /// A process exiting wakes its sleeping threads to end them (`exit_group` →
    /// `zap_other_threads`): like a signal, that is no work done for them, and the exit
    /// handler the main thread ran meanwhile is charged nothing.
    #[test]
    fn an_exit_is_no_work_for_the_threads_it_wakes() {
        let mut sim = Sim::new();
        let (worker, main) = (thread(1, 2, "app"), thread(1, 3, "app"));
        for cycle in 0..100 {
            let c = cycle as f64 * 10.0;
            sim.run(&worker, c, c + 2.0, &["w_loop", "lookup_row"]);
            let by = if cycle == 99 {
                By::Thread(
                    main.clone(),
                    &[
                        "main",
                        "on_term",
                        "c:_exit",
                        "k:do_group_exit",
                        "k:zap_other_threads",
                    ],
                )
            } else {
                By::Timer
            };
            sim.wait(
                &worker,
                c + 2.0,
                c + 10.0,
                &["w_loop", "c:nanosleep"],
                Cause::Sleep,
                by,
            );
        }
        sim.run(&main, 990.0, 1000.0, &["main", "on_term"]);
        let (ev, a) = sim.analyze(1.0);
        let r = a.resolved.as_ref().expect("a timeline");
        assert_eq!(share(&ev, &a, "on_term"), 0.0, "{:?}", r.routes);
        assert!(share(&ev, &a, "lookup_row") > 0.95, "{:?}", r.routes);
    }

    /// Think time through the program's own sleep helper (a function that does nothing but
    /// sleep, called from the loop) is idle like a sleep called from the loop directly.
    #[test]
    fn a_sleep_helper_is_think_time() {
        let mut sim = Sim::new();
        let t = thread(1, 2, "app");
        for cycle in 0..100 {
            let c = cycle as f64 * 10.0;
            sim.run(&t, c, c + 2.0, &["main", "commit"]);
            sim.wait(
                &t,
                c + 2.0,
                c + 10.0,
                &["main", "sleep_us", "c:nanosleep"],
                Cause::Sleep,
                By::Timer,
            );
        }
        let (ev, a) = sim.analyze(1.0);
        let r = a.resolved.as_ref().expect("a timeline");
        assert!(
            share(&ev, &a, "commit") > 0.95,
            "{}",
            share(&ev, &a, "commit")
        );
        assert_eq!(share(&ev, &a, "sleep_us"), 0.0);
        assert!(
            (r.idle_ns / 1e6 - 800.0).abs() < 1.0,
            "idle {}",
            r.idle_ns / 1e6
        );
    }

    /// A backend's step that sleeps through the program's sleep helper (a function that only
    /// sleeps, called from that step alone, now and then preempted in it): the requests waited
    /// for the step, which the helper does not name.
    #[test]
    fn a_sleep_helper_names_its_caller() {
        let mut sim = Sim::new();
        let (w, b) = (thread(1, 2, "app"), thread(1, 3, "app"));
        for cycle in 0..100 {
            let c = cycle as f64 * 8.0;
            sim.run(&w, c, c + 1.0, &["w_loop", "parse"]);
            sim.wait(
                &w,
                c + 1.0,
                c + 7.0,
                &["w_loop", "call_backend", "c:read", "k:pipe_read"],
                Cause::Io,
                By::Thread(b.clone(), &["b_loop", "c:write"]),
            );
            sim.run(&w, c + 7.0, c + 8.0, &["w_loop", "reply"]);
            sim.wait(
                &b,
                (c - 1.0).max(0.0),
                c + 1.0,
                &["b_loop", "c:read", "k:pipe_read"],
                Cause::Io,
                By::Thread(w.clone(), &["w_loop", "call_backend", "c:write"]),
            );
            sim.run(&b, c + 1.0, c + 2.9, &["b_loop", "slow_step"]);
            // Now and then preempted in the helper before it sleeps (a busy host).
            if cycle % 10 == 0 {
                sim.wait(
                    &b,
                    c + 2.9,
                    c + 3.0,
                    &["b_loop", "slow_step", "sleep_us"],
                    Cause::RunQueue,
                    By::Timer,
                );
            } else {
                sim.run(&b, c + 2.9, c + 3.0, &["b_loop", "slow_step"]);
            }
            sim.wait(
                &b,
                c + 3.0,
                c + 7.0,
                &["b_loop", "slow_step", "sleep_us", "c:nanosleep"],
                Cause::Sleep,
                By::Timer,
            );
        }
        let (ev, a) = sim.analyze(1.0);
        let r = a.resolved.as_ref().expect("a timeline");
        assert!(share(&ev, &a, "slow_step") > 0.7, "{:?}", r.routes);
        assert_eq!(share(&ev, &a, "sleep_us"), 0.0, "{:?}", r.routes);
    }

    /// A lock handed on through a convoy: worker A waits for the lock while the flusher holds
    /// it; worker B, which queued for it after parsing its own request, gets it first and wakes
    /// A. A's wait is the flusher's (and B's short hold's), not B's parsing before it queued.
    #[test]
    fn a_lock_handed_on_is_charged_to_its_holders() {
        let mut sim = Sim::new();
        let (h, a, b) = (
            thread(1, 2, "app"),
            thread(1, 3, "app"),
            thread(1, 4, "app"),
        );
        for cycle in 0..40 {
            let c = cycle as f64 * 50.0;
            sim.run(&h, c, c + 6.0, &["h_loop", "flush"]);
            sim.wait(
                &h,
                c + 6.0,
                c + 50.0,
                &["h_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
            sim.run(&b, c, c + 2.0, &["w_loop", "parse"]);
            sim.wait(
                &b,
                c + 2.0,
                c + 6.0,
                &["w_loop", "update", "c:pthread_mutex_lock"],
                Cause::Lock,
                By::Thread(h.clone(), &["h_loop", "flush", "c:pthread_mutex_unlock"]),
            );
            sim.run(&b, c + 6.0, c + 7.0, &["w_loop", "update"]);
            sim.wait(
                &b,
                c + 7.0,
                c + 50.0,
                &["w_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
            sim.wait(
                &a,
                c + 1.0,
                c + 7.0,
                &["w_loop", "update", "c:pthread_mutex_lock"],
                Cause::Lock,
                By::Thread(b.clone(), &["w_loop", "update", "c:pthread_mutex_unlock"]),
            );
            sim.run(&a, c + 7.0, c + 8.0, &["w_loop", "update"]);
            sim.wait(
                &a,
                c + 8.0,
                c + 51.0,
                &["w_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
        }
        let (ev, an) = sim.analyze(2.0);
        // Per cycle: 14 ms of requests; flush 4 (B's wait) + 5 (A's, through B's), parse 2
        // (B's own), update 3; with B's parsing charged to A's wait, parse would take 3.
        let (flush, parse) = (share(&ev, &an, "flush"), share(&ev, &an, "parse"));
        assert!((flush - 9.0 / 14.0).abs() < 0.03, "flush {flush}");
        assert!((parse - 2.0 / 14.0).abs() < 0.03, "parse {parse}");
    }

    /// A wait the kernel ended through a kernel thread (a journal commit) is charged to the
    /// program function that blocked, with the kernel thread as its reason, never to the
    /// kernel thread's own functions.
    #[test]
    fn kernel_thread_wakers_charge_the_blocked_function() {
        let mut sim = Sim::new();
        let (w, jbd2) = (thread(1, 3, "app"), thread(300, 300, "jbd2/vda1-8"));
        for cycle in 0..40 {
            let c = cycle as f64 * 20.0;
            sim.run(&w, c, c + 2.0, &["w_loop", "handle", "encode"]);
            sim.wait(
                &w,
                c + 2.0,
                c + 12.0,
                &[
                    "w_loop",
                    "handle",
                    "audit_log",
                    "c:fdatasync",
                    "k:ext4_sync_file",
                    "k:jbd2_log_wait_commit",
                    "k:schedule",
                ],
                Cause::Io,
                By::KernelThread(
                    jbd2.clone(),
                    &[
                        "k:kjournald2",
                        "k:jbd2_journal_commit_transaction",
                        "k:__wake_up",
                    ],
                ),
            );
            sim.run(&jbd2, c + 3.0, c + 11.0, &["k:kjournald2", "k:iowrite16"]);
            sim.wait(
                &w,
                c + 12.0,
                c + 20.0,
                &["w_loop", "c:accept", "k:inet_csk_accept", "k:schedule"],
                Cause::Io,
                By::Thread(thread(2, 5, "client"), &["client_main", "c:connect"]),
            );
        }
        let (ev, a) = sim.analyze(1.0);
        assert!(
            share(&ev, &a, "audit_log") > 0.7,
            "audit_log {}",
            share(&ev, &a, "audit_log")
        );
        assert_eq!(share(&ev, &a, "iowrite16"), 0.0);
        let e = Explanation::new(&ev, &a, crate::graph::Method::CriticalPath, None, 3);
        assert_eq!(e.functions[0].function, "audit_log");
        let why = e.functions[0].why.as_deref().unwrap();
        assert!(
            why.contains("blocked in audit_log (io, ended by [jbd2])"),
            "{why}"
        );
    }

    /// A wait wrapper called for every kind of wait is not named: its caller is (a sleep taken
    /// while holding the lock requests wait for).
    #[test]
    fn wrappers_name_their_callers() {
        let mut sim = Sim::new();
        let (m, w) = (thread(1, 2, "app"), thread(1, 3, "app"));
        for cycle in 0..40 {
            let c = cycle as f64 * 20.0;
            // The maintenance thread sleeps 3 ms holding the lock, then 17 ms between runs.
            sim.wait(
                &m,
                c,
                c + 3.0,
                &["m_loop", "maintenance", "wait_event", "c:nanosleep"],
                Cause::Sleep,
                By::Timer,
            );
            sim.run(&m, c + 3.0, c + 4.0, &["m_loop", "maintenance"]);
            sim.wait(
                &m,
                c + 4.0,
                c + 20.0,
                &["m_loop", "wait_event", "c:nanosleep"],
                Cause::Sleep,
                By::Timer,
            );
            sim.wait(
                &w,
                c + 0.5,
                c + 4.0,
                &["w_loop", "handle", "c:pthread_mutex_lock"],
                Cause::Lock,
                By::Thread(
                    m.clone(),
                    &["m_loop", "maintenance", "c:pthread_mutex_unlock"],
                ),
            );
            sim.run(&w, c + 4.0, c + 5.0, &["w_loop", "handle"]);
            sim.wait(
                &w,
                c + 5.0,
                c + 20.5,
                &["w_loop", "wait_event", "c:poll"],
                Cause::Poll,
                By::Timer,
            );
        }
        let (ev, a) = sim.analyze(1.0);
        assert!(
            share(&ev, &a, "maintenance") > 0.7,
            "maintenance {}",
            share(&ev, &a, "maintenance")
        );
        assert_eq!(share(&ev, &a, "wait_event"), 0.0);
    }

    /// Two threads serving a client's connections that now and then wait for each other (one
    /// appending to the audit file while the other holds its inode lock) are both request
    /// threads: a light wait makes no server of the one waited for.
    #[test]
    fn peers_that_rarely_wait_for_each_other_are_both_requests() {
        let mut sim = Sim::new();
        let conns = [
            (thread(1, 3, "srv"), thread(2, 5, "client")),
            (thread(1, 4, "srv"), thread(2, 6, "client")),
        ];
        for cycle in 0..40 {
            let c = cycle as f64 * 20.0;
            for (i, (w, client)) in conns.iter().enumerate() {
                let c = c + i as f64 * 0.5;
                sim.run(w, c, c + 2.0, &["w_loop", "handle", "encode"]);
                let mut synced = c + 2.0;
                if i == 0 && cycle % 10 == 0 {
                    // Now and then the other connection holds the file's lock.
                    sim.wait(
                        w,
                        c + 2.0,
                        c + 2.1,
                        &["w_loop", "handle", "audit_log", "c:write", "k:down_write"],
                        Cause::Lock,
                        By::Thread(
                            conns[1].0.clone(),
                            &["w_loop", "handle", "audit_log", "c:write", "k:up_write"],
                        ),
                    );
                    synced = c + 2.1;
                }
                sim.wait(
                    w,
                    synced,
                    c + 8.0,
                    &["w_loop", "handle", "audit_log", "c:fdatasync", "k:schedule"],
                    Cause::Io,
                    By::Interrupt(&["k:blk_mq_end_request", "k:try_to_wake_up"]),
                );
                sim.wait(
                    w,
                    c + 8.0,
                    c + 20.0,
                    &["w_loop", "c:recv", "k:sk_wait_data", "k:schedule"],
                    Cause::Io,
                    By::Thread(client.clone(), &["client_main", "issue", "c:send"]),
                );
                // The client waits for the reply, then thinks.
                sim.wait(
                    client,
                    c,
                    c + 8.0,
                    &[
                        "client_main",
                        "issue",
                        "c:recv",
                        "k:sk_wait_data",
                        "k:schedule",
                    ],
                    Cause::Io,
                    By::Thread(w.clone(), &["w_loop", "handle", "c:send"]),
                );
                sim.wait(
                    client,
                    c + 8.0,
                    c + 20.0,
                    &["client_main", "c:usleep"],
                    Cause::Sleep,
                    By::Timer,
                );
            }
        }
        let (ev, a) = sim.analyze(1.0);
        let r = a.resolved.as_ref().unwrap();
        let mut roots: Vec<u32> = r
            .roots
            .iter()
            .map(|&t| ev.threads[t as usize].tid)
            .collect();
        roots.sort_unstable();
        assert_eq!(roots, [3, 4]);
        assert!(
            share(&ev, &a, "audit_log") > 0.65,
            "audit_log {}",
            share(&ev, &a, "audit_log")
        );
    }

    /// A thread burning CPU that no request waits for is not a request thread and is charged
    /// nothing, however much it runs.
    #[test]
    fn unconnected_burners_are_not_request_threads() {
        let mut sim = Sim::new();
        let (h, w, b) = (
            thread(1, 2, "app"),
            thread(1, 3, "app"),
            thread(1, 4, "app"),
        );
        for cycle in 0..40 {
            let c = cycle as f64 * 20.0;
            sim.run(&b, c, c + 20.0, &["b_loop", "burn"]);
            sim.run(&h, c, c + 4.0, &["h_loop", "flush"]);
            sim.wait(
                &h,
                c + 4.0,
                c + 20.0,
                &["h_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
            sim.wait(
                &w,
                c + 1.0,
                c + 4.0,
                &["w_loop", "handle", "c:pthread_mutex_lock"],
                Cause::Lock,
                By::Thread(h.clone(), &["h_loop", "flush", "c:pthread_mutex_unlock"]),
            );
            sim.run(&w, c + 4.0, c + 5.0, &["w_loop", "handle"]);
            sim.wait(
                &w,
                c + 5.0,
                c + 21.0,
                &["w_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
        }
        let (ev, a) = sim.analyze(1.0);
        let r = a.resolved.as_ref().unwrap();
        assert!(!r.roots.iter().any(|&t| ev.threads[t as usize].tid == 4));
        assert_eq!(share(&ev, &a, "burn"), 0.0);
        assert!(share(&ev, &a, "flush") > 0.6);
    }

    /// A lock holder's section, waited for by a request thread, in a window where it takes
    /// `section_ms` and the request thread then waits `runq_ms` for a CPU.
    fn lock_window(section_ms: f64, runq_ms: f64) -> (Evidence, Analysis) {
        let mut sim = Sim::new();
        let (h, w) = (thread(1, 2, "app"), thread(1, 3, "app"));
        for cycle in 0..40 {
            let c = cycle as f64 * 40.0;
            sim.run(&h, c, c + section_ms, &["h_loop", "section"]);
            sim.wait(
                &h,
                c + section_ms,
                c + 40.0,
                &["h_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
            sim.run(&w, c, c + 1.0, &["w_loop", "parse"]);
            sim.runq_ms = runq_ms;
            sim.wait(
                &w,
                c + 1.0,
                c + section_ms,
                &["w_loop", "handle", "c:pthread_mutex_lock"],
                Cause::Lock,
                By::Thread(h.clone(), &["h_loop", "section", "c:pthread_mutex_unlock"]),
            );
            sim.runq_ms = 0.0;
            let end = c + section_ms + runq_ms + 2.0;
            sim.run(&w, c + section_ms + runq_ms, end, &["w_loop", "reply"]);
            sim.wait(
                &w,
                end,
                c + 40.0,
                &["w_loop", "c:usleep"],
                Cause::Sleep,
                By::Timer,
            );
        }
        sim.analyze(1.6)
    }

    /// A deploy makes the section 1.5 times longer while a neighbour starts burning the CPUs:
    /// the request now waits longer for a CPU than for the section. The section's share of the
    /// requests' whole time falls, its share of their time outside the run queue grows (as
    /// does the requests' time in it per second), and `regressions` ranks it first by the
    /// former.
    #[test]
    fn a_busy_neighbour_does_not_hide_the_slower_function() {
        let (eb, ab) = lock_window(10.0, 0.0);
        let (ea, aa) = lock_window(15.0, 10.0);
        let section = |ev: &Evidence, a: &Analysis| {
            let id = ev.function_id("section").unwrap();
            let r = a.resolved.as_ref().unwrap();
            (r.share(id), r.own_share(id))
        };
        let ((whole_b, own_b), (whole_a, own_a)) = (section(&eb, &ab), section(&ea, &aa));
        assert!(whole_a < whole_b, "of the whole: {whole_b} → {whole_a}");
        assert!(
            own_a > own_b + 0.05,
            "outside the run queue: {own_b} → {own_a}"
        );
        let suspects = crate::graph::regress::regressions(
            (&eb, &ab),
            (&ea, &aa),
            &crate::graph::regress::Dispersion::poisson(),
        );
        let s = &suspects[0];
        assert_eq!(s.function, "section", "{suspects:#?}");
        assert_eq!(
            (s.critical_path_before, s.critical_path_after),
            (own_b, own_a)
        );
        assert_eq!(s.score, own_a - own_b);
        let (before, after) = (s.path_per_s_before.unwrap(), s.path_per_s_after.unwrap());
        // 9 and 14 ms of each 40-ms cycle.
        assert!((before - 9.0 / 40.0).abs() < 0.01, "{s:#?}");
        assert!((after - 14.0 / 40.0).abs() < 0.01, "{s:#?}");
    }

    /// Two request threads that take turns holding a lock across a sync: each blocks in
    /// `audit_log` itself and waits for the other while it is blocked there. The reason names
    /// the function's whole share and both routes, not only the heaviest.
    #[test]
    fn a_reason_names_every_heavy_route() {
        let mut sim = Sim::new();
        let (a, b) = (thread(1, 2, "app"), thread(1, 3, "app"));
        let jbd2 = thread(300, 300, "jbd2/vda1-8");
        let sync: &[&str] = &[
            "w_loop",
            "handle",
            "audit_log",
            "c:fdatasync",
            "k:ext4_sync_file",
            "k:jbd2_log_wait_commit",
            "k:schedule",
        ];
        let commit: &[&str] = &["k:kjournald2", "k:jbd2_journal_commit_transaction"];
        for cycle in 0..40 {
            let c = cycle as f64 * 20.0;
            let (holder, waiter) = if cycle % 2 == 0 { (&a, &b) } else { (&b, &a) };
            sim.run(holder, c, c + 1.0, &["w_loop", "handle", "audit_log"]);
            sim.wait(
                holder,
                c + 1.0,
                c + 9.0,
                sync,
                Cause::Io,
                By::KernelThread(jbd2.clone(), commit),
            );
            sim.run(&jbd2, c + 2.0, c + 8.0, &["k:kjournald2", "k:iowrite16"]);
            sim.wait(
                waiter,
                c + 1.0,
                c + 9.0,
                &["w_loop", "handle", "audit_log", "c:pthread_mutex_lock"],
                Cause::Lock,
                By::Thread(
                    holder.clone(),
                    &["w_loop", "handle", "audit_log", "c:pthread_mutex_unlock"],
                ),
            );
            for t in [holder, waiter] {
                sim.run(t, c + 9.0, c + 10.0, &["w_loop", "handle", "encode"]);
                sim.wait(
                    t,
                    c + 10.0,
                    c + 20.0,
                    &["w_loop", "c:accept", "k:inet_csk_accept", "k:schedule"],
                    Cause::Io,
                    By::Thread(thread(2, 5, "client"), &["client_main", "c:connect"]),
                );
            }
        }
        let (ev, an) = sim.analyze(0.8);
        assert_eq!(an.resolved.as_ref().unwrap().roots.len(), 2);
        let e = Explanation::new(&ev, &an, crate::graph::Method::CriticalPath, None, 3);
        assert_eq!(e.functions[0].function, "audit_log");
        let why = e.functions[0].why.as_deref().unwrap();
        let total = (100.0 * share(&ev, &an, "audit_log")).round();
        assert!(
            why.starts_with(&format!(
                "requests spent {total:.0}% of their time in audit_log: "
            )),
            "{why}"
        );
        assert!(
            why.contains("% blocked in it (io, ended by [jbd2])")
                && why.contains("% waiting (lock) for app (pid 1, tid "),
            "{why}"
        );
    }

    /// A worker that compacts a cache on CPU between requests, then sleeps: without request
    /// boundaries its compaction looks like request work and ranks above the lock its requests
    /// wait for; with the probe's calls, only the time inside them counts.
    #[test]
    fn probed_requests_leave_out_the_work_between_them() {
        let run = |probed: bool| {
            let mut sim = Sim::new();
            let (h, w) = (thread(1, 2, "app"), thread(1, 3, "app"));
            for cycle in 0..40 {
                let c = cycle as f64 * 20.0;
                sim.run(&h, c, c + 7.0, &["h_loop", "flush"]);
                sim.wait(
                    &h,
                    c + 7.0,
                    c + 20.0,
                    &["h_loop", "c:usleep"],
                    Cause::Sleep,
                    By::Timer,
                );
                if probed {
                    sim.request(&w, c, c + 8.0);
                }
                sim.run(&w, c, c + 1.0, &["w_loop", "handle", "parse"]);
                sim.wait(
                    &w,
                    c + 1.0,
                    c + 7.0,
                    &["w_loop", "handle", "c:pthread_mutex_lock"],
                    Cause::Lock,
                    By::Thread(h.clone(), &["h_loop", "flush", "c:pthread_mutex_unlock"]),
                );
                sim.run(&w, c + 7.0, c + 8.0, &["w_loop", "handle", "reply"]);
                sim.run(&w, c + 8.0, c + 16.0, &["w_loop", "compact"]);
                sim.wait(
                    &w,
                    c + 16.0,
                    c + 20.0,
                    &["w_loop", "c:usleep"],
                    Cause::Sleep,
                    By::Timer,
                );
            }
            sim.analyze(0.8)
        };
        let (ev, a) = run(false);
        assert!(
            share(&ev, &a, "compact") > share(&ev, &a, "flush"),
            "without probes compact {} flush {}",
            share(&ev, &a, "compact"),
            share(&ev, &a, "flush")
        );
        let (ev, a) = run(true);
        let r = a.resolved.as_ref().unwrap();
        assert_eq!(r.roots.len(), 1);
        assert_eq!(ev.threads[r.roots[0] as usize].tid, 3);
        assert_eq!(share(&ev, &a, "compact"), 0.0);
        let flush = share(&ev, &a, "flush");
        assert!((flush - 6.0 / 8.0).abs() < 0.02, "flush {flush}");
        // Per cycle 8 ms of compaction and 4 ms of sleep are idle.
        assert!(
            (r.idle_ns / 1e6 - 40.0 * 12.0).abs() < 1.0,
            "idle {}",
            r.idle_ns / 1e6
        );
        assert!((r.request_ns / 1e6 - 40.0 * 8.0).abs() < 1.0);
    }
}
