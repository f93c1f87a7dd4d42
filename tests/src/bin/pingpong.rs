//! A context-switch storm for off-CPU overhead benchmarks: two threads pass one byte back and
//! forth over two pipes `--rounds R` times (default 200 000), each read blocking until the other
//! writes. Run it pinned to one CPU (`taskset -c 0 pingpong`) so every round is two context
//! switches; prints the wall time per round.

use std::io::{Read as _, Write as _};
use std::time::Instant;

use critpath_tests::workload::{Args, print_summary};

#[inline(never)]
fn ping(mut to: std::io::PipeWriter, mut from: std::io::PipeReader, rounds: u64) {
    let mut byte = [0u8; 1];
    for _ in 0..rounds {
        to.write_all(&byte).expect("ping write");
        from.read_exact(&mut byte).expect("ping read");
    }
}

#[inline(never)]
fn pong(mut to: std::io::PipeWriter, mut from: std::io::PipeReader, rounds: u64) {
    let mut byte = [0u8; 1];
    for _ in 0..rounds {
        from.read_exact(&mut byte).expect("pong read");
        to.write_all(&byte).expect("pong write");
    }
}

#[inline(never)]
fn main() {
    let args = Args::parse(&[("rounds", 200_000)], &[]);
    let rounds = args.option("rounds");
    let (a_read, a_write) = std::io::pipe().expect("pipe");
    let (b_read, b_write) = std::io::pipe().expect("pipe");
    let start = Instant::now();
    let other = std::thread::spawn(move || pong(b_write, a_read, rounds));
    ping(a_write, b_read, rounds);
    other.join().expect("pong thread");
    let elapsed = start.elapsed();
    print_summary(
        "pingpong",
        &[
            ("rounds", rounds),
            ("elapsed_ns", elapsed.as_nanos() as u64),
            (
                "ns_per_round",
                (elapsed.as_nanos() / u128::from(rounds.max(1))) as u64,
            ),
        ],
    );
}
