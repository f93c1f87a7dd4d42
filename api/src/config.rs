//! The agent's TOML configuration file, merged with the command line into [`AgentConfig`].
//!
//! ```toml
//! data_dir = "/var/lib/critpath"
//! frequency = 19
//! interval = "10s"
//! off_cpu = true
//! off_cpu_min_us = 1000
//! off_cpu_budget = 2000
//! wait_records = 1000     # off-CPU waits kept one by one per second
//! host = "web-1"
//! unwind = "dwarf"        # or "fp"
//! user_stack_bytes = 32768
//! probes = ["/srv/api/bin/api:api::handle_request"]   # latency probes: requests' bounds
//!
//! [retention]
//! max_age = "30d"
//! max_bytes = "10GiB"
//!
//! [[service]]            # the first matching rule names the `service` label
//! name = "api"
//! exe = "/srv/api/bin/.*" # regex over the whole executable path
//!
//! [[service]]
//! name = "db"
//! cgroup = ".*/postgresql.*\\.service" # regex over the whole cgroup v2 path
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use critpath_analyzer::query::parse_duration_ms;
use critpath_analyzer::store::Retention;
use critpath_sampler::OffCpuConfig;
use regex::Regex;
use serde::Deserialize;

use crate::agent::{AgentConfig, ServiceRule};
use crate::cli::{AgentArgs, UnwindMode, default_data_dir};

/// The file's contents; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    data_dir: Option<PathBuf>,
    frequency: Option<u64>,
    interval: Option<String>,
    off_cpu: Option<bool>,
    off_cpu_min_us: Option<u64>,
    off_cpu_budget: Option<u32>,
    wait_records: Option<u32>,
    host: Option<String>,
    ring_bytes: Option<u32>,
    unwind: Option<UnwindMode>,
    user_stack_bytes: Option<u32>,
    retention: Option<RetentionFile>,
    #[serde(default)]
    service: Vec<ServiceFile>,
    #[serde(default)]
    probes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    max_age: Option<String>,
    max_bytes: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    exe: Option<String>,
    cgroup: Option<String>,
}

fn read_file(path: &Path) -> anyhow::Result<AgentFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: invalid configuration", path.display()))
}

/// Parses a size: bytes, or a number with K, M, G, T (powers of 1024; "KiB", "KB", "k" alike).
pub fn parse_bytes(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("invalid size {text:?}: expected e.g. 500MiB or 20GiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => bail!("invalid size {text:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, TiB)"),
    };
    Ok((number * (1u64 << shift) as f64) as u64)
}

fn parse_age(text: &str) -> anyhow::Result<Option<Duration>> {
    if text.trim() == "0" {
        return Ok(None);
    }
    let ms = parse_duration_ms(text).with_context(|| format!("invalid age {text:?}"))?;
    Ok(Some(Duration::from_millis(ms as u64)))
}

