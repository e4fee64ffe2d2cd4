//! The deploy state machine:
//!
//! ```text
//! validate tag ─▶ check policy ─▶ plan ─▶ take lease ─▶ record `started` ─▶ apply
//!   ─▶ verify ─┬─▶ verified ──────────────────────▶ record `verified`   ─▶ release lease
//!              ├─▶ the release misbehaved ────────▶ record `failed`     ─▶ roll back
//!              └─▶ the environment can't be checked ▶ record `unverified` ─▶ roll back
//! roll back: apply the newest good release ─▶ verify it ─▶ record `rolled_back`, or
//!            `failed` (it misbehaved too), or `unverified` (it could not be checked)
//! ```
//!
//! **Whom a failed verification blames.** A release misbehaves when it answers a golden
//! input wrongly or a server refuses to load it: it is recorded `failed` and is no
//! longer good (no policy, rollback or promote accepts it). When an endpoint cannot be
//! reached, or the deadline passes before the release answers, nothing is known about
//! the release: it is recorded `unverified` with the reason, and whatever was known
//! before about it (and about the rollback target) still stands.
//!
//! **The rollback after an `unverified` deploy** still happens: the environment returns
//! to the newest good release, because a release nobody could check must not keep the
//! traffic that a checked one served. If that release cannot be checked either, it is
//! recorded `unverified` too and stays good; deploy the new release again once the
//! environment is healthy. With no good release to return to, the desired release is
//! restored to what it was before.
//!
//! The lease is taken before anything is printed or recorded, renewed while the deploy
//! runs, and released on every path, errors included; a deployer that dies leaves a
//! lease that expires, and the next deploy records the dangling `started` entry as
//! `interrupted`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use predict_buy_registry::{
    CandidateMode, EnvName, Lease, NewHistoryEntry, Outcome, Registry, ReleaseRecord, ReleaseTag,
    RequestKey,
};
use serde::Serialize;

use crate::canary::{
    Assessment, CanaryError, CanaryTarget, Comparison, MetricFailure, Share, Thresholds, Window,
    all_hold, any_holds, assess, by_release, compare, load_error,
};
use crate::config::Environment;
use crate::error::{Error, Result};
use crate::history;
use crate::target::Target;
use crate::verify::{Verified, Verifier, Verify, VerifyFailure};

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

impl Plan {
    /// The release record the plan deploys.
    pub fn record(&self) -> &ReleaseRecord {
        &self.record
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |t: &Option<ReleaseTag>| t.as_ref().map_or("nothing".into(), |t| t.to_string());
        let what = match &self.kind {
            Kind::Deploy => "deploy".to_string(),
            Kind::Promote { from } => format!("promote (verified in {from})"),
            Kind::Rollback => "rollback".to_string(),
        };
        let back = match &self.fallback {
            Some(to) => format!("roll back to {to}"),
            None => format!(
                "restore the desired release to {} (nothing verified to roll back to)",
                opt(&self.current)
            ),
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
        writeln!(
            f,
            "  on failure   a wrong golden answer or a model that does not load: record `failed`, {back}"
        )?;
        write!(
            f,
            "  unreachable  an endpoint down or no answer in time: record `unverified` (the release is not blamed), {back}"
        )
    }
}

/// How a transition ended: what the environment was, what was asked, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub env: EnvName,
    pub release: ReleaseTag,
    pub previous: Option<ReleaseTag>,
    /// Serialised flat, with its variant as `outcome`.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// What the operator should know that did not decide the outcome, such as a
    /// reload nudge the servers refused.
    pub warnings: Vec<String>,
}

/// The end of a transition.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verdict {
    /// Every endpoint serves the release correctly.
    Verified {
        verify_ms: f64,
        endpoint_verify_ms: Vec<(String, f64)>,
    },
    /// The release misbehaved; the environment is back on a good release, verified.
    RolledBack {
        failure: VerifyFailure,
        rolled_back_to: ReleaseTag,
        rollback_verify_ms: f64,
    },
    /// The release misbehaved, and the environment could not be returned to a
    /// verified release (see `rollback`).
    Failed {
        failure: VerifyFailure,
        #[serde(flatten)]
        rollback: Fallback,
    },
    /// The environment could not be checked, so the release is not blamed; the
    /// environment went back to its last good release (see `rollback`).
    Unverified {
        failure: VerifyFailure,
        #[serde(flatten)]
        rollback: Fallback,
    },
    /// A promotion of the release the environment already runs, verified: nothing
    /// was done.
    AlreadyRunning,
}

/// What the automatic rollback after a failed verification did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "rollback", rename_all = "snake_case")]
pub enum Fallback {
    /// Returned to a good release and verified it.
    Verified {
        rolled_back_to: ReleaseTag,
        rollback_verify_ms: f64,
    },
    /// Returned to a good release that could not be checked either; it stays good.
    Unverified {
        rolled_back_to: ReleaseTag,
        rollback_failure: VerifyFailure,
    },
    /// Returned to a release that misbehaved too; it is recorded `failed`.
    Failed {
        rolled_back_to: ReleaseTag,
        rollback_failure: VerifyFailure,
    },
    /// Nothing good to return to: the desired release was restored as it was.
    Restored { rolled_back_to: Option<ReleaseTag> },
}

impl Verdict {
    /// The verdict after verification failed with `failure` and the rollback did
    /// `rollback`: the one place that decides between the three failing outcomes.
    fn after(failure: VerifyFailure, rollback: Fallback) -> Self {
        if !failure.kind.blames_release() {
            return Verdict::Unverified { failure, rollback };
        }
        match rollback {
            Fallback::Verified {
                rolled_back_to,
                rollback_verify_ms,
            } => Verdict::RolledBack {
                failure,
                rolled_back_to,
                rollback_verify_ms,
            },
            rollback => Verdict::Failed { failure, rollback },
        }
    }

    /// The `outcome` string of `--json`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Verified { .. } => "verified",
            Verdict::RolledBack { .. } => "rolled_back",
            Verdict::Failed { .. } => "failed",
            Verdict::Unverified { .. } => "unverified",
            Verdict::AlreadyRunning => "already_running",
        }
    }
}

impl Report {
    /// True when the environment runs the release, verified.
    pub fn is_verified(&self) -> bool {
        matches!(
            self.verdict,
            Verdict::Verified { .. } | Verdict::AlreadyRunning
        )
    }

    /// How long verification took, when it succeeded.
    pub fn verify_ms(&self) -> Option<f64> {
        match &self.verdict {
            Verdict::Verified { verify_ms, .. } => Some(*verify_ms),
            _ => None,
        }
    }

    /// Why verification failed, when it did.
    pub fn failure(&self) -> Option<&VerifyFailure> {
        match &self.verdict {
            Verdict::RolledBack { failure, .. }
            | Verdict::Failed { failure, .. }
            | Verdict::Unverified { failure, .. } => Some(failure),
            Verdict::Verified { .. } | Verdict::AlreadyRunning => None,
        }
    }
}

/// A step of [`Deployer::execute_observed`], for progress output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The lease is ours; the environment is about to change.
    Locked,
    /// Verification failed; returning to this release (`None`: restoring nothing).
    RollingBack { to: Option<ReleaseTag> },
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn show(tag: Option<&ReleaseTag>) -> String {
    tag.map_or("nothing".into(), ToString::to_string)
}

/// Runs deploys, promotions and rollbacks of one environment.
pub struct Deployer<T: Target, V: Verify = Verifier> {
    registry: Arc<Registry>,
    env: Environment,
    target: T,
    verifier: V,
    identity: Identity,
    lease_ttl: Duration,
    /// The repository whose tags releases must match; `None` skips the check.
    git_root: Option<PathBuf>,
}

