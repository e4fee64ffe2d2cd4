//! kubectl v1.35, the real client of Kubernetes, against the Kubernetes API **simulator**:
//! it checks the simulator itself, not only our use of it. Skipped (with the reason
//! printed) when no kubectl is found, unless `PREDICT_BUY_REQUIRE_KUBECTL=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{Ctx, deployment, start};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use predict_buy_kube_sim::{Scenario, SimOptions};

fn kubectl() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PREDICT_BUY_KUBECTL") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
}

fn kubectl_or_skip(test: &str) -> Option<PathBuf> {
    let found = kubectl();
    if found.is_none() {
        assert!(
            std::env::var("PREDICT_BUY_REQUIRE_KUBECTL").as_deref() != Ok("1"),
            "PREDICT_BUY_REQUIRE_KUBECTL=1 but no kubectl: set PREDICT_BUY_KUBECTL or put kubectl on PATH (.ci/kubectl.sh installs it)"
        );
        eprintln!("skipping {test}: no kubectl (set PREDICT_BUY_KUBECTL or put kubectl on PATH)");
    }
    found
}

async fn run(bin: &Path, ctx: &Ctx, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--kubeconfig")
        .arg(&ctx.kubeconfig)
        .arg("--cache-dir")
        .arg(ctx.dir.path().join("cache"))
        .args(args);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("kubectl finishes within 60 s")
        .unwrap();
    eprintln!(
        "kubectl {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn apply(ctx: &Ctx, d: &Deployment) {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), "nonprod");
    api.patch(
        d.metadata.name.as_deref().unwrap(),
        &PatchParams::apply("predict-buy"),
        &Patch::Apply(d),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn kubectl_sees_rollouts_history_and_undo_as_on_a_cluster() {
    let Some(bin) = kubectl_or_skip("kubectl_sees_rollouts_history_and_undo_as_on_a_cluster")
    else {
        return;
    };
    let ctx = start(SimOptions::default().namespace("nonprod")).await;
    apply(&ctx, &deployment("web", 2, "predict-buy:0.1.0", "v0.1.0")).await;
    let status = run(
        &bin,
        &ctx,
        &[
            "rollout",
            "status",
            "deploy/web",
            "-n",
            "nonprod",
            "--timeout=20s",
        ],
    )
    .await;
    assert!(status.status.success());
    assert!(
        stdout(&status).contains("successfully rolled out"),
        "{}",
        stdout(&status)
    );

    let yaml = run(
        &bin,
        &ctx,
        &["get", "deploy", "-n", "nonprod", "-o", "yaml"],
    )
    .await;
    assert!(yaml.status.success());
    let text = stdout(&yaml);
    assert!(text.contains("predict-buy.dev/release: v0.1.0"), "{text}");
    assert!(
        text.contains("deployment.kubernetes.io/revision: \"1\""),
        "{text}"
    );
    let plain = run(&bin, &ctx, &["get", "pods", "-n", "nonprod"]).await;
    assert!(plain.status.success());
    assert_eq!(
        stdout(&plain).matches("web-").count(),
        2,
        "{}",
        stdout(&plain)
    );

    apply(&ctx, &deployment("web", 2, "predict-buy:0.2.0", "v0.2.0")).await;
    assert!(
        run(
            &bin,
            &ctx,
            &[
                "rollout",
                "status",
                "deploy/web",
                "-n",
                "nonprod",
                "--timeout=20s"
            ]
        )
        .await
        .status
        .success()
    );
    let history = run(
        &bin,
        &ctx,
        &["rollout", "history", "deploy/web", "-n", "nonprod"],
    )
    .await;
    assert!(history.status.success());
    let revisions: Vec<String> = stdout(&history)
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(revisions, ["1", "2"]);

    let undo = run(
        &bin,
        &ctx,
        &["rollout", "undo", "deploy/web", "-n", "nonprod"],
    )
    .await;
    assert!(undo.status.success());
    assert!(
        run(
            &bin,
            &ctx,
            &[
                "rollout",
                "status",
                "deploy/web",
                "-n",
                "nonprod",
                "--timeout=20s"
            ]
        )
        .await
        .status
        .success()
    );
    let d = ctx.sim.object("deployments", "nonprod", "web").unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "predict-buy:0.1.0"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let history = run(
        &bin,
        &ctx,
        &["rollout", "history", "deploy/web", "-n", "nonprod"],
    )
    .await;
    let revisions: Vec<String> = stdout(&history)
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(
        revisions,
        ["2", "3"],
        "undo reuses revision 1's ReplicaSet as revision 3"
    );
}

#[tokio::test]
async fn kubectl_rollout_status_fails_on_a_stuck_rollout() {
    let Some(bin) = kubectl_or_skip("kubectl_rollout_status_fails_on_a_stuck_rollout") else {
        return;
    };
    let ctx = start(
        SimOptions::default()
            .namespace("nonprod")
            .progress_deadline(Duration::from_millis(800)),
    )
    .await;
    ctx.sim
        .set_image_scenario("predict-buy:stuck", Scenario::Stuck);
    apply(&ctx, &deployment("web", 1, "predict-buy:stuck", "v0.1.0")).await;
    let status = run(
        &bin,
        &ctx,
        &[
            "rollout",
            "status",
            "deploy/web",
            "-n",
            "nonprod",
            "--timeout=20s",
        ],
    )
    .await;
    assert!(!status.status.success());
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
}
