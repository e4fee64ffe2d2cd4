//! Training end to end: clean, split, encode, resample, fit, pick the threshold,
//! evaluate, and package the artifact.

use std::time::Instant;

use predict_buy_data::{CleanColumn, CleanFrame, ColumnValues, DataError, Preset, Table};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::artifact::{
    ArtifactError, Calibration, FORMAT_VERSION, GoldenRow, Metadata, Model, Payload, Threshold,
};
use crate::binning::Binned;
use crate::config::{ModelName, SmoteSetting, ThresholdName, ThresholdRule, TrainConfig};
use crate::ensemble::{Compiled, Ensemble};
use crate::learners::{
    BoostLog, DecisionTreeParams, FitData, GradientBoostingParams, RandomForestParams, Validation,
    fit_decision_tree, fit_gradient_boosting, fit_random_forest,
};
use crate::metrics::{EvalReport, best_f1_threshold, evaluate};
use crate::preprocess::{Encoder, Matrix};
use crate::smote::{SmoteParams, SmoteSummary, oversample};

/// How many test rows become the artifact's golden rows.
const GOLDEN_ROWS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("config key `{key}`: {reason}")]
    Config { key: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("the trained model failed its own checks")]
    Artifact(#[from] ArtifactError),
}

/// Long steps report here; the CLI draws progress bars, tests ignore it.
pub trait Progress: Sync {
    fn stage(&self, _name: &str) {}
    fn tick(&self, _done: usize, _total: usize) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

pub struct TrainRequest<'a> {
    pub config: &'a TrainConfig,
    pub train: &'a Table,
    /// Evaluated on when given; otherwise `train.test_size` of the rows are held out.
    pub test: Option<&'a Table>,
    pub data_digest: Option<String>,
    pub trained_at: String,
    pub tool_version: String,
    /// The commit of the training code, recorded in the artifact's metadata.
    pub git_commit: Option<String>,
}

/// What training saw, for the model report: rows at each step and how cleaning went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Rows of the training file.
    pub rows_read: usize,
    /// Training rows removed by the outlier rules.
    pub dropped_outliers: usize,
    /// Where the test rows came from.
    pub test_source: String,
    /// The rows the trees were fitted on, before and after SMOTE.
    pub fit_before_smote: ClassBalance,
    pub fit_after_smote: ClassBalance,
    pub validation: ClassBalance,
    pub test: ClassBalance,
    /// Each feature column of the training file: missing rate, imputation, outliers.
    pub cleaning: predict_buy_data::CleaningProfile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassBalance {
    pub negatives: usize,
    pub positives: usize,
}

impl ClassBalance {
    pub fn of(y: &[u8]) -> Self {
        let positives = y.iter().filter(|&&v| v == 1).count();
        Self {
            negatives: y.len() - positives,
            positives,
        }
    }

