//! What an environment's servers have answered, added up: `GET /traffic` from every
//! endpoint (local servers over HTTP, Kubernetes pods through the API server's proxy,
//! as verification reaches them), merged per release, and the few statistics that
//! `shadow report` and a canary's analysis compute from the sums.
//!
//! Servers report counts and fixed-bucket histograms only, so the environment's p99 is
//! the p99 of the merged histogram, not an average of per-server p99s (which has no
//! meaning). Quantiles are therefore estimates: the rank is found in its bucket and
//! interpolated linearly between the bucket's bounds ([`quantile`]).

use std::time::Duration;

use predict_buy_api::traffic::{Histogram, ReleaseTraffic, Role, ShadowComparison, TrafficReport};
use reqwest::{Client, Url};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::kubernetes::Cluster;
use crate::kubernetes::manifests::APP;

/// One `GET /traffic` may take at most this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Proportion that stands in for an empty bucket in [`psi`]: without it one empty
/// bucket on either side makes the index infinite. 1e-4 is the usual choice (the
/// same as Evidently's and most PSI write-ups); it caps one bucket's contribution at
/// about `p · ln(p / 1e-4)`.
pub const PSI_EPSILON: f64 = 1e-4;

/// Why traffic could not be read or added up. Each names the endpoint concerned.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error("cannot build a URL for GET /traffic from endpoint {endpoint}: {reason}")]
    Url { endpoint: String, reason: String },
    #[error("{endpoint}: GET /traffic did not answer: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("{endpoint}: GET /traffic answered {status}: {body}")]
    Status {
        endpoint: String,
        status: u16,
        body: String,
    },
    #[error("{endpoint}: GET /traffic's answer is not a traffic report")]
    Decode {
        endpoint: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{endpoint}: the {what} histogram has bounds {found:?}, but other endpoints use {expected:?}; servers of different versions cannot be added up"
    )]
    Bounds {
        endpoint: String,
        what: String,
        expected: Vec<f64>,
        found: Vec<f64>,
    },
    #[error(
        "{endpoint}: the {what} histogram has {counts} counts for {bounds} bounds (expected {})",
        .bounds + 1
    )]
    Shape {
        endpoint: String,
        what: String,
        counts: usize,
        bounds: usize,
    },
    #[error("cannot list the pods of namespace {namespace}")]
    Pods {
        namespace: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("cannot build an HTTP client")]
    Client(#[source] reqwest::Error),
}

/// One endpoint's report, or why it has none.
#[derive(Debug)]
pub struct EndpointTraffic {
    /// `http://…/` or `pod NAME`.
    pub endpoint: String,
    pub report: Result<TrafficReport, TrafficError>,
}

/// Reads `GET /traffic` from servers.
#[derive(Debug, Clone)]
pub struct TrafficClient {
    client: Client,
}

impl TrafficClient {
    pub fn new() -> Result<Self, TrafficError> {
        let client = Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .build()
            .map_err(TrafficError::Client)?;
        Ok(TrafficClient { client })
    }

    /// One server's report.
    pub async fn fetch(&self, base: &Url) -> Result<TrafficReport, TrafficError> {
        let endpoint = base.to_string();
        let url = traffic_url(base).map_err(|e| TrafficError::Url {
            endpoint: endpoint.clone(),
            reason: e,
        })?;
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| TrafficError::Unreachable {
                endpoint: endpoint.clone(),
                reason: innermost(&e),
            })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| TrafficError::Unreachable {
            endpoint: endpoint.clone(),
            reason: innermost(&e),
        })?;
        decode(&endpoint, status.as_u16(), &body)
    }

    /// Every endpoint's report, asked at once, in the order given.
    pub async fn fetch_all(&self, endpoints: &[Url]) -> Vec<EndpointTraffic> {
        let mut set = JoinSet::new();
        for (i, url) in endpoints.iter().enumerate() {
            let this = self.clone();
            let url = url.clone();
            set.spawn(async move { (i, this.fetch(&url).await) });
        }
        let mut out: Vec<Option<EndpointTraffic>> = endpoints.iter().map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            if let Ok((i, report)) = joined {
                out[i] = Some(EndpointTraffic {
                    endpoint: endpoints[i].to_string(),
                    report,
                });
            }
        }
        out.into_iter()
            .zip(endpoints)
            .map(|(r, url)| {
                r.unwrap_or_else(|| EndpointTraffic {
                    endpoint: url.to_string(),
                    report: Err(TrafficError::Unreachable {
                        endpoint: url.to_string(),
                        reason: "the request task stopped".into(),
                    }),
                })
            })
            .collect()
    }
}

