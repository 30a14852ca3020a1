//! The other built-in kinds with rules of their own: Secret data, Events,
//! admission webhook configurations (defaults too) and Leases.

use super::{invalid, is_dns_subdomain, required};
use crate::apiserver::error::Cause;
use crate::apiserver::registry::{ResourceType, Special};
use base64::Engine as _;
use serde_json::{Value, json};

/// Checks Secret data is base64; returns the decoding error kube reports as 400.
pub fn secret_data(obj: &Value) -> Result<(), String> {
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        let s = v.as_str().unwrap_or_default();
        if base64::engine::general_purpose::STANDARD.decode(s).is_err() {
            return Err(format!(
                "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data[{k:?}]"
            ));
        }
    }
    Ok(())
}

/// Event checks: the involved object's namespace, and for events.k8s.io/v1
/// the fields that API requires.
pub(super) fn event(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let v1 = rt.special == Special::EventsV1;
    let about = if v1 { "regarding" } else { "involvedObject" };
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    if let Some(theirs) = obj[about]["namespace"].as_str()
        && !theirs.is_empty()
        && theirs != ns
    {
        causes.push(invalid(
            format!("{about}.namespace"),
            format!("Invalid value: {theirs:?}: does not match event.namespace"),
        ));
    }
    if v1 {
        for f in [
            "eventTime",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
        ] {
            if obj[f].as_str().is_none_or(str::is_empty) {
                causes.push(required(f.to_string()));
            }
        }
        if let Some(t) = obj["type"].as_str()
            && t != "Normal"
            && t != "Warning"
        {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: "type".into(),
                message: format!(
                    "Unsupported value: {t:?}: supported values: \"Normal\", \"Warning\""
                ),
            });
        }
        if obj["note"].as_str().is_some_and(|n| n.len() > 1024) {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                field: "note".into(),
                message: "Too long: may not be more than 1024 bytes".into(),
            });
        }
    }
    causes
}

/// The defaults kube-apiserver gives admissionregistration.k8s.io/v1 webhooks
/// (k8s.io/kubernetes pkg/apis/admissionregistration/v1/defaults.go:
/// `SetDefaults_ValidatingWebhook`, `SetDefaults_MutatingWebhook`,
/// `SetDefaults_Rule`, `SetDefaults_ServiceReference`).
pub fn default_webhooks(obj: &mut Value) {
    let mutating = obj["kind"] == "MutatingWebhookConfiguration";
    for w in obj["webhooks"].as_array_mut().into_iter().flatten() {
        let mut set = |key: &str, v: Value| {
            if w[key].is_null() {
                w[key] = v;
            }
        };
        set("failurePolicy", json!("Fail"));
        set("matchPolicy", json!("Equivalent"));
        set("namespaceSelector", json!({}));
        set("objectSelector", json!({}));
        set("timeoutSeconds", json!(10));
        if mutating {
            set("reinvocationPolicy", json!("Never"));
        }
        for rule in w["rules"].as_array_mut().into_iter().flatten() {
            if rule["scope"].is_null() {
                rule["scope"] = json!("*");
            }
        }
        if w["clientConfig"]["service"].is_object()
            && w["clientConfig"]["service"]["port"].is_null()
        {
            w["clientConfig"]["service"]["port"] = json!(443);
        }
    }
}

/// admissionregistration/v1 webhook checks (k8s.io/kubernetes
/// pkg/apis/admissionregistration/validation/validation.go `validateWebhook`):
/// names with at least three segments, unique names, `sideEffects` and
/// `admissionReviewVersions` required in v1, `timeoutSeconds` 1..30.
pub(super) fn webhooks(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, w) in obj["webhooks"].as_array().into_iter().flatten().enumerate() {
        let path = format!("webhooks[{i}]");
        let name = w["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            causes.push(required(format!("{path}.name")));
        } else if !is_dns_subdomain(name) || name.split('.').count() < 3 {
            causes.push(invalid(
                format!("{path}.name"),
                format!(
                    "Invalid value: {name:?}: should be a domain with at least three segments separated by dots"
                ),
            ));
        } else if seen.contains(&name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("{path}.name"),
                message: format!("Duplicate value: {name:?}"),
            });
        }
        seen.push(name);
        match w["sideEffects"].as_str() {
            None => causes.push(Cause {
                reason: "FieldValueRequired",
                field: format!("{path}.sideEffects"),
                message: "Required value: must specify one of None, NoneOnDryRun".into(),
            }),
            Some("None" | "NoneOnDryRun") => {}
            Some(other) => causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: format!("{path}.sideEffects"),
                message: format!(
                    "Unsupported value: {other:?}: supported values: \"None\", \"NoneOnDryRun\""
                ),
            }),
        }
        if w["admissionReviewVersions"]
            .as_array()
            .is_none_or(|v| v.is_empty())
        {
            causes.push(Cause {
                reason: "FieldValueRequired",
                field: format!("{path}.admissionReviewVersions"),
                message: "Required value: must specify one of v1, v1beta1".into(),
            });
        }
        if let Some(t) = w["timeoutSeconds"].as_i64()
            && !(1..=30).contains(&t)
        {
            causes.push(invalid(
                format!("{path}.timeoutSeconds"),
                format!("Invalid value: {t}: the timeout value must be between 1 and 30 seconds"),
            ));
        }
    }
    causes
}

/// coordination.k8s.io/v1 Lease checks (k8s.io/kubernetes
/// pkg/apis/coordination/validation/validation.go `ValidateLeaseSpec`): positive
/// `leaseDurationSeconds`, non-negative `leaseTransitions`; times are MicroTime
/// (RFC 3339 with microseconds) or the object does not decode.
pub(super) fn lease(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = &obj["spec"];
    if let Some(d) = spec["leaseDurationSeconds"].as_i64()
        && d <= 0
    {
        causes.push(invalid(
            "spec.leaseDurationSeconds".into(),
            format!("Invalid value: {d}: must be greater than 0"),
        ));
    }
    if let Some(t) = spec["leaseTransitions"].as_i64()
        && t < 0
    {
        causes.push(invalid(
            "spec.leaseTransitions".into(),
            format!("Invalid value: {t}: must be greater than or equal to 0"),
        ));
    }
    causes
}

/// Lease times must parse as MicroTime, else kube refuses the body at decoding (400).
pub fn lease_times(obj: &Value) -> Result<(), String> {
    for key in ["acquireTime", "renewTime"] {
        if let Some(t) = obj["spec"][key].as_str()
            && t.parse::<k8s_openapi::jiff::Timestamp>().is_err()
        {
            return Err(format!(
                "Lease in version \"v1\" cannot be handled as a Lease: parsing time {t:?} as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse"
            ));
        }
    }
    Ok(())
}
