//! Per-release traffic counters and `GET /traffic`.
//!
//! The counters belong to a [`Routing`]: the primary and, while one is set, the
//! environment's candidate. A new routing (and so fresh counters) is built whenever
//! either changes, so a report never mixes two pairs of releases. Everything is an
//! atomic count or a fixed-bucket histogram, which clients add up across servers
//! before they compute quantiles or rates (see `predict_buy_api::traffic`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use predict_buy_api::traffic::{
    CandidateError, DELTA_BOUNDS, Histogram, LATENCY_BOUNDS_US, ReleaseTraffic, Role,
    SCORE_BUCKETS, ShadowComparison, TrafficReport,
};
use predict_buy_registry::CandidateMode;

use crate::candidate::ShadowLink;
use crate::state::{AppState, LoadedModel};

/// Upper bounds of the score histogram: 0.05, 0.10, …, 0.95 (the last bucket is
/// (0.95, 1]). Computed as `i / SCORE_BUCKETS` so that clients computing them the same
/// way compare equal.
static SCORE_BOUNDS: LazyLock<Vec<f64>> = LazyLock::new(|| {
    (1..SCORE_BUCKETS)
        .map(|i| i as f64 / SCORE_BUCKETS as f64)
        .collect()
});

/// Probabilities and |Δp| are summed as integers of this many units per 1.0: an
/// atomic float add would need a compare-and-swap loop on the hot path.
const FRACTION_SCALE: f64 = 1e9;

/// A histogram of atomics with fixed bounds.
pub(crate) struct AtomicHistogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    /// Sum of observations times `scale`, rounded.
    sum: AtomicU64,
    scale: f64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64], scale: f64) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    pub(crate) fn observe(&self, value: f64) {
        // The first bound at or above the value: buckets are (lower, upper].
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i].fetch_add(1, Relaxed);
        let scaled = (value.max(0.0) * self.scale).round();
        self.sum.fetch_add(scaled as u64, Relaxed);
    }

    fn snapshot(&self) -> Histogram {
        Histogram {
            bounds: self.bounds.to_vec(),
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum: self.sum.load(Relaxed) as f64 / self.scale,
        }
    }
}

/// One release's counts in one role.
pub(crate) struct ReleaseCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) instances: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) positives: AtomicU64,
    pub(crate) unkeyed: AtomicU64,
    pub(crate) latency_us: AtomicHistogram,
    pub(crate) scores: AtomicHistogram,
}

impl ReleaseCounters {
    pub(crate) fn new() -> Self {
        Self {
            requests: AtomicU64::new(0),
            instances: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            positives: AtomicU64::new(0),
            unkeyed: AtomicU64::new(0),
            latency_us: AtomicHistogram::new(&LATENCY_BOUNDS_US, 1.0),
            scores: AtomicHistogram::new(&SCORE_BOUNDS, FRACTION_SCALE),
        }
    }

    /// A request answered with these (class, probability) pairs.
    pub(crate) fn answered(
        &self,
        predictions: impl IntoIterator<Item = (u8, f64)>,
        took: Duration,
        unkeyed: bool,
    ) {
        self.requests.fetch_add(1, Relaxed);
        self.unkeyed.fetch_add(u64::from(unkeyed), Relaxed);
        let mut n = 0;
        let mut positive = 0;
        for (class, probability) in predictions {
            n += 1;
            positive += u64::from(class == 1);
            self.scores.observe(probability);
        }
        self.instances.fetch_add(n, Relaxed);
        self.positives.fetch_add(positive, Relaxed);
        self.latency_us.observe(micros(took));
    }

    /// A request refused (4xx: bad input) or failed (5xx).
    pub(crate) fn refused(&self, status: StatusCode, took: Duration, unkeyed: bool) {
        self.requests.fetch_add(1, Relaxed);
        self.unkeyed.fetch_add(u64::from(unkeyed), Relaxed);
        if status.is_server_error() {
            self.errors.fetch_add(1, Relaxed);
        } else {
            self.rejected.fetch_add(1, Relaxed);
        }
        self.latency_us.observe(micros(took));
    }

    fn snapshot(&self, m: &LoadedModel, role: Role, since: &str) -> ReleaseTraffic {
        ReleaseTraffic {
            release: m.release.as_ref().map(|t| t.to_string()),
            version: m.version.clone(),
            digest: m.digest.clone(),
            role,
            since: since.to_string(),
            requests: self.requests.load(Relaxed),
            instances: self.instances.load(Relaxed),
            errors: self.errors.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            positives: self.positives.load(Relaxed),
            unkeyed: self.unkeyed.load(Relaxed),
            latency_us: self.latency_us.snapshot(),
            scores: self.scores.snapshot(),
        }
    }
}

