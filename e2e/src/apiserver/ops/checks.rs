//! The checks of a write: built-in validation, update immutability, schema
//! pruning, defaulting and validation of custom resources.

use super::defaults::is_deployment;
use super::object::meta_str;
use crate::apiserver::error::ApiError;
use crate::apiserver::registry::ResourceType;
use crate::apiserver::registry::Special;
use crate::apiserver::request::Req;
use crate::apiserver::schema;
use crate::apiserver::validation;
use serde_json::Value;

/// Metadata, Secret and Pod checks kube-apiserver makes on every write.
pub(super) fn builtin_checks(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    if rt.kind == "Lease" && rt.crd.is_none() {
        validation::lease_times(obj).map_err(ApiError::bad_request)?;
    }
    if rt.kind == "Secret" && rt.crd.is_none() {
        validation::secret_data(obj).map_err(ApiError::bad_request)?;
    }
    let causes = validation::object(rt, obj);
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(rt, meta_str(obj, "name"), causes))
}

/// What kube checks of an update against the stored object: pod spec immutability
/// (`ValidatePodUpdate`) and a Deployment's immutable selector.
pub(super) fn update_checks(
    rt: &ResourceType,
    sub: Option<&str>,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    let causes = match rt.special {
        Special::Pod if sub == Some("ephemeralcontainers") => {
            validation::pod_ephemeral_update(old, new)
        }
        Special::Pod => validation::pod_update(old, new),
        _ if is_deployment(rt) => validation::deployment_update(old, new),
        _ => Vec::new(),
    };
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(rt, meta_str(new, "name"), causes))
}

/// The field validation mode of a write (`Strict`, `Warn`, `Ignore`).
fn field_validation(req: &Req) -> &str {
    req.q("fieldValidation").unwrap_or("Warn")
}

/// Schema pruning, defaulting and validation for custom resources.
pub(super) fn schema_pipeline(
    rt: &ResourceType,
    req: &Req,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(crd) = &rt.crd else { return Ok(()) };
    let Some(sch) = &crd.schema else {
        return Ok(());
    };
    let pruned = schema::prune(sch, obj);
    if !pruned.is_empty() && field_validation(req) == "Strict" {
        let list: Vec<String> = pruned
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect();
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            list.join(", ")
        )));
    }
    if !pruned.is_empty() && field_validation(req) == "Warn" {
        for p in &pruned {
            req.warn(format!("unknown field \"{p}\""));
        }
    }
    *obj = schema::defaults(sch, obj);
    let name = meta_str(obj, "name").to_string();
    let causes = schema::validate(sch, rt, obj, old);
    if !causes.is_empty() {
        return Err(ApiError::invalid(rt, &name, causes));
    }
    Ok(())
}

pub(super) fn strip(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(m) = out.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    out
}

pub(super) fn same_ignoring_rv(a: &Value, b: &Value) -> bool {
    let clean = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            if let Some(mf) = m.get_mut("managedFields").and_then(Value::as_array_mut) {
                for e in mf {
                    if let Some(e) = e.as_object_mut() {
                        e.remove("time");
                    }
                }
            }
        }
        v
    };
    clean(a) == clean(b)
}
