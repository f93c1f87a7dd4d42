//! `critpath agent` and `critpath query`: samples kept across restarts and crashes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use critpath_analyzer::export::folded;
use critpath_analyzer::store::Store;

use super::common::{
    Folded, critpath, inclusive, kernel_test, now_ms, run_critpath, run_workload, workload,
};

fn start_agent(dir: &std::path::Path) -> Child {
    start_agent_with(dir, &[])
}

pub(super) fn start_agent_with(dir: &std::path::Path, extra: &[&str]) -> Child {
    Command::new(critpath())
        .args([
            "agent",
            "--interval",
            "1s",
            "--data-dir",
            dir.to_str().unwrap(),
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the agent")
}

/// Waits until the agent has loaded its programs (it prints its banner then).
pub(super) fn wait_ready(agent: &mut Child) {
    use std::io::{BufRead as _, BufReader};
    let stderr = agent.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let line = lines.next().expect("agent output").unwrap();
    assert!(line.contains("critpath agent: sampling"), "{line}");
    // Keep draining so the agent never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
}

pub(super) fn stop(agent: &mut Child, signal: i32) {
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
        "--format",
        "folded",
    ]);
    folded::parse(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

/// `critpath query series` per pid at a 1 s step, as (timestamps, pid → values).
fn series(
    dir: &std::path::Path,
    from_ms: i64,
    to_ms: i64,
) -> (Vec<i64>, std::collections::HashMap<String, Vec<f64>>) {
    let out = run_critpath(&[
        "query",
        "series",
        "--data-dir",
        dir.to_str().unwrap(),
        "--from",
        &from_ms.to_string(),
        "--to",
        &to_ms.to_string(),
        "--step",
        "1s",
        "--group-by",
        "pid",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let timestamps = v["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .collect();
    let series = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["labels"]["pid"].as_str().unwrap().to_owned(),
                s["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect(),
            )
        })
        .collect();
    (timestamps, series)
}

/// An agent run, a clean stop, and a second run (configured by a TOML file that names the
/// workload's service): both runs' samples are in the store, found by function name and by
/// label selector, and `series` shows each workload's activity only while it ran.
#[test]
fn samples_survive_restart() {
    let Some(_machine) = kernel_test() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start_agent(dir.path());
    wait_ready(&mut agent);
    let first_run = run_workload("cpu_ratio", "2.5");
    stop(&mut agent, libc::SIGINT);

    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[[service]]\nname = \"mt-service\"\nexe = \".*/multi_thread\"\n",
    )
    .unwrap();
    let mut agent = start_agent_with(dir.path(), &["--config", config.to_str().unwrap()]);
    wait_ready(&mut agent);
    std::thread::sleep(Duration::from_millis(1500));
    let second_run = run_workload("multi_thread", "2.5");
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
    let second = query(dir.path(), r#"{service="mt-service"}"#);
    assert!(
        inclusive(&first, "::hot_a") > 10,
        "first run's hot_a: {first:?}"
    );
    assert!(
        inclusive(&second, "::mt_worker_alpha") > 5 && inclusive(&second, "::mt_worker_beta") > 5,
        "second run's workers, under the service named by the config file"
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
        text.contains("cpu_ratio\t") && text.contains("mt-service\t"),
        "{text}"
    );

    // Series: each workload's samples fall inside its own run (give or take the 1 s
    // aggregation interval and the step), none elsewhere.
    // (Other tests run the same workloads meanwhile: series are told apart by pid.)
    let (from, to) = (first_run.1 - 10_000, second_run.2 + 10_000);
    let (timestamps, by_pid) = series(dir.path(), from, to);
    for (service, (pid, start, end)) in [("cpu_ratio", first_run), ("mt-service", second_run)] {
        let values = &by_pid[&pid.to_string()];
        let inside: f64 = values
            .iter()
            .zip(&timestamps)
            .filter(|(_, t)| **t >= start - 2_000 && **t <= end + 1_000)
            .map(|(v, _)| v)
            .sum();
        let outside: Vec<(i64, f64)> = values
            .iter()
            .zip(&timestamps)
            .filter(|(v, t)| **v > 0.0 && (**t < start - 2_000 || **t > end + 1_000))
            .map(|(v, t)| (*t - start, *v))
            .collect();
        assert!(inside >= 20.0, "{service}: {inside} samples during its run");
        assert!(
            outside.is_empty(),
            "{service}: samples outside its run (ms from its start, samples): {outside:?}"
        );
    }
}

/// SIGKILL at random points while the agent writes: every time, the store opens again and
/// queries succeed, and the samples lost are at most the interval being aggregated (1 s here).
#[test]
fn survives_sigkill() {
    let Some(_machine) = kernel_test() else {
        return;
    };
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
