//! Property tests of the injector over generated pod shapes: the patch always
//! applies to the pod as sent and gives the injected pod, injection is
//! idempotent, and every app container ends up with exactly one binding of
//! each variable.

// Test helpers panic on impossible test data, as the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_crds::Protocol;
use sluice_operator::injection::inject::{
    ConnectionTarget, InjectConfig, InjectError, Outcome, SIDECAR_CONTAINER_NAME,
    default_sidecar_resources, inject,
};

fn config(native_sidecars: bool) -> InjectConfig {
    let target = |name: &str, protocol, port, env: &str| ConnectionTarget {
        name: name.into(),
        protocol,
        listen_port: port,
        database: Some("db".into()),
        inject_env: Some(env.into()),
        bound: true,
    };
    InjectConfig {
        options: Default::default(),
        sidecar_env: Vec::new(),
        shutdown_grace_seconds:
            sluice_operator::injection::inject::DEFAULT_SIDECAR_SHUTDOWN_GRACE_SECONDS,
        revision: "r1".into(),
        image: "registry.example/sluice-sidecar:1".into(),
        image_pull_policy: None,
        gateway_url: "https://gw:8443".into(),
        ca_pem: "PEM".into(),
        admin_port: 15020,
        native_sidecars,
        resources: default_sidecar_resources(),
        service_account: "app".into(),
        connections: vec![
            target("orders-db", Protocol::Postgres, 15432, "DATABASE_URL"),
            target("payments", Protocol::Http, 18080, "PAYMENTS_URL"),
        ],
    }
}

/// `None` (field absent), `Some(vec![])` (present but empty), or some items.
fn optional_list<T: std::fmt::Debug + Clone>(
    item: impl Strategy<Value = T>,
    max: usize,
) -> impl Strategy<Value = Option<Vec<T>>> {
    prop_oneof![
        Just(None),
        proptest::collection::vec(item, 0..=max).prop_map(Some)
    ]
}

fn container(prefix: &'static str) -> impl Strategy<Value = Value> {
    let env = optional_list(
        prop_oneof![
            Just("DATABASE_URL"),
            Just("LOG_LEVEL"),
            Just("PAYMENTS_URL"),
            Just("HOME")
        ],
        3,
    );
    let ports = optional_list(
        prop_oneof![Just(8080), Just(9090), Just(15432), Just(15020)],
        2,
    );
    (0u32..1000, env, ports, any::<bool>()).prop_map(move |(id, env, ports, unknown)| {
        let mut c = json!({"name": format!("{prefix}-{id}"), "image": "img:1"});
        if let Some(env) = env {
            let mut names: Vec<&str> = env;
            names.sort_unstable();
            names.dedup();
            c["env"] = json!(
                names
                    .iter()
                    .map(|n| json!({"name": n, "value": "app"}))
                    .collect::<Vec<_>>()
            );
        }
        if let Some(ports) = ports {
            let mut ports: Vec<i32> = ports;
            ports.sort_unstable();
            ports.dedup();
            c["ports"] = json!(
                ports
                    .iter()
                    .map(|p| json!({"containerPort": p}))
                    .collect::<Vec<_>>()
            );
        }
        if unknown {
            c["fieldFromTheFuture"] = json!({"x": 1});
        }
        c
    })
}

fn dedup_names(list: &mut [Value]) {
    for (index, c) in list.iter_mut().enumerate() {
        c["name"] = json!(format!("{}-{index}", c["name"].as_str().unwrap()));
    }
}

