//! Exact per-prediction explanations: path-dependent TreeSHAP, Algorithm 2 of Lundberg,
//! Erion and Lee, "Consistent Individualized Feature Attribution for Tree Ensembles"
//! (the algorithm behind LightGBM's `pred_contrib` and XGBoost's `pred_contribs`).
//!
//! A feature's contribution is its Shapley value for the set function
//! `v(S) = E[f(x) | x_S]`, where the expectation over the features outside `S` follows
//! the training data down the tree: at a split on an unknown feature, both children
//! are taken, weighed by the share of the node's cover each received. The values are
//! exact, and `E[f] + Σ contributions = f(x)`.
//!
//! Algorithm 2 costs `O(L·D²)` per tree and row (`L` leaves, `D` depth): about a
//! millisecond for 100 trees of depth 6, twenty times the budget. But in the
//! path-dependent form a leaf's contributions depend on the row only through which of
//! the features on its path the row agrees with (a bit per feature), so each leaf's
//! contributions for each of those `2^d` patterns are computed once, with Algorithm 2's
//! own path arithmetic, when the model is first explained (as "Fast TreeSHAP v2",
//! Yang 2021, does). Explaining a row then takes each split's direction once, finds
//! each leaf's pattern from its path's edges, and adds `d` numbers per leaf. Trees whose tables would be too large (deep
//! unlimited forests) are explained by Algorithm 2 directly.

use crate::ensemble::{Ensemble, Link};
use crate::tree::{LEAF, Tree};

/// Trees deeper than this are refused: Algorithm 2 recurses once per level and keeps a
/// path buffer quadratic in the depth.
pub const MAX_DEPTH: usize = 512;
/// A leaf whose path splits on more distinct features than this gets no table.
const MAX_TABLE_BITS: usize = 12;
/// The most table entries one tree may hold (2 MiB); larger trees use Algorithm 2.
const MAX_TABLE_PER_TREE: usize = 1 << 18;
/// The most table entries a model may hold (32 MiB, a served model's memory budget for
/// explanations; 100 trees of depth 6 take about 5 MiB); later trees use Algorithm 2.
const MAX_TABLE_TOTAL: usize = 1 << 22;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExplainError {
    #[error(
        "the model predates explanations: tree {tree} does not record its nodes' cover (the \
         training data that reached each node), which artifacts of format 2 and later \
         carry; retrain the model with this predict-buy to explain its predictions"
    )]
    NoCover { tree: usize },
    #[error("tree {tree} is {depth} levels deep; explanations support at most {MAX_DEPTH}")]
    TooDeep { tree: usize, depth: usize },
}

/// An ensemble prepared for explanation (tables built, covers checked). Build it once
/// per model: building costs about as much as explaining a few hundred rows.
#[derive(Debug, Clone)]
pub struct Explainer {
    trees: Vec<Plan>,
    /// Each tree's contributions are multiplied by this (`1/T` for a forest's mean).
    scale: f64,
    expected: f64,
    n_features: usize,
}

#[derive(Debug, Clone)]
enum Plan {
    Table(Table),
    /// Algorithm 2 on the tree as stored.
    Direct(Tree),
}

/// A tree as its splits and, per leaf, the edges of its path and its table.
///
/// Explaining a row takes every split's direction once, then for each leaf clears
/// the pattern bit of each feature whose edge the row does not follow, and adds the
/// leaf's `d` values for that pattern: no walk, so no branch on the data.
#[derive(Debug, Clone)]
struct Table {
    /// `(feature, threshold)` of each split, in node order.
    splits: Vec<(u32, f32)>,
    leaves: Vec<TableLeaf>,
    /// Each leaf's path edges, leaf after leaf: `split << 8 | right << 7 | bit`.
    edges: Vec<u32>,
    /// Each leaf's distinct path features, leaf after leaf.
    features: Vec<u32>,
    /// Each leaf's contributions, `2^d` patterns of `d` values, leaf after leaf.
    values: Vec<f64>,
}

#[derive(Debug, Clone, Copy)]
struct TableLeaf {
    edges: u32,
    n_edges: u32,
    d: u32,
    features: u32,
    values: u32,
}

