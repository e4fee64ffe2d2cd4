//! The predict-buy prediction service: the original FastAPI contract (`GET /`,
//! `POST /predict`) and more — batch predictions, health and readiness, model metadata,
//! an OpenAPI document, Prometheus metrics, and a model that can be swapped while
//! requests keep flowing.
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

mod error;
mod fast;
mod metrics;
mod observe;
mod report;
mod routes;
mod state;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower::ServiceBuilder;

pub use error::{ApiError, ErrorBody, FieldProblem, JsonBody, JsonBytes};
pub use routes::ApiDoc;
pub use state::{AppState, Limits, LoadedModel, ModelSource, ReloadError, ReloadOutcome};

/// The whole HTTP service. Prediction routes are behind the concurrency limit (their
/// [`state::Slot`] extractor); health, metrics and metadata are not, so probes and
/// scrapes still answer under overload.
pub fn app(state: AppState) -> Router {
    let limits = state.limits().clone();
    let mut router = Router::new()
        .route("/", get(routes::root))
        .route("/predict", post(routes::predict))
        .route("/predict/batch", post(routes::predict_batch))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/model", get(routes::model_info))
        .route("/model/report", get(report::model_report))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi));
    if state.admin_token().is_some() {
        router = router.route("/admin/reload", post(routes::reload));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One `layer` call: axum boxes once per call, per request.
        .layer(
            ServiceBuilder::new()
                .layer(observe::ObserveLayer::new(
                    state.metrics().clone(),
                    limits.request_timeout,
                ))
                .layer(DefaultBodyLimit::max(limits.body_bytes)),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Serves `state` on `listener` until `shutdown` completes, then stops accepting and
/// drains the requests in flight. Meanwhile it follows a registry source every
/// `poll_interval`, reloads on SIGHUP, and keeps the metrics histograms drained.
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
                // A pinned release is loaded once; until then (the registry was not
                // reachable yet) it is retried like a followed environment.
                if pinned && follow.current().is_some() {
                    break;
                }
                tick.tick().await;
                // Errors are logged and recorded by `reload`; polling goes on.
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
    let result = accept_loop(
        listener,
        app(state.clone()),
        state.limits().request_timeout,
        shutdown,
    )
    .await;
    background.abort_all();
    result
}

/// hyper's connection loop rather than `axum::serve`, for one thing axum does not
/// expose: a deadline on reading request headers, so a client that trickles them in
/// cannot hold a connection open forever. Bodies are bounded by the request timeout.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    // Stop accepting, let every connection finish its request in flight, then return.
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