fn pod() -> impl Strategy<Value = Value> {
    let annotations = prop_oneof![
        Just(None),
        Just(Some(json!({"sluice.dev/inject": "true"}))),
        Just(Some(
            json!({"sluice.dev/inject": "true", "sluice.dev/connections": "payments"})
        )),
        Just(Some(
            json!({"sluice.dev/inject": "true", "kubectl.kubernetes.io/default-container": "x"})
        )),
    ];
    let volumes = optional_list(Just(json!({"name": "data", "emptyDir": {}})), 1);
    (
        annotations,
        proptest::collection::vec(container("app"), 1..4),
        optional_list(container("init"), 2),
        volumes,
    )
        .prop_map(|(annotations, mut containers, init, volumes)| {
            dedup_names(&mut containers);
            let mut pod = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "shop"},
                "spec": {"serviceAccountName": "app", "containers": containers}
            });
            if let Some(annotations) = annotations {
                pod["metadata"]["annotations"] = annotations;
            }
            if let Some(mut init) = init {
                dedup_names(&mut init);
                pod["spec"]["initContainers"] = json!(init);
            }
            if let Some(volumes) = volumes {
                pod["spec"]["volumes"] = json!(volumes);
            }
            pod
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn patch_is_sound_and_idempotent(raw in pod(), native in any::<bool>()) {
        let typed: Pod = serde_json::from_value(raw.clone()).unwrap();
        let cfg = config(native);
        // The ports the sidecar binds for this pod: its admin server and the
        // listener of each Connection the pod gets (all of them, or those
        // the annotation names); and the ports the pod's containers declare.
        let requested = raw["metadata"]["annotations"]["sluice.dev/inject"] == "true";
        let only = raw["metadata"]["annotations"]["sluice.dev/connections"].as_str();
        let mut claimed = vec![(15020u16, "the Sluice sidecar's admin server".to_string())];
        for (name, port) in [("orders-db", 15432u16), ("payments", 18080)] {
            if only.is_none_or(|o| o.split(',').any(|n| n.trim() == name)) {
                claimed.push((port, format!("Connection {name:?}")));
            }
        }
        let declared: Vec<(u16, String)> = ["initContainers", "containers"]
            .iter()
            .flat_map(|list| raw["spec"][list].as_array().cloned().unwrap_or_default())
            .flat_map(|c| {
                let name = c["name"].as_str().unwrap().to_string();
                c["ports"].as_array().cloned().unwrap_or_default().into_iter()
                    .map(move |p| (p["containerPort"].as_u64().unwrap() as u16, name.clone()))
            })
            .collect();
        let clash = declared.iter().find(|(port, _)| claimed.iter().any(|(c, _)| c == port));
        let injection = match inject(&typed, &cfg) {
            Ok(injection) => {
                prop_assert!(
                    !requested || clash.is_none(),
                    "injected although container {:?} declares port {:?} the sidecar binds",
                    clash.map(|c| &c.1), clash.map(|c| c.0)
                );
                injection
            }
            Err(InjectError::PortClash { port, first, second }) => {
                // Refused only for a real clash: a container declares the port,
                // and the sidecar binds it for this pod (a Connection the pod
                // does not get claims nothing).
                prop_assert!(requested, "a pod that asked for nothing was refused");
                let (_, owner) = claimed.iter().find(|(c, _)| *c == port)
                    .ok_or_else(|| TestCaseError::fail(format!("port {port} is not one the sidecar binds for this pod ({claimed:?})")))?;
                prop_assert_eq!(&first, owner);
                prop_assert!(
                    declared.iter().any(|(p, c)| *p == port && second == format!("container {c:?}")),
                    "{} does not declare port {} ({:?})", second, port, declared
                );
                return Ok(());
            }
            Err(other) => return Err(TestCaseError::fail(format!("unexpected refusal: {other}"))),
        };

        // The patch applied to the raw pod gives the typed result, plus any
        // unknown fields, which stay on the containers that had them.
        let mut patched = raw.clone();
        json_patch::patch(&mut patched, &injection.patch).unwrap();
        let reparsed: Pod = serde_json::from_value(patched.clone()).unwrap();
        prop_assert_eq!(serde_json::to_value(&reparsed).unwrap(), serde_json::to_value(&injection.pod).unwrap());
        for list in ["containers", "initContainers"] {
            for before in raw["spec"][list].as_array().into_iter().flatten() {
                let after = patched["spec"][list].as_array().unwrap().iter()
                    .find(|c| c["name"] == before["name"]).unwrap();
                prop_assert_eq!(&after["fieldFromTheFuture"], &before["fieldFromTheFuture"]);
                prop_assert_eq!(&after["ports"], &before["ports"]);
            }
        }

        let second = inject(&injection.pod, &cfg).unwrap();
        prop_assert!(second.patch.0.is_empty());

        match &injection.outcome {
            Outcome::NotRequested => prop_assert!(injection.patch.0.is_empty()),
            Outcome::AlreadyInjected => prop_assert!(false, "fresh pods are never already injected"),
            Outcome::Injected { connections } => {
                prop_assert_eq!(second.outcome, Outcome::AlreadyInjected);
                let spec = injection.pod.spec.as_ref().unwrap();
                let all: Vec<_> = spec.containers.iter().chain(spec.init_containers.iter().flatten()).collect();
                prop_assert_eq!(all.iter().filter(|c| c.name == SIDECAR_CONTAINER_NAME).count(), 1);
                let sidecar_list = if native { spec.init_containers.as_ref().unwrap() } else { &spec.containers };
                prop_assert_eq!(&sidecar_list[0].name, SIDECAR_CONTAINER_NAME);
                // Each app container binds each variable once.
                for c in spec.containers.iter().filter(|c| c.name != SIDECAR_CONTAINER_NAME) {
                    for variable in ["DATABASE_URL", "PAYMENTS_URL"] {
                        let count = c.env.iter().flatten().filter(|e| e.name == variable).count();
                        let requested = connections.iter().any(|n| {
                            (n == "orders-db" && variable == "DATABASE_URL") || (n == "payments" && variable == "PAYMENTS_URL")
                        });
                        let had = c.env.iter().flatten().any(|e| e.name == variable && e.value.as_deref() == Some("app"));
                        prop_assert!(count <= 1, "{variable} bound {count} times in {}", c.name);
                        prop_assert_eq!(count == 1, requested || had);
                    }
                }
            }
        }
    }
}
