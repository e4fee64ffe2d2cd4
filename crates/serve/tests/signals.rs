//! SIGHUP reloads from the configured source. In its own test binary because the
//! signal goes to the whole process.

mod common;

use common::{TestServer, artifacts, eventually, write_model};

#[tokio::test]
async fn sighup_reloads_the_model() {
    let s = TestServer::start().await;
    // Answered over HTTP, so `serve` has run far enough to install its SIGHUP handler:
    // sent earlier, the signal's default action would end the test process.
    let before = s.get("/").await.1["model_version"].clone();
    assert!(before.is_string(), "a model serves: {before}");
    write_model(&s.model_path, &artifacts().1);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let expected = predict_buy_model::Model::from_bytes(&artifacts().1)
        .unwrap()
        .digest()[7..19]
        .to_string();
    let after = eventually("SIGHUP to swap the model", || async {
        let now = s.get("/").await.1["model_version"].clone();
        (now != before).then_some(now)
    })
    .await;
    assert_eq!(after, expected.as_str(), "swapped to the file's new model");
    assert_eq!(s.post_json("/predict", &common::sample_row()).await.0, 200);
    s.stop().await;
}

/// What one load generator connection saw.
#[derive(Default)]
struct Seen {
    ok: u64,
    failed: Vec<String>,
    closes: u64,
}

/// SIGTERM under load: `/readyz` turns 503 at once, every answer then carries
/// `Connection: close`, and no request fails, for clients that keep sending through the
/// drain window (as they do until a load balancer has seen the instance go unready).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_without_failing_a_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    const CONNECTIONS: usize = 50;
    let shutdown = predict_buy_serve::shutdown_signal().expect("signal handlers install");
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("model.pbm");
    write_model(&model_path, &artifacts().0);
    let state = predict_buy_serve::AppState::new(
        predict_buy_serve::ModelSource::File(model_path),
        predict_buy_serve::Limits {
            drain: std::time::Duration::from_secs(5),
            ..common::test_limits()
        },
        None,
    );
    state.reload(true).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(predict_buy_serve::serve(
        listener,
        state.clone(),
        std::time::Duration::from_secs(1),
        async move {
            shutdown.await;
        },
    ));

    // The load generator: each worker its own keep-alive connection, sending
    // predictions back to back, until told to stop.
    let url = format!("http://{addr}/predict");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONNECTIONS {
        let (url, stop, answered) = (url.clone(), Arc::clone(&stop), Arc::clone(&answered));
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let mut seen = Seen::default();
            while !stop.load(Ordering::Relaxed) {
                match client.post(&url).json(&common::sample_row()).send().await {
                    Ok(r) if r.status() == 200 => {
                        if r.headers().get("connection").is_some_and(|v| v == "close") {
                            seen.closes += 1;
                        }
                        match r.bytes().await {
                            Ok(_) => {
                                seen.ok += 1;
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => seen.failed.push(format!("body: {e}")),
                        }
                    }
                    Ok(r) => seen.failed.push(format!("status {}", r.status())),
                    Err(e) => seen.failed.push(format!("{e:?}")),
                }
            }
            seen
        }));
    }
    let client = reqwest::Client::new();
    eventually("the load to get going", || async {
        (answered.load(Ordering::Relaxed) >= 4 * CONNECTIONS as u64).then_some(())
    })
    .await;

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    eventually("/readyz to answer 503 once SIGTERM arrived", || async {
        let r = client
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    assert!(state.is_draining());
    // Keep the load up well into the drain window, then stop as a load balancer would
    // once it has seen the instance go unready.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Seen::default();
    for w in workers {
        let seen = w.await.unwrap();
        total.ok += seen.ok;
        total.closes += seen.closes;
        total.failed.extend(seen.failed);
    }
    assert!(
        total.failed.is_empty(),
        "{} of {} requests failed across SIGTERM: {:?}",
        total.failed.len(),
        total.ok + total.failed.len() as u64,
        &total.failed[..total.failed.len().min(5)]
    );
    assert!(
        total.ok > CONNECTIONS as u64,
        "the load ran: {} answers",
        total.ok
    );
    assert!(
        total.closes >= CONNECTIONS as u64 / 2,
        "answers during the drain close their connection: {} did",
        total.closes
    );
    tokio::time::timeout(common::PATIENCE, server)
        .await
        .expect("the server stops after the drain")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after the drain"
    );
}
