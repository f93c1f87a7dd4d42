//! Measures a synthetic program's ground truth (see `critpath_synth::groundtruth`).
//!
//! ```text
//! groundtruth FAMILY SEED [--utilisation U] [--delta D] [--seconds S] [--rounds N] [--out FILE]
//!             [--record DIR [--cases]] [--truth FILE]
//! ```
//!
//! `--truth FILE` takes the measurement from an earlier run's output instead of measuring
//! again: with `--record`, it re-records a program whose ground truth is known (recordings take
//! seconds, measurements minutes).
//!
//! Prints progress on stderr and the result (spec, protocol, noise floor, per-function
//! elasticities with 95% intervals) as JSON on stdout or to `--out`.
//!
//! `--record DIR` then runs one more baseline as its own process (`synth_service run`) under
//! `critpath record --off-cpu` (needs root) and keeps, in DIR: `spec.json`, `truth.json`, the
//! sampler's `profile.pb.gz` (on-CPU samples, off-CPU waits by cause) and `wakeups.json` (who
//! woke whom), the run's `requests.csv` and its `baseline.json` summary. `critpath` and
//! `synth_service` are looked up beside this program (or `$CRITPATH`). Recordings sample at
//! 199 Hz and keep off-CPU waits from 100 µs, for at least 4 s: the evidence of about a minute
//! of the agent's defaults (19 Hz, 1 ms) on a busier program.
//!
//! `--cases` also records the program's deploy and stall cases (`critpath_synth::cases`) in
//! `DIR/cases/<kind>/`: `case.json` (the injected function, its scale, the windows and each
//! window's measured latency), `requests.csv`, and `before.pb.gz`/`after.pb.gz` with
//! `before.wakeups.json`/`after.wakeups.json`, each a 3.5 s recording (`critpath record -p
//! PID`) inside its part of the run. A recording that overlaps the change fails the case.

use std::time::Duration;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use critpath_synth::cases::{Case, CaseKind, WindowLatency};
use critpath_synth::groundtruth::{Protocol, measure};
use critpath_synth::{Family, Request, Spec};

/// Sampling frequency of recordings, Hz.
const RECORD_HZ: &str = "199";
/// Shortest off-CPU wait kept with its stack in recordings, µs.
const RECORD_MIN_WAIT_US: &str = "100";
/// Length of each case window's recording, s.
const CASE_RECORDING: f64 = 3.5;

fn fail(message: &str) -> ! {
    eprintln!("groundtruth: {message}");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [family, seed, rest @ ..] = args.as_slice() else {
        fail(
            "usage: groundtruth FAMILY SEED [--utilisation U] [--delta D] [--seconds S] [--rounds N] [--out FILE]",
        );
    };
    let family: Family = family.parse().unwrap_or_else(|e: String| fail(&e));
    let seed: u64 = seed
        .parse()
        .unwrap_or_else(|_| fail(&format!("seed {seed:?} is not a number")));
    let mut protocol = Protocol::default();
    let mut out = None;
    let mut record = None;
    let mut cases = false;
    let mut earlier = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let mut number = || -> f64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|v: &f64| *v > 0.0)
                .unwrap_or_else(|| fail(&format!("{a} needs a positive number")))
        };
        match a.as_str() {
            "--utilisation" => protocol.utilisation = number(),
            "--delta" => protocol.delta = number().min(0.9),
            "--seconds" => protocol.run = Duration::from_secs_f64(number()),
            "--rounds" => protocol.rounds = number() as usize,
            "--out" => out = it.next().cloned(),
            "--record" => record = it.next().cloned(),
            "--cases" => cases = true,
            "--truth" => earlier = it.next().cloned(),
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    protocol.warmup = protocol.run / 4;
    if cases && record.is_none() {
        fail("--cases needs --record DIR");
    }
    let spec = Spec::generate(family, seed);
    let json = match earlier {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| fail(&format!("reading {path}: {e}")));
            let json: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
            if json["spec"] != serde_json::to_value(&spec).expect("JSON") {
                fail(&format!(
                    "{path} measured another program than {} {seed}",
                    family.name()
                ));
            }
            json
        }
        None => {
            let truth = measure(&spec, &protocol, |line| eprintln!("groundtruth: {line}"));
            serde_json::json!({
                "spec": spec,
                "protocol": {
                    "utilisation": protocol.utilisation,
                    "delta": protocol.delta,
                    "run_seconds": protocol.run.as_secs_f64(),
                    "warmup_seconds": protocol.warmup.as_secs_f64(),
                    "rounds": protocol.rounds,
                },
                "truth": truth,
            })
        }
    };
    let rate = json["truth"]["rate"]
        .as_f64()
        .unwrap_or_else(|| fail("the measurement has no truth.rate"));
    let text = serde_json::to_string_pretty(&json).expect("JSON");
    // The measurement first: a recording that fails must not lose minutes of measuring.
    match out {
        Some(path) => {
            std::fs::write(&path, &text).unwrap_or_else(|e| fail(&format!("writing {path}: {e}")))
        }
        None => println!("{text}"),
    }
    if let Some(dir) = record {
        let dir = Path::new(&dir);
        record_baseline(dir, &spec, &protocol, rate, &text);
        if cases {
            for kind in CaseKind::ALL {
                let Some(case) = Case::choose(&spec, kind) else {
                    continue;
                };
                let case_dir = dir.join("cases").join(kind.name());
                if let Err(e) = record_case(&case_dir, &case, rate) {
                    // A case is a few seconds to record again (`dataset --record-only`).
                    eprintln!("groundtruth: {} case skipped: {e}", kind.name());
                    let _ = std::fs::remove_dir_all(&case_dir);
                }
            }
        }
    }
}

