//! Run mode: a change of the masking rules reaches a running session at its
//! next statement, with no reconnect, in every protocol path that builds
//! masks ahead of the rows: simple queries, statements prepared under the
//! old rules, and a portal bound under the old rules and read on after the
//! change. The binding follows a watch channel, as run mode's bundles feed it.
//! A change of the rules reaches statements prepared and portals bound before
//! it the same way: a deny added since refuses their next Execute.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;

use serde_json::json;
use sluice_crds::AccessPolicy;
use sluice_policy::engine::{CompiledPolicy, Identity, NoSecrets};
use sluice_sidecar::enforcement::Standing;
use tokio::sync::watch;

const SSN: [&str; 2] = ["123-45-6789", "987-65-4321"];
const NAMES: [&str; 2] = ["alice", "bob"];

fn identity() -> Identity {
    Identity::parse("shop/report-job").unwrap()
}

/// The standing of a policy masking `columns` (none: no masking at all).
fn standing(columns: &[&str]) -> Standing {
    standing_with(columns, json!([]))
}

/// The standing of a policy masking `columns`, with `rules`.
fn standing_with(columns: &[&str], rules: serde_json::Value) -> Standing {
    let masking: Vec<_> = columns
        .iter()
        .map(|c| json!({"columns": [c], "strategy": "redact"}))
        .collect();
    let ap: AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {
            "subjects": [{"serviceAccount": "report-job"}],
            "connections": ["testdb"],
            "defaultAction": "allow",
            "rules": rules,
            "masking": masking,
        }
    }))
    .unwrap();
    let compiled = Arc::new(CompiledPolicy::compile(&ap, &NoSecrets).unwrap());
    // Run mode keys the masking by its rules; any distinct text will do here.
    Standing::select(&[compiled], &identity(), "testdb", None, false)
        .with_masking_key(&columns.join(","))
}

/// A sidecar listener whose binding follows `rx`; returns its port.
async fn start(pg: &common::PgServer, db: &str, rx: watch::Receiver<Standing>) -> u16 {
    common::serve_live(pg, db, identity(), rx).await
}

/// `(name, ssn)` of a row.
fn pair(row: &tokio_postgres::Row) -> (String, String) {
    (row.get(0), row.get(1))
}

fn clear(row: (String, String), i: usize) {
    assert_eq!(row, (NAMES[i].to_string(), SSN[i].to_string()));
}

fn ssn_masked(row: (String, String), i: usize, what: &str) {
    assert_eq!(row.0, NAMES[i], "{what}: name");
    assert!(
        !row.1.contains(SSN[i]),
        "{what}: the ssn reached the client"
    );
}

fn both_masked(row: (String, String), i: usize, what: &str) {
    assert!(
        !row.0.contains(NAMES[i]),
        "{what}: the name reached the client"
    );
    assert!(
        !row.1.contains(SSN[i]),
        "{what}: the ssn reached the client"
    );
}

