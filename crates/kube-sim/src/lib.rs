//! A **simulator** of the Kubernetes API, in process, over real HTTP on 127.0.0.1.
//!
//! No kube-apiserver can run on the machines this project is tested on, so the Kubernetes
//! target is tested against this simulator instead: it serves discovery, namespaces,
//! Deployments (with server-side apply, field-ownership conflicts and dry runs),
//! ReplicaSets, Pods, Services, PodDisruptionBudgets, HorizontalPodAutoscalers and Events,
//! watches, and the service and pod proxies, well enough for kube-rs's real client and
//! for kubectl v1.35. Its Deployment controller rolls out as the real one does
//! (`maxSurge`/`maxUnavailable`, revisions, `ProgressDeadlineExceeded`), and plays the
//! faults a test chooses ([`Scenario`]): crash loops, image pull failures, unschedulable
//! pods, slow or stuck rollouts, RBAC refusals, hand edits. Pods can be backed by real
//! processes through a [`PodRuntime`], so what the service proxy reaches is real.
//!
//! It is test support only: it never persists anything, never authenticates (every
//! request acts as [`SimOptions::user`]) and never talks to a real cluster. Passing
//! against it is evidence, not proof, that code works against a real cluster.
//!
//! ```no_run
//! # async fn demo() -> Result<(), predict_buy_kube_sim::SimError> {
//! use predict_buy_kube_sim::{Scenario, SimOptions, Simulator};
//! let sim = Simulator::start(SimOptions::default().namespace("nonprod")).await?;
//! sim.set_image_scenario("predict-buy:broken", Scenario::CrashLoop);
//! sim.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! // point kube::Client or kubectl at the kubeconfig …
//! # Ok(()) }
//! ```

mod api;
mod controller;
pub mod fields;
mod kubelet;
mod proxy;
pub mod resources;
mod runtime;
mod selectors;
mod store;
mod table;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use runtime::{
    ContainerSpec, FnRuntime, NoProcess, PodRuntime, ProcessRuntime, RuntimeError, StartFuture,
    Started, free_addr,
};

/// What a pod does once scheduled, as its kubelet would report it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Scenario {
    /// The container starts (through the [`PodRuntime`]) and is Ready when its readiness
    /// probe answers 200, or at once when it has no process or no probe.
    Healthy,
    /// As `Healthy`, but not Ready before this long after the container started.
    Slow { ready_after: Duration },
    /// Runs but never passes its readiness probe: the rollout stalls until its progress
    /// deadline, then reports `ProgressDeadlineExceeded`.
    Stuck,
    /// The container keeps exiting with code 1: `CrashLoopBackOff`, a growing restartCount.
    CrashLoop,
    /// The image cannot be pulled: `ErrImagePull`, then `ImagePullBackOff`.
    ErrImagePull,
    /// No node fits: the pod stays Pending with PodScheduled=False, reason `Unschedulable`.
    Unschedulable,
}

/// How the simulator starts. Builder methods set one field each.
#[derive(Clone)]
pub struct SimOptions {
    /// Namespaces that exist from the start; any other namespace is missing until created.
    pub namespaces: Vec<String>,
    /// From pod creation to container start (image pull and scheduling, in a real cluster).
    pub pod_start_delay: Duration,
    /// Overrides every Deployment's `progressDeadlineSeconds`, so a stuck rollout can be
    /// declared stuck within a test's time.
    pub progress_deadline: Option<Duration>,
    /// How often the kubelet probes readiness and the controllers resync.
    pub probe_interval: Duration,
    /// Back-off between restarts and image pulls.
    pub backoff: Duration,
    /// How long a deleted pod's process lives on after it stops receiving traffic, so that
    /// requests already proxied to it complete.
    pub termination_grace: Duration,
    /// The identity every request acts as; RBAC refusals name it.
    pub user: String,
    pub runtime: Arc<dyn PodRuntime>,
    pub default_scenario: Scenario,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            namespaces: vec!["default".into()],
            pod_start_delay: Duration::from_millis(50),
            progress_deadline: None,
            probe_interval: Duration::from_millis(25),
            backoff: Duration::from_millis(200),
            termination_grace: Duration::from_millis(300),
            user: "system:serviceaccount:ci:predict-buy-deployer".into(),
            runtime: Arc::new(NoProcess),
            default_scenario: Scenario::Healthy,
        }
    }
}

impl std::fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimOptions")
            .field("namespaces", &self.namespaces)
            .field("pod_start_delay", &self.pod_start_delay)
            .field("progress_deadline", &self.progress_deadline)
            .field("default_scenario", &self.default_scenario)
            .finish_non_exhaustive()
    }
}

