//! Run mode end to end: the operator in-process on the test control plane,
//! a real PostgreSQL, and `sluice_sidecar::run` started as an injected pod's
//! sidecar would be (a TokenRequest bound to the pod, written to a file).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::cluster;
use crate::common;
use crate::support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use sluice_crds::AccessPolicy;
use sluice_sidecar::run::{self, RunConfig};
use tokio_postgres::error::SqlState;

use cluster::{Cluster, deny_reads, run_mode_session, session_once_listening};
use common::{code, revision_until};
use support::{Child, bounded};

const SSN: &str = "123-45-6789";

/// The test database, a Connection to it and a policy binding `report-job`.
fn manifests(db: &str, upstream_port: u16, listen_port: u16) -> String {
    let spec = format!("{}\n{}", common::NO_DROPS, common::REDACT_SSN);
    common::run_mode_connection(db, upstream_port, listen_port)
        + &common::named_policy("testdb-policy", "testdb", &spec)
}

/// What a test needs: the cluster with the operator, a database with a
/// customer, a Connection and policy to it, and an injected pod's token.
struct Setup {
    cluster: Cluster,
    db: String,
    listen_port: u16,
}

async fn setup(test: &str) -> Setup {
    let pg = common::server();
    let db = common::database(
        test,
        &format!(
            "CREATE TABLE customers (id int, name text, ssn text);
             INSERT INTO customers VALUES (1, 'alice', '{SSN}');
             CREATE TABLE scratch (id int);"
        ),
    )
    .await;
    let listen_port = common::free_port();
    let cluster = Cluster::run_mode(
        &manifests(&db, pg.port, listen_port),
        "testdb-policy",
        ("report-job", "report"),
    )
    .await;
    Setup {
        cluster,
        db,
        listen_port,
    }
}

