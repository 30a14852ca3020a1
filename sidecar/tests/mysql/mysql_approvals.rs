//! `requireApproval` on the MySQL plane (#24), end to end: the test control
//! plane with `alice` (approvers group `dba`), the operator in-process, a
//! real MariaDB, the `sluice-sidecar run` binary started with an injected
//! pod's environment, and real clients (PyMySQL for the text protocol,
//! mysql-connector-python's prepared cursors for the binary one). The
//! flow is the PostgreSQL plane's: an AccessRequest made through the same
//! approval API; retry mode refuses with an ERR naming the request and runs
//! the same text once after approval; hold mode keeps the client waiting
//! until it is decided; denied and expired requests refuse; every step is
//! on record in the one audit shape.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::cluster;
use crate::common;
use crate::mysql_support;
use crate::support;

use std::process::{Command, Stdio};
use std::time::Duration;

use kube::api::{Api, ListParams};
use sluice_crds::{AccessRequest, RequestPhase};
use sluice_e2e::harness::audit_events;

use cluster::{
    APPROVAL_RULES, Cluster, approval_step, audit_events_once_expired, request_name, request_phase,
};
use mysql_support::*;
use support::{Env, bounded};

/// Like examples/approvals: bulk writes held for `dba`, a short-lived
/// rule, and a retry-mode rule; before them (the first rule that matches
/// decides), writes to `customers` denied (through views too).
fn policy() -> String {
    "  defaultAction: allow\n  rules:\n".to_string()
        + "    - name: protect-customers\n      match: {statements: [delete, update, insert], tables: [customers]}\n      action: deny\n"
        + APPROVAL_RULES
        + "      approval: {approvers: {groups: [dba]}, timeout: 15m, mode: hold}\n"
}

/// Runs `sql` in a new PyMySQL session of database `db` through the
/// sidecar on `port`: `ok ROWS`, or `refused ERRNO MESSAGE`.
fn run_sql(port: u16, db: &str, sql: &str) -> String {
    pymysql(
        port,
        &format!(
            "c = connect(database='{db}', autocommit=True)\n\
             try:\n    \
                 n = c.cursor().execute({sql:?})\n    \
                 print('ok', n)\n\
             except pymysql.MySQLError as e:\n    \
                 print('refused', e.args[0], e.args[1])\n"
        ),
    )
    .trim()
    .to_string()
}

/// Starts `sql` in a new PyMySQL session: the process prints its outcome
/// (as [`run_sql`]) when the sidecar answers.
fn start_sql(port: u16, db: &str, sql: &str) -> std::process::Child {
    Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import pymysql\n\
             c = pymysql.connect(host='127.0.0.1', port={port}, user='workload', password='', database='{db}', autocommit=True, connect_timeout=10, read_timeout=120)\n\
             try:\n    \
                 n = c.cursor().execute({sql:?})\n    \
                 print('ok', n, flush=True)\n\
             except pymysql.MySQLError as e:\n    \
                 print('refused', e.args[0], e.args[1], flush=True)\n"
        ))
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3 (pip install pymysql)")
}

