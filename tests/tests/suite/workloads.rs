//! Sanity checks of the workload programs: each runs for 0.3 s, exits 0 and prints one JSON
//! summary line whose counts are consistent with what it is meant to do.

use serde_json::Value;
use std::process::Command;

/// Runs workload `exe` with `args` and returns its parsed JSON summary, checking the output
/// contract: exit status 0 and exactly one stdout line, a JSON object naming `workload`.
fn run(exe: &str, workload: &str, args: &[&str]) -> Value {
    let _machine = super::common::shared_machine();
    let output = Command::new(exe)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running {exe}: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{workload} failed ({}): {stderr}",
        output.status
    );
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{workload} stdout is not one line: {stdout:?}"
    );
    let summary: Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|error| panic!("{workload} summary is not JSON ({error}): {stdout}"));
    assert_eq!(summary["workload"], workload, "{summary}");
    summary
}

/// Reads the non-negative integer `key` of a summary.
fn count(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no count `{key}`: {summary}"))
}

/// `cpu_ratio` completes rounds of about 1 ms each (so 0.3 s gives far fewer than 3000).
#[test]
fn cpu_ratio_runs_rounds() {
    let summary = run(env!("CARGO_BIN_EXE_cpu_ratio"), "cpu_ratio", &["0.3"]);
    let rounds = count(&summary, "rounds");
    assert!((1..3000).contains(&rounds), "{summary}");
    assert!(count(&summary, "round_iterations") > 0, "{summary}");
}

/// `multi_thread` runs both worker functions when given two threads.
#[test]
fn multi_thread_runs_alpha_and_beta() {
    let exe = env!("CARGO_BIN_EXE_multi_thread");
    let summary = run(exe, "multi_thread", &["--seconds", "0.3", "--threads", "2"]);
    assert_eq!(count(&summary, "threads"), 2);
    assert!(count(&summary, "mt_worker_alpha") > 0, "{summary}");
    assert!(count(&summary, "mt_worker_beta") > 0, "{summary}");
}

/// `syscall_heavy` makes many writes: at least 1000 in 0.3 s even on a slow, busy machine.
#[test]
fn syscall_heavy_writes() {
    let exe = env!("CARGO_BIN_EXE_syscall_heavy");
    let summary = run(exe, "syscall_heavy", &["0.3"]);
    assert!(count(&summary, "writes") > 1000, "{summary}");
}

/// `mutex_contention` lets both the holder and the waiters (and the red herring) make progress.
#[test]
fn mutex_contention_holder_and_waiters_progress() {
    let exe = env!("CARGO_BIN_EXE_mutex_contention");
    let summary = run(exe, "mutex_contention", &["0.3", "--waiters=2"]);
    assert!(count(&summary, "holder_iterations") > 0, "{summary}");
    assert!(count(&summary, "waiter_acquisitions") > 0, "{summary}");
    assert_eq!(count(&summary, "housekeeping_chunks"), 0, "{summary}");
    let summary = run(exe, "mutex_contention", &["0.3", "--red-herring"]);
    assert_eq!(count(&summary, "red_herring"), 1);
    assert!(count(&summary, "holder_iterations") > 0, "{summary}");
    assert!(count(&summary, "housekeeping_chunks") > 0, "{summary}");
}

/// `producer_consumer` delivers every item it produces, at about 2 ms each.
#[test]
fn producer_consumer_delivers_all_items() {
    let exe = env!("CARGO_BIN_EXE_producer_consumer");
    let summary = run(exe, "producer_consumer", &["0.3"]);
    let items = count(&summary, "items");
    assert!((1..300).contains(&items), "{summary}");
    assert_eq!(items, count(&summary, "produced"), "{summary}");
}

/// `sleeper` sleeps at least the requested interval each time, and reports the total it measured.
#[test]
fn sleeper_measures_its_sleeps() {
    let exe = env!("CARGO_BIN_EXE_sleeper");
    let summary = run(exe, "sleeper", &["0.3", "--interval-ms", "20"]);
    let sleeps = count(&summary, "sleeps");
    assert!((1..=16).contains(&sleeps), "{summary}");
    assert!(
        count(&summary, "total_sleep_ns") >= sleeps * 20_000_000,
        "{summary}"
    );
}

/// `pipe_io` reads every 8-byte message the device thread writes.
#[test]
fn pipe_io_reads_every_message() {
    let summary = run(env!("CARGO_BIN_EXE_pipe_io"), "pipe_io", &["0.3"]);
    let reads = count(&summary, "reads");
    assert!(reads > 0, "{summary}");
    assert_eq!(count(&summary, "writes"), reads, "{summary}");
    assert_eq!(count(&summary, "bytes"), 8 * reads, "{summary}");
}

/// A bad argument gives exit code 2, a reason on stderr and nothing on stdout.
#[test]
fn bad_arguments_exit_2() {
    for args in [&["--threads", "x"][..], &["--nope"], &["0"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_multi_thread"))
            .args(args)
            .output()
            .expect("running multi_thread");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?}");
    }
}
