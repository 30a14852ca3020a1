//! Validation of built-in fields that kube-apiserver checks on every write:
//! object metadata (labels, annotations, owner references), Secret data, and
//! the parts of a Pod spec that admission webhooks commonly get wrong.

use super::error::Cause;
use super::registry::{ResourceType, Special};
use base64::Engine as _;
use serde_json::{Value, json};

const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn invalid(field: String, message: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field,
        message,
    }
}

fn required(field: String) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field,
        message: "Required value".into(),
    }
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn is_label_name(s: &str) -> bool {
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    !s.is_empty() && s.len() <= 63 && ok_chars && ends
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// A qualified name: `[prefix/]name`, as label and annotation keys.
fn key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Some(format!(
            "Invalid value: {key:?}: prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ));
    }
    if !is_label_name(name) {
        return Some(format!(
            "Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        ));
    }
    None
}

/// Checks labels, annotations and owner references.
pub fn metadata(obj: &Value) -> Vec<Cause> {
    let meta = &obj["metadata"];
    let mut causes = Vec::new();
    for (k, v) in meta["labels"].as_object().into_iter().flatten() {
        if let Some(p) = key_problem(k) {
            causes.push(invalid("metadata.labels".into(), p));
        }
        let value = v.as_str().unwrap_or_default();
        if !v.is_string() || (!value.is_empty() && !is_label_name(value)) {
            causes.push(invalid(
                "metadata.labels".into(),
                format!("Invalid value: {value:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
            ));
        }
    }
    let mut total = 0;
    for (k, v) in meta["annotations"].as_object().into_iter().flatten() {
        if let Some(p) = key_problem(&k.to_lowercase()) {
            causes.push(invalid("metadata.annotations".into(), p));
        }
        if !v.is_string() {
            causes.push(invalid(
                "metadata.annotations".into(),
                format!("Invalid value: {v}: annotation values must be strings"),
            ));
        }
        total += k.len() + v.as_str().map(str::len).unwrap_or(0);
    }
    if total > MAX_ANNOTATIONS_BYTES {
        causes.push(Cause {
            reason: "FieldValueTooLong",
            field: "metadata.annotations".into(),
            message: format!("Too long: may not be more than {MAX_ANNOTATIONS_BYTES} bytes"),
        });
    }
    for (i, r) in meta["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        for f in ["apiVersion", "kind", "name", "uid"] {
            if r[f].as_str().is_none_or(str::is_empty) {
                causes.push(required(format!("metadata.ownerReferences[{i}].{f}")));
            }
        }
    }
    let controllers = meta["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["controller"] == Value::Bool(true))
        .count();
    if controllers > 1 {
        causes.push(invalid(
            "metadata.ownerReferences".into(),
            "Invalid value: only one reference can have Controller set to true".into(),
        ));
    }
    causes
}

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
fn pod(obj: &Value) -> Vec<Cause> {
    pod_spec(&obj["spec"], "spec")
}

/// The checks of one pod spec at `prefix` (`spec`, or `spec.template.spec` of a Deployment).
fn pod_spec(spec: &Value, prefix: &str) -> Vec<Cause> {
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

/// Go's `%#v` of a `map[string]string`, as kube prints template labels.
fn go_map(v: &Value) -> String {
    let entries: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default()))
        .collect();
    if entries.is_empty() {
        return "map[string]string(nil)".into();
    }
    format!("map[string]string{{{}}}", entries.join(", "))
}

/// apps/v1 Deployment checks (k8s.io/kubernetes pkg/apis/apps/validation/validation.go
/// `ValidateDeploymentSpec` and `ValidatePodTemplateSpecForReplicaSet`): a non-empty
/// selector that matches the template's labels, `restartPolicy: Always`, and the
/// template's pod spec checked like a pod's.
fn deployment(obj: &Value) -> Vec<Cause> {
    let spec = &obj["spec"];
    let mut causes = Vec::new();
    let sel = &spec["selector"];
    let labels = &spec["template"]["metadata"]["labels"];
    if sel.is_null() {
        causes.push(required("spec.selector".into()));
    } else {
        let empty = sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
            && sel["matchExpressions"]
                .as_array()
                .is_none_or(|e| e.is_empty());
        match super::selectors::LabelSelector::from_object(sel) {
            Err(_) => causes.push(invalid(
                "spec.selector".into(),
                format!("Invalid value: {sel}: invalid label selector"),
            )),
            Ok(_) if empty => causes.push(invalid(
                "spec.selector".into(),
                format!("Invalid value: {sel}: empty selector is invalid for deployment"),
            )),
            Ok(s) if !s.matches(labels) => causes.push(invalid(
                "spec.template.metadata.labels".into(),
                format!(
                    "Invalid value: {}: `selector` does not match template `labels`",
                    go_map(labels)
                ),
            )),
            Ok(_) => {}
        }
    }
    let tspec = &spec["template"]["spec"];
    causes.extend(pod_spec(tspec, "spec.template.spec"));
    if let Some(policy) = tspec["restartPolicy"].as_str()
        && policy != "Always"
    {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.template.spec.restartPolicy".into(),
            message: format!("Unsupported value: {policy:?}: supported values: \"Always\""),
        });
    }
    if !tspec["activeDeadlineSeconds"].is_null() {
        causes.push(Cause {
            reason: "FieldValueForbidden",
            field: "spec.template.spec.activeDeadlineSeconds".into(),
            message: "Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported".into(),
        });
    }
    causes
}

/// apps/v1 `ValidateDeploymentUpdate`: the selector is immutable.
pub fn deployment_update(old: &Value, new: &Value) -> Vec<Cause> {
    let (before, after) = (&old["spec"]["selector"], &new["spec"]["selector"]);
    if before == after {
        return Vec::new();
    }
    vec![invalid(
        "spec.selector".into(),
        format!("Invalid value: {after}: field is immutable"),
    )]
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
    match (
        old_spec["activeDeadlineSeconds"].as_i64(),
        new_spec["activeDeadlineSeconds"].as_i64(),
    ) {
        (_, Some(n)) if n <= 0 => causes.push(invalid(
            "spec.activeDeadlineSeconds".into(),
            format!("Invalid value: {n}: must be between 1 and 2147483647, inclusive"),
        )),
        (Some(o), Some(n)) if n > o => causes.push(invalid(
            "spec.activeDeadlineSeconds".into(),
            format!("Invalid value: {n}: must be less than or equal to previous value"),
        )),
        (Some(_), None) => causes.push(invalid(
            "spec.activeDeadlineSeconds".into(),
            "Invalid value: \"null\": must not update from a positive integer to nil value".into(),
        )),
        _ => {}
    }
    // Tolerations: every old one must still be there (validation.go
    // `ValidateTolerationsInPodUpdate`); additions are allowed.
    let old_tol = old_spec["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let new_tol = new_spec["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !old_tol.iter().all(|t| new_tol.contains(t)) {
        causes.push(Cause {
            reason: "FieldValueForbidden",
            field: "spec.tolerations".into(),
            message:
                "Forbidden: existing toleration can not be modified except its tolerationSeconds"
                    .into(),
        });
    }
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
    // Scheduling gates may only be removed.
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
    if &munged != old_spec {
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
        causes.push(Cause {
            reason: "FieldValueForbidden",
            field: "spec".into(),
            message: format!(
                "Forbidden: pod updates may not change fields other than {POD_UPDATABLE}\n  changed: {}",
                changed.join(", ")
            ),
        });
    }
    causes
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

/// Checks Secret data is base64; returns the decoding error kube reports as 400.
pub fn secret_data(obj: &Value) -> Result<(), String> {
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        let s = v.as_str().unwrap_or_default();
        if base64::engine::general_purpose::STANDARD.decode(s).is_err() {
            return Err(format!(
                "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data[{k:?}]"
            ));
        }
    }
    Ok(())
}

/// Event checks: the involved object's namespace, and for events.k8s.io/v1
/// the fields that API requires.
fn event(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let v1 = rt.special == Special::EventsV1;
    let about = if v1 { "regarding" } else { "involvedObject" };
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    if let Some(theirs) = obj[about]["namespace"].as_str()
        && !theirs.is_empty()
        && theirs != ns
    {
        causes.push(invalid(
            format!("{about}.namespace"),
            format!("Invalid value: {theirs:?}: does not match event.namespace"),
        ));
    }
    if v1 {
        for f in [
            "eventTime",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
        ] {
            if obj[f].as_str().is_none_or(str::is_empty) {
                causes.push(required(f.to_string()));
            }
        }
        if let Some(t) = obj["type"].as_str()
            && t != "Normal"
            && t != "Warning"
        {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: "type".into(),
                message: format!(
                    "Unsupported value: {t:?}: supported values: \"Normal\", \"Warning\""
                ),
            });
        }
        if obj["note"].as_str().is_some_and(|n| n.len() > 1024) {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                field: "note".into(),
                message: "Too long: may not be more than 1024 bytes".into(),
            });
        }
    }
    causes
}

