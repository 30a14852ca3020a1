//! Sidecar injection: the pure heart of the mutating webhook on pods (DESIGN §5).
//!
//! [`inject`] takes the pod the API server sent and an [`InjectConfig`] the
//! webhook resolved (the Connections of the pod's namespace and which of them the
//! pod's service account is bound to), and returns the mutated pod together with
//! the RFC 6902 JSON patch the admission response carries. It does no I/O, so the
//! webhook handler stays thin and every decision here is covered by the golden
//! files in `testdata/inject/`.
//!
//! Decisions worth knowing (they are also in the golden files):
//! - Only `sluice.dev/inject: "true"` injects; `"false"` or no annotation passes
//!   the pod through untouched; any other value is refused so a typo is noticed.
//! - With native sidecars the sidecar is the *first* init container, so app init
//!   containers after it (migrations, seeders) can already reach the databases
//!   through it; they get the `inject.env` variables too. In the fallback (a
//!   regular container, clusters older than 1.29) init containers run before the
//!   sidecar exists, so they get no variables.
//! - When an app container already sets a variable the webhook would inject, the
//!   app's own value is kept (the pod author decided), the skip is recorded in the
//!   `sluice.dev/env-not-injected` annotation and returned as an admission warning.
//!   Injected variables are put *before* the app's own, so the app's variables may
//!   refer to them with `$(DATABASE_URL)`. Variables an app gets through
//!   `envFrom` (a ConfigMap or Secret) cannot be seen here; Kubernetes lets `env`
//!   win over `envFrom`, so there the injected value is the one the app sees.
//! - A pod may ask for its sidecar's resources and log level by annotation
//!   (`sluice.dev/sidecar-*`, [`crate::injection::pod_settings`]), within the
//!   chart's bounds; outside them, or malformed, the pod is refused (no clamp).
//! - Refused: `shareProcessNamespace` and `hostPID` (the app could read the
//!   sidecar's memory, and with it the credentials), `hostNetwork` (the loopback
//!   listeners would be reachable by every process on the node), unknown or
//!   unbound connections, and ports that clash.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};

// What the injector writes is defined in `sidecar.rs`, shared with the
// genuineness check; these paths stay the injector's API.
pub use super::sidecar::*;

mod checks;
use super::pod_settings::PodSettings;
use checks::{check_env, check_pod, check_ports, select_connections};

/// The kubelet's `terminationGracePeriodSeconds` when a pod sets none.
const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 30;

/// What [`inject`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The pod did not opt in; it passes unchanged.
    NotRequested,
    /// The pod already carries `sluice.dev/injected-revision`; nothing to do.
    AlreadyInjected,
    /// The sidecar was added, serving these Connections.
    Injected {
        /// Names of the Connections served, in the order they were injected.
        connections: Vec<String>,
    },
}

/// The result of [`inject`]: the mutated pod, the patch that produces it, and
/// warnings for the admission response.
#[derive(Clone, Debug)]
pub struct Injection {
    /// What happened.
    pub outcome: Outcome,
    /// The pod as it will be stored (equal to the input unless injected).
    pub pod: Pod,
    /// RFC 6902 patch turning the admitted pod into [`Injection::pod`]; empty
    /// unless injected.
    pub patch: json_patch::Patch,
    /// Human-readable notes for the admission response's `warnings` (kubectl
    /// prints them).
    pub warnings: Vec<String>,
}

