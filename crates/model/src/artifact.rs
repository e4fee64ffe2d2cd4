//! The model artifact: one self-describing, versioned, checksummed file, and the loaded
//! [`Model`] that answers predictions from it.
//!
//! Layout: the 8-byte magic `PBUYMDL\n`, the format version (u32, little-endian), the
//! payload length (u64, little-endian), the payload, then the SHA-256 of everything
//! before it.
//!
//! That frame is the same for every format version; only the payload changes. So a
//! reader checks the checksum before it believes the header: a damaged version field
//! is corruption, and only an intact file can be "a newer format".
//!
//! The payload:
//! - formats 1 and 2: one JSON document (schema, preprocessing, trees as columns of
//!   JSON numbers, threshold, metadata, golden rows);
//! - format 3: the same JSON document with an empty `ensemble.trees`, directly
//!   followed by the trees in binary (a full-depth model's trees are millions of
//!   numbers: as JSON they were most of the file and most of its load time):
//!
//! ```text
//! 8 bytes  PBTREES\0
//! u32      number of trees
//! per tree its columns, as `Tree`'s binary layout in `tree.rs` describes: a node
//!          count, the column widths, then features, thresholds/leaf values, left
//!          children of splits, covers; integers little-endian, floats IEEE 754 bits
//! ```
//!
//! The section must end exactly where the payload ends. A format-3 payload that is
//! JSON alone, trees included, is read too. Models loaded from a format-1 or -2 file
//! are written back in their own format, byte for byte.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use predict_buy_data::{Cleaner, DataError, FieldError, RawValue, RuleKind, Table};

use std::io::Write;
use std::sync::OnceLock;

use crate::ensemble::{Compiled, Ensemble, Link};
use crate::explain::{ExplainError, Explainer};
use crate::learners::sigmoid;
use crate::metrics::EvalReport;
use crate::preprocess::{EncodedColumn, Encoder, RecordEncoder};
use crate::tree::{Cursor, DecodeError, Tree};

pub const MAGIC: &[u8; 8] = b"PBUYMDL\n";
/// The artifact format this build writes and the newest it reads.
///
/// 2: trees carry each node's cover (for explanations) and leaf values are summed in
/// `f64`. A format-1 artifact still loads and predicts as it always did.
/// 3: the trees are stored in binary after the JSON (see the module doc); formats 1
/// and 2 still load, predict and write back as they did.
pub const FORMAT_VERSION: u32 = 3;
/// The first format whose trees follow the JSON in binary.
const BINARY_TREES: u32 = 3;
const TREES_MAGIC: &[u8; 8] = b"PBTREES\0";
const HEADER: usize = 8 + 4 + 8;
const CHECKSUM: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("not a predict-buy model: the file does not start with the artifact magic bytes")]
    NotAnArtifact,
    #[error("truncated: the file has {actual} bytes, the header promises {expected}")]
    Truncated { expected: u64, actual: u64 },
    #[error("corrupt: the file has {actual} bytes, more than the {expected} its header promises")]
    Oversized { expected: u64, actual: u64 },
    #[error(
        "corrupt: the header's {field} is damaged (the checksum matches the rest of the file once it is repaired)"
    )]
    CorruptHeader { field: &'static str },
    #[error(
        "artifact format version {found} is newer than this predict-buy reads ({supported}); upgrade predict-buy"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error("corrupt: the checksum does not match the contents")]
    Checksum,
    #[error("corrupt payload")]
    Payload(#[source] serde_json::Error),
    #[error("corrupt tree section")]
    Trees(#[source] TreeSectionError),
    #[error("invalid model: {0}")]
    Invalid(String),
}

/// Why a format-3 artifact's binary tree section could not be read (its checksum
/// matched, so the writer wrote it so: a bug or a forged file, never a bit flip).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TreeSectionError {
    #[error("it does not start with the tree section's magic bytes")]
    Magic,
    #[error("it ends {missing} bytes short of its tree count")]
    Short { missing: usize },
    #[error(transparent)]
    Tree(#[from] DecodeError),
    #[error("{extra} bytes follow its last tree ({trees} trees)")]
    Trailing { extra: usize, trees: u32 },
    #[error("the JSON lists {inline} trees as well as the binary section")]
    TreesTwice { inline: usize },
}

/// Everything the artifact stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub format_version: u32,
    pub cleaner: Cleaner,
    pub encoder: Encoder,
    pub ensemble: Ensemble,
    pub calibration: Calibration,
    pub threshold: Threshold,
    pub metadata: Metadata,
    /// Sample inputs with the probabilities the model gave them at training time; a
    /// loaded model must reproduce them exactly (its self-check).
    pub golden: Vec<GoldenRow>,
    /// The training data's distributions that servers watch for drift. Absent in
    /// artifacts trained before drift monitoring (and then left out, so their bytes
    /// and digest do not change when written back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<crate::drift::DriftReference>,
}

