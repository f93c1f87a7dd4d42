//! Builds a synthetic store the size of 24 h of a 64-CPU host sampled at 19 Hz (~105 M on-CPU
//! samples, plus off-CPU rows), through the real write path (aggregated batches, write-ahead
//! log, hourly rotation, background compaction into Parquet), then times the standard queries.
//!
//! ```text
//! cargo run --release -p critpath-analyzer --example synth_store -- generate /var/tmp/critpath-synth [HOURS]
//! cargo run --release -p critpath-analyzer --example synth_store -- query /var/tmp/critpath-synth
//! cargo run --release -p critpath-analyzer --example synth_store -- stats /var/tmp/critpath-synth
//! ```
//!
//! `stats` works on any store (it compacts the log first, so it needs the writer's lock): it
//! prints the bytes per on-CPU sample on disk.
//!
//! The host: 40 services (Zipf-distributed CPU), 220 long-lived processes plus short-lived
//! ones (a new pid every few minutes per churning service), each service with its own call
//! tree of 60–900 distinct stacks 8–48 frames deep that share prefixes, hot stacks by a Zipf
//! law within the service, and a slow drift of which stacks are hot over the day. Every 10 s
//! interval holds 12,160 on-CPU samples (64 CPUs × 19 Hz × 10 s, the CPUs always busy) and
//! ~2,000 off-CPU rows, and each sample and wait as a record of its thread and time (store
//! schema 4: 12,160 thread samples and 2,000 wait records an interval, the agent's default
//! budget of 200 wait records a second; three waits in ten ended by another thread).
//! Deterministic: the same seed gives the same store.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use critpath_analyzer::offcpu::Cause;
use critpath_analyzer::query::{Reader, Selector, Window};
use critpath_analyzer::store::{
    Batch, ProfileType, Retention, Row, SampleKind, SeriesLabels, Store, StoreOptions,
    ThreadSample, WaitRecord, WakerKind,
};
use critpath_analyzer::{Frame, FrameKind};

const CPUS: usize = 64;
const HZ: usize = 19;
const INTERVAL_MS: i64 = 10_000;
const HOURS: i64 = 24;
/// 2025-11-24T00:00:00Z.
const START_MS: i64 = 1_763_942_400_000;
const PERIOD_NS: i64 = 1_000_000_000 / HZ as i64;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Cumulative weights of a Zipf law over n ranks.
fn zipf(n: usize, s: f64) -> Vec<f64> {
    let mut acc = 0.0;
    let mut out: Vec<f64> = (1..=n)
        .map(|k| {
            acc += 1.0 / (k as f64).powf(s);
            acc
        })
        .collect();
    for w in &mut out {
        *w /= acc;
    }
    out
}

fn draw(cdf: &[f64], rng: &mut Rng) -> usize {
    let u = rng.unit();
    cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
}

struct Service {
    name: String,
    exe: String,
    stacks: Vec<Vec<Frame>>,
    stack_cdf: Vec<f64>,
    /// Long-lived pids, and whether short-lived ones come and go.
    pids: Vec<u32>,
    churns: bool,
}

fn services(rng: &mut Rng) -> Vec<Service> {
    let mut next_pid = 1000;
    (0..40)
        .map(|i| {
            let name = format!("svc{i:02}");
            let exe = format!("/usr/lib/{name}/bin/{name}");
            let n_stacks = 60 + rng.below(840);
            // A call tree: each stack walks down from main, branching at random depths, so
            // stacks share prefixes like real ones.
            let mut stacks: Vec<Vec<Frame>> = Vec::with_capacity(n_stacks);
            let frame = |f: usize, kernel: bool| -> Frame {
                if kernel {
                    Frame::kernel(format!("kernel_fn_{f}"))
                } else {
                    Frame {
                        file: Some(format!("src/{name}/m{}.rs", f % 50)),
                        line: Some((f * 37 % 2000) as u32 + 1),
                        ..Frame::user(format!("{name}::m{}::func_{f}", f % 50), exe.clone())
                    }
                }
            };
            for s in 0..n_stacks {
                let depth = 8 + rng.below(33);
                let parent = if s > 0 { Some(rng.below(s)) } else { None };
                let shared = parent.map_or(0, |_| rng.below(depth.min(12)));
                let mut stack: Vec<Frame> = match parent {
                    Some(p) => stacks[p].iter().take(shared).cloned().collect(),
                    None => Vec::new(),
                };
                while stack.len() < depth {
                    stack.push(frame(rng.below(3000), false));
                }
                // A third of the stacks end in the kernel (syscalls, page faults).
                if rng.below(3) == 0 {
                    for _ in 0..2 + rng.below(7) {
                        stack.push(frame(rng.below(400), true));
                    }
                }
                if stack.iter().all(|f| f.kind == FrameKind::User) && stack.is_empty() {
                    stack.push(frame(0, false));
                }
                stacks.push(stack);
            }
            let n_pids = 1 + rng.below(10);
            let pids = (0..n_pids)
                .map(|_| {
                    next_pid += 1 + rng.below(50) as u32;
                    next_pid
                })
                .collect();
            Service {
                stack_cdf: zipf(stacks.len(), 1.1),
                stacks,
                pids,
                churns: i % 4 == 3,
                name,
                exe,
            }
        })
        .collect()
}