/// Why a pod was refused. Each message names the pod's field or Connection at
/// fault and what to change.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// An annotation has a value the injector cannot read.
    #[error("annotation {annotation}={value:?} is not valid: {reason}")]
    InvalidAnnotation {
        /// The annotation key.
        annotation: &'static str,
        /// Its value.
        value: String,
        /// What is wrong and what is expected.
        reason: &'static str,
    },
    /// A per-pod sidecar setting is malformed, unbounded or outside the
    /// chart's bounds (see [`crate::injection::pod_settings`]).
    #[error("annotation {annotation}={value:?} is refused: {reason}")]
    PodSetting {
        /// The annotation key.
        annotation: &'static str,
        /// Its value (truncated).
        value: String,
        /// What is wrong, the bound, and what to do.
        reason: String,
    },
    /// The pod shares a process namespace with something the sidecar cannot trust.
    #[error(
        "pod sets spec.{field}: true, so the app could read the Sluice sidecar's memory and the credentials it holds; remove {field} or remove the {INJECT_ANNOTATION} annotation"
    )]
    SharedProcessNamespace {
        /// `shareProcessNamespace` or `hostPID`.
        field: &'static str,
    },
    /// The pod uses the node's network namespace.
    #[error(
        "pod sets spec.hostNetwork: true, so the sidecar's loopback listeners would be reachable by every process on the node; remove hostNetwork or remove the {INJECT_ANNOTATION} annotation"
    )]
    HostNetwork,
    /// The pod has no spec or no containers.
    #[error("pod has no containers; nothing to inject into")]
    NoContainers,
    /// A requested Connection does not exist in the namespace.
    #[error(
        "Connection {name:?} named in {CONNECTIONS_ANNOTATION} does not exist in this namespace (known: {known}); create it or fix the annotation"
    )]
    UnknownConnection {
        /// The requested name.
        name: String,
        /// The Connections that do exist, comma separated (or `none`).
        known: String,
    },
    /// A requested Connection exists but no AccessPolicy binds the pod's service account to it.
    #[error(
        "service account {service_account:?} is not bound to Connection {name:?}: no AccessPolicy in this namespace names both; add the service account to an AccessPolicy's subjects for that Connection, or drop it from {CONNECTIONS_ANNOTATION}"
    )]
    ConnectionNotBound {
        /// The Connection.
        name: String,
        /// The pod's service account.
        service_account: String,
    },
    /// The pod asked for injection but its service account may use nothing.
    #[error(
        "service account {service_account:?} is bound to no Connection in this namespace, so the sidecar would serve nothing; create an AccessPolicy whose subjects include it (the pod is admitted on the next retry), or remove the {INJECT_ANNOTATION} annotation"
    )]
    NoBoundConnections {
        /// The pod's service account.
        service_account: String,
    },
    /// Two things in the pod want the same port.
    #[error(
        "port {port} is wanted by both {first} and {second}; change one of them (a Connection's spec.listen.port, or the container port)"
    )]
    PortClash {
        /// The port.
        port: u16,
        /// The first claimant, e.g. `Connection "orders-db"`.
        first: String,
        /// The second claimant, e.g. `container "app"`.
        second: String,
    },
    /// Two requested Connections inject the same variable.
    #[error(
        "Connections {first:?} and {second:?} both inject the variable {variable}; request only one of them with {CONNECTIONS_ANNOTATION}, or change one's spec.inject.env"
    )]
    EnvClash {
        /// The variable name.
        variable: String,
        /// The first Connection.
        first: String,
        /// The second Connection.
        second: String,
    },
    /// A name the injector adds is already used by the pod for something else.
    #[error(
        "the pod already has a {kind} named {name:?}, a name the Sluice sidecar needs; rename it"
    )]
    ReservedName {
        /// `container` or `volume`.
        kind: &'static str,
        /// The name.
        name: &'static str,
    },
    /// An ephemeral (debug) container added to an injected pod could reach the sidecar's secrets.
    #[error(
        "ephemeral container {name:?} {reason}; debug the app container instead (kubectl debug --target=APP_CONTAINER), without mounting {TOKEN_VOLUME_NAME}"
    )]
    EphemeralContainer {
        /// The ephemeral container.
        name: String,
        /// What it does that is refused.
        reason: &'static str,
    },
    /// The pod arrives with `sluice.dev/injected-revision` but is not what the
    /// webhook produces (its own `sluice-sidecar` container, say).
    #[error(
        "pod already carries {INJECTED_REVISION_ANNOTATION}, which only the Sluice webhook writes, but it is not what the webhook injects ({0}); remove that annotation, any sluice-sidecar container and {TOKEN_VOLUME_NAME} volume, and let the webhook inject the pod"
    )]
    NotGenuine(#[source] crate::injection::token_holder::HolderError),
    /// An app container mounts the sidecar's token volume.
    #[error(
        "container {container:?} mounts volume {TOKEN_VOLUME_NAME}, the Sluice sidecar's service-account token; only the sidecar may hold it, remove that volumeMount"
    )]
    TokenVolumeMounted {
        /// The container.
        container: String,
    },
    /// The pod could not be turned into JSON or back.
    #[error(
        "could not convert the pod between JSON and its typed form to build the admission patch"
    )]
    Serialize(#[source] serde_json::Error),
    /// The patch did not apply to the pod it was built from: a bug in the injector.
    #[error(
        "the injection patch does not apply to the pod it was built for; this is a bug in sluice-operator, please report it with the pod's YAML"
    )]
    Patch(#[source] json_patch::PatchError),
}

