//! The deploy state machine:
//!
//! ```text
//! validate tag ─▶ check policy ─▶ plan ─▶ take lease ─▶ record `started` ─▶ apply
//!   ─▶ verify ─┬─▶ record `verified`                                   ─▶ release lease
//!              └─▶ record `failed` ─▶ apply previous good ─▶ verify it
//!                    ─▶ record `rolled_back` (or `failed` if that fails too) ─▶ release lease
//! ```
//!
//! The lease is renewed while the deploy runs and released on every path, errors
//! included; a deployer that dies leaves a lease that expires, and the next deploy
//! records the dangling `started` entry as `interrupted`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use predict_buy_registry::{
    EnvName, Lease, NewHistoryEntry, Outcome, Registry, ReleaseRecord, ReleaseTag,
};
use serde::Serialize;

use crate::config::Environment;
use crate::error::{Error, Result};
use crate::history;
use crate::target::Target;
use crate::verify::{Verifier, VerifyFailure};

/// How long a lease lasts unless renewed; a crashed deploy blocks others this long.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// What kind of transition a plan is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Kind {
    Deploy,
    /// A deploy of a release verified in `from`.
    Promote {
        from: String,
    },
    /// A return to an earlier verified release.
    Rollback,
}

/// Who deploys: recorded in history (`actor`) and on the lease (`holder`).
#[derive(Debug, Clone)]
pub struct Identity {
    pub actor: String,
    pub holder: String,
}

impl Identity {
    /// `user@host`, and `user@host (pid N)` for the lease.
    pub fn current() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("USERNAME"))
            .unwrap_or_else(|_| "unknown".into());
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into());
        let actor = format!("{user}@{host}");
        Identity {
            holder: format!("{actor} (pid {})", std::process::id()),
            actor,
        }
    }
}

/// Everything a deploy will do, shown by `--dry-run` and before the prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    #[serde(flatten)]
    pub kind: Kind,
    pub env: EnvName,
    pub release: ReleaseTag,
    pub model_digest: String,
    pub golden_predictions: usize,
    /// What the environment runs now.
    pub current: Option<ReleaseTag>,
    /// What a failed verification returns to.
    pub fallback: Option<ReleaseTag>,
    pub target: String,
    pub endpoints: Vec<String>,
    pub verify_timeout_ms: u128,
    #[serde(skip)]
    record: ReleaseRecord,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |t: &Option<ReleaseTag>| t.as_ref().map_or("nothing".into(), |t| t.to_string());
        let what = match &self.kind {
            Kind::Deploy => "deploy".to_string(),
            Kind::Promote { from } => format!("promote (verified in {from})"),
            Kind::Rollback => "rollback".to_string(),
        };
        writeln!(f, "plan: {what} {} to {}", self.release, self.env)?;
        writeln!(f, "  now running  {}", opt(&self.current))?;
        writeln!(
            f,
            "  release      {} (model {}, {} golden predictions)",
            self.release, self.model_digest, self.golden_predictions
        )?;
        writeln!(f, "  target       {}", self.target)?;
        writeln!(
            f,
            "  steps        take the lease, record `started`, set desired release, verify every endpoint (timeout {:.0}s), record the outcome",
            self.verify_timeout_ms as f64 / 1000.0
        )?;
        write!(
            f,
            "  on failure   roll back to {} and record `failed`",
            opt(&self.fallback)
        )
    }
}

/// How a transition ended.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub env: EnvName,
    pub release: ReleaseTag,
    pub previous: Option<ReleaseTag>,
    /// `verified`, or `rolled_back` / `failed` (the rollback failed too).
    pub outcome: Outcome,
    pub verify_ms: Option<f64>,
    pub endpoint_verify_ms: Vec<(String, f64)>,
    pub failure: Option<VerifyFailure>,
    pub rolled_back_to: Option<ReleaseTag>,
    pub rollback_verify_ms: Option<f64>,
    pub rollback_failure: Option<VerifyFailure>,
}

