//! An ensemble of trees and how their outputs combine into a probability.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::tree::{LEAF, Tree, WALKS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// Trees hold class-1 frequencies; the probability is their mean (forests).
    Average,
    /// Trees hold additive log-odds; the probability is `sigmoid(base + Σ)` (boosting).
    Logit,
}

/// The float type leaf values are summed in.
///
/// Format-1 artifacts summed in `f32`, and their golden predictions (and every
/// release's recorded ones) are those sums bit for bit, so they keep it. Models
/// trained since sum in `f64`: an explanation's contributions add up to the score to
/// 1e-9, and an `f32` sum of a hundred trees is off by about 1e-7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    F64,
}

impl Precision {
    fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    pub link: Link,
    pub base_score: f64,
    pub trees: Vec<Tree>,
    /// Absent from format-1 artifacts (which summed in `f32`); not written when `f32`
    /// so such a model, loaded and written again, keeps its bytes.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

/// What leaf values are summed in: `f32` or `f64`.
trait Acc: Copy + std::ops::AddAssign + Into<f64> + From<f32> {
    const ZERO: Self;
}
impl Acc for f32 {
    const ZERO: Self = 0.0;
}
impl Acc for f64 {
    const ZERO: Self = 0.0;
}

impl Ensemble {
    /// The raw probability for one feature row, before any prior correction.
    #[inline]
    pub fn predict_raw(&self, x: &[f32]) -> f64 {
        let sum = match self.precision {
            Precision::F32 => sum_trees::<f32>(&self.trees, x).into(),
            Precision::F64 => sum_trees::<f64>(&self.trees, x),
        };
        finish(self.link, self.base_score, self.trees.len(), sum)
    }

    /// The score before the link: `base_score + Σ leaves` (log-odds) for boosting,
    /// the mean of the leaves (a probability) for forests; what explanations add up to.
    pub fn predict_margin(&self, x: &[f32]) -> f64 {
        let sum = match self.precision {
            Precision::F32 => sum_trees::<f32>(&self.trees, x).into(),
            Precision::F64 => sum_trees::<f64>(&self.trees, x),
        };
        match self.link {
            Link::Average => sum / self.trees.len().max(1) as f64,
            Link::Logit => self.base_score + sum,
        }
    }

    /// Probabilities for many rows given column-major features; see [`Compiled`].
    pub fn predict_raw_batch(&self, columns: &[Vec<f32>], n_rows: usize, out: &mut Vec<f64>) {
        Compiled::new(self).predict_batch(self, columns, n_rows, out);
    }

    /// [`Ensemble::predict_raw_batch`] on every core; see [`Compiled::predict_par`].
    pub fn predict_raw_par(&self, columns: &[Vec<f32>], n_rows: usize) -> Vec<f64> {
        Compiled::new(self).predict_par(self, columns, n_rows)
    }
}

/// The ensemble rearranged for fast batch scoring, built once when a model loads.
/// It holds only the rearranged trees; the ensemble itself is passed to each call.
///
/// For batches, trees no deeper than [`DENSE_MAX_DEPTH`] are laid out as complete
/// binary trees in heap order (node `i`'s children are `2i + 1` and `2i + 2`): a leaf
/// above the bottom level becomes a subtree whose leaves all hold its value. A walk is
/// then exactly `depth` steps with no branch on the data and no child index to load,
/// and `LANES` rows walk each tree in lockstep so the processor overlaps their
/// independent walks. Every path sums leaf values in tree order in the ensemble's
/// [`Precision`] (see `sum_trees`), so batch, single-row and reference answers agree bit for bit.
///
/// Deeper trees (unlimited-depth forests) are walked row by row in their node form: a
/// complete layout would walk every row to the deepest leaf.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The complete-tree form, when every tree is shallow enough.
    dense: Option<Vec<DenseTree>>,
}

/// Complete trees deeper than this would cost more memory (2^depth leaves) and walk
/// more steps than the node form; it also keeps every split index below 256.
pub const DENSE_MAX_DEPTH: usize = 8;
/// Rows scored together: each tree stays in L1 while the block walks it, and the
/// block's features do too.
const BLOCK: usize = 128;
/// Rows whose walks are interleaved. Measured on the 2-core bench machine (100 trees,
/// depth 6): 4 lanes 1.6 M rows/s, 8 lanes 1.8 M, 16 lanes 2.4 M, 32 lanes 1.3 M
/// (register spills).
const LANES: usize = 16;
/// Rows per block when deep trees are walked one row at a time.
const DEEP_BLOCK: usize = 1024;
/// A block holds up to 256 features, so a `u16` offset `f * BLOCK` plus a lane is
/// provably in bounds and the walk needs no bounds check.
const BLOCK_LEN: usize = u16::MAX as usize + 1 + BLOCK;

