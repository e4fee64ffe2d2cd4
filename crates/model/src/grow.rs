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

use std::borrow::Cow;
use std::collections::BinaryHeap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use rand::Rng;
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
    /// Whether [`Grown::leaves`] lists each leaf's rows (boosting updates its scores
    /// from them). When not, it stays empty, and a split whose children are both
    /// leaves does not partition its rows.
    pub leaf_rows: bool,
}

/// Gradients are summed as fixed-point integers: integer sums are exact, so a
/// histogram does not depend on the order of its rows, and a parent-minus-sibling
/// histogram is exactly the histogram of the other child. 2^32 steps per unit keeps
/// 1e-10 resolution and leaves room for ten million rows of weight up to 200.
pub(crate) const SCALE: f64 = 4_294_967_296.0;

pub(crate) fn quantize(v: f64) -> i64 {
    // Truncation, not rounding: the error is below 2^-32 either way, and `round` is a
    // library call in the hottest setup loop.
    (v * SCALE) as i64
}

/// A histogram bin holds the sums of its rows.
type Bin = Sums;

/// Sums of `g`, `h` and the row count over some rows: a node's or a bin's.
#[derive(Clone, Copy, Debug, Default)]
struct Sums {
    g: i64,
    h: i64,
    n: u32,
}

impl std::ops::AddAssign for Sums {
    fn add_assign(&mut self, o: Sums) {
        self.g += o.g;
        self.h += o.h;
        self.n += o.n;
    }
}

impl Sums {
    fn minus(self, o: Sums) -> Sums {
        Sums {
            g: self.g - o.g,
            h: self.h - o.h,
            n: self.n - o.n,
        }
    }
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
    /// The left child's sums; the right child's are the node's minus these.
    left: Sums,
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

pub struct Grower<'a> {
    data: &'a Binned,
    params: &'a GrowParams,
    stats: RowStats,
    /// How features map onto histogram bins; see [`Layout`]. Shared by the growers
    /// of one forest, as it depends only on the data.
    layout: Arc<Layout>,
    /// Partition space, kept between trees (like `g` and `h`): buffers of this size
    /// are fresh pages each time they are allocated.
    scratch: Vec<u32>,
    /// A classification tree's [`Record`]s and their partition space, kept likewise.
    records: Vec<Record>,
    record_scratch: Vec<Record>,
    /// A classification tree's rows, when it grows from indices.
    drawn: Vec<u32>,
    /// Histogram buffers, kept between trees for the same reason.
    pool: Pool,
    /// The last tree's node count: the next tree's buffers start about that large,
    /// rather than doubling their way up through fresh pages and copies.
    nodes_hint: usize,
}

/// What each row adds to a histogram bin.
enum RowStats {
    /// Boosting: fixed-point gradient and hessian.
    Newton { g: Vec<i64>, h: Vec<i64> },
    /// Classification trees grown from indices (see [`Record`] for when):
    /// `weight << 1 | label`, adding `(w·y, w)`. One byte per row instead of sixteen
    /// keeps a forest worker's rows in its core's L2 cache.
    Counts(Vec<u8>),
}

/// A classification row as a forest's tree grows on it: byte `u` is the row's bin in
/// counted column `u`, the top byte its code (`weight << 1 | label`). A node's rows
/// are moved together as it splits, so counting reads one stretch of memory where
/// row indices would gather from all over the data; in a forest's deep nodes those
/// gathers were cache misses. Data with more than [`RECORD_UNITS`] counted columns is
/// grown from indices instead.
type Record = u64;
const RECORD_UNITS: usize = 7;
pub(crate) const CODE_SHIFT: u32 = 56;

/// The rows a tree grows on, ordered so that each node's rows are one range.
enum Sample {
    /// Indices into the data, whose gradients or codes are in [`RowStats`].
    Rows { rows: Vec<u32>, scratch: Vec<u32> },
    /// Classification rows whole.
    Records {
        records: Vec<Record>,
        scratch: Vec<Record>,
    },
}

impl Sample {
    fn len(&self) -> usize {
        match self {
            Sample::Rows { rows, .. } => rows.len(),
            Sample::Records { records, .. } => records.len(),
        }
    }
}

/// The largest row weight a classification tree keeps. A bootstrap draw gives a row
/// this weight with probability below 1e-200, so capping it changes nothing.
pub const MAX_WEIGHT: u8 = 127;

/// A classification row's code: its weight (capped at [`MAX_WEIGHT`]) and 0/1 label.
pub(crate) fn class_code(weight: u8, y: u8) -> u8 {
    weight.min(MAX_WEIGHT) << 1 | (y & 1)
}

