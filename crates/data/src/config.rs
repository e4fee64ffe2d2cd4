use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::INSURANCE_COLUMNS;

/// The `data:` section of a training config. Every key is optional so that the seed
/// pipeline's config (paths only) works unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub train_path: Option<PathBuf>,
    pub test_path: Option<PathBuf>,
    /// Target column; the last column of the CSV when absent.
    pub target: Option<String>,
    /// The target value that counts as class 1, for string labels such as `Yes`.
    pub positive_label: Option<String>,
    /// `insurance` or `none`; when absent, `insurance` applies if `columns` is absent and
    /// the CSV has the raw insurance header.
    pub preset: Option<Preset>,
    /// Per-column rules; columns not listed are features of an inferred type.
    pub columns: Option<BTreeMap<String, ColumnSpec>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// The original pipeline's cleaning and column choice.
    Insurance,
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    #[serde(default)]
    pub role: Role,
    #[serde(rename = "type")]
    pub kind: Option<ColumnType>,
    pub parse: Option<Parse>,
    pub impute: Option<Impute>,
    /// The value used by `impute: constant`.
    pub fill_value: Option<serde_json::Value>,
    pub scale: Option<Scale>,
    pub encode: Option<Encode>,
    pub outliers: Option<Outliers>,
    /// Smallest accepted value of a numeric column (inclusive).
    pub min: Option<f64>,
    /// Largest accepted value of a numeric column (inclusive).
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    Feature,
    Drop,
    Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Numeric,
    Categorical,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parse {
    #[default]
    Number,
    /// `£1,623.85 ` and friends.
    Currency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Impute {
    Median,
    Mean,
    MostFrequent,
    Constant,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    #[default]
    None,
    Minmax,
    Standard,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encode {
    #[default]
    Onehot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outliers {
    /// Drop training rows outside [Q1 − 1.5·IQR, Q3 + 1.5·IQR].
    Iqr,
}

/// Where a data file comes from, by the form `data.train_path` / `data.test_path` take:
/// a digest or a pointer file names a versioned data set in the registry, anything
/// else is a file on disk. The config keeps the text as written, so an artifact's
/// recorded config says which form training used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSource<'a> {
    /// A plain file.
    File(&'a Path),
    /// `sha256:<64 hex>`: a data object in the registry.
    Digest(&'a str),
    /// A `*.ref.yaml` pointer file written by `predict-buy data push`.
    Pointer(&'a Path),
}

impl<'a> DataSource<'a> {
    /// Classify a configured data path.
    pub fn of(path: &'a Path) -> Self {
        let Some(text) = path.to_str() else {
            return DataSource::File(path);
        };
        if let Some(hex) = text.strip_prefix("sha256:")
            && hex.len() == 64
            && hex.chars().all(|c| c.is_ascii_hexdigit())
        {
            return DataSource::Digest(text);
        }
        if text.ends_with(".ref.yaml") {
            return DataSource::Pointer(path);
        }
        DataSource::File(path)
    }
}

impl DataConfig {
    /// Which preset applies to a CSV with this header.
    pub fn preset_for(&self, header: &[String]) -> Preset {
        match self.preset {
            Some(p) => p,
            None if self.columns.is_none() && is_insurance_header(header) => Preset::Insurance,
            None => Preset::None,
        }
    }

    /// The column rules in force for a CSV with this header: the preset's, overridden by
    /// any listed in `columns`.
    pub fn resolved_columns(&self, header: &[String]) -> BTreeMap<String, ColumnSpec> {
        let mut cols = match self.preset_for(header) {
            Preset::Insurance => insurance_preset(),
            Preset::None => BTreeMap::new(),
        };
        if let Some(listed) = &self.columns {
            cols.extend(listed.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        cols
    }
}

fn is_insurance_header(header: &[String]) -> bool {
    INSURANCE_COLUMNS
        .iter()
        .all(|c| header.iter().any(|h| h == c))
}

fn spec(kind: ColumnType, impute: Impute) -> ColumnSpec {
    ColumnSpec {
        kind: Some(kind),
        impute: Some(impute),
        ..ColumnSpec::default()
    }
}

fn dropped() -> ColumnSpec {
    ColumnSpec {
        role: Role::Drop,
        ..ColumnSpec::default()
    }
}

/// The original pipeline: clean.py dropped id, SalesChannelID, VehicleAge and
/// DaysSinceCreated, imputed the rest and cut premium outliers; its ColumnTransformer
/// then kept only AnnualPremium, Age, RegionID, Gender and PastAccident.
pub fn insurance_preset() -> BTreeMap<String, ColumnSpec> {
    let mut m = BTreeMap::new();
    for c in ["id", "SalesChannelID", "VehicleAge", "DaysSinceCreated"] {
        m.insert(c.to_string(), dropped());
    }
    // Imputed by the original's clean step but never used by its model.
    m.insert(
        "HasDrivingLicense".into(),
        ColumnSpec {
            impute: Some(Impute::Constant),
            fill_value: Some(1.into()),
            ..dropped()
        },
    );
    m.insert(
        "Switch".into(),
        ColumnSpec {
            impute: Some(Impute::Constant),
            fill_value: Some((-1).into()),
            ..dropped()
        },
    );
    m.insert(
        "Gender".into(),
        spec(ColumnType::Categorical, Impute::MostFrequent),
    );
    m.insert(
        "Age".into(),
        ColumnSpec {
            scale: Some(Scale::Standard),
            min: Some(0.0),
            max: Some(120.0),
            ..spec(ColumnType::Numeric, Impute::Median)
        },
    );
    m.insert(
        "RegionID".into(),
        ColumnSpec {
            scale: Some(Scale::Standard),
            ..spec(ColumnType::Numeric, Impute::MostFrequent)
        },
    );
    m.insert(
        "PastAccident".into(),
        ColumnSpec {
            fill_value: Some("Unknown".into()),
            ..spec(ColumnType::Categorical, Impute::Constant)
        },
    );
    m.insert(
        "AnnualPremium".into(),
        ColumnSpec {
            parse: Some(Parse::Currency),
            outliers: Some(Outliers::Iqr),
            scale: Some(Scale::Standard),
            min: Some(0.0),
            ..spec(ColumnType::Numeric, Impute::Median)
        },
    );
    m.insert(
        "Result".into(),
        ColumnSpec {
            role: Role::Target,
            ..ColumnSpec::default()
        },
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<String> {
        INSURANCE_COLUMNS.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn insurance_header_selects_preset() {
        let cfg = DataConfig::default();
        assert_eq!(cfg.preset_for(&header()), Preset::Insurance);
        assert_eq!(cfg.preset_for(&["a".into(), "b".into()]), Preset::None);
        let explicit = DataConfig {
            preset: Some(Preset::None),
            ..DataConfig::default()
        };
        assert_eq!(explicit.preset_for(&header()), Preset::None);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_yaml_ng::from_str::<DataConfig>("columns:\n  Age: {imput: median}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("imput"), "{err}");
    }
}

#[cfg(test)]
mod source_tests {
    use super::*;

    #[test]
    fn data_paths_are_files_digests_or_pointers() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            DataSource::of(Path::new(&digest)),
            DataSource::Digest(&digest)
        );
        let short = format!("sha256:{}", "ab".repeat(31));
        assert_eq!(
            DataSource::of(Path::new(&short)),
            DataSource::File(Path::new(&short))
        );
        let pointer = Path::new("data/train.csv.ref.yaml");
        assert_eq!(DataSource::of(pointer), DataSource::Pointer(pointer));
        let file = Path::new("data/train.csv");
        assert_eq!(DataSource::of(file), DataSource::File(file));
    }
}