impl Explainer {
    /// Prepares `e` for explanation over rows of `n_features` encoded features.
    pub fn new(e: &Ensemble, n_features: usize) -> Result<Self, ExplainError> {
        for (i, t) in e.trees.iter().enumerate() {
            if !t.has_cover() {
                return Err(ExplainError::NoCover { tree: i });
            }
            let depth = depth_capped(t, MAX_DEPTH + 1);
            if depth > MAX_DEPTH {
                return Err(ExplainError::TooDeep { tree: i, depth });
            }
        }
        let scale = match e.link {
            Link::Average => 1.0 / e.trees.len().max(1) as f64,
            Link::Logit => 1.0,
        };
        let mut budget = MAX_TABLE_TOTAL;
        let trees = e
            .trees
            .iter()
            .map(|t| match Table::new(t, budget) {
                Some(table) => {
                    budget -= table.values.len();
                    Plan::Table(table)
                }
                None => Plan::Direct(t.clone()),
            })
            .collect();
        let sum: f64 = e.trees.iter().map(expected_value).sum();
        let expected = match e.link {
            Link::Average => sum * scale,
            Link::Logit => e.base_score + sum,
        };
        Ok(Self {
            trees,
            scale,
            expected,
            n_features,
        })
    }

    /// `E[f]` over the training data as the trees saw it, in the ensemble's units
    /// (log-odds for boosting, a probability for forests): what the contributions of a
    /// row add to.
    pub fn expected_value(&self) -> f64 {
        self.expected
    }

    /// Adds each encoded feature's contribution for row `x` to `phi` (one per encoded
    /// feature), in the ensemble's units. `expected_value() + Σ phi` is the ensemble's
    /// score (see [`Ensemble::predict_margin`]).
    pub fn explain(&self, x: &[f32], phi: &mut [f64]) {
        assert!(
            x.len() >= self.n_features && phi.len() >= self.n_features,
            "a row of {} features",
            self.n_features
        );
        let mut tree_phi = vec![0f64; phi.len()];
        let mut right = Vec::new();
        let mut path = Vec::new();
        for plan in &self.trees {
            match plan {
                Plan::Table(t) => t.explain(x, &mut tree_phi, &mut right),
                Plan::Direct(t) => tree_shap_into(t, x, &mut tree_phi, &mut path),
            }
        }
        for (p, t) in phi.iter_mut().zip(&tree_phi) {
            *p += t * self.scale;
        }
    }
}

impl Table {
    /// The table of `tree`, unless it would exceed [`MAX_TABLE_PER_TREE`] entries or
    /// `budget`, or a leaf has more than [`MAX_TABLE_BITS`] distinct path features.
    fn new(tree: &Tree, budget: usize) -> Option<Self> {
        let mut split_of = vec![u32::MAX; tree.len()];
        let mut splits = Vec::new();
        for (i, n) in tree.nodes().enumerate() {
            if n.feature != LEAF {
                split_of[i] = splits.len() as u32;
                splits.push((n.feature, n.threshold));
            }
        }
        if splits.len() >= 1 << 24 {
            return None;
        }
        let mut paths: Vec<LeafPath> = Vec::new();
        let mut entries = 0usize;
        let mut ok = true;
        walk_paths(
            tree,
            0,
            &mut Vec::new(),
            &mut Vec::new(),
            &mut |leaf, path, edges| {
                let d = path.len();
                // `d` first: a deep forest's path can hold more distinct features
                // than a shift has bits.
                if !ok || d > MAX_TABLE_BITS {
                    ok = false;
                    return;
                }
                entries = entries.saturating_add(d << d);
                if entries > MAX_TABLE_PER_TREE.min(budget) {
                    ok = false;
                    return;
                }
                let edges = edges
                    .iter()
                    .map(|&(node, right, bit)| {
                        split_of[node] << 8 | u32::from(right) << 7 | bit as u32
                    })
                    .collect();
                let (features, zero) = path.iter().copied().unzip();
                paths.push(LeafPath {
                    leaf,
                    edges,
                    features,
                    zero,
                });
            },
        );
        if !ok {
            return None;
        }
        let mut leaves = Vec::with_capacity(paths.len());
        let mut all_edges = Vec::new();
        let mut features = Vec::new();
        let mut values = Vec::with_capacity(entries);
        let mut buf = vec![PathElement::default(); MAX_TABLE_BITS + 1];
        for LeafPath {
            leaf,
            edges,
            features: f,
            zero: z,
        } in &paths
        {
            let d = f.len();
            leaves.push(TableLeaf {
                edges: all_edges.len() as u32,
                n_edges: edges.len() as u32,
                d: d as u32,
                features: features.len() as u32,
                values: values.len() as u32,
            });
            all_edges.extend_from_slice(edges);
            features.extend_from_slice(f);
            let v = f64::from(tree.node(*leaf).value);
            for pattern in 0..1usize << d {
                extend(&mut buf, 0, 1.0, 1.0, LEAF);
                for (k, &zk) in z.iter().enumerate() {
                    let one = ((pattern >> k) & 1) as f64;
                    extend(&mut buf, k + 1, zk, one, f[k]);
                }
                for k in 1..=d {
                    let el = buf[k];
                    values.push(unwound_sum(&buf, d, k) * (el.one - el.zero) * v);
                }
            }
        }
        Some(Self {
            splits,
            leaves,
            edges: all_edges,
            features,
            values,
        })
    }

