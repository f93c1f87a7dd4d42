//! Two hot functions with a 3:1 split of identical CPU work: `hot_a` must get 75% of the
//! on-CPU samples under `run_cpu_ratio`, `hot_b` 25%.
//!
//! Usage: `cpu_ratio [SECONDS]`. Summary: rounds done and burner iterations per round.

use critpath_tests::workload::{Args, Deadline, burn, iterations_for, print_summary};
use std::time::Duration;

#[inline(never)]
fn main() {
    let args = Args::parse(&[], &[]);
    let deadline = Deadline::after(args.duration);
    // One round (3 units in hot_a + 1 in hot_b) takes about 1 ms.
    let unit = iterations_for(Duration::from_micros(250));
    let rounds = run_cpu_ratio(deadline, unit);
    print_summary(
        "cpu_ratio",
        &[("rounds", rounds), ("round_iterations", 4 * unit)],
    );
}

#[inline(never)]
fn run_cpu_ratio(deadline: Deadline, unit: u64) -> u64 {
    let mut rounds = 0;
    while !deadline.passed() {
        hot_a(3 * unit);
        hot_b(unit);
        rounds += 1;
    }
    rounds
}

#[inline(never)]
fn hot_a(iterations: u64) -> u64 {
    burn(iterations, 0xa)
}

#[inline(never)]
fn hot_b(iterations: u64) -> u64 {
    burn(iterations, 0xb)
}
