//! The Kubernetes target: one namespace per environment, a Deployment whose pods each
//! run one pinned release, rolled out by server-side apply with kube-rs, gated on the
//! rollout and on the same verification as the local target (every pod reports the
//! release and answers the golden predictions, asked through the API server's proxy).
//!
//! Because a pod never changes its release, a deploy is a Kubernetes rollout, and
//! `kubectl rollout history` / `kubectl describe deploy` tell the same truth as
//! `predict-buy status`.

mod cluster;
pub mod diff;
mod error;
pub mod kustomize;
pub mod manifests;
mod target;

pub use cluster::{
    Cluster, ClusterStatus, DeploymentStatus, FIELD_MANAGER, PodStatus, ReplicaSetStatus, RolledOut,
};
pub use error::KubeError;
pub use manifests::{Autoscale, KubeSettings, Manifests, RenderInput, Resources, render};
pub use target::{KubeVerifier, KubernetesTarget};
