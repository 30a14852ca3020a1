//! Object shape shared by the verbs: served and stored forms, metadata reads,
//! names, and the checks every write starts with.

use crate::apiserver::error::ApiError;
use crate::apiserver::registry::ResourceType;
use crate::apiserver::registry::Special;
use serde_json::Value;
use serde_json::json;

pub(super) const CRD_STORAGE: &str = "apiextensions.k8s.io/customresourcedefinitions";
pub(super) const NS_STORAGE: &str = "/namespaces";

const EVENT_RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

pub(super) fn rename(obj: &mut Value, from_core: bool) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    for (core, v1) in EVENT_RENAMES {
        let (from, to) = if from_core { (core, v1) } else { (v1, core) };
        if let Some(v) = map.remove(*from) {
            map.insert(to.to_string(), v);
        }
    }
}

/// The object as served for `rt` (apiVersion/kind set, events converted).
pub fn present(rt: &ResourceType, obj: &Value) -> Value {
    let mut out = obj.clone();
    if rt.special == Special::EventsV1 {
        rename(&mut out, true);
    }
    out["apiVersion"] = Value::String(rt.api_version());
    out["kind"] = Value::String(rt.kind.clone());
    out
}

/// The `PartialObjectMetadata` form kube-rs' metadata API asks for.
pub fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// The stored form of an object received for `rt`.
pub(super) fn to_storage(rt: &ResourceType, obj: &Value) -> Value {
    let mut out = obj.clone();
    if rt.special == Special::EventsV1 {
        rename(&mut out, false);
        out["apiVersion"] = json!("v1");
    } else {
        out["apiVersion"] = Value::String(rt.api_version());
    }
    out["kind"] = Value::String(rt.kind.clone());
    out
}

pub(super) fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

pub(super) fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

pub(super) fn ensure_object(v: &mut Value, what: &str) -> Result<(), ApiError> {
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "{what} must be a JSON object"
        )));
    }
    if !v["metadata"].is_object() {
        v["metadata"] = json!({});
    }
    Ok(())
}

pub(super) fn check_type(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    if let Some(av) = obj["apiVersion"].as_str()
        && av != rt.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if let Some(kind) = obj["kind"].as_str()
        && kind != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

/// DNS-1123 subdomain (most objects) or label (namespaces).
pub(super) fn name_problem(name: &str, label: bool) -> Option<String> {
    let max = if label { 63 } else { 253 };
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (!label && c == '.'));
    let ends_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.len() <= max && valid_chars && ends_ok {
        return None;
    }
    Some(if label {
        format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    } else {
        format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    })
}

pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}
