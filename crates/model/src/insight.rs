//! What a model report draws, computed where the data is: at training time on the
//! training and test rows (stored in the artifact's metadata), or later on any labelled
//! table (`report --evaluate`). Everything here is a pure function of a model and rows.
//!
//! - [`ScoreCounts`]: the test rows' probabilities and labels, grouped, from which the
//!   ROC, precision–recall, calibration and threshold curves are drawn.
//! - Total gain per field: each split's gain, replayed on the rows the trees were grown
//!   on (the grower keeps no per-split record, and replaying leaves the tree format and
//!   the grower alone).
//! - Permutation importance: how much ROC AUC falls when one field's values are
//!   shuffled across rows.
//! - Partial dependence: the mean probability when one field is set to each value of a
//!   grid for every row.

use predict_buy_data::{CleanFrame, DataError, Table};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::artifact::Model;
use crate::ensemble::{Ensemble, Link};
use crate::learners::sigmoid;
use crate::metrics::{EvalReport, ScoreCounts, evaluate, roc_auc};
use crate::preprocess::{EncodedColumn, Encoder, Matrix};
use crate::tree::LEAF;

/// Rows replayed through the trees for their gain; a stride sample beyond this.
const GAIN_ROWS: usize = 50_000;
/// Rows shuffled for permutation importance.
const PERMUTATION_ROWS: usize = 20_000;
const PERMUTATION_REPEATS: usize = 3;
/// Rows whose mean probability is one point of a partial dependence curve.
const DEPENDENCE_ROWS: usize = 1_000;
/// Fields that get a partial dependence curve.
const DEPENDENCE_FIELDS: usize = 4;
/// Most categories drawn on a categorical field's partial dependence.
const DEPENDENCE_CATEGORIES: usize = 16;

/// An importance of one input field (a one-hot group counts as its field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldImportance {
    pub field: String,
    pub value: f64,
    /// Spread over repeats (permutation importance); 0 for gain.
    #[serde(default)]
    pub std: f64,
}

/// Mean probability as one field sweeps a grid of values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialDependence {
    pub field: String,
    pub numeric: bool,
    pub points: Vec<DependencePoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DependencePoint {
    /// The value as the field takes it (a number or a category).
    pub label: String,
    /// The number, for numeric fields; the category's position otherwise.
    pub x: f64,
    pub mean_probability: f64,
}

/// Everything score-based about a model on one labelled set of rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub scores: ScoreCounts,
    /// Mean squared error of the probabilities, on every row (not the grouped ones).
    pub brier: f64,
    /// ROC AUC lost when a field is shuffled, largest first.
    pub permutation: Vec<FieldImportance>,
    pub partial_dependence: Vec<PartialDependence>,
}

/// Scores `model` on a labelled table: the report's metrics and its evaluation. The
/// table needs every input field and the target; extra columns are ignored.
pub fn evaluate_table(
    model: &Model,
    table: &Table,
    seed: u64,
) -> Result<(EvalReport, Evaluation), DataError> {
    let frame = model.payload().cleaner.clean_evaluation(table)?;
    Ok(evaluate_frame(model, &frame, seed))
}

/// As [`evaluate_table`], on rows already cleaned by the model's own rules.
pub fn evaluate_frame(model: &Model, frame: &CleanFrame, seed: u64) -> (EvalReport, Evaluation) {
    let encoder = &model.payload().encoder;
    let m = encoder.transform(&frame.features);
    let p = probabilities(model, &m);
    let report = evaluate(&frame.target, &p, model.threshold().value);
    (report, evaluate_scored(model, frame, &m, &p, seed))
}

/// [`evaluate_frame`]'s evaluation for rows already encoded (`m`, by the model's
/// encoder) and scored (`p`, the model's calibrated probabilities): training has both
/// at hand, and scoring full-depth trees twice cost a second.
pub fn evaluate_scored(
    model: &Model,
    frame: &CleanFrame,
    m: &Matrix,
    p: &[f64],
    seed: u64,
) -> Evaluation {
    let permutation = permutation_importance(model, m, &frame.target, seed);
    let mut top: Vec<&str> = permutation.iter().map(|f| f.field.as_str()).collect();
    top.truncate(DEPENDENCE_FIELDS);
    let partial_dependence = top
        .iter()
        .filter_map(|field| partial_dependence(model, frame, m, field, seed))
        .collect();
    Evaluation {
        scores: ScoreCounts::new(&frame.target, p),
        brier: brier(&frame.target, p),
        permutation,
        partial_dependence,
    }
}

