//! The histogram tree grower shared by every learner. Rows are binned once; a node's
//! histogram sums, per feature and bin, the gradient `g`, the hessian `h` and the row
//! count; the best split of each feature is one scan over its bins. A child's histogram
//! is its parent's minus its sibling's, so only the smaller child is ever counted.
//!
//! Classification trees use the same machinery: with `g = w·y` and `h = w`, Gini gain is
//! the Newton gain with no regularisation, and entropy is computed from the same sums.
//! A classification row is one word, its bins and its code (bootstrap weight and
//! label), and the rows themselves move as nodes split, so a node is counted from one
//! stretch of memory; its bins' three sums are counted packed in one word. Forests that
//! split on a sample of features still count every feature in large nodes, so that
//! subtraction keeps working.

mod count;
mod grower;
mod layout;
mod partition;
mod rows;
mod split;
mod subtree;
mod sums;
#[cfg(test)]
mod tests;

use std::ops::Range;

use crate::tree::Tree;

pub use grower::{Grower, route_binned};
pub use rows::MAX_WEIGHT;
pub(crate) use rows::{CODE_SHIFT, class_code};
pub(crate) use sums::{SCALE, quantize};

/// Nodes with fewer rows × features than this build their histogram on one thread.
const PARALLEL_WORK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// Second-order boosting gain and leaf values `-G / (H + λ)`.
    Newton,
    Gini,
    Entropy,
}

#[derive(Debug, Clone)]
pub struct GrowParams {
    pub criterion: Criterion,
    pub max_depth: Option<usize>,
    pub max_leaf_nodes: Option<usize>,
    pub min_samples_leaf: usize,
    pub min_samples_split: usize,
    pub min_child_weight: f64,
    pub lambda: f64,
    pub min_gain: f64,
    /// Features considered at each split; all when `None`.
    pub max_features: Option<usize>,
    /// Spread histogram work over threads (off when trees themselves run in parallel).
    pub parallel: bool,
    /// Whether [`Grown::leaves`] lists each leaf's rows (boosting updates its scores
    /// from them). When not, it stays empty, and a split whose children are both
    /// leaves does not partition its rows.
    pub leaf_rows: bool,
}

/// A finished tree plus, for each training row that reached it, its leaf's value: the
/// booster updates its scores from these without walking the tree again.
pub struct Grown {
    pub tree: Tree,
    /// The rows the tree was grown on, reordered so each leaf's rows are contiguous.
    pub rows: Vec<u32>,
    /// `(rows, value)` per leaf, with [`GrowParams::leaf_rows`] only (else empty).
    pub leaves: Leaves,
    /// For each node, the bin of its split (so rows outside the sample can be routed).
    pub split_bins: Vec<u8>,
}

/// The rows a classification tree grows on, and what each weighs.
#[derive(Debug, Clone, Copy)]
pub enum Drawn<'s> {
    /// How often each row of the data was drawn (a bootstrap sample): the rows drawn,
    /// each weighing its count (capped at [`MAX_WEIGHT`]).
    Counts(&'s [u8]),
    /// These rows, in order, each weighing 1.
    Rows(&'s [u32]),
}

/// Each leaf's rows (a range of [`Grown::rows`]) and value.
pub type Leaves = Vec<(Range<usize>, f32)>;
