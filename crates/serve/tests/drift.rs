//! Drift monitoring over real HTTP: a server with a model trained on the synthetic
//! generator receives traffic drawn from the training distribution, then traffic with
//! known shifts, and `/drift` and `/metrics` must tell them apart.

mod common;

use std::time::Duration;

use common::{Options, TestServer, test_limits};
use predict_buy_data::synth::{Generator, Row};
use serde_json::{Value, json};

/// Predictions per phase: enough that sampling noise keeps PSI of unshifted fields
/// well under 0.1 (its expectation is about bins/samples, ≈ 0.01 here).
const SAMPLES: usize = 2_000;

/// A generated row as a client sends it: numbers as JSON numbers, except every third
/// premium written the way the raw data writes it (`"£1,623.85"`).
fn request(row: &Row, i: usize) -> Value {
    let premium = if i.is_multiple_of(3) {
        Value::String(format!("£{:.2}", row.premium))
    } else {
        json!(row.premium)
    };
    json!({
        "Gender": row.male.map(|m| if m { "Male" } else { "Female" }),
        "Age": row.age,
        "HasDrivingLicense": row.licence.map(u8::from),
        "RegionID": row.region,
        "Switch": row.switch.map(u8::from),
        "PastAccident": row.past_accident.map(|p| if p { "Yes" } else { "No" }),
        "AnnualPremium": premium,
    })
}

/// `SAMPLES` rows of a generator seeded apart from training's, changed by `shift`.
fn traffic(seed: u64, shift: impl Fn(&mut Row)) -> Vec<Value> {
    let mut generator = Generator::new(seed);
    (0..SAMPLES)
        .map(|i| {
            let mut row = generator.row();
            shift(&mut row);
            request(&row, i)
        })
        .collect()
}

