//! Issue 23 item 10: the operator reads the same log filter variable as the
//! sidecar (`SLUICE_LOG`) and writes no ANSI colours into a file or pipe.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::Api;
use kube::runtime::wait::await_condition;
use support::{Child, bounded};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_log_sets_the_level_and_a_file_gets_no_colours() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = sluice_e2e::TestCluster::start(sluice_e2e::Options::default())
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("operator.log");
    let child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice-operator"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--webhook-url",
                &format!("https://127.0.0.1:{port}"),
            ])
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env("SLUICE_LOG", "debug")
            .env_remove("RUST_LOG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client);
    bounded(
        "webhook configuration",
        await_condition(
            webhooks,
            "sluice-operator",
            |w: Option<&MutatingWebhookConfiguration>| w.is_some(),
        ),
    )
    .await
    .unwrap();
    // Debug lines arrive while it runs; poll for one.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains(" DEBUG ") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(child);
    assert!(
        text.contains(" DEBUG "),
        "SLUICE_LOG=debug shows no debug line:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in a log file:\n{text}"
    );
}
