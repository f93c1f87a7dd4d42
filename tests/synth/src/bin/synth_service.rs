//! A synthetic request-serving program.
//!
//! ```text
//! synth_service generate FAMILY SEED                    # prints the program's spec (JSON)
//! synth_service run SPEC.json (--rate R | --utilisation U) [--seconds S] [--warmup S]
//!               [--scale NAME=FACTOR]... [--change NAME=FACTOR@SECONDS]... [--log FILE]
//!               [--seed N]
//! ```
//!
//! `run` serves requests for `--seconds` (default 5; the first `--warmup`, default 1, left out
//! of the summary) and prints one JSON line: the arrival rate, and requests, unfinished,
//! throughput, p50_us, p99_us. `--utilisation U` first measures capacity closed-loop for 1.5 s
//! and then offers U × capacity. `--log` writes every request as CSV
//! (`arrival_ns,start_ns,end_ns`). `--scale w17=1.2` makes work function `w17` do 1.2× its work;
//! `--change w17=2@5` makes it do 2× from 5 s into the run on (a deploy; two changes make a
//! temporary stall).

use std::collections::HashMap;
use std::time::Duration;

use critpath_synth::{Change, Family, Load, RunConfig, Spec, run};

fn fail(message: &str) -> ! {
    eprintln!("synth_service: {message}");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("generate") => {
            let [_, family, seed] = args.as_slice() else {
                fail("usage: synth_service generate FAMILY SEED");
            };
            let family: Family = family.parse().unwrap_or_else(|e: String| fail(&e));
            let seed = seed
                .parse()
                .unwrap_or_else(|_| fail(&format!("seed {seed:?} is not a number")));
            let spec = Spec::generate(family, seed);
            println!("{}", serde_json::to_string_pretty(&spec).expect("a spec"));
        }
        Some("run") => run_command(&args[1..]),
        _ => fail("usage: synth_service generate FAMILY SEED | run SPEC.json --rate R ..."),
    }
}

fn run_command(args: &[String]) {
    let mut it = args.iter();
    let path = it.next().unwrap_or_else(|| fail("run needs a spec file"));
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| fail(&format!("reading {path}: {e}")));
    let spec: Spec = serde_json::from_str(&text).unwrap_or_else(|e| fail(&format!("{path}: {e}")));
    let (mut rate, mut utilisation, mut log) = (None, None, None);
    let mut config = RunConfig {
        load: Load::Closed,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        scales: HashMap::new(),
        seed: 1,
        changes: Vec::new(),
    };
    let number = |name: &str, v: Option<&String>| -> f64 {
        v.and_then(|v| v.parse().ok())
            .filter(|v: &f64| *v >= 0.0)
            .unwrap_or_else(|| fail(&format!("{name} needs a non-negative number")))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rate" => rate = Some(number("--rate", it.next())),
            "--utilisation" => utilisation = Some(number("--utilisation", it.next())),
            "--seconds" => {
                config.duration = Duration::from_secs_f64(number("--seconds", it.next()))
            }
            "--warmup" => config.warmup = Duration::from_secs_f64(number("--warmup", it.next())),
            "--seed" => config.seed = number("--seed", it.next()) as u64,
            "--log" => log = it.next().cloned(),
            "--change" => {
                let v = it
                    .next()
                    .unwrap_or_else(|| fail("--change needs NAME=FACTOR@SECONDS"));
                let change = v
                    .split_once('=')
                    .and_then(|(n, rest)| {
                        let (f, at) = rest.split_once('@')?;
                        Some((n, f.parse::<f64>().ok()?, at.parse::<f64>().ok()?))
                    })
                    .filter(|(n, f, at)| {
                        *f > 0.0 && *at >= 0.0 && spec.functions.iter().any(|x| x.name == *n)
                    })
                    .unwrap_or_else(|| {
                        fail(&format!(
                            "--change {v:?}: expected NAME=FACTOR@SECONDS with a function of this program, a positive factor and a time since the start"
                        ))
                    });
                config.changes.push(Change {
                    function: change.0.to_owned(),
                    scale: change.1,
                    at: Duration::from_secs_f64(change.2),
                });
            }
            "--scale" => {
                let v = it
                    .next()
                    .unwrap_or_else(|| fail("--scale needs NAME=FACTOR"));
                let (name, factor) = v
                    .split_once('=')
                    .and_then(|(n, f)| Some((n, f.parse::<f64>().ok()?)))
                    .filter(|(n, f)| *f > 0.0 && spec.functions.iter().any(|x| x.name == *n))
                    .unwrap_or_else(|| {
                        fail(&format!(
                            "--scale {v:?}: expected NAME=FACTOR with a function of this program and a positive factor"
                        ))
                    });
                config.scales.insert(name.to_owned(), factor);
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    if config.warmup >= config.duration {
        fail("--warmup must be shorter than --seconds");
    }
    let mut capacity = None;
    config.load = match (rate, utilisation) {
        (Some(r), None) if r > 0.0 => Load::Rate(r),
        (None, Some(u)) if u > 0.0 => {
            let probe = RunConfig {
                load: Load::Closed,
                duration: Duration::from_millis(1500),
                warmup: Duration::from_millis(500),
                ..config.clone()
            };
            let c = run(&spec, &probe).summary().throughput;
            capacity = Some(c);
            Load::Rate(u * c)
        }
        _ => fail("give exactly one of --rate R or --utilisation U (positive)"),
    };
    let outcome = run(&spec, &config);
    if let Some(path) = log {
        std::fs::write(&path, outcome.log_csv())
            .unwrap_or_else(|e| fail(&format!("writing {path}: {e}")));
    }
    let Load::Rate(rate) = config.load else {
        unreachable!()
    };
    let mut line = serde_json::to_value(outcome.summary()).expect("a summary");
    line["rate"] = rate.into();
    if let Some(c) = capacity {
        line["capacity"] = c.into();
    }
    println!("{line}");
}
