//! `critpath agent` and `critpath query`: samples kept across restarts and crashes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use critpath_analyzer::export::folded;
use critpath_analyzer::store::Store;

use super::common::{Folded, critpath, inclusive, kernel_tests_enabled, run_critpath, workload};

fn start_agent(dir: &std::path::Path) -> Child {
    Command::new(critpath())
        .args([
            "agent",
            "--interval",
            "1s",
            "--data-dir",
            dir.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the agent")
}

/// Waits until the agent has loaded its programs (it prints its banner then).
fn wait_ready(agent: &mut Child) {
    use std::io::{BufRead as _, BufReader};
    let stderr = agent.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let line = lines.next().expect("agent output").unwrap();
    assert!(line.contains("critpath agent: sampling"), "{line}");
    // Keep draining so the agent never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
}

fn stop(agent: &mut Child, signal: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(agent.id() as i32, signal) };
    let status = agent.wait().unwrap();
    if signal == libc::SIGINT {
        assert!(
            status.success(),
            "the agent exits cleanly on SIGINT: {status}"
        );
    }
}

fn query(dir: &std::path::Path, selector: &str) -> Folded {
    let out = run_critpath(&[
        "query",
        "profile",
        "--data-dir",
        dir.to_str().unwrap(),
        "--from",
        "now-10m",
        "--query",
        selector,
    ]);
    folded::parse(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

fn run_workload(name: &str, seconds: &str) {
    let status = Command::new(workload(name))
        .arg(seconds)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// An agent run, a clean stop, and a second run: both runs' samples are in the store, found by
/// function name and by label selector.
#[test]
fn samples_survive_restart() {
    if !kernel_tests_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_agent(dir.path());
    wait_ready(&mut agent);
    run_workload("cpu_ratio", "2.5");
    stop(&mut agent, libc::SIGINT);

    let mut agent = start_agent(dir.path());
    wait_ready(&mut agent);
    run_workload("multi_thread", "2.5");
    stop(&mut agent, libc::SIGINT);

    // A clean stop compacts the log: real Parquet files, no segment left.
    let parts: Vec<_> = walk(&dir.path().join("data"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".samples.parquet"))
        .collect();
    assert!(parts.len() >= 2, "one part per run at least: {parts:?}");
    assert_eq!(
        &std::fs::read(&parts[0]).unwrap()[..4],
        b"PAR1",
        "Parquet magic"
    );
    assert!(
        walk(&dir.path().join("wal")).is_empty(),
        "segments compacted away"
    );

    let first = query(dir.path(), r#"{service="cpu_ratio"}"#);
    let second = query(dir.path(), r#"{service="multi_thread"}"#);
    assert!(
        inclusive(&first, "::hot_a") > 10,
        "first run's hot_a: {first:?}"
    );
    assert!(
        inclusive(&second, "::mt_worker_alpha") > 5 && inclusive(&second, "::mt_worker_beta") > 5,
        "second run's workers"
    );
    assert_eq!(
        inclusive(&first, "::mt_worker_alpha"),
        0,
        "the selector separates them"
    );
    let labels = run_critpath(&[
        "query",
        "labels",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--from",
        "now-10m",
        "service",
    ]);
    let text = String::from_utf8_lossy(&labels.stdout);
    assert!(
        text.contains("cpu_ratio\t") && text.contains("multi_thread\t"),
        "{text}"
    );
}

/// SIGKILL at random points while the agent writes: every time, the store opens again and
/// queries succeed, and the samples lost are at most the interval being aggregated (1 s here).
#[test]
fn survives_sigkill() {
    if !kernel_tests_enabled() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let burner = Command::new(workload("cpu_ratio"))
        .arg("30")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut burner = scopeguard(burner);
    let mut expected_seconds = 0.0;
    for (i, run_ms) in [2300u64, 3100, 2700].into_iter().enumerate() {
        let mut agent = start_agent(dir.path());
        wait_ready(&mut agent);
        let ready = Instant::now();
        std::thread::sleep(Duration::from_millis(run_ms));
        let killed_ms = now_ms();
        stop(&mut agent, libc::SIGKILL);
        expected_seconds += (ready.elapsed().as_secs_f64() - 2.0).max(0.0);
        let profile = query(dir.path(), r#"{service="cpu_ratio"}"#);
        assert!(!profile.is_empty(), "queries work after kill {i}");
        // At most the interval being aggregated is lost: the newest batch ends at the last
        // 1 s boundary before the kill, or the one before (plus scheduling slack).
        let newest = Store::batches(dir.path(), 0, i64::MAX)
            .unwrap()
            .iter()
            .map(|b| b.end_ms)
            .max()
            .unwrap();
        assert!(
            newest >= killed_ms - 2_000 - 500,
            "kill {i}: newest batch ends {} ms before the kill",
            killed_ms - newest
        );
    }
    let samples: i64 = query(dir.path(), r#"{service="cpu_ratio"}"#)
        .iter()
        .map(|(_, v)| v)
        .sum();
    // cpu_ratio keeps one CPU busy: 19 samples per second it runs (half that, on a loaded
    // 2-CPU machine, is the floor asserted).
    let floor = (expected_seconds * 19.0 * 0.5) as i64;
    assert!(
        samples >= floor,
        "{samples} samples kept across 3 kills, expected at least {floor}"
    );
    let _ = burner.0.kill();
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(child: Child) -> Guard {
    Guard(child)
}
