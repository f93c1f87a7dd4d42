//! The query layer's building blocks: label selectors and time expressions, shared by the CLI
//! and (later) the HTTP API.

mod selector;
mod time;

pub use selector::{MatchOp, Matcher, Selector, SelectorError};
pub use time::{TimeError, parse_duration_ms, parse_time_ms};
