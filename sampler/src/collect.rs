//! Draining the sampler into symbolized observations: what `record` and the agent consume.

use std::time::{Duration, Instant};

use critpath_analyzer::Frame;
use critpath_analyzer::offcpu::OffCpuWait;
use critpath_common::{OffCpuEvent, SampleHeader};

use crate::{Error, Event, Sampler, Symbolizer, offcpu, sys};

/// One symbolized observation.
#[derive(Clone, Debug)]
pub enum Observation {
    /// An on-CPU sample.
    OnCpu {
        /// When it was taken, Unix ns.
        time_unix_ns: i64,
        /// Process id.
        pid: u32,
        /// Thread id.
        tid: u32,
        /// Thread name.
        comm: String,
        /// The stack, root first.
        frames: Vec<Frame>,
    },
    /// A finished off-CPU wait.
    OffCpu(OffCpuWait),
    /// A call of a probed function (a latency probe) returned.
    Call {
        /// Index of the probe in [`crate::SamplerConfig::probes`].
        probe: u32,
        /// Process id.
        pid: u32,
        /// Thread id.
        tid: u32,
        /// Entry, Unix ns.
        start_unix_ns: i64,
        /// Entry to return, ns.
        duration_ns: u64,
    },
}

/// Turns the sampler's raw events into [`Observation`]s: symbolizes stacks, resolves off-CPU
/// stack ids, and re-reads a process's mappings when it execs.
pub struct Collector {
    symbolizer: Symbolizer,
    /// Off-CPU events waiting for their stack ids (which need the sampler, busy while polling).
    pending: Vec<OffCpuEvent>,
    unix_offset_ns: i64,
    /// When processes not seen for [`FORGET_IDLE`] were last forgotten.
    forgot_at: Instant,
}

/// Processes whose samples stopped this long ago are forgotten by the symbolizer (their
/// mappings are read again if they come back).
const FORGET_IDLE: Duration = Duration::from_secs(600);

impl Collector {
    /// A collector symbolizing with `symbolizer`.
    pub fn new(symbolizer: Symbolizer) -> Self {
        Self {
            symbolizer,
            pending: Vec::new(),
            unix_offset_ns: sys::monotonic_to_unix_offset_ns(),
            forgot_at: Instant::now(),
        }
    }

    /// The symbolizer, for its statistics.
    pub fn symbolizer(&self) -> &Symbolizer {
        &self.symbolizer
    }

    /// Waits up to `timeout` for events and hands every resulting observation to `f`, in order
    /// (off-CPU waits of a poll after its on-CPU samples). Returns the number of events read.
    ///
    /// # Errors
    /// As [`Sampler::poll`].
    pub fn poll(
        &mut self,
        sampler: &mut Sampler,
        timeout: Duration,
        mut f: impl FnMut(Observation),
    ) -> Result<usize, Error> {
        let n = sampler.poll(timeout, |event| match event {
            Event::OnCpu(event) => {
                let frames = self.symbolizer.symbolize_event(event);
                f(on_cpu(&event.header, self.unix_offset_ns, frames));
            }
            Event::OnCpuStack(event) => {
                let frames = self.symbolizer.symbolize_stack_event(event);
                f(on_cpu(&event.header, self.unix_offset_ns, frames));
            }
            Event::OffCpu(event) => {
                // Read the mappings now, while the processes surely live.
                self.symbolizer.observe_process(event.pid);
                self.symbolizer.observe_process(event.waker_pid);
                self.pending.push(*event);
            }
            Event::Exec { pid } => self.symbolizer.process_exec(pid),
            Event::Call(call) => f(Observation::Call {
                probe: call.probe,
                pid: call.pid,
                tid: call.tid,
                start_unix_ns: call.start_ns as i64 + self.unix_offset_ns,
                duration_ns: call.end_ns.saturating_sub(call.start_ns),
            }),
        })?;
        if self.forgot_at.elapsed() >= FORGET_IDLE / 10 {
            self.forgot_at = Instant::now();
            let forgotten = self.symbolizer.forget_idle(FORGET_IDLE);
            if forgotten > 0 {
                log::debug!("forgot {forgotten} processes idle for {FORGET_IDLE:?}");
            }
        }
        for event in std::mem::take(&mut self.pending) {
            f(Observation::OffCpu(offcpu::resolve(
                sampler,
                &mut self.symbolizer,
                &event,
                self.unix_offset_ns,
            )));
        }
        Ok(n)
    }
}

/// The observation of an on-CPU sample with its symbolized stack.
fn on_cpu(header: &SampleHeader, unix_offset_ns: i64, frames: Vec<Frame>) -> Observation {
    Observation::OnCpu {
        time_unix_ns: header.time_ns as i64 + unix_offset_ns,
        pid: header.pid,
        tid: header.tid,
        comm: String::from_utf8_lossy(header.comm_bytes()).into_owned(),
        frames,
    }
}
