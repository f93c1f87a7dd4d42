//! Ingest throughput: samples through the interval aggregator and into the write-ahead log
//! (postcard encoding, CRC, write, fsync), on one core.
//!
//! `cargo bench -p critpath-analyzer --bench ingest`. The target: ≥ 1 M samples/s.
//! Samples are drawn (skewed: a few stacks are hot) from 2,000 distinct stacks of 12–40
//! symbolized frames (function, module, file, line) across 64 processes.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use critpath_analyzer::Frame;
use critpath_analyzer::store::{Aggregator, SampleKind, SeriesLabels, Store};

/// Samples drawn in advance (and cycled), so the bench measures ingest only.
const DRAWS: usize = 100_000;

struct Workload {
    series: Vec<SeriesLabels>,
    stacks: Vec<Vec<Frame>>,
    /// (series, stack) per sample, drawn once so the bench measures ingest only.
    draws: Vec<(usize, usize)>,
}

fn workload() -> Workload {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let series: Vec<SeriesLabels> = (0..64)
        .map(|i| SeriesLabels {
            host: "bench-host".into(),
            pid: 1000 + i,
            comm: format!("worker-{}", i % 8),
            exe: format!("/usr/bin/service{}", i % 16),
            build_id: format!("{:040x}", i % 16),
            service: format!("service{}", i % 16),
        })
        .collect();
    let stacks: Vec<Vec<Frame>> = (0..2000)
        .map(|s| {
            let depth = 12 + (next() % 29) as usize;
            (0..depth)
                .map(|d| {
                    // Shared prefixes: shallow frames are common to many stacks.
                    let f = if d < 4 { d } else { (s * 7 + d * 131) % 5000 };
                    Frame {
                        file: Some(format!("src/module{}/file{}.rs", f % 40, f % 300)),
                        line: Some((f * 17 % 900) as u32 + 1),
                        ..Frame::user(
                            format!("service::module{}::function_number_{f}", f % 40),
                            format!("/usr/bin/service{}", s % 16),
                        )
                    }
                })
                .collect()
        })
        .collect();
    let draws = (0..DRAWS)
        .map(|_| {
            // Skewed: a few stacks are hot.
            let r = (next() % 1_000_000) as f64 / 1_000_000.0;
            let stack = ((r * r * r) * stacks.len() as f64) as usize;
            ((next() % 64) as usize, stack.min(stacks.len() - 1))
        })
        .collect();
    Workload {
        series,
        stacks,
        draws,
    }
}

fn ingest(c: &mut Criterion) {
    let w = workload();
    let mut group = c.benchmark_group("ingest");

    // The aggregator alone, within one interval.
    group.throughput(Throughput::Elements(w.draws.len() as u64));
    group.bench_function("aggregate", |b| {
        let mut agg = Aggregator::new(10_000, 52_631_578);
        b.iter(|| {
            for &(series, stack) in &w.draws {
                let finished = agg.add(0, &w.series[series], &w.stacks[stack], SampleKind::Cpu, 1);
                black_box(finished);
            }
        });
    });

    // The whole path at the target rate: one second of 1 M samples/s aggregated into a 1 s
    // interval (ten times the agent's default fsync rate), then encoded, appended and fsynced.
    const PER_SECOND: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path()).unwrap();
    group.throughput(Throughput::Elements(PER_SECOND as u64));
    group.bench_function("aggregate_and_log_1s_interval", |b| {
        let mut agg = Aggregator::new(1_000, 52_631_578);
        let mut second = 0i64;
        b.iter(|| {
            for i in 0..PER_SECOND {
                let (series, stack) = w.draws[i % w.draws.len()];
                let t = second * 1_000 + (i * 1_000 / PER_SECOND) as i64;
                agg.add(t, &w.series[series], &w.stacks[stack], SampleKind::Cpu, 1);
            }
            let batch = agg.flush().expect("a full interval");
            store.append(black_box(&batch)).unwrap();
            second += 1;
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = ingest
}
criterion_main!(benches);
