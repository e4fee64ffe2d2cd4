//! `predict-buy render TAG --env E`: the Kubernetes objects a deploy of TAG to E
//! would apply, as YAML, without a cluster — for GitOps, review, and the checked-in
//! kustomize overlays (`deploy/k8s/`).

use std::path::PathBuf;

use clap::Args;
use predict_buy_deploy::TargetKind;
use predict_buy_deploy::kubernetes::{RenderInput, render};

use super::deploy::{ProjectArgs, open_project};
use crate::registry_url::registry_error;
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
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub project: ProjectArgs,
}

pub fn run(a: RenderArgs) -> Outcome {
    let tag = predict_buy_registry::ReleaseTag::parse(&a.tag).map_err(registry_error)?;
    let project = open_project(&a.project, a.env.as_deref())?;
    let env = &project.env;
    if env.config.target != TargetKind::Kubernetes {
        return Err(CliError::input(anyhow::anyhow!(
            "environment `{}` has target `{}`; render draws Kubernetes manifests",
            env.name,
            env.config.target.as_str()
        ))
        .with_hint("pass --env with an environment whose `target:` is `kubernetes`"));
    }
    let settings = env.kube_settings()?;
    let release = crate::settings::runtime(crate::settings::Runtime::Registry)?
        .block_on(project.registry.get_release(&tag))
        .map_err(registry_error)?;
    let pod_registry = env
        .config
        .pod_registry
        .clone()
        .unwrap_or_else(|| project.url.to_string());
    let manifests = render(&RenderInput {
        env: &env.name,
        release: &release,
        registry_url: &pod_registry,
        settings: &settings,
        deployed_by: None,
    });
    let yaml = manifests.to_yaml().map_err(|e| {
        CliError::failed(anyhow::Error::new(e).context("cannot write the manifests as YAML"))
    })?;
    match &a.out {
        Some(path) => crate::project::write_atomic(path, yaml.as_bytes()),
        None => crate::project::out(yaml),
    }
}
