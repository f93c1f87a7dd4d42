//! Merged call trees (what icicle and flame graphs draw) and their differences.
//!
//! A [`FlameTree`] merges stacks by function name along each path: the root is the whole
//! window, its children the services (the `service` label), then each stack from its outermost
//! frame. Every node has a self value (samples whose leaf it is) and a total (self plus all
//! descendants). A [`DiffTree`] holds two such trees over the same paths, a baseline and a
//! comparison, and compares them by their share of each tree's total so that windows of
//! different lengths (or load) compare fairly.

use std::collections::HashMap;

use serde::Serialize;

/// Tree building is hash-heavy and its keys are our own: a fast hasher.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use serde::ser::{SerializeStruct as _, Serializer};

use crate::store::{CallPaths, ProfileType};

/// The root's name.
pub const ROOT_NAME: &str = "total";

/// Index of a node in a tree; the root is 0.
pub type NodeId = u32;

/// One node of a [`FlameTree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Index into [`FlameTree::names`].
    pub name: u32,
    /// Value of samples ending in this node.
    pub self_value: i64,
    /// Self value plus every descendant's.
    pub total: i64,
    /// Children, in insertion order until [`FlameTree::sort`].
    pub children: Vec<NodeId>,
}

/// A merged call tree.
#[derive(Clone, Debug)]
pub struct FlameTree {
    /// What values measure.
    pub profile_type: ProfileType,
    /// Function names (index 0 is the root's).
    pub names: Vec<String>,
    /// Per name: only ever seen inlined into its caller (known for trees read from the store).
    pub inline_only: Vec<bool>,
    /// Nodes (index 0 is the root).
    pub nodes: Vec<Node>,
    /// Nodes left out by [`FlameTree::trim`] (their value stays in their ancestors' totals).
    pub trimmed_nodes: usize,
    name_index: FastMap<String, u32>,
    child_index: FastMap<(NodeId, u32), NodeId>,
}

impl FlameTree {
    /// An empty tree (just the root).
    pub fn new(profile_type: ProfileType) -> Self {
        let mut tree = Self {
            profile_type,
            names: Vec::new(),
            inline_only: Vec::new(),
            nodes: Vec::new(),
            trimmed_nodes: 0,
            name_index: FastMap::default(),
            child_index: FastMap::default(),
        };
        let root = tree.intern(ROOT_NAME);
        tree.nodes.push(Node {
            name: root,
            self_value: 0,
            total: 0,
            children: Vec::new(),
        });
        tree
    }

    /// The tree of an index's call paths given each node's self value, keeping at most
    /// `max_nodes` nodes (0: no limit) whose totals are at least `min_share` of the whole, as
    /// [`FlameTree::trim`] does.
    pub fn from_call_paths(
        profile_type: ProfileType,
        paths: &CallPaths,
        values: &[i64],
        max_nodes: usize,
        min_share: f64,
    ) -> Self {
        let mut totals = values.to_vec();
        // A parent's id is smaller than its children's.
        for id in (1..totals.len()).rev() {
            totals[paths.parent(id as u32) as usize] += totals[id];
        }
        let total = totals.first().copied().unwrap_or(0);
        let min_total = ((total as f64 * min_share).ceil() as i64).max(1);
        let limit = match max_nodes {
            0 => usize::MAX,
            n => n - 1, // the root counts
        };
        let mut nonzero = 0;
        let mut candidates: Vec<i64> = Vec::new();
        for &t in &totals[1.min(totals.len())..] {
            if t != 0 {
                nonzero += 1;
            }
            if t >= min_total {
                candidates.push(t);
            }
        }
        // The smallest total kept: the limit-th largest.
        let threshold = if limit == 0 {
            i64::MAX // the root alone
        } else if candidates.len() > limit {
            kth_largest(&mut candidates, limit)
        } else {
            min_total
        };
        // Larger than the threshold, then ties in id order: a parent always comes before its
        // children (smaller id, total at least as large), so the kept nodes form a tree.
        let above = candidates.iter().filter(|&&t| t > threshold).count();
        let mut ties = limit.saturating_sub(above);

        let mut tree = Self::new(profile_type);
        tree.nodes[0].self_value = values.first().copied().unwrap_or(0);
        tree.nodes[0].total = total;
        let mut remap: FastMap<u32, NodeId> = FastMap::default();
        let mut names: FastMap<u32, u32> = FastMap::default();
        remap.insert(0, 0);
        for id in 1..totals.len() as u32 {
            let t = totals[id as usize];
            if t < threshold || t < min_total {
                continue;
            }
            if t == threshold {
                if ties == 0 {
                    continue;
                }
                ties -= 1;
            }
            let Some(&parent) = remap.get(&paths.parent(id)) else {
                continue; // under a node left out (a tie)
            };
            let name = match names.get(&paths.name_id(id)) {
                Some(&n) => n,
                None => {
                    let n = tree.intern(paths.name(id));
                    tree.inline_only[n as usize] = paths.inline_only(id);
                    names.insert(paths.name_id(id), n);
                    n
                }
            };
            let node = tree.nodes.len() as NodeId;
            tree.nodes.push(Node {
                name,
                self_value: values[id as usize],
                total: t,
                children: Vec::new(),
            });
            tree.nodes[parent as usize].children.push(node);
            tree.child_index.insert((parent, name), node);
            remap.insert(id, node);
        }
        tree.trimmed_nodes = nonzero - (tree.nodes.len() - 1);
        tree.sort();
        tree
    }

