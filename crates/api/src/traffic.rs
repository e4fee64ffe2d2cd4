//! `GET /traffic`: what one server has answered, per release it holds, and — while a
//! shadow runs — how the candidate's answers compared with the serving release's.
//!
//! Every figure is a count or a fixed-bucket histogram, never a percentile or a ratio,
//! so that a client asking several servers (`shadow report`, a canary's analysis) can
//! add them up first and compute p99s and rates over the whole environment.

use serde::{Deserialize, Serialize};

/// Upper bounds, in microseconds, of [`ReleaseTraffic::latency_us`]'s buckets: 1-2-5
/// steps from 50 µs to 10 s; a last bucket above takes the rest.
pub const LATENCY_BOUNDS_US: [f64; 17] = [
    50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7,
];

/// Number of equal-width buckets over [0, 1] of [`ReleaseTraffic::scores`].
pub const SCORE_BUCKETS: usize = 20;

/// Upper bounds of [`ShadowComparison::abs_delta`]'s buckets (|Δ probability|).
pub const DELTA_BOUNDS: [f64; 8] = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5];

/// A histogram with fixed upper bounds: `counts[i]` observations fell in
/// `(bounds[i-1], bounds[i]]`, and the last count is everything above the last bound
/// (JSON has no infinity to write as a bound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Upper bounds, increasing. The last bucket's bound is omitted (it is +inf), so
    /// `counts.len() == bounds.len() + 1`.
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    /// Sum of the observations, for the mean.
    pub sum: f64,
}

/// The part a release plays in a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The serving release: it answers every request not given to a canary.
    Primary,
    /// Scores every request beside the primary; its answers are never returned.
    Shadow,
    /// Answers its share of requests, chosen by a hash of the request key.
    Canary,
}

/// One release's traffic on one server since the server began counting for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseTraffic {
    /// The release tag, or `None` for a model served from a file.
    pub release: Option<String>,
    /// What `model_version` says in answers from this release.
    pub version: String,
    /// `sha256:<hex>` of the model.
    pub digest: String,
    pub role: Role,
    /// When counting began for this release in this role (RFC 3339).
    pub since: String,
    /// HTTP requests this release answered (a batch is one); for a shadow, requests it
    /// scored.
    pub requests: u64,
    /// Instances scored (a batch of 10 is 10).
    pub instances: u64,
    /// Requests that failed on the server's side (5xx, a panic, a timeout); for a
    /// shadow, scorings that failed or timed out. Bad input (4xx) is not an error.
    pub errors: u64,
    /// Requests refused as bad input (4xx).
    pub rejected: u64,
    /// Instances predicted positive (class 1).
    pub positives: u64,
    /// Of `requests`, those a canary split assigned by a random draw because they
    /// carried no request key (so one customer may meet both releases). Older servers
    /// do not send it.
    #[serde(default)]
    pub unkeyed: u64,
    /// Time to answer each request, in microseconds, with [`LATENCY_BOUNDS_US`] as
    /// bounds (the last one left out); for a shadow, the time its own scoring took.
    pub latency_us: Histogram,
    /// Predicted probabilities, [`SCORE_BUCKETS`] equal buckets over [0, 1] (bounds
    /// 0.05, 0.10, …, 0.95; the last bucket is (0.95, 1]).
    pub scores: Histogram,
}

/// How a shadow's answers compared with the primary's on the same instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowComparison {
    /// `version` of the primary and of the shadow.
    pub primary: String,
    pub shadow: String,
    /// Instances both scored.
    pub compared: u64,
    /// `confusion[p][s]`: instances the primary put in class `p` and the shadow in `s`.
    pub confusion: [[u64; 2]; 2],
    /// |primary probability − shadow probability|, bounds [`DELTA_BOUNDS`] (the last
    /// one left out).
    pub abs_delta: Histogram,
    /// Instances the shadow did not score because its queue was full (the primary's
    /// answers never wait for it).
    pub skipped: u64,
}

/// `GET /traffic`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficReport {
    /// Every release the server holds: the primary first, then a shadow or a canary.
    pub releases: Vec<ReleaseTraffic>,
    /// Present while a shadow runs.
    #[serde(default)]
    pub shadow: Option<ShadowComparison>,
    /// The environment names a candidate this server could not load: the primary
    /// serves on, alone. Cleared when the candidate loads or its record goes.
    #[serde(default)]
    pub candidate_error: Option<CandidateError>,
}

/// A candidate that a server refused or could not fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateError {
    /// The candidate's release tag.
    pub release: String,
    /// `shadow` or `canary`.
    pub mode: String,
    /// Why, with its causes.
    pub error: String,
}
