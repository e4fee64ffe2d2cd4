//! Canary releases: a candidate answers a share of an environment's traffic while
//! its live behaviour is compared with the serving release's, and an automatic
//! verdict promotes it or drops it.
//!
//! This module holds the parts that are not the state machine (that is
//! [`crate::Deployer::canary`]): the thresholds of `predict-buy.yaml`'s `canary:`
//! block, the share and analysis-window arguments, reading `GET /traffic` from every
//! endpoint, and the verdict itself, a pure function from two releases' traffic to a
//! pass, a fail naming each failing metric, or "not enough traffic to tell".
//!
//! **Why deltas.** A server counts a release from the moment it starts holding it; the
//! baseline has usually served for hours before the canary starts. The analysis
//! subtracts a snapshot taken when the candidate is first seen on every endpoint, so
//! both releases are judged on the same window of requests.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use predict_buy_api::traffic::{LATENCY_BOUNDS_US, ReleaseTraffic, TrafficReport};
use std::future::Future;

use predict_buy_registry::{
    CandidateMode, EnvName, Registry, ReleaseRecord, ReleaseTag, RequestKey,
};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::kubernetes::{KubernetesTarget, manifests};
use crate::traffic::{TrafficClient, TrafficError};

/// Errors of starting or running a canary that are not a verdict on the release.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    /// `--canary` is not a share strictly between 0% and 100%.
    #[error("--canary `{input}`: {reason}")]
    Share { input: String, reason: String },

    /// `--analysis` is neither a duration nor a request count.
    #[error("--analysis `{input}`: {reason}")]
    Analysis { input: String, reason: String },

    /// A canary is compared with a serving release; there is none.
    #[error(
        "environment `{env}` serves no release, so a canary of `{release}` has nothing to be compared with"
    )]
    NoBaseline { env: EnvName, release: ReleaseTag },

    /// The candidate is what the environment already serves.
    #[error("environment `{env}` already serves `{release}`; a canary needs a different release")]
    SameRelease { env: EnvName, release: ReleaseTag },

    /// The HTTP client for `GET /traffic` could not be built.
    #[error("cannot read the endpoints' traffic")]
    Traffic(#[source] TrafficError),
}

impl CanaryError {
    /// Bad arguments and refusals are input (2); an unreachable endpoint failed (1).
    pub fn exit_code(&self) -> u8 {
        match self {
            CanaryError::Traffic(_) => 1,
            _ => 2,
        }
    }
}

/// `predict-buy.yaml`'s `canary:` block, at the top level or per environment; every
/// key is optional, an environment's key wins over the top level's, and a key set in
/// neither takes its default from [`Thresholds::default`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Largest allowed candidate error rate minus baseline error rate (0.01 = one
    /// percentage point).
    #[serde(default)]
    pub max_error_rate_increase: Option<f64>,
    /// Largest allowed candidate p99 latency over baseline p99 latency.
    #[serde(default)]
    pub max_p99_latency_ratio: Option<f64>,
    /// A p99 increase below this many milliseconds always passes: at microsecond
    /// latencies a ratio alone fails on scheduler noise.
    #[serde(default)]
    pub p99_latency_slack_ms: Option<f64>,
    /// Largest allowed |candidate − baseline| share of positive predictions.
    #[serde(default)]
    pub max_positive_rate_diff: Option<f64>,
    /// Largest allowed PSI between the two releases' live score histograms.
    #[serde(default)]
    pub max_score_psi: Option<f64>,
    /// Requests the candidate must answer before any verdict but "too few".
    #[serde(default)]
    pub min_requests: Option<u64>,
    /// How often every endpoint's `/traffic` is read, e.g. `5s`.
    #[serde(default)]
    pub interval: Option<String>,
    /// The request header whose hash picks the release (default `x-request-id`).
    #[serde(default)]
    pub request_header: Option<String>,
}

/// The resolved thresholds of one environment's canaries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thresholds {
    pub max_error_rate_increase: f64,
    pub max_p99_latency_ratio: f64,
    pub p99_latency_slack_ms: f64,
    pub max_positive_rate_diff: f64,
    pub max_score_psi: f64,
    pub min_requests: u64,
    #[serde(serialize_with = "as_ms")]
    pub interval: Duration,
    pub request_header: String,
}

fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

impl Default for Thresholds {
    /// Defaults meant for a canary of a retrained model: errors may not rise by a
    /// point; p99 may double (the histogram's 1-2-5 buckets make smaller ratios
    /// noise) unless it stays within 5 ms; the positive rate may move 10 points; the
    /// score PSI stays below 0.25, where `drift` calls a distribution "drifted"; and
    /// 200 candidate requests, below which the sampling noise of PSI over 20 buckets
    /// alone reaches about 0.1.
    fn default() -> Self {
        Thresholds {
            max_error_rate_increase: 0.01,
            max_p99_latency_ratio: 2.0,
            p99_latency_slack_ms: 5.0,
            max_positive_rate_diff: 0.10,
            max_score_psi: 0.25,
            min_requests: 200,
            interval: Duration::from_secs(5),
            request_header: predict_buy_registry::DEFAULT_REQUEST_KEY_HEADER.to_string(),
        }
    }
}

