//! `spec.readOnly` turned on while a session is open (issue #15): the
//! session was opened read-write, so it must not run another statement. The
//! sidecar ends it before its next statement with FATAL 25006 and a message
//! naming the policy; a reconnect gets a read-only session, where PostgreSQL
//! itself refuses the write. The binding follows a watch channel, as run
//! mode's bundles (and standalone edits) feed it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;

use serde_json::json;
use sluice_crds::AccessPolicy;
use sluice_policy::engine::{CompiledPolicy, Identity, NoSecrets};
use sluice_sidecar::enforcement::Standing;
use tokio::sync::watch;

fn identity() -> Identity {
    Identity::parse("shop/report-job").unwrap()
}

fn standing(read_only: bool) -> Standing {
    let ap: AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "ro-switch", "namespace": "shop"},
        "spec": {
            "subjects": [{"serviceAccount": "report-job"}],
            "connections": ["testdb"],
            "defaultAction": "allow",
            "readOnly": read_only,
        }
    }))
    .unwrap();
    let compiled = Arc::new(CompiledPolicy::compile(&ap, &NoSecrets).unwrap());
    Standing::select(&[compiled], &identity(), "testdb", None, false)
        .with_masking_key(&read_only.to_string())
}

/// A sidecar listener whose binding follows `rx`; returns its port.
async fn start(pg: &common::PgServer, db: &str, rx: watch::Receiver<Standing>) -> u16 {
    common::serve_live(pg, db, identity(), rx).await
}

async fn rows(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0)
}

fn closed_read_only(e: &tokio_postgres::Error) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("no error from the sidecar: {e}"));
    assert_eq!(db.code().code(), "25006", "{}", common::message(e));
    assert!(db.message().contains("ro-switch"), "{}", common::message(e));
    assert!(db.message().contains("readOnly"), "{}", common::message(e));
}

#[tokio::test]
async fn read_only_turned_on_ends_live_sessions_before_their_next_write() {
    let pg = common::server();
    let db = common::db_name("read_only_live");
    pg.create_database(&db).await;
    let admin = common::connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3)")
        .await
        .unwrap();
    let (tx, rx) = watch::channel(standing(false));
    let port = start(pg, &db, rx).await;
    let url = format!("host=127.0.0.1 port={port} user=app dbname=x");
    let connect = || async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    };

    // Three live sessions: idle, inside a transaction, and one with a
    // statement prepared while the session was read-write.
    let simple = connect().await;
    simple
        .batch_execute("DELETE FROM t WHERE id = 3")
        .await
        .unwrap();
    assert_eq!(rows(&admin).await, 2);
    let in_tx = connect().await;
    in_tx
        .batch_execute("BEGIN; INSERT INTO t VALUES (10)")
        .await
        .unwrap();
    let prepared_client = connect().await;
    let prepared = prepared_client
        .prepare("DELETE FROM t WHERE id > $1")
        .await
        .unwrap();

    tx.send(standing(true)).unwrap();

    closed_read_only(&simple.batch_execute("DELETE FROM t").await.unwrap_err());
    closed_read_only(&in_tx.batch_execute("DELETE FROM t").await.unwrap_err());
    closed_read_only(
        &prepared_client
            .execute(&prepared, &[&0i32])
            .await
            .unwrap_err(),
    );
    // Nothing ran, and the open transaction's insert went with its session.
    assert_eq!(rows(&admin).await, 2);
    // The sessions are gone, not left read-write.
    assert!(simple.batch_execute("SELECT 1").await.is_err());

    // A new session is read-only: the server refuses the write itself.
    let fresh = connect().await;
    let e = fresh.batch_execute("DELETE FROM t").await.unwrap_err();
    assert_eq!(e.code().unwrap().code(), "25006", "{}", common::message(&e));
    assert!(
        common::message(&e).contains("read-only transaction"),
        "{}",
        common::message(&e)
    );
    assert_eq!(rows(&admin).await, 2);
}