impl<T: Target, V: Verify> Deployer<T, V> {
    pub fn new(
        registry: Arc<Registry>,
        env: Environment,
        target: T,
        verifier: V,
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

    pub fn target(&self) -> &T {
        &self.target
    }

    pub fn actor(&self) -> &str {
        &self.identity.actor
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

    /// True when the environment's desired release is `tag` and `tag` is good here:
    /// promoting it again would change nothing.
    pub async fn runs_verified(&self, tag: &ReleaseTag) -> Result<bool> {
        if self.current().await?.as_ref() != Some(tag) {
            return Ok(false);
        }
        let history = self.registry.history(&self.env.name).await?;
        Ok(history::is_good(&history, tag))
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
        self.execute_observed(plan, |_| {}).await
    }

    /// [`Deployer::execute`], telling `observe` about each step as it starts, so a
    /// caller prints "applying" only once the lease is taken.
    pub async fn execute_observed(
        &self,
        plan: &Plan,
        observe: impl Fn(Progress) + Send + Sync,
    ) -> Result<Report> {
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
        let result = self.run_locked(plan, &observe).await;
        renewer.abort();
        let released = self.registry.release_lease(&lease).await;
        match (result, released) {
            (Ok(report), Ok(())) => Ok(report),
            (Ok(mut report), Err(e)) => {
                report.warnings.push(format!(
                    "the deploy finished but its lease could not be released: {e}"
                ));
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
                // A third of the TTL leaves two more tries before the lease lapses.
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

    async fn verify(
        &self,
        record: &ReleaseRecord,
        warnings: &mut Vec<String>,
    ) -> std::result::Result<Verified, VerifyFailure> {
        self.verifier
            .verify(self.target.endpoints(), record, warnings)
            .await
    }

    async fn run_locked(
        &self,
        plan: &Plan,
        observe: &(impl Fn(Progress) + Sync),
    ) -> Result<Report> {
        let env = &self.env.name;
        let tag = &plan.release;
        let history = self.registry.history(env).await?;
        let state = self.registry.env_state(env).await?;
        let generation = state.as_ref().map_or(0, |s| s.generation);
        let current = state.and_then(|s| s.desired);
        // Checked again under the lease: someone may have promoted it meanwhile.
        if matches!(plan.kind, Kind::Promote { .. })
            && current.as_ref() == Some(tag)
            && history::is_good(&history, tag)
        {
            return Ok(Report {
                env: env.clone(),
                release: tag.clone(),
                previous: current,
                verdict: Verdict::AlreadyRunning,
                warnings: Vec::new(),
            });
        }
        observe(Progress::Locked);
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
        let started = match &plan.kind {
            Kind::Deploy => "deploy".to_string(),
            Kind::Promote { from } => format!("promote from {from}"),
            Kind::Rollback => format!("rollback from {}", show(current.as_ref())),
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
            let recorded = self
                .record(
                    Some(tag),
                    current.as_ref(),
                    Outcome::Failed,
                    format!("could not apply: {e}"),
                )
                .await;
            // The apply error is what the operator must see first; the history write
            // failing too is context.
            return Err(match recorded {
                Ok(()) => e,
                Err(record) => Error::Unrecorded {
                    env: env.clone(),
                    original: Box::new(e),
                    record: Box::new(record),
                },
            });
        }
        let mut warnings = Vec::new();
        let verdict = match self.verify(&plan.record, &mut warnings).await {
            Ok(v) => {
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
                Verdict::Verified {
                    verify_ms: ms(v.elapsed),
                    endpoint_verify_ms: v
                        .endpoints
                        .iter()
                        .map(|(e, d)| (e.clone(), ms(*d)))
                        .collect(),
                }
            }
            Err(failure) => {
                let (outcome, what) = if failure.kind.blames_release() {
                    (Outcome::Failed, "verification failed")
                } else {
                    (Outcome::Unverified, "could not be verified")
                };
                self.record(
                    Some(tag),
                    current.as_ref(),
                    outcome,
                    format!("{what}: {failure}"),
                )
                .await?;
                let rollback = self
                    .roll_back(tag, &failure, current.as_ref(), observe, &mut warnings)
                    .await?;
                Verdict::after(failure, rollback)
            }
        };
        Ok(Report {
            env: env.clone(),
            release: tag.clone(),
            previous: current,
            verdict,
            warnings,
        })
    }

    /// After a failed verification of `tag`: return to the newest good release (or,
    /// with none, to whatever was desired before) and verify that.
    async fn roll_back(
        &self,
        tag: &ReleaseTag,
        failure: &VerifyFailure,
        current: Option<&ReleaseTag>,
        observe: &(impl Fn(Progress) + Sync),
        warnings: &mut Vec<String>,
    ) -> Result<Fallback> {
        let env = &self.env.name;
        let history = self.registry.history(env).await?;
        let why = if failure.kind.blames_release() {
            "failed"
        } else {
            "could not be verified"
        };
        let Some(to) = history::rollback_candidate(&history, Some(tag)) else {
            observe(Progress::RollingBack {
                to: current.cloned(),
            });
            self.target
                .apply(&self.registry, env, current, &self.identity.actor, None)
                .await?;
            // `current` is never good here (else it would be the candidate), so this
            // entry changes no release's standing; it records what runs now.
            let outcome = if failure.kind.blames_release() {
                Outcome::Failed
            } else {
                Outcome::Unverified
            };
            self.record(
                current,
                Some(tag),
                outcome,
                format!(
                    "no verified release to roll back to after {tag} {why}; desired release restored to {}",
                    show(current)
                ),
            )
            .await?;
            return Ok(Fallback::Restored {
                rolled_back_to: current.cloned(),
            });
        };
        observe(Progress::RollingBack {
            to: Some(to.clone()),
        });
        let record = self.registry.get_release(&to).await?;
        self.target
            .apply(&self.registry, env, Some(&to), &self.identity.actor, None)
            .await?;
        match self.verify(&record, warnings).await {
            Ok(v) => {
                self.record(
                    Some(&to),
                    Some(tag),
                    Outcome::RolledBack,
                    format!(
                        "rolled back after {tag} {why}; verified in {} ms",
                        ms(v.elapsed)
                    ),
                )
                .await?;
                Ok(Fallback::Verified {
                    rolled_back_to: to,
                    rollback_verify_ms: ms(v.elapsed),
                })
            }
            Err(rollback_failure) if rollback_failure.kind.blames_release() => {
                self.record(
                    Some(&to),
                    Some(tag),
                    Outcome::Failed,
                    format!("rollback after {tag} {why} did not verify: {rollback_failure}"),
                )
                .await?;
                Ok(Fallback::Failed {
                    rolled_back_to: to,
                    rollback_failure,
                })
            }
            Err(rollback_failure) => {
                self.record(
                    Some(&to),
                    Some(tag),
                    Outcome::Unverified,
                    format!(
                        "rolled back after {tag} {why}, but could not verify it: {rollback_failure}"
                    ),
                )
                .await?;
                Ok(Fallback::Unverified {
                    rolled_back_to: to,
                    rollback_failure,
                })
            }
        }
    }
}

/// What `deploy --canary` asks for, beside the plan of the release itself.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryPlan {
    pub share: Share,
    pub window: Window,
    /// The analysis gives up (too few requests) after this long, whatever the window.
    #[serde(serialize_with = "ms_of")]
    pub deadline: Duration,
    pub thresholds: Thresholds,
}

fn ms_of<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

/// A step of [`Deployer::canary`], for progress output.
#[derive(Debug, Clone)]
pub enum CanaryProgress {
    /// The lease is ours and the candidate record is written.
    Started,
    /// Every endpoint holds the candidate; the window starts now.
    Live,
    /// The metrics so far, after each read of every endpoint.
    Metrics {
        elapsed: Duration,
        comparison: Box<Comparison>,
    },
    /// The verdict is in; promoting (`None`) or dropping the canary (why).
    Ending { dropping: Option<String> },
}

/// How a canary ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CanaryOutcome {
    /// Passed, promoted to every request, verified: recorded `verified`.
    Promoted { verify_ms: f64 },
    /// Passed, but the promotion did not verify; the engine's rollback followed.
    PromotionFailed {
        failure: VerifyFailure,
        #[serde(flatten)]
        rollback: Fallback,
    },
    /// A metric was out of bounds: the canary was dropped, recorded `failed`.
    Failed { failures: Vec<MetricFailure> },
    /// A server could not load the candidate: dropped before the analysis, recorded
    /// `failed` (the serving release never stopped answering).
    NotLoaded { reason: String },
    /// Too few requests reached the candidate to judge it, or the servers never loaded
    /// it: dropped, recorded `unverified` (no verdict on the release).
    Inconclusive { reason: String },
    /// Ctrl-C, a lost lease, the record removed or the registry unreachable:
    /// dropped, recorded `interrupted` when the history could be written.
    Interrupted { reason: String },
}

impl CanaryOutcome {
    pub fn name(&self) -> &'static str {
        match self {
            CanaryOutcome::Promoted { .. } => "promoted",
            CanaryOutcome::PromotionFailed { .. } => "promotion_failed",
            CanaryOutcome::Failed { .. } => "failed",
            CanaryOutcome::NotLoaded { .. } => "not_loaded",
            CanaryOutcome::Inconclusive { .. } => "inconclusive",
            CanaryOutcome::Interrupted { .. } => "interrupted",
        }
    }
}

/// The end of a canary: what ran, the last metrics and the outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryReport {
    pub env: EnvName,
    pub release: ReleaseTag,
    pub baseline: ReleaseTag,
    pub share: Share,
    /// The share the target really gives (a Kubernetes replica ratio is coarse).
    pub effective_percent: f64,
    pub window: Window,
    pub elapsed_ms: f64,
    /// The last comparison read, if any read succeeded.
    pub metrics: Option<Comparison>,
    #[serde(flatten)]
    pub outcome: CanaryOutcome,
    pub warnings: Vec<String>,
}

impl CanaryReport {
    pub fn is_promoted(&self) -> bool {
        matches!(self.outcome, CanaryOutcome::Promoted { .. })
    }
}

/// Why the analysis stopped before its verdict.
enum Stop {
    Verdict(Assessment),
    Interrupted(String),
    /// A server could not load the candidate.
    NotLoaded(String),
    /// The analysis could not be completed: no verdict on the release.
    Inconclusive(String),
    /// The registry could not be read: nothing more can be recorded reliably.
    RegistryGone(String),
}

impl<T: CanaryTarget, V: Verify> Deployer<T, V> {
    /// Run a canary of `plan.release` under the environment's lease, held and renewed
    /// until the verdict is acted on: start the candidate's share, wait for every
    /// endpoint to hold it, analyse until the window ends (or a metric fails on enough
    /// requests), then promote or drop. `cancel` resolving (Ctrl-C) ends the analysis
    /// with the canary dropped and `interrupted` recorded, as does losing the lease.
    pub async fn canary(
        &self,
        plan: &Plan,
        canary: &CanaryPlan,
        cancel: impl Future<Output = String> + Send,
        observe: impl Fn(CanaryProgress) + Send + Sync,
    ) -> Result<CanaryReport> {
        let operation = crate::canary::operation(&plan.release, canary.share, canary.window);
        let lease = self
            .registry
            .acquire_lease(
                &self.env.name,
                &self.identity.holder,
                &operation,
                self.lease_ttl,
            )
            .await?;
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel();
        let renewer = self.keep_renewed_or_tell(lease.clone(), lost_tx);
        let lost = async move {
            match lost_rx.await {
                Ok(why) => why,
                // The renewer never ends on its own; a dropped sender means aborted.
                Err(_) => std::future::pending().await,
            }
        };
        let cancel = async move {
            tokio::select! {
                why = cancel => why,
                why = lost => why,
            }
        };
        let result = self.run_canary_locked(plan, canary, cancel, &observe).await;
        renewer.abort();
        let released = self.registry.release_lease(&lease).await;
        match (result, released) {
            (Ok(mut report), Err(e)) => {
                report.warnings.push(format!(
                    "the canary ended but its lease could not be released: {e}"
                ));
                Ok(report)
            }
            (result, _) => result,
        }
    }