#[derive(Debug, Clone)]
struct DenseTree {
    depth: usize,
    /// `feature * BLOCK` of each internal node in heap order, padded to 256 entries so
    /// that `i & 255` needs no bounds check.
    offsets: Box<[u16; 256]>,
    thresholds: Box<[f32; 256]>,
    /// The `2^depth` leaves, left to right.
    leaves: Vec<f32>,
}

impl DenseTree {
    fn new(tree: &Tree) -> Self {
        let depth = tree.depth();
        let mut dense = Self {
            depth,
            offsets: Box::new([0; 256]),
            thresholds: Box::new([f32::INFINITY; 256]),
            leaves: vec![0.0; 1 << depth],
        };
        dense.fill(tree, 0, 0, 0);
        dense
    }

    fn fill(&mut self, tree: &Tree, src: usize, pos: usize, level: usize) {
        let n = tree.node(src);
        if level == self.depth {
            self.leaves[pos + 1 - (1 << self.depth)] = n.value;
            return;
        }
        if n.feature == LEAF {
            // Both sides end in this leaf's value, so the padding split's outcome
            // does not matter.
            self.fill(tree, src, 2 * pos + 1, level + 1);
            self.fill(tree, src, 2 * pos + 2, level + 1);
        } else {
            self.offsets[pos] = (n.feature as usize * BLOCK) as u16;
            self.thresholds[pos] = n.threshold;
            self.fill(tree, n.left as usize, 2 * pos + 1, level + 1);
            self.fill(tree, n.left as usize + 1, 2 * pos + 2, level + 1);
        }
    }

    /// Adds this tree's leaf value to `sums` for the first `len` rows of a
    /// feature-major block (`block[f * BLOCK + row]`).
    fn add_block<A: Acc>(&self, block: &[f32; BLOCK_LEN], len: usize, sums: &mut [A; BLOCK]) {
        // One copy per depth, so the level loop unrolls and the optimiser sees each
        // node index's range.
        match self.depth {
            0 => self.add_block_at::<0, A>(block, len, sums),
            1 => self.add_block_at::<1, A>(block, len, sums),
            2 => self.add_block_at::<2, A>(block, len, sums),
            3 => self.add_block_at::<3, A>(block, len, sums),
            4 => self.add_block_at::<4, A>(block, len, sums),
            5 => self.add_block_at::<5, A>(block, len, sums),
            6 => self.add_block_at::<6, A>(block, len, sums),
            7 => self.add_block_at::<7, A>(block, len, sums),
            _ => self.add_block_at::<8, A>(block, len, sums),
        }
    }

    #[inline]
    fn add_block_at<const D: usize, A: Acc>(
        &self,
        block: &[f32; BLOCK_LEN],
        len: usize,
        sums: &mut [A; BLOCK],
    ) {
        let first_leaf = (1 << D) - 1;
        for lane0 in (0..len).step_by(LANES) {
            let lane0 = lane0 & (BLOCK - LANES);
            let mut idx = [0usize; LANES];
            for _ in 0..D {
                for (l, i) in idx.iter_mut().enumerate() {
                    let x = block[usize::from(self.offsets[*i & 255]) + lane0 + l];
                    *i = 2 * *i + 1 + usize::from(x > self.thresholds[*i & 255]);
                }
            }
            for (l, i) in idx.into_iter().enumerate() {
                sums[lane0 + l] += A::from(self.leaves[i - first_leaf]);
            }
        }
    }
}

impl Compiled {
    pub fn new(ensemble: &Ensemble) -> Self {
        let dense = ensemble.trees.iter().all(|t| {
            t.depth() <= DENSE_MAX_DEPTH && t.nodes().all(|n| n.feature == LEAF || n.feature < 256)
        });
        Self {
            dense: dense.then(|| ensemble.trees.iter().map(DenseTree::new).collect()),
        }
    }

    /// Raw probabilities for `n_rows` rows of column-major features, by `e`, the
    /// ensemble this was built from. (One row is scored by [`Ensemble::predict_raw`]:
    /// a lone walk is bound by latency, and stopping at shallow leaves beats the
    /// complete form's fixed depth, measured 0.97 vs 1.07 µs for 100 trees of depth 6.)
    pub fn predict_batch(
        &self,
        e: &Ensemble,
        columns: &[Vec<f32>],
        n_rows: usize,
        out: &mut Vec<f64>,
    ) {
        self.predict_rows(e, columns, 0..n_rows, out);
    }

