//! The sampler's errors.

use std::io;

/// What can go wrong loading, attaching or draining the sampler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process lacks the privileges to load BPF programs or open perf events.
    #[error(
        "{what}: permission denied; critpath needs root, or CAP_BPF + CAP_PERFMON (+ CAP_SYS_ADMIN \
         to mount tracefs): run it with sudo or grant the capabilities to the binary"
    )]
    Permission {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The eBPF object could not be loaded.
    #[error("loading the eBPF programs failed (the kernel needs BPF ring buffers, 5.8 or later)")]
    Load(#[source] aya::EbpfError),
    /// A program could not be loaded or attached.
    #[error("cannot {action} eBPF program {program}")]
    Program {
        /// `load` or `attach`.
        action: &'static str,
        /// The program's name.
        program: String,
        /// The underlying error.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("eBPF map operation failed")]
    Map(#[source] aya::maps::MapError),
    /// tracefs is not mounted and could not be mounted.
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed; mount it with \
         `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    Tracefs(#[source] io::Error),
    /// A tracepoint's format file is missing or lacks a field.
    #[error("tracepoint {tracepoint}: {reason}")]
    TracepointFormat {
        /// `category:event`.
        tracepoint: String,
        /// What is wrong.
        reason: String,
    },
    /// Bad settings.
    #[error("{0}")]
    Config(String),
    /// A latency probe cannot be placed.
    #[error("probe {probe}: {reason}")]
    Probe {
        /// `BINARY:FUNCTION`.
        probe: String,
        /// Why.
        reason: String,
    },
    /// An OS call failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn load(err: aya::EbpfError) -> Self {
        if is_permission(&err) {
            return Self::Permission {
                what: "loading the eBPF programs".into(),
                source: Box::new(err),
            };
        }
        Self::Load(err)
    }

    pub(crate) fn map(err: aya::maps::MapError) -> Self {
        Self::Map(err)
    }

    pub(crate) fn program(
        action: &'static str,
        program: &str,
    ) -> impl FnOnce(aya::programs::ProgramError) -> Self {
        let program = program.to_owned();
        move |source| {
            if is_permission(&source) {
                Self::Permission {
                    what: format!("{action} eBPF program {program}"),
                    source: Box::new(source),
                }
            } else {
                Self::Program {
                    action,
                    program,
                    source,
                }
            }
        }
    }
}

/// Whether an error chain bottoms out in EPERM/EACCES.
fn is_permission(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return true;
        }
        cur = e.source();
    }
    false
}
