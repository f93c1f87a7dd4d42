//! The impact model: a small graph transformer (candle) that scores each function of a window
//! by its predicted elasticity of p50 latency, p99 latency and throughput, trained on the
//! measured ground truth of the dataset ([`crate::dataset`]).
//!
//! - [`input`]: a window as nodes (functions, pruned as [`crate::dataset::ModelGraph`] prunes
//!   them: at most [`crate::dataset::MAX_NODES`], the heaviest by on-CPU and off-CPU
//!   inclusive time plus critical-path blame) with 32 normalized features, and the relations
//!   between them (calls both ways, wakeups both ways, same thread) plus hop distances.
//! - [`net`]: the transformer (relations and hop buckets as learned attention biases per head)
//!   and the MLP and linear baselines on the same features.
//! - [`train`]: ListNet + squared-error training, deterministic given a seed, and held-out
//!   predictions by template family (each family predicted by a network that never saw it).
//!
//! [`evaluate`] scores the held-out predictions with [`crate::eval`] next to the graph methods
//! and the noise ceiling, and applies the ship rule: the model is the default ranking only
//! when, on held-out families, its NDCG@5 for p50 beats the best other method's by more than
//! the measurement noise (the 95% paired-bootstrap interval of the difference over programs is
//! above zero). [`Model`] is a trained model as `explain` serves it.

pub mod input;
pub mod net;
pub mod train;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

pub use input::GraphInput;
pub use net::{Kind, Net, Rng, Shape};
pub use train::{Sample, TrainConfig, held_out, predict, read_pair_samples, read_samples};

use crate::dataset::{DatasetError, Table};
use crate::eval::{
    CaseReport, Metrics, ProgramMetrics, Report, Scores, elasticity, injected, noise_ceiling,
};
use crate::graph::{Analysis, Evidence, Pair, Suspect, rank_by};

/// File names in a model directory.
pub const WEIGHTS: &str = "model.safetensors";
/// The model's configuration and ship decision.
pub const CONFIG: &str = "config.json";
/// Held-out predictions of every learned method (`method`, `program`, `function`, targets).
pub const HELD_OUT: &str = "heldout.parquet";

/// Draws of the noise ceiling.
pub const NOISE_DRAWS: usize = 20;
/// Resamples of the paired bootstrap of the ship rule.
pub const BOOTSTRAP: usize = 2000;

/// A model that cannot be trained, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The dataset could not be read.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// A file of the model directory.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor operation failed.
    #[error("model: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A model of one task used for another.
    #[error("model {name} was trained for `{found}`, not for `{wanted}`", found = found.as_str(), wanted = wanted.as_str())]
    WrongTask {
        /// The model's name.
        name: String,
        /// What it scores.
        found: Task,
        /// What it was asked to score.
        wanted: Task,
    },
}

fn file_error(path: &Path, message: impl ToString) -> ModelError {
    ModelError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// What the ship rule decided, with its evidence.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShipDecision {
    /// The primary metric: NDCG@5 of p50 elasticity over all held-out programs.
    pub metric: String,
    /// The transformer's held-out value.
    pub model: f64,
    /// The best other method.
    pub best_baseline: String,
    /// Its value.
    pub baseline: f64,
    /// 95% paired-bootstrap interval of the mean difference (model − baseline) over programs.
    pub difference_ci95: (f64, f64),
    /// The same for top-1 of p50 (reported, not decisive).
    pub top1_difference_ci95: (f64, f64),
    /// The noise ceiling of the metric.
    pub noise_ceiling: f64,
    /// Whether the model is the default ranking: the interval lies above zero.
    pub default: bool,
}

/// What a model scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// The functions of one window, by their impact (`explain`).
    #[default]
    Explain,
    /// The functions of a pair of windows, before and after a change, by how likely their
    /// change made the program slower (`regressions`).
    Regressions,
}

impl Task {
    /// Its name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Explain => "explain",
            Task::Regressions => "regressions",
        }
    }
}

/// A trained model's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Its name (the directory's).
    pub name: String,
    /// What it scores (`explain` when absent: the first models scored windows only).
    #[serde(default)]
    pub task: Task,
    /// How it was trained.
    pub train: TrainConfig,
    /// Trainable values.
    pub parameters: usize,
    /// Programs it was trained on (all of the dataset's).
    pub programs: usize,
    /// The command that made it.
    pub command: String,
    /// The ship rule's decision.
    pub ship: ShipDecision,
}

