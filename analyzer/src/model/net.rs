//! The networks: a graph transformer over a window's nodes, and the two per-node baselines it
//! is judged against (an MLP and a linear model on the same inputs).
//!
//! Every operation is one whose backward pass candle implements: layer norm is written out
//! (candle-nn's fused `layer_norm` has no backward pass), attention uses
//! `candle_nn::ops::softmax` (not `softmax_last_dim`). `tests::every_parameter_gets_a_gradient`
//! keeps it so.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::input::{GraphInput, HOP_BUCKETS, INPUTS, PAIR_INPUTS, RELATIONS, TARGETS};

/// Which network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The graph transformer.
    Transformer,
    /// Two hidden layers per node, no graph.
    Mlp,
    /// One linear map per node, no graph.
    Linear,
}

impl Kind {
    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Transformer => "transformer",
            Kind::Mlp => "mlp",
            Kind::Linear => "linear",
        }
    }
}

/// A network's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    /// Which network.
    pub kind: Kind,
    /// Inputs per node: [`INPUTS`] (one window) or [`PAIR_INPUTS`] (a pair of windows).
    #[serde(default = "window_inputs")]
    pub inputs: usize,
    /// Width of the node states.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Hidden width of each layer's feed-forward block (and of the MLP).
    pub d_ff: usize,
}

fn window_inputs() -> usize {
    INPUTS
}

impl Shape {
    /// The same network over pairs of windows ([`PAIR_INPUTS`] inputs per node).
    pub fn for_pairs(self) -> Self {
        Shape {
            inputs: PAIR_INPUTS,
            ..self
        }
    }

    /// The default shape of each kind.
    pub fn of(kind: Kind) -> Self {
        match kind {
            Kind::Transformer => Self::transformer(),
            Kind::Mlp => Self::mlp(),
            Kind::Linear => Self::linear(),
        }
    }

    /// The transformer shipped: 4 heads, 3 layers, width 64 (about 0.1 M parameters).
    pub fn transformer() -> Self {
        Shape {
            kind: Kind::Transformer,
            inputs: INPUTS,
            d_model: 64,
            heads: 4,
            layers: 3,
            d_ff: 128,
        }
    }

    /// The MLP baseline: 2 hidden layers of 64.
    pub fn mlp() -> Self {
        Shape {
            kind: Kind::Mlp,
            inputs: INPUTS,
            d_model: 64,
            heads: 0,
            layers: 2,
            d_ff: 64,
        }
    }

    /// The linear baseline.
    pub fn linear() -> Self {
        Shape {
            kind: Kind::Linear,
            inputs: INPUTS,
            d_model: 0,
            heads: 0,
            layers: 0,
            d_ff: 0,
        }
    }
}

/// SplitMix64: the parameters' initial values and the training order depend on the seed alone.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// A network with its parameters.
pub struct Net {
    shape: Shape,
    params: BTreeMap<String, Var>,
    device: Device,
}

impl Net {
    /// A network of `shape` with parameters drawn from `seed`: weights uniform in ±1/√fan-in,
    /// biases and attention biases 0, layer-norm gains 1.
    ///
    /// # Errors
    /// A tensor could not be made.
    pub fn new(shape: Shape, seed: u64, device: &Device) -> candle_core::Result<Self> {
        let mut rng = Rng::new(seed);
        let mut params = BTreeMap::new();
        for (name, dims) in parameter_shapes(&shape) {
            let count: usize = dims.iter().product();
            let values: Vec<f32> = if name.ends_with(".gain") {
                vec![1.0; count]
            } else if name.ends_with(".weight") {
                let bound = 1.0 / (dims[1] as f64).sqrt();
                (0..count)
                    .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                    .collect()
            } else {
                vec![0.0; count]
            };
            let t = Tensor::from_vec(values, dims.as_slice(), device)?;
            params.insert(name, Var::from_tensor(&t)?);
        }
        Ok(Net {
            shape,
            params,
            device: device.clone(),
        })
    }

    /// Its shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The trainable parameters, by name.
    pub fn params(&self) -> &BTreeMap<String, Var> {
        &self.params
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.params.values().map(|v| v.elem_count()).sum()
    }

