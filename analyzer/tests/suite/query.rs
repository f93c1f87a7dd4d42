//! Golden tests of the standard queries (series, tree, diff, flamebearer, labels) over a small
//! hand-made store: one window compacted into Parquet, the other still in the write-ahead log.

use critpath_analyzer::export::flamebearer;
use critpath_analyzer::query::{FlameTree, QueryError, Reader, Selector, Window};
use critpath_analyzer::store::{
    Batch, ProfileType, Retention, Row, SampleKind, SeriesLabels, Store, StoreOptions,
};
use critpath_analyzer::{Frame, FrameKind};

/// 2025-11-25T12:00:00Z: windows start on an hour so partitions are predictable.
const T0: i64 = 1_764_072_000_000;
const PERIOD_NS: i64 = 52_631_578;

fn series(service: &str, pid: u32) -> SeriesLabels {
    SeriesLabels {
        host: "h1".into(),
        pid,
        comm: service.into(),
        exe: format!("/srv/{service}"),
        build_id: String::new(),
        service: service.into(),
    }
}

/// One 10 s batch from (series, stack, kind, value) rows; stacks are function names, root first.
fn batch(start_ms: i64, rows: &[(&SeriesLabels, &[&str], SampleKind, i64)]) -> Batch {
    let mut b = Batch {
        start_ms,
        end_ms: start_ms + 10_000,
        period_ns: PERIOD_NS,
        ..Batch::default()
    };
    for (s, stack, kind, value) in rows {
        let series = match b.series.iter().position(|x| x == *s) {
            Some(i) => i,
            None => {
                b.series.push((*s).clone());
                b.series.len() - 1
            }
        };
        let ids: Vec<u32> = stack
            .iter()
            .map(|name| {
                let frame = if name.starts_with("[off-cpu") || name.starts_with("schedule") {
                    Frame {
                        kind: FrameKind::Kernel,
                        ..Frame::kernel(*name)
                    }
                } else {
                    Frame::user(*name, format!("/srv/{}", s.service))
                };
                match b.frames.iter().position(|f| *f == frame) {
                    Some(i) => i as u32,
                    None => {
                        b.frames.push(frame);
                        (b.frames.len() - 1) as u32
                    }
                }
            })
            .collect();
        let stack = match b.stacks.iter().position(|x| *x == ids) {
            Some(i) => i,
            None => {
                b.stacks.push(ids);
                b.stacks.len() - 1
            }
        };
        b.rows.push(Row {
            series: series as u32,
            stack: stack as u32,
            kind: *kind,
            value: *value,
        });
    }
    b
}

/// A store with a baseline window [T0, T0+20 s) compacted to Parquet and a comparison window
/// [T0+20 s, T0+60 s) (twice as long) in the log. The comparison adds `render` to the api.
fn hand_made_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let api = series("api", 10);
    let batch_job = series("batch", 20);
    let cpu = SampleKind::Cpu;
    let parse: &[&str] = &["main", "handle", "parse"];
    let render: &[&str] = &["main", "handle", "render"];
    let crunch: &[&str] = &["main", "crunch"];
    let wait: &[&str] = &["main", "handle", "db_wait", "[off-cpu: io]"];

    let (mut store, _) = Store::open(dir.path()).unwrap();
    for i in 0..2 {
        store
            .append(&batch(
                T0 + i * 10_000,
                &[
                    (&api, parse, cpu, 3),
                    (&batch_job, crunch, cpu, 2),
                    (&api, wait, SampleKind::OffCpu, 500_000_000),
                ],
            ))
            .unwrap();
    }
    store.close().unwrap(); // compacted into Parquet

    let (mut store, _) = Store::open(dir.path()).unwrap();
    for i in 2..6 {
        store
            .append(&batch(
                T0 + i * 10_000,
                &[
                    (&api, parse, cpu, if i % 2 == 0 { 2 } else { 1 }),
                    (&api, render, cpu, if i % 2 == 0 { 3 } else { 2 }),
                    (&batch_job, crunch, cpu, 2),
                    (&api, wait, SampleKind::OffCpu, 250_000_000),
                ],
            ))
            .unwrap();
    }
    drop(store); // not closed: the comparison stays in the log
    assert!(
        dir.path().join("data").read_dir().unwrap().next().is_some(),
        "the baseline is in Parquet"
    );
    dir
}

fn window(query: &str, from_s: i64, to_s: i64) -> Window {
    Window::new(
        Selector::parse(query).unwrap(),
        T0 + from_s * 1000,
        T0 + to_s * 1000,
    )
    .unwrap()
}

