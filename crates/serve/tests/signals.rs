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
