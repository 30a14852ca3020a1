use super::*;
use k8s_openapi::api::core::v1::{PodSpec, VolumeMount};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sluice_crds::{Connection, Protocol};

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
        options: Default::default(),
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
