//! Maps each feature to at most 255 bins, the unit the histogram learner works in. A
//! value `x` falls in the first bin whose upper bound is `>= x`, so a split "bin <= b" is
//! exactly the float test `x <= upper[b]` that inference uses.

use rayon::prelude::*;

use crate::preprocess::Matrix;

pub const MAX_BINS: usize = 255;

/// Values sampled per feature to find bin bounds; LightGBM samples 200k as well.
const SAMPLE: usize = 200_000;

#[derive(Debug, Clone)]
pub struct BinMapper {
    /// Upper bound of each bin; the last is +inf.
    pub uppers: Vec<f32>,
}

impl BinMapper {
    pub fn fit(values: &[f32], max_bins: usize) -> Self {
        let step = values.len().div_ceil(SAMPLE).max(1);
        let mut sample: Vec<f32> = values.iter().step_by(step).copied().collect();
        sample.sort_unstable_by(f32::total_cmp);
        let mut distinct: Vec<(f32, usize)> = Vec::new();
        for v in sample.iter().copied() {
            match distinct.last_mut() {
                Some((last, count)) if *last == v => *count += 1,
                _ => distinct.push((v, 1)),
            }
        }
        let max_bins = max_bins.clamp(2, MAX_BINS);
        let mut uppers = Vec::new();
        if distinct.len() <= max_bins {
            for w in distinct.windows(2) {
                uppers.push(midpoint(w[0].0, w[1].0));
            }
        } else {
            // Equal-frequency cuts over the sorted sample, never splitting a value.
            let per_bin = sample.len() as f64 / max_bins as f64;
            let mut seen = 0usize;
            let mut next_cut = per_bin;
            for w in distinct.windows(2) {
                seen += w[0].1;
                if seen as f64 >= next_cut {
                    uppers.push(midpoint(w[0].0, w[1].0));
                    while next_cut <= seen as f64 {
                        next_cut += per_bin;
                    }
                    if uppers.len() == max_bins - 1 {
                        break;
                    }
                }
            }
        }
        uppers.push(f32::INFINITY);
        Self { uppers }
    }

    pub fn n_bins(&self) -> usize {
        self.uppers.len()
    }

    pub fn bin(&self, x: f32) -> u8 {
        self.uppers
            .partition_point(|u| *u < x)
            .min(self.uppers.len() - 1) as u8
    }
}

/// A threshold strictly below `b` and not below `a`.
fn midpoint(a: f32, b: f32) -> f32 {
    let m = ((a as f64 + b as f64) / 2.0) as f32;
    if m >= a && m < b { m } else { a }
}

/// The training matrix in bins, column by column.
#[derive(Debug, Clone)]
pub struct Binned {
    pub n_rows: usize,
    pub columns: Vec<Vec<u8>>,
    pub mappers: Vec<BinMapper>,
}

impl Binned {
    pub fn new(m: &Matrix, max_bins: usize) -> Self {
        let (mappers, columns): (Vec<_>, Vec<_>) = m
            .columns
            .par_iter()
            .map(|col| {
                let mapper = BinMapper::fit(col, max_bins);
                let bins = col.iter().map(|&x| mapper.bin(x)).collect();
                (mapper, bins)
            })
            .unzip();
        Self {
            n_rows: m.n_rows,
            columns,
            mappers,
        }
    }

    pub fn n_features(&self) -> usize {
        self.columns.len()
    }
}

impl Binned {
    /// Bins another matrix with these bounds (validation rows must share the training
    /// rows' bins).
    pub fn apply(&self, m: &Matrix) -> Binned {
        let columns: Vec<Vec<u8>> = m
            .columns
            .par_iter()
            .zip(&self.mappers)
            .map(|(col, mapper)| col.iter().map(|&x| mapper.bin(x)).collect())
            .collect();
        Binned {
            n_rows: m.n_rows,
            columns,
            mappers: self.mappers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_values_get_one_bin_each() {
        let m = BinMapper::fit(&[1.0, 2.0, 2.0, 5.0], 255);
        assert_eq!(m.n_bins(), 3);
        assert_eq!(m.bin(1.0), 0);
        assert_eq!(m.bin(2.0), 1);
        assert_eq!(m.bin(5.0), 2);
        assert_eq!(m.bin(100.0), 2);
        assert_eq!(m.bin(-100.0), 0);
    }

    #[test]
    fn bins_agree_with_thresholds() {
        let values: Vec<f32> = (0..10_000)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.37)
            .collect();
        let m = BinMapper::fit(&values, 32);
        assert!(m.n_bins() <= 32);
        for &x in &values {
            let b = m.bin(x) as usize;
            assert!(x <= m.uppers[b]);
            if b > 0 {
                assert!(x > m.uppers[b - 1]);
            }
        }
    }
}
