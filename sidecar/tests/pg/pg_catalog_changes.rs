//! Rules through relations after the catalog changed under a session's
//! cache: a name the session looked up as a plain table, then made a view
//! of a protected table (`DROP TABLE t; CREATE VIEW t AS SELECT * FROM
//! customers`) through this sidecar — in the same session or another,
//! before a prepared statement runs — must be followed as the view it now
//! is. (DDL inside a function body is not counted: see catalog_changes.rs.)
//! Before, `DELETE FROM t` then deleted a customer under a rule denying
//! deletes from `customers`: the session's cache still said "a table".

use crate::common;
use common::*;

const POLICY: &str = r#"  defaultAction: allow
  onParseError: allow
  rules:
    - name: protect-customers
      match: {statements: [delete, update, insert, truncate], tables: [customers]}
      action: deny"#;

/// A denial of `protect-customers` through `name`.
fn refused_through(bytes: &[u8], name: &str) -> bool {
    contains(bytes, "C42501")
        && contains(bytes, "protect-customers")
        && contains(bytes, &format!("{name} reaches"))
}

/// `t` a plain table, looked up by a DELETE the rules let through.
fn as_table(raw: &mut RawClient, t: &str) {
    let bytes = raw.simple(&format!("CREATE TABLE {t} (id int, name text)"));
    assert!(
        contains(&bytes, "CREATE TABLE"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let bytes = raw.simple(&format!("DELETE FROM {t} WHERE id = 1"));
    assert!(
        contains(&bytes, "DELETE 0"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

/// `t` made a view of `customers`, one statement per query string.
fn swap(raw: &mut RawClient, t: &str) {
    for sql in [
        format!("DROP TABLE {t}"),
        format!("CREATE VIEW {t} AS SELECT * FROM customers"),
    ] {
        let bytes = raw.simple(&sql);
        assert!(
            !contains(&bytes, "C42501") && !contains(&bytes, "C0A000"),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[tokio::test]
async fn names_swapped_for_views_of_protected_tables_are_followed_again() {
    let pg = server();
    let db = db_name("catalog_changes");
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE customers (id int, name text);
             INSERT INTO customers VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd');",
        )
        .await
        .unwrap();
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(POLICY)),
        "shop/report-job",
    );
    let mut a = RawClient::connect(sidecar.port);
    let mut b = RawClient::connect(sidecar.port);

    // The same session swaps the name: simple and extended protocol.
    as_table(&mut a, "t1");
    swap(&mut a, "t1");
    let bytes = a.simple("DELETE FROM t1 WHERE id = 1");
    assert!(
        refused_through(&bytes, "t1"),
        "same session, simple: {}",
        String::from_utf8_lossy(&bytes)
    );
    as_table(&mut a, "t2");
    swap(&mut a, "t2");
    let bytes = a.extended("DELETE FROM t2 WHERE id = 2", false);
    assert!(
        refused_through(&bytes, "t2"),
        "same session, extended: {}",
        String::from_utf8_lossy(&bytes)
    );

    // Another session of the sidecar swaps it.
    as_table(&mut a, "t3");
    swap(&mut b, "t3");
    let bytes = a.simple("DELETE FROM t3 WHERE id = 3");
    assert!(
        refused_through(&bytes, "t3"),
        "other session: {}",
        String::from_utf8_lossy(&bytes)
    );

    // A statement prepared while the name was a table, executed after
    // another session swapped it: decided again before it runs.
    let client = sidecar.connect().await;
    client
        .batch_execute("CREATE TABLE t5 (id int, name text)")
        .await
        .unwrap();
    let delete = client
        .prepare("DELETE FROM t5 WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(client.execute(&delete, &[&1i32]).await.unwrap(), 0);
    swap(&mut b, "t5");
    let err = client
        .execute(&delete, &[&1i32])
        .await
        .expect_err("a prepared DELETE through a swapped name ran");
    let text = format!("{err:?}");
    assert!(
        text.contains("protect-customers") && text.contains("t5 reaches"),
        "prepared: {text}"
    );

    // SQL PREPARE while the name was a table, EXECUTE after the swap: the
    // server plans it again against the view.
    as_table(&mut a, "t8");
    let bytes = a.simple("PREPARE p8 AS DELETE FROM t8 WHERE id = $1");
    assert!(
        contains(&bytes, "PREPARE"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let bytes = a.simple("EXECUTE p8(1)");
    assert!(
        contains(&bytes, "DELETE 0"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    swap(&mut b, "t8");
    for bytes in [
        a.simple("EXECUTE p8(1)"),
        a.extended("EXECUTE p8(1)", false),
    ] {
        assert!(
            refused_through(&bytes, "t8") && contains(&bytes, "EXECUTE p8"),
            "SQL EXECUTE: {}",
            String::from_utf8_lossy(&bytes)
        );
    }

    // A catalog change followed by more in one query string: the rest
    // would be decided before it ran. Refused whole; nothing ran.
    as_table(&mut a, "t6");
    as_table(&mut a, "t7");
    let bytes = a.simple(
        "DROP TABLE t7; CREATE VIEW t7 AS SELECT * FROM customers; DELETE FROM t7 WHERE id = 1",
    );
    assert!(
        contains(&bytes, "C0A000") && contains(&bytes, "must come last"),
        "string: {}",
        String::from_utf8_lossy(&bytes)
    );
    let bytes = a.simple("DELETE FROM t7");
    assert!(
        contains(&bytes, "DELETE 0"),
        "t7 was dropped: {}",
        String::from_utf8_lossy(&bytes)
    );

    let left: i64 = admin
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 4, "a refused DELETE ran");
    // Names that stayed tables, and reads through the views, run as before.
    let bytes = a.simple("SELECT count(*) FROM t1");
    assert!(
        contains(&bytes, "SELECT 1"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let bytes = a.simple("SELECT count(*) FROM t1; DELETE FROM t6");
    assert!(
        contains(&bytes, "DELETE 0"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}
