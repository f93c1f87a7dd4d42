//! Builds the ground-truth dataset: many programs across the template families, each measured
//! by the harness (and recorded with critpath's sampler when `--record` is given, as root).
//!
//! ```text
//! dataset --out DIR [--families lock_bound,pool_bound,...] [--seeds FIRST..LAST]
//!         [--utilisation U] [--delta D] [--seconds S] [--rounds N] [--record]
//!         [--cases-every N]
//! ```
//!
//! `--cases-every N` (with `--record`) also records the deploy and stall cases of every
//! program whose seed is a multiple of N. `--record-only` records the programs measured but not
//! recorded yet (`groundtruth --truth`), without measuring again: recordings are cheap and follow
//! the sampler (delete `profile.pb.gz` to record a program again), measurements are expensive
//! and do not change.
//!
//! Resumable: a program whose `DIR/programs/<family>-<seed>/truth.json` exists is skipped, and
//! the work can be stopped at any time (a program is written only when complete). The
//! manifest `DIR/manifest.json` records how the dataset was made: protocol, families, seeds,
//! machine, and each program's status.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use critpath_synth::Family;

fn fail(message: &str) -> ! {
    eprintln!("dataset: {message}");
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = None;
    let mut families = Family::ALL.to_vec();
    let (mut first, mut last) = (1u64, 30u64);
    let mut passthrough: Vec<String> = Vec::new();
    let mut record = false;
    let mut cases_every = 0u64;
    let mut record_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| fail(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--out" => out = Some(value()),
            "--families" => {
                families = value()
                    .split(',')
                    .map(|f| f.parse().unwrap_or_else(|e: String| fail(&e)))
                    .collect();
            }
            "--seeds" => {
                let v = value();
                let (a, b) = v
                    .split_once("..")
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .filter(|(a, b): &(u64, u64)| a <= b)
                    .unwrap_or_else(|| fail(&format!("--seeds {v:?}: expected FIRST..LAST")));
                (first, last) = (a, b);
            }
            "--utilisation" | "--delta" | "--seconds" | "--rounds" => {
                passthrough.push(a.clone());
                passthrough.push(value());
            }
            "--record" => record = true,
            "--record-only" => {
                record = true;
                record_only = true;
            }
            "--cases-every" => {
                let v = value();
                cases_every = v
                    .parse()
                    .unwrap_or_else(|_| fail(&format!("--cases-every {v:?}: expected a number")));
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    let out = out.unwrap_or_else(|| fail("--out DIR is required"));
    if cases_every > 0 && !record {
        fail("--cases-every needs --record");
    }
    let out = Path::new(&out);
    let groundtruth = std::env::current_exe()
        .map(|e| e.with_file_name("groundtruth"))
        .unwrap_or_else(|e| fail(&format!("own path: {e}")));
    // Seed-major: a dataset stopped half-way still covers every family.
    let programs: Vec<(Family, u64)> = (first..=last)
        .flat_map(|s| families.iter().map(move |&f| (f, s)))
        .collect();
    let started = Instant::now();
    let mut statuses = Vec::new();
    for (i, &(family, seed)) in programs.iter().enumerate() {
        let dir = out
            .join("programs")
            .join(format!("{}-{seed}", family.name()));
        let truth = dir.join("truth.json");
        let recorded = dir.join("profile.pb.gz").exists();
        let status = if !record_only && truth.exists() {
            "done (earlier)"
        } else if record_only && !truth.exists() {
            "not measured yet"
        } else if record_only && recorded {
            "recorded (earlier)"
        } else {
            let tmp = out
                .join("programs")
                .join(format!(".{}-{seed}.tmp", family.name()));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp)
                .unwrap_or_else(|e| fail(&format!("{}: {e}", tmp.display())));
            let mut cmd = Command::new(&groundtruth);
            cmd.arg(family.name())
                .arg(seed.to_string())
                .args(&passthrough)
                .arg("--out")
                .arg(tmp.join("truth.json"));
            if record_only {
                cmd.arg("--truth").arg(&truth);
            }
            if record {
                cmd.arg("--record").arg(&tmp);
                if cases_every > 0 && seed % cases_every == 0 {
                    cmd.arg("--cases");
                }
            }
            let ok = cmd.status().is_ok_and(|s| s.success());
            // A measurement that completed is kept even when its recording failed (the
            // recording is redone by `--record-only`).
            let measured = tmp.join("truth.json").exists();
            if ok || (measured && !record_only) {
                if !ok {
                    let _ = std::fs::remove_file(tmp.join("profile.pb.gz"));
                }
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::rename(&tmp, &dir)
                    .unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
                if ok { "done" } else { "measured, not recorded" }
            } else {
                "failed"
            }
        };
        statuses.push(serde_json::json!({
            "family": family.name(),
            "seed": seed,
            "status": status,
        }));
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!(
            "dataset: {}/{} {}-{seed}: {status} ({:.0} s so far)",
            i + 1,
            programs.len(),
            family.name(),
            elapsed
        );
        let how = How {
            families: &families,
            first,
            last,
            protocol: &passthrough,
            record,
            cases_every,
        };
        // Re-recording leaves the manifest of the measurements alone.
        let name = if record_only {
            "recordings.json"
        } else {
            "manifest.json"
        };
        write_manifest(out, name, &how, &statuses);
    }
}

/// How the dataset is made: the runner's arguments.
struct How<'a> {
    families: &'a [Family],
    first: u64,
    last: u64,
    protocol: &'a [String],
    record: bool,
    cases_every: u64,
}

fn write_manifest(out: &Path, name: &str, how: &How, programs: &[serde_json::Value]) {
    let How {
        families,
        first,
        last,
        protocol,
        record,
        cases_every,
    } = *how;
    let uname = Command::new("uname")
        .arg("-a")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let manifest = serde_json::json!({
        "version": 1,
        "generator": "critpath-synth dataset",
        "families": families.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "seeds": format!("{first}..{last}"),
        "protocol_arguments": protocol,
        "recorded_with_critpath": record,
        "cases_every": cases_every,
        "machine": {
            "uname": uname,
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        },
        "reproduce": format!(
            "dataset --out DIR --families {} --seeds {first}..{last} {}{}{}",
            families.iter().map(|f| f.name()).collect::<Vec<_>>().join(","),
            protocol.join(" "),
            if record { " --record" } else { "" },
            if cases_every > 0 {
                format!(" --cases-every {cases_every}")
            } else {
                String::new()
            }
        ),
        "programs": programs,
    });
    let path = out.join(name);
    let tmp = out.join(format!("{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(&manifest).expect("JSON"))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
}
