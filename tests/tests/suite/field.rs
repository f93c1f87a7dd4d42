//! The field benchmark's quick set (`tests/field`, programs written outside critpath's method,
//! each with its culprit measured by experiment), end to end as a user would meet it: every
//! scenario run for real under `critpath run`, explained through the HTTP API over the store,
//! and under `critpath record`, explained from the recording (`critpath eval --field --quick`).

use serde_json::Value;

use super::common::{kernel_test_alone, run_critpath};

/// On the quick set, through the store and through recordings: the measured culprit is in the
/// top three of every answer with no red herring above it and no idle function in the top
/// three, and first in at least 80% of the answers.
#[test]
fn field_quick_set_names_the_culprits() {
    let Some(_machine) = kernel_test_alone() else {
        return;
    };
    let field = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("field");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("field.json");
    let out = run_critpath(&[
        "eval",
        "--field",
        field.to_str().unwrap(),
        "--field-bin",
        dir.path().join("bin").to_str().unwrap(),
        "--quick",
        "--field-seconds",
        "8",
        "--json",
        json.to_str().unwrap(),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(
        report["skipped"].as_object().unwrap().is_empty(),
        "scenarios skipped (their programs missing?):\n{table}"
    );
    let cases = report["cases"].as_array().unwrap();
    for path in ["store", "recording"] {
        let cases: Vec<&Value> = cases.iter().filter(|c| c["path"] == path).collect();
        assert!(cases.len() >= 5, "{path}: {} cases\n{table}", cases.len());
        for c in &cases {
            let rank = c["rank"].as_u64();
            assert!(
                rank.is_some_and(|r| r < 3)
                    && c["herrings_above"].as_array().unwrap().is_empty()
                    && c["idle_in_top3"].as_array().unwrap().is_empty(),
                "{path}: {c:#}\n{table}"
            );
        }
        let first = cases.iter().filter(|c| c["rank"] == 0).count();
        assert!(
            first * 5 >= cases.len() * 4,
            "{path}: the culprit first in {first} of {} answers\n{table}",
            cases.len()
        );
    }
}
