//! End-to-end tests: the `critpath` binary against the workload programs, eBPF loaded for real.
//!
//! Kernel tests need root (or CAP_BPF + CAP_PERFMON). Without it they print why and pass, except
//! under `CI=true`, where a skip is a failure.

mod suite;
