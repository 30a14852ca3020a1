//! Just-in-time approvals through the sidecar, end to end: the test control
//! plane with `alice` (approvers group `dba`) and `bob` (outside it), the
//! operator in-process, a real PostgreSQL, and the `sluice-sidecar run`
//! binary started with an injected pod's environment. A tokio-postgres
//! client sends statements a `requireApproval` rule catches.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::cluster;
use crate::common;
use crate::support;

use std::time::Duration;

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use sluice_crds::AccessRequest;
use sluice_e2e::harness::audit_events;
use tokio_postgres::error::SqlState;

use cluster::{
    APPROVAL_RULES, Cluster, approval_step, audit_events_once_expired, request_name, request_phase,
    run_mode_session, session_with_notices,
};
use common::code;
use support::{bounded, client_with_token};

/// A Connection to the test database and an approvals policy like
/// examples/approvals: bulk writes held for `dba`, a short-lived rule, and a
/// retry-mode rule.
fn manifests(db: &str, upstream_port: u16, listen_port: u16) -> String {
    common::run_mode_connection(db, upstream_port, listen_port)
        + r#"apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: maintenance, namespace: shop}
spec:
  subjects: [{serviceAccount: stock-fixer}]
  connections: [testdb]
  defaultAction: allow
  rules:
    - name: no-schema-changes
      match: {statements: [drop, truncate, alter, create]}
      action: deny
"# + APPROVAL_RULES
        + "      approval: {approvers: {groups: [dba]}, timeout: 15m, mode: hold, minApprovals: 1}\n"
}

struct Setup {
    cluster: Cluster,
    db: String,
    listen_port: u16,
}

async fn setup(test: &str) -> Setup {
    let db = common::database(
        test,
        "CREATE TABLE counter (n int);
         INSERT INTO counter VALUES (0);
         CREATE TABLE expiring (v int);
         INSERT INTO expiring VALUES (0);
         CREATE TABLE ledger (id int);",
    )
    .await;
    let listen_port = common::free_port();
    let cluster = Cluster::approvals(
        &[("alice", &["dba"]), ("bob", &["dev"])],
        &manifests(&db, common::server().port, listen_port),
        "sidecar-approvals",
        &["maintenance"],
        ("stock-fixer", "fixer"),
    )
    .await;
    Setup {
        cluster,
        db,
        listen_port,
    }
}

/// What `kubectl sluice approve|deny` sends: one decision appended to status.
async fn decide(
    client: &Client,
    name: &str,
    verdict: &str,
    comment: &str,
) -> Result<AccessRequest, String> {
    support::decide(client, name, verdict, comment, &[]).await
}

async fn one_int(client: &tokio_postgres::Client, sql: &str) -> i64 {
    let row = client.query_one(sql, &[]).await.unwrap();
    row.get::<_, i64>(0)
}

