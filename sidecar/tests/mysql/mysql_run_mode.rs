//! The MySQL plane in run mode: the operator in-process on the test control
//! plane, a real MariaDB, `sluice_sidecar::run` as an injected pod's
//! sidecar. A policy edit between COM_STMT_PREPARE and COM_STMT_EXECUTE
//! applies at the EXECUTE (the statement is decided again under the
//! policies in force), in the same session; one between two fetches of a
//! cursor applies at the second fetch (its rows' masks planned again).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;
use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::json;
use sluice_sidecar::run;

use common::revision_until;
use mysql_support::*;
use support::{Env, bounded};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_edit_between_prepare_and_execute_applies() {
    let db = "my_run_prep";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50));
         INSERT INTO {db}.customers VALUES (1, 'Alice');"
    ));
    let env = Env::start().await;
    let listen_port = common::free_port();
    let all = manifests(m, db, "  defaultAction: allow\n")
        .replace("{PORT}", &listen_port.to_string())
        // The test control plane has a policy `reporting` already.
        .replace("name: reporting,", "name: prep-policy,");
    // The test control plane has namespace `shop` already.
    let docs: Vec<&str> = all
        .split("---\n")
        .filter(|d| !d.contains("kind: Namespace"))
        .collect();
    support::apply_yaml(&env.client, &docs.join("---\n")).await;
    env.policy_ready("prep-policy").await;
    env.webhook_registered().await;
    let dir = tempfile::tempdir().unwrap();
    let (_pod, token_file) = env.pod_token_file("report-job", "report", dir.path()).await;
    let mut cfg = common::run_config(&env.operator, token_file, "shop-db");
    cfg.expected_identity = Some(("shop".into(), "report-job".into(), "report".into()));
    let running = bounded("run mode to start", run::start(cfg))
        .await
        .expect("run mode starts");

    // One session: PREPARE, then (after the edit has reached the sidecar)
    // EXECUTE, told when by a line on stdin.
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import os, sys, mysql.connector\n\
             c = mysql.connector.connect(host='127.0.0.1', port={listen_port}, user='workload', password='', database='{db}', connection_timeout=10, use_pure=True)\n\
             s = c.cmd_stmt_prepare(b'SELECT name FROM customers WHERE id = 1')\n\
             print('prepared', flush=True)\n\
             sys.stdin.readline()\n\
             try:\n    \
                 c.cmd_stmt_execute(s['statement_id'])\n    \
                 print('executed', flush=True)\n\
             except mysql.connector.Error as e:\n    \
                 print('refused', e.errno, e.msg, flush=True)\n"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3 (pip install mysql-connector-python)");
    // The client's lines, read off the runtime's threads, each awaited
    // with a deadline.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let line = bounded("the PREPARE", lines.recv())
        .await
        .unwrap_or_default();
    assert_eq!(line.trim(), "prepared", "{line}");

    let before = running.bundle_revision().borrow().clone();
    env.set_rules(
        "prep-policy",
        json!([
            {"name": "no-reads", "match": {"statements": ["select"]}, "action": "deny"}
        ]),
    )
    .await;
    revision_until(&running, "the edited bundle", |r| r != before.as_deref()).await;

    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    let line = bounded("the EXECUTE", lines.recv())
        .await
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("refused 1227") && line.contains("no-reads"),
        "the EXECUTE ran under the policy of its PREPARE: {line}"
    );
}