impl Thresholds {
    /// `env` over `global` over the defaults. Errors name the key (`canary.<key>` at
    /// the top level, `environments.<env>.canary.<key>` per environment).
    pub fn resolve(
        global: Option<&CanaryConfig>,
        env: Option<&CanaryConfig>,
        env_name: &str,
    ) -> std::result::Result<Self, String> {
        let mut t = Thresholds::default();
        let layers = [
            (global, "canary".to_string()),
            (env, format!("environments.{env_name}.canary")),
        ];
        for (layer, prefix) in layers {
            let Some(c) = layer else { continue };
            let rate = |key: &str, v: Option<f64>, out: &mut f64| {
                if let Some(v) = v {
                    if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                        return Err(format!("{prefix}.{key}: {v} is not between 0 and 1"));
                    }
                    *out = v;
                }
                Ok(())
            };
            rate(
                "max_error_rate_increase",
                c.max_error_rate_increase,
                &mut t.max_error_rate_increase,
            )?;
            rate(
                "max_positive_rate_diff",
                c.max_positive_rate_diff,
                &mut t.max_positive_rate_diff,
            )?;
            if let Some(v) = c.max_p99_latency_ratio {
                if !(v.is_finite() && v >= 1.0) {
                    return Err(format!(
                        "{prefix}.max_p99_latency_ratio: {v} is not a ratio of at least 1"
                    ));
                }
                t.max_p99_latency_ratio = v;
            }
            let non_negative = |key: &str, v: Option<f64>, out: &mut f64| {
                if let Some(v) = v {
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(format!("{prefix}.{key}: {v} is not a number ≥ 0"));
                    }
                    *out = v;
                }
                Ok(())
            };
            non_negative(
                "p99_latency_slack_ms",
                c.p99_latency_slack_ms,
                &mut t.p99_latency_slack_ms,
            )?;
            non_negative("max_score_psi", c.max_score_psi, &mut t.max_score_psi)?;
            if let Some(n) = c.min_requests {
                if n == 0 {
                    return Err(format!(
                        "{prefix}.min_requests: 0 would pass a canary nobody used; use at least 1"
                    ));
                }
                t.min_requests = n;
            }
            if let Some(i) = &c.interval {
                let d = crate::config::parse_duration(i)
                    .map_err(|reason| format!("{prefix}.interval: `{i}` {reason}"))?;
                if d.is_zero() {
                    return Err(format!("{prefix}.interval: must be longer than 0"));
                }
                t.interval = d;
            }
            if let Some(h) = &c.request_header {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    return Err(format!(
                        "{prefix}.request_header: `{h}` is not an HTTP header name"
                    ));
                }
                t.request_header = h.to_ascii_lowercase();
            }
        }
        Ok(t)
    }
}

/// The candidate's share of requests, strictly between 0% and 100%.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Share(f64);

impl Share {
    /// `10%`, `10` or `2.5%`.
    pub fn parse(input: &str) -> std::result::Result<Self, CanaryError> {
        let err = |reason: &str| CanaryError::Share {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let number = input.trim().trim_end_matches('%').trim();
        let percent: f64 = number
            .parse()
            .map_err(|_| err("is not a percentage like 10% or 10"))?;
        if !(percent.is_finite() && percent > 0.0 && percent < 100.0) {
            return Err(err("must be above 0% and below 100%"));
        }
        Ok(Share(percent))
    }

    pub fn percent(self) -> f64 {
        self.0
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// How long the analysis lasts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Until this much time has passed since the candidate took traffic.
    Time(#[serde(serialize_with = "as_ms")] Duration),
    /// Until both releases together have answered this many requests since then.
    Requests(u64),
}

impl Window {
    /// A bare integer is a request count (`2000`); anything with a unit is a duration
    /// (`90s`, `5m`). This differs from `--timeout`, where a bare number is seconds,
    /// because a count is the more natural reading of "analyse 2000".
    pub fn parse(input: &str) -> std::result::Result<Self, CanaryError> {
        let s = input.trim();
        let err = |reason: String| CanaryError::Analysis {
            input: input.to_string(),
            reason,
        };
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
            let n: u64 = s
                .parse()
                .map_err(|_| err("is too large a request count".into()))?;
            if n == 0 {
                return Err(err("a request count must be at least 1".into()));
            }
            return Ok(Window::Requests(n));
        }
        let d = crate::config::parse_duration(s).map_err(err)?;
        if d.is_zero() {
            return Err(err("must be longer than 0".into()));
        }
        Ok(Window::Time(d))
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Time(d) => write!(f, "{}s", d.as_secs_f64()),
            Window::Requests(n) => write!(f, "{n} requests"),
        }
    }
}

/// One release's traffic over the analysis window, summed over every endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleaseMetrics {
    pub release: String,
    pub requests: u64,
    pub errors: u64,
    pub instances: u64,
    pub positives: u64,
    pub error_rate: f64,
    pub positive_rate: f64,
    /// p99 latency in milliseconds, interpolated within its histogram bucket; `None`
    /// with no requests.
    pub p99_ms: Option<f64>,
    #[serde(skip)]
    pub scores: Vec<u64>,
}

