//! Which pods may exchange their service-account token for a gateway token
//! (DESIGN §3, checked by `POST /v1/token` after the TokenReview).
//!
//! Any pod can mount a projected token with audience `sluice.dev`, so a valid
//! token alone does not prove the caller is a Sluice sidecar; and the bundle it
//! would receive holds credentials. The gateway therefore also looks at the pod
//! the token is bound to and only answers when that pod is one the injector
//! made, and still confines the token and the sidecar's memory: the token
//! volume is mounted by the sidecar alone, the sidecar runs an allowed image,
//! and nothing shares its process namespace.

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::inject::{INJECTED_REVISION_ANNOTATION, SIDECAR_CONTAINER_NAME, TOKEN_AUDIENCE};

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
    /// No sidecar container, or more than one.
    #[error(
        "pod has {count} containers named {SIDECAR_CONTAINER_NAME:?}; an injected pod has exactly one"
    )]
    SidecarCount {
        /// How many were found.
        count: usize,
    },
    /// The sidecar container runs an image from a repository the operator does not trust.
    #[error(
        "the {SIDECAR_CONTAINER_NAME} container runs image {image:?}, which is not from an allowed sidecar repository ({allowed})"
    )]
    UntrustedImage {
        /// The image found.
        image: String,
        /// The allowed repositories, comma separated.
        allowed: String,
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
    /// Another process could read the sidecar's memory.
    #[error(
        "pod shares the sidecar's process namespace ({how}); the credentials in its memory would be exposed"
    )]
    ProcessNamespaceShared {
        /// `shareProcessNamespace`, `hostPID`, or the ephemeral container targeting the sidecar.
        how: String,
    },
}

/// Checks that `pod` (found by the name the TokenReview gave) may exchange the
/// token bound to `token_pod_uid`, with the sidecar image from one of
/// `allowed_repositories` (image references without tag or digest).
pub fn check_token_holder(
    pod: &Pod,
    token_pod_uid: &str,
    allowed_repositories: &[String],
) -> Result<(), HolderError> {
    let actual = pod.metadata.uid.clone().unwrap_or_default();
    if actual != token_pod_uid {
        return Err(HolderError::PodReplaced {
            expected: token_pod_uid.to_string(),
            actual,
        });
    }
    let injected = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED_REVISION_ANNOTATION));
    if !injected {
        return Err(HolderError::NotInjected);
    }
    let Some(spec) = &pod.spec else {
        return Err(HolderError::SidecarCount { count: 0 });
    };
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

    let regular: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let sidecars: Vec<&&Container> = regular
        .iter()
        .filter(|c| c.name == SIDECAR_CONTAINER_NAME)
        .collect();
    let [sidecar] = sidecars.as_slice() else {
        return Err(HolderError::SidecarCount {
            count: sidecars.len(),
        });
    };
    let image = sidecar.image.clone().unwrap_or_default();
    if !allowed_repositories.iter().any(|r| r == repository(&image)) {
        return Err(HolderError::UntrustedImage {
            image,
            allowed: allowed_repositories.join(", "),
        });
    }

    let token_volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .any(|s| {
                    s.service_account_token
                        .as_ref()
                        .is_some_and(|t| t.audience.as_deref() == Some(TOKEN_AUDIENCE))
                })
        })
        .map(|v| v.name.as_str())
        .collect();
    let mounts = regular
        .iter()
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
            .find(|m| token_volumes.contains(&m.name.as_str()))
        {
            return Err(HolderError::TokenExposed {
                container: container.to_string(),
                volume: mount.name.clone(),
            });
        }
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
mod tests {
    use super::*;
    use crate::inject::{
        ConnectionTarget, INJECT_ANNOTATION, InjectConfig, TOKEN_VOLUME_NAME,
        default_sidecar_resources, inject,
    };
    use k8s_openapi::api::core::v1::{EphemeralContainer, PodSpec, VolumeMount};
    use sluice_crds::Protocol;

    const UID: &str = "5f0c6a1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b";

    fn allowed() -> Vec<String> {
        vec!["registry.example/sluice-sidecar".to_string()]
    }

    fn injected_pod(native_sidecars: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.uid = Some(UID.into());
        pod.metadata.annotations =
            Some([(INJECT_ANNOTATION.to_string(), "true".to_string())].into());
        pod.spec = Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("app:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        let cfg = InjectConfig {
            sidecar_env: Vec::new(),
            revision: "r1".into(),
            image: "registry.example/sluice-sidecar:0.1.0".into(),
            image_pull_policy: None,
            gateway_url: "https://gw".into(),
            ca_pem: "PEM".into(),
            admin_port: 15020,
            native_sidecars,
            resources: default_sidecar_resources(),
            service_account: "default".into(),
            connections: vec![ConnectionTarget {
                name: "orders-db".into(),
                protocol: Protocol::Postgres,
                listen_port: 15432,
                database: None,
                inject_env: None,
                bound: true,
            }],
        };
        inject(&pod, &cfg).unwrap().pod
    }