    pub fn rows(&self) -> usize {
        self.negatives + self.positives
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub model: String,
    /// `sha256:` of the artifact as written: empty until whoever writes it fills it
    /// in ([`Model::write_to`] returns it). The model is usually edited before it is
    /// written (the CLI adds the data files), and hashing it here would serialise
    /// megabytes of trees for a digest no file has.
    pub digest: String,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub test_rows: usize,
    pub dropped_outliers: usize,
    pub features: Vec<String>,
    pub smote: Option<SmoteSummary>,
    pub threshold: Threshold,
    pub calibration: Calibration,
    pub fit_seconds: f64,
    pub n_trees: usize,
    pub boosting: Option<BoostLog>,
    pub test: EvalReport,
}

pub struct TrainOutcome {
    pub model: Model,
    pub report: TrainReport,
}

pub fn train(req: &TrainRequest<'_>, progress: &dyn Progress) -> Result<TrainOutcome, TrainError> {
    // On one of rayon's own threads: a parallel call made there shares its work with
    // the other workers in place, while one made from another thread (the program's
    // main thread) is queued to the pool, wakes a worker and puts the caller to sleep
    // until it is done. A boosted tree's top levels make such a call per node, and from
    // the main thread the two cores were busy 81% of the seed config's fitting.
    rayon::scope(|_| train_on_pool(req, progress))
}

fn train_on_pool(
    req: &TrainRequest<'_>,
    progress: &dyn Progress,
) -> Result<TrainOutcome, TrainError> {
    let cfg = req.config;
    check_fraction("train.test_size", cfg.train.test_size)?;
    check_fraction("train.validation_fraction", cfg.train.validation_fraction)?;
    let seed = cfg.train.random_state.unwrap_or(0);
    let params = cfg.model.params.clone().unwrap_or(serde_json::Value::Null);
    let learner = Learner::parse(cfg.model.name, &params)?;

    progress.stage("cleaning");
    let cleaner = predict_buy_data::Cleaner::fit(req.train, &cfg.data)?;
    // Both files at once: each cleans a column per task, and their columns differ
    // in cost, so more tasks keep every core busy to the end.
    let (frame, test) = rayon::join(
        || cleaner.clean_training(req.train),
        || req.test.map(|t| cleaner.clean_evaluation(t)).transpose(),
    );
    let frame = frame?;
    let (fit_frame, test_frame, test_table_rows) = match test? {
        Some(t) => (frame, t, None),
        None => {
            let (a, b, rows) = split(&frame, cfg.train.test_size, cfg.train.shuffle, seed);
            (a, b, Some(rows))
        }
    };
    if test_frame.n_rows() == 0 {
        return Err(TrainError::Invalid(
            "no rows left for the test set; raise train.test_size or give data.test_path".into(),
        ));
    }

    progress.stage("encoding");
    let encoder = Encoder::fit(&fit_frame.features, &cleaner.features);
    let (x_all, x_test) = rayon::join(
        || encoder.transform(&fit_frame.features),
        || encoder.transform(&test_frame.features),
    );

    let early_stopping = cfg.model.name == ModelName::GradientBoostingClassifier
        && cfg
            .model
            .params
            .as_ref()
            .and_then(|p| p.get("n_iter_no_change"))
            .is_some_and(|v| !v.is_null());
    let need_validation =
        cfg.train.threshold == ThresholdRule::Named(ThresholdName::F1) || early_stopping;
    let val_share = if need_validation {
        cfg.train.validation_fraction
    } else {
        0.0
    };
    let (fit_idx, val_idx) = holdout(&fit_frame.target, val_share, seed);
    let mut x_fit = x_all.select(&fit_idx);
    let mut y_fit: Vec<u8> = fit_idx.iter().map(|&i| fit_frame.target[i]).collect();
    let x_val = x_all.select(&val_idx);
    let y_val: Vec<u8> = val_idx.iter().map(|&i| fit_frame.target[i]).collect();
    if y_fit.iter().all(|&v| v == y_fit[0]) {
        return Err(TrainError::Invalid(
            "the training rows hold a single class; a classifier needs both".into(),
        ));
    }

    let prior_before = positive_rate(&y_fit);
    let fit_before_smote = ClassBalance::of(&y_fit);
    let smote = smote_params(cfg, req.train)?;
    let smote_summary = match &smote {
        Some(p) => {
            progress.stage("SMOTE");
            oversample(&mut x_fit, &mut y_fit, p, seed)
        }
        None => None,
    };
    let calibration = calibration(prior_before, positive_rate(&y_fit), smote_summary.is_some());

    progress.stage("binning");
    let start = Instant::now();
    let (ensemble, boost_log, params_used) = learner.fit(&x_fit, &y_fit, &x_val, &y_val, progress);
    let fit_seconds = start.elapsed().as_secs_f64();

    progress.stage("evaluating");
    // On every core: scoring the seed config's ten full-depth trees on one was a
    // sixth of training's CPU time. A row's score does not depend on how rows are
    // shared out. The trees are compiled once for both scorings.
    let compiled = Compiled::new(&ensemble);
    let predict = |m: &Matrix| -> Vec<f64> {
        compiled
            .predict_par(&ensemble, &m.columns, m.n_rows)
            .into_iter()
            .map(|p| apply_calibration(p, calibration.logit_offset))
            .collect()
    };
    let lambda = params_used
        .get("l2_regularization")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    let test_source = match req.test {
        Some(t) => format!("the test file {}", t.source_name()),
        None => format!(
            "{:.0}% of the training rows, held out before fitting",
            100.0 * cfg.train.test_size
        ),
    };
    // The field gains replay the trees on one core (each boosting round's gradients
    // follow from the last), so the scoring, the test report and the drift
    // reference, which need nothing from them, run beside them on the other cores.
    let ((gain, cleaning), (threshold, p_test, test_report, drift)) = rayon::join(
        || {
            (
                crate::insight::total_gain(&ensemble, &encoder, &x_fit, &y_fit, lambda),
                cleaner.profile(req.train, &cfg.data),
            )
        },
        || {
            let threshold =
                choose_threshold(cfg.train.threshold, &calibration, &y_val, &predict(&x_val));
            let p_test = predict(&x_test);
            let test_report = evaluate(&test_frame.target, &p_test, threshold.value);
            // Held-out scores: what the model gives customers it never saw, unlike
            // the training rows' (overfitted) scores.
            let drift = crate::drift::reference(
                &cleaner,
                req.train,
                &p_test,
                format!("{} test rows ({test_source})", p_test.len()),
            );
            (threshold, p_test, test_report, drift)
        },
    );
    let summary = TrainingSummary {
        rows_read: req.train.n_rows(),
        dropped_outliers: fit_frame.dropped_outliers,
        test_source,
        fit_before_smote,
        fit_after_smote: ClassBalance::of(&y_fit),
        validation: ClassBalance::of(&y_val),
        test: ClassBalance::of(&test_frame.target),
        cleaning,
    };
    let features = encoder.feature_names();
    let n_trees = ensemble.trees.len();
    let payload = Payload {
        format_version: FORMAT_VERSION,
        cleaner,
        encoder,
        ensemble,
        calibration: calibration.clone(),
        threshold: threshold.clone(),
        metadata: Metadata {
            model: cfg.model.name.to_string(),
            params: params_used,
            config: serde_json::to_value(cfg).unwrap_or(serde_json::Value::Null),
            data_digest: req.data_digest.clone(),
            train_rows: x_fit.n_rows,
            features: features.clone(),
            n_trees,
            metrics: Some(test_report.clone()),
            tool_version: req.tool_version.clone(),
            trained_at: req.trained_at.clone(),
            data_files: Vec::new(),
            git_commit: req.git_commit.clone(),
            summary: Some(summary),
            gain,
            test_evaluation: None,
        },
        golden: Vec::new(),
        drift: Some(drift),
    };
    // One model, built once: the evaluation and the golden rows only add to its
    // metadata, which leaves the trees (and what they were compiled into) alone.
    let mut model = Model::new(payload)?;
    progress.stage("test evaluation");
    let test_evaluation =
        crate::insight::evaluate_scored(&model, &test_frame, &x_test, &p_test, seed);
    model.edit_metadata(|m| m.test_evaluation = Some(test_evaluation));
    progress.stage("golden rows");
    // Golden rows come from the raw test data, exactly as a client would send them.
    let golden_source = req.test.unwrap_or(req.train);
    let golden_rows = match &test_table_rows {
        Some(rows) => rows.iter().take(GOLDEN_ROWS).copied().collect(),
        None => (0..golden_source.n_rows().min(GOLDEN_ROWS)).collect::<Vec<_>>(),
    };
    let golden = golden_rows
        .into_iter()
        .filter_map(|row| {
            let input = raw_record(&model, golden_source, row);
            model.predict_json(&input).ok().map(|p| GoldenRow {
                input,
                probability: p.probability,
            })
        })
        .collect();
    model.set_golden(golden);
    model.self_check()?;

    let report = TrainReport {
        model: cfg.model.name.to_string(),
        digest: String::new(),
        train_rows: x_fit.n_rows,
        validation_rows: y_val.len(),
        test_rows: test_frame.n_rows(),
        dropped_outliers: fit_frame.dropped_outliers,
        features,
        smote: smote_summary,
        threshold,
        calibration,
        fit_seconds,
        n_trees: model.payload().ensemble.trees.len(),
        boosting: boost_log,
        test: test_report,
    };
    Ok(TrainOutcome { model, report })
}

fn check_fraction(key: &str, v: f64) -> Result<(), TrainError> {
    if (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        Err(TrainError::Config {
            key: key.into(),
            reason: format!("{v} is not a fraction in [0, 1)"),
        })
    }
}

fn positive_rate(y: &[u8]) -> f64 {
    y.iter().filter(|&&v| v == 1).count() as f64 / y.len().max(1) as f64
}

fn smote_params(cfg: &TrainConfig, table: &Table) -> Result<Option<SmoteParams>, TrainError> {
    let p = match &cfg.train.smote {
        Some(SmoteSetting::Enabled(false)) => None,
        Some(SmoteSetting::Enabled(true)) => Some(SmoteParams::default()),
        Some(SmoteSetting::Params(p)) => Some(p.clone()),
        // The original pipeline resampled with SMOTE (ratio 1.0, k 5).
        None if cfg.data.preset_for(table.headers()) == Preset::Insurance => {
            Some(SmoteParams::default())
        }
        None => None,
    };
    if let Some(p) = &p {
        if p.k == 0 {
            return Err(TrainError::Config {
                key: "train.smote.k".into(),
                reason: "must be at least 1".into(),
            });
        }
        if !(p.ratio > 0.0 && p.ratio <= 1.0) {
            return Err(TrainError::Config {
                key: "train.smote.ratio".into(),
                reason: format!("{} is not in (0, 1]", p.ratio),
            });
        }
    }
    Ok(p)
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    (p / (1.0 - p)).ln()
}

fn calibration(before: f64, after: f64, resampled: bool) -> Calibration {
    if !resampled {
        return Calibration {
            logit_offset: 0.0,
            note: "no resampling; probabilities are the model's own".into(),
        };
    }
    Calibration {
        logit_offset: logit(before) - logit(after),
        note: format!(
            "SMOTE raised the positive share from {:.1}% to {:.1}%; probabilities are shifted back to the real prior (log-odds offset {:.3})",
            100.0 * before,
            100.0 * after,
            logit(before) - logit(after)
        ),
    }
}

fn apply_calibration(p: f64, offset: f64) -> f64 {
    if offset == 0.0 {
        p
    } else {
        crate::learners::sigmoid(logit(p) + offset)
    }
}

fn choose_threshold(
    rule: ThresholdRule,
    cal: &Calibration,
    y_val: &[u8],
    p_val: &[f64],
) -> Threshold {
    match rule {
        ThresholdRule::Fixed(v) => Threshold {
            value: v.clamp(0.0, 1.0),
            method: "fixed".into(),
            note: format!("set in the config: {v}"),
        },
        ThresholdRule::Named(ThresholdName::Prior) => {
            let value = crate::learners::sigmoid(cal.logit_offset);
            Threshold {
                value,
                method: "prior".into(),
                note: format!(
                    "the classifier's own 0.5 decision on its training distribution, which is {value:.4} on the corrected probability scale"
                ),
            }
        }
        ThresholdRule::Named(ThresholdName::F1) if y_val.contains(&1) => {
            let value = best_f1_threshold(y_val, p_val);
            Threshold {
                value,
                method: "f1".into(),
                note: format!(
                    "maximises F1 on {} held-out validation rows (never the test rows)",
                    y_val.len()
                ),
            }
        }
        ThresholdRule::Named(ThresholdName::F1) => Threshold {
            value: 0.5,
            method: "default".into(),
            note: "no validation rows with positives to tune on; 0.5".into(),
        },
    }
}

/// Splits rows into (fit, test) like scikit-learn's `train_test_split`; also returns
/// the test rows' original indices.
fn split(
    frame: &CleanFrame,
    test_size: f64,
    shuffle: bool,
    seed: u64,
) -> (CleanFrame, CleanFrame, Vec<usize>) {
    let n = frame.n_rows();
    let mut idx: Vec<usize> = (0..n).collect();
    if shuffle {
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    }
    let n_test = ((n as f64) * test_size).ceil() as usize;
    let (test, fit) = idx.split_at(n_test.min(n));
    (take(frame, fit), take(frame, test), test.to_vec())
}

fn take(frame: &CleanFrame, rows: &[usize]) -> CleanFrame {
    CleanFrame {
        features: frame
            .features
            .iter()
            .map(|c| CleanColumn {
                name: c.name.clone(),
                values: match &c.values {
                    ColumnValues::Numeric(v) => {
                        ColumnValues::Numeric(rows.iter().map(|&i| v[i]).collect())
                    }
                    ColumnValues::Categorical(v) => {
                        ColumnValues::Categorical(rows.iter().map(|&i| v[i].clone()).collect())
                    }
                },
            })
            .collect(),
        target: rows.iter().map(|&i| frame.target[i]).collect(),
        dropped_outliers: frame.dropped_outliers,
    }
}

/// Picks a random `share` of rows, stratified by class so rare positives are held out
/// in proportion.
fn holdout(y: &[u8], share: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    if share <= 0.0 {
        return ((0..y.len()).collect(), Vec::new());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7a1d);
    let mut fit = Vec::new();
    let mut val = Vec::new();
    for class in [0u8, 1] {
        let mut rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] == class).collect();
        rows.shuffle(&mut rng);
        let k = ((rows.len() as f64) * share).round() as usize;
        val.extend_from_slice(&rows[..k]);
        fit.extend_from_slice(&rows[k..]);
    }
    fit.sort_unstable();
    val.sort_unstable();
    (fit, val)
}

