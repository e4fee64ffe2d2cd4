//! The Kubernetes [`Target`] and [`Verify`]: applying a release is a server-side apply
//! of its manifests (then recording the desired release in the registry); verifying
//! it is waiting for the rollout and asking every new pod, through the API server's
//! proxy, the same questions the local verifier asks a server.

use std::time::{Duration, Instant};

use predict_buy_api::RootResponse;
use predict_buy_registry::{EnvName, EnvState, Registry, ReleaseRecord, ReleaseTag};
use reqwest::Url;

use super::cluster::Cluster;
use super::error::KubeError;
use super::manifests::{APP, KubeSettings, PORT_NAME, RenderInput, render};
use crate::error::Result;
use crate::target::Target;
use crate::verify::{
    Check, FailureKind, Verified, Verify, VerifyFailure, check_prediction, check_ready, check_root,
    parse_prediction,
};

/// How often a pod that does not answer correctly yet is asked again.
const POLL: Duration = Duration::from_millis(50);

/// One environment's namespace on a cluster.
#[derive(Debug, Clone)]
pub struct KubernetesTarget {
    cluster: Cluster,
    settings: KubeSettings,
    /// The registry URL written into the pods' arguments.
    pod_registry: String,
    /// The Service through the API server's proxy: what `status` and plans show.
    endpoints: Vec<Url>,
}

impl KubernetesTarget {
    pub fn new(cluster: Cluster, settings: KubeSettings, pod_registry: String) -> Self {
        let service = format!(
            "{}/api/v1/namespaces/{}/services/{APP}:{PORT_NAME}/proxy/",
            cluster.server().trim_end_matches('/'),
            settings.namespace
        );
        let endpoints = Url::parse(&service).into_iter().collect();
        KubernetesTarget {
            cluster,
            settings,
            pod_registry,
            endpoints,
        }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn settings(&self) -> &KubeSettings {
        &self.settings
    }

    /// The registry URL written into the pods' arguments.
    pub fn pod_registry(&self) -> &str {
        &self.pod_registry
    }

    /// Pods the main Deployment runs when settled: its replicas, or the autoscaler's
    /// minimum.
    pub fn main_replicas(&self) -> i32 {
        self.settings
            .autoscale
            .as_ref()
            .map_or(self.settings.replicas, |a| a.min_replicas)
    }

    /// A server-side dry run (`dryRun=All`) of `release`'s manifests, for `--dry-run`:
    /// the API server validates and defaults them without storing anything.
    pub async fn dry_run(
        &self,
        env: &EnvName,
        release: &ReleaseRecord,
        actor: &str,
    ) -> std::result::Result<k8s_openapi::api::apps::v1::Deployment, KubeError> {
        let manifests = render(&RenderInput {
            env,
            release,
            registry_url: &self.pod_registry,
            settings: &self.settings,
            deployed_by: Some(actor),
        });
        self.cluster.apply(&manifests, true).await
    }
}

impl Target for KubernetesTarget {
    fn describe(&self) -> String {
        format!(
            "kubernetes namespace `{}` on {}",
            self.settings.namespace,
            self.cluster.server()
        )
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
        // The cluster first: if it refuses (RBAC, a hand edit, no namespace) nothing
        // changed anywhere, and the registry still says what runs.
        if let Some(tag) = release {
            let record = registry.get_release(tag).await?;
            let manifests = render(&RenderInput {
                env,
                release: &record,
                registry_url: &self.pod_registry,
                settings: &self.settings,
                deployed_by: Some(actor),
            });
            self.cluster.apply(&manifests, false).await?;
        } else {
            // Nothing verified to return to: the Deployment keeps what it has, and
            // only the registry's desired release is cleared.
            tracing::warn!(
                "no release to return namespace `{}` to; its Deployment is left as it is",
                self.settings.namespace
            );
        }
        Ok(registry
            .set_desired(env, release, actor, expected_generation)
            .await?)
    }
}

/// Verifies a release on a cluster: the rollout finishes, then every pod of the
/// release reports it, is ready, and answers the golden inputs exactly.
#[derive(Debug, Clone)]
pub struct KubeVerifier {
    cluster: Cluster,
    timeout: Duration,
}

impl KubeVerifier {
    pub fn new(cluster: Cluster, timeout: Duration) -> Self {
        KubeVerifier { cluster, timeout }
    }
}

fn failure(endpoint: String, kind: FailureKind, problem: String) -> VerifyFailure {
    VerifyFailure {
        endpoint,
        problem,
        kind,
    }
}

/// Whom a rollout failure blames: pods that crash or whose image cannot be pulled
/// are the release's fault; a rollout that does not finish in time, or an API server
/// that does not answer, says only that the environment could not be checked.
fn rollout_failure(namespace: &str, e: &KubeError) -> VerifyFailure {
    let kind = if e.blames_release() {
        FailureKind::RefusedToLoad
    } else if matches!(
        e,
        KubeError::RolloutTimeout { .. } | KubeError::RolloutFailed { .. }
    ) {
        FailureKind::TimedOut
    } else {
        FailureKind::Unreachable
    };
    failure(format!("namespace {namespace}"), kind, e.to_string())
}

impl Verify for KubeVerifier {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn verify(
        &self,
        _endpoints: &[Url],
        release: &ReleaseRecord,
        _warnings: &mut Vec<String>,
    ) -> std::result::Result<Verified, VerifyFailure> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let ns = self.cluster.namespace().to_string();
        let tag = release.tag.to_string();
        let generation = match self.cluster.deployment().await {
            Ok(Some(d)) => d.metadata.generation.unwrap_or(0),
            Ok(None) => {
                return Err(failure(
                    format!("namespace {ns}"),
                    FailureKind::Unreachable,
                    format!("no Deployment `{APP}` to verify"),
                ));
            }
            Err(e) => return Err(rollout_failure(&ns, &e)),
        };
        let rolled = self
            .cluster
            .wait_rollout(generation, &tag, self.timeout)
            .await
            .map_err(|e| rollout_failure(&ns, &e))?;
        let mut endpoints = Vec::new();
        for pod in &rolled.pods {
            let took = self.verify_pod(pod, release, deadline).await?;
            endpoints.push((format!("pod {pod}"), took));
        }
        if endpoints.is_empty() {
            return Err(failure(
                format!("namespace {ns}"),
                FailureKind::Unreachable,
                format!("the rollout finished but no pod of {tag} is ready"),
            ));
        }
        Ok(Verified {
            elapsed: start.elapsed(),
            endpoints,
        })
    }
}

