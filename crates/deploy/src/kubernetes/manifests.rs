//! The Kubernetes objects of one environment running one release, built from
//! k8s-openapi types. Pure: the same release and settings give the same objects, so
//! `predict-buy render` (GitOps), the checked-in kustomize overlays and a deploy all
//! agree on what runs.
//!
//! A pod runs one release and never changes it: the pod template names the release
//! and its model digest, and the container starts `predict-buy serve --release TAG
//! --model-digest D`, which pulls that model at start and is not ready before. A new
//! release is therefore a new pod template, which is a Kubernetes rollout.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    HTTPGetAction, Namespace, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use predict_buy_registry::{EnvName, ReleaseRecord};
use serde::{Deserialize, Serialize};

/// The name of every object predict-buy manages in an environment's namespace.
pub const APP: &str = "predict-buy";
/// The canary's Deployment (`deploy --canary`), beside [`APP`].
pub const CANARY: &str = "predict-buy-canary";
/// The label that tells a canary's pods (and its selector) from the main ones.
pub const TRACK_LABEL: &str = "predict-buy.dev/track";
/// The container's name and its one port's name.
pub const CONTAINER: &str = "server";
pub const PORT_NAME: &str = "http";
/// The port the server listens on inside the pod.
pub const CONTAINER_PORT: i32 = 8080;
/// The Service's port.
pub const SERVICE_PORT: i32 = 80;
/// The unprivileged user of the image (distroless's `nonroot`).
pub const RUN_AS: i64 = 65532;

/// Annotations that make `kubectl describe` tell what `predict-buy status` tells.
pub mod annotation {
    pub const RELEASE: &str = "predict-buy.dev/release";
    pub const MODEL_DIGEST: &str = "predict-buy.dev/model-digest";
    pub const REGISTRY: &str = "predict-buy.dev/registry";
    pub const DEPLOYED_BY: &str = "predict-buy.dev/deployed-by";
    /// Shown by `kubectl rollout history`.
    pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
}

/// CPU and memory for the server container (Kubernetes quantities: `250m`, `128Mi`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default = "Resources::default_requests")]
    pub requests: CpuMemory,
    #[serde(default = "Resources::default_limits")]
    pub limits: CpuMemory,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuMemory {
    pub cpu: String,
    pub memory: String,
}

impl Resources {
    // A 100-tree model and the server fit in well under 128 MiB; one core serves tens
    // of thousands of predictions a second, so a small request packs pods densely.
    fn default_requests() -> CpuMemory {
        CpuMemory {
            cpu: "100m".into(),
            memory: "64Mi".into(),
        }
    }

    fn default_limits() -> CpuMemory {
        CpuMemory {
            cpu: "1".into(),
            memory: "256Mi".into(),
        }
    }
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            requests: Self::default_requests(),
            limits: Self::default_limits(),
        }
    }
}

/// A HorizontalPodAutoscaler on CPU; with it the Deployment leaves `replicas` to the
/// autoscaler instead of resetting it on every apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    pub min_replicas: i32,
    pub max_replicas: i32,
    #[serde(default = "Autoscale::default_cpu")]
    pub target_cpu_percent: i32,
}

impl Autoscale {
    fn default_cpu() -> i32 {
        70
    }
}

/// The Kubernetes settings of one environment, from `predict-buy.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    pub namespace: String,
    pub replicas: i32,
    pub resources: Resources,
    pub service_account: Option<String>,
    /// A Secret whose keys become the server's environment (S3 credentials).
    pub registry_secret: Option<String>,
    /// Overrides the release's image.
    pub image: Option<String>,
    pub autoscale: Option<Autoscale>,
    pub create_namespace: bool,
    /// How long a rollout may make no progress before Kubernetes marks it failed.
    pub progress_deadline_seconds: i32,
}

impl KubeSettings {
    pub const DEFAULT_REPLICAS: i32 = 2;
    pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 120;

    pub fn new(namespace: impl Into<String>) -> Self {
        KubeSettings {
            namespace: namespace.into(),
            replicas: Self::DEFAULT_REPLICAS,
            resources: Resources::default(),
            service_account: None,
            registry_secret: None,
            image: None,
            autoscale: None,
            create_namespace: false,
            progress_deadline_seconds: Self::DEFAULT_PROGRESS_DEADLINE_SECONDS,
        }
    }
}

