//! The batch itself: every event speaks for the token's identity, belongs to
//! one of its sidecar's streams, has the hash of its content, and chains to
//! the batch's previous event of its stream.

use std::collections::BTreeMap;

use super::IntakeError;
use crate::gateway::token::GatewayClaims;
use crate::wire::AuditBatch;

/// Checks the events of `batch` from the sidecar holding `claims`.
pub(super) fn check_events(claims: &GatewayClaims, batch: &AuditBatch) -> Result<(), IntakeError> {
    let prefix =
        crate::wire::stream_prefix(&claims.namespace, &claims.service_account, &claims.pod);
    // Each stream's events, in the batch's order, must chain.
    let mut last_of: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    for event in &batch.events {
        // Compared field by field: the texts are made only for a refusal.
        if let Some(identity) = &event.identity
            && (identity.namespace != claims.namespace
                || identity.service_account != claims.service_account)
        {
            return Err(IntakeError::ForeignIdentity {
                seq: event.seq,
                stream: event.stream.clone(),
                found: format!("{}/{}", identity.namespace, identity.service_account),
                expected: format!("{}/{}", claims.namespace, claims.service_account),
            });
        }
        if !event.stream.starts_with(&prefix) {
            return Err(foreign(&event.stream, &prefix));
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
    Ok(())
}

/// The refusal of a stream that is not the caller's.
pub(super) fn foreign(stream: &str, prefix: &str) -> IntakeError {
    IntakeError::ForeignStream {
        stream: stream.to_string(),
        prefix: prefix.to_string(),
    }
}