/// The batch of one interval.
fn interval(services: &[Service], service_cdf: &[f64], start_ms: i64, rng: &mut Rng) -> Batch {
    use std::collections::HashMap;
    let mut batch = Batch {
        start_ms,
        end_ms: start_ms + INTERVAL_MS,
        period_ns: PERIOD_NS,
        ..Batch::default()
    };
    let mut frames: HashMap<&Frame, u32> = HashMap::new();
    let mut stacks: HashMap<(usize, usize), u32> = HashMap::new();
    let mut series: HashMap<(usize, u32, usize), u32> = HashMap::new();
    let mut rows: HashMap<(u32, u32, bool), i64> = HashMap::new();
    let minute = (start_ms - START_MS) / 60_000;
    // Each sample and wait also as a record of its thread and time (store schema 4); waits
    // ended by another thread name that thread (an earlier sample's), and its stack.
    let mut seen: Vec<(u32, u32, u32)> = Vec::new();
    let mut add = |batch: &mut Batch, rng: &mut Rng, off_cpu: bool, value: i64| {
        let s = draw(service_cdf, rng);
        let svc = &services[s];
        // Slow drift of the hot stacks: the rank order rotates by one every 10 minutes.
        let rank = draw(&svc.stack_cdf, rng);
        let stack_ix = (rank + (minute / 10) as usize) % svc.stacks.len();
        let pid = if svc.churns && rng.below(4) == 0 {
            // A short-lived process: a new pid every 5 minutes.
            500_000 + (s as u32) * 10_000 + (minute / 5) as u32
        } else {
            svc.pids[rng.below(svc.pids.len())]
        };
        let thread = rng.below(4);
        let series_id = *series.entry((s, pid, thread)).or_insert_with(|| {
            batch.series.push(SeriesLabels {
                host: "synth-64".into(),
                pid,
                comm: format!("{}-w{thread}", svc.name),
                exe: svc.exe.clone(),
                build_id: format!("{:040x}", s + 1),
                service: svc.name.clone(),
            });
            (batch.series.len() - 1) as u32
        });
        let stack_id = *stacks.entry((s, stack_ix)).or_insert_with(|| {
            let ids = svc.stacks[stack_ix]
                .iter()
                .map(|f| {
                    *frames.entry(f).or_insert_with(|| {
                        batch.frames.push(f.clone());
                        (batch.frames.len() - 1) as u32
                    })
                })
                .collect();
            batch.stacks.push(ids);
            (batch.stacks.len() - 1) as u32
        });
        *rows.entry((series_id, stack_id, off_cpu)).or_default() += value;
        let tid = pid * 4 + thread as u32 + 1;
        let time_ns = start_ms * 1_000_000 + (rng.unit() * INTERVAL_MS as f64 * 1e6) as i64;
        if off_cpu {
            let (waker, waker_series, waker_tid, waker_stack) = match rng.below(10) {
                0..3 if !seen.is_empty() => {
                    let (s, t, k) = seen[rng.below(seen.len())];
                    (WakerKind::Thread, s, t, k)
                }
                3..7 => (WakerKind::Interrupt, series_id, 0, stack_id),
                _ => (WakerKind::None, series_id, 0, stack_id),
            };
            batch.waits.push(WaitRecord {
                series: series_id,
                tid,
                start_ns: time_ns,
                blocked_ns: value,
                runq_ns: 20_000,
                stack: stack_id,
                cause: [Cause::Lock, Cause::Io, Cause::Sleep, Cause::Poll][rng.below(4)],
                weight: 1.0,
                waker,
                waker_series,
                waker_tid,
                waker_stack,
            });
        } else {
            batch.thread_samples.push(ThreadSample {
                series: series_id,
                tid,
                time_ns,
                stack: stack_id,
                background: false,
            });
            if seen.len() < 4096 {
                seen.push((series_id, tid, stack_id));
            }
        }
    };
    for _ in 0..CPUS * HZ * (INTERVAL_MS as usize / 1000) {
        add(&mut batch, rng, false, 1);
    }
    for _ in 0..2000 {
        let ns = 1_000_000 + (rng.unit() * 200_000_000.0) as i64;
        add(&mut batch, rng, true, ns);
    }
    batch.rows = rows
        .into_iter()
        .map(|((series, stack, off_cpu), value)| Row {
            series,
            stack,
            kind: if off_cpu {
                SampleKind::OffCpu
            } else {
                SampleKind::Cpu
            },
            value,
        })
        .collect();
    batch.rows.sort_by_key(|r| (r.series, r.stack, r.kind));
    batch.thread_samples.sort_by_key(|t| (t.time_ns, t.tid));
    batch.waits.sort_by_key(|w| (w.start_ns, w.tid));
    batch
}