/// `(g, h)` of a classification row from its code.
fn count_stat(code: u8) -> (i64, i64) {
    let h = i64::from(code >> 1) << 32;
    (h * i64::from(code & 1), h)
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
///
/// Groups whose bin counts multiply to at most 256 are then counted together, as one
/// [`Product`] whose bin is their bins' combination; each group's own bins are the
/// product's marginals. Counting is bound by one read-modify-write per counted
/// column and row, so this cuts the work by the groups it merges (the insurance data
/// counts 4 columns instead of 7), and the sums stay exact.
#[derive(Debug, Clone)]
struct Layout {
    places: Vec<Place>,
    /// Where each counted column's bins start, and how many it has.
    units: Vec<(usize, usize)>,
    products: Vec<Product>,
    /// Bins in a histogram; the last is [`Layout::spare`].
    hist_len: usize,
    /// Counted columns' bins row by row (`bytes[r * units.len() + unit]`), for trees
    /// grown from indices: built at once for boosting, on first use otherwise.
    bytes: OnceLock<Vec<u8>>,
    /// The same as [`Record`]s with code 0, one per row, for classification trees
    /// with at most [`RECORD_UNITS`] counted columns (else empty).
    records: Vec<Record>,
    /// How to read each feature from its counted column.
    decoders: Vec<Decoder>,
}

/// How a feature is read from the byte of its counted column.
#[derive(Debug, Clone)]
struct Decoder {
    unit: usize,
    /// The feature's bin, for each byte the column can hold.
    bins: [u8; 256],
    /// The histogram bin where a row with that byte counts for this feature. A bundled
    /// feature's rows in its bin 0 go to the spare bin, as that bin is never counted.
    slots: [u32; 256],
}

/// Groups counted as one column: the counted bin is `sum(bin_k * stride_k)`, the
/// first member varying fastest.
#[derive(Debug, Clone)]
struct Product {
    /// Where the product's bins start.
    start: usize,
    len: usize,
    /// Each member group's bins: where they start, how many, and its features.
    members: Vec<(usize, usize, Vec<usize>)>,
}

impl Layout {
    /// Without `bundle`, each feature is its own group, counted on its own. With
    /// `records`, the rows are also laid out as [`Record`]s, if they fit.
    fn new(data: &Binned, bundle: bool, records: bool) -> Self {
        let (n, nf) = (data.n_rows, data.n_features());
        // Members of each group, and for bundles the rows already taken, as bitsets:
        // checking a column against a bundle is then a word-wise AND.
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut taken: Vec<Option<Vec<u64>>> = Vec::new();
        for f in 0..nf {
            if !(bundle && data.mappers[f].n_bins() == 2) {
                members.push(vec![f]);
                taken.push(None);
                continue;
            }
            let set: Vec<u64> = data.columns[f]
                .chunks(64)
                .map(|c| {
                    c.iter()
                        .enumerate()
                        .fold(0, |w, (i, &b)| w | u64::from(b != 0) << i)
                })
                .collect();
            let fits = |g: usize| match &taken[g] {
                Some(t) => members[g].len() < 255 && t.iter().zip(&set).all(|(a, b)| a & b == 0),
                None => false,
            };
            match (0..members.len()).find(|&g| fits(g)) {
                Some(g) => {
                    members[g].push(f);
                    let t = taken[g].as_mut().expect("a bundle");
                    for (t, s) in t.iter_mut().zip(&set) {
                        *t |= s;
                    }
                }
                None => {
                    members.push(vec![f]);
                    taken.push(Some(set));
                }
            }
        }
        let mut places = vec![Place::Own(0); nf];
        let mut starts = Vec::with_capacity(members.len());
        let mut bins = Vec::with_capacity(members.len());
        let mut group_rows: Vec<Cow<[u8]>> = Vec::with_capacity(members.len());
        let mut hist_len = 0;
        for (g, fs) in members.iter().enumerate() {
            starts.push(hist_len);
            if taken[g].is_none() {
                let f = fs[0];
                places[f] = Place::Own(hist_len);
                group_rows.push(Cow::Borrowed(&data.columns[f]));
                bins.push(data.mappers[f].n_bins());
            } else {
                // Bin 0: none of the members is set; bin k: member k - 1 is.
                let mut col = vec![0u8; n];
                for (k, &f) in fs.iter().enumerate() {
                    places[f] = Place::Bundled(hist_len + k + 1);
                    // A select, not a branch: a one-hot column is a coin toss per row.
                    let member = (k + 1) as u8;
                    for (c, &b) in col.iter_mut().zip(&data.columns[f]) {
                        *c = if b != 0 { member } else { *c };
                    }
                }
                group_rows.push(Cow::Owned(col));
                bins.push(fs.len() + 1);
            }
            hist_len += bins[g];
        }

        // First fit, smallest groups first: products then merge the many small groups
        // and stay small themselves, keeping the histogram short.
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by_key(|&g| bins[g]);
        let mut packs: Vec<(Vec<usize>, usize)> = Vec::new();
        for g in order {
            // Eight members of two bins already fill 256.
            let fits =
                |(gs, size): &&mut (Vec<usize>, usize)| gs.len() < 8 && *size * bins[g] <= 256;
            match packs.iter_mut().find(|p| bundle && fits(p)) {
                Some((gs, size)) => {
                    gs.push(g);
                    *size *= bins[g];
                }
                None => packs.push((vec![g], bins[g])),
            }
        }
        packs.sort_by_key(|(gs, _)| gs.iter().min().copied());

        let nu = packs.len();
        let mut units = Vec::with_capacity(nu);
        let mut products = Vec::new();
        // Each group's counted column, and the stride of its bins in that column.
        let mut counted_in = vec![(0, 1); members.len()];
        for (u, (gs, size)) in packs.into_iter().enumerate() {
            if let [g] = gs[..] {
                units.push((starts[g], bins[g]));
                counted_in[g] = (u, 1);
                continue;
            }
            units.push((hist_len, size));
            let mut stride = 1;
            for &g in &gs {
                counted_in[g] = (u, stride);
                stride *= bins[g];
            }
            products.push(Product {
                start: hist_len,
                len: size,
                members: gs
                    .iter()
                    .map(|&g| (starts[g], bins[g], members[g].clone()))
                    .collect(),
            });
            hist_len += size;
        }
        let spare = hist_len;
        let mut group_of = vec![0; nf];
        for (g, fs) in members.iter().enumerate() {
            for &f in fs {
                group_of[f] = g;
            }
        }
        let decoders = places
            .iter()
            .zip(group_of)
            .map(|(&place, g)| {
                let (unit, stride) = counted_in[g];
                let mut d = Decoder {
                    unit,
                    bins: [0; 256],
                    slots: [0; 256],
                };
                for byte in 0..256 {
                    let group_bin = byte / stride % bins[g];
                    (d.bins[byte], d.slots[byte]) = match place {
                        Place::Own(start) => (group_bin as u8, (start + group_bin) as u32),
                        // Bin 1 is the group's bin `at - start`; bin 0 is not counted.
                        Place::Bundled(at) if group_bin == at - starts[g] => (1, at as u32),
                        Place::Bundled(_) => (0, spare as u32),
                    };
                }
                d
            })
            .collect();
        // Row by row, each counted column's bin, in one parallel pass over the groups'
        // columns: this runs before any tree can start.
        let bins_of: Vec<Vec<(usize, &[u8])>> = (0..nu)
            .map(|u| {
                counted_in
                    .iter()
                    .zip(&group_rows)
                    .filter(|((unit, _), _)| *unit == u)
                    .map(|((_, stride), col)| (*stride, &col[..]))
                    .collect()
            })
            .collect();
        let unit_byte = |u: usize, r: usize| {
            let sum: usize = bins_of[u]
                .iter()
                .map(|&(stride, col)| usize::from(col[r]) * stride)
                .sum();
            sum as u8
        };
        let (bytes, records) = if records && nu <= RECORD_UNITS {
            let records = (0..n)
                .into_par_iter()
                .map(|r| (0..nu).fold(0, |rec, u| rec | Record::from(unit_byte(u, r)) << (8 * u)))
                .collect();
            (OnceLock::new(), records)
        } else {
            let mut bytes = vec![0; n * nu];
            bytes.par_chunks_mut(nu).enumerate().for_each(|(r, row)| {
                for (u, b) in row.iter_mut().enumerate() {
                    *b = unit_byte(u, r);
                }
            });
            (OnceLock::from(bytes), Vec::new())
        };
        Self {
            places,
            units,
            products,
            hist_len: spare + 1,
            bytes,
            records,
            decoders,
        }
    }

    /// The counted columns' bins row by row, one byte each: for a classification
    /// layout, laid out from its records the first time a tree grows from indices.
    fn bytes(&self) -> &[u8] {
        let nu = self.units.len();
        self.bytes.get_or_init(|| {
            let bytes = self.records.iter().map(|r| r.to_le_bytes());
            bytes.flat_map(|b| b.into_iter().take(nu)).collect()
        })
    }

    /// The bin that collects rows no feature's bins want (see [`Decoder::slots`]).
    fn spare(&self) -> usize {
        self.hist_len - 1
    }

    /// Sets the bins of the product members that hold any of `features` to the
    /// product's marginals; other members' bins are left stale, as nothing reads them.
    fn marginalize(&self, hist: &mut [Bin], features: &[usize]) {
        for p in &self.products {
            // Products come after every group's own bins.
            let (groups, product) = hist.split_at_mut(p.start);
            let product = &product[..p.len];
            let mut stride = 1;
            for (start, len, fs) in &p.members {
                if fs.iter().any(|f| features.contains(f)) {
                    // Product bin `(q * len + d) * stride + t` has this member in bin `d`.
                    for (d, out) in groups[*start..start + len].iter_mut().enumerate() {
                        let mut sum = Sums::default();
                        for block in product.chunks_exact(stride * len) {
                            for &b in &block[d * stride..(d + 1) * stride] {
                                sum += b;
                            }
                        }
                        *out = sum;
                    }
                }
                stride *= len;
            }
        }
    }
}

/// Histogram buffers, reused from node to node and tree to tree: fresh allocations of
/// this size are fresh pages, and the kernel zeroing them cost more than the counting.
#[derive(Default)]
struct Pool(Vec<Vec<Bin>>);

impl Pool {
    fn take(&mut self, len: usize) -> Vec<Bin> {
        let mut h = self.take_dirty(len);
        h.fill(Bin::default());
        h
    }

    /// A buffer whose contents are stale except where the caller clears it.
    fn take_dirty(&mut self, len: usize) -> Vec<Bin> {
        let mut h = self.0.pop().unwrap_or_default();
        h.resize(len, Bin::default());
        h
    }

    fn give(&mut self, h: Vec<Bin>) {
        self.0.push(h);
    }
}

impl<'a> Grower<'a> {
    /// A grower for `data`; set the rows' gradients before growing.
    pub fn new(data: &'a Binned, params: &'a GrowParams) -> Self {
        // Boosting grows from indices: its rows carry gradients, not codes.
        let records = params.criterion != Criterion::Newton;
        Self::with_layout(data, params, Arc::new(Layout::new(data, true, records)))
    }

    /// Another grower for the same data and parameters, sharing this one's layout
    /// (building it reads every row of every feature).
    pub fn sibling(&self) -> Self {
        Self::with_layout(self.data, self.params, Arc::clone(&self.layout))
    }

    fn with_layout(data: &'a Binned, params: &'a GrowParams, layout: Arc<Layout>) -> Self {
        Self {
            data,
            params,
            stats: RowStats::Counts(Vec::new()),
            layout,
            scratch: Vec::new(),
            records: Vec::new(),
            record_scratch: Vec::new(),
            drawn: Vec::new(),
            pool: Pool::default(),
            nodes_hint: 1,
        }
    }

    /// Splits a node's rows (`range` of the sample) into those going left, then those
    /// going right, keeping their order; returns how many go left.
    fn split_rows(
        &self,
        sample: &mut Sample,
        range: Range<usize>,
        feature: usize,
        bin: u8,
    ) -> usize {
        match sample {
            Sample::Rows { rows, scratch } => {
                let col = &self.data.columns[feature];
                self.partition(&mut rows[range.clone()], &mut scratch[range], |r, s| {
                    partition(r, s, col, bin)
                })
            }
            Sample::Records { records, scratch } => {
                let d = &self.layout.decoders[feature];
                self.partition(&mut records[range.clone()], &mut scratch[range], |r, s| {
                    partition_records(r, s, d, bin)
                })
            }
        }
    }

    /// A stable partition by `part`, in two halves on two threads for large nodes; the
    /// halves' middle blocks are then swapped, so the order is that of one pass.
    fn partition<T: Copy + Send>(
        &self,
        rows: &mut [T],
        scratch: &mut [T],
        part: impl Fn(&mut [T], &mut [T]) -> usize + Sync,
    ) -> usize {
        if !self.params.parallel || rows.len() < PARALLEL_WORK {
            return part(rows, scratch);
        }
        let m = rows.len() / 2;
        let (a, b) = {
            let (r1, r2) = rows.split_at_mut(m);
            let (s1, s2) = scratch.split_at_mut(m);
            rayon::join(|| part(r1, s1), || part(r2, s2))
        };
        // [L1 R1 | L2 R2] → [L1 L2 R1 R2]
        scratch[..m - a].copy_from_slice(&rows[a..m]);
        rows.copy_within(m..m + b, a);
        rows[a + b..m + b].copy_from_slice(&scratch[..m - a]);
        a + b
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
    fn newton_stats(&mut self) -> (&mut [i64], &mut [i64]) {
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
    fn set_class_weights(&mut self, weight: impl Fn(usize) -> u8, y: &[u8]) {
        if !matches!(self.stats, RowStats::Counts(_)) {
            self.stats = RowStats::Counts(Vec::new());
        }
        let RowStats::Counts(codes) = &mut self.stats else {
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
    fn reserve_rows<T>(&self, buf: &mut Vec<T>) {
        buf.reserve(self.data.n_rows.saturating_sub(buf.len()));
    }

    /// Grows a tree on `sample`, whose rows it leaves ordered leaf by leaf. Returns the
    /// tree, the leaves' ranges and values (with [`GrowParams::leaf_rows`]), and each
    /// node's split bin.
    fn grow_sample(
        &mut self,
        sample: &mut Sample,
        rng: &mut ChaCha8Rng,
    ) -> (Tree, Leaves, Vec<u8>) {
        let p = self.params;
        let capacity = self.nodes_hint + self.nodes_hint / 8;
        let mut nodes: Vec<Node> = Vec::with_capacity(capacity);
        nodes.push(Node::leaf(0.0));
        let mut split_bins = Vec::with_capacity(capacity);
        split_bins.push(0u8);
        let mut leaves = Vec::new();
        let mut pool = std::mem::take(&mut self.pool);

        let n = sample.len();
        let mut features = Vec::with_capacity(self.data.n_features());
        self.features(rng, &mut features);
        let root_sums = self.sums(sample);
        let open = self.may_split(root_sums, 0);
        let hist = open.then(|| {
            let all = self.counts_all(n);
            (self.histogram(sample, 0..n, &features, all, &mut pool), all)
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
            let can_grow = p.max_leaf_nodes.is_none_or(|m| n_leaves < m);
            let split = match item.split {
                Some(s) if can_grow => s,
                _ => {
                    if let Some(h) = item.hist.take() {
                        pool.give(h);
                    }
                    let value = self.leaf_value(item.sums);
                    nodes[item.node] = Node::leaf(value);
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
            nodes.push(Node::leaf(0.0));
            nodes.push(Node::leaf(0.0));
            split_bins.extend([0, 0]);

            let ranges = [(item.start, mid), (mid, item.end)];
            self.features(rng, &mut features);
            let small = usize::from(mid - item.start > item.end - mid);
            let large = 1 - small;
            // A kept histogram counts every feature, so the larger child's is the
            // parent's minus the smaller child's.
            let parent_hist = item.hist.take();
            let subtract = open[large] && parent_hist.is_some();
            let mut hists: [Option<(Vec<Bin>, bool)>; 2] = [None, None];
            if open[small] || subtract {
                let (start, end) = ranges[small];
                let all = subtract || self.counts_all(end - start);
                let hist = self.histogram(sample, start..end, &features, all, &mut pool);
                hists[small] = Some((hist, all));
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
                    hists[large] = Some((ph, true));
                }
                (ph, _) => {
                    if let Some(h) = ph {
                        pool.give(h);
                    }
                    if open[large] {
                        let (start, end) = ranges[large];
                        let all = self.counts_all(end - start);
                        let hist = self.histogram(sample, start..end, &features, all, &mut pool);
                        hists[large] = Some((hist, all));
                    }
                }
            }
            for (k, hist) in hists.into_iter().enumerate() {
                let (split, hist) =
                    self.split_and_keep(hist, open[k], &features, sums[k], &mut pool);
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
        self.pool = pool;
        self.nodes_hint = nodes.len();
        (Tree { nodes }, leaves, split_bins)
    }

    /// The best split of a node from its histogram (`true`: counted over every
    /// feature), and the histogram back if its children can subtract from it: when
    /// the node splits and the histogram counts every feature. Otherwise it returns
    /// to the pool.
    fn split_and_keep(
        &self,
        hist: Option<(Vec<Bin>, bool)>,
        open: bool,
        features: &[usize],
        sums: Sums,
        pool: &mut Pool,
    ) -> (Option<Split>, Option<Vec<Bin>>) {
        let Some((hist, all)) = hist else {
            return (None, None);
        };
        let split = if open {
            self.best_split(&hist, features, sums)
        } else {
            None
        };
        if all && split.is_some() {
            return (split, Some(hist));
        }
        pool.give(hist);
        (split, None)
    }

    /// Sets `out` to the features a node may split on, in order: all of them, or
    /// `max_features` drawn without replacement (the head of a partial shuffle).
    fn features(&self, rng: &mut ChaCha8Rng, out: &mut Vec<usize>) {
        let n = self.data.n_features();
        out.clear();
        out.extend(0..n);
        if let Some(k) = self.params.max_features.filter(|&k| k < n) {
            let k = k.max(1);
            for i in 0..k {
                out.swap(i, rng.random_range(i..n));
            }
            out.truncate(k);
            out.sort_unstable();
        }
    }

    /// Whether a node of `n` rows counts every feature, though it may split on only a
    /// sample of them: its children's histograms are then one count and one
    /// subtraction, not two counts. Counting every group reads each row's bins in one
    /// record, where counting a sample gathers from a column per feature. Small nodes
    /// count just their sample, as clearing every bin would cost more.
    fn counts_all(&self, n: usize) -> bool {
        self.params.max_features.is_none() || n >= self.layout.hist_len
    }

    /// The sums of all the sample's rows.
    fn sums(&self, sample: &Sample) -> Sums {
        fn sum<T: Copy>(rows: &[T], stat: impl Fn(T) -> (i64, i64)) -> Sums {
            rows.iter().fold(Sums::default(), |s, &r| {
                let (g, h) = stat(r);
                Sums {
                    g: s.g + g,
                    h: s.h + h,
                    n: s.n + 1,
                }
            })
        }
        match (sample, &self.stats) {
            (Sample::Records { records, .. }, _) => sum(records, record_stat),
            (Sample::Rows { rows, .. }, RowStats::Newton { g, h }) => {
                sum(rows, |r| (g[r as usize], h[r as usize]))
            }
            (Sample::Rows { rows, .. }, RowStats::Counts(codes)) => {
                sum(rows, |r| count_stat(codes[r as usize]))
            }
        }
    }

    /// The histogram of the sample's rows in `range`: over every group when `all`,
    /// else over `features` only (other bins are stale).
    fn histogram(
        &self,
        sample: &Sample,
        range: Range<usize>,
        features: &[usize],
        all: bool,
        pool: &mut Pool,
    ) -> Vec<Bin> {
        // One copy of the counting loops per kind of row, so the row's `(g, h)` is
        // computed inline.
        match (sample, &self.stats) {
            (Sample::Records { records, .. }, _) => self.histogram_with(
                &records[range],
                features,
                all,
                pool,
                |rows, hist| self.fill_counts(rows, hist, count_records),
                |rows, hist| self.fill_record_features(rows, features, hist),
            ),
            (Sample::Rows { rows, .. }, RowStats::Newton { g, h }) => self.histogram_with(
                &rows[range],
                features,
                all,
                pool,
                |rows, hist| {
                    hist.fill(Bin::default());
                    self.fill_gradients(rows, hist, g, h)
                },
                |rows, hist| self.fill_features(rows, features, hist, |r| (g[r], h[r])),
            ),
            (Sample::Rows { rows, .. }, RowStats::Counts(codes)) => self.histogram_with(
                &rows[range],
                features,
                all,
                pool,
                |rows, hist| {
                    self.fill_counts(rows, hist, |rows, packed| {
                        count_indexed(rows, self.layout.bytes(), codes, packed)
                    })
                },
                |rows, hist| self.fill_features(rows, features, hist, |r| count_stat(codes[r])),
            ),
        }
    }

    /// [`histogram`](Self::histogram) with the counting loops for its kind of rows:
    /// `fill` sets every counted column's bins, `fill_features` the features' bins.
    fn histogram_with<T: Sync>(
        &self,
        rows: &[T],
        features: &[usize],
        all: bool,
        pool: &mut Pool,
        fill: impl Fn(&[T], &mut [Bin]) + Sync,
        fill_features: impl FnOnce(&[T], &mut [Bin]),
    ) -> Vec<Bin> {
        if !all {
            let mut hist = pool.take_dirty(self.layout.hist_len);
            fill_features(rows, &mut hist);
            return hist;
        }
        let nf = self.data.n_features();
        let parallel = self.params.parallel && rows.len() * nf >= PARALLEL_WORK;
        if !parallel {
            let mut hist = pool.take_dirty(self.layout.hist_len);
            fill(rows, &mut hist);
            self.layout.marginalize(&mut hist, features);
            return hist;
        }
        // Each thread counts its share of rows into its own histogram; integer sums
        // make the merged result independent of how rows were shared out.
        let threads = rayon::current_num_threads().max(1);
        let chunk = rows.len().div_ceil(threads).max(4096);
        let mut parts: Vec<Vec<Bin>> = (0..rows.len().div_ceil(chunk))
            .map(|_| pool.take_dirty(self.layout.hist_len))
            .collect();
        parts
            .par_iter_mut()
            .zip(rows.par_chunks(chunk))
            .for_each(|(hist, part)| fill(part, hist));
        let mut parts = parts.into_iter();
        let mut hist = parts
            .next()
            .unwrap_or_else(|| pool.take(self.layout.hist_len));
        for other in parts {
            for (x, &y) in hist.iter_mut().zip(&other) {
                *x += y;
            }
            pool.give(other);
        }
        self.layout.marginalize(&mut hist, features);
        hist
    }

    /// Sets the bins of `features` alone to the sums of `rows` (indices).
    fn fill_features(
        &self,
        rows: &[u32],
        features: &[usize],
        hist: &mut [Bin],
        stat: impl Fn(usize) -> (i64, i64),
    ) {
        let mut columns: Vec<(&[u8], usize)> = Vec::with_capacity(features.len());
        for &f in features {
            let col = &self.data.columns[f][..];
            match self.layout.places[f] {
                // Adding into memory, most rows would wait for the previous row's
                // store to the same bin; bin 1's sums fit in registers instead,
                // and bin 0 is every other row.
                Place::Bundled(at) => hist[at] = count_binary(rows, col, &stat).0,
                Place::Own(start) if self.data.mappers[f].n_bins() == 2 => {
                    let (ones, all) = count_binary(rows, col, &stat);
                    hist[start] = all.minus(ones);
                    hist[start + 1] = ones;
                }
                Place::Own(start) => {
                    hist[start..start + self.data.mappers[f].n_bins()].fill(Bin::default());
                    columns.push((col, start));
                }
            }
        }
        // The other features are counted together, reading each row once; their
        // counts are independent chains of additions rather than one.
        if !columns.is_empty() {
            for &r in rows {
                let r = r as usize;
                let (g, h) = stat(r);
                for &(col, start) in &columns {
                    let b = &mut hist[start + usize::from(col[r])];
                    b.g += g;
                    b.h += h;
                    b.n += 1;
                }
            }
        }
    }

    /// Sets the bins of `features` alone to the sums of `records`. Small nodes only:
    /// the bins a record adds to come from per-feature tables.
    fn fill_record_features(&self, records: &[Record], features: &[usize], hist: &mut [Bin]) {
        let l = &self.layout;
        // Nothing reads the spare bin, but a reused histogram's sums there would
        // otherwise grow from node to node until they overflowed.
        hist[l.spare()] = Bin::default();
        let mut columns: Vec<(u32, &[u32; 256])> = Vec::with_capacity(features.len());
        for &f in features {
            match l.places[f] {
                Place::Own(start) => {
                    hist[start..start + self.data.mappers[f].n_bins()].fill(Bin::default())
                }
                Place::Bundled(at) => hist[at] = Bin::default(),
            }
            let d = &l.decoders[f];
            columns.push((8 * d.unit as u32, &d.slots));
        }
        for &rec in records {
            let (g, h) = record_stat(rec);
            for &(shift, slots) in &columns {
                let b = &mut hist[slots[usize::from((rec >> shift) as u8)] as usize];
                b.g += g;
                b.h += h;
                b.n += 1;
            }
        }
    }

    /// Sets the bins of every counted column of `hist` to the sums of `rows` (indices
    /// or records), reading each row once: `count` counts a chunk of them into this
    /// thread's counting space (see [`Self::fill_packed`]). Product members' bins are
    /// left to [`Layout::marginalize`].
    fn fill_counts<T>(
        &self,
        rows: &[T],
        hist: &mut [Bin],
        count: impl Fn(&[T], &mut [[u64; 256]]),
    ) {
        thread_local! {
            /// Counting space, reused: allocating it per node was 2.5% of a
            /// full-depth forest's fit in perf (zeroing 256 bins a column, fresh pages).
            static PACKED: std::cell::RefCell<Vec<[u64; 256]>> = const {
                std::cell::RefCell::new(Vec::new())
            };
        }
        let nu = self.layout.units.len();
        if rows.is_empty() {
            hist.fill(Bin::default());
        }
        PACKED.with_borrow_mut(|packed| {
            packed.resize(nu, [0; 256]);
            self.fill_packed(rows, hist, &mut packed[..nu], count);
        });
    }

    /// Counts `rows` into `packed` (one array per counted column: 256 bins, so a bin
    /// byte indexes it unchecked) and unpacks the sums into `hist`. A bin's three sums
    /// are packed into one `u64` (21 bits of rows, 21 of weight, 22 of weighted
    /// labels), so each row adds once per column instead of three times: counting is
    /// bound by stores. A chunk of `2^14` rows of weight up to 127 cannot carry out of
    /// a field; each chunk is then unpacked into `hist`.
    fn fill_packed<T>(
        &self,
        rows: &[T],
        hist: &mut [Bin],
        packed: &mut [[u64; 256]],
        count: impl Fn(&[T], &mut [[u64; 256]]),
    ) {
        const CHUNK: usize = 1 << 14;
        const FIELD: u64 = (1 << 21) - 1;
        let l = &self.layout;
        for (k, chunk) in rows.chunks(CHUNK).enumerate() {
            // Only a column's own bins are ever set, so only they need clearing.
            for (unit, &(_, len)) in packed.iter_mut().zip(&l.units) {
                unit[..len].fill(0);
            }
            count(chunk, packed);
            for (unit, &(start, len)) in packed.iter().zip(&l.units) {
                for (bin, &p) in hist[start..start + len].iter_mut().zip(unit) {
                    let sums = Sums {
                        n: (p & FIELD) as u32,
                        h: (((p >> 21) & FIELD) as i64) << 32,
                        g: ((p >> 42) as i64) << 32,
                    };
                    // The first chunk sets the histogram, so it need not be cleared.
                    if k == 0 {
                        *bin = sums;
                    } else {
                        *bin += sums;
                    }
                }
            }
        }
    }

    /// Sets every counted column's bins to the sums of boosting's `rows`, adding into
    /// a cleared histogram.
    fn fill_gradients(&self, rows: &[u32], hist: &mut [Bin], g: &[i64], h: &[i64]) {
        let l = &self.layout;
        let nu = l.units.len();
        let bytes = l.bytes();
        for &r in rows {
            let r = r as usize;
            let (g, h) = (g[r], h[r]);
            let bins = &bytes[r * nu..(r + 1) * nu];
            for (&(offset, _), &b) in l.units.iter().zip(bins) {
                let bin = &mut hist[offset + usize::from(b)];
                bin.g += g;
                bin.h += h;
                bin.n += 1;
            }
        }
    }

    /// Whether a node with these sums at this depth may be split at all.
    fn may_split(&self, total: Sums, depth: usize) -> bool {
        let p = self.params;
        let n = total.n as usize;
        let pure = match p.criterion {
            Criterion::Newton => false,
            Criterion::Gini | Criterion::Entropy => total.g <= 0 || total.g >= total.h,
        };
        p.max_depth.is_none_or(|d| depth < d)
            && n >= p.min_samples_split.max(2)
            && n >= 2 * p.min_samples_leaf.max(1)
            && !pure
    }

    /// The best split of a node that [`may split`](Self::may_split).
    fn best_split(&self, hist: &[Bin], features: &[usize], total: Sums) -> Option<Split> {
        let p = self.params;
        let parent = self.score(total);
        // Like scikit-learn, an impure classification node splits even when no split
        // improves impurity (XOR), or deep trees could not fit separable data.
        let min_gain = match p.criterion {
            Criterion::Newton => p.min_gain.max(1e-12),
            Criterion::Gini | Criterion::Entropy => p.min_gain - 1e-9,
        };
        let mut best: Option<Split> = None;
        for &f in features {
            let bundled;
            let bins = match self.layout.places[f] {
                Place::Own(start) => &hist[start..start + self.data.mappers[f].n_bins()],
                Place::Bundled(at) => {
                    // Bin 1 was counted; bin 0 is every other row of the node.
                    let one = hist[at];
                    bundled = [total.minus(one), one];
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
                let right = total.minus(left);
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
                        left,
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

/// What a classification row adds to a packed bin: one row, its weight, and its
/// weight again if its label is 1.
fn packed_add(code: u8) -> u64 {
    let code = u64::from(code);
    let w = code >> 1;
    1 | w << 21 | (w * (code & 1)) << 42
}

/// `(g, h)` of a record, as [`count_stat`] of its code.
fn record_stat(rec: Record) -> (i64, i64) {
    count_stat((rec >> CODE_SHIFT) as u8)
}

/// Counts rows given as indices into `packed`: each row's code and bins (`recs`, one
/// byte per counted column) are looked up.
fn count_indexed(rows: &[u32], recs: &[u8], codes: &[u8], packed: &mut [[u64; 256]]) {
    match packed.len() {
        1 => count_packed::<1>(rows, recs, codes, packed),
        2 => count_packed::<2>(rows, recs, codes, packed),
        3 => count_packed::<3>(rows, recs, codes, packed),
        4 => count_packed::<4>(rows, recs, codes, packed),
        5 => count_packed::<5>(rows, recs, codes, packed),
        6 => count_packed::<6>(rows, recs, codes, packed),
        nu => {
            for &r in rows {
                let r = r as usize;
                let add = packed_add(codes[r]);
                let bins = &recs[r * nu..(r + 1) * nu];
                for (unit, &b) in packed.iter_mut().zip(bins) {
                    unit[usize::from(b)] += add;
                }
            }
        }
    }
}

/// Counts records into `packed`, one array per counted column.
fn count_records(records: &[Record], packed: &mut [[u64; 256]]) {
    match packed.len() {
        1 => count_records_of::<1>(records, packed),
        2 => count_records_of::<2>(records, packed),
        3 => count_records_of::<3>(records, packed),
        4 => count_records_of::<4>(records, packed),
        5 => count_records_of::<5>(records, packed),
        6 => count_records_of::<6>(records, packed),
        7 => count_records_of::<7>(records, packed),
        nu => unreachable!("records hold at most {RECORD_UNITS} counted columns, not {nu}"),
    }
}

/// [`count_records`] for `N` counted columns, unrolled.
fn count_records_of<const N: usize>(records: &[Record], packed: &mut [[u64; 256]]) {
    let packed: &mut [[u64; 256]; N] = packed.try_into().expect("one array per column");
    for &rec in records {
        let add = packed_add((rec >> CODE_SHIFT) as u8);
        for (u, unit) in packed.iter_mut().enumerate() {
            unit[usize::from((rec >> (8 * u)) as u8)] += add;
        }
    }
}

/// The packed counting loop for `N` counted columns, unrolled: with `N` known, a
/// row's bins are one load and its adds need no loop.
fn count_packed<const N: usize>(
    rows: &[u32],
    recs: &[u8],
    codes: &[u8],
    packed: &mut [[u64; 256]],
) {
    let packed: &mut [[u64; 256]; N] = packed.try_into().expect("one array per column");
    // Deep nodes' rows are scattered: fetching a row's code and bins a few dozen rows
    // ahead hides the cache misses that otherwise stall the adds.
    const AHEAD: usize = 32;
    for (i, &r) in rows.iter().enumerate() {
        if let Some(&ahead) = rows.get(i + AHEAD) {
            crate::simd::prefetch(codes, ahead as usize);
            crate::simd::prefetch(recs, ahead as usize * N);
        }
        let r = r as usize;
        let add = packed_add(codes[r]);
        let bins: [u8; N] = recs[r * N..(r + 1) * N].try_into().expect("N bins a row");
        for (unit, b) in packed.iter_mut().zip(bins) {
            unit[usize::from(b)] += add;
        }
    }
}

/// The sums of the rows whose bin is 1, and of all rows, for a two-bin column.
fn count_binary(rows: &[u32], col: &[u8], stat: &impl Fn(usize) -> (i64, i64)) -> (Bin, Bin) {
    let (mut ones, mut all) = (Bin::default(), Bin::default());
    for &r in rows {
        let r = r as usize;
        let (g, h) = stat(r);
        // All-ones when the row's bin is 1, zero otherwise.
        let mask = -i64::from(col[r] & 1);
        ones.g += g & mask;
        ones.h += h & mask;
        ones.n += u32::from(col[r] & 1);
        all.g += g;
        all.h += h;
    }
    all.n = rows.len() as u32;
    (ones, all)
}

/// Stable partition of `rows` into bin <= `bin` then the rest; returns the left count.
/// Branch-free: every row is written to both sides and only the side it belongs to
/// advances; the split is unpredictable, and a branch on it mispredicted about half
/// the time.
fn partition(rows: &mut [u32], scratch: &mut [u32], col: &[u8], bin: u8) -> usize {
    let (mut l, mut r, done) = crate::simd::partition_prefix(rows, scratch, col, bin);
    for i in done..rows.len() {
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

/// [`partition`] for records, by the feature that `decoder` reads: a record goes
/// left when the feature's bin is at most `bin`.
fn partition_records(
    records: &mut [Record],
    scratch: &mut [Record],
    decoder: &Decoder,
    bin: u8,
) -> usize {
    let shift = 8 * decoder.unit as u32;
    let (mut l, mut r, done) =
        crate::simd::partition_records_prefix(records, scratch, shift, &decoder.bins, bin);
    for i in done..records.len() {
        let rec = records[i];
        let left = usize::from(decoder.bins[usize::from((rec >> shift) as u8)] <= bin);
        records[l] = rec;
        scratch[r] = rec;
        l += left;
        r += 1 - left;
    }
    records[l..].copy_from_slice(&scratch[..r]);
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

    /// A booster's tree parameters with no limits but `max_depth`.
    fn boosting(max_depth: Option<usize>) -> GrowParams {
        GrowParams {
            criterion: Criterion::Newton,
            max_depth,
            max_leaf_nodes: None,
            min_samples_leaf: 1,
            min_samples_split: 2,
            min_child_weight: 0.0,
            lambda: 0.0,
            min_gain: 0.0,
            max_features: None,
            parallel: true,
            leaf_rows: true,
        }
    }

    #[test]
    fn the_two_thread_partition_keeps_the_one_pass_order() {
        let (binned, _) = data(150_000, 3);
        let params = boosting(None);
        let grower = Grower::new(&binned, &params);
        let col = &binned.columns[5];
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        // A scattered subset of rows, as a deep node holds.
        let rows: Vec<u32> = (0..150_000u32).filter(|_| rng.random_bool(0.8)).collect();
        for bin in [0, 17, 100, 254] {
            let (mut a, mut b) = (rows.clone(), rows.clone());
            let mut scratch = vec![0; rows.len()];
            let la = grower.partition(&mut a, &mut scratch, |r, s| partition(r, s, col, bin));
            let lb = partition(&mut b, &mut scratch, col, bin);
            assert_eq!((la, &a), (lb, &b));
            assert!(a[..la].iter().all(|&r| col[r as usize] <= bin));
            assert!(a[la..].iter().all(|&r| col[r as usize] > bin));
        }
    }

    /// The vector kernel must agree with the scalar loop it speeds up: a stable
    /// partition, whatever the length, order and position of the rows (the last rows
    /// of a column are left to the scalar loop).
    #[test]
    fn partition_is_a_stable_filter() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let col: Vec<u8> = (0..5000).map(|_| rng.random()).collect();
        for len in [0, 1, 15, 16, 17, 100, 1000, 4999] {
            for sorted in [false, true] {
                let mut rows: Vec<u32> = (0..len)
                    .map(|k| match k % 7 {
                        0 => 4997 + rng.random_range(0..3),
                        _ => rng.random_range(0..5000),
                    })
                    .collect();
                if sorted {
                    rows.sort_unstable();
                }
                for bin in [0, 90, 200, 255] {
                    let left: Vec<u32> = rows
                        .iter()
                        .copied()
                        .filter(|&r| col[r as usize] <= bin)
                        .collect();
                    let right = rows.iter().copied().filter(|&r| col[r as usize] > bin);
                    let expected: Vec<u32> = left.iter().copied().chain(right).collect();
                    let mut got = rows.clone();
                    let l = partition(&mut got, &mut vec![0; len], &col, bin);
                    assert_eq!((l, &got), (left.len(), &expected), "{len} rows, bin {bin}");
                }
            }
        }
    }

    /// Records split as the rows they hold would: a stable filter by the split
    /// feature's bin, for every kind of feature (a numeric column, a one-hot member of
    /// a bundle, members of a product), at lengths around the vector kernel's steps.
    #[test]
    fn record_partition_is_a_stable_filter() {
        let (binned, _) = data(3000, 4);
        let layout = Layout::new(&binned, true, true);
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 1000, 3000] {
            let rows: Vec<u32> = (0..len).map(|_| rng.random_range(0..3000)).collect();
            let records: Vec<Record> = rows
                .iter()
                .map(|&r| layout.records[r as usize] | u64::from(r % 256) << CODE_SHIFT)
                .collect();
            for (f, d) in layout.decoders.iter().enumerate() {
                for bin in [0, 1, 2, 100, 254, 255] {
                    let col = &binned.columns[f];
                    let (left, right): (Vec<_>, Vec<_>) = rows
                        .iter()
                        .zip(&records)
                        .partition(|(r, _)| col[**r as usize] <= bin);
                    let expected: Vec<Record> =
                        left.iter().chain(&right).map(|(_, rec)| **rec).collect();
                    let mut got = records.clone();
                    let l = partition_records(&mut got, &mut vec![0; len], d, bin);
                    assert_eq!(
                        (l, &got),
                        (left.len(), &expected),
                        "{len} rows, feature {f}, bin {bin}"
                    );
                }
            }
        }
    }

    /// The vectorizable `exp` stays within 4 ulps of the library's, and the booster's
    /// gradients from it match those from the library's sigmoid to the last fixed-point
    /// step (they are truncated to 2^-32).
    #[test]
    fn boosting_gradients_match_the_library_sigmoid() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for _ in 0..100_000 {
            let x: f64 = rng.random_range(-700.0..700.0);
            let (a, b) = (crate::simd::exp(x), x.exp());
            assert!(
                (a - b).abs() <= 4.0 * f64::EPSILON * b,
                "exp({x}): {a} vs {b}"
            );
        }
        assert_eq!(crate::simd::exp(0.0), 1.0);
        // Saturating, not wrapping, far outside.
        let exp = crate::simd::exp;
        assert_eq!((exp(-1e9), exp(1e9)), (exp(-708.0), exp(708.0)));
        assert!(exp(708.0) > 1e307 && exp(-708.0) < 1e-307);

        let (binned, _) = data(10_007, 2);
        let params = boosting(Some(3));
        let scores: Vec<f64> = (0..binned.n_rows)
            .map(|i| match i % 100 {
                0 => 800.0,
                1 => -800.0,
                _ => rng.random_range(-30.0..30.0),
            })
            .collect();
        let y: Vec<u8> = (0..binned.n_rows).map(|_| rng.random_range(0..2)).collect();
        let mut fast = Grower::new(&binned, &params);
        fast.set_logistic_gradients(&scores, &y);
        let mut library = Grower::new(&binned, &params);
        library.set_gradients(|i| {
            let p = crate::learners::sigmoid(scores[i]);
            (p - f64::from(y[i]), (p * (1.0 - p)).max(1e-16))
        });
        let (RowStats::Newton { g: g1, h: h1 }, RowStats::Newton { g: g2, h: h2 }) =
            (&fast.stats, &library.stats)
        else {
            panic!("gradients set")
        };
        for i in 0..binned.n_rows {
            assert!(
                (g1[i] - g2[i]).abs() <= 1 && (h1[i] - h2[i]).abs() <= 1,
                "row {i}"
            );
        }
    }

    #[test]
    fn bundling_finds_exactly_the_unbundled_splits() {
        let (binned, y) = data(5000, 7);
        let params = GrowParams {
            min_samples_leaf: 5,
            lambda: 1.0,
            ..boosting(Some(6))
        };
        let mut bundled = Grower::new(&binned, &params);
        let mut plain = Grower {
            layout: Arc::new(Layout::new(&binned, false, false)),
            ..Grower::new(&binned, &params)
        };
        // The one-hot columns share a group; the overlapping and the non-0/1 columns
        // cannot join it (the 3/7 column is bin 1 on half the rows). Those three
        // groups (4, 2 and 2 bins) are counted as one product of 16 bins, the
        // numeric column on its own.
        let l = &bundled.layout;
        assert_eq!(l.units.len(), 2, "{:?}", l.units);
        assert_eq!((l.products[0].len, l.products[0].members.len()), (16, 3));
        assert_eq!(plain.layout.units.len(), 6);
        assert!(plain.layout.products.is_empty());
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

    /// Class weights packed into bytes must count exactly as the same weights given
    /// as gradients: in the packed chunks' fullest bins at the largest weight, in
    /// nodes that count every feature, nodes that count a sample, and nodes that
    /// subtract.
    #[test]
    fn class_weights_count_exactly_as_their_gradients() {
        let (mut binned, y) = data(40_000, 5);
        // A column whose bin 0 holds 99% of the rows, so a packed chunk of rows at the
        // largest weight comes within 1% of its field's limit.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let rare: Vec<f32> = (0..binned.n_rows)
            .map(|_| f32::from(u8::from(rng.random_bool(0.01))))
            .collect();
        binned.columns.push(rare.iter().map(|&v| v as u8).collect());
        binned
            .mappers
            .push(crate::binning::BinMapper::fit(&rare, 255));
        let labels: Vec<u8> = y.iter().map(|&v| u8::from(v > 0.8)).collect();
        let weights: Vec<u8> = (0..binned.n_rows)
            .map(|r| match rng.random_range(0..10) {
                _ if r < 20_000 => MAX_WEIGHT,
                0 => 0,
                k => k,
            })
            .collect();
        let rows: Vec<u32> = (0..binned.n_rows as u32)
            .filter(|&r| weights[r as usize] > 0)
            .collect();
        let all: Vec<usize> = (0..binned.n_features()).collect();
        for (max_features, min_samples_leaf) in [(None, 1), (Some(2), 1), (Some(3), 200)] {
            let params = GrowParams {
                criterion: Criterion::Gini,
                max_depth: Some(8),
                max_leaf_nodes: None,
                min_samples_leaf,
                min_samples_split: 2,
                min_child_weight: 0.0,
                lambda: 0.0,
                min_gain: 0.0,
                max_features,
                parallel: false,
                leaf_rows: false,
            };
            let mut packed = Grower::new(&binned, &params);
            packed.set_class_weights(|i| weights[i], &labels);
            let mut wide = Grower::new(&binned, &params);
            wide.set_gradients(|i| {
                let w = f64::from(weights[i]);
                (w * f64::from(labels[i]), w)
            });
            let indexed = Sample::Rows {
                rows: rows.clone(),
                scratch: Vec::new(),
            };
            let mut records = vec![0; binned.n_rows];
            let bins = &packed.layout.records;
            let kept = crate::simd::drawn_records(&weights, &labels, bins, &mut records);
            records.truncate(kept);
            let records = Sample::Records {
                records,
                scratch: Vec::new(),
            };
            let n = rows.len();
            let hist = |g: &Grower, s: &Sample, features: &[usize], all: bool| {
                g.histogram(s, 0..n, features, all, &mut Pool::default())
            };
            let a = hist(&packed, &indexed, &all, true);
            for other in [
                hist(&wide, &indexed, &all, true),
                hist(&packed, &records, &all, true),
            ] {
                for (x, y) in a.iter().zip(&other).take(packed.layout.spare()) {
                    assert_eq!((x.g, x.h, x.n), (y.g, y.h, y.n));
                }
            }
            // Counting one feature alone fills its bins as counting all of them does.
            for f in 0..binned.n_features() {
                let bins = match packed.layout.places[f] {
                    Place::Own(start) => start..start + binned.mappers[f].n_bins(),
                    Place::Bundled(at) => at..at + 1,
                };
                for sample in [&indexed, &records] {
                    let one = hist(&packed, sample, &[f], false);
                    for (x, y) in one[bins.clone()].iter().zip(&a[bins.clone()]) {
                        assert_eq!((x.g, x.h, x.n), (y.g, y.h, y.n), "feature {f}");
                    }
                }
            }
            let seed = || ChaCha8Rng::seed_from_u64(1);
            let a = packed.grow(rows.clone(), &mut seed());
            let b = wide.grow(rows.clone(), &mut seed());
            assert!(a.tree.n_leaves() > 20, "{max_features:?}");
            assert_eq!(a.tree, b.tree, "{max_features:?}");
            let counts = Drawn::Counts(&weights);
            let tree = packed.grow_classes(counts, &labels, &mut seed());
            assert_eq!(tree, b.tree, "{max_features:?}");
            // Unbundled, the 7 columns are counted by the loop for more columns than
            // the unrolled ones cover, and as records of 7 columns.
            let mut unbundled = Grower {
                layout: Arc::new(Layout::new(&binned, false, true)),
                ..Grower::new(&binned, &params)
            };
            assert_eq!(unbundled.layout.units.len(), 7);
            let tree = unbundled.grow_classes(counts, &labels, &mut seed());
            assert_eq!(tree, b.tree, "{max_features:?}");
            unbundled.set_class_weights(|i| weights[i], &labels);
            let c = unbundled.grow(rows.clone(), &mut seed());
            assert_eq!(c.tree, b.tree, "{max_features:?}");
            // A layout without records (as for data with too many counted columns)
            // grows from indices.
            let mut wide_data = Grower {
                layout: Arc::new(Layout::new(&binned, true, false)),
                ..Grower::new(&binned, &params)
            };
            let tree = wide_data.grow_classes(counts, &labels, &mut seed());
            assert_eq!(tree, b.tree, "{max_features:?}");
            // Rows given as a list weigh one each, from records or from indices.
            let ones: Vec<u8> = weights.iter().map(|&w| u8::from(w > 0)).collect();
            let unweighted = packed.grow_classes(Drawn::Counts(&ones), &labels, &mut seed());
            assert!(unweighted.n_leaves() > 8, "{max_features:?}");
            for grower in [&mut packed, &mut wide_data] {
                let tree = grower.grow_classes(Drawn::Rows(&rows), &labels, &mut seed());
                assert_eq!(tree, unweighted, "{max_features:?}");
            }
        }
    }
}