    /// A tree from (path, value) pairs, paths outermost first below the root.
    pub fn from_paths<'a>(
        profile_type: ProfileType,
        paths: impl IntoIterator<Item = (&'a [&'a str], i64)>,
    ) -> Self {
        let mut tree = Self::new(profile_type);
        for (path, value) in paths {
            let ids: Vec<u32> = path.iter().map(|n| tree.intern(n)).collect();
            let leaf = tree.node_at(&ids);
            tree.nodes[leaf as usize].self_value += value;
        }
        tree.compute_totals();
        tree.sort();
        tree
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.name_index.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.inline_only.push(false);
        self.name_index.insert(name.to_owned(), id);
        id
    }

    /// The node at a path of name ids below the root, created as needed.
    fn node_at(&mut self, path: &[u32]) -> NodeId {
        let mut node = 0;
        for &name in path {
            node = match self.child_index.get(&(node, name)) {
                Some(&child) => child,
                None => {
                    let child = self.nodes.len() as NodeId;
                    self.nodes.push(Node {
                        name,
                        self_value: 0,
                        total: 0,
                        children: Vec::new(),
                    });
                    self.nodes[node as usize].children.push(child);
                    self.child_index.insert((node, name), child);
                    child
                }
            };
        }
        node
    }

    /// Sets every total from the self values (children always come after their parent).
    fn compute_totals(&mut self) {
        for node in &mut self.nodes {
            node.total = node.self_value;
        }
        for id in (0..self.nodes.len()).rev() {
            let children_total: i64 = self.nodes[id]
                .children
                .iter()
                .map(|&c| self.nodes[c as usize].total)
                .sum();
            self.nodes[id].total += children_total;
        }
    }

    /// Orders every node's children by total, largest first (ties by name), as flame graphs
    /// draw them.
    pub fn sort(&mut self) {
        for id in 0..self.nodes.len() {
            let mut children = std::mem::take(&mut self.nodes[id].children);
            children.sort_by(|&a, &b| {
                let (a, b) = (&self.nodes[a as usize], &self.nodes[b as usize]);
                b.total
                    .cmp(&a.total)
                    .then_with(|| self.names[a.name as usize].cmp(&self.names[b.name as usize]))
            });
            self.nodes[id].children = children;
        }
    }

    /// The root.
    pub fn root(&self) -> &Node {
        &self.nodes[0]
    }

    /// The sum of all values.
    pub fn total(&self) -> i64 {
        self.root().total
    }

    /// A node's name.
    pub fn name(&self, node: &Node) -> &str {
        &self.names[node.name as usize]
    }

    /// The child of `parent` with this name.
    pub fn child(&self, parent: NodeId, name: &str) -> Option<NodeId> {
        let name = *self.name_index.get(name)?;
        self.child_index.get(&(parent, name)).copied()
    }

    /// The node at a path of names below the root.
    pub fn find(&self, path: &[&str]) -> Option<&Node> {
        let mut node = 0;
        for name in path {
            node = self.child(node, name)?;
        }
        Some(&self.nodes[node as usize])
    }

    /// Keeps at most `max_nodes` nodes (0: no limit) and only those whose total is at least
    /// `min_share` of the root's. The kept nodes are those with the largest totals, so they
    /// always form a tree (a parent's total is at least its child's); the value of a dropped
    /// subtree stays in its ancestors' totals, as a gap beside their children.
    pub fn trim(&mut self, max_nodes: usize, min_share: f64) {
        let min_total = (self.total() as f64 * min_share).ceil() as i64;
        // Breadth-first ids keep parents before children among equal totals.
        let mut order: Vec<(NodeId, usize)> = Vec::with_capacity(self.nodes.len());
        let mut queue = std::collections::VecDeque::from([(0 as NodeId, 0usize)]);
        while let Some((id, depth)) = queue.pop_front() {
            order.push((id, depth));
            for &c in &self.nodes[id as usize].children {
                queue.push_back((c, depth + 1));
            }
        }
        let mut ranked: Vec<usize> = (0..order.len()).collect();
        ranked.sort_by(|&a, &b| {
            let (na, nb) = (
                &self.nodes[order[a].0 as usize],
                &self.nodes[order[b].0 as usize],
            );
            nb.total.cmp(&na.total).then(a.cmp(&b))
        });
        let limit = if max_nodes == 0 {
            usize::MAX
        } else {
            max_nodes
        };
        let mut keep = vec![false; self.nodes.len()];
        keep[0] = true;
        let mut kept = 1;
        for &r in &ranked {
            let id = order[r].0 as usize;
            if id == 0 {
                continue;
            }
            if kept >= limit || self.nodes[id].total < min_total.max(1) {
                break;
            }
            keep[id] = true;
            kept += 1;
        }
        // Rebuild with only kept nodes (a kept node's parent is always kept).
        let mut remap: Vec<Option<NodeId>> = vec![None; self.nodes.len()];
        let old = std::mem::take(&mut self.nodes);
        self.child_index.clear();
        let mut stack = vec![(0 as NodeId, None::<NodeId>)];
        while let Some((id, parent)) = stack.pop() {
            let node = &old[id as usize];
            let new_id = self.nodes.len() as NodeId;
            remap[id as usize] = Some(new_id);
            self.nodes.push(Node {
                children: Vec::new(),
                ..node.clone()
            });
            if let Some(p) = parent {
                self.nodes[p as usize].children.push(new_id);
                self.child_index.insert((p, node.name), new_id);
            }
            for &c in node.children.iter().rev() {
                if keep[c as usize] {
                    stack.push((c, Some(new_id)));
                }
            }
        }
        self.trimmed_nodes += old.len() - self.nodes.len();
    }

    /// Per function: the self value and the total (counted once per stack even when the
    /// function recurses), largest total first. The root and the service level are left out.
    pub fn functions(&self) -> Vec<FunctionStat> {
        let mut by_name: HashMap<u32, (i64, i64)> = HashMap::new();
        let mut stack: Vec<(NodeId, Vec<u32>)> = self
            .root()
            .children
            .iter()
            .map(|&c| (c, Vec::new()))
            .collect();
        while let Some((id, on_path)) = stack.pop() {
            let node = &self.nodes[id as usize];
            for &c in &node.children {
                let child = &self.nodes[c as usize];
                let entry = by_name.entry(child.name).or_default();
                entry.0 += child.self_value;
                let mut path = on_path.clone();
                if !on_path.contains(&child.name) {
                    entry.1 += child.total;
                    path.push(child.name);
                }
                stack.push((c, path));
            }
        }
        let mut out: Vec<FunctionStat> = by_name
            .into_iter()
            .map(|(name, (self_value, total))| FunctionStat {
                name: self.names[name as usize].clone(),
                self_value,
                total,
            })
            .collect();
        out.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.name.cmp(&b.name)));
        out
    }

    fn serialize_node<S: Serializer>(&self, id: NodeId, s: S) -> Result<S::Ok, S::Error> {
        struct Children<'a>(&'a FlameTree, &'a [NodeId]);
        impl Serialize for Children<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.1.iter().map(|&c| NodeRef(self.0, c)))
            }
        }
        struct NodeRef<'a>(&'a FlameTree, NodeId);
        impl Serialize for NodeRef<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize_node(self.1, s)
            }
        }
        let node = &self.nodes[id as usize];
        let mut st = s.serialize_struct("Node", 4)?;
        st.serialize_field("name", self.name(node))?;
        st.serialize_field("self", &node.self_value)?;
        st.serialize_field("total", &node.total)?;
        st.serialize_field("children", &Children(self, &node.children))?;
        st.end()
    }
}

