//! One error type for every HTTP answer that is not a success, and the JSON extractor
//! whose rejections map onto it.

use std::pin::Pin;

use axum::body::{Body, HttpBody};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
pub use predict_buy_api::{ErrorBody, FieldProblem};

use crate::AppState;

/// Everything an endpoint can answer besides success. Client mistakes carry
/// field-level detail; server faults are logged in full and answered vaguely.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("the request body could not be read: {0}")]
    BodyRead(String),
    #[error("expected `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("the request body is over the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("the batch has more than {limit} instances, the limit")]
    BatchTooLarge { limit: usize },
    #[error("invalid input")]
    Invalid(Vec<FieldProblem>),
    #[error("no model is loaded yet")]
    NotReady,
    #[error("a valid `Authorization: Bearer` token is required")]
    Unauthorized,
    #[error("the server is at capacity; retry later")]
    Overloaded,
    #[error("the server is shutting down; send requests to another instance")]
    Draining,
    #[error("the request took too long")]
    Timeout,
    #[error("{0}")]
    ModelRefused(String),
    #[error("{0}")]
    SourceUnavailable(String),
    #[error("no such route")]
    NotFound,
    #[error("this route does not take that method")]
    MethodNotAllowed,
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::Invalid(vec![problem(field, reason)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            // The batch limit is the `maxItems` of the documented request schema: a
            // body that breaks it is invalid input, as pydantic's `max_length` is.
            ApiError::Invalid(_) | ApiError::ModelRefused(_) | ApiError::BatchTooLarge { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::NotReady | ApiError::Overloaded | ApiError::Draining => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::SourceUnavailable(_) => StatusCode::BAD_GATEWAY,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) | ApiError::BodyRead(_) => "malformed_json",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Invalid(_) | ApiError::BatchTooLarge { .. } => "invalid_input",
            ApiError::NotReady => "not_ready",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Overloaded => "overloaded",
            ApiError::Draining => "draining",
            ApiError::Timeout => "timeout",
            ApiError::ModelRefused(_) => "model_refused",
            ApiError::SourceUnavailable(_) => "source_unavailable",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Internal(_) => "internal",
        }
    }

    fn detail(self) -> Vec<FieldProblem> {
        let field = match &self {
            ApiError::Invalid(_) => "",
            ApiError::UnsupportedMediaType => "content-type",
            ApiError::Unauthorized => "authorization",
            ApiError::NotReady | ApiError::ModelRefused(_) | ApiError::SourceUnavailable(_) => {
                "model"
            }
            ApiError::BatchTooLarge { .. } => "instances",
            ApiError::Overloaded
            | ApiError::Draining
            | ApiError::Timeout
            | ApiError::Internal(_)
            | ApiError::NotFound
            | ApiError::MethodNotAllowed => "request",
            ApiError::MalformedJson(_)
            | ApiError::BodyRead(_)
            | ApiError::PayloadTooLarge { .. } => "body",
        };
        // pydantic's name for a list over its `max_length`.
        let kind = match self {
            ApiError::BatchTooLarge { .. } => "too_long",
            _ => self.kind(),
        };
        match self {
            ApiError::Invalid(problems) => problems,
            ApiError::Internal(cause) => {
                // Logged in full here, never sent to the client.
                tracing::error!(%cause, "internal error");
                vec![FieldProblem::new(field, "internal error", kind)]
            }
            other => vec![FieldProblem::new(field, other.to_string(), kind)],
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: self.kind().to_string(),
            detail: self.detail(),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (status, bytes).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A client mistake in one field, typed the way FastAPI types it: an absent field is
/// `missing`, anything else a `value_error`.
pub fn problem(field: impl Into<String>, reason: impl Into<String>) -> FieldProblem {
    let reason = reason.into();
    let kind = if reason == "field required" {
        "missing"
    } else {
        "value_error"
    };
    FieldProblem::new(field, reason, kind)
}

/// The raw bytes of a JSON request body, refused with an [`ApiError`]: wrong content
/// type → 415, over the body limit → 413. Parsing is the handler's business.
pub struct JsonBytes(pub Bytes);

impl FromRequest<AppState> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        read_body(req.into_body(), state.limits().body_bytes)
            .await
            .map(JsonBytes)
    }
}

