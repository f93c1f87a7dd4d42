//! Runs a [`Spec`]: request threads serving requests that arrive open-loop (Poisson, at a fixed
//! rate) or back to back (closed loop, to measure capacity), each request's arrival, start and
//! end recorded exactly.

use std::collections::HashMap;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::spec::{Rng, Spec, Stage};
use crate::work;

/// How requests arrive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// Poisson arrivals at this many requests per second (open loop: arrivals never wait for
    /// the program).
    Rate(f64),
    /// Every request thread starts its next request as soon as the last ends.
    Closed,
}

/// How to run a program.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// How requests arrive.
    pub load: Load,
    /// How long requests arrive.
    pub duration: Duration,
    /// Requests arriving before this are left out of the summary.
    pub warmup: Duration,
    /// Work scale per function name (`w17` → 1.2): the perturbation knobs.
    pub scales: HashMap<String, f64>,
    /// Seeds the arrival times.
    pub seed: u64,
    /// Scale changes during the run (a deploy, a stall), applied at their times.
    pub changes: Vec<Change>,
}

/// A change of one work function's scale at a moment of the run: a deploy that makes it slower
/// from then on, or the start and the end of a temporary stall.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// When, since the run started.
    pub at: Duration,
    /// The function (`w17`).
    pub function: String,
    /// Its scale from then on (replaces the run's scale).
    pub scale: f64,
}

/// One request, in nanoseconds since the run started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Request {
    /// When it arrived (was due).
    pub arrival_ns: u64,
    /// When a request thread took it.
    pub start_ns: u64,
    /// When it was answered.
    pub end_ns: u64,
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Requests completed after the warm-up.
    pub requests: usize,
    /// Requests that arrived but were not served before the run ended (an overloaded program).
    pub unfinished: usize,
    /// Completed requests per second of the measured span.
    pub throughput: f64,
    /// Median latency (end − arrival), µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// CPU seconds per work function over the whole run.
    pub cpu_seconds: std::collections::BTreeMap<String, f64>,
}

/// The result of a run.
#[derive(Debug)]
pub struct Outcome {
    /// Every completed request, in completion order per request thread.
    pub requests: Vec<Request>,
    /// Requests not served in time.
    pub unfinished: usize,
    /// CPU seconds spent in each work function over the run (background threads included).
    pub cpu_seconds: std::collections::BTreeMap<String, f64>,
    /// The configuration used.
    pub config: RunConfig,
}

/// Latency of the requests that arrived in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct WindowLatency {
    /// Requests that arrived in the window and completed.
    pub requests: usize,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
}

impl WindowLatency {
    /// Latency of the requests arriving in `[from, to)` seconds.
    pub fn of(requests: &[Request], (from, to): (f64, f64)) -> WindowLatency {
        Self::of_ns(requests, (from * 1e9) as u64..(to * 1e9) as u64)
    }

    /// Latency of the requests arriving in `arrivals` (ns since the run started).
    pub fn of_ns(requests: &[Request], arrivals: std::ops::Range<u64>) -> WindowLatency {
        let mut latencies: Vec<u64> = requests
            .iter()
            .filter(|r| arrivals.contains(&r.arrival_ns))
            .map(|r| r.end_ns - r.arrival_ns)
            .collect();
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .map_or(0.0, |&ns| ns as f64 / 1e3)
        };
        WindowLatency {
            requests: latencies.len(),
            p50_us: pct(0.5),
            p99_us: pct(0.99),
        }
    }
}

impl Outcome {
    /// Latency percentiles and throughput after the warm-up.
    pub fn summary(&self) -> Summary {
        let warmup = self.config.warmup.as_nanos() as u64;
        let latency = WindowLatency::of_ns(&self.requests, warmup..u64::MAX);
        let span = (self.config.duration - self.config.warmup).as_secs_f64();
        Summary {
            requests: latency.requests,
            unfinished: self.unfinished,
            throughput: latency.requests as f64 / span,
            p50_us: latency.p50_us,
            p99_us: latency.p99_us,
            cpu_seconds: self.cpu_seconds.clone(),
        }
    }

    /// The request log as CSV: `arrival_ns,start_ns,end_ns`.
    pub fn log_csv(&self) -> String {
        let mut out = String::from("arrival_ns,start_ns,end_ns\n");
        for r in &self.requests {
            out.push_str(&format!("{},{},{}\n", r.arrival_ns, r.start_ns, r.end_ns));
        }
        out
    }
}

type Job = (usize, Sender<()>);

/// What every thread needs to do work. Pool and device threads hold only this, so their
/// queues close when the request threads are done.
struct Work {
    spec: Spec,
    /// Units per spec function, scaled (changed by [`Change`]s during a run).
    units: Vec<AtomicU64>,
    /// Scale per spec function, as `f64` bits.
    scales: Vec<AtomicU64>,
    /// CPU time spent in each spec function.
    cpu_ns: Vec<AtomicU64>,
}

