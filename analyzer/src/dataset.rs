//! The ground-truth dataset as the analysis reads it (`models/data/`): for every synthetic
//! program, each work function's measured elasticities (labels) next to the evidence critpath
//! recorded of the program (features), in Parquet.
//!
//! The measurements come from `tests/synth` (`dataset --record`): one directory per program
//! with `truth.json` (the spec, the protocol, elasticities with 95% intervals, noise floors),
//! the baseline recording (`profile.pb.gz`, `wakeups.json`) and, for some programs,
//! `cases/<deploy|stall>/` (`case.json`, `before.*`, `after.*`). [`pack`] turns them into:
//!
//! - `functions.parquet`: one row per (program, work function): `program`, `family`, `seed`,
//!   `function` (`w17`), `role`, labels `p50`, `p50_ci`, `p99`, `p99_ci`, `throughput`,
//!   `throughput_ci` (elasticity, 0 inside the noise floor, and the half-width of its 95%
//!   interval), `found` (1 when the recording has the function), then every
//!   [`FunctionEvidence::FEATURES`] column;
//! - `programs.parquet`: one row per program: `capacity`, `rate`, noise floors
//!   `noise_p50`/`noise_p99`/`noise_throughput`, `functions`;
//! - `cases.parquet`: one row per (case, work function): `program`, `family`, `kind`
//!   (`deploy`/`stall`), `function`, `injected` (1 for the injected function), `scale`, the
//!   windows' latency `p50_before_us`, `p50_after_us`, the window lengths `before_seconds` and
//!   `after_seconds`, what `critpath regressions` makes of the two windows
//!   (`regressions_rank`: 0 for its first suspect, `regressions_significant`: 1 when it calls the
//!   change a regression, a significant growth), and the features of both windows, prefixed `before_` and `after_`.
//!
//! - `nodes.parquet` and `edges.parquet`: each program's baseline window as a graph, the input of
//!   a model over the node set (issue 8). Nodes: every function of the window with any time,
//!   pruned to [`MAX_NODES`] — the labelled work functions first, then the rest by time (on-CPU
//!   and off-CPU inclusive time plus the time charged to it on the critical path), heaviest first;
//!   columns `program`, `family`, `node` (index in the program), `function`, `labelled`, the
//!   labels (0 where not labelled) and the features. Edges between kept nodes: `call` (caller →
//!   callee, time through the edge), `wakeup` (the innermost kept function on a waker's stack →
//!   the innermost kept function on the wakee's blocked stack, blocked time) and `same_thread`
//!   (functions on CPU in the same thread, the smaller of their self times; the 16 heaviest per
//!   thread), columns `program`, `kind`, `from`, `to`, `weight_s`.
//! - `case_nodes.parquet` and `case_edges.parquet`: each case's pair of windows as a graph, the
//!   input of the regressions model: the after window's graph pruned as in `nodes.parquet`
//!   (the work functions first), columns `program`, `family`, `case` (`deploy`/`stall`),
//!   `node`, `function`, `labelled` (a work function), `injected`, `before_seconds`,
//!   `after_seconds`, `z` (the z-score of its on-CPU change, as `critpath regressions` computes
//!   it), and every feature of the function in each window, prefixed `before_`
//!   (0 when the function was not seen before) and `after_`; edges as in `edges.parquet`, with
//!   the `case`.
//!
//! In `functions.parquet` and `cases.parquet` only work functions have rows: they are the
//! candidates every method is judged on (the rest of a profile — `main`, the standard library,
//! the kernel — has no measured truth).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde_json::Value;

use crate::export::pprof;
use crate::graph::{Analysis, Dispersion, Evidence, FunctionEvidence, WakeupsFile, regressions};

/// The module path of the synthetic programs' work functions in their symbols.
pub const WORK_PREFIX: &str = "critpath_synth::work::";

/// A dataset that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Parquet could not be read or written.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Why.
        source: PolarsError,
    },
}

