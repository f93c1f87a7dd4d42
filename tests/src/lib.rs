//! End-to-end tests for critpath and the workload programs they profile, each with known behaviour.
//!
//! The workloads live in `src/bin/`; [`workload`] holds what they share:
//!
//! ```no_run
//! use critpath_tests::workload::{print_summary, spin, Args, Deadline};
//!
//! let args = Args::parse(&[("threads", 4)], &["red-herring"]);
//! let deadline = Deadline::after(args.duration);
//! let mut rounds = 0;
//! while !deadline.passed() {
//!     spin(1_000);
//!     rounds += 1;
//! }
//! print_summary("example", &[("rounds", rounds)]);
//! ```

pub mod workload;
