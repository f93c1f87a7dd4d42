//! critpath's user-space sampler: loads the eBPF programs, drains their events and symbolizes
//! stacks into [`critpath_analyzer::Frame`]s.
//!
//! ```no_run
//! use std::time::Duration;
//! use critpath_sampler::{Sampler, SamplerConfig, Symbolizer};
//!
//! let mut sampler = Sampler::start(SamplerConfig::default())?; // needs root
//! let mut symbolizer = Symbolizer::new();
//! sampler.poll(Duration::from_millis(100), |event| {
//!     let mut frames = Vec::new();
//!     symbolizer.symbolize_user(event.pid, event.user_frames(), &mut frames);
//!     println!("{} {:?}", event.pid, frames.first().map(|f| &f.function));
//! })?;
//! # Ok::<(), critpath_sampler::Error>(())
//! ```

mod bpf;
mod error;
mod symbolize;
pub mod sys;

pub use bpf::{Counters, Sampler, SamplerConfig, Target};
pub use critpath_common::{Counter, EventKind, SampleEvent};
pub use error::Error;
pub use symbolize::{SymbolizeStats, Symbolizer};
