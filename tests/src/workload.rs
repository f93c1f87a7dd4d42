//! What the workload binaries share: argument parsing, a deadline, calibrated CPU burning and the
//! one-line JSON summary.
//!
//! Contract of every workload: it runs for `SECONDS` (first positional argument or `--seconds N`,
//! fractions allowed, default [`DEFAULT_SECONDS`]), prints nothing on stdout except one final JSON
//! line such as `{"workload":"cpu_ratio","rounds":2900}`, and exits 0; a bad argument is reported
//! on stderr with exit code 2.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Run time in seconds when neither a positional `SECONDS` nor `--seconds` is given.
pub const DEFAULT_SECONDS: f64 = 3.0;

/// A workload's parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// How long the workload runs; default [`DEFAULT_SECONDS`].
    pub duration: Duration,
    options: Vec<(&'static str, u64)>,
    switches: Vec<(&'static str, bool)>,
}

impl Args {
    /// Parses the process arguments; on error prints the reason and a usage line to stderr and
    /// exits with code 2.
    ///
    /// `options` are the integer `--name N` flags with their defaults, `switches` the bare
    /// `--name` flags (off unless given).
    pub fn parse(options: &[(&'static str, u64)], switches: &[&'static str]) -> Args {
        let mut argv = std::env::args();
        let program = argv.next().unwrap_or_default();
        Self::try_parse(argv, options, switches).unwrap_or_else(|message| {
            let mut usage = format!("usage: {program} [SECONDS | --seconds SECONDS]");
            for (name, default) in options {
                let _ = write!(usage, " [--{name} N (default {default})]");
            }
            for name in switches {
                let _ = write!(usage, " [--{name}]");
            }
            eprintln!("{program}: {message}\n{usage}");
            std::process::exit(2)
        })
    }

    /// Parses `argv` (without the program name); flags take a value as `--name N` or `--name=N`.
    pub fn try_parse(
        argv: impl IntoIterator<Item = String>,
        options: &[(&'static str, u64)],
        switches: &[&'static str],
    ) -> Result<Args, String> {
        let mut options = options.to_vec();
        let mut switches: Vec<_> = switches.iter().map(|&name| (name, false)).collect();
        let mut seconds = None;
        let mut argv = argv.into_iter();
        while let Some(arg) = argv.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                if seconds.is_some() {
                    return Err(format!("unexpected argument `{arg}`"));
                }
                seconds = Some(parse_seconds(&arg)?);
                continue;
            };
            let (name, inline_value) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (flag, None),
            };
            if let Some(switch) = switches.iter_mut().find(|(known, _)| *known == name) {
                if inline_value.is_some() {
                    return Err(format!("--{name} takes no value"));
                }
                switch.1 = true;
                continue;
            }
            let is_option = options.iter().any(|(known, _)| *known == name);
            if name != "seconds" && !is_option {
                return Err(format!("unknown flag `{arg}`"));
            }
            let value = inline_value
                .or_else(|| argv.next())
                .ok_or_else(|| format!("--{name} needs a value"))?;
            if name == "seconds" {
                seconds = Some(parse_seconds(&value)?);
            } else if let Some(option) = options.iter_mut().find(|(known, _)| *known == name) {
                option.1 = value
                    .parse()
                    .map_err(|_| format!("--{name} needs a non-negative integer, got `{value}`"))?;
            }
        }
        Ok(Args {
            duration: Duration::from_secs_f64(seconds.unwrap_or(DEFAULT_SECONDS)),
            options,
            switches,
        })
    }

    /// Value of the integer flag `--name`.
    ///
    /// # Panics
    /// If `name` was not declared in [`Args::parse`]: a bug in the workload, not a user error.
    pub fn option(&self, name: &str) -> u64 {
        let found = self.options.iter().find(|(known, _)| *known == name);
        found
            .unwrap_or_else(|| panic!("--{name} was not declared"))
            .1
    }

    /// Whether the switch `--name` was given.
    ///
    /// # Panics
    /// If `name` was not declared in [`Args::parse`].
    pub fn switch(&self, name: &str) -> bool {
        let found = self.switches.iter().find(|(known, _)| *known == name);
        found
            .unwrap_or_else(|| panic!("--{name} was not declared"))
            .1
    }
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds.is_finite() && seconds < 1e9 => Ok(seconds),
        _ => Err(format!("SECONDS must be a positive number, got `{text}`")),
    }
}

/// The moment a workload stops; loops poll [`Deadline::passed`] between units of work so that
/// the named functions stay direct callees of their loop (no closure frames in the stacks).
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline `duration` from now.
    pub fn after(duration: Duration) -> Deadline {
        Deadline(Instant::now() + duration)
    }

    /// Whether the deadline has been reached.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }
}

