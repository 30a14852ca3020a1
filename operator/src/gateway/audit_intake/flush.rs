//! [`AuditIntake::flush`]: what was taken in since the last flush is written
//! into the objects' status (and the checkpoint history), one write per
//! touched object; what cannot be written is kept for the next flush.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use sluice_crds::{AccessPolicy, Connection, PolicyCounters, RecentDenial};

use super::count::{add_counters, bound_pending};
use super::history::HeldHistories;
use super::{AUDIT_FIELD_MANAGER, AuditIntake, FlushError, Pending, RECENT_DENIALS};
use crate::gateway::checkpoint_history;

impl AuditIntake {
    /// Writes what was taken in since the last flush into the objects' status,
    /// adding to the counters stored there. What cannot be written is kept for
    /// the next flush.
    pub async fn flush(&self, client: &Client) -> Result<(), FlushError> {
        let mut taken = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        // Heads taken since their stream's last signature are signed now,
        // before the history and the status slots are written.
        self.sign_waiting(&mut taken, &Time(k8s_openapi::jiff::Timestamp::now()));
        // Cut in bulk while taken in (count::record_history): cut exactly here.
        for list in taken.history.values_mut() {
            bound_pending(list);
        }
        let mut out = Outcome::default();
        if let Some(operator_namespace) = &self.history_namespace {
            flush_history(
                &self.histories,
                client,
                operator_namespace,
                &taken,
                &mut out,
            )
            .await;
        }
        flush_policies(client, &taken, &mut out).await;
        flush_connections(client, &taken, &mut out).await;
        self.requeue(out.keep);
        match out.first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Puts back what a flush could not write, in front of what came in since.
    fn requeue(&self, keep: Pending) {
        if keep.counters.is_empty()
            && keep.checkpoints.is_empty()
            && keep.history.is_empty()
            && keep.keys.is_empty()
        {
            return;
        }
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (k, v) in keep.counters {
            add_counters(pending.counters.entry(k).or_default(), &v);
        }
        for (k, mut v) in keep.denials {
            let entry = pending.denials.entry(k).or_default();
            entry.append(&mut v);
            entry.truncate(RECENT_DENIALS);
        }
        for (k, v) in keep.checkpoints {
            pending.checkpoints.entry(k).or_insert(v);
        }
        for (k, mut v) in keep.history {
            // Older than what came in since: in front.
            let entry = pending.history.entry(k).or_default();
            v.append(entry);
            bound_pending(&mut v);
            *entry = v;
        }
        for (k, v) in keep.keys {
            pending.keys.entry(k).or_insert(v);
        }
    }
}

/// What a flush could not write, and its first error.
#[derive(Default)]
struct Outcome {
    keep: Pending,
    first_error: Option<FlushError>,
}

impl Outcome {
    fn failed(&mut self, object: String, source: kube::Error) {
        self.first_error
            .get_or_insert(FlushError { object, source });
    }
}

/// The signing keys first (a checkpoint whose key is not published cannot be
/// checked), then each Connection's new checkpoints.
async fn flush_history(
    histories: &HeldHistories,
    client: &Client,
    operator_namespace: &str,
    taken: &Pending,
    out: &mut Outcome,
) {
    let keys: Vec<_> = taken.keys.values().cloned().collect();
    let published = keys.is_empty()
        || match checkpoint_history::publish_keys(client, operator_namespace, &keys).await {
            Ok(()) => true,
            Err(source) => {
                out.failed(
                    format!(
                        "configmap {operator_namespace}/{}",
                        checkpoint_history::KEYS_CONFIG_MAP
                    ),
                    source,
                );
                false
            }
        };
    if !published {
        out.keep.keys = taken.keys.clone();
    }
    for (key, entries) in &taken.history {
        let (namespace, connection) = key;
        let written = published
            && match histories
                .append(client, operator_namespace, key, entries)
                .await
            {
                Ok(()) => true,
                Err(source) => {
                    out.failed(
                        format!(
                            "configmap {operator_namespace}/{}",
                            checkpoint_history::history_name(namespace, connection)
                        ),
                        source,
                    );
                    false
                }
            };
        if !written {
            out.keep.history.insert(key.clone(), entries.clone());
        }
    }
}

/// Each touched AccessPolicy's counters and recent denials.
async fn flush_policies(client: &Client, taken: &Pending, out: &mut Outcome) {
    let policy_keys: BTreeSet<(String, String)> = taken
        .counters
        .keys()
        .chain(taken.denials.keys())
        .cloned()
        .collect();
    for key in policy_keys {
        let add = taken.counters.get(&key).cloned().unwrap_or_default();
        let denials = taken.denials.get(&key).cloned().unwrap_or_default();
        if let Err(source) = write_policy(client, &key, &add, &denials).await
            && !is_not_found(&source)
        {
            out.keep.counters.insert(key.clone(), add);
            out.keep.denials.insert(key.clone(), denials);
            out.failed(format!("accesspolicy {}/{}", key.0, key.1), source);
        }
    }
}

/// Each touched Connection's checkpoint and last activity.
async fn flush_connections(client: &Client, taken: &Pending, out: &mut Outcome) {
    let connection_keys: BTreeSet<(String, String)> = taken
        .checkpoints
        .keys()
        .chain(taken.activity.keys())
        .cloned()
        .collect();
    for key in connection_keys {
        let checkpoint = taken.checkpoints.get(&key);
        let activity = taken.activity.get(&key);
        let mut status = json!({});
        if let Some(c) = checkpoint {
            status["auditCheckpoint"] = json!(c);
        }
        if let Some(t) = activity {
            status["lastActivityTime"] = json!(t);
        }
        let body = json!({
            "apiVersion": sluice_crds::API_VERSION,
            "kind": "Connection",
            "status": status,
        });
        let api: Api<Connection> = Api::namespaced(client.clone(), &key.0);
        if let Err(source) = api
            .patch_status(
                &key.1,
                &PatchParams::apply(AUDIT_FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
            && !is_not_found(&source)
        {
            if let Some(c) = checkpoint {
                out.keep.checkpoints.insert(key.clone(), c.clone());
            }
            out.failed(format!("connection {}/{}", key.0, key.1), source);
        }
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 404)
}

/// Reads the policy, adds, and applies with the resourceVersion read, so two
/// replicas flushing at once cannot lose each other's counts (one gets a conflict and retries next flush).
async fn write_policy(
    client: &Client,
    (namespace, name): &(String, String),
    add: &PolicyCounters,
    denials: &[RecentDenial],
) -> Result<(), kube::Error> {
    let api: Api<AccessPolicy> = Api::namespaced(client.clone(), namespace);
    let current = api.get_status(name).await?;
    let status = current.status.unwrap_or_default();
    let mut counters = status.counters.unwrap_or_default();
    add_counters(&mut counters, add);
    let mut recent: Vec<RecentDenial> = denials.to_vec();
    recent.extend(status.recent_denials);
    recent.truncate(RECENT_DENIALS);
    let body = json!({
        "apiVersion": sluice_crds::API_VERSION,
        "kind": "AccessPolicy",
        "metadata": {"resourceVersion": current.metadata.resource_version},
        "status": {"counters": counters, "recentDenials": recent},
    });
    api.patch_status(
        name,
        &PatchParams::apply(AUDIT_FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(())
}
