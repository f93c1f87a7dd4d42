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

impl Format {
    /// Encodes a profile in this format; folded and speedscope output carry the values of
    /// sample type `index`, speedscope names the profile `name`.
    pub fn encode(self, profile: &crate::Profile, index: usize, name: &str) -> Vec<u8> {
        match self {
            Self::Pprof => pprof::encode(profile),
            Self::Folded => folded::to_string(profile, index).into_bytes(),
            Self::Speedscope => speedscope::to_string(profile, index, name).into_bytes(),
        }
    }

    /// The HTTP content type of the encoding.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Pprof => "application/octet-stream",
            Self::Folded => "text/plain; charset=utf-8",
            Self::Speedscope => "application/json",
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
