use super::*;
use crate::injection::inject::{
    ConnectionTarget, INJECT_ANNOTATION, InjectConfig, TOKEN_VOLUME_NAME,
    default_sidecar_resources, inject,
};
use k8s_openapi::api::core::v1::{
    ContainerStatus, EphemeralContainer, PodStatus, Volume, VolumeMount,
};
use sluice_crds::Protocol;

const UID: &str = "5f0c6a1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b";
const CA: &str = "-----BEGIN CERTIFICATE-----\nQ0Ex\n-----END CERTIFICATE-----\n";
const OLD_CA: &str = "-----BEGIN CERTIFICATE-----\nT0xE\n-----END CERTIFICATE-----\n";

fn allowed() -> Vec<String> {
    vec!["registry.example/sluice-sidecar".to_string()]
}

fn config(native_sidecars: bool) -> InjectConfig {
    InjectConfig {
        options: Default::default(),
        sidecar_env: Vec::new(),
        shutdown_grace_seconds: crate::injection::inject::DEFAULT_SIDECAR_SHUTDOWN_GRACE_SECONDS,
        revision: "r1".into(),
        image: "registry.example/sluice-sidecar:0.1.0".into(),
        image_pull_policy: None,
        gateway_url: "https://gw".into(),
        ca_pem: CA.into(),
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
    }
}

