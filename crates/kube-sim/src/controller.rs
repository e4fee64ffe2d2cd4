//! The Deployment and ReplicaSet controllers, and garbage collection of orphans.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::resources::{DEPLOYMENTS, EVENTS, PODS, REPLICASETS, Resource};
use crate::store::now;
use crate::{Shared, kubelet, lock};

const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

/// Reconciles until the simulator stops: after every write, and on a short tick for the
/// time-based parts (progress deadlines).
pub async fn run(sim: Arc<Shared>) {
    loop {
        let notified = sim.store.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        reconcile(&sim);
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(sim.options.probe_interval * 4) => {}
        }
    }
}

fn reconcile(sim: &Arc<Shared>) {
    kubelet::start_new_pods(sim);
    collect_orphans(sim);
    for d in sim.store.list(&DEPLOYMENTS, None).0 {
        sync_deployment(sim, &d);
    }
    for rs in sim.store.list(&REPLICASETS, None).0 {
        sync_replicaset(sim, &rs);
    }
    for d in sim.store.list(&DEPLOYMENTS, None).0 {
        deployment_status(sim, &d);
    }
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn i(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn controller_uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o["controller"] == json!(true))?
        .get("uid")?
        .as_str()
}

fn owned_by<'a>(items: &'a [Value], uid: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|o| controller_uid(o) == Some(uid))
        .collect()
}

fn owner_ref(kind: &str, api_version: &str, owner: &Value) -> Value {
    json!([{
        "apiVersion": api_version, "kind": kind, "name": s(owner, "/metadata/name"),
        "uid": s(owner, "/metadata/uid"), "controller": true, "blockOwnerDeletion": true,
    }])
}

pub fn is_terminating(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

pub fn is_ready(pod: &Value) -> bool {
    !is_terminating(pod)
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

/// Kubernetes' alphabet for generated names: no vowels, no look-alike digits.
pub fn safe_encode(mut n: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::with_capacity(len);
    for _ in 0..len {
        out.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
    }
    out
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_blank),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Serialises with sorted keys, whatever serde_json's map order is, and without null or
/// empty fields, so that templates equal in meaning hash equally: kubectl's Go types write
/// `creationTimestamp: null` and `resources: {}` where our clients write nothing.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m
                .iter()
                .filter(|(_, v)| !is_blank(v))
                .map(|(k, _)| k)
                .collect();
            keys.sort();
            out.push('{');
            for (n, k) in keys.into_iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (n, x) in a.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn strip_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    t
}

/// The `pod-template-hash` of a template: FNV-1a over its canonical JSON.
pub fn template_hash(template: &Value) -> String {
    let mut text = String::new();
    canonical(&strip_hash(template), &mut text);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    safe_encode(h, 10)
}

fn same_template(a: &Value, b: &Value) -> bool {
    let (mut x, mut y) = (String::new(), String::new());
    canonical(&strip_hash(a), &mut x);
    canonical(&strip_hash(b), &mut y);
    x == y
}

/// `25%` of `total`, rounded up or down, or a plain integer.
fn scaled(v: Option<&Value>, total: i64, round_up: bool, default: &str) -> i64 {
    let v = v.cloned().unwrap_or(json!(default));
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            let x = pct * total;
            if round_up { (x + 99) / 100 } else { x / 100 }
        }
        _ => 0,
    }
}

