//! SIGHUP reloads from the configured source. In its own test binary because the
//! signal goes to the whole process.

mod common;

use std::time::Duration;

use common::{TestServer, artifacts, write_model};

#[tokio::test]
async fn sighup_reloads_the_model() {
    let s = TestServer::start().await;
    let before = s.get("/").await.1["model_version"].clone();
    write_model(&s.model_path, &artifacts().1);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let mut after = before.clone();
    for _ in 0..100 {
        after = s.get("/").await.1["model_version"].clone();
        if after != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(after, before, "SIGHUP did not swap the model");
    assert_eq!(s.post_json("/predict", &common::sample_row()).await.0, 200);
    s.stop().await;
}
