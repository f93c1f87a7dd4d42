//! `critpath query`: series, profiles, diffs and labels of the store, as tables or JSON.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use critpath_analyzer::export::{Format, flamebearer};
use critpath_analyzer::query::{QueryError, Reader, Selector, Window, parse_time_ms};
use critpath_analyzer::store::ProfileType;

/// A query's store, window and selection, resolved.
#[derive(Clone, Debug)]
pub struct Target {
    /// The store.
    pub reader: Reader,
    /// The window and selection.
    pub window: Window,
    /// "now" as the time expressions saw it, Unix ms.
    pub now_ms: i64,
}

impl Target {
    /// Resolves time expressions (`--from`, `--to`) and parses the selector (`--query`).
    pub fn new(data_dir: PathBuf, from: &str, to: &str, query: &str) -> anyhow::Result<Self> {
        let now_ms = now_ms();
        let from_ms = parse_time_ms(from, now_ms).context("--from")?;
        let to_ms = parse_time_ms(to, now_ms).context("--to")?;
        if from_ms >= to_ms {
            anyhow::bail!("--from ({from}) must be before --to ({to})");
        }
        let selector = Selector::parse(query).context("--query")?;
        Ok(Self {
            reader: Reader::new(data_dir),
            window: Window::new(selector, from_ms, to_ms)?,
            now_ms,
        })
    }

    /// The baseline of the window: `--baseline-from` / `--baseline-to` when given, else the
    /// window of equal length just before.
    ///
    /// # Errors
    /// A time that does not parse, or an empty or reversed baseline.
    pub fn baseline(&self, from: Option<&str>, to: Option<&str>) -> anyhow::Result<Window> {
        let time = |text: Option<&str>, flag: &str| {
            text.map(|t| parse_time_ms(t, self.now_ms).with_context(|| flag.to_owned()))
                .transpose()
        };
        let (from, to) = self
            .window
            .baseline_range(time(from, "--baseline-from")?, time(to, "--baseline-to")?);
        self.window
            .with_range(from, to)
            .context("the baseline window (--baseline-from, --baseline-to)")
    }

    /// A query error for the user: an invalid parameter by its flag, a store error with the
    /// directory.
    fn error(&self, err: QueryError) -> anyhow::Error {
        match err {
            QueryError::Invalid { param, message } => {
                anyhow::anyhow!("--{}: {message}", param.replace('_', "-"))
            }
            err @ QueryError::Store(_) => anyhow::Error::new(err).context(format!(
                "reading the store in {}",
                self.reader.dir().display()
            )),
        }
    }
}

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where output goes: a file, or standard output.
fn emit(output: Option<&PathBuf>, bytes: &[u8]) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
        }
        None => match std::io::stdout().write_all(bytes) {
            // The reader (`| head`) has what it wanted.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.context("writing to standard output"),
        },
    }
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(value).expect("serializable");
    out.push(b'\n');
    out
}

/// A value as a table shows it: samples as integers, nanoseconds as seconds.
fn show(profile_type: ProfileType, value: i64) -> String {
    match profile_type {
        ProfileType::Cpu => value.to_string(),
        ProfileType::OffCpu | ProfileType::Wall => format!("{:.3}s", value as f64 / 1e9),
    }
}

fn percent(value: i64, total: i64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * value as f64 / total as f64
    }
}

