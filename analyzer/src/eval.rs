//! Judging ranking methods against measured truth: on every program of the dataset
//! ([`crate::dataset`]), how well does each method's ranking of the work functions match their
//! measured elasticities, and does it find the function injected by a deploy or a stall?
//!
//! Metrics, per program then averaged per template family:
//! - **top-1 / top-3**: the function with the largest measured elasticity (for throughput, the
//!   most negative) is the method's first / among its first three. Programs where every
//!   elasticity is inside the noise floor have no bottleneck to find and are left out.
//! - **NDCG@5**: the method's first five, gains the measured elasticities (negative ones
//!   count 0).
//! - **Kendall τ-b** between the method's scores and the elasticities (programs with at least
//!   three functions and not all elasticities equal).
//!
//! For cases: top-1 / top-3 of the injected function, ranked on the window after the change
//! (and, for the `_delta` methods, by the change against the window before it: times per
//! second of window, shares as they are), and by `critpath regressions` itself. For the
//! method `regressions_significant`, `top1` is the share of cases where `regressions` calls
//! the injected function's change a regression (a significant growth) and `top3` the share
//! where it calls any other work function's change one (a false-positive rate, among work
//! functions).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::dataset::{DatasetError, Table};

/// What is predicted.
pub const TARGETS: [&str; 3] = ["p50", "p99", "throughput"];

/// Methods on a single window, as the dataset column each ranks by.
pub const WINDOW_METHODS: [(&str, &str); 5] = [
    ("cpu", "cpu_self_s"),
    ("wall", "wall_s"),
    ("critical_path", "critical_path_share"),
    ("knot", "knot_s"),
    ("utilization", "utilization"),
];

/// Mean metrics over a set of programs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Programs with a bottleneck (top-k, NDCG).
    pub programs: usize,
    /// Share of them whose bottleneck was ranked first.
    pub top1: f64,
    /// Share ranked in the first three.
    pub top3: f64,
    /// Mean NDCG@5.
    pub ndcg5: f64,
    /// Programs with a defined τ.
    pub tau_programs: usize,
    /// Mean Kendall τ-b.
    pub kendall_tau: f64,
}

#[derive(Default)]
struct Sums {
    programs: usize,
    top1: f64,
    top3: f64,
    ndcg5: f64,
    tau_programs: usize,
    tau: f64,
}

impl Sums {
    fn metrics(&self) -> Metrics {
        let n = self.programs.max(1) as f64;
        Metrics {
            programs: self.programs,
            top1: self.top1 / n,
            top3: self.top3 / n,
            ndcg5: self.ndcg5 / n,
            tau_programs: self.tau_programs,
            kendall_tau: self.tau / self.tau_programs.max(1) as f64,
        }
    }
}

/// Indices ordered by score, highest first; ties by name, so an uninformative method gets no
/// lucky ordering.
fn order(scores: &[f64], names: &[&str]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(names[a].cmp(names[b])));
    idx
}

/// NDCG@k of a ranking against non-negative gains.
pub fn ndcg(order: &[usize], gains: &[f64], k: usize) -> f64 {
    let dcg = |ix: &mut dyn Iterator<Item = f64>| {
        ix.take(k)
            .enumerate()
            .map(|(i, g)| g / ((i + 2) as f64).log2())
            .sum::<f64>()
    };
    let mut ideal: Vec<f64> = gains.to_vec();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let best = dcg(&mut ideal.into_iter());
    if best <= 0.0 {
        return 0.0;
    }
    dcg(&mut order.iter().map(|&i| gains[i])) / best
}

