//! UPDATE (PUT), PATCH (JSON, merge, strategic) and server-side apply.

use super::checks::{builtin_checks, same_ignoring_rv, schema_pipeline, strip, update_checks};
use super::crd::{crd_prepare, rebuild_registry};
use super::create::create_object;
use super::defaults::{deployment_defaults, is_deployment, move_string_data, pod_defaults};
use super::delete::remove_object;
use super::object::{check_type, ensure_object, finalizers, meta_str, present, to_storage};
use crate::apiserver::Inner;
use crate::apiserver::admission::{self, Attrs};
use crate::apiserver::error::ApiError;
use crate::apiserver::error::Cause;
use crate::apiserver::patch;
use crate::apiserver::registry::ResourceType;
use crate::apiserver::registry::Special;
use crate::apiserver::request::Req;
use crate::apiserver::request::Target;
use crate::apiserver::store::rv_of;
use crate::apiserver::validation;
use serde_json::Value;
use serde_json::json;
use std::sync::Arc;

/// Applies the main/status split, immutable metadata and preconditions of an update.
fn prepare_update(
    rt: &ResourceType,
    t: &Target,
    old: &Value,
    mut new: Value,
) -> Result<Value, ApiError> {
    let name = preconditions(rt, t, old, &mut new)?;
    if let Some(out) = subresource_update(t, old, &new) {
        return Ok(out);
    }
    let mut out = new;
    if rt.status {
        match old.get("status") {
            Some(s) => out["status"] = s.clone(),
            None => {
                if let Some(m) = out.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    if rt.special == Special::Namespace {
        out["spec"] = old["spec"].clone();
    }
    if rt.special == Special::Pod && out["spec"].is_object() {
        pod_defaults(&mut out["spec"]);
    }
    if is_deployment(rt) {
        deployment_defaults(&mut out);
    }
    if rt.kind == "Secret" {
        move_string_data(&mut out);
    }
    immutable_data(rt, &name, old, &out)?;
    keep_server_metadata(old, &mut out);
    no_new_finalizers(rt, &name, old, &out)?;
    Ok(out)
}

/// The update's body matches the URL, and its resourceVersion the stored
/// object's (or is absent where `rt` allows unconditional updates). Returns
/// the object's name.
fn preconditions(
    rt: &ResourceType,
    t: &Target,
    old: &Value,
    new: &mut Value,
) -> Result<String, ApiError> {
    ensure_object(new, "the updated object")?;
    check_type(rt, new)?;
    let name = t.name.clone().unwrap_or_default();
    let body_name = meta_str(new, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if rt.namespaced {
        let body_ns = meta_str(new, "namespace");
        if !body_ns.is_empty() && body_ns != t.ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    match new["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        Some(rv) if Some(rv) != old["metadata"]["resourceVersion"].as_str() => {
            return Err(ApiError::conflict(rt, &name));
        }
        Some(_) => {}
        None if !rt.unconditional_update => {
            return Err(ApiError::invalid(
                rt,
                &name,
                vec![Cause {
                    reason: "FieldValueInvalid",
                    field: "metadata.resourceVersion".into(),
                    message: "Invalid value: 0x0: must be specified for an update".into(),
                }],
            ));
        }
        None => {}
    }
    Ok(name)
}

/// An update of a subresource that takes only its part of `new`
/// (`ephemeralcontainers`, `status`); `None` for the main resource.
fn subresource_update(t: &Target, old: &Value, new: &Value) -> Option<Value> {
    if t.sub.as_deref() == Some("ephemeralcontainers") {
        // k8s.io/kubernetes pkg/registry/core/pod/strategy.go
        // `dropNonEphemeralContainerUpdates`: spec, status and metadata stay
        // the stored pod's; only `spec.ephemeralContainers` is taken.
        let mut out = old.clone();
        match new["spec"].get("ephemeralContainers") {
            Some(list) if !list.is_null() => {
                out["spec"]["ephemeralContainers"] = list.clone();
                pod_defaults(&mut out["spec"]);
            }
            _ => {
                if let Some(m) = out["spec"].as_object_mut() {
                    m.remove("ephemeralContainers");
                }
            }
        }
        return Some(out);
    }
    if t.sub.as_deref() == Some("status") {
        let mut out = old.clone();
        match new.get("status") {
            Some(s) if !s.is_null() => out["status"] = s.clone(),
            _ => {
                if let Some(m) = out.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        return Some(out);
    }
    None
}

/// An immutable Secret or ConfigMap keeps its data.
fn immutable_data(rt: &ResourceType, name: &str, old: &Value, out: &Value) -> Result<(), ApiError> {
    if matches!(rt.kind.as_str(), "Secret" | "ConfigMap") && old["immutable"] == json!(true) {
        let fields = ["data", "binaryData", "immutable"];
        if fields.iter().any(|f| old.get(*f) != out.get(*f)) {
            let field = fields
                .iter()
                .find(|f| old.get(**f) != out.get(**f))
                .copied()
                .unwrap_or("data");
            return Err(ApiError::invalid(
                rt,
                name,
                vec![Cause {
                    reason: "FieldValueForbidden",
                    field: field.into(),
                    message: "Forbidden: field is immutable when `immutable` is set".into(),
                }],
            ));
        }
    }
    Ok(())
}

/// The metadata the server owns stays the stored object's.
fn keep_server_metadata(old: &Value, out: &mut Value) {
    for k in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "resourceVersion",
    ] {
        match old["metadata"].get(k) {
            Some(v) => out["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = out["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    if out["metadata"].get("managedFields").is_none()
        && let Some(mf) = old["metadata"].get("managedFields")
    {
        out["metadata"]["managedFields"] = mf.clone();
    }
}

/// An object being deleted takes no new finalizer.
fn no_new_finalizers(
    rt: &ResourceType,
    name: &str,
    old: &Value,
    out: &Value,
) -> Result<(), ApiError> {
    if !old["metadata"]["deletionTimestamp"].is_null() {
        let before = finalizers(old);
        let added: Vec<String> = finalizers(out)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                rt,
                name,
                vec![Cause {
                    reason: "FieldValueForbidden",
                    field: "metadata.finalizers".into(),
                    message: format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                }],
            ));
        }
    }
    Ok(())
}

/// Read-modify-write of one object with the full admission pipeline.
/// `change` gets the current served object and returns the requested one.
pub(super) async fn modify<F>(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
    retries: usize,
    manager: Option<String>,
    change: F,
) -> Result<Value, ApiError>
where
    F: Fn(&Value) -> Result<Value, ApiError>,
{
    let rt = &t.rt;
    let name = t.name.clone().unwrap_or_default();
    let mut attempt = 0;
    loop {
        let cur = {
            let st = inner.lock();
            st.store
                .get(&rt.storage, &t.ns, &name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(rt, &name))?
        };
        let cur_p = present(rt, &cur);
        let candidate = change(&cur_p)?;
        let mut new = prepare_update(rt, t, &cur_p, candidate)?;
        if rt.special == Special::Crd && t.sub.is_none() {
            crd_prepare(&mut new, Some(&cur_p))?;
        }
        let attrs = Attrs {
            rt,
            sub: t.sub.as_deref(),
            op: "UPDATE",
            ns: &t.ns,
            name: &name,
            user: &req.user,
            old: Some(&cur_p),
            dry_run: req.dry_run(),
            warnings: &req.warnings,
        };
        let mutated = admission::mutate(inner, &attrs, new).await?;
        // As in kube, the endpoint's reset (status vs the rest) also applies to
        // what mutating webhooks changed.
        let mut new = prepare_update(rt, t, &cur_p, mutated)?;
        schema_pipeline(rt, req, &mut new, Some(&cur_p))?;
        if rt.special == Special::Webhook {
            validation::default_webhooks(&mut new);
        }
        builtin_checks(rt, &new)?;
        update_checks(rt, t.sub.as_deref(), &cur_p, &new)?;
        if rt.generation && strip(&new) != strip(&cur_p) {
            let generation = cur_p["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(generation + 1);
        }
        admission::validate(inner, &attrs, Some(&new)).await?;
        if let Some(m) = &manager {
            patch::record_update(rt, Some(&cur_p), &mut new, m, t.sub.as_deref());
        }
        if same_ignoring_rv(&new, &cur_p) {
            return Ok(cur_p);
        }
        if req.dry_run() {
            return Ok(new);
        }
        let mut st = inner.lock();
        let now_rv = st.store.get(&rt.storage, &t.ns, &name).and_then(rv_of);
        if now_rv != rv_of(&cur) {
            drop(st);
            if now_rv.is_none() {
                return Err(ApiError::not_found(rt, &name));
            }
            if attempt < retries {
                attempt += 1;
                continue;
            }
            return Err(ApiError::conflict(rt, &name));
        }
        let stored = to_storage(rt, &new);
        let out = if !stored["metadata"]["deletionTimestamp"].is_null()
            && finalizers(&stored).is_empty()
        {
            remove_object(&mut st, &rt.storage, &t.ns, &name).unwrap_or(stored)
        } else {
            let out = st.store.put(&rt.storage, stored);
            if rt.special == Special::Crd {
                rebuild_registry(&mut st);
            }
            out
        };
        inner.notify(st.store.rv);
        return Ok(present(rt, &out));
    }
}

/// UPDATE (PUT).
pub(in crate::apiserver) async fn update(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
) -> Result<Value, ApiError> {
    let body = req.json_body()?;
    modify(inner, req, t, 0, Some(req.manager()), |_| Ok(body.clone())).await
}

/// kube's JSON patch library lets `test` of a missing path against `null`
/// pass (kube-runtime's finalizer helper relies on it); drop such tests.
fn go_compatible(doc: &Value, ops: &json_patch::Patch) -> json_patch::Patch {
    json_patch::Patch(
        ops.0
            .iter()
            .filter(|op| match op {
                json_patch::PatchOperation::Test(t) => {
                    !(t.value.is_null() && doc.pointer(t.path.as_str()).is_none())
                }
                _ => true,
            })
            .cloned()
            .collect(),
    )
}

/// PATCH: JSON patch, merge patch, strategic merge patch, or server-side apply.
pub(in crate::apiserver) async fn patch(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
) -> Result<(u16, Value), ApiError> {
    let ct = req
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let rt = &t.rt;
    match ct.as_str() {
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is not valid: {e}")))?;
            let out = modify(inner, req, t, 5, Some(req.manager()), |cur| {
                let compatible = go_compatible(cur, &ops);
                let mut doc = cur.clone();
                json_patch::patch(&mut doc, &compatible).map_err(|e| {
                    ApiError::custom(
                        422,
                        "Invalid",
                        format!("the JSON patch could not be applied: {e}"),
                    )
                })?;
                Ok(doc)
            })
            .await?;
            Ok((200, out))
        }
        "application/merge-patch+json" => {
            let p = req.json_body()?;
            let out = modify(inner, req, t, 5, Some(req.manager()), |cur| {
                let mut doc = cur.clone();
                json_patch::merge(&mut doc, &p);
                Ok(doc)
            })
            .await?;
            Ok((200, out))
        }
        "application/strategic-merge-patch+json" => {
            if rt.crd.is_some() {
                return Err(ApiError::unsupported_media_type(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            let p = req.json_body()?;
            let out = modify(inner, req, t, 5, Some(req.manager()), |cur| {
                patch::strategic_merge(cur, &p)
            })
            .await?;
            Ok((200, out))
        }
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            apply(inner, req, t).await
        }
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({other}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"
        ))),
    }
}

async fn apply(inner: &Arc<Inner>, req: &Req, t: &Target) -> Result<(u16, Value), ApiError> {
    let Some(manager) = req.q("fieldManager").map(str::to_string) else {
        return Err(ApiError::custom(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    };
    let force = req.q("force") == Some("true");
    let applied = req.json_body()?;
    if applied["apiVersion"].as_str().is_none() || applied["kind"].as_str().is_none() {
        return Err(ApiError::bad_request(
            "apiVersion and kind are required in an apply configuration",
        ));
    }
    let name = t.name.clone().unwrap_or_default();
    patch::check_apply_configuration(&t.rt, &name, &t.ns, &applied)?;
    let exists = inner
        .lock()
        .store
        .get(&t.rt.storage, &t.ns, &name)
        .is_some();
    let sub = t.sub.clone();
    if !exists && sub.is_none() {
        let mut body = applied.clone();
        if let Some(m) = body["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        if body["metadata"]["name"].is_null() {
            body["metadata"]["name"] = json!(name);
        }
        let mf = patch::apply_managed(&t.rt, &Value::Null, &manager, None, &applied);
        let create_t = Target {
            rt: t.rt.clone(),
            ns: t.ns.clone(),
            name: None,
            sub: None,
        };
        return create_object(inner, req, &create_t, body, Some(mf))
            .await
            .map(|o| (201, o));
    }
    let out = modify(inner, req, t, 5, None, |cur| {
        patch::apply(cur, &applied, &manager, sub.as_deref(), force, &t.rt)
    })
    .await?;
    Ok((200, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_patch_test_of_a_missing_path_against_null_passes_like_kube() {
        let doc = json!({"metadata": {"name": "x"}});
        let ops: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        let mut plain = doc.clone();
        assert!(
            json_patch::patch(&mut plain, &ops).is_err(),
            "the crate alone refuses it"
        );
        let mut patched = doc.clone();
        assert!(json_patch::patch(&mut patched, &go_compatible(&doc, &ops)).is_ok());
        assert_eq!(patched["metadata"]["finalizers"], json!(["f"]));
        let guarded = serde_json::from_value(
            json!([{"op": "test", "path": "/metadata/name", "value": null}]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            json_patch::patch(&mut doc.clone(), &go_compatible(&doc, &guarded)).is_err(),
            "present values are still tested"
        );
    }
}