    /// Saves the parameters as safetensors.
    ///
    /// # Errors
    /// The file could not be written.
    pub fn save(&self, path: &Path) -> candle_core::Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, path)
    }

    /// Loads the parameters of a network of `shape` from safetensors, checking that every
    /// parameter is there with its shape.
    ///
    /// # Errors
    /// The file could not be read, or its tensors do not fit `shape`.
    pub fn load(shape: Shape, path: &Path, device: &Device) -> candle_core::Result<Self> {
        let mut tensors = candle_core::safetensors::load(path, device)?;
        let mut params = BTreeMap::new();
        for (name, dims) in parameter_shapes(&shape) {
            let t = tensors.remove(&name).ok_or_else(|| {
                candle_core::Error::Msg(format!("{}: no tensor {name}", path.display()))
            })?;
            if t.dims() != dims.as_slice() {
                return Err(candle_core::Error::Msg(format!(
                    "{}: {name} has shape {:?}, the model needs {dims:?}",
                    path.display(),
                    t.dims()
                )));
            }
            params.insert(name, Var::from_tensor(&t.to_dtype(DType::F32)?)?);
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(candle_core::Error::Msg(format!(
                "{}: unexpected tensor {extra}",
                path.display()
            )));
        }
        Ok(Net {
            shape,
            params,
            device: device.clone(),
        })
    }

    fn p(&self, name: &str) -> &Tensor {
        self.params[name].as_tensor()
    }

    fn linear(&self, x: &Tensor, name: &str) -> candle_core::Result<Tensor> {
        x.matmul(&self.p(&format!("{name}.weight")).t()?)?
            .broadcast_add(self.p(&format!("{name}.bias")))
    }

    fn layer_norm(&self, x: &Tensor, name: &str) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        centered
            .broadcast_div(&(var + 1e-5)?.sqrt()?)?
            .broadcast_mul(self.p(&format!("{name}.gain")))?
            .broadcast_add(self.p(&format!("{name}.bias")))
    }

    /// Tensors of a graph for [`Net::forward`].
    ///
    /// # Errors
    /// A tensor could not be made.
    pub fn tensors(&self, g: &GraphInput) -> candle_core::Result<GraphTensors> {
        let n = g.len();
        if g.inputs != self.shape.inputs {
            return Err(candle_core::Error::Msg(format!(
                "the input has {} features per node, the network takes {}",
                g.inputs, self.shape.inputs
            )));
        }
        Ok(GraphTensors {
            features: Tensor::from_slice(&g.features, (n, g.inputs), &self.device)?,
            relations: Tensor::from_slice(&g.relations, (RELATIONS, n * n), &self.device)?,
            hops: Tensor::from_slice(&g.hops, (HOP_BUCKETS, n * n), &self.device)?,
            nodes: n,
        })
    }

    /// Predictions, `nodes × TARGETS`: p50, p99 and throughput elasticities, signed so that
    /// larger means more impact (throughput's is negated).
    ///
    /// # Errors
    /// A tensor operation failed.
    pub fn forward(&self, g: &GraphTensors) -> candle_core::Result<Tensor> {
        match self.shape.kind {
            Kind::Linear => self.linear(&g.features, "head"),
            Kind::Mlp => {
                let mut x = g.features.clone();
                for l in 0..self.shape.layers {
                    x = self.linear(&x, &format!("hidden{l}"))?.gelu()?;
                }
                self.linear(&x, "head")
            }
            Kind::Transformer => self.transformer(g),
        }
    }

    fn transformer(&self, g: &GraphTensors) -> candle_core::Result<Tensor> {
        let (n, d, h) = (g.nodes, self.shape.d_model, self.shape.heads);
        let dh = d / h;
        let mut x = self.linear(&g.features, "embed")?;
        for l in 0..self.shape.layers {
            let name = |p: &str| format!("layer{l}.{p}");
            // Attention bias per head: learned weights of the relations and of the hop bucket.
            let bias = (self.p(&name("relation_bias")).matmul(&g.relations)?
                + self.p(&name("hop_bias")).matmul(&g.hops)?)?
            .reshape((h, n, n))?;
            let y = self.layer_norm(&x, &name("norm1"))?;
            let split = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((n, h, dh))?.transpose(0, 1)?.contiguous()
            };
            let q = split(self.linear(&y, &name("query"))?)?;
            let k = split(self.linear(&y, &name("key"))?)?;
            let v = split(self.linear(&y, &name("value"))?)?;
            let scores = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?.add(&bias)?;
            let attention = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let mixed = attention
                .matmul(&v)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((n, d))?;
            x = (x + self.linear(&mixed, &name("out"))?)?;
            let y = self.layer_norm(&x, &name("norm2"))?;
            let ff = self.linear(&self.linear(&y, &name("ff1"))?.gelu()?, &name("ff2"))?;
            x = (x + ff)?;
        }
        let x = self.layer_norm(&x, "final_norm")?;
        self.linear(&x, "head")
    }
}

/// One graph's input tensors.
pub struct GraphTensors {
    features: Tensor,
    relations: Tensor,
    hops: Tensor,
    nodes: usize,
}

/// Every parameter of a network of `shape`, with its dimensions.
fn parameter_shapes(shape: &Shape) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut linear = |name: String, input: usize, output: usize| {
        out.push((format!("{name}.weight"), vec![output, input]));
        out.push((format!("{name}.bias"), vec![output]));
    };
    let (d, f, inputs) = (shape.d_model, shape.d_ff, shape.inputs);
    match shape.kind {
        Kind::Linear => linear("head".into(), inputs, TARGETS),
        Kind::Mlp => {
            for l in 0..shape.layers {
                linear(format!("hidden{l}"), if l == 0 { inputs } else { f }, f);
            }
            linear("head".into(), f, TARGETS);
        }
        Kind::Transformer => {
            linear("embed".into(), inputs, d);
            for l in 0..shape.layers {
                for p in ["query", "key", "value", "out"] {
                    linear(format!("layer{l}.{p}"), d, d);
                }
                linear(format!("layer{l}.ff1"), d, f);
                linear(format!("layer{l}.ff2"), f, d);
            }
            linear("head".into(), d, TARGETS);
            for l in 0..shape.layers {
                for norm in ["norm1", "norm2"] {
                    out.push((format!("layer{l}.{norm}.gain"), vec![d]));
                    out.push((format!("layer{l}.{norm}.bias"), vec![d]));
                }
                out.push((
                    format!("layer{l}.relation_bias"),
                    vec![shape.heads, RELATIONS],
                ));
                out.push((format!("layer{l}.hop_bias"), vec![shape.heads, HOP_BUCKETS]));
            }
            out.push(("final_norm.gain".into(), vec![d]));
            out.push(("final_norm.bias".into(), vec![d]));
        }
    }
    out
}
