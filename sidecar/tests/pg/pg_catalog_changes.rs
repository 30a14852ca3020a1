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

/// A database for `test` with four customers, and a sidecar on it under
/// [`POLICY`]; the admin's connection.
async fn setup(test: &str) -> (Sidecar, tokio_postgres::Client) {
    let pg = server();
    let db = db_name(test);
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
    (sidecar, admin)
}

/// Runs `sql`, which must not fail.
fn run(raw: &mut RawClient, sql: &str) {
    let bytes = raw.simple(sql);
    assert!(
        !contains(&bytes, "SERROR"),
        "{sql}: {}",
        String::from_utf8_lossy(&bytes)
    );
}

/// How many customers are left (four unless a refused write ran).
async fn customers_left(admin: &tokio_postgres::Client) -> i64 {
    row_count(admin, "customers").await
}

#[tokio::test]
async fn names_swapped_for_views_of_protected_tables_are_followed_again() {
    let (sidecar, admin) = setup("catalog_changes").await;
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

    assert_eq!(customers_left(&admin).await, 4, "a refused DELETE ran");
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

/// The swap run by a user-defined function's body (plpgsql and SQL), called
/// directly, through a view that calls it, and from another session: the
/// call counts as a catalog change (it must end its query string, and every
/// session looks its names up again after it). Before, `SELECT swap()` was
/// an ordinary statement, the session's cache still said "a table", and
/// `DELETE FROM t` deleted customers under the rule denying it.
#[tokio::test]
async fn names_swapped_by_user_defined_functions_are_followed_again() {
    let (sidecar, admin) = setup("catalog_changes_functions").await;
    let mut a = RawClient::connect(sidecar.port);
    let mut b = RawClient::connect(sidecar.port);
    // Functions that swap a name for a view of customers (DDL in plpgsql
    // and in an SQL function's body), and a view calling one.
    for t in ["f1", "f2", "f3", "f4", "f5"] {
        run(
            &mut a,
            &format!(
                "CREATE FUNCTION swap_{t}() RETURNS int LANGUAGE plpgsql AS $$ BEGIN \
                 DROP TABLE {t}; CREATE VIEW {t} AS SELECT * FROM customers; RETURN 1; END $$"
            ),
        );
    }
    run(
        &mut a,
        "CREATE FUNCTION swap_sql() RETURNS int LANGUAGE sql AS $$ \
         DROP TABLE f6; CREATE VIEW f6 AS SELECT * FROM customers; SELECT 1 $$",
    );
    run(&mut a, "CREATE VIEW calls_swap AS SELECT swap_f3() AS x");

    // Same session, simple protocol.
    as_table(&mut a, "f1");
    run(&mut a, "SELECT swap_f1()");
    let bytes = a.simple("DELETE FROM f1 WHERE id = 1");
    assert!(
        refused_through(&bytes, "f1"),
        "plpgsql, same session: {}",
        String::from_utf8_lossy(&bytes)
    );
    // Same session, extended protocol.
    as_table(&mut a, "f2");
    let bytes = a.extended("SELECT swap_f2()", false);
    assert!(
        !contains(&bytes, "SERROR"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let bytes = a.extended("DELETE FROM f2 WHERE id = 2", false);
    assert!(
        refused_through(&bytes, "f2"),
        "plpgsql, extended: {}",
        String::from_utf8_lossy(&bytes)
    );
    // Through a view that calls the function.
    as_table(&mut a, "f3");
    run(&mut a, "SELECT * FROM calls_swap");
    let bytes = a.simple("DELETE FROM f3 WHERE id = 3");
    assert!(
        refused_through(&bytes, "f3"),
        "through a view: {}",
        String::from_utf8_lossy(&bytes)
    );
    // Called by another session.
    as_table(&mut a, "f4");
    run(&mut b, "SELECT swap_f4()");
    let bytes = a.simple("DELETE FROM f4 WHERE id = 4");
    assert!(
        refused_through(&bytes, "f4"),
        "other session: {}",
        String::from_utf8_lossy(&bytes)
    );
    // In one query string the call must come last: what follows it would
    // be decided before it ran. Nothing of the string ran.
    as_table(&mut a, "f5");
    let bytes = a.simple("SELECT swap_f5(); DELETE FROM f5 WHERE id = 1");
    assert!(
        contains(&bytes, "C0A000"),
        "string: {}",
        String::from_utf8_lossy(&bytes)
    );
    let bytes = a.simple("DELETE FROM f5");
    assert!(
        contains(&bytes, "DELETE 0"),
        "f5 was swapped: {}",
        String::from_utf8_lossy(&bytes)
    );
    // An SQL function's body.
    as_table(&mut a, "f6");
    run(&mut a, "SELECT swap_sql()");
    let bytes = a.simple("DELETE FROM f6 WHERE id = 1");
    assert!(
        refused_through(&bytes, "f6"),
        "sql function: {}",
        String::from_utf8_lossy(&bytes)
    );

    assert_eq!(customers_left(&admin).await, 4, "a refused DELETE ran");
    // Built-ins are no catalog change: a string may go on after them.
    let bytes = a.simple("SELECT count(*), now() FROM f1; SELECT lower('X')");
    assert!(
        !contains(&bytes, "SERROR") && contains(&bytes, "SELECT 1"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

/// The swap run by code a write runs without naming it: a trigger, a
/// column default, a rule. A write to a table with such code (depending on
/// a user-defined function) counts as a catalog change, as a call does.
#[tokio::test]
async fn names_swapped_by_triggers_defaults_and_rules_are_followed_again() {
    let (sidecar, admin) = setup("catalog_changes_implicit").await;
    let mut a = RawClient::connect(sidecar.port);
    let swap_body =
        |t: &str| format!("DROP TABLE {t}; CREATE VIEW {t} AS SELECT * FROM customers;");
    run(
        &mut a,
        &format!(
            "CREATE FUNCTION swap_i1() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {} RETURN NEW; END $$",
            swap_body("i1")
        ),
    );
    run(&mut a, "CREATE TABLE log1 (id int)");
    run(
        &mut a,
        "CREATE TRIGGER log1_swap AFTER INSERT ON log1 FOR EACH ROW EXECUTE FUNCTION swap_i1()",
    );
    run(
        &mut a,
        &format!(
            "CREATE FUNCTION swap_i2() RETURNS int LANGUAGE plpgsql AS $$ BEGIN {} RETURN 1; END $$",
            swap_body("i2")
        ),
    );
    run(&mut a, "CREATE TABLE log2 (id int DEFAULT swap_i2())");
    run(
        &mut a,
        &format!(
            "CREATE FUNCTION swap_i3() RETURNS int LANGUAGE plpgsql AS $$ BEGIN {} RETURN 1; END $$",
            swap_body("i3")
        ),
    );
    run(&mut a, "CREATE TABLE log3 (id int)");
    run(
        &mut a,
        "CREATE RULE log3_swap AS ON INSERT TO log3 DO ALSO SELECT swap_i3()",
    );
    // A table read before its trigger existed: not cached as harmless.
    for (t, write) in [
        ("i1", "INSERT INTO log1 VALUES (1)"),
        ("i2", "INSERT INTO log2 DEFAULT VALUES"),
        ("i3", "INSERT INTO log3 VALUES (1)"),
    ] {
        as_table(&mut a, t);
        run(&mut a, write);
        let bytes = a.simple(&format!("DELETE FROM {t} WHERE id = 1"));
        assert!(
            refused_through(&bytes, t),
            "{write}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // Such a write must end its query string.
    run(&mut a, "CREATE TABLE i4 (id int)");
    let bytes = a.simple("INSERT INTO log1 VALUES (2); DELETE FROM i4");
    assert!(
        contains(&bytes, "C0A000"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(customers_left(&admin).await, 4, "a refused DELETE ran");
    // A plain table's writes go on in one string.
    let bytes = a.simple("INSERT INTO i4 VALUES (1); DELETE FROM i4");
    assert!(
        contains(&bytes, "DELETE 1"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}