/// `{"type", "unit", "total", "trimmed_nodes", "root": {"name", "self", "total", "children": [...]}}`.
impl Serialize for FlameTree {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Root<'a>(&'a FlameTree);
        impl Serialize for Root<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize_node(0, s)
            }
        }
        let mut st = s.serialize_struct("FlameTree", 5)?;
        st.serialize_field("type", &self.profile_type)?;
        st.serialize_field("unit", self.profile_type.unit())?;
        st.serialize_field("total", &self.total())?;
        st.serialize_field("trimmed_nodes", &self.trimmed_nodes)?;
        st.serialize_field("root", &Root(self))?;
        st.end()
    }
}

/// The `k`-th largest of positive values (1 ≤ k ≤ len). Totals repeat a lot (many small
/// counts), so a histogram beats a selection: values below 2^20 are counted, the rare larger
/// ones selected.
fn kth_largest(values: &mut [i64], k: usize) -> i64 {
    const CAP: i64 = 1 << 20;
    let max = values.iter().copied().max().unwrap_or(0).min(CAP - 1);
    let mut counts = vec![0usize; max as usize + 1];
    let mut big = Vec::new();
    for &v in values.iter() {
        if v >= CAP {
            big.push(v);
        } else {
            counts[v.max(0) as usize] += 1;
        }
    }
    if big.len() >= k {
        let (_, &mut v, _) = big.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        return v;
    }
    let mut seen = big.len();
    for v in (0..counts.len()).rev() {
        seen += counts[v];
        if seen >= k {
            return v as i64;
        }
    }
    0
}

