//! Which pods may exchange their service-account token for a gateway token,
//! and keep fetching bundles with it (DESIGN §3, §5).
//!
//! Any pod can mount a projected token with audience `sluice.dev`, and anyone
//! who may create pods can write `sluice.dev/injected-revision` or a container
//! named `sluice-sidecar` themselves; a running pod's images can even be
//! changed after admission. So the gateway trusts no field for what it says:
//! every token exchange, bundle poll, audit upload and approval call takes
//! the pod the token is bound to as the pod watch last saw it (read from the
//! API server when the watch does not hold it: [`crate::gateway::holders`]),
//! and [`check_genuine`] compares it with what the injector
//! ([`crate::injection::inject::sidecar_container`], [`crate::injection::inject::token_volume`])
//! would produce. A pod version that passed is not compared again until the
//! pod changes (the watch hands over the new version) or the operator's CA
//! bundle does (`gateway::auth::check_held`). The same function
//! refuses, at admission, a pod that arrives already claiming to be injected
//! ([`crate::injection::inject::inject`]).
//!
//! A genuine sidecar is:
//! - exactly one container named `sluice-sidecar`, where the injector puts it
//!   (a restartable init container, or a regular container without native
//!   sidecars), equal to the injector's container in everything but its
//!   resources and pull policy: command, args, env (the gateway URL, token
//!   file, connections, admin address, downward-API fields, and only the
//!   optional settings the operator knows), ports, probes, lifecycle, mounts
//!   and security context (where the operator leaves `runAsUser`/`runAsGroup`
//!   to the platform, any non-root one it assigned); resources differ per pod
//!   (`sluice.dev/sidecar-*` annotations, bounded at admission);
//! - running an image of an allowed repository; when the configured image is
//!   pinned by digest, that digest, both in the spec and in the `imageID` the
//!   kubelet reports in the pod's status;
//! - trusting only CA certificates of the operator's current CA bundle;
//! - the only container (regular, init or ephemeral) mounting the token
//!   volume, which is exactly the injector's, and the only `sluice.dev` token;
//! - in a pod that shares neither the node's network or process namespace
//!   nor its own process namespace, with no ephemeral container targeting it.
//!
//! What stays outside this check is documented in the operator README: whoever
//! may create `serviceaccounts/token` for a bound service account can mint a
//! `sluice.dev` token for any of its pods.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Probe};

use crate::injection::pod_settings::{LOG_ENV, LogLevel};
use crate::injection::sidecar::{
    INJECTED_CONNECTIONS_ANNOTATION, INJECTED_REVISION_ANNOTATION, InjectConfig,
    SIDECAR_CONTAINER_NAME, TOKEN_AUDIENCE, TOKEN_VOLUME_NAME, env, sidecar_container,
    token_volume,
};

/// Optional sidecar settings (beyond the injector's fixed environment) a
/// genuine sidecar may carry: the operator's settings file can change them
/// between injections, and none of them widens what the sidecar reveals.
/// `SLUICE_LOG` comes from a pod's `sluice.dev/sidecar-log-level` and must be
/// one level word (no log level prints statement or result values).
pub const OPTIONAL_SIDECAR_ENV: [&str; 6] = [
    crate::injection::sidecar::SHUTDOWN_GRACE_ENV,
    env::HTTP_TIMEOUT,
    env::HTTP_MAX_BODY,
    env::HTTP_UPSTREAM_HTTP1_ONLY,
    LOG_ENV,
    env::AUDIT_DURABILITY,
];

