//! The checked-in kustomize layout (`deploy/k8s/base`, `deploy/k8s/overlays/*`) is
//! exactly what `predict-buy render --kustomize` writes today from the checked-in
//! example config and release record; `.ci/kustomize-check.sh` then checks with the
//! real kubectl that the overlays build to what `render` prints.
//!
//! After an intended change to the manifests, regenerate with
//! `UPDATE_K8S=1 cargo test -p predict-buy --test render_kustomize`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{TestContext, models};

const TAG: &str = "v1.2.0";
const ENVS: [&str; 2] = ["nonprod", "prod"];

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `render --kustomize OUT` for one environment of `config`, with the example release.
fn render_into(ctx: &TestContext, out: &Path, env: &str, config: &Path) -> common::Run {
    let release = k8s_dir().join("release.example.json");
    ctx.run([
        "render",
        TAG,
        "--env",
        env,
        "--kustomize",
        s(out),
        "--config",
        s(config),
        "--release-file",
        s(&release),
    ])
}

/// Every file under `root/base` and `root/overlays`, by path relative to `root`.
fn generated_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("read dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                let key = rel.to_str().expect("utf-8 path").replace('\\', "/");
                out.insert(key, std::fs::read(&path).expect("read generated file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &root.join("base"), &mut out);
    walk(root, &root.join("overlays"), &mut out);
    out
}

#[test]
fn checked_in_kustomize_files_are_what_render_writes_now() {
    let ctx = TestContext::new();
    let fresh = ctx.path().join("k8s");
    let config = k8s_dir().join("predict-buy.example.yaml");
    for env in ENVS {
        render_into(&ctx, &fresh, env, &config).ok();
    }
    let want = generated_files(&fresh);
    assert!(
        want.contains_key("base/kustomization.yaml")
            && want.contains_key("overlays/prod/kustomization.yaml")
            && want.contains_key("overlays/nonprod/kustomization.yaml"),
        "render wrote {:?}",
        want.keys().collect::<Vec<_>>()
    );

    let checked_in = k8s_dir();
    if std::env::var_os("UPDATE_K8S").is_some() {
        for sub in ["base", "overlays"] {
            let dir = checked_in.join(sub);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).expect("clear the checked-in layout");
            }
        }
        for (rel, bytes) in &want {
            let path = checked_in.join(rel);
            std::fs::create_dir_all(path.parent().expect("a file has a folder")).expect("mkdir");
            std::fs::write(&path, bytes).expect("write the checked-in layout");
        }
        return;
    }

    let have = generated_files(&checked_in);
    let mut problems = Vec::new();
    for (rel, bytes) in &want {
        match have.get(rel) {
            None => problems.push(format!("{rel}: missing from deploy/k8s")),
            Some(b) if b != bytes => problems.push(format!(
                "{rel}: differs\n--- checked in\n{}--- render writes\n{}",
                String::from_utf8_lossy(b),
                String::from_utf8_lossy(bytes)
            )),
            Some(_) => {}
        }
    }
    for rel in have.keys().filter(|rel| !want.contains_key(*rel)) {
        problems.push(format!("{rel}: checked in, but render no longer writes it"));
    }
    assert!(
        problems.is_empty(),
        "deploy/k8s is out of date with `predict-buy render`:\n{}\n\nregenerate with: \
         UPDATE_K8S=1 cargo test -p predict-buy --test render_kustomize",
        problems.join("\n")
    );
}

