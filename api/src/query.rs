//! `critpath query`: profiles and labels of a window of the store.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use critpath_analyzer::export::{self, Format};
use critpath_analyzer::query::{Selector, parse_time_ms};
use critpath_analyzer::store::{Aggregator, Batch, SampleKind, SeriesLabels, Store};

/// A resolved window and selection.
#[derive(Clone, Debug)]
pub struct Window {
    /// The store directory.
    pub data_dir: PathBuf,
    /// Start, Unix ms.
    pub from_ms: i64,
    /// End (exclusive), Unix ms.
    pub to_ms: i64,
    /// Which series.
    pub selector: Selector,
}

impl Window {
    /// Resolves time expressions and parses the selector.
    pub fn new(data_dir: PathBuf, from: &str, to: &str, query: &str) -> anyhow::Result<Self> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let from_ms = parse_time_ms(from, now).context("--from")?;
        let to_ms = parse_time_ms(to, now).context("--to")?;
        if from_ms >= to_ms {
            bail!("--from ({from}) must be before --to ({to})");
        }
        let selector = Selector::parse(query).context("--query")?;
        Ok(Self {
            data_dir,
            from_ms,
            to_ms,
            selector,
        })
    }

    fn batches(&self) -> anyhow::Result<Vec<Batch>> {
        Store::batches(&self.data_dir, self.from_ms, self.to_ms)
            .with_context(|| format!("reading the store in {}", self.data_dir.display()))
    }

    fn selects(&self, series: &SeriesLabels) -> bool {
        let values: Vec<_> = SeriesLabels::NAMES.iter().map(|n| series.get(n)).collect();
        self.selector.matches(|name| {
            SeriesLabels::NAMES
                .iter()
                .position(|n| *n == name)
                .and_then(|i| values[i].as_deref())
        })
    }
}

/// Writes the merged profile of a window.
pub fn profile(
    window: &Window,
    kind: SampleKind,
    format: Format,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let batches = window.batches()?;
    let mut profile = Aggregator::profile(&batches, kind, |s| window.selects(s));
    profile.start_unix_ns = window.from_ms * 1_000_000;
    profile.duration_ns = (window.to_ms - window.from_ms) * 1_000_000;
    if let (SampleKind::Cpu, Some(b)) = (kind, batches.first()) {
        profile.period_type = Some(critpath_analyzer::ValueType::new("cpu", "nanoseconds"));
        profile.period = b.period_ns;
    }
    let bytes = match format {
        Format::Pprof => export::pprof::encode(&profile),
        Format::Folded => export::folded::to_string(&profile, 0).into_bytes(),
        Format::Speedscope => {
            export::speedscope::to_string(&profile, 0, "critpath query").into_bytes()
        }
    };
    match output {
        Some(path) => {
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
        }
        None => std::io::stdout()
            .write_all(&bytes)
            .context("writing to standard output"),
    }
}

/// Prints label names, or one label's values with their sample counts.
pub fn labels(window: &Window, name: Option<&str>) -> anyhow::Result<()> {
    let batches = window.batches()?;
    let mut out = std::io::stdout().lock();
    match name {
        None => {
            let seen: BTreeSet<&str> = batches
                .iter()
                .flat_map(|b| &b.series)
                .filter(|s| window.selects(s))
                .flat_map(|s| {
                    SeriesLabels::NAMES
                        .into_iter()
                        .filter(|n| s.get(n).is_some_and(|v| !v.is_empty()))
                })
                .collect();
            for n in seen {
                writeln!(out, "{n}")?;
            }
        }
        Some(name) => {
            if !SeriesLabels::NAMES.contains(&name) {
                bail!(
                    "unknown label {name:?}; labels are {}",
                    SeriesLabels::NAMES.join(", ")
                );
            }
            let mut values: BTreeMap<String, i64> = BTreeMap::new();
            for b in &batches {
                for row in &b.rows {
                    let s = &b.series[row.series as usize];
                    if row.kind == SampleKind::Cpu && window.selects(s) {
                        *values
                            .entry(s.get(name).unwrap_or_default().into_owned())
                            .or_default() += row.value;
                    }
                }
            }
            for (value, samples) in values {
                writeln!(out, "{value}\t{samples}")?;
            }
        }
    }
    Ok(())
}
