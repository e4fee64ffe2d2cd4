//! Shadow a release: the environment's servers load it beside the serving release and
//! score every request with both, answering with the serving release only.
//!
//! The registry's candidate record (`envs/<env>/candidate.json`) is the switch: every
//! server of the environment — local servers following it, Kubernetes pods pinned to a
//! release and started with `--env` — polls it and loads or drops the candidate. This
//! module sets and clears the record (under the environment's lease, so a deploy
//! cannot interleave), records both ends in the history, waits until every endpoint
//! reports the candidate loaded, and adds up what the servers counted
//! (`GET /traffic`, see [`crate::traffic`]).
//!
//! **What it must never do:** change the serving release, or leave a record behind
//! that the servers could not follow: a start that not every endpoint confirms is
//! rolled back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
pub use predict_buy_api::traffic::Role;
use predict_buy_registry::{
    Candidate, CandidateMode, EnvName, NewHistoryEntry, Outcome, Registry, ReleaseTag,
};
use reqwest::Url;
use serde::Serialize;

use crate::Identity;
use crate::kubernetes::Cluster;
use crate::target::EnvTarget;
use crate::traffic::{EndpointTraffic, Merged, TrafficClient, TrafficError, merge};

/// How long `start` waits for every endpoint to load the candidate by default.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the environment's lease is taken for while the record changes.
const LEASE_TTL: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

/// Why a shadow could not start, report or stop. Each names the environment, the
/// release or the endpoint concerned.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error(transparent)]
    Registry(#[from] predict_buy_registry::Error),
    #[error(
        "environment `{env}` serves no release yet: a shadow needs one to compare with (deploy one first)"
    )]
    NoPrimary { env: EnvName },
    #[error("release {tag} cannot shadow in `{env}`: its model does not load: {reason}")]
    Unloadable {
        env: EnvName,
        tag: ReleaseTag,
        reason: String,
    },
    #[error("no shadow runs in environment `{env}`")]
    NoShadow { env: EnvName },
    #[error(
        "environment `{env}` runs a {mode} of {release}, not a shadow; it ends with its deploy"
    )]
    NotAShadow {
        env: EnvName,
        release: ReleaseTag,
        mode: &'static str,
    },
    #[error(
        "{endpoint} did not load shadow {tag} of `{env}`: {problem}; the shadow was called off"
    )]
    NotLoaded {
        env: EnvName,
        tag: ReleaseTag,
        endpoint: String,
        problem: String,
    },
    #[error("no endpoint of `{env}` answered GET /traffic: {}", .problems.join("; "))]
    NoTraffic { env: EnvName, problems: Vec<String> },
    #[error(transparent)]
    Traffic(#[from] TrafficError),
}

impl ShadowError {
    /// 2 for a request that cannot be honoured as asked (unknown or unloadable release,
    /// no shadow to report), 1 for an operation that failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            ShadowError::Registry(e) => e.exit_code() as u8,
            ShadowError::NoPrimary { .. }
            | ShadowError::Unloadable { .. }
            | ShadowError::NoShadow { .. }
            | ShadowError::NotAShadow { .. } => 2,
            ShadowError::NotLoaded { .. }
            | ShadowError::NoTraffic { .. }
            | ShadowError::Traffic(_) => 1,
        }
    }
}

/// Where an environment's servers answer `GET /traffic`.
#[derive(Debug, Clone)]
pub enum Endpoints {
    /// Local servers at these URLs.
    Http(Vec<Url>),
    /// Every pod of the app in a namespace, through the API server's proxy.
    Pods(Cluster),
}

impl Endpoints {
    pub fn of(target: &EnvTarget) -> Self {
        match target {
            EnvTarget::Local(t) => Endpoints::Http(crate::Target::endpoints(t).to_vec()),
            EnvTarget::Kubernetes(t) => Endpoints::Pods(t.cluster().clone()),
        }
    }

    /// Every endpoint's report or the reason it has none.
    pub async fn traffic(
        &self,
        client: &TrafficClient,
    ) -> Result<Vec<EndpointTraffic>, TrafficError> {
        match self {
            Endpoints::Http(urls) => Ok(client.fetch_all(urls).await),
            Endpoints::Pods(cluster) => crate::traffic::fetch_pods(cluster).await,
        }
    }
}

