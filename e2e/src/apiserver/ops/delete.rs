//! DELETE and DELETE collection: finalizers, graceful and cascading deletion,
//! namespaces.

use super::crd::rebuild_registry;
use super::object::{CRD_STORAGE, NS_STORAGE, finalizers, meta_str, present};
use super::read::list;
use crate::apiserver::Inner;
use crate::apiserver::State;
use crate::apiserver::admission::{self, Attrs};
use crate::apiserver::error::ApiError;
use crate::apiserver::request::Req;
use crate::apiserver::request::Target;
use crate::apiserver::store::key_of;
use crate::apiserver::store::now;
use serde_json::Value;
use serde_json::json;
use std::sync::Arc;

/// The finalizer of a foreground deletion (k8s.io/apimachinery metav1.FinalizerDeleteDependents).
const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an orphaning deletion (metav1.FinalizerOrphanDependents).
const ORPHAN: &str = "orphan";

/// Sets `deletionTimestamp` the first time an object is marked for deletion, bumping a
/// non-zero `metadata.generation` as kube does (k8s.io/apiserver pkg/registry/generic/
/// registry/store.go `markAsDeleting`; pkg/registry/rest/delete.go `BeforeDelete`), so
/// controllers see the deletion as a spec change.
fn set_deleting(o: &mut Value) {
    if o["metadata"]["deletionTimestamp"].is_null() {
        o["metadata"]["deletionTimestamp"] = json!(now());
        o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if let Some(g) = o["metadata"]["generation"].as_i64().filter(|g| *g > 0) {
            o["metadata"]["generation"] = json!(g + 1);
        }
    }
}

/// Marks an object deleted (finalizers) or removes it, with cascades. Returns the result.
fn mark_deleted(st: &mut State, storage: &str, obj: &Value) -> Value {
    let (ns, name) = key_of(obj);
    if storage == NS_STORAGE {
        return delete_namespace(st, &name);
    }
    if !finalizers(obj).is_empty() {
        if obj["metadata"]["deletionTimestamp"].is_null() {
            let mut o = obj.clone();
            set_deleting(&mut o);
            return st.store.put(storage, o);
        }
        return obj.clone();
    }
    remove_object(st, storage, &ns, &name).unwrap_or_else(|| obj.clone())
}

/// Drops the owner reference to `uid` from every dependent, as the garbage collector
/// does for an orphaning deletion (k8s.io/kubernetes pkg/controller/garbagecollector/
/// garbagecollector.go `orphanDependents`); an emptied list goes away.
fn orphan_dependents(st: &mut State, uid: &str) {
    for (storage, mut dependent) in st.store.owned_by(uid) {
        drop_owner_ref(&mut dependent, uid);
        st.store.put(&storage, dependent);
    }
}

fn drop_owner_ref(obj: &mut Value, uid: &str) {
    if let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() {
        refs.retain(|r| r["uid"].as_str() != Some(uid));
        if refs.is_empty()
            && let Some(m) = obj["metadata"].as_object_mut()
        {
            m.remove("ownerReferences");
        }
    }
}

