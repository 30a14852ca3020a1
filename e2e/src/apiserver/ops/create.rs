//! CREATE (POST): from the request body through admission to the store.

use super::checks::{builtin_checks, schema_pipeline};
use super::crd::rebuild_registry;
use super::defaults::{no_service_account, pod_defaults, prepare_create, service_account_admit};
use super::namespaces::{check_namespace, seed_namespace_content};
use super::object::{
    check_type, ensure_object, meta_str, name_problem, present, random_suffix, to_storage,
};
use crate::apiserver::Inner;
use crate::apiserver::admission::{self, Attrs};
use crate::apiserver::error::ApiError;
use crate::apiserver::error::Cause;
use crate::apiserver::patch;
use crate::apiserver::registry::{ResourceType, Special};
use crate::apiserver::request::Req;
use crate::apiserver::request::Target;
use crate::apiserver::store::now;
use crate::apiserver::validation;
use serde_json::Value;
use serde_json::json;
use std::sync::Arc;

/// CREATE (POST), also used by server-side apply of a new object.
pub(in crate::apiserver) async fn create(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
) -> Result<Value, ApiError> {
    let body = req.json_body()?;
    create_object(inner, req, t, body, None).await
}

pub(in crate::apiserver) async fn create_object(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
    body: Value,
    managed: Option<Value>,
) -> Result<Value, ApiError> {
    let rt = &t.rt;
    let (obj, generate) = received(t, body)?;
    let name = meta_str(&obj, "name").to_string();
    check_namespace(&inner.lock(), rt, &t.ns, &name)?;
    let obj = admitted(inner, req, t, obj, &name, generate).await?;
    let object_name = meta_str(&obj, "name").to_string();
    let mut obj = to_storage(rt, &obj);
    obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    obj["metadata"]["creationTimestamp"] = json!(now());
    if rt.generation {
        obj["metadata"]["generation"] = json!(1);
    }
    match managed {
        Some(mf) => obj["metadata"]["managedFields"] = mf,
        None => patch::record_update(rt, None, &mut obj, &req.manager(), None),
    }
    if req.dry_run() {
        return Ok(present(rt, &obj));
    }
    let stored = {
        let mut st = inner.lock();
        check_namespace(&st, rt, &t.ns, &object_name)?;
        if st.store.get(&rt.storage, &t.ns, &object_name).is_some() {
            return Err(ApiError::already_exists(rt, &object_name));
        }
        let stored = st.store.put(&rt.storage, obj);
        match rt.special {
            Special::Namespace => seed_namespace_content(&mut st, &object_name, &inner.ca_pem),
            Special::Crd => rebuild_registry(&mut st),
            _ => {}
        }
        inner.notify(st.store.rv);
        stored
    };
    Ok(present(rt, &stored))
}

/// The body of a create in its stored form, checked as kube checks it before
/// admission (namespace, name or generateName, no server-set fields), and
/// whether its name is still to be generated.
fn received(t: &Target, body: Value) -> Result<(Value, bool), ApiError> {
    let rt = &t.rt;
    let mut obj = body;
    ensure_object(&mut obj, "the object to create")?;
    check_type(rt, &obj)?;
    let mut obj = to_storage(rt, &obj);
    if rt.namespaced {
        let body_ns = meta_str(&obj, "namespace");
        if !body_ns.is_empty() && body_ns != t.ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        obj["metadata"]["namespace"] = json!(t.ns);
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    // generateName: kube generates the name in the store's BeforeCreate, after
    // mutating admission (k8s.io/apiserver pkg/endpoints/handlers/create.go admits
    // first; pkg/registry/rest/create.go BeforeCreate generates), so mutating
    // webhooks see an empty name.
    let generate = meta_str(&obj, "name").is_empty();
    if generate {
        let prefix = meta_str(&obj, "generateName").to_string();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                rt,
                "",
                vec![Cause {
                    reason: "FieldValueRequired",
                    field: "metadata.name".into(),
                    message: "Required value: name or generateName is required".into(),
                }],
            ));
        }
    }
    if !generate {
        check_name(rt, meta_str(&obj, "name"))?;
    }
    if !meta_str(&obj, "resourceVersion").is_empty() {
        // kube's storage refuses this with a plain (500) error; so do we.
        return Err(ApiError::internal_plain(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            m.remove(k);
        }
        m.remove("managedFields");
    }
    Ok((obj, generate))
}

/// A name kube accepts for `rt` (events are not checked).
fn check_name(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
    let is_event = matches!(rt.special, Special::CoreEvent | Special::EventsV1);
    match name_problem(name, rt.special == Special::Namespace) {
        Some(problem) if !is_event => Err(ApiError::invalid(
            rt,
            name,
            vec![Cause {
                reason: "FieldValueInvalid",
                field: "metadata.name".into(),
                message: problem,
            }],
        )),
        _ => Ok(()),
    }
}

/// The object through admission: defaults, the ServiceAccount plugin,
/// mutating webhooks, the generated name, schema and built-in checks,
/// validating webhooks. Returns its served form.
async fn admitted(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
    mut obj: Value,
    name: &str,
    generate: bool,
) -> Result<Value, ApiError> {
    let rt = &t.rt;
    prepare_create(rt, &mut obj)?;
    if rt.special == Special::Pod {
        service_account_admit(&inner.lock(), &t.ns, &mut obj)?;
    }
    let presented = present(rt, &obj);
    let attrs = Attrs {
        rt,
        sub: None,
        op: "CREATE",
        ns: &t.ns,
        name,
        user: &req.user,
        old: None,
        dry_run: req.dry_run(),
        warnings: &req.warnings,
    };
    let mut obj = admission::mutate(inner, &attrs, presented).await?;
    // The webhook's result is decoded with defaulting, as the first body was
    // (k8s.io/apiserver pkg/admission/plugin/webhook/mutating/dispatcher.go:
    // the patched object goes through the scheme's defaulter): a container a
    // webhook adds is stored with its defaults, as later updates send it.
    if rt.special == Special::Pod && obj["spec"].is_object() {
        pod_defaults(&mut obj["spec"]);
    }
    if generate && meta_str(&obj, "name").is_empty() {
        let prefix = meta_str(&obj, "generateName").to_string();
        obj["metadata"]["name"] = json!(format!("{prefix}{}", random_suffix()));
    }
    let object_name = meta_str(&obj, "name").to_string();
    if generate {
        check_name(rt, &object_name)?;
    }
    schema_pipeline(rt, req, &mut obj, None)?;
    if rt.special == Special::Webhook {
        validation::default_webhooks(&mut obj);
    }
    builtin_checks(rt, &obj)?;
    if rt.special == Special::Pod {
        // The ServiceAccount plugin's Validate runs again after the mutating webhooks.
        let sa = obj["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or_default();
        if inner
            .lock()
            .store
            .get("/serviceaccounts", &t.ns, sa)
            .is_none()
        {
            return Err(no_service_account(&object_name, &t.ns, sa));
        }
    }
    admission::validate(inner, &attrs, Some(&obj)).await?;
    Ok(obj)
}
