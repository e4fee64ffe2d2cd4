//! Field ownership for server-side apply, and the patch formats.
//!
//! Ownership is tracked per manager as a set of leaf paths, stored on the object in the
//! real `metadata.managedFields` FieldsV1 format (`f:spec`, `k:{"name":"app"}`). Lists
//! whose items all carry a `name` (containers, env, volumes) or a port number are
//! associative, as in the real schema; every other list is atomic. This is simpler than
//! the real structured-merge-diff (no per-type schema), but conflicts, forced takeovers
//! and the removal of fields a manager stops applying behave as on a real API server.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// One step of a path, written as its FieldsV1 key (`f:spec`, `k:{"name":"app"}`).
pub type Path = Vec<String>;

/// Fields never owned by a manager: identity, bookkeeping and status.
const UNOWNED_ROOT: &[&str] = &["apiVersion", "kind", "status"];
const UNOWNED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "selfLink",
];

/// The key field of an associative list, if `items` is one.
fn list_key(items: &[Value]) -> Option<&'static str> {
    if items.is_empty() {
        return None;
    }
    ["name", "containerPort", "port", "mountPath"]
        .into_iter()
        .find(|k| {
            items
                .iter()
                .all(|i| i.get(*k).is_some_and(|v| !v.is_null()))
        })
}

fn item_key(key: &str, item: &Value) -> String {
    let mut m = Map::new();
    m.insert(key.to_string(), item[key].clone());
    format!("k:{}", Value::Object(m))
}

/// The leaf paths set in `obj`, as a manager applying it would own them.
pub fn leaf_paths(obj: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    if let Some(map) = obj.as_object() {
        for (k, v) in map {
            if UNOWNED_ROOT.contains(&k.as_str()) {
                continue;
            }
            if k == "metadata" {
                if let Some(meta) = v.as_object() {
                    for (mk, mv) in meta {
                        if !UNOWNED_META.contains(&mk.as_str()) {
                            collect(mv, vec!["f:metadata".into(), format!("f:{mk}")], &mut out);
                        }
                    }
                }
                continue;
            }
            collect(v, vec![format!("f:{k}")], &mut out);
        }
    }
    out
}

fn collect(v: &Value, path: Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                collect(child, p, out);
            }
        }
        Value::Array(items) => match list_key(items) {
            Some(key) => {
                for item in items {
                    let mut p = path.clone();
                    p.push(item_key(key, item));
                    collect(item, p, out);
                }
            }
            None => {
                out.insert(path);
            }
        },
        _ => {
            out.insert(path);
        }
    }
}

/// The value at `path`, if present.
pub fn get<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for step in path {
        cur = step_into(cur, step)?;
    }
    Some(cur)
}

fn step_into<'a>(cur: &'a Value, step: &str) -> Option<&'a Value> {
    if let Some(field) = step.strip_prefix("f:") {
        return cur.as_object()?.get(field);
    }
    let key: Map<String, Value> = serde_json::from_str(step.strip_prefix("k:")?).ok()?;
    cur.as_array()?
        .iter()
        .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
}

/// Removes the value at `path`, then any object or list item left empty on the way up.
pub fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    if let Some(parent) = get_mut(obj, parent_path) {
        remove_step(parent, last);
        if is_empty_container(parent) && !parent_path.is_empty() {
            remove(obj, parent_path);
        }
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn remove_step(parent: &mut Value, step: &str) {
    if let Some(field) = step.strip_prefix("f:") {
        if let Some(m) = parent.as_object_mut() {
            m.remove(field);
        }
        return;
    }
    let Some(key) = step
        .strip_prefix("k:")
        .and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok())
    else {
        return;
    };
    if let Some(items) = parent.as_array_mut() {
        items.retain(|item| !key.iter().all(|(k, v)| item.get(k) == Some(v)));
    }
}

fn get_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for step in path {
        cur = if let Some(field) = step.strip_prefix("f:") {
            cur.as_object_mut()?.get_mut(field)?
        } else {
            let key: Map<String, Value> = serde_json::from_str(step.strip_prefix("k:")?).ok()?;
            cur.as_array_mut()?
                .iter_mut()
                .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))?
        };
    }
    Some(cur)
}