/// Run-mode settings for `operator` (fast polls, only our Connection).
fn config(s: &Setup, operator: &sluice_operator::run::Running) -> RunConfig {
    let mut cfg = common::run_config(operator, s.cluster.token_file.clone(), "testdb");
    cfg.audit_upload_every = Duration::from_millis(200);
    cfg.expected_identity = Some(("shop".into(), "report-job".into(), "report".into()));
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_mode_serves_the_bundle_follows_edits_and_fails_closed() {
    let started = Instant::now();
    let s = setup("run_mode").await;
    let (env, db, listen_port, pod) = (&s.cluster.env, &s.db, s.listen_port, &s.cluster.pod);
    let cfg = config(&s, &env.operator);
    let running = bounded("run mode to start", run::start(cfg))
        .await
        .expect("run mode starts");
    assert_eq!(running.listeners.len(), 1, "{:?}", running.listeners);
    assert_eq!(running.listeners[0].0, "testdb");
    assert_eq!(running.listeners[0].1.port(), listen_port);
    let first = running.bundle_revision().borrow().clone();
    assert!(first.is_some());

    // Allowed, masked and denied, as the policy says.
    let url = format!("host=127.0.0.1 port={listen_port} user=app dbname={db}");
    let client = bounded("a session", common::connect(&url)).await;
    let row = client
        .query_one("SELECT name, ssn FROM customers WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "alice");
    let ssn: String = row.get(1);
    assert_eq!(ssn, "[redacted]", "the masked column reached the client");
    let e = client
        .batch_execute("DROP TABLE scratch")
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{}",
        common::message(&e)
    );
    assert!(
        common::message(&e).contains("no-drops"),
        "{}",
        common::message(&e)
    );

    // The audit events reached the operator: counters and recent denials.
    bounded(
        "the policy's counters",
        await_condition(
            env.policies(),
            "testdb-policy",
            |p: Option<&AccessPolicy>| {
                p.and_then(|p| p.status.as_ref())
                    .and_then(|st| {
                        st.counters
                            .as_ref()
                            .map(|c| (c.allowed, c.denied, c.masked))
                    })
                    .is_some_and(|(allowed, denied, masked)| {
                        allowed >= 1 && denied >= 1 && masked >= 1
                    })
            },
        ),
    )
    .await
    .unwrap();

    // A policy edit reaches the SAME session at its next statement.
    deny_reads(env).await;
    let e = bounded("the policy edit to reach the session", async {
        loop {
            let now = running.bundle_revision().borrow().clone();
            match client.query("SELECT name FROM customers", &[]).await {
                Err(e) => return e,
                // Not yet: wait for the next bundle, then try again.
                Ok(_) => revision_until(&running, "a new bundle", |r| r != now.as_deref()).await,
            }
        }
    })
    .await;
    assert_eq!(code(&e), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    assert!(
        common::message(&e).contains("no-reads"),
        "{}",
        common::message(&e)
    );

    // A masking edit reaches the SAME session at its next statement: the
    // newly masked column is masked without a reconnect.
    env.policies()
        .patch(
            "testdb-policy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "rules": [{"name": "no-drops", "match": {"statements": ["drop"]}, "action": "deny"}],
                "masking": [{"columns": ["customers.ssn", "customers.name"], "strategy": "redact"}]
            }})),
        )
        .await
        .unwrap();
    env.policy_ready("testdb-policy").await;
    bounded("the masking edit to reach the session", async {
        loop {
            let now = running.bundle_revision().borrow().clone();
            // Until the edit arrives, SELECT is still denied by no-reads;
            // the edit lifts that and masks the name in one bundle.
            match client
                .query_one("SELECT name, ssn FROM customers WHERE id = 1", &[])
                .await
            {
                Ok(row) => {
                    assert_eq!(
                        row.get::<_, String>(0),
                        "[redacted]",
                        "the newly masked column reached the running session"
                    );
                    assert_eq!(row.get::<_, String>(1), "[redacted]");
                    return;
                }
                Err(_) => revision_until(&running, "a new bundle", |r| r != now.as_deref()).await,
            }
        }
    })
    .await;
    let client = bounded("a new session", common::connect(&url)).await;
    let row = client
        .query_one("SELECT name, ssn FROM customers WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "[redacted]",
        "the newly masked column reached the client"
    );
    assert_eq!(row.get::<_, String>(1), "[redacted]");

    // Deleting the pod makes its token useless: the sidecar withdraws its
    // bundle, new sessions get a FATAL error and live ones are refused.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "shop");
    pods.delete("report", &DeleteParams::default())
        .await
        .unwrap();
    bounded(
        "pod deleted",
        await_condition(
            pods.clone(),
            "report",
            kube::runtime::wait::conditions::is_deleted(pod.metadata.uid.as_deref().unwrap()),
        ),
    )
    .await
    .unwrap();
    revision_until(&running, "the bundle to be withdrawn", |r| r.is_none()).await;
    let Err(e) = common::try_connect(&url).await else {
        panic!("a new session was accepted after the bundle was withdrawn");
    };
    let message = common::message(&e);
    assert!(
        message.contains("no longer accepts this pod's identity"),
        "{message}"
    );
    let e = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    assert!(
        common::message(&e).contains("statement refused by Sluice"),
        "{}",
        common::message(&e)
    );
    eprintln!("run mode scenario took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_bundle_never_outlives_its_expiry() {
    let s = setup("run_mode_expiry").await;
    // A second replica whose bundles live 3 s; the sidecar talks to it only.
    let mut settings = support::test_settings("short-bundles");
    settings.bundle_ttl = Duration::from_secs(3);
    let replica = s.cluster.replica(settings).await;
    let (running, client) = run_mode_session(config(&s, &replica), s.listen_port, &s.db).await;
    let url = format!(
        "host=127.0.0.1 port={} user=app dbname={}",
        s.listen_port, s.db
    );
    client.batch_execute("SELECT 1").await.unwrap();

    // The operator goes away: the sidecar keeps its bundle until the
    // bundle expires, then refuses everything.
    replica.shutdown().await;
    revision_until(&running, "the bundle to expire", |r| r.is_none()).await;
    let Err(e) = common::try_connect(&url).await else {
        panic!("a new session was accepted after the bundle expired");
    };
    let message = common::message(&e);
    assert!(message.contains("expired"), "{message}");
    let e = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(code(&e), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    assert!(
        common::message(&e).contains("expired"),
        "{}",
        common::message(&e)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_from_the_pod_environment() {
    let s = setup("run_mode_binary").await;
    let (audit, log) = (s.cluster.audit(), s.cluster.log());
    let _child = Child(
        s.cluster
            .run_binary("testdb")
            .spawn()
            .expect("sidecar binary starts"),
    );
    let url = format!(
        "host=127.0.0.1 port={} user=app dbname={}",
        s.listen_port, s.db
    );
    // The listener exists once the first bundle is applied.
    let client = session_once_listening(&url).await;
    let row = client
        .query_one("SELECT name, ssn FROM customers WHERE id = 1", &[])
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{}: {}",
                common::message(&e),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    assert_eq!(row.get::<_, String>(0), "alice");
    assert_eq!(row.get::<_, String>(1), "[redacted]");
    let e = client
        .batch_execute("DROP TABLE scratch")
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    // Write-ahead: the denial is on stdout before the client hears of it.
    let lines = std::fs::read_to_string(&audit).unwrap();
    assert!(
        lines
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|e| e["type"] == "denial" && e["connection"] == "testdb"),
        "{lines}"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log.contains(common::PASSWORD),
        "the password reached the log"
    );
}
