//! The wire types of predict-buy's HTTP API: the JSON bodies the server answers
//! (`GET /`, `POST /predict`, `POST /predict/batch`, `GET /traffic`), shared by the server that writes
//! them and the deploy verifier that reads them, so the two cannot drift apart.
//!
//! **What it must never do:** hold behaviour or I/O. It is plain serde types (plus their
//! OpenAPI schemas behind the `utoipa` feature, which only the server turns on), so
//! that `serve` and `deploy` can both depend on it without depending on each other.
//!
//! Strings are `Cow`s: the server serialises borrowed values on its hot path, while a
//! client deserialises owned ones (`PredictResponse<'static>`).
//!
//! ```no_run
//! use predict_buy_api::PredictResponse;
//!
//! let body = r#"{"predicted_class":1,"probability":0.73,"model_version":"v1.2.0"}"#;
//! let answer: PredictResponse<'static> = serde_json::from_str(body).unwrap();
//! assert_eq!(answer.model_version, "v1.2.0");
//! ```

mod drift;

use std::borrow::Cow;

pub mod traffic;

use serde::{Deserialize, Serialize};

pub use drift::{Bin, BinKind, Distribution, DriftReport, DriftStatus, FeatureDrift};

/// The value of [`RootResponse::health_check`] from a live server, as the original
/// FastAPI app answered it.
pub const HEALTH_OK: &str = "OK";

/// `GET /`: the original health answer, plus what serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct RootResponse<'a> {
    /// Always `OK`.
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub health_check: Cow<'a, str>,
    /// The release tag when served from a registry, else the short digest; `null`
    /// before a model is loaded.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub model_version: Option<Cow<'a, str>>,
    // Older servers and the original app did not send these two.
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub release: Option<Cow<'a, str>>,
    #[serde(default)]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub model_digest: Option<Cow<'a, str>>,
}

/// `POST /predict`: one prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PredictResponse<'a> {
    /// 1 when `probability` reaches the model's threshold.
    pub predicted_class: u8,
    /// Probability of buying, calibrated to the real class balance.
    pub probability: f64,
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub model_version: Cow<'a, str>,
}

/// One prediction of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct BatchPrediction {
    pub predicted_class: u8,
    pub probability: f64,
}

/// `POST /predict/batch`: predictions for every instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct BatchResponse<'a> {
    /// In the order of the instances.
    pub predictions: Vec<BatchPrediction>,
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub model_version: Cow<'a, str>,
}

/// One step of a [`FieldProblem::loc`]: an object key or an array index, as FastAPI
/// writes them (`["body", "instances", 3, "Age"]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum LocItem {
    Index(u64),
    Key(String),
}

/// One bad part of a request. `loc`, `msg` and `type` are FastAPI's keys, kept so that
/// clients of the original app parse our 422s; `field` and `reason` say the same in
/// one string each (`instances[3].Age`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct FieldProblem {
    /// Where: `["body", "Age"]`, `["body", "instances", 3, "Age"]`, `["header",
    /// "content-type"]`.
    pub loc: Vec<LocItem>,
    /// Why, for people.
    pub msg: String,
    /// Why, for programs: `missing`, `value_error`, or the answer's `error` kind.
    #[serde(rename = "type")]
    pub kind: String,
    /// `loc` as one string: `Age`, `instances[3].Age`, `body`, `content-type`.
    pub field: String,
    /// The same as `msg`.
    pub reason: String,
}

/// What a field name given as `instances[3].Age` means as a FastAPI location.
fn loc_of(field: &str) -> Vec<LocItem> {
    let root = match field {
        "content-type" | "authorization" => "header",
        "model" | "request" => return vec![LocItem::Key(field.to_string())],
        _ => "body",
    };
    let mut loc = vec![LocItem::Key(root.to_string())];
    if field == "body" {
        return loc;
    }
    for part in field.split('.') {
        // `instances[3]` is a key then an index; a name with a stray `[` stays a key.
        match part.split_once('[').and_then(|(key, rest)| {
            let index = rest.strip_suffix(']')?.parse::<u64>().ok()?;
            Some((key, index))
        }) {
            Some((key, index)) => {
                if !key.is_empty() {
                    loc.push(LocItem::Key(key.to_string()));
                }
                loc.push(LocItem::Index(index));
            }
            None => loc.push(LocItem::Key(part.to_string())),
        }
    }
    loc
}

