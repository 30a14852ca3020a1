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
//! - Refused: `shareProcessNamespace` and `hostPID` (the app could read the
//!   sidecar's memory, and with it the credentials), `hostNetwork` (the loopback
//!   listeners would be reachable by every process on the node), unknown or
//!   unbound connections, and ports that clash.

use std::collections::{BTreeMap, BTreeSet};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, Pod, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
    SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice_crds::{Connection, Protocol};

/// Pod annotation that opts a pod in: `sluice.dev/inject: "true"`.
pub const INJECT_ANNOTATION: &str = "sluice.dev/inject";
/// Optional pod annotation naming the Connections to serve, comma separated.
pub const CONNECTIONS_ANNOTATION: &str = "sluice.dev/connections";
/// Written on injection: the revision of the injector that mutated the pod.
/// Its presence is what makes re-admission a no-op.
pub const INJECTED_REVISION_ANNOTATION: &str = "sluice.dev/injected-revision";
/// Written on injection: the Connections the sidecar serves, comma separated.
pub const INJECTED_CONNECTIONS_ANNOTATION: &str = "sluice.dev/injected-connections";
/// Written when an app container already set a variable the webhook would have
/// injected: `container/VARIABLE` entries, comma separated.
pub const ENV_NOT_INJECTED_ANNOTATION: &str = "sluice.dev/env-not-injected";
/// The container `kubectl logs` and `kubectl exec` pick when none is named.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// Name of the injected container.
pub const SIDECAR_CONTAINER_NAME: &str = "sluice-sidecar";
/// Name of the projected service-account token volume.
pub const TOKEN_VOLUME_NAME: &str = "sluice-token";
/// Where the token volume is mounted in the sidecar.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/sluice.dev/serviceaccount";
/// The token file the sidecar reads (`SLUICE_TOKEN_FILE`).
pub const TOKEN_FILE: &str = "/var/run/secrets/sluice.dev/serviceaccount/token";
/// Audience of the projected token; the gateway's TokenReview asks for it.
pub const TOKEN_AUDIENCE: &str = "sluice.dev";
/// Lifetime of the projected token. 600 s is the shortest the API server
/// accepts; the kubelet rotates it at 80 % of its life.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 600;
/// The sidecar's own user and group: not the app's, so the app cannot read its
/// memory or signal it even when both are non-root.
pub const SIDECAR_UID: i64 = 65532;
/// Name of the sidecar's admin port (probes, metrics). At most 15 characters.
pub const ADMIN_PORT_NAME: &str = "sluice-admin";

/// Environment variables the injected sidecar reads (defined beside the
/// gateway API, which the sidecar shares).
pub use sluice_policy::wire::env;

/// Everything [`inject`] needs besides the pod, resolved by the webhook.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectConfig {
    /// Revision recorded in `sluice.dev/injected-revision` (e.g. the operator's
    /// version and a hash of its injection settings).
    pub revision: String,
    /// Sidecar image reference.
    pub image: String,
    /// `imagePullPolicy` of the sidecar; the cluster default when `None`.
    pub image_pull_policy: Option<String>,
    /// HTTPS URL of the gateway API, as the sidecar reaches it.
    pub gateway_url: String,
    /// PEM the sidecar trusts for the gateway: the operator's CA bundle
    /// ([`crate::identity::pki::OperatorPki::ca_bundle_pem`], public data).
    pub ca_pem: String,
    /// Port of the sidecar's admin server, bound on all pod addresses because
    /// the kubelet probes it from outside the pod.
    pub admin_port: u16,
    /// Whether the cluster supports native sidecars (1.29+): an init container
    /// with `restartPolicy: Always`. When false, a regular container is used.
    pub native_sidecars: bool,
    /// Resources of the sidecar container (from Helm values).
    pub resources: ResourceRequirements,
    /// The pod's service account, as the webhook read it (`default` when unset);
    /// used in messages only.
    pub service_account: String,
    /// Every Connection in the pod's namespace, and whether the pod's service
    /// account is bound to it by an AccessPolicy.
    pub connections: Vec<ConnectionTarget>,
    /// More environment of the sidecar, `(name, value)`: the optional
    /// settings of the operator's settings file (e.g. `SLUICE_HTTP_TIMEOUT`
    /// from `sidecar.http.timeoutSeconds`).
    pub sidecar_env: Vec<(String, String)>,
    /// The sidecar's shutdown grace in seconds (`SLUICE_SHUTDOWN_GRACE`): how
    /// long its sessions get to end after SIGTERM. The pod's
    /// `terminationGracePeriodSeconds` is raised to exceed it (see [`inject`]).
    pub shutdown_grace_seconds: u64,
}

