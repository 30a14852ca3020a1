//! Statistics of the audit events in the period (the summary, the GRC
//! tables and the report's charts).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// The entry of masked values of events that do not say which policy
/// masked them (`outcome.masks` absent: sidecars before it, planes that
/// record only the total).
pub(super) const UNATTRIBUTED: &str = "unattributed";
/// The entry of values Sluice masked on its own, under no policy's rule (a
/// row wider than its description, masking rules that could not be combined).
pub(super) const NO_RULE: &str = "sluice (no rule)";

#[derive(Default)]
pub(super) struct Stats {
    /// day → action → count.
    pub(super) per_day: BTreeMap<String, BTreeMap<String, u64>>,
    pub(super) denials_by_rule: BTreeMap<String, u64>,
    pub(super) masked_by_connection: BTreeMap<String, u64>,
    /// `NAMESPACE/NAME` of the AccessPolicy (or [`UNATTRIBUTED`],
    /// [`NO_RULE`]) → values masked.
    pub(super) masked_by_policy: BTreeMap<String, u64>,
    /// The namespace of each policy a stream put in force, by (stream,
    /// name): `outcome.masks` names a policy by its name only.
    policy_namespaces: HashMap<(String, String), String>,
    pub(super) approvals: BTreeMap<String, u64>,
    pub(super) events: u64,
    /// Approval audit events by request name.
    pub(super) trail: BTreeMap<String, Vec<Value>>,
    /// `policy` events up to the period's end (see `history`).
    pub(super) policy_changes: Vec<Value>,
}

impl Stats {
    /// Notes the namespace of the policy of a `policy` event (in the period
    /// or before it), for the masked values of its stream.
    pub(super) fn policy_in_force(&mut self, event: &Value) {
        let (Some(stream), Some(name), Some(namespace)) = (
            event["stream"].as_str(),
            event.pointer("/policy/name").and_then(Value::as_str),
            event.pointer("/policy/namespace").and_then(Value::as_str),
        ) else {
            return;
        };
        self.policy_namespaces.insert(
            (stream.to_string(), name.to_string()),
            namespace.to_string(),
        );
    }

    pub(super) fn add(&mut self, event: &Value) {
        self.events += 1;
        let day = event["time"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(10)
            .collect::<String>();
        let rule = || {
            format!(
                "{}/{}",
                event
                    .pointer("/decision/policy")
                    .and_then(Value::as_str)
                    .unwrap_or("-"),
                event
                    .pointer("/decision/rule")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
            )
        };
        let kind = event["type"].as_str().unwrap_or("");
        // A batched statement event may carry its result's outcome.
        if matches!(kind, "result" | "mask" | "statement")
            && let Some(m) = event.pointer("/outcome/masked").and_then(Value::as_u64)
            && m > 0
        {
            let c = event["connection"].as_str().unwrap_or("-").to_string();
            *self.masked_by_connection.entry(c).or_default() += m;
            self.masked_by_policy(event, m);
        }
        match kind {
            "statement" => {
                let action = event
                    .pointer("/decision/action")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                *self
                    .per_day
                    .entry(day)
                    .or_default()
                    .entry(action.to_string())
                    .or_default() += 1;
            }
            "denial" => {
                *self
                    .per_day
                    .entry(day)
                    .or_default()
                    .entry("deny".into())
                    .or_default() += 1;
                *self.denials_by_rule.entry(rule()).or_default() += 1;
            }
            "approval" => {
                let phase = event
                    .pointer("/approval/phase")
                    .and_then(Value::as_str)
                    .unwrap_or("-");
                *self.approvals.entry(phase.to_string()).or_default() += 1;
                if let Some(r) = event.pointer("/approval/request").and_then(Value::as_str) {
                    self.trail
                        .entry(r.to_string())
                        .or_default()
                        .push(event.clone());
                }
            }
            _ => {}
        }
    }
}

impl Stats {
    /// Credits the `masked` values of `event` to the policies its
    /// `outcome.masks` names (each its own count), the values masked under
    /// no rule to [`NO_RULE`], and whatever `masks` does not account for
    /// (all of it, when absent) to [`UNATTRIBUTED`]: never dropped.
    fn masked_by_policy(&mut self, event: &Value, masked: u64) {
        let stream = event["stream"].as_str().unwrap_or("");
        let mut attributed: u64 = 0;
        let masks = event
            .pointer("/outcome/masks")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for mask in masks {
            let count = mask["count"].as_u64().unwrap_or(0);
            // A peer's figures: never more than the event's total.
            let count = count.min(masked - attributed);
            if count == 0 {
                continue;
            }
            attributed += count;
            let key = match mask["policy"].as_str() {
                Some(name) => format!("{}/{name}", self.namespace_of(event, stream, name)),
                None => NO_RULE.to_string(),
            };
            *self.masked_by_policy.entry(key).or_default() += count;
        }
        if masked > attributed {
            *self
                .masked_by_policy
                .entry(UNATTRIBUTED.to_string())
                .or_default() += masked - attributed;
        }
    }