/// The defaults kube-apiserver gives admissionregistration.k8s.io/v1 webhooks
/// (k8s.io/kubernetes pkg/apis/admissionregistration/v1/defaults.go:
/// `SetDefaults_ValidatingWebhook`, `SetDefaults_MutatingWebhook`,
/// `SetDefaults_Rule`, `SetDefaults_ServiceReference`).
pub fn default_webhooks(obj: &mut Value) {
    let mutating = obj["kind"] == "MutatingWebhookConfiguration";
    for w in obj["webhooks"].as_array_mut().into_iter().flatten() {
        let mut set = |key: &str, v: Value| {
            if w[key].is_null() {
                w[key] = v;
            }
        };
        set("failurePolicy", json!("Fail"));
        set("matchPolicy", json!("Equivalent"));
        set("namespaceSelector", json!({}));
        set("objectSelector", json!({}));
        set("timeoutSeconds", json!(10));
        if mutating {
            set("reinvocationPolicy", json!("Never"));
        }
        for rule in w["rules"].as_array_mut().into_iter().flatten() {
            if rule["scope"].is_null() {
                rule["scope"] = json!("*");
            }
        }
        if w["clientConfig"]["service"].is_object()
            && w["clientConfig"]["service"]["port"].is_null()
        {
            w["clientConfig"]["service"]["port"] = json!(443);
        }
    }
}