/// Undoes the prior shift of resampling: SMOTE trains on a balanced set, which
/// inflates probabilities; adding `logit_offset` to the log-odds restores the real
/// class prior.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub logit_offset: f64,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// Predict class 1 when the (corrected) probability is at least this.
    pub value: f64,
    pub method: String,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub model: String,
    pub params: serde_json::Value,
    pub config: serde_json::Value,
    pub data_digest: Option<String>,
    pub train_rows: usize,
    pub features: Vec<String>,
    pub n_trees: usize,
    pub metrics: Option<EvalReport>,
    pub tool_version: String,
    pub trained_at: String,
    /// Each data file training read, by the digest of its raw bytes. Left out of the
    /// payload when empty, so artifacts trained without it keep their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_files: Vec<DataFile>,
    /// The commit of the code that trained the model, when trained inside a git work
    /// tree (`-dirty` when it had uncommitted changes).
    #[serde(default)]
    pub git_commit: Option<String>,
    /// Rows, class balance and cleaning; absent in artifacts older than the report.
    #[serde(default)]
    pub summary: Option<crate::train::TrainingSummary>,
    /// Total gain per input field, largest first; empty in older artifacts.
    #[serde(default)]
    pub gain: Vec<crate::insight::FieldImportance>,
    /// The test rows' curves, permutation importance and partial dependence; absent in
    /// older artifacts (the report then needs `--evaluate DATA`).
    #[serde(default)]
    pub test_evaluation: Option<crate::insight::Evaluation>,
}

/// One data file a model was trained or tested on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// `train` or `test`.
    pub role: String,
    /// `sha256:<hex>` of the raw bytes: the file's name in the registry.
    pub digest: String,
    pub size: u64,
    /// The file's name when it was read, e.g. `train.csv`.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenRow {
    pub input: serde_json::Map<String, serde_json::Value>,
    pub probability: f64,
}

/// A prediction for one record.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prediction {
    pub predicted_class: u8,
    pub probability: f64,
}

/// One input field a client sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputField {
    pub name: String,
    /// `number` or `category`.
    pub kind: &'static str,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Known categories (others are accepted and ignored by one-hot encoding).
    pub categories: Option<Vec<String>>,
}

/// What an [`Explanation`]'s numbers are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Units {
    /// Boosting: log-odds after the calibration offset, so `sigmoid(score)` is the
    /// probability `/predict` answers.
    LogOdds,
    /// Forests and single trees: the mean of the trees' class-1 frequencies, before
    /// calibration (the probability is `score` with the calibration offset applied to
    /// its log-odds; a mean of probabilities has no exact additive log-odds split).
    Probability,
}

/// Why one prediction is what it is: each input field's contribution (its one-hot
/// columns summed) on top of the base value, the model's expectation over the training
/// data. `base_value + Σ contributions = score` to rounding (1e-9).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub predicted_class: u8,
    pub probability: f64,
    pub units: Units,
    pub base_value: f64,
    /// The model's own score for the row (not the sum of the parts).
    pub score: f64,
    /// `(field, contribution)` in schema order.
    pub contributions: Vec<(String, f64)>,
}

