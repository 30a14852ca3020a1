//! The history of the AccessPolicies in force, in the audit stream (#21:
//! evidence carries the policies "with their change history"). Whenever a
//! bundle puts in force a policy, or a version of it (told by the digest
//! of its spec), that the stream did not have in force, or takes one away,
//! the sidecar writes a chained `policy` event with the policy's name,
//! generation, digest and spec (see [`AuditPolicy`]; the digest is sha256
//! of the spec's canonical JSON, keys sorted as the chain hashes events, so
//! the same spec read from the cluster has the same digest). So the versions a
//! stream decided under, and when each took effect, are as tamper-evident
//! as the decisions; `kubectl sluice evidence export` lists them per policy
//! (`policies/history.json`). Run mode records each bundle's changes;
//! standalone records the manifests' policies at start.
//!
//! No secret reaches the event: an AccessPolicy's spec holds none (a
//! masking hash key is a Secret's *name*; its value comes in the bundle's
//! `secretKeys`, never written here).

use std::collections::BTreeMap;
use std::sync::Mutex;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use sluice_policy::audit::{AuditPolicy, canonical_json};
use sluice_policy::wire::Bundle;

/// The policies a stream has in force: their digest by namespace and name.
#[derive(Debug, Default)]
pub struct PolicyHistory {
    in_force: Mutex<BTreeMap<(String, String), String>>,
}

impl PolicyHistory {
    /// Puts on record, through `write` (the audit log's
    /// `AuditLog::policy_version`), how the policies of `bundle` differ
    /// from those in force: each new or changed policy (by namespace and
    /// name), then each one that left. A change whose event cannot be
    /// written is logged and tried again at the next bundle. (The writer is
    /// passed in so that this module needs nothing of the audit log's,
    /// which holds a `PolicyHistory`.)
    pub fn record<E: std::fmt::Display>(
        &self,
        bundle: &Bundle,
        mut write: impl FnMut(AuditPolicy) -> Result<(), E>,
    ) {
        let mut in_force = self.in_force.lock().unwrap_or_else(|p| p.into_inner());
        let mut now = BTreeMap::new();
        for p in &bundle.policies {
            let key = (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
            );
            let spec = match serde_json::to_value(&p.spec) {
                Ok(spec) => canonical_json(&spec),
                Err(e) => {
                    tracing::error!(policy = %key.1, error = %e, "a policy's spec could not be put on record");
                    continue;
                }
            };
            let digest = hex::encode(Sha256::digest(spec.as_bytes()));
            if in_force.get(&key) != Some(&digest) {
                let version = AuditPolicy {
                    digest: Some(digest.clone()),
                    generation: p.metadata.generation,
                    name: key.1.clone(),
                    namespace: key.0.clone(),
                    removed: false,
                    revision: bundle.revision.clone(),
                    spec_base64: Some(
                        base64::engine::general_purpose::STANDARD.encode(spec.as_bytes()),
                    ),
                };
                if !written(write(version), &key) {
                    continue;
                }
            }
            now.insert(key, digest);
        }
        let left: Vec<(String, String)> = in_force
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        for key in left {
            let removed = AuditPolicy {
                digest: None,
                generation: None,
                name: key.1.clone(),
                namespace: key.0.clone(),
                removed: true,
                revision: bundle.revision.clone(),
                spec_base64: None,
            };
            if !written(write(removed), &key) {
                // Still counted as in force: its removal is tried again.
                now.insert(key, String::new());
            }
        }
        *in_force = now;
    }
}

fn written<E: std::fmt::Display>(result: Result<(), E>, key: &(String, String)) -> bool {
    if let Err(e) = &result {
        tracing::error!(policy = %format!("{}/{}", key.0, key.1), error = %e, "a policy change could not be put on record; it is tried again with the next bundle");
    }
    result.is_ok()
}
