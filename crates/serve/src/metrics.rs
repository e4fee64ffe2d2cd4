//! The four golden signals in Prometheus text: traffic and errors
//! (`http_requests_total{route,status}`), latency (`http_request_duration_seconds`),
//! saturation (`http_requests_in_flight`, `http_concurrency_limit`,
//! `http_requests_shed_total`), plus `predictions_total{class}`, `model_reloads_total`
//! and `model_info{version,release,digest}`.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::StatusCode;
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::state::{Limits, LoadedModel};

const LATENCY: &str = "http_request_duration_seconds";
const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// The process-wide Prometheus recorder. The `metrics` facade has one global recorder,
/// so every app in a process shares it (tests start several).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LATENCY.into()), &BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by route and status"
    );
    describe_histogram!(LATENCY, metrics::Unit::Seconds, "Time to answer, by route");
    describe_gauge!("http_requests_in_flight", "Requests being answered now");
    describe_gauge!(
        "http_concurrency_limit",
        "Most prediction requests in flight before shedding"
    );
    describe_counter!(
        "http_requests_shed_total",
        "Prediction requests refused with 503 because the server was at capacity"
    );
    describe_counter!("predictions_total", "Predictions made, by predicted class");
    describe_counter!("model_reloads_total", "Model reloads, by outcome");
}

/// Handles to the series that have no per-request labels.
#[derive(Clone)]
pub(crate) struct Metrics {
    handle: PrometheusHandle,
    shed: Counter,
    class: [Counter; 2],
}

/// The series every request touches, looked up once per process rather than per
/// request (the recorder is process-wide, so these are too).
struct Hot {
    in_flight: Gauge,
    /// Per route of [`ROUTES`]: its latency histogram and its 200 counter.
    routes: [RouteEntry; ROUTES.len()],
}

struct RouteEntry {
    route: &'static str,
    latency: Histogram,
    ok: Counter,
}

fn hot() -> &'static Hot {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HOT.get_or_init(|| {
        handle();
        Hot {
            in_flight: metrics::gauge!("http_requests_in_flight"),
            routes: ROUTES.map(|route| RouteEntry {
                route,
                latency: metrics::histogram!(LATENCY, "route" => route),
                ok: metrics::counter!("http_requests_total", "route" => route, "status" => "200"),
            }),
        }
    })
}

impl Metrics {
    pub(crate) fn new(limits: &Limits) -> Self {
        let handle = handle().clone();
        metrics::gauge!("http_concurrency_limit").set(limits.concurrency as f64);
        Self {
            handle,
            shed: metrics::counter!("http_requests_shed_total"),
            class: [
                metrics::counter!("predictions_total", "class" => "0"),
                metrics::counter!("predictions_total", "class" => "1"),
            ],
        }
    }

    /// The exposition, with `model_info` for the model serving now only. It is written
    /// here rather than kept in the recorder, which cannot forget a series: a server
    /// that swapped models a hundred times would report a hundred `model_info` series.
    pub(crate) fn render(&self, current: Option<&LoadedModel>) -> String {
        let mut text = self.handle.render();
        if let Some(m) = current {
            let release = m
                .release
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_default();
            text.push_str(&format!(
                "# HELP model_info 1 for the model serving now, labelled with its version, release and digest\n\
                 # TYPE model_info gauge\n\
                 model_info{{version=\"{}\",release=\"{}\",digest=\"{}\"}} 1\n",
                label(&m.version),
                label(&release),
                label(&m.digest),
            ));
        }
        text
    }

    /// Drains histogram samples; without it they pile up between scrapes.
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    pub(crate) fn predicted(&self, class: u8) {
        self.class[usize::from(class.min(1))].increment(1);
    }

    pub(crate) fn shed(&self) {
        self.shed.increment(1);
    }

    pub(crate) fn reload(&self, outcome: &'static str) {
        metrics::counter!("model_reloads_total", "outcome" => outcome).increment(1);
    }

    /// Counts a request in flight until the guard drops.
    pub(crate) fn enter(&self) -> InFlight {
        let gauge = &hot().in_flight;
        gauge.increment(1.0);
        InFlight(gauge)
    }

    /// The series of the route a request matched.
    pub(crate) fn route(&self, path: Option<&MatchedPath>) -> RouteMetrics {
        RouteMetrics(&hot().routes[route_index(path)])
    }
}

/// Leaves `http_requests_in_flight` on drop, so a request whose client went away is
/// not counted forever.
pub(crate) struct InFlight(&'static Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[derive(Clone, Copy)]
pub(crate) struct RouteMetrics(&'static RouteEntry);

impl RouteMetrics {
    /// Counts one answer by status and times it.
    pub(crate) fn record(self, status: StatusCode, latency: Duration) {
        let entry = self.0;
        if status == StatusCode::OK {
            entry.ok.increment(1);
        } else {
            metrics::counter!("http_requests_total", "route" => entry.route, "status" => status_label(status))
                .increment(1);
        }
        entry.latency.record(latency.as_secs_f64());
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
pub(crate) fn label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

/// Route templates are a fixed set; anything else is one label, so clients cannot
/// blow up the number of series.
const ROUTES: [&str; 14] = [
    "/",
    "/predict",
    "/predict/batch",
    "/explain",
    "/explain/batch",
    "/healthz",
    "/readyz",
    "/model",
    "/metrics",
    "/traffic",
    "/drift",
    "/openapi.json",
    "/admin/reload",
    "unmatched",
];

fn route_index(path: Option<&MatchedPath>) -> usize {
    let unmatched = ROUTES.len() - 1;
    path.and_then(|p| ROUTES[..unmatched].iter().position(|r| *r == p.as_str()))
        .unwrap_or(unmatched)
}

fn status_label(status: StatusCode) -> metrics::SharedString {
    let s: &'static str = match status.as_u16() {
        200 => "200",
        400 => "400",
        401 => "401",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        415 => "415",
        422 => "422",
        500 => "500",
        502 => "502",
        503 => "503",
        other => return other.to_string().into(),
    };
    s.into()
}
