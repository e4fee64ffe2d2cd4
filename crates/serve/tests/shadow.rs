//! A candidate beside the primary, over real HTTP with a real registry folder: a
//! shadow scores every instance and changes no answer, a canary answers its share by a
//! sticky hash of the request key, and a candidate that cannot load or misbehaves
//! costs the primary nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Options, TestServer, artifacts, eventually, sample_row};
use predict_buy_model::Model;
use predict_buy_registry::{
    CandidateMode, EnvName, Registry, RegistryUrl, ReleaseRecord, ReleaseTag, RequestKey,
};
use predict_buy_serve::{AppState, ModelSource, ShadowFault, canary_takes};
use serde_json::{Value, json};

async fn release(registry: &Registry, tag: &str, bytes: &[u8]) -> ReleaseTag {
    let pushed = registry.push_bytes(bytes.to_vec().into()).await.unwrap();
    let tag = ReleaseTag::parse(tag).unwrap();
    registry
        .create_release(&ReleaseRecord {
            tag: tag.clone(),
            model_digest: pushed.digest,
            image: None,
            git_commit: None,
            notes: String::new(),
            created_at: jiff::Timestamp::now(),
            created_by: "test".into(),
            metrics: Value::Null,
            golden: Vec::new(),
            training: None,
        })
        .await
        .unwrap();
    tag
}

struct Env {
    server: TestServer,
    registry: Arc<Registry>,
    env: EnvName,
}

/// A server following `nonprod`, which serves v1.0.0 (model A). v1.1.0 is model A
/// again, v2.0.0 is model B.
async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let url = RegistryUrl::parse(&format!("file://{}", dir.path().join("reg").display())).unwrap();
    let registry = Arc::new(Registry::open(&url).unwrap());
    let (a, b) = artifacts();
    let v1 = release(&registry, "v1.0.0", a).await;
    release(&registry, "v1.1.0", a).await;
    release(&registry, "v2.0.0", b).await;
    let env = EnvName::parse("nonprod").unwrap();
    registry
        .set_desired(&env, Some(&v1), "test", None)
        .await
        .unwrap();
    let state = AppState::new(
        ModelSource::Registry {
            registry: registry.clone(),
            env: env.clone(),
        },
        Options::default().limits,
        None,
    );
    state.reload(true).await.unwrap();
    let server = TestServer::serve(state, dir, Default::default()).await;
    Env {
        server,
        registry,
        env,
    }
}

impl Env {
    async fn set(&self, tag: &str, mode: CandidateMode) {
        self.registry
            .set_candidate(&self.env, &ReleaseTag::parse(tag).unwrap(), mode, "test")
            .await
            .unwrap();
    }

    async fn traffic(&self) -> Value {
        let (status, body) = self.server.get("/traffic").await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until `/traffic` lists `tag` in `role`.
    async fn wait_role(&self, tag: &str, role: &str) -> Value {
        eventually(&format!("{tag} as {role}"), || async {
            let t = self.traffic().await;
            let found = t["releases"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x["release"] == tag && x["role"] == role));
            found.then_some(t)
        })
        .await
    }

    /// POST, keeping the answer's exact bytes.
    async fn post(&self, path: &str, body: &[u8], key: Option<&str>) -> (u16, String) {
        let mut req = self
            .server
            .client
            .post(self.server.url(path))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(k) = key {
            req = req.header("x-request-id", k);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// Rows that reach both classes, and bodies the server refuses.
fn rows(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"Gender": if i.is_multiple_of(2) {"Male"} else {"Female"}, "Age": 20 + (i * 7) % 60,
                "HasDrivingLicense": 1, "RegionID": (i * 13 % 52) as f64, "Switch": i % 3 % 2,
                "PastAccident": if i.is_multiple_of(3) {"No"} else {"Yes"},
                "AnnualPremium": format!("£{},{:03}.50", 1 + i % 30, (i * 37) % 1000)})
        })
        .collect()
}