/// The held-out evaluation of the learned methods next to the graph methods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelEvaluation {
    /// Per method (graph methods, `model`, `mlp`, `linear`), family and target.
    pub elasticity: Report,
    /// The noise ceiling per family and target.
    pub noise_ceiling: BTreeMap<String, BTreeMap<String, Metrics>>,
    /// The ship rule.
    pub ship: ShipDecision,
    /// The shipped model (trained on every program) judged on the programs it was trained
    /// on: not a measure of how it generalizes, but what its weights must reproduce.
    pub in_sample: Option<BTreeMap<String, BTreeMap<String, Metrics>>>,
}

/// The held-out evaluation of the learned regressions methods next to the graph methods and
/// `critpath regressions`' own ranking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairEvaluation {
    /// Finding the injected function, per method (graph methods on the window after and their
    /// `_delta`s, `regressions`, `model`, `mlp`, `linear`), case kind and family.
    pub cases: CaseReport,
    /// The ship rule.
    pub ship: ShipDecision,
    /// The shipped model (trained on every case) judged on the cases it was trained on.
    pub in_sample: Option<BTreeMap<String, BTreeMap<String, Metrics>>>,
}

/// The learned methods of the evaluation, by report name.
pub const LEARNED: [(&str, Kind); 3] = [
    ("model", Kind::Transformer),
    ("mlp", Kind::Mlp),
    ("linear", Kind::Linear),
];

