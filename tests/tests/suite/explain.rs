//! `critpath explain` on a real recording: the critical path names the function every request
//! waits for, where the CPU top list names the busiest thread.

use serde_json::Value;

use super::agent::{start_agent_with, stop, wait_ready};
use super::common::{LockBound, kernel_test_alone, lock_bound, now_ms, run_critpath, workload};

fn explain(dir: &std::path::Path, method: &str) -> Value {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/impact");
    let p = dir.join("p.pb.gz");
    let w = dir.join("w.json");
    let out = run_critpath(&[
        "explain",
        "--profile",
        p.to_str().unwrap(),
        "--wakeups",
        w.to_str().unwrap(),
        "--method",
        method,
        "--model",
        models.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn first(v: &Value) -> &str {
    v["functions"][0]["function"].as_str().unwrap()
}

/// The actors of an explanation's critical path, in order.
fn path_actors(explanation: &Value) -> Vec<&str> {
    explanation["critical_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["actor"].as_str().unwrap())
        .collect()
}

/// The mutex workload's explanation: the waiters are the request threads (the holder serves
/// them, the red herring is neither), and the critical path leads to the holder.
fn assert_lock_path_threads(critical: &Value) {
    let threads: Vec<&str> = critical["request_threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        threads.iter().any(|t| t.starts_with("lock-waiter"))
            && !threads.iter().any(|t| t.starts_with("housekeeping")),
        "request threads: {threads:?}"
    );
    let path = path_actors(critical);
    assert!(
        path.iter().any(|a| a.starts_with("lock-holder"))
            && !path.iter().any(|a| a.starts_with("housekeeping")),
        "critical path: {path:?}"
    );
}

/// On the mutex workload with a CPU-burning red herring, the critical-path method ranks the lock
/// holder's critical section first, while the CPU-only baseline ranks the red herring first; the
/// red herring's threads are not on the request path at all.
#[test]
fn explain_ranks_the_lock_holder_not_the_red_herring() {
    let Some(_machine) = kernel_test_alone() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (p, w) = (dir.path().join("p.pb.gz"), dir.path().join("w.json"));
    let mutex = workload("mutex_contention");
    let out = run_critpath(&[
        "record",
        "-F",
        "99",
        "--off-cpu",
        "--off-cpu-min-us",
        "100",
        "--wakeups",
        w.to_str().unwrap(),
        "-o",
        p.to_str().unwrap(),
        "--",
        mutex.to_str().unwrap(),
        "3",
        // The holder burns 2 ms then sleeps 4 ms per critical section: little CPU, but the
        // lock every waiter waits for. (A CPU-only critical section next to red-herring
        // threads at nice 0, as before, oversubscribed the 2 cores: the waiters then spent
        // more time in the run queue than waiting on the lock, and the critical path stopped
        // at a waiter or ranked its own work first in about 1 run of 10.)
        "--held-sleep-us",
        "4000",
        "--red-herring",
        // Two housekeeping threads at nice 19: they take the idle CPU, more than the holder's.
        "--herring-threads",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let critical = explain(dir.path(), "critical_path");
    let cpu = explain(dir.path(), "cpu");
    let summary = |v: &Value| -> Vec<(String, f64)> {
        v["functions"]
            .as_array()
            .unwrap()
            .iter()
            .take(5)
            .map(|f| {
                (
                    f["function"].as_str().unwrap().to_owned(),
                    f["score"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert!(
        first(&critical).ends_with("::critical_section_work"),
        "critical path: {:?}",
        summary(&critical)
    );
    assert!(
        first(&cpu).ends_with("::housekeeping_burn"),
        "cpu: {:?}",
        summary(&cpu)
    );
    assert_lock_path_threads(&critical);
    // The impact model scores the same window's functions. It is not the default (its ship
    // rule failed) and its ranking is judged by `critpath eval --model`, not here: on this
    // workload it often ranks the red herring first (see models/impact/MODEL_CARD.md).
    let model = explain(dir.path(), "model");
    assert_eq!(model["method"], "model");
    let scored = model["functions"].as_array().unwrap();
    assert!(!scored.is_empty(), "model: {model:#}");
    for f in scored {
        assert!(f["score"].as_f64().unwrap().is_finite(), "model: {f:#}");
        assert_eq!(f["score"], f["latency_impact"], "model: {f:#}");
    }
    // The critical path starts at a waiter and reaches the holder through waiters only: a waiter
    // can be woken by another that took the lock before it (the lock is handed on), so waiter →
    // waiter → holder is a true path; the red herring is never on it.
    let path = path_actors(&critical);
    let holder = path.iter().position(|a| a.starts_with("lock-holder"));
    assert!(
        path.first().is_some_and(|a| a.starts_with("lock-waiter"))
            && holder.is_some_and(|h| path[..h].iter().all(|a| a.starts_with("lock-waiter"))),
        "critical path: {path:?}\n{:#}",
        critical["critical_path"]
    );
}

/// Runs the synthetic lock-bound program for 14 s (with `change` applied 7 s in) under the
/// always-on agent (1-s intervals); returns what `regressions` makes of the store's 5-s windows
/// either side of that moment (the first 2 s, where the program and its load settle, left
/// out), and the holder's name.
fn deploy_case(change: Option<f64>) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let LockBound {
        spec_path,
        holder: name,
        rate,
    } = lock_bound(dir.path());
    // The agent's intervals are 1 s.
    let mut agent = start_agent_with(&data, &["-F", "199"]);
    wait_ready(&mut agent);
    let mut program = std::process::Command::new(workload("synth_service"));
    program
        .arg("run")
        .arg(&spec_path)
        .args(["--rate", &rate, "--seconds", "14", "--warmup", "0"])
        .stdout(std::process::Stdio::null());
    if let Some(scale) = change {
        program.args(["--change", &format!("{name}={scale}@7")]);
    }
    let started_ms = now_ms();
    let mut child = program.spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    // Past the last interval, so that the store holds all of the run.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stop(&mut agent, libc::SIGINT);
    let out = run_critpath(&[
        "regressions",
        "--data-dir",
        data.to_str().unwrap(),
        "--at",
        &(started_ms + 7000).to_string(),
        "--window",
        "5s",
        "--query",
        &format!("{{pid=\"{pid}\"}}"),
        // Every function judged, not only the first 20.
        "--top",
        "100000",
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Each function's noise is estimated from the windows' intervals.
    assert_eq!(report["noise"], "intervals", "{report:#}");
    assert!(
        report["degrees_of_freedom"].as_u64() >= Some(6),
        "{report:#}"
    );
    (report, name)
}

/// A deploy that makes the lock holder twice slower: `regressions` ranks it first among the
/// regressions (in the top 3 at worst). The same program untouched gives no significant
/// change at all, in its own functions or the kernel's.
#[test]
fn regressions_find_the_deploy_and_no_false_positives() {
    let Some(_machine) = kernel_test_alone() else {
        return;
    };
    let (deployed, holder) = deploy_case(Some(2.0));
    let top: Vec<(&str, bool)> = deployed["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .map(|s| {
            (
                s["function"].as_str().unwrap(),
                s["regression"].as_bool().unwrap(),
            )
        })
        .collect();
    let holder_frame = format!("critpath_synth::work::{holder}");
    assert!(
        top.contains(&(holder_frame.as_str(), true)),
        "{holder_frame} not among the top 3 regressions:\n{}",
        brief(&deployed)
    );
    let (untouched, _) = deploy_case(None);
    let suspects = untouched["suspects"].as_array().unwrap();
    assert!(
        suspects
            .iter()
            .filter(|s| s["function"]
                .as_str()
                .is_some_and(|f| f.starts_with("critpath_synth::")))
            .count()
            >= 2,
        "the program's functions are judged: {untouched:#}"
    );
    assert_eq!(
        untouched["significant"],
        0,
        "an untouched program has significant changes:\n{}",
        brief(&untouched)
    );
}

/// A `regressions` report in a few lines (a failure's message stays readable in CI's tail):
/// the first suspects and every significant one.
fn brief(report: &Value) -> String {
    let mut out = format!(
        "method {} noise {} df {} significant {} regressions {}\n",
        report["method"],
        report["noise"],
        report["degrees_of_freedom"],
        report["significant"],
        report["regressions"]
    );
    for (i, s) in report["suspects"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if i < 8 || s["significant"] == true {
            out += &format!(
                "#{i} {} regression {} z {:.2} cpu {:.3}→{:.3} path {:.3}→{:.3} {}\n",
                s["function"].as_str().unwrap_or("?"),
                s["regression"],
                s["z"].as_f64().unwrap_or(0.0),
                s["before"].as_f64().unwrap_or(0.0),
                s["after"].as_f64().unwrap_or(0.0),
                s["critical_path_before"].as_f64().unwrap_or(0.0),
                s["critical_path_after"].as_f64().unwrap_or(0.0),
                s["route"]
            );
        }
    }
    out
}

/// The committed evaluation (`models/eval/graph.json`) is what `critpath eval` computes from the
/// committed dataset: neither can drift from the code without this failing.
#[test]
fn committed_evaluation_matches_the_dataset() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("graph.json");
    run_critpath(&[
        "eval",
        "--dataset",
        root.join("models/data").to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ]);
    let computed: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let committed: Value =
        serde_json::from_slice(&std::fs::read(root.join("models/eval/graph.json")).unwrap())
            .unwrap();
    assert_eq!(
        computed, committed,
        "regenerate with `critpath eval --dataset models/data --json models/eval/graph.json`"
    );
}

/// `critpath eval --model models/<model>` recomputed from the committed predictions, weights
/// and dataset: it must equal `models/eval/<eval>`, and the model's `config.json` and card must
/// state its ship decision. Returns the evaluation.
fn committed_model_evaluation(model: &str, eval: &str, decisions: [&str; 2]) -> Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(eval);
    run_critpath(&[
        "eval",
        "--dataset",
        root.join("models/data").to_str().unwrap(),
        "--model",
        root.join("models").join(model).to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ]);
    let computed: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let committed: Value =
        serde_json::from_slice(&std::fs::read(root.join("models/eval").join(eval)).unwrap())
            .unwrap();
    assert_eq!(
        computed, committed,
        "regenerate with the command in models/{model}/MODEL_CARD.md"
    );
    let config: Value = serde_json::from_slice(
        &std::fs::read(root.join("models").join(model).join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["ship"], computed["ship"]);
    let card =
        std::fs::read_to_string(root.join("models").join(model).join("MODEL_CARD.md")).unwrap();
    let decision = decisions[usize::from(computed["ship"]["default"] != true)];
    assert!(card.contains(decision), "{card}");
    computed
}

/// The committed held-out evaluation of the learned methods (`models/eval/model.json`) is what
/// `critpath eval --model models/impact` computes from the committed predictions and dataset,
/// and the committed model card states its ship decision.
#[test]
fn committed_model_evaluation_matches_its_predictions() {
    let computed = committed_model_evaluation(
        "impact",
        "model.json",
        [
            "Decision: the model is the default.",
            "Decision: the graph method stays the default",
        ],
    );
    for method in ["model", "mlp", "linear", "critical_path"] {
        assert!(computed["elasticity"][method]["all"]["p50"]["programs"].as_u64() > Some(100));
    }
}

/// The same for the regressions model (`models/regressions`, `models/eval/regressions.json`):
/// every learned method and `critpath regressions`' own ranking judged on every case.
#[test]
fn committed_regressions_model_evaluation_matches_its_predictions() {
    let computed = committed_model_evaluation(
        "regressions",
        "regressions.json",
        [
            "Decision: the model is the default.",
            "Decision: `regressions` keeps its graph ranking",
        ],
    );
    for method in [
        "model",
        "mlp",
        "linear",
        "regressions",
        "critical_path_delta",
    ] {
        let cases = |kind: &str| computed["cases"][method][kind]["all"]["programs"].as_u64();
        assert_eq!((cases("deploy"), cases("stall")), (Some(47), Some(28)));
    }
    assert_eq!(
        computed["ship"]["metric"],
        "top-1 of the injected function, all held-out cases"
    );
}

/// The same question asked of the store: the always-on agent (on-CPU, off-CPU and wakeups)
/// samples the machine while the mutex workload with its red herring runs; `critpath explain`
/// over that window of the store, selecting the workload's process, ranks the critical section
/// first by the critical path and the red herring first by CPU, with the holder and a waiter on
/// the request path.
#[test]
fn explain_from_the_store_ranks_the_lock_holder() {
    let Some(_machine) = kernel_test_alone() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let mut agent = start_agent_with(&data, &["-F", "99", "--off-cpu-min-us", "100"]);
    wait_ready(&mut agent);
    let from = now_ms();
    let out = std::process::Command::new(workload("mutex_contention"))
        // As in `explain_ranks_the_lock_holder_not_the_red_herring`.
        .args([
            "3",
            "--held-sleep-us",
            "4000",
            "--red-herring",
            "--herring-threads",
            "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let to = now_ms();
    // Past the last interval, so that the store holds all of the run.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stop(&mut agent, libc::SIGINT);
    let explain = |method: &str| -> Value {
        let out = run_critpath(&[
            "explain",
            "--data-dir",
            data.to_str().unwrap(),
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--query",
            r#"{service="mutex_contentio"}"#,
            "--method",
            method,
            "--json",
        ]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let critical = explain("critical_path");
    let cpu = explain("cpu");
    assert!(
        first(&critical).ends_with("::critical_section_work"),
        "critical path: {critical:#}"
    );
    assert!(first(&cpu).ends_with("::housekeeping_burn"), "cpu: {cpu:#}");
    assert_lock_path_threads(&critical);
    // The waiters blocked in `acquire_shared_lock`, woken by `lock_holder` above all. (Its
    // evidence, whatever its rank: ranked by CPU, every function is listed; by the critical
    // path, it is charged under the 1% a suspect needs — its waits are the holder's.)
    let out = run_critpath(&[
        "explain",
        "--data-dir",
        data.to_str().unwrap(),
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
        "--method",
        "cpu",
        "--top",
        "100000",
        "--json",
    ]);
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let acquire = all["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["function"]
                .as_str()
                .unwrap()
                .ends_with("::acquire_shared_lock")
        })
        .expect("acquire_shared_lock");
    // The lock is handed on, so a waiter's wait may be ended by another waiter leaving
    // `acquire_shared_lock`; the holder ends a good share of them, the red herring none.
    let waited_on = acquire["evidence"]["waited_on"].as_array().unwrap();
    let on = |suffix: &str| -> f64 {
        waited_on
            .iter()
            .filter(|w| w["function"].as_str().unwrap().ends_with(suffix))
            .map(|w| w["waited_s"].as_f64().unwrap())
            .sum()
    };
    let waits = acquire["evidence"]["waits_in_s"].as_f64().unwrap();
    assert!(on("::lock_holder") >= 0.25 * waits, "{acquire:#}");
    assert_eq!(on("::housekeeping_burn"), 0.0, "{acquire:#}");
}

/// The field benchmark's programs, built into `dir` (`tests/field/build.sh`).
fn field_program(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let field = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("field");
    let status = std::process::Command::new("bash")
        .arg(field.join("build.sh"))
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "building the field programs");
    dir.join(name)
}

/// The first functions of an explanation.
fn firsts(v: &Value, n: usize) -> Vec<String> {
    v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .take(n)
        .map(|f| f["function"].as_str().unwrap().to_owned())
        .collect()
}

/// A program whose threads are never named (every thread is called after the process) is
/// explained alike from the store and from a recording of the same run: threads are told apart
/// by thread id in both, so the lock the workers queue on leads to the flusher that holds it,
/// not to a merged "thread" whose own CPU is everyone's.
#[test]
fn unnamed_threads_rank_alike_from_store_and_recording() {
    let Some(_machine) = kernel_test_alone() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let program = field_program(&dir.path().join("bin"), "unnamed_flusher");
    let data = dir.path().join("store");
    let mut agent = start_agent_with(&data, &[]);
    wait_ready(&mut agent);
    let mut child = std::process::Command::new(&program)
        .args(["--seconds", "12"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let from = now_ms();
    let (p, w) = (dir.path().join("p.pb.gz"), dir.path().join("w.json"));
    run_critpath(&[
        "record",
        "--off-cpu",
        "--wakeups",
        w.to_str().unwrap(),
        "-o",
        p.to_str().unwrap(),
        "-p",
        &child.id().to_string(),
        "-d",
        "9",
    ]);
    let to = now_ms();
    assert!(child.wait().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stop(&mut agent, libc::SIGINT);
    let query = format!("{{pid=\"{}\"}}", child.id());
    let json = |args: &[&str]| -> Value {
        let out = run_critpath(args);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let common = ["--method", "critical_path", "--top", "10", "--json"];
    let recorded = json(
        &[
            &[
                "explain",
                "--profile",
                p.to_str().unwrap(),
                "--wakeups",
                w.to_str().unwrap(),
            ][..],
            &common,
        ]
        .concat(),
    );
    let stored = json(
        &[
            &[
                "explain",
                "--data-dir",
                data.to_str().unwrap(),
                "--from",
                &from.to_string(),
                "--to",
                &to.to_string(),
                "--query",
                &query,
            ][..],
            &common,
        ]
        .concat(),
    );
    let (r, s) = (firsts(&recorded, 3), firsts(&stored, 3));
    assert_eq!(r[0], "flush_journal", "recording: {r:?}");
    assert_eq!(s[0], "flush_journal", "store: {s:?}");
    // Threads by id in both: the two workers are the request threads.
    for v in [&recorded, &stored] {
        let threads = v["request_threads"].as_array().unwrap();
        assert_eq!(threads.len(), 2, "{:#}", v["request_threads"]);
        assert!(
            threads
                .iter()
                .all(|t| t.as_str().unwrap().starts_with("unnamed_flusher (pid")),
            "{threads:?}"
        );
    }
    let shared = r.iter().filter(|f| s.contains(f)).count();
    assert!(shared >= 2, "recording {r:?}, store {s:?}");
}

/// A latency probe bounds the requests: recorded with `--probe BIN:update_index` (the part of
/// each request that takes the index lock), the request threads are the two workers that made
/// the calls, only the time inside the calls is the requests' (it comes out at the calls'
/// total), and `parse_request`, run before each call, is charged nothing — without the probe
/// it is charged its part of the requests. Stacks taken inside the calls unwind to the
/// workers' loop, through the return address the return probe hides.
#[test]
fn probed_calls_bound_the_requests() {
    let Some(_machine) = kernel_test_alone() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let program = field_program(&dir.path().join("bin"), "unnamed_flusher");
    let mut child = std::process::Command::new(&program)
        .args(["--seconds", "9"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let (p, w, c) = (
        dir.path().join("p.pb.gz"),
        dir.path().join("w.json"),
        dir.path().join("calls.json"),
    );
    let probe = format!("{}:update_index", program.display());
    run_critpath(&[
        "record",
        "--off-cpu",
        "--wakeups",
        w.to_str().unwrap(),
        "--probe",
        &probe,
        "--calls",
        c.to_str().unwrap(),
        "-o",
        p.to_str().unwrap(),
        "-p",
        &child.id().to_string(),
        "-d",
        "6",
    ]);
    assert!(child.wait().unwrap().success());
    let explained = |wakeups: &std::path::Path| -> Value {
        let out = run_critpath(&[
            "explain",
            "--profile",
            p.to_str().unwrap(),
            "--wakeups",
            wakeups.to_str().unwrap(),
            "--top",
            "20",
            "--json",
        ]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let probed = explained(&w);
    let calls: Value = serde_json::from_slice(&std::fs::read(&c).unwrap()).unwrap();
    let calls = calls["calls"].as_array().unwrap();
    let called_s: f64 = calls
        .iter()
        .map(|c| c["duration_ns"].as_f64().unwrap() / 1e9)
        .sum();
    let tids: std::collections::BTreeSet<u64> =
        calls.iter().map(|c| c["tid"].as_u64().unwrap()).collect();
    let threads = probed["request_threads"].as_array().unwrap();
    assert_eq!(threads.len(), 2, "{probed:#}");
    assert_eq!(tids.len(), 2, "the calls' threads: {tids:?}");
    for t in threads {
        let t = t.as_str().unwrap();
        assert!(
            tids.iter().any(|tid| t.contains(&format!("tid {tid})"))),
            "{t} made no call: {tids:?}"
        );
    }
    let request_s = probed["request_s"].as_f64().unwrap();
    assert!(
        (request_s - called_s).abs() <= 0.25 * called_s,
        "requests {request_s:.3} s, calls {called_s:.3} s"
    );
    assert_eq!(first(&probed), "flush_journal", "{probed:#}");
    let charged = |v: &Value, name: &str| {
        v["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == name)
            .map_or(0.0, |f| f["score"].as_f64().unwrap())
    };
    assert_eq!(charged(&probed, "parse_request"), 0.0, "{probed:#}");
    // The same recording without its requests: parse_request is request work again.
    let mut file: Value = serde_json::from_slice(&std::fs::read(&w).unwrap()).unwrap();
    let mut dropped = 0;
    for b in file["batches"].as_array_mut().unwrap() {
        if let Some(r) = b.as_object_mut().unwrap().remove("requests") {
            dropped += r.as_array().unwrap().len();
        }
    }
    assert_eq!(
        dropped,
        calls.len(),
        "every call is a request of the timeline"
    );
    let unprobed_w = dir.path().join("w-unprobed.json");
    std::fs::write(&unprobed_w, serde_json::to_vec(&file).unwrap()).unwrap();
    let unprobed = explained(&unprobed_w);
    assert!(charged(&unprobed, "parse_request") >= 0.01, "{unprobed:#}");
    // The stacks of waits inside the probed calls unwind past them: the return probe's
    // trampoline that stands in for update_index's return address is not where they stop.
    let (mut inside, mut whole) = (0, 0);
    for b in file["batches"].as_array().unwrap() {
        let name = |i: &Value| b["frames"][i.as_u64().unwrap() as usize]["function"].clone();
        for w in b["waits"].as_array().unwrap() {
            let stack: Vec<Value> = b["stacks"][w["stack"].as_u64().unwrap() as usize]
                .as_array()
                .unwrap()
                .iter()
                .map(name)
                .collect();
            if stack.iter().any(|f| f == "update_index") {
                inside += 1;
                whole += usize::from(stack.iter().any(|f| f == "worker_loop"));
            }
        }
    }
    assert!(inside >= 100, "{inside} waits inside update_index");
    assert!(
        whole as f64 >= 0.95 * inside as f64,
        "{whole} of {inside} waits inside update_index unwind to worker_loop"
    );
}

/// The agent places the probes its configuration file names, and the store keeps their calls
/// as requests: `explain` over the store then takes the two workers that made the calls for the
/// request threads, and charges nothing to `parse_request`, run before each call (without
/// probes the store's answer ranks it second: the field benchmark's `unnamed_flusher`).
#[test]
fn agent_probes_from_its_config_bound_the_requests_in_the_store() {
    let Some(_machine) = kernel_test_alone() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let program = field_program(&dir.path().join("bin"), "unnamed_flusher");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("probes = [\"{}:update_index\"]\n", program.display()),
    )
    .unwrap();
    let data = dir.path().join("store");
    let mut agent = start_agent_with(&data, &["--config", config.to_str().unwrap()]);
    wait_ready(&mut agent);
    let mut child = std::process::Command::new(&program)
        .args(["--seconds", "8"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let from = now_ms();
    assert!(child.wait().unwrap().success());
    let to = now_ms();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stop(&mut agent, libc::SIGINT);
    let out = run_critpath(&[
        "explain",
        "--data-dir",
        data.to_str().unwrap(),
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
        "--query",
        &format!("{{pid=\"{}\"}}", child.id()),
        "--top",
        "20",
        "--json",
    ]);
    let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        stored["request_threads"].as_array().unwrap().len(),
        2,
        "{stored:#}"
    );
    assert_eq!(first(&stored), "flush_journal", "{stored:#}");
    assert!(
        !stored["functions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["function"] == "parse_request"),
        "{stored:#}"
    );
}
