//! Issue 18 item 6, in run mode: the operator in-process on the test control
//! plane, a real PostgreSQL and `sluice_sidecar::run`. A deleted service
//! account is cut off like a deleted pod, and a refused re-exchange withdraws
//! the sidecar's bundle at once instead of at its expiry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support;

use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams};
use sluice_sidecar::run;

use common::revision_until;
use support::{Env, bounded};

struct Setup {
    env: Env,
    url: String,
    token_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A database, a Connection and policy for `report-job`, an operator whose
/// gateway tokens live `token_ttl`, and an injected pod's token.
async fn setup(test: &str, token_ttl: Duration) -> Setup {
    let pg = common::server();
    let db = common::db_name(test);
    pg.create_database(&db).await;
    let (cluster, client) = support::cluster_with_crds(Default::default()).await;
    support::apply_quickstart(&client, &["namespace.yaml"]).await;
    let listen_port = common::free_port();
    support::apply_yaml(
        &client,
        &(common::run_mode_connection(&db, pg.port, listen_port)
            + r#"apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: testdb-policy, namespace: shop}
spec:
  subjects: [{serviceAccount: report-job}]
  connections: [testdb]
"#),
    )
    .await;
    let mut settings = support::test_settings("run-mode-trust");
    settings.token_ttl = token_ttl;
    let env = Env::with_operator(cluster, client, settings).await;
    env.policy_ready("testdb-policy").await;
    env.webhook_registered().await;
    let dir = tempfile::tempdir().unwrap();
    let (_pod, token_file) = env.pod_token_file("report-job", "report", dir.path()).await;
    Setup {
        env,
        url: format!("host=127.0.0.1 port={listen_port} user=app dbname={db}"),
        token_file,
        _dir: dir,
    }
}

async fn assert_withdrawn(s: &Setup, running: &run::Running, why: &str) {
    revision_until(running, "the bundle to be withdrawn", |r| r.is_none()).await;
    let Err(e) = common::try_connect(&s.url).await else {
        panic!("a new session was accepted after the bundle was withdrawn");
    };
    let message = common::message(&e);
    assert!(
        message.contains("no longer accepts this pod's identity") && message.contains(why),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_service_account_is_cut_off_like_a_deleted_pod() {
    // Gateway tokens outlive the test: only the bundle poll can notice.
    let s = setup("trust_sa_deleted", Duration::from_secs(15 * 60)).await;
    let cfg = common::run_config(&s.env.operator, s.token_file.clone(), "testdb");
    let running = bounded("run mode to start", run::start(cfg))
        .await
        .expect("run mode starts");
    let client = bounded("a session", common::connect(&s.url)).await;
    client.batch_execute("SELECT 1").await.unwrap();

    let accounts: Api<ServiceAccount> = Api::namespaced(s.env.client.clone(), "shop");
    accounts
        .delete("report-job", &DeleteParams::default())
        .await
        .unwrap();
    assert_withdrawn(&s, &running, "ServiceAccountDeleted").await;
    assert!(client.batch_execute("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_re_exchange_withdraws_the_bundle() {
    // Gateway tokens are renewed every ~2.4 s; the bundle would last 15 min.
    let s = setup("trust_reexchange", Duration::from_secs(3)).await;
    let cfg = common::run_config(&s.env.operator, s.token_file.clone(), "testdb");
    let running = bounded("run mode to start", run::start(cfg))
        .await
        .expect("run mode starts");
    let client = bounded("a session", common::connect(&s.url)).await;
    client.batch_execute("SELECT 1").await.unwrap();

    // The projected token stops being one the API server accepts (as when
    // the kubelet no longer renews it): the next renewal is refused.
    std::fs::write(&s.token_file, "eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl").unwrap();
    assert_withdrawn(&s, &running, "/v1/token").await;
}