/// Why a pod's token is not exchanged. Each message names the pod's fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HolderError {
    /// The pod the token was issued for is gone (a pod of the same name may exist).
    #[error(
        "the token was issued for pod UID {expected}, but the pod now has UID {actual}; the original pod was deleted"
    )]
    PodReplaced {
        /// UID bound into the token.
        expected: String,
        /// UID of the pod found by name.
        actual: String,
    },
    /// The pod was not mutated by the Sluice webhook.
    #[error(
        "pod was not injected by the Sluice webhook (no {INJECTED_REVISION_ANNOTATION} annotation); only injected sidecars may exchange tokens"
    )]
    NotInjected,
    /// No sidecar container, more than one, or not where the injector puts it.
    #[error(
        "pod has {count} containers named {SIDECAR_CONTAINER_NAME:?} {place}; an injected pod has exactly one, {expected}"
    )]
    SidecarCount {
        /// How many were found.
        count: usize,
        /// Where they were found.
        place: &'static str,
        /// Where the injector puts it.
        expected: &'static str,
    },
    /// The sidecar container runs an image from a repository the operator does not trust.
    #[error("the {SIDECAR_CONTAINER_NAME} container runs image {image:?}, which is not {allowed}")]
    UntrustedImage {
        /// The image found.
        image: String,
        /// What is allowed.
        allowed: String,
    },
    /// The kubelet reports the sidecar running another image than the pinned one.
    #[error(
        "the kubelet reports the {SIDECAR_CONTAINER_NAME} container running image {image_id:?}, not the pinned {digest}; the pod's image was changed after admission"
    )]
    RunningImageMismatch {
        /// `imageID` from the pod's status.
        image_id: String,
        /// The digest the operator pins.
        digest: String,
    },
    /// The sidecar trusts a CA the operator does not use.
    #[error(
        "the {SIDECAR_CONTAINER_NAME} container's {var} holds a certificate that is not in the operator's CA bundle; the sidecar could be pointed at another gateway",
        var = env::CA_PEM
    )]
    UntrustedCa,
    /// The sidecar container differs from the injector's.
    #[error(
        "the {SIDECAR_CONTAINER_NAME} container differs from the one the Sluice webhook injects in: {fields}; recreate the pod and let the webhook inject it"
    )]
    SidecarTampered {
        /// The differing fields, comma separated (e.g. `env`, `command`).
        fields: String,
    },
    /// Another container can read the token.
    #[error(
        "container {container:?} mounts volume {volume:?}, which holds a {TOKEN_AUDIENCE} token; only the Sluice sidecar may"
    )]
    TokenExposed {
        /// The container that mounts it.
        container: String,
        /// The volume.
        volume: String,
    },
    /// The token volume is not the injector's, or another volume holds a `sluice.dev` token.
    #[error(
        "volume {volume:?} {what}; only the injector's {TOKEN_VOLUME_NAME} volume may hold a {TOKEN_AUDIENCE} token"
    )]
    TokenVolume {
        /// The volume.
        volume: String,
        /// What is wrong with it.
        what: &'static str,
    },
    /// Another process could read the sidecar's memory.
    #[error(
        "pod shares the sidecar's process namespace ({how}); the credentials in its memory would be exposed"
    )]
    ProcessNamespaceShared {
        /// `shareProcessNamespace`, `hostPID`, or the ephemeral container targeting the sidecar.
        how: String,
    },
    /// The sidecar's loopback listeners would be the node's.
    #[error(
        "pod sets spec.hostNetwork, so the sidecar's loopback listeners would serve every process on the node"
    )]
    HostNetwork,
}

/// Checks that `pod` (found by the name the TokenReview gave) is the one the
/// token bound to `token_pod_uid` was issued for, and runs a genuine sidecar
/// ([`check_genuine`]).
pub fn check_token_holder(
    pod: &Pod,
    token_pod_uid: &str,
    cfg: &InjectConfig,
    allowed_repositories: &[String],
) -> Result<(), HolderError> {
    let actual = pod.metadata.uid.clone().unwrap_or_default();
    if actual != token_pod_uid {
        return Err(HolderError::PodReplaced {
            expected: token_pod_uid.to_string(),
            actual,
        });
    }
    check_genuine(pod, cfg, allowed_repositories)
}

