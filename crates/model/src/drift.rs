//! Reference distributions for drift monitoring, and the Population Stability Index.
//!
//! At training time every request input field gets a histogram over fixed bins, and
//! so do the model's scores; the artifact stores them. A server counts live requests
//! into the same bins ([`FeatureBins::bin`] is the one function both sides call, so a
//! value lands in the same bin whether it came from a CSV cell or a JSON field) and
//! compares the two with [`psi`].
//!
//! Numeric fields: ~10 quantile bins between the training minimum and maximum, plus a
//! bin for values below the minimum, one above the maximum, and one for missing values.
//! Categorical fields: one bin per training category (the most frequent
//! [`MAX_CATEGORIES`]), one for anything else, one for missing values. Bins hold
//! counts, not shares, so histograms from several servers add up exactly.

use std::collections::HashMap;

use predict_buy_data::{Clean, Cleaner, ColumnRule, RawValue, RuleKind, Table};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Quantile bins per numeric field (fewer when values repeat, e.g. a 0/1 flag).
pub const NUMERIC_BINS: usize = 10;
/// Quantile bins of the score distribution.
pub const SCORE_BINS: usize = 10;
/// Categories kept per categorical field; rarer ones count as "other". It bounds the
/// counters a server keeps per field.
pub const MAX_CATEGORIES: usize = 64;
/// The share an empty bin is taken to have in [`psi`], as Evidently does (it replaces
/// a zero share by 0.0001): without it one empty bin makes PSI infinite.
pub const EPSILON: f64 = 1e-4;
/// PSI below this: stable.
pub const STABLE_BELOW: f64 = 0.1;
/// PSI above this: drifted (between the two: watch).
pub const DRIFTED_ABOVE: f64 = 0.25;

/// Everything drift monitoring compares live traffic with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReference {
    /// What the feature histograms were counted on.
    pub source: String,
    /// Rows counted into every feature histogram.
    pub rows: u64,
    /// One per request input field, in the order of the model's input schema.
    pub features: Vec<FeatureReference>,
    pub score: ScoreReference,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureReference {
    pub name: String,
    pub bins: FeatureBins,
    /// Training rows per bin, in the order of [`FeatureBins::kinds`].
    pub counts: Vec<u64>,
}

/// How one field's values map to bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureBins {
    /// Bins: below `min`, then `[min, e₀)`, `[e₀, e₁)`, …, `[eₖ, max]`, above `max`,
    /// missing.
    Numeric { edges: Vec<f64>, min: f64, max: f64 },
    /// Bins: each category (sorted), other, missing.
    Categorical { categories: Vec<String> },
}

/// What a bin holds, so readers can tell missing and out-of-range values apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinKind {
    Value,
    BelowRange,
    AboveRange,
    /// A category training did not keep.
    Other,
    Missing,
}

/// The score (calibrated probability) histogram: bins `< e₀`, `[e₀, e₁)`, …, `≥ eₖ`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreReference {
    /// What the scores were computed on.
    pub source: String,
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
}

/// Where a PSI value stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftLevel {
    Stable,
    Watch,
    Drifted,
}

impl DriftLevel {
    pub fn of(psi: f64) -> Self {
        if psi > DRIFTED_ABOVE {
            DriftLevel::Drifted
        } else if psi >= STABLE_BELOW {
            DriftLevel::Watch
        } else {
            DriftLevel::Stable
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DriftLevel::Stable => "stable",
            DriftLevel::Watch => "watch",
            DriftLevel::Drifted => "drifted",
        }
    }
}

/// Population Stability Index of `actual` against `expected` (counts over the same
/// bins): `Σ (aᵢ − eᵢ) · ln(aᵢ / eᵢ)` over shares, a zero share taken as [`EPSILON`].
/// `None` when either side has no observations (or the bins differ in number).
pub fn psi(expected: &[u64], actual: &[u64]) -> Option<f64> {
    Some(psi_terms(expected, actual)?.iter().sum())
}

/// Each bin's term of [`psi`]: which bins moved the index, and by how much. Every term
/// is ≥ 0, because `aᵢ − eᵢ` and `ln(aᵢ / eᵢ)` always share a sign.
pub fn psi_terms(expected: &[u64], actual: &[u64]) -> Option<Vec<f64>> {
    let e_total: u64 = expected.iter().sum();
    let a_total: u64 = actual.iter().sum();
    if expected.len() != actual.len() || e_total == 0 || a_total == 0 {
        return None;
    }
    let share = |c: u64, total: u64| (c as f64 / total as f64).max(EPSILON);
    Some(
        expected
            .iter()
            .zip(actual)
            .map(|(&e, &a)| {
                let (e, a) = (share(e, e_total), share(a, a_total));
                (a - e) * (a / e).ln()
            })
            .collect(),
    )
}

