//! The ground-truth harness's quick mode, end to end on real runs: what it measures must match
//! what the programs were built to do.

use std::time::Duration;

use critpath_synth::groundtruth::{FunctionTruth, Protocol, Truth, measure};
use critpath_synth::{Family, Spec};

/// One program at a time: two at once on this 2-core machine would measure each other.
static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn quick(family: Family, seed: u64) -> (Spec, Truth) {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let spec = Spec::generate(family, seed);
    let protocol = Protocol {
        utilisation: 0.4,
        delta: 0.3,
        run: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
        rounds: 1,
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
    let (spec, truth) = quick(Family::LockBound, 1);
    let holder = role(&truth, "lock_holder");
    let herring = role(&truth, "housekeeping");
    eprintln!("{holder:?}\n{herring:?}\nnoise {:?}", truth.noise);
    assert!(
        holder.p50.raw - holder.p50.ci95 > 0.3,
        "lock holder: {holder:?}"
    );
    assert!(
        herring.p50.raw.abs() < holder.p50.raw / 3.0,
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
/// throughput not at all, while the one-worker stage sets it (elasticity about −1).
#[test]
fn only_the_bottleneck_stage_matters() {
    let (_, truth) = quick(Family::PoolBound, 1);
    let bottleneck = role(&truth, "bottleneck_stage");
    let spare = role(&truth, "spare_stage");
    eprintln!("{bottleneck:?}\n{spare:?}\nnoise {:?}", truth.noise);
    assert!(
        bottleneck.throughput.raw + bottleneck.throughput.ci95 < -0.5,
        "bottleneck: {bottleneck:?}"
    );
    assert!(
        spare.throughput.raw.abs() < 0.15,
        "spare stage: {spare:?} vs {bottleneck:?}"
    );
    assert!(
        bottleneck.p50.raw > spare.p50.raw,
        "{bottleneck:?} vs {spare:?}"
    );
}