/// The diff of the two windows, normalized by each window's total: `render` (new) grows most,
/// `parse` and `crunch` shrink; the tree, the function table and the flamebearer are golden.
#[test]
fn diff_golden() {
    let dir = hand_made_store();
    let reader = Reader::new(dir.path());
    let (diff, base, comparison) = reader
        .diff(&window("", 0, 20), &window("", 20, 60), ProfileType::Cpu, 0)
        .unwrap();
    assert_eq!((diff.base_total, diff.comparison_total), (10, 24));
    insta::assert_json_snapshot!("diff_tree", diff);
    let functions = diff.functions(&base, &comparison);
    assert_eq!(functions[0].name, "render", "most grown first");
    assert_eq!(functions.last().unwrap().name, "parse", "most shrunk last");
    insta::assert_json_snapshot!("diff_functions", functions);
    insta::assert_json_snapshot!("diff_flamebearer", flamebearer::double(&diff, 19));
}

/// A diff restricted by a selector only sees the selected service.
#[test]
fn diff_with_selector() {
    let dir = hand_made_store();
    let reader = Reader::new(dir.path());
    let (diff, ..) = reader
        .diff(
            &window(r#"{service="api"}"#, 0, 20),
            &window(r#"{service="api"}"#, 20, 60),
            ProfileType::Cpu,
            0,
        )
        .unwrap();
    assert_eq!((diff.base_total, diff.comparison_total), (6, 16));
    assert_eq!(diff.root.children.len(), 1);
    assert_eq!(diff.root.children[0].name, "api");
    // Baseline: parse is all of it (1.0); comparison: 6/16 → shrunk by 0.625.
    let handle = &diff.root.children[0].children[0].children[0];
    assert_eq!(handle.children[0].name, "render");
    let parse = &handle.children[1];
    assert!((parse.delta_share - (6.0 / 16.0 - 1.0)).abs() < 1e-9);
}

/// The profile tree of the whole store (both sources), as JSON and as a single flamebearer;
/// off-CPU and wall trees carry nanoseconds.
#[test]
fn tree_golden() {
    let dir = hand_made_store();
    let reader = Reader::new(dir.path());
    let tree = reader.tree(&window("", 0, 60), ProfileType::Cpu).unwrap();
    assert_eq!(tree.total(), 34);
    insta::assert_json_snapshot!("tree_cpu", tree);
    insta::assert_json_snapshot!("tree_flamebearer", flamebearer::single(&tree, 19));

    let off = reader
        .tree(&window("", 0, 60), ProfileType::OffCpu)
        .unwrap();
    assert_eq!(off.total(), 2_000_000_000);
    assert_eq!(
        off.find(&["api", "main", "handle", "db_wait", "[off-cpu: io]"])
            .unwrap()
            .self_value,
        2_000_000_000
    );
    let wall = reader.tree(&window("", 0, 60), ProfileType::Wall).unwrap();
    assert_eq!(wall.total(), 34 * PERIOD_NS + 2_000_000_000);

    let mut trimmed = tree.clone();
    trimmed.trim(4, 0.0);
    assert_eq!(trimmed.nodes.len(), 4);
    assert_eq!(trimmed.total(), 34);
}

/// Series per service at a 10 s step: counts land in the step of their interval, zeros elsewhere,
/// and a window that covers only part of the store sees only that part.
#[test]
fn series_golden() {
    let dir = hand_made_store();
    let reader = Reader::new(dir.path());
    let set = reader
        .series(
            &window("", -10, 70),
            10_000,
            ProfileType::Cpu,
            &["service".to_owned()],
        )
        .unwrap();
    insta::assert_json_snapshot!("series_by_service", set);
    let api = &set.series[0];
    assert_eq!(api.labels["service"], "api");
    assert_eq!(api.values, [0.0, 3.0, 3.0, 5.0, 3.0, 5.0, 3.0, 0.0]);

    let off = reader
        .series(&window("", 0, 60), 20_000, ProfileType::OffCpu, &[])
        .unwrap();
    assert_eq!(off.unit, "seconds");
    assert_eq!(off.series.len(), 1);
    assert_eq!(off.series[0].values, [1.0, 0.5, 0.5]);
}

/// Bad parameters are named: a step giving too many points, an unknown label, from ≥ to.
#[test]
fn invalid_parameters() {
    let dir = hand_made_store();
    let reader = Reader::new(dir.path());
    let err = reader
        .series(&window("", 0, 60), 1, ProfileType::Cpu, &[])
        .unwrap_err();
    assert!(
        matches!(err, QueryError::Invalid { param: "step", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("at least 6 ms"), "{err}");
    let err = reader
        .series(&window("", 0, 60), 1000, ProfileType::Cpu, &["nope".into()])
        .unwrap_err();
    assert!(
        matches!(
            err,
            QueryError::Invalid {
                param: "group_by",
                ..
            }
        ),
        "{err}"
    );
    assert!(Window::new(Selector::default(), 5, 5).is_err());
    assert!(reader.label_values(&window("", 0, 60), "bogus").is_err());
}

/// Label names and values (with on-CPU sample counts) of the selected series.
#[test]
fn labels() {
    let dir = hand_made_store();
    let reader = Reader::new(dir.path());
    let names = reader.label_names(&window("", 0, 60)).unwrap();
    assert_eq!(names, ["comm", "exe", "host", "pid", "service"]);
    let values = reader.label_values(&window("", 0, 60), "service").unwrap();
    assert_eq!(values, [("api".to_owned(), 22), ("batch".to_owned(), 12)]);
    let values = reader
        .label_values(&window(r#"{pid!="10"}"#, 0, 60), "pid")
        .unwrap();
    assert_eq!(values, [("20".to_owned(), 12)]);
}

/// Every (path, self, total) of a tree, sorted: trees compare equal whatever their node order.
fn flatten(tree: &FlameTree) -> Vec<(String, i64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![(0u32, String::new())];
    while let Some((id, path)) = stack.pop() {
        let node = &tree.nodes[id as usize];
        let path = format!("{path};{}", tree.name(node));
        out.push((path.clone(), node.self_value, node.total));
        stack.extend(node.children.iter().map(|&c| (c, path.clone())));
    }
    out.sort();
    out
}

/// The tree of a window summed straight from the stored batches (no index).
fn reference_tree(dir: &std::path::Path, w: &Window, ty: ProfileType) -> FlameTree {
    let mut paths: Vec<(Vec<String>, i64)> = Vec::new();
    for b in Store::batches(dir, w.from_ms, w.to_ms).unwrap() {
        for row in &b.rows {
            let s = &b.series[row.series as usize];
            let value = match (ty, row.kind) {
                (ProfileType::Cpu, SampleKind::Cpu) => row.value,
                (ProfileType::Wall, SampleKind::Cpu) => row.value * b.period_ns,
                (ProfileType::OffCpu | ProfileType::Wall, SampleKind::OffCpu) => row.value,
                _ => continue,
            };
            if !w.selects(s) {
                continue;
            }
            let mut path = vec![s.service.clone()];
            path.extend(
                b.stacks[row.stack as usize]
                    .iter()
                    .map(|&f| b.frames[f as usize].function.clone()),
            );
            paths.push((path, value));
        }
    }
    let refs: Vec<Vec<&str>> = paths
        .iter()
        .map(|(p, _)| p.iter().map(String::as_str).collect())
        .collect();
    FlameTree::from_paths(
        ty,
        refs.iter()
            .zip(&paths)
            .map(|(r, (_, v))| (r.as_slice(), *v)),
    )
}

/// The index (part roll-ups, the rows of parts a window cuts through, the log read
/// incrementally while it grows) gives exactly the trees that summing the stored batches
/// gives, for windows that cover, cut and miss parts, with selectors, for every type, and
/// trimmed as `FlameTree::trim` trims.
#[test]
fn index_trees_match_the_stored_batches() {
    let dir = tempfile::tempdir().unwrap();
    let services = [series("api", 10), series("api", 11), series("batch", 20)];
    let stacks: [&[&str]; 5] = [
        &["main", "handle", "parse"],
        &["main", "handle", "render"],
        &["main", "handle", "render", "layout"],
        &["main", "crunch"],
        &["main", "handle", "db_wait", "[off-cpu: io]"],
    ];
    let mut seed = 7u64;
    let mut next = move |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % n
    };
    let mut make = |start_ms: i64| {
        let rows: Vec<(&SeriesLabels, &[&str], SampleKind, i64)> = (0..6)
            .map(|_| {
                let stack = stacks[next(5) as usize];
                let off = stack.last().unwrap().starts_with("[off-cpu");
                (
                    &services[next(3) as usize],
                    stack,
                    if off {
                        SampleKind::OffCpu
                    } else {
                        SampleKind::Cpu
                    },
                    if off {
                        next(1_000_000) as i64
                    } else {
                        1 + next(5) as i64
                    },
                )
            })
            .collect();
        batch(start_ms, &rows)
    };
    // Hours 0 and 1 compacted into parts (two segments: hour 1's two parts are merged into one
    // when hour 2 begins), hour 2 in the log.
    let minute = 60_000;
    let keep_all = || StoreOptions {
        retention: Retention {
            max_age: None,
            max_bytes: None,
        },
        ..StoreOptions::default()
    };
    let (mut store, _) = Store::open_with(dir.path(), keep_all()).unwrap();
    for m in (0..90).step_by(5) {
        store.append(&make(T0 + m * minute)).unwrap();
    }
    store.close().unwrap();
    let (mut store, _) = Store::open_with(dir.path(), keep_all()).unwrap();
    for m in (92..150).step_by(4) {
        store.append(&make(T0 + m * minute)).unwrap();
    }
    store.finish_maintenance(); // the hour-1 segment compacted; hour 2 stays in the log

    let reader = Reader::new(dir.path());
    let windows = [
        (0, 180),
        (0, 60),
        (30, 100),
        (59, 61),
        (60, 120),
        (121, 200),
        (7, 8),
        (200, 300),
    ];
    let check = |round: &str| {
        for (from, to) in windows {
            for query in ["", r#"{service="api"}"#, r#"{pid!="10"}"#] {
                for ty in [ProfileType::Cpu, ProfileType::OffCpu, ProfileType::Wall] {
                    let w = Window::new(
                        Selector::parse(query).unwrap(),
                        T0 + from * minute,
                        T0 + to * minute,
                    )
                    .unwrap();
                    let want = reference_tree(dir.path(), &w, ty);
                    let got = reader.tree(&w, ty).unwrap();
                    let what = format!("{round}: {from}..{to} min, {query:?}, {ty}");
                    assert_eq!(flatten(&got), flatten(&want), "{what}");
                    let mut trimmed = want.clone();
                    trimmed.trim(5, 0.0);
                    let got = reader.tree_trimmed(&w, ty, 5, 0.0).unwrap();
                    assert_eq!(flatten(&got), flatten(&trimmed), "{what}, trimmed");
                    assert_eq!(got.trimmed_nodes, trimmed.trimmed_nodes, "{what}");
                }
            }
        }
    };
    check("cold");
    check("warm");
    for m in (150..180).step_by(3) {
        store.append(&make(T0 + m * minute)).unwrap();
    }
    check("after appends to the log");
    let parts = |hour: &str| {
        std::fs::read_dir(dir.path().join("data").join(hour)).map_or(Vec::new(), |d| {
            let mut names: Vec<String> = d
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    Some(name.strip_suffix(".rollup.parquet")?.to_owned())
                })
                .collect();
            names.sort();
            names
        })
    };
    assert_eq!(
        (
            parts("2025112512"),
            parts("2025112513"),
            parts("2025112514")
        ),
        (
            vec!["0000000000000001".to_owned()],
            vec![
                "0000000000000002".to_owned(),
                "0000000000000002-0000000000000003".to_owned(),
                "0000000000000003".to_owned()
            ],
            vec![]
        ),
        "hour 0 in one part, hour 1's two merged (the two kept a minute), hour 2 in the log"
    );
}

/// Queries running in parallel while the writer appends (the log read and extended by several
/// queries at once, parts loaded concurrently) neither deadlock nor disagree with the batches.
#[test]
fn concurrent_queries_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let api = series("api", 10);
    let stack: &[&str] = &["main", "handle", "parse"];
    let (mut store, _) = Store::open(dir.path()).unwrap();
    store
        .append(&batch(T0, &[(&api, stack, SampleKind::Cpu, 1)]))
        .unwrap();
    let reader = Reader::new(dir.path());
    let (done, finished) = std::sync::mpsc::channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (reader, done, stop) = (reader.clone(), done.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let w = window("", 0, 3_600);
                    let total = reader.tree(&w, ProfileType::Cpu).unwrap().total();
                    assert!(total >= last, "thread {t}: the total went back");
                    last = total;
                }
                done.send(()).unwrap();
            })
        })
        .collect();
    for i in 1..200 {
        store
            .append(&batch(
                T0 + i * 10_000,
                &[(&api, stack, SampleKind::Cpu, 1)],
            ))
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for _ in 0..threads.len() {
        finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("a query thread is stuck (deadlock?)");
    }
    for t in threads {
        t.join().unwrap();
    }
    let w = window("", 0, 3_600);
    assert_eq!(reader.tree(&w, ProfileType::Cpu).unwrap().total(), 200);
}
