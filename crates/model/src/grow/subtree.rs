//! Deep trees on every core. Below a certain size a node's histogram and partition
//! run on one thread, and in a tree grown to full depth most of the work is in such
//! nodes. So a lone tree sets its small subtrees aside as it reaches them, grows them
//! on all threads, each on its own copy of its rows, and splices them in.
//!
//! The tree is the same as one grown in a single pass: a node's split and value
//! depend only on its rows (their order inside the node is that of stable
//! partitions, and histogram sums are exact integers), and the nodes are then
//! renumbered in the order the single pass creates them.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::count::Pool;
use super::grower::{Grower, Pending};
use super::rows::Sample;
use super::{Leaves, PARALLEL_WORK};
use crate::tree::{LEAF, Node};

/// What one subtree grew: its rows in their final order, its nodes (the subtree's
/// root first, children numbered locally), their split bins and its leaves (ranges
/// within the subtree's rows).
struct Subtree {
    start: usize,
    node: usize,
    sample: Sample,
    nodes: Vec<Node>,
    split_bins: Vec<u8>,
    cover: Vec<f64>,
    leaves: Leaves,
}

impl Grower<'_> {
    /// Rows below which a node's subtree is set aside to grow on a thread of its own;
    /// 0 when subtrees are not set aside. Only a lone tree does it (a forest runs
    /// whole trees in parallel), and only when nothing random is drawn per node (a
    /// sample of features is drawn from one stream, in node order), nor are leaves
    /// capped (best-first order is global).
    pub(super) fn defer_below(&self) -> usize {
        let p = self.params;
        if !p.parallel
            || p.max_features.is_some()
            || p.max_leaf_nodes.is_some()
            || rayon::current_num_threads() < 2
        {
            return 0;
        }
        // After the checks above: a tree that must not be split up never is, even
        // while a test forces the threshold for trees that may (the tests share the
        // process, and a sampled-features tree grown apart draws differently).
        #[cfg(test)]
        {
            let forced = tests::FORCED.load(std::sync::atomic::Ordering::Relaxed);
            if forced != usize::MAX {
                return forced;
            }
        }
        // Nodes this small count and partition on one thread anyway.
        (PARALLEL_WORK / self.data.n_features().max(1)).max(2)
    }

    /// Grows the `deferred` subtrees on every thread and splices them into the tree
    /// in `out` (nodes, split bins, covers, leaves), which is then numbered as a single pass
    /// would number it.
    pub(super) fn grow_deferred(
        &self,
        sample: &mut Sample,
        deferred: Vec<Pending>,
        out: (
            &mut Vec<crate::tree::Node>,
            &mut Vec<u8>,
            &mut Vec<f64>,
            &mut Leaves,
        ),
    ) {
        let (nodes, split_bins, cover, leaves) = out;
        let shared: &Sample = sample;
        let grown: Vec<Subtree> = deferred
            .into_par_iter()
            .map(|item| {
                let (start, node) = (item.start, item.node);
                let mut part = shared.copy_range(item.start..item.end);
                let root = Pending {
                    node: 0,
                    start: 0,
                    end: item.end - item.start,
                    ..item
                };
                let (mut sub_nodes, mut sub_bins, mut sub_cover, mut sub_leaves) =
                    (vec![Node::leaf(0.0)], vec![0u8], vec![0.0], Vec::new());
                // Never drawn from: subtrees are set aside only when no node draws.
                let mut unused = ChaCha8Rng::seed_from_u64(0);
                let rest = self.grow_from(
                    &mut part,
                    root,
                    (
                        &mut sub_nodes,
                        &mut sub_bins,
                        &mut sub_cover,
                        &mut sub_leaves,
                    ),
                    &mut Pool::default(),
                    &mut unused,
                    0,
                );
                debug_assert!(rest.is_empty(), "nothing is set aside inside a subtree");
                Subtree {
                    start,
                    node,
                    sample: part,
                    nodes: sub_nodes,
                    split_bins: sub_bins,
                    cover: sub_cover,
                    leaves: sub_leaves,
                }
            })
            .collect();
        for sub in grown {
            sample.write_back(sub.start, &sub.sample);
            let base = nodes.len();
            nodes[sub.node] = relink(sub.nodes[0], base);
            split_bins[sub.node] = sub.split_bins[0];
            nodes.extend(sub.nodes[1..].iter().map(|&n| relink(n, base)));
            split_bins.extend_from_slice(&sub.split_bins[1..]);
            cover[sub.node] = sub.cover[0];
            cover.extend_from_slice(&sub.cover[1..]);
            leaves.extend(
                sub.leaves
                    .into_iter()
                    .map(|(r, v)| (r.start + sub.start..r.end + sub.start, v)),
            );
        }
        let order = single_pass_order(nodes);
        *nodes = renumber(nodes, &order);
        *split_bins = order.iter().map(|&old| split_bins[old as usize]).collect();
        *cover = order.iter().map(|&old| cover[old as usize]).collect();
    }
}