/// Every running pod of the app in the cluster's namespace, whatever release it runs
/// (a canary's pods run another one), asked through the API server's proxy.
pub async fn fetch_pods(cluster: &Cluster) -> Result<Vec<EndpointTraffic>, TrafficError> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    let api: Api<Pod> = Api::namespaced(cluster.client().clone(), cluster.namespace());
    let selector = format!("app.kubernetes.io/name={APP}");
    let pods = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| TrafficError::Pods {
            namespace: cluster.namespace().to_string(),
            source: Box::new(e),
        })?;
    let mut names: Vec<String> = pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for pod in names {
        let endpoint = format!("pod {pod}");
        let report = match cluster
            .pod_request(&pod, http::Method::GET, "traffic", None)
            .await
        {
            Ok((status, body)) => decode(&endpoint, status.as_u16(), &body),
            Err(e) => Err(TrafficError::Unreachable {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            }),
        };
        out.push(EndpointTraffic { endpoint, report });
    }
    Ok(out)
}

fn decode(endpoint: &str, status: u16, body: &[u8]) -> Result<TrafficReport, TrafficError> {
    if status != 200 {
        let text = String::from_utf8_lossy(body);
        let text: String = text.trim().chars().take(300).collect();
        return Err(TrafficError::Status {
            endpoint: endpoint.to_string(),
            status,
            body: text,
        });
    }
    serde_json::from_slice(body).map_err(|source| TrafficError::Decode {
        endpoint: endpoint.to_string(),
        source,
    })
}

fn traffic_url(base: &Url) -> Result<Url, String> {
    // Keep a path prefix in the base URL: `http://h/api` → `/api/traffic`.
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let p = format!("{}/", base.path());
        base.set_path(&p);
    }
    base.join("traffic").map_err(|e| e.to_string())
}

fn innermost(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    msg
}

/// One release's traffic over every endpoint that holds it in one role.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergedRelease {
    pub release: Option<String>,
    pub version: String,
    pub digest: String,
    pub role: Role,
    /// Endpoints that reported this release in this role.
    pub endpoints: Vec<String>,
    pub requests: u64,
    pub instances: u64,
    pub errors: u64,
    pub rejected: u64,
    pub positives: u64,
    /// Requests that carried no request key and were assigned by a random draw (a
    /// canary's primary and candidate both count theirs).
    pub unkeyed: u64,
    pub latency_us: Histogram,
    pub scores: Histogram,
}

impl MergedRelease {
    fn from_one(endpoint: &str, r: &ReleaseTraffic) -> Result<Self, TrafficError> {
        check_shape(endpoint, "latency", &r.latency_us)?;
        check_shape(endpoint, "score", &r.scores)?;
        Ok(MergedRelease {
            release: r.release.clone(),
            version: r.version.clone(),
            digest: r.digest.clone(),
            role: r.role,
            endpoints: vec![endpoint.to_string()],
            requests: r.requests,
            instances: r.instances,
            errors: r.errors,
            rejected: r.rejected,
            positives: r.positives,
            unkeyed: r.unkeyed,
            latency_us: r.latency_us.clone(),
            scores: r.scores.clone(),
        })
    }

    fn add(&mut self, endpoint: &str, r: &ReleaseTraffic) -> Result<(), TrafficError> {
        add_histogram(&mut self.latency_us, &r.latency_us, endpoint, "latency")?;
        add_histogram(&mut self.scores, &r.scores, endpoint, "score")?;
        self.endpoints.push(endpoint.to_string());
        self.requests += r.requests;
        self.instances += r.instances;
        self.errors += r.errors;
        self.rejected += r.rejected;
        self.positives += r.positives;
        self.unkeyed += r.unkeyed;
        Ok(())
    }

