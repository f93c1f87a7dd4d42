//! Measures a synthetic program's ground truth (see `critpath_synth::groundtruth`).
//!
//! ```text
//! groundtruth FAMILY SEED [--utilisation U] [--delta D] [--seconds S] [--rounds N] [--out FILE]
//!             [--record DIR]
//! ```
//!
//! Prints progress on stderr and the result (spec, protocol, noise floor, per-function
//! elasticities with 95% intervals) as JSON on stdout or to `--out`.
//!
//! `--record DIR` then runs one more baseline as its own process (`synth_service run`) under
//! `critpath record --off-cpu` (needs root) and keeps, in DIR: `spec.json`, `truth.json`, the
//! sampler's `profile.pb.gz` (on-CPU samples, off-CPU waits by cause) and `wakeups.json` (who
//! woke whom), the run's `requests.csv` and its `baseline.json` summary. `critpath` and
//! `synth_service` are looked up beside this program (or `$CRITPATH`).

use std::time::Duration;

use critpath_synth::groundtruth::{Protocol, measure};
use critpath_synth::{Family, Spec};

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
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    protocol.warmup = protocol.run / 4;
    let spec = Spec::generate(family, seed);
    let truth = measure(&spec, &protocol, |line| eprintln!("groundtruth: {line}"));
    let json = serde_json::json!({
        "spec": spec,
        "protocol": {
            "utilisation": protocol.utilisation,
            "delta": protocol.delta,
            "run_seconds": protocol.run.as_secs_f64(),
            "warmup_seconds": protocol.warmup.as_secs_f64(),
            "rounds": protocol.rounds,
        },
        "truth": truth,
    });
    let text = serde_json::to_string_pretty(&json).expect("JSON");
    if let Some(dir) = record {
        record_baseline(
            std::path::Path::new(&dir),
            &spec,
            &protocol,
            truth.rate,
            &text,
        );
    }
    match out {
        Some(path) => {
            std::fs::write(&path, text).unwrap_or_else(|e| fail(&format!("writing {path}: {e}")))
        }
        None => println!("{text}"),
    }
}

/// Runs one baseline as its own process under `critpath record` and keeps what it wrote.
fn record_baseline(
    dir: &std::path::Path,
    spec: &Spec,
    protocol: &Protocol,
    rate: f64,
    truth: &str,
) {
    let here = std::env::current_exe().unwrap_or_else(|e| fail(&format!("own path: {e}")));
    let beside = |name: &str| here.with_file_name(name);
    let critpath = std::env::var_os("CRITPATH").map_or_else(|| beside("critpath"), Into::into);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .unwrap_or_else(|e| fail(&format!("writing {name} in {}: {e}", dir.display())))
    };
    write(
        "spec.json",
        &serde_json::to_string_pretty(spec).expect("JSON"),
    );
    write("truth.json", truth);
    eprintln!(
        "groundtruth: recording a baseline run with {}",
        critpath.display()
    );
    let output = std::process::Command::new(&critpath)
        .args(["record", "--off-cpu", "--format", "pprof", "-o"])
        .arg(dir.join("profile.pb.gz"))
        .arg("--wakeups")
        .arg(dir.join("wakeups.json"))
        .arg("--")
        .arg(beside("synth_service"))
        .arg("run")
        .arg(dir.join("spec.json"))
        .args(["--rate", &rate.to_string()])
        .args(["--seconds", &protocol.run.as_secs_f64().to_string()])
        .args(["--warmup", &protocol.warmup.as_secs_f64().to_string()])
        .arg("--log")
        .arg(dir.join("requests.csv"))
        .output()
        .unwrap_or_else(|e| fail(&format!("running {}: {e}", critpath.display())));
    if !output.status.success() {
        fail(&format!(
            "critpath record failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    write("baseline.json", &String::from_utf8_lossy(&output.stdout));
}
