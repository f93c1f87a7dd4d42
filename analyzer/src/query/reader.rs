//! The standard queries over a store directory: series, profiles (trees and full profiles for
//! export), diffs, and label names and values. Read-only and safe while an agent writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::selector::Selector;
use super::tree::{DiffTree, FlameTree};
use crate::store::{
    DEFAULT_CACHE_BYTES, Index, ProfileType, Scan, ScanPart, SeriesLabels, Store, StoreError,
};
use crate::{Profile, SampleLabels, ValueType};

/// Most points a series may have (window / step), as in Prometheus.
pub const MAX_POINTS: i64 = 11_000;

/// Query errors: the store failed, or a parameter is invalid (named, for APIs to report).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A parameter is invalid.
    #[error("{param}: {message}")]
    Invalid {
        /// The parameter's name as the CLI and the HTTP API spell it.
        param: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl QueryError {
    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            param,
            message: message.into(),
        }
    }
}

/// A time window and a selection of series.
#[derive(Clone, Debug)]
pub struct Window {
    /// Which series.
    pub selector: Selector,
    /// Start, Unix ms (inclusive).
    pub from_ms: i64,
    /// End, Unix ms (exclusive).
    pub to_ms: i64,
}

impl Window {
    /// A window; `from` must be before `to`.
    ///
    /// # Errors
    /// `from` not before `to`.
    pub fn new(selector: Selector, from_ms: i64, to_ms: i64) -> Result<Self, QueryError> {
        if from_ms >= to_ms {
            return Err(QueryError::invalid(
                "from",
                format!("from ({from_ms}) must be before to ({to_ms})"),
            ));
        }
        Ok(Self {
            selector,
            from_ms,
            to_ms,
        })
    }

    /// The same selection over another time range.
    ///
    /// # Errors
    /// `from` not before `to`.
    pub fn with_range(&self, from_ms: i64, to_ms: i64) -> Result<Self, QueryError> {
        Self::new(self.selector.clone(), from_ms, to_ms)
    }

    /// A diff's baseline range: the given ends, defaulting to the window of equal length just
    /// before this one.
    pub fn baseline_range(&self, from_ms: Option<i64>, to_ms: Option<i64>) -> (i64, i64) {
        let span = self.to_ms.saturating_sub(self.from_ms);
        let from = from_ms.unwrap_or(self.from_ms.saturating_sub(span));
        (from, to_ms.unwrap_or(from.saturating_add(span)))
    }

    /// Whether a series is selected.
    pub fn selects(&self, series: &SeriesLabels) -> bool {
        selects(&self.selector, series)
    }
}

fn selects(selector: &Selector, series: &SeriesLabels) -> bool {
    if selector.is_empty() {
        return true;
    }
    let pid = series.pid.to_string();
    selector.matches(|name| match name {
        "pid" => Some(pid.as_str()),
        "host" => Some(series.host.as_str()),
        "comm" => Some(series.comm.as_str()),
        "exe" => Some(series.exe.as_str()),
        "build_id" => Some(series.build_id.as_str()),
        "service" => Some(series.service.as_str()),
        _ => None,
    })
}

/// Values per step of one group of series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Series {
    /// The grouping labels' values.
    pub labels: BTreeMap<String, String>,
    /// One value per [`SeriesSet::timestamps`] entry.
    pub values: Vec<f64>,
    /// Sum of the values.
    pub total: f64,
}

/// The result of a series query: dense, aligned series.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesSet {
    /// What values measure.
    #[serde(rename = "type")]
    pub profile_type: ProfileType,
    /// `samples` (cpu) or `seconds` (offcpu, wall).
    pub unit: &'static str,
    /// Step length, ms.
    pub step_ms: i64,
    /// Start of each step, Unix ms.
    pub timestamps: Vec<i64>,
    /// Series, largest total first.
    pub series: Vec<Series>,
}

/// Reads a store directory. Clones share one in-memory [`Index`], so a long-lived reader (a
/// server's) answers repeated tree queries from memory.
#[derive(Clone, Debug)]
pub struct Reader {
    dir: PathBuf,
    index: Arc<Index>,
}