    /// Failed requests per request answered (bad input is not a failure).
    pub fn error_rate(&self) -> Option<f64> {
        ratio(self.errors, self.requests)
    }

    /// Instances predicted positive per instance scored.
    pub fn positive_rate(&self) -> Option<f64> {
        ratio(self.positives, self.instances)
    }

    /// Latency quantile `q` in microseconds; see [`quantile`].
    pub fn latency_quantile_us(&self, q: f64) -> Option<f64> {
        // Above the last bound (10 s) nothing is known; report the bound.
        let top = self.latency_us.bounds.last().copied().unwrap_or(0.0);
        quantile(&self.latency_us, q, top)
    }
}

/// A shadow's comparison over every endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergedShadow {
    pub primary: String,
    pub shadow: String,
    pub compared: u64,
    pub confusion: [[u64; 2]; 2],
    pub abs_delta: Histogram,
    pub skipped: u64,
}

impl MergedShadow {
    /// Instances on which both releases chose the same class, per instance compared.
    pub fn agreement(&self) -> Option<f64> {
        ratio(self.confusion[0][0] + self.confusion[1][1], self.compared)
    }

    /// Mean |Δ probability|, exact (servers send the sum).
    pub fn mean_abs_delta(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.abs_delta.sum / self.compared as f64)
    }

    /// Quantile `q` of |Δ probability|; see [`quantile`].
    pub fn abs_delta_quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.abs_delta, q, 1.0)
    }
}

/// An environment's traffic, added up over the endpoints that answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Merged {
    /// The primary first, then others, each once per role.
    pub releases: Vec<MergedRelease>,
    /// One entry per (primary, shadow) pair seen.
    pub shadows: Vec<MergedShadow>,
    /// Endpoints whose reports were added.
    pub endpoints: Vec<String>,
}

impl Merged {
    /// The release playing `role` under `version`, if any endpoint reported it.
    pub fn release(&self, version: &str, role: Role) -> Option<&MergedRelease> {
        self.releases
            .iter()
            .find(|r| r.version == version && r.role == role)
    }

    /// The comparison of `shadow` against whichever primary it shadowed.
    pub fn shadow(&self, shadow: &str) -> Option<&MergedShadow> {
        self.shadows.iter().find(|s| s.shadow == shadow)
    }
}

/// Adds up reports grouped by (version, role). Histograms must have the same bounds
/// everywhere: a server of another version with other buckets is an error naming it,
/// not a silently wrong sum.
pub fn merge<'a>(
    reports: impl IntoIterator<Item = (&'a str, &'a TrafficReport)>,
) -> Result<Merged, TrafficError> {
    let mut merged = Merged {
        releases: Vec::new(),
        shadows: Vec::new(),
        endpoints: Vec::new(),
    };
    for (endpoint, report) in reports {
        merged.endpoints.push(endpoint.to_string());
        for r in &report.releases {
            match merged
                .releases
                .iter_mut()
                .find(|m| m.version == r.version && m.role == r.role)
            {
                Some(m) => m.add(endpoint, r)?,
                None => merged.releases.push(MergedRelease::from_one(endpoint, r)?),
            }
        }
        if let Some(s) = &report.shadow {
            merge_shadow(&mut merged.shadows, endpoint, s)?;
        }
    }
    // Primaries first: a report reads "serving release, then the candidate".
    merged.releases.sort_by_key(|r| r.role != Role::Primary);
    Ok(merged)
}

fn merge_shadow(
    into: &mut Vec<MergedShadow>,
    endpoint: &str,
    s: &ShadowComparison,
) -> Result<(), TrafficError> {
    check_shape(endpoint, "|Δp|", &s.abs_delta)?;
    match into
        .iter_mut()
        .find(|m| m.primary == s.primary && m.shadow == s.shadow)
    {
        Some(m) => {
            add_histogram(&mut m.abs_delta, &s.abs_delta, endpoint, "|Δp|")?;
            m.compared += s.compared;
            m.skipped += s.skipped;
            for (row, other) in m.confusion.iter_mut().zip(&s.confusion) {
                for (cell, o) in row.iter_mut().zip(other) {
                    *cell += o;
                }
            }
        }
        None => into.push(MergedShadow {
            primary: s.primary.clone(),
            shadow: s.shadow.clone(),
            compared: s.compared,
            confusion: s.confusion,
            abs_delta: s.abs_delta.clone(),
            skipped: s.skipped,
        }),
    }
    Ok(())
}

