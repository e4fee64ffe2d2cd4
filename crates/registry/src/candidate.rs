//! An environment's candidate (`registry-v1/envs/<env>/candidate.json`): a second
//! release that the environment's servers load beside the one they serve, either to
//! shadow it (score every request, answer with neither) or to answer a canary share.
//!
//! The record lives beside `state.json` rather than inside it because servers pinned to
//! one release (Kubernetes pods) must follow it too, and because a candidate comes and
//! goes without the desired release changing. At most one candidate exists per
//! environment: [`Registry::set_candidate`] creates the record only if none exists, so
//! a second `shadow start` or canary is refused instead of silently replacing the first.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Registry;
use crate::error::{Error, Result};
use crate::names::{EnvName, ReleaseTag};
use crate::store::Cas;

/// The header a canary's request key is read from unless configured otherwise.
pub const DEFAULT_REQUEST_KEY_HEADER: &str = "x-request-id";

/// Where a canary finds the key that assigns a request to a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", content = "name", rename_all = "snake_case")]
pub enum RequestKey {
    /// A request header, e.g. `x-request-id`.
    Header(String),
    /// A field of the request body, e.g. a customer id the client sends.
    Field(String),
}

impl Default for RequestKey {
    fn default() -> Self {
        RequestKey::Header(DEFAULT_REQUEST_KEY_HEADER.to_string())
    }
}

/// What the servers do with the candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CandidateMode {
    /// Score every request with the candidate too; answer with the serving release only.
    Shadow,
    /// Answer `percent` of requests (0 < percent < 100) with the candidate, chosen by a
    /// hash of the request key so one customer always meets the same release.
    Canary { percent: f64, key: RequestKey },
}

impl CandidateMode {
    pub fn name(&self) -> &'static str {
        match self {
            CandidateMode::Shadow => "shadow",
            CandidateMode::Canary { .. } => "canary",
        }
    }
}

/// The candidate record of an environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub env: EnvName,
    pub release: ReleaseTag,
    #[serde(flatten)]
    pub mode: CandidateMode,
    pub started_at: Timestamp,
    pub started_by: String,
}

fn candidate_rel(env: &EnvName) -> String {
    format!("envs/{env}/candidate.json")
}

impl Registry {
    /// The environment's candidate, if one is set.
    pub async fn candidate(&self, env: &EnvName) -> Result<Option<Candidate>> {
        let rel = candidate_rel(env);
        match self.store.get(&rel).await? {
            Some((bytes, _)) => Ok(Some(self.decode(&rel, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Make `release` the environment's candidate. The release must exist, a canary's
    /// share must lie strictly between 0 and 100, and no other candidate may be set
    /// ([`Error::CandidateExists`] names the one that is).
    pub async fn set_candidate(
        &self,
        env: &EnvName,
        release: &ReleaseTag,
        mode: CandidateMode,
        actor: &str,
    ) -> Result<Candidate> {
        let rel = candidate_rel(env);
        if let CandidateMode::Canary { percent, key } = &mode {
            if !(percent.is_finite() && *percent > 0.0 && *percent < 100.0) {
                return Err(Error::InvalidRecord {
                    object: rel,
                    reason: format!(
                        "a canary share must be above 0% and below 100%, not {percent}%"
                    ),
                });
            }
            let (RequestKey::Header(name) | RequestKey::Field(name)) = key;
            if name.trim().is_empty() {
                return Err(Error::InvalidRecord {
                    object: rel,
                    reason: "a canary's request key needs a header or field name".to_string(),
                });
            }
        }
        // Fails with UnknownRelease if the tag was never released.
        self.get_release(release).await?;
        let candidate = Candidate {
            env: env.clone(),
            release: release.clone(),
            mode,
            started_at: Timestamp::now(),
            started_by: actor.to_string(),
        };
        let json = serde_json::to_vec_pretty(&candidate).expect("records serialise");
        match self.store.create(&rel, json.into()).await? {
            Cas::Written => Ok(candidate),
            _ => {
                let existing = self.candidate(env).await?;
                Err(Error::CandidateExists {
                    env: env.clone(),
                    release: existing.as_ref().map(|c| c.release.to_string()),
                    mode: existing.map(|c| c.mode.name()),
                })
            }
        }
    }

    /// Remove the environment's candidate; returns the one removed, if any. Servers drop
    /// it at their next poll.
    pub async fn clear_candidate(&self, env: &EnvName) -> Result<Option<Candidate>> {
        let previous = self.candidate(env).await?;
        if previous.is_some() {
            self.store.delete(&candidate_rel(env)).await?;
        }
        Ok(previous)
    }
}