/// Whether a raw value means "missing", as cleaning reads it (before it imputes).
fn is_missing(v: &RawValue<'_>) -> bool {
    match v {
        RawValue::Missing => true,
        RawValue::Text(s) => s.trim().is_empty(),
        RawValue::Number(_) => false,
    }
}

impl FeatureBins {
    pub fn len(&self) -> usize {
        match self {
            FeatureBins::Numeric { edges, .. } => edges.len() + 4,
            FeatureBins::Categorical { categories } => categories.len() + 2,
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The bin of one raw value, parsed by `rule` exactly as a prediction parses it.
    /// `None` for a value the rule refuses (such a request gets a 422, not a score).
    pub fn bin(&self, rule: &ColumnRule, value: &RawValue<'_>) -> Option<usize> {
        if is_missing(value) {
            return Some(self.len() - 1);
        }
        self.bin_clean(rule.clean(value).ok()?)
    }

    /// [`Self::bin`] of a value that is not missing, once its rule has parsed it.
    fn bin_clean(&self, value: Clean<'_>) -> Option<usize> {
        let last = self.len() - 1;
        match (self, value) {
            (FeatureBins::Numeric { edges, min, max }, Clean::Num(x)) => Some(if x < *min {
                0
            } else if x > *max {
                last - 1
            } else {
                1 + edges.partition_point(|e| *e <= x)
            }),
            (FeatureBins::Categorical { categories }, Clean::Cat(c)) => Some(
                categories
                    .binary_search_by(|k| k.as_str().cmp(c.as_ref()))
                    .unwrap_or(last - 1),
            ),
            _ => None,
        }
    }

    /// What each bin holds.
    pub fn kinds(&self) -> Vec<BinKind> {
        let mut kinds = Vec::with_capacity(self.len());
        match self {
            FeatureBins::Numeric { edges, .. } => {
                kinds.push(BinKind::BelowRange);
                kinds.extend(std::iter::repeat_n(BinKind::Value, edges.len() + 1));
                kinds.push(BinKind::AboveRange);
            }
            FeatureBins::Categorical { categories } => {
                kinds.extend(std::iter::repeat_n(BinKind::Value, categories.len()));
                kinds.push(BinKind::Other);
            }
        }
        kinds.push(BinKind::Missing);
        kinds
    }

    /// A short name per bin: `[36, 41)`, `< 20`, `Male`, `(other)`, `(missing)`.
    pub fn labels(&self) -> Vec<String> {
        let mut labels = Vec::with_capacity(self.len());
        match self {
            FeatureBins::Numeric { edges, min, max } => {
                labels.push(format!("< {}", number(*min)));
                let mut bounds = Vec::with_capacity(edges.len() + 2);
                bounds.push(*min);
                bounds.extend_from_slice(edges);
                bounds.push(*max);
                for (i, pair) in bounds.windows(2).enumerate() {
                    let close = if i == edges.len() { ']' } else { ')' };
                    labels.push(format!("[{}, {}{close}", number(pair[0]), number(pair[1])));
                }
                labels.push(format!("> {}", number(*max)));
            }
            FeatureBins::Categorical { categories } => {
                labels.extend(categories.iter().cloned());
                labels.push("(other)".into());
            }
        }
        labels.push("(missing)".into());
        labels
    }
}

impl ScoreReference {
    pub fn bin(&self, score: f64) -> usize {
        self.edges.partition_point(|e| *e <= score)
    }

    pub fn labels(&self) -> Vec<String> {
        let mut labels = Vec::with_capacity(self.edges.len() + 1);
        let mut lo: Option<f64> = None;
        for e in &self.edges {
            labels.push(match lo {
                None => format!("< {e:.4}"),
                Some(l) => format!("[{l:.4}, {e:.4})"),
            });
            lo = Some(*e);
        }
        labels.push(match lo {
            None => "all".into(),
            Some(l) => format!(">= {l:.4}"),
        });
        labels
    }
}

/// A bin edge as people read it: `36`, `1580.5`, `0.25`.
fn number(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Cut points at the `1/bins … (bins-1)/bins` quantiles of sorted `values`, without
/// repeats and above the minimum (an edge at the minimum would leave its bin empty).
fn quantile_edges(sorted: &[f64], bins: usize) -> Vec<f64> {
    let Some(&min) = sorted.first() else {
        return Vec::new();
    };
    let mut edges: Vec<f64> = (1..bins)
        .map(|q| sorted[(q * sorted.len() / bins).min(sorted.len() - 1)])
        .filter(|e| *e > min)
        .collect();
    edges.dedup();
    edges
}

/// The reference for a model trained on `table` with `cleaner`, and whose scores on
/// its held-out rows are `scores`.
///
/// The feature histograms count the training file's rows as cleaning parses them but
/// *before* imputation (a missing value is counted as missing, as a live request's
/// `null` is) and *before* SMOTE: SMOTE's synthetic rows are interpolations no
/// customer sent, and they would make the minority class's region look like normal
/// traffic. Rows the outlier rules keep out of fitting are counted too: customers
/// with those values still send requests, and without them every such request would
/// look out of range (an IQR rule drops ~3% of premiums, which alone is PSI ≈ 0.17).
/// The rows held out for testing are included: they come from the same file and make
/// the quantiles steadier.
pub(crate) fn reference(
    cleaner: &Cleaner,
    table: &Table,
    scores: &[f64],
    score_source: String,
) -> DriftReference {
    let rows = table.n_rows() as u64;
    let features = cleaner
        .features
        .par_iter()
        .map(|rule| feature_reference(rule, table))
        .collect();
    let mut sorted: Vec<f64> = scores.iter().copied().filter(|s| s.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let mut score = ScoreReference {
        source: score_source,
        edges: quantile_edges(&sorted, SCORE_BINS),
        counts: Vec::new(),
    };
    score.counts = vec![0; score.edges.len() + 1];
    for s in &sorted {
        let b = score.bin(*s);
        score.counts[b] += 1;
    }
    DriftReference {
        source: format!(
            "{} rows of {}, before imputation, outlier removal and SMOTE",
            rows,
            table.source_name()
        ),
        rows,
        features,
        score,
    }
}

fn feature_reference(rule: &ColumnRule, table: &Table) -> FeatureReference {
    let raws: Vec<RawValue<'_>> = match table.column_index(&rule.name) {
        Some(col) => table.column(col).map(RawValue::text).collect(),
        None => Vec::new(),
    };
    // Each cell parsed once, for the bins and then for the counts: `None` when it is
    // missing, `Some(None)` when the rule refuses it.
    let parsed: Vec<Option<Option<Clean<'_>>>> = raws
        .iter()
        .map(|raw| (!is_missing(raw)).then(|| rule.clean(raw).ok()))
        .collect();
    let bins = match &rule.kind {
        RuleKind::Numeric { .. } => {
            let mut values: Vec<f64> = parsed
                .iter()
                .filter_map(|p| match p {
                    Some(Some(Clean::Num(v))) => Some(*v),
                    _ => None,
                })
                .collect();
            values.sort_by(f64::total_cmp);
            FeatureBins::Numeric {
                edges: quantile_edges(&values, NUMERIC_BINS),
                min: values.first().copied().unwrap_or(0.0),
                max: values.last().copied().unwrap_or(0.0),
            }
        }
        RuleKind::Categorical { .. } => {
            let mut counts: HashMap<&str, u64> = HashMap::new();
            for p in &parsed {
                if let Some(Some(Clean::Cat(cat))) = p {
                    *counts.entry(cat.as_ref()).or_default() += 1;
                }
            }
            let mut by_count: Vec<(&str, u64)> = counts.into_iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            by_count.truncate(MAX_CATEGORIES);
            let mut categories: Vec<String> =
                by_count.into_iter().map(|(c, _)| c.to_string()).collect();
            categories.sort();
            FeatureBins::Categorical { categories }
        }
    };
    let mut counts = vec![0u64; bins.len()];
    for p in parsed {
        let bin = match p {
            None => Some(bins.len() - 1),
            Some(value) => value.and_then(|v| bins.bin_clean(v)),
        };
        if let Some(b) = bin {
            counts[b] += 1;
        }
    }
    FeatureReference {
        name: rule.name.clone(),
        bins,
        counts,
    }
}

/// Checks a loaded reference against the model's schema, so a server can index its
/// counters without bounds surprises. The reason names the field.
pub(crate) fn check(reference: &DriftReference, cleaner: &Cleaner) -> Result<(), String> {
    if reference.features.len() != cleaner.features.len() {
        return Err(format!(
            "the drift reference has {} fields, the input schema {}",
            reference.features.len(),
            cleaner.features.len()
        ));
    }
    for (f, rule) in reference.features.iter().zip(&cleaner.features) {
        if f.name != rule.name {
            return Err(format!(
                "the drift reference names field `{}` where the input schema has `{}`",
                f.name, rule.name
            ));
        }
        let kinds_agree = matches!(
            (&f.bins, &rule.kind),
            (FeatureBins::Numeric { .. }, RuleKind::Numeric { .. })
                | (
                    FeatureBins::Categorical { .. },
                    RuleKind::Categorical { .. }
                )
        );
        if !kinds_agree || f.counts.len() != f.bins.len() {
            return Err(format!(
                "the drift reference of field `{}` does not fit its type",
                f.name
            ));
        }
        if let FeatureBins::Numeric { edges, min, max } = &f.bins
            && !sorted_finite(edges, *min, *max)
        {
            return Err(format!(
                "the drift reference of field `{}` has unordered bin edges",
                f.name
            ));
        }
        if let FeatureBins::Categorical { categories } = &f.bins
            && !categories.windows(2).all(|w| w[0] < w[1])
        {
            return Err(format!(
                "the drift reference of field `{}` has unsorted categories",
                f.name
            ));
        }
    }
    let s = &reference.score;
    if s.counts.len() != s.edges.len() + 1 || !s.edges.windows(2).all(|w| w[0] < w[1]) {
        return Err("the drift reference of the score has malformed bins".into());
    }
    Ok(())
}

fn sorted_finite(edges: &[f64], min: f64, max: f64) -> bool {
    min.is_finite()
        && max.is_finite()
        && min <= max
        && edges.iter().all(|e| e.is_finite() && *e > min && *e <= max)
        && edges.windows(2).all(|w| w[0] < w[1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use predict_buy_data::{Parse, Scale};
    use proptest::prelude::*;

    fn numeric_rule() -> ColumnRule {
        ColumnRule {
            name: "AnnualPremium".into(),
            kind: RuleKind::Numeric {
                parse: Parse::Currency,
                impute: 1500.0,
                min: Some(0.0),
                max: None,
                outliers: None,
                scale: Scale::None,
            },
        }
    }

    fn categorical_rule() -> ColumnRule {
        ColumnRule {
            name: "Gender".into(),
            kind: RuleKind::Categorical {
                impute: "Male".into(),
            },
        }
    }

    #[test]
    fn numeric_values_land_in_their_quantile_bin() {
        let bins = FeatureBins::Numeric {
            edges: vec![10.0, 20.0],
            min: 1.0,
            max: 30.0,
        };
        let rule = numeric_rule();
        let bin = |v: RawValue<'_>| bins.bin(&rule, &v);
        assert_eq!(
            bin(RawValue::Number(0.5)),
            Some(0),
            "below the training minimum"
        );
        assert_eq!(bin(RawValue::Number(1.0)), Some(1));
        assert_eq!(bin(RawValue::Number(9.99)), Some(1));
        assert_eq!(
            bin(RawValue::Number(10.0)),
            Some(2),
            "an edge opens its bin"
        );
        assert_eq!(
            bin(RawValue::text("£25.00")),
            Some(3),
            "parsed as cleaning parses"
        );
        assert_eq!(
            bin(RawValue::Number(30.0)),
            Some(3),
            "the maximum is in range"
        );
        assert_eq!(
            bin(RawValue::Number(30.5)),
            Some(4),
            "above the training maximum"
        );
        assert_eq!(bin(RawValue::Missing), Some(5));
        assert_eq!(bin(RawValue::text("  ")), Some(5), "blank text is missing");
        assert_eq!(
            bin(RawValue::text("abc")),
            None,
            "refused values are not counted"
        );
        assert_eq!(
            bin(RawValue::Number(-3.0)),
            None,
            "below the schema's min: refused"
        );
        assert_eq!(bins.len(), 6);
        assert_eq!(
            bins.labels(),
            [
                "< 1",
                "[1, 10)",
                "[10, 20)",
                "[20, 30]",
                "> 30",
                "(missing)"
            ]
        );
        assert_eq!(
            bins.kinds(),
            [
                BinKind::BelowRange,
                BinKind::Value,
                BinKind::Value,
                BinKind::Value,
                BinKind::AboveRange,
                BinKind::Missing
            ]
        );
    }

    #[test]
    fn categories_are_normalised_before_lookup() {
        let bins = FeatureBins::Categorical {
            categories: vec!["Female".into(), "Male".into()],
        };
        let rule = categorical_rule();
        assert_eq!(bins.bin(&rule, &RawValue::text(" Male ")), Some(1));
        assert_eq!(bins.bin(&rule, &RawValue::text("Female")), Some(0));
        assert_eq!(bins.bin(&rule, &RawValue::text("Other")), Some(2));
        assert_eq!(bins.bin(&rule, &RawValue::Number(3.0)), Some(2));
        assert_eq!(bins.bin(&rule, &RawValue::Missing), Some(3));
        assert_eq!(bins.labels(), ["Female", "Male", "(other)", "(missing)"]);
    }

    #[test]
    fn quantile_edges_skip_repeats_and_the_minimum() {
        // A 0/1 flag, mostly 1: one edge, at 1.
        let mut flag = vec![1.0; 95];
        flag.extend([0.0; 5]);
        flag.sort_by(f64::total_cmp);
        assert_eq!(quantile_edges(&flag, 10), [1.0]);
        let ages: Vec<f64> = (0..100).map(f64::from).collect();
        assert_eq!(
            quantile_edges(&ages, 10),
            [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
        );
        assert!(quantile_edges(&[], 10).is_empty());
    }

    #[test]
    fn psi_matches_a_hand_computation() {
        // Shares 0.5/0.5 against 0.25/0.75.
        let expected = (0.25 - 0.5) * (0.25f64 / 0.5).ln() + (0.75 - 0.5) * (0.75f64 / 0.5).ln();
        let got = psi(&[50, 50], &[25, 75]).unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
        // An empty live bin counts as EPSILON, so PSI stays finite.
        let empty = psi(&[50, 50], &[0, 100]).unwrap();
        let by_hand = (EPSILON - 0.5) * (EPSILON / 0.5).ln() + (1.0 - 0.5) * (1.0f64 / 0.5).ln();
        assert!((empty - by_hand).abs() < 1e-12);
        assert_eq!(psi(&[1, 2], &[0, 0]), None, "no live data: no PSI");
        assert_eq!(psi(&[1, 2], &[1, 2, 3]), None, "bins must agree");
    }

    #[test]
    fn levels_follow_the_thresholds() {
        assert_eq!(DriftLevel::of(0.0), DriftLevel::Stable);
        assert_eq!(DriftLevel::of(0.099), DriftLevel::Stable);
        assert_eq!(DriftLevel::of(0.1), DriftLevel::Watch);
        assert_eq!(DriftLevel::of(0.25), DriftLevel::Watch);
        assert_eq!(DriftLevel::of(0.2501), DriftLevel::Drifted);
    }

    proptest! {
        /// A histogram does not drift from itself, whatever its scale.
        #[test]
        fn psi_of_a_histogram_with_itself_is_zero(
            counts in proptest::collection::vec(0u64..10_000, 1..20),
            scale in 1u64..50,
        ) {
            prop_assume!(counts.iter().sum::<u64>() > 0);
            let scaled: Vec<u64> = counts.iter().map(|c| c * scale).collect();
            let p = psi(&counts, &scaled).unwrap();
            prop_assert!(p.abs() < 1e-12, "{p}");
        }

        /// PSI is never negative, and no term is.
        #[test]
        fn psi_is_never_negative(
            pairs in proptest::collection::vec((0u64..1_000, 0u64..1_000), 1..20),
        ) {
            let (e, a): (Vec<u64>, Vec<u64>) = pairs.into_iter().unzip();
            prop_assume!(e.iter().sum::<u64>() > 0 && a.iter().sum::<u64>() > 0);
            let terms = psi_terms(&e, &a).unwrap();
            prop_assert!(terms.iter().all(|t| *t >= 0.0), "{terms:?}");
            prop_assert!(psi(&e, &a).unwrap().is_finite());
        }

        /// Every value lands in exactly one bin, and bins are ordered like values.
        #[test]
        fn numeric_binning_is_total_and_monotone(
            mut values in proptest::collection::vec(0.0f64..1e6, 2..200),
            probe in proptest::collection::vec(0.0f64..2e6, 1..50),
        ) {
            values.sort_by(f64::total_cmp);
            let bins = FeatureBins::Numeric {
                edges: quantile_edges(&values, NUMERIC_BINS),
                min: values[0],
                max: values[values.len() - 1],
            };
            let rule = numeric_rule();
            let mut probe = probe;
            probe.sort_by(f64::total_cmp);
            let got: Vec<usize> = probe
                .iter()
                .map(|v| bins.bin(&rule, &RawValue::Number(*v)).unwrap())
                .collect();
            prop_assert!(got.iter().all(|b| *b < bins.len() - 1), "never the missing bin");
            prop_assert!(got.windows(2).all(|w| w[0] <= w[1]), "{got:?}");
        }
    }
}