    /// Renew like [`Deployer::keep_renewed`], and say once, through `lost`, when the
    /// lease is gone: taken over, or not renewed before it expired.
    fn keep_renewed_or_tell(
        &self,
        lease: Lease,
        lost: tokio::sync::oneshot::Sender<String>,
    ) -> tokio::task::JoinHandle<()> {
        let registry = Arc::clone(&self.registry);
        let ttl = self.lease_ttl;
        tokio::spawn(async move {
            let mut expires = lease.expires_at;
            loop {
                tokio::time::sleep(ttl / 3).await;
                match registry.renew_lease(&lease, ttl).await {
                    Ok(renewed) => expires = renewed.expires_at,
                    Err(e @ predict_buy_registry::Error::LeaseLost { .. }) => {
                        let _ = lost.send(format!("the lease was lost: {e}"));
                        return;
                    }
                    Err(e) if jiff::Timestamp::now() >= expires => {
                        let _ =
                            lost.send(format!("the lease expired: it could not be renewed ({e})"));
                        return;
                    }
                    Err(e) => tracing::warn!("cannot renew the canary's lease: {e}"),
                }
            }
        })
    }

    /// Close a dangling `started` entry; when it was a canary's and its candidate
    /// record is still there (the deployer was killed), remove the record too, or
    /// the servers would keep splitting traffic for a canary nobody judges.
    async fn close_dangling(&self, history: &[predict_buy_registry::HistoryEntry]) -> Result<()> {
        let Some(dangling) = history.last().filter(|e| e.outcome == Outcome::Started) else {
            return Ok(());
        };
        let mut message = format!(
            "entry #{} never finished: its deployer stopped and its lease expired",
            dangling.seq
        );
        if dangling.message.starts_with("canary ") {
            let ours = if self.target.candidate_on_every_server() {
                // Only the crashed canary's own record: never a shadow started since.
                self.registry
                    .candidate(&self.env.name)
                    .await?
                    .is_some_and(|c| {
                        matches!(c.mode, CandidateMode::Canary { .. })
                            && Some(&c.release) == dangling.release.as_ref()
                    })
            } else {
                true
            };
            if ours {
                self.target
                    .drop_canary(&self.registry, &self.env.name)
                    .await?;
                message.push_str("; its canary was dropped");
            }
        }
        self.record(
            dangling.release.as_ref(),
            dangling.previous.as_ref(),
            Outcome::Interrupted,
            message,
        )
        .await
    }

