//! Property-based fuzzing of every decoder and parser that reads outside input: selectors,
//! times and durations, ingest bodies, log segments and pprof profiles. Each target takes
//! arbitrary input and mutations of valid input, and must answer `Ok` or `Err` — never panic,
//! never hang.
//!
//! `CRITPATH_FUZZ_CASES` sets the cases per target (default 200,000: seconds each in CI); the
//! long run recorded in the README used 10,000,000.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::export::pprof;
use crate::query::{Selector, parse_duration_ms, parse_time_ms};
use crate::store::wal::tests::batch;
use crate::store::{Store, wal, wire};

fn cases() -> u32 {
    std::env::var("CRITPATH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// Runs `check` on `cases()` inputs from `strategy`; reports the cases run and the slowest
/// (a case over a second is a hang).
fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value)) {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let started = Instant::now();
    let slowest = std::cell::Cell::new(Duration::ZERO);
    runner
        .run(&strategy, |input| {
            let t = Instant::now();
            check(input);
            slowest.set(slowest.get().max(t.elapsed()));
            Ok(())
        })
        .unwrap();
    let slowest = slowest.get();
    eprintln!(
        "fuzz {name}: {} cases in {:.1} s, slowest {:.2} ms",
        cases(),
        started.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1e3
    );
    assert!(
        slowest < Duration::from_secs(1),
        "{name}: a case took {slowest:?}"
    );
}

/// Bytes: arbitrary, or `valid` with some bytes flipped, cut, or spliced in.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len().max(1);
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        (
            proptest::collection::vec((0..len, any::<u8>()), 1..8),
            0..=len,
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(move |(flips, cut, splice)| {
                let mut b = valid.clone();
                for (i, x) in flips {
                    if let Some(byte) = b.get_mut(i) {
                        *byte ^= x;
                    }
                }
                b.truncate(cut);
                let at = b.len() / 2;
                b.splice(at..at, splice);
                b
            }),
    ]
}

#[test]
fn selectors() {
    let strategy = prop_oneof![
        any::<String>(),
        r#"\{([a-z_]{0,8} ?(=|!=|=~|!~) ?"([a-z.*+?()|\[\]^$\\{},0-9]|\\w){0,24}" ?,? ?){0,6}\}?"#,
    ];
    fuzz("selector", strategy, |text: String| {
        let _ = Selector::parse(&text);
    });
}

#[test]
fn times_and_durations() {
    let strategy = prop_oneof![
        any::<String>(),
        r"(now)?[-+ ]?[0-9]{0,22}(ms|s|m|h|d|w|y)?([0-9]{0,4}(ms|s|m))?",
        r"[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}(T[0-9]{1,2}:[0-9]{1,2}(:[0-9]{1,2}(\.[0-9]{0,12})?)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?",
    ];
    fuzz("time", strategy, |text: String| {
        let _ = parse_time_ms(&text, 1_764_072_000_000);
        let _ = parse_time_ms(&text, i64::MAX);
        let _ = parse_duration_ms(&text);
    });
}

#[test]
fn ingest_bodies() {
    let mut b = batch(1_000, 4);
    b.series[0].host = "fuzz".into();
    let valid = wire::encode(&[b, batch(11_000, 2)]);
    fuzz("ingest", mutated(valid), |body| {
        let _ = wire::decode(&body);
    });
}

#[test]
fn log_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path()).unwrap();
    for i in 0..3 {
        store.append(&batch(i * 10_000, 3)).unwrap();
    }
    drop(store);
    let segment = wal::segments(&dir.path().join("wal")).unwrap().remove(0);
    let valid = std::fs::read(segment).unwrap();
    fuzz("wal", mutated(valid), |bytes| {
        let (batches, len) = wal::decode_records(&bytes);
        assert!(len <= bytes.len());
        assert!(batches.len() <= 3 || bytes.len() > 64);
    });
}

#[test]
fn pprof_profiles() {
    let mut p = crate::Profile::new(vec![crate::ValueType::new("samples", "count")]);
    let main = crate::Frame::user("main", "/bin/app");
    p.add(
        [main.clone(), crate::Frame::user("hot", "/bin/app")],
        &[3],
        crate::SampleLabels::new(10, 11, "app"),
    );
    p.add([main], &[1], crate::SampleLabels::new(10, 12, "app"));
    let gz = pprof::encode(&p);
    let raw = {
        use std::io::Read as _;
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .unwrap();
        raw
    };
    let strategy = prop_oneof![mutated(raw), mutated(gz)];
    fuzz("pprof", strategy, |bytes| {
        let _ = pprof::decode(&bytes);
    });
}