/// Why a record could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainFailure {
    #[error("invalid input: {}", describe_fields(.0))]
    Fields(Vec<FieldError>),
    #[error(transparent)]
    Model(#[from] ExplainError),
}

fn describe_fields(errors: &[FieldError]) -> String {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| format!("`{}`: {}", e.field, e.reason))
        .collect();
    parts.join("; ")
}

/// Why a table could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainTableError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ExplainError),
}

/// A loaded model, ready to predict.
#[derive(Debug, Clone)]
pub struct Model {
    payload: Payload,
    encoder: RecordEncoder,
    compiled: Compiled,
    /// `sha256:` of the artifact's bytes: set when the model is read or written, or
    /// computed on first use by writing it to nowhere (a trained model that is only
    /// evaluated never pays for it).
    digest: OnceLock<String>,
    /// Built on the first explanation: its tables cost milliseconds, and most
    /// servers never explain.
    explainer: std::sync::OnceLock<Result<std::sync::Arc<Explainer>, ExplainError>>,
}

impl Model {
    pub(crate) fn new(payload: Payload) -> Result<Self, ArtifactError> {
        Self::loaded(payload, OnceLock::new())
    }

    fn loaded(payload: Payload, digest: OnceLock<String>) -> Result<Self, ArtifactError> {
        validate(&payload)?;
        let encoder = RecordEncoder::new(&payload.encoder);
        let compiled = Compiled::new(&payload.ensemble);
        Ok(Self {
            payload,
            encoder,
            compiled,
            digest,
            explainer: OnceLock::new(),
        })
    }

    /// The same model, recording the data files it was trained from (the caller read
    /// them, so it knows their digests; training itself only sees tables). Only the
    /// metadata changes: the trees are not rebuilt.
    pub fn with_data_files(mut self, files: Vec<DataFile>) -> Result<Self, ArtifactError> {
        self.edit_metadata(|m| m.data_files = files);
        Ok(self)
    }

    /// Changes what the artifact records about the model, never what it predicts
    /// (training adds the test evaluation once it has the model to evaluate).
    pub(crate) fn edit_metadata(&mut self, edit: impl FnOnce(&mut Metadata)) {
        edit(&mut self.payload.metadata);
        self.digest = OnceLock::new();
    }

    /// Records the golden rows: inputs with the probabilities this model gives them.
    pub(crate) fn set_golden(&mut self, golden: Vec<GoldenRow>) {
        self.payload.golden = golden;
        self.digest = OnceLock::new();
    }

