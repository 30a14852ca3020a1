//! The verbs: get, list, create, update, patch, delete, and what they do to
//! stored objects (status/main split, generation, finalizers, cascades).

use super::admission::{self, Attrs};
use super::error::{ApiError, Cause, qualified};
use super::registry::{Registry, ResourceType, Special};
use super::request::{Req, Target};
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{key_of, rv_of};
use super::{Inner, State, patch, schema, validation};
use base64::Engine as _;
use serde_json::{Value, json};
use std::sync::Arc;

const CRD_STORAGE: &str = "apiextensions.k8s.io/customresourcedefinitions";
const NS_STORAGE: &str = "/namespaces";

/// RFC 3339 timestamp with second precision, as in `metadata.creationTimestamp`.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

const EVENT_RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(obj: &mut Value, from_core: bool) {
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
fn to_storage(rt: &ResourceType, obj: &Value) -> Value {
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

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

fn ensure_object(v: &mut Value, what: &str) -> Result<(), ApiError> {
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

fn check_type(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
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
fn name_problem(name: &str, label: bool) -> Option<String> {
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

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// GET of one object.
pub(super) fn get(inner: &Inner, t: &Target, name: &str) -> Result<Value, ApiError> {
    let st = inner.lock();
    let obj = st
        .store
        .get(&t.rt.storage, &t.ns, name)
        .ok_or_else(|| ApiError::not_found(&t.rt, name))?;
    Ok(present(&t.rt, obj))
}

/// Label and field selectors of a list or watch request.
pub(super) fn selectors(
    req: &Req,
    rt: &ResourceType,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(req.q("labelSelector").unwrap_or_default())?;
    let fields = FieldSelector::parse(
        req.q("fieldSelector").unwrap_or_default(),
        &rt.fields,
        &rt.kind,
    )?;
    Ok((labels, fields))
}

/// Whether a stored object matches the selectors, evaluated on its served form.
pub(super) fn matches(
    rt: &ResourceType,
    obj: &Value,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> bool {
    if !labels.matches(&obj["metadata"]["labels"]) {
        return false;
    }
    // Field labels of both event APIs are accepted; evaluate on the matching form.
    let core = fields.matches(obj);
    if rt.special == Special::EventsV1 || rt.special == Special::CoreEvent {
        return core || fields.matches(&present_events_v1(obj));
    }
    core
}

fn present_events_v1(obj: &Value) -> Value {
    let mut out = obj.clone();
    rename(&mut out, true);
    out
}

/// LIST.
pub(super) fn list(inner: &Inner, req: &Req, t: &Target) -> Result<Value, ApiError> {
    let (labels, fields) = selectors(req, &t.rt)?;
    let limit: usize = req
        .q("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let after: Option<(String, String)> = match req.q("continue") {
        Some(token) => {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|b| serde_json::from_slice::<(String, String)>(&b).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("the continue token is not valid; restart the list")
                })?;
            Some(raw)
        }
        None => None,
    };
    let st = inner.lock();
    let ns = if t.ns.is_empty() {
        None
    } else {
        Some(t.ns.as_str())
    };
    let mut items = Vec::new();
    let mut more = false;
    for obj in st.store.list(&t.rt.storage, ns) {
        if after.as_ref().is_some_and(|a| key_of(obj) <= *a) {
            continue;
        }
        if !matches(&t.rt, obj, &labels, &fields) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(present(&t.rt, obj));
    }
    let mut meta = json!({"resourceVersion": st.store.rv.to_string()});
    if more && let Some(last) = items.last() {
        let token = serde_json::to_vec(&key_of(last)).unwrap_or_default();
        meta["continue"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token));
    }
    Ok(
        json!({"kind": format!("{}List", t.rt.kind), "apiVersion": t.rt.api_version(), "metadata": meta, "items": items}),
    )
}

/// Ensures a namespace exists and accepts new content.
fn check_namespace(st: &State, rt: &ResourceType, ns: &str, name: &str) -> Result<(), ApiError> {
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
pub(super) fn seed_namespace(st: &mut State, name: &str, ca_pem: &str) {
    if st.store.get(NS_STORAGE, "", name).is_none() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": name, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
            "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        st.store.put(NS_STORAGE, ns);
    }
    seed_namespace_content(st, name, ca_pem);
}

fn seed_namespace_content(st: &mut State, name: &str, ca_pem: &str) {
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

/// Fills the defaults and server-set fields kube sets on create.
fn prepare_create(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
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

fn is_deployment(rt: &ResourceType) -> bool {
    rt.group == "apps" && rt.kind == "Deployment" && rt.crd.is_none()
}

/// The defaults kube's v1 Pod defaulting sets (k8s.io/kubernetes pkg/apis/core/v1/defaults.go
/// `SetDefaults_PodSpec`, `SetDefaults_Container`, `SetDefaults_ProjectedVolumeSource`,
/// `SetDefaults_ServiceAccountTokenProjection`). Applied to every create and update body, as
/// kube decodes each with defaulting, so an update that omits a defaulted field changes nothing.
fn pod_defaults(spec: &mut Value) {
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
fn deployment_defaults(obj: &mut Value) {
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
fn no_service_account(name: &str, ns: &str, sa: &str) -> ApiError {
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
fn service_account_admit(st: &State, ns: &str, obj: &mut Value) -> Result<(), ApiError> {
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

fn move_string_data(obj: &mut Value) {
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

/// Validates a CRD's basics and computes its status (kept from `old` on updates).
fn crd_prepare(obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
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
        for v in super::cel_cost::check_crd(obj) {
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

/// Metadata, Secret and Pod checks kube-apiserver makes on every write.
fn builtin_checks(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
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
fn update_checks(
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
fn schema_pipeline(
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

fn strip(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(m) = out.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    out
}

fn same_ignoring_rv(a: &Value, b: &Value) -> bool {
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

/// CREATE (POST), also used by server-side apply of a new object.
pub(super) async fn create(inner: &Arc<Inner>, req: &Req, t: &Target) -> Result<Value, ApiError> {
    let body = req.json_body()?;
    create_object(inner, req, t, body, None).await
}

pub(super) async fn create_object(
    inner: &Arc<Inner>,
    req: &Req,
    t: &Target,
    body: Value,
    managed: Option<Value>,
) -> Result<Value, ApiError> {
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
    let name = meta_str(&obj, "name").to_string();
    let is_event = matches!(rt.special, Special::CoreEvent | Special::EventsV1);
    let check_name = |name: &str| -> Result<(), ApiError> {
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
    };
    if !generate {
        check_name(&name)?;
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
    check_namespace(&inner.lock(), rt, &t.ns, &name)?;
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
        name: &name,
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
        check_name(&object_name)?;
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

fn rebuild_registry(st: &mut State) {
    let crds: Vec<Value> = st
        .store
        .list(CRD_STORAGE, None)
        .into_iter()
        .cloned()
        .collect();
    st.registry = Arc::new(Registry::new(&crds));
}

/// Applies the main/status split, immutable metadata and preconditions of an update.
fn prepare_update(
    rt: &ResourceType,
    t: &Target,
    old: &Value,
    mut new: Value,
) -> Result<Value, ApiError> {
    ensure_object(&mut new, "the updated object")?;
    check_type(rt, &new)?;
    let name = t.name.clone().unwrap_or_default();
    let body_name = meta_str(&new, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if rt.namespaced {
        let body_ns = meta_str(&new, "namespace");
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
        return Ok(out);
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
                &name,
                vec![Cause {
                    reason: "FieldValueForbidden",
                    field: field.into(),
                    message: "Forbidden: field is immutable when `immutable` is set".into(),
                }],
            ));
        }
    }
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
    if !old["metadata"]["deletionTimestamp"].is_null() {
        let before = finalizers(old);
        let added: Vec<String> = finalizers(&out)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                rt,
                &name,
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
    Ok(out)
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
pub(super) async fn update(inner: &Arc<Inner>, req: &Req, t: &Target) -> Result<Value, ApiError> {
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
pub(super) async fn patch(
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
fn remove_object(st: &mut State, storage: &str, ns: &str, name: &str) -> Option<Value> {
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
pub(super) async fn delete(inner: &Arc<Inner>, req: &Req, t: &Target) -> Result<Value, ApiError> {
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
pub(super) async fn delete_collection(
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

/// Looks up a stored object by storage key (for admission namespace labels and tokens).
pub(super) fn stored(inner: &Inner, storage: &str, ns: &str, name: &str) -> Option<Value> {
    inner.lock().store.get(storage, ns, name).cloned()
}

/// All stored objects of a storage (webhook configurations).
pub(super) fn stored_all(inner: &Inner, storage: &str) -> Vec<Value> {
    inner
        .lock()
        .store
        .list(storage, None)
        .into_iter()
        .cloned()
        .collect()
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