/// The sidecar's default shutdown grace, in seconds (the sidecar's own
/// default, `sluice_sidecar::shutdown::DEFAULT_GRACE`).
pub const DEFAULT_SIDECAR_SHUTDOWN_GRACE_SECONDS: u64 = 20;

/// The sidecar's shutdown grace variable (`sluice_sidecar::shutdown::GRACE_ENV`;
/// the operator does not link the sidecar crate).
pub const SHUTDOWN_GRACE_ENV: &str = "SLUICE_SHUTDOWN_GRACE";

/// Seconds a pod's `terminationGracePeriodSeconds` must exceed the sidecar's
/// shutdown grace by: after the grace the sidecar still ends the remaining
/// sessions, writes their `sessionEnd` and flushes before it exits, all before
/// the kubelet's SIGKILL.
pub const TERMINATION_GRACE_MARGIN_SECONDS: i64 = 5;

/// The kubelet's `terminationGracePeriodSeconds` when a pod sets none.
const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 30;

/// What the injector needs to know about one Connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionTarget {
    /// Name of the Connection.
    pub name: String,
    /// Its protocol, which decides the URL scheme of the injected variable.
    pub protocol: Protocol,
    /// Loopback port the sidecar serves it on (`spec.listen.port`).
    pub listen_port: u16,
    /// Database name for SQL connections (`spec.upstream.database`).
    pub database: Option<String>,
    /// Variable injected into app containers (`spec.inject.env`), if any.
    pub inject_env: Option<String>,
    /// Whether an AccessPolicy binds the pod's service account to it.
    pub bound: bool,
}

impl ConnectionTarget {
    /// Reads the fields the injector needs from a Connection.
    pub fn from_connection(connection: &Connection, bound: bool) -> Self {
        ConnectionTarget {
            name: connection.metadata.name.clone().unwrap_or_default(),
            protocol: connection.spec.protocol,
            listen_port: connection.spec.listen.port,
            database: connection.spec.upstream.database.clone(),
            inject_env: connection.spec.inject.as_ref().map(|i| i.env.clone()),
            bound,
        }
    }

    /// The URL an app uses to reach this Connection through the sidecar.
    ///
    /// MySQL gets `127.0.0.1` rather than `localhost` because libmysqlclient
    /// takes `localhost` to mean its Unix socket, which the sidecar does not serve.
    pub fn local_url(&self) -> String {
        let db = self.database.as_deref().unwrap_or_default();
        match self.protocol {
            Protocol::Postgres => format!("postgres://localhost:{}/{db}", self.listen_port),
            Protocol::Mysql => format!("mysql://127.0.0.1:{}/{db}", self.listen_port),
            Protocol::Http => format!("http://localhost:{}", self.listen_port),
        }
    }
}

