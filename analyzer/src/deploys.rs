//! Deploy markers: the moments a service changed, the "after" of `regressions`.
//!
//! People mark them (`critpath deploy`, `POST /api/v1/deploys`); the store reveals others
//! itself: an executable whose samples carry a build id not seen before in the window was
//! replaced, an implicit deploy at the first sample of the new build.
//!
//! Marked deploys live in the store directory, in `deploys.jsonl`: one JSON object per line
//! (`{"id":"3","service":"api","version":"v42","at_ms":1795626660000,"source":"marked"}`),
//! appended under an exclusive file lock and fsynced before the marker is acknowledged. A crash
//! in the middle of an append leaves a last line without its newline; readers skip it (the
//! marker was never acknowledged). Any other line that is not a deploy is an error naming it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::query::{Matcher, QueryError, Reader, Selector, Window};
use crate::store::ProfileType;

/// The markers' file in the store directory.
pub const FILE: &str = "deploys.jsonl";
/// Longest service or version accepted, bytes.
pub const MAX_LABEL_BYTES: usize = 256;
/// Most steps the build-id detection splits a window into (its time resolution).
const DETECTION_STEPS: i64 = 1000;

/// How a deploy became known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Marked by someone (`critpath deploy`, `POST /api/v1/deploys`).
    Marked,
    /// Found in the store: an executable's build id changed.
    BuildId,
}

/// A deploy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    /// Marked: `1`, `2`, ... in marking order; found: `build:` and the new build id.
    pub id: String,
    /// The service deployed (a found deploy: the service label of the new build's samples).
    pub service: String,
    /// The version deployed (a found deploy: the new build id).
    pub version: String,
    /// When, Unix ms (a found deploy: the start of the first step with the new build's
    /// samples).
    pub at_ms: i64,
    /// How it became known.
    pub source: Source,
    /// A found deploy's executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
}

/// A marker that cannot be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A complete line of the file is not a deploy.
    #[error("{}:{line}: not a deploy marker: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Its line, from 1.
        line: usize,
        /// Why.
        message: String,
    },
    /// The marker itself is invalid (an empty service, say).
    #[error("{field}: {message}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Why.
        message: String,
    },
}