    async fn run_canary_locked(
        &self,
        plan: &Plan,
        canary: &CanaryPlan,
        cancel: impl Future<Output = String> + Send,
        observe: &(impl Fn(CanaryProgress) + Sync),
    ) -> Result<CanaryReport> {
        let env = &self.env.name;
        let tag = &plan.release;
        let history = self.registry.history(env).await?;
        let Some(baseline) = self.current().await? else {
            return Err(CanaryError::NoBaseline {
                env: env.clone(),
                release: tag.clone(),
            }
            .into());
        };
        if &baseline == tag {
            return Err(CanaryError::SameRelease {
                env: env.clone(),
                release: tag.clone(),
            }
            .into());
        }
        self.close_dangling(&history).await?;
        let key = RequestKey::Header(canary.thresholds.request_header.clone());
        self.target
            .start_canary(
                &self.registry,
                env,
                &plan.record,
                canary.share,
                &key,
                &self.identity.actor,
            )
            .await?;
        let started = std::time::Instant::now();
        let recorded = self
            .record(
                Some(tag),
                Some(&baseline),
                Outcome::Started,
                format!(
                    "canary {} of {} beside {baseline} (analysis {})",
                    canary.share, tag, canary.window
                ),
            )
            .await;
        if let Err(e) = recorded {
            // Nothing says a canary runs: take its share back before failing.
            if let Err(drop) = self.target.drop_canary(&self.registry, env).await {
                tracing::warn!("cannot drop the canary of {tag} on {env}: {drop}");
            }
            return Err(e);
        }
        observe(CanaryProgress::Started);
        let mut warnings = Vec::new();
        let mut last = None;
        let stop = {
            let analysis = self.analyse(&baseline, tag, canary, observe, &mut last, &mut warnings);
            tokio::pin!(cancel);
            tokio::select! {
                stop = analysis => stop,
                why = &mut cancel => Stop::Interrupted(why),
            }
        };
        let report = |outcome| CanaryReport {
            env: env.clone(),
            release: tag.clone(),
            baseline: baseline.clone(),
            share: canary.share,
            effective_percent: self.target.effective_percent(canary.share),
            window: canary.window,
            elapsed_ms: ms(started.elapsed()),
            metrics: last.clone(),
            outcome,
            warnings: warnings.clone(),
        };
        let summary = last.as_ref().map_or_else(String::new, summarise);
        match stop {
            Stop::Verdict(Assessment::Pass) => {
                observe(CanaryProgress::Ending { dropping: None });
                let outcome = self.promote_canary(plan, &baseline, &summary).await?;
                let mut r = report(outcome.0);
                r.warnings.extend(outcome.1);
                Ok(r)
            }
            Stop::Verdict(Assessment::Fail { failures }) => {
                let why = failures
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                observe(CanaryProgress::Ending {
                    dropping: Some(why.clone()),
                });
                self.target.drop_canary(&self.registry, env).await?;
                self.record(
                    Some(tag),
                    Some(&baseline),
                    Outcome::Failed,
                    format!("canary failed, dropped: {why}"),
                )
                .await?;
                Ok(report(CanaryOutcome::Failed { failures }))
            }
            Stop::Verdict(Assessment::TooFew { requests, needed }) => {
                let why = format!(
                    "too few requests to judge: the candidate answered {requests}, the analysis needs {needed} (min_requests)"
                );
                self.end_without_verdict(tag, &baseline, Outcome::Unverified, &why, observe)
                    .await?;
                Ok(report(CanaryOutcome::Inconclusive { reason: why }))
            }
            Stop::Inconclusive(why) => {
                self.end_without_verdict(tag, &baseline, Outcome::Unverified, &why, observe)
                    .await?;
                Ok(report(CanaryOutcome::Inconclusive { reason: why }))
            }
            Stop::NotLoaded(error) => {
                let why = format!("a server could not load the candidate: {error}");
                observe(CanaryProgress::Ending {
                    dropping: Some(why.clone()),
                });
                self.target.drop_canary(&self.registry, env).await?;
                self.record(
                    Some(tag),
                    Some(&baseline),
                    Outcome::Failed,
                    format!("canary refused, dropped: {why}"),
                )
                .await?;
                Ok(report(CanaryOutcome::NotLoaded { reason: why }))
            }
            Stop::Interrupted(why) => {
                self.end_without_verdict(tag, &baseline, Outcome::Interrupted, &why, observe)
                    .await?;
                Ok(report(CanaryOutcome::Interrupted { reason: why }))
            }
            Stop::RegistryGone(why) => {
                observe(CanaryProgress::Ending {
                    dropping: Some(why.clone()),
                });
                // Best effort on both: the registry just failed a read. The servers keep
                // the share they last read until they can read the record again, so the
                // operator must see which of the two did not happen.
                let mut r = report(CanaryOutcome::Interrupted {
                    reason: why.clone(),
                });
                if let Err(e) = self.target.drop_canary(&self.registry, env).await {
                    r.warnings.push(format!(
                        "the canary could not be dropped ({e}); the servers keep its share until the candidate record is removed (`predict-buy deploy --canary` clears it once this lease expires)"
                    ));
                }
                let message = format!("canary interrupted, dropped: {why}");
                if let Err(e) = self
                    .record(Some(tag), Some(&baseline), Outcome::Interrupted, message)
                    .await
                {
                    r.warnings
                        .push(format!("the history could not be written either: {e}"));
                }
                Ok(r)
            }
        }
    }

    /// Drop the canary and record an end that is no verdict on the release.
    async fn end_without_verdict(
        &self,
        tag: &ReleaseTag,
        baseline: &ReleaseTag,
        outcome: Outcome,
        why: &str,
        observe: &(impl Fn(CanaryProgress) + Sync),
    ) -> Result<()> {
        observe(CanaryProgress::Ending {
            dropping: Some(why.to_string()),
        });
        self.target
            .drop_canary(&self.registry, &self.env.name)
            .await?;
        self.record(
            Some(tag),
            Some(baseline),
            outcome,
            format!("canary dropped: {why}"),
        )
        .await
    }

    /// Promote a canary that passed: the candidate becomes the desired release, its
    /// share is taken back (it now has everything), and every endpoint is verified
    /// against the golden predictions as in any deploy, with the same rollback.
    async fn promote_canary(
        &self,
        plan: &Plan,
        baseline: &ReleaseTag,
        summary: &str,
    ) -> Result<(CanaryOutcome, Vec<String>)> {
        let env = &self.env.name;
        let tag = &plan.release;
        // Desired first, then the record: in between the servers answer with the
        // candidate either way, so no request meets the baseline again.
        self.target
            .apply(&self.registry, env, Some(tag), &self.identity.actor, None)
            .await?;
        self.target.drop_canary(&self.registry, env).await?;
        let mut warnings = Vec::new();
        match self.verify(&plan.record, &mut warnings).await {
            Ok(v) => {
                self.record(
                    Some(tag),
                    Some(baseline),
                    Outcome::Verified,
                    format!(
                        "canary passed ({summary}); promoted and verified on {} endpoint(s) in {} ms",
                        v.endpoints.len(),
                        ms(v.elapsed)
                    ),
                )
                .await?;
                Ok((
                    CanaryOutcome::Promoted {
                        verify_ms: ms(v.elapsed),
                    },
                    warnings,
                ))
            }
            Err(failure) => {
                let (outcome, what) = if failure.kind.blames_release() {
                    (Outcome::Failed, "verification failed")
                } else {
                    (Outcome::Unverified, "could not be verified")
                };
                self.record(
                    Some(tag),
                    Some(baseline),
                    outcome,
                    format!("canary passed but the promotion {what}: {failure}"),
                )
                .await?;
                let noop = |_| {};
                let rollback = self
                    .roll_back(tag, &failure, Some(baseline), &noop, &mut warnings)
                    .await?;
                Ok((
                    CanaryOutcome::PromotionFailed { failure, rollback },
                    warnings,
                ))
            }
        }
    }