    /// [`Compiled::predict_batch`] on every core: stretches of rows are scored apart
    /// and joined in order. Each row's answer is the same as on one core.
    pub fn predict_par(&self, e: &Ensemble, columns: &[Vec<f32>], n_rows: usize) -> Vec<f64> {
        use rayon::prelude::*;
        // A few stretches per thread, so a core that finishes early takes another; a
        // stretch stays long enough that splitting costs nothing measurable.
        let stretch = n_rows
            .div_ceil(4 * rayon::current_num_threads().max(1))
            .max(4 * DEEP_BLOCK);
        let parts: Vec<Vec<f64>> = (0..n_rows.div_ceil(stretch))
            .into_par_iter()
            .map(|k| {
                let mut out = Vec::new();
                let rows = k * stretch..((k + 1) * stretch).min(n_rows);
                self.predict_rows(e, columns, rows, &mut out);
                out
            })
            .collect();
        parts.concat()
    }

    /// [`Compiled::predict_batch`] for the rows in `rows` only.
    fn predict_rows(
        &self,
        e: &Ensemble,
        columns: &[Vec<f32>],
        rows: Range<usize>,
        out: &mut Vec<f64>,
    ) {
        match e.precision {
            Precision::F32 => self.predict_batch_in::<f32>(e, columns, rows, out),
            Precision::F64 => self.predict_batch_in::<f64>(e, columns, rows, out),
        }
    }

    fn predict_batch_in<A: Acc>(
        &self,
        e: &Ensemble,
        columns: &[Vec<f32>],
        rows: Range<usize>,
        out: &mut Vec<f64>,
    ) {
        debug_assert!(self.dense.as_ref().is_none_or(|d| d.len() == e.trees.len()));
        out.clear();
        out.reserve(rows.len());
        let finish = |s: A| finish(e.link, e.base_score, e.trees.len(), s.into());
        let Some(trees) = &self.dense else {
            // Deep trees are large (a full-depth forest is tens of megabytes): each tree
            // walks a block of rows before the next is touched, so it is read from memory
            // once per block rather than once per row.
            let nf = columns.len();
            let mut block = vec![0f32; DEEP_BLOCK * nf];
            let mut leaves = [0f32; DEEP_BLOCK];
            let mut sums = [A::ZERO; DEEP_BLOCK];
            for start in rows.clone().step_by(DEEP_BLOCK) {
                let len = DEEP_BLOCK.min(rows.end - start);
                for (f, col) in columns.iter().enumerate() {
                    for (i, v) in col[start..start + len].iter().enumerate() {
                        block[i * nf + f] = *v;
                    }
                }
                sums[..len].fill(A::ZERO);
                for t in &e.trees {
                    t.predict_rows(&block[..len * nf], nf, &mut leaves[..len]);
                    for (s, v) in sums[..len].iter_mut().zip(&leaves[..len]) {
                        *s += A::from(*v);
                    }
                }
                out.extend(sums[..len].iter().map(|s| finish(*s)));
            }
            return;
        };
        let mut block: Box<[f32; BLOCK_LEN]> = vec![0f32; BLOCK_LEN]
            .into_boxed_slice()
            .try_into()
            .expect("BLOCK_LEN floats");
        let mut sums = [A::ZERO; BLOCK];
        for start in rows.clone().step_by(BLOCK) {
            let len = BLOCK.min(rows.end - start);
            // Feature-major, so a lane's feature is one add away; the block's tail
            // (past `len`) holds stale rows whose sums are never read. Trees split on
            // features below 256 only, so later columns are not needed.
            for (f, col) in columns.iter().take(256).enumerate() {
                block[f * BLOCK..f * BLOCK + len].copy_from_slice(&col[start..start + len]);
            }
            sums.fill(A::ZERO);
            for t in trees {
                t.add_block(&block, len, &mut sums);
            }
            out.extend(sums[..len].iter().map(|s| finish(*s)));
        }
    }
}

/// Leaf values summed in tree order from `+0.0`: every path (one row, a block, the
/// node or the complete form) adds the same numbers in the same order, so they agree
/// bit for bit.
///
/// The trees are walked up to `WALKS` at a time in lockstep: one walk is a chain of
/// dependent loads, and a deep tree's nodes are mostly out of cache, so interleaving
/// independent walks lets their cache misses overlap instead of queueing. (The
/// seed-config model, ten unlimited-depth trees, spent 14% of a request in lone
/// walks.) The groups are balanced — ten trees walk as one group of ten, not eight
/// and then two, whose second group would pay its depth in misses again with little
/// to overlap. Only the walks interleave; the sum stays in tree order.
#[inline]
fn sum_trees<A: Acc>(trees: &[Tree], x: &[f32]) -> A {
    let mut sum = A::ZERO;
    let groups = trees.len().div_ceil(WALKS).max(1);
    let size = trees.len().div_ceil(groups).max(1);
    for group in trees.chunks(size) {
        let mut leaves = [0f32; WALKS];
        crate::tree::lockstep_leaves(group, x, &mut leaves);
        for v in &leaves[..group.len()] {
            sum += A::from(*v);
        }
    }
    sum
}