/// Burns CPU for `iterations` rounds of an integer hash and returns the hash.
///
/// Always inlined, so the time is spent (and sampled) in the calling function's own frame:
/// self time then lands on the caller's distinctive name. The loop has no calls even in debug
/// builds (no iterator, no `black_box` inside), and its serial dependency chain cannot be folded
/// by the optimizer. Give each caller its own `seed` so that identical callers are never merged
/// into one symbol by LLVM's function merging.
#[inline(always)]
pub fn burn(iterations: u64, seed: u64) -> u64 {
    let iterations = black_box(iterations);
    let mut hash = black_box(seed);
    let mut i = 0;
    while i < iterations {
        // splitmix64 finaliser over the counter: a few cycles per round, all in registers.
        hash ^= i;
        hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        hash ^= hash >> 31;
        i += 1;
    }
    black_box(hash)
}

/// Burns CPU for `iterations` [`burn`] rounds in a frame of its own, named `spin`.
#[inline(never)]
pub fn spin(iterations: u64) -> u64 {
    burn(iterations, 0x5eed_5917)
}

/// [`burn`] iterations that take about `duration` of CPU on this machine in this build.
///
/// The rate is measured once per process (a few milliseconds in [`spin`]) as the fastest of
/// several probes: preemption can only make a probe slower, so the fastest is the truest.
pub fn iterations_for(duration: Duration) -> u64 {
    static PER_SECOND: OnceLock<f64> = OnceLock::new();
    let per_second = *PER_SECOND.get_or_init(|| {
        const PROBE: u64 = 50_000;
        let fastest = (0..10)
            .map(|_| {
                let start = Instant::now();
                spin(PROBE);
                start.elapsed()
            })
            .min()
            .unwrap_or(Duration::from_millis(1));
        PROBE as f64 / fastest.as_secs_f64().max(1e-9)
    });
    ((per_second * duration.as_secs_f64()) as u64).max(1)
}

/// Prints the workload's one-line JSON summary on stdout: `{"workload":"<name>","<key>":<n>,…}`.
///
/// Keys are plain identifiers chosen by the workload, so nothing needs escaping.
pub fn print_summary(workload: &str, counts: &[(&str, u64)]) {
    let mut line = format!("{{\"workload\":\"{workload}\"");
    for (key, value) in counts {
        let _ = write!(line, ",\"{key}\":{value}");
    }
    line.push('}');
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<Args, String> {
        let argv = argv.iter().map(|arg| arg.to_string());
        Args::try_parse(argv, &[("threads", 4)], &["red-herring"])
    }

    /// Without arguments the defaults apply: 3 s, declared option defaults, switches off.
    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.duration, Duration::from_secs(3));
        assert_eq!(args.option("threads"), 4);
        assert!(!args.switch("red-herring"));
    }

    /// Seconds come positionally or from `--seconds`, with fractions; flags take both value forms.
    #[test]
    fn seconds_and_flags() {
        let args = parse(&["0.5", "--threads", "2", "--red-herring"]).unwrap();
        assert_eq!(args.duration, Duration::from_millis(500));
        assert_eq!(args.option("threads"), 2);
        assert!(args.switch("red-herring"));
        let args = parse(&["--seconds=1.25", "--threads=7"]).unwrap();
        assert_eq!(args.duration, Duration::from_millis(1250));
        assert_eq!(args.option("threads"), 7);
    }

    /// Bad input is refused with a message naming the offending argument.
    #[test]
    fn rejects_bad_arguments() {
        for (argv, expected) in [
            (&["0"][..], "positive"),
            (&["-1"], "positive"),
            (&["abc"], "`abc`"),
            (&["1", "2"], "unexpected argument `2`"),
            (&["--threads"], "--threads needs a value"),
            (&["--threads", "-3"], "non-negative integer"),
            (&["--red-herring=1"], "takes no value"),
            (&["--bogus"], "unknown flag `--bogus`"),
        ] {
            let error = parse(argv).unwrap_err();
            assert!(error.contains(expected), "{argv:?}: {error}");
        }
    }

    /// The calibrated burner scales linearly: twice the duration, twice the iterations.
    #[test]
    fn calibration_is_linear() {
        let one = iterations_for(Duration::from_millis(1));
        let two = iterations_for(Duration::from_millis(2));
        assert!(one > 100, "implausibly slow burner: {one} iterations/ms");
        assert!(two.abs_diff(2 * one) <= 1);
    }
}
