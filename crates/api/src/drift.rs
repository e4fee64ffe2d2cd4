//! `GET /drift`: how a server's live inputs and scores compare with the training
//! data's, over its sliding window. It carries bin counts, not only shares and PSI, so
//! a client can add up several servers' windows and compute PSI over the sum.

use serde::{Deserialize, Serialize};

/// `GET /drift`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct DriftReport {
    /// The release tag when served from a registry, else the short digest.
    pub model_version: String,
    pub release: Option<String>,
    /// `sha256:<hex>` of the model: reports of one digest have the same bins.
    pub model_digest: String,
    /// Whether the model carries reference distributions. Models trained before drift
    /// monitoring do not: then `features` is empty and `note` says so.
    pub reference: bool,
    pub note: Option<String>,
    /// What the reference was counted on.
    pub reference_source: Option<String>,
    /// The sliding window the live counts cover.
    pub window_seconds: f64,
    /// Predictions counted in the window.
    pub samples: u64,
    /// Below this many samples PSI is reported but not judged (`status` is
    /// `insufficient`).
    pub min_samples: u64,
    /// The share an empty bin is taken to have when computing PSI.
    pub epsilon: f64,
    /// PSI below this is `stable`.
    pub stable_below: f64,
    /// PSI above this is `drifted`; between the two, `watch`.
    pub drifted_above: f64,
    pub features: Vec<FeatureDrift>,
    pub score: Option<Distribution>,
}

/// One request input field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct FeatureDrift {
    pub name: String,
    /// `number` or `category`.
    pub kind: String,
    /// Live share of missing values (`null` or blank); `null` with no samples.
    pub missing_share: Option<f64>,
    pub reference_missing_share: f64,
    /// Live share of values outside the training range (numbers below its minimum or
    /// above its maximum; categories training did not keep).
    pub out_of_range_share: Option<f64>,
    pub reference_out_of_range_share: f64,
    #[serde(flatten)]
    pub distribution: Distribution,
}

/// A histogram, live against reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Distribution {
    /// Population Stability Index; `null` with no samples.
    pub psi: Option<f64>,
    pub status: DriftStatus,
    pub bins: Vec<Bin>,
}

/// One bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Bin {
    /// `[36, 41)`, `< 20`, `Male`, `(other)`, `(missing)`.
    pub label: String,
    pub kind: BinKind,
    pub reference_count: u64,
    pub reference_share: f64,
    pub live_count: u64,
    pub live_share: f64,
}

/// What a bin holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BinKind {
    Value,
    BelowRange,
    AboveRange,
    Other,
    Missing,
}

/// PSI judged against the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DriftStatus {
    /// PSI < 0.1.
    Stable,
    /// 0.1 ≤ PSI ≤ 0.25.
    Watch,
    /// PSI > 0.25.
    Drifted,
    /// Fewer samples than `min_samples`: PSI would mostly measure noise.
    Insufficient,
}

impl DriftStatus {
    pub fn name(self) -> &'static str {
        match self {
            DriftStatus::Stable => "stable",
            DriftStatus::Watch => "watch",
            DriftStatus::Drifted => "drifted",
            DriftStatus::Insufficient => "insufficient",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feature_reads_back_with_its_distribution_flattened() {
        let f = FeatureDrift {
            name: "Age".into(),
            kind: "number".into(),
            missing_share: Some(0.05),
            reference_missing_share: 0.06,
            out_of_range_share: None,
            reference_out_of_range_share: 0.0,
            distribution: Distribution {
                psi: Some(0.3),
                status: DriftStatus::Drifted,
                bins: vec![Bin {
                    label: "(missing)".into(),
                    kind: BinKind::Missing,
                    reference_count: 6,
                    reference_share: 0.06,
                    live_count: 5,
                    live_share: 0.05,
                }],
            },
        };
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["psi"], 0.3);
        assert_eq!(json["status"], "drifted");
        assert_eq!(json["bins"][0]["kind"], "missing");
        let back: FeatureDrift = serde_json::from_value(json).unwrap();
        assert_eq!(back, f);
    }
}
