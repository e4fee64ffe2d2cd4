//! The predict-buy prediction service: the original FastAPI contract (`GET /`,
//! `POST /predict`) and more — batch predictions, explanations (`POST /explain`), health
//! and readiness, model metadata, an OpenAPI document, Prometheus metrics, and a model
//! that can be swapped while requests keep flowing.
//!
//! The model sits behind an atomic pointer ([`arc_swap`]): a request takes the pointer
//! once and finishes with that model even if a reload swaps in another meanwhile. A
//! model that does not load or fails its self-check is refused and the old one keeps
//! serving. Models come from a file or follow an environment of the registry
//! ([`ModelSource`]).
//!
//! **What it must never do:** answer a client mistake with a 5xx, queue without bound
//! (over [`Limits::concurrency`] prediction requests are shed with 503), or train and
//! write anything: it reads artifacts and the registry, nothing else.
//!
//! ```no_run
//! use predict_buy_serve::{AppState, Limits, ModelSource};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let state = AppState::new(ModelSource::File("models/model.pbm".into()), Limits::default(), None);
//! state.reload(true).await.expect("the model loads");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! predict_buy_serve::serve(listener, state, std::time::Duration::from_secs(1), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

mod batch;
mod candidate;
mod connections;
mod docs;
pub mod drift;
mod error;
mod explain;
mod fast;
mod metrics;
mod observe;
mod openapi;
mod report;
mod routes;
mod state;
mod traffic;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};

pub use candidate::{DEFAULT_SHADOW_BUDGET, SHADOW_QUEUE, ShadowFault, canary_takes, fnv1a};
pub use error::{ApiError, ErrorBody, FieldProblem, JsonBody, JsonBytes};
pub use routes::ApiDoc;
pub use state::{
    AppState, Limits, LoadedModel, ModelSource, ReloadError, ReloadOutcome, Slot, after_each_load,
    default_max_connections,
};

/// The whole HTTP service. Prediction routes take a place under the concurrency limit
/// ([`Slot`]) once their body is read; health, metrics and metadata do not, so probes
/// and scrapes still answer under overload.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/", get(routes::root))
        .route("/predict", post(routes::predict))
        .route("/predict/batch", post(routes::predict_batch))
        .route("/explain", post(explain::explain))
        .route("/explain/batch", post(explain::explain_batch))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/model", get(routes::model_info))
        .route("/model/report", get(report::model_report))
        .route("/metrics", get(routes::metrics))
        .route("/traffic", get(traffic::traffic))
        .route("/drift", get(drift::drift))
        .route("/openapi.json", get(routes::openapi))
        .route("/docs", get(docs::page));
    if state.admin_token().is_some() {
        router = router.route("/admin/reload", post(routes::reload));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One layer: axum boxes once per `layer` call, per request. The body limit
        // is applied where bodies are read (`JsonBytes`), not by axum's
        // `DefaultBodyLimit` layer, which would put it in every request's extensions.
        .layer(observe::ObserveLayer::new(state.clone()))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Serves `state` on `listener` until `shutdown` completes, then drains: `/readyz`
/// answers 503 and every answer carries `Connection: close` for [`Limits::drain`], new
/// connections still served, so a load balancer sees the instance leave before it
/// stops; then it stops accepting and finishes the requests in flight. Meanwhile it
/// follows a registry source every `poll_interval`, reloads on SIGHUP, and keeps the
/// metrics histograms drained.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    poll_interval: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut background = tokio::task::JoinSet::new();
    let upkeep_state = state.clone();
    background.spawn(async move {
        // Histogram samples are held until drained: at 60,000 requests/s five seconds'
        // worth was a few MB of the server's resident memory.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            upkeep_state.metrics().upkeep();
        }
    });
    let follows = matches!(state.source(), ModelSource::Registry { .. });
    let pinned = matches!(state.source(), ModelSource::Release { .. });
    if follows || pinned {
        let follow = state.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(poll_interval.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // A pinned release is loaded once (until then, because the registry was
                // not reachable yet, it is retried like a followed environment), and
                // then polled only for its environment's candidate.
                if pinned && follow.current().is_some() && follow.candidate_env().is_none() {
                    break;
                }
                tick.tick().await;
                // Errors are logged and recorded by `reload`; polling goes on. A
                // loaded pinned release answers `Unchanged` without a registry read.
                let _ = follow.reload(false).await;
            }
        });
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            let on_hup = state.clone();
            background.spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the model");
                    let _ = on_hup.reload(true).await;
                }
            });
        }
    }
    let draining = state.clone();
    let drain = state.limits().drain;
    let stop = async move {
        shutdown.await;
        draining.start_draining();
        tracing::info!(
            ?drain,
            "draining: /readyz answers 503, connections close after each answer"
        );
        tokio::time::sleep(drain).await;
    };
    let result = connections::accept_loop(listener, app(state.clone()), state.limits(), stop).await;
    background.abort_all();
    result
}

/// Installs the SIGTERM and SIGINT handlers now and returns the future that completes
/// with the name of the first of them to arrive. Installing them lazily, when the
/// future is first polled, would leave a window after start in which SIGTERM kills
/// the process without a drain.
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// Ctrl-C, where there are no Unix signals.
#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    })
}