    /// The analysis loop: wait until every endpoint holds the candidate, snapshot,
    /// then read every `interval` until a verdict. Reads that fail are skipped (with a
    /// warning) so one slow poll does not end a canary; a registry that cannot be read
    /// does, because the servers may then be acting on a record we cannot see.
    async fn analyse(
        &self,
        baseline: &ReleaseTag,
        candidate: &ReleaseTag,
        canary: &CanaryPlan,
        observe: &(impl Fn(CanaryProgress) + Sync),
        last: &mut Option<Comparison>,
        warnings: &mut Vec<String>,
    ) -> Stop {
        let t = &canary.thresholds;
        let client = match crate::traffic::TrafficClient::new() {
            Ok(c) => c,
            Err(e) => return Stop::Interrupted(CanaryError::Traffic(e).to_string()),
        };
        let everywhere = self.target.candidate_on_every_server();
        let (b, c) = (baseline.to_string(), candidate.to_string());
        // Loading: every endpoint must list the candidate before the window opens.
        let load_deadline = std::time::Instant::now() + self.verifier.timeout();
        let start = loop {
            let read = self.target.read_traffic(&client).await;
            if let Ok(reports) = &read
                && let Some(error) = load_error(reports, &c)
            {
                return Stop::NotLoaded(error);
            }
            match read {
                Ok(reports) if everywhere && all_hold(&reports, &c) => break by_release(&reports),
                Ok(reports) if !everywhere && any_holds(&reports, &c) => {
                    break by_release(&reports);
                }
                Ok(_) if std::time::Instant::now() >= load_deadline => {
                    return Stop::Inconclusive(format!(
                        "the servers did not all hold the candidate within {:.0}s (the verify timeout)",
                        self.verifier.timeout().as_secs_f64()
                    ));
                }
                Err(e) if std::time::Instant::now() >= load_deadline => {
                    return Stop::Interrupted(format!(
                        "the candidate could not be seen on every endpoint: {e}"
                    ));
                }
                _ => {}
            }
            if let Some(stop) = self.candidate_still_ours(candidate).await {
                return stop;
            }
            tokio::time::sleep(t.interval.min(Duration::from_millis(200))).await;
        };
        observe(CanaryProgress::Live);
        let opened = std::time::Instant::now();
        let empty = crate::canary::Totals::default();
        loop {
            tokio::time::sleep(t.interval).await;
            if let Some(stop) = self.candidate_still_ours(candidate).await {
                return stop;
            }
            let elapsed = opened.elapsed();
            match self.target.read_traffic(&client).await {
                Ok(reports) => {
                    let now = by_release(&reports);
                    let delta = |tag: &str| {
                        now.get(tag)
                            .unwrap_or(&empty)
                            .since(start.get(tag).unwrap_or(&empty))
                    };
                    let (db, dc) = (delta(&b), delta(&c));
                    let total = db.requests + dc.requests;
                    let comparison = compare(db.metrics(&b), dc.metrics(&c));
                    observe(CanaryProgress::Metrics {
                        elapsed,
                        comparison: Box::new(comparison.clone()),
                    });
                    let assessment = assess(&comparison, t);
                    *last = Some(comparison);
                    let over = match canary.window {
                        crate::canary::Window::Time(d) => elapsed >= d,
                        crate::canary::Window::Requests(n) => total >= n,
                    };
                    // Fail fast once there are enough requests; pass only at the end.
                    if matches!(assessment, Assessment::Fail { .. }) || over {
                        return Stop::Verdict(assessment);
                    }
                }
                Err(e) => {
                    let w = format!("a read of the endpoints' traffic failed: {e}");
                    tracing::warn!("{w}");
                    if !warnings.contains(&w) {
                        warnings.push(w);
                    }
                }
            }
            if elapsed >= canary.deadline {
                // A count window not reached in time: whatever the metrics say so far,
                // the analysis asked for was not done.
                let requests = last.as_ref().map_or(0, |l| l.candidate.requests);
                return Stop::Inconclusive(format!(
                    "the analysis window ({}) did not end within --analysis-timeout {:.0}s; the candidate answered {requests} request(s)",
                    canary.window,
                    canary.deadline.as_secs_f64()
                ));
            }
        }
    }

    /// `None` while the environment's candidate record is still this canary's; else
    /// why the analysis must stop.
    async fn candidate_still_ours(&self, candidate: &ReleaseTag) -> Option<Stop> {
        // Without a record of its own (Kubernetes), any record is someone else's.
        let own_record = self.target.candidate_on_every_server();
        match self.registry.candidate(&self.env.name).await {
            Ok(Some(c)) if own_record && &c.release == candidate => None,
            Ok(None) if !own_record => None,
            Ok(_) => Some(Stop::Interrupted(
                "the candidate record was removed or replaced by someone else".into(),
            )),
            Err(e) => Some(Stop::RegistryGone(format!(
                "the registry could not be read: {e}"
            ))),
        }
    }
}

/// One line of metrics for the history.
fn summarise(c: &Comparison) -> String {
    let p99 = |p: Option<f64>| p.map_or("-".into(), |v| format!("{v:.2} ms"));
    format!(
        "{} requests on the candidate, {} on the baseline; error rate {:.2}% vs {:.2}%; p99 {} vs {}; positive rate {:.1}% vs {:.1}%; score PSI {:.3}",
        c.candidate.requests,
        c.baseline.requests,
        c.candidate.error_rate * 100.0,
        c.baseline.error_rate * 100.0,
        p99(c.candidate.p99_ms),
        p99(c.baseline.p99_ms),
        c.candidate.positive_rate * 100.0,
        c.baseline.positive_rate * 100.0,
        c.score_psi
    )
}

#[cfg(test)]
mod tests {
    //! Every transition of the state machine, with a fake target and a fake verifier
    //! over a real `file://` registry in a temp dir.

    use std::collections::HashMap;
    use std::sync::Mutex;

    use predict_buy_registry::{
        EnvState, Error as RegistryError, GoldenPrediction, HistoryEntry, RegistryUrl,
    };
    use reqwest::Url;

    use super::*;
    use crate::config::EnvironmentConfig;
    use crate::verify::FailureKind;

    fn tag(s: &str) -> ReleaseTag {
        ReleaseTag::parse(s).unwrap()
    }

    fn env_name(s: &str) -> EnvName {
        EnvName::parse(s).unwrap()
    }

    /// What the fake verifier answers for one release.
    #[derive(Clone, Copy)]
    enum Answer {
        Good,
        Bad(FailureKind),
    }

    /// Answers per release tag, after an optional delay; counts its calls.
    #[derive(Default)]
    struct FakeVerifier {
        answers: HashMap<String, Answer>,
        delay: Duration,
        warning: Option<String>,
        calls: Mutex<Vec<String>>,
    }

    impl FakeVerifier {
        fn with(answers: &[(&str, Answer)]) -> Self {
            FakeVerifier {
                answers: answers.iter().map(|(t, a)| (t.to_string(), *a)).collect(),
                ..FakeVerifier::default()
            }
        }
    }

    impl Verify for FakeVerifier {
        fn timeout(&self) -> Duration {
            Duration::from_secs(7)
        }