/// A Unix ms time as RFC 3339.
pub fn timestamp(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// Settings of `critpath query series`.
#[derive(Clone, Debug)]
pub struct SeriesConfig {
    /// What values.
    pub profile_type: ProfileType,
    /// Step, ms; `None` picks the window / 60 in whole seconds, at least 10 s.
    pub step_ms: Option<i64>,
    /// Labels to group by.
    pub group_by: Vec<String>,
    /// Series shown as columns.
    pub limit: usize,
    /// JSON instead of a table.
    pub json: bool,
}

/// Prints the series of a window.
pub fn series(target: &Target, config: &SeriesConfig) -> anyhow::Result<()> {
    let w = &target.window;
    let step_ms = config
        .step_ms
        .unwrap_or_else(|| ((w.to_ms - w.from_ms) / 60 / 1000 * 1000).max(10_000));
    let set = target
        .reader
        .series(w, step_ms, config.profile_type, &config.group_by)
        .map_err(|e| target.error(e))?;
    if config.json {
        return emit(None, &json(&set));
    }
    let shown = set.series.len().min(config.limit.max(1));
    let mut headers: Vec<String> = set.series[..shown]
        .iter()
        .map(|s| {
            if s.labels.is_empty() {
                "all".to_owned()
            } else {
                s.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            }
        })
        .collect();
    let other = set.series.len() > shown;
    if other {
        headers.push(format!("other ({})", set.series.len() - shown));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {} ({}) per {} s, {} to {}",
        set.profile_type,
        set.unit,
        step_ms as f64 / 1000.0,
        timestamp(w.from_ms),
        timestamp(w.to_ms)
    );
    let width: Vec<usize> = headers.iter().map(|h| h.len().max(10)).collect();
    let _ = write!(out, "{:<24}", "time");
    for (h, wd) in headers.iter().zip(&width) {
        let _ = write!(out, "  {h:>wd$}");
    }
    out.push('\n');
    let cell = |v: f64| match set.profile_type {
        ProfileType::Cpu => format!("{v:.0}"),
        _ => format!("{v:.3}"),
    };
    for (i, t) in set.timestamps.iter().enumerate() {
        let _ = write!(out, "{:<24}", timestamp(*t));
        for (s, wd) in set.series[..shown].iter().zip(&width) {
            let _ = write!(out, "  {:>wd$}", cell(s.values[i]));
        }
        if other {
            let rest: f64 = set.series[shown..].iter().map(|s| s.values[i]).sum();
            let _ = write!(out, "  {:>w$}", cell(rest), w = width[shown]);
        }
        out.push('\n');
    }
    if set.series.is_empty() {
        out.push_str("(no samples in this window)\n");
    }
    emit(None, out.as_bytes())
}

/// Settings of `critpath query profile`.
#[derive(Clone, Debug)]
pub struct ProfileConfig {
    /// What values.
    pub profile_type: ProfileType,
    /// What to write.
    pub format: ProfileFormat,
    /// Tree trimming: most nodes (0: no limit).
    pub max_nodes: usize,
    /// Tree trimming: smallest share of the total kept.
    pub min_share: f64,
    /// Table rows.
    pub limit: usize,
    /// Output file.
    pub output: Option<PathBuf>,
    /// The sampling frequency, for flamebearer's sample rate.
    pub frequency_hz: u64,
}

/// What `critpath query profile` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileFormat {
    /// A table of the top functions.
    Table,
    /// The call tree as JSON.
    Tree,
    /// Pyroscope's flamebearer JSON.
    Flamebearer,
    /// A profile export.
    Export(Format),
}

/// Writes the merged profile of a window.
pub fn profile(target: &Target, config: &ProfileConfig) -> anyhow::Result<()> {
    let (reader, w) = (&target.reader, &target.window);
    let ty = config.profile_type;
    let bytes = match config.format {
        ProfileFormat::Export(format) => {
            let profile = reader.profile(w, ty).map_err(|e| target.error(e))?;
            format.encode(&profile, 0, "critpath query")
        }
        format => {
            let (max_nodes, min_share) = match format {
                ProfileFormat::Tree | ProfileFormat::Flamebearer => {
                    (config.max_nodes, config.min_share)
                }
                _ => (0, 0.0), // the table needs every function
            };
            let tree = reader
                .tree_trimmed(w, ty, max_nodes, min_share)
                .map_err(|e| target.error(e))?;
            match format {
                ProfileFormat::Tree | ProfileFormat::Flamebearer => {
                    if format == ProfileFormat::Tree {
                        json(&tree)
                    } else {
                        json(&flamebearer::single(&tree, config.frequency_hz))
                    }
                }
                _ => {
                    let total = tree.total();
                    let mut out = String::new();
                    let _ = writeln!(
                        out,
                        "# {} profile, {} to {}: total {}",
                        ty,
                        timestamp(w.from_ms),
                        timestamp(w.to_ms),
                        show(ty, total)
                    );
                    let _ = writeln!(
                        out,
                        "{:>12} {:>7} {:>12} {:>7}  function",
                        "self", "self%", "total", "total%"
                    );
                    let mut functions = tree.functions();
                    functions.sort_by(|a, b| {
                        b.self_value.cmp(&a.self_value).then(b.total.cmp(&a.total))
                    });
                    for f in functions.iter().take(config.limit) {
                        let _ = writeln!(
                            out,
                            "{:>12} {:>6.2}% {:>12} {:>6.2}%  {}",
                            show(ty, f.self_value),
                            percent(f.self_value, total),
                            show(ty, f.total),
                            percent(f.total, total),
                            f.name
                        );
                    }
                    if total == 0 {
                        out.push_str("(no samples in this window)\n");
                    }
                    out.into_bytes()
                }
            }
        }
    };
    emit(config.output.as_ref(), &bytes)
}

