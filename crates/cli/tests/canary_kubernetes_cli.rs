//! `deploy --canary` on a Kubernetes environment, through the real binary.
//!
//! No cluster can run on these machines, so these tests run against an in-process
//! **SIMULATOR** of the Kubernetes API (`crates/kube-sim`) over real HTTP: the CLI
//! reaches it through `KUBECONFIG` with kube-rs's real client, and its pods are real
//! `predict-buy serve` processes, so the canary Deployment's pods, the Service proxy
//! that spreads requests over both Deployments' pods, and every pod's `/traffic` are
//! real servers. Passing here is evidence, not proof, that the canary works on a
//! cluster.

mod common;
#[path = "support/canary.rs"]
mod support;

use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TestContext, models, poll_until, sim_serve_runtime};
use predict_buy_kube_sim::{SimHandle, SimOptions, Simulator};
use serde_json::Value;
use support::{bodies, everyone_buys};

const NS: &str = "staging";

/// A project with `staging` on the simulator (3 replicas), releases v0.1.0 (model a),
/// v0.2.0 (model a again: the healthy candidate), v0.3.0 (everyone buys), and v0.1.0
/// deployed.
struct Project {
    ctx: TestContext,
    sim: SimHandle,
    _rt: tokio::runtime::Runtime,
}

