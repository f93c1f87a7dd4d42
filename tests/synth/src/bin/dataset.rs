//! Builds the ground-truth dataset: many programs across the template families, each measured
//! by the harness (and recorded with critpath's sampler when `--record` is given, as root).
//!
//! ```text
//! dataset --out DIR [--families lock_bound,pool_bound,...] [--seeds FIRST..LAST]
//!         [--utilisation U] [--delta D] [--seconds S] [--rounds N] [--record]
//! ```
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
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    let out = out.unwrap_or_else(|| fail("--out DIR is required"));
    let out = Path::new(&out);
    let groundtruth = std::env::current_exe()
        .map(|e| e.with_file_name("groundtruth"))
        .unwrap_or_else(|e| fail(&format!("own path: {e}")));
    let programs: Vec<(Family, u64)> = families
        .iter()
        .flat_map(|&f| (first..=last).map(move |s| (f, s)))
        .collect();
    let started = Instant::now();
    let mut statuses = Vec::new();
    for (i, &(family, seed)) in programs.iter().enumerate() {
        let dir = out
            .join("programs")
            .join(format!("{}-{seed}", family.name()));
        let truth = dir.join("truth.json");
        let status = if truth.exists() {
            "done (earlier)"
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
            if record {
                cmd.arg("--record").arg(&tmp);
            }
            let ok = cmd.status().is_ok_and(|s| s.success());
            if ok {
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::rename(&tmp, &dir)
                    .unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
                "done"
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
        write_manifest(out, &families, first, last, &passthrough, record, &statuses);
    }
}

fn write_manifest(
    out: &Path,
    families: &[Family],
    first: u64,
    last: u64,
    protocol: &[String],
    record: bool,
    programs: &[serde_json::Value],
) {
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
        "machine": {
            "uname": uname,
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        },
        "reproduce": format!(
            "dataset --out DIR --families {} --seeds {first}..{last} {}{}",
            families.iter().map(|f| f.name()).collect::<Vec<_>>().join(","),
            protocol.join(" "),
            if record { " --record" } else { "" }
        ),
        "programs": programs,
    });
    let path = out.join("manifest.json");
    let tmp = out.join("manifest.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&manifest).expect("JSON"))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
}
