//! The query layer: label selectors and time expressions, and the standard queries over a store
//! (series, profile trees, diffs, labels), shared by the CLI and the HTTP API.

mod reader;
mod selector;
mod time;
mod tree;

pub use reader::{MAX_POINTS, QueryError, Reader, Series, SeriesSet, Window};
pub use selector::{MatchOp, Matcher, Selector, SelectorError};
pub use time::{MAX_TIME_MS, TimeError, parse_duration_ms, parse_time_ms};
pub use tree::{
    DiffNode, DiffTree, FlameTree, FunctionDiff, FunctionStat, Node, NodeId, ROOT_NAME,
};
