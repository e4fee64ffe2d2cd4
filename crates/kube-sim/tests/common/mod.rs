//! Shared set-up for the tests that drive the Kubernetes API **simulator** with real clients.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use predict_buy_kube_sim::{SimHandle, SimOptions, Simulator};
use serde_json::json;

/// A running simulator, its kubeconfig on disk and a kube-rs client built from it.
pub struct Ctx {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub client: Client,
}

pub async fn start(options: SimOptions) -> Ctx {
    let sim = Simulator::start(options).await.expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();
    let kc = Kubeconfig::read_from(&kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(cfg).unwrap();
    Ctx {
        sim,
        dir,
        kubeconfig,
        client,
    }
}

/// A Deployment like the one the Kubernetes target builds: readiness on `/readyz`, one
/// pinned release in its args, `maxUnavailable: 0`.
pub fn deployment(name: &str, replicas: i32, image: &str, release: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": {"predict-buy.dev/release": release}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "serve", "image": image,
                    "args": ["serve", "--release", release, "--addr", "0.0.0.0:8080"],
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
                }]},
            },
        },
    }))
    .unwrap()
}

/// Polls `check` until it holds, failing the test after `limit`.
pub async fn eventually<F: FnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