/// One release's side of a shadow report.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseSummary {
    pub version: String,
    pub role: Role,
    pub requests: u64,
    pub instances: u64,
    pub errors: u64,
    /// Share of instances predicted positive.
    pub positive_share: Option<f64>,
    /// Latency quantiles in microseconds, estimated from the merged histograms
    /// (interpolated within a bucket). The shadow's is its own scoring time.
    pub latency_p50_us: Option<f64>,
    pub latency_p99_us: Option<f64>,
}

/// What `shadow report` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    pub env: EnvName,
    pub release: ReleaseTag,
    pub started_at: Timestamp,
    pub started_by: String,
    pub primary: Option<ReleaseSummary>,
    pub shadow: Option<ReleaseSummary>,
    /// Instances scored by both.
    pub compared: u64,
    /// Share of compared instances on which both chose the same class.
    pub agreement: Option<f64>,
    /// `confusion[primary class][shadow class]`.
    pub confusion: [[u64; 2]; 2],
    pub mean_abs_delta: Option<f64>,
    /// Estimated from the |Δp| histogram, interpolated within its bucket.
    pub p99_abs_delta: Option<f64>,
    /// Instances the shadow did not score because its queue was full.
    pub skipped: u64,
    /// Endpoints added up.
    pub endpoints: Vec<String>,
    /// Endpoints that could not be asked, or that could not load the shadow.
    pub problems: Vec<String>,
}

impl ShadowReport {
    /// One line for the history's `shadow_stopped` entry.
    pub fn one_line(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.2}%", v * 100.0));
        let num = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
        format!(
            "{} compared over {} endpoint(s), agreement {}, mean |Δp| {}, p99 |Δp| {}, positives {} vs {}, shadow errors {}, skipped {}",
            self.compared,
            self.endpoints.len(),
            pct(self.agreement),
            num(self.mean_abs_delta),
            num(self.p99_abs_delta),
            pct(self.primary.as_ref().and_then(|p| p.positive_share)),
            pct(self.shadow.as_ref().and_then(|p| p.positive_share)),
            self.shadow.as_ref().map_or(0, |s| s.errors),
            self.skipped,
        )
    }
}

/// What `shadow stop` did.
#[derive(Debug, Clone, Serialize)]
pub struct Stopped {
    pub candidate: Candidate,
    /// The final report, if the endpoints could be asked.
    pub report: Option<ShadowReport>,
    pub summary: String,
}

/// Starts, reports and stops shadows in one environment.
pub struct Shadows {
    registry: Arc<Registry>,
    env: EnvName,
    endpoints: Endpoints,
    client: TrafficClient,
    identity: Identity,
    timeout: Duration,
}

impl Shadows {
    pub fn new(
        registry: Arc<Registry>,
        env: EnvName,
        endpoints: Endpoints,
        identity: Identity,
    ) -> Result<Self, ShadowError> {
        Ok(Shadows {
            registry,
            env,
            endpoints,
            client: TrafficClient::new()?,
            identity,
            timeout: DEFAULT_START_TIMEOUT,
        })
    }

    /// How long `start` waits for every endpoint to load the candidate.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Make `tag` the environment's shadow. `check_model` gets the release's artifact
    /// bytes and says whether they load (the model crate's business, not this one's).
    /// Nothing changes unless the release exists, its model loads, the environment
    /// serves a release and has no other candidate; after the record is written,
    /// every endpoint must report the shadow loaded within the timeout, or the record
    /// is removed again and the history says why.
    pub async fn start(
        &self,
        tag: &ReleaseTag,
        check_model: impl FnOnce(&[u8]) -> Result<(), String>,
    ) -> Result<Candidate, ShadowError> {
        let lease = self
            .registry
            .acquire_lease(
                &self.env,
                &self.identity.holder,
                &format!("shadow start {tag}"),
                LEASE_TTL,
            )
            .await?;
        let result = self.start_leased(tag, check_model).await;
        if let Err(e) = self.registry.release_lease(&lease).await {
            tracing::warn!(error = %e, env = %self.env, "cannot release the lease; it expires on its own");
        }
        result
    }