type Fitted = (Ensemble, Option<BoostLog>, serde_json::Value);

/// A learner's parameters, parsed and checked before any data is read.
enum Learner {
    Tree(DecisionTreeParams),
    Forest(RandomForestParams),
    Boosting(GradientBoostingParams),
}

fn config_error(key: &str, reason: &str) -> TrainError {
    TrainError::Config {
        key: key.into(),
        reason: reason.into(),
    }
}

impl Learner {
    fn parse(name: ModelName, params: &serde_json::Value) -> Result<Self, TrainError> {
        fn parse<T: serde::de::DeserializeOwned + Default>(
            v: &serde_json::Value,
        ) -> Result<T, TrainError> {
            if v.is_null() {
                return Ok(T::default());
            }
            serde_json::from_value(v.clone())
                .map_err(|e| config_error("model.params", &e.to_string()))
        }
        let learner = match name {
            ModelName::DecisionTreeClassifier => Learner::Tree(parse(params)?),
            ModelName::RandomForestClassifier => Learner::Forest(parse(params)?),
            ModelName::GradientBoostingClassifier => Learner::Boosting(parse(params)?),
        };
        let (min_samples_leaf, max_depth, n_estimators) = match &learner {
            Learner::Tree(p) => (p.min_samples_leaf, p.max_depth, 1),
            Learner::Forest(p) => (p.min_samples_leaf, p.max_depth, p.n_estimators),
            Learner::Boosting(p) => (p.min_samples_leaf, p.max_depth, p.n_estimators),
        };
        if min_samples_leaf == 0 {
            return Err(config_error(
                "model.params.min_samples_leaf",
                "must be at least 1",
            ));
        }
        if max_depth == Some(0) {
            return Err(config_error(
                "model.params.max_depth",
                "must be at least 1 (or null)",
            ));
        }
        if n_estimators == 0 {
            return Err(config_error(
                "model.params.n_estimators",
                "must be at least 1",
            ));
        }
        if let Learner::Boosting(p) = &learner {
            if p.learning_rate.is_nan() || p.learning_rate <= 0.0 {
                return Err(config_error(
                    "model.params.learning_rate",
                    "must be positive",
                ));
            }
            if p.subsample.is_nan() || p.subsample <= 0.0 || p.subsample > 1.0 {
                return Err(config_error("model.params.subsample", "must be in (0, 1]"));
            }
        }
        Ok(learner)
    }

