//! Targets: how a release is applied to an environment. A local target's servers
//! follow the registry themselves, so applying is setting the desired release.

use std::future::Future;

use predict_buy_registry::{EnvName, EnvState, Registry, ReleaseTag};
use reqwest::Url;

use crate::config::{Environment, TargetKind};
use crate::error::{Error, Result};

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

/// The target an environment's config asks for.
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
        TargetKind::Kubernetes => Err(Error::TargetUnsupported {
            env: env.name.clone(),
            target: TargetKind::Kubernetes.as_str(),
        }),
    }
}