/// The two releases side by side, and the PSI between their live scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub baseline: ReleaseMetrics,
    pub candidate: ReleaseMetrics,
    /// PSI of the candidate's score histogram against the baseline's.
    pub score_psi: f64,
}

/// One metric outside its threshold, with the values that put it there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricFailure {
    /// `error_rate`, `p99_latency`, `positive_rate` or `score_psi`.
    pub metric: &'static str,
    pub baseline: f64,
    pub candidate: f64,
    /// What was compared with the limit (a difference, a ratio or the PSI).
    pub observed: f64,
    pub limit: f64,
}

impl fmt::Display for MetricFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (b, c, o, l) = (self.baseline, self.candidate, self.observed, self.limit);
        match self.metric {
            "error_rate" => write!(
                f,
                "error_rate: candidate {:.2}% vs baseline {:.2}% (increase {:.2} points > max {:.2})",
                c * 100.0,
                b * 100.0,
                o * 100.0,
                l * 100.0
            ),
            "p99_latency" => write!(
                f,
                "p99_latency: candidate {c:.2} ms vs baseline {b:.2} ms (ratio {o:.2} > max {l:.2})"
            ),
            "positive_rate" => write!(
                f,
                "positive_rate: candidate {:.1}% vs baseline {:.1}% (difference {:.1} points > max {:.1})",
                c * 100.0,
                b * 100.0,
                o * 100.0,
                l * 100.0
            ),
            _ => write!(f, "{}: {o:.3} > max {l:.3}", self.metric),
        }
    }
}

/// What the traffic so far says.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "assessment", rename_all = "snake_case")]
pub enum Assessment {
    /// Every metric within its threshold, on enough requests.
    Pass,
    /// At least one metric outside its threshold, on enough requests.
    Fail { failures: Vec<MetricFailure> },
    /// The candidate has answered fewer requests than `min_requests`.
    TooFew { requests: u64, needed: u64 },
}

/// The verdict on a comparison: pure, so every threshold is tested without servers.
pub fn assess(c: &Comparison, t: &Thresholds) -> Assessment {
    if c.candidate.requests < t.min_requests {
        return Assessment::TooFew {
            requests: c.candidate.requests,
            needed: t.min_requests,
        };
    }
    let (b, k) = (&c.baseline, &c.candidate);
    let mut failures = Vec::new();
    let increase = k.error_rate - b.error_rate;
    if increase > t.max_error_rate_increase {
        failures.push(MetricFailure {
            metric: "error_rate",
            baseline: b.error_rate,
            candidate: k.error_rate,
            observed: increase,
            limit: t.max_error_rate_increase,
        });
    }
    if let (Some(bp), Some(kp)) = (b.p99_ms, k.p99_ms) {
        let ratio = if bp > 0.0 { kp / bp } else { f64::INFINITY };
        if ratio > t.max_p99_latency_ratio && kp - bp > t.p99_latency_slack_ms {
            failures.push(MetricFailure {
                metric: "p99_latency",
                baseline: bp,
                candidate: kp,
                observed: ratio,
                limit: t.max_p99_latency_ratio,
            });
        }
    }
    let diff = (k.positive_rate - b.positive_rate).abs();
    if diff > t.max_positive_rate_diff {
        failures.push(MetricFailure {
            metric: "positive_rate",
            baseline: b.positive_rate,
            candidate: k.positive_rate,
            observed: diff,
            limit: t.max_positive_rate_diff,
        });
    }
    if c.score_psi > t.max_score_psi {
        failures.push(MetricFailure {
            metric: "score_psi",
            baseline: 0.0,
            candidate: 0.0,
            observed: c.score_psi,
            limit: t.max_score_psi,
        });
    }
    if failures.is_empty() {
        Assessment::Pass
    } else {
        Assessment::Fail { failures }
    }
}

/// Every release's traffic summed over endpoints, keyed by release tag (a model
/// served from a file has no tag and is left out). Roles are summed too: a local
/// server holds the candidate as its `canary`, a Kubernetes canary pod holds it as
/// its `primary`, and either way it is the candidate's traffic.
pub fn by_release(reports: &[TrafficReport]) -> BTreeMap<String, Totals> {
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    for r in reports.iter().flat_map(|r| &r.releases) {
        let Some(tag) = &r.release else { continue };
        out.entry(tag.clone()).or_default().add(r);
    }
    out
}

