//! Validation of built-in fields that kube-apiserver checks on every write:
//! object metadata (labels, annotations, owner references), Secret data, and
//! the parts of a Pod spec that admission webhooks commonly get wrong.

use super::error::Cause;
use super::registry::{ResourceType, Special};
use serde_json::Value;

mod deployment;
mod kinds;
mod pod;

use deployment::deployment;
pub use deployment::deployment_update;
pub use kinds::{default_webhooks, lease_times, secret_data};
use kinds::{event, lease, webhooks};
use pod::pod;
pub use pod::{pod_ephemeral_update, pod_update};

const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn invalid(field: String, message: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field,
        message,
    }
}

fn required(field: String) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field,
        message: "Required value".into(),
    }
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn is_label_name(s: &str) -> bool {
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    !s.is_empty() && s.len() <= 63 && ok_chars && ends
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A qualified name: `[prefix/]name`, as label and annotation keys.
fn key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Some(format!(
            "Invalid value: {key:?}: prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ));
    }
    if !is_label_name(name) {
        return Some(format!(
            "Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        ));
    }
    None
}

/// Checks labels, annotations and owner references.
pub fn metadata(obj: &Value) -> Vec<Cause> {
    let meta = &obj["metadata"];
    let mut causes = Vec::new();
    for (k, v) in meta["labels"].as_object().into_iter().flatten() {
        if let Some(p) = key_problem(k) {
            causes.push(invalid("metadata.labels".into(), p));
        }
        let value = v.as_str().unwrap_or_default();
        if !v.is_string() || (!value.is_empty() && !is_label_name(value)) {
            causes.push(invalid(
                "metadata.labels".into(),
                format!("Invalid value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
            ));
        }
    }
    let mut total = 0;
    for (k, v) in meta["annotations"].as_object().into_iter().flatten() {
        if let Some(p) = key_problem(&k.to_lowercase()) {
            causes.push(invalid("metadata.annotations".into(), p));
        }
        if !v.is_string() {
            causes.push(invalid(
                "metadata.annotations".into(),
                format!("Invalid value: {v}: annotation values must be strings"),
            ));
        }
        total += k.len() + v.as_str().map(str::len).unwrap_or(0);
    }
    if total > MAX_ANNOTATIONS_BYTES {
        causes.push(Cause {
            reason: "FieldValueTooLong",
            field: "metadata.annotations".into(),
            message: format!("Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes"),
        });
    }
    for (i, r) in meta["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        for f in ["apiVersion", "kind", "name", "uid"] {
            if r[f].as_str().is_none_or(str::is_empty) {
                causes.push(required(format!("metadata.ownerReferences[{i}].{f}")));
            }
        }
    }
    let controllers = meta["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["controller"] == Value::Bool(true))
        .count();
    if controllers > 1 {
        causes.push(invalid(
            "metadata.ownerReferences".into(),
            "Invalid value: only one reference can have Controller set to true".into(),
        ));
    }
    causes
}

/// All built-in checks for an object about to be stored.
pub fn object(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    let mut causes = metadata(obj);
    if rt.kind == "Lease" && rt.crd.is_none() {
        causes.extend(lease(obj));
    }
    match rt.special {
        Special::Webhook => causes.extend(webhooks(obj)),
        Special::Pod => causes.extend(pod(obj)),
        _ if rt.kind == "Deployment" && rt.group == "apps" => causes.extend(deployment(obj)),
        Special::CoreEvent | Special::EventsV1 => causes.extend(event(rt, obj)),
        _ => {}
    }
    causes
}