/// What request threads use to reach locks, pools and devices.
struct Shared {
    work: Arc<Work>,
    locks: Vec<Mutex<()>>,
    pools: Vec<Sender<Job>>,
    devices: Vec<Sender<RawFd>>,
}

impl Shared {
    fn work(&self, function: usize) {
        self.work.work(function);
    }
}

impl Work {
    fn scale(&self, function: usize) -> f64 {
        f64::from_bits(self.scales[function].load(Ordering::Relaxed))
    }

    fn set_scale(&self, function: usize, scale: f64) {
        let units = (self.spec.functions[function].units as f64 * scale).round() as u64;
        self.scales[function].store(scale.to_bits(), Ordering::Relaxed);
        self.units[function].store(units, Ordering::Relaxed);
    }

    fn work(&self, function: usize) {
        self.work_then_wait(function, Duration::ZERO);
    }

    fn work_then_wait(&self, function: usize, wait: Duration) {
        let started = thread_cpu_ns();
        work::run_then_wait(
            self.spec.functions[function].index,
            self.units[function].load(Ordering::Relaxed),
            wait,
        );
        self.cpu_ns[function].fetch_add(thread_cpu_ns() - started, Ordering::Relaxed);
    }
}

/// CPU time of the calling thread, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: fills a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Spawns a named thread (the name shows in profiles as the thread's `comm`).
fn spawn<T: Send + 'static>(
    name: String,
    body: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name)
        .spawn(body)
        .expect("spawning a thread")
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two descriptors we then own.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "pipe: {}", std::io::Error::last_os_error());
    // SAFETY: both are fresh descriptors owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Runs a program and returns every request it served.