/// `GET /metrics` of the sidecar's admin port.
async fn metrics_text(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nhost: sidecar\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_statements_run_once_when_approved_and_are_refused_when_denied_or_expired() {
    let s = setup("approvals_hold").await;
    let env = &s.cluster.env;
    let (audit, log) = (s.cluster.audit(), s.cluster.log());
    let _child = s.cluster.approval_sidecar("testdb");
    let url = format!(
        "host=127.0.0.1 port={} user=app dbname={}",
        s.listen_port, s.db
    );
    let (client, mut notices) = session_with_notices(&url).await;
    let alice = env.cluster.client_for("alice").await.unwrap();
    let bob = env.cluster.client_for("bob").await.unwrap();

    // === (a) hold: the client is told what to approve; approved, it runs once ===
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.batch_execute("UPDATE counter SET n = n + 1").await }
    });
    let notice = bounded("the NOTICE naming the request", notices.recv())
        .await
        .expect("a notice");
    assert!(notice.contains("holding this statement"), "{notice}");
    let name = request_name(&notice);
    assert!(
        notice.contains(&format!("kubectl sluice approve {name} -n shop")),
        "{notice}"
    );
    assert!(notice.contains("bulk-writes-need-a-dba"), "{notice}");
    let stored: AccessRequest = Api::namespaced(env.client.clone(), "shop")
        .get(&name)
        .await
        .unwrap();
    assert_eq!(stored.spec.command.text, "UPDATE counter SET n = n + ?");
    // Issue 18 item 3: approvers see the exact statement, literals included.
    assert_eq!(
        stored.spec.command.statement.as_deref(),
        Some("UPDATE counter SET n = n + 1")
    );
    assert!(!stored.spec.command.truncated);
    assert_eq!(stored.spec.requester.service_account, "stock-fixer");
    assert_eq!(stored.spec.requester.pod.as_deref(), Some("fixer"));

    // bob is no approver; the workload cannot approve its own statement.
    let refused = decide(&bob, &name, "approve", "lgtm").await.unwrap_err();
    assert!(
        refused.contains("bob is not an approver of AccessRequest shop/"),
        "{refused}"
    );
    let api_token = env
        .pod_token(
            "stock-fixer",
            &s.cluster.pod,
            "https://kubernetes.default.svc.cluster.local",
        )
        .await;
    let workload = client_with_token(&env.cluster, &api_token).await;
    let refused = decide(&workload, &name, "approve", "me").await.unwrap_err();
    assert!(
        refused.contains("system:serviceaccount:shop:stock-fixer is the requester"),
        "{refused}"
    );
    assert!(
        !held.is_finished(),
        "the statement ran before anyone approved it"
    );
    let counter = common::connect(&common::server().admin_url(&s.db)).await;
    assert_eq!(one_int(&counter, "SELECT n::int8 FROM counter").await, 0);

    decide(&alice, &name, "approve", "ok, once")
        .await
        .expect("alice may approve");
    bounded("the held statement", held)
        .await
        .unwrap()
        .expect("the approved statement runs");
    assert_eq!(
        one_int(&counter, "SELECT n::int8 FROM counter").await,
        1,
        "the approved statement ran once"
    );
    let ar: AccessRequest = Api::namespaced(env.client.clone(), "shop")
        .get(&name)
        .await
        .unwrap();
    assert_eq!(
        ar.status.unwrap().phase,
        Some(sluice_crds::RequestPhase::Executed)
    );
    // The session goes on.
    assert_eq!(one_int(&client, "SELECT count(*) FROM counter").await, 1);

    // === extended protocol: held at Parse; approved, it executes once ===
    let prepare = tokio::spawn({
        let client = client.clone();
        async move { client.prepare("UPDATE counter SET n = n + 10").await }
    });
    let notice = bounded("the NOTICE of the Parse", notices.recv())
        .await
        .unwrap();
    let parsed_name = request_name(&notice);
    assert_ne!(parsed_name, name);
    decide(&alice, &parsed_name, "approve", "prepared, once")
        .await
        .expect("alice may approve");
    let statement = bounded("the held Parse", prepare)
        .await
        .unwrap()
        .expect("the approved statement is prepared");
    assert_eq!(client.execute(&statement, &[]).await.unwrap(), 1);
    assert_eq!(one_int(&counter, "SELECT n::int8 FROM counter").await, 11);
    let e = client.execute(&statement, &[]).await.unwrap_err();
    assert_eq!(code(&e), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    assert!(
        common::message(&e).contains("approval was used"),
        "{}",
        common::message(&e)
    );
    assert_eq!(one_int(&counter, "SELECT n::int8 FROM counter").await, 11);

    // === (b) deny: an error naming the request and the decider; nothing runs ===
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.batch_execute("DELETE FROM counter").await }
    });
    let notice = bounded("the NOTICE", notices.recv()).await.unwrap();
    let denied_name = request_name(&notice);
    assert_ne!(denied_name, name);
    decide(&alice, &denied_name, "deny", "not during business hours")
        .await
        .expect("alice may deny");
    let e = bounded("the denial", held).await.unwrap().unwrap_err();
    assert_eq!(code(&e), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    let message = common::message(&e);
    assert!(
        message.contains(&format!(
            "AccessRequest shop/{denied_name} was denied by alice"
        )),
        "{message}"
    );
    assert!(message.contains("not during business hours"), "{message}");
    assert_eq!(one_int(&counter, "SELECT count(*) FROM counter").await, 1);
    assert_eq!(one_int(&client, "SELECT n::int8 FROM counter").await, 11);

    // === (c) a request nobody decides expires; the statement is refused ===
    let e = bounded(
        "the expiry",
        client.batch_execute("UPDATE expiring SET v = v + 1"),
    )
    .await
    .unwrap_err();
    let notice = notices.recv().await.unwrap();
    let expired_name = request_name(&notice);
    assert_eq!(code(&e), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    let message = common::message(&e);
    assert!(
        message.contains(&format!("AccessRequest shop/{expired_name} expired")),
        "{message}"
    );
    assert_eq!(one_int(&counter, "SELECT v::int8 FROM expiring").await, 0);
    client.batch_execute("SELECT 1").await.unwrap();

    // === the client cancels a held statement: nothing runs, ever ===
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.batch_execute("DELETE FROM counter").await }
    });
    let notice = bounded("the NOTICE", notices.recv()).await.unwrap();
    let cancelled_name = request_name(&notice);
    client
        .cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await
        .unwrap();
    let e = bounded("the cancel", held).await.unwrap().unwrap_err();
    assert_eq!(code(&e), Some(SqlState::QUERY_CANCELED));
    let message = common::message(&e);
    assert!(
        message.contains("held for approval and did not run"),
        "{message}"
    );
    // A late approval runs nothing: the statement left with the cancel.
    decide(&alice, &cancelled_name, "approve", "too late")
        .await
        .expect("alice may approve");
    assert_eq!(one_int(&client, "SELECT count(*) FROM counter").await, 1);

    // === the audit chain records each step, and verifies ===
    let events = audit_events_once_expired(&audit).await;
    let step = |request: &str, phase: &str| approval_step(&events, request, phase);
    assert!(step(&name, "Pending").is_some(), "{events:#?}");
    let ran = step(&name, "Executed").expect("the approved run is on record");
    assert_eq!(ran["type"], "approval");
    assert_eq!(ran["approval"]["decidedBy"], "alice");
    assert_eq!(ran["command"]["text"], "UPDATE counter SET n = n + ?");
    let prepared = step(&parsed_name, "Executed").expect("the prepared run is on record");
    assert_eq!(prepared["approval"]["decidedBy"], "alice");
    // An approved run is recorded as its approval, not as a new ask.
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "statement" && e["decision"]["action"] == "requireApproval"),
        "{events:#?}"
    );
    let refused_reuse = events
        .iter()
        .filter(|e| {
            e["type"] == "denial"
                && e["decision"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.ends_with("(extended protocol)"))
        })
        .count();
    assert_eq!(refused_reuse, 1, "{events:#?}");
    let denied = step(&denied_name, "Denied").expect("the denial is on record");
    assert_eq!(denied["type"], "denial");
    assert_eq!(denied["approval"]["decidedBy"], "alice");
    let expired = step(&expired_name, "Expired").expect("the expiry is on record");
    assert_eq!(expired["type"], "denial");
    let text = std::fs::read_to_string(&audit).unwrap();
    sluice_policy::audit::verify_lines(text.lines(), &[]).expect("the audit chain verifies");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        !log.contains(common::PASSWORD),
        "the password reached the log"
    );

    // === psql users see the NOTICE while their statement waits ===
    let port = s.listen_port;
    let psql = tokio::task::spawn_blocking(move || {
        common::psql(port, &["-c", "UPDATE counter SET n = n + 100"])
    });
    let requests: Api<AccessRequest> = Api::namespaced(env.client.clone(), "shop");
    let psql_name = bounded("the request of psql's statement", async {
        loop {
            let list = requests.list(&Default::default()).await.unwrap();
            if let Some(ar) = list.items.iter().find(|ar| {
                ar.spec.command.text == "UPDATE counter SET n = n + ?"
                    && ar.status.as_ref().and_then(|s| s.phase)
                        == Some(sluice_crds::RequestPhase::Pending)
            }) {
                return ar.metadata.name.clone().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    decide(&alice, &psql_name, "approve", "psql")
        .await
        .expect("alice may approve");
    let (ok, _, stderr) = bounded("psql", psql).await.unwrap();
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "NOTICE:  Sluice is holding this statement for approval: AccessRequest shop/{psql_name}; approve it with: kubectl sluice approve {psql_name} -n shop"
        )),
        "{stderr}"
    );
    assert_eq!(one_int(&counter, "SELECT n::int8 FROM counter").await, 111);

    // === the policy changes while a statement is held: approved, it still does not run ===
    let held = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .batch_execute("UPDATE counter SET n = n + 7340033")
                .await
        }
    });
    let notice = bounded("the NOTICE", notices.recv()).await.unwrap();
    let frozen_name = request_name(&notice);
    let freeze = json!([{"op": "add", "path": "/spec/rules/0", "value":
        {"name": "freeze-counter", "match": {"statements": ["update"], "tables": ["counter"]}, "action": "deny"}}]);
    env.policies()
        .patch(
            "maintenance",
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(freeze).unwrap()),
        )
        .await
        .unwrap();
    env.policy_ready("maintenance").await;
    let probe = common::connect(&url).await;
    bounded("the new rule to reach the sidecar", async {
        loop {
            match probe
                .batch_execute("UPDATE counter SET n = n WHERE n < 0")
                .await
            {
                Err(e) if common::message(&e).contains("freeze-counter") => return,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    decide(&alice, &frozen_name, "approve", "before the freeze")
        .await
        .expect("alice may approve");
    let e = bounded("the held statement", held)
        .await
        .unwrap()
        .unwrap_err();
    let message = common::message(&e);
    assert!(
        message.contains("policies changed while it was held")
            && message.contains("freeze-counter"),
        "{message}"
    );
    assert_eq!(one_int(&counter, "SELECT n::int8 FROM counter").await, 111);
    // Issue 18 item 8: the request says what happened, not `Executed`.
    let frozen = requests.get(&frozen_name).await.unwrap();
    assert_eq!(
        frozen.spec.command.statement.as_deref(),
        Some("UPDATE counter SET n = n + 7340033")
    );
    let status = frozen.status.unwrap();
    assert_eq!(status.phase, Some(sluice_crds::RequestPhase::NotRun));
    assert_eq!(status.executed_at, None);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "NotRun")
    );
    assert!(
        ready.message.contains("freeze-counter"),
        "{}",
        ready.message
    );
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(env.client.clone(), "shop");
    let reasons: Vec<String> = events
        .list(
            &kube::api::ListParams::default().fields(&format!("involvedObject.name={frozen_name}")),
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&"NotRun".to_string()), "{reasons:?}");
    assert!(!reasons.contains(&"Executed".to_string()), "{reasons:?}");
    let events = audit_events(&audit);
    let steps: Vec<&Value> = events
        .iter()
        .filter(|e| e["approval"]["request"] == format!("shop/{frozen_name}"))
        .collect();
    assert!(
        steps
            .iter()
            .any(|e| e["approval"]["phase"] == "NotRun" && e["type"] == "denial"),
        "{steps:#?}"
    );
    assert!(
        !steps.iter().any(|e| e["approval"]["phase"] == "Executed"),
        "{steps:#?}"
    );
    // The audit stream keeps redacting literals: the approvers' statements
    // never reach it (the AccessRequests above hold them).
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        text.contains("UPDATE counter SET n = n + ?"),
        "no redacted text on record"
    );
    for literal in ["7340033", "n + 1\"", "n + 10\"", "n + 100\""] {
        assert!(
            !text.contains(literal),
            "{literal} reached the audit stream"
        );
    }
    sluice_policy::audit::verify_lines(text.lines(), &[]).expect("the audit chain verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_mode_refuses_with_the_request_and_runs_once_after_approval() {
    let s = setup("approvals_retry").await;
    let env = &s.cluster.env;
    let mut cfg = common::run_config(&env.operator, s.cluster.token_file.clone(), "testdb");
    cfg.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    let (running, client) = run_mode_session(cfg, s.listen_port, &s.db).await;
    let admin = common::connect(&common::server().admin_url(&s.db)).await;
    let alice = env.cluster.client_for("alice").await.unwrap();

    // === (d) refused at once with the request's name ===
    let insert = "INSERT INTO ledger VALUES (7)";
    let e = client.batch_execute(insert).await.unwrap_err();
    assert_eq!(code(&e), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    let message = common::message(&e);
    let name = request_name(&message);
    assert!(message.contains("needs approval"), "{message}");
    assert!(
        message.contains(&format!("kubectl sluice approve {name} -n shop")),
        "{message}"
    );
    // Asking again before approval names the same request.
    let again = common::message(&client.batch_execute(insert).await.unwrap_err());
    assert_eq!(request_name(&again), name);
    assert_eq!(one_int(&admin, "SELECT count(*) FROM ledger").await, 0);

    // A different statement is a different request.
    let other = common::message(
        &client
            .batch_execute("INSERT INTO ledger VALUES (8)")
            .await
            .unwrap_err(),
    );
    assert_ne!(request_name(&other), name);

    // Approved: the same statement runs, once; the third time asks anew.
    decide(&alice, &name, "approve", "fine")
        .await
        .expect("alice may approve");
    request_phase(env, &name, sluice_crds::RequestPhase::Approved).await;
    client
        .batch_execute(insert)
        .await
        .expect("the approved statement runs");
    assert_eq!(one_int(&admin, "SELECT count(*) FROM ledger").await, 1);
    let e = client.batch_execute(insert).await.unwrap_err();
    let third = common::message(&e);
    assert!(third.contains("needs approval"), "{third}");
    assert_ne!(
        request_name(&third),
        name,
        "an approval runs its statement once"
    );
    assert_eq!(one_int(&admin, "SELECT count(*) FROM ledger").await, 1);

    // Five asks, one granted, in the sidecar's metrics.
    let metrics = metrics_text(running.admin.unwrap()).await;
    assert!(
        metrics.contains("sluice_approvals_total{step=\"asked\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_approvals_total{step=\"granted\"} 1"),
        "{metrics}"
    );
    // Every statement the rule caught, the approved run included, counts
    // under requireApproval.
    assert!(
        metrics.contains(
            "sluice_statements_total{connection=\"testdb\",decision=\"requireApproval\"} 5"
        ),
        "{metrics}"
    );
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_operator_refuses_the_statement_and_the_session_goes_on() {
    let s = setup("approvals_unreachable").await;
    // A second replica the sidecar talks to; it goes away after the first bundle.
    let replica = s
        .cluster
        .replica(support::test_settings("going-away"))
        .await;
    let cfg = common::run_config(&replica, s.cluster.token_file.clone(), "testdb");
    let (running, client) = run_mode_session(cfg, s.listen_port, &s.db).await;
    replica.shutdown().await;

    // The bundle is still in force, but nobody can be asked for approval.
    let e = bounded(
        "the refusal",
        client.batch_execute("UPDATE counter SET n = n + 1"),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&e), Some(SqlState::INSUFFICIENT_PRIVILEGE));
    let message = common::message(&e);
    assert!(
        message.contains("requires an approval, and asking the Sluice operator for it failed"),
        "{message}"
    );
    assert!(message.contains("bulk-writes-need-a-dba"), "{message}");
    assert!(message.contains("nothing ran"), "{message}");
    let admin = common::connect(&common::server().admin_url(&s.db)).await;
    assert_eq!(one_int(&admin, "SELECT n::int8 FROM counter").await, 0);
    // The session goes on.
    assert_eq!(one_int(&client, "SELECT count(*) FROM counter").await, 1);
    drop(running);
}
