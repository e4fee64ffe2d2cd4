//! The handlers and the OpenAPI document generated from their types.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use predict_buy_api::{BatchPrediction, BatchResponse, HEALTH_OK, PredictResponse, RootResponse};
use predict_buy_model::{InputField, Prediction};
use serde::Serialize;
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

use crate::batch::Instance;
use crate::candidate::CanaryKey;
use crate::error::{ApiError, ErrorBody, FieldProblem, JsonBody, JsonBytes, problem};
use crate::state::{AppState, LoadedModel, ReloadOutcome, Slot};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "predict-buy",
        description = "Predicts whether an insurance customer buys. Compatible with the original FastAPI service."
    ),
    paths(
        root,
        predict,
        predict_batch,
        healthz,
        readyz,
        model_info,
        crate::report::model_report,
        metrics,
        crate::drift::drift,
        reload,
        crate::explain::explain,
        crate::explain::explain_batch
    ),
    components(schemas(
        PredictRequest,
        PredictResponse,
        BatchRequest,
        BatchResponse,
        BatchPrediction,
        RootResponse,
        ModelInfo,
        InputFieldDoc,
        ReloadResponse,
        ErrorBody,
        FieldProblem,
        predict_buy_api::LocItem,
        crate::explain::ExplainResponse,
        crate::explain::ExplainBatchResponse,
        crate::explain::ExplanationBody,
        predict_buy_api::DriftReport,
        predict_buy_api::FeatureDrift,
        predict_buy_api::Distribution,
        predict_buy_api::Bin,
        predict_buy_api::BinKind,
        predict_buy_api::DriftStatus
    ))
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/", responses((status = 200, body = RootResponse)))]
pub(crate) async fn root(State(state): State<AppState>) -> Response {
    state.with_current(|m| {
        json(
            StatusCode::OK,
            &RootResponse {
                health_check: HEALTH_OK.into(),
                model_version: m.map(|m| m.version.as_str().into()),
                release: m.and_then(|m| m.release.as_ref().map(|t| t.to_string().into())),
                model_digest: m.map(|m| m.digest.as_str().into()),
            },
        )
    })
}

/// One record, as the original API took it. Numbers may also be sent as strings
/// (`"2305.40"`, `"£2,305.40"`); `null` means missing and is imputed; unknown category
/// values are allowed. The exact fields are those of the loaded model (`GET /model`).
#[derive(ToSchema)]
#[schema(example = json!({"Gender": "Female", "Age": 46, "HasDrivingLicense": 1,
    "RegionID": 21.0, "Switch": 0, "PastAccident": "Yes", "AnnualPremium": 2305.4}))]
#[allow(dead_code, non_snake_case)]
pub struct PredictRequest {
    #[schema(example = "Female")]
    Gender: Option<String>,
    /// 0–120.
    #[schema(value_type = Option<f64>)]
    Age: Option<Value>,
    #[schema(value_type = Option<f64>)]
    HasDrivingLicense: Option<Value>,
    #[schema(value_type = Option<f64>)]
    RegionID: Option<Value>,
    /// Previously insured: 1, 0, or -1 for unknown.
    #[schema(value_type = Option<f64>)]
    Switch: Option<Value>,
    #[schema(example = "Yes")]
    PastAccident: Option<String>,
    /// Pounds, at least 0; `2305.4`, `"2305.40"` or `"£2,305.40"`.
    #[schema(value_type = Option<f64>)]
    AnnualPremium: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/predict",
    request_body = PredictRequest,
    responses(
        (status = 200, body = PredictResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Bad fields, each named", body = ErrorBody),
        (status = 503, description = "No model yet, or at capacity", body = ErrorBody),
    )
)]
pub(crate) async fn predict(
    State(state): State<AppState>,
    key: CanaryKey,
    JsonBytes(bytes): JsonBytes,
) -> Result<Response, ApiError> {
    let _slot = Slot::take(&state)?;
    // The candidate's hook: which release answers, its counters, the shadow's copy.
    crate::candidate::predict(&state, &key, &bytes, |m| predict_with(&state, m, &bytes))
}

