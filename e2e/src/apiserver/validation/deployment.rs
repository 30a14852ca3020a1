//! Deployments: the selector against the template's labels, and updates.

use super::pod::pod_spec;
use super::{invalid, required};
use crate::apiserver::error::Cause;
use serde_json::Value;

/// Go's `%#v` of a `map[string]string`, as kube prints template labels.
fn go_map(v: &Value) -> String {
    let entries: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default()))
        .collect();
    if entries.is_empty() {
        return "map[string]string(nil)".into();
    }
    format!("map[string]string{{{}}}", entries.join(", "))
}

/// apps/v1 Deployment checks (k8s.io/kubernetes pkg/apis/apps/validation/validation.go
/// `ValidateDeploymentSpec` and `ValidatePodTemplateSpecForReplicaSet`): a non-empty
/// selector that matches the template's labels, `restartPolicy: Always`, and the
/// template's pod spec checked like a pod's.
pub(super) fn deployment(obj: &Value) -> Vec<Cause> {
    let spec = &obj["spec"];
    let mut causes = Vec::new();
    let sel = &spec["selector"];
    let labels = &spec["template"]["metadata"]["labels"];
    if sel.is_null() {
        causes.push(required("spec.selector".into()));
    } else {
        let empty = sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
            && sel["matchExpressions"]
                .as_array()
                .is_none_or(|e| e.is_empty());
        match crate::apiserver::selectors::LabelSelector::from_object(sel) {
            Err(_) => causes.push(invalid(
                "spec.selector".into(),
                format!("Invalid value: {sel}: invalid label selector"),
            )),
            Ok(_) if empty => causes.push(invalid(
                "spec.selector".into(),
                format!("Invalid value: {sel}: empty selector is invalid for deployment"),
            )),
            Ok(s) if !s.matches(labels) => causes.push(invalid(
                "spec.template.metadata.labels".into(),
                format!(
                    "Invalid value: {}: `selector` does not match template `labels`",
                    go_map(labels)
                ),
            )),
            Ok(_) => {}
        }
    }
    let tspec = &spec["template"]["spec"];
    causes.extend(pod_spec(tspec, "spec.template.spec"));
    if let Some(policy) = tspec["restartPolicy"].as_str()
        && policy != "Always"
    {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.template.spec.restartPolicy".into(),
            message: format!("Unsupported value: {policy:?}: supported values: \"Always\""),
        });
    }
    if !tspec["activeDeadlineSeconds"].is_null() {
        causes.push(Cause {
            reason: "FieldValueForbidden",
            field: "spec.template.spec.activeDeadlineSeconds".into(),
            message: "Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported".into(),
        });
    }
    causes
}

/// apps/v1 `ValidateDeploymentUpdate`: the selector is immutable.
pub fn deployment_update(old: &Value, new: &Value) -> Vec<Cause> {
    let (before, after) = (&old["spec"]["selector"], &new["spec"]["selector"]);
    if before == after {
        return Vec::new();
    }
    vec![invalid(
        "spec.selector".into(),
        format!("Invalid value: {after}: field is immutable"),
    )]
}
