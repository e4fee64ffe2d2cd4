//! SMOTE (Chawla et al., 2002) as imbalanced-learn implements it: each synthetic row
//! lies on the segment between a random minority row and one of its `k` nearest
//! minority neighbours. Neighbours come from a k-d tree, so 300k rows take seconds,
//! not the hours all-pairs distances would.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::preprocess::Matrix;

/// Read from the training config by hand (see `config.rs`), so that imbalanced-learn's
/// names for these settings are accepted too.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SmoteParams {
    /// Nearest neighbours to interpolate towards.
    pub k: usize,
    /// Desired minority/majority ratio after resampling (imbalanced-learn's
    /// float `sampling_strategy`).
    pub ratio: f64,
}

impl Default for SmoteParams {
    fn default() -> Self {
        Self { k: 5, ratio: 1.0 }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SmoteSummary {
    pub minority_before: usize,
    pub majority: usize,
    pub synthetic: usize,
}

/// Appends synthetic minority rows to `x` and `y`. Returns what it did, or `None` when
/// there is nothing to do (already balanced enough, or too few minority rows).
pub fn oversample(
    x: &mut Matrix,
    y: &mut Vec<u8>,
    p: &SmoteParams,
    seed: u64,
) -> Option<SmoteSummary> {
    let ones = y.iter().filter(|&&v| v == 1).count();
    let zeros = y.len() - ones;
    let (minority_label, n_min, n_maj) = if ones <= zeros {
        (1u8, ones, zeros)
    } else {
        (0u8, zeros, ones)
    };
    let target = (p.ratio * n_maj as f64).round() as usize;
    if target <= n_min || n_min < 2 {
        return None;
    }
    let n_new = target - n_min;
    let k = p.k.min(n_min - 1).max(1);
    let dims = x.n_features();
    let minority: Vec<usize> = (0..y.len()).filter(|&i| y[i] == minority_label).collect();
    let points: Vec<f32> = minority
        .iter()
        .flat_map(|&i| x.columns.iter().map(move |c| c[i]))
        .collect();
    let tree = KdTree::build(&points, dims);
    let neighbours: Vec<Vec<u32>> = (0..n_min)
        .into_par_iter()
        .map(|i| tree.nearest(&points[i * dims..(i + 1) * dims], k, i as u32))
        .collect();

    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5307e);
    for col in &mut x.columns {
        col.reserve(n_new);
    }
    for _ in 0..n_new {
        let i = rng.random_range(0..n_min);
        let nn = &neighbours[i];
        let j = nn[rng.random_range(0..nn.len())] as usize;
        let gap: f32 = rng.random();
        for (d, col) in x.columns.iter_mut().enumerate() {
            let a = points[i * dims + d];
            let b = points[j * dims + d];
            col.push(a + gap * (b - a));
        }
    }
    x.n_rows += n_new;
    y.extend(std::iter::repeat_n(minority_label, n_new));
    Some(SmoteSummary {
        minority_before: n_min,
        majority: n_maj,
        synthetic: n_new,
    })
}

/// A static k-d tree over row-major points, split at the median of the widest
/// dimension, with small leaf buckets. Many rows here are identical (categories and
/// whole-number ages), so splits are by position, not value, to stay balanced.
struct KdTree<'a> {
    points: &'a [f32],
    dims: usize,
    idx: Vec<u32>,
    nodes: Vec<KdNode>,
}

enum KdNode {
    Leaf {
        start: usize,
        end: usize,
    },
    Split {
        dim: usize,
        value: f32,
        left: usize,
        right: usize,
    },
}

const BUCKET: usize = 16;

impl<'a> KdTree<'a> {
    fn build(points: &'a [f32], dims: usize) -> Self {
        let n = points.len() / dims.max(1);
        let mut t = Self {
            points,
            dims,
            idx: (0..n as u32).collect(),
            nodes: Vec::new(),
        };
        t.build_node(0, n);
        t
    }

    fn coord(&self, i: u32, d: usize) -> f32 {
        self.points[i as usize * self.dims + d]
    }

