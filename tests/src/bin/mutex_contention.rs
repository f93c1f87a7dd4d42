//! Lock contention with a known culprit: `lock_holder` keeps a `std::sync::Mutex` held for ~2 ms
//! of CPU (then `--held-sleep-us` off CPU, default 0) at a time in `critical_section_work`, while `--waiters W` threads (default 3) in `lock_waiter`
//! block in `acquire_shared_lock`. Each acquisition is followed by ~20 µs of work, so waiters
//! queue on the lock instead of hammering it whenever the holder lets go. `--red-herring` adds
//! `housekeeping_burn`, a CPU-hungry thread that never touches the lock: the busiest thread, but
//! not on the critical path. `--herring-threads N` (default 1) runs it on N threads, at nice
//! `--herring-nice` (default 19; at 0 they compete with the holder for the CPU as equals, and
//! `housekeeping_burn` is then the busiest function by far on a small machine).
//!
//! Usage: `mutex_contention [SECONDS] [--waiters W] [--held-sleep-us US] [--red-herring
//! [--herring-threads N] [--herring-nice N]]`.
//! Summary: holder iterations, waiter acquisitions, housekeeping chunks.

use critpath_tests::workload::{Args, Deadline, burn, iterations_for, print_summary};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

#[inline(never)]
fn main() {
    let args = Args::parse(
        &[
            ("waiters", 3),
            ("held-sleep-us", 0),
            ("herring-threads", 1),
            ("herring-nice", 19),
        ],
        &["red-herring"],
    );
    let deadline = Deadline::after(args.duration);
    let held = iterations_for(Duration::from_millis(2));
    let held_sleep = Duration::from_micros(args.option("held-sleep-us"));
    // Long enough (~5% of a cycle) for a woken waiter to get scheduled and take the lock.
    let outside = iterations_for(Duration::from_micros(100));
    let between = iterations_for(Duration::from_micros(20));
    let lock = Arc::new(Mutex::new(0_u64));

    let holder = {
        let lock = Arc::clone(&lock);
        spawn("lock-holder", move || {
            lock_holder(&lock, deadline, held, held_sleep, outside)
        })
    };
    let waiters: Vec<_> = (0..args.option("waiters"))
        .map(|index| {
            let lock = Arc::clone(&lock);
            spawn(&format!("lock-waiter-{index}"), move || {
                lock_waiter(&lock, deadline, between)
            })
        })
        .collect();
    let housekeeping: Vec<_> = if args.switch("red-herring") {
        let chunk = iterations_for(Duration::from_micros(100));
        let nice = args.option("herring-nice") as i32;
        (0..args.option("herring-threads"))
            .map(|_| {
                spawn("housekeeping", move || {
                    housekeeping_burn(deadline, chunk, nice)
                })
            })
            .collect()
    } else {
        Vec::new()
    };

    let holder_iterations = join(holder);
    let waiter_acquisitions = waiters.into_iter().map(join).sum();
    let housekeeping_chunks = housekeeping.into_iter().map(join).sum();
    print_summary(
        "mutex_contention",
        &[
            ("holder_iterations", holder_iterations),
            ("waiter_acquisitions", waiter_acquisitions),
            ("waiters", args.option("waiters")),
            ("red_herring", u64::from(args.switch("red-herring"))),
            ("housekeeping_chunks", housekeeping_chunks),
        ],
    );
}

fn spawn(name: &str, body: impl FnOnce() -> u64 + Send + 'static) -> JoinHandle<u64> {
    let builder = thread::Builder::new().name(name.to_owned());
    builder
        .spawn(body)
        .unwrap_or_else(|error| panic!("spawning thread {name}: {error}"))
}

fn join(handle: JoinHandle<u64>) -> u64 {
    handle.join().expect("workload thread panicked")
}

#[inline(never)]
fn lock_holder(
    lock: &Mutex<u64>,
    deadline: Deadline,
    held: u64,
    held_sleep: Duration,
    outside: u64,
) -> u64 {
    let mut iterations = 0;
    while !deadline.passed() {
        let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        *guard = guard.wrapping_add(critical_section_work(held, held_sleep));
        drop(guard);
        burn(outside, 0x0075);
        iterations += 1;
    }
    iterations
}

#[inline(never)]
fn critical_section_work(iterations: u64, sleep: Duration) -> u64 {
    let v = burn(iterations, 0xc5);
    if !sleep.is_zero() {
        // Off CPU with the lock held, as a critical section doing I/O would be.
        thread::sleep(sleep);
    }
    v
}

#[inline(never)]
fn lock_waiter(lock: &Mutex<u64>, deadline: Deadline, between: u64) -> u64 {
    let mut acquisitions = 0;
    while !deadline.passed() {
        acquire_shared_lock(lock);
        burn(between, 0x3a17);
        acquisitions += 1;
    }
    acquisitions
}

#[inline(never)]
fn acquire_shared_lock(lock: &Mutex<u64>) {
    let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
    *guard += 1;
}

/// Burns CPU at `nice` (default 19) until the deadline. The low priority keeps it from stealing
/// CPU from the lock holder on a small machine (on 2 cores it would otherwise halve the holder's
/// pace), so it is truly off the critical path while still being the busiest thread.
#[inline(never)]
fn housekeeping_burn(deadline: Deadline, chunk: u64, nice: i32) -> u64 {
    // SAFETY: plain syscalls on this thread's own id, no pointers involved.
    let niced =
        unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
    if niced != 0 {
        eprintln!(
            "mutex_contention: renicing housekeeping: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut chunks = 0;
    while !deadline.passed() {
        burn(chunk, 0x4b);
        chunks += 1;
    }
    chunks
}
