//! The `sluice-operator` binary against the test control plane, as `make e2e`
//! runs it: `--listen` and `--webhook-url`, KUBECONFIG from the cluster.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::process::Stdio;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::wait::await_condition;
use support::{Child, bounded};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_registers_its_webhook_and_serves_the_gateway() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = sluice_e2e::TestCluster::start(sluice_e2e::Options::default())
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    // A free port: bound and released, then given to the operator.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let _child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice-operator"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--webhook-url",
                &url,
            ])
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );

    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let registered = bounded(
        "webhook configuration",
        await_condition(
            webhooks,
            "sluice-operator",
            |w: Option<&MutatingWebhookConfiguration>| w.is_some(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let webhook = &registered.webhooks.unwrap()[0];
    assert_eq!(
        webhook.client_config.url.as_deref(),
        Some(format!("{url}/mutate/pods").as_str())
    );
    let ca_bundle = String::from_utf8(webhook.client_config.ca_bundle.clone().unwrap().0).unwrap();
    let secret = Api::<Secret>::namespaced(client, "sluice-system")
        .get("sluice-operator-tls")
        .await
        .unwrap();
    let ca = String::from_utf8(secret.data.unwrap()["ca.crt"].0.clone()).unwrap();
    assert_eq!(ca_bundle, ca);

    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, _, body) = support::call(addr, &ca_bundle, "GET", "/healthz", &[], None).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = support::call(addr, &ca_bundle, "GET", "/v1/jwks", &[], None).await;
    assert_eq!(status, 200);
    let jwks: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
}

/// An AccessPolicy that no client can decode (here `statementsPerSecond` beyond
/// `u32`, stored by a raw write as under a laxer schema) must not stop the
/// operator: it starts with it in the first list, becomes ready, reconciles the
/// other policies, and marks the broken one `Invalid` (reason `Undecodable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_policy_is_skipped_and_marked_invalid() {
    let (cluster, client) = support::cluster_with_crds(sluice_e2e::Options::default()).await;
    let ns =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&Default::default(), &serde_json::from_value(ns).unwrap())
        .await
        .unwrap();
    let policy = |name: &str, rate: u64| {
        serde_json::json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"subjects": [{"serviceAccount": "job"}], "connections": ["orders-db"],
                "mode": "enforce", "defaultAction": "allow", "onParseError": "deny",
                "limits": {"statementsPerSecond": rate, "onMaxRows": "refuse"}}})
    };
    // The schema refuses it now; a raw write is how such an object exists.
    let refused = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        "shop",
        &kube::discovery::ApiResource::erase::<sluice_crds::AccessPolicy>(&()),
    )
    .create(
        &Default::default(),
        &serde_json::from_value(policy("broken", 4294967296)).unwrap(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("spec.limits.statementsPerSecond in body should be less than or equal to 4.294967295e+09"),
        "{refused}"
    );
    cluster.store_raw("sluice.dev/accesspolicies", policy("broken", 4294967296));
    // A rule whose match is empty (a misspelt field pruned by a client that
    // does not ask for strict validation, stored before the schema refused
    // it) would match everything: the policy is Invalid, not a catch-all.
    let mut pruned = policy("pruned", 10);
    pruned["spec"]["defaultAction"] = "deny".into();
    pruned["spec"]["rules"] =
        serde_json::json!([{"name": "reads", "match": {}, "action": "allow"}]);
    cluster.store_raw("sluice.dev/accesspolicies", pruned);
    // The Connection the policies name exists, so the empty match is the
    // pruned policy's only problem.
    support::apply_yaml(
        &client,
        "apiVersion: sluice.dev/v1alpha1\nkind: Connection\nmetadata: {name: orders-db, namespace: shop}\nspec:\n  protocol: postgres\n  upstream: {host: 127.0.0.1, port: 5432, database: orders, tls: {mode: disable}}\n  credentials: {secretRef: {name: orders-db}}\n  listen: {port: 15432}\n",
    )
    .await;
    support::apply_yaml(
        &client,
        &serde_yaml::to_string(&policy("fine", 10)).unwrap(),
    )
    .await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let _child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice-operator"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--webhook-url",
                &url,
            ])
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let policies = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        "shop",
        &kube::discovery::ApiResource::erase::<sluice_crds::AccessPolicy>(&()),
    );
    let condition = |o: &kube::api::DynamicObject, type_: &str| {
        o.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == type_)
            .cloned()
    };
    let broken = bounded(
        "the broken policy marked Invalid",
        await_condition(
            policies.clone(),
            "broken",
            |o: Option<&kube::api::DynamicObject>| {
                o.and_then(|o| condition(o, "Invalid"))
                    .is_some_and(|c| c["status"] == "True")
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let invalid = condition(&broken, "Invalid").unwrap();
    assert_eq!(invalid["reason"], "Undecodable");
    assert!(
        invalid["message"]
            .as_str()
            .unwrap()
            .contains("statementsPerSecond")
            || invalid["message"].as_str().unwrap().contains("4294967296"),
        "{invalid}"
    );
    assert_eq!(condition(&broken, "Ready").unwrap()["status"], "False");
    let pruned = bounded(
        "the policy with an empty match marked Invalid",
        await_condition(
            policies.clone(),
            "pruned",
            |o: Option<&kube::api::DynamicObject>| {
                o.and_then(|o| condition(o, "Invalid"))
                    .is_some_and(|c| c["status"] == "True")
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let invalid = condition(&pruned, "Invalid").unwrap();
    assert_eq!(invalid["reason"], "InvalidRule", "{invalid}");
    assert!(
        invalid["message"]
            .as_str()
            .unwrap()
            .contains("spec.rules[0].match"),
        "{invalid}"
    );
    // The other policy is reconciled.
    bounded(
        "the other policy reconciled",
        await_condition(policies, "fine", |o: Option<&kube::api::DynamicObject>| {
            o.is_some_and(|o| o.data["status"]["observedGeneration"].as_i64() == Some(1))
        }),
    )
    .await
    .unwrap();
    // And the operator is ready (its caches filled despite the broken object).
    let secret = Api::<Secret>::namespaced(client, "sluice-system");
    let tls = bounded(
        "serving certificate",
        await_condition(secret, "sluice-operator-tls", |s: Option<&Secret>| {
            s.is_some()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let ca = String::from_utf8(tls.data.unwrap()["ca.crt"].0.clone()).unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let (status, _, body) = support::call(addr, &ca, "GET", "/readyz", &[], None).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {status}: {}",
            String::from_utf8_lossy(&body)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The approvals webhook configurations, as the API server stores them
/// (defaulted: selectors `{}`, rule scope, service port...), compare equal to
/// what the operator wants, so the leader does not re-apply them every tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_webhook_configurations_need_no_reapply() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use sluice_operator::webhook_config::{
        WebhookEndpoint, WebhookSettings, approvals_mutating_configuration,
        approvals_validating_configuration, mutating_needs_apply, pod_injection_configuration,
        validating_needs_apply,
    };
    let (_cluster, client) = support::cluster_with_crds(sluice_e2e::Options::default()).await;
    for endpoint in [
        WebhookEndpoint::Url("https://127.0.0.1:9443".into()),
        WebhookEndpoint::Service {
            namespace: "sluice-system".into(),
            name: "sluice-operator".into(),
            port: 443,
        },
    ] {
        let settings = WebhookSettings {
            endpoint,
            ca_bundle_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
            namespace_label: ("sluice.dev/injection".into(), "enabled".into()),
            operator_namespace: "sluice-system".into(),
            match_conditions: false,
            ca_injection_from: None,
        };
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        for desired in [
            approvals_mutating_configuration(&settings),
            pod_injection_configuration(&settings),
        ] {
            let name = desired.metadata.name.clone().unwrap();
            let _ = mutating.delete(&name, &Default::default()).await;
            let stored = mutating
                .create(&Default::default(), &desired)
                .await
                .unwrap();
            assert!(
                !mutating_needs_apply(Some(&stored), &desired),
                "{name}: stored {:?}\nwanted {:?}",
                stored.webhooks,
                desired.webhooks
            );
        }
        let desired = approvals_validating_configuration(&settings);
        let name = desired.metadata.name.clone().unwrap();
        let _ = validating.delete(&name, &Default::default()).await;
        let stored = validating
            .create(&Default::default(), &desired)
            .await
            .unwrap();
        assert!(
            !validating_needs_apply(Some(&stored), &desired),
            "{name}: stored {:?}",
            stored.webhooks
        );
    }
}
