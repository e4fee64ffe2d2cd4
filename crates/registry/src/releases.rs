//! Immutable release records: `registry-v1/releases/<tag>.json`.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Registry;
use crate::error::{Error, Result};
use crate::names::{Digest, ReleaseTag};
use crate::store::Cas;

/// How many release records are read at once by [`Registry::list_releases`].
const LIST_CONCURRENCY: usize = 64;

/// One golden prediction: the model's output on a fixed input, which deploy
/// verification compares live instances against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenPrediction {
    /// The request body, a JSON object.
    pub input: serde_json::Value,
    pub predicted_class: u8,
    pub probability: f64,
}

/// A release: an immutable name for a model artifact plus what is known about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub tag: ReleaseTag,
    pub model_digest: Digest,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub git_commit: Option<String>,
    #[serde(default)]
    pub notes: String,
    pub created_at: Timestamp,
    pub created_by: String,
    /// Evaluation metrics as produced by `evaluate --json`.
    #[serde(default)]
    pub metrics: serde_json::Value,
    #[serde(default)]
    pub golden: Vec<GoldenPrediction>,
    /// What the model was trained from: data digests, config and tool version. Absent
    /// in releases cut before data versioning (and then not reproducible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingRecord>,
}

/// The provenance of a release's model, enough for `release reproduce` to rebuild it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// Each data file training read, in the order it read them (train, then test).
    pub data: Vec<DataRef>,
    /// True when every data file above is stored in the registry; false only for a
    /// release created with `--allow-unversioned-data`.
    pub data_in_registry: bool,
    /// The training config as the artifact records it.
    pub config: serde_json::Value,
    /// The predict-buy version that trained the model.
    pub tool_version: String,
}

/// One data file by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRef {
    /// `train` or `test`.
    pub role: String,
    pub digest: Digest,
    /// Raw size in bytes.
    pub size: u64,
    /// The file's name when it was read, e.g. `train.csv`.
    pub name: String,
}

impl ReleaseRecord {
    /// Every data digest this release names (none for releases without provenance).
    pub fn data_digests(&self) -> impl Iterator<Item = &Digest> {
        self.training
            .iter()
            .flat_map(|t| t.data.iter().map(|d| &d.digest))
    }
}

impl ReleaseRecord {
    /// The fields that make a release what it is; `created_at` and `created_by` are
    /// bookkeeping and do not count when an existing tag is re-created, nor does
    /// `training`, which follows from the model.
    fn differing_fields(&self, other: &ReleaseRecord) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.model_digest != other.model_digest {
            out.push("model_digest");
        }
        if self.image != other.image {
            out.push("image");
        }
        if self.git_commit != other.git_commit {
            out.push("git_commit");
        }
        if self.notes != other.notes {
            out.push("notes");
        }
        if self.metrics != other.metrics {
            out.push("metrics");
        }
        if self.golden != other.golden {
            out.push("golden");
        }
        // `training` is not compared: it is read from the model the digest names (and
        // from whether its data is stored, which can change), so the same model means
        // the same release.
        out
    }
}

/// What [`Registry::create_release`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateOutcome {
    /// The stored record (the earlier one if the tag already existed).
    pub record: ReleaseRecord,
    /// False when an identical release already existed (creation is idempotent).
    pub created: bool,
}

pub(crate) fn release_rel(tag: &ReleaseTag) -> String {
    format!("releases/{tag}.json")
}

