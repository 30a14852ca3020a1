//! Issue 18 item 2, end to end: approval requirements of several rules and
//! policies never tie. The test control plane (approvers `alice` and `carol`
//! in `dba`), the operator in-process, a real PostgreSQL and the
//! `sluice-sidecar run` binary; a tokio-postgres client sends statement
//! strings that several `requireApproval` rules catch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::cluster;
use crate::common;
use crate::support;

use kube::api::Api;
use sluice_crds::{AccessRequest, RequestPhase};
use tokio_postgres::error::SqlState;

use cluster::{Cluster, request_name, session_with_notices};
use common::code;
use support::bounded;

/// `a-lax` sorts before `b-strict`: without merging, its laxer rule came first.
fn policies() -> &'static str {
    r#"apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: a-lax, namespace: shop}
spec:
  subjects: [{serviceAccount: stock-fixer}]
  connections: [testdb]
  rules:
    - name: one-dba
      match: {statements: [update], tables: ["a"]}
      action: requireApproval
      approval: {approvers: {groups: [dba]}, minApprovals: 1}
    - name: lax
      match: {statements: [update], tables: ["b"]}
      action: requireApproval
      approval: {approvers: {groups: [dba, ops]}, minApprovals: 1}
    - name: security-only
      match: {statements: [update], tables: ["c"]}
      action: requireApproval
      approval: {approvers: {groups: [security]}, minApprovals: 1}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: b-strict, namespace: shop}
spec:
  subjects: [{serviceAccount: stock-fixer}]
  connections: [testdb]
  rules:
    - name: two-dbas
      match: {statements: [update], tables: ["b"]}
      action: requireApproval
      approval: {approvers: {groups: [dba]}, minApprovals: 2}
"#
}

async fn values(admin: &tokio_postgres::Client) -> (i32, i32) {
    let row = admin
        .query_one("SELECT (SELECT v FROM a), (SELECT v FROM b)", &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_strictest_approval_requirement_decides_or_the_text_is_refused() {
    let pg = common::server();
    let db = common::database(
        "approval_rules",
        "CREATE TABLE a (v int); INSERT INTO a VALUES (0);
         CREATE TABLE b (v int); INSERT INTO b VALUES (0);
         CREATE TABLE c (v int); INSERT INTO c VALUES (0);",
    )
    .await;
    let admin = common::connect(&pg.admin_url(&db)).await;
    let listen_port = common::free_port();
    let cluster = Cluster::approvals(
        &[("alice", &["dba"]), ("carol", &["dba"])],
        &(common::run_mode_connection(&db, pg.port, listen_port) + policies()),
        "approval-rules",
        &["a-lax", "b-strict"],
        ("stock-fixer", "fixer"),
    )
    .await;
    let env = &cluster.env;
    let _child = cluster.approval_sidecar("testdb");
    let url = format!("host=127.0.0.1 port={listen_port} user=app dbname={db}");
    let (client, mut notices) = session_with_notices(&url).await;
    let requests: Api<AccessRequest> = Api::namespaced(env.client.clone(), "shop");
    let alice = env.cluster.client_for("alice").await.unwrap();
    let carol = env.cluster.client_for("carol").await.unwrap();

    // A one-approver statement first, the two-person one after it in the
    // same string: the request is the two-person rule's.
    let held = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .batch_execute("UPDATE a SET v = v + 1; UPDATE b SET v = v + 1")
                .await
        }
    });
    let name = request_name(&bounded("the NOTICE", notices.recv()).await.unwrap());
    let ar = requests.get(&name).await.unwrap();
    assert_eq!(
        (
            ar.spec.policy.as_str(),
            ar.spec.rule.as_str(),
            ar.spec.min_approvals
        ),
        ("b-strict", "two-dbas", 2)
    );
    let after_one = support::decide(&alice, &name, "approve", "one of two", &[])
        .await
        .expect("alice may approve");
    assert_eq!(
        after_one.status.unwrap().phase,
        Some(RequestPhase::Pending),
        "one approval of two"
    );
    assert!(!held.is_finished(), "ran on one approval of two");
    assert_eq!(values(&admin).await, (0, 0));
    support::decide(&carol, &name, "approve", "second", &[])
        .await
        .expect("carol may approve");
    bounded("the held string", held)
        .await
        .unwrap()
        .expect("runs after two approvals");
    assert_eq!(values(&admin).await, (1, 1));

    // One statement, two policies: the laxer one (sorted first) does not win.
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.batch_execute("UPDATE b SET v = v + 10").await }
    });
    let name = request_name(&bounded("the NOTICE", notices.recv()).await.unwrap());
    let ar = requests.get(&name).await.unwrap();
    assert_eq!(
        (
            ar.spec.policy.as_str(),
            ar.spec.rule.as_str(),
            ar.spec.min_approvals
        ),
        ("b-strict", "two-dbas", 2)
    );
    support::decide(&alice, &name, "deny", "no", &[])
        .await
        .expect("alice may deny");
    let e = bounded("the denied statement", held)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(code(&e), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    assert_eq!(values(&admin).await, (1, 1));

    // Requirements none of which covers the other: refused, nothing asked, nothing run.
    let e = client
        .batch_execute("UPDATE c SET v = v + 1; UPDATE a SET v = v + 1")
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    let message = common::message(&e);
    assert!(
        message.contains("security-only") && message.contains("one-dba"),
        "{message}"
    );
    assert_eq!(values(&admin).await, (1, 1));
    assert_eq!(
        requests
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
}
