//! `critpath model train` and `critpath eval --model`.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use critpath_analyzer::eval::Scores;
use critpath_analyzer::model::{
    self, CONFIG, HELD_OUT, LEARNED, ModelConfig, ModelEvaluation, Shape, TrainConfig, WEIGHTS,
};

use crate::cli::TrainArgs;
use crate::explain::{elasticity_rows, print_metrics, write_json};

/// `critpath model train`.
pub fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let samples = model::read_samples(&args.dataset)
        .with_context(|| format!("reading the dataset in {}", args.dataset.display()))?;
    anyhow::ensure!(
        !samples.is_empty(),
        "{}: no programs in nodes.parquet",
        args.dataset.display()
    );
    let config = |kind| {
        let mut c = TrainConfig::new(Shape::of(kind), args.seed);
        if let Some(e) = args.epochs {
            c.epochs = e;
        }
        c
    };
    let mut learned: Vec<(&str, Scores)> = Vec::new();
    for (name, kind) in LEARNED {
        let c = config(kind);
        let mut last = String::new();
        let scores = model::held_out(&samples, &c, &mut |family, epoch, loss| {
            if family != last || epoch + 1 == c.epochs || epoch % 10 == 0 {
                eprint!(
                    "\rcritpath: {name}: held out {family:<10} epoch {:>3}/{} loss {loss:.4} ({:.0} s)   ",
                    epoch + 1,
                    c.epochs,
                    started.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
                last = family.to_owned();
            }
        })?;
        eprintln!();
        learned.push((name, scores));
    }
    let refs: Vec<(&str, &Scores)> = learned.iter().map(|(n, s)| (*n, s)).collect();

    // The shipped weights: every program.
    let c = config(model::Kind::Transformer);
    let all: Vec<&model::Sample> = samples.iter().collect();
    let net = model::train::train(&all, &c, &mut |epoch, loss| {
        eprint!(
            "\rcritpath: model: all programs epoch {:>3}/{} loss {loss:.4} ({:.0} s)   ",
            epoch + 1,
            c.epochs,
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    })?;
    eprintln!();
    let mut shipped = Scores::new();
    model::train::scores(&net, &all, &mut shipped)?;
    let evaluation = model::evaluate(&args.dataset, &refs, Some(&shipped))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    net.save(&args.out.join(WEIGHTS))?;
    let name = args
        .out
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy().into_owned());
    let model_config = ModelConfig {
        name,
        parameters: net.parameter_count(),
        programs: samples.len(),
        command: format!(
            "critpath model train --dataset {} --out {} --eval {} --seed {}{}",
            args.dataset.display(),
            args.out.display(),
            args.eval.display(),
            args.seed,
            args.epochs
                .map_or(String::new(), |e| format!(" --epochs {e}"))
        ),
        train: c,
        ship: evaluation.ship.clone(),
    };
    std::fs::write(
        args.out.join(CONFIG),
        serde_json::to_string_pretty(&model_config)? + "\n",
    )?;
    model::write_held_out(&args.out.join(HELD_OUT), &refs)?;
    write_json(&args.eval, &evaluation)?;
    std::fs::write(
        args.out.join("MODEL_CARD.md"),
        model_card(&model_config, &evaluation),
    )?;
    print_eval(&evaluation);
    eprintln!(
        "critpath: wrote {} ({} parameters) and {} in {:.0} s",
        args.out.display(),
        model_config.parameters,
        args.eval.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `critpath eval --model DIR`: the held-out predictions of a model directory judged again.
pub fn eval(dataset: &Path, dir: &Path, json: Option<&Path>) -> anyhow::Result<()> {
    let path = dir.join(HELD_OUT);
    let held_out = model::read_held_out(&path)?;
    let refs: Vec<(&str, &Scores)> = held_out.iter().map(|(n, s)| (n.as_str(), s)).collect();
    // The committed weights, run again on the dataset's graphs.
    let shipped = model::Model::load(dir)?;
    let samples = model::read_samples(dataset)?;
    let all: Vec<&model::Sample> = samples.iter().collect();
    let in_sample = shipped.scores(&all)?;
    let evaluation = model::evaluate(dataset, &refs, Some(&in_sample))?;
    if let Some(path) = json {
        write_json(path, &evaluation)?;
    }
    print_eval(&evaluation);
    Ok(())
}

fn print_eval(e: &ModelEvaluation) {
    println!("held-out families: ranking work functions by measured elasticity");
    let noise = e.noise_ceiling.iter().flat_map(|(family, targets)| {
        targets
            .iter()
            .map(move |(target, m)| ("noise_ceiling", family.as_str(), target.as_str(), m))
    });
    let seen = e.in_sample.iter().flatten().flat_map(|(family, targets)| {
        targets
            .iter()
            .map(move |(target, m)| ("shipped (seen)", family.as_str(), target.as_str(), m))
    });
    print_metrics(elasticity_rows(&e.elasticity).chain(noise).chain(seen));
    let s = &e.ship;
    println!(
        "\nship rule ({}): model {:.3}, best baseline {} {:.3}, difference 95% CI [{:+.3}, {:+.3}], noise ceiling {:.3}: {}",
        s.metric,
        s.model,
        s.best_baseline,
        s.baseline,
        s.difference_ci95.0,
        s.difference_ci95.1,
        s.noise_ceiling,
        if s.default {
            "the model is the default ranking"
        } else {
            "the graph method stays the default"
        }
    );
}

/// The model card: what the model is, how it was made, and how it did, from the run itself.
fn model_card(c: &ModelConfig, e: &ModelEvaluation) -> String {
    let mut out = String::new();
    let m = |method: &str, family: &str, target: &str| {
        e.elasticity
            .get(method)
            .and_then(|f| f.get(family))
            .and_then(|t| t.get(target))
            .cloned()
            .unwrap_or_default()
    };
    out += &format!(
        "# Model card: {}\n\n\
         Generated by `{}` (this file, the weights, `config.json`, `heldout.parquet` and \
         `models/eval/model.json` come from that one command).\n\n\
         ## What it is\n\
         A graph transformer over the functions of one profiled window: {} encoder layers of width {}, {} heads, \
         feed-forward width {}; {} trainable parameters. Nodes are the window's functions (at most 128, the labelled \
         ones and then the heaviest by on-CPU and off-CPU inclusive time plus critical-path blame); each has 32 inputs: \
         the 16 evidence features of `FunctionEvidence::FEATURES` (on-CPU self and total time, off-CPU time by cause, \
         wall time, waits it ended and waited in, blame, critical-path share, knot time, threads, utilization), each as a \
         share of the window's largest value and as a log-scaled share. Attention gets a learned bias per head for \
         each relation between two nodes (calls, either way; wakeups, either way; same thread) and for their hop \
         distance (0, 1, 2, 3, 4+). The head predicts each node's elasticity of p50 latency, p99 latency and \
         throughput (negated: larger is more impact).\n\n\
         ## Data and training\n\
         `models/data`: {} synthetic programs in 5 template families (lock_bound, pool_bound, fan_out, io_bound, \
         mixed; seeds 1–30), each measured by the ground-truth harness (elasticities with 95% intervals, 0 inside \
         the noise floor) and recorded by critpath. Loss: ListNet (softmax cross-entropy against the measured \
         elasticities at temperature {}) plus {} × squared error. AdamW, learning rate {}, weight decay {}, {} epochs of \
         one step per program, seed {}; CPU, deterministic.\n\n\
         ## Evaluation (held-out families)\n\
         Each family is predicted by networks trained on the other four only (leave-one-family-out). Baselines: \
         every graph method of `critpath eval`, and an MLP (2 × 64) and a linear model trained the same way on the \
         same inputs. The noise ceiling is the agreement of a simulated second measurement with the first \
         ({} draws, each elasticity re-drawn with the spread of the difference of two measurements).\n\n",
        c.name,
        c.command,
        c.train.shape.layers,
        c.train.shape.d_model,
        c.train.shape.heads,
        c.train.shape.d_ff,
        c.parameters,
        c.programs,
        c.train.temperature,
        c.train.regression_weight,
        c.train.learning_rate,
        c.train.weight_decay,
        c.train.epochs,
        c.train.seed,
        model::NOISE_DRAWS,
    );
    out += "| method | family | p50 top-1 | p50 NDCG@5 | p99 NDCG@5 | throughput top-1 | throughput NDCG@5 |\n|---|---|---|---|---|---|---|\n";
    let families = [
        "all",
        "fan_out",
        "io_bound",
        "lock_bound",
        "mixed",
        "pool_bound",
    ];
    let mut methods: Vec<&String> = e.elasticity.keys().collect();
    methods.sort_by_key(|k| (k.as_str() != "model", k.as_str()));
    for method in methods {
        for family in families {
            let (p50, p99, tp) = (
                m(method, family, "p50"),
                m(method, family, "p99"),
                m(method, family, "throughput"),
            );
            out += &format!(
                "| {method} | {family} | {:.2} | {:.3} | {:.3} | {:.2} | {:.3} |\n",
                p50.top1, p50.ndcg5, p99.ndcg5, tp.top1, tp.ndcg5
            );
        }
    }
    for family in families {
        let n = |t: &str| {
            e.noise_ceiling
                .get(family)
                .and_then(|x| x.get(t))
                .cloned()
                .unwrap_or_default()
        };
        out += &format!(
            "| noise ceiling | {family} | {:.2} | {:.3} | {:.3} | {:.2} | {:.3} |\n",
            n("p50").top1,
            n("p50").ndcg5,
            n("p99").ndcg5,
            n("throughput").top1,
            n("throughput").ndcg5
        );
    }
    let s = &e.ship;
    out += &format!(
        "\n## Ship rule\n\
         The model is the default ranking of `explain` only if, on held-out families, its {} beats the best other \
         method's by more than the measurement noise: the 95% paired-bootstrap interval of the mean per-program \
         difference must lie above zero. Model {:.3}, best other method `{}` {:.3}; difference 95% CI [{:+.3}, {:+.3}] \
         (top-1: [{:+.3}, {:+.3}]); noise ceiling {:.3}. **Decision: {}.**\n\n\
         ## Known limits\n\
         - The programs are synthetic and small (a handful of work functions each), made of the patterns the graph \
         methods model; five families are few to generalize from, and holding one out leaves 120 programs.\n\
         - Labels come from 2-s runs with one round: small effects are labelled 0, and p99 labels are noisy.\n\
         - One window at a time: regressions (before/after pairs) are not modelled; `regressions` keeps its \
         statistical test.\n\
         - Inputs are normalized within the window, so absolute load is not seen.\n\
         - Out of the training distribution it can be wrong where the graph method is right: on the mutex \
         workload whose critical section sleeps with the lock held (2 ms of CPU, then 4 ms asleep) beside two nice-19 \
         CPU burners, it ranked a burner first in 4 of 12 runs (the critical path: 12 of 12 right); with a \
         CPU-only critical section it ranked the critical section first.\n",
        s.metric,
        s.model,
        s.best_baseline,
        s.baseline,
        s.difference_ci95.0,
        s.difference_ci95.1,
        s.top1_difference_ci95.0,
        s.top1_difference_ci95.1,
        s.noise_ceiling,
        if s.default {
            "the model is the default"
        } else {
            "the graph method stays the default; the model is available as `--method model`"
        }
    );
    out
}