    async fn start_leased(
        &self,
        tag: &ReleaseTag,
        check_model: impl FnOnce(&[u8]) -> Result<(), String>,
    ) -> Result<Candidate, ShadowError> {
        let release = self.registry.get_release(tag).await?;
        let primary = self
            .registry
            .env_state(&self.env)
            .await?
            .and_then(|s| s.desired)
            .ok_or_else(|| ShadowError::NoPrimary {
                env: self.env.clone(),
            })?;
        if let Some(c) = self.registry.candidate(&self.env).await? {
            return Err(predict_buy_registry::Error::CandidateExists {
                env: self.env.clone(),
                release: Some(c.release.to_string()),
                mode: Some(c.mode.name()),
            }
            .into());
        }
        let bytes = self.registry.pull(&release.model_digest).await?;
        check_model(&bytes).map_err(|reason| ShadowError::Unloadable {
            env: self.env.clone(),
            tag: tag.clone(),
            reason,
        })?;
        let candidate = self
            .registry
            .set_candidate(&self.env, tag, CandidateMode::Shadow, &self.identity.actor)
            .await?;
        self.record(
            tag,
            &primary,
            Outcome::ShadowStarted,
            format!("shadow of {tag} beside {primary} started"),
        )
        .await?;
        if let Err(e) = self.wait_loaded(tag).await {
            // Call it off: a shadow some servers never run would report half the truth.
            self.registry.clear_candidate(&self.env).await?;
            self.record(
                tag,
                &primary,
                Outcome::ShadowStopped,
                format!("shadow of {tag} called off at start: {e}"),
            )
            .await?;
            return Err(e);
        }
        Ok(candidate)
    }

    async fn record(
        &self,
        tag: &ReleaseTag,
        primary: &ReleaseTag,
        outcome: Outcome,
        message: String,
    ) -> Result<(), ShadowError> {
        self.registry
            .append_history(
                &self.env,
                NewHistoryEntry {
                    release: Some(tag.clone()),
                    previous: Some(primary.clone()),
                    actor: self.identity.actor.clone(),
                    outcome,
                    message,
                },
            )
            .await?;
        Ok(())
    }