/// Checks that `pod` runs the sidecar the injector with `cfg` produces (see
/// the module documentation). `cfg.ca_pem` is the operator's current CA
/// bundle; `allowed_repositories` are the image repositories (without tag or
/// digest) a sidecar image may come from when `cfg.image` is not pinned by digest.
pub fn check_genuine(
    pod: &Pod,
    cfg: &InjectConfig,
    allowed_repositories: &[String],
) -> Result<(), HolderError> {
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    if !annotations.contains_key(INJECTED_REVISION_ANNOTATION) {
        return Err(HolderError::NotInjected);
    }
    let expected_place = if cfg.native_sidecars {
        "the first init container"
    } else {
        "a regular container"
    };
    let Some(spec) = &pod.spec else {
        return Err(HolderError::SidecarCount {
            count: 0,
            place: "(the pod has no spec)",
            expected: expected_place,
        });
    };
    check_pod_fields(spec)?;
    let sidecar = find_sidecar(spec, cfg.native_sidecars, expected_place)?;
    check_image(sidecar, pod, cfg, allowed_repositories)?;

    let connections: Vec<String> = annotations
        .get(INJECTED_CONNECTIONS_ANNOTATION)
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let expected = sidecar_container(cfg, &connections);
    let mut differing = Vec::new();
    if !env_matches(sidecar, &expected, &cfg.ca_pem)? {
        differing.push("env".to_string());
    }
    let actual = serde_json::to_value(normalized(&platform_uid_cleared(sidecar, &expected)))
        .unwrap_or_default();
    let wanted = serde_json::to_value(normalized(&expected)).unwrap_or_default();
    if let (Some(actual), Some(wanted)) = (actual.as_object(), wanted.as_object()) {
        let mut keys: Vec<&String> = actual.keys().chain(wanted.keys()).collect();
        keys.sort();
        keys.dedup();
        differing.extend(
            keys.into_iter()
                .filter(|k| actual.get(*k) != wanted.get(*k))
                .cloned(),
        );
    }
    if !differing.is_empty() {
        return Err(HolderError::SidecarTampered {
            fields: differing.join(", "),
        });
    }
    check_token_volume(spec)
}

/// `sidecar` without the UID and GID the platform assigned where the injector
/// left them unset (`sidecar.securityContext` without `runAsUser`, as for
/// OpenShift's restricted SCC, which fills in one of the namespace's UIDs).
/// Root (0) is never taken for one the platform assigned.
fn platform_uid_cleared(sidecar: &Container, expected: &Container) -> Container {
    let mut sidecar = sidecar.clone();
    let wanted = expected.security_context.as_ref();
    if let Some(context) = &mut sidecar.security_context {
        if wanted.is_none_or(|w| w.run_as_user.is_none())
            && context.run_as_user.is_some_and(|uid| uid > 0)
        {
            context.run_as_user = None;
        }
        if wanted.is_none_or(|w| w.run_as_group.is_none())
            && context.run_as_group.is_some_and(|gid| gid > 0)
        {
            context.run_as_group = None;
        }
    }
    sidecar
}

/// hostNetwork, hostPID, shareProcessNamespace, and debuggers on the sidecar.
fn check_pod_fields(spec: &PodSpec) -> Result<(), HolderError> {
    if spec.share_process_namespace == Some(true) {
        return Err(HolderError::ProcessNamespaceShared {
            how: "spec.shareProcessNamespace".to_string(),
        });
    }
    if spec.host_pid == Some(true) {
        return Err(HolderError::ProcessNamespaceShared {
            how: "spec.hostPID".to_string(),
        });
    }
    if spec.host_network == Some(true) {
        return Err(HolderError::HostNetwork);
    }
    let debugger = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .find(|c| c.target_container_name.as_deref() == Some(SIDECAR_CONTAINER_NAME));
    if let Some(debugger) = debugger {
        return Err(HolderError::ProcessNamespaceShared {
            how: format!(
                "ephemeral container {:?} targets the sidecar",
                debugger.name
            ),
        });
    }
    Ok(())
}

/// The one sidecar container, where the injector puts it.
fn find_sidecar<'a>(
    spec: &'a PodSpec,
    native: bool,
    expected: &'static str,
) -> Result<&'a Container, HolderError> {
    let named = |list: &'a [Container]| -> Vec<(usize, &'a Container)> {
        list.iter()
            .enumerate()
            .filter(|(_, c)| c.name == SIDECAR_CONTAINER_NAME)
            .collect()
    };
    let init = named(spec.init_containers.as_deref().unwrap_or_default());
    let regular = named(&spec.containers);
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .filter(|c| c.name == SIDECAR_CONTAINER_NAME)
        .count();
    let count = init.len() + regular.len() + ephemeral;
    let found = match (native, init.as_slice(), regular.as_slice()) {
        (true, [(0, sidecar)], []) if ephemeral == 0 => Some(*sidecar),
        (false, [], [(_, sidecar)]) if ephemeral == 0 => Some(*sidecar),
        _ => None,
    };
    found.ok_or(HolderError::SidecarCount {
        count,
        place: match (init.is_empty(), regular.is_empty(), ephemeral == 0) {
            (true, true, true) => "anywhere",
            (false, true, true) if native => "(not first among the init containers)",
            (false, true, true) => "among the init containers",
            (true, false, true) => "among the regular containers",
            _ => "spread over the pod's container lists",
        },
        expected,
    })
}

