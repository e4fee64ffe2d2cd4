//! Everything every request gets, in one middleware: a request id, a tracing span, the
//! golden-signal metrics, a deadline answered with 408, and a panic answered with 500.
//!
//! One layer rather than a stack of six: axum boxes the service and its future once
//! per `Router::layer`, and with one layer per concern that boxing, the futures moved
//! between the boxes and the clocks read by each layer cost more than the prediction
//! itself. Here a request costs one future (no box of its own), two clock reads, and a
//! timer only if the handler has to wait (a slow body).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::error::ApiError;
use crate::metrics::{InFlight, Metrics, RouteMetrics};
use crate::state::{AppState, Entered};

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone)]
pub(crate) struct ObserveLayer {
    metrics: Metrics,
    ids: RequestIds,
    timeout: Duration,
    /// Read for its draining flag: while draining, every answer closes its connection.
    state: AppState,
}

impl ObserveLayer {
    pub(crate) fn new(state: AppState) -> Self {
        Self {
            metrics: state.metrics().clone(),
            ids: RequestIds::default(),
            timeout: state.limits().request_timeout,
            state,
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = std::convert::Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let start = Instant::now();
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(given) => given.clone(),
            None => self.layer.ids.next(),
        };
        let route = self
            .layer
            .metrics
            .route(req.extensions().get::<MatchedPath>());
        // Fields are only formatted when something listens at info level.
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            request_id = id.to_str().unwrap_or(""),
        );
        let in_flight = self.layer.metrics.enter();
        let inner = {
            let _entered = span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))).ok()
        };
        ObserveFuture {
            call: Call {
                inner,
                deadline: start + self.layer.timeout,
                timer: None,
            },
            start,
            id: Some(id),
            route,
            span,
            entered: self.layer.state.enter(),
            _in_flight: in_flight,
        }
    }
}

pub(crate) struct ObserveFuture<F> {
    call: Call<F>,
    start: Instant,
    id: Option<HeaderValue>,
    route: RouteMetrics,
    span: tracing::Span,
    /// Counts the request for its state, which also says whether it is draining.
    entered: Entered,
    /// Leaves the in-flight gauge even when the client goes away mid-request.
    _in_flight: InFlight,
}

impl<F> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, std::convert::Infallible>> + Unpin,
{
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let response = {
            let _entered = this.span.enter();
            match this.call.poll(cx) {
                Poll::Ready(response) => response,
                Poll::Pending => return Poll::Pending,
            }
        };
        Poll::Ready(Ok(this.finish(response)))
    }
}

/// The handler's future under its deadline, with panics caught.
struct Call<F> {
    /// `None` once it panicked or timed out.
    inner: Option<F>,
    deadline: Instant,
    /// Armed only once the handler first has to wait, so the usual request, whose body
    /// came with its headers, never touches the timer wheel.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<F> Call<F>
where
    F: Future<Output = Result<Response, std::convert::Infallible>> + Unpin,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Response> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(panicked());
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Ready(Ok(response))) => return Poll::Ready(response),
            Ok(Poll::Ready(Err(never))) => match never {},
            Ok(Poll::Pending) => {}
            Err(_) => {
                self.inner = None;
                return Poll::Ready(panicked());
            }
        }
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        if timer.as_mut().poll(cx).is_ready() {
            // Dropping the handler's future cancels it, as tower's timeout did.
            self.inner = None;
            return Poll::Ready(ApiError::Timeout.into_response());
        }
        Poll::Pending
    }
}

impl<F> ObserveFuture<F> {
    fn finish(&mut self, mut response: Response) -> Response {
        let status = response.status();
        let latency = self.start.elapsed();
        self.route.record(status, latency);
        if let Some(id) = self.id.take() {
            response.headers_mut().entry(&X_REQUEST_ID).or_insert(id);
        }
        if self.entered.state().is_draining() {
            // hyper closes an HTTP/1 connection after an answer that says so; the
            // client's next request opens a new one, to another instance once the load
            // balancer has seen `/readyz` fail. Without it, the request a client sends
            // on a kept-alive connection as the server stops is lost.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let latency_ms = latency.as_secs_f64() * 1e3;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Not ready, shedding or draining: states the server reports on purpose,
            // which probes poll every second. Not errors of the server.
            tracing::info!(status = status.as_u16(), latency_ms, "answered unavailable");
        } else if status.is_server_error() {
            tracing::error!(status = status.as_u16(), latency_ms, "response failed");
        } else {
            tracing::info!(
                status = status.as_u16(),
                latency_ms,
                "finished processing request"
            );
        }
        response
    }
}

fn panicked() -> Response {
    ApiError::Internal("a handler panicked".into()).into_response()
}

/// Request ids `<process prefix>-<counter>`: unique per process start, and cheaper
/// than a random UUID per request. A client's own `x-request-id` is kept.
#[derive(Clone)]
struct RequestIds {
    prefix: [u8; 16],
    next: Arc<AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let seed = (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32);
        let mut prefix = [0u8; 16];
        for (i, digit) in prefix.iter_mut().enumerate() {
            *digit = HEX[((seed >> (60 - 4 * i)) & 0xf) as usize];
        }
        Self {
            prefix,
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl RequestIds {
    /// Written on the stack: the header value's own copy is the only allocation.
    fn next(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 16 + 1 + 20];
        buf[..16].copy_from_slice(&self.prefix);
        buf[16] = b'-';
        let mut digits = [0u8; 20];
        let mut len = 0;
        let mut rest = n;
        loop {
            digits[len] = b'0' + (rest % 10) as u8;
            len += 1;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        for (slot, digit) in buf[17..17 + len].iter_mut().zip(digits[..len].iter().rev()) {
            *slot = *digit;
        }
        HeaderValue::from_bytes(&buf[..17 + len]).expect("hex digits, a dash and digits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_prefix_dash_counter() {
        let ids = RequestIds::default();
        let first = ids.next();
        let second = ids.next();
        let first = first.to_str().unwrap();
        let (prefix, n) = first.split_once('-').unwrap();
        assert_eq!(prefix.len(), 16);
        assert!(prefix.bytes().all(|b| HEX.contains(&b)));
        assert_eq!(n, "1");
        assert_eq!(second.to_str().unwrap(), format!("{prefix}-2"));
        ids.next.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(
            ids.next().to_str().unwrap(),
            format!("{prefix}-{}", u64::MAX)
        );
    }
}