/// Merges the command line over the file (if any) over the defaults.
pub fn agent_config(args: AgentArgs) -> anyhow::Result<AgentConfig> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => AgentFile::default(),
    };
    let in_file = |what: &str| {
        args.config
            .as_ref()
            .map_or_else(String::new, |p| format!(" in {}", p.display()))
            + what
    };
    let interval = match (args.interval, &file.interval) {
        (Some(d), _) => d,
        (None, Some(text)) => Duration::from_millis(
            parse_duration_ms(text).with_context(|| in_file(": interval"))? as u64,
        ),
        (None, None) => Duration::from_secs(10),
    };
    if interval.is_zero() {
        bail!("the interval must be positive");
    }
    let frequency_hz = args.frequency.or(file.frequency).unwrap_or(19);
    if !(1..=10_000).contains(&frequency_hz) {
        bail!(
            "frequency {frequency_hz} Hz{}: expected 1 to 10000",
            in_file("")
        );
    }
    let off_cpu_on = !args.no_off_cpu && file.off_cpu.unwrap_or(true);
    let off_cpu = off_cpu_on.then(|| OffCpuConfig {
        min_duration: Duration::from_micros(
            args.off_cpu_min_us.or(file.off_cpu_min_us).unwrap_or(1000),
        ),
        budget_per_second: args
            .off_cpu_budget
            .or(file.off_cpu_budget)
            .unwrap_or(2000)
            .max(1),
    });
    let min_us = off_cpu.as_ref().map_or(0, |o| o.min_duration.as_micros());
    if min_us > OffCpuConfig::MAX_MIN_DURATION.as_micros() {
        bail!(
            "off_cpu_min_us {min_us}{}: expected 0 to {}",
            in_file(""),
            OffCpuConfig::MAX_MIN_DURATION.as_micros()
        );
    }
    let wait_records_per_second = args.wait_records.or(file.wait_records).unwrap_or(1000);
    if wait_records_per_second == 0 {
        bail!("wait_records{}: expected at least 1", in_file(""));
    }
    let retention_file = file.retention.unwrap_or_default();
    let defaults = Retention::default();
    let max_age = match (&args.retention_max_age, &retention_file.max_age) {
        (Some(t), _) => parse_age(t).context("--retention-max-age")?,
        (None, Some(t)) => parse_age(t).with_context(|| in_file(": retention.max_age"))?,
        (None, None) => defaults.max_age,
    };
    let max_bytes = match (&args.retention_max_bytes, &retention_file.max_bytes) {
        (Some(t), _) => Some(parse_bytes(t).context("--retention-max-bytes")?),
        (None, Some(toml::Value::Integer(n))) if *n >= 0 => Some(*n as u64),
        (None, Some(toml::Value::String(t))) => {
            Some(parse_bytes(t).with_context(|| in_file(": retention.max_bytes"))?)
        }
        (None, Some(other)) => bail!(
            "retention.max_bytes{}: expected a size like \"10GiB\", not {other:?}",
            in_file("")
        ),
        (None, None) => defaults.max_bytes,
    }
    .filter(|&b| b > 0);
    let services = file
        .service
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let what = in_file(&format!(": service rule {} ({:?})", i + 1, s.name));
            let compile =
                |re: &str| Regex::new(&format!("^(?:{re})$")).with_context(|| what.clone());
            Ok(ServiceRule {
                exe: s.exe.as_deref().map(compile).transpose()?,
                cgroup: s.cgroup.as_deref().map(compile).transpose()?,
                name: s.name,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(rule) = services
        .iter()
        .find(|r| r.exe.is_none() && r.cgroup.is_none())
    {
        bail!(
            "service rule {:?}{} has neither exe nor cgroup",
            rule.name,
            in_file("")
        );
    }
    let probes = if args.probe.is_empty() {
        file.probes
            .iter()
            .map(|p| {
                p.parse::<critpath_sampler::Probe>()
                    .map_err(|e| anyhow::anyhow!("probes{}: {e}", in_file("")))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        args.probe
    };
    Ok(AgentConfig {
        probes,
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir),
        frequency_hz,
        interval,
        off_cpu,
        wait_records_per_second,
        host: args
            .host
            .or(file.host)
            .unwrap_or_else(crate::agent::hostname),
        duration: args.duration,
        ring_bytes: args
            .ring_bytes
            .or(file.ring_bytes)
            .unwrap_or(critpath_sampler::SamplerConfig::default().ring_bytes),
        unwinding: args
            .unwind
            .or(file.unwind)
            .unwrap_or(UnwindMode::Dwarf)
            .unwinding(
                args.user_stack_bytes
                    .or(file.user_stack_bytes)
                    .unwrap_or(critpath_sampler::Unwinding::DEFAULT_STACK_BYTES),
            ),
        retention: Retention { max_age, max_bytes },
        services,
        push_token: args
            .push_token_file
            .as_deref()
            .map(read_token)
            .transpose()?,
        push: args.push,
        push_timeout: args.push_timeout,
    })
}

/// Reads a bearer token from a file (trimmed; an empty file is an error).
///
/// # Errors
/// The file cannot be read or is empty.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token in {}", path.display()))?
        .trim()
        .to_owned();
    if token.is_empty() {
        anyhow::bail!("{} is empty: it must hold the bearer token", path.display());
    }
    if let Some(warning) = token_file_warning(path) {
        log::warn!("{warning}");
        eprintln!("critpath: warning: {warning}");
    }
    Ok(token)
}

/// A warning when the token file can be read by users other than its owner (its group or
/// everyone): they could use the API with it.
fn token_file_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "the token file {} is readable by other users (mode {:o}); `chmod 600` it",
            path.display(),
            mode & 0o777
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser as _;

    /// A token file others can read is used, with a warning naming it; a private one is
    /// used silently.
    #[test]
    fn a_readable_token_file_is_warned_about() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_token(&path).unwrap(), "s3cret");
        let warning = token_file_warning(&path).expect("a warning");
        assert!(
            warning.contains("mode 644") && warning.contains("chmod 600"),
            "{warning}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(token_file_warning(&path), None);
    }

    fn args(extra: &[&str]) -> AgentArgs {
        let mut argv = vec!["critpath", "agent"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Agent(a) => a,
            _ => unreachable!(),
        }
    }

    /// Sizes with and without units.
    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1536);
        assert!(parse_bytes("ten").is_err());
        assert!(
            parse_bytes("3 parsecs")
                .unwrap_err()
                .to_string()
                .contains("unit")
        );
    }

    /// Defaults, then the file, then flags win.
    #[test]
    fn file_and_flags_merge() {
        let c = agent_config(args(&[])).unwrap();
        assert_eq!((c.frequency_hz, c.interval.as_secs()), (19, 10));
        assert_eq!(c.retention, Retention::default());
        assert!(c.off_cpu.is_some());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            r#"
frequency = 49
interval = "30s"
off_cpu = false
host = "web-1"
probes = ["/srv/api/bin/server:api::handle_request"]
[retention]
max_age = "7d"
max_bytes = "500MiB"
[[service]]
name = "api"
exe = "/srv/api/.*"
[[service]]
name = "db"
cgroup = ".*/postgresql\\.service"
"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = agent_config(args(&["--config", p])).unwrap();
        assert_eq!((c.frequency_hz, c.interval.as_secs()), (49, 30));
        assert!(c.off_cpu.is_none());
        assert_eq!(c.host, "web-1");
        assert_eq!(c.retention.max_age, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(c.retention.max_bytes, Some(500 << 20));
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.probes.len(), 1);
        assert_eq!(c.probes[0].function, "api::handle_request");
        assert_eq!(c.probes[0].binary, Path::new("/srv/api/bin/server"));
        assert!(
            c.services[0]
                .exe
                .as_ref()
                .unwrap()
                .is_match("/srv/api/bin/server")
        );
        assert!(
            !c.services[0].exe.as_ref().unwrap().is_match("/x/srv/api/a"),
            "whole path"
        );

        let c = agent_config(args(&[
            "--config",
            p,
            "-F",
            "99",
            "--retention-max-age",
            "0",
        ]))
        .unwrap();
        assert_eq!(c.frequency_hz, 99, "the flag wins");
        assert_eq!(c.retention.max_age, None);
        let c = agent_config(args(&[
            "--config", p, "--probe", "/bin/a:f", "--probe", "/bin/b:g",
        ]))
        .unwrap();
        let probes: Vec<String> = c.probes.iter().map(ToString::to_string).collect();
        assert_eq!(
            probes,
            ["/bin/a:f", "/bin/b:g"],
            "the flags replace the file's"
        );
    }

    /// Unknown keys, bad values and rules without a matcher are errors naming the problem.
    #[test]
    fn bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        let p = path.to_str().unwrap();
        for (text, expected) in [
            ("frequncy = 19", "frequncy"),
            ("interval = \"soon\"", "interval"),
            ("[[service]]\nname = \"x\"", "neither exe nor cgroup"),
            ("[[service]]\nname = \"x\"\nexe = \"(\"", "service rule 1"),
            ("[retention]\nmax_bytes = \"lots\"", "max_bytes"),
            ("probes = [\"handle_request\"]", "probes"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = format!("{:#}", agent_config(args(&["--config", p])).unwrap_err());
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        let err = format!(
            "{:#}",
            agent_config(args(&["--config", "/nonexistent.toml"])).unwrap_err()
        );
        assert!(err.contains("/nonexistent.toml"), "{err}");
    }
}
