//! Live input and score histograms over a sliding window, compared with the training
//! reference the artifact carries: `GET /drift` and the `predict_buy_*drift*` series
//! of `/metrics`.
//!
//! Each loaded model gets its own counters (a new model starts from zero). The window
//! is a ring of [`SLICES`] time slices; every prediction adds one to a counter per
//! input field and one for its score in the current slice, with relaxed atomic
//! increments and no lock, so the request path pays a few nanoseconds per field.
//! Reading sums the slices younger than the window. A slice is zeroed by the first
//! request that finds it holding an older period; an increment that races that reset
//! can be lost, a few counts per slice boundary at most, which no share notices.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use predict_buy_api::{Bin, BinKind, Distribution, DriftReport, DriftStatus, FeatureDrift};
use predict_buy_data::RawValue;
use predict_buy_model::drift::{self as reference, DriftLevel, DriftReference};
use predict_buy_model::{Model, Prediction, raw_from_json};

use crate::error::ApiError;
use crate::state::{AppState, LoadedModel};

/// Slices in the window: a one-hour window moves in one-minute steps.
pub const SLICES: u64 = 60;
/// The window when none is configured.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
/// Below this many samples, PSI is reported but not judged: with ~13 bins, a few dozen
/// requests from the training distribution already give PSI ≈ 0.1 by chance alone.
pub const MIN_SAMPLES: u64 = 100;

/// One slice of the ring.
struct Slice {
    /// The period this slice counts (1-based; 0 never used).
    period: AtomicU64,
    samples: AtomicU64,
    counts: Box<[AtomicU64]>,
}

/// The live counters of one loaded model.
pub(crate) struct LiveDrift {
    model: Arc<Model>,
    /// Where each field's bins start in a slice's counters; the score's bins follow.
    offsets: Vec<usize>,
    score_offset: usize,
    slices: Box<[Slice]>,
    slice_nanos: u128,
    window: Duration,
    start: Instant,
}