impl Registry {
    /// Record a release. It must name a stored artifact and its golden inputs must be
    /// JSON objects.
    ///
    /// Releases are immutable. The write is a conditional create, so of two concurrent
    /// creators of one tag exactly one wins. Re-creating an existing tag with the same
    /// content (ignoring `created_at`/`created_by`) returns the stored record with
    /// `created: false`; different content is [`Error::ReleaseExists`], naming the
    /// fields that differ.
    pub async fn create_release(&self, record: &ReleaseRecord) -> Result<CreateOutcome> {
        let rel = release_rel(&record.tag);
        if let Some(i) = record.golden.iter().position(|g| !g.input.is_object()) {
            return Err(Error::InvalidRecord {
                object: rel,
                reason: format!("golden prediction {i} has an input that is not a JSON object"),
            });
        }
        if !record.probability_ok() {
            return Err(Error::InvalidRecord {
                object: rel,
                reason: "golden probabilities must be between 0 and 1".into(),
            });
        }
        if !self.has_artifact(&record.model_digest).await? {
            return Err(Error::UnknownDigest {
                reference: record.model_digest.to_string(),
                registry: self.store.label().to_string(),
            });
        }
        let json = serde_json::to_vec_pretty(record).expect("release records serialise");
        match self.store.create(&rel, Bytes::from(json)).await? {
            Cas::Written => Ok(CreateOutcome {
                record: record.clone(),
                created: true,
            }),
            Cas::Lost => {
                let existing = self.get_release(&record.tag).await?;
                let differing = existing.differing_fields(record);
                if differing.is_empty() {
                    Ok(CreateOutcome {
                        record: existing,
                        created: false,
                    })
                } else {
                    Err(Error::ReleaseExists {
                        tag: record.tag.clone(),
                        differing,
                    })
                }
            }
        }
    }

    /// Check, before anything is written, that `record` could be created: `Ok(None)`
    /// when the tag is free, `Ok(Some(stored))` when an identical release exists, and
    /// [`Error::ReleaseExists`] when the tag holds different content. Lets a caller
    /// refuse a conflicting release before it pushes the model, so a refusal leaves
    /// no orphan object. [`Registry::create_release`] still decides races.
    pub async fn check_new_release(&self, record: &ReleaseRecord) -> Result<Option<ReleaseRecord>> {
        let existing = match self.get_release(&record.tag).await {
            Ok(existing) => existing,
            Err(Error::UnknownRelease { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let differing = existing.differing_fields(record);
        if differing.is_empty() {
            Ok(Some(existing))
        } else {
            Err(Error::ReleaseExists {
                tag: record.tag.clone(),
                differing,
            })
        }
    }

    /// Read one release.
    pub async fn get_release(&self, tag: &ReleaseTag) -> Result<ReleaseRecord> {
        let rel = release_rel(tag);
        let Some((bytes, _)) = self.store.get(&rel).await? else {
            return Err(Error::UnknownRelease {
                tag: tag.clone(),
                registry: self.store.label().to_string(),
            });
        };
        self.decode(&rel, &bytes)
    }

    /// All release tags, in semver order, without reading the records.
    pub async fn list_release_tags(&self) -> Result<Vec<ReleaseTag>> {
        let mut tags: Vec<ReleaseTag> = self
            .store
            .list("releases")
            .await?
            .into_iter()
            .filter_map(|(rel, _)| {
                let name = rel.strip_prefix("releases/")?.strip_suffix(".json")?;
                ReleaseTag::parse(name).ok()
            })
            .collect();
        tags.sort();
        Ok(tags)
    }

    /// All release records, in semver order.
    pub async fn list_releases(&self) -> Result<Vec<ReleaseRecord>> {
        let tags = self.list_release_tags().await?;
        futures::stream::iter(tags)
            .map(|tag| async move { self.get_release(&tag).await })
            .buffered(LIST_CONCURRENCY)
            .try_collect()
            .await
    }

    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        rel: &str,
        bytes: &[u8],
    ) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|source| Error::Decode {
            object: format!("{}/{rel}", crate::store::LAYOUT),
            registry: self.store.label().to_string(),
            source,
        })
    }
}

impl ReleaseRecord {
    fn probability_ok(&self) -> bool {
        self.golden
            .iter()
            .all(|g| (0.0..=1.0).contains(&g.probability))
    }
}
