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

/// Most groups [`ScoreCounts`] keeps; finer than any plot draws.
const MAX_SCORE_GROUPS: usize = 1024;

/// Labelled probabilities grouped by score, ascending: enough to draw the ROC,
/// precision–recall, calibration and threshold curves without keeping every row. Rows
/// with equal scores share a group; when there are more distinct scores than
/// `MAX_SCORE_GROUPS`, neighbours in log-odds are merged so that both tails keep their
/// resolution (a rare-positive model's scores crowd near 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreCounts {
    /// Each group's lowest score: the threshold at which all its rows turn positive.
    pub score: Vec<f64>,
    /// Each group's mean score (for calibration).
    pub mean: Vec<f64>,
    pub negatives: Vec<u64>,
    pub positives: Vec<u64>,
}

/// One point of the curves against the threshold: predict 1 when `p >= threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdPoint {
    pub threshold: f64,
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
    pub tn: u64,
}

impl ThresholdPoint {
    pub fn precision(&self) -> f64 {
        // With nothing predicted positive, precision is taken as 1, as scikit-learn's
        // precision_recall_curve ends its curve.
        if self.tp + self.fp == 0 {
            1.0
        } else {
            ratio(self.tp, self.tp + self.fp)
        }
    }
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    pub fn fpr(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }
    pub fn f1(&self) -> f64 {
        let d = 2 * self.tp + self.fp + self.fn_;
        ratio(2 * self.tp, d)
    }
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationBin {
    pub mean_predicted: f64,
    pub fraction_positive: f64,
    pub rows: u64,
}

impl ScoreCounts {
    pub fn new(y: &[u8], p: &[f64]) -> Self {
        let mut pairs: Vec<(f64, u8)> = p
            .iter()
            .zip(y)
            .filter(|(q, _)| q.is_finite())
            .map(|(&q, &t)| (q, t))
            .collect();
        pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut distinct = pairs.len();
        for w in pairs.windows(2) {
            if w[0].0 == w[1].0 {
                distinct -= 1;
            }
        }
        let key: Box<dyn Fn(f64) -> f64> = if distinct <= MAX_SCORE_GROUPS {
            Box::new(|q| q)
        } else {
            let logit = |q: f64| {
                let q = q.clamp(1e-12, 1.0 - 1e-12);
                (q / (1.0 - q)).ln()
            };
            let lo = logit(pairs.first().map_or(0.5, |p| p.0));
            let hi = logit(pairs.last().map_or(0.5, |p| p.0));
            let width = ((hi - lo) / MAX_SCORE_GROUPS as f64).max(1e-12);
            Box::new(move |q| {
                ((logit(q) - lo) / width)
                    .floor()
                    .min(MAX_SCORE_GROUPS as f64 - 1.0)
            })
        };
        let mut out = ScoreCounts {
            score: Vec::new(),
            mean: Vec::new(),
            negatives: Vec::new(),
            positives: Vec::new(),
        };
        let mut last_key = f64::NAN;
        let mut sum = 0.0;
        for (q, t) in pairs {
            let k = key(q);
            if k != last_key {
                if let Some(n) = out.rows_of_last() {
                    *out.mean.last_mut().expect("a group") = sum / n as f64;
                }
                out.score.push(q);
                out.mean.push(q);
                out.negatives.push(0);
                out.positives.push(0);
                last_key = k;
                sum = 0.0;
            }
            sum += q;
            let i = out.score.len() - 1;
            if t == 1 {
                out.positives[i] += 1;
            } else {
                out.negatives[i] += 1;
            }
        }
        if let Some(n) = out.rows_of_last() {
            *out.mean.last_mut().expect("a group") = sum / n as f64;
        }
        out
    }

    fn rows_of_last(&self) -> Option<u64> {
        Some(self.negatives.last()? + self.positives.last()?)
    }

    pub fn rows(&self) -> u64 {
        self.negatives.iter().sum::<u64>() + self.positives.iter().sum::<u64>()
    }

    /// Whether the groups are consistent: equal lengths, ascending, finite scores in
    /// [0, 1]. An artifact is data from a file; the report checks before drawing.
    pub fn is_valid(&self) -> bool {
        let n = self.score.len();
        self.mean.len() == n
            && self.negatives.len() == n
            && self.positives.len() == n
            && self
                .score
                .iter()
                .chain(&self.mean)
                .all(|s| s.is_finite() && (0.0..=1.0).contains(s))
            && self.score.windows(2).all(|w| w[0] <= w[1])
    }

