//! What a taken batch adds up to: policy counters and recent denials, the
//! Connections' activity and checkpoints, and the history to write.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sluice_crds::{Action, AuditCheckpoint, PolicyCounters, RecentDenial};
use sluice_policy::audit::{AuditEvent, AuditKind};
use sluice_policy::engine::Identity;

use super::{COMMAND_CHARS, Pending, RECENT_DENIALS};
use crate::catalog::PolicyEntry;
use crate::gateway::checkpoint_history::HistoryEntry;
use crate::gateway::token::{GatewayClaims, KeySet};
use crate::wire::{AuditBatch, SignedHead};

/// The last event counted per stream, and when. A stream's name starts with
/// its sidecar's namespace, service account and pod
/// ([`crate::wire::stream_prefix`], checked before anything is counted), so
/// the name alone tells streams of different namespaces apart.
#[derive(Default)]
pub(super) struct LastCounted(HashMap<String, (u64, i64)>);

impl LastCounted {
    /// Whether `event` comes after the last event counted of its stream
    /// (and remembers it as the last). Events of one stream are uploaded in
    /// order (the batch check refuses any other), so an event at or below
    /// the last counted one was counted already: its batch is a repeat.
    fn first_time(&mut self, event: &AuditEvent, now: &Time) -> bool {
        // A known stream is updated in place: no key is made per event.
        if let Some((seq, at)) = self.0.get_mut(event.stream.as_str()) {
            if event.seq <= *seq {
                return false;
            }
            (*seq, *at) = (event.seq, now.0.as_second());
            return true;
        }
        self.0
            .insert(event.stream.clone(), (event.seq, now.0.as_second()));
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
    // The Connections the batch's counted events used, each once.
    let mut active: Vec<&str> = Vec::new();
    let mut counts = BatchCounts::default();
    for event in &batch.events {
        if !last_counted.first_time(event, now) {
            continue;
        }
        count(&mut counts, entries, identity, event);
        if let Some(connection) = event.connection.as_deref()
            && !active.contains(&connection)
        {
            active.push(connection);
        }
    }
    counts.add_to(pending, &claims.namespace);
    for connection in active {
        pending.activity.insert(
            (claims.namespace.clone(), connection.to_string()),
            now.clone(),
        );
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
    for head in signed {
        // The key is copied once per flush, not the key set per batch.
        if !pending.keys.contains_key(&head.key_id)
            && let Some(key) = keys.keys().iter().find(|k| k.kid() == head.key_id)
        {
            pending.keys.insert(head.key_id.clone(), key.jwk().clone());
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
        // Cut once per MAX_LINES pushes, not per push: cutting one entry off
        // a full list moved all the others, per upload once a busy
        // Connection's list was full between flushes (#25). The flush takes
        // the list cut exactly ([`bound_pending`]).
        if list.len() >= 2 * crate::gateway::checkpoint_history::MAX_LINES {
            bound_pending(list);
        }
    }
}

/// A Connection's checkpoints waiting for a flush are bounded like its
/// history: the newest [`crate::gateway::checkpoint_history::MAX_LINES`].
pub(super) fn bound_pending(list: &mut Vec<HistoryEntry>) {
    let excess = list
        .len()
        .saturating_sub(crate::gateway::checkpoint_history::MAX_LINES);
    list.drain(..excess);
}

/// One batch's counts by policy name, added to the pending ones once per
/// policy at the end of the batch (no (namespace, policy) key is made per
/// event).
#[derive(Default)]
pub(super) struct BatchCounts<'a> {
    counters: BTreeMap<&'a str, PolicyCounters>,
    /// The batch's denials, by policy, in the batch's order.
    denials: Vec<(&'a str, RecentDenial)>,
}

impl<'a> BatchCounts<'a> {
    fn counters(&mut self, policy: &'a str) -> &mut PolicyCounters {
        self.counters.entry(policy).or_default()
    }

    /// Adds the batch's counts to `pending`, for policies of `namespace`.
    pub(super) fn add_to(self, pending: &mut Pending, namespace: &str) {
        for (policy, add) in self.counters {
            add_counters(
                pending
                    .counters
                    .entry((namespace.to_string(), policy.to_string()))
                    .or_default(),
                &add,
            );
        }
        for (policy, denial) in self.denials {
            let list = pending
                .denials
                .entry((namespace.to_string(), policy.to_string()))
                .or_default();
            list.insert(0, denial);
            list.truncate(RECENT_DENIALS);
        }
    }
}

/// Adds one event to the batch's counters of the policy that decided it,
/// and its masked values to the policies that masked them (see [`masked`]).
fn count<'a>(
    counts: &mut BatchCounts<'a>,
    entries: &'a [PolicyEntry],
    identity: &Identity,
    event: &'a AuditEvent,
) {
    // Only policies that bind the uploader (to the event's Connection) can
    // have decided its traffic: anything else named is not counted.
    let policy = event
        .decision
        .as_ref()
        .and_then(|d| d.policy.as_deref())
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
            let c = counts.counters(policy);
            match decision.action {
                Action::Allow => c.allowed += 1,
                Action::Deny => c.denied += 1,
                Action::RequireApproval => c.approvals_requested += 1,
            }
        }
        (AuditKind::Denial, Some(decision), Some(policy)) => {
            counts.counters(policy).denied += 1;
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
            counts.denials.push((policy, denial));
        }
        (AuditKind::Approval, _, policy) => {
            if let (Some(approval), Some(policy)) = (&event.approval, policy) {
                let c = counts.counters(policy);
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
        masked(counts, entries, identity, event);
    }
}

/// Credits an event's masked values. With `outcome.masks` (the values of
/// each masking rule, by its AccessPolicy) each policy gets exactly its
/// own count; values Sluice masked on its own (no policy) are credited to
/// none. Without it (events of sidecars before it, planes that record only
/// the total) the total counts for every applicable policy that masks, the
/// only attribution the event allows. Either way only policies that bind
/// the uploader to the event's Connection are credited: a sidecar cannot
/// count for a policy that could not have masked its traffic.
fn masked<'a>(
    counts: &mut BatchCounts<'a>,
    entries: &'a [PolicyEntry],
    identity: &Identity,
    event: &'a AuditEvent,
) {
    let (Some(outcome), Some(connection)) = (&event.outcome, &event.connection) else {
        return;
    };
    let mut credit = |policy: &'a str, count: u64| {
        let c = counts.counters(policy);
        c.masked = c.masked.saturating_add(count);
    };
    if outcome.masks.is_empty() {
        let total = outcome.masked.unwrap_or(0);
        if total == 0 {
            return;
        }
        for entry in entries {
            if let Some(compiled) = applying(entry, identity, connection)
                && !entry.policy.spec.masking.is_empty()
            {
                credit(&compiled.name, total);
            }
        }
        return;
    }
    for mask in &outcome.masks {
        let Some(policy) = mask.policy.as_deref() else {
            continue;
        };
        if mask.count > 0
            && entries
                .iter()
                .any(|e| applying(e, identity, connection).is_some_and(|c| c.name == policy))
        {
            credit(policy, mask.count);
        }
    }
}

