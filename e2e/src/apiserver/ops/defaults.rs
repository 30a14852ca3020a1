//! What kube fills in on create: server-set fields, Pod and Deployment
//! defaults, the ServiceAccount admission plugin, Secret `stringData`.

use super::crd::crd_prepare;
use super::object::{meta_str, random_suffix};
use crate::apiserver::State;
use crate::apiserver::error::ApiError;
use crate::apiserver::error::Cause;
use crate::apiserver::registry::ResourceType;
use crate::apiserver::registry::Special;
use base64::Engine as _;
use serde_json::Value;
use serde_json::json;

/// Fills the defaults and server-set fields kube sets on create.
pub(super) fn prepare_create(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    match rt.special {
        Special::Namespace => {
            let name = meta_str(obj, "name").to_string();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        Special::Pod => {
            if !obj["spec"].is_object() {
                obj["spec"] = json!({});
            }
            // k8s.io/kubernetes pkg/apis/core/validation/validation.go
            // `ValidatePodCreate`: ephemeral containers come only through the
            // `ephemeralcontainers` subresource of an existing pod.
            if obj["spec"]["ephemeralContainers"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
            {
                return Err(ApiError::invalid(
                    rt,
                    meta_str(obj, "name"),
                    vec![Cause {
                        reason: "FieldValueForbidden",
                        field: "spec.ephemeralContainers".into(),
                        message: "Forbidden: cannot be set on create".into(),
                    }],
                ));
            }
            pod_defaults(&mut obj["spec"]);
            obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
        }
        _ if is_deployment(rt) => deployment_defaults(obj),
        Special::None if rt.kind == "Secret" => {
            if obj["type"].is_null() {
                obj["type"] = json!("Opaque");
            }
            move_string_data(obj);
        }
        Special::Crd => crd_prepare(obj, None)?,
        // A kubelet registers its Node with its status (node/strategy.go
        // `PrepareForCreate` does not clear it).
        Special::None if rt.kind == "Node" && rt.group.is_empty() => {}
        _ => {
            if rt.status
                && let Some(m) = obj.as_object_mut()
            {
                m.remove("status");
            }
        }
    }
    Ok(())
}

pub(super) fn is_deployment(rt: &ResourceType) -> bool {
    rt.group == "apps" && rt.kind == "Deployment" && rt.crd.is_none()
}

/// The defaults kube's v1 Pod defaulting sets (k8s.io/kubernetes pkg/apis/core/v1/defaults.go
/// `SetDefaults_PodSpec`, `SetDefaults_Container`, `SetDefaults_ProjectedVolumeSource`,
/// `SetDefaults_ServiceAccountTokenProjection`). Applied to every create and update body, as
/// kube decodes each with defaulting, so an update that omits a defaulted field changes nothing.
pub(super) fn pod_defaults(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    // The deprecated `serviceAccount` is the v1 spelling of `serviceAccountName` (conversion.go).
    if spec["serviceAccountName"].is_null()
        && let Some(sa) = spec["serviceAccount"].as_str().filter(|s| !s.is_empty())
    {
        spec["serviceAccountName"] = json!(sa);
    }
    // ... and v1 output always carries the alias.
    if let Some(sa) = spec["serviceAccountName"].as_str().map(str::to_string) {
        spec["serviceAccount"] = json!(sa);
    }
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("enableServiceLinks", json!(true)),
        ("securityContext", json!({})),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    // `SetDefaults_EphemeralContainer` defaults its common part as a container's.
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            if c["imagePullPolicy"].is_null() {
                let image = c["image"].as_str().unwrap_or_default();
                let latest = image.ends_with(":latest")
                    || !image.rsplit('/').next().unwrap_or("").contains(':');
                c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
            }
            for (k, v) in [
                ("terminationMessagePath", json!("/dev/termination-log")),
                ("terminationMessagePolicy", json!("File")),
                ("resources", json!({})),
            ] {
                if c[k].is_null() {
                    c[k] = v;
                }
            }
        }
    }
    for v in spec["volumes"].as_array_mut().into_iter().flatten() {
        if v["projected"].is_object() {
            if v["projected"]["defaultMode"].is_null() {
                v["projected"]["defaultMode"] = json!(420);
            }
            for src in v["projected"]["sources"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                if src["serviceAccountToken"].is_object()
                    && src["serviceAccountToken"]["expirationSeconds"].is_null()
                {
                    src["serviceAccountToken"]["expirationSeconds"] = json!(3600);
                }
            }
        }
    }
}

