//! Training on the dataset's graphs (`nodes.parquet`, `edges.parquet`), held-out evaluation by
//! template family, and the ship rule.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{D, Device, Tensor};
use candle_nn::Optimizer as _;
use serde::{Deserialize, Serialize};

use super::input::{GraphInput, RAW_FEATURES, TARGETS};
use super::net::{GraphTensors, Net, Rng, Shape};
use crate::dataset::{DatasetError, Table, WORK_PREFIX};
use crate::eval::Scores;
use crate::graph::FunctionEvidence;

/// How a network is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The network.
    pub shape: Shape,
    /// Passes over the training graphs (one optimizer step per graph).
    pub epochs: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Seed of the initial parameters and of the order of the graphs.
    pub seed: u64,
    /// Temperature of the listwise loss's target distribution (elasticity units).
    pub temperature: f64,
    /// Weight of the squared error on the elasticities next to the listwise loss.
    pub regression_weight: f64,
}

impl TrainConfig {
    /// The defaults for `shape`.
    pub fn new(shape: Shape, seed: u64) -> Self {
        TrainConfig {
            shape,
            epochs: 60,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            seed,
            temperature: 0.25,
            regression_weight: 1.0,
        }
    }
}

impl TrainConfig {
    /// `config` for the regressions model: the same network over pairs of windows, and a
    /// sharper listwise target (temperature 0.1: one injected function per case, labelled 1,
    /// gets nearly all of the target distribution).
    pub fn for_pairs(config: TrainConfig) -> Self {
        TrainConfig {
            shape: config.shape.for_pairs(),
            temperature: 0.1,
            ..config
        }
    }
}

/// One program's graph with its labels.
pub struct Sample {
    /// The program (`lock_bound-7`).
    pub program: String,
    /// Its template family.
    pub family: String,
    /// The model input.
    pub input: GraphInput,
    /// Nodes with measured elasticities.
    pub labelled: Vec<u32>,
    /// Their elasticities, `labelled × TARGETS`, signed so that larger is more impact
    /// (throughput negated).
    pub targets: Vec<f32>,
}

/// A packed graph table's columns, read once: the rows of each graph (by `key` columns, in
/// node order) and each graph's edges.
struct Graphs<'a> {
    by_key: BTreeMap<String, Vec<usize>>,
    edges: BTreeMap<String, Vec<(&'a str, usize, usize)>>,
}

fn bad(path: &Path) -> impl Fn(String) -> DatasetError + '_ {
    move |message| DatasetError::Invalid {
        path: path.to_owned(),
        message,
    }
}