/// The service account a pod runs as: `spec.serviceAccountName`, or `default`
/// as the API server fills in when it is unset.
pub fn service_account_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

/// Mutates `pod` as DESIGN §5 describes and returns the result with its patch.
///
/// Pods that did not opt in, and pods injected before, come back unchanged with
/// an empty patch.
pub fn inject(pod: &Pod, cfg: &InjectConfig) -> Result<Injection, InjectError> {
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    if let Some(outcome) = passes_unchanged(pod, &annotations, cfg)? {
        return Ok(Injection {
            outcome,
            pod: pod.clone(),
            patch: json_patch::Patch(Vec::new()),
            warnings: Vec::new(),
        });
    }
    let spec = pod.spec.as_ref().ok_or(InjectError::NoContainers)?;
    check_pod(spec)?;
    let selected = select_connections(annotations.get(CONNECTIONS_ANNOTATION), cfg)?;
    check_ports(spec, &selected, cfg.admin_port)?;
    check_env(&selected)?;
    let settings = PodSettings::read(&annotations, &cfg.options.annotation_bounds, &cfg.resources)
        .map_err(|e| InjectError::PodSetting {
            annotation: e.annotation,
            value: e.value,
            reason: e.reason,
        })?;
    let names: Vec<String> = selected.iter().map(|c| c.name.clone()).collect();
    let first_app = spec
        .containers
        .first()
        .map(|c| c.name.clone())
        .ok_or(InjectError::NoContainers)?;

    // The patch is built as explicit operations rather than diffed from a
    // mutated copy: inserting at an index shifts the existing elements intact,
    // so fields this build of k8s-openapi does not know survive, and the
    // operations stay few and readable.
    let mut plan = Plan::default();
    let mut sidecar = sidecar_container(cfg, &names);
    settings.apply(&mut sidecar);
    container_ops(&mut plan, pod, spec, cfg, &selected, sidecar)?;
    volume_op(&mut plan, spec)?;
    grace_op(&mut plan, spec, cfg);
    let patch = annotation_ops(pod, &annotations, cfg, &names, first_app, &mut plan);

    let mut document = to_json(pod)?;
    json_patch::patch(&mut document, &patch).map_err(InjectError::Patch)?;
    let mutated = serde_json::from_value(document).map_err(InjectError::Serialize)?;
    Ok(Injection {
        outcome: Outcome::Injected { connections: names },
        pod: mutated,
        patch,
        warnings: plan.warnings,
    })
}

/// What [`inject`] builds up: the patch's operations on the spec, the
/// admission warnings, and the `(container, variable)` pairs not injected
/// because the container sets the variable itself.
#[derive(Default)]
struct Plan {
    ops: Vec<PatchOperation>,
    warnings: Vec<String>,
    not_injected: Vec<(String, String)>,
}

/// The outcome of a pod that passes unchanged (it did not opt in, or it is
/// already injected and genuine), `None` when it is to be injected.
fn passes_unchanged(
    pod: &Pod,
    annotations: &BTreeMap<String, String>,
    cfg: &InjectConfig,
) -> Result<Option<Outcome>, InjectError> {
    match annotations.get(INJECT_ANNOTATION).map(|v| v.trim()) {
        None | Some("false") => return Ok(Some(Outcome::NotRequested)),
        Some("true") => {}
        Some(other) => {
            return Err(InjectError::InvalidAnnotation {
                annotation: INJECT_ANNOTATION,
                value: other.to_string(),
                reason: "expected \"true\" or \"false\"",
            });
        }
    }
    if !annotations.contains_key(INJECTED_REVISION_ANNOTATION) {
        return Ok(None);
    }
    // Only this webhook writes the annotation: a pod arriving with it is
    // re-admitted only when it is exactly what the webhook produces.
    let allowed = [crate::injection::token_holder::repository(&cfg.image).to_string()];
    crate::injection::token_holder::check_genuine(pod, cfg, &allowed)
        .map_err(InjectError::NotGenuine)?;
    Ok(Some(Outcome::AlreadyInjected))
}