pub(crate) fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// How a shadow's answers compared with the primary's.
pub(crate) struct ShadowCounters {
    pub(crate) compared: AtomicU64,
    /// Row-major `[primary class][shadow class]`.
    pub(crate) confusion: [AtomicU64; 4],
    pub(crate) abs_delta: AtomicHistogram,
    pub(crate) skipped: AtomicU64,
}

impl ShadowCounters {
    pub(crate) fn new() -> Self {
        Self {
            compared: AtomicU64::new(0),
            confusion: Default::default(),
            abs_delta: AtomicHistogram::new(&DELTA_BOUNDS, FRACTION_SCALE),
            skipped: AtomicU64::new(0),
        }
    }

    pub(crate) fn compare(&self, primary: (u8, f64), shadow: (u8, f64)) {
        self.compared.fetch_add(1, Relaxed);
        let cell = usize::from(primary.0.min(1)) * 2 + usize::from(shadow.0.min(1));
        self.confusion[cell].fetch_add(1, Relaxed);
        self.abs_delta.observe((primary.1 - shadow.1).abs());
    }

    fn snapshot(&self, primary: &str, shadow: &str) -> ShadowComparison {
        let c = |i: usize| self.confusion[i].load(Relaxed);
        ShadowComparison {
            primary: primary.to_string(),
            shadow: shadow.to_string(),
            compared: self.compared.load(Relaxed),
            confusion: [[c(0), c(1)], [c(2), c(3)]],
            abs_delta: self.abs_delta.snapshot(),
            skipped: self.skipped.load(Relaxed),
        }
    }
}

/// Who answers what, with the counters of this pair of releases.
pub(crate) struct Routing {
    pub(crate) primary: Arc<LoadedModel>,
    pub(crate) primary_counts: ReleaseCounters,
    pub(crate) since: String,
    pub(crate) candidate: Option<CandidateRoute>,
}

/// The candidate as requests meet it.
pub(crate) struct CandidateRoute {
    pub(crate) loaded: Arc<LoadedModel>,
    pub(crate) mode: CandidateMode,
    pub(crate) counts: Arc<ReleaseCounters>,
    /// In shadow mode: the queue to the scoring worker and the comparison.
    pub(crate) shadow: Option<ShadowLink>,
}

impl CandidateRoute {
    fn role(&self) -> Role {
        match self.mode {
            CandidateMode::Shadow => Role::Shadow,
            CandidateMode::Canary { .. } => Role::Canary,
        }
    }
}

impl Routing {
    pub(crate) fn report(&self, candidate_error: Option<CandidateError>) -> TrafficReport {
        let mut releases =
            vec![
                self.primary_counts
                    .snapshot(&self.primary, Role::Primary, &self.since),
            ];
        let mut shadow = None;
        if let Some(c) = &self.candidate {
            releases.push(c.counts.snapshot(&c.loaded, c.role(), &self.since));
            if let Some(link) = &c.shadow {
                shadow = Some(
                    link.counters
                        .snapshot(&self.primary.version, &c.loaded.version),
                );
            }
        }
        TrafficReport {
            releases,
            shadow,
            candidate_error,
        }
    }
}

/// `GET /traffic`: counts and histograms for the releases this server holds.
pub(crate) async fn traffic(State(state): State<AppState>) -> Response {
    let error = state.candidate_error().map(|e| (*e).clone());
    let report = match state.routing().as_deref() {
        Some(r) => r.report(error),
        None => TrafficReport {
            releases: Vec::new(),
            shadow: None,
            candidate_error: error,
        },
    };
    crate::routes::json(StatusCode::OK, &report)
}

/// The per-release and shadow series for `/metrics`, written from the routing rather
/// than kept in the process's recorder, which cannot forget a series: every pair of
/// releases a server ever held would stay in the exposition.
pub(crate) fn prometheus(routing: Option<&Routing>, error: Option<&CandidateError>) -> String {
    let mut out = String::new();
    if let Some(r) = routing {
        let report = r.report(None);
        release_series(&mut out, &report.releases);
        if let Some(s) = &report.shadow {
            shadow_series(&mut out, s, r);
        }
    }
    if let Some(e) = error {
        let _ = write!(
            out,
            "# HELP predict_buy_candidate_load_failed 1 while the environment's candidate cannot be loaded by this server\n\
             # TYPE predict_buy_candidate_load_failed gauge\n\
             predict_buy_candidate_load_failed{{release=\"{}\",mode=\"{}\"}} 1\n",
            label(&e.release),
            label(&e.mode)
        );
    }
    out
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Shadow => "shadow",
        Role::Canary => "canary",
    }
}

/// One counter of a release's traffic.
type Count = fn(&ReleaseTraffic) -> u64;

