//! `predict-buy render TAG --env E`: the Kubernetes objects a deploy of TAG to E
//! would apply, as YAML, without a cluster — for GitOps, review, and the checked-in
//! kustomize overlays (`deploy/k8s/`, written with `--kustomize`).

use std::path::{Path, PathBuf};

use clap::Args;
use predict_buy_deploy::kubernetes::kustomize::kustomize;
use predict_buy_deploy::kubernetes::{RenderInput, render};
use predict_buy_deploy::{Environment, TargetKind};
use predict_buy_registry::{Registry, RegistryUrl, ReleaseRecord, ReleaseTag};

use super::deploy::ProjectArgs;
use crate::registry_url::registry_error;
use crate::settings::Settings;
use crate::{CliError, Outcome};

#[derive(Args)]
pub struct RenderArgs {
    /// The release to render, e.g. v1.2.0 (it must exist in the registry).
    pub tag: String,
    /// A Kubernetes environment of predict-buy.yaml (default: the one following the
    /// current git branch).
    #[arg(long)]
    pub env: Option<String>,
    /// Write the YAML to this file (atomically) instead of stdout.
    #[arg(long, value_name = "FILE", conflicts_with = "kustomize")]
    pub out: Option<PathBuf>,
    /// Write a kustomize layout instead: DIR/base/ (shared by every environment) and
    /// DIR/overlays/ENV/ (namespace and patches); other files in DIR are left alone.
    #[arg(long, value_name = "DIR")]
    pub kustomize: Option<PathBuf>,
    /// Read the release record from this JSON file (as `release show --json` prints
    /// it) instead of the registry, so rendering needs no registry access and checked-in
    /// manifests can be regenerated from a checked-in record.
    #[arg(long, value_name = "FILE")]
    pub release_file: Option<PathBuf>,
    #[command(flatten)]
    pub project: ProjectArgs,
}

pub fn run(a: RenderArgs) -> Outcome {
    let tag = ReleaseTag::parse(&a.tag).map_err(registry_error)?;
    let settings = Settings::from_process()?;
    let config = settings.require_project(a.project.config.as_deref())?;
    let env = settings.environment(&config, a.env.as_deref())?;
    if env.config.target != TargetKind::Kubernetes {
        return Err(CliError::input(anyhow::anyhow!(
            "environment `{}` has target `{}`; render draws Kubernetes manifests",
            env.name,
            env.config.target.as_str()
        ))
        .with_hint("pass --env with an environment whose `target:` is `kubernetes`"));
    }
    let kube = env.kube_settings()?;
    let url = settings.registry_url_in(a.project.registry.registry.as_deref(), Some(&config))?;
    let release = match &a.release_file {
        Some(path) => release_from_file(path, &tag)?,
        None => release_from_registry(&url, &tag)?,
    };
    let pod_registry = pod_registry(&env, &url);
    let input = RenderInput {
        env: &env.name,
        release: &release,
        registry_url: &pod_registry,
        settings: &kube,
        deployed_by: None,
    };
    if let Some(dir) = &a.kustomize {
        return write_kustomize(dir, &input);
    }
    let yaml = render(&input).to_yaml().map_err(|e| {
        CliError::failed(anyhow::Error::new(e).context("cannot write the manifests as YAML"))
    })?;
    match &a.out {
        Some(path) => crate::project::write_atomic(path, yaml.as_bytes()),
        None => crate::project::out(yaml),
    }
}

fn pod_registry(env: &Environment, url: &RegistryUrl) -> String {
    env.config
        .pod_registry
        .clone()
        .unwrap_or_else(|| url.to_string())
}

fn release_from_registry(url: &RegistryUrl, tag: &ReleaseTag) -> Result<ReleaseRecord, CliError> {
    let registry = Registry::open(url).map_err(registry_error)?;
    crate::settings::runtime(crate::settings::Runtime::Registry)?
        .block_on(registry.get_release(tag))
        .map_err(registry_error)
}

fn release_from_file(path: &Path, tag: &ReleaseTag) -> Result<ReleaseRecord, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::input(
            anyhow::Error::new(e)
                .context(format!("cannot read the release file {}", path.display())),
        )
    })?;
    let release: ReleaseRecord = serde_json::from_str(&text).map_err(|e| {
        CliError::input(
            anyhow::Error::new(e).context(format!("{} is not a release record", path.display())),
        )
        .with_hint("write it with `predict-buy release show TAG --json`")
    })?;
    if &release.tag != tag {
        return Err(CliError::input(anyhow::anyhow!(
            "{} records release {}, not {tag}",
            path.display(),
            release.tag
        )));
    }
    Ok(release)
}

fn write_kustomize(dir: &Path, input: &RenderInput<'_>) -> Outcome {
    let files = kustomize(input).map_err(|e| {
        CliError::failed(
            anyhow::Error::new(e).context("cannot lay out the manifests for kustomize"),
        )
    })?;
    // An overlay is exactly what this render produced: a patch file left over from an
    // earlier render (say, before autoscaling was turned off) must not linger.
    let overlay = dir.join(predict_buy_deploy::kubernetes::kustomize::overlay_dir(
        input.env,
    ));
    if overlay.is_dir() {
        std::fs::remove_dir_all(&overlay).map_err(|e| {
            CliError::failed(
                anyhow::Error::new(e).context(format!("cannot clear {}", overlay.display())),
            )
        })?;
    }
    for file in &files {
        crate::project::write_atomic(&dir.join(&file.path), file.contents.as_bytes())?;
    }
    eprintln!(
        "wrote {} files for `{}` under {}",
        files.len(),
        input.env,
        dir.display()
    );
    Ok(())
}
