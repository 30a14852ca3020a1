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

mod check;
mod count;
mod floors;
mod flush;
mod history;
mod sign;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use sluice_crds::{AuditCheckpoint, PolicyCounters, RecentDenial};
use sluice_policy::engine::Identity;

use crate::catalog::{Catalog, PolicyEntry};
use crate::gateway::checkpoint_history::HistoryEntry;
use crate::gateway::token::{GatewayClaims, KeySet, TokenError};
use crate::wire::{AuditBatch, AuditHead, SignedHead};

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
        /// The client's error (shared by the uploads that waited for the same read).
        #[source]
        source: Arc<kube::Error>,
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

/// Most streams whose last head a replica remembers; the one taken longest
/// ago is forgotten first.
pub const MAX_STREAMS: usize = 16_384;

/// How often a stream's head is signed when it is sent (#25: one ES256
/// signature per upload was the largest single cost of taking a batch): a
/// head is signed at once when its stream has no head waiting and none was
/// signed by this replica in the last `SIGN_EVERY_SECONDS`; any other head
/// is taken, acknowledged unsigned ([`crate::wire::AuditReceipt::acknowledged`])
/// and signed by the next flush, which hands the signature back in the
/// stream's next receipt and writes it into the history as before.
pub const SIGN_EVERY_SECONDS: i64 = 10;

/// Audit batches taken in and not yet written, and the last head signed per stream.
#[derive(Default)]
pub struct AuditIntake {
    pending: Mutex<Pending>,
    signed: Mutex<BTreeMap<StreamKey, sign::StreamHeads>>,
    /// The last event counted per stream: a batch sent again (its receipt
    /// was lost, the upload timed out) is taken but not counted twice.
    counted: Mutex<count::LastCounted>,
    /// The operator's namespace, where the checkpoint history is kept
    /// ([`crate::gateway::checkpoint_history`]); `None` keeps none.
    history_namespace: Option<String>,
    /// Reads of that history, shared by the uploads waiting for them.
    history_reads: floors::HistoryReads,
    /// The histories as this replica last wrote them (flushes append
    /// without reading them back).
    histories: history::HeldHistories,
    /// Set when counters came in that should not wait for the next periodic
    /// flush ([`AuditIntake::add_counters`]).
    flush_soon: tokio::sync::Notify,
}

/// (namespace, stream).
type StreamKey = (String, String);

impl AuditIntake {
    /// An intake that also keeps every signed checkpoint, and the keys that
    /// signed them, in ConfigMaps of `operator_namespace`.
    pub fn with_history(operator_namespace: impl Into<String>) -> Self {
        AuditIntake {
            history_namespace: Some(operator_namespace.into()),
            ..AuditIntake::default()
        }
    }