/// The compiled policy of `entry` when it binds `identity` to `connection`.
fn applying<'a>(
    entry: &'a PolicyEntry,
    identity: &Identity,
    connection: &str,
) -> Option<&'a sluice_policy::engine::CompiledPolicy> {
    entry
        .compiled
        .as_ref()
        .ok()
        .filter(|c| c.binds(identity) && c.names_connection(connection))
}

fn parse_time(text: &str) -> Time {
    text.parse::<k8s_openapi::jiff::Timestamp>()
        .map(Time)
        .unwrap_or_else(|_| Time(k8s_openapi::jiff::Timestamp::now()))
}

/// Adds `add` to `into`, each counter stopping at its largest value (a
/// sidecar reports how many values were masked: never an overflow).
pub(super) fn add_counters(into: &mut PolicyCounters, add: &PolicyCounters) {
    let sum = |a: &mut u64, b: u64| *a = a.saturating_add(b);
    sum(&mut into.allowed, add.allowed);
    sum(&mut into.denied, add.denied);
    sum(&mut into.masked, add.masked);
    sum(&mut into.approvals_requested, add.approvals_requested);
    sum(&mut into.approvals_granted, add.approvals_granted);
    sum(&mut into.approvals_denied, add.approvals_denied);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_crds::AccessPolicy;
    use sluice_policy::engine::{CompiledPolicy, NoSecrets};
    use std::sync::Arc;

    /// A policy of namespace `shop` granting `job` Connection `db`, with
    /// `masking` as given.
    fn entry(name: &str, masking: serde_json::Value) -> PolicyEntry {
        let policy: AccessPolicy = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"subjects": [{"serviceAccount": "job"}], "connections": ["db"],
                     "masking": masking}
        }))
        .unwrap();
        PolicyEntry {
            compiled: CompiledPolicy::compile(&policy, &NoSecrets),
            policy: Arc::new(policy),
        }
    }

    /// Pending checkpoints are cut in bulk, and what a flush takes is the
    /// newest MAX_LINES, oldest first, as when every push was cut.
    #[test]
    fn pending_history_is_cut_to_the_newest_lines() {
        use crate::gateway::checkpoint_history::MAX_LINES;
        let keys = KeySet::generate(std::time::SystemTime::now()).unwrap();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut pending = Pending::default();
        let total = 3 * MAX_LINES as u64 + 7;
        for seq in 1..=total {
            let head = SignedHead {
                connection: "db".into(),
                stream: "sidecar:shop/job:job-0:boot".into(),
                sequence: seq,
                hash: format!("h{seq}"),
                signature: "s".into(),
                key_id: keys.keys()[0].kid().to_string(),
                identity: "system:serviceaccount:shop:job".into(),
                pod: "job-0".into(),
            };
            record_history(&mut pending, &keys, "shop", &[head], &now);
            let list = &pending.history[&("shop".to_string(), "db".to_string())];
            assert!(list.len() < 2 * MAX_LINES, "bounded between flushes");
        }
        let mut list = pending.history[&("shop".to_string(), "db".to_string())].clone();
        bound_pending(&mut list);
        let sequences: Vec<u64> = list.iter().map(|e| e.head.sequence).collect();
        let newest: Vec<u64> = (total - MAX_LINES as u64 + 1..=total).collect();
        assert_eq!(sequences, newest);
    }

    /// [`count`] of one event, added to `pending`.
    fn count_one(
        pending: &mut Pending,
        entries: &[PolicyEntry],
        identity: &Identity,
        event: &AuditEvent,
    ) {
        let mut counts = BatchCounts::default();
        count(&mut counts, entries, identity, event);
        counts.add_to(pending, &identity.namespace);
    }

    fn result(seq: u64, outcome: serde_json::Value) -> AuditEvent {
        serde_json::from_value(json!({
            "v": 1, "seq": seq, "time": "2026-12-06T20:00:00Z", "type": "result",
            "stream": "sidecar:shop/job:job-0:boot", "connection": "db",
            "outcome": outcome, "prev": "p", "hash": "h"
        }))
        .unwrap()
    }

    /// Two masking policies bind the same identity and Connection: with
    /// `outcome.masks` each is credited exactly the values its rules
    /// masked (not the result's total); values Sluice masked on its own,
    /// and a policy that does not bind the uploader, credit no one.
    /// Without `masks` (an older sidecar) the total still counts for both.
    #[test]
    fn masked_values_are_credited_to_the_policy_that_masked_them() {
        let masking = json!([{"columns": ["customers.ssn"], "strategy": "redact"},
                             {"columns": ["customers.email"], "strategy": "hash"}]);
        let other: AccessPolicy = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": "elsewhere", "namespace": "shop"},
            "spec": {"subjects": [{"serviceAccount": "someone-else"}], "connections": ["db"],
                     "masking": masking.clone()}
        }))
        .unwrap();
        let entries = vec![
            entry("pii", masking.clone()),
            entry(
                "cards",
                json!([{"detectors": ["creditCard"], "strategy": "partial"}]),
            ),
            entry("reads", json!([])),
            PolicyEntry {
                compiled: CompiledPolicy::compile(&other, &NoSecrets),
                policy: Arc::new(other),
            },
        ];
        assert!(entries.iter().all(|e| e.compiled.is_ok()));
        let identity = Identity::service_account("shop", "job");
        let mut pending = Pending::default();
        count_one(
            &mut pending,
            &entries,
            &identity,
            &result(
                1,
                json!({"rows": 5, "masked": 12, "masks": [
                    {"count": 3, "index": 0, "policy": "pii"},
                    {"count": 1, "index": 1, "policy": "pii"},
                    {"count": 5, "index": 0, "policy": "cards"},
                    {"count": 2, "index": 0, "policy": "elsewhere"},
                    {"count": 1}
                ]}),
            ),
        );
        let masked = |pending: &Pending, policy: &str| {
            pending
                .counters
                .get(&("shop".to_string(), policy.to_string()))
                .map(|c| c.masked)
        };
        assert_eq!(masked(&pending, "pii"), Some(4));
        assert_eq!(masked(&pending, "cards"), Some(5));
        assert_eq!(masked(&pending, "reads"), None);
        assert_eq!(masked(&pending, "elsewhere"), None);

        // An event without `masks`: the old rule, the total to each masking policy.
        count_one(
            &mut pending,
            &entries,
            &identity,
            &result(2, json!({"rows": 1, "masked": 7})),
        );
        assert_eq!(masked(&pending, "pii"), Some(11));
        assert_eq!(masked(&pending, "cards"), Some(12));
        assert_eq!(masked(&pending, "reads"), None);
        assert_eq!(masked(&pending, "elsewhere"), None);

        // Counts a sidecar reports stop at the largest value, batch after batch.
        for seq in 3..5 {
            count_one(
                &mut pending,
                &entries,
                &identity,
                &result(
                    seq,
                    json!({"rows": 1, "masks": [{"count": u64::MAX, "policy": "pii"}]}),
                ),
            );
        }
        assert_eq!(masked(&pending, "pii"), Some(u64::MAX));
    }
}