/// One function's values in a tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FunctionStat {
    /// The function.
    pub name: String,
    /// Value of samples whose leaf it is.
    #[serde(rename = "self")]
    pub self_value: i64,
    /// Value of samples it is on the stack of.
    pub total: i64,
}

/// One node of a [`DiffTree`]: the same path's values in both windows.
#[derive(Clone, Debug, PartialEq)]
pub struct DiffNode {
    /// The function.
    pub name: String,
    /// Baseline self value.
    pub base_self: i64,
    /// Baseline total.
    pub base_total: i64,
    /// Comparison self value.
    pub comparison_self: i64,
    /// Comparison total.
    pub comparison_total: i64,
    /// Change of this node's share of its tree's total (comparison share − baseline share), in
    /// fractions of the total: positive means grown.
    pub delta_share: f64,
    /// Children, most grown first.
    pub children: Vec<DiffNode>,
}

/// Two trees over the same paths: a baseline window and a comparison window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffTree {
    /// What values measure.
    #[serde(rename = "type")]
    pub profile_type: ProfileType,
    /// Their unit.
    pub unit: &'static str,
    /// Baseline total.
    pub base_total: i64,
    /// Comparison total.
    pub comparison_total: i64,
    /// The merged root.
    pub root: DiffNode,
}