impl KubeVerifier {
    async fn verify_pod(
        &self,
        pod: &str,
        release: &ReleaseRecord,
        deadline: Instant,
    ) -> std::result::Result<Duration, VerifyFailure> {
        let start = Instant::now();
        let endpoint = format!("pod {pod}");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let checked = tokio::time::timeout(remaining, self.check_pod(pod, release))
                .await
                .unwrap_or_else(|_| Err(Check::NotYet("a request was still pending".into())));
            let (kind, problem) = match checked {
                Ok(()) => return Ok(start.elapsed()),
                Err(Check::Wrong(p)) => {
                    return Err(failure(endpoint, FailureKind::WrongAnswer, p));
                }
                Err(Check::NotYet(p)) => (FailureKind::TimedOut, p),
                Err(Check::Unreachable(p)) => (FailureKind::Unreachable, p),
            };
            if Instant::now() + POLL >= deadline {
                return Err(failure(
                    endpoint,
                    kind,
                    format!(
                        "not verified within {:.1}s: {problem}",
                        self.timeout.as_secs_f64()
                    ),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn check_pod(
        &self,
        pod: &str,
        release: &ReleaseRecord,
    ) -> std::result::Result<(), Check> {
        let get = |path: &'static str| async move {
            self.cluster
                .pod_request(pod, http::Method::GET, path, None)
                .await
                .map_err(|e| Check::Unreachable(e.to_string()))
        };
        let (status, body) = get("").await?;
        let root: RootResponse<'_> = serde_json::from_slice(&body).map_err(|e| {
            Check::NotYet(format!(
                "GET / answered {status} with no root document: {e}"
            ))
        })?;
        check_root(&root, &release.tag)?;
        let (status, _) = get("readyz").await?;
        check_ready(status)?;
        for (i, golden) in release.golden.iter().enumerate() {
            let body = serde_json::to_vec(&golden.input)
                .map_err(|e| Check::Wrong(format!("golden input {i} cannot be encoded: {e}")))?;
            let (status, answer) = self
                .cluster
                .pod_request(pod, http::Method::POST, "predict", Some(body))
                .await
                .map_err(|e| Check::Unreachable(e.to_string()))?;
            let answer = parse_prediction(status, &String::from_utf8_lossy(&answer));
            check_prediction(i, golden, &answer, &release.tag)?;
        }
        Ok(())
    }
}