pub fn run(spec: &Spec, config: &RunConfig) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();

    let mut pools = Vec::new();
    let mut pool_rx = Vec::new();
    for _ in &spec.pools {
        let (tx, rx) = mpsc::channel::<Job>();
        pools.push(tx);
        pool_rx.push(Arc::new(Mutex::new(rx)));
    }
    let mut devices = Vec::new();
    let mut device_rx = Vec::new();
    for _ in &spec.devices {
        let (tx, rx) = mpsc::channel::<RawFd>();
        devices.push(tx);
        device_rx.push(rx);
    }
    let work = Arc::new(Work {
        spec: spec.clone(),
        units: spec.functions.iter().map(|_| AtomicU64::new(0)).collect(),
        scales: spec.functions.iter().map(|_| AtomicU64::new(0)).collect(),
        cpu_ns: spec.functions.iter().map(|_| AtomicU64::new(0)).collect(),
    });
    for (i, f) in spec.functions.iter().enumerate() {
        work.set_scale(i, config.scales.get(&f.name).copied().unwrap_or(1.0));
    }
    let shared = Arc::new(Shared {
        work: Arc::clone(&work),
        locks: (0..spec.locks).map(|_| Mutex::new(())).collect(),
        pools,
        devices,
    });

    for (p, (pool, rx)) in spec.pools.iter().zip(&pool_rx).enumerate() {
        for w in 0..pool.workers {
            let (shared, rx) = (Arc::clone(&work), Arc::clone(rx));
            threads.push(spawn(format!("pool{p}-{w}"), move || {
                loop {
                    let job = rx.lock().expect("pool queue").recv();
                    let Ok((function, reply)) = job else { break };
                    shared.work(function);
                    let _ = reply.send(());
                }
            }));
        }
    }
    for (i, rx) in device_rx.into_iter().enumerate() {
        let shared = Arc::clone(&work);
        threads.push(spawn(format!("device{i}"), move || {
            let device = &shared.spec.devices[i];
            while let Ok(fd) = rx.recv() {
                // The service time is spent inside the device's function: its wait names it.
                let scale = shared.scale(device.function);
                shared.work_then_wait(
                    device.function,
                    Duration::from_nanos((device.service_micros as f64 * 1e3 * scale) as u64),
                );
                // SAFETY: writes one byte to a pipe the requester keeps open until answered.
                unsafe { libc::write(fd, [1u8].as_ptr().cast(), 1) };
            }
        }));
    }
    for (i, b) in spec.background.iter().enumerate() {
        let (shared, stop, b) = (Arc::clone(&work), Arc::clone(&stop), b.clone());
        threads.push(spawn(format!("housekeeping{i}"), move || {
            // Housekeeping runs at idle priority, as background work usually does: it takes
            // the CPU time requests leave, and stays off their path.
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: changes only this thread's scheduling policy.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                shared.work(b.function);
                let busy = t.elapsed().as_secs_f64();
                std::thread::sleep(Duration::from_secs_f64(busy * (1.0 - b.duty) / b.duty));
            }
        }));
    }

    let start = Instant::now();
    if !config.changes.is_empty() {
        let mut changes: Vec<(usize, Change)> = config
            .changes
            .iter()
            .filter_map(|c| {
                let i = spec.functions.iter().position(|f| f.name == c.function)?;
                Some((i, c.clone()))
            })
            .collect();
        changes.sort_by_key(|(_, c)| c.at);
        let (work, stop) = (Arc::clone(&work), Arc::clone(&stop));
        threads.push(spawn("changes".to_owned(), move || {
            for (function, change) in changes {
                while !stop.load(Ordering::Relaxed) && start.elapsed() < change.at {
                    let left = change.at.saturating_sub(start.elapsed());
                    std::thread::sleep(left.min(Duration::from_millis(50)));
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                work.set_scale(function, change.scale);
            }
        }));
    }
    let ns = move |t: Instant| t.saturating_duration_since(start).as_nanos() as u64;
    let (arrivals_tx, arrivals_rx) = mpsc::channel::<Instant>();
    let arrivals_rx = Arc::new(Mutex::new(arrivals_rx));
    let closed = config.load == Load::Closed;
    let end_at = start + config.duration;
    // Requests still queued this long after arrivals stop are counted unfinished.
    let drain_until = end_at + Duration::from_secs(2);
    let frontends: Vec<_> = (0..spec.frontends)
        .map(|i| {
            let (shared, arrivals) = (Arc::clone(&shared), Arc::clone(&arrivals_rx));
            spawn(format!("frontend{i}"), move || {
                let (answer_r, answer_w) = pipe();
                let mut served = Vec::new();
                loop {
                    let arrival = if closed {
                        let now = Instant::now();
                        if now >= end_at {
                            break;
                        }
                        now
                    } else {
                        match arrivals.lock().expect("arrivals").recv() {
                            Ok(t) => t,
                            Err(_) => break,
                        }
                    };
                    if Instant::now() > drain_until {
                        continue; // drained as unfinished
                    }
                    let started = Instant::now();
                    serve(&shared, &answer_r, &answer_w);
                    served.push(Request {
                        arrival_ns: ns(arrival),
                        start_ns: ns(started),
                        end_ns: ns(Instant::now()),
                    });
                }
                served
            })
        })
        .collect();

    let mut sent = 0usize;
    if let Load::Rate(rate) = config.load {
        let mut rng = Rng::new(config.seed);
        let mut due = start;
        loop {
            // Exponential gaps: Poisson arrivals.
            let gap = -(1.0 - rng.unit()).ln() / rate;
            due += Duration::from_secs_f64(gap);
            if due >= end_at {
                break;
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let _ = arrivals_tx.send(due);
            sent += 1;
        }
    }
    drop(arrivals_tx);
    let mut requests = Vec::new();
    for f in frontends {
        requests.extend(f.join().expect("a request thread"));
    }
    stop.store(true, Ordering::Relaxed);
    let cpu_seconds = spec
        .functions
        .iter()
        .zip(&work.cpu_ns)
        .map(|(f, ns)| (f.name.clone(), ns.load(Ordering::Relaxed) as f64 / 1e9))
        .collect();
    drop(shared); // closes the pools' and devices' queues
    for t in threads {
        let _ = t.join();
    }
    Outcome {
        unfinished: sent.saturating_sub(requests.len()),
        requests,
        cpu_seconds,
        config: config.clone(),
    }
}

fn serve(shared: &Shared, answer_r: &OwnedFd, answer_w: &OwnedFd) {
    for stage in &shared.work.spec.path {
        match stage {
            Stage::Cpu { function } => shared.work(*function),
            Stage::Locked { lock, function } => {
                let _held = shared.locks[*lock].lock().expect("a lock");
                shared.work(*function);
            }
            Stage::Handoff { pool, function } => {
                let (tx, rx) = mpsc::channel();
                let _ = shared.pools[*pool].send((*function, tx));
                let _ = rx.recv();
            }
            Stage::FanOut { pool, functions } => {
                let (tx, rx) = mpsc::channel();
                for &f in functions {
                    let _ = shared.pools[*pool].send((f, tx.clone()));
                }
                drop(tx);
                for _ in functions {
                    let _ = rx.recv();
                }
            }
            Stage::Io { device } => {
                let _ = shared.devices[*device].send(answer_w.as_raw_fd());
                let mut byte = [0u8];
                // SAFETY: reads one byte into a local buffer; blocks until the device answers.
                unsafe { libc::read(answer_r.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
            }
            Stage::Sleep { micros } => std::thread::sleep(Duration::from_micros(*micros)),
        }
    }
}
