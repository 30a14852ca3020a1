//! Chain heads become signed checkpoints: only heads of the caller's own
//! streams, on Connections its identity is bound to, that are events of the
//! batch and move their stream forward from its last signed head (this
//! replica's memory, the Connection's stored checkpoint, the durable history).

use std::collections::BTreeMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use sluice_policy::engine::Identity;

use super::check::foreign;
use super::{IntakeError, LastSigned, MAX_STREAMS, StreamKey};
use crate::catalog::{Catalog, PolicyEntry};
use crate::gateway::token::{GatewayClaims, KeySet};
use crate::wire::{AuditBatch, SignedHead};

/// What a checkpoint's signature covers (see [`SignedHead::signature`]),
/// serialised without an intermediate JSON value. The fields are in the
/// order of their names, as a JSON object's keys were serialised before: the
/// signed bytes are the same.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    connection: &'a str,
    hash: &'a str,
    iat: i64,
    namespace: &'a str,
    pod: &'a str,
    pod_uid: &'a str,
    previous: Option<u64>,
    sequence: u64,
    service_account: &'a str,
    stream: &'a str,
}

/// What signing a batch's heads needs besides the batch.
pub(super) struct Signer<'a> {
    pub(super) catalog: &'a Catalog,
    pub(super) entries: &'a [PolicyEntry],
    pub(super) keys: &'a KeySet,
    pub(super) claims: &'a GatewayClaims,
    pub(super) identity: &'a Identity,
    pub(super) now: &'a Time,
    /// Each stream's last head in the durable history.
    pub(super) floors: &'a BTreeMap<String, (u64, String)>,
}

impl Signer<'_> {
    /// Signs the heads of `batch` in sequence order, remembering each in `signed_last`.
    pub(super) fn sign_heads(
        &self,
        signed_last: &Mutex<BTreeMap<StreamKey, LastSigned>>,
        batch: &AuditBatch,
    ) -> Result<Vec<SignedHead>, IntakeError> {
        let Signer {
            catalog,
            entries,
            keys,
            claims,
            identity,
            now,
            floors,
        } = *self;
        let prefix =
            crate::wire::stream_prefix(&claims.namespace, &claims.service_account, &claims.pod);
        let bound = |connection: &str| {
            entries.iter().any(|e| {
                e.compiled
                    .as_ref()
                    .is_ok_and(|c| c.binds(identity) && c.names_connection(connection))
            })
        };
        let mut heads: Vec<&crate::wire::AuditHead> = batch.heads.iter().collect();
        heads.sort_by_key(|h| h.head.seq);
        let mut history = signed_last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut signed = Vec::with_capacity(heads.len());
        for head in heads {
            let (stream, seq, hash) = (&head.head.stream, head.head.seq, &head.head.hash);
            if !stream.starts_with(&prefix) {
                return Err(foreign(stream, &prefix));
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
                .stored_checkpoint(&claims.namespace, &head.connection)
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
            let payload = Payload {
                connection: &head.connection,
                hash,
                iat: now.0.as_second(),
                namespace: &claims.namespace,
                pod: &claims.pod,
                pod_uid: &claims.pod_uid,
                previous: last.as_ref().map(|(s, _)| *s).filter(|s| *s < seq),
                sequence: seq,
                service_account: &claims.service_account,
                stream,
            };
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
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    /// The checkpoint payload serialises to the bytes the JSON object of
    /// earlier releases did (keys in name order): receipts keep their format.
    #[test]
    fn the_signed_payload_keeps_its_bytes() {
        for previous in [None, Some(6)] {
            let payload = Payload {
                connection: "orders-db",
                hash: "ab12",
                iat: 1_765_000_000,
                namespace: "shop",
                pod: "report-0",
                pod_uid: "uid-0",
                previous,
                sequence: 7,
                service_account: "report-job",
                stream: "sidecar:shop/report-job:report-0:boot",
            };
            let object = json!({
                "namespace": "shop",
                "serviceAccount": "report-job",
                "pod": "report-0",
                "podUid": "uid-0",
                "connection": "orders-db",
                "stream": "sidecar:shop/report-job:report-0:boot",
                "sequence": 7,
                "hash": "ab12",
                "previous": previous,
                "iat": 1_765_000_000,
            });
            assert_eq!(
                String::from_utf8(serde_json::to_vec(&payload).unwrap()).unwrap(),
                String::from_utf8(serde_json::to_vec(&object).unwrap()).unwrap()
            );
        }
    }
}
