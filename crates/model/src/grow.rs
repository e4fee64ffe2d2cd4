//! The histogram tree grower shared by every learner. Rows are binned once; a node's
//! histogram sums, per feature and bin, the gradient `g`, the hessian `h` and the row
//! count; the best split of each feature is one scan over its bins. A child's histogram
//! is its parent's minus its sibling's, so only the smaller child is ever counted.
//!
//! Classification trees use the same machinery: with `g = w·y` and `h = w`, Gini gain is
//! the Newton gain with no regularisation, and entropy is computed from the same sums.

use std::collections::BinaryHeap;

use rand::Rng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::binning::Binned;
use crate::tree::{LEAF, Node, Tree};

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
}

/// Gradients are summed as fixed-point integers: integer sums are exact, so a
/// histogram does not depend on the order of its rows, and a parent-minus-sibling
/// histogram is exactly the histogram of the other child. 2^32 steps per unit keeps
/// 1e-10 resolution and leaves room for ten million rows of weight up to 200.
const SCALE: f64 = 4_294_967_296.0;

fn quantize(v: f64) -> i64 {
    // Truncation, not rounding: the error is below 2^-32 either way, and `round` is a
    // library call in the hottest setup loop.
    (v * SCALE) as i64
}

#[derive(Clone, Copy, Default, Debug)]
struct Bin {
    g: i64,
    h: i64,
    n: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Sums {
    g: i64,
    h: i64,
    n: u32,
}

impl Sums {
    fn g(&self) -> f64 {
        self.g as f64 / SCALE
    }
    fn h(&self) -> f64 {
        self.h as f64 / SCALE
    }
}

#[derive(Clone, Copy, Debug)]
struct Split {
    feature: usize,
    bin: u8,
    gain: f64,
}

struct Pending {
    node: usize,
    start: usize,
    end: usize,
    depth: usize,
    sums: Sums,
    hist: Option<Vec<Bin>>,
    split: Option<Split>,
}

/// A finished tree plus, for each training row that reached it, its leaf's value: the
/// booster updates its scores from these without walking the tree again.
pub struct Grown {
    pub tree: Tree,
    /// The rows the tree was grown on, reordered so each leaf's rows are contiguous.
    pub rows: Vec<u32>,
    /// `(range of rows, value)` per leaf.
    pub leaves: Vec<(std::ops::Range<usize>, f32)>,
    /// For each node, the bin of its split (so rows outside the sample can be routed).
    pub split_bins: Vec<u8>,
}

pub struct Grower<'a> {
    data: &'a Binned,
    params: &'a GrowParams,
    g: Vec<i64>,
    h: Vec<i64>,
    /// How features map onto histogram bins; see [`Layout`].
    layout: Layout,
    /// Partition space, kept between trees (like `g` and `h`): buffers of this size
    /// are fresh pages each time they are allocated.
    scratch: Vec<u32>,
}

/// Where a feature's bins live in a histogram.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// The feature's own bins start here.
    Own(usize),
    /// A two-bin feature bundled with others it never overlaps: only its bin 1 is
    /// counted, here; its bin 0 is the node's total minus that.
    Bundled(usize),
}

/// Histogram layout: features grouped, each group counted once per row.
///
/// Two-bin columns that are never non-zero on the same row (the one-hot columns of
/// a categorical) are bundled into one group whose bin says which of them is set,
/// as LightGBM's exclusive feature bundling does. Counting reads one byte per group,
/// not per feature, and the splits found are exactly those of the unbundled columns.
/// Every group takes only the bins it has, so a histogram stays small enough for L1
/// and is cheap to clear, subtract and merge.
#[derive(Debug, Clone)]
struct Layout {
    places: Vec<Place>,
    /// Each feature's group.
    groups: Vec<usize>,
    /// Where each group's bins start; `hist_len` ends the last one.
    starts: Vec<usize>,
    hist_len: usize,
    /// Group bins row by row (`rows[r * n_groups + group]`).
    rows: Vec<u8>,
}

