//! The ground-truth harness's quick mode, end to end on real runs: what it measures must match
//! what the programs were built to do.

use std::time::Duration;

use critpath_synth::groundtruth::{FunctionTruth, Protocol, Truth, measure};
use critpath_synth::{Family, Spec};

/// One program at a time: two at once on this 2-core machine would measure each other.
static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Measures only the functions of `roles`, in two rounds: the time a full one-round measure of
/// the program would take, with intervals √2 narrower.
fn quick(family: Family, seed: u64, roles: &[&str]) -> (Spec, Truth) {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let spec = Spec::generate(family, seed);
    let protocol = Protocol {
        utilisation: 0.4,
        delta: 0.3,
        run: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
        rounds: 2,
        roles: roles.iter().map(|r| r.to_string()).collect(),
    };
    let truth = measure(&spec, &protocol, |line| eprintln!("{family:?}: {line}"));
    (spec, truth)
}

fn role<'a>(truth: &'a Truth, role: &str) -> &'a FunctionTruth {
    truth.functions.iter().find(|f| f.role == role).unwrap()
}

/// On a lock-bound program the lock holder's critical section has an elasticity clearly above
/// zero, while the housekeeping thread, burning more CPU, has about none.
#[test]
fn lock_holder_matters_red_herring_does_not() {
    let (spec, truth) = quick(Family::LockBound, 1, &["lock_holder", "housekeeping"]);
    let holder = role(&truth, "lock_holder");
    let herring = role(&truth, "housekeeping");
    eprintln!("{holder:?}\n{herring:?}\nnoise {:?}", truth.noise);
    assert!(
        holder.p50.raw - holder.p50.ci95 > 0.3,
        "lock holder: {holder:?}"
    );
    // About none: its interval reaches below a third of the holder's, and it lies clearly under
    // the holder's (one round of a 2-s run disturbed by the machine moved the housekeeping's p50
    // elasticity to 0.36 ± 0.19 once, against the holder's 0.93 ± 0.19).
    assert!(
        herring.p50.raw.abs() - herring.p50.ci95 < holder.p50.raw / 3.0
            && herring.p50.raw < holder.p50.raw - holder.p50.ci95,
        "housekeeping: {herring:?} vs {holder:?}"
    );
    let cpu = |name: &str| truth.baselines[0].cpu_seconds[name];
    let (h, r) = (
        &spec.role("lock_holder").unwrap().name,
        &spec.role("housekeeping").unwrap().name,
    );
    assert!(
        cpu(r) > cpu(h),
        "the red herring burns more CPU ({} s) than the holder ({} s)",
        cpu(r),
        cpu(h)
    );
}

/// On a pool-bound program, speeding up (or slowing) the stage with spare workers changes
/// throughput little, while the one-worker stage sets it (elasticity about −1).
#[test]
fn only_the_bottleneck_stage_matters() {
    let (_, truth) = quick(Family::PoolBound, 1, &["bottleneck_stage", "spare_stage"]);
    let bottleneck = role(&truth, "bottleneck_stage");
    let spare = role(&truth, "spare_stage");
    eprintln!("{bottleneck:?}\n{spare:?}\nnoise {:?}", truth.noise);
    assert!(
        bottleneck.throughput.raw + bottleneck.throughput.ci95 < -0.5,
        "bottleneck: {bottleneck:?}"
    );
    // On 2 cores the spare stage's extra work takes some CPU from the bottleneck (measured:
    // −0.01 to −0.10), a fraction of what the bottleneck's own does.
    assert!(
        spare.throughput.raw.abs() < bottleneck.throughput.raw.abs() / 4.0,
        "spare stage: {spare:?} vs {bottleneck:?}"
    );
    assert!(
        bottleneck.p50.raw > spare.p50.raw,
        "{bottleneck:?} vs {spare:?}"
    );
}

/// A stall injected into the lock holder at a known moment slows exactly the requests that
/// arrive after it (the mechanism behind the deploy and slow-window cases).
#[test]
fn a_stall_slows_what_follows() {
    use critpath_synth::cases::{Case, CaseKind, WindowLatency};
    use critpath_synth::{Load, RunConfig, run};

    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let spec = Spec::generate(Family::LockBound, 1);
    let case = Case::choose(&spec, CaseKind::Stall).expect("a lock-bound program has a stall");
    assert_eq!(case.role, "lock_holder");
    let capacity = run(
        &spec,
        &RunConfig {
            load: Load::Closed,
            duration: Duration::from_millis(1500),
            warmup: Duration::from_millis(500),
            scales: Default::default(),
            seed: 1,
            changes: Vec::new(),
        },
    )
    .summary()
    .throughput;
    // Low enough that the stalled holder (1.4–1.6× slower) stays below saturation.
    let outcome = run(
        &spec,
        &RunConfig {
            load: Load::Rate(0.5 * capacity),
            duration: Duration::from_secs(4),
            warmup: Duration::ZERO,
            scales: Default::default(),
            seed: 2,
            changes: vec![critpath_synth::Change {
                at: Duration::from_secs(2),
                function: case.function.clone(),
                scale: case.scale,
            }],
        },
    );
    let before = WindowLatency::of(&outcome.requests, (0.3, 1.9));
    let after = WindowLatency::of(&outcome.requests, (2.1, 3.7));
    eprintln!("{case:?}\nbefore {before:?}\nafter {after:?}");
    assert!(before.requests > 20 && after.requests > 20);
    assert!(
        after.p50_us > 1.25 * before.p50_us,
        "p50 {} µs before, {} µs after a ×{} stall",
        before.p50_us,
        after.p50_us,
        case.scale
    );
}
