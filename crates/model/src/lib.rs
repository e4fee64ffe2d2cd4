//! The model of predict-buy: preprocessing (scaling, one-hot encoding), SMOTE, the
//! histogram tree learner behind `DecisionTreeClassifier`, `RandomForestClassifier` and
//! `GradientBoostingClassifier`, evaluation metrics, the artifact format and inference.
//!
//! This crate computes; it never touches the network, the file system or the clock
//! beyond timing its own work. Callers hand it tables and bytes and get back models,
//! reports and bytes.
//!
//! ```no_run
//! use predict_buy_model::Model;
//!
//! let bytes = std::fs::read("models/model.pbm")?;
//! let model = Model::from_bytes(&bytes)?;
//! let record = serde_json::json!({
//!     "Gender": "Female", "Age": 46, "HasDrivingLicense": 1, "RegionID": 21.0,
//!     "Switch": 0, "PastAccident": "Yes", "AnnualPremium": "£2,305.40"
//! });
//! let p = model.predict_json(record.as_object().unwrap()).expect("valid record");
//! println!("class {} with probability {:.3}", p.predicted_class, p.probability);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod artifact;
mod binning;
mod config;
pub mod drift;
mod ensemble;
mod explain;
mod grow;
pub mod insight;
mod learners;
mod metrics;
mod preprocess;
mod sample;
mod simd;
mod smote;
mod train;
mod tree;

pub use artifact::{
    ArtifactError, Calibration, DataFile, ExplainFailure, ExplainTableError, Explanation,
    FORMAT_VERSION, GoldenRow, InputField, MAGIC, Metadata, Model, Payload, Prediction, Threshold,
    TreeSectionError, Units, digest_of, raw_from_json,
};
pub use config::{
    DEFAULT_CONFIG_YAML, ModelName, ModelSection, SmoteSetting, ThresholdName, ThresholdRule,
    TrainConfig, TrainSection,
};
pub use ensemble::{Ensemble, Link, Precision};
pub use explain::{ExplainError, Explainer, expected_value, tree_shap};
pub use learners::{
    DecisionTreeParams, GradientBoostingParams, MaxFeatures, RandomForestParams, SplitCriterion,
};
pub use metrics::{
    CalibrationBin, ClassScores, ClassificationReport, EvalReport, ScoreCounts, ThresholdPoint,
    average_precision, evaluate, log_loss, roc_auc,
};
pub use smote::{SmoteParams, SmoteSummary};
pub use train::{
    ClassBalance, Progress, Quiet, TrainError, TrainOutcome, TrainReport, TrainRequest,
    TrainingSummary, train,
};
pub use tree::{DecodeError, LEAF, Node, Tree};

/// Lower-level pieces for benchmarks and property tests.
pub mod core {
    pub use crate::binning::{BinMapper, Binned};
    pub use crate::grow::{Criterion, GrowParams, Grower};
    pub use crate::learners::{
        FitData, fit_decision_tree, fit_gradient_boosting, fit_random_forest,
    };
    pub use crate::preprocess::{Encoder, Matrix};
    pub use crate::simd::{Level, SIMD_ENV, level};
}