    /// The confusion counts at each group's threshold, from the highest threshold
    /// (nothing predicted positive) down to the lowest (everything positive).
    pub fn sweep(&self) -> Vec<ThresholdPoint> {
        let pos: u64 = self.positives.iter().sum();
        let neg: u64 = self.negatives.iter().sum();
        let mut out = Vec::with_capacity(self.score.len() + 1);
        let (mut tp, mut fp) = (0, 0);
        out.push(ThresholdPoint {
            threshold: 1.0,
            tp,
            fp,
            fn_: pos,
            tn: neg,
        });
        for i in (0..self.score.len()).rev() {
            tp += self.positives[i];
            fp += self.negatives[i];
            out.push(ThresholdPoint {
                threshold: self.score[i],
                tp,
                fp,
                fn_: pos - tp,
                tn: neg - fp,
            });
        }
        out
    }

    /// The confusion counts when predicting 1 for `p >= threshold`.
    pub fn at(&self, threshold: f64) -> ThresholdPoint {
        let mut point = ThresholdPoint {
            threshold,
            tp: 0,
            fp: 0,
            fn_: 0,
            tn: 0,
        };
        for i in 0..self.score.len() {
            if self.score[i] >= threshold {
                point.tp += self.positives[i];
                point.fp += self.negatives[i];
            } else {
                point.fn_ += self.positives[i];
                point.tn += self.negatives[i];
            }
        }
        point
    }

    /// A reliability diagram of `bins` equal-width bins of [0, 1]; empty bins are left
    /// out, as scikit-learn's `calibration_curve` does.
    pub fn calibration(&self, bins: usize) -> Vec<CalibrationBin> {
        let bins = bins.max(1);
        let mut acc = vec![(0f64, 0u64, 0u64); bins];
        for i in 0..self.score.len() {
            let n = self.negatives[i] + self.positives[i];
            let b = ((self.mean[i] * bins as f64) as usize).min(bins - 1);
            acc[b].0 += self.mean[i] * n as f64;
            acc[b].1 += self.positives[i];
            acc[b].2 += n;
        }
        acc.into_iter()
            .filter(|a| a.2 > 0)
            .map(|(sum, pos, n)| CalibrationBin {
                mean_predicted: sum / n as f64,
                fraction_positive: pos as f64 / n as f64,
                rows: n,
            })
            .collect()
    }
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

    #[test]
    fn score_counts_reproduce_the_exact_confusion_and_auc() {
        let y = [0, 0, 1, 1, 0, 1, 0];
        let p = [0.1, 0.4, 0.35, 0.8, 0.4, 0.9, 0.05];
        let s = ScoreCounts::new(&y, &p);
        assert_eq!(s.score, [0.05, 0.1, 0.35, 0.4, 0.8, 0.9]);
        assert_eq!(s.negatives, [1, 1, 0, 2, 0, 0]);
        assert_eq!(s.positives, [0, 0, 1, 0, 1, 1]);
        let at = s.at(0.4);
        let r = evaluate(&y, &p, 0.4);
        assert_eq!([[at.tn, at.fp], [at.fn_, at.tp]], r.confusion_matrix);
        // The trapezoids under the swept ROC points equal the Mann–Whitney AUC.
        let sweep = s.sweep();
        let area: f64 = sweep
            .windows(2)
            .map(|w| (w[1].fpr() - w[0].fpr()) * (w[1].recall() + w[0].recall()) / 2.0)
            .sum();
        assert!((area - roc_auc(&y, &p)).abs() < 1e-12, "{area}");
        assert_eq!(sweep.first().unwrap().tp, 0);
        assert_eq!(sweep.last().unwrap().tn, 0);
    }

    #[test]
    fn many_scores_are_grouped_but_keep_their_counts() {
        let n = 20_000;
        let p: Vec<f64> = (0..n).map(|i| (i as f64 + 0.5) / n as f64).collect();
        let y: Vec<u8> = (0..n).map(|i| u8::from(i % 3 == 0)).collect();
        let s = ScoreCounts::new(&y, &p);
        assert!(s.score.len() <= MAX_SCORE_GROUPS, "{}", s.score.len());
        assert!(s.is_valid());
        assert_eq!(s.rows(), n as u64);
        assert_eq!(
            s.positives.iter().sum::<u64>(),
            y.iter().filter(|&&v| v == 1).count() as u64
        );
        let cal = s.calibration(10);
        assert_eq!(cal.len(), 10);
        assert!((cal[0].mean_predicted - 0.05).abs() < 1e-3, "{:?}", cal[0]);
        assert!((cal[0].fraction_positive - 1.0 / 3.0).abs() < 1e-2);
    }
}
