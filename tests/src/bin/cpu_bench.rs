//! Fixed CPU work for overhead benchmarks: `--threads T` threads (default: one per CPU) each run
//! `--millions M` million [`burn`] rounds (default 400); prints the wall time it took.
//!
//! Unlike the other workloads it ignores its duration argument: the work is fixed, the time is
//! the measurement.

use std::time::Instant;

use critpath_tests::workload::{Args, burn, print_summary};

#[inline(never)]
fn bench_worker(iterations: u64, seed: u64) -> u64 {
    burn(iterations, seed)
}

#[inline(never)]
fn main() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let args = Args::parse(&[("threads", cpus), ("millions", 400)], &[]);
    let (threads, iterations) = (args.option("threads"), args.option("millions") * 1_000_000);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| std::thread::spawn(move || bench_worker(iterations, 0xbe9c + i)))
        .collect();
    for h in handles {
        h.join().expect("bench worker panicked");
    }
    let elapsed = start.elapsed();
    print_summary(
        "cpu_bench",
        &[
            ("threads", threads),
            ("elapsed_ns", elapsed.as_nanos() as u64),
        ],
    );
}
