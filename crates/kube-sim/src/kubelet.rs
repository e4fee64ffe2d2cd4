//! A simulated kubelet per pod: schedules it, starts its first container through the
//! [`PodRuntime`](crate::PodRuntime), probes readiness like a real kubelet, restarts what
//! exits, and reports it all in the pod's status and in Events. Every container of a pod
//! shares the pod's scenario; only the first one is started through the runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::controller::{event, is_terminating};
use crate::resources::{PODS, REPLICASETS};
use crate::runtime::ContainerSpec;
use crate::store::now;
use crate::{PodRun, Scenario, Shared, lock};

const NODE: &str = "kube-sim-node";

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Gives every new pod a kubelet, and stops the kubelets of pods that are gone.
pub fn start_new_pods(sim: &Arc<Shared>) {
    let pods = sim.store.list(&PODS, None).0;
    let mut runs = lock(&sim.pods);
    runs.retain(|(ns, name), run| {
        let alive = pods
            .iter()
            .any(|p| s(p, "/metadata/namespace") == ns && s(p, "/metadata/name") == name);
        if !alive {
            run.task.abort();
        }
        alive
    });
    for pod in pods.iter().filter(|p| !is_terminating(p)) {
        let key = (
            s(pod, "/metadata/namespace").to_string(),
            s(pod, "/metadata/name").to_string(),
        );
        if let std::collections::hash_map::Entry::Vacant(slot) = runs.entry(key) {
            let (ns, name) = slot.key().clone();
            let task = tokio::spawn(run_pod(sim.clone(), ns, name));
            slot.insert(PodRun { task, addr: None });
        }
    }
}

/// Starts a graceful deletion: the pod stops being Ready at once (so the proxy and the
/// controllers stop counting it), and its process is stopped after the grace period.
pub fn terminate(sim: &Arc<Shared>, pod: &Value) {
    let ns = s(pod, "/metadata/namespace").to_string();
    let name = s(pod, "/metadata/name").to_string();
    let mut p = pod.clone();
    p["metadata"]["deletionTimestamp"] = json!(now());
    if let Some(conds) = p
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        for c in conds
            .iter_mut()
            .filter(|c| c["type"] == "Ready" || c["type"] == "ContainersReady")
        {
            c["status"] = json!("False");
        }
    }
    let p = sim.store.put(&PODS, p);
    let first = p
        .pointer("/spec/containers/0/name")
        .and_then(Value::as_str)
        .unwrap_or("app")
        .to_string();
    event(
        sim,
        &ns,
        &p,
        "Normal",
        "Killing",
        &format!("Stopping container {first}"),
        "kubelet",
    );
    let sim = sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(sim.options.termination_grace).await;
        if let Some(run) = lock(&sim.pods).remove(&(ns.clone(), name.clone())) {
            run.task.abort();
        }
        sim.store.delete(&PODS, &ns, &name);
    });
}

