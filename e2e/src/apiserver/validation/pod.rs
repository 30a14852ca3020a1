//! Pods: the spec's containers and volumes, and what an update (or an
//! `ephemeralcontainers` update) may change.

use super::{invalid, required};
use crate::apiserver::error::Cause;
use serde_json::Value;

fn env_name_ok(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn container(c: &Value, path: &str, volumes: &[&str], init: bool, causes: &mut Vec<Cause>) {
    // Plain init containers run to completion: k8s.io/kubernetes pkg/apis/core/validation/
    // validation.go `validateInitContainers` forbids lifecycle hooks and probes on them;
    // only restartable (sidecar, `restartPolicy: Always`) init containers may carry them.
    if init && c["restartPolicy"].as_str() != Some("Always") {
        for f in [
            "lifecycle",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
        ] {
            if !c[f].is_null() {
                causes.push(Cause {
                    reason: "FieldValueForbidden",
                    field: format!("{path}.{f}"),
                    message:
                        "Forbidden: may not be set for init containers without restartPolicy=Always"
                            .into(),
                });
            }
        }
    }
    let name = c["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        causes.push(required(format!("{path}.name")));
    }
    if c["image"].as_str().is_none_or(str::is_empty) {
        causes.push(required(format!("{path}.image")));
    }
    if let Some(policy) = c["restartPolicy"].as_str() {
        if !init {
            causes.push(Cause {
                reason: "FieldValueForbidden",
                field: format!("{path}.restartPolicy"),
                message: "Forbidden: may not be set for non-init containers".into(),
            });
        } else if policy != "Always" {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: format!("{path}.restartPolicy"),
                message: format!("Unsupported value: {policy:?}: supported values: \"Always\""),
            });
        }
    }
    for (i, e) in c["env"].as_array().into_iter().flatten().enumerate() {
        let n = e["name"].as_str().unwrap_or_default();
        if !env_name_ok(n) {
            causes.push(invalid(
                format!("{path}.env[{i}].name"),
                format!("Invalid value: {n:?}: a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit"),
            ));
        }
    }
    for (i, m) in c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let n = m["name"].as_str().unwrap_or_default();
        if !volumes.contains(&n) {
            causes.push(Cause {
                reason: "FieldValueNotFound",
                field: format!("{path}.volumeMounts[{i}].name"),
                message: format!("Not found: {n:?}"),
            });
        }
        if m["mountPath"].as_str().is_none_or(str::is_empty) {
            causes.push(required(format!("{path}.volumeMounts[{i}].mountPath")));
        }
    }
}

/// Projected volume sources (validation.go `validateProjectionSources`): a
/// service-account token lives at least 10 minutes and at most 2^32 seconds,
/// and has a path.
fn projected(v: &Value, path: &str, causes: &mut Vec<Cause>) {
    for (j, src) in v["projected"]["sources"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let sat = &src["serviceAccountToken"];
        if !sat.is_object() {
            continue;
        }
        let p = format!("{path}.projected.sources[{j}].serviceAccountToken");
        // Defaulted to 3600 (pkg/apis/core/v1/defaults.go SetDefaults_ServiceAccountTokenProjection).
        let exp = sat["expirationSeconds"].as_i64().unwrap_or(3600);
        if exp < 600 {
            causes.push(invalid(
                format!("{p}.expirationSeconds"),
                format!("Invalid value: {exp}: may not specify a duration less than 10 minutes"),
            ));
        }
        if exp > 1 << 32 {
            causes.push(invalid(
                format!("{p}.expirationSeconds"),
                format!(
                    "Invalid value: {exp}: may not specify a duration larger than 2^32 seconds"
                ),
            ));
        }
        if sat["path"].as_str().is_none_or(str::is_empty) {
            causes.push(required(format!("{p}.path")));
        }
    }
}

/// Checks what kube checks of a Pod spec that injection commonly breaks.
pub(super) fn pod(obj: &Value) -> Vec<Cause> {
    pod_spec(&obj["spec"], "spec")
}

/// The checks of one pod spec at `prefix` (`spec`, or `spec.template.spec` of a Deployment).
pub(super) fn pod_spec(spec: &Value, prefix: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        projected(v, &format!("{prefix}.volumes[{i}]"), &mut causes);
    }
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for (i, v) in volumes.iter().enumerate() {
        if volumes[..i].contains(v) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("{prefix}.volumes[{i}].name"),
                message: format!("Duplicate value: {v:?}"),
            });
        }
    }
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push(required(format!("{prefix}.containers")));
    }
    let mut names: Vec<String> = Vec::new();
    for (field, init) in [("initContainers", true), ("containers", false)] {
        for (i, c) in spec[field].as_array().into_iter().flatten().enumerate() {
            let path = format!("{prefix}.{field}[{i}]");
            container(c, &path, &volumes, init, &mut causes);
            let name = c["name"].as_str().unwrap_or_default().to_string();
            if !name.is_empty() && names.contains(&name) {
                causes.push(Cause {
                    reason: "FieldValueDuplicate",
                    field: format!("{path}.name"),
                    message: format!("Duplicate value: {name:?}"),
                });
            }
            names.push(name);
        }
    }
    causes
}