    /// Loads an artifact, refusing anything truncated, corrupt, or of a newer format.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ArtifactError> {
        if bytes.len() < 8 || &bytes[..8] != MAGIC {
            if whole_but_for_its_header(bytes) {
                return Err(ArtifactError::CorruptHeader {
                    field: "magic bytes",
                });
            }
            return Err(ArtifactError::NotAnArtifact);
        }
        if bytes.len() < HEADER {
            return Err(ArtifactError::Truncated {
                expected: HEADER as u64,
                actual: bytes.len() as u64,
            });
        }
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let expected = (HEADER as u64)
            .saturating_add(len)
            .saturating_add(CHECKSUM as u64);
        let actual = bytes.len() as u64;
        if actual != expected {
            if whole_but_for_its_header(bytes) {
                return Err(ArtifactError::CorruptHeader {
                    field: "payload length",
                });
            }
            return Err(if actual < expected {
                ArtifactError::Truncated { expected, actual }
            } else {
                ArtifactError::Oversized { expected, actual }
            });
        }
        let body_end = HEADER + len as usize;
        // One pass over the bytes answers both the checksum (the hash of all but the
        // last 32 bytes) and the digest (the hash of all of them): the digest's hasher
        // goes on from where the checksum's stopped.
        let mut sha = Sha256::new();
        sha.update(&bytes[..body_end]);
        if sha.clone().finalize().as_slice() != &bytes[body_end..] {
            return Err(ArtifactError::Checksum);
        }
        sha.update(&bytes[body_end..]);
        let digest = format!("sha256:{}", hex::encode(sha.finalize()));
        // Only now is the version known to be what the writer wrote.
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version > FORMAT_VERSION {
            return Err(ArtifactError::NewerFormat {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let body = &bytes[HEADER..body_end];
        let payload = if version >= BINARY_TREES {
            read_binary_payload(body)?
        } else {
            serde_json::from_slice(body).map_err(ArtifactError::Payload)?
        };
        if payload.format_version != version {
            return Err(ArtifactError::Invalid(
                "header and payload disagree on the format version".into(),
            ));
        }
        Self::loaded(payload, OnceLock::from(digest))
    }

    /// The artifact's bytes in memory; [`Model::write_to`] streams them instead.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to memory cannot fail");
        out
    }

    /// Writes the artifact to `w` as it is produced, with no copy of the whole file
    /// in memory, and returns its digest (`sha256:<hex>` of exactly the bytes
    /// written), which [`Model::digest`] answers from then on. `w` is flushed.
    pub fn write_to<W: Write>(&self, w: W) -> std::io::Result<&str> {
        let digest = self.write_unrecorded(w)?;
        // Already set only if computed before from the same bytes.
        Ok(self.digest.get_or_init(|| digest))
    }

    /// Writes the artifact and returns its digest without recording it (so
    /// [`Model::digest`] can call it while initialising).
    fn write_unrecorded<W: Write>(&self, w: W) -> std::io::Result<String> {
        let mut out = Hashing {
            inner: w,
            sha: Sha256::new(),
        };
        // The payload's own version: a loaded format-1 model written back out is the
        // same file, not a newer header on a format-1 payload.
        let version = self.payload.format_version;
        out.write_all(MAGIC)?;
        out.write_all(&version.to_le_bytes())?;
        if version >= BINARY_TREES {
            let json = self.header_json();
            let trees = &self.payload.ensemble.trees;
            let section = TREES_MAGIC.len() + 4 + trees.iter().map(Tree::binary_len).sum::<usize>();
            out.write_all(&((json.len() + section) as u64).to_le_bytes())?;
            out.write_all(&json)?;
            out.write_all(TREES_MAGIC)?;
            out.write_all(&section_count(trees.len())?.to_le_bytes())?;
            for t in trees {
                t.write_binary(&mut out)?;
            }
        } else {
            let json = serde_json::to_vec(&self.payload).map_err(std::io::Error::other)?;
            out.write_all(&(json.len() as u64).to_le_bytes())?;
            out.write_all(&json)?;
        }
        let Hashing { mut inner, sha } = out;
        // The digest names the whole file, checksum included: hash on from the
        // checksum's own state rather than reading the bytes again.
        let mut whole = sha.clone();
        let sum = sha.finalize();
        inner.write_all(&sum)?;
        inner.flush()?;
        whole.update(sum);
        Ok(format!("sha256:{}", hex::encode(whole.finalize())))
    }

    /// The payload's JSON without its trees, which follow it in binary.
    fn header_json(&self) -> Vec<u8> {
        let p = &self.payload;
        let header = Payload {
            format_version: p.format_version,
            cleaner: p.cleaner.clone(),
            encoder: p.encoder.clone(),
            ensemble: Ensemble {
                link: p.ensemble.link,
                base_score: p.ensemble.base_score,
                trees: Vec::new(),
                precision: p.ensemble.precision,
            },
            calibration: p.calibration.clone(),
            threshold: p.threshold.clone(),
            metadata: p.metadata.clone(),
            golden: p.golden.clone(),
            drift: p.drift.clone(),
        };
        serde_json::to_vec(&header).expect("a payload's JSON always serialises")
    }

    /// `sha256:<hex>` of the artifact's bytes: the registry's name for it.
    pub fn digest(&self) -> &str {
        self.digest.get_or_init(|| {
            let mut sink = std::io::sink();
            self.write_unrecorded(&mut sink)
                .expect("writing to nowhere cannot fail")
        })
    }

    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    pub fn metadata(&self) -> &Metadata {
        &self.payload.metadata
    }

    pub fn threshold(&self) -> &Threshold {
        &self.payload.threshold
    }

    pub fn golden(&self) -> &[GoldenRow] {
        &self.payload.golden
    }

    /// The reference distributions for drift monitoring, if the model was trained
    /// with them.
    pub fn drift_reference(&self) -> Option<&crate::drift::DriftReference> {
        self.payload.drift.as_ref()
    }

    pub fn n_features(&self) -> usize {
        self.encoder.n_features
    }

    /// The fields a request must carry, in schema order.
    pub fn input_fields(&self) -> Vec<InputField> {
        self.payload
            .cleaner
            .features
            .iter()
            .zip(&self.payload.encoder.columns)
            .map(|(rule, enc)| match (&rule.kind, enc) {
                (RuleKind::Numeric { min, max, .. }, _) => InputField {
                    name: rule.name.clone(),
                    kind: "number",
                    min: *min,
                    max: *max,
                    categories: None,
                },
                (RuleKind::Categorical { .. }, EncodedColumn::OneHot { categories, .. }) => {
                    InputField {
                        name: rule.name.clone(),
                        kind: "category",
                        min: None,
                        max: None,
                        categories: Some(categories.clone()),
                    }
                }
                (RuleKind::Categorical { .. }, _) => InputField {
                    name: rule.name.clone(),
                    kind: "category",
                    min: None,
                    max: None,
                    categories: None,
                },
            })
            .collect()
    }

    fn finish(&self, raw: f64) -> Prediction {
        let probability = self.calibrate(raw);
        Prediction {
            predicted_class: u8::from(probability >= self.payload.threshold.value),
            probability,
        }
    }

    /// The ensemble's raw probability shifted back to the real class prior.
    pub(crate) fn calibrate(&self, raw: f64) -> f64 {
        let offset = self.payload.calibration.logit_offset;
        if offset == 0.0 {
            return raw;
        }
        let p = raw.clamp(1e-9, 1.0 - 1e-9);
        sigmoid((p / (1.0 - p)).ln() + offset)
    }

    /// Predicts one record whose values are in the order of [`Model::input_fields`].
    /// Every bad field is reported.
    pub fn predict_values(&self, values: &[RawValue<'_>]) -> Result<Prediction, Vec<FieldError>> {
        let clean = self.payload.cleaner.clean_record(values)?;
        let mut x = vec![0f32; self.encoder.n_features];
        self.encoder.encode(&clean, &mut x);
        Ok(self.finish(self.payload.ensemble.predict_raw(&x)))
    }

    /// Predicts one JSON object keyed by field name. Absent fields are errors; `null`
    /// means missing and is imputed; unknown fields are ignored.
    pub fn predict_json(
        &self,
        record: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Prediction, Vec<FieldError>> {
        self.predict_values(&self.values_of(record)?)
    }

    /// The raw values of a JSON record in schema order, or every bad field.
    fn values_of<'r>(
        &self,
        record: &'r serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<RawValue<'r>>, Vec<FieldError>> {
        let mut values = Vec::with_capacity(self.payload.cleaner.features.len());
        let mut errors = Vec::new();
        for rule in &self.payload.cleaner.features {
            match record.get(&rule.name) {
                None => errors.push(FieldError::new(&rule.name, "field required")),
                Some(v) => match raw_from_json(v) {
                    Ok(raw) => values.push(raw),
                    Err(reason) => errors.push(FieldError::new(&rule.name, reason)),
                },
            }
        }
        if !errors.is_empty() {
            // Report type errors and range errors together.
            if values.len() + errors.len() == self.payload.cleaner.features.len() {
                let mut all = errors;
                let typed: Vec<_> = self
                    .payload
                    .cleaner
                    .features
                    .iter()
                    .filter(|r| !all.iter().any(|e| e.field == r.name))
                    .zip(&values)
                    .filter_map(|(r, v)| {
                        r.clean(v)
                            .err()
                            .map(|reason| FieldError::new(&r.name, reason))
                    })
                    .collect();
                all.extend(typed);
                let order = |f: &FieldError| {
                    self.payload
                        .cleaner
                        .features
                        .iter()
                        .position(|r| r.name == f.field)
                };
                all.sort_by_key(order);
                return Err(all);
            }
            return Err(errors);
        }
        Ok(values)
    }

    /// The model's explainer, or why it has none (a model trained before explanations
    /// existed carries no cover).
    pub fn explainer(&self) -> Result<&Explainer, ExplainError> {
        self.explainer
            .get_or_init(|| {
                Explainer::new(&self.payload.ensemble, self.encoder.n_features)
                    .map(std::sync::Arc::new)
            })
            .as_ref()
            .map(|e| &**e)
            .map_err(Clone::clone)
    }

    /// Explains one JSON record (validated exactly as [`Model::predict_json`]
    /// validates it).
    pub fn explain_json(
        &self,
        record: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Explanation, ExplainFailure> {
        let explainer = self.explainer()?;
        let values = self.values_of(record).map_err(ExplainFailure::Fields)?;
        self.explain_with(explainer, &values)
    }

    /// Explains one record whose values are in the order of [`Model::input_fields`].
    pub fn explain_values(&self, values: &[RawValue<'_>]) -> Result<Explanation, ExplainFailure> {
        self.explain_with(self.explainer()?, values)
    }

    fn explain_with(
        &self,
        explainer: &Explainer,
        values: &[RawValue<'_>],
    ) -> Result<Explanation, ExplainFailure> {
        let clean = self
            .payload
            .cleaner
            .clean_record(values)
            .map_err(ExplainFailure::Fields)?;
        let mut x = vec![0f32; self.encoder.n_features];
        self.encoder.encode(&clean, &mut x);
        let prediction = self.finish(self.payload.ensemble.predict_raw(&x));
        Ok(self.explain_row(explainer, &x, prediction))
    }

    /// Explains every row of a CSV table; the predictions are [`Model::predict_table`]'s.
    pub fn explain_table(&self, table: &Table) -> Result<Vec<Explanation>, ExplainTableError> {
        let explainer = self.explainer()?;
        let columns = self.payload.cleaner.clean_features(table)?;
        let m = self.payload.encoder.transform(&columns);
        let mut raw = Vec::new();
        self.predict_encoded(&m.columns, m.n_rows, &mut raw);
        let mut x = Vec::with_capacity(m.n_features());
        Ok(raw
            .into_iter()
            .enumerate()
            .map(|(r, p)| {
                m.row(r, &mut x);
                self.explain_row(explainer, &x, self.finish(p))
            })
            .collect())
    }

    fn explain_row(&self, explainer: &Explainer, x: &[f32], p: Prediction) -> Explanation {
        let mut phi = vec![0f64; x.len()];
        explainer.explain(x, &mut phi);
        let ensemble = &self.payload.ensemble;
        let (units, offset) = match ensemble.link {
            Link::Logit => (Units::LogOdds, self.payload.calibration.logit_offset),
            Link::Average => (Units::Probability, 0.0),
        };
        let mut contributions = Vec::with_capacity(self.payload.encoder.columns.len());
        let mut at = 0;
        for column in &self.payload.encoder.columns {
            let (name, width) = match column {
                EncodedColumn::Numeric { name, .. } => (name, 1),
                EncodedColumn::OneHot { name, categories } => (name, categories.len()),
            };
            contributions.push((name.clone(), phi[at..at + width].iter().sum()));
            at += width;
        }
        Explanation {
            predicted_class: p.predicted_class,
            probability: p.probability,
            units,
            base_value: explainer.expected_value() + offset,
            score: ensemble.predict_margin(x) + offset,
            contributions,
        }
    }

    /// Probabilities for every row of a CSV table (which may or may not hold a target).
    pub fn predict_table(&self, table: &Table) -> Result<Vec<Prediction>, DataError> {
        let columns = self.payload.cleaner.clean_features(table)?;
        let m = self.payload.encoder.transform(&columns);
        let mut raw = Vec::new();
        self.predict_encoded(&m.columns, m.n_rows, &mut raw);
        Ok(raw.into_iter().map(|p| self.finish(p)).collect())
    }

    /// Scores a labelled table with the model's own threshold.
    pub fn evaluate_table(&self, table: &Table) -> Result<EvalReport, DataError> {
        let frame = self.payload.cleaner.clean_evaluation(table)?;
        let m = self.payload.encoder.transform(&frame.features);
        let mut raw = Vec::new();
        self.predict_encoded(&m.columns, m.n_rows, &mut raw);
        let p: Vec<f64> = raw.into_iter().map(|r| self.calibrate(r)).collect();
        Ok(crate::metrics::evaluate(
            &frame.target,
            &p,
            self.payload.threshold.value,
        ))
    }

    /// Re-predicts the golden rows and demands the stored answers, bit for bit.
    pub fn self_check(&self) -> Result<(), ArtifactError> {
        for (i, row) in self.payload.golden.iter().enumerate() {
            let got = self.predict_json(&row.input).map_err(|e| {
                ArtifactError::Invalid(format!("golden row {i} is rejected: {e:?}"))
            })?;
            if got.probability.to_bits() != row.probability.to_bits() {
                return Err(ArtifactError::Invalid(format!(
                    "golden row {i}: predicted {} but the artifact recorded {}",
                    got.probability, row.probability
                )));
            }
        }
        Ok(())
    }

    /// The raw-probability ensemble, for benchmarks.
    pub fn ensemble(&self) -> &Ensemble {
        &self.payload.ensemble
    }

    /// The ensemble's raw probabilities for `n_rows` encoded rows, column-major.
    pub fn predict_encoded(&self, columns: &[Vec<f32>], n_rows: usize, out: &mut Vec<f64>) {
        self.compiled
            .predict_batch(&self.payload.ensemble, columns, n_rows, out);
    }

    /// [`Model::predict_encoded`] on every core, with the trees compiled at load
    /// (compiling walks every node, and a report scores the model a hundred times).
    pub(crate) fn predict_encoded_par(&self, columns: &[Vec<f32>], n_rows: usize) -> Vec<f64> {
        self.compiled
            .predict_par(&self.payload.ensemble, columns, n_rows)
    }
}

/// Maps a JSON value onto a raw input value, accepting what the original API accepted:
/// numbers, numeric strings (`"2305.40"`, `"£2,305.40"`), category strings, booleans.
pub fn raw_from_json(v: &serde_json::Value) -> Result<RawValue<'_>, String> {
    use serde_json::Value;
    match v {
        Value::Null => Ok(RawValue::Missing),
        Value::Bool(b) => Ok(RawValue::Number(f64::from(u8::from(*b)))),
        Value::Number(n) => n
            .as_f64()
            .map(RawValue::Number)
            .ok_or_else(|| format!("{n} is not representable")),
        Value::String(s) => Ok(RawValue::text(s)),
        Value::Array(_) => Err("expected a number or a string, found an array".into()),
        Value::Object(_) => Err("expected a number or a string, found an object".into()),
    }
}

/// Whether `bytes` are a whole artifact whose magic or length field alone was damaged:
/// its last 32 bytes are the checksum of the rest once those two fields are rewritten
/// as the writer wrote them. Only called on a file already refused, so the extra hash
/// costs nothing on the way to a valid model.
fn whole_but_for_its_header(bytes: &[u8]) -> bool {
    let Some(body_end) = bytes.len().checked_sub(CHECKSUM).filter(|&e| e >= HEADER) else {
        return false;
    };
    let mut sha = Sha256::new();
    sha.update(MAGIC);
    sha.update(&bytes[8..12]);
    sha.update(((body_end - HEADER) as u64).to_le_bytes());
    sha.update(&bytes[HEADER..body_end]);
    sha.finalize().as_slice() == &bytes[body_end..]
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn section_count(n: usize) -> std::io::Result<u32> {
    u32::try_from(n).map_err(|_| std::io::Error::other("more than 2^32 trees"))
}

/// A format-3 payload: the JSON document, then (unless the trees are in the JSON)
/// the binary tree section, which must end exactly where the payload does.
fn read_binary_payload(body: &[u8]) -> Result<Payload, ArtifactError> {
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<Payload>();
    let mut payload = match stream.next() {
        Some(parsed) => parsed.map_err(ArtifactError::Payload)?,
        None => {
            // Empty or whitespace only: let the parser name what is missing.
            return Err(ArtifactError::Payload(
                serde_json::from_slice::<Payload>(body).unwrap_err(),
            ));
        }
    };
    let rest = &body[stream.byte_offset()..];
    if rest.is_empty() {
        return Ok(payload);
    }
    let inline = payload.ensemble.trees.len();
    if inline > 0 {
        return Err(ArtifactError::Trees(TreeSectionError::TreesTwice {
            inline,
        }));
    }
    payload.ensemble.trees = read_tree_section(rest).map_err(ArtifactError::Trees)?;
    Ok(payload)
}

fn read_tree_section(bytes: &[u8]) -> Result<Vec<Tree>, TreeSectionError> {
    let mut r = Cursor::new(bytes);
    if r.take(TREES_MAGIC.len()).ok() != Some(TREES_MAGIC.as_slice()) {
        return Err(TreeSectionError::Magic);
    }
    let n = r
        .u32()
        .map_err(|missing| TreeSectionError::Short { missing })?;
    // Each tree takes at least its 8-byte header: a damaged count is refused before
    // it reserves memory.
    let mut trees = Vec::with_capacity((n as usize).min(r.remaining() / 8));
    for i in 0..n as usize {
        trees.push(Tree::read_binary(&mut r, i)?);
    }
    if r.remaining() > 0 {
        return Err(TreeSectionError::Trailing {
            extra: r.remaining(),
            trees: n,
        });
    }
    Ok(trees)
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn validate(p: &Payload) -> Result<(), ArtifactError> {
    let n_features = RecordEncoder::new(&p.encoder).n_features;
    if p.cleaner.features.len() != p.encoder.columns.len() {
        return Err(ArtifactError::Invalid(
            "the schema and the encoder disagree on the columns".into(),
        ));
    }
    for (rule, enc) in p.cleaner.features.iter().zip(&p.encoder.columns) {
        let ok = matches!(
            (&rule.kind, enc),
            (RuleKind::Numeric { .. }, EncodedColumn::Numeric { .. })
                | (RuleKind::Categorical { .. }, EncodedColumn::OneHot { .. })
        );
        if !ok {
            return Err(ArtifactError::Invalid(format!(
                "column `{}` has a mismatched encoder",
                rule.name
            )));
        }
    }
    if let Some(d) = &p.drift {
        crate::drift::check(d, &p.cleaner).map_err(ArtifactError::Invalid)?;
    }
    if p.ensemble.trees.is_empty() {
        return Err(ArtifactError::Invalid("the ensemble has no trees".into()));
    }
    for (i, t) in p.ensemble.trees.iter().enumerate() {
        t.validate(n_features)
            .map_err(|e| ArtifactError::Invalid(format!("tree {i}: {e}")))?;
    }
    if !(0.0..=1.0).contains(&p.threshold.value)
        || !p.calibration.logit_offset.is_finite()
        || !p.ensemble.base_score.is_finite()
    {
        return Err(ArtifactError::Invalid(
            "threshold or calibration out of range".into(),
        ));
    }
    Ok(())
}