fn generate(dir: &Path, hours: i64) -> anyhow_like::Result {
    if dir.exists() {
        return Err(format!("{} exists; remove it first", dir.display()).into());
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let services = services(&mut rng);
    let service_cdf = zipf(services.len(), 1.0);
    let options = StoreOptions {
        retention: Retention {
            max_age: None,
            max_bytes: None,
        },
        ..StoreOptions::default()
    };
    let (mut store, _) = Store::open_with(dir, options)?;
    let intervals = hours * 3_600_000 / INTERVAL_MS;
    let started = Instant::now();
    let (mut samples, mut rows) = (0i64, 0usize);
    for i in 0..intervals {
        let batch = interval(
            &services,
            &service_cdf,
            START_MS + i * INTERVAL_MS,
            &mut rng,
        );
        samples += batch.total(SampleKind::Cpu);
        rows += batch.rows.len();
        store.append(&batch)?;
        if (i + 1) % 360 == 0 {
            eprintln!(
                "hour {:2}/{hours}: {samples} on-CPU samples, {rows} rows, {:.0} s",
                (i + 1) / 360,
                started.elapsed().as_secs_f64()
            );
        }
    }
    store.close()?;
    let bytes = Store::disk_usage(dir);
    println!(
        "store {}: {samples} on-CPU samples in {rows} rows; {bytes} bytes on disk = {:.3} bytes/sample; built in {:.0} s",
        dir.display(),
        bytes as f64 / samples as f64,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed(), out)
}

fn query(dir: &Path, rounds: usize) -> anyhow_like::Result {
    // Every hour's roll-up of this 64-CPU host fits in 2 GiB of index (`--cache-size` of
    // `critpath serve`); the default 512 MiB holds a few hours.
    let reader = Reader::with_cache_bytes(dir, 2 << 30);
    let all = Selector::default();
    let hour = |h: i64| START_MS + h * 3_600_000;
    let w = |from, to| Window::new(all.clone(), from, to).expect("a valid window");
    let one_service = Selector::parse(r#"{service="svc03"}"#)?;
    type Query<'a> = (&'a str, Box<dyn Fn() -> String + 'a>);
    let queries: Vec<Query> = vec![
        (
            "profile 1 h",
            Box::new(|| {
                let t = reader
                    .tree(&w(hour(12), hour(13)), ProfileType::Cpu)
                    .unwrap();
                format!("{} samples, {} nodes", t.total(), t.nodes.len())
            }),
        ),
        (
            "profile 1 h, half past to half past",
            Box::new(|| {
                let t = reader
                    .tree(
                        &w(hour(12) + 1_800_000, hour(13) + 1_800_000),
                        ProfileType::Cpu,
                    )
                    .unwrap();
                format!("{} samples, {} nodes", t.total(), t.nodes.len())
            }),
        ),
        (
            "profile 1 h, 16,384 nodes (the API's default)",
            Box::new(|| {
                let t = reader
                    .tree_trimmed(&w(hour(12), hour(13)), ProfileType::Cpu, 16_384, 0.0)
                    .unwrap();
                format!("{} samples, {} nodes", t.total(), t.nodes.len())
            }),
        ),
        (
            "profile 24 h",
            Box::new(|| {
                let t = reader
                    .tree(&w(hour(0), hour(24)), ProfileType::Cpu)
                    .unwrap();
                format!("{} samples, {} nodes", t.total(), t.nodes.len())
            }),
        ),
        (
            "profile 24 h on a new reader (cold index, every round)",
            Box::new(|| {
                let cold = Reader::with_cache_bytes(dir, 2 << 30);
                let t = cold.tree(&w(hour(0), hour(24)), ProfileType::Cpu).unwrap();
                format!("{} samples, {} nodes", t.total(), t.nodes.len())
            }),
        ),
        (
            "profile 24 h, one service",
            Box::new(|| {
                let win = Window::new(one_service.clone(), hour(0), hour(24)).unwrap();
                let t = reader.tree(&win, ProfileType::Cpu).unwrap();
                format!("{} samples, {} nodes", t.total(), t.nodes.len())
            }),
        ),
        (
            "diff 1 h vs the hour before (16,384 nodes)",
            Box::new(|| {
                let (d, ..) = reader
                    .diff(
                        &w(hour(11), hour(12)),
                        &w(hour(12), hour(13)),
                        ProfileType::Cpu,
                        16_384,
                    )
                    .unwrap();
                format!("{} vs {} samples", d.base_total, d.comparison_total)
            }),
        ),
        (
            "diff 12 h vs 12 h (16,384 nodes)",
            Box::new(|| {
                let (d, ..) = reader
                    .diff(
                        &w(hour(0), hour(12)),
                        &w(hour(12), hour(24)),
                        ProfileType::Cpu,
                        16_384,
                    )
                    .unwrap();
                format!("{} vs {} samples", d.base_total, d.comparison_total)
            }),
        ),
        (
            "series 24 h, 1 min step, by service",
            Box::new(|| {
                let s = reader
                    .series(
                        &w(hour(0), hour(24)),
                        60_000,
                        ProfileType::Cpu,
                        &["service".to_owned()],
                    )
                    .unwrap();
                format!("{} series × {} points", s.series.len(), s.timestamps.len())
            }),
        ),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); queries.len()];
    let mut notes = vec![String::new(); queries.len()];
    // Interleaved rounds: every query once per round, so machine noise spreads evenly.
    for _ in 0..rounds {
        for (i, (_, q)) in queries.iter().enumerate() {
            let (d, note) = time(q);
            times[i].push(d);
            notes[i] = note;
        }
    }
    // The first round runs on a cold index (a new reader), the others warm.
    println!("| query | first (cold) | median | min | max | result |\n|---|---|---|---|---|---|");
    for (i, (name, _)) in queries.iter().enumerate() {
        let t = &mut times[i];
        let cold = t[0];
        t.sort();
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {} |",
            cold.as_secs_f64() * 1e3,
            t[t.len() / 2].as_secs_f64() * 1e3,
            t[0].as_secs_f64() * 1e3,
            t[t.len() - 1].as_secs_f64() * 1e3,
            notes[i]
        );
    }
    Ok(())
}