fn finish(link: Link, base_score: f64, n_trees: usize, sum: f64) -> f64 {
    match link {
        Link::Average => sum / n_trees.max(1) as f64,
        Link::Logit => crate::learners::sigmoid(base_score + sum),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;

    /// A chain `depth` splits deep on feature 0 at thresholds 0, 1, 2, …, whose leaves
    /// hold distinct values, so a row's leaf (and its value) depends on `x[0]`.
    fn chain(depth: usize, salt: f32) -> Tree {
        let mut nodes = vec![Node::leaf(0.0)];
        let mut at = 0;
        for d in 0..depth {
            let left = nodes.len();
            nodes.push(Node::leaf(salt + d as f32 * 0.37));
            nodes.push(Node::leaf(salt - d as f32 * 0.11));
            nodes[at] = Node {
                feature: 0,
                threshold: d as f32,
                left: left as u32,
                value: 0.0,
            };
            at = left + 1;
        }
        Tree::from_nodes(nodes)
    }

    #[test]
    fn lockstep_walks_sum_like_lone_walks_in_tree_order() {
        // One group, balanced groups (WALKS + 1 walks as two of about half) and
        // ragged ones; trees of unequal depth so walks of one group finish at
        // different steps.
        for n_trees in [0, 1, 9, 10, WALKS - 1, WALKS, WALKS + 1, 2 * WALKS + 3, 100] {
            let trees: Vec<Tree> = (0..n_trees)
                .map(|t| chain((t * 7) % 23, t as f32 * 1.3 - 4.0))
                .collect();
            for x0 in [-1.0f32, 0.5, 3.5, 11.5, 40.0, f32::NAN] {
                let x = [x0];
                let lone32 = trees.iter().fold(0f32, |s, t| s + t.predict(&x));
                let lone64 = trees.iter().fold(0f64, |s, t| s + f64::from(t.predict(&x)));
                assert_eq!(sum_trees::<f32>(&trees, &x).to_bits(), lone32.to_bits());
                assert_eq!(sum_trees::<f64>(&trees, &x).to_bits(), lone64.to_bits());
            }
        }
        // Groups holding a tree in the 12-byte form take the generic walk; the rest
        // the narrow one. Both answer like lone walks, on either side of every split.
        let wide = |t: Tree| {
            let nodes: Vec<Node> = t
                .nodes()
                .map(|n| {
                    if n.is_leaf() {
                        n
                    } else {
                        Node { feature: 300, ..n }
                    }
                })
                .collect();
            Tree::from_nodes(nodes)
        };
        for n_trees in [1, 3, 10, WALKS] {
            let narrow: Vec<Tree> = (0..n_trees)
                .map(|t| chain(3 + (t * 5) % 17, t as f32 * 0.7 - 2.0))
                .collect();
            let mut mixed = narrow.clone();
            mixed[n_trees / 2] = wide(mixed[n_trees / 2].clone());
            assert!(narrow.iter().all(Tree::is_narrow) && !mixed[n_trees / 2].is_narrow());
            for x300 in [-1.0f32, 0.0, 0.5, 1.0, 2.5, 6.0, 30.0, f32::NAN] {
                let mut x = vec![0f32; 301];
                (x[0], x[300]) = (x300, x300);
                for trees in [&narrow, &mixed] {
                    let lone = trees.iter().fold(0f64, |s, t| s + f64::from(t.predict(&x)));
                    assert_eq!(sum_trees::<f64>(trees, &x).to_bits(), lone.to_bits());
                }
                // Same shape, same answer: the wide twin reads feature 300 instead of 0.
                let (a, b) = (sum_trees::<f64>(&narrow, &x), sum_trees::<f64>(&mixed, &x));
                assert_eq!(a.to_bits(), b.to_bits(), "x = {x300}");
            }
        }
        // The walk really depends on the row: a chain routes 0.5 and 11.5 apart.
        let t = [chain(20, 0.0)];
        assert_ne!(sum_trees::<f64>(&t, &[0.5]), sum_trees::<f64>(&t, &[11.5]));
    }
}