fn container_specs(pod: &Value) -> Vec<ContainerSpec> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| ContainerSpec {
                    namespace: s(pod, "/metadata/namespace").into(),
                    pod: s(pod, "/metadata/name").into(),
                    name: s(c, "/name").into(),
                    image: s(c, "/image").into(),
                    command: strings(&c["command"]),
                    args: strings(&c["args"]),
                    env: c["env"]
                        .as_array()
                        .map(|e| {
                            e.iter()
                                .filter_map(|x| {
                                    Some((
                                        x["name"].as_str()?.to_string(),
                                        x["value"].as_str()?.to_string(),
                                    ))
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    ports: c["ports"]
                        .as_array()
                        .map(|ps| {
                            ps.iter()
                                .filter_map(|p| p["containerPort"].as_u64())
                                .filter_map(|p| u16::try_from(p).ok())
                                .collect()
                        })
                        .unwrap_or_default(),
                    readiness_path: c
                        .pointer("/readinessProbe/httpGet/path")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn owning_deployment(sim: &Shared, pod: &Value) -> Option<String> {
    let rs_name = pod.pointer("/metadata/ownerReferences/0/name")?.as_str()?;
    let rs = sim
        .store
        .get(&REPLICASETS, s(pod, "/metadata/namespace"), rs_name)?;
    Some(
        rs.pointer("/metadata/ownerReferences/0/name")?
            .as_str()?
            .to_string(),
    )
}

/// The state of the pod's containers, as the kubelet reports it.
struct Report {
    phase: &'static str,
    scheduled: Option<(&'static str, String)>,
    ready: bool,
    state: Value,
    last_state: Value,
    restarts: i64,
}

impl Report {
    fn waiting(phase: &'static str, reason: &str, message: &str, restarts: i64) -> Self {
        Report {
            phase,
            scheduled: None,
            ready: false,
            state: json!({"waiting": {"reason": reason, "message": message}}),
            last_state: json!({}),
            restarts,
        }
    }

    fn running(started_at: &str, ready: bool, restarts: i64) -> Self {
        Report {
            phase: "Running",
            scheduled: None,
            ready,
            state: json!({"running": {"startedAt": started_at}}),
            last_state: json!({}),
            restarts,
        }
    }
}

/// Writes the pod's status from `report`; does nothing once the pod is being deleted.
fn report(sim: &Shared, ns: &str, name: &str, r: &Report) {
    let Some(mut pod) = sim.store.get(&PODS, ns, name) else {
        return;
    };
    if is_terminating(&pod) {
        return;
    }
    let t = now();
    let old = pod.get("status").cloned().unwrap_or(json!({}));
    let keep_time = |type_: &str, status: &str| {
        old["conditions"]
            .as_array()
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == type_ && c["status"] == status)
            })
            .map(|c| c["lastTransitionTime"].clone())
            .unwrap_or(json!(t))
    };
    let cond = |type_: &str, ok: bool| {
        let status = if ok { "True" } else { "False" };
        json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": keep_time(type_, status)})
    };
    let mut conditions = Vec::new();
    match &r.scheduled {
        Some((reason, message)) => {
            let mut c = cond("PodScheduled", false);
            c["reason"] = json!(reason);
            c["message"] = json!(message);
            conditions.push(c);
        }
        None => {
            conditions.push(cond("PodScheduled", true));
            conditions.push(cond("Initialized", true));
            conditions.push(cond("ContainersReady", r.ready));
            conditions.push(cond("Ready", r.ready));
        }
    }
    let statuses: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    json!({
                        "name": c["name"], "image": c["image"], "imageID": "",
                        "ready": r.ready, "started": r.state.get("running").is_some(),
                        "restartCount": r.restarts, "state": r.state, "lastState": r.last_state,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut status = json!({"phase": r.phase, "conditions": conditions, "qosClass": "BestEffort"});
    if r.scheduled.is_none() {
        status["hostIP"] = json!("127.0.0.1");
        status["podIP"] = json!("127.0.0.1");
        status["startTime"] = old.get("startTime").cloned().unwrap_or(json!(t));
        status["containerStatuses"] = json!(statuses);
    }
    if old != status {
        pod["status"] = status;
        if r.scheduled.is_none() {
            pod["spec"]["nodeName"] = json!(NODE);
        }
        sim.store.put(&PODS, pod);
    }
}

fn pod_event(sim: &Shared, ns: &str, name: &str, type_: &str, reason: &str, message: &str) {
    if let Some(pod) = sim.store.get(&PODS, ns, name) {
        event(sim, ns, &pod, type_, reason, message, "kubelet");
    }
}

async fn run_pod(sim: Arc<Shared>, ns: String, name: String) {
    let Some(pod) = sim.store.get(&PODS, &ns, &name) else {
        return;
    };
    let containers = container_specs(&pod);
    let deployment = owning_deployment(&sim, &pod);
    let scenario = sim.scenario_for(&ns, deployment.as_deref(), &containers);
    let image = containers
        .first()
        .map(|c| c.image.clone())
        .unwrap_or_default();
    let container = containers
        .first()
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let backoff = sim.options.backoff;
    if scenario == Scenario::Unschedulable {
        let message = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
        let mut r = Report::waiting("Pending", "", "", 0);
        r.scheduled = Some(("Unschedulable", message.to_string()));
        report(&sim, &ns, &name, &r);
        if let Some(pod) = sim.store.get(&PODS, &ns, &name) {
            event(
                &sim,
                &ns,
                &pod,
                "Warning",
                "FailedScheduling",
                message,
                "default-scheduler",
            );
        }
        return;
    }
    report(
        &sim,
        &ns,
        &name,
        &Report::waiting("Pending", "ContainerCreating", "", 0),
    );
    if let Some(pod) = sim.store.get(&PODS, &ns, &name) {
        event(
            &sim,
            &ns,
            &pod,
            "Normal",
            "Scheduled",
            &format!("Successfully assigned {ns}/{name} to {NODE}"),
            "default-scheduler",
        );
    }
    tokio::time::sleep(sim.options.pod_start_delay).await;
    match scenario {
        Scenario::ErrImagePull => loop {
            let pull = format!(
                "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found"
            );
            report(
                &sim,
                &ns,
                &name,
                &Report::waiting("Pending", "ErrImagePull", &pull, 0),
            );
            pod_event(&sim, &ns, &name, "Warning", "Failed", &pull);
            tokio::time::sleep(backoff).await;
            let back = format!("Back-off pulling image \"{image}\"");
            report(
                &sim,
                &ns,
                &name,
                &Report::waiting("Pending", "ImagePullBackOff", &back, 0),
            );
            pod_event(&sim, &ns, &name, "Normal", "BackOff", &back);
            tokio::time::sleep(backoff).await;
        },
        Scenario::CrashLoop => {
            let mut restarts = 0;
            loop {
                report(&sim, &ns, &name, &Report::running(&now(), false, restarts));
                tokio::time::sleep(backoff / 2).await;
                restarts += 1;
                let mut r = Report::waiting(
                    "Running",
                    "CrashLoopBackOff",
                    &format!(
                        "back-off 10s restarting failed container={container} pod={name}_{ns}"
                    ),
                    restarts,
                );
                r.last_state = json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now(), "finishedAt": now()}});
                report(&sim, &ns, &name, &r);
                pod_event(
                    &sim,
                    &ns,
                    &name,
                    "Warning",
                    "BackOff",
                    &format!("Back-off restarting failed container {container} in pod {name}_{ns}"),
                );
                tokio::time::sleep(backoff).await;
            }
        }
        Scenario::Stuck => {
            report(&sim, &ns, &name, &Report::running(&now(), false, 0));
            loop {
                pod_event(
                    &sim,
                    &ns,
                    &name,
                    "Warning",
                    "Unhealthy",
                    "Readiness probe failed: HTTP probe failed with statuscode: 503",
                );
                tokio::time::sleep(backoff * 5).await;
            }
        }
        Scenario::Healthy => run_containers(&sim, &ns, &name, &containers, Duration::ZERO).await,
        Scenario::Slow { ready_after } => {
            run_containers(&sim, &ns, &name, &containers, ready_after).await
        }
        Scenario::Unschedulable => {}
    }
}

async fn probe(sim: &Shared, addr: Option<std::net::SocketAddr>, path: Option<&str>) -> bool {
    let (Some(addr), Some(path)) = (addr, path) else {
        return true;
    };
    let url = format!("http://{addr}{path}");
    match sim
        .http
        .get(&url)
        .timeout(Duration::from_secs(1))
        .send()
        .await
    {
        Ok(r) => (200..400).contains(&r.status().as_u16()),
        Err(_) => false,
    }
}

fn set_addr(sim: &Shared, ns: &str, name: &str, addr: Option<std::net::SocketAddr>) {
    if let Some(run) = lock(&sim.pods).get_mut(&(ns.to_string(), name.to_string())) {
        run.addr = addr;
    }
}

async fn run_containers(
    sim: &Arc<Shared>,
    ns: &str,
    name: &str,
    containers: &[ContainerSpec],
    ready_after: Duration,
) {
    let Some(main) = containers.first() else {
        report(sim, ns, name, &Report::running(&now(), true, 0));
        return;
    };
    let mut restarts = 0;
    let mut last_state = json!({});
    loop {
        pod_event(
            sim,
            ns,
            name,
            "Normal",
            "Pulled",
            &format!(
                "Container image \"{}\" already present on machine",
                main.image
            ),
        );
        let started = match sim.options.runtime.start(main.clone()).await {
            Ok(s) => s,
            Err(e) => {
                let mut chain = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    chain.push_str(&format!(": {s}"));
                    src = s.source();
                }
                report(
                    sim,
                    ns,
                    name,
                    &Report::waiting("Pending", "RunContainerError", &chain, restarts),
                );
                pod_event(
                    sim,
                    ns,
                    name,
                    "Warning",
                    "Failed",
                    &format!("Error: {chain}"),
                );
                restarts += 1;
                tokio::time::sleep(sim.options.backoff).await;
                continue;
            }
        };
        pod_event(
            sim,
            ns,
            name,
            "Normal",
            "Started",
            &format!("Started container {}", main.name),
        );
        set_addr(sim, ns, name, started.addr);
        let since = Instant::now();
        let started_at = now();
        let mut child = started.child;
        let _guard = started.guard;
        let mut ready = None;
        let exit = loop {
            if let Some(c) = child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                break status.code().unwrap_or(137);
            }
            let ok = since.elapsed() >= ready_after
                && probe(sim, started.addr, main.readiness_path.as_deref()).await;
            if ready != Some(ok) {
                ready = Some(ok);
                let mut r = Report::running(&started_at, ok, restarts);
                r.last_state = last_state.clone();
                report(sim, ns, name, &r);
            }
            tokio::time::sleep(sim.options.probe_interval).await;
        };
        set_addr(sim, ns, name, None);
        restarts += 1;
        last_state = json!({"terminated": {"exitCode": exit, "reason": "Error", "startedAt": started_at, "finishedAt": now()}});
        let mut r = Report::waiting(
            "Running",
            "CrashLoopBackOff",
            &format!(
                "back-off 10s restarting failed container={} pod={name}_{ns}",
                main.name
            ),
            restarts,
        );
        r.last_state = last_state.clone();
        report(sim, ns, name, &r);
        pod_event(
            sim,
            ns,
            name,
            "Warning",
            "BackOff",
            &format!(
                "Back-off restarting failed container {} in pod {name}_{ns}",
                main.name
            ),
        );
        tokio::time::sleep(sim.options.backoff).await;
    }
}