    /// The namespace of policy `name` as the stream's `policy` events give
    /// it, else the workload's (where its Connections and their policies
    /// are, unless a policy names subjects of another namespace), else `?`.
    fn namespace_of(&self, event: &Value, stream: &str, name: &str) -> String {
        self.policy_namespaces
            .get(&(stream.to_string(), name.to_string()))
            .map(String::as_str)
            .or_else(|| event.pointer("/identity/namespace").and_then(Value::as_str))
            .unwrap_or("?")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Masked values count whether a `result` event or a batched
    /// `statement` event (decision and result in one) carries them.
    #[test]
    fn masked_values_count_from_results_and_joined_statements() {
        let mut stats = Stats::default();
        for event in [
            serde_json::json!({"type": "result", "connection": "db", "outcome": {"masked": 2}}),
            serde_json::json!({"type": "statement", "connection": "db",
                               "decision": {"action": "allow"}, "outcome": {"masked": 3}}),
            serde_json::json!({"type": "statement", "connection": "db",
                               "decision": {"action": "allow"}}),
        ] {
            stats.add(&event);
        }
        assert_eq!(stats.masked_by_connection.get("db"), Some(&5));
        let decisions: u64 = stats.per_day.values().flat_map(|d| d.values()).sum();
        assert_eq!(decisions, 2);
    }

    /// Masked values by policy: each policy named in `outcome.masks` gets
    /// its own count (namespace from the stream's `policy` events, else the
    /// workload's); values under no rule, and events without `masks` (their
    /// whole `masked`), are counted apart, never dropped.
    #[test]
    fn masked_values_count_by_the_policy_that_masked_them() {
        let mut stats = Stats::default();
        stats.policy_in_force(&serde_json::json!({"type": "policy", "stream": "s1",
            "policy": {"name": "pii", "namespace": "billing"}}));
        for event in [
            serde_json::json!({"type": "result", "stream": "s1", "connection": "db",
                "identity": {"namespace": "shop"},
                "outcome": {"masked": 6, "masks": [
                    {"count": 4, "index": 0, "policy": "pii"},
                    {"count": 1, "index": 0, "policy": "cards"},
                    {"count": 1}]}}),
            serde_json::json!({"type": "statement", "stream": "s2", "connection": "db",
                "identity": {"namespace": "shop"}, "decision": {"action": "allow"},
                "outcome": {"masked": 2, "masks": [{"count": 2, "index": 1, "policy": "pii"}]}}),
            serde_json::json!({"type": "result", "stream": "s1", "connection": "db",
                "outcome": {"masked": 5}}),
            // Counts above the total are cut to it.
            serde_json::json!({"type": "result", "stream": "s1", "connection": "db",
                "outcome": {"masked": 3, "masks": [{"count": 9, "policy": "pii"}]}}),
        ] {
            stats.add(&event);
        }
        let expected: BTreeMap<String, u64> = [
            ("billing/pii", 7),
            ("shop/cards", 1),
            ("shop/pii", 2),
            (NO_RULE, 1),
            (UNATTRIBUTED, 5),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(stats.masked_by_policy, expected);
        let total: u64 = stats.masked_by_connection.values().sum();
        assert_eq!(total, stats.masked_by_policy.values().sum::<u64>());
    }
}
