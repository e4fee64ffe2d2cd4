//! Hot swap: authorisation, refusal of bad models, zero failed requests while
//! swapping, and following a registry environment.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{TOKEN, TestServer, artifacts, eventually, sample_row, write_model};
use predict_buy_model::Model;
use predict_buy_registry::{EnvName, Registry, RegistryUrl, ReleaseRecord, ReleaseTag};
use predict_buy_serve::{AppState, ModelSource, ReloadOutcome};
use serde_json::Value;

#[tokio::test]
async fn reload_needs_the_token() {
    let s = TestServer::start().await;
    assert_eq!(s.reload(None).await.0, 401);
    assert_eq!(s.reload(Some("wrong")).await.0, 401);
    let r = s
        .client
        .post(s.url("/admin/reload"))
        .header("authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let (status, body) = s.reload(Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "unchanged");
    s.stop().await;

    // No token configured: the admin routes do not exist.
    let s = TestServer::with(common::Options {
        token: None,
        ..Default::default()
    })
    .await;
    assert_eq!(s.reload(Some(TOKEN)).await.0, 404);
    assert_eq!(s.reload(None).await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn refused_models_leave_the_old_one_serving() {
    let s = TestServer::start().await;
    let before = s.state.current().unwrap().digest.clone();
    let (_, expected) = s.post_json("/predict", &sample_row()).await;

    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("garbage", b"not a model at all".to_vec(), "does not load"),
        (
            "truncated",
            artifacts().1[..artifacts().1.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "self-check",
            common::self_check_failing_artifact(),
            "self-check failed",
        ),
        ("empty", Vec::new(), "does not load"),
    ];
    for (name, bytes, why) in cases {
        write_model(&s.model_path, &bytes);
        let (status, body) = s.reload(Some(TOKEN)).await;
        assert_eq!(status, 422, "{name}: {body}");
        assert_eq!(body["error"], "model_refused");
        let reason = body["detail"][0]["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{name}: {reason}");
        assert!(
            reason.contains("model.pbm"),
            "{name}: names the file: {reason}"
        );
        assert_eq!(s.state.current().unwrap().digest, before, "{name}");
        let (status, answer) = s.post_json("/predict", &sample_row()).await;
        assert_eq!((status, &answer), (200, &expected), "{name}");
        let (_, info) = s.get("/model").await;
        assert!(
            info["last_reload_error"].as_str().unwrap().contains(why),
            "{info}"
        );
    }
    std::fs::remove_file(&s.model_path).unwrap();
    let (status, body) = s.reload(Some(TOKEN)).await;
    assert_eq!(status, 502, "a missing file is a source problem: {body}");
    assert_eq!(s.state.current().unwrap().digest, before);

    // A good model is taken again.
    write_model(&s.model_path, &artifacts().1);
    let (status, body) = s.reload(Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "swapped");
    assert_ne!(s.state.current().unwrap().digest, before);
    assert_eq!(s.get("/model").await.1["last_reload_error"], Value::Null);
    s.stop().await;
}

/// Hammers /predict from many tasks while the model is swapped back and forth; every
/// answer must be a 200 from one of the two models.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_fails_during_swaps() {
    const CLIENTS: usize = 16;
    const SWAPS: usize = 40;
    let s = Arc::new(TestServer::start().await);
    let versions: Vec<String> = [&artifacts().0, &artifacts().1]
        .iter()
        .map(|b| Model::from_bytes(b).unwrap().digest()[7..19].to_string())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    // Answers per model, to show that both served while the clients ran.
    let by_version = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (s, stop, ok, by_version, versions) = (
            s.clone(),
            stop.clone(),
            ok.clone(),
            by_version.clone(),
            versions.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = s.post_json("/predict", &sample_row()).await;
                match versions
                    .iter()
                    .position(|v| body["model_version"] == v.as_str())
                {
                    Some(i) if status == 200 => {
                        by_version[i].fetch_add(1, Ordering::Relaxed);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => failures.push((status, body)),
                }
            }
            failures
        }));
    }
    for i in 0..SWAPS {
        // Each swap waits for fresh traffic rather than for a time, so on a slow
        // machine every swap still lands among requests in flight.
        let seen = ok.load(Ordering::Relaxed);
        eventually("requests between swaps", || async {
            (ok.load(Ordering::Relaxed) >= seen + CLIENTS).then_some(())
        })
        .await;
        let bytes = if i % 2 == 0 {
            &artifacts().1
        } else {
            &artifacts().0
        };
        write_model(&s.model_path, bytes);
        let (status, body) = s.reload(Some(TOKEN)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "swapped");
    }
    let seen = ok.load(Ordering::Relaxed);
    eventually("requests after the last swap", || async {
        (ok.load(Ordering::Relaxed) >= seen + CLIENTS).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) >= (SWAPS + 1) * CLIENTS);
    for (i, v) in versions.iter().enumerate() {
        assert!(
            by_version[i].load(Ordering::Relaxed) > 0,
            "model {v} never answered"
        );
    }
}

