//! The policies' change history in the audit stream and the evidence
//! package (#21): the `sluice-sidecar run` binary, the operator in-process
//! on the test control plane and a real PostgreSQL. The policy is edited
//! while a session runs; the sidecar's audit stream then holds a chained
//! `policy` event for each version it put in force, before the decisions
//! taken under it, and `kubectl sluice evidence export` lists both
//! versions with their times (`policies/history.json`), the cluster's
//! version now beside them.
//!
//! `kubectl sluice` is the workspace's `target/…/kubectl-sluice`, beside the
//! sidecar binary (build it first: `cargo build -p kubectl-sluice`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::cluster;
use crate::common;
use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sluice_e2e::harness::audit_events;

use cluster::{Cluster, deny_reads, session_once_listening};
use support::{Child, bounded};

/// The test database, a Connection to it and a policy binding `report-job`
/// that denies DROP.
fn manifests(db: &str, upstream_port: u16, listen_port: u16) -> String {
    common::run_mode_connection(db, upstream_port, listen_port)
        + &common::named_policy("testdb-policy", "testdb", common::NO_DROPS)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_edit_is_on_record_and_in_the_evidence() {
    let db = common::database(
        "policy_history",
        "CREATE TABLE customers (id int, name text); INSERT INTO customers VALUES (1, 'alice');",
    )
    .await;
    let listen_port = common::free_port();
    let cluster = Cluster::run_mode(
        &manifests(&db, common::server().port, listen_port),
        "testdb-policy",
        ("report-job", "report"),
    )
    .await;
    let env = &cluster.env;
    let audit = cluster.audit();
    let _child = Child(
        cluster
            .run_binary("testdb")
            .spawn()
            .expect("sidecar binary starts"),
    );
    let url = format!("host=127.0.0.1 port={listen_port} user=app dbname={db}");
    let client = session_once_listening(&url).await;
    client
        .query("SELECT name FROM customers", &[])
        .await
        .unwrap();

    // Edited while the session runs: reads are denied from the next bundle on.
    deny_reads(env).await;
    bounded("the edit to reach the session", async {
        loop {
            match client.query("SELECT name FROM customers", &[]).await {
                Err(e) if common::message(&e).contains("no-reads") => return,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    drop(client);
    bounded("the session's end on record", async {
        while !audit_events(&audit)
            .iter()
            .any(|e| e["type"] == "sessionEnd")
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // The stream: a version before the first decision, the edit before the
    // first decision taken under it.
    let all = audit_events(&audit);
    let at = |pred: &dyn Fn(&Value) -> bool| all.iter().position(pred);
    // (The quickstart's policy may bind the identity too: its own events.)
    let ours = |e: &Value| {
        e["type"] == "policy"
            && e["policy"]["name"] == "testdb-policy"
            && e["policy"]["namespace"] == "shop"
    };
    let versions: Vec<&Value> = all.iter().filter(|e| ours(e)).collect();
    assert_eq!(
        versions.len(),
        2,
        "one event per version put in force: {all:?}"
    );
    assert_ne!(
        versions[0]["policy"]["digest"],
        versions[1]["policy"]["digest"]
    );
    // The spec, as canonical JSON in base64, is what the digest names.
    let spec = |v: &Value| {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["policy"]["specBase64"].as_str().unwrap())
            .unwrap();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    assert_eq!(spec(versions[1])["rules"][1]["name"], "no-reads");
    assert_eq!(spec(versions[0])["rules"].as_array().unwrap().len(), 1);
    let first_policy = at(&|e| ours(e)).unwrap();
    let first_statement = at(&|e| e["type"] == "statement").unwrap();
    let edit = at(&|e| ours(e) && e["seq"] == versions[1]["seq"]).unwrap();
    let denial = at(&|e| e["type"] == "denial").unwrap();
    assert!(first_policy < first_statement && edit < denial, "{all:?}");

    // The evidence package lists both versions with their times.
    let kubectl_sluice =
        Path::new(env!("CARGO_BIN_EXE_sluice-sidecar")).with_file_name("kubectl-sluice");
    assert!(
        kubectl_sluice.exists(),
        "build it first: cargo build -p kubectl-sluice"
    );
    let package = cluster.dir.path().join("evidence");
    let out = Command::new(&kubectl_sluice)
        .env_remove("KUBECONFIG")
        .args([
            "evidence", "export", "--since", "1h", "-n", "shop", "--audit",
        ])
        .arg(&audit)
        .arg("-o")
        .arg(&package)
        .arg("--kubeconfig")
        .arg(env.cluster.kubeconfig_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("audit verified"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history: Value = serde_json::from_str(
        &std::fs::read_to_string(package.join("policies/history.json")).unwrap(),
    )
    .unwrap();
    let policy = history["accessPolicies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "testdb-policy")
        .unwrap_or_else(|| panic!("testdb-policy is not in the history: {history}"));
    let changes = policy["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{policy}");
    for (change, event) in changes.iter().zip(&versions) {
        assert_eq!(change["time"], event["time"], "{policy}");
        assert_eq!(change["digest"], event["policy"]["digest"]);
        assert_eq!(change["generation"], event["policy"]["generation"]);
    }
    assert!(
        changes[0]["generation"].as_i64().unwrap() < changes[1]["generation"].as_i64().unwrap(),
        "{policy}"
    );
    let specs: Vec<Value> = policy["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["spec"].clone())
        .collect();
    assert_eq!(specs.len(), 2, "{policy}");
    assert!(
        specs.contains(&spec(versions[0])) && specs.contains(&spec(versions[1])),
        "{policy}"
    );
    // The cluster's version now is the last one put in force.
    assert_eq!(
        policy["inCluster"]["digest"], changes[1]["digest"],
        "{policy}"
    );
}