fn release_series(out: &mut String, releases: &[ReleaseTraffic]) {
    let counters: [(&str, &str, Count); 5] = [
        (
            "predict_buy_release_requests_total",
            "Requests answered (or, for a shadow, scored) by each release, by role",
            |r| r.requests,
        ),
        (
            "predict_buy_release_instances_total",
            "Instances scored by each release, by role",
            |r| r.instances,
        ),
        (
            "predict_buy_release_errors_total",
            "Requests that failed on the server's side (or shadow scorings that failed or timed out)",
            |r| r.errors,
        ),
        (
            "predict_buy_release_rejected_total",
            "Requests refused as bad input, by release and role",
            |r| r.rejected,
        ),
        (
            "predict_buy_release_positives_total",
            "Instances predicted positive, by release and role",
            |r| r.positives,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for r in releases {
            let _ = writeln!(
                out,
                "{name}{{release=\"{}\",role=\"{}\"}} {}",
                label(&r.version),
                role_name(r.role),
                get(r)
            );
        }
    }
    let name = "predict_buy_release_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time to answer (for a shadow: its own scoring), by release and role\n# TYPE {name} histogram"
    );
    for r in releases {
        let labels = format!(
            "release=\"{}\",role=\"{}\"",
            label(&r.version),
            role_name(r.role)
        );
        histogram_series(out, name, &labels, &r.latency_us, 1e-6);
    }
}

fn shadow_series(out: &mut String, s: &ShadowComparison, r: &Routing) {
    let labels = format!(
        "primary=\"{}\",shadow=\"{}\"",
        label(&s.primary),
        label(&s.shadow)
    );
    let failures = r
        .candidate
        .as_ref()
        .map_or(0, |c| c.counts.errors.load(Relaxed));
    let agreed = s.confusion[0][0] + s.confusion[1][1];
    let series: [(&str, &str, u64); 4] = [
        (
            "predict_buy_shadow_compared_total",
            "Instances scored by both the primary and the shadow",
            s.compared,
        ),
        (
            "predict_buy_shadow_agreed_total",
            "Compared instances on which both releases chose the same class",
            agreed,
        ),
        (
            "predict_buy_shadow_failures_total",
            "Shadow scorings that failed, panicked or overran their time budget",
            failures,
        ),
        (
            "predict_buy_shadow_skipped_total",
            "Instances the shadow did not score because its queue was full",
            s.skipped,
        ),
    ];
    for (name, help, value) in series {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{labels}}} {value}"
        );
    }
    let name = "predict_buy_shadow_abs_delta";
    let _ = writeln!(
        out,
        "# HELP {name} |primary probability - shadow probability| per compared instance\n# TYPE {name} histogram"
    );
    histogram_series(out, name, &labels, &s.abs_delta, 1.0);
}

fn histogram_series(out: &mut String, name: &str, labels: &str, h: &Histogram, unit: f64) {
    let mut cumulative = 0;
    for (bound, count) in h.bounds.iter().zip(&h.counts) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}",
            bound * unit
        );
    }
    let total: u64 = h.counts.iter().sum();
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum * unit);
    let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
}

fn label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_bound_inclusive() {
        let h = AtomicHistogram::new(&DELTA_BOUNDS, FRACTION_SCALE);
        for v in [0.0, 0.001, 0.0011, 0.5, 0.7] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.counts, [2, 1, 0, 0, 0, 0, 0, 1, 1]);
        assert!((s.sum - 1.2021).abs() < 1e-9, "{}", s.sum);
        let scores = AtomicHistogram::new(&SCORE_BOUNDS, FRACTION_SCALE);
        for p in [0.0, 0.05, 0.0500001, 0.95, 1.0] {
            scores.observe(p);
        }
        let c = scores.snapshot().counts;
        assert_eq!(
            (c[0], c[1], c[18], c[19], c.len()),
            (2, 1, 1, 1, SCORE_BUCKETS)
        );
    }

    #[test]
    fn counters_split_answers_from_refusals_and_failures() {
        let c = ReleaseCounters::new();
        c.answered([(1, 0.9), (0, 0.2)], Duration::from_micros(70), true);
        c.refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            Duration::from_micros(10),
            false,
        );
        c.refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            Duration::from_micros(10),
            false,
        );
        assert_eq!(c.requests.load(Relaxed), 3);
        assert_eq!(c.instances.load(Relaxed), 2);
        assert_eq!(c.positives.load(Relaxed), 1);
        assert_eq!(c.rejected.load(Relaxed), 1);
        assert_eq!(c.errors.load(Relaxed), 1);
        assert_eq!(c.unkeyed.load(Relaxed), 1);
        let lat = c.latency_us.snapshot();
        // 70 µs falls in (50, 100]; the two 10 µs in (0, 50].
        assert_eq!(&lat.counts[..3], &[2, 1, 0]);
        let shadow = ShadowCounters::new();
        shadow.compare((1, 0.9), (1, 0.9));
        shadow.compare((1, 0.6), (0, 0.4));
        let s = shadow.snapshot("v1", "v2");
        assert_eq!(s.confusion, [[0, 0], [1, 1]]);
        assert_eq!(s.compared, 2);
        assert!((s.abs_delta.sum - 0.2).abs() < 1e-9);
    }
}