fn mean_ci(diffs: &[f64], seed: u64) -> (f64, f64) {
    if diffs.is_empty() {
        return (0.0, 0.0);
    }
    let mut rng = Rng::new(seed);
    let mut means: Vec<f64> = (0..BOOTSTRAP)
        .map(|_| {
            (0..diffs.len())
                .map(|_| diffs[(rng.next_u64() % diffs.len() as u64) as usize])
                .sum::<f64>()
                / diffs.len() as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    (
        means[(BOOTSTRAP as f64 * 0.025) as usize],
        means[(BOOTSTRAP as f64 * 0.975) as usize - 1],
    )
}

/// Scores the held-out predictions `learned` (method name → scores) on the dataset's
/// functions, with the noise ceiling and the ship rule, and the shipped model's own scores
/// (`in_sample`) when given.
///
/// # Errors
/// The functions table cannot be read or lacks columns.
pub fn evaluate(
    dataset: &Path,
    learned: &[(&str, &Scores)],
    in_sample: Option<&Scores>,
) -> Result<ModelEvaluation, ModelError> {
    let path = dataset.join("functions.parquet");
    let t = Table::read(&path)?;
    let bad = |m: String| {
        ModelError::Dataset(DatasetError::Invalid {
            path: path.clone(),
            message: m,
        })
    };
    let (report, per_program) = elasticity(&t, learned).map_err(bad)?;
    let noise = noise_ceiling(&t, NOISE_DRAWS, 1).map_err(bad)?;
    let primary = |m: &str| report[m]["all"]["p50"].ndcg5;
    let best_baseline = report
        .keys()
        .filter(|m| m.as_str() != "model")
        .max_by(|a, b| primary(a).total_cmp(&primary(b)).then(b.cmp(a)))
        .cloned()
        .unwrap_or_default();
    let paired = |pick: fn(&(f64, f64)) -> f64| -> Vec<f64> {
        let of = |method: &str| -> BTreeMap<&str, f64> {
            per_program
                .iter()
                .filter(|p: &&ProgramMetrics| p.method == method && p.target == "p50")
                .filter_map(|p| Some((p.program.as_str(), pick(p.top1_ndcg5.as_ref()?))))
                .collect()
        };
        let (m, b) = (of("model"), of(&best_baseline));
        m.iter().filter_map(|(p, v)| Some(v - b.get(p)?)).collect()
    };
    let ci = mean_ci(&paired(|x| x.1), 2);
    let top1_ci = mean_ci(&paired(|x| x.0), 3);
    let ship = ShipDecision {
        metric: "ndcg5 p50, all held-out programs".to_owned(),
        model: report.get("model").map_or(0.0, |_| primary("model")),
        baseline: primary(&best_baseline),
        best_baseline,
        difference_ci95: ci,
        top1_difference_ci95: top1_ci,
        noise_ceiling: noise["all"]["p50"].ndcg5,
        default: ci.0 > 0.0,
    };
    let in_sample = match in_sample {
        Some(scores) => {
            let (mut r, _) = elasticity(&t, &[("shipped", scores)]).map_err(bad)?;
            r.remove("shipped")
        }
        None => None,
    };
    Ok(ModelEvaluation {
        elasticity: report,
        noise_ceiling: noise,
        ship,
        in_sample,
    })
}

/// Scores the held-out predictions of regressions models `learned` (method name → scores per
/// (`<program>/<kind>`, work function)) on the dataset's cases, and applies the ship rule:
/// the model is the default ranking of `regressions` only when its top-1 (the injected
/// function first) over all held-out cases beats the best other ranking's by more than the
/// noise, the 95% paired-bootstrap interval of the mean per-case difference above zero. (The
/// injected function is known exactly: the noise is that of the recorded windows, which the
/// bootstrap over cases carries; the noise ceiling is 1.)
///
/// # Errors
/// The cases table cannot be read or lacks columns.
pub fn evaluate_pairs(
    dataset: &Path,
    learned: &[(&str, &Scores)],
    in_sample: Option<&Scores>,
) -> Result<PairEvaluation, ModelError> {
    let path = dataset.join("cases.parquet");
    let t = Table::read(&path)?;
    let bad = |m: String| {
        ModelError::Dataset(DatasetError::Invalid {
            path: path.clone(),
            message: m,
        })
    };
    let (cases, per_case) = injected(&t, learned).map_err(bad)?;
    let by_method = |method: &str| -> BTreeMap<&str, f64> {
        per_case
            .iter()
            .filter(|c| c.method == method)
            .map(|c| (c.case.as_str(), c.top1))
            .collect()
    };
    let mean = |method: &str| {
        let m = by_method(method);
        m.values().sum::<f64>() / m.len().max(1) as f64
    };
    let best_baseline = cases
        .keys()
        .filter(|m| m.as_str() != "model" && m.as_str() != "regressions_significant")
        .max_by(|a, b| mean(a).total_cmp(&mean(b)).then(b.cmp(a)))
        .cloned()
        .unwrap_or_default();
    let (m, b) = (by_method("model"), by_method(&best_baseline));
    let diffs: Vec<f64> = m
        .iter()
        .filter_map(|(case, v)| Some(v - b.get(case)?))
        .collect();
    let ci = mean_ci(&diffs, 2);
    let ship = ShipDecision {
        metric: "top-1 of the injected function, all held-out cases".to_owned(),
        model: if m.is_empty() { 0.0 } else { mean("model") },
        baseline: mean(&best_baseline),
        best_baseline,
        difference_ci95: ci,
        top1_difference_ci95: ci,
        noise_ceiling: 1.0,
        default: ci.0 > 0.0,
    };
    let in_sample = match in_sample {
        Some(scores) => {
            let (mut r, _) = injected(&t, &[("shipped", scores)]).map_err(bad)?;
            r.remove("shipped")
        }
        None => None,
    };
    Ok(PairEvaluation {
        cases,
        ship,
        in_sample,
    })
}

/// Writes held-out predictions as `heldout.parquet`.
///
/// # Errors
/// The file could not be written.
pub fn write_held_out(path: &Path, learned: &[(&str, &Scores)]) -> Result<(), ModelError> {
    let mut t = Table::default();
    for &(method, scores) in learned {
        for ((program, function), s) in scores {
            t.push(
                &[
                    ("method", method.to_owned()),
                    ("program", program.clone()),
                    ("function", function.clone()),
                ],
                &[("p50", s[0]), ("p99", s[1]), ("throughput", s[2])],
            );
        }
    }
    Ok(t.write(path)?)
}

/// Reads held-out predictions written by [`write_held_out`], by method.
///
/// # Errors
/// The file cannot be read or lacks columns.
pub fn read_held_out(path: &Path) -> Result<BTreeMap<String, Scores>, ModelError> {
    let t = Table::read(path)?;
    let bad = |m: String| file_error(path, m);
    let (methods, programs, functions) = (
        t.str("method").map_err(bad)?,
        t.str("program").map_err(bad)?,
        t.str("function").map_err(bad)?,
    );
    let cols: Vec<&[f64]> = ["p50", "p99", "throughput"]
        .iter()
        .map(|c| t.num(c))
        .collect::<Result<_, _>>()
        .map_err(bad)?;
    let mut out: BTreeMap<String, Scores> = BTreeMap::new();
    for r in 0..t.len() {
        out.entry(methods[r].clone()).or_default().insert(
            (programs[r].clone(), functions[r].clone()),
            std::array::from_fn(|k| cols[k][r]),
        );
    }
    Ok(out)
}

/// The device the model runs on: the first CUDA GPU when critpath is built with the `cuda`
/// feature and one is there (training is then not bit-for-bit reproducible), else the CPU.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(gpu) = Device::new_cuda(0) {
        return gpu;
    }
    Device::Cpu
}

