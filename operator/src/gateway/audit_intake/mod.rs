//! `POST /v1/audit` (DESIGN §7): audit events from sidecars become AccessPolicy
//! counters and recent denials, and signed chain heads become Connection
//! checkpoints.
//!
//! Every replica takes audit batches and keeps what they add up to in memory;
//! [`AuditIntake::flush`] writes it at a bounded rate (one status patch per
//! touched object per flush, not one per event). The fields written here are
//! fed by sidecars, so they are applied under their own field manager
//! ([`AUDIT_FIELD_MANAGER`]); the controllers own the conditions and never
//! remove what this writes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use sluice_crds::{
    AccessPolicy, Action, AuditCheckpoint, Connection, PolicyCounters, RecentDenial,
};
use sluice_policy::audit::{AuditEvent, AuditKind};
use sluice_policy::engine::Identity;

use crate::catalog::Catalog;
use crate::gateway::checkpoint_history::HistoryEntry;
use crate::gateway::token::{GatewayClaims, KeySet, TokenError};
use crate::wire::{AuditBatch, SignedHead};

/// Field manager of the sidecar-fed status fields.
pub const AUDIT_FIELD_MANAGER: &str = "sluice-operator-audit";
/// Most recent denials kept in an AccessPolicy's status.
pub const RECENT_DENIALS: usize = 5;
/// Most events one batch may carry.
pub const MAX_EVENTS_PER_BATCH: usize = 10_000;
/// Longest command text kept in a recent denial.
const COMMAND_CHARS: usize = 120;

