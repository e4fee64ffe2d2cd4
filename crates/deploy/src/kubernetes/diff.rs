//! What a deploy would change in a live object: the paths whose values differ between
//! the object as it runs and as a server-side dry run says it would become. Fields the
//! API server owns (status, managed fields, resource versions) are not compared.

use serde_json::Value;

/// One changed field: its path (`spec.template.spec.containers[0].image`) and the
/// values before and after (`None` when absent).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Change {
    pub path: String,
    pub live: Option<Value>,
    pub applied: Option<Value>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map_or("(absent)".to_string(), Value::to_string);
        write!(
            f,
            "{}: {} → {}",
            self.path,
            show(&self.live),
            show(&self.applied)
        )
    }
}

/// Metadata the API server writes on every change; a difference there says nothing.
const IGNORED: [&str; 7] = [
    "status",
    "metadata.managedFields",
    "metadata.resourceVersion",
    "metadata.generation",
    "metadata.uid",
    "metadata.creationTimestamp",
    "metadata.annotations.deployment.kubernetes.io/revision",
];

/// The changes from `live` (`None`: the object does not exist yet) to `applied`.
pub fn diff(live: Option<&Value>, applied: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk("", live, Some(applied), &mut out);
    out
}

fn walk(path: &str, live: Option<&Value>, applied: Option<&Value>, out: &mut Vec<Change>) {
    if IGNORED.contains(&path) {
        return;
    }
    match (live, applied) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&p, a.get(k), b.get(k), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}[{i}]"), Some(x), Some(y), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Change {
            path: path.to_string(),
            live: a.cloned(),
            applied: b.cloned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_changed_leaves_and_ignores_server_fields() {
        let live = json!({
            "metadata": {"generation": 3, "annotations": {"predict-buy.dev/release": "v1.0.0"}},
            "spec": {"template": {"spec": {"containers": [{"image": "a:1", "args": ["--release", "v1.0.0"]}]}}},
            "status": {"replicas": 2}
        });
        let applied = json!({
            "metadata": {"generation": 4, "annotations": {"predict-buy.dev/release": "v1.1.0", "new": "x"}},
            "spec": {"template": {"spec": {"containers": [{"image": "a:1", "args": ["--release", "v1.1.0"]}]}}},
            "status": {"replicas": 0}
        });
        let changes = diff(Some(&live), &applied);
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "metadata.annotations.new",
                "metadata.annotations.predict-buy.dev/release",
                "spec.template.spec.containers[0].args[1]",
            ]
        );
        assert_eq!(
            changes[1].to_string(),
            "metadata.annotations.predict-buy.dev/release: \"v1.0.0\" → \"v1.1.0\""
        );
        assert!(diff(Some(&live), &live).is_empty());
    }

    #[test]
    fn a_new_object_is_one_change() {
        let applied = json!({"spec": {"replicas": 2}});
        let changes = diff(None, &applied);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path, "");
        assert_eq!(changes[0].live, None);
    }
}