/// admissionregistration/v1 webhook checks (k8s.io/kubernetes
/// pkg/apis/admissionregistration/validation/validation.go `validateWebhook`):
/// names with at least three segments, unique names, `sideEffects` and
/// `admissionReviewVersions` required in v1, `timeoutSeconds` 1..30.
fn webhooks(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, w) in obj["webhooks"].as_array().into_iter().flatten().enumerate() {
        let path = format!("webhooks[{i}]");
        let name = w["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            causes.push(required(format!("{path}.name")));
        } else if !is_dns_subdomain(name) || name.split('.').count() < 3 {
            causes.push(invalid(
                format!("{path}.name"),
                format!(
                    "Invalid value: {name:?}: should be a domain with at least three segments separated by dots"
                ),
            ));
        } else if seen.contains(&name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("{path}.name"),
                message: format!("Duplicate value: {name:?}"),
            });
        }
        seen.push(name);
        match w["sideEffects"].as_str() {
            None => causes.push(Cause {
                reason: "FieldValueRequired",
                field: format!("{path}.sideEffects"),
                message: "Required value: must specify one of None, NoneOnDryRun".into(),
            }),
            Some("None" | "NoneOnDryRun") => {}
            Some(other) => causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: format!("{path}.sideEffects"),
                message: format!(
                    "Unsupported value: {other:?}: supported values: \"None\", \"NoneOnDryRun\""
                ),
            }),
        }
        if w["admissionReviewVersions"]
            .as_array()
            .is_none_or(|v| v.is_empty())
        {
            causes.push(Cause {
                reason: "FieldValueRequired",
                field: format!("{path}.admissionReviewVersions"),
                message: "Required value: must specify one of v1, v1beta1".into(),
            });
        }
        if let Some(t) = w["timeoutSeconds"].as_i64()
            && !(1..=30).contains(&t)
        {
            causes.push(invalid(
                format!("{path}.timeoutSeconds"),
                format!("Invalid value: {t}: the timeout value must be between 1 and 30 seconds"),
            ));
        }
    }
    causes
}

/// coordination.k8s.io/v1 Lease checks (k8s.io/kubernetes
/// pkg/apis/coordination/validation/validation.go `ValidateLeaseSpec`): positive
/// `leaseDurationSeconds`, non-negative `leaseTransitions`; times are MicroTime
/// (RFC 3339 with microseconds) or the object does not decode.
fn lease(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = &obj["spec"];
    if let Some(d) = spec["leaseDurationSeconds"].as_i64()
        && d <= 0
    {
        causes.push(invalid(
            "spec.leaseDurationSeconds".into(),
            format!("Invalid value: {d}: must be greater than 0"),
        ));
    }
    if let Some(t) = spec["leaseTransitions"].as_i64()
        && t < 0
    {
        causes.push(invalid(
            "spec.leaseTransitions".into(),
            format!("Invalid value: {t}: must be greater than or equal to 0"),
        ));
    }
    causes
}

/// Lease times must parse as MicroTime, else kube refuses the body at decoding (400).
pub fn lease_times(obj: &Value) -> Result<(), String> {
    for key in ["acquireTime", "renewTime"] {
        if let Some(t) = obj["spec"][key].as_str()
            && t.parse::<k8s_openapi::jiff::Timestamp>().is_err()
        {
            return Err(format!(
                "Lease in version \"v1\" cannot be handled as a Lease: parsing time {t:?} as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse"
            ));
        }
    }
    Ok(())
}

/// All built-in checks for an object about to be stored.
pub fn object(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    let mut causes = metadata(obj);
    if rt.kind == "Lease" && rt.crd.is_none() {
        causes.extend(lease(obj));
    }
    match rt.special {
        Special::Webhook => causes.extend(webhooks(obj)),
        Special::Pod => causes.extend(pod(obj)),
        _ if rt.kind == "Deployment" && rt.group == "apps" => causes.extend(deployment(obj)),
        Special::CoreEvent | Special::EventsV1 => causes.extend(event(rt, obj)),
        _ => {}
    }
    causes
}
