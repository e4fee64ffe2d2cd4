//! Pods backed by real processes, on the Kubernetes API **simulator**: the kubelet starts
//! them, probes their readiness, restarts them when they exit and kills them with the pod.

mod common;

use std::time::{Duration, Instant};

use axum::http::Request;
use common::{deployment, eventually, start};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use predict_buy_kube_sim::{ProcessRuntime, SimOptions};

/// Each container runs `python3 -m http.server` over a folder holding `readyz`, so the
/// readiness probe gets a real 200; a container whose release is `v9.9.9` exits with 3.
fn python_runtime(root: std::path::PathBuf) -> ProcessRuntime {
    ProcessRuntime::new(move |c, addr| {
        let mut cmd = if c.flag("--release") == Some("v9.9.9") {
            let mut cmd = tokio::process::Command::new("sh");
            cmd.args(["-c", "exit 3"]);
            cmd
        } else {
            let mut cmd = tokio::process::Command::new("python3");
            cmd.args([
                "-m",
                "http.server",
                &addr.port().to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&root);
            cmd
        };
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        Ok(cmd)
    })
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or_default()
            .trim_start()
            .starts_with('Z')
    })
}

#[tokio::test]
async fn process_pods_become_ready_serve_through_the_proxy_restart_and_die_with_the_pod() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("readyz"), "ok\n").unwrap();
    let delay = Duration::from_millis(400);
    let options = SimOptions::default()
        .namespace("nonprod")
        .pod_start_delay(delay)
        .termination_grace(Duration::from_millis(50))
        .runtime(python_runtime(root.path().to_path_buf()));
    let ctx = start(options).await;
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), "nonprod");
    let began = Instant::now();
    api.patch(
        "web",
        &PatchParams::apply("predict-buy"),
        &Patch::Apply(&deployment("web", 1, "img", "v1.0.0")),
    )
    .await
    .unwrap();
    let sim = &ctx.sim;
    let ready = || {
        sim.objects("deployments", "nonprod")
            .first()
            .is_some_and(|d| d["status"]["availableReplicas"] == 1)
    };
    eventually(
        Duration::from_secs(15),
        "the process-backed pod to be ready",
        ready,
    )
    .await;
    assert!(
        began.elapsed() >= delay,
        "not ready before the pod start delay"
    );

    let pod = sim.objects("pods", "nonprod").remove(0);
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let addr = sim
        .pod_addr("nonprod", &pod_name)
        .expect("a running container has an address");
    let req = Request::get(format!(
        "/api/v1/namespaces/nonprod/pods/{pod_name}/proxy/readyz"
    ))
    .body(Vec::new())
    .unwrap();
    assert_eq!(ctx.client.request_text(req).await.unwrap(), "ok\n");
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c).contains(&format!("http.server\0{}", addr.port()))
            })
        })
        .expect("the pod's python process runs");

    // A process that exits is restarted, and the pod shows it.
    api.patch(
        "crash",
        &PatchParams::apply("predict-buy"),
        &Patch::Apply(&deployment("crash", 1, "img", "v9.9.9")),
    )
    .await
    .unwrap();
    let restarted = || {
        sim.objects("pods", "nonprod").iter().any(|p| {
            let cs = &p["status"]["containerStatuses"][0];
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("crash-"))
                && cs["restartCount"].as_i64().unwrap_or(0) >= 2
                && cs["lastState"]["terminated"]["exitCode"] == 3
        })
    };
    eventually(
        Duration::from_secs(15),
        "the exiting process to be restarted",
        restarted,
    )
    .await;

    // Deleting the Deployment removes its pods and kills their processes.
    api.delete("web", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(10), "the pod's process to die", || {
        !pid_alive(pid)
    })
    .await;
    assert!(sim.object("pods", "nonprod", &pod_name).is_none());
}
