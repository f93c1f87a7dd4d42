//! The notebooks (`notebooks/`) execute headlessly against a small real capture, so they never
//! rot: `jupyter nbconvert --execute` from the virtual environment `scripts/setup.sh` makes,
//! every cell without error, and their plots in the output.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::{kernel_test_alone, run_workload};
use super::serve::start_with;

/// The notebooks' virtual environment (scripts/setup.sh).
fn venv() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("CRITPATH_NOTEBOOKS_VENV")
            .unwrap_or_else(|_| "/var/tmp/critpath-notebooks-venv".into()),
    );
    assert!(
        dir.join("bin/jupyter").exists(),
        "{} has no jupyter: run scripts/setup.sh (make test does)",
        dir.display()
    );
    dir
}

/// Executes `notebook` with `env`, writes the executed copy under `tests/artifacts/notebooks/`
/// and returns it as JSON.
fn execute(notebook: &str, env: &[(&str, String)]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/notebooks");
    std::fs::create_dir_all(&out).unwrap();
    let output = Command::new(venv().join("bin/jupyter"))
        .args(["nbconvert", "--to", "notebook", "--execute"])
        .arg("--ExecutePreprocessor.timeout=300")
        .arg("--output-dir")
        .arg(&out)
        .arg(root.join("notebooks").join(notebook))
        .current_dir(root.join("notebooks"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("running jupyter nbconvert");
    assert!(
        output.status.success(),
        "{notebook} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(out.join(notebook)).unwrap()).unwrap()
}

/// The outputs of a notebook's code cells: (output type, its text, whether it is a PNG).
fn outputs(notebook: &serde_json::Value) -> Vec<(String, String, bool)> {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Array(lines) => lines.iter().filter_map(|l| l.as_str()).collect(),
        other => other.as_str().unwrap_or_default().to_owned(),
    };
    notebook["cells"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["outputs"].as_array().cloned().unwrap_or_default())
        .map(|o| {
            let kind = o["output_type"].as_str().unwrap_or_default().to_owned();
            let body = if o["text"].is_null() {
                text(&o["data"]["text/plain"])
            } else {
                text(&o["text"])
            };
            (kind, body, !o["data"]["image/png"].is_null())
        })
        .collect()
}

/// The capture notebook, over a capture of the cpu_ratio workload served by `critpath serve`:
/// the series, profile, icicle, diff and Parquet plots render, the hot function is in the
/// profile's table, and the Parquet parts read directly hold the samples the API counted.
/// The model notebook renders its per-family, calibration and regressions-model plots from
/// `models/`.
#[test]
fn notebooks_execute_against_a_capture() {
    // Alone: Jupyter's kernels and matplotlib are CPU-heavy next to timing-sensitive tests.
    let Some(_machine) = kernel_test_alone() else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    {
        let _agent = start_with(store.path(), &["run", "--interval", "1s"], true);
        run_workload("cpu_ratio", "3");
        // The last interval is written when it ends; stopping the agent then compacts the log
        // into Parquet parts.
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    let server = start_with(store.path(), &["serve"], false);
    let capture = execute(
        "capture.ipynb",
        &[
            ("CRITPATH_API", format!("http://{}", server.addr)),
            ("CRITPATH_DATA", store.path().display().to_string()),
            ("CRITPATH_FROM", "now-10m".into()),
        ],
    );
    let outputs_of = outputs(&capture);
    assert!(outputs_of.iter().all(|(kind, _, _)| kind != "error"));
    let plots = outputs_of.iter().filter(|(_, _, png)| *png).count();
    assert!(plots >= 5, "{plots} plots in the capture notebook");
    let all_text = outputs_of
        .iter()
        .map(|(_, t, _)| t.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all_text.contains("workload::burn"), "{all_text}");
    let api_samples: i64 = all_text
        .split_once(" samples in the window")
        .and_then(|(head, _)| head.rsplit('\n').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample count in {all_text}"));
    let parquet_samples: i64 = all_text
        .split_once(" on-CPU samples\n")
        .and_then(|(head, _)| head.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no Parquet sample count in {all_text}"));
    assert!(api_samples > 0, "{all_text}");
    assert_eq!(
        api_samples, parquet_samples,
        "the API and the Parquet files count the same capture"
    );

    let model = execute("model-evaluation.ipynb", &[("CRITPATH_REPO", "..".into())]);
    let outputs_of = outputs(&model);
    assert!(outputs_of.iter().all(|(kind, _, _)| kind != "error"));
    let plots = outputs_of.iter().filter(|(_, _, png)| *png).count();
    assert!(plots >= 3, "{plots} plots in the model notebook");
    let all_text = outputs_of
        .iter()
        .map(|(_, t, _)| t.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(all_text.contains("critical_path") && all_text.contains("best_baseline"));
    assert!(
        all_text.contains("top-1 of the injected function"),
        "the regressions model's ship rule: {all_text}"
    );
}
