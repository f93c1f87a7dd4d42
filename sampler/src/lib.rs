//! critpath's user-space sampler: loads the eBPF programs, drains their events and symbolizes
//! stacks into [`critpath_analyzer::Frame`]s.
//!
//! ```no_run
//! use std::time::Duration;
//! use critpath_sampler::{Event, Sampler, SamplerConfig, Symbolizer};
//!
//! let mut sampler = Sampler::start(SamplerConfig::default())?; // needs root
//! let mut symbolizer = Symbolizer::new();
//! sampler.poll(Duration::from_millis(100), |event| {
//!     if let Event::OnCpu(sample) = event {
//!         let frames = symbolizer.symbolize_event(sample);
//!         println!("{} {:?}", sample.header.pid, frames.last().map(|f| &f.function));
//!     }
//! })?;
//! # Ok::<(), critpath_sampler::Error>(())
//! ```

mod bpf;
mod collect;
mod error;
pub mod offcpu;
mod probe;
mod symbolize;
pub mod sys;
mod unwind;

pub use bpf::{Counters, Event, OffCpuConfig, Sampler, SamplerConfig, Target, Unwinding};
pub use collect::{Collector, Observation, POLL_TIMEOUT};
pub use critpath_common::{
    CallEvent, Counter, EventKind, OffCpuEvent, SampleEvent, SampleHeader, StackSampleEvent,
};
pub use error::Error;
pub use probe::{Probe, resolve as resolve_probe};
pub use symbolize::{SymbolizeStats, Symbolizer, UnwindCounts};
pub use unwind::{OwnedUserStack, UserStack};
