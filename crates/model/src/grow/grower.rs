//! The growing driver: a grower's state, and a tree grown node by node from it.

use std::collections::BinaryHeap;
use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::count::{Counted, Pool};
use super::layout::{Bundling, Layout, RowForm};
use super::rows::{CODE_SHIFT, Record, RowStats, Sample, class_code};
use super::split::Split;
use super::sums::Sums;
#[cfg(test)]
use super::sums::quantize;
use super::{Criterion, Drawn, GrowParams, Grown, Leaves};
use crate::binning::Binned;
use crate::tree::{LEAF, Node, Tree};

pub(super) struct Pending {
    pub(super) node: usize,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) depth: usize,
    pub(super) sums: Sums,
    pub(super) hist: Option<Vec<Sums>>,
    pub(super) split: Option<Split>,
}

pub struct Grower<'a> {
    pub(super) data: &'a Binned,
    pub(super) params: &'a GrowParams,
    pub(super) stats: RowStats,
    /// How features map onto histogram bins; see [`Layout`]. Shared by the growers
    /// of one forest, as it depends only on the data.
    pub(super) layout: Arc<Layout>,
    /// Partition space, kept between trees (like `g` and `h`): buffers of this size
    /// are fresh pages each time they are allocated.
    pub(super) scratch: Vec<u32>,
    /// A classification tree's [`Record`]s and their partition space, kept likewise.
    pub(super) records: Vec<Record>,
    pub(super) record_scratch: Vec<Record>,
    /// A classification tree's rows, when it grows from indices.
    pub(super) drawn: Vec<u32>,
    /// Histogram buffers, kept between trees for the same reason.
    pub(super) pool: Pool,
    /// The last tree's node count: the next tree's buffers start about that large,
    /// rather than doubling their way up through fresh pages and copies.
    pub(super) nodes_hint: usize,
}

impl<'a> Grower<'a> {
    /// A grower for `data`; set the rows' gradients before growing.
    pub fn new(data: &'a Binned, params: &'a GrowParams) -> Self {
        // Boosting grows from indices: its rows carry gradients, not codes.
        let form = match params.criterion {
            Criterion::Newton => RowForm::Indices,
            Criterion::Gini | Criterion::Entropy => RowForm::Records,
        };
        let layout = Layout::new(data, Bundling::Exclusive, form);
        Self::with_layout(data, params, Arc::new(layout))
    }

    /// Another grower for the same data and parameters, sharing this one's layout
    /// (building it reads every row of every feature).
    pub fn sibling(&self) -> Self {
        Self::with_layout(self.data, self.params, Arc::clone(&self.layout))
    }

    pub(super) fn with_layout(
        data: &'a Binned,
        params: &'a GrowParams,
        layout: Arc<Layout>,
    ) -> Self {
        Self {
            data,
            params,
            stats: RowStats::Codes(Vec::new()),
            layout,
            scratch: Vec::new(),
            records: Vec::new(),
            record_scratch: Vec::new(),
            drawn: Vec::new(),
            pool: Pool::default(),
            nodes_hint: 1,
        }
    }

