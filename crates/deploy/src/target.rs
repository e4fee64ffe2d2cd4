//! Targets: how a release is applied to an environment. A local target's servers
//! follow the registry themselves, so applying is setting the desired release; a
//! Kubernetes target applies the release's manifests ([`crate::kubernetes`]).

use std::future::Future;

use predict_buy_registry::{EnvName, EnvState, Registry, RegistryUrl, ReleaseRecord, ReleaseTag};
use reqwest::Url;

use crate::config::{Environment, TargetKind};
use crate::error::{Error, Result};
use crate::kubernetes::{Cluster, KubeVerifier, KubernetesTarget};
use crate::verify::{Verified, Verifier, Verify, VerifyFailure};

/// Where an environment runs and how to make it run a release.
pub trait Target: Send + Sync {
    /// One line for plans and status, e.g. `local (2 endpoints)`.
    fn describe(&self) -> String;

    /// The instances to verify after applying.
    fn endpoints(&self) -> &[Url];

    /// Make the environment run `release` (`None` clears it). `expected_generation`
    /// guards against a concurrent change of the environment state.
    fn apply(
        &self,
        registry: &Registry,
        env: &EnvName,
        release: Option<&ReleaseTag>,
        actor: &str,
        expected_generation: Option<u64>,
    ) -> impl Future<Output = Result<EnvState>> + Send;
}

/// `predict-buy serve --registry URL --env NAME` processes at known endpoints.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    endpoints: Vec<Url>,
}

impl LocalTarget {
    pub fn new(endpoints: Vec<Url>) -> Self {
        LocalTarget { endpoints }
    }
}

impl Target for LocalTarget {
    fn describe(&self) -> String {
        let list: Vec<&str> = self.endpoints.iter().map(Url::as_str).collect();
        format!("local servers {}", list.join(", "))
    }

    fn endpoints(&self) -> &[Url] {
        &self.endpoints
    }

    async fn apply(
        &self,
        registry: &Registry,
        env: &EnvName,
        release: Option<&ReleaseTag>,
        actor: &str,
        expected_generation: Option<u64>,
    ) -> Result<EnvState> {
        Ok(registry
            .set_desired(env, release, actor, expected_generation)
            .await?)
    }
}

/// The local target an environment's config asks for.
pub fn target_for(env: &Environment) -> Result<LocalTarget> {
    match env.config.target {
        TargetKind::Local => {
            if env.endpoints.is_empty() {
                return Err(Error::NoEndpoints {
                    env: env.name.clone(),
                    path: env.source.clone(),
                });
            }
            Ok(LocalTarget::new(env.endpoints.clone()))
        }
        // Reaching a cluster is async and fallible: see [`connect`].
        TargetKind::Kubernetes => Err(Error::TargetUnsupported {
            env: env.name.clone(),
            target: TargetKind::Kubernetes.as_str(),
        }),
    }
}

/// The target of any environment, so one engine type serves every kind.
#[derive(Debug, Clone)]
pub enum EnvTarget {
    Local(LocalTarget),
    Kubernetes(Box<KubernetesTarget>),
}

/// The verifier that goes with an [`EnvTarget`].
#[derive(Debug, Clone)]
pub enum EnvVerifier {
    Http(Verifier),
    Kubernetes(KubeVerifier),
}

impl Target for EnvTarget {
    fn describe(&self) -> String {
        match self {
            EnvTarget::Local(t) => t.describe(),
            EnvTarget::Kubernetes(t) => t.describe(),
        }
    }

    fn endpoints(&self) -> &[Url] {
        match self {
            EnvTarget::Local(t) => t.endpoints(),
            EnvTarget::Kubernetes(t) => t.endpoints(),
        }
    }

    async fn apply(
        &self,
        registry: &Registry,
        env: &EnvName,
        release: Option<&ReleaseTag>,
        actor: &str,
        expected_generation: Option<u64>,
    ) -> Result<EnvState> {
        match self {
            EnvTarget::Local(t) => {
                t.apply(registry, env, release, actor, expected_generation)
                    .await
            }
            EnvTarget::Kubernetes(t) => {
                t.apply(registry, env, release, actor, expected_generation)
                    .await
            }
        }
    }
}

impl Verify for EnvVerifier {
    fn timeout(&self) -> std::time::Duration {
        match self {
            EnvVerifier::Http(v) => Verify::timeout(v),
            EnvVerifier::Kubernetes(v) => v.timeout(),
        }
    }

    async fn verify(
        &self,
        endpoints: &[Url],
        release: &ReleaseRecord,
        warnings: &mut Vec<String>,
    ) -> std::result::Result<Verified, VerifyFailure> {
        match self {
            EnvVerifier::Http(v) => v.verify(endpoints, release, warnings).await,
            EnvVerifier::Kubernetes(v) => v.verify(endpoints, release, warnings).await,
        }
    }
}

/// The target and verifier of `env`. A Kubernetes environment connects to its cluster
/// (kubeconfig as kubectl reads it, or the environment's `context`); its pods read the
/// environment's `pod_registry`, else `registry`. `http` is the verifier a local
/// target uses; a Kubernetes one takes only its timeout.
pub async fn connect(
    env: &Environment,
    http: Verifier,
    registry: &RegistryUrl,
) -> Result<(EnvTarget, EnvVerifier)> {
    match env.config.target {
        TargetKind::Local => Ok((EnvTarget::Local(target_for(env)?), EnvVerifier::Http(http))),
        TargetKind::Kubernetes => {
            let settings = env.kube_settings()?;
            let cluster =
                Cluster::connect(env.config.context.as_deref(), &settings.namespace).await?;
            let pod_registry = env
                .config
                .pod_registry
                .clone()
                .unwrap_or_else(|| registry.to_string());
            let verifier = KubeVerifier::new(cluster.clone(), Verify::timeout(&http));
            Ok((
                EnvTarget::Kubernetes(Box::new(KubernetesTarget::new(
                    cluster,
                    settings,
                    pod_registry,
                ))),
                EnvVerifier::Kubernetes(verifier),
            ))
        }
    }
}