fn check_label(field: &'static str, value: &str) -> Result<(), DeployError> {
    let invalid = |message: &str| DeployError::Invalid {
        field,
        message: message.to_owned(),
    };
    if value.trim().is_empty() {
        return Err(invalid("must not be empty"));
    }
    if value.len() > MAX_LABEL_BYTES {
        return Err(invalid(&format!("longer than {MAX_LABEL_BYTES} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters"));
    }
    Ok(())
}

/// Parses the file's text: complete lines must be deploys; a last line without its newline
/// (an append cut by a crash) is left out.
fn parse(path: &Path, text: &str) -> Result<Vec<Deploy>, DeployError> {
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    complete
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| DeployError::Corrupt {
                path: path.to_owned(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

/// The deploys marked in the store `dir`, in marking order (none when nothing was marked).
///
/// # Errors
/// The file cannot be read, or a complete line is not a deploy.
pub fn marked(dir: &Path) -> Result<Vec<Deploy>, DeployError> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(DeployError::Io { path, source }),
    }
}

/// Marks a deploy of `service` at `version` at `at_ms` in the store `dir` (created if need be)
/// and returns it with its id. The marker is on disk (fsynced) when this returns; concurrent
/// markers (a server and a CLI) are serialized by a file lock.
///
/// # Errors
/// An invalid service or version, or the file cannot be locked, read or written.
pub fn mark(dir: &Path, service: &str, version: &str, at_ms: i64) -> Result<Deploy, DeployError> {
    check_label("service", service)?;
    check_label("version", version)?;
    let path = dir.join(FILE);
    let io = |source| DeployError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file: File = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    file.lock().map_err(io)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    let existing = parse(&path, &text)?;
    let next = existing
        .iter()
        .filter_map(|d| d.id.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let deploy = Deploy {
        id: next.to_string(),
        service: service.to_owned(),
        version: version.to_owned(),
        at_ms,
        source: Source::Marked,
        exe: None,
    };
    // The torn end of a crashed append (never acknowledged) goes.
    let complete = text.rfind('\n').map_or(0, |end| end + 1);
    if complete < text.len() {
        file.set_len(complete as u64).map_err(io)?;
    }
    let line = serde_json::to_string(&deploy).expect("a deploy serializes") + "\n";
    file.seek(SeekFrom::End(0)).map_err(io)?;
    file.write_all(line.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(deploy)
}

/// The deploys of `window`, oldest first: the marked ones (their `service` selected by the
/// window's selector) and those [`detect`] finds.
///
/// # Errors
/// The markers or the store cannot be read ([`AroundError::Deploys`], [`AroundError::Query`]).
pub fn in_window(reader: &Reader, window: &Window) -> Result<Vec<Deploy>, AroundError> {
    let mut all: Vec<Deploy> = marked(reader.dir())?
        .into_iter()
        .filter(|d| {
            (window.from_ms..window.to_ms).contains(&d.at_ms)
                && window.selector.matches(|label| match label {
                    "service" => Some(d.service.as_str()),
                    _ => None,
                })
        })
        .collect();
    all.extend(detect(reader, window)?);
    all.sort_by_key(|d| d.at_ms);
    Ok(all)
}

/// How far back [`around`] looks for a found deploy's id.
pub const FOUND_LOOKBACK_MS: i64 = 7 * 24 * 3_600_000;
/// Shortest window after a deploy worth comparing, ms.
pub const MIN_AFTER_MS: i64 = 1_000;

/// The windows either side of a deploy, as `regressions` compares them.
#[derive(Clone, Debug)]
pub struct Around {
    /// The deploy, when asked by id.
    pub deploy: Option<Deploy>,
    /// Its moment, Unix ms.
    pub at_ms: i64,
    /// `[at − window, at)`.
    pub before: Window,
    /// `[at, at + window)`, cut at now.
    pub after: Window,
}

/// A deploy's windows that cannot be chosen.
#[derive(Debug, thiserror::Error)]
pub enum AroundError {
    /// No deploy has this id.
    #[error(
        "no deploy {0:?} (marked ids are numbers; found ones are build:<build id>, looked for over the last 7 days)"
    )]
    Unknown(String),
    /// The request itself is wrong.
    #[error("{field}: {message}")]
    Invalid {
        /// The offending parameter.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// Reading the markers failed.
    #[error(transparent)]
    Deploys(#[from] DeployError),
    /// Reading the store failed.
    #[error(transparent)]
    Query(#[from] QueryError),
}

/// The windows of `window_ms` either side of deploy `id` (marked or found) or of the moment
/// `at_ms` (exactly one of them), selected by `selector`, or when it is empty and a deploy is
/// named, by the deploy's service.
///
/// # Errors
/// Neither or both of `id` and `at_ms`, an unknown id, a moment in the future or less than
/// [`MIN_AFTER_MS`] ago, a window that is not positive, or a store error.
pub fn around(
    reader: &Reader,
    id: Option<&str>,
    at_ms: Option<i64>,
    window_ms: i64,
    selector: &Selector,
    now_ms: i64,
) -> Result<Around, AroundError> {
    let invalid = |field, message: &str| AroundError::Invalid {
        field,
        message: message.to_owned(),
    };
    if window_ms <= 0 {
        return Err(invalid("window", "the window must be positive"));
    }
    let deploy = match (id, at_ms) {
        (Some(_), Some(_)) => return Err(invalid("at", "give a deploy id or a moment, not both")),
        (None, None) => return Err(invalid("deploy", "give a deploy id or a moment (at)")),
        (None, Some(_)) => None,
        (Some(id), None) => {
            let known = if id.starts_with("build:") {
                let lookback =
                    Window::new(Selector::default(), now_ms - FOUND_LOOKBACK_MS, now_ms)?;
                detect(reader, &lookback)?
            } else {
                marked(reader.dir())?
            };
            let found = known.into_iter().find(|d| d.id == id);
            Some(found.ok_or_else(|| AroundError::Unknown(id.to_owned()))?)
        }
    };
    let at = at_ms.or(deploy.as_ref().map(|d| d.at_ms)).unwrap_or(now_ms);
    if at > now_ms - MIN_AFTER_MS {
        return Err(invalid(
            if deploy.is_some() { "deploy" } else { "at" },
            "the moment is in the future or less than a second ago: nothing after it yet",
        ));
    }
    let selector = match &deploy {
        Some(d) if selector.is_empty() => Selector {
            matchers: vec![Matcher::equal("service", &d.service)],
        },
        _ => selector.clone(),
    };
    Ok(Around {
        before: Window::new(selector.clone(), at - window_ms, at)?,
        after: Window::new(selector, at, (at + window_ms).min(now_ms))?,
        deploy,
        at_ms: at,
    })
}

/// Deploys found in the store over `window` (its selector applies): for each executable, every
/// build id first seen after another build id of it. Each build's first sample is placed to
/// the second, whatever the window's length.
///
/// # Errors
/// A store error.
pub fn detect(reader: &Reader, window: &Window) -> Result<Vec<Deploy>, QueryError> {
    // exe → (first seen, build id, service).
    let mut builds: BTreeMap<String, Vec<(i64, String, String)>> = BTreeMap::new();
    for (labels, first, _) in first_seen(reader, window, &["exe", "build_id", "service"])? {
        let [exe, build_id, service] = labels;
        if exe.is_empty() || build_id.is_empty() {
            continue;
        }
        // One build id per executable (a service's several processes share it).
        let seen = builds.entry(exe).or_default();
        match seen.iter_mut().find(|b| b.1 == build_id) {
            Some(b) => b.0 = b.0.min(first),
            None => seen.push((first, build_id, service)),
        }
    }
    let mut found = Vec::new();
    for (exe, mut seen) in builds {
        if seen.len() < 2 {
            continue;
        }
        for b in &mut seen {
            b.0 = refine(reader, window, &exe, &b.1, b.0)?;
        }
        seen.sort();
        let earliest = seen[0].0;
        for (first, build_id, service) in seen {
            if first > earliest {
                found.push(Deploy {
                    id: format!("build:{build_id}"),
                    service,
                    version: build_id,
                    at_ms: first,
                    source: Source::BuildId,
                    exe: Some(exe.clone()),
                });
            }
        }
    }
    found.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.id.cmp(&b.id)));
    Ok(found)
}

/// The step splitting a window into at most [`DETECTION_STEPS`] whole seconds.
fn detection_step(window: &Window) -> i64 {
    ((window.to_ms - window.from_ms) / DETECTION_STEPS / 1000 + 1) * 1000
}

/// Per group of `labels` values: the start of the first step with samples, and the step.
fn first_seen<const N: usize>(
    reader: &Reader,
    window: &Window,
    labels: &[&str; N],
) -> Result<Vec<([String; N], i64, i64)>, QueryError> {
    // Steps on multiples of their length: the agent's intervals are aligned so too, and at
    // the last (one-second) level a step is never cut by an interval's start.
    let step_ms = detection_step(window);
    let aligned = window.with_range(window.from_ms.div_euclid(step_ms) * step_ms, window.to_ms)?;
    let group_by = labels.map(str::to_owned);
    let set = reader.series(&aligned, step_ms, ProfileType::Wall, &group_by)?;
    Ok(set
        .series
        .iter()
        .filter_map(|s| {
            let first = s.values.iter().position(|&v| v > 0.0)?;
            let values = labels.map(|l| s.labels.get(l).cloned().unwrap_or_default());
            Some((values, set.timestamps[first], step_ms))
        })
        .collect())
}

/// A build's first sample to the second: narrows the step it was first seen in until the
/// steps are seconds.
fn refine(
    reader: &Reader,
    window: &Window,
    exe: &str,
    build_id: &str,
    mut first: i64,
) -> Result<i64, QueryError> {
    let selector = Selector {
        matchers: [
            window.selector.matchers.clone(),
            vec![
                Matcher::equal("exe", exe),
                Matcher::equal("build_id", build_id),
            ],
        ]
        .concat(),
    };
    let mut step = detection_step(window);
    while step > 1000 {
        let narrow = Window::new(selector.clone(), first, (first + step).min(window.to_ms))?;
        let Some((_, at, next)) = first_seen(reader, &narrow, &[])?.into_iter().next() else {
            break;
        };
        (first, step) = (at, next);
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_numbered_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        assert!(marked(dir.path()).unwrap().is_empty());
        let a = mark(dir.path(), "api", "v1", 1_000).unwrap();
        let b = mark(dir.path(), "api", "v2", 2_000).unwrap();
        assert_eq!((a.id.as_str(), b.id.as_str()), ("1", "2"));
        assert_eq!(marked(dir.path()).unwrap(), vec![a, b]);
    }

    /// An append cut by a crash is skipped by readers and closed by the next marker; a line
    /// damaged in the middle of the file is an error naming it.
    #[test]
    fn torn_and_corrupt_lines() {
        let dir = tempfile::tempdir().unwrap();
        let a = mark(dir.path(), "api", "v1", 1_000).unwrap();
        let path = dir.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"id":"2","serv"#).unwrap();
        assert_eq!(marked(dir.path()).unwrap(), vec![a.clone()]);
        let b = mark(dir.path(), "db", "v7", 3_000).unwrap();
        assert_eq!(b.id, "2");
        assert_eq!(marked(dir.path()).unwrap(), vec![a, b]);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("api", "api\"x", 1)).unwrap();
        let err = marked(dir.path()).unwrap_err().to_string();
        assert!(err.contains(":1: not a deploy marker"), "{err}");
    }

    /// A store where `/srv/api` runs build `aaa` for 30 s (a: 100 samples, b: 50 per 10 s),
    /// then build `bbb` with `b` twice as costly; `/srv/db` keeps one build throughout.
    fn store_with_a_deploy() -> tempfile::TempDir {
        use crate::Frame;
        use crate::store::{Aggregator, SampleKind, SeriesLabels, Store};
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open(dir.path()).unwrap();
        let period_ns = 10_000_000;
        for interval in 0..6_i64 {
            let mut agg = Aggregator::new(10_000, period_ns);
            let start = interval * 10_000;
            let api = SeriesLabels {
                pid: 7,
                comm: "api".into(),
                exe: "/srv/api".into(),
                build_id: (if interval < 3 { "aaa" } else { "bbb" }).into(),
                service: "api".into(),
                ..Default::default()
            };
            let db = SeriesLabels {
                pid: 9,
                comm: "db".into(),
                exe: "/srv/db".into(),
                build_id: "ddd".into(),
                service: "db".into(),
                ..Default::default()
            };
            let b = if interval < 3 { 50 } else { 100 };
            // `b`'s time is spent in a function inlined into it.
            let mut black_box = Frame::user("black_box", "/x");
            black_box.inlined = true;
            for (series, function, count) in [(&api, "a", 100), (&api, "b", b), (&db, "q", 80)] {
                let mut frames = vec![Frame::user("main", "/x"), Frame::user(function, "/x")];
                if function == "b" {
                    frames.push(black_box.clone());
                }
                agg.add(start, series, &frames, SampleKind::Cpu, count);
            }
            store.append(&agg.flush().unwrap()).unwrap();
        }
        dir
    }

    /// The new build id is found as a deploy at its first interval, and `regressions` across it
    /// names the function that grew, with the right rates.
    #[test]
    fn build_id_change_is_a_deploy_and_regressions_find_the_change() {
        use crate::graph::{Pair, Pattern, Ranking};
        use crate::query::Selector;
        let dir = store_with_a_deploy();
        let reader = Reader::new(dir.path());
        let all = Window::new(Selector::default(), 0, 60_000).unwrap();
        let found = detect(&reader, &all).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let d = &found[0];
        assert_eq!(
            (d.id.as_str(), d.service.as_str(), d.at_ms, d.source),
            ("build:bbb", "api", 30_000, Source::BuildId)
        );
        assert_eq!(d.exe.as_deref(), Some("/srv/api"));
        // Nothing changed within the first half.
        let first = Window::new(Selector::default(), 0, 30_000).unwrap();
        assert!(detect(&reader, &first).unwrap().is_empty());

        // Its windows: 30 s either side, the deploy's service selected.
        let now = 100_000;
        let a = around(
            &reader,
            Some("build:bbb"),
            None,
            30_000,
            &Selector::default(),
            now,
        );
        let a = a.unwrap();
        assert_eq!((a.before.from_ms, a.before.to_ms), (0, 30_000));
        assert_eq!((a.after.from_ms, a.after.to_ms), (30_000, 60_000));
        let api = Selector::parse(r#"{service="api"}"#).unwrap();
        assert_eq!(a.after.selector, api);
        let pair = Pair::in_store(&reader, &a.before, &a.after).unwrap();
        let (s, ranking) = pair.regressions();
        let dispersion = pair.dispersion.clone();
        // On-CPU rows only: no critical path to rank by.
        assert_eq!(ranking, Ranking::CpuDelta);
        // Three 10-s intervals a window: their counts give each function's dispersion.
        assert_eq!(
            (dispersion.model(), dispersion.degrees_of_freedom()),
            ("intervals", 4)
        );
        assert_eq!(s[0].function, "b");
        assert!(s[0].regression && s[0].pattern == Pattern::Grew, "{s:?}");
        // 50 samples of 10 ms per 10 s: 0.05 s/s, then 0.1.
        assert!((s[0].before - 0.05).abs() < 1e-9 && (s[0].after - 0.1).abs() < 1e-9);
        assert!(
            s.iter()
                .all(|x| x.function != "q" && x.function != "black_box"),
            "{s:?}"
        );
        assert!(s.iter().skip(1).all(|x| !x.regression), "{s:?}");
        // The same once the log is compacted into Parquet parts.
        crate::store::Store::open(dir.path())
            .unwrap()
            .0
            .close()
            .unwrap();
        let compacted = Reader::new(dir.path());
        assert!(std::fs::read_dir(dir.path().join("data")).unwrap().count() > 0);
        assert_eq!(
            {
                let p = Pair::in_store(&compacted, &a.before, &a.after).unwrap();
                (p.regressions(), p.dispersion)
            },
            ((s, ranking), dispersion)
        );

        // A marked deploy by id; an unknown id, a moment too recent, and both at once fail.
        let m = mark(dir.path(), "db", "v2", 40_000).unwrap();
        let a = around(&reader, Some(&m.id), None, 5_000, &Selector::default(), now).unwrap();
        assert_eq!((a.at_ms, a.before.from_ms), (40_000, 35_000));
        assert_eq!(a.deploy, Some(m));
        let any = Selector::default();
        let err = |r: Result<Around, AroundError>| r.unwrap_err().to_string();
        assert!(err(around(&reader, Some("9"), None, 1, &any, now)).contains("no deploy \"9\""));
        assert!(err(around(&reader, None, Some(now), 1, &any, now)).starts_with("at: "));
        assert!(err(around(&reader, Some("1"), Some(1), 1, &any, now)).starts_with("at: "));
        assert!(err(around(&reader, None, None, 1, &any, now)).starts_with("deploy: "));
    }

    #[test]
    fn invalid_markers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (service, version, field) in [("", "v1", "service"), ("api", " ", "version")] {
            let err = mark(dir.path(), service, version, 0).unwrap_err();
            assert!(
                matches!(err, DeployError::Invalid { field: f, .. } if f == field),
                "{err}"
            );
        }
        assert!(mark(dir.path(), "api\n", "v1", 0).is_err());
        assert!(mark(dir.path(), &"x".repeat(300), "v1", 0).is_err());
        assert!(marked(dir.path()).unwrap().is_empty());
    }
}
