//! `policies/history.json`: each AccessPolicy's versions, from the `policy`
//! events of the audit files (chained: they verify with the rest, see
//! `audit/verification.json`), beside the version in the cluster now.
//!
//! A sidecar writes a `policy` event whenever a bundle puts a policy, or a
//! version of it, in force on its stream, and when one leaves (see the
//! sidecar's `policy_history`). Every change up to the period's end is
//! listed, those before its start flagged (the last of them was in force
//! when the period began); each distinct version once with its spec.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_policy::audit::canonical_json;

use super::package::hex;

/// The digest the sidecar names a version by: sha256 of the canonical JSON
/// of its spec.
fn digest(spec: &Value) -> String {
    hex(&Sha256::digest(canonical_json(spec).as_bytes()))
}

/// The spec a `policy` event carries (canonical JSON in base64), read
/// back and checked against its digest; `null` when it does not decode or
/// does not match (the event itself verifies with its chain).
fn spec_of(policy: &Value, digest: &str) -> Value {
    use base64::Engine as _;
    policy["specBase64"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .filter(|bytes| hex(&Sha256::digest(bytes)) == digest)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

/// One policy's changes and versions.
#[derive(Default)]
struct PolicyChanges {
    changes: Vec<Value>,
    /// By digest: the spec, its generation and when it was first put in force.
    versions: BTreeMap<String, (Value, Value, String)>,
}

/// The history of every policy named by `events` (`policy` audit events up
/// to the period's end) or by `current` (the cluster's AccessPolicies
/// now); `since` flags the changes before the period.
pub(super) fn policy_history(events: &[Value], current: &[Value], since: Timestamp) -> Value {
    let mut sorted: Vec<&Value> = events.iter().collect();
    sorted.sort_by_key(|e| e["time"].as_str().and_then(|t| t.parse::<Timestamp>().ok()));
    let mut policies: BTreeMap<(String, String), PolicyChanges> = BTreeMap::new();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    for e in sorted {
        let p = &e["policy"];
        let key = (text(&p["namespace"]), text(&p["name"]));
        let entry = policies.entry(key).or_default();
        let time = text(&e["time"]);
        let before = time.parse::<Timestamp>().is_ok_and(|t| t < since);
        let removed = p["removed"] == true;
        entry.changes.push(json!({
            "time": time,
            "stream": e["stream"],
            "seq": e["seq"],
            "revision": p["revision"],
            "generation": p["generation"],
            "digest": p["digest"],
            "removed": removed,
            "beforePeriod": before,
        }));
        if let Some(d) = p["digest"].as_str() {
            entry
                .versions
                .entry(d.to_string())
                .or_insert_with(|| (spec_of(p, d), p["generation"].clone(), time.clone()));
        }
    }
    for p in current {
        let key = (
            text(&p["metadata"]["namespace"]),
            text(&p["metadata"]["name"]),
        );
        policies.entry(key).or_default();
    }
    let list: Vec<Value> = policies
        .into_iter()
        .map(|((namespace, name), c)| {
            let now = current.iter().find(|p| {
                p["metadata"]["namespace"] == namespace.as_str()
                    && p["metadata"]["name"] == name.as_str()
            });
            let versions: Vec<Value> = c
                .versions
                .into_iter()
                .map(|(d, (spec, generation, first))| {
                    json!({"digest": d, "generation": generation, "firstInForce": first, "spec": spec})
                })
                .collect();
            json!({
                "namespace": namespace,
                "name": name,
                "inCluster": now.map(|p| json!({
                    "generation": p["metadata"]["generation"],
                    "digest": digest(&p["spec"]),
                })),
                "changes": c.changes,
                "versions": versions,
            })
        })
        .collect();
    json!({
        "source": "the chained `policy` events of the audit files (each bundle's changes to the policies in force on a sidecar's stream) and the cluster's AccessPolicies now",
        "accessPolicies": list,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_listed_once_and_changes_in_order() {
        let spec_a = json!({"defaultAction": "allow"});
        let spec_b = json!({"defaultAction": "deny"});
        let event = |time: &str, stream: &str, spec: &Value, generation: i64| {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::STANDARD.encode(canonical_json(spec));
            json!({"time": time, "type": "policy", "stream": stream, "seq": 1,
                   "policy": {"namespace": "shop", "name": "p", "revision": "r",
                              "generation": generation, "digest": digest(spec), "specBase64": b64}})
        };
        let events = [
            event("2026-01-02T00:00:00Z", "s1", &spec_b, 2),
            event("2026-01-01T00:00:00Z", "s1", &spec_a, 1),
            event("2026-01-01T00:00:01Z", "s2", &spec_a, 1),
        ];
        let current = [
            json!({"metadata": {"namespace": "shop", "name": "p", "generation": 2}, "spec": spec_b}),
        ];
        let since: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let h = policy_history(&events, &current, since);
        let p = &h["accessPolicies"][0];
        let times: Vec<&str> = p["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["time"].as_str().unwrap())
            .collect();
        assert_eq!(
            times,
            [
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:01Z",
                "2026-01-02T00:00:00Z"
            ]
        );
        assert_eq!(p["changes"][0]["beforePeriod"], true);
        assert_eq!(p["changes"][2]["beforePeriod"], false);
        assert_eq!(p["versions"].as_array().unwrap().len(), 2);
        assert_eq!(p["versions"][0]["spec"], spec_a, "{p}");
        assert_eq!(p["inCluster"]["digest"], digest(&spec_b));
    }
}
