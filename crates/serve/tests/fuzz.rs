//! Property tests of the request path: whatever bytes, JSON or headers a client sends,
//! the answer is never a 5xx, and a 4xx always carries a JSON body naming a field.
//! Runs the router in-process (`oneshot`) for speed.

mod common;

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use predict_buy_serve::{AppState, Limits, ModelSource};
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt as _;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

fn state() -> &'static AppState {
    static STATE: OnceLock<AppState> = OnceLock::new();
    STATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("model.pbm");
        common::write_model(&path, &common::artifacts().0);
        let state = AppState::new(
            ModelSource::File(path),
            Limits {
                body_bytes: 16 * 1024,
                batch_instances: 8,
                ..common::test_limits()
            },
            Some(common::TOKEN.into()),
        );
        runtime().block_on(state.reload(true)).unwrap();
        state
    })
}

fn send(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let state = state().clone();
    runtime().block_on(async {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let response = predict_buy_serve::app(state)
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    })
}

fn check(status: StatusCode, body: &Value, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(!status.is_server_error(), "{what} → {status} {body}");
    if status.is_client_error() {
        let detail = body["detail"].as_array();
        prop_assert!(
            detail.is_some_and(|d| !d.is_empty()),
            "{what} → {status} {body}"
        );
        for p in detail.unwrap() {
            prop_assert!(p["field"].is_string() && p["reason"].is_string(), "{body}");
        }
    }
    Ok(())
}

/// Any JSON value, with a bias towards the shapes and values that matter here.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        prop_oneof![
            Just("NaN".to_string()),
            Just("inf".to_string()),
            Just("-Infinity".to_string()),
            Just("£2,305.40".to_string()),
            Just("1e400".to_string()),
            Just("".to_string()),
            Just("Female".to_string()),
            ".*",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Gender".to_string()),
        Just("Age".to_string()),
        Just("HasDrivingLicense".to_string()),
        Just("RegionID".to_string()),
        Just("Switch".to_string()),
        Just("PastAccident".to_string()),
        Just("AnnualPremium".to_string()),
        Just("instances".to_string()),
        "[a-zA-Z]{0,6}",
    ]
}

/// A valid row with some fields replaced by arbitrary values.
fn mutated_row() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((field_name(), json_value()), 0..5),
        prop::collection::vec(field_name(), 0..3),
    )
        .prop_map(|(set, remove)| {
            let mut row = common::sample_row();
            let obj = row.as_object_mut().unwrap();
            for k in remove {
                obj.remove(&k);
            }
            for (k, v) in set {
                obj.insert(k, v);
            }
            row
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_cause_a_5xx(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        path in prop_oneof![Just("/predict"), Just("/predict/batch"), Just("/admin/reload"), Just("/"), Just("/x")],
        ct in prop_oneof![Just(Some("application/json")), Just(None), Just(Some("text/plain")), Just(Some("application/json; charset=latin1"))],
    ) {
        let (status, answer) = send("POST", path, ct, body);
        check(status, &answer, path)?;
    }

    #[test]
    fn arbitrary_json_never_causes_a_5xx(value in json_value()) {
        for path in ["/predict", "/predict/batch"] {
            let (status, answer) = send("POST", path, Some("application/json"), serde_json::to_vec(&value).unwrap());
            check(status, &answer, &value.to_string())?;
        }
    }

    #[test]
    fn mutated_rows_are_answered_or_refused_by_field(row in mutated_row()) {
        let (status, answer) = send("POST", "/predict", Some("application/json"), serde_json::to_vec(&row).unwrap());
        check(status, &answer, &row.to_string())?;
        prop_assert!(status == StatusCode::OK || status == StatusCode::UNPROCESSABLE_ENTITY, "{row} → {status}");
        if status == StatusCode::OK {
            let p = answer["probability"].as_f64().unwrap();
            prop_assert!((0.0..=1.0).contains(&p));
        }
        let batch = json!({"instances": [row.clone(), row]});
        let (bstatus, banswer) = send("POST", "/predict/batch", Some("application/json"), serde_json::to_vec(&batch).unwrap());
        check(bstatus, &banswer, "batch")?;
        prop_assert_eq!(bstatus, status, "batch and single agree");
        if status == StatusCode::OK {
            // /predict's fast path and the batch's general path give the same answer.
            prop_assert_eq!(&banswer["predictions"][0]["probability"], &answer["probability"]);
            prop_assert_eq!(&banswer["predictions"][0]["predicted_class"], &answer["predicted_class"]);
        }
    }
}
