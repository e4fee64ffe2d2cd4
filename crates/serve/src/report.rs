//! `GET /model/report`: the HTML report of the serving model, drawn from what its
//! artifact recorded at training time (the same page as `predict-buy report`).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use predict_buy_report::{ReleaseInfo, Report, ReportError, Subject};

use crate::error::ApiError;
use crate::state::AppState;

/// The last page drawn, by model digest: a hot swap changes the digest, so a stale
/// page is never served, and repeated requests do not redraw every chart.
static LAST: Mutex<Option<(String, Arc<String>)>> = Mutex::new(None);

#[utoipa::path(
    get,
    path = "/model/report",
    responses(
        (status = 200, description = "The serving model's HTML report", content_type = "text/html"),
        (status = 404, description = "The model recorded no test evaluation (trained before reports)"),
        (status = 503, description = "No model is loaded yet"),
    )
)]
pub(crate) async fn model_report(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = state.current().ok_or(ApiError::NotReady)?;
    let cached = LAST.lock().ok().and_then(|last| {
        last.as_ref()
            .filter(|(d, _)| *d == m.digest)
            .map(|(_, p)| p.clone())
    });
    let page = match cached {
        Some(page) => page,
        None => {
            let model = m.model.clone();
            let label = m.version.clone();
            let release = m.release.as_ref().map(|t| ReleaseInfo {
                tag: t.to_string(),
                git_commit: None,
                created_at: None,
            });
            // Drawing takes milliseconds of CPU: off the request threads.
            let drawn = tokio::task::spawn_blocking(move || {
                let mut subject = Subject::new(label, &model);
                subject.release = release;
                Report::build(&[subject], None)?.to_html()
            })
            .await
            .map_err(|e| ApiError::Internal(format!("the report task failed: {e}")))?;
            match drawn {
                Ok(html) => {
                    let page = Arc::new(html);
                    if let Ok(mut last) = LAST.lock() {
                        *last = Some((m.digest.clone(), page.clone()));
                    }
                    page
                }
                Err(e @ ReportError::NoTestEvaluation { .. }) => {
                    let body = serde_json::json!({
                        "detail": e.to_string(),
                        "hint": "run `predict-buy report --model FILE --evaluate DATA` where the labelled data is, or retrain the model",
                    });
                    return Ok((StatusCode::NOT_FOUND, axum::Json(body)).into_response());
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot draw the model report");
                    return Err(ApiError::Internal(e.to_string()));
                }
            }
        }
    };
    let mut r = (StatusCode::OK, page.as_str().to_owned()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(r)
}