/// Counts and histograms of one release, added up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub instances: u64,
    pub positives: u64,
    pub latency_us: Vec<u64>,
    pub scores: Vec<u64>,
}

fn add_counts(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

impl Totals {
    fn add(&mut self, r: &ReleaseTraffic) {
        self.requests += r.requests;
        self.errors += r.errors;
        self.instances += r.instances;
        self.positives += r.positives;
        add_counts(&mut self.latency_us, &r.latency_us.counts);
        add_counts(&mut self.scores, &r.scores.counts);
    }

    /// `self − before`, field by field. A count that went down means a server
    /// restarted and began counting again; then `self` alone is the best estimate of
    /// the window (the pre-restart part is lost either way).
    pub fn since(&self, before: &Totals) -> Totals {
        let restarted = self.requests < before.requests;
        if restarted {
            return self.clone();
        }
        let sub = |a: &[u64], b: &[u64]| -> Vec<u64> {
            a.iter()
                .enumerate()
                .map(|(i, x)| x.saturating_sub(b.get(i).copied().unwrap_or(0)))
                .collect()
        };
        Totals {
            requests: self.requests - before.requests,
            errors: self.errors.saturating_sub(before.errors),
            instances: self.instances.saturating_sub(before.instances),
            positives: self.positives.saturating_sub(before.positives),
            latency_us: sub(&self.latency_us, &before.latency_us),
            scores: sub(&self.scores, &before.scores),
        }
    }

    /// The rates and the p99 of these totals.
    pub fn metrics(&self, release: &str) -> ReleaseMetrics {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        ReleaseMetrics {
            release: release.to_string(),
            requests: self.requests,
            errors: self.errors,
            instances: self.instances,
            positives: self.positives,
            error_rate: ratio(self.errors, self.requests),
            positive_rate: ratio(self.positives, self.instances),
            p99_ms: latency_p99_us(&self.latency_us).map(|us| us / 1000.0),
            scores: self.scores.clone(),
        }
    }
}

/// Compare `candidate` with `baseline`.
pub fn compare(baseline: ReleaseMetrics, candidate: ReleaseMetrics) -> Comparison {
    let score_psi = psi(&baseline.scores, &candidate.scores);
    Comparison {
        baseline,
        candidate,
        score_psi,
    }
}

/// p99 of latency counts over [`LATENCY_BOUNDS_US`], as [`crate::traffic::quantile`]
/// estimates it; above the last bound (10 s) it reports that bound, a lower estimate.
fn latency_p99_us(counts: &[u64]) -> Option<f64> {
    let histogram = predict_buy_api::traffic::Histogram {
        bounds: LATENCY_BOUNDS_US.to_vec(),
        counts: counts.to_vec(),
        sum: 0.0,
    };
    crate::traffic::quantile(
        &histogram,
        0.99,
        LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1],
    )
}

/// Population stability index of `actual` against `expected` over the same buckets.
/// Buckets empty on both sides carry no information and are skipped; a bucket empty
/// on one side only gets half an observation, so one stray score cannot make the PSI
/// infinite. Returns 0 when either side is empty.
pub fn psi(expected: &[u64], actual: &[u64]) -> f64 {
    let (te, ta): (u64, u64) = (expected.iter().sum(), actual.iter().sum());
    if te == 0 || ta == 0 {
        return 0.0;
    }
    let n = expected.len().max(actual.len());
    let mut total = 0.0;
    for i in 0..n {
        let e = expected.get(i).copied().unwrap_or(0);
        let a = actual.get(i).copied().unwrap_or(0);
        if e == 0 && a == 0 {
            continue;
        }
        let pe = e.max(1) as f64 / if e == 0 { 2.0 * te as f64 } else { te as f64 };
        let pa = a.max(1) as f64 / if a == 0 { 2.0 * ta as f64 } else { ta as f64 };
        total += (pa - pe) * (pa / pe).ln();
    }
    total
}

/// Every endpoint's report, or the first endpoint's failure: the analysis skips a
/// poll that misses an endpoint rather than judging on part of the environment.
pub async fn read_traffic(
    client: &TrafficClient,
    endpoints: &[Url],
) -> std::result::Result<Vec<TrafficReport>, TrafficError> {
    client
        .fetch_all(endpoints)
        .await
        .into_iter()
        .map(|e| e.report)
        .collect()
}

/// Whether any report lists `release`: some server runs it.
pub fn any_holds(reports: &[TrafficReport], release: &str) -> bool {
    reports.iter().any(|r| {
        r.releases
            .iter()
            .any(|t| t.release.as_deref() == Some(release))
    })
}

