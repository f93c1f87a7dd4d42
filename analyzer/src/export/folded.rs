//! Brendan Gregg's collapsed-stack format: one line per distinct stack, `root;...;leaf value`.
//!
//! As `stackcollapse-perf.pl` does, the thread name is the root frame and kernel frames carry a
//! `_[k]` suffix, so flame graph tools colour them apart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::{FrameKind, Profile};

/// Renders value `index` of every sample as collapsed stacks, sorted by stack text.
/// Samples with a zero value are left out.
pub fn to_string(profile: &Profile, index: usize) -> String {
    let mut lines: BTreeMap<String, i64> = BTreeMap::new();
    let mut key = String::new();
    for sample in profile.samples() {
        let value = sample.values[index];
        if value == 0 {
            continue;
        }
        key.clear();
        key.push_str(&sanitize(&sample.labels.comm));
        for &id in profile.stack(sample.stack) {
            let frame = profile.frame(id);
            key.push(';');
            key.push_str(&sanitize(&frame.function));
            if frame.kind == FrameKind::Kernel {
                key.push_str("_[k]");
            }
        }
        *lines.entry(key.clone()).or_default() += value;
    }
    let mut out = String::new();
    for (stack, value) in lines {
        let _ = writeln!(out, "{stack} {value}");
    }
    out
}

/// Frame names may not contain the separators of the format.
fn sanitize(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains([';', '\n']) {
        name.replace([';', '\n'], "_").into()
    } else {
        name.into()
    }
}

/// Parses collapsed stacks into (frames root first, value) pairs.
///
/// # Errors
/// A line without a trailing integer value, naming the line number.
pub fn parse(text: &str) -> Result<Vec<(Vec<String>, i64)>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let (stack, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("line {}: no value after the stack", i + 1))?;
            let value = value
                .parse()
                .map_err(|e| format!("line {}: bad value {value:?}: {e}", i + 1))?;
            Ok((stack.split(';').map(str::to_owned).collect(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frame, SampleLabels, ValueType};

    /// Stacks render root first with the thread name as root, kernel frames suffixed, and parse back.
    #[test]
    fn renders_and_parses() {
        let mut p = Profile::new(vec![ValueType::new("samples", "count")]);
        let labels = SampleLabels::new(7, 7, "app");
        p.add(
            [Frame::user("main", "/a"), Frame::kernel("ksys_write")],
            &[2],
            labels.clone(),
        );
        p.add(
            [Frame::user("main", "/a"), Frame::user("a;b", "/a")],
            &[1],
            labels,
        );
        let text = to_string(&p, 0);
        assert_eq!(text, "app;main;a_b 1\napp;main;ksys_write_[k] 2\n");
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed[1].0, ["app", "main", "ksys_write_[k]"]);
        assert_eq!(parsed.iter().map(|(_, v)| v).sum::<i64>(), 3);
        assert!(parse("no-value-here").unwrap_err().contains("line 1"));
    }
}
