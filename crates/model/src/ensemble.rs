//! An ensemble of trees and how their outputs combine into a probability.

use serde::{Deserialize, Serialize};

use crate::tree::Tree;

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
        let sum: f32 = self.trees.iter().map(|t| t.predict(x)).sum();
        match self.link {
            Link::Average => f64::from(sum) / self.trees.len().max(1) as f64,
            Link::Logit => crate::learners::sigmoid(self.base_score + f64::from(sum)),
        }
    }

    /// Probabilities for many rows given column-major features, tree by tree so each
    /// tree stays in cache while it scores a block of rows.
    pub fn predict_raw_batch(&self, columns: &[Vec<f32>], n_rows: usize, out: &mut Vec<f64>) {
        const BLOCK: usize = 256;
        out.clear();
        out.resize(n_rows, 0.0);
        let n_features = columns.len();
        let mut rows = vec![0f32; BLOCK * n_features];
        let mut sums = [0f32; BLOCK];
        for start in (0..n_rows).step_by(BLOCK) {
            let len = BLOCK.min(n_rows - start);
            for (f, col) in columns.iter().enumerate() {
                for i in 0..len {
                    rows[i * n_features + f] = col[start + i];
                }
            }
            sums[..len].fill(0.0);
            for t in &self.trees {
                for (i, s) in sums[..len].iter_mut().enumerate() {
                    *s += t.predict(&rows[i * n_features..(i + 1) * n_features]);
                }
            }
            for i in 0..len {
                out[start + i] = match self.link {
                    Link::Average => f64::from(sums[i]) / self.trees.len().max(1) as f64,
                    Link::Logit => crate::learners::sigmoid(self.base_score + f64::from(sums[i])),
                };
            }
        }
    }
}
