//! `POST /explain` and `POST /explain/batch`: why a record got its score. Each input
//! field's contribution (exact TreeSHAP, one-hot columns summed back to their field)
//! on top of the model's base value; requests are read and refused exactly as
//! `/predict` and `/predict/batch` read and refuse them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use predict_buy_model::{ExplainFailure, Explanation, Model, Units};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::batch::Instance;
use crate::error::{ApiError, JsonBody, JsonBytes, problem};
use crate::routes::{json, kind_of};
use crate::state::{AppState, Slot};

/// One record's explanation.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "predicted_class": 1, "probability": 0.31, "units": "log_odds",
    "base_value": -2.05, "score": -0.80,
    "contributions": {"Gender": 0.02, "Age": 0.41, "HasDrivingLicense": 0.0,
        "RegionID": 0.05, "Switch": 0.36, "PastAccident": 0.43, "AnnualPremium": -0.02},
    "model_version": "3f2a9c1b7d0e"
}))]
pub struct ExplainResponse {
    #[serde(flatten)]
    explanation: ExplanationBody,
    model_version: String,
}

/// The explanations of a batch, in request order.
#[derive(Serialize, ToSchema)]
pub struct ExplainBatchResponse {
    explanations: Vec<ExplanationBody>,
    model_version: String,
}

/// `base_value + Σ contributions = score` (to 1e-9). In `log_odds` (boosting) the score
/// is the log-odds of `probability`, calibration included. In `probability` (forests
/// and single trees) the score is the trees' mean probability before calibration.
#[derive(Serialize, ToSchema)]
pub struct ExplanationBody {
    predicted_class: u8,
    /// As `/predict` answers it.
    probability: f64,
    /// `log_odds` or `probability`.
    #[schema(value_type = String)]
    units: Units,
    /// The model's expected score over its training data.
    base_value: f64,
    /// The model's score for this record.
    score: f64,
    /// Each input field's contribution to the score, in schema order.
    #[schema(value_type = std::collections::HashMap<String, f64>)]
    contributions: Contributions,
}

/// `(field, contribution)` pairs written as one JSON object, in schema order.
struct Contributions(Vec<(String, f64)>);

impl Serialize for Contributions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (field, value) in &self.0 {
            map.serialize_entry(field, value)?;
        }
        map.end()
    }
}

impl From<Explanation> for ExplanationBody {
    fn from(e: Explanation) -> Self {
        Self {
            predicted_class: e.predicted_class,
            probability: e.probability,
            units: e.units,
            base_value: e.base_value,
            score: e.score,
            contributions: Contributions(e.contributions),
        }
    }
}

#[utoipa::path(
    post,
    path = "/explain",
    request_body = crate::routes::PredictRequest,
    responses(
        (status = 200, body = ExplainResponse),
        (status = 400, description = "Malformed JSON", body = crate::error::ErrorBody),
        (status = 413, description = "Body over the limit", body = crate::error::ErrorBody),
        (status = 415, description = "Not `application/json`", body = crate::error::ErrorBody),
        (status = 422, description = "Bad fields, each named as `/predict` names them; or a model that predates explanations (`model_refused`)", body = crate::error::ErrorBody),
        (status = 503, description = "No model yet, or at capacity", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn explain(
    State(state): State<AppState>,
    JsonBytes(bytes): JsonBytes,
) -> Result<Response, ApiError> {
    // The body is read (and size-checked) before a slot is taken, as for `/predict`.
    let _slot = Slot::take(&state)?;
    let JsonBody(body) = JsonBody::parse(&bytes)?;
    let Value::Object(record) = &body else {
        return Err(ApiError::invalid(
            "body",
            format!(
                "expected a JSON object of input fields, found {}",
                kind_of(&body)
            ),
        ));
    };
    state.with_current(|m| {
        let m = m.ok_or(ApiError::NotReady)?;
        let e = explain_one(&m.model, record, |field| field.to_string())?;
        Ok(json(
            StatusCode::OK,
            &ExplainResponse {
                explanation: e.into(),
                model_version: m.version.as_str().into(),
            },
        ))
    })
}

#[utoipa::path(
    post,
    path = "/explain/batch",
    request_body = crate::routes::BatchRequest,
    responses(
        (status = 200, body = ExplainBatchResponse),
        (status = 400, body = crate::error::ErrorBody),
        (status = 413, description = "Body over the limit", body = crate::error::ErrorBody),
        (status = 415, body = crate::error::ErrorBody),
        (status = 422, description = "Bad fields, named `instances[i].Field`, or more instances than the limit; or a model that predates explanations", body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn explain_batch(
    State(state): State<AppState>,
    JsonBytes(bytes): JsonBytes,
) -> Result<Response, ApiError> {
    let _slot = Slot::take(&state)?;
    // Counted while parsing, as `/predict/batch` does: a batch over the limit is
    // refused at the first instance too many.
    let instances = crate::batch::parse(&bytes, state.limits().batch_instances)?;
    state.with_current(|m| {
        let m = m.ok_or(ApiError::NotReady)?;
        // Refuse an unexplainable model once, not once per instance.
        m.model.explainer().map_err(model_refused)?;
        let mut problems = Vec::new();
        let mut explanations = Vec::with_capacity(instances.len());
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
            match explain_one(&m.model, record, |field| format!("instances[{i}].{field}")) {
                Ok(e) => explanations.push(e.into()),
                Err(ApiError::Invalid(p)) => problems.extend(p),
                Err(other) => return Err(other),
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::Invalid(problems));
        }
        Ok(json(
            StatusCode::OK,
            &ExplainBatchResponse {
                explanations,
                model_version: m.version.as_str().into(),
            },
        ))
    })
}

fn explain_one(
    model: &Model,
    record: &Map<String, Value>,
    name: impl Fn(&str) -> String,
) -> Result<Explanation, ApiError> {
    model.explain_json(record).map_err(|failure| match failure {
        ExplainFailure::Fields(errors) => ApiError::Invalid(
            errors
                .into_iter()
                .map(|e| problem(name(&e.field), e.reason))
                .collect(),
        ),
        ExplainFailure::Model(e) => model_refused(e),
    })
}

/// The loaded model cannot explain (it predates explanations): the client's request is
/// fine, so this names the model, and says what to do.
fn model_refused(e: predict_buy_model::ExplainError) -> ApiError {
    ApiError::ModelRefused(e.to_string())
}
