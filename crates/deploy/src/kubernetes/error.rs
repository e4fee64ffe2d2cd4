//! What goes wrong on a cluster, with the API server's or the pod's own reason.

use std::time::Duration;

/// A Kubernetes failure. [`KubeError::is_input`] tells the caller's mistakes (a
/// missing namespace, a refused permission, a conflict with a hand edit) from
/// operations that failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read the kubeconfig{}", context.as_ref().map(|c| format!(" (context `{c}`)")).unwrap_or_default())]
    Kubeconfig {
        context: Option<String>,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot make a client for {server}")]
    Client {
        server: String,
        #[source]
        source: kube::Error,
    },
    #[error("the cluster at {server} cannot be reached")]
    Unreachable {
        server: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "namespace `{namespace}` does not exist (create it, or set `create_namespace: true` for the environment)"
    )]
    NamespaceMissing { namespace: String },
    #[error("the cluster refused to {verb} {resource} `{name}`: {message}")]
    Forbidden {
        verb: String,
        resource: String,
        name: String,
        message: String,
    },
    #[error(
        "{resource} `{name}` was changed by another field manager, and applying would overwrite it: {message}"
    )]
    Conflict {
        resource: String,
        name: String,
        message: String,
    },
    #[error("the API server refused to {verb} {resource} `{name}` ({code} {reason}): {message}")]
    Api {
        verb: String,
        resource: String,
        name: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("cannot {verb} {resource} `{name}`")]
    Transport {
        verb: String,
        resource: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the Deployment in namespace `{namespace}` disappeared during the rollout")]
    Gone { namespace: String },
    #[error("the rollout in namespace `{namespace}` failed: {reason}")]
    RolloutFailed { namespace: String, reason: String },
    #[error("pod `{pod}` in namespace `{namespace}` cannot run: {reason}: {message}")]
    PodFailed {
        namespace: String,
        pod: String,
        reason: String,
        message: String,
    },
    #[error("the rollout in namespace `{namespace}` did not finish within {:.0}s ({last})", timeout.as_secs_f64())]
    RolloutTimeout {
        namespace: String,
        timeout: Duration,
        last: String,
    },
    #[error("request through the API server proxy to {uri} failed: {message}")]
    Request { uri: String, message: String },
}

impl KubeError {
    /// The caller's to fix (exit code 2) rather than an operation that failed (1).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            KubeError::Kubeconfig { .. }
                | KubeError::NamespaceMissing { .. }
                | KubeError::Forbidden { .. }
                | KubeError::Conflict { .. }
        )
    }

    /// The obvious next step, when there is one.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            KubeError::Kubeconfig { .. } | KubeError::Client { .. } => {
                "set KUBECONFIG (or `context:` for the environment in predict-buy.yaml) to a kubeconfig that reaches the cluster; `kubectl config get-contexts` lists them".into()
            }
            KubeError::Unreachable { .. } => {
                "check the cluster with `kubectl cluster-info` using the same kubeconfig and context".into()
            }
            KubeError::NamespaceMissing { namespace } => format!(
                "`kubectl create namespace {namespace}`, or set `create_namespace: true` for the environment"
            ),
            KubeError::Forbidden { verb, resource, .. } => format!(
                "grant the deployer's identity `{verb}` on `{resource}` in the namespace (a Role and RoleBinding; see docs/operations.md)"
            ),
            KubeError::Conflict { resource, .. } => format!(
                "someone changed the {resource} by hand; `kubectl get` it with --show-managed-fields to see who, undo the edit or move it into predict-buy.yaml, then deploy again"
            ),
            KubeError::RolloutFailed { namespace, .. }
            | KubeError::PodFailed { namespace, .. }
            | KubeError::RolloutTimeout { namespace, .. } => format!(
                "`predict-buy status --env ENV` or `kubectl -n {namespace} describe pods` show what the pods report"
            ),
            _ => return None,
        })
    }

    /// True when the new release itself cannot run (its pods crash or its image
    /// cannot be pulled), as opposed to a cluster that could not be checked.
    pub fn blames_release(&self) -> bool {
        matches!(self, KubeError::PodFailed { .. })
    }
}

/// Names the refused verb and resource, keeping the API server's own message.
pub(crate) fn api_error(e: kube::Error, verb: &str, resource: &str, name: &str) -> KubeError {
    match e {
        kube::Error::Api(status) => {
            let (verb, resource, name) = (verb.to_string(), resource.to_string(), name.to_string());
            match status.code {
                403 => KubeError::Forbidden {
                    verb,
                    resource,
                    name,
                    message: status.message,
                },
                409 => KubeError::Conflict {
                    resource,
                    name,
                    message: status.message,
                },
                code => KubeError::Api {
                    verb,
                    resource,
                    name,
                    code,
                    reason: status.reason,
                    message: status.message,
                },
            }
        }
        source => KubeError::Transport {
            verb: verb.into(),
            resource: resource.into(),
            name: name.into(),
            source,
        },
    }
}