/// The first server's complaint that it could not load `release` as a candidate.
pub fn load_error(reports: &[TrafficReport], release: &str) -> Option<String> {
    reports
        .iter()
        .filter_map(|r| r.candidate_error.as_ref())
        .find(|e| e.release == release)
        .map(|e| e.error.clone())
}

/// Whether every report lists `release` (in any role): the servers have loaded it.
pub fn all_hold(reports: &[TrafficReport], release: &str) -> bool {
    reports.iter().all(|r| {
        r.releases
            .iter()
            .any(|t| t.release.as_deref() == Some(release))
    })
}

/// How a target gives a candidate its share and takes it back. The default methods
/// are the local target's: its servers read the environment's candidate record and
/// split traffic themselves, so starting is writing the record and dropping is
/// removing it.
pub trait CanaryTarget: crate::Target {
    /// Give `candidate` `share` of the traffic. Fails with the registry's
    /// `CandidateExists` while a shadow or another canary runs.
    fn start_canary(
        &self,
        registry: &Registry,
        env: &EnvName,
        candidate: &ReleaseRecord,
        share: Share,
        key: &RequestKey,
        actor: &str,
    ) -> impl Future<Output = crate::Result<()>> + Send {
        async move {
            registry
                .set_candidate(
                    env,
                    &candidate.tag,
                    CandidateMode::Canary {
                        percent: share.percent(),
                        key: key.clone(),
                    },
                    actor,
                )
                .await?;
            Ok(())
        }
    }

    /// Take the candidate's share away again (the baseline answers everything).
    fn drop_canary(
        &self,
        registry: &Registry,
        env: &EnvName,
    ) -> impl Future<Output = crate::Result<()>> + Send {
        async move {
            registry.clear_candidate(env).await?;
            Ok(())
        }
    }

    /// Every server's `GET /traffic`, or the first failure.
    fn read_traffic(
        &self,
        client: &TrafficClient,
    ) -> impl Future<Output = std::result::Result<Vec<TrafficReport>, TrafficError>> + Send {
        read_traffic(client, self.endpoints())
    }

    /// Whether every server holds the candidate (local servers load it beside the
    /// baseline) rather than some servers running it alone (Kubernetes canary pods).
    fn candidate_on_every_server(&self) -> bool {
        true
    }

    /// The share the candidate really gets, in percent: the one asked for, or what a
    /// replica ratio makes of it.
    fn effective_percent(&self, share: Share) -> f64 {
        share.percent()
    }
}

impl CanaryTarget for crate::LocalTarget {}

/// On Kubernetes a canary is a second Deployment ([`manifests::CANARY`]) of the
/// candidate, pinned like the main one, whose pods the one Service also selects: the
/// replica ratio is the weight. No candidate record is written, because the main
/// Deployment's pods follow the record (`--env`) and would split traffic themselves;
/// a second canary is refused by the lease, and a shadow's record refuses a canary.
impl CanaryTarget for KubernetesTarget {
    async fn start_canary(
        &self,
        registry: &Registry,
        env: &EnvName,
        candidate: &ReleaseRecord,
        share: Share,
        _key: &RequestKey,
        actor: &str,
    ) -> crate::Result<()> {
        if let Some(existing) = registry.candidate(env).await? {
            return Err(predict_buy_registry::Error::CandidateExists {
                env: env.clone(),
                release: Some(existing.release.to_string()),
                mode: Some(existing.mode.name()),
            }
            .into());
        }
        let replicas = manifests::canary_replicas(self.main_replicas(), share.percent());
        let deployment = manifests::canary_deployment(
            &manifests::RenderInput {
                env,
                release: candidate,
                registry_url: self.pod_registry(),
                settings: self.settings(),
                deployed_by: Some(actor),
            },
            replicas,
        );
        self.cluster().apply_canary(&deployment).await?;
        let timeout = Duration::from_secs(self.settings().progress_deadline_seconds.max(1) as u64);
        if let Err(e) = self.cluster().wait_canary(replicas, timeout).await {
            // Its pods never served: take them away before saying why.
            if let Err(d) = self.cluster().delete_canary().await {
                tracing::warn!("cannot delete the canary Deployment: {d}");
            }
            return Err(e.into());
        }
        Ok(())
    }

    async fn drop_canary(&self, _registry: &Registry, _env: &EnvName) -> crate::Result<()> {
        self.cluster().delete_canary().await?;
        Ok(())
    }

    async fn read_traffic(
        &self,
        _client: &TrafficClient,
    ) -> std::result::Result<Vec<TrafficReport>, TrafficError> {
        crate::traffic::fetch_pods(self.cluster())
            .await?
            .into_iter()
            .map(|e| e.report)
            .collect()
    }

    fn candidate_on_every_server(&self) -> bool {
        false
    }

