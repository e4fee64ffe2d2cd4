//! Evaluation on probabilities: accuracy and the classification report at the decision
//! threshold, plus the threshold-free ROC AUC, PR AUC (average precision) and log loss.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub rows: usize,
    pub positives: usize,
    pub threshold: f64,
    pub accuracy: f64,
    /// `None` when the rows hold only one class.
    pub roc_auc: Option<f64>,
    pub pr_auc: Option<f64>,
    pub log_loss: f64,
    /// Of the positive class.
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// `[[tn, fp], [fn, tp]]`, as scikit-learn lays it out.
    pub confusion_matrix: [[u64; 2]; 2],
    pub classification_report: ClassificationReport,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    #[serde(rename = "0")]
    pub negative: ClassScores,
    #[serde(rename = "1")]
    pub positive: ClassScores,
    pub macro_avg: ClassScores,
    pub weighted_avg: ClassScores,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

pub fn evaluate(y: &[u8], p: &[f64], threshold: f64) -> EvalReport {
    let mut cm = [[0u64; 2]; 2];
    for (&t, &q) in y.iter().zip(p) {
        let pred = usize::from(q >= threshold);
        cm[usize::from(t)][pred] += 1;
    }
    let [[tn, fp], [fn_, tp]] = cm;
    let scores = |tp: u64, fp: u64, fn_: u64| {
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        ClassScores {
            precision,
            recall,
            f1,
            support: tp + fn_,
        }
    };
    let positive = scores(tp, fp, fn_);
    let negative = scores(tn, fn_, fp);
    let n = y.len() as u64;
    let avg = |w0: f64, w1: f64, s: u64| ClassScores {
        precision: w0 * negative.precision + w1 * positive.precision,
        recall: w0 * negative.recall + w1 * positive.recall,
        f1: w0 * negative.f1 + w1 * positive.f1,
        support: s,
    };
    let (w0, w1) = (ratio(negative.support, n), ratio(positive.support, n));
    EvalReport {
        rows: y.len(),
        positives: (tp + fn_) as usize,
        threshold,
        accuracy: ratio(tp + tn, n),
        roc_auc: Some(roc_auc(y, p)).filter(|v| v.is_finite()),
        pr_auc: Some(average_precision(y, p)).filter(|v| v.is_finite()),
        log_loss: log_loss(y, p),
        precision: positive.precision,
        recall: positive.recall,
        f1: positive.f1,
        confusion_matrix: cm,
        classification_report: ClassificationReport {
            negative,
            positive,
            macro_avg: avg(0.5, 0.5, n),
            weighted_avg: avg(w0, w1, n),
        },
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Rows sorted by descending score, for the ranking metrics.
fn ranked(p: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_unstable_by(|&a, &b| p[b].total_cmp(&p[a]));
    order
}

/// Area under the ROC curve, with tied scores counted as half (Mann–Whitney U).
pub fn roc_auc(y: &[u8], p: &[f64]) -> f64 {
    let order = ranked(p);
    let n_pos = y.iter().filter(|&&v| v == 1).count() as f64;
    let n_neg = y.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    let (mut area, mut tp, mut fp) = (0.0, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let (mut dtp, mut dfp) = (0.0, 0.0);
        let s = p[order[i]];
        while i < order.len() && p[order[i]] == s {
            if y[order[i]] == 1 {
                dtp += 1.0
            } else {
                dfp += 1.0
            }
            i += 1;
        }
        area += dfp * (tp + dtp / 2.0);
        tp += dtp;
        fp += dfp;
    }
    debug_assert_eq!(fp, n_neg);
    area / (n_pos * n_neg)
}

/// Average precision, as scikit-learn's `average_precision_score` computes it.
pub fn average_precision(y: &[u8], p: &[f64]) -> f64 {
    let order = ranked(p);
    let n_pos = y.iter().filter(|&&v| v == 1).count() as f64;
    if n_pos == 0.0 {
        return f64::NAN;
    }
    let (mut ap, mut tp, mut seen, mut last_recall) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let s = p[order[i]];
        while i < order.len() && p[order[i]] == s {
            tp += f64::from(y[order[i]]);
            seen += 1.0;
            i += 1;
        }
        let recall = tp / n_pos;
        ap += (recall - last_recall) * (tp / seen);
        last_recall = recall;
    }
    ap
}

pub fn log_loss(y: &[u8], p: &[f64]) -> f64 {
    const EPS: f64 = 1e-15;
    let total: f64 = y
        .iter()
        .zip(p)
        .map(|(&t, &q)| {
            let q = q.clamp(EPS, 1.0 - EPS);
            if t == 1 { -q.ln() } else { -(1.0 - q).ln() }
        })
        .sum();
    total / y.len().max(1) as f64
}

/// The threshold that maximises F1 on these rows.
pub fn best_f1_threshold(y: &[u8], p: &[f64]) -> f64 {
    let order = ranked(p);
    let n_pos = y.iter().filter(|&&v| v == 1).count() as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let (mut best_f1, mut best_t) = (-1.0, 0.5);
    let mut i = 0;
    while i < order.len() {
        let s = p[order[i]];
        while i < order.len() && p[order[i]] == s {
            if y[order[i]] == 1 {
                tp += 1.0
            } else {
                fp += 1.0
            }
            i += 1;
        }
        let f1 = 2.0 * tp / (tp + fp + n_pos);
        if f1 > best_f1 {
            best_f1 = f1;
            best_t = s;
        }
    }
    best_t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_and_ap_match_scikit_learn() {
        // sklearn: roc_auc_score([0,0,1,1],[0.1,0.4,0.35,0.8]) == 0.75
        let y = [0, 0, 1, 1];
        let p = [0.1, 0.4, 0.35, 0.8];
        assert!((roc_auc(&y, &p) - 0.75).abs() < 1e-12);
        // average_precision_score(...) == 0.8333333333333333
        assert!((average_precision(&y, &p) - 0.833_333_333_333_333_3).abs() < 1e-12);
        // log_loss(...) == 0.47228795...
        assert!((log_loss(&y, &p) - 0.472_287_953_809_176_15).abs() < 1e-9);
    }

    #[test]
    fn ties_count_half() {
        assert_eq!(roc_auc(&[0, 1], &[0.5, 0.5]), 0.5);
    }

    #[test]
    fn report_counts() {
        let r = evaluate(&[0, 0, 1, 1, 1], &[0.2, 0.7, 0.9, 0.6, 0.1], 0.5);
        assert_eq!(r.confusion_matrix, [[1, 1], [1, 2]]);
        assert!((r.accuracy - 0.6).abs() < 1e-12);
        assert!((r.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.recall - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.classification_report.negative.support, 2);
    }

    #[test]
    fn f1_threshold_separates() {
        let t = best_f1_threshold(&[0, 0, 1, 1], &[0.1, 0.2, 0.7, 0.9]);
        assert_eq!(t, 0.7);
    }
}