    fn max_bins(&self) -> usize {
        match self {
            Learner::Tree(p) => p.max_bins,
            Learner::Forest(p) => p.max_bins,
            Learner::Boosting(p) => p.max_bins,
        }
        .clamp(2, 255)
    }

    fn fit(
        &self,
        x: &Matrix,
        y: &[u8],
        x_val: &Matrix,
        y_val: &[u8],
        progress: &dyn Progress,
    ) -> Fitted {
        let binned = Binned::new(x, self.max_bins());
        let data = FitData { binned: &binned, y };
        let tick = |done: usize, total: usize| progress.tick(done, total);
        progress.stage("fitting");
        match self {
            Learner::Tree(p) => (fit_decision_tree(p, &data), None, used(p)),
            Learner::Forest(p) => (fit_random_forest(p, &data, &tick), None, used(p)),
            Learner::Boosting(p) => {
                let val_binned = (!y_val.is_empty()).then(|| binned.apply(x_val));
                let validation = val_binned.as_ref().map(|b| Validation {
                    binned: b,
                    y: y_val,
                });
                let (e, log) = fit_gradient_boosting(p, &data, validation.as_ref(), &tick);
                (e, Some(log), used(p))
            }
        }
    }
}

/// The parameters actually used, defaults filled in, for the artifact's metadata.
fn used<T: serde::Serialize>(params: &T) -> serde_json::Value {
    serde_json::to_value(params).unwrap_or_default()
}

/// One raw table row as the JSON object a client would send for it.
fn raw_record(
    model: &Model,
    table: &Table,
    row: usize,
) -> serde_json::Map<String, serde_json::Value> {
    model
        .input_fields()
        .into_iter()
        .filter_map(|f| {
            let col = table.column_index(&f.name)?;
            let cell = table.cell(row, col).trim();
            let value = if cell.is_empty() {
                serde_json::Value::Null
            } else if f.kind == "number" {
                predict_buy_data::parse_number(cell)
                    .and_then(serde_json::Number::from_f64)
                    .map_or_else(
                        || serde_json::Value::String(cell.to_string()),
                        serde_json::Value::Number,
                    )
            } else {
                serde_json::Value::String(cell.to_string())
            };
            Some((f.name, value))
        })
        .collect()
}