/// A trained model, loaded for inference.
pub struct Model {
    net: Net,
    config: ModelConfig,
    hash: u32,
}

impl Model {
    /// Loads `dir/config.json` and `dir/model.safetensors`.
    ///
    /// # Errors
    /// A file is missing or malformed.
    pub fn load(dir: &Path) -> Result<Model, ModelError> {
        let config_path = dir.join(CONFIG);
        let text = std::fs::read(&config_path).map_err(|e| file_error(&config_path, e))?;
        let config: ModelConfig =
            serde_json::from_slice(&text).map_err(|e| file_error(&config_path, e))?;
        let weights = dir.join(WEIGHTS);
        let bytes = std::fs::read(&weights).map_err(|e| file_error(&weights, e))?;
        let net = Net::load(config.train.shape.clone(), &weights, &device())?;
        Ok(Model {
            net,
            config,
            hash: crc32fast::hash(&bytes),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// `name@crc32 of the weights`.
    pub fn version(&self) -> String {
        format!("{}@{:08x}", self.config.name, self.hash)
    }

    /// Whether the ship rule made it the default ranking.
    pub fn is_default(&self) -> bool {
        self.config.ship.default
    }

    /// Every kept function of a window with its predicted p50, p99 and throughput impact
    /// (larger is more), in node order.
    ///
    /// # Errors
    /// A tensor operation failed.
    pub fn score(
        &self,
        evidence: &Evidence,
        analysis: &Analysis,
    ) -> Result<Vec<(String, [f64; 3])>, ModelError> {
        self.check_task(Task::Explain)?;
        let input = GraphInput::of_window(evidence, analysis);
        let predicted = predict(&self.net, &input)?;
        Ok(input.names.into_iter().zip(predicted).collect())
    }

    /// Its scores of the work functions of `samples`, as the evaluation reads them.
    ///
    /// # Errors
    /// A tensor operation failed.
    pub fn scores(&self, samples: &[&Sample]) -> Result<Scores, ModelError> {
        let mut out = Scores::new();
        train::scores(&self.net, samples, &mut out)?;
        Ok(out)
    }

    /// Every kept function of the window after a change (as [`GraphInput::of_pair`] keeps
    /// them, with the z-scores `z` of their on-CPU change) with its score as a regression
    /// suspect (larger is more likely), for a model of [`Task::Regressions`].
    ///
    /// # Errors
    /// A tensor operation failed, or the model scores single windows.
    pub fn score_pair(
        &self,
        before: (&Evidence, &Analysis),
        after: (&Evidence, &Analysis),
        z: &std::collections::HashMap<String, f64>,
    ) -> Result<Vec<(String, f64)>, ModelError> {
        self.check_task(Task::Regressions)?;
        let input = GraphInput::of_pair(before, after, z);
        let predicted = predict(&self.net, &input)?;
        Ok(input
            .names
            .into_iter()
            .zip(predicted)
            .map(|(name, p)| (name, p[0]))
            .collect())
    }

    /// What it scores.
    pub fn task(&self) -> Task {
        self.config.task
    }

    /// An error unless it scores `task`.
    ///
    /// # Errors
    /// [`ModelError::WrongTask`].
    pub fn check_task(&self, task: Task) -> Result<(), ModelError> {
        if self.config.task == task {
            Ok(())
        } else {
            Err(ModelError::WrongTask {
                name: self.config.name.clone(),
                found: self.config.task,
                wanted: task,
            })
        }
    }

    /// Orders `suspects` of `pair` (as [`Pair::regressions`] gave them) by the model's scores
    /// of the pair ([`rank_by`]: the regressions still first).
    ///
    /// # Errors
    /// Not a regressions model, or a tensor operation failed.
    pub fn rank_suspects(&self, pair: &Pair, suspects: &mut [Suspect]) -> Result<(), ModelError> {
        self.check_task(Task::Regressions)?;
        let ((eb, ab), (ea, aa)) = (&pair.before, &pair.after);
        let z = suspects.iter().map(|s| (s.function.clone(), s.z)).collect();
        let scores: std::collections::HashMap<String, f64> = self
            .score_pair((eb, ab), (ea, aa), &z)?
            .into_iter()
            .collect();
        rank_by(suspects, &scores);
        Ok(())
    }

    /// Scores a prepared input (the benchmark's entry point).
    ///
    /// # Errors
    /// A tensor operation failed.
    pub fn score_input(&self, input: &GraphInput) -> Result<Vec<[f64; 3]>, ModelError> {
        Ok(predict(&self.net, input)?)
    }
}