impl Layout {
    /// `rows` is needed only when nodes count every feature (no feature sampling).
    fn new(data: &Binned, bundle: bool, need_rows: bool) -> Self {
        let (n, nf) = (data.n_rows, data.n_features());
        // Members of each group, and for bundles the rows already taken.
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut taken: Vec<Option<Vec<bool>>> = Vec::new();
        for f in 0..nf {
            let col = &data.columns[f];
            if !(bundle && data.mappers[f].n_bins() == 2) {
                members.push(vec![f]);
                taken.push(None);
                continue;
            }
            let fits = |g: usize| match &taken[g] {
                Some(t) => members[g].len() < 255 && !col.iter().zip(t).any(|(&b, &t)| b != 0 && t),
                None => false,
            };
            let g = match (0..members.len()).find(|&g| fits(g)) {
                Some(g) => g,
                None => {
                    members.push(Vec::new());
                    taken.push(Some(vec![false; n]));
                    members.len() - 1
                }
            };
            members[g].push(f);
            let t = taken[g].as_mut().expect("a bundle");
            for (t, &b) in t.iter_mut().zip(col) {
                *t |= b != 0;
            }
        }
        let ng = members.len();
        let mut places = vec![Place::Own(0); nf];
        let mut groups = vec![0; nf];
        let mut starts = Vec::with_capacity(ng);
        let mut rows = vec![0u8; if need_rows { n * ng } else { 0 }];
        let mut hist_len = 0;
        for (g, fs) in members.iter().enumerate() {
            starts.push(hist_len);
            if taken[g].is_none() {
                let f = fs[0];
                places[f] = Place::Own(hist_len);
                groups[f] = g;
                for (r, &b) in data.columns[f].iter().enumerate().take(rows.len() / ng) {
                    rows[r * ng + g] = b;
                }
                hist_len += data.mappers[f].n_bins();
            } else {
                // Bin 0: none of the members is set; bin k: member k - 1 is.
                for (k, &f) in fs.iter().enumerate() {
                    places[f] = Place::Bundled(hist_len + k + 1);
                    groups[f] = g;
                    for (r, &b) in data.columns[f].iter().enumerate().take(rows.len() / ng) {
                        if b != 0 {
                            rows[r * ng + g] = (k + 1) as u8;
                        }
                    }
                }
                hist_len += fs.len() + 1;
            }
        }
        Self {
            places,
            groups,
            starts,
            hist_len,
            rows,
        }
    }

    fn group_bins(&self, feature: usize) -> std::ops::Range<usize> {
        let g = self.groups[feature];
        self.starts[g]..self.starts.get(g + 1).copied().unwrap_or(self.hist_len)
    }
}

/// Histogram buffers of one tree, reused from node to node: fresh allocations of this
/// size are fresh pages, and the kernel zeroing them cost more than the counting.
#[derive(Default)]
struct Pool(Vec<Vec<Bin>>);

impl Pool {
    fn take(&mut self, len: usize) -> Vec<Bin> {
        match self.0.pop() {
            Some(mut h) => {
                h.clear();
                h.resize(len, Bin::default());
                h
            }
            None => vec![Bin::default(); len],
        }
    }

    /// A buffer whose contents are stale except where the caller clears it.
    fn take_dirty(&mut self, len: usize) -> Vec<Bin> {
        match self.0.pop() {
            Some(mut h) => {
                h.resize(len, Bin::default());
                h
            }
            None => vec![Bin::default(); len],
        }
    }

    fn give(&mut self, h: Vec<Bin>) {
        self.0.push(h);
    }
}

impl<'a> Grower<'a> {
    /// A grower for `data`; set the rows' gradients before growing.
    pub fn new(data: &'a Binned, params: &'a GrowParams) -> Self {
        Self {
            data,
            params,
            g: vec![0; data.n_rows],
            h: vec![0; data.n_rows],
            // Forests sample features per node and count them column by column, so
            // they keep one group per feature.
            layout: Layout::new(
                data,
                params.max_features.is_none(),
                params.max_features.is_none_or(|k| k >= data.n_features()),
            ),
            scratch: Vec::new(),
        }
    }

    /// [`partition`], in two halves on two threads for large nodes; the halves'
    /// middle blocks are then swapped, so the order is that of one pass.
    fn partition(&self, rows: &mut [u32], scratch: &mut [u32], col: &[u8], bin: u8) -> usize {
        if !self.params.parallel || rows.len() < PARALLEL_WORK {
            return partition(rows, scratch, col, bin);
        }
        let m = rows.len() / 2;
        let (a, b) = {
            let (r1, r2) = rows.split_at_mut(m);
            let (s1, s2) = scratch.split_at_mut(m);
            rayon::join(
                || partition(r1, s1, col, bin),
                || partition(r2, s2, col, bin),
            )
        };
        // [L1 R1 | L2 R2] → [L1 L2 R1 R2]
        scratch[..m - a].copy_from_slice(&rows[a..m]);
        rows.copy_within(m..m + b, a);
        rows[a + b..m + b].copy_from_slice(&scratch[..m - a]);
        a + b
    }