    fn explain(&self, x: &[f32], phi: &mut [f64], right: &mut Vec<u8>) {
        right.clear();
        // The same comparison as inference, so NaN goes where it goes there.
        right.extend(
            self.splits
                .iter()
                .map(|&(f, t)| u8::from(x[f as usize] > t)),
        );
        for leaf in &self.leaves {
            let mut pattern = u32::MAX;
            let edges = &self.edges[leaf.edges as usize..][..leaf.n_edges as usize];
            for &e in edges {
                let missed = u32::from(right[(e >> 8) as usize] ^ ((e >> 7) & 1) as u8);
                pattern &= !(missed << (e & 127));
            }
            let d = leaf.d as usize;
            let mask = (1u32 << d) - 1;
            let at = leaf.values as usize + (pattern & mask) as usize * d;
            let features = &self.features[leaf.features as usize..][..d];
            for (&f, v) in features.iter().zip(&self.values[at..at + d]) {
                phi[f as usize] += v;
            }
        }
    }
}

/// A leaf's node, packed path edges, distinct path features and their zero fractions
/// (the product of the cover shares of that feature's edges).
struct LeafPath {
    leaf: usize,
    edges: Vec<u32>,
    features: Vec<u32>,
    zero: Vec<f64>,
}

/// What [`walk_paths`] calls at each leaf: the leaf, the path's distinct features with
/// their zero fractions, and the path's edges as `(split node, goes right, bit)`.
type Visit<'a> = dyn FnMut(usize, &[(u32, f64)], &[(usize, bool, usize)]) + 'a;

/// Visits every leaf of `tree` depth first, keeping the distinct features on the path
/// from the root with each one's zero fraction, and the edges taken; a feature's bit
/// is its position among the distinct features.
fn walk_paths(
    tree: &Tree,
    node: usize,
    path: &mut Vec<(u32, f64)>,
    edges: &mut Vec<(usize, bool, usize)>,
    visit: &mut Visit<'_>,
) {
    let n = tree.node(node);
    if n.feature == LEAF {
        visit(node, path, edges);
        return;
    }
    let (bit, pushed) = match path.iter().position(|p| p.0 == n.feature) {
        Some(k) => (k, false),
        None => {
            path.push((n.feature, 1.0));
            (path.len() - 1, true)
        }
    };
    let left = n.left as usize;
    for (child, right) in [(left, false), (left + 1, true)] {
        let saved = path[bit].1;
        path[bit].1 = saved * tree.cover(child) / tree.cover(node);
        edges.push((node, right, bit));
        walk_paths(tree, child, path, edges, visit);
        edges.pop();
        path[bit].1 = saved;
    }
    if pushed {
        path.pop();
    }
}

/// `E[f]` of one tree: its leaves weighed by the share of the root's cover that the
/// split fractions send them (the same fractions TreeSHAP uses, so a row's
/// contributions add up to `f(x) - E[f]` exactly).
pub fn expected_value(tree: &Tree) -> f64 {
    fn at(t: &Tree, i: usize) -> f64 {
        let n = t.node(i);
        if n.feature == LEAF {
            return f64::from(n.value);
        }
        let l = n.left as usize;
        (t.cover(l) * at(t, l) + t.cover(l + 1) * at(t, l + 1)) / t.cover(i)
    }
    at(tree, 0)
}

/// One tree's contributions for row `x`, by Algorithm 2 itself, added to `phi`. The
/// tree must carry cover and be at most [`MAX_DEPTH`] deep (as [`Explainer::new`]
/// checks). Public as the reference the tables are tested against.
pub fn tree_shap(tree: &Tree, x: &[f32], phi: &mut [f64]) {
    tree_shap_into(tree, x, phi, &mut Vec::new());
}

fn tree_shap_into(tree: &Tree, x: &[f32], phi: &mut [f64], path: &mut Vec<PathElement>) {
    let depth = tree.depth();
    // Level k's path starts after levels 0..k's, each at most k + 1 long.
    let need = (depth + 2) * (depth + 3) / 2 + 1;
    if path.len() < need {
        path.resize(need, PathElement::default());
    }
    recurse(tree, x, phi, path, 0, 0, 0, 1.0, 1.0, LEAF);
}