/// Sidecar resources used when the Helm values give none: small requests, and a
/// memory limit so a leak cannot starve the app. No CPU limit, to avoid
/// throttling on the data path.
pub fn default_sidecar_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("10m".into())),
            ("memory".to_string(), Quantity("32Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("128Mi".into()),
        )])),
        ..Default::default()
    }
}

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
    NotGenuine(#[source] crate::gateway::token_holder::HolderError),
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
    let unchanged = |outcome| Injection {
        outcome,
        pod: pod.clone(),
        patch: json_patch::Patch(Vec::new()),
        warnings: Vec::new(),
    };
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    match annotations.get(INJECT_ANNOTATION).map(|v| v.trim()) {
        None | Some("false") => return Ok(unchanged(Outcome::NotRequested)),
        Some("true") => {}
        Some(other) => {
            return Err(InjectError::InvalidAnnotation {
                annotation: INJECT_ANNOTATION,
                value: other.to_string(),
                reason: "expected \"true\" or \"false\"",
            });
        }
    }
    if annotations.contains_key(INJECTED_REVISION_ANNOTATION) {
        // Only this webhook writes the annotation: a pod arriving with it is
        // re-admitted only when it is exactly what the webhook produces.
        let allowed = [crate::gateway::token_holder::repository(&cfg.image).to_string()];
        crate::gateway::token_holder::check_genuine(pod, cfg, &allowed)
            .map_err(InjectError::NotGenuine)?;
        return Ok(unchanged(Outcome::AlreadyInjected));
    }
    let spec = pod.spec.as_ref().ok_or(InjectError::NoContainers)?;
    check_pod(spec)?;
    let selected = select_connections(annotations.get(CONNECTIONS_ANNOTATION), cfg)?;
    check_ports(spec, &selected, cfg.admin_port)?;
    check_env(&selected)?;

    let names: Vec<String> = selected.iter().map(|c| c.name.clone()).collect();
    let first_app = spec
        .containers
        .first()
        .map(|c| c.name.clone())
        .ok_or(InjectError::NoContainers)?;
    let mut warnings = Vec::new();

    // The patch is built as explicit operations rather than diffed from a
    // mutated copy: inserting at an index shifts the existing elements intact,
    // so fields this build of k8s-openapi does not know survive, and the
    // operations stay few and readable. Env operations come first because
    // they use the container indices from before the sidecar is inserted.
    let mut ops = Vec::new();
    let mut not_injected = Vec::new();
    for (index, container) in spec.containers.iter().enumerate() {
        app_env_ops(
            &mut ops,
            "containers",
            index,
            container,
            &selected,
            &mut not_injected,
        )?;
    }
    let sidecar = to_json(&sidecar_container(cfg, &names))?;
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    if cfg.native_sidecars {
        for (index, container) in init_containers.iter().enumerate() {
            app_env_ops(
                &mut ops,
                "initContainers",
                index,
                container,
                &selected,
                &mut not_injected,
            )?;
        }
        insert_first(
            &mut ops,
            "initContainers",
            spec.init_containers.is_some(),
            sidecar,
        );
    } else {
        if !init_containers.is_empty() {
            warnings.push(
                "this cluster has no native sidecars: init containers run before the Sluice sidecar starts and cannot reach its Connections".to_string(),
            );
        }
        if is_run_to_completion(pod) {
            warnings.push(
                "this cluster has no native sidecars: the Sluice sidecar runs as a regular container and keeps running after the app exits, so this Job's pod will not complete on its own".to_string(),
            );
        }
        insert_first(&mut ops, "containers", true, sidecar);
    }
    let volume = to_json(&token_volume())?;
    if spec.volumes.is_some() {
        ops.push(add(&["spec", "volumes", "-"], volume));
    } else {
        ops.push(add(
            &["spec", "volumes"],
            serde_json::Value::Array(vec![volume]),
        ));
    }

    // The kubelet SIGKILLs the pod terminationGracePeriodSeconds after
    // SIGTERM: a shorter one than the sidecar's grace would cut sessions off
    // record (no sessionEnd, buffered events lost). Raising it only lets the
    // pod take longer to stop when something still runs; an app that exits
    // at once is not held.
    let needed = i64::try_from(cfg.shutdown_grace_seconds)
        .unwrap_or(i64::MAX)
        .saturating_add(TERMINATION_GRACE_MARGIN_SECONDS);
    let current = spec.termination_grace_period_seconds;
    if current.unwrap_or(DEFAULT_TERMINATION_GRACE_SECONDS) < needed {
        ops.push(add(
            &["spec", "terminationGracePeriodSeconds"],
            needed.into(),
        ));
        warnings.push(format!(
            "terminationGracePeriodSeconds raised from {} to {needed}: the Sluice sidecar gets {} s to end its sessions on record after SIGTERM (set the pod's own to at least {needed}, or lower the operator's --sidecar-shutdown-grace-seconds, to keep yours)",
            current.map_or_else(|| format!("the default {DEFAULT_TERMINATION_GRACE_SECONDS}"), |c| c.to_string()),
            cfg.shutdown_grace_seconds,
        ));
    }

    let mut new_annotations = vec![
        (INJECTED_REVISION_ANNOTATION, cfg.revision.clone()),
        (INJECTED_CONNECTIONS_ANNOTATION, names.join(",")),
    ];
    if !annotations.contains_key(DEFAULT_CONTAINER_ANNOTATION) {
        new_annotations.push((DEFAULT_CONTAINER_ANNOTATION, first_app));
    }
    if !not_injected.is_empty() {
        let entries: Vec<String> = not_injected
            .iter()
            .map(|(c, v)| format!("{c}/{v}"))
            .collect();
        new_annotations.push((ENV_NOT_INJECTED_ANNOTATION, entries.join(",")));
    }
    for (container, variable) in &not_injected {
        warnings.push(format!(
            "container {container:?} already sets {variable}; kept its value, so it does not point at the Sluice sidecar"
        ));
    }
    let mut annotation_ops = Vec::new();
    if pod.metadata.annotations.is_none() {
        annotation_ops.push(add(&["metadata", "annotations"], serde_json::json!({})));
    }
    for (key, value) in new_annotations {
        annotation_ops.push(add(&["metadata", "annotations", key], value.into()));
    }
    annotation_ops.append(&mut ops);
    let patch = json_patch::Patch(annotation_ops);

    let mut document = to_json(pod)?;
    json_patch::patch(&mut document, &patch).map_err(InjectError::Patch)?;
    let mutated = serde_json::from_value(document).map_err(InjectError::Serialize)?;
    Ok(Injection {
        outcome: Outcome::Injected { connections: names },
        pod: mutated,
        patch,
        warnings,
    })
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

/// Refuses pod shapes in which the sidecar cannot keep its secrets.
fn check_pod(spec: &PodSpec) -> Result<(), InjectError> {
    if spec.share_process_namespace == Some(true) {
        return Err(InjectError::SharedProcessNamespace {
            field: "shareProcessNamespace",
        });
    }
    if spec.host_pid == Some(true) {
        return Err(InjectError::SharedProcessNamespace { field: "hostPID" });
    }
    if spec.host_network == Some(true) {
        return Err(InjectError::HostNetwork);
    }
    if spec.containers.is_empty() {
        return Err(InjectError::NoContainers);
    }
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    if all
        .map(|c| c.name.as_str())
        .any(|n| n == SIDECAR_CONTAINER_NAME)
    {
        return Err(InjectError::ReservedName {
            kind: "container",
            name: SIDECAR_CONTAINER_NAME,
        });
    }
    // A mount of the not-yet-existing token volume would become valid once
    // the webhook adds the volume, handing the app the sidecar's token.
    let mounting = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| {
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == TOKEN_VOLUME_NAME)
        });
    if let Some(container) = mounting {
        return Err(InjectError::TokenVolumeMounted {
            container: container.name.clone(),
        });
    }
    if spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == TOKEN_VOLUME_NAME)
    {
        return Err(InjectError::ReservedName {
            kind: "volume",
            name: TOKEN_VOLUME_NAME,
        });
    }
    Ok(())
}