impl std::fmt::Debug for LiveDrift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveDrift")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl LiveDrift {
    /// Counters for `model`, or `None` when it carries no reference.
    pub(crate) fn new(model: Arc<Model>, window: Duration) -> Option<Self> {
        let reference = model.drift_reference()?;
        let mut offsets = Vec::with_capacity(reference.features.len());
        let mut width = 0;
        for f in &reference.features {
            offsets.push(width);
            width += f.bins.len();
        }
        let score_offset = width;
        width += reference.score.counts.len();
        let slices = (0..SLICES)
            .map(|_| Slice {
                period: AtomicU64::new(0),
                samples: AtomicU64::new(0),
                counts: (0..width).map(|_| AtomicU64::new(0)).collect(),
            })
            .collect();
        let window = window.max(Duration::from_millis(SLICES));
        Some(Self {
            model,
            offsets,
            score_offset,
            slices,
            slice_nanos: (window.as_nanos() / u128::from(SLICES)).max(1),
            window,
            start: Instant::now(),
        })
    }

    fn reference(&self) -> &DriftReference {
        self.model
            .drift_reference()
            .expect("LiveDrift is only built for a model with a reference")
    }

    fn period_now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos() / self.slice_nanos).unwrap_or(u64::MAX - 1)
            + 1
    }

    /// The slice of the current period, zeroed if it still held an older one.
    fn current(&self) -> &Slice {
        let period = self.period_now();
        let slice = &self.slices[(period % SLICES) as usize];
        let seen = slice.period.load(Ordering::Acquire);
        if seen < period
            && slice
                .period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slice.samples.store(0, Ordering::Relaxed);
            for c in &slice.counts {
                c.store(0, Ordering::Relaxed);
            }
        }
        slice
    }

    /// Counts one prediction whose raw values are in the model's input order.
    pub(crate) fn observe(&self, values: &[RawValue<'_>], p: &Prediction) {
        let reference = self.reference();
        let rules = &self.model.payload().cleaner.features;
        let slice = self.current();
        for ((f, rule), (value, offset)) in reference
            .features
            .iter()
            .zip(rules)
            .zip(values.iter().zip(&self.offsets))
        {
            if let Some(b) = f.bins.bin(rule, value) {
                slice.counts[offset + b].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count_score(slice, p);
    }

    /// Counts one prediction made from a JSON record (the general and batch paths).
    pub(crate) fn observe_json(
        &self,
        record: &serde_json::Map<String, serde_json::Value>,
        p: &Prediction,
    ) {
        let reference = self.reference();
        let rules = &self.model.payload().cleaner.features;
        let slice = self.current();
        for ((f, rule), offset) in reference.features.iter().zip(rules).zip(&self.offsets) {
            let value = record
                .get(&f.name)
                .map_or(Ok(RawValue::Missing), raw_from_json);
            if let Ok(value) = value
                && let Some(b) = f.bins.bin(rule, &value)
            {
                slice.counts[offset + b].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count_score(slice, p);
    }

    fn count_score(&self, slice: &Slice, p: &Prediction) {
        let b = self.reference().score.bin(p.probability);
        slice.counts[self.score_offset + b].fetch_add(1, Ordering::Relaxed);
        slice.samples.fetch_add(1, Ordering::Relaxed);
    }

    /// Samples and counts of the slices inside the window.
    fn snapshot(&self) -> (u64, Vec<u64>) {
        let now = self.period_now();
        let width = self.slices[0].counts.len();
        let mut samples = 0;
        let mut counts = vec![0u64; width];
        for slice in &self.slices {
            let period = slice.period.load(Ordering::Acquire);
            if period == 0 || period > now || period + SLICES <= now {
                continue;
            }
            samples += slice.samples.load(Ordering::Relaxed);
            for (total, c) in counts.iter_mut().zip(&slice.counts) {
                *total += c.load(Ordering::Relaxed);
            }
        }
        (samples, counts)
    }

    /// The window, live against reference.
    fn report(&self, m: &LoadedModel) -> DriftReport {
        let reference = self.reference();
        let (samples, counts) = self.snapshot();
        let mut report = empty_report(m, self.window);
        report.reference = true;
        report.reference_source = Some(reference.source.clone());
        report.samples = samples;
        report.features = reference
            .features
            .iter()
            .zip(&self.offsets)
            .zip(m.model.input_fields())
            .map(|((f, &offset), field)| {
                let live = &counts[offset..offset + f.bins.len()];
                let kinds: Vec<BinKind> = f.bins.kinds().into_iter().map(wire_kind).collect();
                feature(
                    f.name.clone(),
                    field.kind.to_string(),
                    distribution(&f.counts, live, f.bins.labels(), &kinds, samples),
                )
            })
            .collect();
        let live = &counts[self.score_offset..];
        let kinds = vec![BinKind::Value; live.len()];
        report.score = Some(distribution(
            &reference.score.counts,
            live,
            reference.score.labels(),
            &kinds,
            samples,
        ));
        report
    }
}

fn wire_kind(k: reference::BinKind) -> BinKind {
    match k {
        reference::BinKind::Value => BinKind::Value,
        reference::BinKind::BelowRange => BinKind::BelowRange,
        reference::BinKind::AboveRange => BinKind::AboveRange,
        reference::BinKind::Other => BinKind::Other,
        reference::BinKind::Missing => BinKind::Missing,
    }
}

/// A report with no features: the frame every answer shares.
fn empty_report(m: &LoadedModel, window: Duration) -> DriftReport {
    DriftReport {
        model_version: m.version.clone(),
        release: m.release.as_ref().map(ToString::to_string),
        model_digest: m.digest.clone(),
        reference: false,
        note: None,
        reference_source: None,
        window_seconds: window.as_secs_f64(),
        samples: 0,
        min_samples: MIN_SAMPLES,
        epsilon: reference::EPSILON,
        stable_below: reference::STABLE_BELOW,
        drifted_above: reference::DRIFTED_ABOVE,
        features: Vec::new(),
        score: None,
    }
}

/// Shares, PSI and status of one histogram. Also used by clients that add up several
/// servers' counts, so that they judge exactly as a server does.
pub fn distribution(
    reference_counts: &[u64],
    live_counts: &[u64],
    labels: Vec<String>,
    kinds: &[BinKind],
    samples: u64,
) -> Distribution {
    let r_total: u64 = reference_counts.iter().sum();
    let l_total: u64 = live_counts.iter().sum();
    let share = |c: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            c as f64 / total as f64
        }
    };
    let psi = reference::psi(reference_counts, live_counts);
    Distribution {
        psi,
        status: status(psi, samples),
        bins: labels
            .into_iter()
            .zip(kinds)
            .zip(reference_counts.iter().zip(live_counts))
            .map(|((label, kind), (&r, &l))| Bin {
                label,
                kind: *kind,
                reference_count: r,
                reference_share: share(r, r_total),
                live_count: l,
                live_share: share(l, l_total),
            })
            .collect(),
    }
}

/// A feature's entry: its distribution plus the missing and out-of-range shares, live
/// and reference, read off the bins' kinds.
pub fn feature(name: String, kind: String, distribution: Distribution) -> FeatureDrift {
    let sum = |pick: &dyn Fn(&Bin) -> f64, of: &dyn Fn(BinKind) -> bool| -> f64 {
        distribution
            .bins
            .iter()
            .filter(|b| of(b.kind))
            .map(pick)
            .sum()
    };
    let missing = |k: BinKind| k == BinKind::Missing;
    let out = |k: BinKind| {
        matches!(
            k,
            BinKind::BelowRange | BinKind::AboveRange | BinKind::Other
        )
    };
    let has_live = distribution.bins.iter().any(|b| b.live_count > 0);
    FeatureDrift {
        name,
        kind,
        missing_share: has_live.then(|| sum(&|b| b.live_share, &missing)),
        reference_missing_share: sum(&|b| b.reference_share, &missing),
        out_of_range_share: has_live.then(|| sum(&|b| b.live_share, &out)),
        reference_out_of_range_share: sum(&|b| b.reference_share, &out),
        distribution,
    }
}

/// The status of a PSI value over `samples` predictions.
pub fn status(psi: Option<f64>, samples: u64) -> DriftStatus {
    match psi {
        Some(_) if samples < MIN_SAMPLES => DriftStatus::Insufficient,
        None => DriftStatus::Insufficient,
        Some(v) => match DriftLevel::of(v) {
            DriftLevel::Stable => DriftStatus::Stable,
            DriftLevel::Watch => DriftStatus::Watch,
            DriftLevel::Drifted => DriftStatus::Drifted,
        },
    }
}

impl LoadedModel {
    /// This model's live counters (made on first use), or `None` without a reference.
    pub(crate) fn live_drift(&self, window: Duration) -> Option<&LiveDrift> {
        self.drift
            .get_or_init(|| LiveDrift::new(self.model.clone(), window))
            .as_ref()
    }
}

impl AppState {
    /// The counters predictions of `m` go to; none when drift monitoring is off (a
    /// zero window).
    pub(crate) fn drift_of<'m>(&self, m: &'m LoadedModel) -> Option<&'m LiveDrift> {
        let window = self.limits().drift_window;
        if window.is_zero() {
            return None;
        }
        m.live_drift(window)
    }
}

