//! The environment's candidate as requests meet it: a canary's share of answers, or a
//! shadow that scores every instance beside the primary.
//!
//! **The primary never waits for a shadow.** A request hands the shadow a copy of its
//! body (a reference-counted `Bytes`) and the primary's answers through a bounded queue
//! to one worker thread, and returns. A full queue drops the job and counts it as
//! `skipped`; a shadow that panics or overruns its time budget counts an error. The
//! primary's answer is built exactly as without a shadow, so answers and errors are
//! byte-identical. The worker runs in the idle scheduling class, so on a saturated core a
//! shadow sheds work rather than slowing the answers.
//!
//! **A canary split is sticky.** The request key (a header, `x-request-id` by default,
//! or a body field) is hashed with FNV-1a — stable across processes and restarts, unlike
//! std's `RandomState` — into [0, 10000), and a request whose bucket is below
//! `percent × 100` is answered by the candidate. Requests without a key are assigned
//! by a random draw and counted as `unkeyed`.

use std::hash::BuildHasher as _;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::Response;
use bytes::Bytes;
use predict_buy_model::Prediction;
use predict_buy_registry::{CandidateMode, RequestKey};
use serde_json::Value;

use crate::batch::Instance;
use crate::error::{ApiError, JsonBody};
use crate::state::{AppState, LoadedModel};
use crate::traffic::{CandidateRoute, ReleaseCounters, Routing, ShadowCounters};

/// Jobs waiting for the shadow worker at most; beyond, jobs are skipped. About a
/// second of traffic at a few thousand requests a second, and a few MB of bodies.
pub const SHADOW_QUEUE: usize = 4_096;

/// Longest a shadow may take over one job before it is counted as an error.
pub const DEFAULT_SHADOW_BUDGET: Duration = Duration::from_millis(250);

/// Buckets of the canary split: a share is honoured to 0.01%.
const SPLIT_BUCKETS: u64 = 10_000;

/// A fault injected into the shadow's scoring, for tests and fire drills: it proves
/// that a misbehaving candidate costs the primary nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowFault {
    /// The candidate panics while scoring.
    Panic,
    /// The candidate takes this long before scoring.
    Delay(Duration),
}

/// What the shadow worker reads for every job; shared by the state and the worker so a
/// change applies to a running shadow.
#[derive(Default)]
pub(crate) struct ShadowSettings {
    pub(crate) fault: ArcSwapOption<ShadowFault>,
    /// Microseconds; 0 means [`DEFAULT_SHADOW_BUDGET`].
    pub(crate) budget_us: std::sync::atomic::AtomicU64,
}

impl ShadowSettings {
    fn budget(&self) -> Duration {
        match self.budget_us.load(Relaxed) {
            0 => DEFAULT_SHADOW_BUDGET,
            us => Duration::from_micros(us),
        }
    }
}

/// One request's worth of work for the shadow.
enum Job {
    One {
        body: Bytes,
        primary: (u8, f64),
    },
    Batch {
        body: Bytes,
        primary: Vec<(u8, f64)>,
    },
}

impl Job {
    fn instances(&self) -> u64 {
        match self {
            Job::One { .. } => 1,
            Job::Batch { primary, .. } => primary.len() as u64,
        }
    }
}

/// The requests' side of a running shadow.
pub(crate) struct ShadowLink {
    queue: SyncSender<Job>,
    pub(crate) counters: Arc<ShadowCounters>,
}

impl ShadowLink {
    /// Starts the worker thread; it ends when the last routing holding this link is
    /// dropped (its queue disconnects).
    pub(crate) fn start(
        candidate: Arc<LoadedModel>,
        counts: Arc<ReleaseCounters>,
        settings: Arc<ShadowSettings>,
    ) -> std::io::Result<Self> {
        let (queue, jobs) = std::sync::mpsc::sync_channel(SHADOW_QUEUE);
        let counters = Arc::new(ShadowCounters::new());
        let worker_counters = counters.clone();
        std::thread::Builder::new()
            .name(format!("shadow {}", candidate.version))
            .spawn(move || {
                yield_to_requests();
                work(jobs, &candidate, &counts, &worker_counters, &settings)
            })?;
        Ok(Self { queue, counters })
    }

    fn send(&self, job: Job) {
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                self.counters.skipped.fetch_add(job.instances(), Relaxed);
            }
        }
    }
}