impl FieldProblem {
    /// A problem with `field` (`Age`, `instances[3].Age`, `body`, `content-type`, …) of
    /// the kind `kind` (FastAPI's `type`).
    pub fn new(
        field: impl Into<String>,
        reason: impl Into<String>,
        kind: impl Into<String>,
    ) -> Self {
        let field = field.into();
        let reason = reason.into();
        Self {
            loc: loc_of(&field),
            msg: reason.clone(),
            kind: kind.into(),
            field,
            reason,
        }
    }
}

/// The body of every error answer: a machine-readable kind and the problems found. A
/// 422's body is also a valid FastAPI `HTTPValidationError`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// `malformed_json`, `unsupported_media_type`, `payload_too_large`, `invalid_input`,
    /// `not_ready`, `unauthorized`, `overloaded`, `timeout`, `model_refused`,
    /// `source_unavailable`, `not_found`, `method_not_allowed` or `internal`.
    pub error: String,
    pub detail: Vec<FieldProblem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_keeps_the_original_keys_and_reads_the_original_app() {
        let root = RootResponse {
            health_check: HEALTH_OK.into(),
            model_version: Some("v1.2.0".into()),
            release: Some("v1.2.0".into()),
            model_digest: None,
        };
        assert_eq!(
            serde_json::to_string(&root).unwrap(),
            r#"{"health_check":"OK","model_version":"v1.2.0","release":"v1.2.0","model_digest":null}"#
        );
        // The FastAPI app sent only the first two keys.
        let original: RootResponse<'static> =
            serde_json::from_str(r#"{"health_check":"OK","model_version":"1.0"}"#).unwrap();
        assert_eq!(original.model_version.as_deref(), Some("1.0"));
        assert_eq!(original.release, None);
    }

    #[test]
    fn predictions_round_trip_exactly() {
        let p = PredictResponse {
            predicted_class: 1,
            probability: 0.1 + 0.2,
            model_version: "v1".into(),
        };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(
            text,
            r#"{"predicted_class":1,"probability":0.30000000000000004,"model_version":"v1"}"#
        );
        let back: PredictResponse<'static> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
        let batch: BatchResponse<'static> = serde_json::from_str(
            r#"{"predictions":[{"predicted_class":0,"probability":0.25}],"model_version":"v2"}"#,
        )
        .unwrap();
        assert_eq!(
            batch.predictions,
            vec![BatchPrediction {
                predicted_class: 0,
                probability: 0.25
            }]
        );
    }

    #[test]
    fn problems_carry_fastapi_locations() {
        let p = FieldProblem::new("instances[3].Age", "field required", "missing");
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({"loc":["body","instances",3,"Age"],"msg":"field required",
                "type":"missing","field":"instances[3].Age","reason":"field required"})
        );
        let top = FieldProblem::new("Age", "too old", "value_error");
        assert_eq!(
            top.loc,
            vec![LocItem::Key("body".into()), LocItem::Key("Age".into())]
        );
        assert_eq!(FieldProblem::new("body", "x", "json_invalid").loc.len(), 1);
        let header = FieldProblem::new("content-type", "x", "unsupported_media_type");
        assert_eq!(header.loc[0], LocItem::Key("header".into()));
        let odd = FieldProblem::new("a[b", "x", "value_error");
        assert_eq!(odd.loc[1], LocItem::Key("a[b".into()));
        let back: ErrorBody = serde_json::from_str(
            r#"{"error":"invalid_input","detail":[{"loc":["body",0],"msg":"m","type":"t","field":"f","reason":"m"}]}"#,
        )
        .unwrap();
        assert_eq!(back.detail[0].loc[1], LocItem::Index(0));
    }
}
