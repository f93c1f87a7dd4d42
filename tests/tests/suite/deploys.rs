//! Deploys in the store: a new build of a program found by its build id, a deploy marked by
//! hand, and `critpath regressions` across either naming the function the new build made
//! slower.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::agent::{start_agent_with, stop, wait_ready};
use super::common::{LockBound, kernel_test_alone, lock_bound, now_ms, run_critpath, workload};

/// Writes a copy of `from` over `to` with another build id (the first byte of its GNU build-id
/// note flipped): the same code, as a rebuild looks to the agent.
fn rebuilt(from: &Path, to: &Path) {
    let mut bytes = std::fs::read(from).unwrap();
    // Note header: name size 4, descriptor size 20, type 3 (NT_GNU_BUILD_ID), "GNU\0".
    let header = [4, 0, 0, 0, 20, 0, 0, 0, 3, 0, 0, 0, b'G', b'N', b'U', 0];
    let at = bytes
        .windows(header.len())
        .position(|w| w == header)
        .expect("a GNU build-id note");
    bytes[at + header.len()] ^= 0xff;
    let new = to.with_extension("new");
    std::fs::write(&new, &bytes).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, to).unwrap();
}

fn top_regressions(report: &Value) -> Vec<&str> {
    report["suspects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["regression"] == true)
        .take(3)
        .map(|s| s["function"].as_str().unwrap())
        .collect()
}

/// The always-on agent samples a program (`app`, lock-bound) for 7 s; then a new build of it
/// at the same path, whose lock holder does twice the work, runs for 7 s. `critpath deploys`
/// finds the new build id as a deploy within a second or two of its start, and `critpath
/// regressions` across it (and across a deploy marked by hand at the same moment) ranks the
/// lock holder among the first three regressions.
#[test]
fn a_new_build_is_a_deploy_and_regressions_name_the_slower_function() {
    let Some(_machine) = kernel_test_alone() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let data_dir = data.to_str().unwrap();
    let LockBound {
        spec_path,
        holder: name,
        rate,
    } = lock_bound(dir.path());

    let mut agent = start_agent_with(&data, &["-F", "199"]);
    wait_ready(&mut agent);
    let app = dir.path().join("app");
    let run = |scale: Option<String>| {
        let mut program = Command::new(&app);
        program.args(["run", spec_path.to_str().unwrap(), "--rate", &rate]);
        program.args(["--seconds", "7", "--warmup", "0"]);
        program.args(scale.iter().flat_map(|s| ["--scale", s.as_str()]));
        let status = program.stdout(std::process::Stdio::null()).status();
        assert!(status.unwrap().success());
    };
    std::fs::copy(workload("synth_service"), &app).unwrap();
    run(None);
    rebuilt(&workload("synth_service"), &app);
    let deployed_ms = now_ms();
    run(Some(format!("{name}=2")));
    // Past the last interval, so that the store holds all of the new build's run.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stop(&mut agent, libc::SIGINT);

    let out = run_critpath(&[
        "deploys",
        "--data-dir",
        data_dir,
        "--from",
        "now-5m",
        "--json",
    ]);
    let deploys: Value = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<&Value> = deploys
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["exe"] == app.to_str().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "{deploys:#}");
    let (id, at) = (
        found[0]["id"].as_str().unwrap(),
        found[0]["at_ms"].as_i64().unwrap(),
    );
    assert_eq!(found[0]["source"], "build_id");
    assert!(
        (deployed_ms - 1_000..deployed_ms + 2_500).contains(&at),
        "found at {at}, started at {deployed_ms}"
    );

    let holder_frame = format!("critpath_synth::work::{name}");
    let regressions = |deploy: &str| -> Value {
        let out = run_critpath(&[
            "regressions",
            "--data-dir",
            data_dir,
            "--deploy",
            deploy,
            "--window",
            "6s",
            "--json",
        ]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let by_build = regressions(id);
    assert!(
        top_regressions(&by_build).contains(&holder_frame.as_str()),
        "{holder_frame} not among the first regressions: {by_build:#}"
    );
    let marked = run_critpath(&[
        "deploy",
        "--data-dir",
        data_dir,
        "--service",
        "app",
        "--version",
        "v2",
        "--at",
        &at.to_string(),
    ]);
    assert!(String::from_utf8_lossy(&marked.stdout).starts_with("deploy 1: app v2 at "));
    let by_marker = regressions("1");
    assert_eq!(
        top_regressions(&by_marker),
        top_regressions(&by_build),
        "the same windows: {by_marker:#}"
    );
}