impl<'a> Graphs<'a> {
    fn new(
        (nodes, nodes_path): (&Table, &Path),
        (edges, edges_path): (&'a Table, &Path),
        key: &[&str],
    ) -> Result<Self, DatasetError> {
        let key_of = |t: &Table, path: &Path, r: usize| -> Result<String, DatasetError> {
            let parts: Vec<&str> = key
                .iter()
                .map(|c| Ok(t.str(c).map_err(bad(path))?[r].as_str()))
                .collect::<Result<_, DatasetError>>()?;
            Ok(parts.join("/"))
        };
        let node = nodes.num("node").map_err(bad(nodes_path))?;
        let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for r in 0..nodes.len() {
            by_key
                .entry(key_of(nodes, nodes_path, r)?)
                .or_default()
                .push(r);
        }
        for rows in by_key.values_mut() {
            rows.sort_by(|&a, &b| node[a].total_cmp(&node[b]));
        }
        let kinds = edges.str("kind").map_err(bad(edges_path))?;
        let (from, to) = (
            edges.num("from").map_err(bad(edges_path))?,
            edges.num("to").map_err(bad(edges_path))?,
        );
        let mut by_edge_key: BTreeMap<String, Vec<(&str, usize, usize)>> = BTreeMap::new();
        for r in 0..edges.len() {
            by_edge_key
                .entry(key_of(edges, edges_path, r)?)
                .or_default()
                .push((kinds[r].as_str(), from[r] as usize, to[r] as usize));
        }
        Ok(Graphs {
            by_key,
            edges: by_edge_key,
        })
    }

    fn edges(&self, key: &str) -> &[(&'a str, usize, usize)] {
        self.edges.get(key).map_or(&[][..], Vec::as_slice)
    }

    /// One sample per graph of `nodes` (read from `path`): its input from `input` (the key,
    /// its rows, their function names), its nodes with `labelled` = 1 labelled with `target`
    /// of their row.
    fn samples(
        &self,
        (nodes, path): (&Table, &Path),
        input: impl Fn(&str, &[usize], Vec<String>) -> Result<GraphInput, DatasetError>,
        target: impl Fn(usize) -> [f32; TARGETS],
    ) -> Result<Vec<Sample>, DatasetError> {
        let (families, functions) = (
            nodes.str("family").map_err(bad(path))?,
            nodes.str("function").map_err(bad(path))?,
        );
        let labelled = nodes.num("labelled").map_err(bad(path))?;
        let mut samples = Vec::new();
        for (key, rows) in &self.by_key {
            let names: Vec<String> = rows.iter().map(|&r| functions[r].clone()).collect();
            let mut sample = Sample {
                program: key.clone(),
                family: families[rows[0]].clone(),
                input: input(key, rows, names)?,
                labelled: Vec::new(),
                targets: Vec::new(),
            };
            for (i, &r) in rows.iter().enumerate() {
                if labelled[r] > 0.5 {
                    sample.labelled.push(i as u32);
                    sample.targets.extend(target(r));
                }
            }
            samples.push(sample);
        }
        Ok(samples)
    }
}

/// The raw features of `rows`, from the columns named `prefix` + each feature.
fn raw_features(
    t: &Table,
    path: &Path,
    prefix: &str,
    rows: &[usize],
) -> Result<Vec<[f64; RAW_FEATURES]>, DatasetError> {
    let columns: Vec<&[f64]> = FunctionEvidence::FEATURES
        .iter()
        .map(|c| t.num(&format!("{prefix}{c}")))
        .collect::<Result<_, _>>()
        .map_err(bad(path))?;
    Ok(rows
        .iter()
        .map(|&r| std::array::from_fn(|k| columns[k][r]))
        .collect())
}

/// Reads every program's graph from a packed dataset (`nodes.parquet`, `edges.parquet`).
///
/// # Errors
/// The tables cannot be read or lack columns.
pub fn read_samples(dataset: &Path) -> Result<Vec<Sample>, DatasetError> {
    let nodes_path = dataset.join("nodes.parquet");
    let edges_path = dataset.join("edges.parquet");
    let nodes = Table::read(&nodes_path)?;
    let edges = Table::read(&edges_path)?;
    let graphs = Graphs::new((&nodes, &nodes_path), (&edges, &edges_path), &["program"])?;
    let labels: Vec<&[f64]> = ["p50", "p99", "throughput"]
        .iter()
        .map(|c| nodes.num(c))
        .collect::<Result<_, _>>()
        .map_err(bad(&nodes_path))?;
    graphs.samples(
        (&nodes, &nodes_path),
        |program, rows, names| {
            let raw = raw_features(&nodes, &nodes_path, "", rows)?;
            Ok(GraphInput::new(names, &raw, graphs.edges(program)))
        },
        |r| [labels[0][r], labels[1][r], -labels[2][r]].map(|v| v as f32),
    )
}

/// Reads every case's pair of windows from a packed dataset (`case_nodes.parquet`,
/// `case_edges.parquet`) as samples of the regressions model: `program` is
/// `<program>/<deploy|stall>`, the work functions are labelled, the injected function with 1
/// for every target and the others with 0.
///
/// # Errors
/// The tables cannot be read or lack columns.
pub fn read_pair_samples(dataset: &Path) -> Result<Vec<Sample>, DatasetError> {
    let nodes_path = dataset.join("case_nodes.parquet");
    let edges_path = dataset.join("case_edges.parquet");
    let nodes = Table::read(&nodes_path)?;
    let edges = Table::read(&edges_path)?;
    let graphs = Graphs::new(
        (&nodes, &nodes_path),
        (&edges, &edges_path),
        &["program", "case"],
    )?;
    let injected = nodes.num("injected").map_err(bad(&nodes_path))?;
    let (before_s, after_s) = (
        nodes.num("before_seconds").map_err(bad(&nodes_path))?,
        nodes.num("after_seconds").map_err(bad(&nodes_path))?,
    );
    let z = nodes.num("z").map_err(bad(&nodes_path))?;
    graphs.samples(
        (&nodes, &nodes_path),
        |case, rows, names| {
            let before = raw_features(&nodes, &nodes_path, "before_", rows)?;
            let after = raw_features(&nodes, &nodes_path, "after_", rows)?;
            let seconds = (before_s[rows[0]], after_s[rows[0]]);
            let z: Vec<f64> = rows.iter().map(|&r| z[r]).collect();
            Ok(GraphInput::pair(
                names,
                (&before, &after, &z),
                seconds,
                graphs.edges(case),
            ))
        },
        |r| [injected[r] as f32; TARGETS],
    )
}

/// A sample's tensors, made once.
struct Prepared {
    graph: GraphTensors,
    labelled: Tensor,
    targets: Tensor,
    /// `TARGETS × nodes`: softmax over all nodes of the targets at the temperature, the
    /// unlabelled nodes' taken as 0.
    target_distribution: Tensor,
}

fn prepare(
    net: &Net,
    sample: &Sample,
    temperature: f64,
    device: &Device,
) -> candle_core::Result<Prepared> {
    let (n, l) = (sample.input.len(), sample.labelled.len());
    let targets = Tensor::from_slice(&sample.targets, (l, TARGETS), device)?;
    let mut all = vec![0.0f32; n * TARGETS];
    for (k, &node) in sample.labelled.iter().enumerate() {
        for t in 0..TARGETS {
            all[t * n + node as usize] = sample.targets[k * TARGETS + t];
        }
    }
    let all = Tensor::from_vec(all, (TARGETS, n), device)?;
    let target_distribution = candle_nn::ops::softmax(&(all / temperature)?, D::Minus1)?;
    Ok(Prepared {
        graph: net.tensors(&sample.input)?,
        labelled: Tensor::from_slice(&sample.labelled, l, device)?,
        targets,
        target_distribution,
    })
}

/// The loss of one graph: ListNet (cross-entropy between the softmax of the measured
/// elasticities over all nodes and that of the predictions, per target; the nodes without a
/// measurement — the runtime, the kernel, `main` — count as 0, so that the model learns to
/// rank the program's own work above them, as `explain` shows every node) plus
/// `regression_weight` × the mean squared error of the labelled nodes' predictions.
fn loss(net: &Net, p: &Prepared, regression_weight: f64) -> candle_core::Result<Tensor> {
    let all = net.forward(&p.graph)?;
    let predicted = all.index_select(&p.labelled, 0)?;
    let squared = (&predicted - &p.targets)?.sqr()?.mean_all()?;
    let log_q = candle_nn::ops::log_softmax(&all.t()?.contiguous()?, D::Minus1)?;
    let listwise = ((&p.target_distribution * log_q)?.sum_all()? * (-1.0 / TARGETS as f64))?;
    listwise + (squared * regression_weight)?
}

/// Trains a network on `samples` (those with at least two labelled nodes); `progress` hears
/// each epoch's mean loss.
///
/// # Errors
/// A tensor operation failed.
pub fn train(
    samples: &[&Sample],
    config: &TrainConfig,
    progress: &mut dyn FnMut(usize, f64),
) -> candle_core::Result<Net> {
    let device = super::device();
    let net = Net::new(config.shape.clone(), config.seed, &device)?;
    let prepared: Vec<Prepared> = samples
        .iter()
        .filter(|s| s.labelled.len() >= 2)
        .map(|s| prepare(&net, s, config.temperature, &device))
        .collect::<candle_core::Result<_>>()?;
    let mut optimizer = candle_nn::AdamW::new(
        net.params().values().cloned().collect(),
        candle_nn::ParamsAdamW {
            lr: config.learning_rate,
            weight_decay: config.weight_decay,
            ..candle_nn::ParamsAdamW::default()
        },
    )?;
    let mut rng = Rng::new(config.seed ^ 0x5eed);
    let mut order: Vec<usize> = (0..prepared.len()).collect();
    for epoch in 0..config.epochs {
        rng.shuffle(&mut order);
        let mut total = 0.0;
        for &i in &order {
            let l = loss(&net, &prepared[i], config.regression_weight)?;
            total += f64::from(l.to_scalar::<f32>()?);
            optimizer.backward_step(&l)?;
        }
        progress(epoch, total / prepared.len().max(1) as f64);
    }
    Ok(net)
}

/// Per node of a graph: the predicted p50, p99 and throughput impact (larger is more).
///
/// # Errors
/// A tensor operation failed.
pub fn predict(net: &Net, input: &GraphInput) -> candle_core::Result<Vec<[f64; TARGETS]>> {
    if input.is_empty() {
        return Ok(Vec::new());
    }
    let out = net.forward(&net.tensors(input)?)?.to_vec2::<f32>()?;
    Ok(out
        .into_iter()
        .map(|row| std::array::from_fn(|t| f64::from(row[t])))
        .collect())
}

/// A network's predictions for the work functions of `samples`, as the evaluation reads them.
///
/// # Errors
/// A tensor operation failed.
pub fn scores(net: &Net, samples: &[&Sample], out: &mut Scores) -> candle_core::Result<()> {
    for s in samples {
        let predicted = predict(net, &s.input)?;
        for (name, p) in s.input.names.iter().zip(predicted) {
            if let Some(short) = name.strip_prefix(WORK_PREFIX) {
                out.insert((s.program.clone(), short.to_owned()), p);
            }
        }
    }
    Ok(())
}

/// Held-out predictions: for each family, a network trained on the other families predicts
/// the family's programs. `progress` hears (family, epoch, loss).
///
/// # Errors
/// A tensor operation failed.
pub fn held_out(
    samples: &[Sample],
    config: &TrainConfig,
    progress: &mut dyn FnMut(&str, usize, f64),
) -> candle_core::Result<Scores> {
    let mut families: Vec<&str> = samples.iter().map(|s| s.family.as_str()).collect();
    families.sort_unstable();
    families.dedup();
    let mut out = Scores::new();
    for family in families {
        let (test, training): (Vec<&Sample>, Vec<&Sample>) =
            samples.iter().partition(|s| s.family == family);
        let net = train(&training, config, &mut |e, l| progress(family, e, l))?;
        scores(&net, &test, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::input::INPUTS;

    /// A graph of 6 nodes where the node with the largest first feature is the bottleneck.
    fn sample(seed: u64) -> Sample {
        let mut rng = Rng::new(seed);
        let raw: Vec<[f64; RAW_FEATURES]> = (0..6)
            .map(|_| std::array::from_fn(|_| rng.uniform()))
            .collect();
        let names = (0..6).map(|i| format!("{WORK_PREFIX}w{i:02}")).collect();
        let edges = [("call", 0, 1), ("wakeup", 2, 3), ("same_thread", 4, 5)];
        let input = GraphInput::new(names, &raw, &edges);
        let best = (0..6)
            .max_by(|&a, &b| raw[a][0].total_cmp(&raw[b][0]))
            .unwrap();
        let mut targets = Vec::new();
        for i in 0..6 {
            let e = if i == best { 1.0 } else { 0.0 };
            targets.extend([e, e, e]);
        }
        Sample {
            program: format!("p-{seed}"),
            family: if seed.is_multiple_of(2) { "a" } else { "b" }.to_owned(),
            input,
            labelled: (0..6).collect(),
            targets,
        }
    }

    /// A pair of windows of 6 nodes where the node whose first feature grew most is the
    /// injected change.
    fn pair_sample(seed: u64) -> Sample {
        let mut rng = Rng::new(seed);
        let before: Vec<[f64; RAW_FEATURES]> = (0..6)
            .map(|_| std::array::from_fn(|_| rng.uniform()))
            .collect();
        let after: Vec<[f64; RAW_FEATURES]> = before
            .iter()
            .map(|row| std::array::from_fn(|k| row[k] * (0.8 + 0.4 * rng.uniform())))
            .collect();
        let mut after = after;
        let injected = (rng.next_u64() % 6) as usize;
        after[injected][0] = before[injected][0] + 1.0;
        let names = (0..6).map(|i| format!("{WORK_PREFIX}w{i:02}")).collect();
        let z = [0.0; 6];
        let input = GraphInput::pair(names, (&before, &after, &z), (5.0, 5.0), &[("call", 0, 1)]);
        let targets = (0..6)
            .flat_map(|i| [f32::from(u8::from(i == injected)); TARGETS])
            .collect();
        Sample {
            program: format!("p-{seed}/deploy"),
            family: "a".to_owned(),
            input,
            labelled: (0..6).collect(),
            targets,
        }
    }

    /// The regressions model trains on pairs: its loss falls on a rule the pair's features
    /// give away, and a network of the other input width refuses its input.
    #[test]
    fn trains_on_pairs() {
        let samples: Vec<Sample> = (0..16).map(pair_sample).collect();
        let refs: Vec<&Sample> = samples.iter().collect();
        let mut config = TrainConfig::for_pairs(TrainConfig::new(Shape::transformer(), 3));
        config.epochs = 10;
        assert_eq!(config.shape.inputs, crate::model::input::PAIR_INPUTS);
        let mut losses = Vec::new();
        let net = train(&refs, &config, &mut |_, l| losses.push(l)).unwrap();
        assert!(losses[losses.len() - 1] < losses[0] * 0.8, "{losses:?}");
        assert_eq!(predict(&net, &samples[0].input).unwrap().len(), 6);
        let window = Net::new(Shape::transformer(), 1, &Device::Cpu).unwrap();
        let err = predict(&window, &samples[0].input).unwrap_err().to_string();
        assert!(
            err.contains("65 features per node, the network takes 32"),
            "{err}"
        );
    }

    /// Every trainable parameter of every network gets a non-zero gradient from one backward
    /// pass (candle's fused layer norm and last-dim softmax would leave some at zero), over
    /// windows and over pairs of windows.
    #[test]
    fn every_parameter_gets_a_gradient() {
        let device = Device::Cpu;
        let (window, pair) = (sample(1), pair_sample(1));
        for shape in [Shape::transformer(), Shape::mlp(), Shape::linear()]
            .into_iter()
            .flat_map(|s| [s.clone(), s.for_pairs()])
        {
            let s = if shape.inputs == INPUTS {
                &window
            } else {
                &pair
            };
            let net = Net::new(shape.clone(), 7, &device).unwrap();
            let p = prepare(&net, s, 0.25, &device).unwrap();
            let grads = loss(&net, &p, 1.0).unwrap().backward().unwrap();
            for (name, var) in net.params() {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{shape:?}: no gradient for {name}"));
                let norm = g
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(norm > 0.0, "{:?}: zero gradient for {name}", shape.kind);
            }
        }
        assert!(
            Net::new(Shape::transformer(), 1, &device)
                .unwrap()
                .parameter_count()
                > 100_000
        );
    }

    /// Training is deterministic given the seed, learns a rule a node's own features give
    /// away, and the weights survive a save and a load.
    #[test]
    fn trains_deterministically_and_round_trips() {
        let samples: Vec<Sample> = (0..24).map(sample).collect();
        let refs: Vec<&Sample> = samples.iter().collect();
        let mut config = TrainConfig::new(Shape::transformer(), 3);
        config.epochs = 12;
        let mut losses = Vec::new();
        let a = train(&refs, &config, &mut |_, l| losses.push(l)).unwrap();
        assert!(losses[losses.len() - 1] < losses[0] * 0.8, "{losses:?}");
        let b = train(&refs, &config, &mut |_, _| {}).unwrap();
        let test = sample(99);
        assert_eq!(
            predict(&a, &test.input).unwrap(),
            predict(&b, &test.input).unwrap()
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        a.save(&path).unwrap();
        let loaded = Net::load(Shape::transformer(), &path, &Device::Cpu).unwrap();
        assert_eq!(
            predict(&a, &test.input).unwrap(),
            predict(&loaded, &test.input).unwrap()
        );
        let err = Net::load(Shape::mlp(), &path, &Device::Cpu).err().unwrap();
        assert!(
            err.to_string().contains("no tensor hidden0.weight"),
            "{err}"
        );
        assert_eq!(test.input.features.len(), 6 * INPUTS);
    }
}