/// A policy edit between two fetches of one cursor applies at the second:
/// its rows are masked by a plan made again under the policies in force
/// (a masking rule added since masks them), not by the EXECUTE's plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_edit_between_fetches_replans_the_cursor() {
    let db = "my_run_cursor";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50));
         INSERT INTO {db}.customers VALUES (1, 'Alice'), (2, 'Bob'), (3, 'Carol');"
    ));
    let env = Env::start().await;
    let listen_port = common::free_port();
    let all = manifests(m, db, "  defaultAction: allow\n")
        .replace("{PORT}", &listen_port.to_string())
        .replace("name: reporting,", "name: cursor-policy,");
    let docs: Vec<&str> = all
        .split("---\n")
        .filter(|d| !d.contains("kind: Namespace"))
        .collect();
    support::apply_yaml(&env.client, &docs.join("---\n")).await;
    env.policy_ready("cursor-policy").await;
    env.webhook_registered().await;
    let dir = tempfile::tempdir().unwrap();
    let (_pod, token_file) = env.pod_token_file("report-job", "report", dir.path()).await;
    let mut cfg = common::run_config(&env.operator, token_file, "shop-db");
    cfg.expected_identity = Some(("shop".into(), "report-job".into(), "report".into()));
    let running = bounded("run mode to start", run::start(cfg))
        .await
        .expect("run mode starts");

    // One session: a cursor opened and its first row fetched, then (after
    // the edit has reached the sidecar) its second, told when on stdin.
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import os, sys, mysql.connector\n\
             c = mysql.connector.connect(host='127.0.0.1', port={listen_port}, user='workload', password='', database='{db}', connection_timeout=10, use_pure=True)\n\
             sid = c.cmd_stmt_prepare(b'SELECT id, name FROM customers ORDER BY id')['statement_id']\n\
             n, cols, eof = c.cmd_stmt_execute(sid, flags=1)\n\
             def fetch():\n    \
                 try:\n        \
                     c.cmd_stmt_fetch(sid, 1)\n        \
                     rows, eof = c.get_rows(binary=True, columns=cols)\n        \
                     return [[x.decode() if isinstance(x, (bytes, bytearray)) else x for x in r] for r in rows]\n    \
                 except mysql.connector.Error as e:\n        \
                     return ('refused', e.errno, e.msg)\n\
             print('first', fetch(), flush=True)\n\
             sys.stdin.readline()\n\
             print('second', fetch(), flush=True)\n"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3 (pip install mysql-connector-python)");
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let first = bounded("the first fetch", lines.recv())
        .await
        .unwrap_or_default();
    assert_eq!(first.trim(), "first [[1, 'Alice']]", "{first}");

    let before = running.bundle_revision().borrow().clone();
    env.policies()
        .patch(
            "cursor-policy",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"masking": [
                {"columns": ["customers.name"], "strategy": "redact"}
            ]}})),
        )
        .await
        .unwrap();
    env.policy_ready("cursor-policy").await;
    revision_until(&running, "the edited bundle", |r| r != before.as_deref()).await;

    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    let second = bounded("the second fetch", lines.recv())
        .await
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        second.starts_with("second [[")
            && second.contains("'[redacted]'")
            && !second.contains("Bob"),
        "the cursor's rows were masked by the plan of its EXECUTE, made before the edit: {second}"
    );
}

/// A policy edit between two texts of one shape (one literal apart) in one
/// session applies at the second: the session's decision cache holds no
/// decision of the policies before the edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_edit_applies_to_a_cached_shape() {
    let db = "my_run_cache";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50));
         INSERT INTO {db}.customers VALUES (1, 'Alice'), (2, 'Bob');"
    ));
    let env = Env::start().await;
    let listen_port = common::free_port();
    let all = manifests(m, db, "  defaultAction: allow\n")
        .replace("{PORT}", &listen_port.to_string())
        .replace("name: reporting,", "name: cache-policy,");
    let docs: Vec<&str> = all
        .split("---\n")
        .filter(|d| !d.contains("kind: Namespace"))
        .collect();
    support::apply_yaml(&env.client, &docs.join("---\n")).await;
    env.policy_ready("cache-policy").await;
    env.webhook_registered().await;
    let dir = tempfile::tempdir().unwrap();
    let (_pod, token_file) = env.pod_token_file("report-job", "report", dir.path()).await;
    let mut cfg = common::run_config(&env.operator, token_file, "shop-db");
    cfg.expected_identity = Some(("shop".into(), "report-job".into(), "report".into()));
    let running = bounded("run mode to start", run::start(cfg))
        .await
        .expect("run mode starts");

    let mut child = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sys, mysql.connector\n\
             c = mysql.connector.connect(host='127.0.0.1', port={listen_port}, user='workload', password='', database='{db}', connection_timeout=10, use_pure=True)\n\
             cur = c.cursor()\n\
             def q(sql):\n    \
                 try:\n        \
                     cur.execute(sql)\n        \
                     print('ran', cur.fetchall(), flush=True)\n    \
                 except mysql.connector.Error as e:\n        \
                     print('refused', e.errno, e.msg, flush=True)\n\
             q('SELECT name FROM customers WHERE id = 1')\n\
             sys.stdin.readline()\n\
             q('SELECT name FROM customers WHERE id = 2')\n"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3 (pip install mysql-connector-python)");
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let line = bounded("the first query", lines.recv())
        .await
        .unwrap_or_default();
    assert!(line.starts_with("ran") && line.contains("Alice"), "{line}");

    let before = running.bundle_revision().borrow().clone();
    env.set_rules(
        "cache-policy",
        json!([
            {"name": "no-reads", "match": {"statements": ["select"]}, "action": "deny"}
        ]),
    )
    .await;
    revision_until(&running, "the edited bundle", |r| r != before.as_deref()).await;

    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    let line = bounded("the second query", lines.recv())
        .await
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("refused 1227") && line.contains("no-reads"),
        "the second query ran on the decision taken before the edit: {line}"
    );
}