/// Whether a dependent blocks a foreground deletion of `uid` (`blockOwnerDeletion: true`).
fn blocks(dependent: &Value, uid: &str) -> bool {
    dependent["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["uid"].as_str() == Some(uid) && r["blockOwnerDeletion"] == json!(true))
}

/// Completes a foreground deletion whose blocking dependents are all gone: the garbage
/// collector removes the `foregroundDeletion` finalizer (garbagecollector.go
/// `processDeletingDependentsItem`), and the owner goes once no finalizer is left.
fn release_foreground(st: &mut State, uid: &str) {
    let Some((storage, mut owner)) = st.store.by_uid(uid) else {
        return;
    };
    if owner["metadata"]["deletionTimestamp"].is_null()
        || !finalizers(&owner).iter().any(|f| f == FOREGROUND)
    {
        return;
    }
    if st.store.owned_by(uid).iter().any(|(_, d)| blocks(d, uid)) {
        return;
    }
    if let Some(list) = owner["metadata"]["finalizers"].as_array_mut() {
        list.retain(|f| f.as_str() != Some(FOREGROUND));
    }
    if finalizers(&owner).is_empty() {
        let (ns, name) = key_of(&owner);
        remove_object(st, &storage, &ns, &name);
    } else {
        st.store.put(&storage, owner);
    }
}

/// A foreground deletion (DeleteOptions `propagationPolicy: Foreground`): the owner is
/// kept, with `deletionTimestamp` and the `foregroundDeletion` finalizer, until every
/// dependent with `blockOwnerDeletion: true` is gone; dependents are deleted meanwhile
/// (k8s.io/apiserver store.go `deletionFinalizersForGarbageCollection`, garbage collector).
fn delete_foreground(st: &mut State, storage: &str, obj: &Value) -> Value {
    let uid = meta_str(obj, "uid").to_string();
    let mut o = obj.clone();
    set_deleting(&mut o);
    if !finalizers(&o).iter().any(|f| f == FOREGROUND) {
        if !o["metadata"]["finalizers"].is_array() {
            o["metadata"]["finalizers"] = json!([]);
        }
        if let Some(list) = o["metadata"]["finalizers"].as_array_mut() {
            list.push(json!(FOREGROUND));
        }
    }
    let (ns, name) = key_of(&o);
    st.store.put(storage, o);
    for (s, dependent) in st.store.owned_by(&uid) {
        mark_deleted(st, &s, &dependent);
    }
    release_foreground(st, &uid);
    st.store
        .get(storage, &ns, &name)
        .cloned()
        .unwrap_or_else(|| obj.clone())
}

fn delete_namespace(st: &mut State, name: &str) -> Value {
    let Some(mut nso) = st.store.get(NS_STORAGE, "", name).cloned() else {
        return Value::Null;
    };
    if nso["metadata"]["deletionTimestamp"].is_null() {
        nso["metadata"]["deletionTimestamp"] = json!(now());
        nso["status"] = json!({"phase": "Terminating"});
        nso = st.store.put(NS_STORAGE, nso);
    }
    for (storage, obj) in st.store.in_namespace(name) {
        mark_deleted(st, &storage, &obj);
    }
    try_finish_namespace(st, name).unwrap_or(nso)
}

fn try_finish_namespace(st: &mut State, name: &str) -> Option<Value> {
    let nso = st.store.get(NS_STORAGE, "", name)?;
    if nso["metadata"]["deletionTimestamp"].is_null() || !finalizers(nso).is_empty() {
        return None;
    }
    if !st.store.in_namespace(name).is_empty() {
        return None;
    }
    st.store.remove(NS_STORAGE, "", name)
}

/// Removes an object for good: garbage-collects dependents, drops a CRD's
/// resources, and completes a terminating namespace that became empty.
pub(super) fn remove_object(st: &mut State, storage: &str, ns: &str, name: &str) -> Option<Value> {
    let removed = st.store.remove(storage, ns, name)?;
    if let Some(uid) = removed["metadata"]["uid"].as_str() {
        // Background cascade (garbagecollector.go `attemptToDeleteItem`): a dependent
        // that still has a live owner only loses the dangling reference.
        for (s, mut dependent) in st.store.owned_by(uid) {
            let other_owner_alive = dependent["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["uid"].as_str())
                .any(|u| u != uid && st.store.by_uid(u).is_some());
            if other_owner_alive {
                drop_owner_ref(&mut dependent, uid);
                st.store.put(&s, dependent);
            } else {
                mark_deleted(st, &s, &dependent);
            }
        }
    }
    // A dependent going may complete its owner's foreground deletion.
    for owner in removed["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
    {
        release_foreground(st, owner);
    }
    if storage == CRD_STORAGE {
        let group = removed["spec"]["group"].as_str().unwrap_or_default();
        let plural = removed["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or_default();
        let cr_storage = format!("{group}/{plural}");
        let keys: Vec<(String, String)> = st
            .store
            .list(&cr_storage, None)
            .into_iter()
            .map(key_of)
            .collect();
        for (n, m) in keys {
            st.store.remove(&cr_storage, &n, &m);
        }
        rebuild_registry(st);
    }
    if !ns.is_empty() {
        try_finish_namespace(st, ns);
    }
    Some(removed)
}

/// Options of a DELETE, from the body or the query.
fn delete_options(req: &Req) -> Value {
    let mut opts = if req.body.is_empty() {
        json!({})
    } else {
        req.json_body().unwrap_or_else(|_| json!({}))
    };
    if let Some(p) = req.q("propagationPolicy") {
        opts["propagationPolicy"] = json!(p);
    }
    if let Some(o) = req.q("orphanDependents") {
        opts["orphanDependents"] = json!(o == "true");
    }
    opts
}

/// DELETE of one object.
pub(in crate::apiserver) async fn delete(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
) -> Result<Value, ApiError> {
    let rt = &t.rt;
    let name = t.name.clone().unwrap_or_default();
    let cur = {
        let st = inner.lock();
        st.store
            .get(&rt.storage, &t.ns, &name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, &name))?
    };
    let opts = delete_options(req);
    // k8s.io/apiserver pkg/apis/meta/validation `ValidateDeleteOptions`.
    if let Some(p) = opts["propagationPolicy"].as_str() {
        if !matches!(p, "Foreground" | "Background" | "Orphan") {
            return Err(ApiError::custom(
                422,
                "Invalid",
                format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                ),
            ));
        }
        if !opts["orphanDependents"].is_null() {
            return Err(ApiError::custom(
                422,
                "Invalid",
                format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Invalid value: {p:?}: orphanDependents and deletionPropagation cannot be both set"
                ),
            ));
        }
    }
    let pre = &opts["preconditions"];
    if let Some(uid) = pre["uid"].as_str()
        && Some(uid) != cur["metadata"]["uid"].as_str()
    {
        return Err(ApiError::conflict_msg(
            rt,
            &name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(&cur, "uid")
            ),
        ));
    }
    if let Some(rv) = pre["resourceVersion"].as_str()
        && Some(rv) != cur["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::conflict_msg(
            rt,
            &name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                meta_str(&cur, "resourceVersion")
            ),
        ));
    }
    let cur_p = present(rt, &cur);
    let attrs = Attrs {
        rt,
        sub: None,
        op: "DELETE",
        ns: &t.ns,
        name: &name,
        user: &req.user,
        old: Some(&cur_p),
        dry_run: req.dry_run(),
        warnings: &req.warnings,
    };
    admission::validate(inner, &attrs, None).await?;
    if req.dry_run() {
        return Ok(cur_p);
    }
    let mut st = inner.lock();
    let Some(cur) = st.store.get(&rt.storage, &t.ns, &name).cloned() else {
        return Err(ApiError::not_found(rt, &name));
    };
    // Which dependents policy applies (k8s.io/apiserver store.go
    // `deletionFinalizersForGarbageCollection`): the request's, else the object's own
    // `orphan`/`foregroundDeletion` finalizer, else background.
    let policy = match (
        opts["propagationPolicy"].as_str(),
        opts["orphanDependents"].as_bool(),
    ) {
        (Some(p), _) => p.to_string(),
        (None, Some(true)) => "Orphan".into(),
        (None, Some(false)) => "Background".into(),
        (None, None) if finalizers(&cur).iter().any(|f| f == ORPHAN) => "Orphan".into(),
        (None, None) if finalizers(&cur).iter().any(|f| f == FOREGROUND) => "Foreground".into(),
        _ => "Background".into(),
    };
    let out = match policy.as_str() {
        "Orphan" => {
            // The garbage collector strips the owner reference from every dependent,
            // then removes its `orphan` finalizer; done here at once.
            let uid = meta_str(&cur, "uid").to_string();
            orphan_dependents(&mut st, &uid);
            let mut cur = cur.clone();
            if let Some(list) = cur["metadata"]["finalizers"].as_array_mut() {
                list.retain(|f| f.as_str() != Some(ORPHAN));
            }
            mark_deleted(&mut st, &rt.storage, &cur)
        }
        "Foreground" => delete_foreground(&mut st, &rt.storage, &cur),
        _ => mark_deleted(&mut st, &rt.storage, &cur),
    };
    inner.notify(st.store.rv);
    Ok(present(rt, &out))
}

/// DELETE of a collection (with selectors).
pub(in crate::apiserver) async fn delete_collection(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
) -> Result<Value, ApiError> {
    let list = list(inner, req, t)?;
    let mut st = inner.lock();
    let mut items = Vec::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let (ns, name) = key_of(item);
        if let Some(cur) = st.store.get(&t.rt.storage, &ns, &name).cloned() {
            items.push(present(&t.rt, &mark_deleted(&mut st, &t.rt.storage, &cur)));
        }
    }
    inner.notify(st.store.rv);
    Ok(
        json!({"kind": format!("{}List", t.rt.kind), "apiVersion": t.rt.api_version(),
        "metadata": {"resourceVersion": st.store.rv.to_string()}, "items": items}),
    )
}