impl DiffTree {
    /// Merges a baseline and a comparison tree; children ordered most grown first (largest
    /// share increase), ties by name.
    pub fn new(base: &FlameTree, comparison: &FlameTree) -> Self {
        let (bt, ct) = (base.total(), comparison.total());
        let share = |v: i64, t: i64| if t == 0 { 0.0 } else { v as f64 / t as f64 };
        fn merge(
            b: Option<(&FlameTree, NodeId)>,
            c: Option<(&FlameTree, NodeId)>,
            share: &dyn Fn(i64, i64) -> f64,
            totals: (i64, i64),
        ) -> DiffNode {
            let bn = b.map(|(t, id)| &t.nodes[id as usize]);
            let cn = c.map(|(t, id)| &t.nodes[id as usize]);
            let name = match (b, bn, c, cn) {
                (Some((t, _)), Some(n), ..) | (_, _, Some((t, _)), Some(n)) => t.name(n),
                _ => ROOT_NAME,
            }
            .to_owned();
            let (base_self, base_total) = bn.map_or((0, 0), |n| (n.self_value, n.total));
            let (comparison_self, comparison_total) =
                cn.map_or((0, 0), |n| (n.self_value, n.total));
            let mut names: Vec<&str> = Vec::new();
            for (tree, node) in [(b.map(|x| x.0), bn), (c.map(|x| x.0), cn)] {
                if let (Some(tree), Some(node)) = (tree, node) {
                    for &child in &node.children {
                        let n = tree.name(&tree.nodes[child as usize]);
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                }
            }
            let mut children: Vec<DiffNode> = names
                .iter()
                .map(|n| {
                    let bc = b.and_then(|(t, id)| t.child(id, n).map(|c| (t, c)));
                    let cc = c.and_then(|(t, id)| t.child(id, n).map(|c| (t, c)));
                    merge(bc, cc, share, totals)
                })
                .collect();
            children.sort_by(|x, y| {
                y.delta_share
                    .total_cmp(&x.delta_share)
                    .then_with(|| x.name.cmp(&y.name))
            });
            DiffNode {
                delta_share: share(comparison_total, totals.1) - share(base_total, totals.0),
                name,
                base_self,
                base_total,
                comparison_self,
                comparison_total,
                children,
            }
        }
        Self {
            profile_type: comparison.profile_type,
            unit: comparison.profile_type.unit(),
            base_total: bt,
            comparison_total: ct,
            root: merge(Some((base, 0)), Some((comparison, 0)), &share, (bt, ct)),
        }
    }

    /// Per function: baseline and comparison self/total values and the change of the
    /// function's total share; most grown first.
    pub fn functions(&self, base: &FlameTree, comparison: &FlameTree) -> Vec<FunctionDiff> {
        let bf: HashMap<String, FunctionStat> = base
            .functions()
            .into_iter()
            .map(|f| (f.name.clone(), f))
            .collect();
        let cf: HashMap<String, FunctionStat> = comparison
            .functions()
            .into_iter()
            .map(|f| (f.name.clone(), f))
            .collect();
        let mut names: Vec<&String> = bf.keys().chain(cf.keys()).collect();
        names.sort();
        names.dedup();
        let share = |v: i64, t: i64| if t == 0 { 0.0 } else { v as f64 / t as f64 };
        let mut out: Vec<FunctionDiff> = names
            .into_iter()
            .map(|name| {
                let b = bf.get(name);
                let c = cf.get(name);
                let base_total = b.map_or(0, |f| f.total);
                let comparison_total = c.map_or(0, |f| f.total);
                FunctionDiff {
                    name: name.clone(),
                    base_self: b.map_or(0, |f| f.self_value),
                    base_total,
                    comparison_self: c.map_or(0, |f| f.self_value),
                    comparison_total,
                    base_share: share(base_total, self.base_total),
                    comparison_share: share(comparison_total, self.comparison_total),
                }
            })
            .collect();
        out.sort_by(|x, y| {
            y.delta_share()
                .total_cmp(&x.delta_share())
                .then_with(|| x.name.cmp(&y.name))
        });
        out
    }
}

impl Serialize for DiffNode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("DiffNode", 7)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("base_self", &self.base_self)?;
        st.serialize_field("base_total", &self.base_total)?;
        st.serialize_field("comparison_self", &self.comparison_self)?;
        st.serialize_field("comparison_total", &self.comparison_total)?;
        st.serialize_field("delta_share", &round6(self.delta_share))?;
        st.serialize_field("children", &self.children)?;
        st.end()
    }
}

