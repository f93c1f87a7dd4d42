//! User stacks of code built without frame pointers, unwound with call-frame information: C and
//! Rust programs with a known 11-frame chain through a shared library (`tests/native`), on CPU
//! and off CPU (blocked threads and their wakers), a Debian-packaged interpreter, stacks deeper
//! than the copy, and the truncation counters of the agent's health and metrics.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use critpath_analyzer::export::folded;

use super::common::{Folded, kernel_test, kernel_test_alone, run_critpath};
use super::serve::{get, start_with};

/// Source directory of the native test programs.
fn native_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("native")
}

/// Runs a build command, asserting success.
fn build(command: &mut Command) {
    let output = command.output().expect("running the compiler");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The native programs, built once per test run into the target's temporary directory (the
/// compilers are CPU-heavy next to the timing-sensitive tests running beside these).
fn native() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("critpath-native");
        std::fs::create_dir_all(&dir).unwrap();
        build_native(&dir);
        dir
    })
}

/// Builds libdeepchain.so, `deepchain` (C, `-O2 -fomit-frame-pointer`) and `deepchain-rs`
/// (Rust, opt-level 3 and no frame pointers, as Rust's release profile) into `dir`.
fn build_native(dir: &Path) {
    let src = native_dir();
    let gcc = |args: &[&str]| {
        build(
            Command::new("gcc")
                .args(["-O2", "-fomit-frame-pointer", "-g0"])
                .args(args)
                .current_dir(dir),
        )
    };
    gcc(&[
        "-fPIC",
        "-shared",
        "-o",
        "libdeepchain.so",
        src.join("libdeepchain.c").to_str().unwrap(),
    ]);
    gcc(&[
        "-o",
        "deepchain",
        src.join("deepchain.c").to_str().unwrap(),
        "-L.",
        "-ldeepchain",
        "-Wl,-rpath,$ORIGIN",
    ]);
    // rustc directly, not cargo: the workspace's .cargo/config.toml forces frame pointers.
    build(
        Command::new("rustc")
            .args([
                "--edition",
                "2024",
                "-C",
                "opt-level=3",
                "-o",
                "deepchain-rs",
            ])
            .arg(src.join("deepchain.rs"))
            .args(["-L", ".", "-C", "link-arg=-Wl,-rpath,$ORIGIN"])
            .current_dir(dir),
    );
}

