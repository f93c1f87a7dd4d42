//! The ground-truth harness records critpath's sampler data for a baseline run of the program
//! it measured: the lock holder's function on-CPU, the request threads' lock waits off-CPU.

use critpath_analyzer::export::folded;

use super::common::{critpath, kernel_test_alone, run_critpath, workload};

#[test]
fn records_the_baseline_with_the_sampler() {
    let Some(_machine) = kernel_test_alone() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(workload("groundtruth"))
        .args(["lock_bound", "1", "--seconds", "1.5", "--rounds", "1"])
        .args(["--utilisation", "0.5", "--record"])
        .arg(dir.path())
        .env("CRITPATH", critpath())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let truth: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let holder = truth["spec"]["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == "lock_holder")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    for file in [
        "spec.json",
        "truth.json",
        "profile.pb.gz",
        "wakeups.json",
        "requests.csv",
        "baseline.json",
    ] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }
    let requests = std::fs::read_to_string(dir.path().join("requests.csv")).unwrap();
    assert!(requests.lines().count() > 100, "{requests}");

    // The same run's profile: the holder's symbol on-CPU, lock waits off-CPU.
    let pprof = std::fs::read(dir.path().join("profile.pb.gz")).unwrap();
    let profile = critpath_analyzer::export::pprof::decode(&pprof).unwrap();
    let text = folded::to_string(&profile, 0);
    let holder_frame = format!("critpath_synth::work::{holder}");
    let on_holder: i64 = text
        .lines()
        .filter(|l| l.split(';').any(|f| f == holder_frame))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<i64>().unwrap())
        .sum();
    assert!(on_holder > 0, "{holder} on-CPU: {text}");
    let off_cpu = profile
        .sample_types
        .iter()
        .position(|t| t.kind == "off_cpu")
        .expect("an off_cpu sample type");
    let waits = folded::to_string(&profile, off_cpu);
    assert!(
        waits.lines().any(|l| l.contains("[off-cpu: lock")),
        "lock waits off-CPU: {waits}"
    );
    let edges = super::common::wakeup_edges(&dir.path().join("wakeups.json"));
    assert!(!edges.is_empty());
}

/// The dataset's quick mode, end to end: the runner measures and records one lock-bound program
/// (the one `quick.rs` shows has a clearly measurable holder at this load) with its deploy and
/// stall cases, `critpath dataset pack` turns it into Parquet tables, and
/// `critpath eval` scores the methods on them: the critical path finds the measured bottleneck
/// and the stalled lock holder.
#[test]
fn dataset_quick_mode_end_to_end() {
    let Some(_machine) = kernel_test_alone() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let out = std::process::Command::new(workload("dataset"))
        .args(["--out", work.to_str().unwrap()])
        .args(["--families", "lock_bound", "--seeds", "1..1"])
        .args(["--seconds", "2", "--rounds", "1", "--utilisation", "0.4"])
        .args(["--record", "--cases-every", "1"])
        .env("CRITPATH", critpath())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("lock_bound-1: done"),
        "{stderr}"
    );
    let program = work.join("programs/lock_bound-1");
    for file in [
        "truth.json",
        "profile.pb.gz",
        "wakeups.json",
        "cases/stall/case.json",
    ] {
        assert!(program.join(file).exists(), "{file} missing: {stderr}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["programs"][0]["status"], "done");
    assert_eq!(manifest["cases_every"], 1);

    let data = dir.path().join("data");
    run_critpath(&[
        "dataset",
        "pack",
        work.to_str().unwrap(),
        "--out",
        data.to_str().unwrap(),
    ]);
    for table in ["functions.parquet", "programs.parquet", "cases.parquet"] {
        assert!(data.join(table).exists(), "{table} missing");
    }
    let json = dir.path().join("eval.json");
    run_critpath(&[
        "eval",
        "--dataset",
        data.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let eval: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // Every method is scored. (Whether this one program has a bottleneck measured outside its
    // noise floor depends on the run: the methods' quality is what the committed evaluation
    // and quick.rs show.)
    for method in ["cpu", "wall", "critical_path", "knot"] {
        let p50 = &eval["elasticity"][method]["lock_bound"]["p50"];
        assert!(p50["programs"].as_u64().unwrap() <= 1, "{method}: {eval:#}");
    }
    // The stall slowed the lock holder: the critical path of the slow window names it first.
    let stall = &eval["cases"]["critical_path"]["stall"]["lock_bound"];
    assert_eq!(stall["programs"], 1, "{eval:#}");
    assert_eq!(
        stall["top1"], 1.0,
        "the critical path misses the stall: {eval:#}"
    );
    // And on the recorded baseline, the critical path ranks the holder first among the work
    // functions (the load generator's sleeps between arrivals rank too: without latency probes,
    // waiting for work looks like waiting for a response; housekeeping is not quite zero either:
    // the main thread joins the housekeeping threads at the end of the run).
    let explained = run_critpath(&[
        "explain",
        "--profile",
        program.join("profile.pb.gz").to_str().unwrap(),
        "--wakeups",
        program.join("wakeups.json").to_str().unwrap(),
        "--top",
        "1000",
        "--json",
    ]);
    let explained: serde_json::Value = serde_json::from_slice(&explained.stdout).unwrap();
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(program.join("truth.json")).unwrap()).unwrap();
    let role = |role: &str| {
        let name = truth["spec"]["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["role"] == role)
            .unwrap()["name"]
            .as_str()
            .unwrap()
            .to_owned();
        format!("critpath_synth::work::{name}")
    };
    let ranked: Vec<(&str, f64)> = explained["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap(),
                f["score"].as_f64().unwrap(),
            )
        })
        .filter(|(f, _)| f.starts_with("critpath_synth::work::"))
        .collect();
    assert_eq!(ranked[0].0, role("lock_holder"), "{ranked:?}");
}