/// The pending AccessRequest of `rule` whose statement is `statement`
/// (polled until the sidecar has asked).
async fn pending(env: &Env, rule: &str, statement: &str) -> AccessRequest {
    let api: Api<AccessRequest> = Api::namespaced(env.client.clone(), "shop");
    bounded("the AccessRequest", async {
        loop {
            let found = api
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|r| {
                    r.spec.rule == rule
                        && r.spec.command.statement.as_deref() == Some(statement)
                        && r.status.as_ref().and_then(|s| s.phase) == Some(RequestPhase::Pending)
                });
            if let Some(r) = found {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// The output of a process [`start_sql`] started, once it ends.
async fn outcome(child: std::process::Child) -> String {
    let out = bounded(
        "the held statement's answer",
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .unwrap()
    .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_needing_approval_run_once_when_approved_and_are_refused_otherwise() {
    let db = "my_approvals";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.counter (n int); INSERT INTO {db}.counter VALUES (0);
         CREATE TABLE {db}.expiring (v int); INSERT INTO {db}.expiring VALUES (0);
         CREATE TABLE {db}.ledger (id int);
         CREATE TABLE {db}.customers (id int primary key); INSERT INTO {db}.customers VALUES (1), (2);
         CREATE TABLE {db}.notes (id int primary key); INSERT INTO {db}.notes VALUES (1);
         CREATE VIEW {db}.swap AS SELECT id FROM {db}.notes;"
    ));
    let count = |sql: &str| m.admin(&format!("USE {db}; {sql}")).trim().to_string();

    let listen_port = common::free_port();
    let all = manifests(m, db, &policy()).replace("{PORT}", &listen_port.to_string());
    // The quickstart made namespace `shop`.
    let docs: Vec<&str> = all
        .split("---\n")
        .filter(|d| !d.contains("kind: Namespace"))
        .collect();
    let cluster = Cluster::approvals(
        &[("alice", &["dba"]), ("bob", &["dev"])],
        &docs.join("---\n"),
        "mysql-approvals",
        &["reporting"],
        ("report-job", "report"),
    )
    .await;
    let env = &cluster.env;
    let audit = cluster.audit();
    let _sidecar = cluster.approval_sidecar("shop-db");
    bounded("the sidecar's listener", async {
        while std::net::TcpStream::connect(("127.0.0.1", listen_port)).is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let alice = env.cluster.client_for("alice").await.unwrap();
    let decide = |name: String, verdict: &'static str| {
        let alice = alice.clone();
        async move {
            support::decide(&alice, &name, verdict, "from the mysql test", &[])
                .await
                .expect("alice may decide")
        }
    };

    // === retry: refused at once, naming the request ===
    let insert = "INSERT INTO ledger VALUES (7)";
    let first = run_sql(listen_port, db, insert);
    assert!(first.starts_with("refused 1227 "), "{first}");
    assert!(first.contains("needs approval"), "{first}");
    let name = request_name(&first);
    assert!(
        first.contains(&format!("kubectl sluice approve {name} -n shop")),
        "{first}"
    );
    assert!(first.contains("ledger-needs-a-dba"), "{first}");
    // Asking again before approval names the same request; nothing ran.
    assert_eq!(request_name(&run_sql(listen_port, db, insert)), name);
    assert_eq!(count("SELECT count(*) FROM ledger"), "0");
    // Approvers see the exact statement.
    let stored: AccessRequest = Api::namespaced(env.client.clone(), "shop")
        .get(&name)
        .await
        .unwrap();
    assert_eq!(stored.spec.command.statement.as_deref(), Some(insert));
    assert_eq!(stored.spec.connection, "shop-db");

    // Approved: the same text runs, once; the third time asks anew.
    decide(name.clone(), "approve").await;
    request_phase(env, &name, RequestPhase::Approved).await;
    assert_eq!(run_sql(listen_port, db, insert), "ok 1");
    assert_eq!(count("SELECT count(*) FROM ledger"), "1");
    request_phase(env, &name, RequestPhase::Executed).await;
    let third = run_sql(listen_port, db, insert);
    assert!(third.contains("needs approval"), "{third}");
    assert_ne!(
        request_name(&third),
        name,
        "an approval runs its statement once"
    );
    assert_eq!(count("SELECT count(*) FROM ledger"), "1");

    // The binary protocol: an EXECUTE is asked for too, naming the request.
    let out = connector(
        listen_port,
        &format!(
            "c = connect(database='{db}')\n\
             cur = c.cursor(prepared=True)\n\
             try:\n    \
                 cur.execute('INSERT INTO ledger VALUES (?)', (9,))\n    \
                 print('ran')\n\
             except mysql.connector.Error as e:\n    \
                 print('refused', e.errno, e.msg)\n"
        ),
    );
    assert!(
        out.starts_with("refused 1227 ") && out.contains("AccessRequest shop/"),
        "{out}"
    );
    assert_eq!(count("SELECT count(*) FROM ledger"), "1");

    // === hold: the client waits until the request is decided ===
    let update = "UPDATE counter SET n = n + 1";
    let held = start_sql(listen_port, db, update);
    let request = pending(env, "bulk-writes-need-a-dba", update).await;
    let held_name = request.metadata.name.clone().unwrap();
    assert_eq!(
        count("SELECT n FROM counter"),
        "0",
        "it ran before approval"
    );
    decide(held_name.clone(), "approve").await;
    assert_eq!(outcome(held).await, "ok 1");
    assert_eq!(
        count("SELECT n FROM counter"),
        "1",
        "the approved statement ran once"
    );
    request_phase(env, &held_name, RequestPhase::Executed).await;

    // Held and denied: refused, naming who denied; nothing ran.
    let delete = "DELETE FROM counter";
    let held = start_sql(listen_port, db, delete);
    let denied = pending(env, "bulk-writes-need-a-dba", delete)
        .await
        .metadata
        .name
        .unwrap();
    decide(denied.clone(), "deny").await;
    let refused = outcome(held).await;
    assert!(
        refused.starts_with("refused 1227 ") && refused.contains("was denied"),
        "{refused}"
    );
    assert_eq!(count("SELECT count(*) FROM counter"), "1");

    // A client that leaves while held takes its statement along: the
    // session ends, and a late approval runs nothing.
    let mut held = start_sql(listen_port, db, delete);
    let gone = pending(env, "bulk-writes-need-a-dba", delete)
        .await
        .metadata
        .name
        .unwrap();
    held.kill().unwrap();
    held.wait().unwrap();
    bounded("the session's end", async {
        loop {
            if audit_events(&audit).iter().any(|e| {
                e["type"] == "sessionEnd" && e.to_string().contains("while its statement was held")
            }) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    decide(gone.clone(), "approve").await;
    request_phase(env, &gone, RequestPhase::Approved).await;
    assert_eq!(count("SELECT count(*) FROM counter"), "1");

    // Held and expired (a 2 s rule): refused, nothing ran.
    let expiring = "UPDATE expiring SET v = 1";
    let held = start_sql(listen_port, db, expiring);
    let expired = outcome(held).await;
    assert!(
        expired.starts_with("refused 1227 ") && expired.contains("expired"),
        "{expired}"
    );
    assert_eq!(count("SELECT v FROM expiring"), "0");

    // A view swapped while its statement was held: `swap` read `notes`
    // when the DELETE was decided (held as a bulk write), and reads
    // `customers`, whose writes are denied, when it is approved. Followed
    // again after the wait: refused, nothing deleted.
    let swapped = "DELETE FROM swap";
    let held = start_sql(listen_port, db, swapped);
    let request = pending(env, "bulk-writes-need-a-dba", swapped)
        .await
        .metadata
        .name
        .unwrap();
    m.admin(&format!(
        "CREATE OR REPLACE VIEW {db}.swap AS SELECT id FROM {db}.customers"
    ));
    decide(request, "approve").await;
    let refused = outcome(held).await;
    assert!(
        refused.starts_with("refused 1227 ") && refused.contains("protect-customers"),
        "{refused}"
    );
    assert_eq!(count("SELECT count(*) FROM customers"), "2");
    assert_eq!(count("SELECT count(*) FROM notes"), "1");

    // === every step on record, in the one audit shape ===
    let events = audit_events_once_expired(&audit).await;
    let step = |request: &str, phase: &str| approval_step(&events, request, phase);
    assert!(step(&name, "Pending").is_some(), "{events:#?}");
    let ran = step(&name, "Executed").expect("the approved run is on record");
    assert_eq!(ran["type"], "approval");
    assert_eq!(ran["command"]["text"], "INSERT INTO ledger VALUES (?)");
    assert!(
        ran["decision"]["reason"]
            .as_str()
            .is_some_and(|r| r.ends_with("(mysql text protocol)")),
        "{ran}"
    );
    let denial = step(&denied, "Denied").expect("the denial is on record");
    assert_eq!(denial["type"], "denial");
    assert!(step(&held_name, "Pending").is_some(), "{events:#?}");
    assert!(step(&held_name, "Executed").is_some(), "{events:#?}");
    // An approved run is recorded as its approval, not as a new statement.
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "statement" && e["decision"]["action"] == "requireApproval"),
        "{events:#?}"
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    sluice_policy::audit::verify_lines(text.lines(), &[]).expect("the audit chain verifies");
}