impl Project {
    fn new() -> Project {
        let mut ctx = TestContext::new();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let options = SimOptions::default()
            .namespace(NS)
            .runtime(sim_serve_runtime(ctx.path().to_path_buf()));
        let sim = rt.block_on(Simulator::start(options)).unwrap();
        let kubeconfig = ctx.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).unwrap();
        ctx.env("KUBECONFIG", &kubeconfig.display().to_string());
        // v0.1.0 and v0.2.0 are the same model, so what tells them apart in an analysis
        // is the sampling noise of a few dozen requests: a positive-rate gap of 0.18
        // and a score PSI of 0.18 have been seen. The limits stay far above that
        // noise and far below an everyone-buys model's gap (about 0.7).
        std::fs::write(
            ctx.path().join("predict-buy.yaml"),
            format!(
                "registry: file://{}\nrequire_git_tag: false\nenvironments:\n  \
                 {NS}:\n    target: kubernetes\n    namespace: {NS}\n    replicas: 3\n    \
                 canary: {{min_requests: 60, interval: 300ms, \
                 max_positive_rate_diff: 0.35, max_score_psi: 1.0}}\n",
                ctx.registry_dir().display()
            ),
        )
        .unwrap();
        let m = models();
        for (tag, model) in [
            ("v0.1.0", m.a.as_path()),
            ("v0.2.0", m.a.as_path()),
            ("v0.3.0", everyone_buys()),
        ] {
            release(&ctx, tag, model);
        }
        ctx.run(["deploy", "v0.1.0", "--env", NS, "--yes", "--timeout", "90s"])
            .ok();
        Project { ctx, sim, _rt: rt }
    }

    fn canary(&self, tag: &str, args: &[&str]) -> Child {
        self.ctx
            .command()
            .args([
                "deploy",
                tag,
                "--env",
                NS,
                "--yes",
                "--json",
                "--timeout",
                "90s",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn deployment(&self, name: &str) -> Option<Value> {
        self.sim.object("deployments", NS, name)
    }

    fn template_release(&self, name: &str) -> Option<String> {
        self.deployment(name)?["spec"]["template"]["metadata"]["annotations"]
            ["predict-buy.dev/release"]
            .as_str()
            .map(str::to_string)
    }

    fn last_entry(&self) -> (String, String, String) {
        let h = self.ctx.run(["history", "--env", NS, "--json"]).ok().json();
        let e = h.as_array().unwrap().last().unwrap().clone();
        (
            e["outcome"].as_str().unwrap().to_string(),
            e["release"].as_str().unwrap().to_string(),
            e["message"].as_str().unwrap().to_string(),
        )
    }

    /// Requests through the Service (both Deployments' pods) until dropped.
    fn traffic(&self) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, addr) = (Arc::clone(&stop), self.sim.addr());
        let thread = std::thread::spawn(move || {
            let mut i = 0usize;
            while !flag.load(Ordering::Relaxed) {
                let _ = proxied_predict(addr, &bodies()[i % bodies().len()]);
                i += 1;
            }
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }
}

fn release(ctx: &TestContext, tag: &str, model: &Path) {
    ctx.run([
        OsStr::new("release"),
        OsStr::new("create"),
        OsStr::new(tag),
        OsStr::new("--model"),
        model.as_os_str(),
    ])
    .ok();
}

struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn proxied_predict(addr: SocketAddr, body: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST /api/v1/namespaces/{NS}/services/predict-buy:http/proxy/predict HTTP/1.1\r\n\
         Host: {addr}\r\nAuthorization: Bearer kube-sim-token\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    if response.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(response)
    }
}

fn finish(child: Child) -> (i32, Value, String) {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

#[test]
fn a_canary_deployment_with_the_replica_ratio_as_weight_is_promoted() {
    let p = Project::new();
    let _load = p.traffic();
    // 25% beside 3 main pods: round(3 × 25 / 75) = 1 canary pod, exactly 25%.
    let child = p.canary("v0.2.0", &["--canary", "25%", "--analysis", "200"]);
    poll_until("the canary Deployment runs v0.2.0 on one pod", || {
        p.deployment("predict-buy-canary")
            .is_some_and(|d| d["spec"]["replicas"] == 1)
            && p.template_release("predict-buy-canary").as_deref() == Some("v0.2.0")
    });
    // The main Deployment keeps the baseline and its capacity meanwhile.
    assert_eq!(p.template_release("predict-buy").as_deref(), Some("v0.1.0"));
    assert_eq!(p.deployment("predict-buy").unwrap()["spec"]["replicas"], 3);
    let (code, report, stderr) = finish(child);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert_eq!(report["outcome"], "promoted", "{report}");
    assert_eq!(report["effective_percent"], 25.0);
    let candidate = report["metrics"]["candidate"]["requests"].as_u64().unwrap();
    let baseline = report["metrics"]["baseline"]["requests"].as_u64().unwrap();
    assert!(candidate >= 60, "{report}");
    assert!(baseline > candidate, "{report}");
    // Promoted: the main Deployment runs the candidate, the canary one is gone.
    assert_eq!(p.template_release("predict-buy").as_deref(), Some("v0.2.0"));
    poll_until("the canary Deployment is deleted", || {
        p.deployment("predict-buy-canary").is_none()
    });
    let (outcome, release, message) = p.last_entry();
    assert_eq!((outcome.as_str(), release.as_str()), ("verified", "v0.2.0"));
    assert!(message.starts_with("canary passed"), "{message}");
}

#[test]
fn a_failing_canary_deployment_is_deleted_and_the_baseline_keeps_serving() {
    let p = Project::new();
    let _load = p.traffic();
    let child = p.canary("v0.3.0", &["--canary", "25", "--analysis", "5000"]);
    let (code, report, stderr) = finish(child);
    assert_eq!(code, 1, "{report}\n{stderr}");
    assert_eq!(report["outcome"], "failed", "{report}");
    assert!(
        report["failures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["metric"] == "positive_rate"),
        "{report}"
    );
    poll_until("the canary Deployment is deleted", || {
        p.deployment("predict-buy-canary").is_none()
    });
    assert_eq!(p.template_release("predict-buy").as_deref(), Some("v0.1.0"));
    let (outcome, release, message) = p.last_entry();
    assert_eq!((outcome.as_str(), release.as_str()), ("failed", "v0.3.0"));
    assert!(message.contains("positive_rate"), "{message}");
}