/// `/predict`'s answer from model `m` (`None`: nothing loaded yet), with the
/// prediction it carries. The answering model's drift counters see the instance.
fn predict_with(
    state: &AppState,
    m: Option<&LoadedModel>,
    bytes: &[u8],
) -> Result<(Response, Prediction), ApiError> {
    let fast = m.and_then(|m| {
        let p = crate::fast::predict(&m.model, &m.fields, bytes, |values, p| {
            if let Some(d) = state.drift_of(m) {
                d.observe(values, p);
            }
        })?;
        state.metrics().predicted(p.predicted_class);
        Some((
            json(
                StatusCode::OK,
                &PredictResponse {
                    predicted_class: p.predicted_class,
                    probability: p.probability,
                    model_version: m.version.as_str().into(),
                },
            ),
            p,
        ))
    });
    if let Some(answer) = fast {
        return Ok(answer);
    }
    // The general path: same answers, plus every error in detail.
    let JsonBody(body) = JsonBody::parse(bytes)?;
    let Value::Object(record) = &body else {
        return Err(ApiError::invalid(
            "body",
            format!(
                "expected a JSON object of input fields, found {}",
                kind_of(&body)
            ),
        ));
    };
    let m = m.ok_or(ApiError::NotReady)?;
    let p = m.model.predict_json(record).map_err(|errors| {
        ApiError::Invalid(
            errors
                .into_iter()
                .map(|e| problem(e.field, e.reason))
                .collect(),
        )
    })?;
    if let Some(d) = state.drift_of(m) {
        d.observe_json(record, &p);
    }
    state.metrics().predicted(p.predicted_class);
    Ok((
        json(
            StatusCode::OK,
            &PredictResponse {
                predicted_class: p.predicted_class,
                probability: p.probability,
                model_version: m.version.as_str().into(),
            },
        ),
        p,
    ))
}

/// Either `{"instances": [record, …]}` or a bare array of records.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchRequest {
    instances: Vec<PredictRequest>,
}

#[utoipa::path(
    post,
    path = "/predict/batch",
    request_body = BatchRequest,
    responses(
        (status = 200, body = BatchResponse),
        (status = 400, body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, description = "Bad fields, named `instances[i].Field`, or more instances than the limit", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub(crate) async fn predict_batch(
    State(state): State<AppState>,
    key: CanaryKey,
    JsonBytes(bytes): JsonBytes,
) -> Result<Response, ApiError> {
    let _slot = Slot::take(&state)?;
    // The candidate's hook, as in `predict`.
    crate::candidate::predict_batch(&state, &key, &bytes, |m| {
        predict_batch_with(&state, m, &bytes)
    })
}

/// `/predict/batch`'s answer from model `m`, with its predictions.
fn predict_batch_with(
    state: &AppState,
    m: Option<&LoadedModel>,
    bytes: &[u8],
) -> Result<(Response, Vec<Prediction>), ApiError> {
    let instances = crate::batch::parse(bytes, state.limits().batch_instances)?;
    {
        let m = m.ok_or(ApiError::NotReady)?;
        let mut problems = Vec::new();
        let mut predictions = Vec::with_capacity(instances.len());
        for (i, item) in instances.iter().enumerate() {
            let record = match item {
                Instance::Record(record) => record,
                Instance::Other(kind) => {
                    problems.push(problem(
                        format!("instances[{i}]"),
                        format!("expected a JSON object, found {kind}"),
                    ));
                    continue;
                }
            };
            match m.model.predict_json(record) {
                Ok(p) => predictions.push(p),
                Err(errors) => problems.extend(
                    errors
                        .into_iter()
                        .map(|e| problem(format!("instances[{i}].{}", e.field), e.reason)),
                ),
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::Invalid(problems));
        }
        for p in &predictions {
            state.metrics().predicted(p.predicted_class);
        }
        if let Some(d) = state.drift_of(m) {
            // Every instance is a record here: any other was a problem above.
            let records = instances.iter().filter_map(|i| match i {
                Instance::Record(r) => Some(r),
                Instance::Other(_) => None,
            });
            for (record, p) in records.zip(&predictions) {
                d.observe_json(record, p);
            }
        }
        let response = json(
            StatusCode::OK,
            &BatchResponse {
                predictions: predictions.iter().map(batch_prediction).collect(),
                model_version: m.version.as_str().into(),
            },
        );
        Ok((response, predictions))
    }
}

fn batch_prediction(p: &Prediction) -> BatchPrediction {
    BatchPrediction {
        predicted_class: p.predicted_class,
        probability: p.probability,
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "Alive")))]
pub(crate) async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// Readiness: a model is loaded and the server is not shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    responses((status = 200, description = "A model serves"), (status = 503, body = ErrorBody))
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(ApiError::Draining);
    }
    state.with_current(|m| {
        let m = m.ok_or(ApiError::NotReady)?;
        Ok(json(
            StatusCode::OK,
            &serde_json::json!({"status": "ready", "model_version": m.version}),
        ))
    })
}

/// One input field of the loaded model.
#[derive(Serialize, ToSchema)]
pub struct InputFieldDoc {
    name: String,
    /// `number` or `category`.
    kind: String,
    min: Option<f64>,
    max: Option<f64>,
    /// Known categories; others are accepted and ignored.
    categories: Option<Vec<String>>,
}

/// What serves: release, digest, input schema, metrics, threshold.
#[derive(Serialize, ToSchema)]
pub struct ModelInfo {
    model_version: String,
    /// The release tag when served from a registry.
    release: Option<String>,
    digest: String,
    source: String,
    loaded_at: String,
    #[schema(value_type = Vec<InputFieldDoc>)]
    input_schema: Vec<InputField>,
    /// Evaluation metrics recorded at training time.
    #[schema(value_type = Option<Object>)]
    metrics: Option<Value>,
    #[schema(value_type = Object)]
    threshold: Value,
    /// Learner, parameters, features, training time and tool version.
    #[schema(value_type = Object)]
    training: Value,
    /// The last reload that was refused, if the one after it did not succeed.
    last_reload_error: Option<String>,
}