/// `(maxSurge, maxUnavailable)` resolved against the desired replica count.
fn rolling_limits(d: &Value, desired: i64) -> (i64, i64) {
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let surge = scaled(ru.and_then(|r| r.get("maxSurge")), desired, true, "25%");
    let mut unavailable = scaled(
        ru.and_then(|r| r.get("maxUnavailable")),
        desired,
        false,
        "25%",
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

fn revision(rs: &Value) -> i64 {
    s(
        rs,
        &format!("/metadata/annotations/{}", REVISION.replace('/', "~1")),
    )
    .parse()
    .unwrap_or(0)
}

pub fn event(
    sim: &Shared,
    ns: &str,
    involved: &Value,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let name = s(involved, "/metadata/name");
    let existing = sim.store.list(&EVENTS, Some(ns)).0.into_iter().find(|e| {
        s(e, "/involvedObject/name") == name
            && s(e, "/reason") == reason
            && s(e, "/message") == message
    });
    let t = now();
    let ev = match existing {
        Some(mut e) => {
            e["count"] = json!(i(&e, "/count") + 1);
            e["lastTimestamp"] = json!(t);
            e
        }
        None => json!({
            "metadata": {"name": format!("{name}.{}", safe_encode(sim.store.resource_version() * 7919 + 1, 8)), "namespace": ns},
            "involvedObject": {"kind": involved["kind"], "namespace": ns, "name": name, "uid": s(involved, "/metadata/uid"),
                               "apiVersion": involved["apiVersion"]},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": t, "lastTimestamp": t, "source": {"component": component},
            "reportingComponent": component,
        }),
    };
    sim.store.put(&EVENTS, ev);
}

fn set_replicas(sim: &Shared, d: &Value, rs: &Value, replicas: i64) {
    let from = i(rs, "/spec/replicas");
    if from == replicas {
        return;
    }
    let mut rs = rs.clone();
    rs["spec"]["replicas"] = json!(replicas);
    if rs.pointer("/metadata/annotations").is_some() {
        rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] =
            json!(i(d, "/spec/replicas").to_string());
    }
    let name = s(&rs, "/metadata/name").to_string();
    sim.store.put(&REPLICASETS, rs);
    let verb = if replicas > from { "up" } else { "down" };
    event(
        sim,
        s(d, "/metadata/namespace"),
        d,
        "Normal",
        "ScalingReplicaSet",
        &format!("Scaled {verb} replica set {name} from {from} to {replicas}"),
        "deployment-controller",
    );
}

/// Annotations a Deployment passes on to its ReplicaSets (as the real controller does:
/// `kubectl rollout history` reads change-cause from them).
fn copied_annotations(d: &Value) -> Map<String, Value> {
    d.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter(|(k, _)| {
                    !k.starts_with("deployment.kubernetes.io/")
                        && *k != "kubectl.kubernetes.io/last-applied-configuration"
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn sync_deployment(sim: &Shared, d: &Value) {
    let ns = s(d, "/metadata/namespace").to_string();
    let name = s(d, "/metadata/name").to_string();
    let uid = s(d, "/metadata/uid").to_string();
    let desired = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let all = sim.store.list(&REPLICASETS, Some(&ns)).0;
    let mut rss: Vec<Value> = owned_by(&all, &uid).into_iter().cloned().collect();
    let max_rev = rss.iter().map(revision).max().unwrap_or(0);
    let hash = template_hash(&template);
    let new_rs = match rss
        .iter()
        .position(|rs| same_template(&rs["spec"]["template"], &template))
    {
        Some(pos) => {
            let mut rs = rss[pos].clone();
            let mut changed = false;
            let mut ann = copied_annotations(d);
            let rev = if revision(&rs) < max_rev {
                max_rev + 1
            } else {
                revision(&rs)
            };
            ann.insert(REVISION.into(), json!(rev.to_string()));
            for k in [
                "deployment.kubernetes.io/desired-replicas",
                "deployment.kubernetes.io/max-replicas",
            ] {
                if let Some(v) =
                    rs.pointer(&format!("/metadata/annotations/{}", k.replace('/', "~1")))
                {
                    ann.insert(k.into(), v.clone());
                }
            }
            if rs["metadata"]["annotations"] != Value::Object(ann.clone()) {
                rs["metadata"]["annotations"] = Value::Object(ann);
                changed = true;
            }
            if changed {
                rs = sim.store.put(&REPLICASETS, rs);
            }
            rss[pos] = rs.clone();
            rs
        }
        None => {
            let mut ann = copied_annotations(d);
            ann.insert(REVISION.into(), json!((max_rev + 1).to_string()));
            ann.insert(
                "deployment.kubernetes.io/desired-replicas".into(),
                json!(desired.to_string()),
            );
            let (surge, _) = rolling_limits(d, desired);
            ann.insert(
                "deployment.kubernetes.io/max-replicas".into(),
                json!((desired + surge).to_string()),
            );
            let mut t = template.clone();
            t["metadata"]["labels"][HASH_LABEL] = json!(hash);
            let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
            selector["matchLabels"][HASH_LABEL] = json!(hash);
            let rs = json!({
                "metadata": {
                    "name": format!("{name}-{hash}"), "namespace": ns,
                    "labels": t["metadata"]["labels"], "annotations": ann,
                    "ownerReferences": owner_ref("Deployment", "apps/v1", d),
                },
                "spec": {"replicas": 0, "selector": selector, "template": t,
                         "minReadySeconds": d.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0))},
                "status": {"replicas": 0, "observedGeneration": 1},
            });
            let rs = sim.store.put(&REPLICASETS, json!(rs));
            let mut rs = rs;
            rs["metadata"]["generation"] = json!(1);
            rss.push(rs.clone());
            rs
        }
    };
    // The Deployment's revision follows its newest ReplicaSet.
    let rev = revision(&new_rs).to_string();
    if s(
        d,
        &format!("/metadata/annotations/{}", REVISION.replace('/', "~1")),
    ) != rev
    {
        let mut d2 = d.clone();
        d2["metadata"]["annotations"][REVISION] = json!(rev);
        sim.store.put(&DEPLOYMENTS, d2);
    }
    if d.pointer("/spec/paused") == Some(&json!(true)) {
        return;
    }
    let new_name = s(&new_rs, "/metadata/name").to_string();
    let olds: Vec<&Value> = rss
        .iter()
        .filter(|r| s(r, "/metadata/name") != new_name)
        .collect();
    let available = |rs: &Value| i(rs, "/status/availableReplicas");
    if s(d, "/spec/strategy/type") == "Recreate" {
        let old_pods = olds.iter().map(|r| i(r, "/status/replicas")).sum::<i64>();
        for r in &olds {
            set_replicas(sim, d, r, 0);
        }
        if old_pods == 0 {
            set_replicas(sim, d, &new_rs, desired);
        }
    } else {
        let (surge, unavailable) = rolling_limits(d, desired);
        let total: i64 = rss.iter().map(|r| i(r, "/spec/replicas")).sum();
        let mut new_replicas = i(&new_rs, "/spec/replicas");
        if new_replicas > desired {
            new_replicas = desired;
        } else if new_replicas < desired {
            let room = desired + surge - total;
            if room > 0 {
                new_replicas = desired.min(new_replicas + room);
            }
        }
        set_replicas(sim, d, &new_rs, new_replicas);
        // Scale old ReplicaSets down only as far as availability allows.
        let min_available = desired - unavailable;
        let all_pods: i64 = olds.iter().map(|r| i(r, "/spec/replicas")).sum::<i64>() + new_replicas;
        let new_unavailable = (new_replicas - available(&new_rs)).max(0);
        let mut budget = all_pods - min_available - new_unavailable;
        let mut olds: Vec<Value> = olds.into_iter().cloned().collect();
        olds.sort_by_key(revision);
        // First the old pods that serve nobody.
        for r in olds.iter_mut() {
            let unhealthy = i(r, "/spec/replicas") - available(r);
            let cut = unhealthy.min(budget).max(0);
            if cut > 0 {
                let to = i(r, "/spec/replicas") - cut;
                set_replicas(sim, d, r, to);
                r["spec"]["replicas"] = json!(to);
                budget -= cut;
            }
        }
        let available_total: i64 = rss.iter().map(available).sum();
        let mut budget = (available_total - min_available).max(0);
        for r in olds.iter() {
            let have = i(r, "/spec/replicas");
            let cut = have.min(budget);
            if cut > 0 {
                set_replicas(sim, d, r, have - cut);
                budget -= cut;
            }
        }
    }
    prune_history(sim, d, &rss, &new_name);
}

fn prune_history(sim: &Shared, d: &Value, rss: &[Value], new_name: &str) {
    let limit = d
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10);
    let mut dead: Vec<&Value> = rss
        .iter()
        .filter(|r| {
            s(r, "/metadata/name") != new_name
                && i(r, "/spec/replicas") == 0
                && i(r, "/status/replicas") == 0
        })
        .collect();
    dead.sort_by_key(|r| revision(r));
    let excess = dead.len() as i64 - limit;
    for r in dead.into_iter().take(excess.max(0) as usize) {
        sim.store.delete(
            &REPLICASETS,
            s(r, "/metadata/namespace"),
            s(r, "/metadata/name"),
        );
    }
}

fn sync_replicaset(sim: &Arc<Shared>, rs: &Value) {
    let ns = s(rs, "/metadata/namespace").to_string();
    let uid = s(rs, "/metadata/uid").to_string();
    let want = i(rs, "/spec/replicas");
    let all = sim.store.list(&PODS, Some(&ns)).0;
    let mut pods: Vec<Value> = owned_by(&all, &uid)
        .into_iter()
        .filter(|p| !is_terminating(p))
        .cloned()
        .collect();
    let have = pods.len() as i64;
    if have < want {
        for _ in have..want {
            let pod = new_pod(sim, rs);
            pods.push(sim.store.put(&PODS, pod));
        }
    } else if have > want {
        // Not-ready pods go first, then the newest, as the real controller prefers.
        pods.sort_by_key(|p| {
            (
                is_ready(p),
                std::cmp::Reverse(s(p, "/metadata/creationTimestamp").to_string()),
            )
        });
        let doomed: Vec<Value> = pods.drain(..(have - want) as usize).collect();
        for p in doomed {
            kubelet::terminate(sim, &p);
        }
    }
    let ready = pods.iter().filter(|p| is_ready(p)).count() as i64;
    let n = pods.len() as i64;
    let status = json!({
        "replicas": n, "fullyLabeledReplicas": n, "readyReplicas": ready, "availableReplicas": ready,
        "observedGeneration": i(rs, "/metadata/generation").max(1),
    });
    if rs.get("status") != Some(&status) {
        let mut rs = rs.clone();
        rs["status"] = status;
        sim.store.put(&REPLICASETS, rs);
    }
}

fn new_pod(sim: &Shared, rs: &Value) -> Value {
    let uid = sim.store.next_uid();
    let n = u64::from_str_radix(uid.rsplit('-').next().unwrap_or("0"), 16).unwrap_or(0);
    let template = &rs["spec"]["template"];
    json!({
        "metadata": {
            "name": format!("{}-{}", s(rs, "/metadata/name"), safe_encode(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7, 5)),
            "namespace": s(rs, "/metadata/namespace"),
            "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
            "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
            "ownerReferences": owner_ref("ReplicaSet", "apps/v1", rs),
        },
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    })
}

fn deployment_status(sim: &Shared, d: &Value) {
    let ns = s(d, "/metadata/namespace");
    let uid = s(d, "/metadata/uid");
    let desired = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let all = sim.store.list(&REPLICASETS, Some(ns)).0;
    let rss = owned_by(&all, uid);
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let new_rs = rss
        .iter()
        .find(|r| same_template(&r["spec"]["template"], &template));
    let sum = |p: &str| rss.iter().map(|r| i(r, p)).sum::<i64>();
    let (replicas, ready, available) = (
        sum("/status/replicas"),
        sum("/status/readyReplicas"),
        sum("/status/availableReplicas"),
    );
    let updated = new_rs.map(|r| i(r, "/status/replicas")).unwrap_or(0);
    let new_name = new_rs
        .map(|r| s(r, "/metadata/name"))
        .unwrap_or_default()
        .to_string();
    let generation = i(d, "/metadata/generation");
    let (_, unavailable) = rolling_limits(d, desired);
    let complete =
        updated == desired && replicas == desired && available == desired && new_rs.is_some();

    let signature = format!("{generation}/{new_name}/{replicas}/{updated}/{ready}/{available}");
    let since = {
        let mut progress = lock(&sim.progress);
        let entry = progress
            .entry(uid.to_string())
            .or_insert_with(|| (signature.clone(), Instant::now()));
        if entry.0 != signature {
            *entry = (signature, Instant::now());
        }
        entry.1
    };
    let deadline = sim.options.progress_deadline.unwrap_or_else(|| {
        Duration::from_secs(
            d.pointer("/spec/progressDeadlineSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(600),
        )
    });
    let old_conditions = d
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (p_status, p_reason, p_message) = if complete {
        (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else if since.elapsed() > deadline {
        // The timer restarts only when the rollout moves, so once stuck it stays stuck.
        (
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{new_name}\" has timed out progressing."),
        )
    } else {
        (
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
        )
    };
    let (a_status, a_reason, a_message) = if available >= desired - unavailable {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    let t = now();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        let old = old_conditions.iter().find(|c| c["type"] == type_);
        let same = old.is_some_and(|o| {
            o["status"] == status && o["reason"] == reason && o["message"] == message
        });
        let transition = match old {
            Some(o) if o["status"] == status => o["lastTransitionTime"].clone(),
            _ => json!(t),
        };
        let update = if same {
            old.map(|o| o["lastUpdateTime"].clone()).unwrap_or(json!(t))
        } else {
            json!(t)
        };
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastUpdateTime": update, "lastTransitionTime": transition})
    };
    let mut status = json!({
        "observedGeneration": generation, "replicas": replicas, "updatedReplicas": updated,
        "readyReplicas": ready, "availableReplicas": available,
        "conditions": [condition("Available", a_status, a_reason, a_message),
                       condition("Progressing", p_status, p_reason, &p_message)],
    });
    let unavailable_now = (desired - available).max(0);
    if unavailable_now > 0 {
        status["unavailableReplicas"] = json!(unavailable_now);
    }
    if d.get("status") != Some(&status) {
        let mut d = d.clone();
        d["status"] = status;
        sim.store.put(&DEPLOYMENTS, d);
    }
}

fn collect_orphans(sim: &Arc<Shared>) {
    let uids = |res: &Resource| -> std::collections::HashSet<String> {
        sim.store
            .list(res, None)
            .0
            .iter()
            .map(|o| s(o, "/metadata/uid").to_string())
            .collect()
    };
    let deployments = uids(&DEPLOYMENTS);
    for rs in sim.store.list(&REPLICASETS, None).0 {
        if controller_uid(&rs).is_some_and(|u| !deployments.contains(u)) {
            sim.store.delete(
                &REPLICASETS,
                s(&rs, "/metadata/namespace"),
                s(&rs, "/metadata/name"),
            );
        }
    }
    let replicasets = uids(&REPLICASETS);
    for pod in sim.store.list(&PODS, None).0 {
        if !is_terminating(&pod) && controller_uid(&pod).is_some_and(|u| !replicasets.contains(u)) {
            kubelet::terminate(sim, &pod);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_ignores_key_order_and_the_hash_label() {
        let a = json!({"metadata": {"labels": {"app": "x", "tier": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let b = json!({"spec": {"containers": [{"image": "i", "name": "c"}]}, "metadata": {"labels": {"tier": "y", "app": "x", HASH_LABEL: "zzz"}}});
        assert_eq!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 10);
        let go = json!({"metadata": {"labels": {"app": "x", "tier": "y"}, "creationTimestamp": null},
                        "spec": {"containers": [{"name": "c", "image": "i", "resources": {}}]}});
        assert_eq!(
            template_hash(&a),
            template_hash(&go),
            "Go's empty fields mean nothing"
        );
        let c = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "j"}]}});
        assert_ne!(template_hash(&a), template_hash(&c));
    }

    #[test]
    fn rolling_limits_round_surge_up_and_unavailable_down() {
        let d = json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}});
        assert_eq!(rolling_limits(&d, 3), (1, 0));
        let zero =
            json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}});
        assert_eq!(rolling_limits(&zero, 3), (0, 1));
        let fixed =
            json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 2, "maxUnavailable": 0}}}});
        assert_eq!(rolling_limits(&fixed, 4), (2, 0));
    }
}