/// Rounds to 6 decimals so JSON output is stable across platforms.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// One function's values in both windows of a diff.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FunctionDiff {
    /// The function.
    pub name: String,
    /// Baseline self value.
    pub base_self: i64,
    /// Baseline total.
    pub base_total: i64,
    /// Comparison self value.
    pub comparison_self: i64,
    /// Comparison total.
    pub comparison_total: i64,
    /// Baseline total / baseline tree total.
    pub base_share: f64,
    /// Comparison total / comparison tree total.
    pub comparison_share: f64,
}

impl FunctionDiff {
    /// Comparison share − baseline share.
    pub fn delta_share(&self) -> f64 {
        self.comparison_share - self.base_share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(paths: &[(&[&str], i64)]) -> FlameTree {
        FlameTree::from_paths(ProfileType::Cpu, paths.iter().map(|(p, v)| (*p, *v)))
    }

    /// Paths merge by name; totals include descendants; children are ordered by total.
    #[test]
    fn merges_paths() {
        let t = tree(&[
            (&["svc", "main", "a"], 3),
            (&["svc", "main", "b"], 5),
            (&["svc", "main"], 1),
            (&["svc", "main", "a"], 2),
        ]);
        assert_eq!(t.total(), 11);
        let main = t.find(&["svc", "main"]).unwrap();
        assert_eq!((main.self_value, main.total), (1, 11));
        let names: Vec<&str> = main
            .children
            .iter()
            .map(|&c| t.name(&t.nodes[c as usize]))
            .collect();
        assert_eq!(names, ["a", "b"], "a (5) and b (5) tie: by name");
        assert_eq!(t.find(&["svc", "main", "b"]).unwrap().total, 5);
    }

    /// Recursion counts a function's total once per stack.
    #[test]
    fn functions_count_recursion_once() {
        let t = tree(&[(&["svc", "f", "f", "g"], 4), (&["svc", "f"], 1)]);
        let f = t.functions();
        assert!(
            f.iter().all(|s| s.name != "svc"),
            "services are not functions"
        );
        let get = |n: &str| f.iter().find(|s| s.name == n).unwrap().clone();
        assert_eq!((get("f").self_value, get("f").total), (1, 5));
        assert_eq!((get("g").self_value, get("g").total), (4, 4));
    }

    /// Trimming keeps the largest nodes as a tree and drops those under the minimum share.
    #[test]
    fn trim_keeps_largest() {
        let mut t = tree(&[
            (&["svc", "main", "a", "a1"], 50),
            (&["svc", "main", "b"], 30),
            (&["svc", "main", "c"], 15),
            (&["svc", "main", "d"], 5),
        ]);
        let mut by_count = t.clone();
        by_count.trim(5, 0.0); // root, svc, main, a, a1 (50) ... b (30) left out
        assert_eq!(by_count.nodes.len(), 5);
        assert!(by_count.find(&["svc", "main", "a", "a1"]).is_some());
        assert!(by_count.find(&["svc", "main", "b"]).is_none());
        assert_eq!(by_count.total(), 100, "totals keep trimmed values");
        assert_eq!(by_count.trimmed_nodes, 3);
        let mut root_only = t.clone();
        root_only.trim(1, 0.0);
        assert_eq!((root_only.nodes.len(), root_only.total()), (1, 100));
        t.trim(0, 0.10);
        assert!(t.find(&["svc", "main", "c"]).is_some());
        assert!(t.find(&["svc", "main", "d"]).is_none());
    }

    /// The tree's JSON has names, self, total and nested children.
    #[test]
    fn json_shape() {
        let t = tree(&[(&["svc", "main"], 2)]);
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["type"], "cpu");
        assert_eq!(v["root"]["name"], "total");
        assert_eq!(v["root"]["children"][0]["children"][0]["name"], "main");
        assert_eq!(v["root"]["children"][0]["children"][0]["self"], 2);
    }
}