fn injected_with(cfg: &InjectConfig) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.uid = Some(UID.into());
    pod.metadata.annotations = Some([(INJECT_ANNOTATION.to_string(), "true".to_string())].into());
    pod.spec = Some(PodSpec {
        containers: vec![Container {
            name: "app".into(),
            image: Some("app:1".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    inject(&pod, cfg).unwrap().pod
}

fn injected_pod(native: bool) -> Pod {
    injected_with(&config(native))
}

fn check(pod: &Pod) -> Result<(), HolderError> {
    check_token_holder(pod, UID, &config(true), &allowed())
}

fn sidecar_mut(pod: &mut Pod) -> &mut Container {
    &mut pod.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0]
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
        let pod = injected_pod(native);
        assert_eq!(
            check_token_holder(&pod, UID, &config(native), &allowed()),
            Ok(())
        );
    }
    // With the API server's defaults filled in, and optional settings the
    // settings file adds or drops.
    let mut pod = injected_pod(true);
    let sidecar = sidecar_mut(&mut pod);
    sidecar.termination_message_path = Some("/dev/termination-log".into());
    sidecar.image_pull_policy = Some("IfNotPresent".into());
    let probe = sidecar.startup_probe.as_mut().unwrap();
    probe.success_threshold = Some(1);
    probe.http_get.as_mut().unwrap().scheme = Some("HTTP".into());
    sidecar
        .env
        .as_mut()
        .unwrap()
        .push(k8s_openapi::api::core::v1::EnvVar {
            name: env::HTTP_TIMEOUT.into(),
            value: Some("5".into()),
            value_from: None,
        });
    if let Some(v) = pod.spec.as_mut().unwrap().volumes.as_mut() {
        v[0].projected.as_mut().unwrap().default_mode = Some(0o644);
    }
    assert_eq!(check(&pod), Ok(()));
}

#[test]
fn replaced_or_uninjected_pods_may_not() {
    let error = check_token_holder(&injected_pod(true), "other-uid", &config(true), &allowed())
        .unwrap_err();
    assert!(matches!(error, HolderError::PodReplaced { .. }), "{error}");

    let mut pod = injected_pod(true);
    pod.metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove(INJECTED_REVISION_ANNOTATION);
    assert_eq!(check(&pod), Err(HolderError::NotInjected));
}

#[test]
fn sidecar_image_must_come_from_an_allowed_repository() {
    let mut pod = injected_pod(true);
    sidecar_mut(&mut pod).image = Some("evil.example/sluice-sidecar:0.1.0".into());
    let error = check(&pod).unwrap_err();
    assert!(
        matches!(error, HolderError::UntrustedImage { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("evil.example"), "{error}");

    // A newer tag or a digest of the same repository is fine (operator upgrades).
    sidecar_mut(&mut pod).image = Some("registry.example/sluice-sidecar:0.2.0@sha256:abcd".into());
    assert_eq!(check(&pod), Ok(()));
}

#[test]
fn a_pinned_digest_is_checked_in_the_spec_and_in_what_runs() {
    let mut cfg = config(true);
    cfg.image = "registry.example/sluice-sidecar@sha256:aaaa".into();
    let mut pod = injected_with(&cfg);
    let verdict = |pod: &Pod| check_token_holder(pod, UID, &cfg, &allowed());
    assert_eq!(verdict(&pod), Ok(()));

    let status = |image_id: &str| PodStatus {
        init_container_statuses: Some(vec![ContainerStatus {
            name: SIDECAR_CONTAINER_NAME.into(),
            image_id: image_id.into(),
            ..Default::default()
        }]),
        ..Default::default()
    };
    pod.status = Some(status("registry.example/sluice-sidecar@sha256:aaaa"));
    assert_eq!(verdict(&pod), Ok(()));
    pod.status = Some(status("registry.example/sluice-sidecar@sha256:bbbb"));
    let error = verdict(&pod).unwrap_err();
    assert!(
        matches!(error, HolderError::RunningImageMismatch { .. }),
        "{error}"
    );

    pod.status = None;
    sidecar_mut(&mut pod).image = Some("registry.example/sluice-sidecar:0.1.0".into());
    let error = verdict(&pod).unwrap_err();
    assert!(error.to_string().contains("pinned"), "{error}");
}

#[test]
fn a_sidecar_the_webhook_did_not_write_is_refused() {
    // Another gateway URL: the sidecar would send its token elsewhere.
    let mut pod = injected_pod(true);
    let sidecar = sidecar_mut(&mut pod);
    for e in sidecar.env.as_mut().unwrap() {
        if e.name == env::GATEWAY_URL {
            e.value = Some("https://evil.example".into());
        }
    }
    assert_eq!(
        check(&pod),
        Err(HolderError::SidecarTampered {
            fields: "env".into()
        })
    );

    // Its own command, an exec probe, a lifecycle hook, a writable root,
    // an unknown variable, a second mount.
    type Edit = (&'static str, fn(&mut Container));
    let edits: Vec<Edit> = vec![
        ("command", |c| c.command = Some(vec!["/bin/sh".into()])),
        ("args", |c| c.args = Some(vec!["standalone".into()])),
        ("startupProbe", |c| {
            c.startup_probe = Some(Probe {
                exec: Some(k8s_openapi::api::core::v1::ExecAction {
                    command: Some(vec!["cat".into(), "/proc/1/environ".into()]),
                }),
                ..Default::default()
            })
        }),
        ("lifecycle", |c| {
            c.lifecycle = Some(Default::default());
        }),
        ("securityContext", |c| {
            c.security_context
                .as_mut()
                .unwrap()
                .read_only_root_filesystem = Some(false)
        }),
        ("env", |c| {
            c.env
                .as_mut()
                .unwrap()
                .push(k8s_openapi::api::core::v1::EnvVar {
                    name: "RUST_LOG".into(),
                    value: Some("trace".into()),
                    value_from: None,
                })
        }),
        ("volumeMounts", |c| {
            c.volume_mounts.as_mut().unwrap().push(VolumeMount {
                name: "other".into(),
                mount_path: "/x".into(),
                ..Default::default()
            })
        }),
    ];
    for (field, edit) in edits {
        let mut pod = injected_pod(true);
        edit(sidecar_mut(&mut pod));
        assert_eq!(
            check(&pod),
            Err(HolderError::SidecarTampered {
                fields: field.into()
            }),
            "{field}"
        );
    }
}

#[test]
fn the_sidecar_trusts_only_the_operators_ca() {
    let mut pod = injected_pod(true);
    for e in sidecar_mut(&mut pod).env.as_mut().unwrap() {
        if e.name == env::CA_PEM {
            e.value = Some(OLD_CA.into());
        }
    }
    assert_eq!(check(&pod), Err(HolderError::UntrustedCa));
    // During a rotation the bundle holds both: the old one is still fine.
    let mut cfg = config(true);
    cfg.ca_pem = format!("{CA}{OLD_CA}");
    assert_eq!(check_token_holder(&pod, UID, &cfg, &allowed()), Ok(()));
}

#[test]
fn the_service_account_plugins_api_token_mount_is_no_difference() {
    let api = VolumeMount {
        name: "kube-api-access-x7k2q".into(),
        mount_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
        read_only: Some(true),
        ..Default::default()
    };
    let mut pod = injected_pod(true);
    sidecar_mut(&mut pod)
        .volume_mounts
        .as_mut()
        .unwrap()
        .push(api.clone());
    assert_eq!(check(&pod), Ok(()));
    // Anything else about it is a difference: writable, or elsewhere.
    for edit in [
        VolumeMount {
            read_only: None,
            ..api.clone()
        },
        VolumeMount {
            mount_path: "/etc/sluice".into(),
            ..api.clone()
        },
    ] {
        let mut pod = injected_pod(true);
        sidecar_mut(&mut pod)
            .volume_mounts
            .as_mut()
            .unwrap()
            .push(edit);
        assert!(
            matches!(check(&pod), Err(HolderError::SidecarTampered { .. })),
            "{:?}",
            check(&pod)
        );
    }
}

#[test]
fn token_mounted_elsewhere_is_refused() {
    let mut pod = injected_pod(true);
    pod.spec.as_mut().unwrap().containers[0].volume_mounts = Some(vec![token_mount()]);
    let error = check(&pod).unwrap_err();
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
    let error = check(&pod).unwrap_err();
    assert!(matches!(error, HolderError::TokenExposed { .. }), "{error}");

    // A second sluice.dev token for the app, under another name.
    let mut pod = injected_pod(true);
    let spec = pod.spec.as_mut().unwrap();
    let mut second: Volume = spec.volumes.as_ref().unwrap()[0].clone();
    second.name = "mine".into();
    spec.volumes.as_mut().unwrap().push(second);
    let error = check(&pod).unwrap_err();
    assert!(matches!(error, HolderError::TokenVolume { .. }), "{error}");
}

#[test]
fn shared_namespaces_are_refused() {
    let mut pod = injected_pod(true);
    pod.spec.as_mut().unwrap().share_process_namespace = Some(true);
    let error = check(&pod).unwrap_err();
    assert!(
        matches!(error, HolderError::ProcessNamespaceShared { .. }),
        "{error}"
    );

    let mut pod = injected_pod(true);
    pod.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(check(&pod), Err(HolderError::HostNetwork));

    let mut pod = injected_pod(true);
    pod.spec.as_mut().unwrap().ephemeral_containers = Some(vec![EphemeralContainer {
        name: "debug".into(),
        target_container_name: Some(SIDECAR_CONTAINER_NAME.into()),
        ..Default::default()
    }]);
    let error = check(&pod).unwrap_err();
    assert!(
        error.to_string().contains("\"debug\" targets the sidecar"),
        "{error}"
    );
}

#[test]
fn two_or_misplaced_sidecars_are_refused() {
    let mut pod = injected_pod(true);
    let spec = pod.spec.as_mut().unwrap();
    let sidecar = spec.init_containers.as_ref().unwrap()[0].clone();
    spec.containers.push(sidecar);
    let error = check(&pod).unwrap_err();
    assert!(
        matches!(error, HolderError::SidecarCount { count: 2, .. }),
        "{error}"
    );

    // A regular container where the cluster has native sidecars.
    let error =
        check_token_holder(&injected_pod(false), UID, &config(true), &allowed()).unwrap_err();
    assert!(
        matches!(error, HolderError::SidecarCount { count: 1, .. }),
        "{error}"
    );
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
    assert_eq!(digest("a/sidecar:1@sha256:ff"), Some("sha256:ff"));
    assert_eq!(digest("a/sidecar:1"), None);
}

fn with_annotations(cfg: &InjectConfig, pairs: &[(&str, &str)]) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.uid = Some(UID.into());
    let mut annotations: std::collections::BTreeMap<String, String> =
        [(INJECT_ANNOTATION.to_string(), "true".to_string())].into();
    for (k, v) in pairs {
        annotations.insert(k.to_string(), v.to_string());
    }
    pod.metadata.annotations = Some(annotations);
    pod.spec = Some(PodSpec {
        containers: vec![Container {
            name: "app".into(),
            image: Some("app:1".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    inject(&pod, cfg).unwrap().pod
}

#[test]
fn a_pods_own_sidecar_settings_keep_it_genuine_but_only_as_the_injector_writes_them() {
    use crate::injection::pod_settings::{
        AnnotationBounds, LOG_LEVEL_ANNOTATION, LogLevel, MEMORY_LIMIT_ANNOTATION, QuantityBounds,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let mut cfg = config(true);
    cfg.options.annotation_bounds = AnnotationBounds {
        cpu: None,
        memory: Some(QuantityBounds {
            min: None,
            max: Quantity("1Gi".into()),
        }),
        log_levels: vec![LogLevel::Debug],
    };
    let pod = with_annotations(
        &cfg,
        &[
            (MEMORY_LIMIT_ANNOTATION, "512Mi"),
            (LOG_LEVEL_ANNOTATION, "debug"),
        ],
    );
    let genuine = |pod: &Pod| check_token_holder(pod, UID, &cfg, &allowed());
    assert_eq!(genuine(&pod), Ok(()));
    // SLUICE_LOG is one level word; a filter directive is not what the
    // injector writes.
    let mut tampered = pod.clone();
    let env = sidecar_mut(&mut tampered).env.as_mut().unwrap();
    env.last_mut().unwrap().value = Some("debug,h2=trace".into());
    assert!(
        matches!(genuine(&tampered), Err(HolderError::SidecarTampered { ref fields }) if fields == "env"),
        "{:?}",
        genuine(&tampered)
    );
}

#[test]
fn a_uid_left_to_the_platform_may_be_any_but_root() {
    let mut cfg = config(true);
    cfg.options.security_context.run_as_user = None;
    cfg.options.security_context.run_as_group = None;
    let mut pod = injected_with(&cfg);
    let genuine = |pod: &Pod| check_token_holder(pod, UID, &cfg, &allowed());
    assert_eq!(genuine(&pod), Ok(()));
    // OpenShift's SCC fills in one of the namespace's UIDs.
    let context = sidecar_mut(&mut pod).security_context.as_mut().unwrap();
    context.run_as_user = Some(1_000_680_000);
    context.run_as_group = Some(1_000_680_000);
    assert_eq!(genuine(&pod), Ok(()));
    let mut root = pod.clone();
    sidecar_mut(&mut root)
        .security_context
        .as_mut()
        .unwrap()
        .run_as_user = Some(0);
    assert!(
        matches!(genuine(&root), Err(HolderError::SidecarTampered { ref fields }) if fields.contains("securityContext")),
        "{:?}",
        genuine(&root)
    );
    // A UID the operator sets is that UID, not any.
    let fixed = config(true);
    let mut other = injected_with(&fixed);
    sidecar_mut(&mut other)
        .security_context
        .as_mut()
        .unwrap()
        .run_as_user = Some(1_000_680_000);
    assert!(check_token_holder(&other, UID, &fixed, &allowed()).is_err());
}

/// The chart's `sidecar.logLevel` is every sidecar's `SLUICE_LOG`; a pod's
/// `sluice.dev/sidecar-log-level` replaces it (one variable, not two) within
/// `annotationBounds.logLevels`; both pods stay genuine.
#[test]
fn the_chart_wide_log_level_is_the_default_a_pods_annotation_replaces() {
    use crate::injection::pod_settings::{LOG_ENV, LOG_LEVEL_ANNOTATION, LogLevel};
    let mut cfg = config(true);
    cfg.sidecar_env = crate::config::SidecarConfig {
        log_level: Some(LogLevel::Warn),
        ..Default::default()
    }
    .env();
    cfg.options.annotation_bounds.log_levels = vec![LogLevel::Debug];
    let levels = |pod: &Pod| -> Vec<String> {
        pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0]
            .env
            .iter()
            .flatten()
            .filter(|e| e.name == LOG_ENV)
            .map(|e| e.value.clone().unwrap_or_default())
            .collect()
    };
    let genuine = |pod: &Pod| check_token_holder(pod, UID, &cfg, &allowed());
    let plain = with_annotations(&cfg, &[]);
    assert_eq!(levels(&plain), vec!["warn"]);
    assert_eq!(genuine(&plain), Ok(()));
    let asked = with_annotations(&cfg, &[(LOG_LEVEL_ANNOTATION, "debug")]);
    assert_eq!(levels(&asked), vec!["debug"]);
    assert_eq!(genuine(&asked), Ok(()));
    // The chart-wide level does not widen the bounds: trace stays refused.
    let mut pod = Pod::default();
    pod.metadata.annotations = Some(
        [
            (INJECT_ANNOTATION.to_string(), "true".to_string()),
            (LOG_LEVEL_ANNOTATION.to_string(), "trace".to_string()),
        ]
        .into(),
    );
    pod.spec = Some(PodSpec {
        containers: vec![Container {
            name: "app".into(),
            image: Some("app:1".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    let error = inject(&pod, &cfg).unwrap_err().to_string();
    assert!(error.contains("sluice.dev/sidecar-log-level"), "{error}");
}

/// The pod watch holds pods as their JSON text (#25); what a check reads
/// from a held pod is the pod given, so a genuine pod passes and a tampered
/// one is refused for the same reason as before it was held.
#[test]
fn a_held_pod_is_checked_as_the_pod_itself() {
    use crate::gateway::holders::HeldPod;
    let mut genuine = injected_pod(true);
    genuine.status = Some(PodStatus {
        init_container_statuses: Some(vec![ContainerStatus {
            name: "sluice-sidecar".into(),
            image: "registry.example/sluice-sidecar:0.1.0".into(),
            image_id: "registry.example/sluice-sidecar@sha256:ab".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    for pod in [genuine, tampered_pod()] {
        let held = HeldPod::new(&pod).unwrap();
        assert_eq!(held.uid(), Some(UID));
        let decoded = held.pod().unwrap();
        assert_eq!(decoded, pod, "the held pod decodes to the pod given");
        assert_eq!(check(&decoded), check(&pod));
    }
    let tampered = HeldPod::new(&tampered_pod()).unwrap();
    assert_eq!(
        check(&tampered.pod().unwrap()),
        Err(HolderError::SidecarTampered {
            fields: "command".into()
        })
    );
}

fn tampered_pod() -> Pod {
    let mut pod = injected_pod(true);
    sidecar_mut(&mut pod).command = Some(vec!["/bin/sh".into()]);
    pod
}