/// Settings of `critpath query diff`.
#[derive(Clone, Debug)]
pub struct DiffConfig {
    /// What values.
    pub profile_type: ProfileType,
    /// Baseline window, as given (default: the window before the comparison).
    pub baseline_from: Option<String>,
    /// Baseline end, as given.
    pub baseline_to: Option<String>,
    /// table, tree or flamebearer.
    pub format: String,
    /// Nodes kept per tree before comparing (0: no limit).
    pub max_nodes: usize,
    /// Table rows.
    pub limit: usize,
    /// Output file.
    pub output: Option<PathBuf>,
    /// The sampling frequency, for flamebearer's sample rate.
    pub frequency_hz: u64,
}

/// Writes the comparison of a window with its baseline.
pub fn diff(target: &Target, config: &DiffConfig) -> anyhow::Result<()> {
    let w = &target.window;
    let base = target.baseline(
        config.baseline_from.as_deref(),
        config.baseline_to.as_deref(),
    )?;
    let (diff, b, c) = target
        .reader
        .diff(&base, w, config.profile_type, config.max_nodes)
        .map_err(|e| target.error(e))?;
    let bytes = match config.format.as_str() {
        "tree" => json(&diff),
        "flamebearer" => json(&flamebearer::double(&diff, config.frequency_hz)),
        _ => {
            let ty = config.profile_type;
            let mut out = String::new();
            let _ = writeln!(
                out,
                "# {ty}: baseline {} to {} (total {}), comparison {} to {} (total {})",
                timestamp(base.from_ms),
                timestamp(base.to_ms),
                show(ty, diff.base_total),
                timestamp(w.from_ms),
                timestamp(w.to_ms),
                show(ty, diff.comparison_total),
            );
            let _ = writeln!(out, "# shares are of each window's total; most grown first");
            let _ = writeln!(
                out,
                "{:>9} {:>9} {:>9}  {:>12} {:>12}  function",
                "base%", "comp%", "delta", "base", "comp"
            );
            let mut functions = diff.functions(&b, &c);
            // The largest changes either way, most grown first.
            functions.sort_by(|x, y| y.delta_share().abs().total_cmp(&x.delta_share().abs()));
            functions.truncate(config.limit);
            functions.sort_by(|x, y| y.delta_share().total_cmp(&x.delta_share()));
            for f in &functions {
                let _ = writeln!(
                    out,
                    "{:>8.2}% {:>8.2}% {:>+8.2}pp  {:>12} {:>12}  {}",
                    100.0 * f.base_share,
                    100.0 * f.comparison_share,
                    100.0 * f.delta_share(),
                    show(ty, f.base_total),
                    show(ty, f.comparison_total),
                    f.name
                );
            }
            out.into_bytes()
        }
    };
    emit(config.output.as_ref(), &bytes)
}

/// Prints label names, or one label's values with their on-CPU sample counts.
pub fn labels(target: &Target, name: Option<&str>, as_json: bool) -> anyhow::Result<()> {
    let (reader, w) = (&target.reader, &target.window);
    let out = match name {
        None => {
            let names = reader.label_names(w).map_err(|e| target.error(e))?;
            if as_json {
                json(&names)
            } else {
                names
                    .iter()
                    .map(|n| format!("{n}\n"))
                    .collect::<String>()
                    .into_bytes()
            }
        }
        Some(name) => {
            let values = reader.label_values(w, name).map_err(|e| target.error(e))?;
            if as_json {
                let values: Vec<serde_json::Value> = values
                    .iter()
                    .map(|(v, n)| serde_json::json!({"value": v, "cpu_samples": n}))
                    .collect();
                json(&values)
            } else {
                values
                    .iter()
                    .map(|(v, n)| format!("{v}\t{n}\n"))
                    .collect::<String>()
                    .into_bytes()
            }
        }
    };
    emit(None, &out)
}