#[utoipa::path(
    get,
    path = "/model",
    responses((status = 200, body = ModelInfo), (status = 503, body = ErrorBody))
)]
pub(crate) async fn model_info(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = state.current().ok_or(ApiError::NotReady)?;
    let info = describe_model(&state, &m);
    Ok(json(StatusCode::OK, &info))
}

fn describe_model(state: &AppState, m: &LoadedModel) -> ModelInfo {
    let meta = m.model.metadata();
    let to_value = |v: &dyn erased::Ser| v.value();
    ModelInfo {
        model_version: m.version.clone(),
        release: m.release.as_ref().map(|t| t.to_string()),
        digest: m.digest.clone(),
        source: state.source().describe(),
        loaded_at: m.loaded_at.clone(),
        input_schema: m.model.input_fields(),
        metrics: meta.metrics.as_ref().map(|r| to_value(r)),
        threshold: to_value(m.model.threshold()),
        training: serde_json::json!({
            "model": meta.model,
            "params": meta.params,
            "features": meta.features,
            "n_trees": meta.n_trees,
            "train_rows": meta.train_rows,
            "data_digest": meta.data_digest,
            "trained_at": meta.trained_at,
            "tool_version": meta.tool_version,
        }),
        last_reload_error: state.last_error().map(|e| e.to_string()),
    }
}

mod erased {
    /// Lets one closure turn differently typed metadata parts into JSON values.
    pub trait Ser {
        fn value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let current = state.current();
    let mut text = state.metrics().render(current.as_deref());
    // Per-release and shadow series, labelled with the releases they compare.
    text.push_str(&crate::traffic::prometheus(
        state.routing().as_deref(),
        state.candidate_error().as_deref(),
    ));
    if let Some(m) = &current {
        crate::drift::write_metrics(&mut text, &state, m);
    }
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// The document of this server as it runs: see [`crate::openapi`]. Built once per
/// loaded model.
pub(crate) async fn openapi(State(state): State<AppState>) -> Response {
    let admin = state.admin_token().is_some();
    let limit = state.limits().batch_instances;
    let render = |m: Option<&LoadedModel>| {
        bytes::Bytes::from(
            serde_json::to_vec(&crate::openapi::document(m, admin, limit)).unwrap_or_default(),
        )
    };
    let body = match state.current() {
        Some(m) => m.openapi.get_or_init(|| render(Some(&m))).clone(),
        None => render(None),
    };
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[derive(Serialize, ToSchema)]
pub struct ReloadResponse {
    /// `swapped`, `unchanged`, `no_release` or `refused_before`.
    status: &'static str,
    model_version: Option<String>,
    digest: Option<String>,
}

/// Reloads from the configured source; needs `Authorization: Bearer <token>`. Present
/// only when a token is configured.
#[utoipa::path(
    post,
    path = "/admin/reload",
    responses(
        (status = 200, body = ReloadResponse),
        (status = 401, body = ErrorBody),
        (status = 422, description = "The new model was refused; the old one serves", body = ErrorBody),
        (status = 502, description = "The source could not be read", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn reload(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let expected = state.admin_token().ok_or(ApiError::Unauthorized)?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        return Err(ApiError::Unauthorized);
    }
    let outcome = state.reload(true).await.map_err(|e| {
        if e.is_refusal() {
            ApiError::ModelRefused(e.chain())
        } else {
            ApiError::SourceUnavailable(e.chain())
        }
    })?;
    let current = state.current();
    let status = match outcome {
        ReloadOutcome::Swapped { .. } => "swapped",
        ReloadOutcome::Unchanged { .. } => "unchanged",
        ReloadOutcome::NoRelease => "no_release",
        ReloadOutcome::RefusedBefore { .. } => "refused_before",
    };
    Ok(json(
        StatusCode::OK,
        &ReloadResponse {
            status,
            model_version: current.as_ref().map(|m| m.version.clone()),
            digest: current.as_ref().map(|m| m.digest.clone()),
        },
    ))
}

/// The token of an `Authorization: Bearer <token>` value. The scheme name is
/// case-insensitive (RFC 7235 §2.1), so `bearer` and `BEARER` count too.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut r = (status, bytes).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => ApiError::Internal(format!("cannot encode the answer: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer   "), None);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn openapi_names_every_route() {
        let doc = ApiDoc::openapi().to_json().unwrap();
        for path in [
            "\"/predict\"",
            "\"/predict/batch\"",
            "\"/model\"",
            "\"/readyz\"",
            "\"/explain\"",
            "\"/explain/batch\"",
        ] {
            assert!(doc.contains(path), "{path} missing");
        }
        assert!(doc.contains("PredictResponse"));
    }
}