/// A subtree's node with its child link made global: the subtree's nodes but its
/// root (local 0, already in the tree) follow `base` in their local order, so no
/// child is ever local 0.
fn relink(mut n: Node, base: usize) -> Node {
    if n.feature != LEAF {
        n.left = (base + n.left as usize - 1) as u32;
    }
    n
}

/// The nodes' order in a single depth-first pass: `order[new] = old`. That pass
/// numbers a split node's two children next when it splits it, and splits the right
/// child's subtree before the left's (its stack pops the right child first).
fn single_pass_order(nodes: &[Node]) -> Vec<u32> {
    let mut order = Vec::with_capacity(nodes.len());
    order.push(0u32);
    let mut stack = vec![0u32];
    while let Some(old) = stack.pop() {
        let n = nodes[old as usize];
        if n.feature == LEAF {
            continue;
        }
        order.extend([n.left, n.left + 1]);
        stack.extend([n.left, n.left + 1]);
    }
    order
}

/// The nodes in `order`, their child links renumbered to match.
fn renumber(nodes: &[Node], order: &[u32]) -> Vec<Node> {
    let mut new_of = vec![0u32; nodes.len()];
    for (new, &old) in order.iter().enumerate() {
        new_of[old as usize] = new as u32;
    }
    order
        .iter()
        .map(|&old| {
            let mut n = nodes[old as usize];
            if n.feature != LEAF {
                n.left = new_of[n.left as usize];
            }
            n
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rand::Rng;

    use super::*;
    use crate::binning::Binned;
    use crate::grow::{Criterion, GrowParams};
    use crate::preprocess::Matrix;

    /// Rows below which subtrees are set aside, instead of the grower's own choice
    /// (`usize::MAX`: not forced), for trees that may be split up at all. Only the test
    /// below sets it; any other test that grows such a tree meanwhile grows the same
    /// nodes either way, which is what that test proves.
    pub(in crate::grow) static FORCED: AtomicUsize = AtomicUsize::new(usize::MAX);

    /// A boosted tree to full depth and a lone classification tree, grown in one pass
    /// and with many small subtrees set aside and grown on four threads: the same
    /// nodes in the same order, the same split bins, rows and leaves.
    #[test]
    fn subtrees_grown_apart_give_the_single_pass_tree() {
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        let n = 20_000;
        let columns: Vec<Vec<f32>> = (0..4)
            .map(|f| {
                (0..n)
                    .map(|_| rng.random_range(0..[3, 40, 255, 2][f]) as f32)
                    .collect()
            })
            .collect();
        let y: Vec<u8> = (0..n)
            .map(|i| u8::from(columns[1][i] + rng.random_range(0.0..30.0) > 35.0))
            .collect();
        let binned = Binned::new(&Matrix { n_rows: n, columns }, 255);
        let params = |criterion, leaf_rows| GrowParams {
            criterion,
            max_depth: None,
            max_leaf_nodes: None,
            min_samples_leaf: 1,
            min_samples_split: 2,
            min_child_weight: 0.0,
            lambda: 0.0,
            min_gain: 0.0,
            max_features: None,
            parallel: true,
            leaf_rows,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let scores: Vec<f64> = (0..n).map(|i| (i % 7) as f64 / 3.0 - 1.0).collect();
        let mut expected: Option<Grown> = None;
        for forced in [1, 700, 3_000] {
            FORCED.store(forced, Ordering::Relaxed);
            let boost = params(Criterion::Newton, true);
            let grown = pool.install(|| {
                let mut g = Grower::new(&binned, &boost);
                g.set_logistic_gradients(&scores, &y);
                g.grow((0..n as u32).collect(), &mut ChaCha8Rng::seed_from_u64(1))
            });
            let counts: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
            let gini = params(Criterion::Gini, false);
            let tree = pool.install(|| {
                Grower::new(&binned, &gini).grow_classes(
                    crate::grow::Drawn::Counts(&counts),
                    &y,
                    &mut ChaCha8Rng::seed_from_u64(2),
                )
            });
            let mut leaves = grown.leaves.clone();
            leaves.sort_by_key(|(r, _)| r.start);
            let key = |nodes: &[Node]| -> Vec<(u32, u32, u32, u32)> {
                nodes
                    .iter()
                    .map(|n| (n.feature, n.threshold.to_bits(), n.left, n.value.to_bits()))
                    .collect()
            };
            let got = (
                key(&grown.tree.nodes().collect::<Vec<_>>()),
                grown.split_bins,
                grown.rows,
                leaves,
                key(&tree.nodes().collect::<Vec<_>>()),
                grown.tree.cover_values(),
                tree.cover_values(),
            );
            FORCED.store(usize::MAX, Ordering::Relaxed);
            if forced == 1 {
                // Nothing is set aside: the single pass itself, to compare with.
                assert!(got.0.len() > 1000, "a deep tree: {} nodes", got.0.len());
                assert!(got.4.len() > 1000, "a deep tree: {} nodes", got.4.len());
                expected = Some(got);
            } else {
                let e = expected.as_ref().expect("the single pass ran first");
                assert!(
                    got.0 == e.0,
                    "boosted tree's nodes, set aside below {forced}"
                );
                assert!(got.1 == e.1, "split bins, set aside below {forced}");
                assert!(got.2 == e.2, "rows' order, set aside below {forced}");
                assert!(got.3 == e.3, "leaves, set aside below {forced}");
                assert!(
                    got.4 == e.4,
                    "classification tree, set aside below {forced}"
                );
                assert!(
                    got.5 == e.5,
                    "boosted tree's cover, set aside below {forced}"
                );
                assert!(
                    got.6 == e.6,
                    "classification tree's cover, set aside below {forced}"
                );
            }
        }
    }

    type Grown = (
        Vec<(u32, u32, u32, u32)>,
        Vec<u8>,
        Vec<u32>,
        Leaves,
        Vec<(u32, u32, u32, u32)>,
        Vec<f64>,
        Vec<f64>,
    );

    /// Renumbering a tree already in single-pass order changes nothing, and a tree
    /// whose subtrees were numbered in another order comes back to it.
    #[test]
    fn renumbering_restores_the_single_pass_order() {
        let split = |left: u32| Node {
            feature: 0,
            threshold: left as f32,
            left,
            value: 0.0,
        };
        let leaf = Node::leaf;
        // Root splits into 1, 2; the pass splits 2 (children 3, 4), then 4 (5, 6),
        // then 1 (7, 8).
        let single = vec![
            split(1),
            split(7),
            split(3),
            leaf(3.0),
            split(5),
            leaf(5.0),
            leaf(6.0),
            leaf(7.0),
            leaf(8.0),
        ];
        assert_eq!(single_pass_order(&single), (0..9).collect::<Vec<u32>>());
        // The same tree with 1's children numbered before 2's subtree.
        let other = vec![
            split(1),
            split(3),
            split(5),
            leaf(7.0),
            leaf(8.0),
            leaf(3.0),
            split(7),
            leaf(5.0),
            leaf(6.0),
        ];
        let order = single_pass_order(&other);
        let back = renumber(&other, &order);
        let key = |n: &Node| (n.feature, n.left, n.value.to_bits());
        assert_eq!(
            back.iter().map(key).collect::<Vec<_>>(),
            single.iter().map(key).collect::<Vec<_>>()
        );
    }
}
