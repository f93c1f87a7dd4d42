//! The web page, driven in headless Chromium against `critpath run` while workloads run: the
//! chart renders with data, a click on it shows the icicle graph of the hot workload, compare
//! mode shows the grown function first, explain ranks the lock holder first, a deploy's
//! regression suspects name the new version's work. Screenshots of
//! each step are saved in `tests/artifacts/` (`ui-*.png`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::common::{kernel_test_alone, now_ms, run_workload, workload};
use super::serve::start_with;

#[test]
fn page_shows_series_icicle_comparison_and_explanation() {
    let Some(_machine) = kernel_test_alone() else {
        return;
    };
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/ui");
    assert!(
        ui.join("node_modules/playwright-core").is_dir(),
        "api/ui/node_modules is missing: run scripts/setup.sh"
    );
    let store = tempfile::tempdir().unwrap();
    let server = start_with(
        store.path(),
        &[
            "run",
            "--interval",
            "1s",
            "-F",
            "99",
            "--off-cpu-min-us",
            "100",
        ],
        true,
    );
    // Three windows a few seconds apart: a baseline spent in the kernel (syscall_heavy),
    // cpu_ratio's hot_a and hot_b (both burning in workload::burn), then the lock-bound program
    // with its red herrings.
    let (_, a_from, a_to) = run_workload("syscall_heavy", "3");
    std::thread::sleep(Duration::from_millis(1500));
    let (_, b_from, b_to) = run_workload("cpu_ratio", "3");
    std::thread::sleep(Duration::from_millis(1500));
    let c_from = now_ms();
    let mut mutex = Command::new(workload("mutex_contention"))
        .args([
            "3",
            "--held-sleep-us",
            "4000",
            "--red-herring",
            "--herring-threads",
            "2",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let c_pid = mutex.id();
    assert!(mutex.wait().unwrap().success());
    let c_to = now_ms();
    // The last 1-s interval is written when it ends.
    std::thread::sleep(Duration::from_millis(2500));

    let scenario = serde_json::json!({
        "hot": {"at_ms": (b_from + b_to) / 2, "function": "hot_a"},
        "compare": {"base": [a_from, a_to], "comparison": [b_from, b_to]},
        "explain": {"window": [c_from, c_to], "query": format!("{{pid=\"{c_pid}\"}}")},
        // Between syscall_heavy and cpu_ratio: cpu_ratio's functions are new after it.
        "deploy": {"service": "cpu_ratio", "version": "v2", "at": (a_to + b_from) / 2},
    });
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let output = Command::new("node")
        .arg(ui.join("test/ui.mjs"))
        .arg(format!("http://{}", server.addr))
        .arg(&artifacts)
        .arg(scenario.to_string())
        .output()
        .expect("running node");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap();

    // The chart has data: the hot workload's thread is among the series drawn.
    let legend: Vec<&str> = seen["legend"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(legend.contains(&"cpu_ratio"), "legend: {legend:?}");
    // The click opened the icicle graph of cpu_ratio's window: hot_a holds a large share.
    let search = seen["search"].as_str().unwrap();
    let share: f64 = search
        .split(", ")
        .nth(1)
        .and_then(|s| s.strip_suffix("% of the window"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("search result: {search:?}"));
    // (Under most of it on a quiet machine; the window is system-wide.)
    assert!(share >= 5.0, "hot_a under {share}% of the clicked window");
    assert!(
        seen["url_after_click"]
            .as_str()
            .unwrap()
            .contains("window=")
    );
    // Compare: cpu_ratio's hot leaf grew the most from syscall_heavy's window to cpu_ratio's.
    let first_row = &seen["diff_rows"][0];
    assert!(
        first_row[0].as_str().unwrap().ends_with("workload::burn"),
        "diff rows: {}",
        seen["diff_rows"]
    );
    assert!(first_row[3].as_str().unwrap().starts_with('+'));
    // Explain: the lock holder's critical section first, not the red herring.
    let explained: Vec<&str> = seen["explain"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        explained
            .first()
            .is_some_and(|f| f.ends_with("::critical_section_work")),
        "explain: {explained:?}; critical path: {}",
        seen["critical_path"]
    );
    // The deploy's regression suspects: cpu_ratio's work, new after it.
    let regressions = seen["regressions"].to_string();
    assert!(
        regressions.contains("workload::burn") || regressions.contains("cpu_ratio::"),
        "regressions: {regressions}"
    );
    assert_eq!(seen["errors"], serde_json::json!([]), "errors in the page");
    for shot in [
        "ui-1-series",
        "ui-2-icicle",
        "ui-4-compare",
        "ui-5-explain",
        "ui-6-regressions",
    ] {
        let png = artifacts.join(format!("{shot}.png"));
        assert!(
            std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000),
            "{} missing or empty",
            png.display()
        );
    }
}
