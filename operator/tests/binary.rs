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
