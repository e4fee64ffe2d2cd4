//! Split search: which features a node may split on, whether it may split, its best
//! split and a leaf's value.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::layout::Place;
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

    /// The best split of a node that [`may split`](Self::may_split).
    pub(super) fn best_split(
        &self,
        hist: &[Sums],
        features: &[usize],
        total: Sums,
    ) -> Option<Split> {
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
