//! Golden-file tests of the sidecar injector.
//!
//! Each `testdata/inject/NAME.yaml` holds a pod, optionally followed by a second
//! YAML document of test settings (`nativeSidecars`, `bound`). The expected
//! result is `NAME.injected.yaml` (the pod as stored, with the outcome and
//! warnings as comments) or `NAME.error.txt` (the refusal message). Regenerate
//! with `UPDATE_GOLDEN=1 cargo test -p sluice-operator --test integration inject_golden::` and
//! review the diff.
// Helpers shared by the tests panic on broken test data, as the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use sluice_crds::Protocol;
use sluice_operator::config::OperatorConfig;
use sluice_operator::injection::inject::{
    ConnectionTarget, InjectConfig, Outcome, default_sidecar_resources, inject, service_account_of,
};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    native_sidecars: Option<bool>,
    bound: Option<Vec<String>>,
    /// The operator's settings file (what the Helm chart writes), applied as
    /// the operator applies it.
    operator_config: Option<serde_json::Value>,
}

struct Case {
    name: String,
    dir: PathBuf,
    raw_input: serde_json::Value,
    pod: Pod,
    cfg: InjectConfig,
}

/// Whether this run rewrites the golden files (`UPDATE_GOLDEN=1`, nothing else); every
/// test asks here, so the flag means one thing in all of them.
fn updating_golden() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/inject")
}

/// The Connections of namespace `shop` every case sees.
fn namespace_connections(bound: &[String]) -> Vec<ConnectionTarget> {
    let target =
        |name: &str, protocol, port, database: Option<&str>, env: Option<&str>| ConnectionTarget {
            name: name.to_string(),
            protocol,
            listen_port: port,
            database: database.map(str::to_string),
            inject_env: env.map(str::to_string),
            bound: bound.iter().any(|b| b == name),
        };
    vec![
        target(
            "orders-db",
            Protocol::Postgres,
            15432,
            Some("orders"),
            Some("DATABASE_URL"),
        ),
        target(
            "stripe-api",
            Protocol::Http,
            18080,
            None,
            Some("STRIPE_API_URL"),
        ),
        target(
            "analytics-db",
            Protocol::Mysql,
            13306,
            Some("analytics"),
            Some("ANALYTICS_DSN"),
        ),
        target(
            "orders-replica",
            Protocol::Postgres,
            15433,
            Some("orders"),
            Some("DATABASE_URL"),
        ),
    ]
}

fn config(pod: &Pod, settings: Settings) -> InjectConfig {
    let operator_config = settings.operator_config.map(|value| {
        let text = serde_saphyr::to_string(&value).unwrap();
        OperatorConfig::parse(&text, Path::new("testdata")).unwrap()
    });
    let bound = settings
        .bound
        .unwrap_or_else(|| vec!["orders-db".to_string(), "stripe-api".to_string()]);
    let mut cfg = InjectConfig {
        options: Default::default(),
        sidecar_env: Vec::new(),
        shutdown_grace_seconds:
            sluice_operator::injection::inject::DEFAULT_SIDECAR_SHUTDOWN_GRACE_SECONDS,
        revision: "0.1.0-test".to_string(),
        image: "registry.example/sluice-sidecar:0.1.0".to_string(),
        image_pull_policy: Some("IfNotPresent".to_string()),
        gateway_url: "https://sluice-operator.sluice-system.svc:8443".to_string(),
        ca_pem: "-----BEGIN CERTIFICATE-----\nTUlJQnRlc3Q=\n-----END CERTIFICATE-----\n"
            .to_string(),
        admin_port: 15020,
        native_sidecars: settings.native_sidecars.unwrap_or(true),
        resources: default_sidecar_resources(),
        service_account: service_account_of(pod).to_string(),
        connections: namespace_connections(&bound),
    };
    if let Some(operator_config) = operator_config {
        operator_config.apply_to_inject(&mut cfg);
    }
    cfg
}