    fn effective_percent(&self, share: Share) -> f64 {
        let main = self.main_replicas();
        manifests::effective_percent(main, manifests::canary_replicas(main, share.percent()))
    }
}

impl CanaryTarget for crate::EnvTarget {
    async fn start_canary(
        &self,
        registry: &Registry,
        env: &EnvName,
        candidate: &ReleaseRecord,
        share: Share,
        key: &RequestKey,
        actor: &str,
    ) -> crate::Result<()> {
        match self {
            crate::EnvTarget::Local(t) => {
                t.start_canary(registry, env, candidate, share, key, actor)
                    .await
            }
            crate::EnvTarget::Kubernetes(t) => {
                t.start_canary(registry, env, candidate, share, key, actor)
                    .await
            }
        }
    }

    async fn drop_canary(&self, registry: &Registry, env: &EnvName) -> crate::Result<()> {
        match self {
            crate::EnvTarget::Local(t) => t.drop_canary(registry, env).await,
            crate::EnvTarget::Kubernetes(t) => t.drop_canary(registry, env).await,
        }
    }

    async fn read_traffic(
        &self,
        client: &TrafficClient,
    ) -> std::result::Result<Vec<TrafficReport>, TrafficError> {
        match self {
            crate::EnvTarget::Local(t) => t.read_traffic(client).await,
            crate::EnvTarget::Kubernetes(t) => t.read_traffic(client).await,
        }
    }

    fn candidate_on_every_server(&self) -> bool {
        match self {
            crate::EnvTarget::Local(t) => t.candidate_on_every_server(),
            crate::EnvTarget::Kubernetes(t) => t.candidate_on_every_server(),
        }
    }

    fn effective_percent(&self, share: Share) -> f64 {
        match self {
            crate::EnvTarget::Local(t) => t.effective_percent(share),
            crate::EnvTarget::Kubernetes(t) => t.effective_percent(share),
        }
    }
}

/// The lease's `operation` while a canary runs: people read it in `status`, and
/// [`window_of_operation`] reads the window back from it, so `status` can say how
/// much of the analysis remains without another record.
pub fn operation(release: &ReleaseTag, share: Share, window: Window) -> String {
    format!("canary {release} at {share} (analysis {window})")
}

/// The analysis window written by [`operation`], if `op` is a canary's.
pub fn window_of_operation(op: &str) -> Option<Window> {
    let inner = op.strip_prefix("canary ")?.split("(analysis ").nth(1)?;
    let inner = inner.strip_suffix(')')?;
    if let Some(n) = inner.strip_suffix(" requests") {
        return n.parse().ok().map(Window::Requests);
    }
    let secs: f64 = inner.strip_suffix('s')?.parse().ok()?;
    Duration::try_from_secs_f64(secs).ok().map(Window::Time)
}

/// A canary that runs now, for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct Running {
    pub release: ReleaseTag,
    /// What the environment serves beside it.
    pub baseline: Option<ReleaseTag>,
    pub percent: f64,
    pub started_at: jiff::Timestamp,
    pub started_by: String,
    pub elapsed_s: f64,
    /// From the lease's operation; `None` when its deployer no longer holds the lease.
    pub window: Option<Window>,
    /// Seconds left of a time window (0 when over); `None` for a request count.
    pub remaining_s: Option<f64>,
    /// The metrics so far over every endpoint (each server counts a release pair from
    /// the moment it loaded the candidate); `None` when a read failed, see `metrics_error`.
    pub metrics: Option<Comparison>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_error: Option<String>,
}

