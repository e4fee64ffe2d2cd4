//! Slow clients time out, load beyond capacity is shed, shutdown drains.

mod common;

use std::time::Duration;

use common::{Options, TestServer, sample_row};
use predict_buy_serve::Limits;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Starts a /predict whose body never finishes arriving.
async fn stalled_predict(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"Age\":")
        .await
        .unwrap();
    stream
}

async fn read_status(stream: &mut tokio::net::TcpStream) -> String {
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// A server that gives a client 300 ms to send its request.
async fn server_with_300ms_timeout() -> TestServer {
    TestServer::with(Options {
        limits: Limits {
            request_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn slow_clients_time_out() {
    let s = server_with_300ms_timeout().await;
    let started = std::time::Instant::now();
    let mut slow = stalled_predict(s.addr).await;
    let status = read_status(&mut slow).await;
    assert_eq!(status, "HTTP/1.1 408 Request Timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(s.post_json("/predict", &sample_row()).await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn load_beyond_capacity_is_shed() {
    let s = TestServer::with(Options {
        limits: Limits {
            concurrency: 2,
            request_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    // Two stalled requests hold both slots.
    let _a = stalled_predict(s.addr).await;
    let _b = stalled_predict(s.addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = s.post_json("/predict", &sample_row()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "overloaded");
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
    drop((_a, _b));
    // Capacity comes back once they leave.
    let mut ok = false;
    for _ in 0..50 {
        if s.post_json("/predict", &sample_row()).await.0 == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "capacity did not come back");
    s.stop().await;
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let s = TestServer::start().await;
    let mut slow = stalled_predict(s.addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let addr = s.addr;
    let stopping = tokio::spawn(s.stop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!stopping.is_finished(), "waits for the request in flight");
    // The request completes and gets its answer.
    let rest = b"46,\"Gender\":\"Female\",\"HasDrivingLicense\":1,\"RegionID\":21,\"Switch\":0,\"PastAccident\":\"Yes\",\"AnnualPremium\":2305.4}";
    let mut body = rest.to_vec();
    body.resize(200 - 7, b' ');
    slow.write_all(&body).await.unwrap();
    let status = read_status(&mut slow).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown finishes")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn clients_trickling_headers_are_cut_off() {
    let s = server_with_300ms_timeout().await;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection stayed open");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(s.post_json("/predict", &sample_row()).await.0, 200);
    s.stop().await;
}