fn check_shape(endpoint: &str, what: &str, h: &Histogram) -> Result<(), TrafficError> {
    if h.counts.len() != h.bounds.len() + 1 {
        return Err(TrafficError::Shape {
            endpoint: endpoint.to_string(),
            what: what.to_string(),
            counts: h.counts.len(),
            bounds: h.bounds.len(),
        });
    }
    Ok(())
}

/// `into += other`, refusing histograms with other bounds.
pub fn add_histogram(
    into: &mut Histogram,
    other: &Histogram,
    endpoint: &str,
    what: &str,
) -> Result<(), TrafficError> {
    check_shape(endpoint, what, other)?;
    if into.bounds != other.bounds {
        return Err(TrafficError::Bounds {
            endpoint: endpoint.to_string(),
            what: what.to_string(),
            expected: into.bounds.clone(),
            found: other.bounds.clone(),
        });
    }
    for (c, o) in into.counts.iter_mut().zip(&other.counts) {
        *c += o;
    }
    into.sum += other.sum;
    Ok(())
}

/// The `q`-quantile (0 ≤ q ≤ 1) of a histogram, estimated: the bucket holding rank
/// `q · total` is found and the value interpolated linearly between its lower and
/// upper bound, as if its observations were spread evenly (Prometheus's
/// `histogram_quantile` does the same). The first bucket starts at 0; the overflow
/// bucket above the last bound ends at `ceiling`. `None` for an empty histogram.
pub fn quantile(h: &Histogram, q: f64, ceiling: f64) -> Option<f64> {
    let total: u64 = h.counts.iter().sum();
    if total == 0 || h.counts.len() != h.bounds.len() + 1 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &count) in h.counts.iter().enumerate() {
        if count == 0 {
            continue;
        }
        let lower = if i == 0 { 0.0 } else { h.bounds[i - 1] };
        let upper = h.bounds.get(i).copied().unwrap_or(ceiling.max(lower));
        if (below + count) as f64 >= rank {
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some(lower + (upper - lower) * within);
        }
        below += count;
    }
    // Rounding left the rank past the last count: the top of the last bucket used.
    let last = h.counts.iter().rposition(|&c| c > 0)?;
    Some(h.bounds.get(last).copied().unwrap_or(ceiling))
}

