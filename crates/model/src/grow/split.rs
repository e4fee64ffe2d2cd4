//! Split search: which features a node may split on, whether it may split, its best
//! split and a leaf's value.

use std::ops::Range;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::layout::Place;
use super::rows::{RowStats, Sample, count_stat, record_stat};
use super::sums::Sums;
use super::{Criterion, Grower};

#[derive(Clone, Copy, Debug)]
pub(super) struct Split {
    pub(super) feature: usize,
    pub(super) bin: u8,
    pub(super) gain: f64,
    /// The left child's sums; the right child's are the node's minus these.
    pub(super) left: Sums,
}

impl Grower<'_> {
    /// Sets `out` to the features a node may split on, in order: all of them, or
    /// `max_features` drawn without replacement (the head of a partial shuffle).
    pub(super) fn features(&self, rng: &mut ChaCha8Rng, out: &mut Vec<usize>) {
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

    /// Whether a node with these sums at this depth may be split at all.
    pub(super) fn may_split(&self, total: Sums, depth: usize) -> bool {
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

    /// The best split of a node that [`may split`](Self::may_split), from its histogram.
    pub(super) fn best_split(
        &self,
        hist: &[Sums],
        features: &[usize],
        total: Sums,
    ) -> Option<Split> {
        let mut scan = Scan::new(self, total);
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
            // The last bin cannot be a threshold: nothing would go right.
            let last = bins.len().saturating_sub(1);
            scan.feature(
                f,
                bins[..last].iter().enumerate().map(|(b, &s)| (b as u8, s)),
            );
        }
        scan.best
    }

    /// Whether a node of `n` rows finds its split with [`Self::direct_split`]: when
    /// it is small and a row's counted columns fit in one word.
    pub(super) fn direct(&self, n: usize) -> bool {
        n <= DIRECT_ROWS && self.layout.units.len() <= 8
    }

    /// The best split of a small node that [`may split`](Self::may_split), found from
    /// its rows without a histogram: each feature's rows sorted by bin. A histogram
    /// costs its full length to clear, merge and scan whatever the node's size, and
    /// most nodes of a full-depth tree hold a few rows. The split is the one
    /// [`Self::best_split`] finds: the same sums at each bin that has rows (exact
    /// integers), the bins between them adding nothing, and the same order.
    pub(super) fn direct_split(
        &self,
        sample: &Sample,
        range: Range<usize>,
        features: &[usize],
        total: Sums,
    ) -> Option<Split> {
        let n = range.len();
        assert!(self.direct(n), "a node of {n} rows is not small");
        // Each row's stats, and a word holding its byte of every counted column.
        let mut stats = [(0i64, 0i64); DIRECT_ROWS];
        let mut units = [0u64; DIRECT_ROWS];
        let nu = self.layout.units.len();
        match (sample, &self.stats) {
            (Sample::Records { records, .. }, _) => {
                for ((s, u), &rec) in stats.iter_mut().zip(&mut units).zip(&records[range]) {
                    *s = record_stat(rec);
                    *u = rec;
                }
            }
            (Sample::Rows { rows, .. }, stats_of) => {
                let bytes = self.layout.bytes();
                for ((s, u), &r) in stats.iter_mut().zip(&mut units).zip(&rows[range]) {
                    let r = r as usize;
                    *s = match stats_of {
                        RowStats::Newton { g, h } => (g[r], h[r]),
                        RowStats::Codes(codes) => count_stat(codes[r]),
                    };
                    let mut word = [0u8; 8];
                    word[..nu].copy_from_slice(&bytes[r * nu..(r + 1) * nu]);
                    *u = u64::from_le_bytes(word);
                }
            }
        }
        let mut scan = Scan::new(self, total);
        let mut keys = [0u32; DIRECT_ROWS];
        for &f in features {
            let d = &self.layout.decoders[f];
            let shift = 8 * d.unit;
            // Bin above, row below: sorting groups the rows by bin.
            for (i, (k, &u)) in keys.iter_mut().zip(&units[..n]).enumerate() {
                *k = u32::from(d.bins[usize::from((u >> shift) as u8)]) << 8 | i as u32;
            }
            let keys = &mut keys[..n];
            keys.sort_unstable();
            let bins = keys.chunk_by(|a, b| a >> 8 == b >> 8).map(|group| {
                let mut sums = Sums::default();
                for &k in group {
                    let (g, h) = stats[(k & 0xff) as usize];
                    sums.g += g;
                    sums.h += h;
                    sums.n += 1;
                }
                ((group[0] >> 8) as u8, sums)
            });
            scan.feature(f, bins);
        }
        scan.best
    }

    /// Higher is better; a split's gain is the children's score minus the parent's.
    pub(super) fn score(&self, s: Sums) -> f64 {
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

    pub(super) fn leaf_value(&self, s: Sums) -> f32 {
        let (g, h) = (s.g(), s.h());
        match self.params.criterion {
            Criterion::Newton => (-g / (h + self.params.lambda)) as f32,
            Criterion::Gini | Criterion::Entropy if h > 0.0 => (g / h) as f32,
            Criterion::Gini | Criterion::Entropy => 0.0,
        }
    }
}

/// Nodes of at most this many rows find their split from their rows
/// ([`Grower::direct_split`]) rather than from a histogram.
pub(super) const DIRECT_ROWS: usize = 64;
// A row's place in the node is the low byte of its sort key.
const _: () = assert!(DIRECT_ROWS <= 256);

/// The search for a node's best split, one feature's bins after another.
struct Scan<'g, 'a> {
    grower: &'g Grower<'a>,
    total: Sums,
    parent: f64,
    min_gain: f64,
    min_leaf: usize,
    best: Option<Split>,
}

impl<'g, 'a> Scan<'g, 'a> {
    fn new(grower: &'g Grower<'a>, total: Sums) -> Self {
        let p = grower.params;
        // Like scikit-learn, an impure classification node splits even when no split
        // improves impurity (XOR), or deep trees could not fit separable data.
        let min_gain = match p.criterion {
            Criterion::Newton => p.min_gain.max(1e-12),
            Criterion::Gini | Criterion::Entropy => p.min_gain - 1e-9,
        };
        Self {
            grower,
            total,
            parent: grower.score(total),
            min_gain,
            min_leaf: p.min_samples_leaf.max(1),
            best: None,
        }
    }

    /// Tries the thresholds of feature `f`: `bins` are its bins in ascending order,
    /// each with its rows' sums, and rows at or below a threshold bin go left.
    fn feature(&mut self, f: usize, bins: impl Iterator<Item = (u8, Sums)>) {
        let min_weight = self.grower.params.min_child_weight;
        let mut left = Sums::default();
        for (b, bin) in bins {
            left += bin;
            if (left.n as usize) < self.min_leaf || left.h() < min_weight {
                continue;
            }
            let right = self.total.minus(left);
            if (right.n as usize) < self.min_leaf || right.h() < min_weight {
                // Moving more rows left only shrinks the right side further.
                if (right.n as usize) < self.min_leaf {
                    break;
                }
                continue;
            }
            let gain = self.grower.score(left) + self.grower.score(right) - self.parent;
            if gain > self.min_gain && self.best.is_none_or(|s| gain > s.gain) {
                self.best = Some(Split {
                    feature: f,
                    bin: b,
                    gain,
                    left,
                });
            }
        }
    }
}