fn invalid(path: &Path, message: impl Into<String>) -> DatasetError {
    DatasetError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, DatasetError> {
    std::fs::read(path).map_err(|source| DatasetError::Io {
        path: path.to_owned(),
        source,
    })
}

fn json(path: &Path) -> Result<Value, DatasetError> {
    serde_json::from_slice(&read(path)?).map_err(|e| invalid(path, e.to_string()))
}

/// A column-oriented table of strings and numbers, written to and read from Parquet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// String columns by name.
    pub strings: BTreeMap<String, Vec<String>>,
    /// Number columns by name.
    pub numbers: BTreeMap<String, Vec<f64>>,
    /// Column order as written.
    pub order: Vec<String>,
    rows: usize,
}

impl Table {
    /// Appends a row: every column the table has must be given, in any order.
    ///
    /// # Panics
    ///
    /// When the row's columns differ from the table's.
    pub fn push(&mut self, strings: &[(&str, String)], numbers: &[(&str, f64)]) {
        if self.rows == 0 && self.order.is_empty() {
            for (k, _) in strings {
                self.strings.insert((*k).to_owned(), Vec::new());
                self.order.push((*k).to_owned());
            }
            for (k, _) in numbers {
                self.numbers.insert((*k).to_owned(), Vec::new());
                self.order.push((*k).to_owned());
            }
        }
        assert_eq!(strings.len() + numbers.len(), self.order.len(), "row shape");
        for (k, v) in strings {
            self.strings
                .get_mut(*k)
                .expect("a string column")
                .push(v.clone());
        }
        for (k, v) in numbers {
            self.numbers.get_mut(*k).expect("a number column").push(*v);
        }
        self.rows += 1;
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// A string column.
    ///
    /// # Errors
    ///
    /// When there is none of that name.
    pub fn str(&self, name: &str) -> Result<&[String], String> {
        self.strings
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("no string column {name:?}"))
    }

    /// A number column.
    ///
    /// # Errors
    ///
    /// When there is none of that name.
    pub fn num(&self, name: &str) -> Result<&[f64], String> {
        self.numbers
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| format!("no number column {name:?}"))
    }

    /// Writes the table as Parquet (zstd), atomically.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write(&self, path: &Path) -> Result<(), DatasetError> {
        let parquet = |source| DatasetError::Parquet {
            path: path.to_owned(),
            source,
        };
        let columns = self
            .order
            .iter()
            .map(|name| match self.strings.get(name) {
                Some(v) => Column::new(name.as_str().into(), v),
                None => Column::new(name.as_str().into(), &self.numbers[name]),
            })
            .collect();
        let mut df = DataFrame::new_infer_height(columns).map_err(parquet)?;
        let tmp = path.with_extension("parquet.tmp");
        let io = |source| DatasetError::Io {
            path: tmp.clone(),
            source,
        };
        let f = File::create(&tmp).map_err(io)?;
        ParquetWriter::new(&f)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(&mut df)
            .map_err(parquet)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|source| DatasetError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads a table written by [`Table::write`].
    ///
    /// # Errors
    ///
    /// When the file cannot be read or has columns of other types.
    pub fn read(path: &Path) -> Result<Table, DatasetError> {
        let parquet = |source| DatasetError::Parquet {
            path: path.to_owned(),
            source,
        };
        let f = File::open(path).map_err(|source| DatasetError::Io {
            path: path.to_owned(),
            source,
        })?;
        let df = ParquetReader::new(f).finish().map_err(parquet)?;
        let mut table = Table {
            rows: df.height(),
            ..Table::default()
        };
        for c in df.columns() {
            let name = c.name().to_string();
            match c.dtype() {
                DataType::String => {
                    let v = c.str().map_err(parquet)?;
                    table.strings.insert(
                        name.clone(),
                        v.iter().map(|s| s.unwrap_or("").to_owned()).collect(),
                    );
                }
                DataType::Float64 => {
                    let v = c.f64().map_err(parquet)?;
                    table
                        .numbers
                        .insert(name.clone(), v.iter().map(|x| x.unwrap_or(0.0)).collect());
                }
                other => {
                    return Err(invalid(
                        path,
                        format!("column {name:?} has type {other}, expected string or f64"),
                    ));
                }
            }
            table.order.push(name);
        }
        Ok(table)
    }
}