/// One flipped byte anywhere after the header (payload or checksum): reload refuses the
/// artifact as corrupt, says so, and the old model keeps serving under its version.
#[tokio::test]
async fn a_flipped_byte_is_refused_by_reload() {
    let s = TestServer::start().await;
    let before = s.state.current().unwrap();
    let (status, root) = s.get("/").await;
    assert_eq!(status, 200);
    assert_eq!(root["model_version"], before.version.as_str());
    let (_, expected) = s.post_json("/predict", &sample_row()).await;

    let good = &artifacts().1;
    // The payload's first byte, its middle, its last, and the checksum's last.
    let header = 8 + 4 + 8;
    let checksum = 32;
    for at in [
        header,
        good.len() / 2,
        good.len() - checksum - 1,
        good.len() - 1,
    ] {
        let mut bytes = good.clone();
        bytes[at] ^= 0x01;
        write_model(&s.model_path, &bytes);
        let (status, body) = s.reload(Some(TOKEN)).await;
        assert_eq!(status, 422, "byte {at}: {body}");
        assert_eq!(body["error"], "model_refused", "byte {at}");
        let reason = body["detail"][0]["reason"].as_str().unwrap();
        assert!(reason.contains("checksum"), "byte {at}: {reason}");
        assert!(reason.contains("model.pbm"), "byte {at}: {reason}");

        let (status, root) = s.get("/").await;
        assert_eq!(status, 200, "byte {at}");
        assert_eq!(root["model_version"], before.version.as_str(), "byte {at}");
        assert_eq!(
            s.state.current().unwrap().digest,
            before.digest,
            "byte {at}"
        );
        let (status, answer) = s.post_json("/predict", &sample_row()).await;
        assert_eq!((status, &answer), (200, &expected), "byte {at}");
        let (_, info) = s.get("/model").await;
        assert_eq!(info["digest"], before.digest.as_str(), "byte {at}");
        assert!(
            info["last_reload_error"]
                .as_str()
                .is_some_and(|e| e.contains("checksum")),
            "byte {at}: {info}"
        );
        assert_eq!(s.get("/readyz").await.0, 200, "byte {at}: still ready");
    }
    // The same bytes unflipped are taken: the flip alone was the reason.
    write_model(&s.model_path, good);
    let (status, body) = s.reload(Some(TOKEN)).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &Value::from("swapped")),
        "{body}"
    );
    assert_ne!(s.get("/").await.1["model_version"], before.version.as_str());
    s.stop().await;
}

async fn release(registry: &Registry, tag: &str, bytes: &[u8]) -> ReleaseTag {
    let pushed = registry.push_bytes(bytes.to_vec().into()).await.unwrap();
    let tag = ReleaseTag::parse(tag).unwrap();
    registry
        .create_release(&ReleaseRecord {
            tag: tag.clone(),
            model_digest: pushed.digest,
            image: None,
            git_commit: None,
            notes: String::new(),
            created_at: jiff::Timestamp::now(),
            created_by: "test".into(),
            metrics: Value::Null,
            golden: Vec::new(),
            training: None,
        })
        .await
        .unwrap();
    tag
}