        async fn verify(
            &self,
            endpoints: &[Url],
            release: &ReleaseRecord,
            warnings: &mut Vec<String>,
        ) -> std::result::Result<Verified, VerifyFailure> {
            let name = release.tag.to_string();
            self.calls.lock().unwrap().push(name.clone());
            tokio::time::sleep(self.delay).await;
            warnings.extend(self.warning.clone());
            match self.answers.get(&name).copied().unwrap_or(Answer::Good) {
                Answer::Good => Ok(Verified {
                    elapsed: Duration::from_millis(5),
                    endpoints: endpoints
                        .iter()
                        .map(|e| (e.to_string(), Duration::from_millis(5)))
                        .collect(),
                }),
                Answer::Bad(kind) => Err(VerifyFailure {
                    endpoint: endpoints[0].to_string(),
                    problem: format!("{kind:?} from {name}"),
                    kind,
                }),
            }
        }
    }

    /// Sets the desired release like a local target. Before that, it can play a
    /// concurrent deployer (`someone_else_sets`) or break the history folder
    /// (`break_history`: a file replaces it); `fail` refuses to apply.
    #[derive(Default)]
    struct FakeTarget {
        endpoints: Vec<Url>,
        fail: bool,
        someone_else_sets: Option<ReleaseTag>,
        break_history: Option<std::path::PathBuf>,
    }

    impl FakeTarget {
        fn new() -> Self {
            FakeTarget {
                endpoints: vec![Url::parse("http://127.0.0.1:1/").unwrap()],
                ..FakeTarget::default()
            }
        }
    }

    impl Target for FakeTarget {
        fn describe(&self) -> String {
            "fake".into()
        }

        fn endpoints(&self) -> &[Url] {
            &self.endpoints
        }

        async fn apply(
            &self,
            registry: &Registry,
            env: &EnvName,
            release: Option<&ReleaseTag>,
            actor: &str,
            expected_generation: Option<u64>,
        ) -> Result<EnvState> {
            if let Some(other) = &self.someone_else_sets {
                registry
                    .set_desired(env, Some(other), "someone else", None)
                    .await?;
            }
            if let Some(dir) = &self.break_history {
                std::fs::rename(dir, dir.with_extension("moved")).unwrap();
                std::fs::write(dir, b"not a folder").unwrap();
            }
            if self.fail {
                return Err(Error::TargetUnsupported {
                    env: env.clone(),
                    target: "fake (told to fail)",
                });
            }
            Ok(registry
                .set_desired(env, release, actor, expected_generation)
                .await?)
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        registry: Arc<Registry>,
    }

    impl Fixture {
        /// A registry with releases v1.0.1 and v1.1.0 (and v1.2.0) of tiny artifacts.
        async fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let registry = Arc::new(
                Registry::open(&RegistryUrl::File {
                    root: dir.path().join("registry"),
                })
                .unwrap(),
            );
            for (i, t) in ["v1.0.1", "v1.1.0", "v1.2.0"].iter().enumerate() {
                let pushed = registry
                    .push_bytes(format!("model {i}").into_bytes().into())
                    .await
                    .unwrap();
                registry
                    .create_release(&ReleaseRecord {
                        tag: tag(t),
                        model_digest: pushed.digest,
                        image: None,
                        git_commit: None,
                        notes: String::new(),
                        created_at: jiff::Timestamp::now(),
                        created_by: "test".into(),
                        metrics: serde_json::Value::Null,
                        golden: vec![GoldenPrediction {
                            input: serde_json::json!({"Age": 30 + i}),
                            predicted_class: 1,
                            probability: 0.5,
                        }],
                        training: None,
                    })
                    .await
                    .unwrap();
            }
            Fixture { dir, registry }
        }

        fn env(&self, name: &str, config: &str) -> Environment {
            let config: EnvironmentConfig = serde_yaml_ng::from_str(config).unwrap();
            Environment {
                name: env_name(name),
                config,
                endpoints: Vec::new(),
                verify_timeout: None,
                canary: crate::canary::Thresholds::default(),
                source: self.dir.path().join("predict-buy.yaml"),
            }
        }

        fn deployer<V: Verify>(
            &self,
            env: &str,
            target: FakeTarget,
            verifier: V,
        ) -> Deployer<FakeTarget, V> {
            let config = if env == "prod" {
                "target: local\nrequire_verified_in: nonprod\n"
            } else {
                "target: local\n"
            };
            Deployer::new(
                Arc::clone(&self.registry),
                self.env(env, config),
                target,
                verifier,
                Identity {
                    actor: "tester@host".into(),
                    holder: format!("tester@host ({env})"),
                },
            )
        }

        async fn history(&self, env: &str) -> Vec<HistoryEntry> {
            self.registry.history(&env_name(env)).await.unwrap()
        }

        async fn outcomes(&self, env: &str) -> Vec<(Outcome, String)> {
            self.history(env)
                .await
                .into_iter()
                .map(|e| (e.outcome, e.release.map_or("-".into(), |t| t.to_string())))
                .collect()
        }

        async fn desired(&self, env: &str) -> Option<ReleaseTag> {
            self.registry
                .env_state(&env_name(env))
                .await
                .unwrap()
                .and_then(|s| s.desired)
        }
    }

    async fn run<V: Verify>(d: &Deployer<FakeTarget, V>, t: &str, kind: Kind) -> Result<Report> {
        let release = d.validate(&tag(t)).await?;
        let plan = d.plan(release, kind).await?;
        d.execute(&plan).await
    }

    fn pairs(list: &[(Outcome, &str)]) -> Vec<(Outcome, String)> {
        list.iter().map(|(o, t)| (*o, t.to_string())).collect()
    }

    use Outcome::{Failed, Interrupted, RolledBack, Started, Unverified, Verified as Ok_};