/// The fields of a pod spec an update may change, in kube's words.
const POD_UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Pod spec immutability after creation (k8s.io/kubernetes pkg/apis/core/validation/
/// validation.go `ValidatePodUpdate`): the new spec, with the few updatable fields
/// copied back from the old one, must equal the old spec. Updatable: container and
/// init-container images, `activeDeadlineSeconds` (set, or lowered, never unset),
/// tolerations (only additions), `terminationGracePeriodSeconds` (only from a negative
/// value to 1), and removing scheduling gates.
pub fn pod_update(old: &Value, new: &Value) -> Vec<Cause> {
    // The deprecated `serviceAccount` alias does not exist in kube's internal type (it is
    // converted into `serviceAccountName`), so dropping or rewriting it changes nothing.
    let without_alias = |spec: &Value| {
        let mut spec = spec.clone();
        if let Some(m) = spec.as_object_mut() {
            m.remove("serviceAccount");
        }
        spec
    };
    let (old_spec, new_spec) = (&without_alias(&old["spec"]), &without_alias(&new["spec"]));
    let mut causes = Vec::new();
    let mut munged = new_spec.clone();
    keep_old_images(&mut munged, old_spec);
    causes.extend(deadline_update(old_spec, new_spec));
    causes.extend(tolerations_update(old_spec, new_spec));
    // Both are then taken from the old spec (checked above on their own).
    for f in ["activeDeadlineSeconds", "tolerations"] {
        if let Some(m) = munged.as_object_mut() {
            match old_spec.get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
    }
    if old_spec["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|g| g < 0)
        && new_spec["terminationGracePeriodSeconds"].as_i64() == Some(1)
    {
        munged["terminationGracePeriodSeconds"] = old_spec["terminationGracePeriodSeconds"].clone();
    }
    keep_old_gates(&mut munged, old_spec, new_spec);
    if &munged != old_spec {
        causes.push(forbidden_change(&munged, old_spec));
    }
    causes
}

/// Copies the old image into each container (and init container) of `munged`
/// that sets one, when the list keeps its length: a changed image is allowed.
fn keep_old_images(munged: &mut Value, old_spec: &Value) {
    for list in ["containers", "initContainers"] {
        let olds = old_spec[list].as_array().cloned().unwrap_or_default();
        if let Some(news) = munged[list].as_array_mut()
            && news.len() == olds.len()
        {
            for (n, o) in news.iter_mut().zip(&olds) {
                // An emptied image stays a difference, refused below.
                let has_image = n["image"].as_str().is_some_and(|s| !s.is_empty());
                if let (true, Some(m), Some(img)) = (has_image, n.as_object_mut(), o.get("image")) {
                    m.insert("image".into(), img.clone());
                }
            }
        }
    }
}

/// `activeDeadlineSeconds` may be set or lowered, never raised or unset.
fn deadline_update(old_spec: &Value, new_spec: &Value) -> Option<Cause> {
    match (
        old_spec["activeDeadlineSeconds"].as_i64(),
        new_spec["activeDeadlineSeconds"].as_i64(),
    ) {
        (_, Some(n)) if n <= 0 => Some(invalid(
            "spec.activeDeadlineSeconds".into(),
            format!("Invalid value: {n}: must be between 1 and 2147483647, inclusive"),
        )),
        (Some(o), Some(n)) if n > o => Some(invalid(
            "spec.activeDeadlineSeconds".into(),
            format!("Invalid value: {n}: must be less than or equal to previous value"),
        )),
        (Some(_), None) => Some(invalid(
            "spec.activeDeadlineSeconds".into(),
            "Invalid value: \"null\": must not update from a positive integer to nil value".into(),
        )),
        _ => None,
    }
}

/// Tolerations: every old one must still be there (validation.go
/// `ValidateTolerationsInPodUpdate`); additions are allowed.
fn tolerations_update(old_spec: &Value, new_spec: &Value) -> Option<Cause> {
    let old_tol = old_spec["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let new_tol = new_spec["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    (!old_tol.iter().all(|t| new_tol.contains(t))).then(|| Cause {
        reason: "FieldValueForbidden",
        field: "spec.tolerations".into(),
        message: "Forbidden: existing toleration can not be modified except its tolerationSeconds"
            .into(),
    })
}

/// Scheduling gates may only be removed: when the new ones are all old,
/// `munged` takes the old list.
fn keep_old_gates(munged: &mut Value, old_spec: &Value, new_spec: &Value) {
    let old_gates = old_spec["schedulingGates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let new_gates = new_spec["schedulingGates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if new_gates.iter().all(|g| old_gates.contains(g)) {
        match old_spec.get("schedulingGates") {
            Some(g) => munged["schedulingGates"] = g.clone(),
            None => {
                if let Some(m) = munged.as_object_mut() {
                    m.remove("schedulingGates");
                }
            }
        }
    }
}

/// kube's refusal of a spec that still differs from the old one once the
/// updatable fields are taken back, naming the fields that differ.
fn forbidden_change(munged: &Value, old_spec: &Value) -> Cause {
    let changed: Vec<String> = munged
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .chain(
            old_spec
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k.clone()),
        )
        .filter(|k| munged.get(k) != old_spec.get(k))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|k| format!("spec.{k}"))
        .collect();
    Cause {
        reason: "FieldValueForbidden",
        field: "spec".into(),
        message: format!(
            "Forbidden: pod updates may not change fields other than {POD_UPDATABLE}\n  changed: {}",
            changed.join(", ")
        ),
    }
}

/// Fields an ephemeral container may set (k8s.io/kubernetes pkg/apis/core/validation/
/// validation.go `allowedEphemeralContainerFields`); the others "cannot be set for an
/// Ephemeral Container" (ports, probes, lifecycle, resources, restartPolicy...).
const EPHEMERAL_ALLOWED: [&str; 19] = [
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "envFrom",
    "env",
    "volumeMounts",
    "volumeDevices",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
    "targetContainerName",
    // Defaulted to `{}` by the v1 encoding; refused below when not empty.
    "resources",
    "resizePolicy",
];

/// An update through the `ephemeralcontainers` subresource (validation.go
/// `ValidatePodEphemeralContainersUpdate`, `validateEphemeralContainers`): existing
/// ephemeral containers may be neither removed nor changed; a new one has a name
/// unique among all the pod's containers, an image, only the allowed fields, no
/// `subPath` mounts, mounts of existing volumes, and a `targetContainerName` naming
/// a container or init container of the pod.
pub fn pod_ephemeral_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let list = |pod: &Value| {
        pod["spec"]["ephemeralContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let (before, after) = (list(old), list(new));
    let path = "spec.ephemeralContainers";
    for o in &before {
        let name = o["name"].as_str().unwrap_or_default();
        match after.iter().find(|n| n["name"] == o["name"]) {
            None => causes.push(Cause {
                reason: "FieldValueForbidden",
                field: path.into(),
                message: format!(
                    "Forbidden: existing ephemeral containers {name:?} may not be removed\n"
                ),
            }),
            Some(n) if n != o => causes.push(Cause {
                reason: "FieldValueForbidden",
                field: path.into(),
                message: format!(
                    "Forbidden: existing ephemeral containers {name:?} may not be changed\n"
                ),
            }),
            Some(_) => {}
        }
    }
    let spec = &new["spec"];
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let others: Vec<&str> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in after.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let name = c["name"].as_str().unwrap_or_default();
        if !name.is_empty() && (others.contains(&name) || seen.contains(&name)) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("{at}.name"),
                message: format!("Duplicate value: {name:?}"),
            });
        }
        seen.push(name);
        if before.iter().any(|o| o["name"] == c["name"]) {
            continue;
        }
        container(c, &at, &volumes, false, &mut causes);
        for (field, value) in c.as_object().into_iter().flatten() {
            let empty = value.is_null() || value.as_object().is_some_and(|m| m.is_empty());
            if !EPHEMERAL_ALLOWED.contains(&field.as_str()) || (field == "resources" && !empty) {
                causes.push(Cause {
                    reason: "FieldValueForbidden",
                    field: format!("{at}.{field}"),
                    message: "Forbidden: cannot be set for an Ephemeral Container".into(),
                });
            }
        }
        for (j, m) in c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            for f in ["subPath", "subPathExpr"] {
                if m[f].as_str().is_some_and(|s| !s.is_empty()) {
                    causes.push(Cause {
                        reason: "FieldValueForbidden",
                        field: format!("{at}.volumeMounts[{j}].{f}"),
                        message: "Forbidden: cannot be set for an Ephemeral Container".into(),
                    });
                }
            }
        }
        if let Some(target) = c["targetContainerName"].as_str().filter(|t| !t.is_empty())
            && !others.contains(&target)
        {
            causes.push(Cause {
                reason: "FieldValueNotFound",
                field: format!("{at}.targetContainerName"),
                message: format!("Not found: {target:?}"),
            });
        }
    }
    causes
}