/// Records `args` (a command) at 299 Hz with `unwind` and returns the folded profile.
fn record(unwind: &str, extra: &[&str], command: &[&str]) -> Folded {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("profile.folded");
    let mut args = vec![
        "record",
        "-F",
        "299",
        "--unwind",
        unwind,
        "--format",
        "folded",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(command);
    run_critpath(&args);
    folded::parse(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

/// Share of samples whose stack holds `chain` as consecutive frames (root first), and the share
/// starting with a `[truncated]` marker.
fn shares(profile: &Folded, chain: &[&str]) -> (f64, f64, i64) {
    let total: i64 = profile.iter().map(|(_, v)| v).sum();
    let with_chain: i64 = profile
        .iter()
        .filter(|(stack, _)| {
            stack
                .windows(chain.len())
                .any(|w| w.iter().zip(chain).all(|(f, c)| f == c))
        })
        .map(|(_, v)| v)
        .sum();
    let truncated: i64 = profile
        .iter()
        .filter(|(stack, _)| {
            stack
                .get(1)
                .is_some_and(|f| f == critpath_analyzer::TRUNCATED)
        })
        .map(|(_, v)| v)
        .sum();
    let total_f = total.max(1) as f64;
    (
        with_chain as f64 / total_f,
        truncated as f64 / total_f,
        total,
    )
}

/// The heaviest stacks of a profile, and the heaviest truncated ones, for failure messages.
fn sample_stacks(profile: &Folded) -> String {
    let mut rows: Vec<_> = profile.iter().collect();
    rows.sort_by_key(|(_, v)| -v);
    let truncated = rows
        .iter()
        .filter(|(s, _)| s.get(1).is_some_and(|f| f == critpath_analyzer::TRUNCATED));
    rows.iter()
        .take(3)
        .chain(truncated.take(3))
        .map(|(s, v)| format!("  {v} {}", s.join(";")))
        .collect::<Vec<_>>()
        .join("\n")
}

const LIB_CHAIN: [&str; 4] = ["lib_enter", "lib_level_1", "lib_level_2", "lib_level_3"];

fn c_chain() -> Vec<&'static str> {
    let mut chain = vec![
        "main",
        "app_level_1",
        "app_level_2",
        "app_level_3",
        "app_level_4",
    ];
    chain.extend(LIB_CHAIN);
    chain.push("app_leaf");
    chain
}

fn rust_chain() -> Vec<&'static str> {
    let mut chain = vec![
        "deepchain::main",
        "deepchain::rust_level_1",
        "deepchain::rust_level_2",
        "deepchain::rust_level_3",
        "deepchain::rust_level_4",
    ];
    chain.extend(LIB_CHAIN);
    chain.push("deepchain::rust_leaf");
    chain
}

/// ≥ 95% of the samples of the C and Rust programs built without frame pointers carry the whole
/// chain from main to the leaf, by name and in order, through the shared library. The same
/// programs recorded with frame pointers alone get (almost) none: the chain really needs the
/// call-frame information.
#[test]
fn programs_without_frame_pointers_unwind_from_main_to_the_leaf() {
    let Some(_machine) = kernel_test() else {
        return;
    };
    for (program, chain) in [("deepchain", c_chain()), ("deepchain-rs", rust_chain())] {
        let exe = native().join(program);
        let exe = exe.to_str().unwrap();
        let profile = record("dwarf", &[], &[exe, "2"]);
        let (complete, truncated, total) = shares(&profile, &chain);
        assert!(total >= 300, "{program}: only {total} samples");
        assert!(
            complete >= 0.95,
            "{program}: {:.1}% of {total} samples have the chain {chain:?} ({:.1}% truncated):\n{}",
            complete * 100.0,
            truncated * 100.0,
            sample_stacks(&profile)
        );
        assert!(
            truncated <= 0.05,
            "{program}: {truncated:.3} truncated:\n{}",
            sample_stacks(&profile)
        );
        // Below main: the C library's start code, named (libc6-dbg).
        let rooted = profile
            .iter()
            .filter(|(stack, _)| {
                let libc = stack.iter().position(|f| f == "__libc_start_call_main");
                let main = stack.iter().position(|f| f == chain[0]);
                matches!((libc, main), (Some(l), Some(m)) if l < m)
            })
            .map(|(_, v)| v)
            .sum::<i64>();
        assert!(
            rooted as f64 >= 0.95 * total as f64,
            "{program}: {rooted} of {total} stacks reach __libc_start_call_main"
        );

        let fp = record("fp", &[], &[exe, "1"]);
        let (fp_complete, _, fp_total) = shares(&fp, &chain);
        assert!(
            fp_complete <= 0.05,
            "{program} has frame pointers after all: {:.1}% of {fp_total} samples complete with \
             --unwind fp:\n{}",
            fp_complete * 100.0,
            sample_stacks(&fp)
        );
    }
}

/// Records `command` with off-CPU waits (folded by blocked ns) and the wakeup edges.
fn record_waits(unwind: &str, command: &[&str]) -> (Folded, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("off.folded");
    let wakeups = dir.path().join("wakeups.json");
    let mut args = vec![
        "record",
        "-F",
        "19",
        "--unwind",
        unwind,
        "--off-cpu",
        "--format",
        "folded",
        "--value",
        "off_cpu",
        "-o",
        out.to_str().unwrap(),
        "--wakeups",
        wakeups.to_str().unwrap(),
        "--",
    ];
    args.extend_from_slice(command);
    run_critpath(&args);
    (
        folded::parse(&std::fs::read_to_string(&out).unwrap()).unwrap(),
        super::common::wakeup_edges(&wakeups),
    )
}

/// The stacks of one thread's waits of one cause (folded rows start with the thread name and
/// end with the cause).
fn waits_of(profile: &Folded, thread: &str, cause: &str) -> Folded {
    let leaf = format!("[off-cpu: {cause}]_[k]");
    profile
        .iter()
        .filter(|(s, _)| s[0] == thread && s.last() == Some(&leaf))
        .cloned()
        .collect()
}

/// Off-CPU waits of the C program built without frame pointers: its main thread's sleeps carry
/// the whole chain from `__libc_start_call_main` and `main` to the leaf that sleeps, its reader
/// thread's pipe reads their chain from `start_thread`, and the wakeups of the reader carry the
/// waker's (the main thread's) chain down to the leaf that writes the pipe: ≥ 95% of blocked
/// time, ≥ 90% of wakeups. With frame pointers alone (almost) none do.
#[test]
fn off_cpu_waits_and_wakers_unwind_without_frame_pointers() {
    // Alone: a context-switch storm of another test on the same CPU would leave few of these
    // waits captured by the budget.
    let Some(_machine) = kernel_test_alone() else {
        return;
    };
    let exe = native().join("deepchain");
    let exe = exe.to_str().unwrap();
    let mut rooted_chain = vec!["__libc_start_call_main"];
    rooted_chain.extend(c_chain());
    let reader_chain = ["start_thread", "reader_loop", "reader_wait"];

    let (profile, edges) = record_waits("dwarf", &[exe, "2", "0", "wait"]);
    let sleeps = waits_of(&profile, "deepchain", "sleep");
    let (complete, truncated, total) = shares(&sleeps, &rooted_chain);
    assert!(
        total >= 1_000_000_000,
        "the main thread slept {total} ns:\n{}",
        sample_stacks(&profile)
    );
    assert!(
        complete >= 0.95 && truncated <= 0.05,
        "{:.1}% of {total} ns of sleeps have the chain {rooted_chain:?}, {:.1}% truncated:\n{}",
        complete * 100.0,
        truncated * 100.0,
        sample_stacks(&sleeps)
    );
    let reads = waits_of(&profile, "dc-reader", "io");
    let (complete, _, total) = shares(&reads, &reader_chain);
    assert!(
        total > 0 && complete >= 0.95,
        "{:.1}% of {total} ns of the reader's waits have {reader_chain:?}:\n{}",
        complete * 100.0,
        sample_stacks(&reads)
    );

    let has_chain = |frames: &serde_json::Value, chain: &[&str]| {
        let frames: Vec<&str> = frames
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        frames
            .windows(chain.len())
            .any(|w| w.iter().zip(chain).all(|(f, c)| f == c))
    };
    let count = |e: &&serde_json::Value| e["count"].as_u64().unwrap_or(1);
    let reader_wakeups: Vec<&serde_json::Value> = edges
        .iter()
        .filter(|e| e["wakee"]["comm"] == "dc-reader" && e["waker"]["comm"] == "deepchain")
        .collect();
    let woken: u64 = reader_wakeups.iter().map(count).sum();
    let by_leaf: u64 = reader_wakeups
        .iter()
        .filter(|e| has_chain(&e["waker_stack"], &rooted_chain))
        .map(count)
        .sum();
    assert!(
        woken >= 20 && by_leaf as f64 >= 0.9 * woken as f64,
        "{by_leaf} of {woken} wakeups of the reader carry the writer's chain: {:#?}",
        reader_wakeups
            .iter()
            .map(|e| &e["waker_stack"])
            .take(3)
            .collect::<Vec<_>>()
    );

    let (fp, fp_edges) = record_waits("fp", &[exe, "1", "0", "wait"]);
    let (fp_complete, _, fp_total) = shares(&waits_of(&fp, "deepchain", "sleep"), &c_chain());
    let fp_by_leaf = fp_edges
        .iter()
        .filter(|e| e["wakee"]["comm"] == "dc-reader" && has_chain(&e["waker_stack"], &c_chain()))
        .count();
    assert!(
        fp_complete <= 0.05 && fp_by_leaf == 0,
        "the program has frame pointers after all: {:.1}% of {fp_total} ns of sleeps complete, \
         {fp_by_leaf} waker chains, with --unwind fp:\n{}",
        fp_complete * 100.0,
        sample_stacks(&fp)
    );
}

/// A stack deeper than the copy (100 recursions of half a KiB) ends in a `[truncated]` marker,
/// with the innermost frames still right and no guessed frames above them.
#[test]
fn stacks_deeper_than_the_copy_are_marked_truncated() {
    let Some(_machine) = kernel_test() else {
        return;
    };
    let exe = native().join("deepchain");
    let profile = record(
        "dwarf",
        &["--user-stack-bytes", "8192"],
        &[exe.to_str().unwrap(), "1", "100"],
    );
    let inner = &c_chain()[1..];
    let (with_inner, truncated, total) = shares(&profile, inner);
    assert!(
        truncated >= 0.95 && with_inner >= 0.95,
        "{:.1}% truncated, {:.1}% with the inner chain, of {total}:\n{}",
        truncated * 100.0,
        with_inner * 100.0,
        sample_stacks(&profile)
    );
    for (stack, _) in &profile {
        if stack
            .get(1)
            .is_some_and(|f| f == critpath_analyzer::TRUNCATED)
        {
            let guessed: Vec<_> = stack[2..]
                .iter()
                .filter(|f| {
                    !(f.ends_with("_[k]")
                        || f.as_str() == "app_recurse"
                        || inner.contains(&f.as_str())
                        || f.starts_with("[unknown] [vdso]")
                        || f.contains("clock_gettime")
                        // A stub of the procedure linkage table, on the way to a library.
                        || f.as_str() == "[plt]"
                        // Sampled at start-up in the dynamic loader (its own leaf, then no
                        // caller it could unwind to): a real frame, not a guess.
                        || f.starts_with("_dl_"))
                })
                .collect();
            assert!(
                guessed.is_empty(),
                "guessed frames {guessed:?} above the truncation: {stack:?}"
            );
        }
    }
}

/// Debian's python3.11 (built without frame pointers, symbols only for its exported functions):
/// the interpreter loop `_PyEval_EvalFrameDefault` appears with its callers up to
/// `Py_BytesMain` and the C library's `__libc_start_call_main`.
#[test]
fn debian_python_interpreter_has_its_callers() {
    let Some(_machine) = kernel_test() else {
        return;
    };
    let python = "/usr/bin/python3.11";
    assert!(
        Path::new(python).exists(),
        "{python} missing: scripts/setup.sh installs python3.11-minimal"
    );
    let script = "import time\nend = time.time() + 2\nwhile time.time() < end: sum(range(1000))";
    let profile = record("dwarf", &[], &[python, "-c", script]);
    let total: i64 = profile.iter().map(|(_, v)| v).sum();
    let chained: i64 = profile
        .iter()
        .filter(|(stack, _)| {
            let at = |name: &str| stack.iter().position(|f| f == name);
            matches!(
                (at("__libc_start_call_main"), at("Py_BytesMain"), at("_PyEval_EvalFrameDefault")),
                (Some(a), Some(b), Some(c)) if a < b && b < c
            )
        })
        .map(|(_, v)| v)
        .sum();
    assert!(
        chained as f64 >= 0.9 * total as f64,
        "{chained} of {total} python samples have __libc_start_call_main > Py_BytesMain > \
         _PyEval_EvalFrameDefault:\n{}",
        sample_stacks(&profile)
    );
    let (_, truncated, _) = shares(&profile, &["_PyEval_EvalFrameDefault"]);
    assert!(truncated <= 0.05, "{:.1}% truncated", truncated * 100.0);
}

/// The agent reports truncated stacks per process in health and /metrics: all of a too-deep
/// program's, (almost) none of a shallow one's; and the user stacks copied for off-CPU waits.
#[test]
fn agent_reports_truncated_stacks_per_process() {
    let Some(_machine) = kernel_test() else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let server = start_with(
        store.path(),
        &[
            "run",
            "--interval",
            "1s",
            "-F",
            "99",
            "--user-stack-bytes",
            "8192",
        ],
        true,
    );
    let exe = native().join("deepchain");
    let mut deep = Command::new(&exe).args(["3", "100"]).spawn().unwrap();
    let mut shallow = Command::new(&exe).args(["3"]).spawn().unwrap();
    let mut waiting = Command::new(&exe).args(["3", "0", "wait"]).spawn().unwrap();
    let (deep_pid, shallow_pid) = (deep.id(), shallow.id());
    assert!(deep.wait().unwrap().success() && shallow.wait().unwrap().success());
    assert!(waiting.wait().unwrap().success());
    // The status is refreshed every second.
    std::thread::sleep(Duration::from_millis(1500));

    let (status, health) = get(&server.addr, "/api/v1/health");
    assert_eq!(status, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    let unwinding = &health["sampler"]["unwinding"];
    assert_eq!(unwinding["mode"], "dwarf", "{unwinding}");
    let process = |pid: u32| {
        unwinding["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .cloned()
    };
    let deep_status = process(deep_pid).unwrap_or_else(|| panic!("{deep_pid} not in {unwinding}"));
    let (stacks, truncated) = (
        deep_status["stacks"].as_u64().unwrap(),
        deep_status["truncated"].as_u64().unwrap(),
    );
    assert!(
        stacks >= 100 && truncated as f64 >= 0.95 * stacks as f64,
        "{deep_status}"
    );
    assert_eq!(deep_status["comm"], "deepchain");
    // Listed only when among the processes with the most truncated stacks; then almost none.
    if let Some(s) = process(shallow_pid) {
        assert!(
            s["truncated"].as_u64().unwrap() as f64 <= 0.05 * s["stacks"].as_u64().unwrap() as f64,
            "{s}"
        );
    }
    assert!(unwinding["truncated"].as_u64().unwrap() >= truncated);
    // The waiting program blocks some 500 times a second for 3 s: its waits' stacks were copied.
    let copies = unwinding["wait_copies"].as_u64().unwrap();
    assert!(copies >= 200, "{unwinding}");
    assert!(unwinding["wait_copy_bytes"].as_u64().unwrap() >= copies * 1024);
    assert!(unwinding["held_wait_copy_bytes"].is_u64());

    let (status, metrics) = get(&server.addr, "/metrics");
    assert_eq!(status, 200);
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "critpath_process_truncated_stacks_ratio{{pid=\"{deep_pid}\",comm=\"deepchain\"}}"
            ))
        })
        .unwrap_or_else(|| panic!("no truncation ratio of {deep_pid} in:\n{metrics}"));
    let ratio: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(ratio >= 0.95, "{line}");
    assert!(metrics.contains("critpath_user_stacks_truncated_total "));
    let copied: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("critpath_wait_stack_copies_total "))
        .unwrap_or_else(|| panic!("no wait stack copies in:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(copied >= copies, "{copied} < {copies}");
    assert!(metrics.contains("critpath_held_wait_stack_bytes "));
    drop(server);
}