fn load(input: &Path) -> Case {
    let text = std::fs::read_to_string(input).unwrap();
    let mut docs = serde_saphyr::from_multiple::<serde_json::Value>(&text)
        .unwrap()
        .into_iter();
    let raw_input = docs.next().expect("a pod document");
    let pod: Pod = serde_json::from_value(raw_input.clone()).unwrap();
    let settings = match docs.next() {
        Some(doc) => serde_json::from_value::<Settings>(doc).unwrap(),
        None => Settings::default(),
    };
    let cfg = config(&pod, settings);
    let name = input
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(".yaml")
        .to_string();
    Case {
        name,
        dir: input.parent().unwrap().to_path_buf(),
        raw_input,
        pod,
        cfg,
    }
}

fn cases() -> Vec<Case> {
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(".yaml") && !name.ends_with(".injected.yaml")
        })
        .collect();
    inputs.sort();
    inputs.iter().map(|p| load(p)).collect()
}

/// What the golden file of a case holds.
fn render(case: &Case) -> (PathBuf, String) {
    match inject(&case.pod, &case.cfg) {
        Ok(injection) => {
            let mut text = String::from(
                "# Generated by `UPDATE_GOLDEN=1 cargo test -p sluice-operator --test integration inject_golden::`.\n",
            );
            text.push_str(&format!("# outcome: {:?}\n", injection.outcome));
            for warning in &injection.warnings {
                text.push_str(&format!("# warning: {warning}\n"));
            }
            text.push_str(&serde_saphyr::to_string(&injection.pod).unwrap());
            (case.dir.join(format!("{}.injected.yaml", case.name)), text)
        }
        Err(error) => (
            case.dir.join(format!("{}.error.txt", case.name)),
            format!("{error}\n"),
        ),
    }
}