impl Reader {
    /// A reader of a store directory (nothing is opened until a query runs), caching up to
    /// [`DEFAULT_CACHE_BYTES`] of parts.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_cache_bytes(dir, DEFAULT_CACHE_BYTES)
    }

    /// A reader caching up to about `cache_bytes` of parts in memory.
    pub fn with_cache_bytes(dir: impl Into<PathBuf>, cache_bytes: usize) -> Self {
        Self {
            dir: dir.into(),
            index: Arc::new(Index::new(cache_bytes)),
        }
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn scan(
        &self,
        window: &Window,
        profile_type: ProfileType,
        by_stack: bool,
        step_ms: Option<i64>,
    ) -> Result<Vec<ScanPart>, QueryError> {
        let keep = |s: &SeriesLabels| window.selects(s);
        Ok(Store::scan(
            &self.dir,
            &Scan {
                from_ms: window.from_ms,
                to_ms: window.to_ms,
                profile_type,
                by_stack,
                step_ms,
                keep: &keep,
            },
        )?)
    }

    /// A fingerprint of the stored data the windows read: equal stamps, equal answers (see
    /// [`Store::stamp`]).
    ///
    /// # Errors
    /// A store error.
    pub fn data_stamp(&self, windows: &[&Window]) -> Result<u64, QueryError> {
        let mut stamp = 0u64;
        for w in windows {
            stamp = stamp
                .rotate_left(17)
                .wrapping_add(Store::stamp(&self.dir, w.from_ms, w.to_ms)?);
        }
        Ok(stamp)
    }

    /// Values per step, grouped by the values of `group_by` labels (none: one series of
    /// everything). CPU values are sample counts; off-CPU and wall values are seconds.
    ///
    /// # Errors
    /// A store error, an unknown label, or a step that is not positive or gives more than
    /// [`MAX_POINTS`] points.
    pub fn series(
        &self,
        window: &Window,
        step_ms: i64,
        profile_type: ProfileType,
        group_by: &[String],
    ) -> Result<SeriesSet, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::invalid("step", "the step must be positive"));
        }
        // Overflow-safe for any step: the span is bounded by the window's times.
        let span = window.to_ms - window.from_ms;
        let points = span / step_ms + i64::from(span % step_ms != 0);
        if points > MAX_POINTS {
            return Err(QueryError::invalid(
                "step",
                format!(
                    "a step of {step_ms} ms gives {points} points over this window; at most {MAX_POINTS} are allowed, use a step of at least {} ms",
                    (window.to_ms - window.from_ms + MAX_POINTS - 1) / MAX_POINTS
                ),
            ));
        }
        for label in group_by {
            check_label("group_by", label)?;
        }
        let parts = self.scan(window, profile_type, false, Some(step_ms))?;
        let scale = match profile_type {
            ProfileType::Cpu => 1.0,
            ProfileType::OffCpu | ProfileType::Wall => 1e-9,
        };
        let mut groups: HashMap<Vec<String>, Vec<f64>> = HashMap::new();
        for part in &parts {
            let keys: Vec<Vec<String>> = part
                .series
                .iter()
                .map(|s| {
                    group_by
                        .iter()
                        .map(|l| s.get(l).unwrap_or_default().into_owned())
                        .collect()
                })
                .collect();
            for row in &part.rows {
                let values = groups
                    .entry(keys[row.series as usize].clone())
                    .or_insert_with(|| vec![0.0; points as usize]);
                let i = ((row.bucket_ms - window.from_ms) / step_ms) as usize;
                if let Some(v) = values.get_mut(i) {
                    *v += row.value as f64 * scale;
                }
            }
        }
        let mut series: Vec<Series> = groups
            .into_iter()
            .map(|(key, values)| Series {
                labels: group_by.iter().cloned().zip(key).collect(),
                total: values.iter().sum(),
                values,
            })
            .collect();
        series.sort_by(|a, b| {
            b.total
                .total_cmp(&a.total)
                .then_with(|| a.labels.cmp(&b.labels))
        });
        Ok(SeriesSet {
            profile_type,
            unit: match profile_type {
                ProfileType::Cpu => "samples",
                ProfileType::OffCpu | ProfileType::Wall => "seconds",
            },
            step_ms,
            timestamps: (0..points).map(|i| window.from_ms + i * step_ms).collect(),
            series,
        })
    }

    /// The merged call tree of a window (root, then services, then stacks).
    ///
    /// # Errors
    /// A store error.
    pub fn tree(
        &self,
        window: &Window,
        profile_type: ProfileType,
    ) -> Result<FlameTree, QueryError> {
        self.tree_trimmed(window, profile_type, 0, 0.0)
    }

    /// The merged call tree of a window keeping at most `max_nodes` nodes (0: no limit), those
    /// with the largest totals and at least `min_share` of the whole (see
    /// [`FlameTree::trim`]); much faster than trimming a whole large tree.
    ///
    /// # Errors
    /// A store error.
    pub fn tree_trimmed(
        &self,
        window: &Window,
        profile_type: ProfileType,
        max_nodes: usize,
        min_share: f64,
    ) -> Result<FlameTree, QueryError> {
        let keep = |s: &SeriesLabels| window.selects(s);
        Ok(self.index.with_call_paths(
            &self.dir,
            window.from_ms,
            window.to_ms,
            profile_type,
            &keep,
            |paths, values| {
                FlameTree::from_call_paths(profile_type, paths, values, max_nodes, min_share)
            },
        )?)
    }

    /// The trees of a baseline and a comparison window, each trimmed to `max_nodes` (0: no
    /// limit), and their diff.
    ///
    /// # Errors
    /// A store error.
    pub fn diff(
        &self,
        base: &Window,
        comparison: &Window,
        profile_type: ProfileType,
        max_nodes: usize,
    ) -> Result<(DiffTree, FlameTree, FlameTree), QueryError> {
        let b = self.tree_trimmed(base, profile_type, max_nodes, 0.0)?;
        let c = self.tree_trimmed(comparison, profile_type, max_nodes, 0.0)?;
        Ok((DiffTree::new(&b, &c), b, c))
    }

    /// The profile of a window with full frames (modules, files, lines) and per-process
    /// labels, for pprof, folded and speedscope exports.
    ///
    /// # Errors
    /// A store error.
    pub fn profile(
        &self,
        window: &Window,
        profile_type: ProfileType,
    ) -> Result<Profile, QueryError> {
        let parts = self.scan(window, profile_type, true, None)?;
        let mut profile = Profile::new(vec![match profile_type {
            ProfileType::Cpu => ValueType::new("samples", "count"),
            ProfileType::OffCpu => ValueType::new("off_cpu", "nanoseconds"),
            ProfileType::Wall => ValueType::new("wall", "nanoseconds"),
        }]);
        profile.start_unix_ns = window.from_ms * 1_000_000;
        profile.duration_ns = (window.to_ms - window.from_ms) * 1_000_000;
        for part in &parts {
            let frames: Vec<u32> = part
                .frames
                .iter()
                .map(|f| profile.intern_frame(f.clone()))
                .collect();
            let stacks: Vec<u32> = part
                .stacks
                .iter()
                .map(|s| {
                    let ids: Vec<u32> = s.iter().map(|&f| frames[f as usize]).collect();
                    profile.intern_stack(&ids)
                })
                .collect();
            for row in &part.rows {
                let series = &part.series[row.series as usize];
                profile.add_stack(
                    stacks[row.stack as usize],
                    &[row.value],
                    SampleLabels::new(series.pid, 0, series.comm.as_str()),
                );
            }
        }
        Ok(profile)
    }

    /// On-CPU self samples per function (the leaf frame of each stack) in each stored interval
    /// of the window, keyed by the interval's start: the counts the noise of a function's rate
    /// is estimated from. An interval starting before the window is keyed by the window's
    /// start; intervals without a selected sample are absent.
    ///
    /// # Errors
    /// A store error.
    pub fn self_by_interval(
        &self,
        window: &Window,
    ) -> Result<BTreeMap<i64, HashMap<String, i64>>, QueryError> {
        // A step of 1 ms puts every row in the step of its own interval's start.
        let parts = self.scan(window, ProfileType::Cpu, true, Some(1))?;
        let mut out: BTreeMap<i64, HashMap<String, i64>> = BTreeMap::new();
        for part in &parts {
            for row in &part.rows {
                let Some(&leaf) = part.stacks[row.stack as usize].last() else {
                    continue;
                };
                let name = &part.frames[leaf as usize].function;
                let counts = out.entry(row.bucket_ms).or_default();
                match counts.get_mut(name) {
                    Some(n) => *n += row.value,
                    None => {
                        counts.insert(name.clone(), row.value);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The label names with a non-empty value in the window's selected series.
    ///
    /// # Errors
    /// A store error.
    pub fn label_names(&self, window: &Window) -> Result<Vec<String>, QueryError> {
        let parts = self.scan(window, ProfileType::Wall, false, None)?;
        let seen: BTreeSet<&str> = parts
            .iter()
            .flat_map(|p| p.rows.iter().map(|r| &p.series[r.series as usize]))
            .flat_map(|s| {
                SeriesLabels::NAMES
                    .into_iter()
                    .filter(|n| s.get(n).is_some_and(|v| !v.is_empty()))
            })
            .collect();
        Ok(seen.into_iter().map(str::to_owned).collect())
    }

    /// The values of one label in the window's selected series, each with its on-CPU sample
    /// count, most samples first.
    ///
    /// # Errors
    /// A store error or an unknown label.
    pub fn label_values(
        &self,
        window: &Window,
        name: &str,
    ) -> Result<Vec<(String, i64)>, QueryError> {
        check_label("name", name)?;
        let parts = self.scan(window, ProfileType::Wall, false, None)?;
        let cpu = self.scan(window, ProfileType::Cpu, false, None)?;
        let mut values: BTreeMap<String, i64> = BTreeMap::new();
        for part in &parts {
            for row in &part.rows {
                let s = &part.series[row.series as usize];
                values
                    .entry(s.get(name).unwrap_or_default().into_owned())
                    .or_default();
            }
        }
        for part in &cpu {
            for row in &part.rows {
                let s = &part.series[row.series as usize];
                *values
                    .entry(s.get(name).unwrap_or_default().into_owned())
                    .or_default() += row.value;
            }
        }
        let mut out: Vec<(String, i64)> = values.into_iter().collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(out)
    }
}

fn check_label(param: &'static str, name: &str) -> Result<(), QueryError> {
    if SeriesLabels::NAMES.contains(&name) {
        Ok(())
    } else {
        Err(QueryError::invalid(
            param,
            format!(
                "unknown label {name:?}; labels are {}",
                SeriesLabels::NAMES.join(", ")
            ),
        ))
    }
}
