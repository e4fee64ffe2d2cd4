//! The HTTP contract against a real server on an ephemeral port.

mod common;

use common::{TestServer, fields, sample_row};
use serde_json::{Value, json};

#[tokio::test]
async fn original_sample_requests_are_answered() {
    let s = TestServer::start().await;
    let version = s.state.current().unwrap().version.clone();
    assert_eq!(
        version.len(),
        12,
        "model_version is the short digest for a file"
    );

    let (status, root) = s.get("/").await;
    assert_eq!(status, 200);
    assert_eq!(root["health_check"], "OK");
    assert_eq!(root["model_version"], version.as_str());

    let rows = [
        sample_row(),
        json!({"Gender":"Male","Age":30,"HasDrivingLicense":1,"RegionID":28.0,
               "Switch":-1,"PastAccident":"Unknown","AnnualPremium":"£2,305.40"}),
        json!({"Gender":"Female","Age":"46","HasDrivingLicense":"1","RegionID":"21.0",
               "Switch":"0","PastAccident":"Yes","AnnualPremium":"2305.40"}),
        // Missing values (null) are imputed; unknown categories are allowed.
        json!({"Gender":null,"Age":null,"HasDrivingLicense":null,"RegionID":null,
               "Switch":null,"PastAccident":"Maybe","AnnualPremium":null}),
        // A raw-data row as the original clients sent them: extra columns, an empty
        // category, a null, a padded currency string.
        json!({"id":163611,"Gender":"","Age":69,"HasDrivingLicense":1,"RegionID":31,
               "Switch":null,"VehicleAge":"1-2 Year","PastAccident":"Yes",
               "AnnualPremium":"£131.50 ","SalesChannelID":154,"DaysSinceCreated":199,"Result":0}),
        json!({"Gender":"Nonbinary","Age":85,"HasDrivingLicense":0,"RegionID":52,
               "Switch":1,"PastAccident":"No","AnnualPremium":"£131.50 ", "extra": "ignored"}),
    ];
    for row in rows {
        let (status, body) = s.post_json("/predict", &row).await;
        assert_eq!(status, 200, "{row} → {body}");
        let class = body["predicted_class"].as_u64().unwrap();
        assert!(class <= 1);
        let p = body["probability"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{p}");
        assert_eq!(body["model_version"], version.as_str());
        // The server answers what the model itself predicts.
        let expected = s
            .state
            .current()
            .unwrap()
            .model
            .predict_json(row.as_object().unwrap())
            .unwrap();
        assert_eq!(p, expected.probability);
        assert_eq!(class, u64::from(expected.predicted_class));
    }
    s.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_naming_each_field() {
    let s = TestServer::start().await;
    let with = |changes: Value| {
        let mut row = sample_row();
        for (k, v) in changes.as_object().unwrap() {
            row[k] = v.clone();
        }
        row
    };
    let without = |field: &str| {
        let mut row = sample_row();
        row.as_object_mut().unwrap().remove(field);
        row
    };
    // (body, expected status, expected bad fields)
    let cases: Vec<(Value, u16, Vec<&str>)> = vec![
        (with(json!({"Age": 150})), 422, vec!["Age"]),
        (with(json!({"Age": -1})), 422, vec!["Age"]),
        (with(json!({"Age": "old"})), 422, vec!["Age"]),
        (with(json!({"Age": "NaN"})), 422, vec!["Age"]),
        (with(json!({"Age": "inf"})), 422, vec!["Age"]),
        (with(json!({"Age": [46]})), 422, vec!["Age"]),
        (with(json!({"Gender": {"x": 1}})), 422, vec!["Gender"]),
        (
            with(json!({"AnnualPremium": -5})),
            422,
            vec!["AnnualPremium"],
        ),
        (
            with(json!({"AnnualPremium": "-£5.00"})),
            422,
            vec!["AnnualPremium"],
        ),
        (
            with(json!({"AnnualPremium": "Infinity"})),
            422,
            vec!["AnnualPremium"],
        ),
        (with(json!({"RegionID": -3})), 422, vec!["RegionID"]),
        (without("Age"), 422, vec!["Age"]),
        (
            with(json!({"Age": 200, "AnnualPremium": "lots"})),
            422,
            vec!["Age", "AnnualPremium"],
        ),
        (
            json!({}),
            422,
            vec![
                "Gender",
                "Age",
                "HasDrivingLicense",
                "RegionID",
                "Switch",
                "PastAccident",
                "AnnualPremium",
            ],
        ),
        (json!([1, 2]), 422, vec!["body"]),
        (json!("text"), 422, vec!["body"]),
        (json!(null), 422, vec!["body"]),
    ];
    for (body, status, expected) in cases {
        let (got, answer) = s.post_json("/predict", &body).await;
        assert_eq!(got, status, "{body} → {answer}");
        assert_eq!(fields(&answer), expected, "{body} → {answer}");
        assert_eq!(answer["error"], "invalid_input");
        for p in answer["detail"].as_array().unwrap() {
            assert!(!p["reason"].as_str().unwrap().is_empty(), "{answer}");
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn malformed_json_wrong_type_and_oversize_bodies() {
    let s = TestServer::with(common::Options {
        limits: predict_buy_serve::Limits {
            body_bytes: 4096,
            ..common::test_limits()
        },
        ..Default::default()
    })
    .await;
    for raw in [
        &b"{"[..],
        b"{\"Age\": }",
        b"",
        b"\xff\xfe",
        b"{\"Age\": NaN}",
        b"[1,]",
    ] {
        let (status, body) = s
            .post_raw("/predict", "application/json", raw.to_vec())
            .await;
        assert_eq!(status, 400, "{raw:?} → {body}");
        assert_eq!(fields(&body), ["body"]);
        assert_eq!(body["error"], "malformed_json");
    }
    let row = serde_json::to_vec(&sample_row()).unwrap();
    for ct in ["text/plain", "application/x-www-form-urlencoded", ""] {
        let (status, body) = s.post_raw("/predict", ct, row.clone()).await;
        assert_eq!(status, 415, "content-type {ct:?} → {body}");
        assert_eq!(fields(&body), ["content-type"]);
    }
    let (status, _) = s
        .post_raw("/predict", "application/json; charset=utf-8", row.clone())
        .await;
    assert_eq!(status, 200);

    // Over the body limit, with the length announced or not.
    let mut big = sample_row();
    big["padding"] = Value::String("x".repeat(10_000));
    let (status, body) = s.post_json("/predict", &big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "payload_too_large");
    // Chunked, so the server learns the size only while reading.
    let mut req = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        req.extend_from_slice(format!("{:x}\r\n", 3000).as_bytes());
        req.extend_from_slice(&[b' '; 3000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let answer = common::raw_http(s.addr, &req).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    s.stop().await;
}

#[tokio::test]
async fn batch_predictions_are_bounded() {
    let s = TestServer::with(common::Options {
        limits: predict_buy_serve::Limits {
            batch_instances: 3,
            ..common::test_limits()
        },
        ..Default::default()
    })
    .await;
    let row = sample_row();
    let (status, body) = s
        .post_json("/predict/batch", &json!({"instances": [row, row]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"].as_array().unwrap().len(), 2);
    let single = s.post_json("/predict", &row).await.1;
    assert_eq!(body["predictions"][0]["probability"], single["probability"]);
    let (status, body) = s.post_json("/predict/batch", &json!([row])).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = s
        .post_json("/predict/batch", &json!([row, row, row, row]))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(fields(&body), ["instances"]);

    let mut bad = row.clone();
    bad["Age"] = json!(999);
    let (status, body) = s
        .post_json("/predict/batch", &json!({"instances": [row, bad, 5]}))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(fields(&body), ["instances[1].Age", "instances[2]"]);
    let (status, body) = s.post_json("/predict/batch", &json!({"rows": []})).await;
    assert_eq!(status, 422);
    assert_eq!(fields(&body), ["instances"]);
    s.stop().await;
}

#[tokio::test]
async fn readiness_follows_the_model() {
    let s = TestServer::with(common::Options {
        with_model: false,
        ..Default::default()
    })
    .await;
    assert_eq!(s.get("/healthz").await.0, 200);
    let (status, body) = s.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(s.post_json("/predict", &sample_row()).await.0, 503);
    assert_eq!(s.get("/").await.1["model_version"], Value::Null);

    common::write_model(&s.model_path, &common::artifacts().0);
    let (status, body) = s.reload(Some(common::TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "swapped");
    let (status, body) = s.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.post_json("/predict", &sample_row()).await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn model_metadata_openapi_and_request_ids() {
    let s = TestServer::start().await;
    let (status, m) = s.get("/model").await;
    assert_eq!(status, 200);
    let digest = s.state.current().unwrap().digest.clone();
    assert_eq!(m["digest"], digest.as_str());
    assert_eq!(m["release"], Value::Null);
    let names: Vec<&str> = m["input_schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Gender",
            "Age",
            "HasDrivingLicense",
            "RegionID",
            "Switch",
            "PastAccident",
            "AnnualPremium"
        ]
    );
    assert_eq!(m["input_schema"][1]["max"], 120.0);
    assert!(m["threshold"]["value"].as_f64().is_some());
    assert!(m["metrics"]["roc_auc"].as_f64().is_some(), "{m}");

    let (status, doc) = s.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/predict"]["post"].is_object());
    assert!(doc["components"]["schemas"]["PredictResponse"].is_object());

    let r = s.client.get(s.url("/")).send().await.unwrap();
    assert!(r.headers().contains_key("x-request-id"));
    let r = s
        .client
        .get(s.url("/"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");

    let (status, body) = s.get("/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    s.stop().await;
}

#[tokio::test]
async fn metrics_show_the_golden_signals() {
    let s = TestServer::start().await;
    for _ in 0..3 {
        assert_eq!(s.post_json("/predict", &sample_row()).await.0, 200);
    }
    assert_eq!(s.post_json("/predict", &json!({})).await.0, 422);
    let text = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let digest = s.state.current().unwrap().digest.clone();
    for needle in [
        "http_requests_total{route=\"/predict\",status=\"200\"}",
        "http_requests_total{route=\"/predict\",status=\"422\"}",
        "http_request_duration_seconds_bucket{route=\"/predict\",le=\"0.001\"}",
        "http_requests_in_flight",
        "http_concurrency_limit",
        "http_requests_shed_total",
        "predictions_total{class=",
        &format!("digest=\"{digest}\""),
        "model_info{",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
    let count: f64 = text
        .lines()
        .filter(|l| l.starts_with("http_requests_total{route=\"/predict\",status=\"200\"}"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(count >= 3.0, "{count}");
    s.stop().await;
}

/// A known route asked with the wrong method is a 405 with the error body and an
/// `Allow` header, never a 404 (the route exists) or a 500.
#[tokio::test]
async fn wrong_methods_get_405_with_allow() {
    let s = TestServer::start().await;
    // (method, path, the methods `Allow` must list)
    let cases: [(&str, &str, &[&str]); 7] = [
        ("GET", "/predict", &["POST"]),
        ("PUT", "/predict", &["POST"]),
        ("DELETE", "/predict/batch", &["POST"]),
        ("POST", "/", &["GET", "HEAD"]),
        ("PATCH", "/metrics", &["GET", "HEAD"]),
        ("POST", "/openapi.json", &["GET", "HEAD"]),
        ("GET", "/admin/reload", &["POST"]),
    ];
    for (method, path, allowed) in cases {
        let r = s
            .client
            .request(method.parse().unwrap(), s.url(path))
            .send()
            .await
            .unwrap();
        let what = format!("{method} {path}");
        assert_eq!(r.status().as_u16(), 405, "{what}");
        assert_eq!(r.headers()["content-type"], "application/json", "{what}");
        let allow = r
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("{what}: no Allow header"))
            .to_str()
            .unwrap()
            .to_string();
        let mut listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        listed.sort_unstable();
        assert_eq!(listed, allowed, "{what}: Allow: {allow}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed", "{what}: {body}");
        assert_eq!(fields(&body), ["request"], "{what}: {body}");
    }
    // The right method on the same routes still works.
    assert_eq!(s.post_json("/predict", &sample_row()).await.0, 200);
    assert_eq!(s.get("/metrics").await.0, 200);
    s.stop().await;
}
