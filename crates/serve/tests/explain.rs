//! `POST /explain` and `/explain/batch` against a real server: the contributions add up
//! to the score and agree with `/predict`, bad input is refused exactly as `/predict`
//! refuses it, and a model from before explanations is named as the problem.

mod common;

use common::{TestServer, sample_row, write_model};
use serde_json::{Value, json};

fn sum_of(e: &Value) -> f64 {
    e["contributions"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum()
}

#[tokio::test]
async fn explanations_add_up_and_agree_with_predict() {
    let s = TestServer::start().await;
    let model = s.state.current().unwrap().model.clone();
    let fields: Vec<String> = model.input_fields().into_iter().map(|f| f.name).collect();
    let rows = [
        sample_row(),
        json!({"Gender":"Male","Age":"30","HasDrivingLicense":1,"RegionID":28.0,
               "Switch":null,"PastAccident":"No","AnnualPremium":"£131.50 "}),
    ];
    for row in &rows {
        let (status, e) = s.post_json("/explain", row).await;
        assert_eq!(status, 200, "{e}");
        let (_, p) = s.post_json("/predict", row).await;
        assert_eq!(e["probability"], p["probability"]);
        assert_eq!(e["predicted_class"], p["predicted_class"]);
        assert_eq!(e["model_version"], p["model_version"]);
        // Every input field, one-hot groups summed into their field.
        let keys: Vec<&String> = e["contributions"].as_object().unwrap().keys().collect();
        let mut want: Vec<&String> = fields.iter().collect();
        want.sort();
        let mut got = keys;
        got.sort();
        assert_eq!(got, want);
        let base = e["base_value"].as_f64().unwrap();
        let score = e["score"].as_f64().unwrap();
        assert!((base + sum_of(&e) - score).abs() < 1e-9, "{e}");
        assert_eq!(e["units"], "log_odds");
        let probability = e["probability"].as_f64().unwrap();
        assert!((1.0 / (1.0 + (-score).exp()) - probability).abs() < 1e-12);
        // The wire carries the model's own numbers.
        let direct = model.explain_json(row.as_object().unwrap()).unwrap();
        assert_eq!(score, direct.score);
    }

    let (status, batch) = s
        .post_json("/explain/batch", &json!({"instances": rows}))
        .await;
    assert_eq!(status, 200, "{batch}");
    let list = batch["explanations"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    for (row, e) in rows.iter().zip(list) {
        let (_, one) = s.post_json("/explain", row).await;
        assert_eq!(e["score"], one["score"]);
        assert_eq!(e["contributions"], one["contributions"]);
    }
    let (status, bare) = s.post_json("/explain/batch", &json!(rows)).await;
    assert_eq!(status, 200);
    assert_eq!(bare["explanations"], batch["explanations"]);
    s.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_exactly_as_predict_refuses_it() {
    let s = TestServer::start().await;
    let mut bad = sample_row();
    bad["Age"] = json!("old");
    bad.as_object_mut().unwrap().remove("Gender");
    let singles = [
        bad.clone(),
        json!([1, 2]),
        json!({"Age": {"nested": true}}),
        json!("text"),
    ];
    for body in &singles {
        let (ps, pb) = s.post_json("/predict", body).await;
        let (es, eb) = s.post_json("/explain", body).await;
        assert_eq!(ps, 422, "{pb}");
        assert_eq!((es, &eb), (ps, &pb), "{body}");
    }
    let batches = [
        json!({"instances": [sample_row(), bad, 3]}),
        json!({"instances": "no"}),
        json!({"rows": []}),
        json!(17),
    ];
    for body in &batches {
        let (ps, pb) = s.post_json("/predict/batch", body).await;
        let (es, eb) = s.post_json("/explain/batch", body).await;
        assert_eq!(ps, 422, "{pb}");
        assert_eq!((es, &eb), (ps, &pb), "{body}");
    }
    let (ps, pb) = s
        .post_raw("/predict", "application/json", b"{".to_vec())
        .await;
    let (es, eb) = s
        .post_raw("/explain", "application/json", b"{".to_vec())
        .await;
    assert_eq!((es, eb), (ps, pb));
    let (status, _) = s.post_raw("/explain", "text/plain", b"{}".to_vec()).await;
    assert_eq!(status, 415);
    s.stop().await;
}

/// Model A as a format-1 artifact: no cover, leaves summed in f32, and golden rows
/// recorded as such a model predicts them (so it passes its self-check).
fn format_1_artifact() -> Vec<u8> {
    use sha2::Digest as _;
    let frame = |payload: &Value| {
        let body = serde_json::to_vec(payload).unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(predict_buy_model::MAGIC);
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        let sum = sha2::Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    };
    let mut payload = serde_json::to_value(common::model_a().payload()).unwrap();
    payload["format_version"] = 1.into();
    let ensemble = payload["ensemble"].as_object_mut().unwrap();
    ensemble.remove("precision");
    for tree in ensemble["trees"].as_array_mut().unwrap() {
        tree.as_object_mut().unwrap().remove("cover");
    }
    let old = predict_buy_model::Model::from_bytes(&frame(&payload)).unwrap();
    for golden in payload["golden"].as_array_mut().unwrap() {
        let input = golden["input"].as_object().unwrap();
        golden["probability"] = old.predict_json(input).unwrap().probability.into();
    }
    frame(&payload)
}

#[tokio::test]
async fn a_model_from_before_explanations_is_named_not_blamed_on_the_request() {
    let s = TestServer::start().await;
    write_model(&s.model_path, &format_1_artifact());
    s.state.reload(true).await.expect("a format-1 model loads");
    let (status, p) = s.post_json("/predict", &sample_row()).await;
    assert_eq!(status, 200, "{p}");
    for (path, body) in [
        ("/explain", sample_row()),
        ("/explain/batch", json!([sample_row()])),
    ] {
        let (status, e) = s.post_json(path, &body).await;
        assert_eq!(status, 422, "{e}");
        assert_eq!(e["error"], "model_refused");
        assert_eq!(e["detail"][0]["field"], "model");
        let reason = e["detail"][0]["reason"].as_str().unwrap();
        assert!(reason.contains("predates explanations"), "{reason}");
        assert!(reason.contains("retrain"), "{reason}");
    }
    s.stop().await;
}
