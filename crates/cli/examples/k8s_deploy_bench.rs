//! Bench (issue 13): predict-buy's own overhead in a Kubernetes deploy, measured
//! against the in-process SIMULATOR of the Kubernetes API (`crates/kube-sim`; no
//! cluster can run where this project is built) with real `predict-buy serve` pods.
//!
//! Each round deploys the other of two releases to a one-replica environment and
//! times the whole `predict-buy deploy --yes --json` process (lease, server-side apply,
//! rollout wait, verification through the pod proxy, history), then subtracts the
//! simulator's pod start delay, which stands for the kubelet pulling and starting a
//! container: what is left is ours (plus the simulator's own work).
//!
//! ```sh
//! cargo build --release -p predict-buy
//! PREDICT_BUY_BIN=target/release/predict-buy \
//!   cargo run --release -p predict-buy --example k8s_deploy_bench -- [ROUNDS] [DELAY_MS]
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use predict_buy_kube_sim::{ProcessRuntime, RuntimeError, SimOptions, Simulator};

fn main() {
    let bin = PathBuf::from(
        std::env::var("PREDICT_BUY_BIN").expect("set PREDICT_BUY_BIN to a predict-buy binary"),
    );
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(10, |a| a.parse().expect("ROUNDS"));
    let delay = Duration::from_millis(args.next().map_or(500, |a| a.parse().expect("DELAY_MS")));
    let dir = tempfile::tempdir().expect("a temp dir");
    let work = dir.path();
    let kubeconfig = work.join("kubeconfig");
    let run = |args: &[&str]| -> String {
        let out = Command::new(&bin)
            .args(args)
            .current_dir(work)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("PREDICT_BUY_REGISTRY")
            .output()
            .expect("predict-buy runs");
        assert!(
            out.status.success(),
            "predict-buy {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    setup(work, &run);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let options = SimOptions::default()
        .namespace("bench")
        .pod_start_delay(delay)
        .runtime(serve_runtime(bin.clone(), work.to_path_buf()));
    let sim = rt
        .block_on(Simulator::start(options))
        .expect("the simulator starts");
    sim.write_kubeconfig(&kubeconfig).expect("kubeconfig");

    run(&["deploy", "v1.0.0", "--env", "bench", "--yes", "--json"]);
    let mut overhead = Vec::new();
    let mut verify = Vec::new();
    for i in 0..rounds {
        let tag = if i % 2 == 0 { "v1.1.0" } else { "v1.0.0" };
        let start = Instant::now();
        let report = run(&["deploy", tag, "--env", "bench", "--yes", "--json"]);
        let wall = start.elapsed();
        let report: serde_json::Value = serde_json::from_str(&report).expect("a JSON report");
        assert_eq!(report["outcome"], "verified", "{report}");
        overhead.push(wall.saturating_sub(delay).as_secs_f64() * 1e3);
        verify.push(report["verify_ms"].as_f64().unwrap_or(f64::NAN));
    }
    println!(
        "cpu: {}",
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default()
    );
    println!(
        "{rounds} deploys, pod start delay {} ms: deploy wall time minus the delay: median {:.0} ms (min {:.0}, max {:.0}); verify_ms median {:.0} (goal: overhead < 300 ms)",
        delay.as_millis(),
        median(&mut overhead),
        overhead.iter().cloned().fold(f64::INFINITY, f64::min),
        overhead.iter().cloned().fold(0.0, f64::max),
        median(&mut verify),
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Two releases of different models in a file registry, and one Kubernetes
/// environment of one replica.
fn setup(work: &Path, run: &dyn Fn(&[&str]) -> String) {
    run(&[
        "data", "synth", "--rows", "20000", "--seed", "1", "--out", "data",
    ]);
    for (name, trees) in [("a", 20), ("b", 30)] {
        std::fs::write(
            work.join(format!("{name}.yml")),
            format!(
                "data: {{train_path: data/train.csv, test_path: data/test.csv}}\nmodel: {{name: RandomForestClassifier, params: {{n_estimators: {trees}, max_depth: 8, random_state: 1}}, store_path: models/}}\n"
            ),
        )
        .expect("a config");
        run(&[
            "train",
            "--config",
            &format!("{name}.yml"),
            "--out",
            &format!("models/{name}.pbm"),
        ]);
    }
    let registry = format!("file://{}", work.join("registry").display());
    std::fs::write(
        work.join("predict-buy.yaml"),
        format!(
            "registry: {registry}\nrequire_git_tag: false\nenvironments:\n  bench:\n    target: kubernetes\n    namespace: bench\n    replicas: 1\n"
        ),
    )
    .expect("the project config");
    run(&[
        "release",
        "create",
        "v1.0.0",
        "--model",
        "models/a.pbm",
        "--allow-unversioned-data",
    ]);
    run(&[
        "release",
        "create",
        "v1.1.0",
        "--model",
        "models/b.pbm",
        "--allow-unversioned-data",
    ]);
}

/// Pods run `predict-buy serve` with the container's arguments on the address the
/// simulator gives them.
fn serve_runtime(bin: PathBuf, work: PathBuf) -> ProcessRuntime {
    ProcessRuntime::new(move |c, addr| {
        let mut args = c.args.clone();
        match args.iter().position(|a| a == "--addr") {
            Some(i) if i + 1 < args.len() => args[i + 1] = addr.to_string(),
            _ => args.extend(["--addr".to_string(), addr.to_string()]),
        }
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.arg("serve")
            .args(&args)
            .current_dir(&work)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        Ok::<_, RuntimeError>(cmd)
    })
}