/// Merges an applied configuration into the live object: objects merge key by key,
/// associative lists item by item (live items the applier does not mention are kept;
/// ownership decides later whether they go), everything else is replaced.
pub fn merge_apply(live: &mut Value, applied: &Value) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                match l.get_mut(k) {
                    Some(lv) => merge_apply(lv, av),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => {
            let key = list_key(a).filter(|k| list_key(l).is_none_or(|lk| lk == *k));
            let Some(key) = key else {
                *l = a.clone();
                return;
            };
            let mut merged = Vec::with_capacity(a.len());
            for item in a {
                match l.iter().find(|li| li.get(key) == item.get(key)) {
                    Some(li) => {
                        let mut li = li.clone();
                        merge_apply(&mut li, item);
                        merged.push(li);
                    }
                    None => merged.push(item.clone()),
                }
            }
            for li in l.iter() {
                if !a.iter().any(|ai| ai.get(key) == li.get(key)) {
                    merged.push(li.clone());
                }
            }
            *l = merged;
        }
        (l, a) => *l = a.clone(),
    }
}

/// RFC 7386 JSON merge patch, also used for strategic merge patches (whose list merging
/// by key the simulator does not model: lists in such a patch replace the live list).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if k.starts_with("$") {
            // Strategic-merge directives ($patch, $setElementOrder/…) carry no data here.
            continue;
        }
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Why a JSON patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum JsonPatchError {
    #[error("the JSON patch is not a list of operations")]
    NotAList,
    #[error("operation {index}: unsupported op {op:?}")]
    UnsupportedOp { index: usize, op: String },
    #[error("operation {index}: path {path:?} does not exist")]
    MissingPath { index: usize, path: String },
    #[error("operation {index}: test failed at {path:?}")]
    TestFailed { index: usize, path: String },
}

/// RFC 6902 JSON patch (`add`, `remove`, `replace`, `test`), as `kubectl rollout undo` sends.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), JsonPatchError> {
    let ops = ops.as_array().ok_or(JsonPatchError::NotAList)?;
    for (index, op) in ops.iter().enumerate() {
        let kind = op["op"].as_str().unwrap_or_default();
        let path = op["path"].as_str().unwrap_or_default().to_string();
        let missing = || JsonPatchError::MissingPath {
            index,
            path: path.clone(),
        };
        match kind {
            "test" => {
                if target.pointer(&path) != Some(&op["value"]) {
                    return Err(JsonPatchError::TestFailed { index, path });
                }
            }
            "replace" => *target.pointer_mut(&path).ok_or_else(missing)? = op["value"].clone(),
            "add" | "remove" => {
                let (parent, last) = path.rsplit_once('/').ok_or_else(missing)?;
                let last = last.replace("~1", "/").replace("~0", "~");
                let parent = target.pointer_mut(parent).ok_or_else(missing)?;
                match (parent, kind) {
                    (Value::Object(m), "add") => {
                        m.insert(last, op["value"].clone());
                    }
                    (Value::Object(m), _) => {
                        m.remove(&last).ok_or_else(missing)?;
                    }
                    (Value::Array(a), "add") if last == "-" => a.push(op["value"].clone()),
                    (Value::Array(a), k) => {
                        let i: usize = last.parse().map_err(|_| missing())?;
                        if k == "add" && i <= a.len() {
                            a.insert(i, op["value"].clone());
                        } else if k == "remove" && i < a.len() {
                            a.remove(i);
                        } else {
                            return Err(missing());
                        }
                    }
                    _ => return Err(missing()),
                }
            }
            other => {
                return Err(JsonPatchError::UnsupportedOp {
                    index,
                    op: other.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// A manager's entry in `metadata.managedFields`, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Managed {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub fields: BTreeSet<Path>,
}

/// Reads `metadata.managedFields`; entries it cannot decode are dropped.
pub fn read_managed(obj: &Value) -> Vec<Managed> {
    let Some(entries) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| {
            let mut fields = BTreeSet::new();
            fields_from_v1(e.get("fieldsV1")?, Vec::new(), &mut fields);
            Some(Managed {
                manager: e.get("manager")?.as_str()?.to_string(),
                operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                time: e["time"].as_str().unwrap_or_default().to_string(),
                fields,
            })
        })
        .collect()
}

fn fields_from_v1(node: &Value, path: Path, out: &mut BTreeSet<Path>) {
    let children: Vec<(&String, &Value)> = node
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.as_str() != ".").collect())
        .unwrap_or_default();
    if children.is_empty() {
        if !path.is_empty() {
            out.insert(path);
        }
        return;
    }
    for (k, v) in children {
        let mut p = path.clone();
        p.push(k.clone());
        fields_from_v1(v, p, out);
    }
}

fn fields_to_v1(fields: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut cur = &mut root;
        for step in path {
            let entry = cur
                .entry(step.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if step.starts_with("k:") {
                entry
                    .as_object_mut()
                    .expect("inserted as object")
                    .entry(".")
                    .or_insert_with(|| json!({}));
            }
            cur = entry.as_object_mut().expect("inserted as object");
        }
    }
    Value::Object(root)
}

/// Writes `managed` back to `metadata.managedFields`, dropping managers that own nothing.
pub fn write_managed(obj: &mut Value, managed: &[Managed]) {
    let entries: Vec<Value> = managed
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            json!({
                "manager": m.manager, "operation": m.operation, "apiVersion": m.api_version,
                "time": m.time, "fieldsType": "FieldsV1", "fieldsV1": fields_to_v1(&m.fields),
            })
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: Path,
}

/// `.spec.template.spec.containers[name="app"].image`, as the API server prints paths.
pub fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for step in path {
        if let Some(f) = step.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = step.strip_prefix("k:") {
            let key: BTreeMap<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let inner: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", inner.join(",")));
        }
    }
    out
}

