//! Measures a synthetic program's ground truth (see `critpath_synth::groundtruth`).
//!
//! ```text
//! groundtruth FAMILY SEED [--utilisation U] [--delta D] [--seconds S] [--rounds N] [--out FILE]
//! ```
//!
//! Prints progress on stderr and the result (spec, protocol, noise floor, per-function
//! elasticities with 95% intervals) as JSON on stdout or to `--out`.

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
    match out {
        Some(path) => {
            std::fs::write(&path, text).unwrap_or_else(|e| fail(&format!("writing {path}: {e}")))
        }
        None => println!("{text}"),
    }
}
