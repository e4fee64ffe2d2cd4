//! The object store: every object as JSON, a global resourceVersion, and the event log
//! that watches replay from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use crate::resources::Resource;

/// How many past events a watch can resume from; older resourceVersions get 410 Gone.
const HISTORY: usize = 4096;

/// The API's timestamp format (seconds precision, UTC).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    group: &'static str,
    plural: &'static str,
    namespace: String,
    name: String,
}

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: &'static str,
    pub group: &'static str,
    pub plural: &'static str,
    pub namespace: String,
    pub object: Arc<Value>,
    pub rv: u64,
}

impl Change {
    pub fn is_for(&self, res: &Resource, namespace: Option<&str>) -> bool {
        self.group == res.group
            && self.plural == res.plural
            && namespace.is_none_or(|ns| ns == self.namespace)
    }
}

#[derive(Default)]
struct Inner {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Change>,
}

/// Shared by the HTTP handlers and the controllers; every critical section is short and
/// never awaits, so a std mutex is enough.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Change>,
    /// Woken on every write so the controllers reconcile promptly.
    pub changed: Notify,
}

/// A watch asked for a resourceVersion older than the kept history.
#[derive(Debug)]
pub struct Gone;

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Store {
            inner: Mutex::new(Inner::default()),
            tx: broadcast::channel(HISTORY).0,
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not wedge every later request: the data is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(res: &Resource, ns: &str, name: &str) -> Key {
        Key {
            group: res.group,
            plural: res.plural,
            namespace: if res.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> Option<Value> {
        self.lock().objects.get(&Self::key(res, ns, name)).cloned()
    }

    /// Objects of `res`, in one namespace or all of them, sorted by namespace and name.
    pub fn list(&self, res: &Resource, ns: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|(k, _)| {
                k.group == res.group
                    && k.plural == res.plural
                    && ns.is_none_or(|ns| !res.namespaced || k.namespace == ns)
            })
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// A fresh uid for an object about to be created.
    pub fn next_uid(&self) -> String {
        let mut inner = self.lock();
        inner.uid += 1;
        format!("5ba1ab1e-0000-4000-8000-{:012x}", inner.uid)
    }

    /// Stores `obj` (created or replaced), stamping resourceVersion, and for a new object its
    /// uid and creationTimestamp when missing. Returns the stored object.
    pub fn put(&self, res: &Resource, mut obj: Value) -> Value {
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let key = Self::key(res, &ns, &name);
        let mut inner = self.lock();
        inner.rv += 1;
        let rv = inner.rv;
        let existed = inner.objects.contains_key(&key);
        if !existed && obj.pointer("/metadata/uid").is_none_or(Value::is_null) {
            inner.uid += 1;
            obj["metadata"]["uid"] = json!(format!("5ba1ab1e-0000-4000-8000-{:012x}", inner.uid));
        }
        if obj
            .pointer("/metadata/creationTimestamp")
            .is_none_or(Value::is_null)
        {
            obj["metadata"]["creationTimestamp"] = json!(now());
        }
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        inner.objects.insert(key, obj.clone());
        let change = Change {
            kind: if existed { "MODIFIED" } else { "ADDED" },
            group: res.group,
            plural: res.plural,
            namespace: if res.namespaced { ns } else { String::new() },
            object: Arc::new(obj.clone()),
            rv,
        };
        Self::record(&mut inner, &self.tx, change);
        drop(inner);
        self.changed.notify_waiters();
        obj
    }

    pub fn delete(&self, res: &Resource, ns: &str, name: &str) -> Option<Value> {
        let mut inner = self.lock();
        let mut obj = inner.objects.remove(&Self::key(res, ns, name))?;
        inner.rv += 1;
        let rv = inner.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let change = Change {
            kind: "DELETED",
            group: res.group,
            plural: res.plural,
            namespace: if res.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            object: Arc::new(obj.clone()),
            rv,
        };
        Self::record(&mut inner, &self.tx, change);
        drop(inner);
        self.changed.notify_waiters();
        Some(obj)
    }

    fn record(inner: &mut Inner, tx: &broadcast::Sender<Change>, change: Change) {
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(change.clone());
        // No receiver is not an error: nobody is watching.
        let _ = tx.send(change);
    }

    /// The changes after `rv` that are still kept, and a receiver for every later one, taken
    /// under one lock so that nothing falls between them.
    pub fn watch_from(&self, rv: u64) -> Result<(Vec<Change>, broadcast::Receiver<Change>), Gone> {
        let inner = self.lock();
        if let Some(oldest) = inner.history.front()
            && rv + 1 < oldest.rv
            && inner.history.len() == HISTORY
        {
            return Err(Gone);
        }
        let backlog = inner
            .history
            .iter()
            .filter(|c| c.rv > rv)
            .cloned()
            .collect();
        Ok((backlog, self.tx.subscribe()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{DEPLOYMENTS, NAMESPACES};

    #[test]
    fn put_stamps_versions_and_watch_replays_from_a_version() {
        let store = Store::new();
        let a = store.put(&NAMESPACES, json!({"metadata": {"name": "a"}}));
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        assert_eq!(a["kind"], "Namespace");
        let uid = a["metadata"]["uid"].clone();
        let d = store.put(
            &DEPLOYMENTS,
            json!({"metadata": {"name": "x", "namespace": "a"}}),
        );
        assert_eq!(d["apiVersion"], "apps/v1");
        let a2 = store.put(&NAMESPACES, a.clone());
        assert_eq!(a2["metadata"]["uid"], uid, "an update keeps the uid");
        let (backlog, _rx) = store.watch_from(1).unwrap();
        let kinds: Vec<(&str, u64)> = backlog.iter().map(|c| (c.kind, c.rv)).collect();
        assert_eq!(kinds, [("ADDED", 2), ("MODIFIED", 3)]);
        assert_eq!(store.list(&DEPLOYMENTS, Some("a")).0.len(), 1);
        assert_eq!(store.list(&DEPLOYMENTS, Some("b")).0.len(), 0);
        let gone = store.delete(&DEPLOYMENTS, "a", "x").unwrap();
        assert_eq!(gone["metadata"]["resourceVersion"], "4");
        assert!(store.get(&DEPLOYMENTS, "a", "x").is_none());
    }
}