    fn token_mount() -> VolumeMount {
        VolumeMount {
            name: TOKEN_VOLUME_NAME.into(),
            mount_path: "/stolen".into(),
            ..Default::default()
        }
    }

    #[test]
    fn injected_pods_may_exchange() {
        for native in [true, false] {
            assert_eq!(
                check_token_holder(&injected_pod(native), UID, &allowed()),
                Ok(())
            );
        }
    }

    #[test]
    fn replaced_or_uninjected_pods_may_not() {
        let error = check_token_holder(&injected_pod(true), "other-uid", &allowed()).unwrap_err();
        assert!(matches!(error, HolderError::PodReplaced { .. }), "{error}");

        let mut pod = injected_pod(true);
        pod.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(INJECTED_REVISION_ANNOTATION);
        assert_eq!(
            check_token_holder(&pod, UID, &allowed()),
            Err(HolderError::NotInjected)
        );
    }

    #[test]
    fn sidecar_image_must_come_from_an_allowed_repository() {
        let mut pod = injected_pod(true);
        let init = pod.spec.as_mut().unwrap().init_containers.as_mut().unwrap();
        init[0].image = Some("evil.example/sluice-sidecar:0.1.0".into());
        let error = check_token_holder(&pod, UID, &allowed()).unwrap_err();
        assert!(
            matches!(error, HolderError::UntrustedImage { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("evil.example"), "{error}");

        // A newer tag or a digest of the same repository is fine (operator upgrades).
        let init = pod.spec.as_mut().unwrap().init_containers.as_mut().unwrap();
        init[0].image = Some("registry.example/sluice-sidecar:0.2.0@sha256:abcd".into());
        assert_eq!(check_token_holder(&pod, UID, &allowed()), Ok(()));
    }

    #[test]
    fn token_mounted_elsewhere_is_refused() {
        let mut pod = injected_pod(true);
        pod.spec.as_mut().unwrap().containers[0].volume_mounts = Some(vec![token_mount()]);
        let error = check_token_holder(&pod, UID, &allowed()).unwrap_err();
        assert_eq!(
            error,
            HolderError::TokenExposed {
                container: "app".into(),
                volume: TOKEN_VOLUME_NAME.into()
            }
        );

        let mut pod = injected_pod(true);
        pod.spec.as_mut().unwrap().ephemeral_containers = Some(vec![EphemeralContainer {
            name: "debug".into(),
            volume_mounts: Some(vec![token_mount()]),
            ..Default::default()
        }]);
        let error = check_token_holder(&pod, UID, &allowed()).unwrap_err();
        assert!(matches!(error, HolderError::TokenExposed { .. }), "{error}");
    }

    #[test]
    fn shared_process_namespaces_are_refused() {
        let mut pod = injected_pod(true);
        pod.spec.as_mut().unwrap().share_process_namespace = Some(true);
        let error = check_token_holder(&pod, UID, &allowed()).unwrap_err();
        assert!(
            matches!(error, HolderError::ProcessNamespaceShared { .. }),
            "{error}"
        );

        let mut pod = injected_pod(true);
        pod.spec.as_mut().unwrap().ephemeral_containers = Some(vec![EphemeralContainer {
            name: "debug".into(),
            target_container_name: Some(SIDECAR_CONTAINER_NAME.into()),
            ..Default::default()
        }]);
        let error = check_token_holder(&pod, UID, &allowed()).unwrap_err();
        assert!(
            error.to_string().contains("\"debug\" targets the sidecar"),
            "{error}"
        );
    }

    #[test]
    fn two_sidecars_are_refused() {
        let mut pod = injected_pod(true);
        let spec = pod.spec.as_mut().unwrap();
        let sidecar = spec.init_containers.as_ref().unwrap()[0].clone();
        spec.containers.push(sidecar);
        let error = check_token_holder(&pod, UID, &allowed()).unwrap_err();
        assert_eq!(error, HolderError::SidecarCount { count: 2 });
    }

    #[test]
    fn repository_strips_tag_and_digest() {
        assert_eq!(repository("sidecar"), "sidecar");
        assert_eq!(repository("sidecar:1"), "sidecar");
        assert_eq!(
            repository("registry:5000/a/sidecar"),
            "registry:5000/a/sidecar"
        );
        assert_eq!(
            repository("registry:5000/a/sidecar:1.2"),
            "registry:5000/a/sidecar"
        );
        assert_eq!(
            repository("registry:5000/a/sidecar:1.2@sha256:ff"),
            "registry:5000/a/sidecar"
        );
        assert_eq!(repository("a/sidecar@sha256:ff"), "a/sidecar");
    }
}
