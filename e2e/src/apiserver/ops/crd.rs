//! CustomResourceDefinitions: their validation, status and the registry they
//! feed.

use super::object::{CRD_STORAGE, meta_str};
use crate::apiserver::State;
use crate::apiserver::error::ApiError;
use crate::apiserver::error::Cause;
use crate::apiserver::registry::Registry;
use crate::apiserver::store::now;
use serde_json::Value;
use serde_json::json;
use std::sync::Arc;

/// Validates a CRD's basics and computes its status (kept from `old` on updates).
pub(super) fn crd_prepare(obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let group = obj["spec"]["group"].as_str().unwrap_or_default();
    let plural = obj["spec"]["names"]["plural"].as_str().unwrap_or_default();
    let name = meta_str(obj, "name");
    let rt = Registry::new(&[]).find("apiextensions.k8s.io", "v1", "customresourcedefinitions");
    let mut causes = Vec::new();
    if name != format!("{plural}.{group}") {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "metadata.name".into(),
            message: format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        });
    }
    let versions = obj["spec"]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let storage: Vec<&Value> = versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .collect();
    if storage.len() != 1 {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "spec.versions".into(),
            message: "Invalid value: must have exactly one version marked as storage version"
                .into(),
        });
    }
    if obj["spec"]["names"]["kind"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        causes.push(Cause {
            reason: "FieldValueRequired",
            field: "spec.names.kind".into(),
            message: "Required value".into(),
        });
    }
    // CEL cost estimation of x-kubernetes-validations (apiextensions validation.go): refused
    // like kube-apiserver 1.33 refuses it. An update that leaves the schemas alone is not
    // re-checked (upstream suppresses per-expression cost errors for unchanged schemas).
    if causes.is_empty() && old.is_none_or(|o| o["spec"]["versions"] != obj["spec"]["versions"]) {
        for v in crate::apiserver::cel_cost::check_crd(obj) {
            causes.push(Cause {
                reason: "FieldValueForbidden",
                field: v.field,
                message: format!("Forbidden: {}", v.message),
            });
        }
    }
    if let (false, Some(rt)) = (causes.is_empty(), rt) {
        return Err(ApiError::invalid(&rt, name, causes));
    }
    let names = obj["spec"]["names"].clone();
    let mut accepted = names.clone();
    if accepted["singular"].is_null() {
        accepted["singular"] = json!(names["kind"].as_str().unwrap_or_default().to_lowercase());
    }
    if accepted["listKind"].is_null() {
        accepted["listKind"] = json!(format!(
            "{}List",
            names["kind"].as_str().unwrap_or_default()
        ));
    }
    obj["spec"]["names"] = accepted.clone();
    if obj["spec"]["conversion"].is_null() {
        obj["spec"]["conversion"] = json!({"strategy": "None"});
    }
    let stored = storage
        .first()
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default()
        .to_string();
    let ts = now();
    let conditions = match old.map(|o| &o["status"]["conditions"]) {
        Some(c @ Value::Array(_)) => c.clone(),
        _ => json!([
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": ts},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": ts},
        ]),
    };
    let mut stored_versions: Vec<Value> = old
        .and_then(|o| o["status"]["storedVersions"].as_array().cloned())
        .unwrap_or_default();
    if !stored_versions.contains(&json!(stored)) {
        stored_versions.push(json!(stored));
    }
    obj["status"] = json!({"acceptedNames": accepted, "conditions": conditions, "storedVersions": stored_versions});
    Ok(())
}

pub(super) fn rebuild_registry(st: &mut State) {
    let crds: Vec<Value> = st
        .store
        .list(CRD_STORAGE, None)
        .into_iter()
        .cloned()
        .collect();
    st.registry = Arc::new(Registry::new(&crds));
}