/// The drift report of the model serving now.
pub(crate) fn report(state: &AppState, m: &LoadedModel) -> DriftReport {
    match state.drift_of(m) {
        Some(live) => live.report(m),
        None if state.limits().drift_window.is_zero() => DriftReport {
            reference: m.model.drift_reference().is_some(),
            note: Some("drift monitoring is off on this server (--drift-window off)".into()),
            ..empty_report(m, Duration::ZERO)
        },
        None => DriftReport {
            note: Some(
                "this model was trained before drift monitoring: its artifact has no reference distributions; retrain it to watch drift".into(),
            ),
            ..empty_report(m, state.limits().drift_window)
        },
    }
}

/// `GET /drift`.
#[utoipa::path(
    get,
    path = "/drift",
    responses(
        (status = 200, body = DriftReport),
        (status = 503, description = "No model yet", body = crate::error::ErrorBody)
    )
)]
pub(crate) async fn drift(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = state.current().ok_or(ApiError::NotReady)?;
    Ok(crate::routes::json(StatusCode::OK, &report(&state, &m)))
}

/// The drift series for `/metrics`, labelled with the release (its tag, or the
/// model's short digest when served from a file). Nothing without a reference; no
/// PSI or share without samples, rather than a made-up number.
pub(crate) fn write_metrics(text: &mut String, state: &AppState, m: &LoadedModel) {
    use std::fmt::Write as _;
    if state.drift_of(m).is_none() {
        return;
    }
    let r = report(state, m);
    let release = crate::metrics::label(&m.version);
    let mut gauge = |name: &str, help: &str, rows: Vec<(Option<&str>, Option<f64>)>| {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (feature, value) in rows {
            let Some(v) = value else { continue };
            match feature {
                Some(f) => {
                    let f = crate::metrics::label(f);
                    let _ = writeln!(text, "{name}{{feature=\"{f}\",release=\"{release}\"}} {v}");
                }
                None => {
                    let _ = writeln!(text, "{name}{{release=\"{release}\"}} {v}");
                }
            }
        }
    };
    let per_feature = |pick: fn(&FeatureDrift) -> Option<f64>| -> Vec<(Option<&str>, Option<f64>)> {
        r.features
            .iter()
            .map(|f| (Some(f.name.as_str()), pick(f)))
            .collect()
    };
    gauge(
        "predict_buy_feature_drift_psi",
        "Population Stability Index of each input field over the drift window, against the training data",
        per_feature(|f| f.distribution.psi),
    );
    gauge(
        "predict_buy_feature_missing_ratio",
        "Share of predictions in the drift window whose field was missing",
        per_feature(|f| f.missing_share),
    );
    gauge(
        "predict_buy_feature_out_of_range_ratio",
        "Share of predictions in the drift window whose field was outside the training range (or an unseen category)",
        per_feature(|f| f.out_of_range_share),
    );
    gauge(
        "predict_buy_score_drift_psi",
        "Population Stability Index of the scores over the drift window, against the held-out test scores",
        vec![(None, r.score.as_ref().and_then(|s| s.psi))],
    );
    gauge(
        "predict_buy_drift_samples",
        "Predictions counted in the drift window",
        vec![(None, Some(r.samples as f64))],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_samples_are_not_judged() {
        assert_eq!(
            status(Some(0.5), MIN_SAMPLES - 1),
            DriftStatus::Insufficient
        );
        assert_eq!(status(None, 10_000), DriftStatus::Insufficient);
        assert_eq!(status(Some(0.5), MIN_SAMPLES), DriftStatus::Drifted);
        assert_eq!(status(Some(0.15), MIN_SAMPLES), DriftStatus::Watch);
        assert_eq!(status(Some(0.01), MIN_SAMPLES), DriftStatus::Stable);
    }

    #[test]
    fn shares_are_read_off_the_bin_kinds() {
        let kinds = [
            BinKind::BelowRange,
            BinKind::Value,
            BinKind::AboveRange,
            BinKind::Missing,
        ];
        let labels = ["<", "v", ">", "m"].map(String::from).to_vec();
        let d = distribution(&[0, 90, 0, 10], &[5, 80, 5, 10], labels, &kinds, 100);
        let f = feature("Age".into(), "number".into(), d);
        assert_eq!(f.missing_share, Some(0.1));
        assert_eq!(f.reference_missing_share, 0.1);
        assert_eq!(f.out_of_range_share, Some(0.1));
        assert_eq!(f.reference_out_of_range_share, 0.0);
        assert!(f.distribution.psi.unwrap() > 0.0);
        assert_eq!(f.distribution.bins[1].live_share, 0.8);
        let none = distribution(
            &[1, 1],
            &[0, 0],
            vec!["a".into(), "b".into()],
            &kinds[1..3],
            0,
        );
        let f = feature("X".into(), "number".into(), none);
        assert_eq!(f.missing_share, None, "no samples: no share");
        assert_eq!(f.distribution.psi, None);
    }
}