/// One element of a TreeSHAP path: a feature, the fraction of "feature unknown"
/// weight (`zero`) and "feature known" weight (`one`, 0 or 1 here) that flows through
/// it, and the permutation weight of subsets of its size.
#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    feature: u32,
    zero: f64,
    one: f64,
    weight: f64,
}

#[allow(clippy::too_many_arguments)]
fn recurse(
    tree: &Tree,
    x: &[f32],
    phi: &mut [f64],
    buf: &mut [PathElement],
    parent_at: usize,
    node: usize,
    mut depth: usize,
    zero: f64,
    one: f64,
    feature: u32,
) {
    // Each call works on its own copy of the path, so the sibling sees the parent's.
    let at = parent_at + depth + 1;
    buf.copy_within(parent_at..parent_at + depth + 1, at);
    let path = &mut buf[at..];
    extend(path, depth, zero, one, feature);
    let n = tree.node(node);
    if n.feature == LEAF {
        let v = f64::from(n.value);
        for k in 1..=depth {
            let el = path[k];
            phi[el.feature as usize] += unwound_sum(path, depth, k) * (el.one - el.zero) * v;
        }
        return;
    }
    let left = n.left as usize;
    let hot = left + usize::from(x[n.feature as usize] > n.threshold);
    let cold = 2 * left + 1 - hot;
    let (mut in_zero, mut in_one) = (1.0, 1.0);
    // A feature split on again: undo its element and redo it with both splits' weight.
    if let Some(k) = path[..=depth].iter().position(|e| e.feature == n.feature) {
        in_zero = path[k].zero;
        in_one = path[k].one;
        unwind(path, depth, k);
        depth -= 1;
    }
    let cover = tree.cover(node);
    let (hot_zero, cold_zero) = (tree.cover(hot) / cover, tree.cover(cold) / cover);
    recurse(
        tree,
        x,
        phi,
        buf,
        at,
        hot,
        depth + 1,
        hot_zero * in_zero,
        in_one,
        n.feature,
    );
    recurse(
        tree,
        x,
        phi,
        buf,
        at,
        cold,
        depth + 1,
        cold_zero * in_zero,
        0.0,
        n.feature,
    );
}

/// Adds an element at position `d` and updates the subset-size weights.
fn extend(p: &mut [PathElement], d: usize, zero: f64, one: f64, feature: u32) {
    p[d] = PathElement {
        feature,
        zero,
        one,
        weight: if d == 0 { 1.0 } else { 0.0 },
    };
    let n = (d + 1) as f64;
    for i in (0..d).rev() {
        p[i + 1].weight += one * p[i].weight * (i + 1) as f64 / n;
        p[i].weight = zero * p[i].weight * (d - i) as f64 / n;
    }
}

/// Removes element `k` from a path of length `d + 1`: [`extend`] run backwards.
fn unwind(p: &mut [PathElement], d: usize, k: usize) {
    let (one, zero) = (p[k].one, p[k].zero);
    let n = (d + 1) as f64;
    let mut next = p[d].weight;
    for i in (0..d).rev() {
        if one != 0.0 {
            let w = p[i].weight;
            p[i].weight = next * n / ((i + 1) as f64 * one);
            next = w - p[i].weight * zero * (d - i) as f64 / n;
        } else {
            p[i].weight = p[i].weight * n / (zero * (d - i) as f64);
        }
    }
    for i in k..d {
        p[i].feature = p[i + 1].feature;
        p[i].zero = p[i + 1].zero;
        p[i].one = p[i + 1].one;
    }
}

/// The total weight the path would have with element `k` removed, without removing
/// it: the Shapley weight of `k`'s feature at this leaf.
fn unwound_sum(p: &[PathElement], d: usize, k: usize) -> f64 {
    let (one, zero) = (p[k].one, p[k].zero);
    let n = (d + 1) as f64;
    let mut next = p[d].weight;
    let mut total = 0.0;
    for i in (0..d).rev() {
        if one != 0.0 {
            let w = next * n / ((i + 1) as f64 * one);
            total += w;
            next = p[i].weight - w * zero * (d - i) as f64 / n;
        } else {
            total += p[i].weight / zero * n / (d - i) as f64;
        }
    }
    total
}