/// An image reference's digest (`sha256:…`), if it has one.
pub fn digest(image: &str) -> Option<&str> {
    image.split_once('@').map(|(_, d)| d)
}

fn check_image(
    sidecar: &Container,
    pod: &Pod,
    cfg: &InjectConfig,
    allowed_repositories: &[String],
) -> Result<(), HolderError> {
    let image = sidecar.image.clone().unwrap_or_default();
    let repository_allowed = allowed_repositories.iter().any(|r| r == repository(&image));
    let Some(pinned) = digest(&cfg.image) else {
        if repository_allowed {
            return Ok(());
        }
        return Err(HolderError::UntrustedImage {
            image,
            allowed: format!(
                "from an allowed sidecar repository ({})",
                allowed_repositories.join(", ")
            ),
        });
    };
    if !repository_allowed || digest(&image) != Some(pinned) {
        return Err(HolderError::UntrustedImage {
            image,
            allowed: format!("the pinned sidecar image {}", cfg.image),
        });
    }
    // The spec can be edited after admission; the kubelet's report says what runs.
    let statuses = pod.status.iter().flat_map(|s| {
        s.init_container_statuses
            .iter()
            .flatten()
            .chain(s.container_statuses.iter().flatten())
    });
    for status in statuses.filter(|s| s.name == SIDECAR_CONTAINER_NAME) {
        let id = status.image_id.trim();
        if id.is_empty() {
            continue;
        }
        let running = id.rsplit_once('@').map_or(id, |(_, d)| d);
        if running != pinned {
            return Err(HolderError::RunningImageMismatch {
                image_id: id.to_string(),
                digest: pinned.to_string(),
            });
        }
    }
    Ok(())
}

/// The injector's environment, in its order, then only known optional
/// settings; `SLUICE_CA_PEM` may be any part of the operator's CA bundle (the
/// bundle grows and shrinks as the CA rotates).
fn env_matches(
    sidecar: &Container,
    expected: &Container,
    ca_bundle: &str,
) -> Result<bool, HolderError> {
    let actual = sidecar.env.as_deref().unwrap_or_default();
    let wanted = expected.env.as_deref().unwrap_or_default();
    let fixed = wanted
        .iter()
        .take_while(|e| !OPTIONAL_SIDECAR_ENV.contains(&e.name.as_str()))
        .count();
    if actual.len() < fixed {
        return Ok(false);
    }
    let (head, tail) = actual.split_at(fixed);
    for (have, want) in head.iter().zip(wanted) {
        if have.name == env::CA_PEM && want.name == env::CA_PEM {
            if have.value_from.is_some() {
                return Ok(false);
            }
            if !ca_within(have.value.as_deref().unwrap_or_default(), ca_bundle) {
                return Err(HolderError::UntrustedCa);
            }
        } else if have != want {
            return Ok(false);
        }
    }
    let mut seen = Vec::new();
    for extra in tail {
        let known = OPTIONAL_SIDECAR_ENV.contains(&extra.name.as_str());
        if !known || extra.value_from.is_some() || seen.contains(&extra.name) {
            return Ok(false);
        }
        if extra.name == LOG_ENV
            && LogLevel::parse(extra.value.as_deref().unwrap_or_default()).is_none()
        {
            return Ok(false);
        }
        seen.push(extra.name.clone());
    }
    Ok(true)
}

/// Whether every certificate of `pem` is one of `bundle`'s (and there is one).
fn ca_within(pem: &str, bundle: &str) -> bool {
    let blocks = |text: &str| -> Vec<String> {
        text.split("-----END CERTIFICATE-----")
            .map(|b| b.split_whitespace().collect::<String>())
            .filter(|b| !b.is_empty())
            .collect()
    };
    let trusted = blocks(bundle);
    let given = blocks(pem);
    !given.is_empty() && given.iter().all(|b| trusted.contains(b))
}

