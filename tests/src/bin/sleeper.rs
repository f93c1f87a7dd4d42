//! Off-CPU time with a known total: `run_sleeper` calls `sleep_wait`, which sleeps
//! `--interval-ms` (default 10) per call, until the deadline.
//!
//! Usage: `sleeper [SECONDS] [--interval-ms MS]`. Summary: sleeps and the total sleep time
//! measured around each sleep, to compare with the profiler's blocked time.

use critpath_tests::workload::{Args, Deadline, print_summary};
use std::thread;
use std::time::{Duration, Instant};

#[inline(never)]
fn main() {
    let args = Args::parse(&[("interval-ms", 10)], &[]);
    let deadline = Deadline::after(args.duration);
    let interval_ms = args.option("interval-ms");
    let (sleeps, slept) = run_sleeper(deadline, Duration::from_millis(interval_ms));
    print_summary(
        "sleeper",
        &[
            ("sleeps", sleeps),
            (
                "total_sleep_ns",
                u64::try_from(slept.as_nanos()).unwrap_or(u64::MAX),
            ),
            ("interval_ms", interval_ms),
        ],
    );
}

#[inline(never)]
fn run_sleeper(deadline: Deadline, interval: Duration) -> (u64, Duration) {
    let (mut sleeps, mut slept) = (0, Duration::ZERO);
    while !deadline.passed() {
        slept += sleep_wait(interval);
        sleeps += 1;
    }
    (sleeps, slept)
}

/// Sleeps for `interval` and returns how long the sleep really took.
#[inline(never)]
fn sleep_wait(interval: Duration) -> Duration {
    let start = Instant::now();
    thread::sleep(interval);
    start.elapsed()
}
