//! An ensemble of trees and how their outputs combine into a probability.

use serde::{Deserialize, Serialize};

use crate::tree::{LEAF, Node, Tree};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// Trees hold class-1 frequencies; the probability is their mean (forests).
    Average,
    /// Trees hold additive log-odds; the probability is `sigmoid(base + Σ)` (boosting).
    Logit,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ensemble {
    pub link: Link,
    pub base_score: f64,
    pub trees: Vec<Tree>,
}

impl Ensemble {
    /// The raw probability for one feature row, before any prior correction.
    #[inline]
    pub fn predict_raw(&self, x: &[f32]) -> f64 {
        self.finish(self.trees.iter().map(|t| t.predict(x)).sum())
    }

    /// Probabilities for many rows given column-major features; see [`Compiled`].
    pub fn predict_raw_batch(&self, columns: &[Vec<f32>], n_rows: usize, out: &mut Vec<f64>) {
        Compiled::new(self).predict_batch(columns, n_rows, out);
    }

    fn finish(&self, sum: f32) -> f64 {
        match self.link {
            Link::Average => f64::from(sum) / self.trees.len().max(1) as f64,
            Link::Logit => crate::learners::sigmoid(self.base_score + f64::from(sum)),
        }
    }
}

/// The ensemble rearranged for batch scoring. Every leaf becomes a node that loops to
/// itself (`x > +inf` is never true), so a block of rows walks a tree in lockstep for
/// exactly `depth` steps with no data-dependent branch: the rows' walks are independent
/// and the processor overlaps them.
#[derive(Debug, Clone)]
pub struct Compiled<'a> {
    ensemble: &'a Ensemble,
    trees: Vec<(Vec<Node>, usize)>,
}

/// Deeper trees are walked row by row: lockstep would walk every row to the deepest leaf.
const LOCKSTEP_MAX_DEPTH: usize = 16;
const LANES: usize = 64;

impl<'a> Compiled<'a> {
    pub fn new(ensemble: &'a Ensemble) -> Self {
        let trees = ensemble
            .trees
            .iter()
            .map(|t| {
                let nodes = t
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        if n.feature == LEAF {
                            Node {
                                feature: 0,
                                threshold: f32::INFINITY,
                                left: i as u32,
                                value: n.value,
                            }
                        } else {
                            *n
                        }
                    })
                    .collect();
                (nodes, t.depth())
            })
            .collect();
        Self { ensemble, trees }
    }

    pub fn predict_batch(&self, columns: &[Vec<f32>], n_rows: usize, out: &mut Vec<f64>) {
        out.clear();
        out.resize(n_rows, 0.0);
        let n_features = columns.len().max(1);
        let lockstep = self.trees.iter().all(|(_, d)| *d <= LOCKSTEP_MAX_DEPTH);
        let mut block = vec![0f32; LANES * n_features];
        let mut sums = [0f32; LANES];
        let mut idx = [0u32; LANES];
        for start in (0..n_rows).step_by(LANES) {
            let len = LANES.min(n_rows - start);
            for (f, col) in columns.iter().enumerate() {
                for (i, v) in col[start..start + len].iter().enumerate() {
                    block[i * n_features + f] = *v;
                }
            }
            sums.fill(0.0);
            if lockstep {
                for (nodes, depth) in &self.trees {
                    idx.fill(0);
                    for _ in 0..*depth {
                        for (lane, i) in idx.iter_mut().enumerate() {
                            let n = &nodes[*i as usize];
                            let x = block[lane * n_features + n.feature as usize];
                            *i = n.left + u32::from(x > n.threshold);
                        }
                    }
                    for (s, i) in sums.iter_mut().zip(&idx) {
                        *s += nodes[*i as usize].value;
                    }
                }
            } else {
                for t in &self.ensemble.trees {
                    for (i, s) in sums[..len].iter_mut().enumerate() {
                        *s += t.predict(&block[i * n_features..(i + 1) * n_features]);
                    }
                }
            }
            for (o, s) in out[start..start + len].iter_mut().zip(&sums) {
                *o = self.ensemble.finish(*s);
            }
        }
    }
}