/// apps/v1 Deployment defaults (k8s.io/kubernetes pkg/apis/apps/v1/defaults.go
/// `SetDefaults_Deployment`) and the template's pod defaults.
pub(super) fn deployment_defaults(obj: &mut Value) {
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return;
    }
    for (k, v) in [
        ("replicas", json!(1)),
        ("revisionHistoryLimit", json!(10)),
        ("progressDeadlineSeconds", json!(600)),
        (
            "strategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
        ),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
    if spec["template"].is_object() {
        pod_defaults(&mut spec["template"]["spec"]);
    }
}

/// Mount path of the service-account volume (plugin/pkg/admission/serviceaccount/admission.go
/// `DefaultAPITokenMountPath`).
const SA_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The ServiceAccount admission plugin's refusal when the pod's service account is missing.
pub(super) fn no_service_account(name: &str, ns: &str, sa: &str) -> ApiError {
    let who = if name.is_empty() {
        "pods".to_string()
    } else {
        format!("pods \"{name}\"")
    };
    ApiError::forbidden(format!(
        "{who} is forbidden: error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found"
    ))
}

/// The ServiceAccount admission plugin's mutation of a new pod (k8s.io/kubernetes
/// plugin/pkg/admission/serviceaccount/admission.go `Admit`, `shouldAutomount`,
/// `mountServiceAccountToken`, `TokenVolumeSource`). It runs before the mutating
/// webhooks: it sets `serviceAccountName` (default `default`), refuses a missing service
/// account (403), copies the account's imagePullSecrets when the pod has none, and unless
/// `automountServiceAccountToken` is false (pod first, then account) adds the
/// `kube-api-access-<5 chars>` projected volume, mounted read-only at
/// /var/run/secrets/kubernetes.io/serviceaccount in every init container and container
/// that has no mount there yet. Mirror pods are left alone.
pub(super) fn service_account_admit(st: &State, ns: &str, obj: &mut Value) -> Result<(), ApiError> {
    if !obj["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_null() {
        return Ok(());
    }
    let spec = &mut obj["spec"];
    if spec["serviceAccountName"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        spec["serviceAccountName"] = json!("default");
    }
    let sa_name = spec["serviceAccountName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let Some(sa) = st.store.get("/serviceaccounts", ns, &sa_name) else {
        return Err(no_service_account(name, ns, &sa_name));
    };
    let spec = &mut obj["spec"];
    // The v1 form carries the deprecated alias too.
    spec["serviceAccount"] = json!(sa_name);
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| sa["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    if automount {
        let existing = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .find(|n| n.starts_with("kube-api-access-"))
            .map(str::to_string);
        let volume = existing
            .clone()
            .unwrap_or_else(|| format!("kube-api-access-{}", random_suffix()));
        let mount = json!({"name": volume, "readOnly": true, "mountPath": SA_MOUNT_PATH});
        let mut needed = false;
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_array_mut().into_iter().flatten() {
                let has = c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["mountPath"].as_str() == Some(SA_MOUNT_PATH));
                if has {
                    continue;
                }
                if !c["volumeMounts"].is_array() {
                    c["volumeMounts"] = json!([]);
                }
                if let Some(mounts) = c["volumeMounts"].as_array_mut() {
                    mounts.push(mount.clone());
                }
                needed = true;
            }
        }
        if existing.is_none() && needed {
            if !spec["volumes"].is_array() {
                spec["volumes"] = json!([]);
            }
            if let Some(vols) = spec["volumes"].as_array_mut() {
                vols.push(json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ]}}));
            }
        }
    }
    if spec["imagePullSecrets"]
        .as_array()
        .is_none_or(|a| a.is_empty())
        && let Some(pull) = sa["imagePullSecrets"].as_array().filter(|a| !a.is_empty())
    {
        let names: Vec<Value> = pull.iter().map(|p| json!({"name": p["name"]})).collect();
        spec["imagePullSecrets"] = json!(names);
    }
    Ok(())
}

pub(super) fn move_string_data(obj: &mut Value) {
    let Some(string_data) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    for (k, v) in string_data.as_object().into_iter().flatten() {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default());
        obj["data"][k] = json!(encoded);
    }
}