/// Puts the shadow's worker thread in Linux's `SCHED_IDLE` class: it runs only when
/// the core has nothing else to run, and a waking request thread preempts it at once.
/// On a saturated core the shadow's queue then fills and sheds (`skipped`) instead of
/// its scoring lengthening the answers it must not touch. Without it a shadow on a busy
/// core doubled the p50 at 8 connections; a nice of 19 kept the p50 but still let the
/// worker hold the core for whole time slices, putting milliseconds on the p99.
#[allow(unsafe_code)] // one libc call, no safe wrapper exists; see the SAFETY note.
fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` only reads `param`; pid 0 names this thread.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            tracing::warn!(error = %e, "cannot make the shadow worker idle-priority; it competes with requests");
        }
    }
}

fn work(
    jobs: Receiver<Job>,
    candidate: &LoadedModel,
    counts: &ReleaseCounters,
    shadow: &ShadowCounters,
    settings: &ShadowSettings,
) {
    while let Ok(job) = jobs.recv() {
        let start = Instant::now();
        let fault = settings.fault.load_full();
        let scored = std::panic::catch_unwind(AssertUnwindSafe(|| {
            match fault.as_deref() {
                Some(ShadowFault::Panic) => panic!("injected shadow fault"),
                Some(ShadowFault::Delay(d)) => std::thread::sleep(*d),
                None => {}
            }
            score(candidate, &job)
        }));
        let took = start.elapsed();
        let primary = match &job {
            Job::One { primary, .. } => std::slice::from_ref(primary),
            Job::Batch { primary, .. } => primary.as_slice(),
        };
        match scored {
            Ok(Some(answers)) if took <= settings.budget() && answers.len() == primary.len() => {
                let pairs: Vec<(u8, f64)> = answers
                    .iter()
                    .map(|p| (p.predicted_class, p.probability))
                    .collect();
                counts.answered(pairs.iter().copied(), took, false);
                for (p, s) in primary.iter().zip(&pairs) {
                    shadow.compare(*p, *s);
                }
            }
            // Refused input, a panic, a wrong count or a late answer: the shadow failed
            // where the primary answered.
            _ => counts.refused(axum::http::StatusCode::INTERNAL_SERVER_ERROR, took, false),
        }
    }
}

/// The candidate's predictions for a job's body, or `None` if it refuses any instance.
fn score(candidate: &LoadedModel, job: &Job) -> Option<Vec<Prediction>> {
    match job {
        Job::One { body, .. } => {
            if let Some(p) =
                crate::fast::predict(&candidate.model, &candidate.fields, body, |_, _| ())
            {
                return Some(vec![p]);
            }
            let JsonBody(Value::Object(record)) = JsonBody::parse(body).ok()? else {
                return None;
            };
            candidate.model.predict_json(&record).ok().map(|p| vec![p])
        }
        Job::Batch { body, .. } => crate::batch::parse(body, usize::MAX)
            .ok()?
            .iter()
            .map(|item| match item {
                Instance::Record(r) => candidate.model.predict_json(r).ok(),
                Instance::Other(_) => None,
            })
            .collect(),
    }
}

/// The canary request key, read from the header the candidate record names; `None`
/// unless a canary keyed by a header runs (so no other request pays for it).
pub(crate) struct CanaryKey(Option<Bytes>);

impl FromRequestParts<AppState> for CanaryKey {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let routing = state.routing();
        let header = routing.as_deref().and_then(|r| match &r.candidate {
            Some(CandidateRoute {
                mode:
                    CandidateMode::Canary {
                        key: RequestKey::Header(name),
                        ..
                    },
                ..
            }) => parts
                .headers
                .get(name.as_str())
                .map(|v| Bytes::copy_from_slice(v.as_bytes())),
            _ => None,
        });
        Ok(CanaryKey(header))
    }
}

/// FNV-1a, 64 bits: stable for a key's bytes everywhere, so a customer meets the same
/// release on every server and after every restart.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Whether a key goes to a canary of `percent`%: its bucket in [0, 10000) is below
/// `percent × 100`.
pub fn canary_takes(key: &[u8], percent: f64) -> bool {
    fnv1a(key) % SPLIT_BUCKETS < share(percent)
}

fn share(percent: f64) -> u64 {
    (percent * 100.0).round().clamp(0.0, SPLIT_BUCKETS as f64) as u64
}

/// `(candidate answers, the request had no key)`.
fn assign(route: &CandidateRoute, header: &CanaryKey, body: &[u8]) -> (bool, bool) {
    let CandidateMode::Canary { percent, key } = &route.mode else {
        return (false, false);
    };
    let key: Option<Vec<u8>> = match key {
        RequestKey::Header(_) => header.0.as_ref().map(|b| b.to_vec()),
        RequestKey::Field(name) => body_field(body, name),
    };
    match key {
        Some(k) if !k.is_empty() => (canary_takes(&k, *percent), false),
        _ => {
            // A fresh RandomState per draw is seeded differently each time: a random
            // number without a dependency.
            let draw = std::collections::hash_map::RandomState::new().hash_one(0u8);
            (draw % SPLIT_BUCKETS < share(*percent), true)
        }
    }
}

/// A top-level field of a JSON object body as key bytes: a string's text, any other
/// scalar's JSON text.
fn body_field(body: &[u8], name: &str) -> Option<Vec<u8>> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    match map.get(name)? {
        Value::String(s) => Some(s.clone().into_bytes()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
        other => Some(other.to_string().into_bytes()),
    }
}

/// Answers `POST /predict` through the routing: the primary or a canary answers
/// (`answer` builds the response exactly as without a candidate), its counters count
/// it, and a shadow gets the body to score later.
pub(crate) fn predict(
    state: &AppState,
    key: &CanaryKey,
    body: &Bytes,
    answer: impl FnOnce(Option<&LoadedModel>) -> Result<(Response, Prediction), ApiError>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let routing = state.routing();
    let Some(r) = routing.as_deref() else {
        return answer(None).map(|(resp, _)| resp);
    };
    let (to_candidate, unkeyed) = r
        .candidate
        .as_ref()
        .map_or((false, false), |c| assign(c, key, body));
    let (model, counts) = pick(r, to_candidate);
    let result = answer(Some(model));
    match &result {
        Ok((_, p)) => {
            let pair = (p.predicted_class, p.probability);
            counts.answered([pair], start.elapsed(), unkeyed);
            if let Some(link) = shadow_of(r) {
                link.send(Job::One {
                    body: body.clone(),
                    primary: pair,
                });
            }
        }
        Err(e) => counts.refused(e.status(), start.elapsed(), unkeyed),
    }
    result.map(|(resp, _)| resp)
}

/// [`predict`] for `POST /predict/batch`.
pub(crate) fn predict_batch(
    state: &AppState,
    key: &CanaryKey,
    body: &Bytes,
    answer: impl FnOnce(Option<&LoadedModel>) -> Result<(Response, Vec<Prediction>), ApiError>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let routing = state.routing();
    let Some(r) = routing.as_deref() else {
        return answer(None).map(|(resp, _)| resp);
    };
    let (to_candidate, unkeyed) = r
        .candidate
        .as_ref()
        .map_or((false, false), |c| assign(c, key, body));
    let (model, counts) = pick(r, to_candidate);
    let result = answer(Some(model));
    match &result {
        Ok((_, predictions)) => {
            let pairs: Vec<(u8, f64)> = predictions
                .iter()
                .map(|p| (p.predicted_class, p.probability))
                .collect();
            counts.answered(pairs.iter().copied(), start.elapsed(), unkeyed);
            if let Some(link) = shadow_of(r) {
                link.send(Job::Batch {
                    body: body.clone(),
                    primary: pairs,
                });
            }
        }
        Err(e) => counts.refused(e.status(), start.elapsed(), unkeyed),
    }
    result.map(|(resp, _)| resp)
}

fn pick(r: &Routing, to_candidate: bool) -> (&LoadedModel, &ReleaseCounters) {
    match &r.candidate {
        Some(c) if to_candidate => (&c.loaded, &c.counts),
        _ => (&r.primary, &r.primary_counts),
    }
}

fn shadow_of(r: &Routing) -> Option<&ShadowLink> {
    r.candidate.as_ref()?.shadow.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_the_published_function() {
        // Test vectors of FNV-1a 64 (Fowler, Noll, Vo).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_split_honours_the_share_and_is_sticky() {
        let taken = (0..20_000)
            .filter(|i| canary_takes(format!("customer-{i}").as_bytes(), 10.0))
            .count();
        assert!((1_700..=2_300).contains(&taken), "{taken} of 20000 at 10%");
        for i in 0..100 {
            let k = format!("k{i}");
            assert_eq!(
                canary_takes(k.as_bytes(), 25.0),
                canary_takes(k.as_bytes(), 25.0)
            );
        }
        // A key in the candidate's share at 10% stays there when the share grows.
        let k = (0..)
            .map(|i| format!("c{i}"))
            .find(|k| canary_takes(k.as_bytes(), 10.0))
            .unwrap();
        assert!(canary_takes(k.as_bytes(), 50.0));
        assert_eq!(share(0.01), 1);
        assert_eq!(share(150.0), SPLIT_BUCKETS);
    }

    #[test]
    fn body_fields_become_keys() {
        let body = br#"{"customer":"c-17","n":42,"x":null,"o":{}}"#;
        assert_eq!(body_field(body, "customer"), Some(b"c-17".to_vec()));
        assert_eq!(body_field(body, "n"), Some(b"42".to_vec()));
        assert_eq!(body_field(body, "x"), None);
        assert_eq!(body_field(body, "o"), None);
        assert_eq!(body_field(body, "missing"), None);
        assert_eq!(body_field(b"[1]", "n"), None);
        assert_eq!(body_field(b"{not json", "n"), None);
    }
}