#[test]
fn every_environment_shares_one_base() {
    let ctx = TestContext::new();
    let config = k8s_dir().join("predict-buy.example.yaml");
    let (a, b) = (ctx.path().join("a"), ctx.path().join("b"));
    render_into(&ctx, &a, "nonprod", &config).ok();
    render_into(&ctx, &b, "prod", &config).ok();
    let base = |root: &Path| {
        generated_files(root)
            .into_iter()
            .filter(|(rel, _)| rel.starts_with("base/"))
            .collect::<BTreeMap<_, _>>()
    };
    let (base_a, base_b) = (base(&a), base(&b));
    assert_eq!(
        base_a.keys().collect::<Vec<_>>(),
        [
            "base/deployment.yaml",
            "base/kustomization.yaml",
            "base/poddisruptionbudget.yaml",
            "base/service.yaml"
        ]
    );
    assert_eq!(base_a, base_b);
    // Nothing of an environment or a release leaks into the base.
    for text in base_a
        .values()
        .map(|b| String::from_utf8_lossy(b).into_owned())
    {
        for leak in ["prod", TAG, "acme"] {
            assert!(!text.contains(leak), "the base mentions `{leak}`:\n{text}");
        }
    }
}

#[test]
fn a_rerender_drops_overlay_files_the_config_no_longer_asks_for() {
    let ctx = TestContext::new();
    let out = ctx.path().join("k8s");
    let config = k8s_dir().join("predict-buy.example.yaml");
    render_into(&ctx, &out, "prod", &config).ok();
    let hpa = out.join("overlays/prod/horizontalpodautoscaler.yaml");
    assert!(hpa.is_file(), "prod autoscales in the example config");

    let text = std::fs::read_to_string(&config).expect("read the example config");
    let without = text
        .split_once("    autoscale:")
        .map(|(head, tail)| {
            let rest = tail
                .split_once("    verify_timeout")
                .expect("key after autoscale")
                .1;
            format!("{head}    verify_timeout{rest}")
        })
        .expect("the example config autoscales prod");
    let edited = ctx.path().join("predict-buy.yaml");
    std::fs::write(&edited, without).expect("write the edited config");
    render_into(&ctx, &out, "prod", &edited).ok();
    assert!(!hpa.exists(), "a stale autoscaler stayed in the overlay");
    let patch = std::fs::read_to_string(out.join("overlays/prod/deployment-patch.yaml"))
        .expect("read the patch");
    assert!(
        !patch.contains("path: /spec/replicas"),
        "without an autoscaler the base's 2 replicas stand:\n{patch}"
    );
}

#[test]
fn a_release_file_for_another_tag_is_refused() {
    let ctx = TestContext::new();
    let config = k8s_dir().join("predict-buy.example.yaml");
    let release = k8s_dir().join("release.example.json");
    let run = ctx
        .run([
            "render",
            "v9.9.9",
            "--env",
            "prod",
            "--config",
            s(&config),
            "--release-file",
            s(&release),
        ])
        .code(2);
    assert!(
        run.stderr.contains("records release v1.2.0, not v9.9.9"),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");
}

#[test]
fn a_release_file_renders_what_the_registry_release_renders() {
    let ctx = TestContext::new();
    std::fs::write(
        ctx.path().join("predict-buy.yaml"),
        "environments:\n  prod:\n    target: kubernetes\n    namespace: shop\n",
    )
    .expect("write predict-buy.yaml");
    let m = models();
    ctx.run(["release", "create", TAG, "--model", s(&m.a)]).ok();
    let shown = ctx.run(["release", "show", TAG, "--json"]).ok();
    let digest = shown.json()["model_digest"]
        .as_str()
        .expect("a digest")
        .to_string();
    let record = ctx.path().join("release.json");
    std::fs::write(&record, &shown.stdout).expect("write the release record");

    let from_registry = ctx.run(["render", TAG, "--env", "prod"]).ok();
    // Without pod_registry the pods read the project's own registry.
    for want in [
        format!("- {digest}"),
        "- --registry\n        - file://".to_string(),
        "namespace: shop".to_string(),
        format!("predict-buy.dev/release: {TAG}"),
    ] {
        assert!(
            from_registry.stdout.contains(&want),
            "`{want}` missing:\n{from_registry}"
        );
    }
    let from_file = ctx
        .run(["render", TAG, "--env", "prod", "--release-file", s(&record)])
        .ok();
    assert_eq!(from_file.stdout, from_registry.stdout);

    let missing = ctx.run(["render", "v9.9.9", "--env", "prod"]).code(2);
    assert!(missing.stdout.is_empty(), "{missing}");
}
