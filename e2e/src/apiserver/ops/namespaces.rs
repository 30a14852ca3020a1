//! Namespaces: whether one accepts new content, and what kube's controllers
//! put in every new one.

use super::object::NS_STORAGE;
use crate::apiserver::State;
use crate::apiserver::error::ApiError;
use crate::apiserver::error::qualified;
use crate::apiserver::registry::ResourceType;
use crate::apiserver::store::now;
use serde_json::json;

/// Ensures a namespace exists and accepts new content.
pub(super) fn check_namespace(
    st: &State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    if !rt.namespaced {
        return Ok(());
    }
    let Some(nso) = st.store.get(NS_STORAGE, "", ns) else {
        return Err(ApiError::namespace_not_found(ns));
    };
    if !nso["metadata"]["deletionTimestamp"].is_null() {
        return Err(ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            qualified(rt)
        )));
    }
    Ok(())
}

/// Creates the content kube's controllers add to every namespace.
pub(in crate::apiserver) fn seed_namespace(st: &mut State, name: &str, ca_pem: &str) {
    if st.store.get(NS_STORAGE, "", name).is_none() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": name, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
            "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        st.store.put(NS_STORAGE, ns);
    }
    seed_namespace_content(st, name, ca_pem);
}

pub(super) fn seed_namespace_content(st: &mut State, name: &str, ca_pem: &str) {
    if st.store.get("/serviceaccounts", name, "default").is_none() {
        st.store.put(
            "/serviceaccounts",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name,
                "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now()}}),
        );
    }
    if st
        .store
        .get("/configmaps", name, "kube-root-ca.crt")
        .is_none()
    {
        st.store.put(
            "/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": name,
                "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
                "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                "data": {"ca.crt": ca_pem}}),
        );
    }
}