    /// Sets each row's log-loss gradient and hessian from its score (log-odds) and
    /// 0/1 label: boosting's every round.
    pub fn set_logistic_gradients(&mut self, scores: &[f64], y: &[u8]) {
        let (g, h) = self.newton_stats();
        // Chunks big enough to amortise a task, small enough to share out.
        const CHUNK: usize = 16 * 1024;
        g.par_chunks_mut(CHUNK)
            .zip(h.par_chunks_mut(CHUNK))
            .zip(scores.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
            .for_each(|((g, h), (s, y))| crate::simd::logistic_gradients(s, y, g, h));
    }

    /// The gradient and hessian arrays, made if the rows held class counts.
    pub(super) fn newton_stats(&mut self) -> (&mut [i64], &mut [i64]) {
        let n = self.data.n_rows;
        if !matches!(self.stats, RowStats::Newton { .. }) {
            self.stats = RowStats::Newton {
                g: vec![0; n],
                h: vec![0; n],
            };
        }
        let RowStats::Newton { g, h } = &mut self.stats else {
            unreachable!("set just above")
        };
        (g, h)
    }

    /// Sets each row's gradient and hessian (tests give the booster's rows other
    /// losses' gradients).
    #[cfg(test)]
    pub fn set_gradients(&mut self, f: impl Fn(usize) -> (f64, f64) + Sync) {
        let parallel = self.params.parallel;
        let (g, h) = self.newton_stats();
        let set = |(i, (g, h)): (usize, (&mut i64, &mut i64))| {
            let (a, b) = f(i);
            *g = quantize(a);
            *h = quantize(b);
        };
        if parallel {
            g.par_iter_mut().zip(h).enumerate().for_each(set);
        } else {
            g.iter_mut().zip(h).enumerate().for_each(set);
        }
    }

    /// Sets each row's weight (capped at [`MAX_WEIGHT`]) and 0/1 label, for
    /// classification trees: a row then counts as `(w·y, w)`.
    pub(super) fn set_class_weights(&mut self, weight: impl Fn(usize) -> u8, y: &[u8]) {
        if !matches!(self.stats, RowStats::Codes(_)) {
            self.stats = RowStats::Codes(Vec::new());
        }
        let RowStats::Codes(codes) = &mut self.stats else {
            unreachable!("set just above")
        };
        codes.clear();
        codes.extend(y.iter().enumerate().map(|(i, &y)| class_code(weight(i), y)));
    }

    /// Grows one tree on `rows` (indices into the data; rows with zero weight left out),
    /// with the gradients or class weights set before.
    pub fn grow(&mut self, rows: Vec<u32>, rng: &mut ChaCha8Rng) -> Grown {
        let mut scratch = std::mem::take(&mut self.scratch);
        self.reserve_rows(&mut scratch);
        scratch.resize(rows.len(), 0);
        let mut sample = Sample::Rows { rows, scratch };
        let (tree, leaves, split_bins) = self.grow_sample(&mut sample, rng);
        let Sample::Rows { rows, scratch } = sample else {
            unreachable!("made above")
        };
        self.scratch = scratch;
        Grown {
            tree,
            rows,
            leaves,
            split_bins,
        }
    }

    /// Grows one classification tree on the `drawn` rows, with their 0/1 labels in
    /// `y` (one per row of the data). The tree is the one [`Self::grow`] grows after
    /// [`Self::set_class_weights`], but grown from [`Record`]s where the data allows.
    pub fn grow_classes(&mut self, drawn: Drawn<'_>, y: &[u8], rng: &mut ChaCha8Rng) -> Tree {
        let bins = &self.layout.records;
        if bins.is_empty() || self.params.leaf_rows {
            let mut rows = std::mem::take(&mut self.drawn);
            match drawn {
                Drawn::Counts(counts) => {
                    crate::sample::drawn(counts, &mut rows);
                    self.set_class_weights(|i| counts[i], y);
                }
                Drawn::Rows(given) => {
                    rows.clear();
                    rows.extend_from_slice(given);
                    self.set_class_weights(|_| 1, y);
                }
            }
            let grown = self.grow(rows, rng);
            self.drawn = grown.rows;
            return grown.tree;
        }
        let mut records = std::mem::take(&mut self.records);
        self.reserve_rows(&mut records);
        match drawn {
            Drawn::Counts(counts) => {
                records.resize(counts.len(), 0);
                let kept = crate::simd::drawn_records(counts, y, bins, &mut records);
                records.truncate(kept);
            }
            Drawn::Rows(rows) => {
                records.clear();
                records.extend(rows.iter().map(|&r| {
                    let code = class_code(1, y[r as usize]);
                    bins[r as usize] | Record::from(code) << CODE_SHIFT
                }));
            }
        }
        let mut scratch = std::mem::take(&mut self.record_scratch);
        self.reserve_rows(&mut scratch);
        scratch.resize(records.len(), 0);
        let mut sample = Sample::Records { records, scratch };
        let (tree, _, _) = self.grow_sample(&mut sample, rng);
        let Sample::Records { records, scratch } = sample else {
            unreachable!("made above")
        };
        self.records = records;
        self.record_scratch = scratch;
        tree
    }

    /// Gives a per-row buffer room for every row of the data at once. Grown to each
    /// tree's rows instead, it would move whenever a tree had more rows than the last,
    /// and each move is to fresh pages, which cost more to fault in than the copy.
    pub(super) fn reserve_rows<T>(&self, buf: &mut Vec<T>) {
        buf.reserve(self.data.n_rows.saturating_sub(buf.len()));
    }

    /// Grows a tree on `sample`, whose rows it leaves ordered leaf by leaf. Returns the
    /// tree, the leaves' ranges and values (with [`GrowParams::leaf_rows`]), and each
    /// node's split bin.
    pub(super) fn grow_sample(
        &mut self,
        sample: &mut Sample,
        rng: &mut ChaCha8Rng,
    ) -> (Tree, Leaves, Vec<u8>) {
        let capacity = self.nodes_hint + self.nodes_hint / 8;
        let mut nodes: Vec<Node> = Vec::with_capacity(capacity);
        nodes.push(Node::leaf(0.0));
        let mut split_bins = Vec::with_capacity(capacity);
        split_bins.push(0u8);
        let mut cover = Vec::with_capacity(capacity);
        cover.push(0.0);
        let mut leaves = Vec::new();
        let mut pool = std::mem::take(&mut self.pool);

        let n = sample.len();
        let mut features = Vec::with_capacity(self.data.n_features());
        self.features(rng, &mut features);
        let root_sums = self.sums(sample);
        let open = self.may_split(root_sums, 0);
        let hist = open.then(|| {
            let counted = self.counted(n);
            let hist = self.histogram(sample, 0..n, &features, counted, &mut pool);
            (hist, counted)
        });
        let (root_split, root_hist) =
            self.split_and_keep(hist, open, &features, root_sums, &mut pool);
        let root = Pending {
            node: 0,
            start: 0,
            end: n,
            depth: 0,
            sums: root_sums,
            hist: root_hist,
            split: root_split,
        };

        // Small subtrees of a lone tree are set aside and grown on every thread; the
        // nodes are then numbered as this loop alone would have numbered them.
        let defer_below = self.defer_below();
        let deferred = self.grow_from(
            sample,
            root,
            (&mut nodes, &mut split_bins, &mut cover, &mut leaves),
            &mut pool,
            rng,
            defer_below,
        );
        if !deferred.is_empty() {
            self.grow_deferred(
                sample,
                deferred,
                (&mut nodes, &mut split_bins, &mut cover, &mut leaves),
            );
        }
        self.pool = pool;
        self.nodes_hint = nodes.len();
        (Tree::new(nodes, cover), leaves, split_bins)
    }

    /// Grows the nodes under `root` depth-first (or best-first, with a leaf cap),
    /// writing them to `out` (nodes, split bins, covers, leaves). A node of fewer than
    /// `defer_below` rows is not grown but returned, for [`Self::grow_deferred`].
    pub(super) fn grow_from(
        &self,
        sample: &mut Sample,
        root: Pending,
        out: (&mut Vec<Node>, &mut Vec<u8>, &mut Vec<f64>, &mut Leaves),
        pool: &mut Pool,
        rng: &mut ChaCha8Rng,
        defer_below: usize,
    ) -> Vec<Pending> {
        let p = self.params;
        let (nodes, split_bins, cover, leaves) = out;
        let mut features = Vec::with_capacity(self.data.n_features());
        let mut deferred = Vec::new();
        // Depth-first keeps few histograms alive; best-first is needed when the number
        // of leaves is capped, so the best splits are the ones made.
        let best_first = p.max_leaf_nodes.is_some();
        // Depth-first, the stack holds at most one node per level and one more.
        let mut stack = Vec::with_capacity(64);
        stack.push(root);
        let mut heap: BinaryHeap<ByGain> = BinaryHeap::new();
        if best_first {
            heap.push(ByGain(stack.pop().expect("root")));
        }
        let mut n_leaves = 1usize;
        loop {
            let item = if best_first {
                heap.pop().map(|b| b.0)
            } else {
                stack.pop()
            };
            let Some(mut item) = item else { break };
            if item.end - item.start < defer_below {
                deferred.push(item);
                continue;
            }
            let can_grow = p.max_leaf_nodes.is_none_or(|m| n_leaves < m);
            let split = match item.split {
                Some(s) if can_grow => s,
                _ => {
                    if let Some(h) = item.hist.take() {
                        pool.give(h);
                    }
                    let value = self.leaf_value(item.sums);
                    nodes[item.node] = Node::leaf(value);
                    cover[item.node] = self.cover(item.sums);
                    if p.leaf_rows {
                        leaves.push((item.start..item.end, value));
                    }
                    continue;
                }
            };
            n_leaves += 1;
            let depth = item.depth + 1;
            let sums = [split.left, item.sums.minus(split.left)];
            // A child that cannot split is a leaf whose sums are already known: counting
            // its rows would be wasted (the whole last level of a depth-limited tree).
            let open = sums.map(|s| self.may_split(s, depth));
            let mid = item.start + split.left.n as usize;
            if p.leaf_rows || open.contains(&true) {
                let left = self.split_rows(sample, item.start..item.end, split.feature, split.bin);
                debug_assert_eq!(item.start + left, mid);
            }
            let left = nodes.len();
            nodes[item.node] = Node {
                feature: split.feature as u32,
                threshold: self.data.mappers[split.feature].uppers[split.bin as usize],
                left: left as u32,
                value: 0.0,
            };
            split_bins[item.node] = split.bin;
            cover[item.node] = self.cover(item.sums);
            nodes.push(Node::leaf(0.0));
            nodes.push(Node::leaf(0.0));
            split_bins.extend([0, 0]);
            cover.extend([0.0, 0.0]);

            let ranges = [(item.start, mid), (mid, item.end)];
            self.features(rng, &mut features);
            let small = usize::from(mid - item.start > item.end - mid);
            let large = 1 - small;
            // Small children split from their rows, with no histogram.
            let direct = [0, 1].map(|k| open[k] && self.direct(ranges[k].1 - ranges[k].0));
            // A kept histogram counts every feature, so the larger child's is the
            // parent's minus the smaller child's.
            let parent_hist = item.hist.take();
            let subtract = open[large] && !direct[large] && parent_hist.is_some();
            let mut hists: [Option<(Vec<Sums>, Counted)>; 2] = [None, None];
            if (open[small] && !direct[small]) || subtract {
                let (start, end) = ranges[small];
                let counted = if subtract {
                    Counted::Every
                } else {
                    self.counted(end - start)
                };
                let hist = self.histogram(sample, start..end, &features, counted, pool);
                hists[small] = Some((hist, counted));
            }
            match (parent_hist, &hists[small]) {
                (Some(mut ph), Some((sh, _))) if subtract => {
                    // Only the counted columns: members' bins may be stale.
                    for &(start, len) in &self.layout.units {
                        for (a, b) in ph[start..start + len].iter_mut().zip(&sh[start..]) {
                            *a = a.minus(*b);
                        }
                    }
                    self.layout.marginalize(&mut ph, &features);
                    hists[large] = Some((ph, Counted::Every));
                }
                (ph, _) => {
                    if let Some(h) = ph {
                        pool.give(h);
                    }
                    if open[large] && !direct[large] {
                        let (start, end) = ranges[large];
                        let counted = self.counted(end - start);
                        let hist = self.histogram(sample, start..end, &features, counted, pool);
                        hists[large] = Some((hist, counted));
                    }
                }
            }
            for (k, hist) in hists.into_iter().enumerate() {
                let (split, hist) = if hist.is_none() && direct[k] {
                    let split =
                        self.direct_split(sample, ranges[k].0..ranges[k].1, &features, sums[k]);
                    (split, None)
                } else {
                    self.split_and_keep(hist, open[k], &features, sums[k], pool)
                };
                let pending = Pending {
                    node: left + k,
                    start: ranges[k].0,
                    end: ranges[k].1,
                    depth,
                    sums: sums[k],
                    hist,
                    split,
                };
                if best_first {
                    heap.push(ByGain(pending))
                } else {
                    stack.push(pending)
                }
            }
        }
        deferred
    }

    /// A node's cover, for explanations: how much training data reached it. Rows, not
    /// hessians, even for boosting (where XGBoost uses the hessian sum): TreeSHAP reads
    /// cover as the share of the data that goes each way, and the hessian `p(1-p)`
    /// would weigh rows the model is unsure of above confident ones. LightGBM's
    /// TreeSHAP uses row counts for the same reason. Classification rows weigh their
    /// bootstrap count, like scikit-learn's `weighted_n_node_samples`. Both are exact
    /// integers, so cover is as deterministic as the tree.
    fn cover(&self, s: Sums) -> f64 {
        match self.params.criterion {
            Criterion::Newton => f64::from(s.n),
            Criterion::Gini | Criterion::Entropy => s.h(),
        }
    }

    /// The best split of a node from its histogram, and the histogram back if its children can subtract from it: when
    /// the node splits and the histogram counts every feature. Otherwise it returns
    /// to the pool.
    pub(super) fn split_and_keep(
        &self,
        hist: Option<(Vec<Sums>, Counted)>,
        open: bool,
        features: &[usize],
        sums: Sums,
        pool: &mut Pool,
    ) -> (Option<Split>, Option<Vec<Sums>>) {
        let Some((hist, counted)) = hist else {
            return (None, None);
        };
        let split = if open {
            self.best_split(&hist, features, sums)
        } else {
            None
        };
        if counted == Counted::Every && split.is_some() {
            return (split, Some(hist));
        }
        pool.give(hist);
        (split, None)
    }
}

struct ByGain(Pending);

impl ByGain {
    pub(super) fn gain(&self) -> f64 {
        self.0.split.map_or(f64::NEG_INFINITY, |s| s.gain)
    }
}

impl PartialEq for ByGain {
    fn eq(&self, other: &Self) -> bool {
        self.gain() == other.gain()
    }
}
impl Eq for ByGain {}
impl PartialOrd for ByGain {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByGain {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.gain()
            .total_cmp(&other.gain())
            .then(other.0.node.cmp(&self.0.node))
    }
}

/// Routes one row of binned data through a grown tree.
pub fn route_binned(tree: &Tree, split_bins: &[u8], data: &Binned, row: usize) -> f32 {
    let mut i = 0;
    loop {
        let n = tree.node(i);
        if n.feature == LEAF {
            return n.value;
        }
        i = n.left as usize + usize::from(data.columns[n.feature as usize][row] > split_bins[i]);
    }
}