/// Sends the first 200 rows one by one (the fast path) and the rest in batches.
async fn send(server: &TestServer, rows: &[Value]) {
    let (single, batched) = rows.split_at(200);
    for row in single {
        let (status, body) = server.post_json("/predict", row).await;
        assert_eq!(status, 200, "{body}");
    }
    for chunk in batched.chunks(300) {
        let (status, body) = server
            .post_json("/predict/batch", &json!({ "instances": chunk }))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn drift(server: &TestServer) -> Value {
    let (status, body) = server.get("/drift").await;
    assert_eq!(status, 200, "{body}");
    body
}

fn psi_of(report: &Value, feature: &str) -> f64 {
    report["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == feature)
        .unwrap_or_else(|| panic!("no feature {feature} in {report}"))["psi"]
        .as_f64()
        .unwrap_or_else(|| panic!("no PSI for {feature} in {report}"))
}

const FEATURES: [&str; 7] = [
    "Gender",
    "Age",
    "HasDrivingLicense",
    "RegionID",
    "Switch",
    "PastAccident",
    "AnnualPremium",
];

/// Runs one phase on a fresh server and returns each feature's PSI.
async fn phase(seed: u64, shift: impl Fn(&mut Row)) -> (Value, Vec<(&'static str, f64)>) {
    let server = TestServer::start().await;
    send(&server, &traffic(seed, shift)).await;
    let report = drift(&server).await;
    assert_eq!(report["samples"], SAMPLES as u64, "{report}");
    let psi = FEATURES.iter().map(|f| (*f, psi_of(&report, f))).collect();
    server.stop().await;
    (report, psi)
}

/// Asserts that exactly the `shifted` features crossed 0.25 and the rest stayed
/// under 0.1.
fn only_shifted(psi: &[(&str, f64)], shifted: &[&str], report: &Value) {
    for (feature, value) in psi {
        if shifted.contains(feature) {
            assert!(
                *value > 0.25,
                "{feature} PSI {value} should show drift; {psi:?}"
            );
            let status = report["features"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == *feature)
                .unwrap()["status"]
                .clone();
            assert_eq!(status, "drifted", "{feature}");
        } else {
            assert!(
                *value < 0.1,
                "{feature} PSI {value} should stay stable; {psi:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_like_training_is_stable() {
    let (report, psi) = phase(101, |_| {}).await;
    only_shifted(&psi, &[], &report);
    assert_eq!(report["reference"], true);
    assert!(report["features"].as_array().unwrap().len() == FEATURES.len());
    // The generator leaves 6% of ages missing; the live share must be near it.
    let age = &report["features"][1];
    assert_eq!(age["name"], "Age");
    let missing = age["missing_share"].as_f64().unwrap();
    assert!((missing - 0.06).abs() < 0.02, "{missing}");
    assert!(
        (age["reference_missing_share"].as_f64().unwrap() - 0.06).abs() < 0.02,
        "{age}"
    );
    let score = report["score"]["psi"].as_f64().unwrap();
    assert!(score < 0.1, "score PSI {score}");
    // Counts add up to the samples in every histogram.
    for f in report["features"].as_array().unwrap() {
        let live: u64 = f["bins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["live_count"].as_u64().unwrap())
            .sum();
        assert_eq!(live, SAMPLES as u64, "{}", f["name"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_age_band_drifts_age_only() {
    let (report, psi) = phase(102, |r| r.age = r.age.map(|a| (a + 20).min(85))).await;
    only_shifted(&psi, &["Age"], &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn premium_inflation_drifts_the_premium_only() {
    let (report, psi) = phase(103, |r| {
        r.premium = (r.premium * 1.5 * 100.0).round() / 100.0
    })
    .await;
    only_shifted(&psi, &["AnnualPremium"], &report);
    let premium = report["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "AnnualPremium")
        .unwrap();
    // Inflated premiums beyond the training maximum count as out of range.
    assert!(
        premium["out_of_range_share"].as_f64().unwrap() > 0.0,
        "{premium}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_mix_change_drifts_the_region_only() {
    // Region 28's customers (28% of traffic) now come from region 8.
    let (report, psi) = phase(104, |r| {
        if r.region == Some(28) {
            r.region = Some(8);
        }
    })
    .await;
    only_shifted(&psi, &["RegionID"], &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_export_the_same_psi_as_drift() {
    let server = TestServer::start().await;
    send(
        &server,
        &traffic(105, |r| r.age = r.age.map(|a| (a + 20).min(85))),
    )
    .await;
    let report = drift(&server).await;
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let text = metrics.as_str().unwrap();
    let release = report["model_version"].as_str().unwrap();
    let line = format!("predict_buy_feature_drift_psi{{feature=\"Age\",release=\"{release}\"}} ");
    let exported: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in\n{text}"))
        .parse()
        .unwrap();
    assert_eq!(exported, psi_of(&report, "Age"));
    for series in [
        "predict_buy_feature_missing_ratio{feature=\"Switch\"",
        "predict_buy_feature_out_of_range_ratio{feature=\"AnnualPremium\"",
        "predict_buy_score_drift_psi{release=",
        &format!("predict_buy_drift_samples{{release=\"{release}\"}} {SAMPLES}"),
    ] {
        assert!(text.contains(series), "no {series} in\n{text}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_forgets_old_requests() {
    let server = TestServer::with(Options {
        limits: predict_buy_serve::Limits {
            drift_window: Duration::from_secs(2),
            ..test_limits()
        },
        ..Options::default()
    })
    .await;
    send(&server, &traffic(106, |_| {})[..300]).await;
    let report = drift(&server).await;
    assert_eq!(report["window_seconds"], 2.0);
    assert_eq!(report["samples"], 300);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let report = drift(&server).await;
    assert_eq!(report["samples"], 0, "{report}");
    assert_eq!(report["features"][0]["psi"], Value::Null);
    assert_eq!(report["features"][0]["status"], "insufficient");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_a_reference_says_so() {
    use sha2::Digest as _;
    // An artifact as trained before drift monitoring: the same payload, no reference.
    let mut payload = common::model_a().payload().clone();
    assert!(payload.drift.is_some(), "new models carry a reference");
    payload.drift = None;
    let body = serde_json::to_vec(&payload).unwrap();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(predict_buy_model::MAGIC);
    bytes.extend_from_slice(&payload.format_version.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&body);
    let sum = sha2::Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum);
    let old = predict_buy_model::Model::from_bytes(&bytes).expect("an old artifact loads");
    assert!(old.drift_reference().is_none());
    assert!(
        !String::from_utf8_lossy(&old.to_bytes()).contains("\"drift\""),
        "written back without the field, so its digest is unchanged"
    );

    let server = TestServer::start().await;
    common::write_model(&server.model_path, &bytes);
    let (status, body) = server.reload(Some(common::TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.post_json("/predict", &common::sample_row()).await;
    assert_eq!(status, 200);
    let report = drift(&server).await;
    assert_eq!(report["reference"], false, "{report}");
    assert!(
        report["note"].as_str().unwrap().contains("no reference"),
        "{report}"
    );
    assert_eq!(report["features"], json!([]));
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        !metrics
            .as_str()
            .unwrap()
            .contains("predict_buy_feature_drift_psi")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_without_a_model_is_not_ready() {
    let server = TestServer::with(Options {
        with_model: false,
        ..Options::default()
    })
    .await;
    let (status, body) = server.get("/drift").await;
    assert_eq!(status, 503, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_turns_counting_off() {
    let server = TestServer::with(Options {
        limits: predict_buy_serve::Limits {
            drift_window: Duration::ZERO,
            ..test_limits()
        },
        ..Options::default()
    })
    .await;
    send(&server, &traffic(107, |_| {})[..250]).await;
    let report = drift(&server).await;
    assert_eq!(report["samples"], 0, "{report}");
    assert_eq!(report["reference"], true);
    assert!(report["note"].as_str().unwrap().contains("off"), "{report}");
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        !metrics
            .as_str()
            .unwrap()
            .contains("predict_buy_feature_drift_psi")
    );
    server.stop().await;
}