/// Outcome of a server-side apply on an object: the merged object, or the conflicts.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let mut managed = live.map(read_managed).unwrap_or_default();
    let new_fields = leaf_paths(applied);
    let mut conflicts = Vec::new();
    if let Some(live) = live {
        for other in managed.iter().filter(|m| m.manager != manager) {
            for path in new_fields.intersection(&other.fields) {
                if get(live, path) != get(applied, path) {
                    conflicts.push(Conflict {
                        manager: other.manager.clone(),
                        api_version: other.api_version.clone(),
                        path: path.clone(),
                    });
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for m in managed.iter_mut().filter(|m| m.manager != manager) {
        for c in conflicts.iter().filter(|c| c.manager == m.manager) {
            m.fields.remove(&c.path);
        }
    }
    let mut merged = live.cloned().unwrap_or_else(|| json!({}));
    merge_apply(&mut merged, applied);
    let previous: BTreeSet<Path> = managed
        .iter()
        .filter(|m| m.manager == manager && m.operation == "Apply")
        .flat_map(|m| m.fields.iter().cloned())
        .collect();
    let others: BTreeSet<Path> = managed
        .iter()
        .filter(|m| !(m.manager == manager && m.operation == "Apply"))
        .flat_map(|m| m.fields.iter().cloned())
        .collect();
    for dropped in previous.difference(&new_fields) {
        if !others.contains(dropped) {
            remove(&mut merged, dropped);
        }
    }
    managed.retain(|m| !(m.manager == manager && m.operation == "Apply"));
    managed.push(Managed {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version: api_version.to_string(),
        time: now.to_string(),
        fields: new_fields,
    });
    write_managed(&mut merged, &managed);
    Ok(merged)
}

/// Records a non-apply write (create, update, patch) by `manager`: it takes every field it
/// changed, and other managers lose those fields, without conflict, as on a real server.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    now: &str,
) {
    let mut managed = old.map(read_managed).unwrap_or_default();
    let new_leaves = leaf_paths(new);
    let changed: BTreeSet<Path> = match old {
        None => new_leaves.clone(),
        Some(old) => {
            let old_leaves = leaf_paths(old);
            new_leaves
                .iter()
                .filter(|p| get(old, p) != get(new, p))
                .chain(old_leaves.difference(&new_leaves))
                .cloned()
                .collect()
        }
    };
    if changed.is_empty() {
        write_managed(new, &managed);
        return;
    }
    for m in managed.iter_mut() {
        m.fields.retain(|p| !changed.contains(p));
    }
    let gained: BTreeSet<Path> = changed.intersection(&new_leaves).cloned().collect();
    match managed
        .iter_mut()
        .find(|m| m.manager == manager && m.operation == "Update")
    {
        Some(m) => {
            m.fields.extend(gained);
            m.time = now.to_string();
        }
        None => managed.push(Managed {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            fields: gained,
        }),
    }
    write_managed(new, &managed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {"a": "1"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
        })
    }

    #[test]
    fn leaf_paths_key_containers_by_name_and_skip_identity() {
        let paths = leaf_paths(&deploy(2, "img:1"));
        let shown: Vec<String> = paths.iter().map(|p| display_path(p)).collect();
        assert_eq!(
            shown,
            [
                ".metadata.annotations.a",
                ".spec.replicas",
                ".spec.template.spec.containers[name=\"app\"].image",
                ".spec.template.spec.containers[name=\"app\"].name",
            ]
        );
    }

    #[test]
    fn a_second_manager_conflicts_on_a_changed_value_and_force_takes_the_field() {
        let first = apply(None, &deploy(2, "img:1"), "pb", "apps/v1", false, "t").unwrap();
        // Same values: shared ownership, no conflict.
        let shared = apply(
            Some(&first),
            &deploy(2, "img:1"),
            "other",
            "apps/v1",
            false,
            "t",
        );
        assert!(shared.is_ok());
        let err = apply(
            Some(&first),
            &deploy(3, "img:1"),
            "other",
            "apps/v1",
            false,
            "t",
        )
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].manager, "pb");
        assert_eq!(display_path(&err[0].path), ".spec.replicas");
        let forced = apply(
            Some(&first),
            &deploy(3, "img:1"),
            "other",
            "apps/v1",
            true,
            "t",
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let owners = read_managed(&forced);
        let pb = owners.iter().find(|m| m.manager == "pb").unwrap();
        assert!(
            !pb.fields
                .contains(&vec!["f:spec".to_string(), "f:replicas".to_string()])
        );
    }

    #[test]
    fn fields_a_manager_stops_applying_are_removed_unless_someone_else_owns_them() {
        let first = apply(None, &deploy(2, "img:1"), "pb", "apps/v1", false, "t").unwrap();
        let mut second = deploy(2, "img:2");
        second["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        let out = apply(Some(&first), &second, "pb", "apps/v1", false, "t").unwrap();
        assert!(out["metadata"].get("annotations").is_none());
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["image"],
            "img:2"
        );
    }

    #[test]
    fn an_update_takes_ownership_of_what_it_changed() {
        let first = apply(None, &deploy(2, "img:1"), "pb", "apps/v1", false, "t").unwrap();
        let mut edited = first.clone();
        edited["spec"]["replicas"] = json!(5);
        record_update(Some(&first), &mut edited, "kubectl-edit", "apps/v1", "t");
        let err = apply(
            Some(&edited),
            &deploy(2, "img:1"),
            "pb",
            "apps/v1",
            false,
            "t",
        )
        .unwrap_err();
        assert_eq!(err[0].manager, "kubectl-edit");
        assert_eq!(display_path(&err[0].path), ".spec.replicas");
    }

    #[test]
    fn managed_fields_round_trip_through_fields_v1() {
        let obj = apply(None, &deploy(2, "img:1"), "pb", "apps/v1", false, "t").unwrap();
        let v1 = &obj["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(v1["f:spec"]["f:replicas"], json!({}));
        assert_eq!(
            v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["."],
            json!({})
        );
        assert_eq!(
            read_managed(&obj)[0].fields,
            leaf_paths(&deploy(2, "img:1"))
        );
    }

    #[test]
    fn json_patch_replaces_and_reports_missing_paths() {
        let mut v = deploy(2, "img:1");
        json_patch(
            &mut v,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 4},
                    {"op": "add", "path": "/metadata/annotations/b", "value": "2"},
                    {"op": "remove", "path": "/metadata/annotations/a"}]),
        )
        .unwrap();
        assert_eq!(v["spec"]["replicas"], 4);
        assert_eq!(v["metadata"]["annotations"], json!({"b": "2"}));
        let err = json_patch(
            &mut v,
            &json!([{"op": "replace", "path": "/nope/x", "value": 1}]),
        );
        assert!(matches!(
            err,
            Err(JsonPatchError::MissingPath { index: 0, .. })
        ));
    }

    #[test]
    fn merge_patch_deletes_nulls() {
        let mut v = json!({"a": {"b": 1, "c": 2}});
        merge_patch(&mut v, &json!({"a": {"b": null, "d": 3}}));
        assert_eq!(v, json!({"a": {"c": 2, "d": 3}}));
    }
}