#[tokio::test]
async fn a_masking_change_applies_to_the_next_statement_of_a_running_session() {
    let pg = common::server();
    let db = common::db_name("run_mode_masking");
    pg.create_database(&db).await;
    let admin = common::connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE customers (id int, name text, ssn text);
             INSERT INTO customers VALUES (1, '{}', '{}'), (2, '{}', '{}');",
            NAMES[0], SSN[0], NAMES[1], SSN[1]
        ))
        .await
        .unwrap();
    let (tx, rx) = watch::channel(standing(&[]));
    let port = start(pg, &db, rx).await;
    let mut client =
        common::connect(&format!("host=127.0.0.1 port={port} user=app dbname={db}")).await;
    const ALL: &str = "SELECT name, ssn FROM customers ORDER BY id";
    const ONE: &str = "SELECT name, ssn FROM customers WHERE id = $1";

    // No masking yet: a statement prepared and a portal bound (one of its
    // two rows read) under no rules at all.
    let one = client.prepare(ONE).await.unwrap();
    clear(pair(&client.query_one(&one, &[&1i32]).await.unwrap()), 0);
    let all = client.prepare(ALL).await.unwrap();
    let txn = client.transaction().await.unwrap();
    let portal = txn.bind(&all, &[]).await.unwrap();
    let rows = txn.query_portal(&portal, 1).await.unwrap();
    clear(pair(&rows[0]), 0);

    // The ssn becomes masked: the portal's next row, the prepared statement
    // and a new simple query all follow at once.
    tx.send(standing(&["customers.ssn"])).unwrap();
    let rows = txn.query_portal(&portal, 1).await.unwrap();
    ssn_masked(pair(&rows[0]), 1, "portal bound before the change");
    txn.commit().await.unwrap();
    ssn_masked(
        pair(&client.query_one(&one, &[&1i32]).await.unwrap()),
        0,
        "statement prepared before the change",
    );
    let rows = client.simple_query(ALL).await.unwrap();
    let simple: Vec<(String, String)> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((r.get(0).unwrap().to_string(), r.get(1).unwrap().to_string()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(simple.len(), 2);
    ssn_masked(simple[0].clone(), 0, "simple query");
    ssn_masked(simple[1].clone(), 1, "simple query");
    let rows = client.query(&all, &[]).await.unwrap();
    ssn_masked(pair(&rows[1]), 1, "the prepared statement, bound again");

    // The name joins the masked columns: the same statements follow again.
    tx.send(standing(&["customers.ssn", "customers.name"]))
        .unwrap();
    both_masked(
        pair(&client.query_one(&one, &[&2i32]).await.unwrap()),
        1,
        "statement prepared two changes ago",
    );
    let rows = client.query(ALL, &[]).await.unwrap();
    both_masked(pair(&rows[0]), 0, "a new statement");
    let txn = client.transaction().await.unwrap();
    let portal = txn.bind(&all, &[]).await.unwrap();
    both_masked(
        pair(&txn.query_portal(&portal, 1).await.unwrap()[0]),
        0,
        "portal",
    );
    // And masking is withdrawn in the middle of that portal.
    tx.send(standing(&[])).unwrap();
    clear(pair(&txn.query_portal(&portal, 1).await.unwrap()[0]), 1);
    txn.commit().await.unwrap();
    clear(pair(&client.query_one(&one, &[&1i32]).await.unwrap()), 0);
}

/// The SQLSTATE of a refused statement.
fn refused(e: &tokio_postgres::Error, what: &str) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("{what}: not a server error: {e}"));
    assert_eq!(db.code().code(), "42501", "{what}: {db:?}");
    assert!(
        db.message().contains("no-writes")
            || db.message().contains("no-reads")
            || db.detail().is_some_and(|d| d.contains("no-")),
        "{what}: the refusal names the rule: {db:?}"
    );
}