impl SimOptions {
    /// Adds a namespace that exists from the start.
    pub fn namespace(mut self, name: &str) -> Self {
        self.namespaces.push(name.to_string());
        self
    }
    pub fn pod_start_delay(mut self, delay: Duration) -> Self {
        self.pod_start_delay = delay;
        self
    }
    pub fn progress_deadline(mut self, deadline: Duration) -> Self {
        self.progress_deadline = Some(deadline);
        self
    }
    pub fn runtime(mut self, runtime: impl PodRuntime) -> Self {
        self.runtime = Arc::new(runtime);
        self
    }
    pub fn default_scenario(mut self, scenario: Scenario) -> Self {
        self.default_scenario = scenario;
        self
    }
    pub fn termination_grace(mut self, grace: Duration) -> Self {
        self.termination_grace = grace;
        self
    }
}

/// Why the simulator could not do what its handle was asked.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on 127.0.0.1")]
    Bind(#[source] std::io::Error),
    #[error("cannot write the kubeconfig {path}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("deployments.apps {name:?} not found in namespace {namespace:?}")]
    NoDeployment { namespace: String, name: String },
}

/// One request as the simulator received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The raw query string, empty when there was none.
    pub query: String,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Denial {
    verb: String,
    /// `deployments.apps`, `pods`, or `services/proxy`.
    resource: String,
    namespace: Option<String>,
}

#[derive(Default)]
struct Scenarios {
    by_image: HashMap<String, Scenario>,
    by_arg: Vec<(String, Scenario)>,
    by_deployment: HashMap<(String, String), Scenario>,
}

/// A pod's kubelet: its task and, once the container runs, the address it answers on.
struct PodRun {
    task: JoinHandle<()>,
    addr: Option<SocketAddr>,
}

/// State shared by the HTTP handlers, the controllers and the kubelets.
pub(crate) struct Shared {
    store: store::Store,
    options: SimOptions,
    default_scenario: Mutex<Scenario>,
    scenarios: Mutex<Scenarios>,
    denials: Mutex<Vec<Denial>>,
    log: Mutex<Vec<RequestRecord>>,
    pods: Mutex<HashMap<(String, String), PodRun>>,
    /// Per Deployment uid: what its rollout looked like when it last changed, and when.
    progress: Mutex<HashMap<String, (String, Instant)>>,
    http: reqwest::Client,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked holder leaves data that is still consistent enough for a test double.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn scenario_for(
        &self,
        ns: &str,
        deployment: Option<&str>,
        containers: &[ContainerSpec],
    ) -> Scenario {
        let s = lock(&self.scenarios);
        for c in containers {
            if let Some(sc) = s.by_image.get(&c.image) {
                return sc.clone();
            }
        }
        for (needle, sc) in &s.by_arg {
            if containers.iter().any(|c| {
                c.command
                    .iter()
                    .chain(&c.args)
                    .any(|a| a.contains(needle.as_str()))
            }) {
                return sc.clone();
            }
        }
        if let Some(d) = deployment
            && let Some(sc) = s.by_deployment.get(&(ns.to_string(), d.to_string()))
        {
            return sc.clone();
        }
        lock(&self.default_scenario).clone()
    }

    fn denied(&self, verb: &str, resource: &str, ns: &str) -> bool {
        lock(&self.denials).iter().any(|d| {
            d.verb == verb
                && d.resource == resource
                && d.namespace.as_deref().is_none_or(|n| n == ns)
        })
    }

    pub(crate) fn pod_addr(&self, ns: &str, name: &str) -> Option<SocketAddr> {
        lock(&self.pods)
            .get(&(ns.to_string(), name.to_string()))
            .and_then(|p| p.addr)
    }
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds 127.0.0.1 on a free port, creates the option's namespaces and starts the API
    /// server and the controllers. Everything stops when the handle is dropped.
    pub async fn start(options: SimOptions) -> Result<SimHandle, SimError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(SimError::Bind)?;
        let addr = listener.local_addr().map_err(SimError::Bind)?;
        let shared = Arc::new(Shared {
            store: store::Store::new(),
            default_scenario: Mutex::new(options.default_scenario.clone()),
            options,
            scenarios: Mutex::default(),
            denials: Mutex::default(),
            log: Mutex::default(),
            pods: Mutex::default(),
            progress: Mutex::default(),
            http: reqwest::Client::new(),
        });
        for ns in shared.options.namespaces.clone() {
            api::create_namespace(&shared, &ns);
        }
        let app = api::router(shared.clone());
        let server = tokio::spawn(async move {
            // The handle aborts this task; an accept error ends the simulator's life early,
            // which the test sees as refused connections.
            let _ = axum::serve(listener, app).await;
        });
        let controller = tokio::spawn(controller::run(shared.clone()));
        Ok(SimHandle {
            shared,
            addr,
            tasks: vec![server, controller],
        })
    }
}