/// Kendall's τ-b of two equally long sequences; `None` when either is constant.
pub fn kendall_tau(x: &[f64], y: &[f64]) -> Option<f64> {
    let (mut concordant, mut discordant, mut ties_x, mut ties_y) = (0.0f64, 0.0, 0.0, 0.0);
    for i in 0..x.len() {
        for j in i + 1..x.len() {
            let (dx, dy) = (x[i] - x[j], y[i] - y[j]);
            match (dx == 0.0, dy == 0.0) {
                (true, true) => {}
                (true, false) => ties_x += 1.0,
                (false, true) => ties_y += 1.0,
                _ if (dx > 0.0) == (dy > 0.0) => concordant += 1.0,
                _ => discordant += 1.0,
            }
        }
    }
    let denominator =
        ((concordant + discordant + ties_x) * (concordant + discordant + ties_y)).sqrt();
    (denominator > 0.0
        && concordant + discordant + ties_x > 0.0
        && concordant + discordant + ties_y > 0.0)
        .then(|| (concordant - discordant) / denominator)
}

/// Rows of a table grouped by a key column, in order of first appearance.
fn groups(table: &Table, keys: &[&str]) -> Result<Vec<Vec<usize>>, String> {
    let cols: Vec<&[String]> = keys
        .iter()
        .map(|k| table.str(k))
        .collect::<Result<_, _>>()?;
    let mut index: BTreeMap<Vec<&str>, usize> = BTreeMap::new();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for row in 0..table.len() {
        let key: Vec<&str> = cols.iter().map(|c| c[row].as_str()).collect();
        let g = *index.entry(key).or_insert_with(|| {
            out.push(Vec::new());
            out.len() - 1
        });
        out[g].push(row);
    }
    Ok(out)
}

/// A learned method's scores per (program, work function `w17`): p50, p99 and throughput
/// impact, larger meaning more (throughput's elasticity negated). Functions without a score
/// (not in the recording) rank last.
pub type Scores = BTreeMap<(String, String), [f64; 3]>;

/// One program's metrics for one method and target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProgramMetrics {
    /// The program.
    pub program: String,
    /// Its family.
    pub family: String,
    /// The method.
    pub method: String,
    /// The target.
    pub target: String,
    /// Top-1 and NDCG@5, when the program has a bottleneck.
    pub top1_ndcg5: Option<(f64, f64)>,
}

/// Per method, per family (and `all`), per target.
pub type Report = BTreeMap<String, BTreeMap<String, BTreeMap<String, Metrics>>>;

/// Per method, per case kind, per family (and `all`).
pub type CaseReport = BTreeMap<String, BTreeMap<String, BTreeMap<String, Metrics>>>;

/// The whole evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Evaluation {
    /// Ranking work functions by measured elasticity, per method, family and target.
    pub elasticity: Report,
    /// Finding the injected function, per method, case kind (`deploy`, `stall`) and family.
    pub cases: CaseReport,
}

/// Evaluates every graph method on a packed dataset directory.
///
/// # Errors
///
/// When the tables cannot be read or lack columns.
pub fn evaluate(dataset: &Path) -> Result<Evaluation, DatasetError> {
    let bad = |path: &Path| {
        let path = path.to_owned();
        move |message: String| DatasetError::Invalid {
            path: path.clone(),
            message,
        }
    };
    let path = dataset.join("functions.parquet");
    let functions = Table::read(&path)?;
    let mut evaluation = Evaluation {
        elasticity: elasticity(&functions, &[]).map_err(bad(&path))?.0,
        ..Evaluation::default()
    };
    let path = dataset.join("cases.parquet");
    if path.exists() {
        let cases = Table::read(&path)?;
        evaluation.cases = injected(&cases, &[]).map_err(bad(&path))?.0;
    }
    Ok(evaluation)
}

