//! Pyroscope's flamebearer JSON (version 1), which Pyroscope's and Grafana's flame graph
//! components draw.
//!
//! Nodes are listed level by level; each node is `[offset, total, self, name]` (`single`) or
//! `[offset, total, self, offset, total, self, name]` for the baseline and the comparison
//! (`double`), where `offset` is the node's start minus the end of the node before it on the
//! same level (zero for adjacent nodes) and `name` indexes `names`. Children start at their
//! parent's start, in the tree's order; the parent's self value is the remainder on the right.

use serde_json::{Value, json};

use crate::query::{DiffNode, DiffTree, FlameTree, NodeId};
use crate::store::ProfileType;

/// Ticks per second of a profile type's values, flamebearer's `sampleRate`.
fn sample_rate(profile_type: ProfileType, cpu_frequency_hz: u64) -> u64 {
    match profile_type {
        ProfileType::Cpu => cpu_frequency_hz,
        ProfileType::OffCpu | ProfileType::Wall => 1_000_000_000,
    }
}

/// Names interned in first-seen order.
#[derive(Default)]
struct Names {
    list: Vec<String>,
    index: std::collections::HashMap<String, usize>,
}

impl Names {
    fn id(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.list.push(name.to_owned());
        self.index.insert(name.to_owned(), self.list.len() - 1);
        self.list.len() - 1
    }
}

/// The `single` flamebearer of a tree. `cpu_frequency_hz` gives CPU sample counts their time.
pub fn single(tree: &FlameTree, cpu_frequency_hz: u64) -> Value {
    let mut names = Names::default();
    let mut levels: Vec<Vec<i64>> = Vec::new();
    let mut level_end: Vec<i64> = Vec::new();
    let mut max_self = 0;
    // (node, depth, start)
    let mut stack: Vec<(NodeId, usize, i64)> = vec![(0, 0, 0)];
    while let Some((id, depth, x)) = stack.pop() {
        let node = &tree.nodes[id as usize];
        if levels.len() <= depth {
            levels.push(Vec::new());
            level_end.push(0);
        }
        let name = names.id(tree.name(node)) as i64;
        levels[depth].extend([x - level_end[depth], node.total, node.self_value, name]);
        level_end[depth] = x + node.total;
        max_self = max_self.max(node.self_value);
        // Push children in reverse so the first child is visited first (left to right).
        let mut child_x = x;
        let starts: Vec<(NodeId, i64)> = node
            .children
            .iter()
            .map(|&c| {
                let start = child_x;
                child_x += tree.nodes[c as usize].total;
                (c, start)
            })
            .collect();
        for (c, start) in starts.into_iter().rev() {
            stack.push((c, depth + 1, start));
        }
    }
    json!({
        "version": 1,
        "flamebearer": {
            "names": names.list,
            "levels": levels,
            "numTicks": tree.total(),
            "maxSelf": max_self,
        },
        "metadata": {
            "format": "single",
            "spyName": "critpath",
            "sampleRate": sample_rate(tree.profile_type, cpu_frequency_hz),
            "units": "samples",
            "name": tree.profile_type.as_str(),
        },
    })
}

/// The `double` (differential) flamebearer of a diff: left is the baseline, right the
/// comparison; `leftTicks`/`rightTicks` are their totals.
pub fn double(diff: &DiffTree, cpu_frequency_hz: u64) -> Value {
    let mut names = Names::default();
    let mut levels: Vec<Vec<i64>> = Vec::new();
    let mut ends: Vec<(i64, i64)> = Vec::new();
    let mut max_self = 0;
    let mut stack: Vec<(&DiffNode, usize, i64, i64)> = vec![(&diff.root, 0, 0, 0)];
    while let Some((node, depth, lx, rx)) = stack.pop() {
        if levels.len() <= depth {
            levels.push(Vec::new());
            ends.push((0, 0));
        }
        let name = names.id(&node.name) as i64;
        let (le, re) = ends[depth];
        levels[depth].extend([
            lx - le,
            node.base_total,
            node.base_self,
            rx - re,
            node.comparison_total,
            node.comparison_self,
            name,
        ]);
        ends[depth] = (lx + node.base_total, rx + node.comparison_total);
        max_self = max_self.max(node.base_self).max(node.comparison_self);
        let (mut cl, mut cr) = (lx, rx);
        let starts: Vec<(&DiffNode, i64, i64)> = node
            .children
            .iter()
            .map(|c| {
                let s = (c, cl, cr);
                cl += c.base_total;
                cr += c.comparison_total;
                s
            })
            .collect();
        for (c, l, r) in starts.into_iter().rev() {
            stack.push((c, depth + 1, l, r));
        }
    }
    json!({
        "version": 1,
        "flamebearer": {
            "names": names.list,
            "levels": levels,
            "numTicks": diff.base_total + diff.comparison_total,
            "maxSelf": max_self,
        },
        "metadata": {
            "format": "double",
            "spyName": "critpath",
            "sampleRate": sample_rate(diff.profile_type, cpu_frequency_hz),
            "units": "samples",
            "name": diff.profile_type.as_str(),
        },
        "leftTicks": diff.base_total,
        "rightTicks": diff.comparison_total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(paths: &[(&[&str], i64)]) -> FlameTree {
        FlameTree::from_paths(ProfileType::Cpu, paths.iter().map(|(p, v)| (*p, *v)))
    }

    /// Levels are delta-encoded quads; children start at the parent's start.
    #[test]
    fn single_levels() {
        let t = tree(&[(&["a", "b"], 3), (&["a", "c"], 1), (&["a"], 2), (&["d"], 4)]);
        let v = single(&t, 19);
        let fb = &v["flamebearer"];
        assert_eq!(fb["names"], json!(["total", "a", "b", "c", "d"]));
        assert_eq!(fb["numTicks"], 10);
        assert_eq!(fb["maxSelf"], 4);
        assert_eq!(fb["levels"][0], json!([0, 10, 0, 0]));
        // a (6) at 0, d (4) at 6.
        assert_eq!(fb["levels"][1], json!([0, 6, 2, 1, 0, 4, 4, 4]));
        // b (3) at 0, c (1) at 3; a's self (2) fills 4..6.
        assert_eq!(fb["levels"][2], json!([0, 3, 3, 2, 0, 1, 1, 3]));
        assert_eq!(v["metadata"]["format"], "single");
    }

    /// Double levels carry both windows with their own offsets.
    #[test]
    fn double_levels() {
        let b = tree(&[(&["a"], 2), (&["b"], 2)]);
        let c = tree(&[(&["a"], 1), (&["b"], 5)]);
        let d = DiffTree::new(&b, &c);
        let v = double(&d, 19);
        let fb = &v["flamebearer"];
        assert_eq!(v["leftTicks"], 4);
        assert_eq!(v["rightTicks"], 6);
        // b grew (2/4 → 5/6), so it comes first.
        assert_eq!(fb["names"], json!(["total", "b", "a"]));
        assert_eq!(
            fb["levels"][1],
            json!([0, 2, 2, 0, 5, 5, 1, 0, 2, 2, 0, 1, 1, 2])
        );
    }
}
