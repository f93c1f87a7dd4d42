//! critpath's analysis side: the profile model and its exports (pprof, folded, speedscope);
//! later the store, queries, graphs and the impact model.
//!
//! ```
//! use critpath_analyzer::{Frame, Profile, SampleLabels, ValueType, export};
//!
//! let mut profile = Profile::new(vec![ValueType::new("samples", "count")]);
//! let stack = [Frame::user("main", "/bin/app"), Frame::user("hot", "/bin/app")];
//! profile.add(stack.iter().cloned(), &[3], SampleLabels::new(42, 42, "app"));
//! assert_eq!(export::folded::to_string(&profile, 0), "app;main;hot 3\n");
//! ```
#![cfg_attr(test, allow(clippy::undocumented_unsafe_blocks))]

pub mod dataset;
pub mod deploys;
pub mod eval;
pub mod export;
#[cfg(test)]
mod fuzz;
pub mod graph;
pub mod model;
pub mod offcpu;
mod profile;
pub mod query;
pub mod store;
mod types;

pub use profile::{Profile, ProfileSample, SampleLabels, StackId, ValueType};
pub use types::{Frame, FrameId, FrameKind, KERNEL_MODULE, TRUNCATED, module_basename};
