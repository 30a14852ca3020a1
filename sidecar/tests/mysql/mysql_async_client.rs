//! An async Rust client (`mysql_async`, on tokio) through `sluice-sidecar
//! standalone` to a real MariaDB (#24's test matrix: the CLI, PyMySQL and
//! mysql-connector-python elsewhere): the handshake advertises the real
//! server's version, text and binary (prepared) results are masked by
//! column, a denied write is refused with ERR 1227 naming the rule and
//! changes nothing while the connection goes on, eight pooled connections
//! running prepared statements at once each get masked rows, and the audit
//! chain those sessions wrote verifies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mysql_async::prelude::*;
use mysql_async::{Pool, Value};

use crate::common::{Sidecar, kubectl_sluice};
use crate::mysql_support::*;

const ASYNC_POLICY: &str = r#"  defaultAction: allow
  onParseError: deny
  rules:
    - name: no-schema-changes
      match: {statements: [drop, truncate, alter, create]}
      action: deny
    - name: keep-customers
      match: {statements: [delete, update], tables: [customers]}
      action: deny
  masking:
    - columns: ["customers.ssn", "customers.born"]
      strategy: redact
"#;

fn setup(db: &str) -> Sidecar {
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), born date);
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}', '1980-01-02'), (2, 'Bob', '987-65-4321', NULL);"
    ));
    Sidecar::start(&manifests(m, db, ASYNC_POLICY), "shop/report-job")
}

/// A pool of connections to the sidecar on `port`: any user, no password
/// (the sidecar holds the credential); never the server's socket, which
/// `mysql_async` would otherwise look up and prefer on a local host.
fn pool(port: u16, db: &str) -> Pool {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("whoever"))
        .db_name(Some(db))
        .prefer_socket(false);
    Pool::new(opts)
}

#[test]
fn an_async_rust_client_is_masked_refused_and_recorded() {
    let db = "my_async_client";
    let sidecar = setup(db);
    let real_version = maria().admin("SELECT VERSION()");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = pool(sidecar.port, db);
        let mut conn = pool.get_conn().await.unwrap();

        // The real server's version, from the handshake.
        let (major, minor, patch) = conn.server_version();
        assert!(
            real_version.starts_with(&format!("{major}.{minor}.{patch}")),
            "handshake {major}.{minor}.{patch}, server {real_version}"
        );

        // Text protocol: masked by column, a derived value too.
        let rows: Vec<(i32, String, Option<String>)> = conn
            .query("SELECT id, name, ssn FROM customers ORDER BY id")
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (1, "Alice".into(), Some("[redacted]".into())),
                (2, "Bob".into(), Some("[redacted]".into())),
            ]
        );
        let derived: Vec<String> = conn
            .query("SELECT concat('x', substring(ssn, 1, 3)) FROM customers ORDER BY id")
            .await
            .unwrap();
        assert!(derived.iter().all(|d| d == "[redacted]"), "{derived:?}");

        // Binary protocol (a prepared statement with a parameter): the
        // masked varchar redacted, the masked date NULL.
        let rows: Vec<(i32, Option<String>, Value)> = conn
            .exec(
                "SELECT id, ssn, born FROM customers WHERE id >= ? ORDER BY id",
                (1,),
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        for (_, ssn, born) in &rows {
            assert_eq!(ssn.as_deref(), Some("[redacted]"), "{rows:?}");
            assert_eq!(born, &Value::NULL, "{rows:?}");
        }

        // A denied write: ERR 1227 naming the rule, nothing changed, and
        // the connection goes on.
        for sql in [
            "DELETE FROM customers WHERE id = 2",
            "UPDATE customers SET name = 'x' WHERE id = 1",
        ] {
            match conn.query_drop(sql).await {
                Err(mysql_async::Error::Server(e)) => {
                    assert_eq!((e.code, e.state.as_str()), (1227, "42000"), "{e:?}");
                    assert!(e.message.contains("keep-customers"), "{e:?}");
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        match conn
            .exec_drop("DELETE FROM customers WHERE id = ?", (2,))
            .await
        {
            Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1227, "{e:?}"),
            other => panic!("prepared DELETE: {other:?}"),
        }
        let count: Option<i64> = conn
            .query_first("SELECT count(*) FROM customers WHERE name <> 'x'")
            .await
            .unwrap();
        assert_eq!(count, Some(2));
        drop(conn);

        // Eight connections at once, each running prepared reads.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = pool.get_conn().await.unwrap();
                let mut seen = Vec::new();
                for _ in 0..20 {
                    let ssn: Option<Option<String>> = conn
                        .exec_first("SELECT ssn FROM customers WHERE id = ?", (1 + i % 2,))
                        .await
                        .unwrap();
                    seen.push(ssn.flatten());
                }
                seen
            }));
        }
        for task in tasks {
            let seen = task.await.unwrap();
            assert!(
                seen.iter().all(|s| s.as_deref() == Some("[redacted]")),
                "{seen:?}"
            );
        }
        pool.disconnect().await.unwrap();
    });

    assert_eq!(
        maria()
            .admin(&format!(
                "SELECT count(*) FROM {db}.customers WHERE name <> 'x'"
            ))
            .trim(),
        "2"
    );
    let audit = sidecar.audit_text();
    assert!(!audit.contains(SSN) && !audit.contains("987-65-4321"));
    // The three refusals on record (the text DELETE and UPDATE, the
    // prepared DELETE), before the denial answers.
    let events = sidecar.audit_events();
    let denials = events
        .iter()
        .filter(|e| e["type"] == "denial" && e["decision"]["rule"] == "keep-customers")
        .count();
    assert_eq!(denials, 3, "{} events", events.len());
    let verify = kubectl_sluice(&["audit", "verify", sidecar.audit.to_str().unwrap()]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
