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
        // Sorted as integers that order like `f32::total_cmp`, which sorts faster than
        // comparing floats through a closure; equal keys are equal bits, so the
        // sorted floats are the same.
        let mut keys: Vec<u32> = values.iter().step_by(step).map(|&v| order_key(v)).collect();
        keys.sort_unstable();
        let sampled = keys.len();
        let mut distinct: Vec<(f32, usize)> = Vec::new();
        for v in keys.into_iter().map(from_order_key) {
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
            let per_bin = sampled as f64 / max_bins as f64;
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

    /// [`Self::bin`] of every value of a column. A value's bin is the number of bounds
    /// below it (the last bound, +inf, is never below a value). With few bounds
    /// (flags, one-hot columns, small codes) that count is taken one bound at a time
    /// over the whole column, which the compiler vectorizes; with many, each value
    /// searches a table of 256 bounds in eight branch-free steps.
    pub fn bin_column(&self, column: &[f32]) -> Vec<u8> {
        let bounds = &self.uppers[..self.uppers.len() - 1];
        if bounds.len() <= FEW_BOUNDS {
            let mut out = vec![0u8; column.len()];
            for &u in bounds {
                for (b, &x) in out.iter_mut().zip(column) {
                    *b += u8::from(u < x);
                }
            }
            return out;
        }
        let mut table = [f32::INFINITY; 256];
        table[..bounds.len()].copy_from_slice(bounds);
        column
            .iter()
            .map(|&x| {
                let mut at = 0usize;
                for step in [128, 64, 32, 16, 8, 4, 2, 1] {
                    // A step taken by arithmetic, not a branch: a branch on data
                    // mispredicts half the time. The mask only spares a bounds check
                    // (the index never exceeds 254).
                    at += step * usize::from(table[(at + step - 1) & 255] < x);
                }
                at as u8
            })
            .collect()
    }
}

/// Columns with at most this many bin bounds are binned a bound at a time.
const FEW_BOUNDS: usize = 8;

/// `v`'s bits as an integer whose order is `f32::total_cmp`'s.
fn order_key(v: f32) -> u32 {
    let bits = v.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    }
}

fn from_order_key(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & !(1 << 31) } else { !k })
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
                let bins = mapper.bin_column(col);
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
            .map(|(col, mapper)| mapper.bin_column(col))
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

    /// The column path must give every value the bin the one-value path gives: with
    /// few bounds and with many, at the bounds themselves, and for NaN, infinities
    /// and signed zeros.
    #[test]
    fn a_column_bins_as_its_values_do() {
        let of = |distinct: usize| -> Vec<f32> {
            (0..20_000)
                .map(|i| ((i * 7919) % distinct) as f32 * 0.37 - 6.0)
                .collect()
        };
        let special = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            f32::MAX,
        ];
        for distinct in [1, 2, 3, 9, 10, 40, 255, 5003] {
            let fitted = of(distinct);
            let m = BinMapper::fit(&fitted, 255);
            assert_eq!(m.n_bins(), distinct.min(255), "{distinct} distinct values");
            let mut probe = fitted.clone();
            probe.extend(special);
            probe.extend(
                m.uppers
                    .iter()
                    .flat_map(|&u| [u, u.next_down(), u.next_up()]),
            );
            let expected: Vec<u8> = probe.iter().map(|&x| m.bin(x)).collect();
            assert_eq!(m.bin_column(&probe), expected, "{distinct} distinct values");
        }
        let mut values = of(5003);
        values.extend(special);
        let mut by_float = values.clone();
        by_float.sort_by(f32::total_cmp);
        let mut keys: Vec<u32> = values.iter().map(|&v| order_key(v)).collect();
        keys.sort_unstable();
        let by_key: Vec<u32> = keys
            .into_iter()
            .map(|k| from_order_key(k).to_bits())
            .collect();
        let by_float: Vec<u32> = by_float.iter().map(|v| v.to_bits()).collect();
        assert_eq!(by_key, by_float);
    }

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