    fn build_node(&mut self, start: usize, end: usize) -> usize {
        let id = self.nodes.len();
        if end - start <= BUCKET {
            self.nodes.push(KdNode::Leaf { start, end });
            return id;
        }
        let (mut dim, mut spread) = (0, -1.0f32);
        for d in 0..self.dims {
            let (lo, hi) = self.idx[start..end].iter().fold(
                (f32::INFINITY, f32::NEG_INFINITY),
                |(lo, hi), &i| {
                    let v = self.coord(i, d);
                    (lo.min(v), hi.max(v))
                },
            );
            if hi - lo > spread {
                spread = hi - lo;
                dim = d;
            }
        }
        if spread <= 0.0 {
            // All points identical: nothing to split.
            self.nodes.push(KdNode::Leaf { start, end });
            return id;
        }
        let mid = start + (end - start) / 2;
        let (points, dims) = (self.points, self.dims);
        self.idx[start..end].select_nth_unstable_by(mid - start, |&a, &b| {
            points[a as usize * dims + dim].total_cmp(&points[b as usize * dims + dim])
        });
        let value = self.coord(self.idx[mid], dim);
        self.nodes.push(KdNode::Leaf { start: 0, end: 0 });
        let left = self.build_node(start, mid);
        let right = self.build_node(mid, end);
        self.nodes[id] = KdNode::Split {
            dim,
            value,
            left,
            right,
        };
        id
    }

    /// The `k` nearest points to `q`, nearest first, excluding `skip` (the query itself).
    fn nearest(&self, q: &[f32], k: usize, skip: u32) -> Vec<u32> {
        let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
        self.search(0, q, k, skip, &mut best);
        best.into_iter().map(|(_, i)| i).collect()
    }

    fn search(&self, node: usize, q: &[f32], k: usize, skip: u32, best: &mut Vec<(f32, u32)>) {
        match self.nodes[node] {
            KdNode::Leaf { start, end } => {
                for &i in &self.idx[start..end] {
                    if i == skip {
                        continue;
                    }
                    let p = &self.points[i as usize * self.dims..(i as usize + 1) * self.dims];
                    let d: f32 = p.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum();
                    if best.len() < k || d < best[best.len() - 1].0 {
                        let pos = best.partition_point(|(bd, bi)| (*bd, *bi) < (d, i));
                        best.insert(pos, (d, i));
                        best.truncate(k);
                    }
                }
            }
            KdNode::Split {
                dim,
                value,
                left,
                right,
            } => {
                let diff = q[dim] - value;
                let (near, far) = if diff < 0.0 {
                    (left, right)
                } else {
                    (right, left)
                };
                self.search(near, q, k, skip, best);
                if best.len() < k || diff * diff <= best[best.len() - 1].0 {
                    self.search(far, q, k, skip, best);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(points: &[f32], dims: usize, q: usize, k: usize) -> Vec<f32> {
        let n = points.len() / dims;
        let mut d: Vec<f32> = (0..n)
            .filter(|&i| i != q)
            .map(|i| {
                (0..dims)
                    .map(|j| (points[i * dims + j] - points[q * dims + j]).powi(2))
                    .sum()
            })
            .collect();
        d.sort_by(f32::total_cmp);
        d.truncate(k);
        d
    }

    #[test]
    fn kd_tree_matches_brute_force_distances() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let dims = 4;
        // Coarse values so that many points coincide, as in real data.
        let points: Vec<f32> = (0..2000 * dims)
            .map(|_| rng.random_range(0..5) as f32)
            .collect();
        let tree = KdTree::build(&points, dims);
        for q in (0..2000).step_by(97) {
            let got = tree.nearest(&points[q * dims..(q + 1) * dims], 5, q as u32);
            let dist: Vec<f32> = got
                .iter()
                .map(|&i| {
                    (0..dims)
                        .map(|j| (points[i as usize * dims + j] - points[q * dims + j]).powi(2))
                        .sum()
                })
                .collect();
            assert_eq!(dist, brute(&points, dims, q, 5));
        }
    }

    #[test]
    fn balances_classes_on_segments_between_minority_rows() {
        let mut x = Matrix {
            n_rows: 10,
            columns: vec![(0..10).map(|i| i as f32).collect()],
        };
        let mut y = vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 1];
        let s = oversample(&mut x, &mut y, &SmoteParams::default(), 7).unwrap();
        assert_eq!(s.synthetic, 4);
        assert_eq!(y.iter().filter(|&&v| v == 1).count(), 7);
        assert!(x.columns[0][10..].iter().all(|&v| (7.0..=9.0).contains(&v)));
        // Deterministic for a seed.
        let mut x2 = Matrix {
            n_rows: 10,
            columns: vec![(0..10).map(|i| i as f32).collect()],
        };
        let mut y2 = vec![0, 0, 0, 0, 0, 0, 0, 1, 1, 1];
        oversample(&mut x2, &mut y2, &SmoteParams::default(), 7);
        assert_eq!(x.columns, x2.columns);
    }
}