/// Where the programs this one drives live: beside it (`critpath` also from `$CRITPATH`).
fn beside(name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os("CRITPATH").filter(|_| name == "critpath") {
        return path.into();
    }
    let here = std::env::current_exe().unwrap_or_else(|e| fail(&format!("own path: {e}")));
    here.with_file_name(name)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text)
        .unwrap_or_else(|e| fail(&format!("writing {name} in {}: {e}", dir.display())))
}

/// `critpath record` with the recordings' settings, writing `<prefix>.pb.gz` and
/// `<prefix>.wakeups.json` (for the baseline's `profile`: `wakeups.json`) in `dir`.
fn record_command(dir: &Path, prefix: &str) -> Command {
    let wakeups = if prefix == "profile" {
        "wakeups.json".to_owned()
    } else {
        format!("{prefix}.wakeups.json")
    };
    let mut cmd = Command::new(beside("critpath"));
    cmd.args(["record", "--off-cpu", "--format", "pprof"])
        .args(["-F", RECORD_HZ, "--off-cpu-min-us", RECORD_MIN_WAIT_US])
        .arg("-o")
        .arg(dir.join(format!("{prefix}.pb.gz")))
        .arg("--wakeups")
        .arg(dir.join(wakeups));
    cmd
}

fn check(what: &str, output: std::io::Result<std::process::Output>) -> std::process::Output {
    let output = output.unwrap_or_else(|e| fail(&format!("running {what}: {e}")));
    if !output.status.success() {
        fail(&format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    output
}

/// Runs one baseline as its own process under `critpath record` and keeps what it wrote.
fn record_baseline(dir: &Path, spec: &Spec, protocol: &Protocol, rate: f64, truth: &str) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    write(
        dir,
        "spec.json",
        &serde_json::to_string_pretty(spec).expect("JSON"),
    );
    write(dir, "truth.json", truth);
    eprintln!("groundtruth: recording a baseline run");
    let seconds = protocol.run.as_secs_f64().max(4.0);
    let output = check(
        "critpath record",
        record_command(dir, "profile")
            .arg("--")
            .arg(beside("synth_service"))
            .arg("run")
            .arg(dir.join("spec.json"))
            .args(["--rate", &rate.to_string()])
            .args(["--seconds", &seconds.to_string()])
            .args(["--warmup", &(seconds / 4.0).to_string()])
            .arg("--log")
            .arg(dir.join("requests.csv"))
            .output(),
    );
    write(
        dir,
        "baseline.json",
        &String::from_utf8_lossy(&output.stdout),
    );
}

/// Runs a case: the program with its change injected, recorded in a window before the change
/// and one after it.
fn record_case(dir: &Path, case: &Case, rate: f64) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let spec = dir.join("../../spec.json");
    eprintln!(
        "groundtruth: {} case: {} ({}) ×{} at {} s",
        case.kind.name(),
        case.function,
        case.role,
        case.scale,
        case.at
    );
    let mut program = Command::new(beside("synth_service"));
    program
        .arg("run")
        .arg(&spec)
        .args(["--rate", &rate.to_string()])
        .args(["--seconds", &Case::SECONDS.to_string(), "--warmup", "0"])
        .arg("--log")
        .arg(dir.join("requests.csv"))
        .stdout(Stdio::piped());
    for c in case.changes() {
        program
            .arg("--change")
            .arg(format!("{}={}@{}", c.function, c.scale, c.at.as_secs_f64()));
    }
    let started = Instant::now();
    let mut child = program
        .spawn()
        .map_err(|e| format!("starting synth_service: {e}"))?;
    let pid = child.id().to_string();
    let window = |prefix: &str, from: f64, must_end: f64| -> Result<(), String> {
        let wait = from - started.elapsed().as_secs_f64();
        if wait > 0.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(wait));
        }
        let output = record_command(dir, prefix)
            .args(["-p", &pid, "-d", &CASE_RECORDING.to_string()])
            .output()
            .map_err(|e| format!("running critpath record: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "critpath record failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let ended = started.elapsed().as_secs_f64();
        if ended > must_end {
            return Err(format!(
                "the {prefix} recording ended {ended:.2} s into the run, after {must_end} s: it overlaps the change"
            ));
        }
        Ok(())
    };
    // Each recording starts a little into its part of the run and must end before the part does
    // (starting the sampler takes about a second).
    let recorded = window("before", 0.2, case.at)
        .and_then(|()| window("after", case.at + 0.1, case.until.unwrap_or(Case::SECONDS)));
    if let Err(e) = recorded {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("waiting for synth_service: {e}"))?;
    if !output.status.success() {
        return Err(format!("synth_service failed ({})", output.status));
    }
    let log = std::fs::read_to_string(dir.join("requests.csv"))
        .map_err(|e| format!("reading the request log: {e}"))?;
    let requests: Vec<Request> = log
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split(',').map(|v| v.parse::<u64>().ok());
            Some(Request {
                arrival_ns: it.next()??,
                start_ns: it.next()??,
                end_ns: it.next()??,
            })
        })
        .collect();
    let json = serde_json::json!({
        "case": case,
        "rate": rate,
        "latency": {
            "before": WindowLatency::of(&requests, case.before),
            "after": WindowLatency::of(&requests, case.after),
        },
        "run": serde_json::from_slice::<serde_json::Value>(&output.stdout).ok(),
    });
    std::fs::write(
        dir.join("case.json"),
        serde_json::to_string_pretty(&json).expect("JSON"),
    )
    .map_err(|e| format!("writing case.json in {}: {e}", dir.display()))
}
