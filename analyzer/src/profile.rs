//! An aggregated stack profile: interned frames and stacks, and one row per (stack, thread) with
//! a value for each sample type. Every export reads this one model.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use serde::{Deserialize, Serialize};

use crate::types::{Frame, FrameId};

/// What a value counts, as pprof names it (`samples`/`count`, `cpu`/`nanoseconds`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ValueType {
    /// What is measured.
    pub kind: String,
    /// Its unit.
    pub unit: String,
}

impl ValueType {
    /// A value type from its kind and unit.
    pub fn new(kind: impl Into<String>, unit: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            unit: unit.into(),
        }
    }
}

/// The thread a sample belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SampleLabels {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread name.
    pub comm: String,
    /// The probed function (`critpath record --probe`) the thread was inside when sampled, if
    /// any: the sample is request work.
    pub request: Option<String>,
}

impl SampleLabels {
    /// Labels for one thread.
    pub fn new(pid: u32, tid: u32, comm: impl Into<String>) -> Self {
        Self {
            pid,
            tid,
            comm: comm.into(),
            request: None,
        }
    }
}

/// Index of a stack in a [`Profile`].
pub type StackId = u32;

/// One aggregated row: a stack in a thread with its summed values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileSample {
    /// The stack, see [`Profile::stack`].
    pub stack: StackId,
    /// The thread.
    pub labels: SampleLabels,
    /// One value per [`Profile::sample_types`] entry.
    pub values: Vec<i64>,
}

/// A profile: sample types, a frame table, a stack table and aggregated samples.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// What each value of a sample measures.
    pub sample_types: Vec<ValueType>,
    /// The sampling period's type (pprof `period_type`), if the profile was sampled periodically.
    pub period_type: Option<ValueType>,
    /// The sampling period in units of `period_type`.
    pub period: i64,
    /// Start of the profiled window, Unix nanoseconds.
    pub start_unix_ns: i64,
    /// Length of the profiled window, nanoseconds.
    pub duration_ns: i64,
    frames: Vec<Frame>,
    frame_index: HashMap<Frame, FrameId>,
    stacks: Vec<Box<[FrameId]>>,
    stack_index: HashMap<Box<[FrameId]>, StackId>,
    samples: Vec<ProfileSample>,
    sample_index: HashMap<(StackId, SampleLabels), usize>,
}

impl Profile {
    /// An empty profile with these sample types.
    pub fn new(sample_types: Vec<ValueType>) -> Self {
        Self {
            sample_types,
            ..Self::default()
        }
    }

    /// Interns a frame.
    pub fn intern_frame(&mut self, frame: Frame) -> FrameId {
        if let Some(&id) = self.frame_index.get(&frame) {
            return id;
        }
        let id = self.frames.len() as FrameId;
        self.frames.push(frame.clone());
        self.frame_index.insert(frame, id);
        id
    }

    /// Interns a stack of frame ids, root first.
    pub fn intern_stack(&mut self, stack: &[FrameId]) -> StackId {
        if let Some(&id) = self.stack_index.get(stack) {
            return id;
        }
        let id = self.stacks.len() as StackId;
        self.stacks.push(stack.into());
        self.stack_index.insert(stack.into(), id);
        id
    }

    /// Adds `values` for a stack (frames root first) in a thread, summing with an existing row.
    ///
    /// # Panics
    /// If `values` does not have one entry per sample type.
    pub fn add(
        &mut self,
        frames: impl IntoIterator<Item = Frame>,
        values: &[i64],
        labels: SampleLabels,
    ) {
        let ids: Vec<FrameId> = frames.into_iter().map(|f| self.intern_frame(f)).collect();
        let stack = self.intern_stack(&ids);
        self.add_stack(stack, values, labels);
    }

    /// Adds `values` for an interned stack in a thread.
    ///
    /// # Panics
    /// If `values` does not have one entry per sample type.
    pub fn add_stack(&mut self, stack: StackId, values: &[i64], labels: SampleLabels) {
        assert_eq!(
            values.len(),
            self.sample_types.len(),
            "one value per sample type"
        );
        match self.sample_index.entry((stack, labels)) {
            Entry::Occupied(row) => {
                for (acc, v) in self.samples[*row.get()].values.iter_mut().zip(values) {
                    *acc += v;
                }
            }
            Entry::Vacant(slot) => {
                let labels = slot.key().1.clone();
                slot.insert(self.samples.len());
                self.samples.push(ProfileSample {
                    stack,
                    labels,
                    values: values.to_vec(),
                });
            }
        }
    }

    /// The frame table.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// A frame by id.
    pub fn frame(&self, id: FrameId) -> &Frame {
        &self.frames[id as usize]
    }

    /// A stack by id: frame ids, root first.
    pub fn stack(&self, id: StackId) -> &[FrameId] {
        &self.stacks[id as usize]
    }

    /// The aggregated rows, in insertion order.
    pub fn samples(&self) -> &[ProfileSample] {
        &self.samples
    }

    /// Index of a sample type by its kind (`"samples"`, `"cpu"`, ...).
    pub fn sample_type_index(&self, kind: &str) -> Option<usize> {
        self.sample_types.iter().position(|t| t.kind == kind)
    }

    /// The sum of each value over all samples.
    pub fn totals(&self) -> Vec<i64> {
        let mut totals = vec![0; self.sample_types.len()];
        for s in &self.samples {
            for (t, v) in totals.iter_mut().zip(&s.values) {
                *t += v;
            }
        }
        totals
    }

    /// Sum of value `index` over samples whose stack contains a frame matching `pred`
    /// (each sample counted once), e.g. a function's inclusive share.
    pub fn inclusive_value(&self, index: usize, mut pred: impl FnMut(&Frame) -> bool) -> i64 {
        self.samples
            .iter()
            .filter(|s| self.stack(s.stack).iter().any(|&f| pred(self.frame(f))))
            .map(|s| s.values[index])
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Identical stacks in the same thread merge into one row; frames are interned once.
    #[test]
    fn add_merges_rows_and_interns() {
        let mut p = Profile::new(vec![ValueType::new("samples", "count")]);
        let stack = || [Frame::user("main", "/a"), Frame::user("f", "/a")];
        p.add(stack(), &[1], SampleLabels::new(1, 1, "a"));
        p.add(stack(), &[2], SampleLabels::new(1, 1, "a"));
        p.add(stack(), &[5], SampleLabels::new(1, 2, "a"));
        assert_eq!(p.frames().len(), 2);
        assert_eq!(p.samples().len(), 2);
        assert_eq!(p.samples()[0].values, vec![3]);
        assert_eq!(p.totals(), vec![8]);
        assert_eq!(p.inclusive_value(0, |f| f.function == "f"), 8);
        assert_eq!(p.inclusive_value(0, |f| f.function == "g"), 0);
    }
}