/// The app containers' variables and the sidecar itself. Env operations come
/// first because they use the container indices from before the sidecar is
/// inserted.
fn container_ops(
    plan: &mut Plan,
    pod: &Pod,
    spec: &PodSpec,
    cfg: &InjectConfig,
    selected: &[&ConnectionTarget],
    sidecar: Container,
) -> Result<(), InjectError> {
    for (index, container) in spec.containers.iter().enumerate() {
        app_env_ops(
            &mut plan.ops,
            "containers",
            index,
            container,
            selected,
            &mut plan.not_injected,
        )?;
    }
    let sidecar = to_json(&sidecar)?;
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    if cfg.native_sidecars {
        for (index, container) in init_containers.iter().enumerate() {
            app_env_ops(
                &mut plan.ops,
                "initContainers",
                index,
                container,
                selected,
                &mut plan.not_injected,
            )?;
        }
        insert_first(
            &mut plan.ops,
            "initContainers",
            spec.init_containers.is_some(),
            sidecar,
        );
        return Ok(());
    }
    if !init_containers.is_empty() {
        plan.warnings.push(
            "this cluster has no native sidecars: init containers run before the Sluice sidecar starts and cannot reach its Connections".to_string(),
        );
    }
    if is_run_to_completion(pod) {
        plan.warnings.push(
            "this cluster has no native sidecars: the Sluice sidecar runs as a regular container and keeps running after the app exits, so this Job's pod will not complete on its own".to_string(),
        );
    }
    insert_first(&mut plan.ops, "containers", true, sidecar);
    Ok(())
}

/// The projected token volume.
fn volume_op(plan: &mut Plan, spec: &PodSpec) -> Result<(), InjectError> {
    let volume = to_json(&token_volume())?;
    if spec.volumes.is_some() {
        plan.ops.push(add(&["spec", "volumes", "-"], volume));
    } else {
        plan.ops.push(add(
            &["spec", "volumes"],
            serde_json::Value::Array(vec![volume]),
        ));
    }
    Ok(())
}

/// The kubelet SIGKILLs the pod terminationGracePeriodSeconds after SIGTERM:
/// a shorter one than the sidecar's grace would cut sessions off record (no
/// sessionEnd, buffered events lost). Raising it only lets the pod take longer
/// to stop when something still runs; an app that exits at once is not held.
fn grace_op(plan: &mut Plan, spec: &PodSpec, cfg: &InjectConfig) {
    let needed = i64::try_from(cfg.shutdown_grace_seconds)
        .unwrap_or(i64::MAX)
        .saturating_add(TERMINATION_GRACE_MARGIN_SECONDS);
    let current = spec.termination_grace_period_seconds;
    if current.unwrap_or(DEFAULT_TERMINATION_GRACE_SECONDS) >= needed {
        return;
    }
    plan.ops.push(add(
        &["spec", "terminationGracePeriodSeconds"],
        needed.into(),
    ));
    plan.warnings.push(format!(
        "terminationGracePeriodSeconds raised from {} to {needed}: the Sluice sidecar gets {} s to end its sessions on record after SIGTERM (set the pod's own to at least {needed}, or lower the operator's --sidecar-shutdown-grace-seconds, to keep yours)",
        current.map_or_else(|| format!("the default {DEFAULT_TERMINATION_GRACE_SECONDS}"), |c| c.to_string()),
        cfg.shutdown_grace_seconds,
    ));
}

