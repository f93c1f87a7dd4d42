//! A service whose requests are made of sub-millisecond waits: a requester thread hands each
//! request to a worker over a pipe and blocks until the answer comes back; the worker sleeps
//! 200 to 800 µs (a different length each time, cycling) before answering. The requester
//! measures exactly how long it was blocked in its reads, the worker how long it slept, so a
//! profiler's off-CPU estimates for the two stacks can be checked against the truth.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use critpath_tests::workload::{Args, Deadline, print_summary};

/// Sends a request and blocks until its answer: the wait a profiler should attribute here.
#[inline(never)]
fn request_wait(to: &mut std::io::PipeWriter, from: &mut std::io::PipeReader) -> Duration {
    let mut byte = [1u8; 1];
    to.write_all(&byte).expect("request write");
    let blocked = Instant::now();
    from.read_exact(&mut byte).expect("answer read");
    blocked.elapsed()
}

/// Serves one request: sleeps `micros` µs, then answers.
#[inline(never)]
fn serve_sleep(micros: u64) -> Duration {
    let slept = Instant::now();
    std::thread::sleep(Duration::from_micros(micros));
    slept.elapsed()
}

#[inline(never)]
fn worker(mut to: std::io::PipeWriter, mut from: std::io::PipeReader) -> (u64, Duration) {
    let (mut served, mut slept) = (0u64, Duration::ZERO);
    let mut byte = [0u8; 1];
    while from.read_exact(&mut byte).is_ok() && byte[0] != 0 {
        slept += serve_sleep(200 + (served * 37) % 601);
        served += 1;
        to.write_all(&byte).expect("answer write");
    }
    (served, slept)
}

fn main() {
    let args = Args::parse(&[], &[]);
    let (req_read, mut req_write) = std::io::pipe().expect("pipe");
    let (mut ans_read, ans_write) = std::io::pipe().expect("pipe");
    let server = std::thread::Builder::new()
        .name("sw-worker".into())
        .spawn(move || worker(ans_write, req_read))
        .expect("worker thread");
    let deadline = Deadline::after(args.duration);
    let (mut requests, mut blocked) = (0u64, Duration::ZERO);
    while !deadline.passed() {
        blocked += request_wait(&mut req_write, &mut ans_read);
        requests += 1;
    }
    req_write.write_all(&[0]).expect("stop");
    let (served, slept) = server.join().expect("worker");
    print_summary(
        "short_waits",
        &[
            ("requests", requests),
            ("served", served),
            ("blocked_ns", blocked.as_nanos() as u64),
            ("slept_ns", slept.as_nanos() as u64),
        ],
    );
}