    /// Until every endpoint reports `tag` as its shadow. An endpoint that reports it
    /// cannot load it fails at once; one that is unreachable or still loading is asked
    /// again until the deadline.
    async fn wait_loaded(&self, tag: &ReleaseTag) -> Result<(), ShadowError> {
        let deadline = Instant::now() + self.timeout;
        let want = tag.to_string();
        loop {
            let reports = self.endpoints.traffic(&self.client).await?;
            if reports.is_empty() {
                return Err(self.not_loaded(tag, "the environment", "no endpoint to ask"));
            }
            let mut waiting = None;
            for r in &reports {
                match &r.report {
                    Ok(t) => {
                        if let Some(e) = &t.candidate_error
                            && e.release == want
                        {
                            return Err(self.not_loaded(tag, &r.endpoint, &e.error));
                        }
                        let loaded = t
                            .releases
                            .iter()
                            .any(|x| x.role == Role::Shadow && x.release.as_deref() == Some(&want));
                        if !loaded && waiting.is_none() {
                            waiting =
                                Some((r.endpoint.clone(), "has not loaded it yet".to_string()));
                        }
                    }
                    Err(e) => {
                        if waiting.is_none() {
                            waiting = Some((r.endpoint.clone(), e.to_string()));
                        }
                    }
                }
            }
            let Some((endpoint, problem)) = waiting else {
                return Ok(());
            };
            if Instant::now() + POLL >= deadline {
                return Err(self.not_loaded(
                    tag,
                    &endpoint,
                    &format!("{problem} after {:.1}s", self.timeout.as_secs_f64()),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn not_loaded(&self, tag: &ReleaseTag, endpoint: &str, problem: &str) -> ShadowError {
        ShadowError::NotLoaded {
            env: self.env.clone(),
            tag: tag.clone(),
            endpoint: endpoint.to_string(),
            problem: problem.to_string(),
        }
    }

    /// The running shadow's numbers, added up over every endpoint that answers.
    pub async fn report(&self) -> Result<ShadowReport, ShadowError> {
        let candidate = self.shadow_record().await?;
        self.report_on(&candidate).await
    }

    async fn shadow_record(&self) -> Result<Candidate, ShadowError> {
        let candidate =
            self.registry
                .candidate(&self.env)
                .await?
                .ok_or_else(|| ShadowError::NoShadow {
                    env: self.env.clone(),
                })?;
        if candidate.mode != CandidateMode::Shadow {
            return Err(ShadowError::NotAShadow {
                env: self.env.clone(),
                release: candidate.release,
                mode: candidate.mode.name(),
            });
        }
        Ok(candidate)
    }

    async fn report_on(&self, candidate: &Candidate) -> Result<ShadowReport, ShadowError> {
        let reports = self.endpoints.traffic(&self.client).await?;
        let mut problems = Vec::new();
        let mut ok = Vec::new();
        let want = candidate.release.to_string();
        for r in &reports {
            match &r.report {
                Ok(t) => {
                    if let Some(e) = &t.candidate_error {
                        problems.push(format!(
                            "{}: cannot load {} {}: {}",
                            r.endpoint, e.mode, e.release, e.error
                        ));
                    }
                    ok.push((r.endpoint.as_str(), t));
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if ok.is_empty() {
            return Err(ShadowError::NoTraffic {
                env: self.env.clone(),
                problems,
            });
        }
        let merged = merge(ok)?;
        Ok(summarise(&self.env, candidate, &want, &merged, problems))
    }

    /// Ends the shadow: the record goes (servers drop the candidate at their next
    /// poll) and the history gets a `shadow_stopped` entry with the final numbers.
    pub async fn stop(&self) -> Result<Stopped, ShadowError> {
        let candidate = self.shadow_record().await?;
        // The numbers first: once the record goes, servers drop the counters.
        let report = match self.report_on(&candidate).await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "no final shadow report");
                None
            }
        };
        let lease = self
            .registry
            .acquire_lease(
                &self.env,
                &self.identity.holder,
                &format!("shadow stop {}", candidate.release),
                LEASE_TTL,
            )
            .await?;
        let result = async {
            self.registry.clear_candidate(&self.env).await?;
            let summary = match &report {
                Some(r) => format!("shadow of {} stopped: {}", candidate.release, r.one_line()),
                None => format!(
                    "shadow of {} stopped (no endpoint answered for a final report)",
                    candidate.release
                ),
            };
            let primary = self
                .registry
                .env_state(&self.env)
                .await?
                .and_then(|s| s.desired);
            self.registry
                .append_history(
                    &self.env,
                    NewHistoryEntry {
                        release: Some(candidate.release.clone()),
                        previous: primary,
                        actor: self.identity.actor.clone(),
                        outcome: Outcome::ShadowStopped,
                        message: summary.clone(),
                    },
                )
                .await?;
            Ok::<_, ShadowError>(summary)
        }
        .await;
        if let Err(e) = self.registry.release_lease(&lease).await {
            tracing::warn!(error = %e, env = %self.env, "cannot release the lease; it expires on its own");
        }
        Ok(Stopped {
            candidate,
            report,
            summary: result?,
        })
    }
}

fn summarise(
    env: &EnvName,
    candidate: &Candidate,
    want: &str,
    merged: &Merged,
    problems: Vec<String>,
) -> ShadowReport {
    let shadow_release = merged
        .releases
        .iter()
        .find(|r| r.role == Role::Shadow && r.release.as_deref() == Some(want));
    let comparison = shadow_release.and_then(|s| merged.shadow(&s.version));
    let primary = comparison
        .and_then(|c| merged.release(&c.primary, Role::Primary))
        .or_else(|| merged.releases.iter().find(|r| r.role == Role::Primary));
    let summary = |r: &crate::traffic::MergedRelease| ReleaseSummary {
        version: r.version.clone(),
        role: r.role,
        requests: r.requests,
        instances: r.instances,
        errors: r.errors,
        positive_share: r.positive_rate(),
        latency_p50_us: r.latency_quantile_us(0.5),
        latency_p99_us: r.latency_quantile_us(0.99),
    };
    ShadowReport {
        env: env.clone(),
        release: candidate.release.clone(),
        started_at: candidate.started_at,
        started_by: candidate.started_by.clone(),
        primary: primary.map(summary),
        shadow: shadow_release.map(summary),
        compared: comparison.map_or(0, |c| c.compared),
        agreement: comparison.and_then(|c| c.agreement()),
        confusion: comparison.map_or([[0; 2]; 2], |c| c.confusion),
        mean_abs_delta: comparison.and_then(|c| c.mean_abs_delta()),
        p99_abs_delta: comparison.and_then(|c| c.abs_delta_quantile(0.99)),
        skipped: comparison.map_or(0, |c| c.skipped),
        endpoints: merged.endpoints.clone(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use predict_buy_api::traffic::{
        DELTA_BOUNDS, Histogram, LATENCY_BOUNDS_US, ReleaseTraffic, SCORE_BUCKETS,
        ShadowComparison, TrafficReport,
    };

    fn release(version: &str, role: Role, instances: u64, positives: u64) -> ReleaseTraffic {
        let mut latency = vec![0; LATENCY_BOUNDS_US.len() + 1];
        // Every request in (50, 100] µs.
        latency[1] = instances;
        ReleaseTraffic {
            release: Some(version.into()),
            version: version.into(),
            digest: "sha256:x".into(),
            role,
            since: "2026-01-01T00:00:00Z".into(),
            requests: instances,
            instances,
            errors: 0,
            rejected: 0,
            positives,
            unkeyed: 0,
            latency_us: Histogram {
                bounds: LATENCY_BOUNDS_US.to_vec(),
                counts: latency,
                sum: 0.0,
            },
            scores: Histogram {
                bounds: (1..SCORE_BUCKETS)
                    .map(|i| i as f64 / SCORE_BUCKETS as f64)
                    .collect(),
                counts: vec![0; SCORE_BUCKETS],
                sum: 0.0,
            },
        }
    }

    #[test]
    fn a_report_adds_up_endpoints_and_reads_as_one_line() {
        let report = |n: u64, agree: u64| TrafficReport {
            releases: vec![
                release("v1.0.0", Role::Primary, n, n / 4),
                release("v1.1.0", Role::Shadow, n, n / 2),
            ],
            shadow: Some(ShadowComparison {
                primary: "v1.0.0".into(),
                shadow: "v1.1.0".into(),
                compared: n,
                confusion: [[agree, n - agree], [0, 0]],
                abs_delta: Histogram {
                    bounds: DELTA_BOUNDS.to_vec(),
                    counts: {
                        let mut c = vec![0; DELTA_BOUNDS.len() + 1];
                        c[0] = n;
                        c
                    },
                    sum: 0.0005 * n as f64,
                },
                skipped: 1,
            }),
            candidate_error: None,
        };
        let (a, b) = (report(100, 90), report(300, 300));
        let merged = merge([("http://a/", &a), ("http://b/", &b)]).unwrap();
        let candidate = Candidate {
            env: EnvName::parse("nonprod").unwrap(),
            release: ReleaseTag::parse("v1.1.0").unwrap(),
            mode: CandidateMode::Shadow,
            started_at: Timestamp::UNIX_EPOCH,
            started_by: "t".into(),
        };
        let r = summarise(&candidate.env, &candidate, "v1.1.0", &merged, vec![]);
        assert_eq!(r.compared, 400);
        assert_eq!(r.confusion, [[390, 10], [0, 0]]);
        assert_eq!(r.agreement, Some(390.0 / 400.0));
        assert_eq!(r.skipped, 2);
        assert!((r.mean_abs_delta.unwrap() - 0.0005).abs() < 1e-12);
        // All |Δp| in (0, 0.001]: the p99 is interpolated inside that bucket.
        assert!((r.p99_abs_delta.unwrap() - 0.00099).abs() < 1e-12);
        let p = r.primary.as_ref().unwrap();
        assert_eq!((p.version.as_str(), p.requests), ("v1.0.0", 400));
        assert_eq!(p.positive_share, Some(100.0 / 400.0));
        assert_eq!(r.shadow.as_ref().unwrap().positive_share, Some(0.5));
        // Every request took (50, 100] µs: the median is the bucket's middle.
        assert_eq!(p.latency_p50_us, Some(75.0));
        assert_eq!(
            r.one_line(),
            "400 compared over 2 endpoint(s), agreement 97.50%, mean |Δp| 0.0005, p99 |Δp| 0.0010, positives 25.00% vs 50.00%, shadow errors 0, skipped 2"
        );
    }

    #[test]
    fn refusals_are_bad_input_and_failures_are_not() {
        let env = EnvName::parse("prod").unwrap();
        assert_eq!(ShadowError::NoShadow { env: env.clone() }.exit_code(), 2);
        let e = ShadowError::NotLoaded {
            env,
            tag: ReleaseTag::parse("v2.0.0").unwrap(),
            endpoint: "pod p-1".into(),
            problem: "has not loaded it yet after 30.0s".into(),
        };
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "pod p-1 did not load shadow v2.0.0 of `prod`: has not loaded it yet after 30.0s; the shadow was called off"
        );
    }
}