    #[tokio::test]
    async fn a_good_release_is_verified_and_recorded() {
        let fx = Fixture::new().await;
        let verifier = FakeVerifier {
            warning: Some("nudge refused".into()),
            ..FakeVerifier::default()
        };
        let d = fx.deployer("nonprod", FakeTarget::new(), verifier);
        let report = run(&d, "v1.1.0", Kind::Deploy).await.unwrap();
        assert!(report.is_verified());
        assert_eq!(report.verify_ms(), Some(5.0));
        assert_eq!(report.warnings, vec!["nudge refused".to_string()]);
        assert_eq!(report.previous, None);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["outcome"], "verified");
        assert_eq!(json["verify_ms"], 5.0);
        assert_eq!(
            fx.outcomes("nonprod").await,
            pairs(&[(Started, "v1.1.0"), (Ok_, "v1.1.0")])
        );
        assert_eq!(fx.desired("nonprod").await, Some(tag("v1.1.0")));
        // The lease was given back.
        assert_eq!(
            fx.registry
                .inspect_lease(&env_name("nonprod"))
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_wrong_answer_fails_the_release_and_rolls_back() {
        let fx = Fixture::new().await;
        let good = fx.deployer("nonprod", FakeTarget::new(), FakeVerifier::default());
        run(&good, "v1.1.0", Kind::Deploy).await.unwrap();
        let verifier = FakeVerifier::with(&[("v1.2.0", Answer::Bad(FailureKind::WrongAnswer))]);
        let d = fx.deployer("nonprod", FakeTarget::new(), verifier);
        let report = run(&d, "v1.2.0", Kind::Deploy).await.unwrap();
        let Verdict::RolledBack {
            failure,
            rolled_back_to,
            ..
        } = &report.verdict
        else {
            panic!("{report:?}")
        };
        assert_eq!(failure.kind, FailureKind::WrongAnswer);
        assert_eq!(rolled_back_to, &tag("v1.1.0"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["outcome"], "rolled_back");
        assert_eq!(json["rolled_back_to"], "v1.1.0");
        assert_eq!(json["failure"]["wrong_answer"], true);
        assert_eq!(
            fx.outcomes("nonprod").await[2..],
            pairs(&[
                (Started, "v1.2.0"),
                (Failed, "v1.2.0"),
                (RolledBack, "v1.1.0")
            ])
        );
        assert_eq!(fx.desired("nonprod").await, Some(tag("v1.1.0")));
        // The failed release is no rollback target, and no policy takes it.
        assert!(matches!(
            d.check_rollback_target(&tag("v1.2.0")).await,
            Err(Error::NotARollbackTarget { .. })
        ));
        let prod = fx.deployer("prod", FakeTarget::new(), FakeVerifier::default());
        assert!(matches!(
            prod.check_policy(&tag("v1.2.0")).await,
            Err(Error::NotVerifiedIn { .. })
        ));
        prod.check_policy(&tag("v1.1.0")).await.unwrap();
    }

    #[tokio::test]
    async fn an_environment_that_cannot_be_checked_blames_no_release() {
        // The issue's reproduction: v1.1.0 verified in nonprod and promoted to prod;
        // then a nonprod server stops, and v1.0.1 cannot be verified there.
        let fx = Fixture::new().await;
        let good = fx.deployer("nonprod", FakeTarget::new(), FakeVerifier::default());
        run(&good, "v1.1.0", Kind::Deploy).await.unwrap();
        let verifier = FakeVerifier::with(&[
            ("v1.0.1", Answer::Bad(FailureKind::Unreachable)),
            ("v1.1.0", Answer::Bad(FailureKind::Unreachable)),
        ]);
        let d = fx.deployer("nonprod", FakeTarget::new(), verifier);
        let report = run(&d, "v1.0.1", Kind::Deploy).await.unwrap();
        assert!(!report.is_verified());
        let Verdict::Unverified {
            failure,
            rollback: Fallback::Unverified { rolled_back_to, .. },
        } = &report.verdict
        else {
            panic!("{report:?}")
        };
        assert_eq!(failure.kind, FailureKind::Unreachable);
        assert_eq!(rolled_back_to, &tag("v1.1.0"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["outcome"], "unverified");
        assert_eq!(json["rollback"], "unverified");
        assert_eq!(json["rolled_back_to"], "v1.1.0");
        assert_eq!(json["failure"]["kind"], "unreachable");
        assert_eq!(
            fx.outcomes("nonprod").await[2..],
            pairs(&[
                (Started, "v1.0.1"),
                (Unverified, "v1.0.1"),
                (Unverified, "v1.1.0")
            ])
        );
        let history = fx.history("nonprod").await;
        assert!(
            history[3]
                .message
                .contains("could not be verified: http://127.0.0.1:1/: Unreachable"),
            "{:?}",
            history[3]
        );
        // v1.1.0 is still good: the next failed deploy's fallback, a valid
        // `rollback --to`, and promotable to prod.
        let again = d
            .plan(d.validate(&tag("v1.0.1")).await.unwrap(), Kind::Deploy)
            .await
            .unwrap();
        assert_eq!(again.fallback, Some(tag("v1.1.0")));
        d.check_rollback_target(&tag("v1.1.0")).await.unwrap();
        let prod = fx.deployer("prod", FakeTarget::new(), FakeVerifier::default());
        prod.check_policy(&tag("v1.1.0")).await.unwrap();
        let promoted = run(
            &prod,
            "v1.1.0",
            Kind::Promote {
                from: "nonprod".into(),
            },
        )
        .await
        .unwrap();
        assert!(matches!(promoted.verdict, Verdict::Verified { .. }));
        // And v1.0.1 is neither blamed nor good.
        assert!(matches!(
            prod.check_policy(&tag("v1.0.1")).await,
            Err(Error::NotVerifiedIn { .. })
        ));
    }

    #[tokio::test]
    async fn the_rollbacks_own_verification_can_fail() {
        let fx = Fixture::new().await;
        let good = fx.deployer("nonprod", FakeTarget::new(), FakeVerifier::default());
        run(&good, "v1.1.0", Kind::Deploy).await.unwrap();
        let verifier = FakeVerifier::with(&[
            ("v1.2.0", Answer::Bad(FailureKind::RefusedToLoad)),
            ("v1.1.0", Answer::Bad(FailureKind::WrongAnswer)),
        ]);
        let d = fx.deployer("nonprod", FakeTarget::new(), verifier);
        let report = run(&d, "v1.2.0", Kind::Deploy).await.unwrap();
        let Verdict::Failed {
            failure,
            rollback:
                Fallback::Failed {
                    rolled_back_to,
                    rollback_failure,
                },
        } = &report.verdict
        else {
            panic!("{report:?}")
        };
        assert_eq!(failure.kind, FailureKind::RefusedToLoad);
        assert_eq!(rolled_back_to, &tag("v1.1.0"));
        assert_eq!(rollback_failure.kind, FailureKind::WrongAnswer);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["outcome"], "failed");
        assert_eq!(json["rollback"], "failed");
        assert_eq!(json["rollback_failure"]["kind"], "wrong_answer");
        assert_eq!(
            fx.outcomes("nonprod").await[2..],
            pairs(&[(Started, "v1.2.0"), (Failed, "v1.2.0"), (Failed, "v1.1.0")])
        );
        // Nothing good is left.
        assert!(matches!(
            d.rollback_target().await,
            Err(Error::NoRollbackTarget { .. })
        ));
    }

    #[tokio::test]
    async fn a_first_deploy_that_fails_restores_nothing() {
        let fx = Fixture::new().await;
        let verifier = FakeVerifier::with(&[("v1.0.1", Answer::Bad(FailureKind::TimedOut))]);
        let d = fx.deployer("nonprod", FakeTarget::new(), verifier);
        let report = run(&d, "v1.0.1", Kind::Deploy).await.unwrap();
        assert!(
            matches!(
                &report.verdict,
                Verdict::Unverified {
                    rollback: Fallback::Restored {
                        rolled_back_to: None
                    },
                    ..
                }
            ),
            "{report:?}"
        );
        assert_eq!(fx.desired("nonprod").await, None);
        assert_eq!(
            fx.outcomes("nonprod").await,
            pairs(&[
                (Started, "v1.0.1"),
                (Unverified, "v1.0.1"),
                (Unverified, "-")
            ])
        );
    }

    #[tokio::test]
    async fn an_apply_failure_is_recorded_and_returned() {
        let fx = Fixture::new().await;
        let mut target = FakeTarget::new();
        target.fail = true;
        let verifier = FakeVerifier::default();
        let d = fx.deployer("nonprod", target, verifier);
        let err = run(&d, "v1.1.0", Kind::Deploy).await.unwrap_err();
        assert!(matches!(err, Error::TargetUnsupported { .. }), "{err:?}");
        assert!(
            d.verifier.calls.lock().unwrap().is_empty(),
            "nothing to verify"
        );
        let history = fx.history("nonprod").await;
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].outcome, Failed);
        assert!(
            history[1].message.starts_with("could not apply: "),
            "{:?}",
            history[1]
        );
        assert_eq!(
            fx.registry
                .inspect_lease(&env_name("nonprod"))
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn when_recording_an_apply_failure_fails_too_the_apply_error_comes_first() {
        let fx = Fixture::new().await;
        let history_dir = fx
            .dir
            .path()
            .join("registry/registry-v1/envs/nonprod/history");
        let mut target = FakeTarget::new();
        target.fail = true;
        // A file where the history folder was: the next append cannot be written.
        target.break_history = Some(history_dir);
        let d = fx.deployer("nonprod", target, FakeVerifier::default());
        let err = run(&d, "v1.1.0", Kind::Deploy).await.unwrap_err();
        let Error::Unrecorded { original, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(matches!(**original, Error::TargetUnsupported { .. }));
        let text = err.to_string();
        assert!(
            text.starts_with("environment `nonprod` uses target `fake (told to fail)`"),
            "{text}"
        );
        assert!(text.contains("could not be recorded"), "{text}");
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(err.exit_code(), original.exit_code());
    }

    #[tokio::test]
    async fn a_concurrent_change_of_the_environment_is_a_conflict() {
        let fx = Fixture::new().await;
        let mut target = FakeTarget::new();
        // Someone else sets the environment between our read and our write.
        target.someone_else_sets = Some(tag("v1.0.1"));
        let d = fx.deployer("nonprod", target, FakeVerifier::default());
        let err = run(&d, "v1.1.0", Kind::Deploy).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Registry(RegistryError::Conflict {
                    expected: 0,
                    actual: 1,
                    ..
                })
            ),
            "{err:?}"
        );
        // The other writer's change stands; ours is recorded as not applied.
        assert_eq!(fx.desired("nonprod").await, Some(tag("v1.0.1")));
        assert_eq!(
            fx.outcomes("nonprod").await,
            pairs(&[(Started, "v1.1.0"), (Failed, "v1.1.0")])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_lease_is_renewed_through_a_deploy_longer_than_its_ttl() {
        let fx = Fixture::new().await;
        let ttl = Duration::from_millis(300);
        let verifier = FakeVerifier {
            delay: ttl * 5,
            ..FakeVerifier::default()
        };
        let d = Arc::new(
            fx.deployer("nonprod", FakeTarget::new(), verifier)
                .with_lease_ttl(ttl),
        );
        let deploy = {
            let d = Arc::clone(&d);
            tokio::spawn(async move { run(&d, "v1.1.0", Kind::Deploy).await })
        };
        let env = env_name("nonprod");
        // Wait until the deploy holds the lease, then keep trying to take it.
        let start = std::time::Instant::now();
        while fx.registry.inspect_lease(&env).await.unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "deploy never took the lease"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut refused = 0;
        while !deploy.is_finished() {
            match fx
                .registry
                .acquire_lease(&env, "intruder", "deploy v1.0.1", ttl)
                .await
            {
                Err(RegistryError::LeaseHeld { holder, .. }) => {
                    assert_eq!(holder, "tester@host (nonprod)");
                    refused += 1;
                }
                other => panic!("a second deployer took the lease: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let report = deploy.await.unwrap().unwrap();
        assert!(report.is_verified(), "{report:?}");
        assert!(refused > 5, "the intruder tried only {refused} times");
        // Released: now anyone may take it.
        fx.registry
            .acquire_lease(&env, "intruder", "deploy v1.0.1", ttl)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_held_lease_refuses_before_anything_is_observed_or_recorded() {
        let fx = Fixture::new().await;
        let env = env_name("nonprod");
        fx.registry
            .acquire_lease(&env, "alice", "deploy v1.0.1", Duration::from_secs(60))
            .await
            .unwrap();
        let d = fx.deployer("nonprod", FakeTarget::new(), FakeVerifier::default());
        let plan = d
            .plan(d.validate(&tag("v1.1.0")).await.unwrap(), Kind::Deploy)
            .await
            .unwrap();
        let seen = Mutex::new(Vec::new());
        let err = d
            .execute_observed(&plan, |p| seen.lock().unwrap().push(p))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Registry(RegistryError::LeaseHeld { .. })
        ));
        assert!(seen.lock().unwrap().is_empty());
        assert!(fx.history("nonprod").await.is_empty());
    }

    #[tokio::test]
    async fn a_dangling_start_is_closed_as_interrupted() {
        let fx = Fixture::new().await;
        let env = env_name("nonprod");
        fx.registry
            .append_history(
                &env,
                NewHistoryEntry {
                    release: Some(tag("v1.0.1")),
                    previous: None,
                    actor: "crashed".into(),
                    outcome: Started,
                    message: "deploy".into(),
                },
            )
            .await
            .unwrap();
        let d = fx.deployer("nonprod", FakeTarget::new(), FakeVerifier::default());
        let seen = Mutex::new(Vec::new());
        let plan = d
            .plan(d.validate(&tag("v1.1.0")).await.unwrap(), Kind::Deploy)
            .await
            .unwrap();
        d.execute_observed(&plan, |p| seen.lock().unwrap().push(p))
            .await
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![Progress::Locked]);
        assert_eq!(
            fx.outcomes("nonprod").await,
            pairs(&[
                (Started, "v1.0.1"),
                (Interrupted, "v1.0.1"),
                (Started, "v1.1.0"),
                (Ok_, "v1.1.0")
            ])
        );
    }

    #[tokio::test]
    async fn a_promotion_deploys_once_and_then_does_nothing() {
        let fx = Fixture::new().await;
        let nonprod = fx.deployer("nonprod", FakeTarget::new(), FakeVerifier::default());
        run(&nonprod, "v1.1.0", Kind::Deploy).await.unwrap();
        let prod = fx.deployer("prod", FakeTarget::new(), FakeVerifier::default());
        prod.check_policy(&tag("v1.1.0")).await.unwrap();
        assert!(!prod.runs_verified(&tag("v1.1.0")).await.unwrap());
        let promote = Kind::Promote {
            from: "nonprod".into(),
        };
        let report = run(&prod, "v1.1.0", promote.clone()).await.unwrap();
        assert!(
            matches!(report.verdict, Verdict::Verified { .. }),
            "{report:?}"
        );
        let history = fx.history("prod").await;
        assert_eq!(history[0].message, "promote from nonprod");
        assert_eq!(history[1].outcome, Ok_);
        assert_eq!(fx.desired("prod").await, Some(tag("v1.1.0")));

        // Again: the environment already runs it, verified.
        assert!(prod.runs_verified(&tag("v1.1.0")).await.unwrap());
        let again = run(&prod, "v1.1.0", promote).await.unwrap();
        assert!(
            matches!(again.verdict, Verdict::AlreadyRunning),
            "{again:?}"
        );
        assert!(again.is_verified());
        assert_eq!(
            serde_json::to_value(&again).unwrap()["outcome"],
            "already_running"
        );
        assert_eq!(fx.history("prod").await.len(), 2, "nothing recorded");
        assert_eq!(
            prod.verifier.calls.lock().unwrap().len(),
            1,
            "verified once"
        );
    }

    #[test]
    fn the_plan_says_what_each_failure_does() {
        let text = Plan {
            kind: Kind::Deploy,
            env: env_name("nonprod"),
            release: tag("v1.2.0"),
            model_digest: "abc".into(),
            golden_predictions: 3,
            current: Some(tag("v1.1.0")),
            fallback: Some(tag("v1.1.0")),
            target: "fake".into(),
            endpoints: vec![],
            verify_timeout_ms: 30_000,
            record: ReleaseRecord {
                tag: tag("v1.2.0"),
                model_digest: predict_buy_registry::Digest::of(b"x"),
                image: None,
                git_commit: None,
                notes: String::new(),
                created_at: jiff::Timestamp::UNIX_EPOCH,
                created_by: "t".into(),
                metrics: serde_json::Value::Null,
                golden: vec![],
                training: None,
            },
        }
        .to_string();
        assert!(
            text.contains("on failure   a wrong golden answer or a model that does not load: record `failed`, roll back to v1.1.0"),
            "{text}"
        );
        assert!(
            text.contains("unreachable  an endpoint down or no answer in time: record `unverified` (the release is not blamed), roll back to v1.1.0"),
            "{text}"
        );
    }
}
