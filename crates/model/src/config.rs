//! The training config: the seed pipeline's YAML, plus everything it left implicit.

use std::path::PathBuf;

use predict_buy_data::DataConfig;
use serde::{Deserialize, Serialize};

use crate::smote::SmoteParams;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub train: TrainSection,
    pub model: ModelSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    /// Share of rows held out for the test report when `data.test_path` is absent.
    pub test_size: f64,
    pub random_state: Option<u64>,
    pub shuffle: bool,
    /// `false` turns SMOTE off; parameters turn it on. When absent, it is on for the
    /// insurance preset (as in the original) and off otherwise.
    pub smote: Option<SmoteSetting>,
    /// Share of training rows held back to pick the threshold and to stop boosting early.
    pub validation_fraction: f64,
    /// How the decision threshold is chosen: `f1`, `prior` or a number.
    pub threshold: ThresholdRule,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            test_size: 0.2,
            random_state: None,
            shuffle: true,
            smote: None,
            validation_fraction: 0.1,
            threshold: ThresholdRule::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SmoteSetting {
    Enabled(bool),
    Params(SmoteParams),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ThresholdRule {
    Named(ThresholdName),
    Fixed(f64),
}

impl Default for ThresholdRule {
    fn default() -> Self {
        ThresholdRule::Named(ThresholdName::F1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdName {
    /// Maximise F1 on the validation rows.
    F1,
    /// Keep the classifier's own 0.5 decision from training (what the original did),
    /// expressed on the corrected probability scale.
    Prior,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub name: ModelName,
    #[serde(default)]
    pub params: Option<serde_json::Value>,
    #[serde(default = "default_store_path")]
    pub store_path: PathBuf,
}

fn default_store_path() -> PathBuf {
    PathBuf::from("models")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelName {
    DecisionTreeClassifier,
    RandomForestClassifier,
    GradientBoostingClassifier,
}

impl std::fmt::Display for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelName::DecisionTreeClassifier => "DecisionTreeClassifier",
            ModelName::RandomForestClassifier => "RandomForestClassifier",
            ModelName::GradientBoostingClassifier => "GradientBoostingClassifier",
        })
    }
}

/// The project's default: every column a request carries, a boosted ensemble, no
/// SMOTE (so probabilities need no correction) and an F1-chosen threshold. Quickstart
/// and `train` without `--config` use it.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("default-config.yml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses() {
        let c: TrainConfig = serde_yaml_ng::from_str(DEFAULT_CONFIG_YAML).unwrap();
        assert_eq!(c.model.name, ModelName::GradientBoostingClassifier);
    }

    #[test]
    fn unknown_model_name_is_named() {
        let err = serde_yaml_ng::from_str::<TrainConfig>("model:\n  name: SVC\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `SVC`"), "{err}");
    }
}