#[tokio::test]
async fn a_rule_change_refuses_statements_prepared_and_portals_bound_before_it() {
    let pg = common::server();
    let db = common::db_name("run_mode_redecide");
    pg.create_database(&db).await;
    let admin = common::connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance int);
             INSERT INTO accounts VALUES (1, 100), (2, 200), (3, 300);",
        )
        .await
        .unwrap();
    let balances = || async {
        let rows = admin
            .query("SELECT balance FROM accounts ORDER BY id", &[])
            .await
            .unwrap();
        rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>()
    };
    let (tx, rx) = watch::channel(standing(&[]));
    let port = start(pg, &db, rx).await;
    let mut client =
        common::connect(&format!("host=127.0.0.1 port={port} user=app dbname={db}")).await;

    // Prepared under a policy that allows everything; the UPDATE runs once.
    let update = client
        .prepare("UPDATE accounts SET balance = 0 WHERE id = $1")
        .await
        .unwrap();
    let delete = client
        .prepare("DELETE FROM accounts WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(client.execute(&update, &[&1i32]).await.unwrap(), 1);
    let select = client
        .prepare("SELECT balance FROM accounts ORDER BY id")
        .await
        .unwrap();
    let txn = client.transaction().await.unwrap();
    let portal = txn.bind(&select, &[]).await.unwrap();
    assert_eq!(txn.query_portal(&portal, 1).await.unwrap().len(), 1);

    // Writes and then reads become denied: the portal bound before the
    // change is refused at its next Execute.
    tx.send(standing_with(
        &[],
        json!([
            {"name": "no-writes", "match": {"statements": ["update", "delete"]}, "action": "deny"},
            {"name": "no-reads", "match": {"statements": ["select"]}, "action": "deny"}
        ]),
    ))
    .unwrap();
    let err = txn
        .query_portal(&portal, 1)
        .await
        .expect_err("portal refused");
    refused(&err, "portal bound before the deny");
    drop(txn);

    // The statements prepared before the change are refused and run nothing.
    let err = client
        .execute(&update, &[&2i32])
        .await
        .expect_err("update refused");
    refused(&err, "UPDATE prepared before the deny");
    let err = client
        .execute(&delete, &[&3i32])
        .await
        .expect_err("delete refused");
    refused(&err, "DELETE prepared before the deny");
    let err = client
        .query(&select, &[])
        .await
        .expect_err("select refused");
    refused(&err, "SELECT prepared before the deny");
    assert_eq!(balances().await, vec![0, 200, 300], "nothing ran");

    // The deny withdrawn: the same prepared statement runs again.
    tx.send(standing(&[])).unwrap();
    assert_eq!(client.execute(&update, &[&2i32]).await.unwrap(), 1);
    assert_eq!(balances().await, vec![0, 0, 300]);
}

/// A table rule added while statements are prepared holds for those that
/// reach the table under another name (a partition, a view of it): their
/// names are looked up before they are decided again. An unrelated
/// prepared statement runs on.
#[tokio::test]
async fn a_table_rule_change_holds_for_prepared_statements_through_views_and_partitions() {
    let pg = common::server();
    let db = common::db_name("run_mode_redecide_through");
    pg.create_database(&db).await;
    let admin = common::connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE accounts (id int, balance int) PARTITION BY RANGE (id);
             CREATE TABLE accounts_p1 PARTITION OF accounts FOR VALUES FROM (0) TO (100);
             INSERT INTO accounts VALUES (1, 100), (2, 200);
             CREATE VIEW av AS SELECT * FROM accounts;
             CREATE TABLE notes (id int); INSERT INTO notes VALUES (1);",
        )
        .await
        .unwrap();
    let (tx, rx) = watch::channel(standing(&[]));
    let port = start(pg, &db, rx).await;
    let client = common::connect(&format!("host=127.0.0.1 port={port} user=app dbname={db}")).await;
    let partition = client
        .prepare("DELETE FROM accounts_p1 WHERE id = $1")
        .await
        .unwrap();
    let view = client
        .prepare("DELETE FROM av WHERE id = $1")
        .await
        .unwrap();
    let notes = client
        .prepare("DELETE FROM notes WHERE id = $1")
        .await
        .unwrap();
    tx.send(standing_with(
        &[],
        json!([
            {"name": "no-writes", "match": {"statements": ["delete"], "tables": ["accounts"]}, "action": "deny"}
        ]),
    ))
    .unwrap();
    let err = client
        .execute(&partition, &[&1i32])
        .await
        .expect_err("delete through the partition refused");
    refused(&err, "DELETE prepared on a partition");
    let err = client
        .execute(&view, &[&2i32])
        .await
        .expect_err("delete through the view refused");
    refused(&err, "DELETE prepared on a view");
    assert_eq!(client.execute(&notes, &[&1i32]).await.unwrap(), 1);
    let left = admin
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(left, 2, "a refused DELETE ran");
}
