//! Exports of a [`Profile`](crate::Profile) in the formats other tools read.
//!
//! - [`pprof`]: gzipped `profile.proto`, for `go tool pprof` and compatible readers;
//! - [`folded`]: Brendan Gregg's collapsed stacks, for flamegraph.pl and inferno;
//! - [`speedscope`]: speedscope's JSON file format;
//! - [`flamebearer`]: Pyroscope's flame graph JSON, of a [`FlameTree`](crate::query::FlameTree)
//!   or a [`DiffTree`](crate::query::DiffTree).

use std::str::FromStr;

pub mod flamebearer;
pub mod folded;
pub mod pprof;
pub mod speedscope;

/// An export format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Gzipped pprof protobuf.
    Pprof,
    /// Collapsed stacks.
    Folded,
    /// speedscope JSON.
    Speedscope,
}

impl Format {
    /// Every format, for help texts.
    pub const ALL: [Format; 3] = [Self::Pprof, Self::Folded, Self::Speedscope];

    /// The format's name as the CLI and API spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pprof => "pprof",
            Self::Folded => "folded",
            Self::Speedscope => "speedscope",
        }
    }

    /// The usual file name extension.
    pub const fn extension(self) -> &'static str {
        match self {
            Self::Pprof => "pb.gz",
            Self::Folded => "folded",
            Self::Speedscope => "speedscope.json",
        }
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!("unknown format {s:?}; expected one of pprof, folded, speedscope")
            })
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
