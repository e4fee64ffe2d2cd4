//! The accept loop: hyper's connection builder rather than `axum::serve`, for what axum
//! does not expose, each of them a way a client could otherwise hold the server:
//!
//! - a deadline from *accept* to the first request, so a socket that never sends a
//!   byte (HTTP/1, or h2c with no stream), or trickles its first headers, is closed;
//! - after that, an HTTP/1 connection on which no request's headers arrive for a whole
//!   request timeout is closed (between one and two timeouts after its last request
//!   began: trickled headers and idle keep-alive alike), and an HTTP/2 connection
//!   without new streams after [`KEEP_ALIVE_IDLE`];
//! - a cap on open connections ([`Limits::max_connections`]): at the cap the server
//!   stops accepting until one closes, so sockets cannot take every file descriptor;
//! - a backoff when `accept` fails for want of descriptors, instead of a busy loop.
//!
//! The deadlines are one watchdog timer per connection, not hyper's header-read
//! timeout: that one arms a boxed timer in the runtime's timer wheel for every request
//! and takes it out again when the headers arrive, two locked timer-wheel updates, an
//! allocation and a clock read per request, which a keep-alive client sending a
//! request every few microseconds pays all the time.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

use crate::state::Limits;

/// How long an HTTP/2 connection that has served requests may go without a new stream
/// before it is closed. Longer than the usual load balancer idle timeout (60 s on
/// AWS's): a backend that closes first races the balancer's next request and loses it.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(75);

/// Accepts and serves connections until `stop` completes, then stops accepting and
/// waits for the requests in flight.
pub(crate) async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: &Limits,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The watchdog below bounds header reads (see the module doc).
        .header_read_timeout(None);
    let first_request = limits.request_timeout;
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut backoff = Backoff::default();
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&open).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff.recovered();
                    stream
                }
                Err(e) => {
                    tokio::select! {
                        () = backoff.failed(&e) => continue,
                        () = &mut stop => break,
                    }
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let service = Counted {
            inner: TowerToHyperService::new(app.clone()),
            activity: Arc::clone(&activity),
        };
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Held for the life of the connection: its place under the cap.
            let _permit = permit;
            tokio::pin!(connection);
            let mut seen = 0;
            let mut wait = first_request;
            loop {
                tokio::select! {
                    result = &mut connection => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        return;
                    }
                    () = tokio::time::sleep(wait) => {}
                }
                // A request lasts at most the request timeout, which is no longer than
                // `wait`: one that was counted before the last check has finished.
                let now = activity.requests.load(Ordering::Relaxed);
                if now == seen {
                    tracing::debug!(requests = now, "closing an idle connection");
                    return;
                }
                seen = now;
                if activity.http2.load(Ordering::Relaxed) {
                    wait = KEEP_ALIVE_IDLE.max(first_request);
                }
            }
        });
    }
    // Stop accepting, let every connection finish its request in flight, then return.
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What the watchdog of one connection reads: requests whose headers have arrived,
/// and whether they came over HTTP/2 (whose idle connections may stay longer).
#[derive(Default)]
struct Activity {
    requests: AtomicU64,
    http2: AtomicBool,
}

/// The application, counting the requests of one connection so its watchdog can tell
/// an idle connection from a busy one. A relaxed increment per request, on a counter
/// only this connection's task and watchdog touch.
#[derive(Clone)]
struct Counted {
    inner: TowerToHyperService<Router>,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for Counted {
    type Response =
        <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Error;
    type Future =
        <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Future;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.activity.requests.fetch_add(1, Ordering::Relaxed);
        if req.version() == hyper::Version::HTTP_2 {
            self.activity.http2.store(true, Ordering::Relaxed);
        }
        self.inner.call(req)
    }
}

/// Waits between failed accepts: 10 ms doubling to 1 s while they keep failing, so a
/// process out of descriptors neither spins nor fills the log (one warning per run of
/// failures, and one line when accepting works again).
#[derive(Default)]
struct Backoff {
    failures: u64,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Backoff {
    fn delay(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(10) as u32;
        (BACKOFF_FIRST * 2u32.pow(doublings)).min(BACKOFF_MAX)
    }

    async fn failed(&mut self, e: &std::io::Error) {
        self.failures += 1;
        if !is_resource_exhaustion(e) {
            // A connection reset before it was accepted and the like: that client's
            // problem, and the next accept may well succeed at once.
            tracing::debug!(error = %e, "accept failed");
            self.failures = 0;
            return;
        }
        if self.failures == 1 {
            tracing::warn!(error = %e, "accept failed for want of resources; backing off until a connection closes");
        }
        tokio::time::sleep(self.delay()).await;
    }

    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failures = self.failures,
                "accepting connections again after running out of resources"
            );
        }
        self.failures = 0;
    }
}

/// Out of file descriptors (per process or system-wide) or of kernel memory.
fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
                || code == rustix::io::Errno::NFILE.raw_os_error()
                || code == rustix::io::Errno::NOBUFS.raw_os_error()
                || code == rustix::io::Errno::NOMEM.raw_os_error()
        )
    }
    #[cfg(not(unix))]
    {
        matches!(e.kind(), std::io::ErrorKind::OutOfMemory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        let mut b = Backoff { failures: 1 };
        assert_eq!(b.delay(), Duration::from_millis(10));
        b.failures = 2;
        assert_eq!(b.delay(), Duration::from_millis(20));
        b.failures = 8;
        assert_eq!(b.delay(), Duration::from_millis(1000));
        b.failures = 1_000;
        assert_eq!(b.delay(), BACKOFF_MAX);
    }

    #[test]
    fn descriptor_exhaustion_is_recognised() {
        let emfile = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        assert!(is_resource_exhaustion(&emfile));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!is_resource_exhaustion(&reset));
    }
}