/// The elasticity report of the graph methods and of the learned methods `extra` on the
/// functions table `t`, with every program's metrics.
///
/// # Errors
/// A column is missing.
pub fn elasticity(
    t: &Table,
    extra: &[(&str, &Scores)],
) -> Result<(Report, Vec<ProgramMetrics>), String> {
    let names = t.str("function")?;
    let families = t.str("family")?;
    let programs = t.str("program")?;
    type Score<'a> = Box<dyn Fn(usize, usize) -> f64 + 'a>;
    let mut methods: Vec<(String, Score)> = Vec::new();
    for (method, column) in WINDOW_METHODS {
        let col = t.num(column)?;
        methods.push((method.to_owned(), Box::new(move |r, _| col[r])));
    }
    for &(method, scores) in extra {
        methods.push((
            method.to_owned(),
            Box::new(move |r, target| {
                scores
                    .get(&(programs[r].clone(), names[r].clone()))
                    .map_or(-1e9, |s| s[target])
            }),
        ));
    }
    let mut sums: BTreeMap<(String, String, String), Sums> = BTreeMap::new();
    let mut per_program = Vec::new();
    for rows in groups(t, &["program"])? {
        let family = families[rows[0]].as_str();
        let fnames: Vec<&str> = rows.iter().map(|&r| names[r].as_str()).collect();
        for (method, score) in &methods {
            for (ti, target) in TARGETS.into_iter().enumerate() {
                let scores: Vec<f64> = rows.iter().map(|&r| score(r, ti)).collect();
                let ranking = order(&scores, &fnames);
                let sign = if target == "throughput" { -1.0 } else { 1.0 };
                let label = t.num(target)?;
                let signed: Vec<f64> = rows.iter().map(|&r| sign * label[r]).collect();
                let gains: Vec<f64> = signed.iter().map(|&v| v.max(0.0)).collect();
                let best = gains.iter().copied().fold(0.0, f64::max);
                let is_best = |i: usize| gains[i] == best;
                per_program.push(ProgramMetrics {
                    program: programs[rows[0]].clone(),
                    family: family.to_owned(),
                    method: method.clone(),
                    target: target.to_owned(),
                    top1_ndcg5: (best > 0.0).then(|| {
                        (
                            f64::from(u8::from(is_best(ranking[0]))),
                            ndcg(&ranking, &gains, 5),
                        )
                    }),
                });
                for fam in [family, "all"] {
                    let s = sums
                        .entry((method.clone(), fam.to_owned(), target.to_owned()))
                        .or_default();
                    if best > 0.0 {
                        s.programs += 1;
                        s.top1 += f64::from(u8::from(is_best(ranking[0])));
                        s.top3 += f64::from(u8::from(ranking.iter().take(3).any(|&i| is_best(i))));
                        s.ndcg5 += ndcg(&ranking, &gains, 5);
                    }
                    if let Some(tau) = kendall_tau(&scores, &signed).filter(|_| rows.len() >= 3) {
                        s.tau_programs += 1;
                        s.tau += tau;
                    }
                }
            }
        }
    }
    let mut report = Report::new();
    for ((method, family, target), s) in sums {
        report
            .entry(method)
            .or_default()
            .entry(family)
            .or_default()
            .insert(target, s.metrics());
    }
    Ok((report, per_program))
}

/// The noise ceiling: how well a second, independent measurement of the same programs would
/// rank their functions against the first. Each draw re-measures every elasticity as the
/// measured value plus normal noise of the difference of two measurements (standard deviation
/// √2 × the 95% half-width / 1.96; the half-widths are in `functions.parquet`) and scores it as
/// a method; the metrics are averaged over `draws` draws from `seed`.
///
/// # Errors
/// A column is missing.
pub fn noise_ceiling(
    t: &Table,
    draws: usize,
    seed: u64,
) -> Result<BTreeMap<String, BTreeMap<String, Metrics>>, String> {
    let (programs, names) = (t.str("program")?, t.str("function")?);
    let columns: Vec<(&[f64], &[f64], f64)> = [("p50", 1.0), ("p99", 1.0), ("throughput", -1.0)]
        .into_iter()
        .map(|(c, sign)| Ok((t.num(c)?, t.num(&format!("{c}_ci"))?, sign)))
        .collect::<Result<_, String>>()?;
    let mut rng = crate::model::Rng::new(seed);
    let mut sums: BTreeMap<String, BTreeMap<String, Metrics>> = BTreeMap::new();
    for _ in 0..draws {
        let mut scores = Scores::new();
        for r in 0..t.len() {
            let s = std::array::from_fn(|k| {
                let (value, ci, sign) = columns[k];
                sign * (value[r] + rng.normal() * std::f64::consts::SQRT_2 * ci[r] / 1.96)
            });
            scores.insert((programs[r].clone(), names[r].clone()), s);
        }
        let (report, _) = elasticity(t, &[("remeasured", &scores)])?;
        for (family, targets) in &report["remeasured"] {
            for (target, m) in targets {
                let a = sums
                    .entry(family.clone())
                    .or_default()
                    .entry(target.clone())
                    .or_default();
                a.programs = m.programs;
                a.tau_programs = m.tau_programs;
                a.top1 += m.top1 / draws as f64;
                a.top3 += m.top3 / draws as f64;
                a.ndcg5 += m.ndcg5 / draws as f64;
                a.kendall_tau += m.kendall_tau / draws as f64;
            }
        }
    }
    Ok(sums)
}