/// The tree's depth, or `cap` if it is at least that deep (without recursing past it,
/// so a damaged artifact's long chain cannot exhaust the stack).
fn depth_capped(tree: &Tree, cap: usize) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, d)) = stack.pop() {
        deepest = deepest.max(d);
        if deepest >= cap {
            return cap;
        }
        let n = tree.node(i);
        if n.feature != LEAF {
            stack.push((n.left as usize, d + 1));
            stack.push((n.left as usize + 1, d + 1));
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Node;

    /// `x0 <= 0.5 ? (x1 <= 0.5 ? 1 : 3) : 10` with covers 10 = 6 + 4, 6 = 2 + 4.
    fn small() -> Tree {
        Tree::new(
            vec![
                Node {
                    feature: 0,
                    threshold: 0.5,
                    left: 1,
                    value: 0.0,
                },
                Node {
                    feature: 1,
                    threshold: 0.5,
                    left: 3,
                    value: 0.0,
                },
                Node::leaf(10.0),
                Node::leaf(1.0),
                Node::leaf(3.0),
            ],
            vec![10.0, 6.0, 4.0, 2.0, 4.0],
        )
    }

    #[test]
    fn hand_computed_values() {
        let t = small();
        // E = (2·1 + 4·3 + 4·10) / 10 = 5.4.
        assert!((expected_value(&t) - 5.4).abs() < 1e-12);
        // x = (0, 0): v(∅) = 5.4, v({0}) = (2·1 + 4·3)/6 = 7/3, v({1}) = 0.6·1 + 0.4·10
        // = 4.6, v({0,1}) = 1. φ0 = ½(7/3 − 5.4) + ½(1 − 4.6), φ1 = ½(4.6 − 5.4) + ½(1 − 7/3).
        let mut phi = [0.0; 2];
        tree_shap(&t, &[0.0, 0.0], &mut phi);
        let phi0 = 0.5 * (7.0 / 3.0 - 5.4) + 0.5 * (1.0 - 4.6);
        let phi1 = 0.5 * (4.6 - 5.4) + 0.5 * (1.0 - 7.0 / 3.0);
        assert!((phi[0] - phi0).abs() < 1e-12, "{phi:?}");
        assert!((phi[1] - phi1).abs() < 1e-12, "{phi:?}");
        let mut table_phi = [0.0; 2];
        let table = Table::new(&t, usize::MAX).expect("small tree");
        table.explain(&[0.0, 0.0], &mut table_phi, &mut Vec::new());
        // x = (1, 0) reaches leaf 10, yet x1 still matters: knowing it, the unknown
        // x0's left branch is worth 1, not 7/3. v({1}) = 0.6·1 + 0.4·10 = 4.6,
        // v({0}) = v({0,1}) = 10: φ0 = ½·4.6 + ½·5.4 = 5, φ1 = ½(4.6 − 5.4) = −0.4.
        let mut phi = [0.0; 2];
        table.explain(&[1.0, 0.0], &mut phi, &mut Vec::new());
        assert!((phi[0] - 5.0).abs() < 1e-12, "{phi:?}");
        assert!((phi[1] + 0.4).abs() < 1e-12, "{phi:?}");
        assert!((table_phi[0] - phi0).abs() < 1e-12, "{table_phi:?}");
        assert!((table_phi[1] - phi1).abs() < 1e-12, "{table_phi:?}");
    }

    #[test]
    fn a_tree_without_cover_is_refused_by_name() {
        let t = small().without_cover();
        let e = Ensemble {
            link: Link::Logit,
            base_score: 0.0,
            trees: vec![small(), t],
            precision: crate::ensemble::Precision::F64,
        };
        let err = Explainer::new(&e, 2).unwrap_err();
        assert_eq!(err, ExplainError::NoCover { tree: 1 });
        assert!(err.to_string().contains("predates explanations"));
        assert!(err.to_string().contains("retrain"));
    }

    #[test]
    fn unwind_undoes_extend() {
        let mut p = vec![PathElement::default(); 4];
        extend(&mut p, 0, 1.0, 1.0, LEAF);
        extend(&mut p, 1, 0.3, 1.0, 4);
        let before: Vec<f64> = p[..2].iter().map(|e| e.weight).collect();
        extend(&mut p, 2, 0.6, 0.0, 7);
        unwind(&mut p, 2, 2);
        let after: Vec<f64> = p[..2].iter().map(|e| e.weight).collect();
        for (a, b) in before.iter().zip(&after) {
            assert!((a - b).abs() < 1e-12, "{before:?} vs {after:?}");
        }
    }
}
