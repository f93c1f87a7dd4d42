//! Helpers shared by the end-to-end tests.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Path of a workload binary of this package.
pub fn workload(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_cpu_ratio"));
    dir.with_file_name(name)
}

/// Path of the `critpath` binary, built into the same target directory as the workloads
/// (`cargo build --bins` builds it; `make test` does that first).
pub fn critpath() -> PathBuf {
    let path = workload("critpath");
    assert!(
        path.exists(),
        "{} not found: build the workspace's binaries first (`cargo build --bins`, which `make test` runs)",
        path.display()
    );
    path
}

/// The machine, shared by the kernel tests: most hold it shared (they may run side by side);
/// tests whose assertions need the CPUs to themselves (which thread burns the most CPU, how a
/// synthetic program's latency responds to a change) hold it alone.
static MACHINE: RwLock<()> = RwLock::new(());

/// A shared hold on the machine for a test that runs workloads but needs no kernel.
pub fn shared_machine() -> RwLockReadGuard<'static, ()> {
    MACHINE.read().unwrap_or_else(PoisonError::into_inner)
}

/// A shared hold on the machine for a kernel test, or `None` when kernel tests cannot run here
/// (see [`kernel_tests_enabled`]).
pub fn kernel_test() -> Option<RwLockReadGuard<'static, ()>> {
    kernel_tests_enabled().then(shared_machine)
}

/// The machine to itself for a kernel test, or `None` when kernel tests cannot run here.
pub fn kernel_test_alone() -> Option<RwLockWriteGuard<'static, ()>> {
    kernel_tests_enabled().then(|| MACHINE.write().unwrap_or_else(PoisonError::into_inner))
}

/// Whether kernel tests can run here. Prints why not; panics under `CI=true`, where every
/// kernel test must run.
pub fn kernel_tests_enabled() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    let reason = "not root: loading eBPF programs needs root or CAP_BPF + CAP_PERFMON";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "kernel test cannot run under CI: {reason}"
    );
    eprintln!("skipped: {reason}");
    false
}

/// Runs critpath with `args`, asserting success; returns its output.
pub fn run_critpath(args: &[&str]) -> Output {
    let output = Command::new(critpath())
        .args(args)
        .output()
        .expect("running critpath");
    assert!(
        output.status.success(),
        "critpath {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The "N samples" figure critpath record prints on stderr.
pub fn reported_samples(stderr: &[u8]) -> i64 {
    let text = String::from_utf8_lossy(stderr);
    text.split_once(" samples in ")
        .and_then(|(head, _)| head.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sample count in critpath's output:\n{text}"))
}

/// A collapsed-stacks profile: (frames root first, value).
pub type Folded = Vec<(Vec<String>, i64)>;

/// Total value of stacks that contain a frame whose name ends with `suffix` (each stack once).
pub fn inclusive(folded: &Folded, suffix: &str) -> i64 {
    folded
        .iter()
        .filter(|(stack, _)| stack.iter().any(|f| f.ends_with(suffix)))
        .map(|(_, v)| v)
        .sum()
}

/// Position of the first frame ending with `suffix` in a stack.
pub fn position(stack: &[String], suffix: &str) -> Option<usize> {
    stack.iter().position(|f| f.ends_with(suffix))
}

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Runs a workload to its end; returns its pid and when it started and ended (Unix ms).
pub fn run_workload(name: &str, seconds: &str) -> (u32, i64, i64) {
    let start = now_ms();
    let mut child = std::process::Command::new(workload(name))
        .arg(seconds)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    (pid, start, now_ms())
}

/// The synthetic lock-bound program of seed 1, for the deploy tests.
pub struct LockBound {
    /// Its spec (`synth_service generate lock_bound 1`).
    pub spec_path: PathBuf,
    /// Its lock holder's work function (`w39`).
    pub holder: String,
    /// A request rate of about 30% of the holder's capacity (a unit is about a microsecond):
    /// still below saturation when the holder does twice the work.
    pub rate: String,
}

/// Generates the lock-bound program of seed 1 into `dir`.
pub fn lock_bound(dir: &std::path::Path) -> LockBound {
    let spec = Command::new(workload("synth_service"))
        .args(["generate", "lock_bound", "1"])
        .output()
        .unwrap();
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, &spec.stdout).unwrap();
    let spec: serde_json::Value = serde_json::from_slice(&spec.stdout).unwrap();
    let holder = spec["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["role"] == "lock_holder")
        .unwrap();
    LockBound {
        spec_path,
        holder: holder["name"].as_str().unwrap().to_owned(),
        rate: (0.3e6 / holder["units"].as_f64().unwrap()).to_string(),
    }
}

/// The wakeup edges of a `critpath record --wakeups` file (version 2: its `edges`; version 1:
/// the file itself).
pub fn wakeup_edges(path: &std::path::Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let edges = if v.is_array() { &v } else { &v["edges"] };
    edges.as_array().expect("wakeup edges").clone()
}