pub fn brier(y: &[u8], p: &[f64]) -> f64 {
    let total: f64 = y
        .iter()
        .zip(p)
        .map(|(&t, &q)| (q - f64::from(t)).powi(2))
        .sum();
    total / y.len().max(1) as f64
}

fn probabilities(model: &Model, m: &Matrix) -> Vec<f64> {
    model
        .predict_encoded_par(&m.columns, m.n_rows)
        .into_iter()
        .map(|r| model.calibrate(r))
        .collect()
}

/// Each input field's encoded columns, as ranges of the feature matrix.
fn field_columns(encoder: &Encoder) -> Vec<(String, std::ops::Range<usize>)> {
    let mut start = 0;
    encoder
        .columns
        .iter()
        .map(|c| {
            let (name, width) = match c {
                EncodedColumn::Numeric { name, .. } => (name, 1),
                EncodedColumn::OneHot { name, categories } => (name, categories.len()),
            };
            let range = start..start + width;
            start += width;
            (name.clone(), range)
        })
        .collect()
}

/// Row indices of a deterministic sample of at most `k` of `n` rows.
fn sample_rows(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if n > k {
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        idx.truncate(k);
        idx.sort_unstable();
    }
    idx
}

fn permutation_importance(model: &Model, m: &Matrix, y: &[u8], seed: u64) -> Vec<FieldImportance> {
    let rows = sample_rows(m.n_rows, PERMUTATION_ROWS, seed);
    let m = m.select(&rows);
    let y: Vec<u8> = rows.iter().map(|&i| y[i]).collect();
    let baseline = roc_auc(&y, &probabilities(model, &m));
    if !baseline.is_finite() {
        // One class only: AUC is undefined, so is its drop.
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37);
    let fields = field_columns(&model.payload().encoder);
    // The permutations are drawn in one sequence, as the fields and repeats come, so
    // the result does not depend on how the scoring below is spread over cores.
    let orders: Vec<Vec<Vec<usize>>> = fields
        .iter()
        .map(|_| {
            (0..PERMUTATION_REPEATS)
                .map(|_| {
                    let mut order: Vec<usize> = (0..m.n_rows).collect();
                    order.shuffle(&mut rng);
                    order
                })
                .collect()
        })
        .collect();
    let mut out: Vec<FieldImportance> = fields
        .into_par_iter()
        .zip(orders)
        .map(|((field, cols), orders)| {
            let drops: Vec<f64> = orders
                .par_iter()
                .map(|order| {
                    let mut shuffled = m.clone();
                    // One permutation for the whole group keeps a one-hot row one-hot.
                    for c in cols.clone() {
                        shuffled.columns[c] = order.iter().map(|&i| m.columns[c][i]).collect();
                    }
                    baseline - roc_auc(&y, &probabilities(model, &shuffled))
                })
                .collect();
            let mean = drops.iter().sum::<f64>() / drops.len() as f64;
            let var = drops.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / drops.len() as f64;
            FieldImportance {
                field,
                value: mean,
                std: var.sqrt(),
            }
        })
        .collect();
    out.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.field.cmp(&b.field)));
    out
}