/// Where `status` finds a canary: a local environment's candidate record and its
/// endpoints, or a Kubernetes environment's canary Deployment and its pods.
pub enum Source<'a> {
    Endpoints(&'a [Url]),
    Cluster(&'a crate::kubernetes::Cluster),
}

/// The environment's running canary, if one runs.
pub async fn running(
    registry: &Registry,
    env: &EnvName,
    source: Source<'_>,
) -> crate::Result<Option<Running>> {
    let found = match &source {
        Source::Endpoints(_) => match registry.candidate(env).await? {
            Some(c) => match c.mode {
                CandidateMode::Canary { percent, .. } => {
                    Some((c.release, percent, c.started_at, c.started_by))
                }
                CandidateMode::Shadow => None,
            },
            None => None,
        },
        Source::Cluster(cluster) => on_cluster(cluster).await?,
    };
    let Some((release, percent, started_at, started_by)) = found else {
        return Ok(None);
    };
    let now = jiff::Timestamp::now();
    let baseline = registry.env_state(env).await?.and_then(|s| s.desired);
    let lease = registry
        .inspect_lease(env)
        .await?
        .filter(|l| l.is_active(now));
    let window = lease.and_then(|l| window_of_operation(&l.operation));
    let elapsed_s = now.duration_since(started_at).as_secs_f64().max(0.0);
    let remaining_s = match window {
        Some(Window::Time(d)) => Some((d.as_secs_f64() - elapsed_s).max(0.0)),
        _ => None,
    };
    let reports = match &source {
        Source::Endpoints([]) => Err("no endpoints to read".to_string()),
        Source::Endpoints(endpoints) => match TrafficClient::new() {
            Ok(client) => read_traffic(&client, endpoints)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Source::Cluster(cluster) => match crate::traffic::fetch_pods(cluster).await {
            Ok(list) => list
                .into_iter()
                .map(|e| e.report)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
    };
    let (metrics, metrics_error) = match reports {
        Ok(reports) => {
            let totals = by_release(&reports);
            let of = |tag: &str| totals.get(tag).cloned().unwrap_or_default().metrics(tag);
            let b = baseline.as_ref().map_or(String::new(), ToString::to_string);
            (Some(compare(of(&b), of(&release.to_string()))), None)
        }
        Err(e) => (None, Some(e)),
    };
    Ok(Some(Running {
        release,
        baseline,
        percent,
        started_at,
        started_by,
        elapsed_s,
        window,
        remaining_s,
        metrics,
        metrics_error,
    }))
}

/// The canary Deployment's release, effective share, creation time and deployer.
async fn on_cluster(
    cluster: &crate::kubernetes::Cluster,
) -> crate::Result<Option<(ReleaseTag, f64, jiff::Timestamp, String)>> {
    let Some(canary) = cluster.canary().await? else {
        return Ok(None);
    };
    let annotations = canary.metadata.annotations.clone().unwrap_or_default();
    let Some(release) = annotations
        .get(manifests::annotation::RELEASE)
        .and_then(|t| ReleaseTag::parse(t).ok())
    else {
        return Ok(None);
    };
    let replicas = |d: &k8s_openapi::api::apps::v1::Deployment| {
        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    };
    let main = cluster.deployment().await?.as_ref().map_or(1, replicas);
    let started_at = canary
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| t.0.to_string().parse().ok())
        .unwrap_or_else(jiff::Timestamp::now);
    let by = annotations
        .get(manifests::annotation::DEPLOYED_BY)
        .cloned()
        .unwrap_or_default();
    Ok(Some((
        release,
        manifests::effective_percent(main, replicas(&canary)),
        started_at,
        by,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(release: &str, requests: u64, errors: u64, positives: u64) -> ReleaseMetrics {
        Totals {
            requests,
            errors,
            instances: requests,
            positives,
            latency_us: vec![0, requests, 0],
            scores: vec![requests - positives, positives],
        }
        .metrics(release)
    }

    fn healthy() -> Comparison {
        compare(
            metrics("v1.0.0", 1000, 2, 120),
            metrics("v1.1.0", 300, 1, 39),
        )
    }

    #[test]
    fn a_candidate_like_its_baseline_passes() {
        let c = healthy();
        assert!((c.candidate.positive_rate - 0.13).abs() < 1e-12);
        assert!(c.score_psi < 0.01, "{}", c.score_psi);
        assert_eq!(assess(&c, &Thresholds::default()), Assessment::Pass);
    }

    #[test]
    fn too_few_candidate_requests_is_never_a_pass() {
        let c = compare(metrics("v1.0.0", 1000, 0, 120), metrics("v1.1.0", 50, 0, 6));
        assert_eq!(
            assess(&c, &Thresholds::default()),
            Assessment::TooFew {
                requests: 50,
                needed: 200
            }
        );
    }

    #[test]
    fn each_metric_fails_on_its_own_with_its_values() {
        let t = Thresholds::default();
        // Errors: 5% against 0.2%.
        let c = compare(
            metrics("v1.0.0", 1000, 2, 120),
            metrics("v1.1.0", 300, 15, 36),
        );
        let Assessment::Fail { failures } = assess(&c, &t) else {
            panic!("expected a failure")
        };
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].metric, "error_rate");
        assert!((failures[0].candidate - 0.05).abs() < 1e-12);
        assert!((failures[0].baseline - 0.002).abs() < 1e-12);
        assert!(failures[0].to_string().contains("candidate 5.00%"));

        // Positive rate: 90% against 12%, which also moves the score histogram.
        let c = compare(
            metrics("v1.0.0", 1000, 0, 120),
            metrics("v1.1.0", 300, 0, 270),
        );
        let Assessment::Fail { failures } = assess(&c, &t) else {
            panic!("expected a failure")
        };
        let names: Vec<_> = failures.iter().map(|f| f.metric).collect();
        assert_eq!(names, ["positive_rate", "score_psi"]);
        assert!((failures[0].observed - 0.78).abs() < 1e-9);
        assert!(failures[1].observed > 1.0, "{}", failures[1].observed);
    }

    #[test]
    fn latency_fails_on_ratio_only_beyond_the_slack() {
        let t = Thresholds::default();
        let mut c = healthy();
        c.baseline.p99_ms = Some(0.2);
        c.candidate.p99_ms = Some(0.9); // 4.5× but only 0.7 ms more: noise.
        assert_eq!(assess(&c, &t), Assessment::Pass);
        c.baseline.p99_ms = Some(10.0);
        c.candidate.p99_ms = Some(30.0);
        let Assessment::Fail { failures } = assess(&c, &t) else {
            panic!("expected a failure")
        };
        assert_eq!(failures[0].metric, "p99_latency");
        assert!((failures[0].observed - 3.0).abs() < 1e-12);
    }

    #[test]
    fn deltas_subtract_the_snapshot_and_survive_a_restart() {
        let before = Totals {
            requests: 100,
            errors: 1,
            instances: 100,
            positives: 10,
            latency_us: vec![50, 50],
            scores: vec![90, 10],
        };
        let now = Totals {
            requests: 160,
            errors: 4,
            instances: 160,
            positives: 40,
            latency_us: vec![80, 80],
            scores: vec![120, 40],
        };
        let d = now.since(&before);
        assert_eq!((d.requests, d.errors, d.positives), (60, 3, 30));
        assert_eq!(d.scores, vec![30, 30]);
        let restarted = Totals {
            requests: 5,
            ..Totals::default()
        };
        assert_eq!(restarted.since(&before).requests, 5);
    }

    #[test]
    fn psi_is_zero_for_equal_shapes_and_large_for_moved_ones() {
        assert!(psi(&[10, 20, 70], &[1, 2, 7]).abs() < 1e-12);
        let moved = psi(&[70, 20, 10], &[10, 20, 70]);
        assert!(moved > 1.0, "{moved}");
        // One stray observation where the other side has none stays finite.
        assert!(psi(&[100, 0], &[99, 1]).is_finite());
        assert_eq!(psi(&[], &[1, 2]), 0.0);
    }

    #[test]
    fn the_lease_operation_carries_the_window() {
        let tag = ReleaseTag::parse("v1.2.0").unwrap();
        let share = Share::parse("10%").unwrap();
        for w in [
            Window::Requests(2000),
            Window::Time(Duration::from_secs(300)),
        ] {
            let op = operation(&tag, share, w);
            assert_eq!(window_of_operation(&op), Some(w), "{op}");
        }
        assert_eq!(
            operation(&tag, share, Window::Requests(5)),
            "canary v1.2.0 at 10% (analysis 5 requests)"
        );
        assert_eq!(window_of_operation("deploy v1.2.0"), None);
    }

    #[test]
    fn shares_and_windows_parse_and_refuse() {
        assert_eq!(Share::parse("10%").unwrap().percent(), 10.0);
        assert_eq!(Share::parse(" 2.5 ").unwrap().percent(), 2.5);
        for bad in ["0", "100%", "-5", "ten", "NaN"] {
            assert!(Share::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Window::parse("2000").unwrap(), Window::Requests(2000));
        assert_eq!(
            Window::parse("5m").unwrap(),
            Window::Time(Duration::from_secs(300))
        );
        assert_eq!(
            Window::parse("1500ms").unwrap(),
            Window::Time(Duration::from_millis(1500))
        );
        for bad in ["0", "0s", "5h", "soon", ""] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn thresholds_layer_and_name_the_bad_key() {
        let global = CanaryConfig {
            max_score_psi: Some(0.1),
            min_requests: Some(50),
            ..CanaryConfig::default()
        };
        let env = CanaryConfig {
            min_requests: Some(20),
            interval: Some("200ms".into()),
            ..CanaryConfig::default()
        };
        let t = Thresholds::resolve(Some(&global), Some(&env), "nonprod").unwrap();
        assert_eq!(t.max_score_psi, 0.1);
        assert_eq!(t.min_requests, 20);
        assert_eq!(t.interval, Duration::from_millis(200));
        assert_eq!(t.max_positive_rate_diff, 0.10);

        let bad = CanaryConfig {
            max_positive_rate_diff: Some(1.5),
            ..CanaryConfig::default()
        };
        let e = Thresholds::resolve(None, Some(&bad), "prod").unwrap_err();
        assert!(
            e.starts_with("environments.prod.canary.max_positive_rate_diff: 1.5"),
            "{e}"
        );
        let bad = CanaryConfig {
            max_p99_latency_ratio: Some(0.5),
            ..CanaryConfig::default()
        };
        let e = Thresholds::resolve(Some(&bad), None, "prod").unwrap_err();
        assert!(e.starts_with("canary.max_p99_latency_ratio"), "{e}");
        let bad = CanaryConfig {
            request_header: Some("not a header".into()),
            ..CanaryConfig::default()
        };
        assert!(
            Thresholds::resolve(Some(&bad), None, "prod")
                .unwrap_err()
                .contains("request_header")
        );
    }
}
