//! Synthetic request-serving programs with known structure, for measuring ground truth: which
//! functions really drive request latency and throughput.
//!
//! A program ([`Spec`]) is generated from a seed and a template [`Family`]: named,
//! never-inlined work functions (each role its own symbol, `critpath_synth::work::wNN`) put
//! together from building blocks — CPU work on the request thread, critical sections under a
//! lock every request needs, handoffs to worker pools of a given size, fan-out to several
//! workers waiting for the slowest, blocking reads from a pipe answered by a device thread
//! after a fixed service time, sleeps — plus background housekeeping threads that burn CPU off
//! every request's path (red herrings). The families:
//!
//! | family | shape | what drives latency |
//! |---|---|---|
//! | `lock_bound` | parse → lock { holder work } → reply | the lock holder's work (requests queue on the lock) |
//! | `pool_bound` | accept → 1-worker pool { bottleneck } → k-worker pool { spare } | the one-worker stage; the wide stage barely matters |
//! | `fan_out` | split → fan out to a pool { shards } → merge | the slowest shard |
//! | `io_bound` | prepare → device (service time) → decode | the device's service time |
//! | `mixed` | 3–5 random blocks | depends |
//!
//! [`run`] serves requests arriving open-loop (Poisson at a fixed rate) and records each
//! request's arrival, start and end exactly, so latency percentiles and throughput carry no
//! sampling error. Every work function's amount of work can be scaled at run time
//! ([`RunConfig::scales`], `--scale w17=1.2` on the command line): the perturbation knob of the
//! ground-truth harness.

pub mod cases;
pub mod groundtruth;
pub mod runtime;
pub mod spec;
pub mod work;

pub use runtime::{Change, Load, Outcome, Request, RunConfig, Summary, run};
pub use spec::{Family, Spec, Stage};