/// What the objects are built from.
#[derive(Debug, Clone, Copy)]
pub struct RenderInput<'a> {
    pub env: &'a EnvName,
    pub release: &'a ReleaseRecord,
    /// The registry URL the pods pull the model from.
    pub registry_url: &'a str,
    pub settings: &'a KubeSettings,
    /// Who deployed, for the annotation; `None` when rendering for GitOps, so the
    /// rendered files do not change with the person who rendered them.
    pub deployed_by: Option<&'a str>,
}

/// One environment's objects, in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    pub namespace: Option<Namespace>,
    pub service: Service,
    pub pdb: PodDisruptionBudget,
    pub deployment: Deployment,
    pub hpa: Option<HorizontalPodAutoscaler>,
}

/// The image a release runs: the environment's override, else the release's own,
/// else `predict-buy:<version>` (the tag without its `v`).
pub fn image_for(release: &ReleaseRecord, settings: &KubeSettings) -> String {
    settings
        .image
        .clone()
        .or_else(|| release.image.clone())
        .unwrap_or_else(|| {
            let tag = release.tag.to_string();
            format!("{APP}:{}", tag.trim_start_matches('v'))
        })
}

/// Labels every object carries; the first two also select the pods, so they never
/// change with the release (a selector is immutable).
fn selector_labels(env: &EnvName) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP.to_string()),
        ("app.kubernetes.io/instance".to_string(), env.to_string()),
    ])
}

fn labels(input: &RenderInput<'_>) -> BTreeMap<String, String> {
    let mut labels = selector_labels(input.env);
    labels.insert("app.kubernetes.io/managed-by".into(), APP.into());
    labels.insert(
        "app.kubernetes.io/version".into(),
        input.release.tag.to_string(),
    );
    labels
}

fn meta(input: &RenderInput<'_>) -> ObjectMeta {
    ObjectMeta {
        name: Some(APP.into()),
        namespace: Some(input.settings.namespace.clone()),
        labels: Some(labels(input)),
        ..ObjectMeta::default()
    }
}

/// Builds the environment's objects for a release.
pub fn render(input: &RenderInput<'_>) -> Manifests {
    Manifests {
        namespace: input.settings.create_namespace.then(|| namespace(input)),
        service: service(input),
        pdb: pdb(input),
        deployment: deployment(input),
        hpa: input.settings.autoscale.as_ref().map(|a| hpa(input, a)),
    }
}

