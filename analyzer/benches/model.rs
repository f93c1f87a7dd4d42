//! Inference cost of the impact model on a full window: 128 nodes (the most a window keeps),
//! with the relations of a busy program, and of the regressions model on a pair of such
//! windows. Target: under 50 ms per window on this machine.
//!
//! `cargo bench --bench model`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use critpath_analyzer::model::input::RAW_FEATURES;
use critpath_analyzer::model::{GraphInput, Net, Rng, Shape, predict};

/// A window's nodes: names, raw features and edges.
type Window = (
    Vec<String>,
    Vec<[f64; RAW_FEATURES]>,
    Vec<(&'static str, usize, usize)>,
);

fn window(nodes: usize) -> Window {
    let mut rng = Rng::new(1);
    let names = (0..nodes).map(|i| format!("f{i}")).collect();
    let raw = (0..nodes)
        .map(|_| std::array::from_fn(|_| rng.uniform()))
        .collect();
    let mut edges = Vec::new();
    for i in 1..nodes {
        edges.push(("call", (rng.next_u64() % i as u64) as usize, i));
        if i % 4 == 0 {
            edges.push(("wakeup", i, (rng.next_u64() % nodes as u64) as usize));
        }
        if i % 2 == 0 {
            edges.push(("same_thread", i - 1, i));
        }
    }
    (names, raw, edges)
}

fn bench(c: &mut Criterion) {
    let (names, raw, edges) = window(128);
    let net = Net::new(Shape::transformer(), 1, &candle_core::Device::Cpu).unwrap();
    let input = GraphInput::new(names.clone(), &raw, &edges);
    c.bench_function("model/input_128_nodes", |b| {
        b.iter(|| GraphInput::new(black_box(names.clone()), &raw, &edges))
    });
    c.bench_function("model/predict_128_nodes", |b| {
        b.iter(|| predict(&net, black_box(&input)).unwrap())
    });
    // The regressions model: the same nodes before (the window's features scaled) and after.
    let before: Vec<[f64; RAW_FEATURES]> = raw
        .iter()
        .map(|row| std::array::from_fn(|k| row[k] * 0.9))
        .collect();
    let pairs = Net::new(
        Shape::transformer().for_pairs(),
        1,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let z = vec![1.0; names.len()];
    let pair = GraphInput::pair(names.clone(), (&before, &raw, &z), (900.0, 900.0), &edges);
    c.bench_function("model/pair_input_128_nodes", |b| {
        b.iter(|| {
            GraphInput::pair(
                black_box(names.clone()),
                (&before, &raw, &z),
                (900.0, 900.0),
                &edges,
            )
        })
    });
    c.bench_function("model/pair_predict_128_nodes", |b| {
        b.iter(|| predict(&pairs, black_box(&pair)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