/// One case's result for one method: whether the injected function was ranked first.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseMetrics {
    /// `<program>/<deploy|stall>`.
    pub case: String,
    /// The method.
    pub method: String,
    /// 1 when the injected function came first, else 0.
    pub top1: f64,
}

/// The case report of the graph methods, of `critpath regressions` and of the learned methods
/// `extra` (scores per (`<program>/<kind>`, work function), the p50 score ranking) on the cases
/// table `t`, with every case's top-1.
///
/// # Errors
/// A column is missing.
pub fn injected(
    t: &Table,
    extra: &[(&str, &Scores)],
) -> Result<(CaseReport, Vec<CaseMetrics>), String> {
    let names = t.str("function")?;
    let families = t.str("family")?;
    let programs = t.str("program")?;
    let kinds = t.str("kind")?;
    let injected = t.num("injected")?;
    let (before_s, after_s) = (t.num("before_seconds")?, t.num("after_seconds")?);
    type Score<'a> = Box<dyn Fn(usize) -> Result<f64, String> + 'a>;
    let mut methods: Vec<(String, Score)> = Vec::new();
    for (method, column) in WINDOW_METHODS {
        let after = t.num(&format!("after_{column}"))?;
        methods.push((method.to_owned(), Box::new(move |r| Ok(after[r]))));
        let before = t.num(&format!("before_{column}"))?;
        // Times are compared per second of window; shares as they are.
        let per_second = column.ends_with("_s");
        methods.push((
            format!("{method}_delta"),
            Box::new(move |r| {
                Ok(if per_second {
                    after[r] / after_s[r].max(1e-9) - before[r] / before_s[r].max(1e-9)
                } else {
                    after[r] - before[r]
                })
            }),
        ));
    }
    // `critpath regressions` itself: its own order (regressions first).
    let rank = t.num("regressions_rank")?;
    methods.push(("regressions".to_owned(), Box::new(move |r| Ok(-rank[r]))));
    for &(method, scores) in extra {
        methods.push((
            method.to_owned(),
            Box::new(move |r| {
                let case = format!("{}/{}", programs[r], kinds[r]);
                Ok(scores.get(&(case, names[r].clone())).map_or(-1e9, |s| s[0]))
            }),
        ));
    }
    let significant = t.num("regressions_significant")?;
    let mut per_case = Vec::new();
    let mut sums: BTreeMap<(String, String, String), Sums> = BTreeMap::new();
    for rows in groups(t, &["program", "kind"])? {
        let (family, kind) = (families[rows[0]].as_str(), kinds[rows[0]].as_str());
        let fnames: Vec<&str> = rows.iter().map(|&r| names[r].as_str()).collect();
        let Some(target) = rows.iter().position(|&r| injected[r] > 0.5) else {
            continue;
        };
        for (method, score) in &methods {
            let scores: Vec<f64> = rows.iter().map(|&r| score(r)).collect::<Result<_, _>>()?;
            let ranking = order(&scores, &fnames);
            let gains: Vec<f64> = (0..rows.len())
                .map(|i| f64::from(u8::from(i == target)))
                .collect();
            per_case.push(CaseMetrics {
                case: format!("{}/{kind}", programs[rows[0]]),
                method: method.clone(),
                top1: f64::from(u8::from(ranking[0] == target)),
            });
            for fam in [family, "all"] {
                let s = sums
                    .entry((method.clone(), kind.to_owned(), fam.to_owned()))
                    .or_default();
                s.programs += 1;
                s.top1 += f64::from(u8::from(ranking[0] == target));
                s.top3 += f64::from(u8::from(ranking.iter().take(3).any(|&i| i == target)));
                s.ndcg5 += ndcg(&ranking, &gains, 5);
            }
        }
        // How often `regressions` calls the injected change a regression, and anything else.
        let flagged = |pick: &dyn Fn(usize) -> bool| {
            f64::from(u8::from(
                rows.iter()
                    .enumerate()
                    .any(|(i, &r)| pick(i) && significant[r] > 0.5),
            ))
        };
        for fam in [family, "all"] {
            let s = sums
                .entry((
                    "regressions_significant".to_owned(),
                    kind.to_owned(),
                    fam.to_owned(),
                ))
                .or_default();
            s.programs += 1;
            // top1: the injected function flagged; top3: any other work function flagged.
            s.top1 += flagged(&|i| i == target);
            s.top3 += flagged(&|i| i != target);
        }
    }
    let mut report = CaseReport::new();
    for ((method, kind, family), s) in sums {
        report
            .entry(method)
            .or_default()
            .entry(kind)
            .or_default()
            .insert(family, s.metrics());
    }
    Ok((report, per_case))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_metrics() {
        assert_eq!(ndcg(&[0, 1, 2], &[3.0, 2.0, 1.0], 5), 1.0);
        let worst = ndcg(&[2, 1, 0], &[3.0, 2.0, 0.0], 5);
        let expected = (2.0 / 3f64.log2() + 3.0 / 2.0) / (3.0 + 2.0 / 3f64.log2());
        assert!((worst - expected).abs() < 1e-12, "{worst} vs {expected}");
        assert_eq!(ndcg(&[0, 1], &[0.0, 0.0], 5), 0.0);
        assert_eq!(
            kendall_tau(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]),
            Some(1.0)
        );
        assert_eq!(kendall_tau(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(kendall_tau(&[1.0, 1.0, 1.0], &[3.0, 2.0, 1.0]), None);
        // Ties are broken by name: an all-zero method does not find the bottleneck by luck.
        assert_eq!(order(&[0.0, 0.0, 0.0], &["c", "a", "b"]), vec![1, 2, 0]);
    }

    /// Two programs, one method that always finds the bottleneck (critical_path) and one that
    /// follows CPU time to the red herring.
    #[test]
    fn elasticity_report() {
        let mut t = Table::default();
        let row = |t: &mut Table, program: &str, f: &str, p50: f64, cpu: f64, cp: f64| {
            let mut numbers = vec![("p50", p50), ("p99", p50), ("throughput", -p50)];
            numbers.extend([
                ("cpu_self_s", cpu),
                ("wall_s", cpu),
                ("critical_path_share", cp),
                ("knot_s", 0.0),
                ("utilization", cp),
            ]);
            t.push(
                &[
                    ("program", program.to_owned()),
                    ("family", "lock_bound".to_owned()),
                    ("function", f.to_owned()),
                ],
                &numbers,
            );
        };
        for p in ["a", "b"] {
            row(&mut t, p, "holder", 1.0, 1.0, 0.6);
            row(&mut t, p, "parse", 0.2, 0.5, 0.2);
            row(&mut t, p, "housekeeping", 0.0, 3.0, 0.0);
        }
        let r = elasticity(&t, &[]).unwrap().0;
        let cp = &r["critical_path"]["lock_bound"]["p50"];
        assert_eq!(
            (cp.programs, cp.top1, cp.top3, cp.ndcg5),
            (2, 1.0, 1.0, 1.0)
        );
        assert_eq!(cp.kendall_tau, 1.0);
        let cpu = &r["cpu"]["all"]["throughput"];
        assert_eq!((cpu.top1, cpu.top3), (0.0, 1.0));
        assert!(cpu.ndcg5 < 1.0 && cpu.kendall_tau < 1.0);
    }
}
