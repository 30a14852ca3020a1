//! What a taken batch adds up to: policy counters and recent denials, the
//! Connections' activity and checkpoints, and the history to write.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sluice_crds::{Action, AuditCheckpoint, RecentDenial};
use sluice_policy::audit::{AuditEvent, AuditKind};
use sluice_policy::engine::Identity;

use super::{COMMAND_CHARS, Pending, RECENT_DENIALS};
use crate::catalog::PolicyEntry;
use crate::gateway::checkpoint_history::HistoryEntry;
use crate::gateway::token::{GatewayClaims, KeySet};
use crate::wire::{AuditBatch, SignedHead};

/// The last event counted per (namespace, stream), and when.
#[derive(Default)]
pub(super) struct LastCounted(HashMap<(String, String), (u64, i64)>);

impl LastCounted {
    /// Whether `event` comes after the last event counted of its stream
    /// (and remembers it as the last). Events of one stream are uploaded in
    /// order (the batch check refuses any other), so an event at or below
    /// the last counted one was counted already: its batch is a repeat.
    fn first_time(&mut self, namespace: &str, event: &AuditEvent, now: &Time) -> bool {
        let key = (namespace.to_string(), event.stream.clone());
        if self.0.get(&key).is_some_and(|(seq, _)| event.seq <= *seq) {
            return false;
        }
        self.0.insert(key, (event.seq, now.0.as_second()));
        if self.0.len() > super::MAX_STREAMS
            && let Some(oldest) = self
                .0
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            self.0.remove(&oldest);
        }
        true
    }
}

/// Adds `batch` (its heads `signed`) from the sidecar holding `claims` to
/// `pending`; `entries` are its namespace's policies, compiled once for the
/// whole batch.
#[allow(clippy::too_many_arguments)]
pub(super) fn tally(
    pending: &mut Pending,
    last_counted: &mut LastCounted,
    entries: &[PolicyEntry],
    identity: &Identity,
    claims: &GatewayClaims,
    batch: &AuditBatch,
    signed: &[SignedHead],
    keys: Option<&KeySet>,
    now: &Time,
) {
    for event in &batch.events {
        if !last_counted.first_time(&claims.namespace, event, now) {
            continue;
        }
        count(pending, entries, identity, event);
        if let Some(connection) = &event.connection {
            pending
                .activity
                .insert((claims.namespace.clone(), connection.clone()), now.clone());
        }
    }
    if let Some(keys) = keys {
        record_history(pending, keys, &claims.namespace, signed, now);
    }
    for head in signed {
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
}

/// Adds `signed` to the pending history, with the public keys that signed them.
pub(super) fn record_history(
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
pub(super) fn bound_pending(list: &mut Vec<HistoryEntry>) {
    let excess = list
        .len()
        .saturating_sub(crate::gateway::checkpoint_history::MAX_LINES);
    list.drain(..excess);
}

/// Adds one event to the pending counters of the policy that decided it.
/// Masked values are reported on result events, which name no policy: they
/// count for every applicable policy that masks.
fn count(pending: &mut Pending, entries: &[PolicyEntry], identity: &Identity, event: &AuditEvent) {
    let ns = identity.namespace.clone();
    // Only policies that bind the uploader (to the event's Connection) can
    // have decided its traffic: anything else named is not counted.
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
            let c = pending.counters.entry((ns.clone(), policy)).or_default();
            match decision.action {
                Action::Allow => c.allowed += 1,
                Action::Deny => c.denied += 1,
                Action::RequireApproval => c.approvals_requested += 1,
            }
        }
        (AuditKind::Denial, Some(decision), Some(policy)) => {
            let key = (ns.clone(), policy);
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
                let c = pending.counters.entry((ns.clone(), policy)).or_default();
                match approval.phase {
                    sluice_crds::RequestPhase::Approved => c.approvals_granted += 1,
                    sluice_crds::RequestPhase::Denied | sluice_crds::RequestPhase::Expired => {
                        c.approvals_denied += 1
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    // Masked values: on result events, and on a batched `statement` event
    // that carries its result's outcome (decision and result in one).
    if matches!(
        event.kind,
        AuditKind::Result | AuditKind::Mask | AuditKind::Statement
    ) {
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
}

fn parse_time(text: &str) -> Time {
    text.parse::<k8s_openapi::jiff::Timestamp>()
        .map(Time)
        .unwrap_or_else(|_| Time(k8s_openapi::jiff::Timestamp::now()))
}