fn namespace(input: &RenderInput<'_>) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(input.settings.namespace.clone()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".to_string(), APP.to_string()),
                // The pods meet the restricted Pod Security Standard; let the
                // namespace enforce it.
                (
                    "pod-security.kubernetes.io/enforce".to_string(),
                    "restricted".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

fn service(input: &RenderInput<'_>) -> Service {
    Service {
        metadata: meta(input),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(input.env)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            type_: Some("ClusterIP".into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn pdb(input: &RenderInput<'_>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(input),
        spec: Some(PodDisruptionBudgetSpec {
            // One pod at a time may be evicted: a node drain never empties the
            // environment, and a single-replica environment can still be drained.
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(input.env)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn hpa(input: &RenderInput<'_>, autoscale: &Autoscale) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: meta(input),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: APP.into(),
            },
            min_replicas: Some(autoscale.min_replicas),
            max_replicas: autoscale.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(autoscale.target_cpu_percent),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    }
}

fn deployment(input: &RenderInput<'_>) -> Deployment {
    let release = input.release;
    let tag = release.tag.to_string();
    let digest = release.model_digest.to_string();
    let mut annotations = BTreeMap::from([
        (annotation::RELEASE.to_string(), tag.clone()),
        (annotation::MODEL_DIGEST.to_string(), digest.clone()),
        (
            annotation::REGISTRY.to_string(),
            input.registry_url.to_string(),
        ),
        (
            annotation::CHANGE_CAUSE.to_string(),
            format!("predict-buy deploy {tag}"),
        ),
    ]);
    if let Some(actor) = input.deployed_by {
        annotations.insert(annotation::DEPLOYED_BY.to_string(), actor.to_string());
    }
    let mut metadata = meta(input);
    metadata.annotations = Some(annotations);
    let mut pod_labels = labels(input);
    pod_labels.remove("app.kubernetes.io/managed-by");
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            // With an autoscaler the replica count is its to set; applying a number
            // here would reset it on every deploy.
            replicas: input
                .settings
                .autoscale
                .is_none()
                .then_some(input.settings.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(input.env)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                // A new pod must be ready before an old one goes: capacity never drops
                // during a rollout, and a release that never gets ready takes no
                // traffic.
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            progress_deadline_seconds: Some(input.settings.progress_deadline_seconds),
            revision_history_limit: Some(10),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([
                        (annotation::RELEASE.to_string(), tag.clone()),
                        (annotation::MODEL_DIGEST.to_string(), digest.clone()),
                    ])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(input, &tag, &digest)),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// Pods of the canary Deployment for `percent` of the traffic beside `main` pods.
///
/// The Service spreads requests evenly over every ready pod of the environment, so
/// the replica ratio is the weight: `canary / (main + canary) ≈ percent`. The main
/// Deployment keeps its replicas (capacity never drops during a canary), so the
/// canary gets `round(main × p / (100 − p))` pods, and at least one. The effective
/// share is therefore coarse with few pods: 1 pod beside 9 is 10%, but 1 beside 2
/// is 33%; [`effective_percent`] says what it is, and `deploy --canary` prints it.
pub fn canary_replicas(main: i32, percent: f64) -> i32 {
    let ideal = f64::from(main.max(1)) * percent / (100.0 - percent);
    (ideal.round() as i32).max(1)
}

/// The share of pods, in percent, that `canary` pods beside `main` ones get.
pub fn effective_percent(main: i32, canary: i32) -> f64 {
    100.0 * f64::from(canary) / f64::from(main.max(1) + canary)
}

/// The canary's Deployment: the candidate's pod template, pinned like the main one,
/// under [`CANARY`] with the `predict-buy.dev/track: canary` label in its selector and
/// pods. Its pods keep the environment's selector labels, so the one Service selects
/// both Deployments' pods.
pub fn canary_deployment(input: &RenderInput<'_>, replicas: i32) -> Deployment {
    let mut d = deployment(input);
    let track = (TRACK_LABEL.to_string(), "canary".to_string());
    d.metadata.name = Some(CANARY.into());
    if let Some(labels) = d.metadata.labels.as_mut() {
        labels.insert(track.0.clone(), track.1.clone());
    }
    if let Some(a) = d.metadata.annotations.as_mut() {
        a.insert(
            annotation::CHANGE_CAUSE.to_string(),
            format!("predict-buy deploy {} --canary", input.release.tag),
        );
    }
    if let Some(spec) = d.spec.as_mut() {
        spec.replicas = Some(replicas);
        if let Some(m) = spec.selector.match_labels.as_mut() {
            m.insert(track.0.clone(), track.1.clone());
        }
        if let Some(labels) = spec
            .template
            .metadata
            .as_mut()
            .and_then(|m| m.labels.as_mut())
        {
            labels.insert(track.0, track.1);
        }
    }
    d
}

/// The server's arguments after the image's entrypoint (`predict-buy serve`).
/// `--env` makes the pinned server follow the environment's candidate record (shadow,
/// canary) too.
pub fn server_args(registry_url: &str, env: &str, tag: &str, digest: &str) -> Vec<String> {
    [
        "--registry",
        registry_url,
        "--release",
        tag,
        "--model-digest",
        digest,
        "--env",
        env,
        "--addr",
        &format!("0.0.0.0:{CONTAINER_PORT}"),
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

fn probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(1),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn quantities(cm: &CpuMemory) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_string(), Quantity(cm.cpu.clone())),
        ("memory".to_string(), Quantity(cm.memory.clone())),
    ])
}

fn pod_spec(input: &RenderInput<'_>, tag: &str, digest: &str) -> PodSpec {
    let settings = input.settings;
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image_for(input.release, settings)),
        args: Some(server_args(
            input.registry_url,
            input.env.as_str(),
            tag,
            digest,
        )),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: CONTAINER_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(vec![EnvVar {
            name: "PREDICT_BUY_LOG_FORMAT".into(),
            value: Some("json".into()),
            ..EnvVar::default()
        }]),
        env_from: settings.registry_secret.as_ref().map(|secret| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret.clone(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]
        }),
        readiness_probe: Some(probe("/readyz", 2)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&settings.resources.requests)),
            limits: Some(quantities(&settings.resources.limits)),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        // The root filesystem is read-only; anything the server or its libraries
        // write goes to a scratch volume.
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    PodSpec {
        containers: vec![container],
        service_account_name: settings.service_account.clone(),
        // Only a configured service account (e.g. EKS IRSA for S3) needs its token.
        automount_service_account_token: Some(settings.service_account.is_some()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        termination_grace_period_seconds: Some(30),
        volumes: Some(vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    }
}

impl Manifests {
    /// The objects as one multi-document YAML stream, in apply order.
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        let mut docs = Vec::new();
        if let Some(ns) = &self.namespace {
            docs.push(serde_yaml_ng::to_string(ns)?);
        }
        docs.push(serde_yaml_ng::to_string(&self.service)?);
        docs.push(serde_yaml_ng::to_string(&self.pdb)?);
        docs.push(serde_yaml_ng::to_string(&self.deployment)?);
        if let Some(hpa) = &self.hpa {
            docs.push(serde_yaml_ng::to_string(hpa)?);
        }
        Ok(docs
            .iter()
            .map(|d| format!("---\n{d}"))
            .collect::<Vec<_>>()
            .join(""))
    }
}

#[cfg(test)]
mod tests {
    use predict_buy_registry::{Digest, ReleaseTag};

    use super::*;

    #[test]
    fn canary_replicas_follow_the_share_with_at_least_one_pod() {
        // 1 of 10 for 10%: nine main pods and one canary pod.
        assert_eq!(canary_replicas(9, 10.0), 1);
        assert_eq!(effective_percent(9, 1), 10.0);
        assert_eq!(canary_replicas(3, 25.0), 1);
        assert_eq!(canary_replicas(6, 25.0), 2);
        assert_eq!(canary_replicas(2, 50.0), 2);
        // Too few main pods for a small share: one pod, and a larger real share.
        assert_eq!(canary_replicas(2, 10.0), 1);
        assert!((effective_percent(2, 1) - 100.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn the_canary_deployment_is_pinned_to_the_candidate_and_selected_by_the_service() {
        let env = EnvName::parse("staging").unwrap();
        let release = ReleaseRecord {
            tag: ReleaseTag::parse("v1.1.0").unwrap(),
            model_digest: Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap(),
            image: None,
            git_commit: None,
            notes: String::new(),
            created_at: jiff::Timestamp::UNIX_EPOCH,
            created_by: "t".into(),
            metrics: serde_json::Value::Null,
            golden: Vec::new(),
            training: None,
        };
        let settings = KubeSettings::new("staging");
        let input = RenderInput {
            env: &env,
            release: &release,
            registry_url: "file:///r",
            settings: &settings,
            deployed_by: None,
        };
        let main = render(&input);
        let canary = canary_deployment(&input, 1);
        assert_eq!(canary.metadata.name.as_deref(), Some(CANARY));
        let spec = canary.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        let selector = spec.selector.match_labels.as_ref().unwrap();
        assert_eq!(
            selector.get(TRACK_LABEL).map(String::as_str),
            Some("canary")
        );
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        // Every label the Service selects on is on the canary's pods.
        for (k, v) in main.service.spec.unwrap().selector.unwrap() {
            assert_eq!(pod_labels.get(&k), Some(&v), "{k}");
        }
        assert_eq!(
            pod_labels
                .get("app.kubernetes.io/version")
                .map(String::as_str),
            Some("v1.1.0")
        );
        // The pods are pinned to the candidate like the main Deployment's.
        assert_eq!(
            spec.template.spec.as_ref().unwrap().containers[0].args,
            main.deployment
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .containers[0]
                .args
        );
    }
}
