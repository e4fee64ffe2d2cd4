//! The training config: the seed pipeline's YAML, plus everything it left implicit.

use std::fmt;
use std::path::PathBuf;

use predict_buy_data::DataConfig;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

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

/// `train.smote`: `true`, `false`, or settings under our names (`k`, `ratio`) or
/// imbalanced-learn's (`k_neighbors`, `sampling_strategy`). Written back under ours.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SmoteSetting {
    Enabled(bool),
    Params(SmoteParams),
}

/// Every key `train.smote` accepts, listed when it meets another.
const SMOTE_KEYS: &[&str] = &["k", "k_neighbors", "ratio", "sampling_strategy"];

/// imbalanced-learn's named `sampling_strategy` values that, with two classes, all mean
/// "resample the minority up to the majority": a ratio of 1.
const FULL_BALANCE: &[&str] = &["auto", "minority", "not majority", "all"];

// By hand rather than `#[serde(untagged)]`: an untagged enum reports any mistake inside
// the map as "did not match any variant", hiding which key was wrong.
impl<'de> Deserialize<'de> for SmoteSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Setting;
        impl<'de> Visitor<'de> for Setting {
            type Value = SmoteSetting;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`true`, `false` or a map with keys k (or k_neighbors) and ratio (or sampling_strategy)")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<SmoteSetting, E> {
                Ok(SmoteSetting::Enabled(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SmoteSetting, A::Error> {
                SmoteParams::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(SmoteSetting::Params)
            }
        }
        deserializer.deserialize_any(Setting)
    }
}

impl<'de> Deserialize<'de> for SmoteParams {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Params;
        impl<'de> Visitor<'de> for Params {
            type Value = SmoteParams;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map with keys k (or k_neighbors) and ratio (or sampling_strategy)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SmoteParams, A::Error> {
                let mut params = SmoteParams::default();
                // Which name set each setting, so that giving both names is refused.
                let (mut k_from, mut ratio_from): (Option<&str>, Option<&str>) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    let (name, from) = match key.as_str() {
                        "k" => ("k", &mut k_from),
                        "k_neighbors" => ("k_neighbors", &mut k_from),
                        "ratio" => ("ratio", &mut ratio_from),
                        "sampling_strategy" => ("sampling_strategy", &mut ratio_from),
                        other => return Err(de::Error::unknown_field(other, SMOTE_KEYS)),
                    };
                    if let Some(earlier) = from.replace(name) {
                        return Err(de::Error::custom(format!(
                            "`{earlier}` and `{name}` set the same thing; give one of them"
                        )));
                    }
                    match name {
                        "k" | "k_neighbors" => params.k = map.next_value()?,
                        _ => params.ratio = map.next_value::<SamplingStrategy>()?.0,
                    }
                }
                Ok(params)
            }
        }
        deserializer.deserialize_map(Params)
    }
}

/// A minority/majority ratio: a number, or one of imbalanced-learn's names for 1.
struct SamplingStrategy(f64);

impl<'de> Deserialize<'de> for SamplingStrategy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Strategy;
        impl Visitor<'_> for Strategy {
            type Value = SamplingStrategy;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a ratio in (0, 1] or one of `{}`",
                    FULL_BALANCE.join("`, `")
                )
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<SamplingStrategy, E> {
                Ok(SamplingStrategy(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SamplingStrategy, E> {
                Ok(SamplingStrategy(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SamplingStrategy, E> {
                Ok(SamplingStrategy(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SamplingStrategy, E> {
                if FULL_BALANCE.contains(&v) {
                    Ok(SamplingStrategy(1.0))
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        deserializer.deserialize_any(Strategy)
    }
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

    fn smote(yaml: &str) -> Result<Option<SmoteSetting>, String> {
        let doc = format!("train: {{smote: {yaml}}}\nmodel: {{name: DecisionTreeClassifier}}\n");
        serde_yaml_ng::from_str::<TrainConfig>(&doc)
            .map(|c| c.train.smote)
            .map_err(|e| e.to_string())
    }

    fn params(k: usize, ratio: f64) -> Option<SmoteSetting> {
        Some(SmoteSetting::Params(SmoteParams { k, ratio }))
    }

    #[test]
    fn smote_takes_our_names_and_imbalanced_learns() {
        assert_eq!(smote("{k: 3, ratio: 0.5}"), Ok(params(3, 0.5)));
        assert_eq!(
            smote("{k_neighbors: 7, sampling_strategy: 0.25}"),
            Ok(params(7, 0.25))
        );
        assert_eq!(smote("{k_neighbors: 2, ratio: 1}"), Ok(params(2, 1.0)));
        for name in ["auto", "minority", "not majority", "all"] {
            let yaml = format!("{{sampling_strategy: {name}}}");
            assert_eq!(smote(&yaml), Ok(params(5, 1.0)), "{name}");
        }
        assert_eq!(smote("{}"), Ok(params(5, 1.0)));
        assert_eq!(smote("true"), Ok(Some(SmoteSetting::Enabled(true))));
        assert_eq!(smote("false"), Ok(Some(SmoteSetting::Enabled(false))));
        assert_eq!(smote("null"), Ok(None));
        // Written back under our names, which read back the same.
        let json = serde_json::to_string(&params(7, 0.25)).unwrap();
        assert_eq!(json, r#"{"k":7,"ratio":0.25}"#);
    }

    #[test]
    fn a_wrong_smote_key_lists_the_valid_ones() {
        let err = smote("{k_neighbours: 3}").unwrap_err();
        assert!(
            err.contains(
                "unknown field `k_neighbours`, expected one of `k`, `k_neighbors`, `ratio`, `sampling_strategy`"
            ),
            "{err}"
        );
        assert!(err.contains("train.smote"), "{err}");
        assert!(!err.contains("untagged"), "{err}");

        let err = smote("{sampling_strategy: majority}").unwrap_err();
        assert!(
            err.contains("invalid value: string \"majority\", expected a ratio in (0, 1] or one of `auto`, `minority`, `not majority`, `all`"),
            "{err}"
        );
        let err = smote("{k: 3, k_neighbors: 4}").unwrap_err();
        assert!(
            err.contains("`k` and `k_neighbors` set the same thing; give one of them"),
            "{err}"
        );
        let err = smote("3").unwrap_err();
        assert!(
            err.contains("expected `true`, `false` or a map with keys k (or k_neighbors)"),
            "{err}"
        );
    }
}