/// Most nodes kept per program in `nodes.parquet`.
pub const MAX_NODES: usize = 128;
/// Functions per thread linked by `same_thread` edges.
const SAME_THREAD_FUNCTIONS: usize = 16;

/// One program's window as a graph for a model: kept function ids (node order) and edges
/// `(kind, from node, to node, weight s)`.
pub struct ModelGraph {
    /// Kept functions, in node order.
    pub nodes: Vec<crate::graph::FunctionId>,
    /// Edges between nodes.
    pub edges: Vec<(&'static str, usize, usize, f64)>,
}

impl ModelGraph {
    /// The graph of a window's evidence and analysis; `labelled` functions are kept first.
    pub fn new(ev: &Evidence, a: &Analysis, labelled: &[crate::graph::FunctionId]) -> ModelGraph {
        use std::collections::HashMap;
        let weight = |f: usize| {
            let e = &a.functions[f];
            e.cpu_total_s + e.off_cpu_total_s.iter().sum::<f64>() + e.blame_s
        };
        let mut rest: Vec<usize> = (0..ev.functions.len())
            .filter(|&f| weight(f) > 0.0 && !labelled.contains(&(f as u32)))
            .collect();
        rest.sort_by(|&x, &y| weight(y).total_cmp(&weight(x)).then(x.cmp(&y)));
        let mut nodes: Vec<u32> = labelled.to_vec();
        nodes.extend(rest.iter().map(|&f| f as u32));
        nodes.truncate(MAX_NODES);
        let index: HashMap<u32, usize> = nodes.iter().enumerate().map(|(i, &f)| (f, i)).collect();
        let mut edges: HashMap<(&'static str, usize, usize), f64> = HashMap::new();
        for e in a.calls.graph.edge_indices() {
            let (from, to) = a.calls.graph.edge_endpoints(e).expect("an edge");
            let (from, to) = (a.calls.graph[from], a.calls.graph[to]);
            if let (Some(&i), Some(&j)) = (index.get(&from), index.get(&to)) {
                let w = a.calls.graph[e];
                *edges.entry(("call", i, j)).or_default() += (w.cpu_ns + w.off_cpu_ns) / 1e9;
            }
        }
        let innermost = |frames: &[u32]| frames.iter().rev().find_map(|f| index.get(f).copied());
        for w in &ev.waits {
            if let (Some(i), Some(j)) = (innermost(&w.waker_frames), innermost(&w.wakee_frames)) {
                *edges.entry(("wakeup", i, j)).or_default() += w.ns / 1e9;
            }
        }
        for t in 0..ev.threads.len() {
            let mut own: Vec<(usize, f64)> = a
                .waits
                .thread_functions(t as u32)
                .iter()
                .filter_map(|(f, &ns)| Some((*index.get(f)?, ns / 1e9)))
                .collect();
            own.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
            own.truncate(SAME_THREAD_FUNCTIONS);
            for (k, &(i, wi)) in own.iter().enumerate() {
                for &(j, wj) in &own[k + 1..] {
                    let (i, j) = (i.min(j), i.max(j));
                    *edges.entry(("same_thread", i, j)).or_default() += wi.min(wj);
                }
            }
        }
        let mut edges: Vec<_> = edges
            .into_iter()
            .map(|((k, i, j), w)| (k, i, j, w))
            .collect();
        edges.sort_by(|x, y| (x.0, x.1, x.2).cmp(&(y.0, y.1, y.2)));
        ModelGraph { nodes, edges }
    }
}

/// A recorded window: its evidence and analysis.
pub struct Window {
    /// What was recorded.
    pub evidence: Evidence,
    /// Its analysis.
    pub analysis: Analysis,
}

impl Window {
    /// Reads a recording: `<prefix>.pb.gz` and `<prefix>.wakeups.json` (or `wakeups.json` for
    /// the prefix `profile`) in `dir`.
    ///
    /// # Errors
    ///
    /// When the files are missing or malformed.
    pub fn read(dir: &Path, prefix: &str) -> Result<Window, DatasetError> {
        let profile_path = dir.join(format!("{prefix}.pb.gz"));
        let profile = pprof::decode(&read(&profile_path)?)
            .map_err(|e| invalid(&profile_path, e.to_string()))?;
        let wakeups_path = if prefix == "profile" {
            dir.join("wakeups.json")
        } else {
            dir.join(format!("{prefix}.wakeups.json"))
        };
        let wakeups = WakeupsFile::parse(&read(&wakeups_path)?)
            .map_err(|e| invalid(&wakeups_path, e.to_string()))?;
        let evidence = Evidence::from_recording_file(&profile, &wakeups, |_| true)
            .map_err(|e| invalid(&profile_path, e.to_string()))?;
        let analysis = Analysis::new(&evidence);
        Ok(Window { evidence, analysis })
    }