impl Report {
    pub fn is_verified(&self) -> bool {
        self.outcome == Outcome::Verified
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Runs deploys, promotions and rollbacks of one environment.
pub struct Deployer<T: Target> {
    registry: Arc<Registry>,
    env: Environment,
    target: T,
    verifier: Verifier,
    identity: Identity,
    lease_ttl: Duration,
    /// The repository whose tags releases must match; `None` skips the check.
    git_root: Option<PathBuf>,
}

impl<T: Target> Deployer<T> {
    pub fn new(
        registry: Arc<Registry>,
        env: Environment,
        target: T,
        verifier: Verifier,
        identity: Identity,
    ) -> Self {
        Deployer {
            registry,
            env,
            target,
            verifier,
            identity,
            lease_ttl: DEFAULT_LEASE_TTL,
            git_root: None,
        }
    }

    /// Require every deployed tag to exist as a git tag in this repository.
    pub fn require_git_tags_in(mut self, root: Option<PathBuf>) -> Self {
        self.git_root = root;
        self
    }

    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    pub fn env(&self) -> &Environment {
        &self.env
    }

    /// Check the tag: a git tag (when required) and a release in the registry.
    pub async fn validate(&self, tag: &ReleaseTag) -> Result<ReleaseRecord> {
        if let Some(root) = &self.git_root {
            crate::git::tag_commit(root, tag)?;
        }
        Ok(self.registry.get_release(tag).await?)
    }

    /// The environment's policy: with `require_verified_in: E`, only releases that
    /// are good in E's history.
    pub async fn check_policy(&self, tag: &ReleaseTag) -> Result<()> {
        let Some(required) = &self.env.config.require_verified_in else {
            return Ok(());
        };
        let lower = EnvName::parse(required)?;
        let history = self.registry.history(&lower).await?;
        if history::is_good(&history, tag) {
            Ok(())
        } else {
            Err(Error::NotVerifiedIn {
                tag: tag.clone(),
                env: self.env.name.clone(),
                required: required.clone(),
            })
        }
    }

    /// The default rollback target: the newest good release that is not running now.
    pub async fn rollback_target(&self) -> Result<ReleaseTag> {
        let current = self.current().await?;
        let history = self.registry.history(&self.env.name).await?;
        history::rollback_candidate(&history, current.as_ref()).ok_or(Error::NoRollbackTarget {
            env: self.env.name.clone(),
            current,
        })
    }

    /// Check that `tag` may be rolled back to: it is good in this environment.
    pub async fn check_rollback_target(&self, tag: &ReleaseTag) -> Result<()> {
        let history = self.registry.history(&self.env.name).await?;
        if history::is_good(&history, tag) {
            Ok(())
        } else {
            Err(Error::NotARollbackTarget {
                tag: tag.clone(),
                env: self.env.name.clone(),
            })
        }
    }

    async fn current(&self) -> Result<Option<ReleaseTag>> {
        Ok(self
            .registry
            .env_state(&self.env.name)
            .await?
            .and_then(|s| s.desired))
    }

    /// Describe what [`Deployer::execute`] would do; changes nothing.
    pub async fn plan(&self, release: ReleaseRecord, kind: Kind) -> Result<Plan> {
        let current = self.current().await?;
        let history = self.registry.history(&self.env.name).await?;
        Ok(Plan {
            kind,
            env: self.env.name.clone(),
            release: release.tag.clone(),
            model_digest: release.model_digest.short().to_string(),
            golden_predictions: release.golden.len(),
            fallback: history::rollback_candidate(&history, Some(&release.tag)),
            current,
            target: self.target.describe(),
            endpoints: self
                .target
                .endpoints()
                .iter()
                .map(ToString::to_string)
                .collect(),
            verify_timeout_ms: self.verifier.timeout().as_millis(),
            record: release,
        })
    }

    /// Run the plan under the environment's lease.
    pub async fn execute(&self, plan: &Plan) -> Result<Report> {
        let operation = match &plan.kind {
            Kind::Deploy => format!("deploy {}", plan.release),
            Kind::Promote { .. } => format!("promote {}", plan.release),
            Kind::Rollback => format!("rollback to {}", plan.release),
        };
        let lease = self
            .registry
            .acquire_lease(
                &self.env.name,
                &self.identity.holder,
                &operation,
                self.lease_ttl,
            )
            .await?;
        let renewer = self.keep_renewed(lease.clone());
        let result = self.run_locked(plan).await;
        renewer.abort();
        let released = self.registry.release_lease(&lease).await;
        match (result, released) {
            (Ok(report), Ok(())) => Ok(report),
            (Ok(report), Err(e)) => {
                tracing::warn!("deploy finished but its lease could not be released: {e}");
                Ok(report)
            }
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(release_error)) => {
                tracing::warn!("the lease could not be released: {release_error}");
                Err(e)
            }
        }
    }

    fn keep_renewed(&self, lease: Lease) -> tokio::task::JoinHandle<()> {
        let registry = Arc::clone(&self.registry);
        let ttl = self.lease_ttl;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                if let Err(e) = registry.renew_lease(&lease, ttl).await {
                    tracing::warn!("cannot renew the deploy lease: {e}");
                }
            }
        })
    }

    async fn record(
        &self,
        release: Option<&ReleaseTag>,
        previous: Option<&ReleaseTag>,
        outcome: Outcome,
        message: String,
    ) -> Result<()> {
        self.registry
            .append_history(
                &self.env.name,
                NewHistoryEntry {
                    release: release.cloned(),
                    previous: previous.cloned(),
                    actor: self.identity.actor.clone(),
                    outcome,
                    message,
                },
            )
            .await?;
        Ok(())
    }

    async fn run_locked(&self, plan: &Plan) -> Result<Report> {
        let env = &self.env.name;
        let tag = &plan.release;
        let history = self.registry.history(env).await?;
        if let Some(dangling) = history.last().filter(|e| e.outcome == Outcome::Started) {
            self.record(
                dangling.release.as_ref(),
                dangling.previous.as_ref(),
                Outcome::Interrupted,
                format!(
                    "entry #{} never finished: its deployer stopped and its lease expired",
                    dangling.seq
                ),
            )
            .await?;
        }
        let state = self.registry.env_state(env).await?;
        let generation = state.as_ref().map_or(0, |s| s.generation);
        let current = state.and_then(|s| s.desired);
        let started = match &plan.kind {
            Kind::Deploy => "deploy".to_string(),
            Kind::Promote { from } => format!("promote from {from}"),
            Kind::Rollback => format!(
                "rollback from {}",
                current.as_ref().map_or("nothing".into(), |c| c.to_string())
            ),
        };
        self.record(Some(tag), current.as_ref(), Outcome::Started, started)
            .await?;
        if let Err(e) = self
            .target
            .apply(
                &self.registry,
                env,
                Some(tag),
                &self.identity.actor,
                Some(generation),
            )
            .await
        {
            self.record(
                Some(tag),
                current.as_ref(),
                Outcome::Failed,
                format!("could not apply: {e}"),
            )
            .await?;
            return Err(e);
        }
        let mut report = Report {
            env: env.clone(),
            release: tag.clone(),
            previous: current.clone(),
            outcome: Outcome::Verified,
            verify_ms: None,
            endpoint_verify_ms: Vec::new(),
            failure: None,
            rolled_back_to: None,
            rollback_verify_ms: None,
            rollback_failure: None,
        };
        match self
            .verifier
            .verify(self.target.endpoints(), &plan.record)
            .await
        {
            Ok(v) => {
                report.verify_ms = Some(ms(v.elapsed));
                report.endpoint_verify_ms = v
                    .endpoints
                    .iter()
                    .map(|(e, d)| (e.clone(), ms(*d)))
                    .collect();
                self.record(
                    Some(tag),
                    current.as_ref(),
                    Outcome::Verified,
                    format!(
                        "verified on {} endpoint(s) in {} ms",
                        v.endpoints.len(),
                        ms(v.elapsed)
                    ),
                )
                .await?;
                Ok(report)
            }
            Err(failure) => {
                self.record(
                    Some(tag),
                    current.as_ref(),
                    Outcome::Failed,
                    format!("verification failed: {failure}"),
                )
                .await?;
                report.failure = Some(failure);
                self.roll_back(plan, current, &mut report).await?;
                Ok(report)
            }
        }
    }

    /// After a failed verification: return to the newest good release (or, with none,
    /// to whatever was desired before) and verify that.
    async fn roll_back(
        &self,
        plan: &Plan,
        current: Option<ReleaseTag>,
        report: &mut Report,
    ) -> Result<()> {
        let env = &self.env.name;
        let tag = &plan.release;
        let history = self.registry.history(env).await?;
        let fallback = history::rollback_candidate(&history, Some(tag));
        let Some(to) = fallback else {
            // Nothing verified to return to: restore the previous desired state as is.
            self.target
                .apply(
                    &self.registry,
                    env,
                    current.as_ref(),
                    &self.identity.actor,
                    None,
                )
                .await?;
            report.outcome = Outcome::Failed;
            report.rolled_back_to = current.clone();
            self.record(
                current.as_ref(),
                Some(tag),
                Outcome::Failed,
                format!(
                    "no verified release to roll back to; desired release restored to {}",
                    current.as_ref().map_or("nothing".into(), |c| c.to_string())
                ),
            )
            .await?;
            return Ok(());
        };
        let record = self.registry.get_release(&to).await?;
        self.target
            .apply(&self.registry, env, Some(&to), &self.identity.actor, None)
            .await?;
        report.rolled_back_to = Some(to.clone());
        match self.verifier.verify(self.target.endpoints(), &record).await {
            Ok(v) => {
                report.outcome = Outcome::RolledBack;
                report.rollback_verify_ms = Some(ms(v.elapsed));
                self.record(
                    Some(&to),
                    Some(tag),
                    Outcome::RolledBack,
                    format!(
                        "rolled back after {tag} failed; verified in {} ms",
                        ms(v.elapsed)
                    ),
                )
                .await
            }
            Err(failure) => {
                report.outcome = Outcome::Failed;
                self.record(
                    Some(&to),
                    Some(tag),
                    Outcome::Failed,
                    format!("rollback after {tag} failed did not verify: {failure}"),
                )
                .await?;
                report.rollback_failure = Some(failure);
                Ok(())
            }
        }
    }
}
