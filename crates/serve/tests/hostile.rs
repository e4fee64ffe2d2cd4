//! The server under traffic an attacker (or a broken client) sends: bodies trickled
//! byte by byte, sockets that never send anything, more sockets than the server has
//! room for, batches far over the limit. Each test reproduces a way the server was
//! taken down before and checks that real clients are still answered.

mod common;

use std::time::{Duration, Instant};

use common::{Options, TestServer, eventually, sample_row};
use predict_buy_serve::Limits;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Makes room for `n` more open files in this process: each connection is two
/// descriptors here, the client's and the server's.
fn room_for_files(n: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let want = n + 256;
    if limit.current.is_some_and(|c| c < want) {
        let raised = Rlimit {
            current: Some(limit.maximum.map_or(want, |m| m.min(want))),
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised).expect("the soft open-file limit can be raised");
    }
    let now = getrlimit(Resource::Nofile).current;
    assert!(
        now.is_none_or(|c| c >= want),
        "this test needs {want} open files, the hard limit allows {now:?}"
    );
}

/// Sends the headers of a `POST /predict` announcing 1000 bytes and one byte of body.
async fn slow_body(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_bodies_leave_predictions_answered() {
    const SLOW: usize = 1_000;
    room_for_files(2 * SLOW as u64);
    let s = TestServer::with(Options {
        limits: Limits {
            // Fewer places than slow clients: before bodies were read ahead of taking
            // a place, every real prediction was shed with 503.
            concurrency: 256,
            request_timeout: Duration::from_secs(120),
            max_connections: 4 * SLOW,
            ..common::test_limits()
        },
        ..Default::default()
    })
    .await;
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        slow.push(slow_body(s.addr).await);
    }
    eventually("every slow body to reach its handler", || async {
        (s.state.requests_in_flight() >= SLOW).then_some(())
    })
    .await;
    assert_eq!(
        s.state.predictions_in_flight(),
        0,
        "slow bodies hold no place"
    );
    for _ in 0..20 {
        let (status, body) = s.post_json("/predict", &sample_row()).await;
        assert_eq!(status, 200, "{body}");
    }
    drop(slow);
    s.stop().await;
}

/// Reads until the server closes the connection; how long that took.
async fn until_closed(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(common::PATIENCE, stream.read_to_end(&mut sink))
        .await
        .expect("the server closes a connection that sends no request")
        .ok();
    started.elapsed()
}

async fn with_request_timeout(timeout: Duration) -> TestServer {
    TestServer::with(Options {
        limits: Limits {
            request_timeout: timeout,
            ..common::test_limits()
        },
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn connections_that_never_send_a_request_are_closed() {
    let timeout = Duration::from_secs(1);
    let s = with_request_timeout(timeout).await;
    // HTTP/1: not a byte.
    let opened = Instant::now();
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    until_closed(&mut silent).await;
    assert!(
        opened.elapsed() >= timeout,
        "closed after {:?}, before the deadline",
        opened.elapsed()
    );
    // h2c: the connection preface and settings, then no stream.
    let mut h2 = TcpStream::connect(s.addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    until_closed(&mut h2).await;
    // A connection that has sent a request is not cut at the first-request deadline:
    // requests at 0, 0.6 and 1.2 timeouts after accept are all answered. (Idle time
    // between requests is bounded too: see the next test.)
    let mut kept = TcpStream::connect(s.addr).await.unwrap();
    for _ in 0..3 {
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(common::read_status(&mut kept).await, "HTTP/1.1 200 OK");
        tokio::time::sleep(timeout * 6 / 10).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn kept_alive_connections_that_go_quiet_are_closed() {
    let timeout = Duration::from_secs(1);
    let s = with_request_timeout(timeout).await;
    // One answered request, then the next one's headers trickle and stop: the
    // connection is closed between one and two timeouts after that request began.
    for next in [&b""[..], b"GET /healthz HTTP/1.1\r\nHost: x\r\n"] {
        let mut stream = TcpStream::connect(s.addr).await.unwrap();
        let began = Instant::now();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(common::read_status(&mut stream).await, "HTTP/1.1 200 OK");
        stream.write_all(next).await.unwrap();
        until_closed(&mut stream).await;
        let open = began.elapsed();
        assert!(
            open >= timeout && open < 2 * timeout + Duration::from_millis(500),
            "closed {open:?} after its last request began (timeout {timeout:?})"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn open_connections_are_capped_and_probes_still_answer() {
    const CAP: usize = 8;
    let s = TestServer::with(Options {
        limits: Limits {
            request_timeout: Duration::from_secs(1),
            max_connections: CAP,
            ..common::test_limits()
        },
        ..Default::default()
    })
    .await;
    // More silent sockets than the cap: the server holds CAP of them, the rest wait in
    // the listen queue, and each is closed at its deadline to make room.
    let mut silent = Vec::new();
    for _ in 0..3 * CAP {
        silent.push(TcpStream::connect(s.addr).await.unwrap());
    }
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200, "/healthz answers behind the silent sockets");
    for stream in &mut silent {
        until_closed(stream).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn batches_over_the_limit_stop_at_the_first_instance_too_many() {
    let s = TestServer::with(Options {
        limits: Limits {
            batch_instances: 10,
            body_bytes: 64 << 20,
            ..common::test_limits()
        },
        ..Default::default()
    })
    .await;
    // A million instances in 3 MB: counted while parsing, refused at the eleventh.
    let mut body = Vec::with_capacity(3_000_010);
    body.push(b'[');
    for i in 0..1_000_000 {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{}");
    }
    body.push(b']');
    let (status, answer) = s.post_raw("/predict/batch", "application/json", body).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"], "invalid_input");
    assert_eq!(answer["detail"][0]["type"], "too_long");
    assert_eq!(common::fields(&answer), ["instances"]);
    assert!(
        answer["detail"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("more than 10 instances"),
        "{answer}"
    );
    s.stop().await;
}