/// The Connections the sidecar will serve: those named by the annotation, in
/// its order, or else every bound one, by name.
fn select_connections<'a>(
    requested: Option<&String>,
    cfg: &'a InjectConfig,
) -> Result<Vec<&'a ConnectionTarget>, InjectError> {
    let Some(requested) = requested else {
        let mut bound: Vec<&ConnectionTarget> =
            cfg.connections.iter().filter(|c| c.bound).collect();
        bound.sort_by(|a, b| a.name.cmp(&b.name));
        bound.dedup_by(|a, b| a.name == b.name);
        if bound.is_empty() {
            return Err(InjectError::NoBoundConnections {
                service_account: cfg.service_account.clone(),
            });
        }
        return Ok(bound);
    };
    let mut seen = BTreeSet::new();
    let mut selected = Vec::new();
    for name in requested
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        if !seen.insert(name) {
            continue;
        }
        let Some(target) = cfg.connections.iter().find(|c| c.name == name) else {
            let mut known: Vec<&str> = cfg.connections.iter().map(|c| c.name.as_str()).collect();
            known.sort_unstable();
            return Err(InjectError::UnknownConnection {
                name: name.to_string(),
                known: if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
            });
        };
        if !target.bound {
            return Err(InjectError::ConnectionNotBound {
                name: name.to_string(),
                service_account: cfg.service_account.clone(),
            });
        }
        selected.push(target);
    }
    if selected.is_empty() {
        return Err(InjectError::InvalidAnnotation {
            annotation: CONNECTIONS_ANNOTATION,
            value: requested.clone(),
            reason: "expected a comma-separated list of Connection names; omit the annotation to get every Connection the service account is bound to",
        });
    }
    Ok(selected)
}