/// A container with the API server's defaults filled in and the fields a
/// genuine sidecar may differ in (checked elsewhere, or harmless) cleared.
fn normalized(container: &Container) -> Container {
    let probe = |p: &Option<Probe>| {
        p.clone().map(|mut p| {
            if let Some(get) = &mut p.http_get {
                get.scheme.get_or_insert_with(|| "HTTP".to_string());
            }
            p.success_threshold.get_or_insert(1);
            p.timeout_seconds.get_or_insert(1);
            p.period_seconds.get_or_insert(10);
            p.failure_threshold.get_or_insert(3);
            if p.initial_delay_seconds == Some(0) {
                p.initial_delay_seconds = None;
            }
            p
        })
    };
    let mut c = container.clone();
    c.image = None;
    c.image_pull_policy = None;
    c.resources = None;
    c.resize_policy = None;
    c.env = None;
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".to_string());
    c.termination_message_policy
        .get_or_insert_with(|| "File".to_string());
    c.liveness_probe = probe(&c.liveness_probe);
    c.readiness_probe = probe(&c.readiness_probe);
    c.startup_probe = probe(&c.startup_probe);
    for port in c.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_string());
    }
    for flag in [&mut c.stdin, &mut c.stdin_once, &mut c.tty] {
        if *flag == Some(false) {
            *flag = None;
        }
    }
    // A pod created with the sidecar already in its spec (a copy of an
    // injected pod) gets the ServiceAccount admission plugin's API-token
    // mount in every container, the sidecar included, as on any real
    // cluster. It shadows nothing the sidecar reads and gives it no sluice.dev
    // token, so exactly that mount is not a difference.
    if let Some(mounts) = &mut c.volume_mounts {
        mounts.retain(|m| !is_service_account_plugin_mount(m));
    }
    c
}

/// The read-only mount of the pod's API token that kube-apiserver's
/// ServiceAccount admission plugin adds to each container
/// (plugin/pkg/admission/serviceaccount/admission.go: a `kube-api-access-`
/// volume at the default token directory).
fn is_service_account_plugin_mount(m: &k8s_openapi::api::core::v1::VolumeMount) -> bool {
    m.name.starts_with("kube-api-access-")
        && m.mount_path == "/var/run/secrets/kubernetes.io/serviceaccount"
        && m.read_only == Some(true)
        && m.sub_path.is_none()
        && m.sub_path_expr.is_none()
}

/// The injector's token volume, mounted by the sidecar alone, and no other
/// `sluice.dev` token in the pod.
fn check_token_volume(spec: &PodSpec) -> Result<(), HolderError> {
    let mut expected = token_volume();
    let mut found = false;
    for volume in spec.volumes.iter().flatten() {
        let holds_token = volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
            .any(|s| {
                s.service_account_token
                    .as_ref()
                    .is_some_and(|t| t.audience.as_deref() == Some(TOKEN_AUDIENCE))
            });
        if volume.name != TOKEN_VOLUME_NAME {
            if holds_token {
                return Err(HolderError::TokenVolume {
                    volume: volume.name.clone(),
                    what: "projects a second sluice.dev token",
                });
            }
            continue;
        }
        // The API server defaults a projected volume's mode to 0644.
        if let (Some(want), Some(have)) = (&mut expected.projected, &volume.projected) {
            want.default_mode = have.default_mode.filter(|m| *m == 0o644);
        }
        if *volume != expected {
            return Err(HolderError::TokenVolume {
                volume: volume.name.clone(),
                what: "is not the projected token volume the injector adds",
            });
        }
        found = true;
    }
    if !found {
        return Err(HolderError::TokenVolume {
            volume: TOKEN_VOLUME_NAME.to_string(),
            what: "is missing",
        });
    }
    let mounts = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| (c.name.as_str(), c.volume_mounts.iter().flatten()))
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| (c.name.as_str(), c.volume_mounts.iter().flatten())),
        );
    for (container, container_mounts) in mounts {
        if container == SIDECAR_CONTAINER_NAME {
            continue;
        }
        if let Some(mount) = container_mounts
            .into_iter()
            .find(|m| m.name == TOKEN_VOLUME_NAME)
        {
            return Err(HolderError::TokenExposed {
                container: container.to_string(),
                volume: mount.name.clone(),
            });
        }
    }
    Ok(())
}

/// An image reference without its digest and tag:
/// `registry:5000/sluice/sidecar:1.2@sha256:…` → `registry:5000/sluice/sidecar`.
pub fn repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    match without_digest.rfind(':') {
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

#[cfg(test)]
mod tests;