    /// A work function's evidence (`w17`), if the window has it.
    pub fn function(&self, name: &str) -> Option<&FunctionEvidence> {
        let id = self.evidence.function_id(&format!("{WORK_PREFIX}{name}"))?;
        Some(&self.analysis.functions[id as usize])
    }
}

fn features(prefix: &str, f: Option<&FunctionEvidence>) -> Vec<(String, f64)> {
    let values = f.map_or(
        [0.0; FunctionEvidence::FEATURES.len()],
        FunctionEvidence::features,
    );
    FunctionEvidence::FEATURES
        .iter()
        .zip(values)
        .map(|(name, v)| (format!("{prefix}{name}"), v))
        .collect()
}

/// What [`pack`] wrote.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Packed {
    /// Programs with a recording.
    pub programs: usize,
    /// Programs skipped: measured but not recorded.
    pub unrecorded: Vec<String>,
    /// Function rows.
    pub functions: usize,
    /// Cases.
    pub cases: usize,
}

/// Packs measured and recorded programs (`programs/<family>-<seed>/` under `input`) into the
/// dataset's Parquet tables in `out`; `progress` hears about each program.
///
/// # Errors
///
/// When a measurement or a recording cannot be read, or a table cannot be written.
pub fn pack(
    input: &Path,
    out: &Path,
    mut progress: impl FnMut(&str),
) -> Result<Packed, DatasetError> {
    let programs_dir = input.join("programs");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&programs_dir)
        .map_err(|source| DatasetError::Io {
            path: programs_dir.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        // `.<name>.tmp` directories are programs being measured.
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .filter(|p| p.join("truth.json").exists())
        .collect();
    dirs.sort();
    let mut functions = Table::default();
    let mut programs = Table::default();
    let mut cases = Table::default();
    let mut nodes = Table::default();
    let mut edges = Table::default();
    let mut case_nodes = Table::default();
    let mut case_edges = Table::default();
    let mut packed = Packed::default();
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !dir.join("profile.pb.gz").exists() {
            packed.unrecorded.push(name);
            continue;
        }
        progress(&name);
        let truth_path = dir.join("truth.json");
        let t = json(&truth_path)?;
        let family = t["spec"]["family"]
            .as_str()
            .ok_or_else(|| invalid(&truth_path, "no spec.family"))?
            .to_owned();
        let seed = t["spec"]["seed"].as_f64().unwrap_or(0.0);
        let truth = &t["truth"];
        let noise = |k: usize| truth["noise"][k].as_f64().unwrap_or(0.0);
        let rows = truth["functions"]
            .as_array()
            .ok_or_else(|| invalid(&truth_path, "no truth.functions"))?;
        programs.push(
            &[("program", name.clone()), ("family", family.clone())],
            &[
                ("seed", seed),
                ("capacity", truth["capacity"].as_f64().unwrap_or(0.0)),
                ("rate", truth["rate"].as_f64().unwrap_or(0.0)),
                ("noise_p50", noise(0)),
                ("noise_p99", noise(1)),
                ("noise_throughput", noise(2)),
                ("functions", rows.len() as f64),
            ],
        );
        let window = Window::read(dir, "profile")?;
        let labelled: Vec<(u32, &Value)> = rows
            .iter()
            .filter_map(|row| {
                let name = row["name"].as_str()?;
                let id = window
                    .evidence
                    .function_id(&format!("{WORK_PREFIX}{name}"))?;
                Some((id, row))
            })
            .collect();
        let ids: Vec<u32> = labelled.iter().map(|&(id, _)| id).collect();
        let graph = ModelGraph::new(&window.evidence, &window.analysis, &ids);
        for (i, &f) in graph.nodes.iter().enumerate() {
            let row = labelled.iter().find(|&&(id, _)| id == f).map(|&(_, r)| r);
            let label =
                |metric: &str| row.map_or(0.0, |r| r[metric]["value"].as_f64().unwrap_or(0.0));
            let mut numbers: Vec<(String, f64)> = vec![
                ("node".into(), i as f64),
                ("labelled".into(), f64::from(u8::from(row.is_some()))),
                ("p50".into(), label("p50")),
                ("p99".into(), label("p99")),
                ("throughput".into(), label("throughput")),
            ];
            numbers.extend(features("", Some(&window.analysis.functions[f as usize])));
            let numbers: Vec<(&str, f64)> = numbers.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            nodes.push(
                &[
                    ("program", name.clone()),
                    ("family", family.clone()),
                    ("function", window.evidence.functions[f as usize].clone()),
                ],
                &numbers,
            );
        }
        for &(kind, from, to, weight) in &graph.edges {
            edges.push(
                &[("program", name.clone()), ("kind", kind.to_owned())],
                &[
                    ("from", from as f64),
                    ("to", to as f64),
                    ("weight_s", weight),
                ],
            );
        }
        for row in rows {
            let function = row["name"].as_str().unwrap_or_default();
            let e = |metric: &str, k: &str| row[metric][k].as_f64().unwrap_or(0.0);
            let f = window.function(function);
            let mut numbers: Vec<(String, f64)> = vec![
                ("seed".into(), seed),
                ("p50".into(), e("p50", "value")),
                ("p50_ci".into(), e("p50", "ci95")),
                ("p99".into(), e("p99", "value")),
                ("p99_ci".into(), e("p99", "ci95")),
                ("throughput".into(), e("throughput", "value")),
                ("throughput_ci".into(), e("throughput", "ci95")),
                ("found".into(), f64::from(u8::from(f.is_some()))),
            ];
            numbers.extend(features("", f));
            let numbers: Vec<(&str, f64)> = numbers.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            functions.push(
                &[
                    ("program", name.clone()),
                    ("family", family.clone()),
                    ("function", function.to_owned()),
                    ("role", row["role"].as_str().unwrap_or_default().to_owned()),
                ],
                &numbers,
            );
            packed.functions += 1;
        }
        for kind in ["deploy", "stall"] {
            let case_dir = dir.join("cases").join(kind);
            if !case_dir.join("case.json").exists() {
                continue;
            }
            let c = json(&case_dir.join("case.json"))?;
            let (before, after) = (
                Window::read(&case_dir, "before")?,
                Window::read(&case_dir, "after")?,
            );
            let injected = c["case"]["function"].as_str().unwrap_or_default();
            // What `critpath regressions` says of the two windows: each work function's rank
            // (regressions first) and whether it calls the function's change a regression. The
            // windows are recordings: sampling noise alone is modelled.
            let suspects = regressions(
                (&before.evidence, &before.analysis),
                (&after.evidence, &after.analysis),
                &Dispersion::poisson(),
            );
            let suspect = |name: &str| {
                let full = format!("{WORK_PREFIX}{name}");
                suspects
                    .iter()
                    .position(|s| s.function == full)
                    .map_or((suspects.len() as f64, 0.0), |i| {
                        (i as f64, f64::from(u8::from(suspects[i].regression)))
                    })
            };
            // The pair as the regressions model reads it: the after window's graph (its work
            // functions first), each node with its features in both windows.
            let work: Vec<u32> = rows
                .iter()
                .filter_map(|row| {
                    after
                        .evidence
                        .function_id(&format!("{WORK_PREFIX}{}", row["name"].as_str()?))
                })
                .collect();
            let graph = ModelGraph::new(&after.evidence, &after.analysis, &work);
            let injected_name = format!("{WORK_PREFIX}{injected}");
            for (i, &f) in graph.nodes.iter().enumerate() {
                let function = &after.evidence.functions[f as usize];
                let mut numbers: Vec<(String, f64)> = vec![
                    ("node".into(), i as f64),
                    ("labelled".into(), f64::from(u8::from(work.contains(&f)))),
                    (
                        "injected".into(),
                        f64::from(u8::from(*function == injected_name)),
                    ),
                    ("before_seconds".into(), before.evidence.seconds),
                    ("after_seconds".into(), after.evidence.seconds),
                    (
                        "z".into(),
                        suspects
                            .iter()
                            .find(|s| s.function == *function)
                            .map_or(0.0, |s| s.z),
                    ),
                ];
                let before_f = before
                    .evidence
                    .function_id(function)
                    .map(|id| &before.analysis.functions[id as usize]);
                numbers.extend(features("before_", before_f));
                numbers.extend(features(
                    "after_",
                    Some(&after.analysis.functions[f as usize]),
                ));
                let numbers: Vec<(&str, f64)> =
                    numbers.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                case_nodes.push(
                    &[
                        ("program", name.clone()),
                        ("family", family.clone()),
                        ("case", kind.to_owned()),
                        ("function", function.clone()),
                    ],
                    &numbers,
                );
            }
            for &(edge, from, to, weight) in &graph.edges {
                case_edges.push(
                    &[
                        ("program", name.clone()),
                        ("case", kind.to_owned()),
                        ("kind", edge.to_owned()),
                    ],
                    &[
                        ("from", from as f64),
                        ("to", to as f64),
                        ("weight_s", weight),
                    ],
                );
            }
            for row in rows {
                let function = row["name"].as_str().unwrap_or_default();
                let (rank, significant) = suspect(function);
                let mut numbers: Vec<(String, f64)> = vec![
                    ("seed".into(), seed),
                    ("injected".into(), f64::from(u8::from(function == injected))),
                    ("scale".into(), c["case"]["scale"].as_f64().unwrap_or(1.0)),
                    (
                        "p50_before_us".into(),
                        c["latency"]["before"]["p50_us"].as_f64().unwrap_or(0.0),
                    ),
                    (
                        "p50_after_us".into(),
                        c["latency"]["after"]["p50_us"].as_f64().unwrap_or(0.0),
                    ),
                    ("before_seconds".into(), before.evidence.seconds),
                    ("after_seconds".into(), after.evidence.seconds),
                    ("regressions_rank".into(), rank),
                    ("regressions_significant".into(), significant),
                ];
                numbers.extend(features("before_", before.function(function)));
                numbers.extend(features("after_", after.function(function)));
                let numbers: Vec<(&str, f64)> =
                    numbers.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                cases.push(
                    &[
                        ("program", name.clone()),
                        ("family", family.clone()),
                        ("kind", kind.to_owned()),
                        ("function", function.to_owned()),
                        ("role", row["role"].as_str().unwrap_or_default().to_owned()),
                    ],
                    &numbers,
                );
            }
            packed.cases += 1;
        }
        packed.programs += 1;
    }
    std::fs::create_dir_all(out).map_err(|source| DatasetError::Io {
        path: out.to_owned(),
        source,
    })?;
    functions.write(&out.join("functions.parquet"))?;
    programs.write(&out.join("programs.parquet"))?;
    if !cases.is_empty() {
        cases.write(&out.join("cases.parquet"))?;
        case_nodes.write(&out.join("case_nodes.parquet"))?;
        case_edges.write(&out.join("case_edges.parquet"))?;
    }
    nodes.write(&out.join("nodes.parquet"))?;
    edges.write(&out.join("edges.parquet"))?;
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Actor, Stack, Wait};
    use crate::offcpu::{Cause, ThreadRef};