/// The same requests every time: singles, batches, and refusals of each kind.
fn requests() -> Vec<(&'static str, Vec<u8>)> {
    let mut out: Vec<(&str, Vec<u8>)> = rows(40)
        .iter()
        .map(|r| ("/predict", serde_json::to_vec(r).unwrap()))
        .collect();
    out.push((
        "/predict/batch",
        serde_json::to_vec(&json!({"instances": rows(25)})).unwrap(),
    ));
    out.push(("/predict", br#"{"Age": "old"}"#.to_vec()));
    out.push(("/predict", br#"{"Age": 40"#.to_vec()));
    out.push(("/predict", b"[1,2]".to_vec()));
    out.push((
        "/predict/batch",
        serde_json::to_vec(&json!({"instances": [sample_row(), {"Age": []}, 3]})).unwrap(),
    ));
    out
}

/// Valid instances among [`requests`]: 40 singles and a batch of 25.
const VALID_INSTANCES: u64 = 65;

async fn answers(e: &Env) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for (path, body) in requests() {
        out.push(e.post(path, &body, None).await);
    }
    out
}

#[tokio::test]
async fn an_identical_shadow_agrees_and_no_answer_or_error_changes() {
    let e = env().await;
    let before = answers(&e).await;
    assert!(before.iter().any(|(s, _)| *s == 422) && before.iter().any(|(s, _)| *s == 400));
    e.set("v1.1.0", CandidateMode::Shadow).await;
    e.wait_role("v1.1.0", "shadow").await;
    let during = answers(&e).await;
    // Byte for byte: statuses, bodies, 4xx details and the primary's model_version.
    assert_eq!(before, during);
    let t = eventually("every valid instance compared", || async {
        let t = e.traffic().await;
        (t["shadow"]["compared"] == VALID_INSTANCES).then_some(t)
    })
    .await;
    let s = &t["shadow"];
    assert_eq!(
        (s["primary"].as_str(), s["shadow"].as_str()),
        (Some("v1.0.0"), Some("v1.1.0"))
    );
    assert_eq!(s["confusion"][0][1], 0);
    assert_eq!(s["confusion"][1][0], 0);
    assert_eq!(s["abs_delta"]["sum"], 0.0);
    assert_eq!(s["skipped"], 0);
    let primary = &t["releases"][0];
    assert_eq!(primary["role"], "primary");
    // 41 valid requests and 4 refused, counted since the pair began.
    assert_eq!(
        (primary["requests"].as_u64(), primary["rejected"].as_u64()),
        (Some(45), Some(4))
    );
    assert_eq!(primary["instances"], VALID_INSTANCES);
    let shadow = &t["releases"][1];
    assert_eq!(
        (shadow["instances"].as_u64(), shadow["errors"].as_u64()),
        (Some(VALID_INSTANCES), Some(0))
    );
    assert_eq!(shadow["positives"], primary["positives"]);
    let (_, metrics) = e.server.get("/metrics").await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains(&format!(
            "predict_buy_shadow_compared_total{{primary=\"v1.0.0\",shadow=\"v1.1.0\"}} {VALID_INSTANCES}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "predict_buy_shadow_agreed_total{{primary=\"v1.0.0\",shadow=\"v1.1.0\"}} {VALID_INSTANCES}"
    )));
    assert!(
        metrics
            .contains("predict_buy_release_requests_total{release=\"v1.0.0\",role=\"primary\"} 45")
    );
    // Stopping drops the shadow and starts the primary's counts afresh.
    e.registry.clear_candidate(&e.env).await.unwrap();
    let t = eventually("the shadow to go", || async {
        let t = e.traffic().await;
        (t["releases"].as_array().map(Vec::len) == Some(1)).then_some(t)
    })
    .await;
    assert_eq!(t["shadow"], Value::Null);
    assert_eq!(t["releases"][0]["requests"], 0);
    e.server.stop().await;
}

#[tokio::test]
async fn a_different_model_disagrees_exactly_where_the_models_do() {
    let e = env().await;
    e.set("v2.0.0", CandidateMode::Shadow).await;
    e.wait_role("v2.0.0", "shadow").await;
    let (a, b) = (
        Model::from_bytes(&artifacts().0).unwrap(),
        Model::from_bytes(&artifacts().1).unwrap(),
    );
    let mut confusion = [[0u64; 2]; 2];
    let mut delta = 0.0;
    let rows = rows(150);
    for row in &rows {
        let (status, body) = e
            .post("/predict", &serde_json::to_vec(row).unwrap(), None)
            .await;
        assert_eq!(status, 200, "{body}");
        let got: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(got["model_version"], "v1.0.0");
        let record = row.as_object().unwrap();
        let (pa, pb) = (
            a.predict_json(record).unwrap(),
            b.predict_json(record).unwrap(),
        );
        assert_eq!(got["probability"], pa.probability);
        confusion[usize::from(pa.predicted_class)][usize::from(pb.predicted_class)] += 1;
        delta += (pa.probability - pb.probability).abs();
    }
    let t = eventually("150 compared", || async {
        let t = e.traffic().await;
        (t["shadow"]["compared"] == 150).then_some(t)
    })
    .await;
    assert_eq!(t["shadow"]["confusion"], json!(confusion));
    let sum = t["shadow"]["abs_delta"]["sum"].as_f64().unwrap();
    assert!((sum - delta).abs() < 1e-6, "{sum} vs {delta}");
    assert!(
        delta > 0.0,
        "the two models must differ for this test to mean anything"
    );
    e.server.stop().await;
}

#[tokio::test]
async fn a_candidate_that_cannot_load_leaves_the_primary_alone_and_says_why() {
    let e = env().await;
    release(
        &e.registry,
        "v3.0.0",
        &common::self_check_failing_artifact(),
    )
    .await;
    e.set("v3.0.0", CandidateMode::Shadow).await;
    let t = eventually("the candidate's load error", || async {
        let t = e.traffic().await;
        t["candidate_error"].is_object().then_some(t)
    })
    .await;
    let err = &t["candidate_error"];
    assert_eq!(
        (err["release"].as_str(), err["mode"].as_str()),
        (Some("v3.0.0"), Some("shadow"))
    );
    assert!(
        err["error"].as_str().unwrap().contains("self-check"),
        "{err}"
    );
    assert_eq!(t["releases"].as_array().unwrap().len(), 1);
    let (status, body) = e.server.post_json("/predict", &sample_row()).await;
    assert_eq!(
        (status, body["model_version"].as_str()),
        (200, Some("v1.0.0"))
    );
    let (_, metrics) = e.server.get("/metrics").await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("predict_buy_candidate_load_failed{release=\"v3.0.0\",mode=\"shadow\"} 1")
    );
    // The record goes: so does the error.
    e.registry.clear_candidate(&e.env).await.unwrap();
    eventually("the error to clear", || async {
        e.traffic().await["candidate_error"].is_null().then_some(())
    })
    .await;
    e.server.stop().await;
}

#[tokio::test]
async fn a_panicking_or_slow_shadow_is_counted_while_the_primary_answers() {
    let e = env().await;
    e.set("v2.0.0", CandidateMode::Shadow).await;
    e.wait_role("v2.0.0", "shadow").await;
    let state = e.server.state.clone();
    state.set_shadow_fault(Some(ShadowFault::Panic));
    let body = serde_json::to_vec(&sample_row()).unwrap();
    let (_, reference) = e.post("/predict", &body, None).await;
    for _ in 0..9 {
        assert_eq!(
            e.post("/predict", &body, None).await,
            (200, reference.clone())
        );
    }
    let t = eventually("10 shadow failures", || async {
        let t = e.traffic().await;
        (t["releases"][1]["errors"] == 10).then_some(t)
    })
    .await;
    assert_eq!(t["shadow"]["compared"], 0);
    // Slow: 40 ms a request against a 5 ms budget. The primary does not wait: ten
    // answers come back long before ten shadow scorings could finish.
    state.set_shadow_budget(Duration::from_millis(5));
    state.set_shadow_fault(Some(ShadowFault::Delay(Duration::from_millis(40))));
    let start = std::time::Instant::now();
    for _ in 0..10 {
        assert_eq!(
            e.post("/predict", &body, None).await,
            (200, reference.clone())
        );
    }
    let took = start.elapsed();
    eventually("20 shadow failures", || async {
        (e.traffic().await["releases"][1]["errors"] == 20).then_some(())
    })
    .await;
    assert!(
        took < Duration::from_millis(400),
        "the primary waited for the shadow: {took:?}"
    );
    state.set_shadow_fault(None);
    e.post("/predict", &body, None).await;
    eventually("a comparison once healthy", || async {
        (e.traffic().await["shadow"]["compared"] == 1).then_some(())
    })
    .await;
    e.server.stop().await;
}

#[tokio::test]
async fn a_canary_answers_its_share_and_one_key_meets_one_release() {
    let e = env().await;
    e.set(
        "v2.0.0",
        CandidateMode::Canary {
            percent: 30.0,
            key: RequestKey::default(),
        },
    )
    .await;
    e.wait_role("v2.0.0", "canary").await;
    let body = serde_json::to_vec(&sample_row()).unwrap();
    let n = 2_000;
    let mut canary = 0;
    let mut expected = 0;
    for i in 0..n {
        let key = format!("customer-{i}");
        let (status, text) = e.post("/predict", &body, Some(&key)).await;
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let by_candidate = v["model_version"] == "v2.0.0";
        canary += usize::from(by_candidate);
        // The server's choice is exactly the published hash's.
        assert_eq!(by_candidate, canary_takes(key.as_bytes(), 30.0), "{key}");
        expected += usize::from(canary_takes(key.as_bytes(), 30.0));
    }
    assert_eq!(canary, expected);
    let share = canary as f64 / n as f64;
    assert!((0.27..=0.33).contains(&share), "canary share {share}");
    // Sticky: one key, one release, every time.
    for key in ["customer-7", "customer-8", "customer-9"] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..10 {
            let (_, text) = e.post("/predict", &body, Some(key)).await;
            let v: Value = serde_json::from_str(&text).unwrap();
            seen.insert(v["model_version"].as_str().unwrap().to_string());
        }
        assert_eq!(seen.len(), 1, "{key} met {seen:?}");
    }
    // Without a key: a random draw, counted.
    for _ in 0..20 {
        assert_eq!(e.post("/predict", &body, None).await.0, 200);
    }
    let t = e.traffic().await;
    let (p, c) = (&t["releases"][0], &t["releases"][1]);
    assert_eq!(c["role"], "canary");
    let unkeyed = p["unkeyed"].as_u64().unwrap() + c["unkeyed"].as_u64().unwrap();
    assert_eq!(unkeyed, 20);
    assert_eq!(
        p["requests"].as_u64().unwrap() + c["requests"].as_u64().unwrap(),
        2_050
    );
    assert_eq!(t["shadow"], Value::Null);
    e.server.stop().await;
}
