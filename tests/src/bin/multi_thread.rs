//! `--threads T` CPU-bound threads (default 4): even-index threads run `mt_worker_alpha`,
//! odd-index ones `mt_worker_beta`, each via `thread_main`, until the deadline.
//!
//! Usage: `multi_thread [SECONDS] [--threads T]`. Summary: burner chunks done per function.

use critpath_tests::workload::{Args, Deadline, burn, iterations_for, print_summary};
use std::thread;
use std::time::Duration;

#[inline(never)]
fn main() {
    let args = Args::parse(&[("threads", 4)], &[]);
    let deadline = Deadline::after(args.duration);
    // Short chunks keep the deadline check frequent but negligible.
    let chunk = iterations_for(Duration::from_micros(100));
    let threads = args.option("threads");
    let handles: Vec<_> = (0..threads)
        .map(|index| {
            thread::Builder::new()
                .name(format!("mt-worker-{index}"))
                .spawn(move || thread_main(index, deadline, chunk))
                .unwrap_or_else(|error| panic!("spawning worker thread {index}: {error}"))
        })
        .collect();
    let (mut alpha, mut beta) = (0, 0);
    for (index, handle) in (0_u64..).zip(handles) {
        let chunks = handle.join().expect("worker thread panicked");
        if index.is_multiple_of(2) {
            alpha += chunks;
        } else {
            beta += chunks;
        }
    }
    print_summary(
        "multi_thread",
        &[
            ("threads", threads),
            ("mt_worker_alpha", alpha),
            ("mt_worker_beta", beta),
        ],
    );
}

#[inline(never)]
fn thread_main(index: u64, deadline: Deadline, chunk: u64) -> u64 {
    if index.is_multiple_of(2) {
        mt_worker_alpha(deadline, chunk)
    } else {
        mt_worker_beta(deadline, chunk)
    }
}

#[inline(never)]
fn mt_worker_alpha(deadline: Deadline, chunk: u64) -> u64 {
    let mut chunks = 0;
    while !deadline.passed() {
        burn(chunk, 0xa1fa);
        chunks += 1;
    }
    chunks
}

#[inline(never)]
fn mt_worker_beta(deadline: Deadline, chunk: u64) -> u64 {
    let mut chunks = 0;
    while !deadline.passed() {
        burn(chunk, 0xbe7a);
        chunks += 1;
    }
    chunks
}