/// Why a batch was refused.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Too many events in one batch.
    #[error("the audit batch has {count} events; send at most {MAX_EVENTS_PER_BATCH} per request")]
    TooLarge {
        /// Events sent.
        count: usize,
    },
    /// An event speaks for another identity than the token.
    #[error(
        "audit event {seq} of stream {stream:?} is for {found}, but the gateway token is for {expected}; a sidecar may only report its own traffic"
    )]
    ForeignIdentity {
        /// Its sequence number.
        seq: u64,
        /// Its stream.
        stream: String,
        /// Identity in the event.
        found: String,
        /// Identity of the token.
        expected: String,
    },
    /// An event or head belongs to another sidecar's stream.
    #[error(
        "stream {stream:?} is not this sidecar's: its streams start with {prefix:?} (identity and pod of the gateway token)"
    )]
    ForeignStream {
        /// The stream named.
        stream: String,
        /// What the caller's streams start with.
        prefix: String,
    },
    /// An uploaded event's hash does not match its content, or the events do not chain.
    #[error("audit event {seq} of stream {stream:?} {what}; the batch was not taken")]
    BrokenChain {
        /// Its stream.
        stream: String,
        /// Its sequence number.
        seq: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// A head names a Connection the identity is not bound to.
    #[error(
        "head of stream {stream:?} names Connection {connection:?}, which no AccessPolicy binds the gateway token's identity to; only heads of bound Connections are signed"
    )]
    UnboundConnection {
        /// The stream.
        stream: String,
        /// The Connection.
        connection: String,
    },
    /// A head is not one of the batch's events.
    #[error(
        "head {seq} of stream {stream:?} on Connection {connection:?} is not an event of this batch (same sequence, hash and Connection); send the events a head covers with it"
    )]
    UnknownHead {
        /// The stream.
        stream: String,
        /// Its sequence number.
        seq: u64,
        /// The Connection.
        connection: String,
    },
    /// A head does not move the stream forward from its last signed head.
    #[error(
        "head {seq} of stream {stream:?} does not move forward from the last signed head {last}; a stream's checkpoints only advance"
    )]
    Rewind {
        /// The stream.
        stream: String,
        /// Its sequence number.
        seq: u64,
        /// The last signed sequence.
        last: u64,
    },
    /// A head could not be signed.
    #[error("could not sign the audit chain head")]
    Sign(#[source] TokenError),
    /// The durable history, which a head must move forward from, could not be read.
    #[error(
        "could not read the checkpoint history {config_map} to check that head {seq} of stream {stream:?} moves forward; nothing was signed or counted, send the batch again"
    )]
    HistoryUnavailable {
        /// `NAMESPACE/NAME` of the history ConfigMap.
        config_map: String,
        /// The stream.
        stream: String,
        /// The head's sequence number.
        seq: u64,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

/// Status patches one flush could not make.
#[derive(Debug, thiserror::Error)]
#[error("could not write audit status of {object}")]
pub struct FlushError {
    /// `accesspolicy NS/NAME` or `connection NS/NAME`.
    pub object: String,
    /// The client's error.
    #[source]
    pub source: kube::Error,
}

#[derive(Default)]
struct Pending {
    counters: BTreeMap<(String, String), PolicyCounters>,
    denials: BTreeMap<(String, String), Vec<RecentDenial>>,
    checkpoints: BTreeMap<(String, String), AuditCheckpoint>,
    activity: BTreeMap<(String, String), Time>,
    /// Checkpoints for the durable history, by (namespace, Connection).
    history: BTreeMap<(String, String), Vec<HistoryEntry>>,
    /// The public keys that signed them, by key ID.
    keys: BTreeMap<String, jsonwebtoken::jwk::Jwk>,
}

/// Most streams whose last signed head a replica remembers; the oldest
/// signed is forgotten first.
pub const MAX_STREAMS: usize = 16_384;

/// Audit batches taken in and not yet written, and the last head signed per stream.
#[derive(Default)]
pub struct AuditIntake {
    pending: Mutex<Pending>,
    signed: Mutex<BTreeMap<StreamKey, LastSigned>>,
    /// The operator's namespace, where the checkpoint history is kept
    /// ([`crate::gateway::checkpoint_history`]); `None` keeps none.
    history_namespace: Option<String>,
}

/// (namespace, stream).
type StreamKey = (String, String);
/// The last head signed for a stream: (sequence, hash, when, in Unix seconds).
type LastSigned = (u64, String, i64);

impl AuditIntake {
    /// An intake that also keeps every signed checkpoint, and the keys that
    /// signed them, in ConfigMaps of `operator_namespace`.
    pub fn with_history(operator_namespace: impl Into<String>) -> Self {
        AuditIntake {
            history_namespace: Some(operator_namespace.into()),
            ..AuditIntake::default()
        }
    }

    /// Takes in `batch` from the sidecar holding `claims`; returns the events
    /// counted and the signed heads. A head of a stream this replica has not
    /// signed (since it started) must also move forward from the stream's last
    /// head in the durable history, read with `client`; if it cannot be read,
    /// nothing is signed or counted (the sidecar sends the batch again).
    pub async fn record(
        &self,
        client: &Client,
        catalog: &Catalog,
        keys: &KeySet,
        claims: &GatewayClaims,
        batch: &AuditBatch,
        now: &Time,
    ) -> Result<(u64, Vec<SignedHead>), IntakeError> {
        if batch.events.len() > MAX_EVENTS_PER_BATCH {
            return Err(IntakeError::TooLarge {
                count: batch.events.len(),
            });
        }
        let floors = match &self.history_namespace {
            Some(operator_namespace) => {
                // Only heads that may be signed at all cost a read (refused below otherwise).
                let prefix = crate::wire::stream_prefix(
                    &claims.namespace,
                    &claims.service_account,
                    &claims.pod,
                );
                let remembered = |stream: &str| {
                    self.signed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .contains_key(&(claims.namespace.clone(), stream.to_string()))
                };
                crate::gateway::checkpoint_history::stream_floors(
                    client,
                    operator_namespace,
                    &claims.namespace,
                    batch
                        .heads
                        .iter()
                        .filter(|h| {
                            h.head.stream.starts_with(&prefix) && !remembered(&h.head.stream)
                        })
                        .take(MAX_EVENTS_PER_BATCH),
                    |connection| self.may_sign(catalog, claims, connection),
                )
                .await
                .map_err(|(config_map, head, source)| {
                    IntakeError::HistoryUnavailable {
                        config_map,
                        stream: head.head.stream.clone(),
                        seq: head.head.seq,
                        source,
                    }
                })?
            }
            None => BTreeMap::new(),
        };
        self.record_with_floors(catalog, keys, claims, batch, now, &floors)
    }

    /// Whether a head on `connection` can be signed for `claims` at all
    /// (the Connection is bound): only those are worth reading history for.
    fn may_sign(&self, catalog: &Catalog, claims: &GatewayClaims, connection: &str) -> bool {
        let identity = Identity {
            namespace: claims.namespace.clone(),
            service_account: claims.service_account.clone(),
            groups: claims.groups.clone(),
            pod: Some(claims.pod.clone()),
        };
        catalog.compiled_in(&claims.namespace).iter().any(|e| {
            e.compiled
                .as_ref()
                .is_ok_and(|c| c.binds(&identity) && c.names_connection(connection))
        })
    }

    /// [`AuditIntake::record`] with each stream's last head in the durable
    /// history (`floors`, by stream) already read.
    fn record_with_floors(
        &self,
        catalog: &Catalog,
        keys: &KeySet,
        claims: &GatewayClaims,
        batch: &AuditBatch,
        now: &Time,
        floors: &BTreeMap<String, (u64, String)>,
    ) -> Result<(u64, Vec<SignedHead>), IntakeError> {
        if batch.events.len() > MAX_EVENTS_PER_BATCH {
            return Err(IntakeError::TooLarge {
                count: batch.events.len(),
            });
        }
        let expected = format!("{}/{}", claims.namespace, claims.service_account);
        let prefix =
            crate::wire::stream_prefix(&claims.namespace, &claims.service_account, &claims.pod);
        let foreign = |stream: &str| IntakeError::ForeignStream {
            stream: stream.to_string(),
            prefix: prefix.clone(),
        };
        // Each stream's events, in the batch's order, must chain.
        let mut last_of: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
        for event in &batch.events {
            if let Some(identity) = &event.identity {
                let found = format!("{}/{}", identity.namespace, identity.service_account);
                if found != expected {
                    return Err(IntakeError::ForeignIdentity {
                        seq: event.seq,
                        stream: event.stream.clone(),
                        found,
                        expected,
                    });
                }
            }
            if !event.stream.starts_with(&prefix) {
                return Err(foreign(&event.stream));
            }
            let broken = |what| IntakeError::BrokenChain {
                stream: event.stream.clone(),
                seq: event.seq,
                what,
            };
            if !event.hash_matches() {
                return Err(broken("has a hash that does not match its content"));
            }
            if let Some((seq, hash)) = last_of.get(event.stream.as_str()) {
                if event.seq <= *seq {
                    return Err(broken("does not come after the batch's previous event"));
                }
                if event.seq == seq + 1 && event.prev != *hash {
                    return Err(broken("does not chain to the batch's previous event"));
                }
            }
            last_of.insert(&event.stream, (event.seq, &event.hash));
        }
        let identity = Identity {
            namespace: claims.namespace.clone(),
            service_account: claims.service_account.clone(),
            groups: claims.groups.clone(),
            pod: Some(claims.pod.clone()),
        };
        let entries = catalog.compiled_in(&claims.namespace);
        let bound = |connection: &str| {
            entries.iter().any(|e| {
                e.compiled
                    .as_ref()
                    .is_ok_and(|c| c.binds(&identity) && c.names_connection(connection))
            })
        };
        let mut heads: Vec<&crate::wire::AuditHead> = batch.heads.iter().collect();
        heads.sort_by_key(|h| h.head.seq);
        let mut history = self
            .signed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut signed = Vec::with_capacity(heads.len());
        for head in heads {
            let (stream, seq, hash) = (&head.head.stream, head.head.seq, &head.head.hash);
            if !stream.starts_with(&prefix) {
                return Err(foreign(stream));
            }
            if !bound(&head.connection) {
                return Err(IntakeError::UnboundConnection {
                    stream: stream.clone(),
                    connection: head.connection.clone(),
                });
            }
            let uploaded = batch.events.iter().any(|e| {
                e.stream == *stream
                    && e.seq == seq
                    && e.hash == *hash
                    && e.connection.as_deref() == Some(head.connection.as_str())
            });
            if !uploaded {
                return Err(IntakeError::UnknownHead {
                    stream: stream.clone(),
                    seq,
                    connection: head.connection.clone(),
                });
            }
            let key = (claims.namespace.clone(), stream.clone());
            // The Connection's stored checkpoint is a floor every replica shares.
            let stored = catalog
                .connections_in(&claims.namespace)
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(head.connection.as_str()))
                .and_then(|c| c.status.as_ref()?.audit_checkpoint.clone())
                .filter(|c| c.stream == *stream)
                .map(|c| (c.sequence, c.hash));
            // So is the stream's last head in the durable history.
            let last = history
                .get(&key)
                .map(|(s, h, _)| (*s, h.clone()))
                .into_iter()
                .chain(stored)
                .chain(floors.get(stream).cloned())
                .max_by_key(|(s, _)| *s);
            if let Some((last_seq, last_hash)) = &last {
                // The same head again (a receipt lost on the way) is signed again.
                let repeat = *last_seq == seq && last_hash == hash;
                if seq < *last_seq || (seq == *last_seq && !repeat) {
                    return Err(IntakeError::Rewind {
                        stream: stream.clone(),
                        seq,
                        last: *last_seq,
                    });
                }
            }
            let payload = json!({
                "namespace": claims.namespace,
                "serviceAccount": claims.service_account,
                "pod": claims.pod,
                "podUid": claims.pod_uid,
                "connection": head.connection,
                "stream": stream,
                "sequence": seq,
                "hash": hash,
                "previous": last.as_ref().map(|(s, _)| *s).filter(|s| *s < seq),
                "iat": now.0.as_second(),
            });
            let (signature, key_id) = keys.sign_payload(&payload).map_err(IntakeError::Sign)?;
            history.insert(key, (seq, hash.clone(), now.0.as_second()));
            if history.len() > MAX_STREAMS
                && let Some(oldest) = history
                    .iter()
                    .min_by_key(|(_, (_, _, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                history.remove(&oldest);
            }
            signed.push(SignedHead {
                connection: head.connection.clone(),
                stream: stream.clone(),
                sequence: seq,
                hash: hash.clone(),
                signature,
                key_id,
                identity: claims.sub.clone(),
                pod: claims.pod.clone(),
            });
        }
        drop(history);

        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for event in &batch.events {
            count(&mut pending, catalog, &identity, event);
            if let Some(connection) = &event.connection {
                pending
                    .activity
                    .insert((claims.namespace.clone(), connection.clone()), now.clone());
            }
        }
        if self.history_namespace.is_some() {
            record_history(&mut pending, keys, &claims.namespace, &signed, now);
        }
        for head in &signed {
            pending.checkpoints.insert(
                (claims.namespace.clone(), head.connection.clone()),
                AuditCheckpoint {
                    stream: head.stream.clone(),
                    sequence: head.sequence,
                    hash: head.hash.clone(),
                    signature: head.signature.clone(),
                    key_id: head.key_id.clone(),
                    time: now.clone(),
                },
            );
        }
        Ok((batch.events.len() as u64, signed))
    }

    /// Writes what was taken in since the last flush into the objects' status,
    /// adding to the counters stored there. What cannot be written is kept for
    /// the next flush.
    pub async fn flush(&self, client: &Client) -> Result<(), FlushError> {
        let taken = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut first_error = None;
        let mut keep = Pending::default();
        if let Some(operator_namespace) = &self.history_namespace {
            // Keys first: a checkpoint whose key is not published cannot be checked.
            let keys: Vec<_> = taken.keys.values().cloned().collect();
            let published = keys.is_empty()
                || match crate::gateway::checkpoint_history::publish_keys(
                    client,
                    operator_namespace,
                    &keys,
                )
                .await
                {
                    Ok(()) => true,
                    Err(source) => {
                        first_error.get_or_insert(FlushError {
                            object: format!(
                                "configmap {operator_namespace}/{}",
                                crate::gateway::checkpoint_history::KEYS_CONFIG_MAP
                            ),
                            source,
                        });
                        false
                    }
                };
            if !published {
                keep.keys = taken.keys.clone();
            }
            for ((namespace, connection), entries) in &taken.history {
                let written = published
                    && match crate::gateway::checkpoint_history::append(
                        client,
                        operator_namespace,
                        namespace,
                        connection,
                        entries,
                    )
                    .await
                    {
                        Ok(()) => true,
                        Err(source) => {
                            first_error.get_or_insert(FlushError {
                                object: format!(
                                    "configmap {operator_namespace}/{}",
                                    crate::gateway::checkpoint_history::history_name(
                                        namespace, connection
                                    )
                                ),
                                source,
                            });
                            false
                        }
                    };
                if !written {
                    keep.history
                        .insert((namespace.clone(), connection.clone()), entries.clone());
                }
            }
        }
        let policy_keys: std::collections::BTreeSet<(String, String)> = taken
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
                keep.counters.insert(key.clone(), add);
                keep.denials.insert(key.clone(), denials);
                first_error.get_or_insert(FlushError {
                    object: format!("accesspolicy {}/{}", key.0, key.1),
                    source,
                });
            }
        }
        let connection_keys: std::collections::BTreeSet<(String, String)> = taken
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
                    keep.checkpoints.insert(key.clone(), c.clone());
                }
                first_error.get_or_insert(FlushError {
                    object: format!("connection {}/{}", key.0, key.1),
                    source,
                });
            }
        }
        if !keep.counters.is_empty()
            || !keep.checkpoints.is_empty()
            || !keep.history.is_empty()
            || !keep.keys.is_empty()
        {
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
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Adds `signed` to the pending history, with the public keys that signed them.
fn record_history(
    pending: &mut Pending,
    keys: &KeySet,
    namespace: &str,
    signed: &[SignedHead],
    now: &Time,
) {
    if signed.is_empty() {
        return;
    }
    let jwks = keys.jwks();
    for head in signed {
        if let Some(jwk) = jwks
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(head.key_id.as_str()))
        {
            pending
                .keys
                .entry(head.key_id.clone())
                .or_insert_with(|| jwk.clone());
        }
        let list = pending
            .history
            .entry((namespace.to_string(), head.connection.clone()))
            .or_default();
        list.push(HistoryEntry {
            head: head.clone(),
            namespace: namespace.to_string(),
            time: now.0.to_string(),
        });
        bound_pending(list);
    }
}

