//! Conditions in the metav1.Condition shape, kept as a list-map keyed by `type`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;

/// The `status.conditions` of every Sluice resource: metav1.Condition entries,
/// at most one per `type` (a list-map keyed by `type`, so server-side apply
/// merges them by type).
pub type Conditions = Vec<Condition>;

/// Schema for `status.conditions`: metav1.Condition items, list-map keyed by `type`.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = <Vec<Condition>>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema.insert(
        "description".into(),
        "Current state of this object in the metav1.Condition shape, one entry per type. \
         Ready summarises the others."
            .into(),
    );
    schema
}

/// Sets (or replaces) the condition of `cond.type_` in `conditions`.
///
/// `lastTransitionTime` only moves when the status flips, as the Kubernetes API
/// conventions require; reason, message and observedGeneration always follow
/// the new value.
pub fn set_condition(conditions: &mut Conditions, cond: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == cond.type_) {
        Some(existing) => {
            let flipped = existing.status != cond.status;
            let keep_time: Option<Time> = (!flipped).then(|| existing.last_transition_time.clone());
            *existing = cond;
            if let Some(t) = keep_time {
                existing.last_transition_time = t;
            }
        }
        None => conditions.push(cond),
    }
}

/// Finds the condition of the given type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn cond(status: &str, reason: &str, secs: i64) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::from_second(secs).unwrap()),
        }
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let mut cs = vec![cond("True", "Ok", 10)];
        set_condition(&mut cs, cond("True", "StillOk", 20));
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].reason, "StillOk");
        assert_eq!(cs[0].last_transition_time.0.as_second(), 10);
        set_condition(&mut cs, cond("False", "Broken", 30));
        assert_eq!(cs[0].last_transition_time.0.as_second(), 30);
    }
}
