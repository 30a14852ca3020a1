//! The operator with a certificate it does not manage (`--cert-dir`, as
//! cert-manager's Secret is mounted): it serves tls.crt, hands sidecars ca.crt,
//! registers its webhooks for cert-manager's cainjector instead of writing
//! caBundle, and serves a renewed certificate without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::json;
use sluice_e2e::{Options, TestCluster};
use sluice_operator::identity::certs::CertSource;
use sluice_operator::identity::pki::{Ca, ServingCert, SubjectNames};
use sluice_operator::identity::webhook_config::{WebhookEndpoint, WebhookSettings};
use sluice_operator::run::{Running, start};
use support::{apply_quickstart, bounded, cluster_with_crds, test_settings};

const CERTIFICATE: &str = "sluice-system/sluice-operator-serving";

fn loopback() -> SubjectNames {
    SubjectNames {
        dns: vec!["localhost".into()],
        ips: vec!["127.0.0.1".parse().unwrap()],
    }
}

/// Writes the three files as cert-manager's Secret volume shows them. Each
/// file is replaced with a rename, so a reader never sees half a file (the
/// kubelet swaps a symlink for the same effect).
fn write_cert_dir(dir: &Path, serving: &ServingCert, ca: &Ca) {
    for (file, text) in [
        ("tls.crt", serving.cert_pem()),
        ("tls.key", serving.key_pem()),
        ("ca.crt", ca.cert_pem()),
    ] {
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(file)).unwrap();
    }
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// The certificate the operator presents to a client trusting only `ca_pem`.
async fn presented(operator: &Running, ca_pem: &str) -> Vec<u8> {
    let config = sluice_e2e::pki::client_config(ca_pem).unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(operator.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(operator.addr.ip().into());
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_manager_certificate_is_served_renewed_and_handed_to_sidecars() {
    let (cluster, client) = cluster_with_crds(Options::default()).await;
    apply_quickstart(
        &client,
        &["namespace.yaml", "orders-db.yaml", "reporting-policy.yaml"],
    )
    .await;

    // What cert-manager would have written: a CA Issuer's certificate.
    let now = SystemTime::now();
    let day = Duration::from_secs(86_400);
    let ca = Ca::generate("corp-ca", now, 365 * day).unwrap();
    let first = ca.issue_serving(&loopback(), now, 90 * day).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_cert_dir(dir.path(), &first, &ca);

    let mut settings = test_settings("cert-manager-operator");
    settings.cert_source = CertSource::Dir {
        dir: dir.path().to_path_buf(),
        ca_injection_from: Some(CERTIFICATE.into()),
    };
    settings.cert_reload_every = Duration::from_millis(100);
    // Only the certificate reload may pick renewals up here, not the leader's
    // (slower) maintenance pass, which also re-reads them.
    settings.maintenance_every = Duration::from_secs(3600);
    let operator = start(client.clone(), settings).await.unwrap();
    bounded("caches", operator.ready()).await;

    // It serves the mounted certificate and trusts ca.crt, and made no CA of its own.
    assert_eq!(operator.ca_bundle_pem(), ca.cert_pem());
    assert_eq!(
        presented(&operator, ca.cert_pem()).await,
        der(first.cert_pem())
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "sluice-system");
    assert!(
        secrets
            .get_opt("sluice-operator-tls")
            .await
            .unwrap()
            .is_none(),
        "the operator created its own CA Secret in cert-manager mode"
    );

    // The webhook configurations are left to cainjector: annotated, no caBundle.
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    for name in ["sluice-operator", "sluice-operator-approvals"] {
        let config = bounded(
            "the webhook configuration",
            await_condition(
                mutating.clone(),
                name,
                |w: Option<&MutatingWebhookConfiguration>| w.is_some(),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            config.metadata.annotations.as_ref().unwrap()["cert-manager.io/inject-ca-from"],
            CERTIFICATE
        );
        for hook in config.webhooks.iter().flatten() {
            assert!(
                hook.client_config.ca_bundle.is_none(),
                "{name}: caBundle set"
            );
        }
    }
    let approvals = bounded(
        "the validating approvals configuration",
        await_condition(
            validating,
            "sluice-operator-approvals",
            |w: Option<&ValidatingWebhookConfiguration>| w.is_some(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        approvals.metadata.annotations.as_ref().unwrap()["cert-manager.io/inject-ca-from"],
        CERTIFICATE
    );
    assert!(
        approvals
            .webhooks
            .iter()
            .flatten()
            .all(|h| h.client_config.ca_bundle.is_none())
    );

    // cainjector fills caBundle in (with its own field manager, as it does);
    // the API server can then call the webhook, and the sidecar gets ca.crt.
    let bundle = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca.cert_pem());
    mutating
        .patch(
            "sluice-operator",
            &PatchParams {
                field_manager: Some("cert-manager-cainjector".into()),
                ..Default::default()
            },
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "shop");
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("report-job".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "report", "annotations": {"sluice.dev/inject": "true"}},
        "spec": {
            "serviceAccountName": "report-job",
            "containers": [{"name": "app", "image": "example/report:1"}]
        }
    }))
    .unwrap();
    // The API server picks the new caBundle up from its informer: retry until it has.
    let pod = bounded("the pod is admitted through the webhook", async {
        loop {
            match pods.create(&PostParams::default(), &pod).await {
                Ok(pod) => break pod,
                Err(kube::Error::Api(status))
                    if status.message.contains("failed calling webhook") =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("pod refused: {error}"),
            }
        }
    })
    .await;
    let sidecar = pod
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .iter()
        .flatten()
        .chain(pod.spec.as_ref().unwrap().containers.iter())
        .find(|c| c.name == "sluice-sidecar")
        .expect("the sidecar was injected");
    let ca_env = sidecar
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "SLUICE_CA_PEM")
        .and_then(|e| e.value.clone())
        .unwrap();
    assert_eq!(ca_env, ca.cert_pem());

    // The leader's maintenance leaves cainjector's caBundle alone.
    let before = mutating.get("sluice-operator").await.unwrap();
    operator
        .certs
        .refresh(true)
        .await
        .expect("refresh in cert-dir mode");
    let webhook = WebhookSettings {
        endpoint: WebhookEndpoint::Url(operator.webhook_base_url.clone().unwrap()),
        ca_bundle_pem: String::new(),
        namespace_label: ("sluice.dev/injection".into(), "enabled".into()),
        operator_namespace: "sluice-system".into(),
        match_conditions: true,
        ca_injection_from: None,
    };
    let wrote = operator
        .certs
        .register_webhooks(client.clone(), &webhook, false)
        .await
        .unwrap();
    assert_eq!(
        wrote,
        sluice_operator::identity::webhook_config::Written::Unchanged,
        "re-applied a configuration cainjector completed"
    );
    let after = mutating.get("sluice-operator").await.unwrap();
    assert_eq!(
        after.webhooks.as_ref().unwrap()[0]
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.clone()),
        Some(ca.cert_pem().as_bytes().to_vec())
    );
    assert_eq!(
        before.metadata.resource_version,
        after.metadata.resource_version
    );

    // cert-manager renews: the new certificate is served without a restart.
    let renewed = ca.issue_serving(&loopback(), now, 90 * day).unwrap();
    assert_ne!(der(renewed.cert_pem()), der(first.cert_pem()));
    write_cert_dir(dir.path(), &renewed, &ca);
    bounded("the renewed certificate is presented", async {
        while presented(&operator, ca.cert_pem()).await != der(renewed.cert_pem()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    // A key that is not the certificate's (a half-finished update) is refused:
    // the previous certificate stays in service.
    let stray = ca.issue_serving(&loopback(), now, 90 * day).unwrap();
    std::fs::write(dir.path().join("tls.key"), stray.key_pem()).unwrap();
    let error = operator.certs.refresh(false).await.unwrap_err();
    let message = sluice_operator::error_chain(&error);
    assert!(message.contains("tls.crt and tls.key"), "{message}");
    assert!(!message.contains("PRIVATE KEY"), "{message}");
    assert_eq!(
        presented(&operator, ca.cert_pem()).await,
        der(renewed.cert_pem())
    );

    // A new CA (the issuer was rotated): sidecars injected from now on trust it.
    let next_ca = Ca::generate("corp-ca-2", now, 365 * day).unwrap();
    let from_next = next_ca.issue_serving(&loopback(), now, 90 * day).unwrap();
    write_cert_dir(dir.path(), &from_next, &next_ca);
    bounded("the new CA is handed out", async {
        while operator.ca_bundle_pem() != next_ca.cert_pem() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(
        presented(&operator, next_ca.cert_pem()).await,
        der(from_next.cert_pem())
    );
    drop(operator);
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cert_dir_without_its_files_stops_the_start_with_a_clear_error() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = TestCluster::start(Options::default()).await.unwrap();
    let client = cluster.client().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = Ca::generate("corp-ca", now, Duration::from_secs(86_400)).unwrap();
    let serving = ca
        .issue_serving(&loopback(), now, Duration::from_secs(86_400))
        .unwrap();
    std::fs::write(dir.path().join("tls.crt"), serving.cert_pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), serving.key_pem()).unwrap();

    let mut settings = test_settings("cert-dir-missing-ca");
    settings.cert_source = CertSource::Dir {
        dir: dir.path().to_path_buf(),
        ca_injection_from: None,
    };
    let error = match start(client.clone(), settings.clone()).await {
        Ok(_) => panic!("started without ca.crt"),
        Err(error) => sluice_operator::error_chain(&error),
    };
    assert!(error.contains("cannot read ca.crt"), "{error}");
    assert!(error.contains("--cert-dir"), "{error}");

    // ca.crt present but empty: the issuer published no CA.
    std::fs::write(dir.path().join("ca.crt"), "").unwrap();
    let error = match start(client.clone(), settings).await {
        Ok(_) => panic!("started with an empty ca.crt"),
        Err(error) => sluice_operator::error_chain(&error),
    };
    assert!(error.contains("ca.crt: no certificate"), "{error}");
    drop(cluster);
}