/// A Connection's checkpoints waiting for a flush are bounded like its history.
fn bound_pending(list: &mut Vec<HistoryEntry>) {
    let excess = list
        .len()
        .saturating_sub(crate::gateway::checkpoint_history::MAX_LINES);
    list.drain(..excess);
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

fn add_counters(into: &mut PolicyCounters, add: &PolicyCounters) {
    into.allowed += add.allowed;
    into.denied += add.denied;
    into.masked += add.masked;
    into.approvals_requested += add.approvals_requested;
    into.approvals_granted += add.approvals_granted;
    into.approvals_denied += add.approvals_denied;
}

/// Adds one event to the pending counters of the policy that decided it.
/// Masked values are reported on result events, which name no policy: they
/// count for every applicable policy that masks.
fn count(pending: &mut Pending, catalog: &Catalog, identity: &Identity, event: &AuditEvent) {
    let ns = identity.namespace.clone();
    // Only policies that bind the uploader (to the event's Connection) can
    // have decided its traffic: anything else named is not counted.
    let entries = catalog.compiled_in(&identity.namespace);
    let policy = event
        .decision
        .as_ref()
        .and_then(|d| d.policy.clone())
        .filter(|name| {
            entries.iter().any(|e| {
                e.compiled.as_ref().is_ok_and(|c| {
                    c.name == *name
                        && c.binds(identity)
                        && event
                            .connection
                            .as_deref()
                            .is_none_or(|conn| c.names_connection(conn))
                })
            })
        });
    match (event.kind, &event.decision, policy) {
        (AuditKind::Statement, Some(decision), Some(policy)) => {
            let c = pending.counters.entry((ns, policy)).or_default();
            match decision.action {
                Action::Allow => c.allowed += 1,
                Action::Deny => c.denied += 1,
                Action::RequireApproval => c.approvals_requested += 1,
            }
        }
        (AuditKind::Denial, Some(decision), Some(policy)) => {
            let key = (ns, policy);
            pending.counters.entry(key.clone()).or_default().denied += 1;
            let denial = RecentDenial {
                time: parse_time(&event.time),
                subject: identity.subject(),
                connection: event.connection.clone().unwrap_or_default(),
                rule: decision.rule.clone().unwrap_or_default(),
                command: event
                    .command
                    .as_ref()
                    .map(|c| c.text.chars().take(COMMAND_CHARS).collect())
                    .unwrap_or_default(),
            };
            let list = pending.denials.entry(key).or_default();
            list.insert(0, denial);
            list.truncate(RECENT_DENIALS);
        }
        (AuditKind::Approval, _, policy) => {
            if let (Some(approval), Some(policy)) = (&event.approval, policy) {
                let c = pending.counters.entry((ns, policy)).or_default();
                match approval.phase {
                    sluice_crds::RequestPhase::Approved => c.approvals_granted += 1,
                    sluice_crds::RequestPhase::Denied | sluice_crds::RequestPhase::Expired => {
                        c.approvals_denied += 1
                    }
                    _ => {}
                }
            }
        }
        (AuditKind::Result | AuditKind::Mask, _, _) => {
            let masked = event.outcome.as_ref().and_then(|o| o.masked).unwrap_or(0);
            let Some(connection) = &event.connection else {
                return;
            };
            if masked == 0 {
                return;
            }
            for entry in entries {
                if let Ok(compiled) = &entry.compiled
                    && compiled.binds(identity)
                    && compiled.names_connection(connection)
                    && !entry.policy.spec.masking.is_empty()
                {
                    pending
                        .counters
                        .entry((ns.clone(), compiled.name.clone()))
                        .or_default()
                        .masked += masked;
                }
            }
        }
        _ => {}
    }
}

fn parse_time(text: &str) -> Time {
    text.parse::<k8s_openapi::jiff::Timestamp>()
        .map(Time)
        .unwrap_or_else(|_| Time(k8s_openapi::jiff::Timestamp::now()))
}