/// A request body whole, at most `limit` bytes, without axum's `Bytes` extractor: that
/// one boxes the body again under a length limiter and gathers its chunks in a queue,
/// an allocation each per request, where a `/predict` body is one chunk, returned here
/// as it came. It also stops as soon as the body says it is complete (all of its
/// `Content-Length`) instead of polling once more for the end of the stream.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge { limit };
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut len = 0usize;
    while !body.is_end_stream() {
        let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        else {
            break;
        };
        let frame = frame
            .map_err(|e| ApiError::BodyRead(format!("Failed to buffer the request body: {e}")))?;
        // Trailers end the body, as they did for axum's extractor.
        let Ok(data) = frame.into_data() else {
            break;
        };
        len = len.saturating_add(data.len());
        if len > limit {
            return Err(too_large());
        }
        match &first {
            None => first = Some(data),
            Some(head) => {
                if joined.is_empty() {
                    joined.extend_from_slice(head);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(if joined.is_empty() {
        first.unwrap_or_default()
    } else {
        joined.freeze()
    })
}

/// A JSON request body, refused with an [`ApiError`]: wrong content type → 415, over
/// the body limit → 413, not JSON → 400. What the JSON must contain is the handler's
/// business (422).
pub struct JsonBody(pub serde_json::Value);

impl JsonBody {
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::MalformedJson(e.to_string()))
    }
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        Self::parse(&bytes)
    }
}

/// `application/json`, with or without parameters, or any `application/*+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some(subtype) = essence
        .split_once('/')
        .filter(|(t, _)| t.eq_ignore_ascii_case("application"))
        .map(|(_, s)| s)
    else {
        return false;
    };
    subtype.eq_ignore_ascii_case("json")
        || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(&headers("application/json")));
        assert!(is_json(&headers("Application/JSON; charset=utf-8")));
        assert!(is_json(&headers("application/problem+json")));
        assert!(!is_json(&headers("text/plain")));
        assert!(!is_json(&headers("application/x-www-form-urlencoded")));
        assert!(!is_json(&headers("application/+json")));
        assert!(!is_json(&HeaderMap::new()));
    }

    /// A body that arrives in the given chunks, with no length announced.
    struct Chunks(std::collections::VecDeque<&'static [u8]>);

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            let chunk = self.0.pop_front();
            std::task::Poll::Ready(
                chunk.map(|c| Ok(hyper::body::Frame::data(Bytes::from_static(c)))),
            )
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> Body {
        Body::new(Chunks(parts.iter().copied().collect()))
    }

    #[tokio::test]
    async fn bodies_are_read_whole_up_to_the_limit() {
        let one = read_body(Body::from("{\"Age\":46}"), 64).await.unwrap();
        assert_eq!(&one[..], b"{\"Age\":46}");
        let joined = read_body(chunks(&[b"{\"Ag", b"e\":4", b"6}"]), 64)
            .await
            .unwrap();
        assert_eq!(&joined[..], b"{\"Age\":46}");
        assert!(read_body(chunks(&[]), 64).await.unwrap().is_empty());
        // Exactly at the limit passes; one byte over fails, whether the length is
        // announced (refused before reading) or only counted.
        assert_eq!(
            read_body(chunks(&[b"1234", b"5678"]), 8)
                .await
                .unwrap()
                .len(),
            8
        );
        for body in [chunks(&[b"1234", b"56789"]), Body::from("123456789")] {
            match read_body(body, 8).await {
                Err(ApiError::PayloadTooLarge { limit: 8 }) => {}
                other => panic!("expected 413 at 8 bytes, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_error_names_a_field() {
        let e = ApiError::BatchTooLarge { limit: 2 };
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.kind(), "invalid_input");
        let d = e.detail();
        assert_eq!(d[0].field, "instances");
        assert_eq!(d[0].kind, "too_long");
        assert!(
            d[0].reason.contains("more than 2 instances"),
            "{}",
            d[0].reason
        );
        assert_eq!(problem("Age", "field required").kind, "missing");
        assert_eq!(
            problem("Age", "200 is above the maximum 120").kind,
            "value_error"
        );
    }
}