/// A running simulator. Dropping it stops the server, the controllers and every pod's
/// process.
pub struct SimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for (_, run) in lock(&self.shared.pods).drain() {
            run.task.abort();
        }
    }
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The identity requests act as (and the kubeconfig's user name).
    pub fn user(&self) -> &str {
        &self.shared.options.user
    }

    /// A kubeconfig whose current context (`kube-sim`) points at this simulator, with a
    /// bearer-token user.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\n\
             contexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: {user}\n    namespace: default\n\
             current-context: kube-sim\nusers:\n- name: {user}\n  user:\n    token: kube-sim-token\n",
            url = self.url(),
            user = self.shared.options.user.replace(':', "-"),
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), SimError> {
        std::fs::write(path, self.kubeconfig_yaml()).map_err(|source| SimError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn create_namespace(&self, name: &str) {
        api::create_namespace(&self.shared, name);
    }

    /// The scenario for pods that no more specific rule matches.
    pub fn set_default_scenario(&self, scenario: Scenario) {
        *lock(&self.shared.default_scenario) = scenario;
    }

    /// Pods with a container running `image` play `scenario` (the most specific rule).
    pub fn set_image_scenario(&self, image: &str, scenario: Scenario) {
        lock(&self.shared.scenarios)
            .by_image
            .insert(image.to_string(), scenario);
    }

    /// Pods with a command or argument containing `needle` (say `v2.0.0`) play `scenario`.
    pub fn set_arg_scenario(&self, needle: &str, scenario: Scenario) {
        lock(&self.shared.scenarios)
            .by_arg
            .push((needle.to_string(), scenario));
    }

    /// Pods of this Deployment play `scenario`, unless an image or argument rule matches.
    pub fn set_deployment_scenario(&self, namespace: &str, name: &str, scenario: Scenario) {
        lock(&self.shared.scenarios)
            .by_deployment
            .insert((namespace.to_string(), name.to_string()), scenario);
    }

    /// Refuses `verb` (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`) on
    /// `resource` (`deployments.apps`, `pods`, `services/proxy`) with a 403, in one
    /// namespace or all of them.
    pub fn deny(&self, verb: &str, resource: &str, namespace: Option<&str>) {
        lock(&self.shared.denials).push(Denial {
            verb: verb.to_string(),
            resource: resource.to_string(),
            namespace: namespace.map(str::to_string),
        });
    }

    pub fn allow_all(&self) {
        lock(&self.shared.denials).clear();
    }

    /// Changes a Deployment by hand, as `kubectl edit` would: a merge patch recorded as an
    /// update by `manager`, which then owns the fields it changed, so a later server-side
    /// apply of other values conflicts.
    pub fn edit_deployment(
        &self,
        namespace: &str,
        name: &str,
        manager: &str,
        patch: &Value,
    ) -> Result<Value, SimError> {
        api::hand_edit(&self.shared, namespace, name, manager, patch).ok_or_else(|| {
            SimError::NoDeployment {
                namespace: namespace.to_string(),
                name: name.to_string(),
            }
        })
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.log).clear();
    }

    /// A stored object by resource plural (`deployments`, `pods`, …), as the API holds it.
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = resources::ALL.iter().find(|r| r.plural == plural)?;
        self.shared.store.get(res, namespace, name)
    }

    /// Stored objects of a resource plural in a namespace.
    pub fn objects(&self, plural: &str, namespace: &str) -> Vec<Value> {
        resources::ALL
            .iter()
            .find(|r| r.plural == plural)
            .map(|res| self.shared.store.list(res, Some(namespace)).0)
            .unwrap_or_default()
    }

    /// Where a pod's container answers, once its process runs.
    pub fn pod_addr(&self, namespace: &str, pod: &str) -> Option<SocketAddr> {
        self.shared.pod_addr(namespace, pod)
    }
}

/// `{"kind":"Status",…}`, the body of every API error.
pub(crate) fn status_body(code: u16, reason: &str, message: &str, details: Value) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": details, "code": code,
    })
}