    /// Adds `add` to the pending counters of AccessPolicy
    /// `namespace/policy` (the approval counters, [`crate::approvals::tally`])
    /// and asks for a flush soon ([`AuditIntake::flush_requested`]): they
    /// are written like the audit counters — read, add, write under the
    /// resourceVersion read, kept and tried again when a write fails, and
    /// written by the drain.
    pub fn add_counters(&self, namespace: &str, policy: &str, add: &PolicyCounters) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        count::add_counters(
            pending
                .counters
                .entry((namespace.to_string(), policy.to_string()))
                .or_default(),
            add,
        );
        drop(pending);
        self.flush_soon.notify_one();
    }

    /// Returns once counters that should not wait for the next periodic
    /// flush came in (at once when some came in since the last call).
    pub async fn flush_requested(&self) {
        self.flush_soon.notified().await;
    }

    /// Takes in `batch` from the sidecar holding `claims`; returns the events
    /// counted, the heads signed and those whose signature waits for the
    /// flush ([`SIGN_EVERY_SECONDS`]). A head of a stream this replica has not
    /// signed (since it started) must also move forward from the stream's last
    /// head in the durable history, read with `client`; if it cannot be read,
    /// nothing is signed or counted (the sidecar sends the batch again).
    pub async fn record(
        &self,
        client: &Client,
        caller: &Caller<'_>,
        batch: &AuditBatch,
    ) -> Result<Taken, IntakeError> {
        let Caller {
            catalog,
            entries,
            keys,
            claims,
            now,
        } = *caller;
        if batch.events.len() > MAX_EVENTS_PER_BATCH {
            return Err(IntakeError::TooLarge {
                count: batch.events.len(),
            });
        }
        let identity = identity_of(claims);
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
                self.history_floors(
                    client,
                    operator_namespace,
                    claims,
                    batch
                        .heads
                        .iter()
                        .filter(|h| {
                            h.head.stream.starts_with(&prefix) && !remembered(&h.head.stream)
                        })
                        .take(MAX_EVENTS_PER_BATCH),
                    |connection| may_sign(entries, &identity, connection),
                )
                .await?
            }
            None => BTreeMap::new(),
        };
        let signer = sign::Signer {
            catalog,
            entries,
            keys,
            claims,
            identity: &identity,
            now,
            floors: &floors,
        };
        self.record_with_floors(&signer, batch)
    }

    /// [`AuditIntake::record`] with each stream's last head in the durable
    /// history (`signer.floors`, by stream) already read.
    fn record_with_floors(
        &self,
        signer: &sign::Signer<'_>,
        batch: &AuditBatch,
    ) -> Result<Taken, IntakeError> {
        if batch.events.len() > MAX_EVENTS_PER_BATCH {
            return Err(IntakeError::TooLarge {
                count: batch.events.len(),
            });
        }
        check::check_events(signer.claims, batch)?;
        let heads = signer.sign_heads(&self.signed, batch)?;
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut counted = self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        count::tally(
            &mut pending,
            &mut counted,
            signer.entries,
            signer.identity,
            signer.claims,
            batch,
            &heads.signed,
            self.history_namespace.as_ref().map(|_| &**signer.keys),
            signer.now,
        );
        drop(counted);
        drop(pending);
        let mut checkpoints = heads.delivered;
        checkpoints.extend(heads.signed);
        Ok(Taken {
            accepted: batch.events.len() as u64,
            checkpoints,
            acknowledged: heads.acknowledged,
        })
    }
}

/// What [`AuditIntake::record`] took of a batch.
#[derive(Debug)]
pub struct Taken {
    /// Events taken into the counters.
    pub accepted: u64,
    /// Signed checkpoints for the caller: the heads of the batch signed now,
    /// after those of its streams signed by a flush since its last upload.
    pub checkpoints: Vec<SignedHead>,
    /// The batch's heads taken but not signed yet (the next flush signs them).
    pub acknowledged: Vec<AuditHead>,
}

/// Who sent a batch, and what taking it needs.
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    /// The watched objects (Connections' stored checkpoints).
    pub catalog: &'a Catalog,
    /// The caller's namespace's policies, compiled.
    pub entries: &'a [PolicyEntry],
    /// The keys heads are signed with (kept by a head whose signature waits
    /// for the flush).
    pub keys: &'a Arc<KeySet>,
    /// The caller's gateway token.
    pub claims: &'a GatewayClaims,
    /// The time of the intake.
    pub now: &'a Time,
}

/// The identity a gateway token speaks for.
fn identity_of(claims: &GatewayClaims) -> Identity {
    Identity {
        namespace: claims.namespace.clone(),
        service_account: claims.service_account.clone(),
        groups: claims.groups.clone(),
        pod: Some(claims.pod.clone()),
    }
}

/// Whether a head on `connection` can be signed for `identity` at all (the
/// Connection is bound): only those are worth reading history for.
fn may_sign(entries: &[PolicyEntry], identity: &Identity, connection: &str) -> bool {
    entries.iter().any(|e| {
        e.compiled
            .as_ref()
            .is_ok_and(|c| c.binds(identity) && c.names_connection(connection))
    })
}