fn partial_dependence(
    model: &Model,
    frame: &CleanFrame,
    m: &Matrix,
    field: &str,
    seed: u64,
) -> Option<PartialDependence> {
    let encoder = &model.payload().encoder;
    let (pos, enc) = encoder.columns.iter().enumerate().find(|(_, c)| match c {
        EncodedColumn::Numeric { name, .. } | EncodedColumn::OneHot { name, .. } => name == field,
    })?;
    let (_, cols) = field_columns(encoder).swap_remove(pos);
    let rows = sample_rows(m.n_rows, DEPENDENCE_ROWS, seed ^ 0x5eed);
    let base = m.select(&rows);
    let mean_at = |set: &dyn Fn(&mut Matrix)| {
        let mut x = base.clone();
        set(&mut x);
        let p = probabilities(model, &x);
        p.iter().sum::<f64>() / p.len().max(1) as f64
    };
    let points = match enc {
        EncodedColumn::Numeric { offset, factor, .. } => {
            let predict_buy_data::ColumnValues::Numeric(values) = &frame.features[pos].values
            else {
                return None;
            };
            numeric_grid(values)
                .into_par_iter()
                .map(|v| {
                    let encoded = ((v - offset) * factor) as f32;
                    DependencePoint {
                        label: format_number(v),
                        x: v,
                        mean_probability: mean_at(&|x: &mut Matrix| {
                            x.columns[cols.start].fill(encoded)
                        }),
                    }
                })
                .collect()
        }
        EncodedColumn::OneHot { categories, .. } => {
            // The most common categories, so a long tail of rare codes stays readable.
            let mut share: Vec<(usize, f32)> = cols
                .clone()
                .enumerate()
                .map(|(k, c)| (k, base.columns[c].iter().sum::<f32>()))
                .collect();
            share.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            share.truncate(DEPENDENCE_CATEGORIES);
            share.sort_by_key(|s| s.0);
            share
                .into_par_iter()
                .enumerate()
                .map(|(i, (k, _))| DependencePoint {
                    label: categories[k].clone(),
                    x: i as f64,
                    mean_probability: mean_at(&|x: &mut Matrix| {
                        for (j, c) in cols.clone().enumerate() {
                            x.columns[c].fill(if j == k { 1.0 } else { 0.0 });
                        }
                    }),
                })
                .collect()
        }
    };
    Some(PartialDependence {
        field: field.to_string(),
        numeric: matches!(enc, EncodedColumn::Numeric { .. }),
        points,
    })
}

/// The 5th to 95th percentiles in steps of 5, without repeats.
fn numeric_grid(values: &[f64]) -> Vec<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return Vec::new();
    }
    sorted.sort_unstable_by(f64::total_cmp);
    let mut grid: Vec<f64> = (1..=19)
        .map(|k| {
            let pos = (k as f64 / 20.0) * (sorted.len() - 1) as f64;
            sorted[pos.round() as usize]
        })
        .collect();
    grid.dedup();
    grid
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.2}")
    }
}

