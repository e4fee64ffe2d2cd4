//! Talking to one environment's namespace with kube-rs: server-side apply under one
//! field manager, waiting for a rollout with the pods' own reasons when it cannot
//! finish, HTTP to a pod through the API server's proxy, and what the cluster runs.

use std::time::Duration;

use bytes::Bytes;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::KubeConfigOptions;
use kube::{Client, Config};
use serde::Serialize;
use tokio::time::Instant;

use super::error::{KubeError, api_error};
use super::manifests::{APP, CANARY, CONTAINER_PORT, Manifests, TRACK_LABEL, annotation};

/// The one field manager of every server-side apply predict-buy makes.
pub const FIELD_MANAGER: &str = "predict-buy";
/// How often a rollout's progress is read: short, because the wait is most of a
/// deploy's own overhead and a read is one cheap GET.
const POLL: Duration = Duration::from_millis(50);

/// A connection to a cluster, scoped to one namespace.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    namespace: String,
    /// The API server URL, for messages.
    server: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// How a rollout ended well.
#[derive(Debug, Clone, Serialize)]
pub struct RolledOut {
    pub generation: i64,
    pub ready_replicas: i32,
    /// The ready pods of the new pod template.
    pub pods: Vec<String>,
}

impl Cluster {
    /// Reads the kubeconfig as kubectl does (`KUBECONFIG`, else `~/.kube/config`),
    /// with `context` or the current one, and checks that the API server answers.
    pub async fn connect(context: Option<&str>, namespace: &str) -> Result<Self, KubeError> {
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..KubeConfigOptions::default()
        };
        let config =
            Config::from_kubeconfig(&options)
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    context: context.map(str::to_string),
                    source,
                })?;
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|source| KubeError::Client {
            server: server.clone(),
            source,
        })?;
        client
            .apiserver_version()
            .await
            .map_err(|source| KubeError::Unreachable {
                server: server.clone(),
                source,
            })?;
        Ok(Cluster {
            client,
            namespace: namespace.to_string(),
            server,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Fails with [`KubeError::NamespaceMissing`] unless the namespace exists or
    /// `manifests` create it.
    pub async fn check_namespace(&self, manifests: &Manifests) -> Result<(), KubeError> {
        if manifests.namespace.is_some() {
            return Ok(());
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.get_opt(&self.namespace).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(KubeError::NamespaceMissing {
                namespace: self.namespace.clone(),
            }),
            // Without the right to read namespaces, the applies below say what is
            // wrong more precisely.
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
            Err(e) => Err(api_error(e, "get", "namespaces", &self.namespace)),
        }
    }

    /// Server-side applies every object (without forcing: a field someone else
    /// changed is a conflict to report, not to overwrite). Returns the Deployment as
    /// the API server stored it — or, with `dry_run`, as it would store it.
    ///
    /// A real apply first sends every object as a dry run (`dryRun=All`), which runs
    /// the same RBAC, validation and field-ownership checks: a refusal or a conflict
    /// on the Deployment then leaves the Service and PodDisruptionBudget untouched too,
    /// instead of half an environment. Only the namespace (with `create_namespace`) is
    /// created before that check, since the other objects cannot be checked without it.
    pub async fn apply(
        &self,
        manifests: &Manifests,
        dry_run: bool,
    ) -> Result<Deployment, KubeError> {
        self.check_namespace(manifests).await?;
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if dry_run {
            params = params.dry_run();
        }
        if let Some(ns) = &manifests.namespace {
            let api: Api<Namespace> = Api::all(self.client.clone());
            apply_one(&api, &self.namespace, ns, &params, "namespaces").await?;
        }
        if !dry_run {
            self.apply_objects(manifests, &PatchParams::apply(FIELD_MANAGER).dry_run())
                .await?;
        }
        self.apply_objects(manifests, &params).await
    }

    /// The namespaced objects, in order, with the Deployment as stored.
    async fn apply_objects(
        &self,
        manifests: &Manifests,
        params: &PatchParams,
    ) -> Result<Deployment, KubeError> {
        let ns = &self.namespace;
        let c = &self.client;
        apply_one(
            &Api::namespaced(c.clone(), ns),
            APP,
            &manifests.service,
            params,
            "services",
        )
        .await?;
        apply_one(
            &Api::namespaced(c.clone(), ns),
            APP,
            &manifests.pdb,
            params,
            "poddisruptionbudgets.policy",
        )
        .await?;
        let deployment = apply_one(
            &Api::namespaced(c.clone(), ns),
            APP,
            &manifests.deployment,
            params,
            "deployments.apps",
        )
        .await?;
        if let Some(hpa) = &manifests.hpa {
            apply_one(
                &Api::namespaced(c.clone(), ns),
                APP,
                hpa,
                params,
                "horizontalpodautoscalers.autoscaling",
            )
            .await?;
        }
        Ok(deployment)
    }

    /// The live Deployment, if any.
    pub async fn deployment(&self) -> Result<Option<Deployment>, KubeError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        api.get_opt(APP)
            .await
            .map_err(|e| api_error(e, "get", "deployments.apps", APP))
    }

    /// Waits until the Deployment's controller has seen `generation` and every desired
    /// replica is updated and available, with no old pod left. Fails at once when
    /// Kubernetes says the rollout cannot finish (its progress deadline passed) or a new
    /// pod cannot run (crash loop, image pull, unschedulable), naming the pod and its
    /// own reason; fails at `timeout` otherwise.
    pub async fn wait_rollout(
        &self,
        generation: i64,
        release: &str,
        timeout: Duration,
    ) -> Result<RolledOut, KubeError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no status yet");
        loop {
            let poll = async {
                let Some(d) = self.deployment().await? else {
                    return Err(KubeError::Gone {
                        namespace: self.namespace.clone(),
                    });
                };
                let progress = RolloutProgress::of(&d, generation);
                if let Some(reason) = progress.failed.clone() {
                    return Err(KubeError::RolloutFailed {
                        namespace: self.namespace.clone(),
                        reason,
                    });
                }
                let pods = self.release_pods(release).await?;
                if let Some(problem) = pods.iter().find_map(pod_problem) {
                    return Err(KubeError::PodFailed {
                        namespace: self.namespace.clone(),
                        pod: problem.pod,
                        reason: problem.reason,
                        message: problem.message,
                    });
                }
                Ok((progress, pods))
            };
            match tokio::time::timeout_at(deadline, poll).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(e),
                Ok(Ok((progress, pods))) => {
                    if progress.complete {
                        let ready: Vec<String> = pods
                            .iter()
                            .filter(|p| pod_ready(p))
                            .filter_map(|p| p.metadata.name.clone())
                            .collect();
                        return Ok(RolledOut {
                            generation,
                            ready_replicas: progress.ready,
                            pods: ready,
                        });
                    }
                    last = progress.summary;
                }
            }
            if Instant::now() + POLL >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        Err(KubeError::RolloutTimeout {
            namespace: self.namespace.clone(),
            timeout,
            last,
        })
    }

    /// The pods running `release` (by the version label of their template).
    pub async fn release_pods(&self, release: &str) -> Result<Vec<Pod>, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("app.kubernetes.io/name={APP},app.kubernetes.io/version={release}");
        let mut pods = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_error(e, "list", "pods", &selector))?
            .items;
        pods.retain(|p| p.metadata.deletion_timestamp.is_none());
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(pods)
    }

    /// An HTTP request to a pod's server port through the API server's proxy.
    pub async fn pod_request(
        &self,
        pod: &str,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(http::StatusCode, Bytes), KubeError> {
        let uri = format!(
            "/api/v1/namespaces/{}/pods/{pod}:{CONTAINER_PORT}/proxy/{}",
            self.namespace,
            path.trim_start_matches('/')
        );
        let mut builder = http::Request::builder().method(method).uri(&uri);
        if body.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(kube::client::Body::from(body.unwrap_or_default()))
            .map_err(|e| KubeError::Request {
                uri: uri.clone(),
                message: e.to_string(),
            })?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| KubeError::Request {
                uri: uri.clone(),
                message: e.to_string(),
            })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| KubeError::Request {
                uri,
                message: e.to_string(),
            })?;
        Ok((status, bytes))
    }

    /// What the cluster runs in this namespace, for `status`.
    pub async fn status(&self) -> Result<ClusterStatus, KubeError> {
        let Some(d) = self.deployment().await? else {
            return Ok(ClusterStatus::default());
        };
        let annotations = d.metadata.annotations.clone().unwrap_or_default();
        let spec = d.spec.as_ref();
        let st = d.status.clone().unwrap_or_default();
        let rs_api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("app.kubernetes.io/name={APP}");
        let mut replica_sets: Vec<ReplicaSetStatus> = rs_api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_error(e, "list", "replicasets.apps", &selector))?
            .items
            .into_iter()
            .map(|rs| {
                let a = rs.metadata.annotations.clone().unwrap_or_default();
                let template = rs
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .and_then(|t| t.metadata.as_ref())
                    .and_then(|m| m.annotations.clone())
                    .unwrap_or_default();
                let st = rs.status.unwrap_or_default();
                ReplicaSetStatus {
                    name: rs.metadata.name.unwrap_or_default(),
                    revision: a
                        .get("deployment.kubernetes.io/revision")
                        .and_then(|r| r.parse().ok()),
                    release: template.get(annotation::RELEASE).cloned(),
                    replicas: st.replicas,
                    ready: st.ready_replicas.unwrap_or(0),
                }
            })
            .collect();
        replica_sets.sort_by_key(|r| std::cmp::Reverse(r.revision));
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let pods = pod_api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_error(e, "list", "pods", &selector))?
            .items;
        let mut pod_statuses = Vec::new();
        for pod in &pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let restarts = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum());
            let ready = pod_ready(pod);
            let last_event = if ready {
                None
            } else {
                self.last_event(&name).await?
            };
            pod_statuses.push(PodStatus {
                release: pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app.kubernetes.io/version").cloned()),
                problem: pod_problem(pod).map(|p| format!("{}: {}", p.reason, p.message)),
                name,
                ready,
                restarts,
                last_event,
            });
        }
        pod_statuses.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ClusterStatus {
            deployment: Some(DeploymentStatus {
                release: annotations.get(annotation::RELEASE).cloned(),
                model_digest: annotations.get(annotation::MODEL_DIGEST).cloned(),
                deployed_by: annotations.get(annotation::DEPLOYED_BY).cloned(),
                generation: d.metadata.generation.unwrap_or(0),
                observed_generation: st.observed_generation.unwrap_or(0),
                desired: spec.and_then(|s| s.replicas).unwrap_or(1),
                updated: st.updated_replicas.unwrap_or(0),
                ready: st.ready_replicas.unwrap_or(0),
                available: st.available_replicas.unwrap_or(0),
            }),
            replica_sets,
            pods: pod_statuses,
        })
    }

    /// Server-side apply of the canary's Deployment, after a dry run of it.
    pub async fn apply_canary(&self, deployment: &Deployment) -> Result<Deployment, KubeError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        let real = PatchParams::apply(FIELD_MANAGER);
        apply_one(
            &api,
            CANARY,
            deployment,
            &real.clone().dry_run(),
            "deployments.apps",
        )
        .await?;
        apply_one(&api, CANARY, deployment, &real, "deployments.apps").await
    }

    /// The canary's live Deployment, if any.
    pub async fn canary(&self) -> Result<Option<Deployment>, KubeError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        api.get_opt(CANARY)
            .await
            .map_err(|e| api_error(e, "get", "deployments.apps", CANARY))
    }

    /// Delete the canary's Deployment (its ReplicaSet and pods go with it, by the
    /// garbage collector); `false` when there was none.
    pub async fn delete_canary(&self) -> Result<bool, KubeError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.namespace);
        match api
            .delete(CANARY, &kube::api::DeleteParams::background())
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(api_error(e, "delete", "deployments.apps", CANARY)),
        }
    }

    /// The canary's pods that are not being deleted, by name.
    pub async fn canary_pods(&self) -> Result<Vec<Pod>, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("app.kubernetes.io/name={APP},{TRACK_LABEL}=canary");
        let mut pods = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_error(e, "list", "pods", &selector))?
            .items;
        pods.retain(|p| p.metadata.deletion_timestamp.is_none());
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(pods)
    }

    /// Wait until `replicas` canary pods are ready, failing at once on a pod that
    /// cannot run (crash loop, image pull) and at `timeout` otherwise.
    pub async fn wait_canary(
        &self,
        replicas: i32,
        timeout: Duration,
    ) -> Result<Vec<String>, KubeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let pods = self.canary_pods().await?;
            if let Some(problem) = pods.iter().find_map(pod_problem) {
                return Err(KubeError::PodFailed {
                    namespace: self.namespace.clone(),
                    pod: problem.pod,
                    reason: problem.reason,
                    message: problem.message,
                });
            }
            let ready: Vec<String> = pods
                .iter()
                .filter(|p| pod_ready(p))
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            if ready.len() >= replicas.max(1) as usize {
                return Ok(ready);
            }
            let last = format!("{} of {replicas} canary pod(s) ready", ready.len());
            if Instant::now() + POLL >= deadline {
                return Err(KubeError::RolloutTimeout {
                    namespace: self.namespace.clone(),
                    timeout,
                    last,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn last_event(&self, pod: &str) -> Result<Option<String>, KubeError> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let field = format!("involvedObject.name={pod}");
        let events = match api.list(&ListParams::default().fields(&field)).await {
            Ok(list) => list.items,
            // Events are a courtesy; a cluster that will not list them still has a
            // status to show.
            Err(e) => {
                tracing::debug!("cannot list events of {pod}: {e}");
                return Ok(None);
            }
        };
        Ok(events
            .into_iter()
            .max_by_key(|e| {
                e.last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or_else(|| e.event_time.as_ref().map(|t| t.0))
            })
            .map(|e| {
                format!(
                    "{}: {}",
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default()
                )
            }))
    }
}

async fn apply_one<K>(
    api: &Api<K>,
    name: &str,
    object: &K,
    params: &PatchParams,
    resource: &str,
) -> Result<K, KubeError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + Serialize + std::fmt::Debug,
{
    api.patch(name, params, &Patch::Apply(object))
        .await
        .map_err(|e| api_error(e, "patch", resource, name))
}

/// A Deployment's rollout as its status tells it.
#[derive(Debug, Clone)]
struct RolloutProgress {
    complete: bool,
    ready: i32,
    /// Kubernetes gave up on the rollout (its progress deadline passed).
    failed: Option<String>,
    summary: String,
}

impl RolloutProgress {
    fn of(d: &Deployment, generation: i64) -> Self {
        let st = d.status.clone().unwrap_or_default();
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let observed = st.observed_generation.unwrap_or(0);
        let updated = st.updated_replicas.unwrap_or(0);
        let available = st.available_replicas.unwrap_or(0);
        let total = st.replicas.unwrap_or(0);
        let ready = st.ready_replicas.unwrap_or(0);
        let failed = st.conditions.as_ref().and_then(|cs| {
            cs.iter()
                .find(|c| {
                    c.type_ == "Progressing"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                })
                .map(|c| {
                    format!(
                        "ProgressDeadlineExceeded: {}",
                        c.message.clone().unwrap_or_default()
                    )
                })
        });
        // The same test as `kubectl rollout status`: the controller saw this spec,
        // every replica runs it, no old replica is left, and all are available.
        let complete = observed >= generation
            && updated >= desired
            && total <= updated
            && available >= updated;
        let summary = format!(
            "generation {observed}/{generation} observed, {updated} of {desired} updated, {available} available, {total} in all"
        );
        RolloutProgress {
            complete,
            ready,
            failed: if observed >= generation { failed } else { None },
            summary,
        }
    }
}

struct PodProblem {
    pod: String,
    reason: String,
    message: String,
}

/// Why a pod cannot become ready on its own, if it cannot: a crash loop, an image
/// that cannot be pulled, a config error, or no node to run on.
fn pod_problem(pod: &Pod) -> Option<PodProblem> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref()?;
    for c in status.container_statuses.iter().flatten() {
        let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
        if let Some(w) = waiting {
            let reason = w.reason.clone().unwrap_or_default();
            let fatal = matches!(
                reason.as_str(),
                "CrashLoopBackOff"
                    | "ErrImagePull"
                    | "ImagePullBackOff"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
            );
            if fatal {
                let mut message = w.message.clone().unwrap_or_default();
                if reason == "CrashLoopBackOff" {
                    let last = c
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .map(|t| {
                            format!(
                                "; last exit code {}{}",
                                t.exit_code,
                                t.message
                                    .as_ref()
                                    .map(|m| format!(": {m}"))
                                    .unwrap_or_default()
                            )
                        })
                        .unwrap_or_default();
                    message = format!("restarted {} times{last}. {message}", c.restart_count);
                }
                return Some(PodProblem {
                    pod: name,
                    reason,
                    message: message.trim().to_string(),
                });
            }
        }
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
        {
            return Some(PodProblem {
                pod: name,
                reason: "Unschedulable".into(),
                message: c.message.clone().unwrap_or_default(),
            });
        }
    }
    None
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What `predict-buy status` shows of a Kubernetes environment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterStatus {
    pub deployment: Option<DeploymentStatus>,
    /// Newest revision first.
    pub replica_sets: Vec<ReplicaSetStatus>,
    pub pods: Vec<PodStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    pub release: Option<String>,
    pub model_digest: Option<String>,
    pub deployed_by: Option<String>,
    pub generation: i64,
    pub observed_generation: i64,
    pub desired: i32,
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaSetStatus {
    pub name: String,
    pub revision: Option<u64>,
    pub release: Option<String>,
    pub replicas: i32,
    pub ready: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct PodStatus {
    pub name: String,
    pub release: Option<String>,
    pub ready: bool,
    pub restarts: i32,
    /// Why it cannot become ready, when Kubernetes says it cannot.
    pub problem: Option<String>,
    /// The newest event of a pod that is not ready.
    pub last_event: Option<String>,
}

impl std::fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(d) = &self.deployment else {
            return write!(f, "  cluster      no Deployment `{APP}` in this namespace");
        };
        writeln!(
            f,
            "  cluster      {} ({} of {} ready, {} updated, generation {}/{})",
            d.release.as_deref().unwrap_or("no release annotation"),
            d.ready,
            d.desired,
            d.updated,
            d.observed_generation,
            d.generation,
        )?;
        for rs in &self.replica_sets {
            writeln!(
                f,
                "  revision {:<3} {} {} ({}/{} ready)",
                rs.revision.map_or("?".to_string(), |r| r.to_string()),
                rs.name,
                rs.release.as_deref().unwrap_or("?"),
                rs.ready,
                rs.replicas,
            )?;
        }
        for p in &self.pods {
            write!(
                f,
                "  pod          {} {} {} restarts {}",
                p.name,
                p.release.as_deref().unwrap_or("?"),
                if p.ready { "ready" } else { "not ready" },
                p.restarts,
            )?;
            if let Some(problem) = &p.problem {
                write!(f, " — {problem}")?;
            } else if let Some(event) = &p.last_event {
                write!(f, " — {event}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
