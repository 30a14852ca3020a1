//! In-memory storage: objects by storage key, namespace and name; one global
//! resourceVersion counter; and a bounded log of changes that watches replay.

use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};

/// RFC 3339 timestamp with second precision, as in `metadata.creationTimestamp`.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Changes kept for watches; older resourceVersions get 410 Gone.
const LOG_CAPACITY: usize = 20_000;
/// ... and at most this many bytes of objects, so big objects cannot exhaust memory.
const LOG_BYTES: usize = 256 * 1024 * 1024;

/// A change to one object, as replayed to watches.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// The storage key of the object's resource.
    pub storage: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object after the change (before it, for deletions, with the new rv).
    pub object: Value,
    /// The object before a modification, to turn selector transitions into ADDED/DELETED.
    pub prev: Option<Value>,
}

/// Object key inside a storage: (namespace, name); namespace is empty for cluster-scoped.
pub type Key = (String, String);

/// All stored state.
#[derive(Debug, Default)]
pub struct Store {
    /// The latest resourceVersion handed out.
    pub rv: u64,
    objects: BTreeMap<String, BTreeMap<Key, Value>>,
    log: VecDeque<(Change, usize)>,
    log_bytes: usize,
    /// Watches must start at or after this resourceVersion.
    pub oldest: u64,
}

/// Reads `metadata.namespace` and `metadata.name`.
pub fn key_of(obj: &Value) -> Key {
    (
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The resourceVersion stored in an object.
pub fn rv_of(obj: &Value) -> Option<u64> {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
}

impl Store {
    /// One object.
    pub fn get(&self, storage: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(storage)?
            .get(&(ns.to_string(), name.to_string()))
    }

    /// All objects of a storage, optionally only one namespace, in key order.
    pub fn list(&self, storage: &str, ns: Option<&str>) -> Vec<&Value> {
        let Some(map) = self.objects.get(storage) else {
            return Vec::new();
        };
        map.iter()
            .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
            .map(|(_, v)| v)
            .collect()
    }

    /// Every stored (storage, object) whose namespace is `ns`.
    pub fn in_namespace(&self, ns: &str) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (storage, map) in &self.objects {
            for ((n, _), v) in map {
                if n == ns {
                    out.push((storage.clone(), v.clone()));
                }
            }
        }
        out
    }

    /// Every stored (storage, object) with an owner reference to `uid`.
    pub fn owned_by(&self, uid: &str) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (storage, map) in &self.objects {
            for v in map.values() {
                let owned = v["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid)));
                if owned {
                    out.push((storage.clone(), v.clone()));
                }
            }
        }
        out
    }

    /// The stored (storage, object) with `metadata.uid` `uid`, if any.
    pub fn by_uid(&self, uid: &str) -> Option<(String, Value)> {
        self.objects.iter().find_map(|(storage, map)| {
            map.values()
                .find(|v| v["metadata"]["uid"].as_str() == Some(uid))
                .map(|v| (storage.clone(), v.clone()))
        })
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, change: Change) {
        let size = approx_size(&change.object) + change.prev.as_ref().map_or(0, approx_size);
        self.log_bytes += size;
        self.log.push_back((change, size));
        while self.log.len() > LOG_CAPACITY || (self.log_bytes > LOG_BYTES && self.log.len() > 1) {
            if let Some((old, bytes)) = self.log.pop_front() {
                self.oldest = old.rv;
                self.log_bytes -= bytes;
            }
        }
    }

    /// Stores a new or changed object, stamping a fresh resourceVersion.
    pub fn put(&mut self, storage: &str, mut obj: Value) -> Value {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let key = key_of(&obj);
        let prev = self
            .objects
            .entry(storage.to_string())
            .or_default()
            .insert(key, obj.clone());
        let kind = if prev.is_some() { "MODIFIED" } else { "ADDED" };
        self.record(Change {
            rv,
            storage: storage.to_string(),
            kind,
            object: obj.clone(),
            prev,
        });
        obj
    }

    /// Removes an object; returns it with the deletion's resourceVersion.
    pub fn remove(&mut self, storage: &str, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .get_mut(storage)?
            .remove(&(ns.to_string(), name.to_string()))?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        self.record(Change {
            rv,
            storage: storage.to_string(),
            kind: "DELETED",
            object: obj.clone(),
            prev: None,
        });
        Some(obj)
    }

    /// Changes after `rv` (exclusive) for one storage.
    pub fn changes_since(&self, storage: &str, rv: u64) -> Vec<Change> {
        let start = self.log.partition_point(|(c, _)| c.rv <= rv);
        self.log
            .range(start..)
            .filter(|(c, _)| c.storage == storage)
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Forgets all history up to now, so older watches get 410 Gone.
    pub fn compact(&mut self) {
        self.log.clear();
        self.log_bytes = 0;
        self.oldest = self.rv;
    }
}

/// A cheap upper-bound-ish estimate of an object's JSON size.
fn approx_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(approx_size).sum::<usize>(),
        Value::Object(m) => {
            2 + m
                .iter()
                .map(|(k, v)| k.len() + 4 + approx_size(v))
                .sum::<usize>()
        }
    }
}
