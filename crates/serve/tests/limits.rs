//! Slow clients time out, load beyond capacity is shed, shutdown drains.
//!
//! Requests are held in flight by the test itself ([`HeldPredict`]), and every wait is
//! for a condition with a generous deadline, so a loaded machine slows these tests
//! down but cannot make them fail.

mod common;

use std::time::{Duration, Instant};

use common::{HeldPredict, Options, TestServer, eventually, sample_row};
use predict_buy_serve::Limits;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Long enough that a normal request on a loaded machine never hits it, short enough
/// for a test to wait out.
const SHORT_TIMEOUT: Duration = Duration::from_secs(1);

/// A server that gives a client [`SHORT_TIMEOUT`] to send its request.
async fn server_with_short_timeout() -> TestServer {
    TestServer::with(Options {
        limits: Limits {
            request_timeout: SHORT_TIMEOUT,
            ..common::test_limits()
        },
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn slow_clients_time_out() {
    let s = server_with_short_timeout().await;
    // Taken before connecting: the server's deadline starts after this, so the answer
    // cannot honestly come sooner than SHORT_TIMEOUT.
    let started = Instant::now();
    let mut slow = HeldPredict::start(s.addr).await;
    let status = slow.status().await;
    assert_eq!(status, "HTTP/1.1 408 Request Timeout");
    // The body is read before a prediction place is taken, so none was held.
    assert!(
        started.elapsed() >= SHORT_TIMEOUT,
        "answered 408 after {:?}, before the deadline",
        started.elapsed()
    );
    assert_eq!(
        s.state.predictions_in_flight(),
        0,
        "the slot was given back"
    );
    assert_eq!(s.post_json("/predict", &sample_row()).await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn load_beyond_capacity_is_shed() {
    let s = TestServer::with(Options {
        limits: Limits {
            concurrency: 2,
            request_timeout: Duration::from_secs(120),
            ..common::test_limits()
        },
        ..Default::default()
    })
    .await;
    // One place taken: the second is still free.
    let a = s.state.try_slot().expect("a free place");
    assert_eq!(s.post_json("/predict", &sample_row()).await.0, 200);

    // Both taken: the limit is reached and the next request is shed.
    let b = s.state.try_slot().expect("the second place");
    let (status, body) = s.post_json("/predict", &sample_row()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "overloaded");
    let (status, body) = s
        .post_json("/predict/batch", &serde_json::json!([sample_row()]))
        .await;
    assert_eq!(status, 503, "batch predictions share the limit: {body}");
    assert_eq!(
        s.state.predictions_in_flight(),
        2,
        "a shed request holds no place"
    );
    // Probes are not behind the limit.
    assert_eq!(s.get("/healthz").await.0, 200);
    assert_eq!(s.get("/readyz").await.0, 200);
    let metrics = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("http_requests_total{route=\"/predict\",status=\"503\"}"),
        "{metrics}"
    );

    // A place given back is free again.
    drop(a);
    assert_eq!(s.post_json("/predict", &sample_row()).await.0, 200);
    drop(b);
    assert_eq!(s.state.predictions_in_flight(), 0);
    s.stop().await;
}

/// A client trickling its body holds no prediction place: with the only place's worth
/// of clients mid-body, a real client is still answered, and the slow one is answered
/// too once its body arrives.
#[tokio::test]
async fn a_slow_body_holds_no_prediction_place() {
    let s = TestServer::with(Options {
        limits: Limits {
            concurrency: 1,
            request_timeout: Duration::from_secs(120),
            ..common::test_limits()
        },
        ..Default::default()
    })
    .await;
    let held = HeldPredict::start(s.addr).await;
    until_requests(&s, 1).await;
    assert_eq!(s.state.predictions_in_flight(), 0);
    assert_eq!(s.post_json("/predict", &sample_row()).await.0, 200);
    assert_eq!(held.finish().await, "HTTP/1.1 200 OK");
    s.stop().await;
}

/// Waits until exactly `n` requests of any route are being answered.
async fn until_requests(s: &TestServer, n: usize) {
    eventually(&format!("{n} requests in flight"), || async {
        (s.state.requests_in_flight() == n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let s = TestServer::start().await;
    let held = HeldPredict::start(s.addr).await;
    until_requests(&s, 1).await;
    let addr = s.addr;
    let stopping = tokio::spawn(s.stop());
    // The listener closes first: from then on the server is shutting down.
    eventually("the listener to close", || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(
        !stopping.is_finished(),
        "shutdown finished with a request in flight"
    );
    // The request completes and gets its answer.
    assert_eq!(held.finish().await, "HTTP/1.1 200 OK");
    tokio::time::timeout(common::PATIENCE, stopping)
        .await
        .expect("shutdown finishes once the request is answered")
        .unwrap();
}

#[tokio::test]
async fn clients_trickling_headers_are_cut_off() {
    let s = server_with_short_timeout().await;
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(common::PATIENCE, stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection stayed open");
    assert!(
        started.elapsed() >= SHORT_TIMEOUT,
        "cut off after {:?}, before the deadline",
        started.elapsed()
    );
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        !answer.starts_with("HTTP/1.1 2"),
        "a request without its headers was answered: {answer}"
    );
    assert_eq!(s.post_json("/predict", &sample_row()).await.0, 200);
    s.stop().await;
}