/// Total gain per input field, summed over every split of every tree, replayed on the
/// rows the trees were grown on. Forests and single trees score a split by its weighted
/// Gini decrease (averaged over trees, as scikit-learn's `feature_importances_` does
/// before normalising); boosting by its Newton gain `½(G_L²/(H_L+λ) + G_R²/(H_R+λ) −
/// G²/(H+λ))` with each round's logistic gradients. Bootstrap and subsample draws are not
/// replayed, so a forest's gain is measured on every row rather than its in-bag rows.
pub fn total_gain(
    ensemble: &Ensemble,
    encoder: &Encoder,
    x: &Matrix,
    y: &[u8],
    lambda: f64,
) -> Vec<FieldImportance> {
    let rows = sample_rows(x.n_rows, GAIN_ROWS, 0x6a1e);
    let mut per_feature = vec![0f64; x.n_features()];
    let mut row = Vec::with_capacity(x.n_features());
    let rows_x: Vec<Vec<f32>> = rows
        .iter()
        .map(|&r| {
            x.row(r, &mut row);
            row.clone()
        })
        .collect();
    let labels: Vec<f64> = rows.iter().map(|&r| f64::from(y[r])).collect();
    let mut scores = vec![ensemble.base_score; rows.len()];
    for tree in &ensemble.trees {
        // Per node: (sum of g, sum of h) — g = p − y, h = p(1 − p) for boosting; for
        // impurity, g counts positives and h counts rows.
        let mut sums = vec![(0f64, 0f64); tree.len()];
        for (r, xr) in rows_x.iter().enumerate() {
            let (g, h) = match ensemble.link {
                Link::Logit => {
                    let p = sigmoid(scores[r]);
                    (p - labels[r], p * (1.0 - p))
                }
                Link::Average => (labels[r], 1.0),
            };
            let mut i = 0;
            loop {
                sums[i].0 += g;
                sums[i].1 += h;
                let n = tree.node(i);
                if n.feature == LEAF {
                    if ensemble.link == Link::Logit {
                        scores[r] += f64::from(n.value);
                    }
                    break;
                }
                i = n.left as usize + usize::from(xr[n.feature as usize] > n.threshold);
            }
        }
        for (i, n) in tree.nodes().enumerate() {
            if n.feature == LEAF {
                continue;
            }
            let (l, r) = (sums[n.left as usize], sums[n.left as usize + 1]);
            let gain = match ensemble.link {
                Link::Logit => {
                    let score = |(g, h): (f64, f64)| g * g / (h + lambda).max(1e-12);
                    0.5 * (score(l) + score(r) - score(sums[i]))
                }
                Link::Average => {
                    let impurity = |(pos, n): (f64, f64)| {
                        if n == 0.0 {
                            0.0
                        } else {
                            let q = pos / n;
                            n * 2.0 * q * (1.0 - q)
                        }
                    };
                    (impurity(sums[i]) - impurity(l) - impurity(r)) / rows.len().max(1) as f64
                }
            };
            per_feature[n.feature as usize] += gain.max(0.0);
        }
    }
    if ensemble.link == Link::Average && !ensemble.trees.is_empty() {
        for g in &mut per_feature {
            *g /= ensemble.trees.len() as f64;
        }
    }
    let mut out: Vec<FieldImportance> = field_columns(encoder)
        .into_iter()
        .map(|(field, cols)| FieldImportance {
            field,
            value: per_feature[cols].iter().sum(),
            std: 0.0,
        })
        .collect();
    out.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.field.cmp(&b.field)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;
    use crate::ensemble::Precision;
    use crate::train::{TrainRequest, train};
    use crate::tree::{Node, Tree};

    fn encoder(names: &[&str]) -> Encoder {
        Encoder {
            columns: names
                .iter()
                .map(|n| EncodedColumn::Numeric {
                    name: n.to_string(),
                    offset: 0.0,
                    factor: 1.0,
                })
                .collect(),
        }
    }

    fn stump(feature: u32) -> Tree {
        Tree::from_nodes(vec![
            Node {
                feature,
                threshold: 0.5,
                left: 1,
                value: 0.0,
            },
            Node::leaf(0.0),
            Node::leaf(1.0),
        ])
    }

    #[test]
    fn a_perfect_split_gains_the_parents_whole_impurity() {
        let x = Matrix {
            n_rows: 4,
            columns: vec![vec![0.0, 0.0, 1.0, 1.0], vec![0.0, 1.0, 0.0, 1.0]],
        };
        let y = [0, 0, 1, 1];
        let forest = Ensemble {
            link: Link::Average,
            base_score: 0.0,
            trees: vec![stump(0), stump(1)],
            precision: Precision::F64,
        };
        let gain = total_gain(&forest, &encoder(&["a", "b"]), &x, &y, 0.0);
        // Gini of the root is 2·½·½ = ½ per row; `a` removes all of it in one of two
        // trees, `b` none of it in the other.
        assert_eq!(gain[0].field, "a");
        assert!((gain[0].value - 0.25).abs() < 1e-12, "{gain:?}");
        assert_eq!((gain[1].field.as_str(), gain[1].value), ("b", 0.0));
    }

    #[test]
    fn boosting_gain_is_the_newton_gain_of_the_first_round() {
        let x = Matrix {
            n_rows: 4,
            columns: vec![vec![0.0, 0.0, 1.0, 1.0]],
        };
        let y = [0, 0, 1, 1];
        let booster = Ensemble {
            link: Link::Logit,
            base_score: 0.0,
            trees: vec![stump(0)],
            precision: Precision::F64,
        };
        // At p = ½: g = ±½, h = ¼ per row. Children: G = ∓1, H = ½; parent G = 0.
        // ½ (1/(½+1) + 1/(½+1) − 0) = 2/3.
        let gain = total_gain(&booster, &encoder(&["a"]), &x, &y, 1.0);
        assert!((gain[0].value - 2.0 / 3.0).abs() < 1e-12, "{gain:?}");
    }

    #[test]
    fn brier_of_perfect_and_constant_scores() {
        assert_eq!(brier(&[0, 1], &[0.0, 1.0]), 0.0);
        assert!((brier(&[0, 1], &[0.5, 0.5]) - 0.25).abs() < 1e-15);
    }

    #[test]
    fn training_records_a_consistent_report() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        predict_buy_data::synth::write_split(3, 6_000, 0.25, &mut a, &mut b).unwrap();
        let tr = Table::from_reader(a.as_slice(), "train.csv").unwrap();
        let te = Table::from_reader(b.as_slice(), "test.csv").unwrap();
        let mut cfg: TrainConfig = serde_yaml_ng::from_str(crate::DEFAULT_CONFIG_YAML).unwrap();
        cfg.model.params.as_mut().unwrap()["n_estimators"] = 20.into();
        let out = train(
            &TrainRequest {
                config: &cfg,
                train: &tr,
                test: Some(&te),
                data_digest: None,
                trained_at: "2026-01-01T00:00:00Z".into(),
                tool_version: "test".into(),
                git_commit: Some("abc123".into()),
            },
            &crate::Quiet,
        )
        .unwrap();
        let meta = out.model.metadata();
        assert_eq!(meta.git_commit.as_deref(), Some("abc123"));
        let summary = meta.summary.as_ref().unwrap();
        assert_eq!(summary.rows_read, tr.n_rows());
        assert_eq!(summary.test.rows(), te.n_rows());
        assert_eq!(summary.fit_after_smote.rows(), out.report.train_rows);
        assert_eq!(
            summary.fit_before_smote.positives
                + summary.fit_before_smote.negatives
                + summary.validation.rows()
                + summary.dropped_outliers,
            tr.n_rows()
        );
        let metrics = meta.metrics.as_ref().unwrap();
        let ev = meta.test_evaluation.as_ref().unwrap();
        assert!(ev.scores.is_valid());
        assert_eq!(ev.scores.rows(), metrics.rows as u64);
        let at = ev.scores.at(metrics.threshold);
        assert_eq!([[at.tn, at.fp], [at.fn_, at.tp]], metrics.confusion_matrix);
        // Every input field is ranked, by both importances.
        let fields: Vec<String> = out
            .model
            .input_fields()
            .into_iter()
            .map(|f| f.name)
            .collect();
        let mut ranked: Vec<String> = ev.permutation.iter().map(|f| f.field.clone()).collect();
        ranked.sort();
        let mut sorted = fields.clone();
        sorted.sort();
        assert_eq!(ranked, sorted);
        assert_eq!(meta.gain.len(), fields.len());
        assert!(meta.gain[0].value > 0.0);
        // The synthetic buyers depend on PastAccident above all (0.5% vs 23.8%).
        let top2: Vec<&str> = ev.permutation[..2]
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert!(top2.contains(&"PastAccident"), "{:?}", ev.permutation);
        assert!(ev.permutation[0].value > 0.01, "{:?}", ev.permutation);
        let pd = &ev.partial_dependence;
        assert_eq!(pd.len(), fields.len().min(DEPENDENCE_FIELDS));
        let accident = pd.iter().find(|p| p.field == "PastAccident").unwrap();
        let at_label = |l: &str| {
            accident
                .points
                .iter()
                .find(|p| p.label.eq_ignore_ascii_case(l))
                .unwrap()
                .mean_probability
        };
        assert!(at_label("Yes") > 2.0 * at_label("No"), "{accident:?}");
        // The same rows evaluated again from the raw table agree with what was stored.
        let (again, ev2) = evaluate_table(&out.model, &te, 0).unwrap();
        assert_eq!(again.confusion_matrix, metrics.confusion_matrix);
        assert_eq!(ev2.scores, ev.scores);
        assert!((ev2.brier - ev.brier).abs() < 1e-15);
    }
}
