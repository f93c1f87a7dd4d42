//! Two hot functions with a 3:1 split of identical CPU work: `hot_a` must get 75% of the
//! on-CPU samples under `run_cpu_ratio`, `hot_b` 25% (inclusive: both call `shared_work`).
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
    // black_box after the call keeps it out of tail position: a tail call would replace this
    // frame with shared_work's and hot_a would vanish from the stacks.
    std::hint::black_box(shared_work(iterations, 0xa))
}

#[inline(never)]
fn hot_b(iterations: u64) -> u64 {
    std::hint::black_box(shared_work(iterations, 0xb))
}

/// The one compiled copy of the loop both hot functions run, so their time per unit of work is
/// identical whatever the optimizer does to each caller (two inlined copies of the loop measured
/// 4.5:1 instead of 3:1 in a release build). The differing seeds keep LLVM from merging the
/// callers into one symbol.
#[inline(never)]
fn shared_work(iterations: u64, seed: u64) -> u64 {
    burn(iterations, seed)
}
