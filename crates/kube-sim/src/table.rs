//! `kubectl get`'s default output: the server renders a `meta.k8s.io/v1` Table, with the
//! columns the real API server prints for pods, Deployments and ReplicaSets.

use serde_json::{Value, json};

use crate::resources::Resource;

fn age(obj: &Value) -> String {
    let Some(created) = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - created.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn n(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn pod_status(pod: &Value) -> String {
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return "Terminating".into();
    }
    let waiting = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find_map(|c| c.pointer("/state/waiting/reason")?.as_str())
        })
        .filter(|r| !r.is_empty());
    match waiting {
        Some(reason) => reason.to_string(),
        None => pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("Pending")
            .to_string(),
    }
}

fn columns_and_cells(res: &Resource, obj: &Value) -> (Vec<&'static str>, Vec<Value>) {
    let name = json!(
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    match res.plural {
        "pods" => {
            let cs = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = cs.map_or(0, |cs| cs.iter().filter(|c| c["ready"] == true).count());
            let restarts: i64 = cs.map_or(0, |cs| {
                cs.iter()
                    .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                    .sum()
            });
            (
                vec!["Name", "Ready", "Status", "Restarts", "Age"],
                vec![
                    name,
                    json!(format!("{ready}/{total}")),
                    json!(pod_status(obj)),
                    json!(restarts),
                    json!(age(obj)),
                ],
            )
        }
        "deployments" => (
            vec!["Name", "Ready", "Up-to-date", "Available", "Age"],
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n(obj, "/status/readyReplicas"),
                    n(obj, "/spec/replicas")
                )),
                json!(n(obj, "/status/updatedReplicas")),
                json!(n(obj, "/status/availableReplicas")),
                json!(age(obj)),
            ],
        ),
        "replicasets" => (
            vec!["Name", "Desired", "Current", "Ready", "Age"],
            vec![
                name,
                json!(n(obj, "/spec/replicas")),
                json!(n(obj, "/status/replicas")),
                json!(n(obj, "/status/readyReplicas")),
                json!(age(obj)),
            ],
        ),
        _ => (vec!["Name", "Age"], vec![name, json!(age(obj))]),
    }
}

/// The Table for `items` (one object for a GET by name).
pub fn render(res: &Resource, items: &[Value], resource_version: &str) -> Value {
    let columns = columns_and_cells(res, &json!({})).0;
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            let numeric = matches!(*c, "Restarts" | "Up-to-date" | "Available" | "Desired" | "Current")
                || (*c == "Ready" && res.plural == "replicasets");
            json!({"name": c, "type": if numeric { "integer" } else { "string" },
                   "format": if *c == "Name" { "name" } else { "" }, "description": "", "priority": 0})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            json!({
                "cells": columns_and_cells(res, obj).1,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]},
            })
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions, "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::PODS;

    #[test]
    fn a_crash_looping_pod_shows_its_reason_and_restarts() {
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "serve"}]},
            "status": {"phase": "Running", "containerStatuses": [{"ready": false, "restartCount": 4,
                       "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
        });
        let t = render(&PODS, &[pod], "7");
        assert_eq!(
            t["rows"][0]["cells"].as_array().unwrap()[..4],
            [
                json!("web-1"),
                json!("0/1"),
                json!("CrashLoopBackOff"),
                json!(4)
            ]
        );
        assert!(t["rows"][0]["cells"][4].as_str().unwrap().ends_with('d'));
        assert_eq!(t["columnDefinitions"][3]["type"], "integer");
    }
}