async fn wait_for(s: &TestServer, version: &str) -> Value {
    eventually(&format!("the server to report {version}"), || async {
        let (status, body) = s.get("/").await;
        (status == 200 && body["model_version"] == version).then_some(body)
    })
    .await
}

#[tokio::test]
async fn follows_a_registry_environment() {
    let dir = tempfile::tempdir().unwrap();
    let url = RegistryUrl::parse(&format!("file://{}", dir.path().join("reg").display())).unwrap();
    let registry = Arc::new(Registry::open(&url).unwrap());
    let env = EnvName::parse("nonprod").unwrap();
    let state = AppState::new(
        ModelSource::Registry {
            registry: registry.clone(),
            env: env.clone(),
        },
        common::test_limits(),
        Some(TOKEN.into()),
    );
    state.reload(true).await.unwrap();
    let s = TestServer::serve(state, dir, Default::default()).await;
    assert_eq!(s.get("/readyz").await.0, 503);
    assert_eq!(s.post_json("/predict", &sample_row()).await.0, 503);

    let v1 = release(&registry, "v1.0.0", &artifacts().0).await;
    registry
        .set_desired(&env, Some(&v1), "test", None)
        .await
        .unwrap();
    let root = wait_for(&s, "v1.0.0").await;
    assert_eq!(root["release"], "v1.0.0");
    assert_eq!(s.get("/readyz").await.0, 200);
    let (status, body) = s.post_json("/predict", &sample_row()).await;
    assert_eq!(status, 200);
    assert_eq!(body["model_version"], "v1.0.0");
    let (_, info) = s.get("/model").await;
    assert_eq!(info["release"], "v1.0.0");

    let v2 = release(&registry, "v1.1.0", &artifacts().1).await;
    registry
        .set_desired(&env, Some(&v2), "test", None)
        .await
        .unwrap();
    wait_for(&s, "v1.1.0").await;

    // A bad release is refused; v1.1.0 keeps serving and the reload says why.
    let bad = release(&registry, "v1.2.0", &common::self_check_failing_artifact()).await;
    registry
        .set_desired(&env, Some(&bad), "test", None)
        .await
        .unwrap();
    let (status, body) = s.reload(Some(TOKEN)).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("v1.2.0"),
        "{body}"
    );
    // What the poller does next: it does not fetch the refused release again, and
    // v1.1.0 keeps serving.
    assert_eq!(
        s.state.reload(false).await.unwrap(),
        ReloadOutcome::RefusedBefore {
            what: "v1.2.0".into()
        }
    );
    assert_eq!(s.get("/").await.1["model_version"], "v1.1.0");
    assert_eq!(
        s.post_json("/predict", &sample_row()).await.1["model_version"],
        "v1.1.0"
    );

    // Rolling back to a release of a model already seen swaps promptly.
    registry
        .set_desired(&env, Some(&v1), "test", None)
        .await
        .unwrap();
    wait_for(&s, "v1.0.0").await;
    s.stop().await;
}