    /// Sets each row's `(g, h)`: gradient and hessian for boosting, `(w·y, w)` for
    /// classification trees.
    pub fn set_gradients(&mut self, f: impl Fn(usize) -> (f64, f64) + Sync) {
        let set = |(i, (g, h)): (usize, (&mut i64, &mut i64))| {
            let (a, b) = f(i);
            *g = quantize(a);
            *h = quantize(b);
        };
        if self.params.parallel {
            self.g
                .par_iter_mut()
                .zip(&mut self.h)
                .enumerate()
                .for_each(set);
        } else {
            self.g.iter_mut().zip(&mut self.h).enumerate().for_each(set);
        }
    }

    /// Grows one tree on `rows` (indices into the data; rows with zero weight left out).
    pub fn grow(&mut self, mut rows: Vec<u32>, rng: &mut ChaCha8Rng) -> Grown {
        let p = self.params;
        let mut nodes: Vec<Node> = vec![Node::leaf(0.0)];
        let mut split_bins = vec![0u8];
        let mut leaves = Vec::new();
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(rows.len(), 0);
        let mut pool = Pool::default();

        let root_features = self.features(rng);
        let root_hist = self.histogram(&rows, &root_features, &mut pool);
        let root_sums = self.totals(&root_hist, root_features[0]);
        let root_split = self.best_split(&root_hist, &root_features, root_sums, 0);
        let root = Pending {
            node: 0,
            start: 0,
            end: rows.len(),
            depth: 0,
            sums: root_sums,
            hist: Some(root_hist),
            split: root_split,
        };

        // Depth-first keeps few histograms alive; best-first is needed when the number
        // of leaves is capped, so the best splits are the ones made.
        let best_first = p.max_leaf_nodes.is_some();
        let mut stack = vec![root];
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
            let can_grow = p.max_leaf_nodes.is_none_or(|m| n_leaves < m);
            let split = match item.split {
                Some(s) if can_grow => s,
                _ => {
                    if let Some(h) = item.hist.take() {
                        pool.give(h);
                    }
                    let value = self.leaf_value(item.sums);
                    nodes[item.node] = Node::leaf(value);
                    leaves.push((item.start..item.end, value));
                    continue;
                }
            };
            n_leaves += 1;
            let mid = self.partition(
                &mut rows[item.start..item.end],
                &mut scratch[item.start..item.end],
                &self.data.columns[split.feature],
                split.bin,
            ) + item.start;
            let left = nodes.len();
            nodes[item.node] = Node {
                feature: split.feature as u32,
                threshold: self.data.mappers[split.feature].uppers[split.bin as usize],
                left: left as u32,
                value: 0.0,
            };
            split_bins[item.node] = split.bin;
            nodes.push(Node::leaf(0.0));
            nodes.push(Node::leaf(0.0));
            split_bins.extend([0, 0]);

            let depth = item.depth + 1;
            let (l_range, r_range) = ((item.start, mid), (mid, item.end));
            let left_small = mid - item.start <= item.end - mid;
            let (small, large) = if left_small {
                (l_range, r_range)
            } else {
                (r_range, l_range)
            };
            let parent_hist = item.hist.take();
            let features = self.features(rng);
            let small_hist = self.histogram(&rows[small.0..small.1], &features, &mut pool);
            // Subtraction needs the parent's histogram over the same features.
            let large_hist = match parent_hist {
                Some(mut ph) if p.max_features.is_none() => {
                    for (a, b) in ph.iter_mut().zip(&small_hist) {
                        a.g -= b.g;
                        a.h -= b.h;
                        a.n -= b.n;
                    }
                    ph
                }
                other => {
                    if let Some(h) = other {
                        pool.give(h);
                    }
                    self.histogram(&rows[large.0..large.1], &features, &mut pool)
                }
            };
            let (l_hist, r_hist) = if left_small {
                (small_hist, large_hist)
            } else {
                (large_hist, small_hist)
            };
            for (node, (start, end), hist) in [(left, l_range, l_hist), (left + 1, r_range, r_hist)]
            {
                let sums = self.totals(&hist, features[0]);
                let split = self.best_split(&hist, &features, sums, depth);
                let keep_hist = p.max_features.is_none() && split.is_some();
                let hist = if keep_hist {
                    Some(hist)
                } else {
                    pool.give(hist);
                    None
                };
                let pending = Pending {
                    node,
                    start,
                    end,
                    depth,
                    sums,
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
        self.scratch = scratch;
        Grown {
            tree: Tree { nodes },
            rows,
            leaves,
            split_bins,
        }
    }

    fn features(&self, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let n = self.data.n_features();
        match self.params.max_features {
            Some(k) if k < n => {
                let mut f = sample(rng, n, k.max(1)).into_vec();
                f.sort_unstable();
                f
            }
            _ => (0..n).collect(),
        }
    }

    fn histogram(&self, rows: &[u32], features: &[usize], pool: &mut Pool) -> Vec<Bin> {
        let nf = self.data.n_features();
        if features.len() < nf {
            // Feature subsampling (forests): only the chosen columns are cleared and
            // counted; deep forests have many small nodes, where clearing every
            // feature's bins would cost more than the counting.
            let mut hist = pool.take_dirty(self.layout.hist_len);
            for &f in features {
                let col = &self.data.columns[f];
                let Place::Own(start) = self.layout.places[f] else {
                    unreachable!("forests do not bundle features")
                };
                let out = &mut hist[start..start + self.data.mappers[f].n_bins()];
                out.fill(Bin::default());
                for &r in rows {
                    let b = &mut out[col[r as usize] as usize];
                    b.g += self.g[r as usize];
                    b.h += self.h[r as usize];
                    b.n += 1;
                }
            }
            return hist;
        }
        let parallel = self.params.parallel && rows.len() * nf >= PARALLEL_WORK;
        if !parallel {
            let mut hist = pool.take(self.layout.hist_len);
            self.fill_rows(rows, &mut hist);
            return hist;
        }
        // Each thread counts its share of rows into its own histogram; integer sums
        // make the merged result independent of how rows were shared out.
        let threads = rayon::current_num_threads().max(1);
        let chunk = rows.len().div_ceil(threads).max(4096);
        let mut parts: Vec<Vec<Bin>> = (0..rows.len().div_ceil(chunk))
            .map(|_| pool.take(self.layout.hist_len))
            .collect();
        parts
            .par_iter_mut()
            .zip(rows.par_chunks(chunk))
            .for_each(|(hist, part)| self.fill_rows(part, hist));
        let mut parts = parts.into_iter();
        let mut hist = parts
            .next()
            .unwrap_or_else(|| pool.take(self.layout.hist_len));
        for other in parts {
            for (x, y) in hist.iter_mut().zip(&other) {
                x.g += y.g;
                x.h += y.h;
                x.n += y.n;
            }
            pool.give(other);
        }
        hist
    }

    /// Adds `rows` into a histogram over every group, reading each row once.
    fn fill_rows(&self, rows: &[u32], hist: &mut [Bin]) {
        let l = &self.layout;
        let ng = l.starts.len();
        for &r in rows {
            let r = r as usize;
            let (g, h) = (self.g[r], self.h[r]);
            let bins = &l.rows[r * ng..(r + 1) * ng];
            for (&offset, &b) in l.starts.iter().zip(bins) {
                let bin = &mut hist[offset + usize::from(b)];
                bin.g += g;
                bin.h += h;
                bin.n += 1;
            }
        }
    }

    /// The node's sums: every row is in exactly one bin of each group.
    fn totals(&self, hist: &[Bin], any_feature: usize) -> Sums {
        hist[self.layout.group_bins(any_feature)]
            .iter()
            .fold(Sums::default(), |s, b| Sums {
                g: s.g + b.g,
                h: s.h + b.h,
                n: s.n + b.n,
            })
    }

    fn best_split(
        &self,
        hist: &[Bin],
        features: &[usize],
        total: Sums,
        depth: usize,
    ) -> Option<Split> {
        let p = self.params;
        if p.max_depth.is_some_and(|d| depth >= d)
            || (total.n as usize) < p.min_samples_split.max(2)
            || (total.n as usize) < 2 * p.min_samples_leaf.max(1)
        {
            return None;
        }
        let parent = self.score(total);
        // Like scikit-learn, an impure classification node splits even when no split
        // improves impurity (XOR), or deep trees could not fit separable data.
        let min_gain = match p.criterion {
            Criterion::Newton => p.min_gain.max(1e-12),
            Criterion::Gini | Criterion::Entropy => {
                let impure = total.g > 0 && total.g < total.h;
                if !impure {
                    return None;
                }
                p.min_gain - 1e-9
            }
        };
        let mut best: Option<Split> = None;
        for &f in features {
            let bundled;
            let bins = match self.layout.places[f] {
                Place::Own(start) => &hist[start..start + self.data.mappers[f].n_bins()],
                Place::Bundled(at) => {
                    // Bin 1 was counted; bin 0 is every other row of the node.
                    let one = hist[at];
                    bundled = [
                        Bin {
                            g: total.g - one.g,
                            h: total.h - one.h,
                            n: total.n - one.n,
                        },
                        one,
                    ];
                    &bundled[..]
                }
            };
            let mut left = Sums::default();
            for (b, bin) in bins.iter().enumerate().take(bins.len().saturating_sub(1)) {
                left.g += bin.g;
                left.h += bin.h;
                left.n += bin.n;
                if (left.n as usize) < p.min_samples_leaf.max(1) || left.h() < p.min_child_weight {
                    continue;
                }
                let right = Sums {
                    g: total.g - left.g,
                    h: total.h - left.h,
                    n: total.n - left.n,
                };
                if (right.n as usize) < p.min_samples_leaf.max(1) || right.h() < p.min_child_weight
                {
                    // Moving more rows left only shrinks the right side further.
                    if (right.n as usize) < p.min_samples_leaf.max(1) {
                        break;
                    }
                    continue;
                }
                let gain = self.score(left) + self.score(right) - parent;
                if gain > min_gain && best.is_none_or(|s| gain > s.gain) {
                    best = Some(Split {
                        feature: f,
                        bin: b as u8,
                        gain,
                    });
                }
            }
        }
        best
    }

    /// Higher is better; a split's gain is the children's score minus the parent's.
    fn score(&self, s: Sums) -> f64 {
        let (g, h) = (s.g(), s.h());
        match self.params.criterion {
            Criterion::Newton => g * g / (h + self.params.lambda) / 2.0,
            Criterion::Gini if h <= 0.0 => 0.0,
            Criterion::Gini => g * g / h,
            Criterion::Entropy if h <= 0.0 => 0.0,
            Criterion::Entropy => {
                let p = (g / h).clamp(0.0, 1.0);
                let ent = |q: f64| if q <= 0.0 { 0.0 } else { -q * q.log2() };
                -h * (ent(p) + ent(1.0 - p))
            }
        }
    }

    fn leaf_value(&self, s: Sums) -> f32 {
        let (g, h) = (s.g(), s.h());
        match self.params.criterion {
            Criterion::Newton => (-g / (h + self.params.lambda)) as f32,
            Criterion::Gini | Criterion::Entropy if h > 0.0 => (g / h) as f32,
            Criterion::Gini | Criterion::Entropy => 0.0,
        }
    }
}

/// Stable partition of `rows` into bin <= `bin` then the rest; returns the left count.
/// Branch-free: every row is written to both sides and only the side it belongs to
/// advances; the split is unpredictable, and a branch on it mispredicted about half
/// the time.
fn partition(rows: &mut [u32], scratch: &mut [u32], col: &[u8], bin: u8) -> usize {
    let mut l = 0;
    let mut r = 0;
    for i in 0..rows.len() {
        let row = rows[i];
        let left = usize::from(col[row as usize] <= bin);
        rows[l] = row;
        scratch[r] = row;
        l += left;
        r += 1 - left;
    }
    rows[l..].copy_from_slice(&scratch[..r]);
    l
}

struct ByGain(Pending);

impl ByGain {
    fn gain(&self) -> f64 {
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
        let n = &tree.nodes[i];
        if n.feature == LEAF {
            return n.value;
        }
        i = n.left as usize + usize::from(data.columns[n.feature as usize][row] > split_bins[i]);
    }
}

/// A uniform random subset of `0..n` of size `k`, sorted.
pub fn subsample(rng: &mut ChaCha8Rng, n: usize, k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = sample(rng, n, k.min(n))
        .into_iter()
        .map(|i| i as u32)
        .collect();
    idx.sort_unstable();
    idx
}

/// Draws a bootstrap sample into `counts`: how often each row was drawn.
pub fn bootstrap(rng: &mut ChaCha8Rng, draws: usize, counts: &mut [u32]) {
    counts.fill(0);
    let n = counts.len();
    if n == 0 {
        return;
    }
    for _ in 0..draws {
        counts[rng.random_range(0..n)] += 1;
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::preprocess::Matrix;

    /// A one-hot categorical (three exclusive columns), a binary column that overlaps
    /// them, a binary column whose values are not 0/1, and a numeric column.
    fn data(n: usize, seed: u64) -> (Binned, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut columns: Vec<Vec<f32>> = (0..6).map(|_| Vec::with_capacity(n)).collect();
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let cat = rng.random_range(0..4); // 3 means "unknown": all one-hot columns 0
            for (k, col) in columns[..3].iter_mut().enumerate() {
                col.push(f32::from(u8::from(cat == k)));
            }
            let overlap = rng.random_bool(0.3);
            columns[3].push(f32::from(u8::from(overlap)));
            let odd = if rng.random_bool(0.5) { 3.0 } else { 7.0 };
            columns[4].push(odd);
            let x: f32 = rng.random_range(0.0..10.0);
            columns[5].push(x);
            let signal = f64::from(u8::from(cat == 1)) + f64::from(x) / 10.0
                - f64::from(u8::from(overlap && cat == 2));
            y.push(signal + rng.random_range(-0.5..0.5));
        }
        (Binned::new(&Matrix { n_rows: n, columns }, 255), y)
    }

    #[test]
    fn the_two_thread_partition_keeps_the_one_pass_order() {
        let (binned, _) = data(150_000, 3);
        let params = GrowParams {
            criterion: Criterion::Newton,
            max_depth: None,
            max_leaf_nodes: None,
            min_samples_leaf: 1,
            min_samples_split: 2,
            min_child_weight: 0.0,
            lambda: 0.0,
            min_gain: 0.0,
            max_features: None,
            parallel: true,
        };
        let grower = Grower::new(&binned, &params);
        let col = &binned.columns[5];
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        // A scattered subset of rows, as a deep node holds.
        let rows: Vec<u32> = (0..150_000u32).filter(|_| rng.random_bool(0.8)).collect();
        for bin in [0, 17, 100, 254] {
            let (mut a, mut b) = (rows.clone(), rows.clone());
            let mut scratch = vec![0; rows.len()];
            let la = grower.partition(&mut a, &mut scratch, col, bin);
            let lb = partition(&mut b, &mut scratch, col, bin);
            assert_eq!((la, &a), (lb, &b));
            assert!(a[..la].iter().all(|&r| col[r as usize] <= bin));
            assert!(a[la..].iter().all(|&r| col[r as usize] > bin));
        }
    }

    #[test]
    fn bundling_finds_exactly_the_unbundled_splits() {
        let (binned, y) = data(5000, 7);
        let params = |max_features| GrowParams {
            criterion: Criterion::Newton,
            max_depth: Some(6),
            max_leaf_nodes: None,
            min_samples_leaf: 5,
            min_samples_split: 2,
            min_child_weight: 0.0,
            lambda: 1.0,
            min_gain: 0.0,
            max_features,
            parallel: true,
        };
        let (bundled_params, plain_params) = (params(None), params(Some(6)));
        let mut bundled = Grower::new(&binned, &bundled_params);
        let mut plain = Grower::new(&binned, &plain_params);
        // The one-hot columns share a group; the overlapping and the non-0/1 columns
        // cannot join it (the 3/7 column is bin 1 on half the rows).
        assert_eq!(
            bundled.layout.starts.len(),
            4,
            "{:?}",
            bundled.layout.groups
        );
        assert_eq!(plain.layout.starts.len(), 6);
        let grad = |i: usize| (-y[i], 1.0);
        bundled.set_gradients(grad);
        plain.set_gradients(grad);
        let rows: Vec<u32> = (0..binned.n_rows as u32).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let a = bundled.grow(rows.clone(), &mut rng);
        let b = plain.grow(rows, &mut rng);
        assert!(a.tree.n_leaves() > 8);
        assert!(a.tree.nodes.iter().any(|n| n.feature < 3));
        assert_eq!(a.tree, b.tree);
    }
}