/// The annotations the webhook writes, put in front of the plan's operations:
/// the whole patch.
fn annotation_ops(
    pod: &Pod,
    annotations: &BTreeMap<String, String>,
    cfg: &InjectConfig,
    names: &[String],
    first_app: String,
    plan: &mut Plan,
) -> json_patch::Patch {
    let mut new_annotations = vec![
        (INJECTED_REVISION_ANNOTATION, cfg.revision.clone()),
        (INJECTED_CONNECTIONS_ANNOTATION, names.join(",")),
    ];
    if !annotations.contains_key(DEFAULT_CONTAINER_ANNOTATION) {
        new_annotations.push((DEFAULT_CONTAINER_ANNOTATION, first_app));
    }
    if !plan.not_injected.is_empty() {
        let entries: Vec<String> = plan
            .not_injected
            .iter()
            .map(|(c, v)| format!("{c}/{v}"))
            .collect();
        new_annotations.push((ENV_NOT_INJECTED_ANNOTATION, entries.join(",")));
    }
    for (container, variable) in &plan.not_injected {
        plan.warnings.push(format!(
            "container {container:?} already sets {variable}; kept its value, so it does not point at the Sluice sidecar"
        ));
    }
    let mut ops = Vec::new();
    if pod.metadata.annotations.is_none() {
        ops.push(add(&["metadata", "annotations"], serde_json::json!({})));
    }
    for (key, value) in new_annotations {
        ops.push(add(&["metadata", "annotations", key], value.into()));
    }
    ops.append(&mut plan.ops);
    json_patch::Patch(ops)
}

fn to_json(value: &impl serde::Serialize) -> Result<serde_json::Value, InjectError> {
    serde_json::to_value(value).map_err(InjectError::Serialize)
}

/// An RFC 6902 `add` at the path made of `tokens` (escaped as JSON Pointer needs).
fn add(tokens: &[&str], value: serde_json::Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

/// Puts `value` first in the pod spec's list `field`, creating the list if absent.
fn insert_first(
    ops: &mut Vec<PatchOperation>,
    field: &str,
    exists: bool,
    value: serde_json::Value,
) {
    if exists {
        ops.push(add(&["spec", field, "0"], value));
    } else {
        ops.push(add(&["spec", field], serde_json::Value::Array(vec![value])));
    }
}

/// Refuses ephemeral containers (`kubectl debug`) that would give their user
/// the Sluice sidecar's secrets: sharing its process namespace (and so its
/// memory) or mounting its service-account token. Only injected pods are
/// checked; the webhook calls this for the `pods/ephemeralcontainers`
/// subresource.
pub fn check_ephemeral_containers(pod: &Pod) -> Result<(), InjectError> {
    let injected = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED_REVISION_ANNOTATION));
    if !injected {
        return Ok(());
    }
    let ephemeral = pod
        .spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten());
    for container in ephemeral {
        if container.target_container_name.as_deref() == Some(SIDECAR_CONTAINER_NAME) {
            return Err(InjectError::EphemeralContainer {
                name: container.name.clone(),
                reason: "targets the Sluice sidecar, whose memory holds the credentials",
            });
        }
        if container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == TOKEN_VOLUME_NAME)
        {
            return Err(InjectError::EphemeralContainer {
                name: container.name.clone(),
                reason: "mounts the Sluice sidecar's service-account token",
            });
        }
    }
    Ok(())
}

/// Whether the pod is meant to finish (a Job's pod, or any pod that is not
/// restarted), which a never-exiting regular sidecar would prevent.
fn is_run_to_completion(pod: &Pod) -> bool {
    let owned_by_job = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Job");
    let restart = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
    owned_by_job || matches!(restart, Some("Never" | "OnFailure"))
}

/// Puts the Connections' variables in front of the container's own, skipping
/// (and recording) the ones the container already sets.
fn app_env_ops(
    ops: &mut Vec<PatchOperation>,
    field: &str,
    index: usize,
    container: &Container,
    selected: &[&ConnectionTarget],
    not_injected: &mut Vec<(String, String)>,
) -> Result<(), InjectError> {
    let mut injected = Vec::new();
    for target in selected {
        let Some(variable) = target.inject_env.as_deref() else {
            continue;
        };
        if container.env.iter().flatten().any(|e| e.name == variable) {
            not_injected.push((container.name.clone(), variable.to_string()));
        } else {
            injected.push(EnvVar {
                name: variable.to_string(),
                value: Some(target.local_url()),
                value_from: None,
            });
        }
    }
    if injected.is_empty() {
        return Ok(());
    }
    let index = index.to_string();
    if container.env.is_none() {
        ops.push(add(&["spec", field, &index, "env"], to_json(&injected)?));
        return Ok(());
    }
    for (position, variable) in injected.iter().enumerate() {
        let position = position.to_string();
        ops.push(add(
            &["spec", field, &index, "env", &position],
            to_json(variable)?,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