/// Population stability index of `actual` against `expected` over the same buckets:
/// Σ (aᵢ − eᵢ) · ln(aᵢ / eᵢ) over the buckets' proportions, with an empty bucket's
/// proportion taken as [`PSI_EPSILON`]. Under 0.1 is usually read as stable, 0.1–0.25
/// as worth watching, above 0.25 as shifted. `None` when either side is empty or the
/// buckets differ.
pub fn psi(expected: &Histogram, actual: &Histogram) -> Option<f64> {
    if expected.bounds != actual.bounds || expected.counts.len() != actual.counts.len() {
        return None;
    }
    let te: u64 = expected.counts.iter().sum();
    let ta: u64 = actual.counts.iter().sum();
    if te == 0 || ta == 0 {
        return None;
    }
    let share = |c: u64, t: u64| (c as f64 / t as f64).max(PSI_EPSILON);
    Some(
        expected
            .counts
            .iter()
            .zip(&actual.counts)
            .map(|(&e, &a)| {
                let (e, a) = (share(e, te), share(a, ta));
                (a - e) * (a / e).ln()
            })
            .sum(),
    )
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use predict_buy_api::traffic::{DELTA_BOUNDS, LATENCY_BOUNDS_US, SCORE_BUCKETS};

    fn hist(bounds: &[f64], counts: &[u64], sum: f64) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: counts.to_vec(),
            sum,
        }
    }

    fn score_bounds() -> Vec<f64> {
        (1..SCORE_BUCKETS)
            .map(|i| i as f64 / SCORE_BUCKETS as f64)
            .collect()
    }

    fn release(version: &str, role: Role, requests: u64, latency: &[u64]) -> ReleaseTraffic {
        let mut counts = vec![0; LATENCY_BOUNDS_US.len() + 1];
        counts[..latency.len()].copy_from_slice(latency);
        let mut scores = vec![0; SCORE_BUCKETS];
        scores[2] = requests;
        ReleaseTraffic {
            release: Some(version.into()),
            version: version.into(),
            digest: format!("sha256:{version}"),
            role,
            since: "2026-01-01T00:00:00Z".into(),
            requests,
            instances: requests * 2,
            errors: 1,
            rejected: 2,
            positives: requests / 2,
            unkeyed: 0,
            latency_us: hist(&LATENCY_BOUNDS_US, &counts, 100.0),
            scores: hist(&score_bounds(), &scores, 0.1 * requests as f64),
        }
    }

    fn shadow(compared: u64, confusion: [[u64; 2]; 2], deltas: &[u64]) -> ShadowComparison {
        let mut counts = vec![0; DELTA_BOUNDS.len() + 1];
        counts[..deltas.len()].copy_from_slice(deltas);
        ShadowComparison {
            primary: "v1.0.0".into(),
            shadow: "v1.1.0".into(),
            compared,
            confusion,
            abs_delta: hist(&DELTA_BOUNDS, &counts, 0.01 * compared as f64),
            skipped: 3,
        }
    }

    #[test]
    fn reports_add_up_per_release_and_role() {
        let a = TrafficReport {
            releases: vec![
                release("v1.0.0", Role::Primary, 10, &[4, 6]),
                release("v1.1.0", Role::Shadow, 10, &[0, 10]),
            ],
            shadow: Some(shadow(20, [[10, 2], [1, 7]], &[18, 2])),
            candidate_error: None,
        };
        let b = TrafficReport {
            releases: vec![
                release("v1.0.0", Role::Primary, 30, &[30]),
                release("v1.1.0", Role::Shadow, 30, &[0, 0, 30]),
            ],
            shadow: Some(shadow(60, [[40, 0], [0, 20]], &[60])),
            candidate_error: None,
        };
        let m = merge([("http://a/", &a), ("http://b/", &b)]).unwrap();
        assert_eq!(m.endpoints, ["http://a/", "http://b/"]);
        let p = m.release("v1.0.0", Role::Primary).unwrap();
        assert_eq!(
            (p.requests, p.instances, p.errors, p.rejected, p.positives),
            (40, 80, 2, 4, 20)
        );
        assert_eq!(p.latency_us.counts[..3], [34, 6, 0]);
        assert_eq!(p.latency_us.sum, 200.0);
        assert_eq!(p.endpoints, ["http://a/", "http://b/"]);
        assert_eq!(p.error_rate(), Some(2.0 / 40.0));
        assert_eq!(p.positive_rate(), Some(20.0 / 80.0));
        let s = m.shadow("v1.1.0").unwrap();
        assert_eq!(s.compared, 80);
        assert_eq!(s.confusion, [[50, 2], [1, 27]]);
        assert_eq!(s.skipped, 6);
        assert_eq!(s.agreement(), Some(77.0 / 80.0));
        assert!((s.mean_abs_delta().unwrap() - 0.01).abs() < 1e-12);
        assert_eq!(m.releases[0].role, Role::Primary);
    }

    #[test]
    fn other_bounds_are_refused_naming_the_endpoint() {
        let a = TrafficReport {
            releases: vec![release("v1.0.0", Role::Primary, 1, &[1])],
            shadow: None,
            candidate_error: None,
        };
        let mut b = a.clone();
        b.releases[0].latency_us.bounds[0] = 75.0;
        let e = merge([("http://a/", &a), ("http://b/", &b)]).unwrap_err();
        assert!(matches!(&e, TrafficError::Bounds { endpoint, .. } if endpoint == "http://b/"));
        assert!(
            e.to_string()
                .starts_with("http://b/: the latency histogram"),
            "{e}"
        );
        let mut c = a.clone();
        c.releases[0].scores.counts.pop();
        let e = merge([("pod p-1", &c)]).unwrap_err();
        assert!(
            e.to_string().contains("pod p-1") && e.to_string().contains("score"),
            "{e}"
        );
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        // 100 observations: 50 in (0, 10], 40 in (10, 20], 10 above 20.
        let h = hist(&[10.0, 20.0], &[50, 40, 10], 0.0);
        assert_eq!(quantile(&h, 0.5, 100.0), Some(10.0));
        // Rank 70 is 20 of the 40 in (10, 20]: halfway.
        assert_eq!(quantile(&h, 0.7, 100.0), Some(15.0));
        // Rank 95 is half of the overflow bucket (20, 100].
        assert_eq!(quantile(&h, 0.95, 100.0), Some(60.0));
        assert_eq!(quantile(&h, 0.25, 100.0), Some(5.0));
        assert_eq!(quantile(&h, 1.0, 100.0), Some(100.0));
        assert_eq!(quantile(&hist(&[1.0], &[0, 0], 0.0), 0.5, 2.0), None);
        // Empty leading buckets are skipped, not interpolated into.
        let late = hist(&[10.0, 20.0], &[0, 4, 0], 0.0);
        assert_eq!(quantile(&late, 0.5, 100.0), Some(15.0));
        assert_eq!(quantile(&late, 0.0, 100.0), Some(10.0));
    }

    #[test]
    fn psi_is_zero_for_equal_shares_and_grows_with_a_shift() {
        let b = score_bounds();
        let mut same = vec![5u64; SCORE_BUCKETS];
        let e = hist(&b, &same, 0.0);
        same.iter_mut().for_each(|c| *c *= 3);
        assert_eq!(psi(&e, &hist(&b, &same, 0.0)), Some(0.0));
        // Everything moves into the first bucket: a large index, finite thanks to the
        // epsilon.
        let mut shifted = vec![0u64; SCORE_BUCKETS];
        shifted[0] = 100;
        let v = psi(&e, &hist(&b, &shifted, 0.0)).unwrap();
        assert!(v.is_finite() && v > 0.25, "{v}");
        // A small move gives a small index: 10% of the mass moves from one bucket to
        // the next; the index is the formula worked by hand.
        let base = hist(&[0.5], &[50, 50], 0.0);
        let moved = hist(&[0.5], &[45, 55], 0.0);
        let expected = (0.45 - 0.5) * (0.45f64 / 0.5).ln() + (0.55 - 0.5) * (0.55f64 / 0.5).ln();
        assert!((psi(&base, &moved).unwrap() - expected).abs() < 1e-12);
        assert_eq!(psi(&base, &hist(&[0.5], &[0, 0], 0.0)), None);
        assert_eq!(psi(&base, &hist(&[0.4], &[1, 1], 0.0)), None);
    }

    #[test]
    fn decoding_names_the_endpoint() {
        let e = decode("pod p", 503, b"  not ready ").unwrap_err();
        assert_eq!(e.to_string(), "pod p: GET /traffic answered 503: not ready");
        let e = decode("http://x/", 200, b"{}").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("http://x/: GET /traffic's answer"),
            "{e}"
        );
        assert_eq!(
            traffic_url(&Url::parse("http://h:1/api").unwrap())
                .unwrap()
                .as_str(),
            "http://h:1/api/traffic"
        );
    }

    #[tokio::test]
    async fn a_dead_endpoint_is_reported_not_fatal() {
        let client = TrafficClient::new().unwrap();
        // Port 9: privileged, so nothing listens there in a test.
        let dead = Url::parse("http://127.0.0.1:9/").unwrap();
        let got = client.fetch_all(std::slice::from_ref(&dead)).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].endpoint, "http://127.0.0.1:9/");
        assert!(
            matches!(&got[0].report, Err(TrafficError::Unreachable { endpoint, .. }) if endpoint == "http://127.0.0.1:9/")
        );
    }
}
