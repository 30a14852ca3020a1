//! Statistics of the audit events in the period (the summary, the GRC
//! tables and the report's charts).

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Default)]
pub(super) struct Stats {
    /// day → action → count.
    pub(super) per_day: BTreeMap<String, BTreeMap<String, u64>>,
    pub(super) denials_by_rule: BTreeMap<String, u64>,
    pub(super) masked_by_connection: BTreeMap<String, u64>,
    pub(super) approvals: BTreeMap<String, u64>,
    pub(super) events: u64,
    /// Approval audit events by request name.
    pub(super) trail: BTreeMap<String, Vec<Value>>,
    /// `policy` events up to the period's end (see `history`).
    pub(super) policy_changes: Vec<Value>,
}

impl Stats {
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
}