/// The registry's copy of an artifact damaged in place (one flipped byte): following the
/// environment refuses it as corrupt, the release serving before keeps serving, and
/// polling does not fetch the damaged object again.
#[tokio::test]
async fn a_flipped_byte_in_the_registry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("reg");
    let url = RegistryUrl::parse(&format!("file://{}", root.display())).unwrap();
    let registry = Arc::new(Registry::open(&url).unwrap());
    let env = EnvName::parse("nonprod").unwrap();
    let state = AppState::new(
        ModelSource::Registry {
            registry: registry.clone(),
            env: env.clone(),
        },
        common::test_limits(),
        Some(TOKEN.into()),
    );
    let v1 = release(&registry, "v1.0.0", &artifacts().0).await;
    registry
        .set_desired(&env, Some(&v1), "test", None)
        .await
        .unwrap();
    state.reload(true).await.unwrap();
    let s = TestServer::serve(state, dir, Default::default()).await;
    wait_for(&s, "v1.0.0").await;

    let v2 = release(&registry, "v1.1.0", &artifacts().1).await;
    let digest = Model::from_bytes(&artifacts().1)
        .unwrap()
        .digest()
        .to_string();
    let object = root
        .join("registry-v1/objects/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    let mut bytes = std::fs::read(&object).expect("the object is stored where the layout says");
    assert_eq!(&bytes, &artifacts().1);
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    // Objects may be stored read-only; damage it the way a disk would, in place.
    let mut perms = std::fs::metadata(&object).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&object, perms).unwrap();
    std::fs::write(&object, &bytes).unwrap();

    registry
        .set_desired(&env, Some(&v2), "test", None)
        .await
        .unwrap();
    let (status, body) = s.reload(Some(TOKEN)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "model_refused");
    let reason = body["detail"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("corrupt"), "{reason}");
    assert!(reason.contains(&digest), "names the object: {reason}");
    let (status, root_body) = s.get("/").await;
    assert_eq!(status, 200);
    assert_eq!(root_body["model_version"], "v1.0.0");
    assert_eq!(s.get("/model").await.1["release"], "v1.0.0");
    assert_eq!(
        s.post_json("/predict", &sample_row()).await.1["model_version"],
        "v1.0.0"
    );
    assert!(
        s.get("/model").await.1["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("corrupt")),
    );
    assert_eq!(
        s.state.reload(false).await.unwrap(),
        ReloadOutcome::RefusedBefore {
            what: "v1.1.0".into()
        }
    );
    s.stop().await;
}

#[tokio::test]
async fn a_pinned_release_loads_once_and_never_follows() {
    let dir = tempfile::tempdir().unwrap();
    let url = RegistryUrl::parse(&format!("file://{}", dir.path().join("reg").display())).unwrap();
    let registry = Arc::new(Registry::open(&url).unwrap());
    let v1 = release(&registry, "v1.0.0", &artifacts().0).await;
    let v2 = release(&registry, "v1.1.0", &artifacts().1).await;
    let digest = registry.get_release(&v1).await.unwrap().model_digest;
    let state = AppState::new(
        ModelSource::Release {
            registry: registry.clone(),
            tag: v1.clone(),
            expected_digest: Some(digest),
        },
        common::test_limits(),
        Some(TOKEN.into()),
    );
    let outcome = state.reload(false).await.unwrap();
    assert!(
        matches!(&outcome, ReloadOutcome::Swapped { version, .. } if version == "v1.0.0"),
        "{outcome:?}"
    );
    // Whatever an environment of the registry says, a pinned server keeps its release.
    let env = EnvName::parse("prod").unwrap();
    registry
        .set_desired(&env, Some(&v2), "test", None)
        .await
        .unwrap();
    let again = state.reload(true).await.unwrap();
    assert_eq!(
        again,
        ReloadOutcome::Unchanged {
            version: "v1.0.0".into()
        }
    );
    let s = TestServer::serve(state, dir, Default::default()).await;
    assert_eq!(s.get("/readyz").await.0, 200);
    let (status, body) = s.post_json("/predict", &sample_row()).await;
    assert_eq!(
        (status, body["model_version"].as_str()),
        (200, Some("v1.0.0"))
    );
    s.stop().await;
}

#[tokio::test]
async fn a_pinned_release_with_another_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = RegistryUrl::parse(&format!("file://{}", dir.path().join("reg").display())).unwrap();
    let registry = Arc::new(Registry::open(&url).unwrap());
    let v1 = release(&registry, "v1.0.0", &artifacts().0).await;
    let v2 = release(&registry, "v1.1.0", &artifacts().1).await;
    let other = registry.get_release(&v2).await.unwrap().model_digest;
    let state = AppState::new(
        ModelSource::Release {
            registry,
            tag: v1,
            expected_digest: Some(other.clone()),
        },
        common::test_limits(),
        None,
    );
    let err = state.reload(false).await.unwrap_err();
    assert!(err.is_refusal(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("v1.0.0") && msg.contains(&other.to_string()),
        "{msg}"
    );
    assert!(state.current().is_none(), "nothing serves a refused pin");
}