    /// A table survives Parquet; the model graph keeps labelled functions first, drops
    /// functions with no time, and links calls, wakeups and functions of one thread.
    #[test]
    fn tables_and_model_graph() {
        let mut t = Table::default();
        t.push(&[("program", "a".into())], &[("x", 1.5)]);
        t.push(&[("program", "b".into())], &[("x", -2.0)]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        t.write(&path).unwrap();
        assert_eq!(Table::read(&path).unwrap(), t);

        let mut ev = Evidence::new(1.0);
        let thread = |ev: &mut Evidence, tid| {
            ev.thread(&ThreadRef {
                pid: 1,
                tid,
                comm: "t".into(),
            })
        };
        let (a, b) = (thread(&mut ev, 1), thread(&mut ev, 2));
        let idle = ev.function("idle");
        for (t, stack, ms) in [
            (a, ["main", "parse"], 10.0),
            (a, ["main", "hold"], 50.0),
            (b, ["main", "reply"], 5.0),
        ] {
            let frames = ev.frames(stack);
            ev.stacks.push(Stack {
                thread: t,
                frames,
                cpu_ns: ms * 1e6,
                off_cpu_ns: [0.0; 6],
                waiting_in: None,
            });
        }
        let (wakee_frames, waker_frames) =
            (ev.frames(["main", "reply"]), ev.frames(["main", "hold"]));
        ev.waits.push(Wait {
            wakee: b,
            wakee_frames,
            waker: Actor::Thread(a),
            waker_frames,
            cause: Cause::Lock,
            ns: 40e6,
            count: 1.0,
        });
        let analysis = Analysis::new(&ev);
        let window = Window {
            evidence: ev,
            analysis,
        };
        let reply = window.evidence.function_id("reply").unwrap();
        let g = ModelGraph::new(&window.evidence, &window.analysis, &[reply]);
        assert_eq!(g.nodes[0], reply);
        assert!(!g.nodes.contains(&idle));
        assert_eq!(g.nodes.len(), 4); // reply, then main, hold, parse
        let node = |name: &str| {
            let id = window.evidence.function_id(name).unwrap();
            g.nodes.iter().position(|&n| n == id).unwrap()
        };
        let has = |kind: &str, from: &str, to: &str| {
            let (i, j) = (node(from), node(to));
            g.edges
                .iter()
                .any(|&(k, f, t, w)| k == kind && f == i && t == j && w > 0.0)
        };
        assert!(has("call", "main", "hold"));
        assert!(has("wakeup", "hold", "reply"));
        let (p, h) = (
            node("parse").min(node("hold")),
            node("parse").max(node("hold")),
        );
        assert!(g.edges.iter().any(|&(k, f, t, w)| k == "same_thread"
            && f == p
            && t == h
            && (w - 0.01).abs() < 1e-12));
    }
}