/// Compacts a store's log (opening it as its writer) and prints its size per sample.
fn stats(dir: &Path) -> anyhow_like::Result {
    let keep_all = StoreOptions {
        retention: Retention {
            max_age: None,
            max_bytes: None,
        },
        ..StoreOptions::default()
    };
    let (store, _) = Store::open_with(dir, keep_all)?;
    store.close()?;
    let reader = Reader::new(dir);
    let all = Window::new(Selector::default(), 0, i64::MAX)?;
    let cpu: i64 = reader
        .label_values(&all, "host")?
        .iter()
        .map(|(_, n)| n)
        .sum();
    let (data, total) = (dir_bytes(&dir.join("data")), Store::disk_usage(dir));
    println!(
        "{}: {cpu} on-CPU samples; Parquet {data} bytes ({:.3} bytes/sample), with the log {total} bytes ({:.3} bytes/sample)",
        dir.display(),
        data as f64 / cpu as f64,
        total as f64 / cpu as f64
    );
    let mut by_kind = std::collections::BTreeMap::<String, u64>::new();
    let mut parts = 0;
    for hour in std::fs::read_dir(dir.join("data"))?.flatten() {
        for file in std::fs::read_dir(hour.path())?.flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            let kind = name.split('.').nth(1).unwrap_or("other").to_owned();
            parts += usize::from(kind == "samples");
            *by_kind.entry(kind).or_default() += file.metadata()?.len();
        }
    }
    println!("{parts} parts; bytes per on-CPU sample by file:");
    for (kind, bytes) in by_kind {
        println!("  {kind:>10} {:8.3}", bytes as f64 / cpu as f64);
    }
    Ok(())
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Just enough error plumbing for an example (no extra dependency).
mod anyhow_like {
    pub type Result = std::result::Result<(), Box<dyn std::error::Error>>;
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [cmd, dir] if cmd == "generate" => generate(&PathBuf::from(dir), HOURS),
        [cmd, dir, hours] if cmd == "generate" => match hours.parse() {
            Ok(n) if n > 0 => generate(&PathBuf::from(dir), n),
            _ => Err(format!("hours must be a positive number, not {hours:?}").into()),
        },
        [cmd, dir] if cmd == "query" => query(&PathBuf::from(dir), 5),
        [cmd, dir] if cmd == "stats" => stats(&PathBuf::from(dir)),
        [cmd, dir, rounds] if cmd == "query" => match rounds.parse() {
            Ok(n) if n > 0 => query(&PathBuf::from(dir), n),
            _ => Err(format!("rounds must be a positive number, not {rounds:?}").into()),
        },
        _ => Err("usage: synth_store generate DIR [HOURS] | query DIR [ROUNDS] | stats DIR".into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synth_store: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