/// Every port binds in the pod's one network namespace, so a listener, the
/// admin server and an app container port must all differ.
fn check_ports(
    spec: &PodSpec,
    selected: &[&ConnectionTarget],
    admin_port: u16,
) -> Result<(), InjectError> {
    let mut claimed: BTreeMap<u16, String> = BTreeMap::new();
    let mut claim = |port: u16, who: String| match claimed.get(&port) {
        Some(first) => Err(InjectError::PortClash {
            port,
            first: first.clone(),
            second: who,
        }),
        None => {
            claimed.insert(port, who);
            Ok(())
        }
    };
    claim(admin_port, "the Sluice sidecar's admin server".to_string())?;
    for target in selected {
        claim(target.listen_port, format!("Connection {:?}", target.name))?;
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    // App ports are only checked against the sidecar's: whether two app
    // containers may declare the same port is the API server's business.
    for container in containers {
        for port in container.ports.iter().flatten() {
            let tcp = port.protocol.as_deref().is_none_or(|p| p == "TCP");
            let Ok(number) = u16::try_from(port.container_port) else {
                continue;
            };
            if let (true, Some(first)) = (tcp, claimed.get(&number)) {
                return Err(InjectError::PortClash {
                    port: number,
                    first: first.clone(),
                    second: format!("container {:?}", container.name),
                });
            }
        }
    }
    Ok(())
}

/// Two Connections writing the same variable would leave the app with
/// whichever came last; refuse instead of guessing.
fn check_env(selected: &[&ConnectionTarget]) -> Result<(), InjectError> {
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    for target in selected {
        let Some(variable) = target.inject_env.as_deref() else {
            continue;
        };
        if let Some(first) = owners.insert(variable, &target.name) {
            return Err(InjectError::EnvClash {
                variable: variable.to_string(),
                first: first.to_string(),
                second: target.name.clone(),
            });
        }
    }
    Ok(())
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

/// The sidecar container the injector adds for `connections`; also what
/// [`crate::gateway::token_holder::check_genuine`] compares a running pod's sidecar with.
pub fn sidecar_container(cfg: &InjectConfig, connections: &[String]) -> Container {
    let plain = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    };
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.to_string(),
            }),
            ..Default::default()
        }),
    };
    let probe = |period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/readyz".to_string()),
            port: IntOrString::String(ADMIN_PORT_NAME.to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Default::default()
    };
    Container {
        name: SIDECAR_CONTAINER_NAME.to_string(),
        image: Some(cfg.image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        args: Some(vec!["run".to_string()]),
        // Only a native sidecar (an init container) carries a restart policy.
        restart_policy: cfg.native_sidecars.then(|| "Always".to_string()),
        env: Some(
            vec![
                plain(env::GATEWAY_URL, cfg.gateway_url.clone()),
                plain(env::TOKEN_FILE, TOKEN_FILE.to_string()),
                plain(env::CA_PEM, cfg.ca_pem.clone()),
                plain(env::CONNECTIONS, connections.join(",")),
                plain(env::ADMIN_ADDR, format!("0.0.0.0:{}", cfg.admin_port)),
                field(env::POD_NAME, "metadata.name"),
                field(env::POD_NAMESPACE, "metadata.namespace"),
                field(env::POD_UID, "metadata.uid"),
                field(env::SERVICE_ACCOUNT, "spec.serviceAccountName"),
            ]
            .into_iter()
            // Optional settings from here on (crate::gateway::token_holder::OPTIONAL_SIDECAR_ENV):
            // a pod injected before a change of them stays genuine.
            .chain(std::iter::once(plain(
                SHUTDOWN_GRACE_ENV,
                cfg.shutdown_grace_seconds.to_string(),
            )))
            .chain(
                cfg.sidecar_env
                    .iter()
                    .map(|(name, value)| plain(name, value.clone())),
            )
            .collect(),
        ),
        ports: Some(vec![ContainerPort {
            name: Some(ADMIN_PORT_NAME.to_string()),
            container_port: i32::from(cfg.admin_port),
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        // Two minutes to fetch a first bundle before the kubelet restarts it.
        startup_probe: Some(probe(1, 120)),
        readiness_probe: Some(probe(5, 3)),
        resources: Some(cfg.resources.clone()),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(SIDECAR_UID),
            run_as_group: Some(SIDECAR_UID),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".to_string()]),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: TOKEN_VOLUME_NAME.to_string(),
            mount_path: TOKEN_MOUNT_PATH.to_string(),
            read_only: Some(true),
            ..Default::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    }
}

/// The projected token volume the injector adds; also what
/// [`crate::gateway::token_holder::check_genuine`] compares a running pod's with.
pub fn token_volume() -> Volume {
    Volume {
        name: TOKEN_VOLUME_NAME.to_string(),
        projected: Some(ProjectedVolumeSource {
            default_mode: None,
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(TOKEN_AUDIENCE.to_string()),
                    expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                    path: "token".to_string(),
                }),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn target(name: &str, protocol: Protocol, port: u16, env: Option<&str>) -> ConnectionTarget {
        ConnectionTarget {
            name: name.into(),
            protocol,
            listen_port: port,
            database: Some("orders".into()),
            inject_env: env.map(Into::into),
            bound: true,
        }
    }

    fn config(native_sidecars: bool) -> InjectConfig {
        InjectConfig {
            sidecar_env: Vec::new(),
            shutdown_grace_seconds: DEFAULT_SIDECAR_SHUTDOWN_GRACE_SECONDS,
            revision: "r1".into(),
            image: "sidecar:1".into(),
            image_pull_policy: None,
            gateway_url: "https://gw:8443".into(),
            ca_pem: "PEM".into(),
            admin_port: 15020,
            native_sidecars,
            resources: default_sidecar_resources(),
            service_account: "app".into(),
            connections: vec![target(
                "orders-db",
                Protocol::Postgres,
                15432,
                Some("DATABASE_URL"),
            )],
        }
    }

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        pod.spec = Some(PodSpec {
            service_account_name: Some("app".into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("app:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        pod
    }

    fn sidecar_of(pod: &Pod, native: bool) -> Container {
        let spec = pod.spec.clone().unwrap();
        let list = if native {
            spec.init_containers.unwrap()
        } else {
            spec.containers
        };
        list.into_iter()
            .find(|c| c.name == SIDECAR_CONTAINER_NAME)
            .unwrap()
    }

    #[test]
    fn local_urls_by_protocol() {
        let mut t = target("x", Protocol::Postgres, 15432, None);
        assert_eq!(t.local_url(), "postgres://localhost:15432/orders");
        t.protocol = Protocol::Mysql;
        assert_eq!(t.local_url(), "mysql://127.0.0.1:15432/orders");
        t.protocol = Protocol::Http;
        assert_eq!(t.local_url(), "http://localhost:15432");
    }

    #[test]
    fn reads_a_connection_resource() {
        let connection: Connection = serde_json::from_value(serde_json::json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "Connection",
            "metadata": {"name": "orders-db", "namespace": "shop"},
            "spec": {
                "protocol": "postgres",
                "upstream": {"host": "db", "database": "orders"},
                "credentials": {"secretRef": {"name": "creds"}},
                "listen": {"port": 15432},
                "inject": {"env": "DATABASE_URL"}
            }
        }))
        .unwrap();
        let t = ConnectionTarget::from_connection(&connection, true);
        assert_eq!(
            t,
            target("orders-db", Protocol::Postgres, 15432, Some("DATABASE_URL"))
        );
    }

    #[test]
    fn service_account_defaults_to_default() {
        let mut p = pod(&[]);
        assert_eq!(service_account_of(&p), "app");
        p.spec.as_mut().unwrap().service_account_name = None;
        assert_eq!(service_account_of(&p), "default");
    }

    #[test]
    fn patch_only_adds() {
        for native in [true, false] {
            let injection = inject(&pod(&[(INJECT_ANNOTATION, "true")]), &config(native)).unwrap();
            assert!(!injection.patch.0.is_empty());
            for op in &injection.patch.0 {
                assert!(matches!(op, PatchOperation::Add(_)), "not an add: {op:?}");
            }
        }
    }

    #[test]
    fn native_sidecar_is_a_restartable_init_container_probed_on_readyz() {
        let injection = inject(&pod(&[(INJECT_ANNOTATION, "true")]), &config(true)).unwrap();
        let sidecar = sidecar_of(&injection.pod, true);
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
        let probe = sidecar.startup_probe.unwrap().http_get.unwrap();
        assert_eq!(probe.path.as_deref(), Some("/readyz"));
        assert_eq!(probe.port, IntOrString::String(ADMIN_PORT_NAME.into()));
        let ports = sidecar.ports.unwrap();
        assert_eq!(ports[0].name.as_deref(), Some(ADMIN_PORT_NAME));
        assert_eq!(ports[0].container_port, 15020);

        let fallback = inject(&pod(&[(INJECT_ANNOTATION, "true")]), &config(false)).unwrap();
        let sidecar = sidecar_of(&fallback.pod, false);
        assert_eq!(
            sidecar.restart_policy, None,
            "regular containers take no restartPolicy"
        );
        assert!(sidecar.startup_probe.is_some());
        assert_eq!(
            fallback.pod.spec.unwrap().containers[0].name,
            SIDECAR_CONTAINER_NAME
        );
    }

    #[test]
    fn settings_reach_the_sidecar_as_environment() {
        let value = |sidecar: &Container, name: &str| {
            sidecar
                .env
                .as_ref()
                .unwrap()
                .iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        let plain = inject(&pod(&[(INJECT_ANNOTATION, "true")]), &config(true)).unwrap();
        assert_eq!(
            value(&sidecar_of(&plain.pod, true), env::HTTP_TIMEOUT),
            None
        );
        let mut cfg = config(true);
        cfg.sidecar_env = vec![
            (env::HTTP_TIMEOUT.to_string(), "5".to_string()),
            (
                env::HTTP_UPSTREAM_HTTP1_ONLY.to_string(),
                "true".to_string(),
            ),
        ];
        let injection = inject(&pod(&[(INJECT_ANNOTATION, "true")]), &cfg).unwrap();
        let sidecar = sidecar_of(&injection.pod, true);
        assert_eq!(value(&sidecar, env::HTTP_TIMEOUT).as_deref(), Some("5"));
        assert_eq!(
            value(&sidecar, env::HTTP_UPSTREAM_HTTP1_ONLY).as_deref(),
            Some("true")
        );
        // The required variables are still there.
        assert_eq!(
            value(&sidecar, env::GATEWAY_URL).as_deref(),
            Some(cfg.gateway_url.as_str())
        );
    }

    #[test]
    fn sidecar_is_hardened_and_holds_the_token() {
        let injection = inject(&pod(&[(INJECT_ANNOTATION, "true")]), &config(true)).unwrap();
        let sidecar = sidecar_of(&injection.pod, true);
        let sc = sidecar.security_context.unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(SIDECAR_UID));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
        assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(sidecar.resources, Some(default_sidecar_resources()));

        let mount = &sidecar.volume_mounts.unwrap()[0];
        assert_eq!(mount.name, TOKEN_VOLUME_NAME);
        assert_eq!(mount.read_only, Some(true));
        let spec = injection.pod.spec.unwrap();
        let volume = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == TOKEN_VOLUME_NAME)
            .unwrap();
        let projection = volume.projected.unwrap().sources.unwrap()[0]
            .service_account_token
            .clone()
            .unwrap();
        assert_eq!(projection.audience.as_deref(), Some("sluice.dev"));
        assert_eq!(projection.expiration_seconds, Some(600));
        assert_eq!(
            format!("{TOKEN_MOUNT_PATH}/{}", projection.path),
            TOKEN_FILE
        );
        // The app never gets the token.
        assert!(spec.containers.iter().all(|c| c.volume_mounts.is_none()));

        let env: BTreeMap<String, EnvVar> = sidecar
            .env
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        assert_eq!(
            env[env::GATEWAY_URL].value.as_deref(),
            Some("https://gw:8443")
        );
        assert_eq!(env[env::TOKEN_FILE].value.as_deref(), Some(TOKEN_FILE));
        assert_eq!(env[env::CA_PEM].value.as_deref(), Some("PEM"));
        let field = |name: &str| {
            env[name]
                .value_from
                .clone()
                .unwrap()
                .field_ref
                .unwrap()
                .field_path
        };
        assert_eq!(field(env::POD_NAME), "metadata.name");
        assert_eq!(field(env::POD_NAMESPACE), "metadata.namespace");
        assert_eq!(field(env::POD_UID), "metadata.uid");
    }

    #[test]
    fn records_revision_and_default_container() {
        let injection = inject(&pod(&[(INJECT_ANNOTATION, "true")]), &config(true)).unwrap();
        let annotations = injection.pod.metadata.annotations.unwrap();
        assert_eq!(annotations[INJECTED_REVISION_ANNOTATION], "r1");
        assert_eq!(annotations[INJECTED_CONNECTIONS_ANNOTATION], "orders-db");
        assert_eq!(annotations[DEFAULT_CONTAINER_ANNOTATION], "app");
        assert_eq!(
            injection.outcome,
            Outcome::Injected {
                connections: vec!["orders-db".into()]
            }
        );
    }

    #[test]
    fn pods_without_annotations_at_all_pass() {
        let mut p = pod(&[]);
        p.metadata.annotations = None;
        let injection = inject(&p, &config(true)).unwrap();
        assert_eq!(injection.outcome, Outcome::NotRequested);
        assert!(injection.patch.0.is_empty());
    }

    #[test]
    fn debug_containers_may_not_reach_the_sidecar() {
        use k8s_openapi::api::core::v1::EphemeralContainer;
        let mut injected = inject(&pod(&[(INJECT_ANNOTATION, "true")]), &config(true))
            .unwrap()
            .pod;
        let debug = |target: &str, mount: bool| EphemeralContainer {
            name: "debugger".into(),
            image: Some("busybox".into()),
            target_container_name: Some(target.into()),
            volume_mounts: mount.then(|| {
                vec![VolumeMount {
                    name: TOKEN_VOLUME_NAME.into(),
                    mount_path: "/t".into(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        };
        let spec = injected.spec.as_mut().unwrap();
        spec.ephemeral_containers = Some(vec![debug("app", false)]);
        assert!(check_ephemeral_containers(&injected).is_ok());

        injected.spec.as_mut().unwrap().ephemeral_containers =
            Some(vec![debug(SIDECAR_CONTAINER_NAME, false)]);
        let error = check_ephemeral_containers(&injected).unwrap_err();
        assert!(
            error.to_string().contains("targets the Sluice sidecar"),
            "{error}"
        );

        injected.spec.as_mut().unwrap().ephemeral_containers = Some(vec![debug("app", true)]);
        let error = check_ephemeral_containers(&injected).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("mounts the Sluice sidecar's service-account token"),
            "{error}"
        );

        // Pods without a sidecar are none of our business.
        let mut plain = pod(&[]);
        plain.spec.as_mut().unwrap().ephemeral_containers =
            Some(vec![debug(SIDECAR_CONTAINER_NAME, true)]);
        assert!(check_ephemeral_containers(&plain).is_ok());
    }

    #[test]
    fn reserved_names_and_admin_port_clashes_are_refused() {
        let mut p = pod(&[(INJECT_ANNOTATION, "true")]);
        p.spec.as_mut().unwrap().containers[0].name = SIDECAR_CONTAINER_NAME.into();
        let error = inject(&p, &config(true)).unwrap_err();
        assert!(
            matches!(
                error,
                InjectError::ReservedName {
                    kind: "container",
                    ..
                }
            ),
            "{error}"
        );

        let mut p = pod(&[(INJECT_ANNOTATION, "true")]);
        p.spec.as_mut().unwrap().host_pid = Some(true);
        let error = inject(&p, &config(true)).unwrap_err();
        assert!(error.to_string().contains("hostPID"), "{error}");

        let mut cfg = config(true);
        cfg.admin_port = 15432;
        let error = inject(&pod(&[(INJECT_ANNOTATION, "true")]), &cfg).unwrap_err();
        assert!(
            matches!(error, InjectError::PortClash { port: 15432, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("admin server"), "{error}");

        let error = inject(
            &pod(&[(INJECT_ANNOTATION, "true"), (CONNECTIONS_ANNOTATION, " , ")]),
            &config(true),
        )
        .unwrap_err();
        assert!(
            matches!(error, InjectError::InvalidAnnotation { .. }),
            "{error}"
        );
    }
}