#[test]
fn golden_files() {
    let update = updating_golden();
    let cases = cases();
    assert!(
        cases.len() >= 8,
        "expected at least 8 cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let (path, text) = render(case);
        if update {
            for stale in [
                case.dir.join(format!("{}.injected.yaml", case.name)),
                case.dir.join(format!("{}.error.txt", case.name)),
            ] {
                if stale != path && stale.exists() {
                    std::fs::remove_file(&stale).unwrap();
                }
            }
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == text => {}
            Ok(expected) => failures.push(format!(
                "{}: output differs from {}\n--- expected\n{expected}\n--- actual\n{text}",
                case.name,
                path.display()
            )),
            Err(_) => failures.push(format!(
                "{}: {} is missing (the case now renders to it); run with UPDATE_GOLDEN=1",
                case.name,
                path.display()
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The patch is what the API server applies: applied to the pod as it was
/// sent (raw JSON, not the typed struct), it must give the golden pod.
#[test]
fn patch_applied_to_input_gives_golden_output() {
    let mut checked = 0;
    for case in cases() {
        let Ok(injection) = inject(&case.pod, &case.cfg) else {
            continue;
        };
        // While golden_files rewrites the files, compare with what it writes.
        let golden: serde_json::Value = if updating_golden() {
            serde_json::to_value(&injection.pod).unwrap()
        } else {
            let golden_path = case.dir.join(format!("{}.injected.yaml", case.name));
            serde_saphyr::from_str(&std::fs::read_to_string(&golden_path).unwrap()).unwrap()
        };

        let mut patched = case.raw_input.clone();
        json_patch::patch(&mut patched, &injection.patch).unwrap();
        assert_eq!(
            patched, golden,
            "{}: patched input differs from the golden pod",
            case.name
        );

        match injection.outcome {
            Outcome::Injected { .. } => {
                assert!(
                    !injection.patch.0.is_empty(),
                    "{}: injected but empty patch",
                    case.name
                )
            }
            Outcome::NotRequested | Outcome::AlreadyInjected => {
                assert!(
                    injection.patch.0.is_empty(),
                    "{}: unchanged but non-empty patch",
                    case.name
                )
            }
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} successful cases");
}

/// Re-admitting an injected pod changes nothing.
#[test]
fn reinjection_is_a_no_op() {
    for case in cases() {
        let Ok(first) = inject(&case.pod, &case.cfg) else {
            continue;
        };
        let second = inject(&first.pod, &case.cfg).unwrap();
        assert!(
            second.patch.0.is_empty(),
            "{}: second injection patched",
            case.name
        );
        if matches!(first.outcome, Outcome::Injected { .. }) {
            assert_eq!(second.outcome, Outcome::AlreadyInjected, "{}", case.name);
        }
    }
}

/// The API server may send fields newer than the k8s-openapi build knows. The
/// patch must leave them where they were, even when the sidecar is inserted
/// in front of the containers that carry them.
#[test]
fn patch_keeps_fields_the_typed_structs_do_not_know() {
    let raw = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "future", "namespace": "shop", "annotations": {"sluice.dev/inject": "true"}},
        "spec": {
            "serviceAccountName": "report-job",
            "futurePodField": {"a": 1},
            "initContainers": [{"name": "init", "image": "i", "futureContainerField": true}],
            "containers": [{"name": "app", "image": "a", "futureContainerField": "keep"}]
        }
    });
    let pod: Pod = serde_json::from_value(raw.clone()).unwrap();
    for native_sidecars in [true, false] {
        let settings = Settings {
            native_sidecars: Some(native_sidecars),
            bound: None,
            operator_config: None,
        };
        let injection = inject(&pod, &config(&pod, settings)).unwrap();
        let mut patched = raw.clone();
        json_patch::patch(&mut patched, &injection.patch).unwrap();

        let spec = &patched["spec"];
        assert_eq!(spec["futurePodField"], serde_json::json!({"a": 1}));
        let find = |list: &str, name: &str| {
            spec[list]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap()
                .clone()
        };
        let app = find("containers", "app");
        assert_eq!(
            app["futureContainerField"], "keep",
            "native={native_sidecars}: {patched:#}"
        );
        assert_eq!(app["env"][0]["name"], "DATABASE_URL");
        assert_eq!(find("initContainers", "init")["futureContainerField"], true);
        let sidecar_list = if native_sidecars {
            "initContainers"
        } else {
            "containers"
        };
        let sidecar = find(sidecar_list, "sluice-sidecar");
        assert!(sidecar.get("futureContainerField").is_none(), "{sidecar:#}");
        assert_eq!(
            spec[sidecar_list][0]["name"], "sluice-sidecar",
            "sidecar goes first"
        );
    }
}

/// Every injected pod is one a kube-apiserver 1.33 stores: each is created in the
/// test control plane (the ServiceAccount admission plugin, pod validation: restartable
/// init containers only may carry probes, projected token lifetimes, volume mounts,
/// unique names) exactly as the patch left it.
#[tokio::test]
async fn injected_pods_are_accepted_by_the_api_server() {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use kube::api::{Api, PostParams};
    let cluster = sluice_e2e::TestCluster::start(sluice_e2e::Options::default())
        .await
        .expect("test control plane");
    let client = cluster.client().await.expect("client");
    let pp = PostParams::default();
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "shop"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&pp, &ns)
        .await
        .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "shop");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let mut created = 0;
    for case in cases() {
        let Ok(injection) = inject(&case.pod, &case.cfg) else {
            continue;
        };
        if !matches!(injection.outcome, Outcome::Injected { .. }) {
            continue;
        }
        let sa = service_account_of(&injection.pod).to_string();
        if sas.get_opt(&sa).await.unwrap().is_none() {
            let account: ServiceAccount =
                serde_json::from_value(serde_json::json!({"metadata": {"name": sa}})).unwrap();
            sas.create(&pp, &account).await.unwrap();
        }
        let mut raw = case.raw_input.clone();
        json_patch::patch(&mut raw, &injection.patch).unwrap();
        // One pod per case: several cases share a pod name.
        if raw["metadata"]["generateName"].is_null() {
            raw["metadata"]["name"] = serde_json::json!(case.name);
        }
        let pod: Pod = serde_json::from_value(raw).unwrap();
        if let Err(e) = pods.create(&pp, &pod).await {
            panic!(
                "{}: the API server refuses the injected pod: {e}",
                case.name
            );
        }
        created += 1;
    }
    assert!(created >= 8, "only {created} injected pods checked");
}
