//! The catalog lookups that masking needs (which table a result column
//! comes from, which views and functions a statement reads) run on a small
//! pool of upstream sessions per Connection, shared by its client sessions
//! (#17): 20 clients take 20 backends and the pool, not 40. When no catalog
//! session can be had (the role's connection limit), a statement that needs
//! one fails with SQLSTATE 53300 naming the cause; its values are never
//! handed out masked whole (`[redacted]`) instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;

const SSN: &str = "123-45-6789";

const MASKING: &str = r#"  defaultAction: allow
  masking:
    - columns: ["customers.ssn"]
      strategy: partial
      keep: 4
"#;

async fn seed(pg: &PgServer, db: &str) -> tokio_postgres::Client {
    pg.create_database(db).await;
    let admin = connect(&pg.admin_url(db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE customers (id int, name text, ssn text);
             INSERT INTO customers VALUES (1, 'alice', '{SSN}');"
        ))
        .await
        .unwrap();
    admin
}

/// Backends on `db` other than the admin's own.
async fn backends(admin: &tokio_postgres::Client, db: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&db],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_clients_share_the_connections_catalog_sessions() {
    let pg = server();
    let db = db_name("catalog_pool_shared");
    let admin = seed(pg, &db).await;
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(MASKING)),
        "shop/report-job",
    );
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(sidecar.connect().await);
    }
    // Every client reads the masked table (both protocols), at once; each
    // task hands its client back, so the sessions stay open for the count.
    let mut reads = tokio::task::JoinSet::new();
    for (i, c) in clients.into_iter().enumerate() {
        reads.spawn(async move {
            let ssn: String = if i % 2 == 0 {
                c.query_one("SELECT ssn FROM customers WHERE id = 1", &[])
                    .await
                    .unwrap()
                    .get(0)
            } else {
                let rows = c
                    .simple_query("SELECT ssn FROM customers WHERE id = 1")
                    .await
                    .unwrap();
                rows.iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
                        _ => None,
                    })
                    .unwrap()
            };
            (c, ssn)
        });
    }
    let mut clients = Vec::new();
    while let Some(done) = reads.join_next().await {
        let (c, ssn) = done.unwrap();
        // Masked by the rule (partial), not withheld whole.
        assert_ne!(ssn, SSN);
        assert!(ssn.starts_with('*') && ssn.ends_with("789"), "{ssn}");
        clients.push(c);
    }
    assert_eq!(clients.len(), 20);
    let n = backends(&admin, &db).await;
    assert!(
        n <= 20 + 2,
        "{n} backends for 20 client sessions: the catalog sessions are not shared (pool of 2)"
    );
    assert!(n >= 20, "{n} backends: each client session has its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_room_for_a_catalog_session_fails_the_statement_with_53300() {
    let pg = server();
    let db = db_name("catalog_pool_limit");
    let admin = seed(pg, &db).await;
    // A role with room for the client's session only.
    let role = format!("{db}_role");
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role};
             CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}' CONNECTION LIMIT 1;
             GRANT SELECT ON customers TO {role};"
        ))
        .await
        .unwrap();
    let sidecar = Sidecar::start(
        &manifests(pg, &db, &role, "disable", &policy(MASKING)),
        "shop/report-job",
    );
    let c = sidecar.connect().await;

    for simple in [true, false] {
        let result = if simple {
            c.simple_query("SELECT name, ssn FROM customers")
                .await
                .map(|m| format!("{m:?}"))
        } else {
            c.query("SELECT name, ssn FROM customers", &[])
                .await
                .map(|rows| format!("{rows:?}"))
        };
        let e = match result {
            Ok(rows) => panic!("values handed out without their catalog lookup: {rows}"),
            Err(e) => e,
        };
        assert_eq!(
            code(&e).map(|c| c.code().to_string()).as_deref(),
            Some("53300"),
            "{}",
            message(&e)
        );
        let m = message(&e);
        assert!(m.contains("catalog session"), "{m}");
        assert!(!m.contains(SSN) && !m.contains("alice"), "{m}");
        // The session goes on: a statement that needs no lookup runs
        // (under column masking every result does: whether the database's
        // casts and operators run user-defined functions is looked up
        // once per session, so `SELECT 41 + 1` is refused the same way).
        c.simple_query("SET application_name = 'still-here'")
            .await
            .unwrap();
        let e = c.simple_query("SELECT 41 + 1").await.unwrap_err();
        assert_eq!(
            code(&e).map(|c| c.code().to_string()).as_deref(),
            Some("53300"),
            "{}",
            message(&e)
        );
    }
}
