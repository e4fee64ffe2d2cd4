//! Turns cleaned columns into the numeric feature matrix the trees see: scaling for
//! numeric columns, one-hot encoding (unknown categories ignored) for categorical ones.

use std::collections::HashMap;

use predict_buy_data::{Clean, CleanColumn, ColumnRule, ColumnValues, Scale};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// One-hot columns keep at most this many categories; rarer ones encode as all zeros,
/// exactly like a category never seen in training.
const MAX_CATEGORIES: usize = 255;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    pub columns: Vec<EncodedColumn>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EncodedColumn {
    /// `(x - offset) * factor`.
    Numeric {
        name: String,
        offset: f64,
        factor: f64,
    },
    OneHot {
        name: String,
        categories: Vec<String>,
    },
}

/// Features column by column: `columns[f][row]`.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub n_rows: usize,
    pub columns: Vec<Vec<f32>>,
}

impl Matrix {
    pub fn n_features(&self) -> usize {
        self.columns.len()
    }

    pub fn row(&self, r: usize, out: &mut Vec<f32>) {
        out.clear();
        out.extend(self.columns.iter().map(|c| c[r]));
    }

    /// The rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Matrix {
        Matrix {
            n_rows: idx.len(),
            columns: self
                .columns
                .iter()
                .map(|c| idx.iter().map(|&i| c[i]).collect())
                .collect(),
        }
    }
}

impl Encoder {
    pub fn fit(columns: &[CleanColumn], rules: &[ColumnRule]) -> Self {
        let columns = columns
            .iter()
            .zip(rules)
            .map(|(col, rule)| match &col.values {
                ColumnValues::Numeric(v) => {
                    let (offset, factor) = scale_params(v, rule.scale());
                    EncodedColumn::Numeric {
                        name: col.name.clone(),
                        offset,
                        factor,
                    }
                }
                ColumnValues::Categorical(v) => {
                    let mut counts: HashMap<&str, usize> = HashMap::new();
                    for s in v {
                        *counts.entry(s.as_str()).or_default() += 1;
                    }
                    let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
                    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                    by_count.truncate(MAX_CATEGORIES);
                    let mut categories: Vec<String> =
                        by_count.into_iter().map(|(s, _)| s.to_string()).collect();
                    categories.sort();
                    EncodedColumn::OneHot {
                        name: col.name.clone(),
                        categories,
                    }
                }
            })
            .collect();
        Self { columns }
    }

    pub fn n_features(&self) -> usize {
        self.columns
            .iter()
            .map(|c| match c {
                EncodedColumn::Numeric { .. } => 1,
                EncodedColumn::OneHot { categories, .. } => categories.len(),
            })
            .sum()
    }

    pub fn feature_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.n_features());
        for c in &self.columns {
            match c {
                EncodedColumn::Numeric { name, .. } => names.push(name.clone()),
                EncodedColumn::OneHot { name, categories } => {
                    names.extend(categories.iter().map(|cat| format!("{name}={cat}")));
                }
            }
        }
        names
    }

    pub fn transform(&self, columns: &[CleanColumn]) -> Matrix {
        let n_rows = columns.first().map_or(0, |c| match &c.values {
            ColumnValues::Numeric(v) => v.len(),
            ColumnValues::Categorical(v) => v.len(),
        });
        // One field per task, on every core: a field's columns depend on it alone.
        let fields: Vec<Vec<Vec<f32>>> = self
            .columns
            .par_iter()
            .zip(columns)
            .map(|(enc, col)| match (enc, &col.values) {
                (EncodedColumn::Numeric { offset, factor, .. }, ColumnValues::Numeric(v)) => {
                    vec![v.iter().map(|x| ((x - offset) * factor) as f32).collect()]
                }
                (EncodedColumn::OneHot { categories, .. }, ColumnValues::Categorical(v)) => {
                    let mut out: Vec<Vec<f32>> =
                        (0..categories.len()).map(|_| vec![0f32; n_rows]).collect();
                    for (row, s) in v.iter().enumerate() {
                        if let Ok(i) = categories.binary_search(s) {
                            out[i][row] = 1.0;
                        }
                    }
                    out
                }
                _ => unreachable!("encoder and cleaner agree on column types"),
            })
            .collect();
        let out: Vec<Vec<f32>> = fields.into_iter().flatten().collect();
        Matrix {
            n_rows,
            columns: out,
        }
    }
}

/// The encoder prepared for one-record-at-a-time use.
#[derive(Debug, Clone)]
pub(crate) struct RecordEncoder {
    steps: Vec<Step>,
    pub n_features: usize,
}

#[derive(Debug, Clone)]
enum Step {
    Numeric {
        offset: f64,
        factor: f64,
    },
    OneHot {
        start: usize,
        index: HashMap<String, usize>,
    },
}

impl RecordEncoder {
    pub fn new(encoder: &Encoder) -> Self {
        let mut start = 0;
        let steps = encoder
            .columns
            .iter()
            .map(|c| match c {
                EncodedColumn::Numeric { offset, factor, .. } => {
                    start += 1;
                    Step::Numeric {
                        offset: *offset,
                        factor: *factor,
                    }
                }
                EncodedColumn::OneHot { categories, .. } => {
                    let s = start;
                    start += categories.len();
                    Step::OneHot {
                        start: s,
                        index: categories
                            .iter()
                            .enumerate()
                            .map(|(i, c)| (c.clone(), s + i))
                            .collect(),
                    }
                }
            })
            .collect();
        Self {
            steps,
            n_features: start,
        }
    }

    /// Writes the features of one cleaned record into `out` (length `n_features`).
    pub fn encode(&self, clean: &[Clean<'_>], out: &mut [f32]) {
        out.fill(0.0);
        let mut pos = 0;
        for (step, value) in self.steps.iter().zip(clean) {
            match (step, value) {
                (Step::Numeric { offset, factor }, Clean::Num(x)) => {
                    out[pos] = ((x - offset) * factor) as f32;
                    pos += 1;
                }
                (Step::OneHot { start, index }, Clean::Cat(s)) => {
                    if let Some(&i) = index.get(s.as_ref()) {
                        out[i] = 1.0;
                    }
                    pos = *start + index.len();
                }
                _ => unreachable!("encoder and cleaner agree on column types"),
            }
        }
    }
}

fn scale_params(v: &[f64], scale: Scale) -> (f64, f64) {
    match scale {
        Scale::None => (0.0, 1.0),
        Scale::Minmax => {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let range = hi - lo;
            if range > 0.0 && range.is_finite() {
                (lo, 1.0 / range)
            } else {
                (lo.min(0.0), 1.0)
            }
        }
        Scale::Standard => {
            let n = v.len().max(1) as f64;
            let mean = v.iter().sum::<f64>() / n;
            let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
            let sd = var.sqrt();
            if sd > 0.0 {
                (mean, 1.0 / sd)
            } else {
                (mean, 1.0)
            }
        }
    }
}
