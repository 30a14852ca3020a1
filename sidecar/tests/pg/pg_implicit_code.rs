//! Code the database runs for a statement that names neither it nor a
//! table carrying it. With a rule denying deletes from `customers`:
//! `SELECT 5::positive` ran the check of the domain `positive`, whose
//! function deleted a customer; so did a cast's function (`SELECT
//! (ROW(1)::pair)::int`), an operator's (`SELECT 1 ### 2`), an event
//! trigger's (any DDL), and a write to a partitioned or parent table whose
//! partition or child has a trigger doing it. Under column masking, a cast
//! or an operator whose function reads `customers.ssn` returned it in
//! clear; so did a write to a view whose `INSTEAD OF` trigger or rule
//! deleted. Per class: domains, casts, operators, event triggers,
//! partitions and `INHERITS` children, views' triggers and rules; masking
//! through casts and operators; simple and extended protocol.

use crate::common;
use crate::pg_code_bodies::{denied, run};
use common::*;

const POLICY: &str = r#"  defaultAction: allow
  onParseError: allow
  rules:
    - name: protect-customers
      match: {statements: [delete, update, insert, truncate], tables: [customers]}
      action: deny"#;

/// A database for `test` with four customers, and its admin's connection.
async fn database(test: &str) -> (String, tokio_postgres::Client) {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE customers (id int, name text, ssn text);
             INSERT INTO customers VALUES (1, 'a', '111-11-1111'), (2, 'b', '222-22-2222'),
               (3, 'c', '333-33-3333'), (4, 'd', '444-44-4444');
             CREATE TABLE orders (id int, total int);
             INSERT INTO orders VALUES (1, 10);",
        )
        .await
        .unwrap();
    (db, admin)
}

/// Runs `sql` in both protocols; it must not fail, and no answer may
/// hold one of `values`. Returns the answers' text.
pub fn withholds(raw: &mut RawClient, sql: &str, values: &[&str]) -> String {
    let mut all = String::new();
    for bytes in [raw.simple(sql), raw.extended(sql, false)] {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(!contains(&bytes, "SERROR"), "{sql}: {text}");
        for v in values {
            assert!(!text.contains(v), "{sql} leaked {v}: {text}");
        }
        all.push_str(&text);
    }
    all
}

/// The numbers of [`database`]'s customers.
const SSNS: [&str; 4] = ["111-11-1111", "222-22-2222", "333-33-3333", "444-44-4444"];

/// `sql` refused by protect-customers for `why`, in both protocols.
fn refused(raw: &mut RawClient, sql: &str, why: &str) {
    for bytes in [raw.simple(sql), raw.extended(sql, false)] {
        assert!(
            denied(&bytes, "protect-customers", why),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[tokio::test]
async fn code_the_database_runs_unnamed_runs_no_denied_statement() {
    let (db, admin) = database("implicit_code").await;
    admin
        .batch_execute(
            "CREATE FUNCTION purge() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN DELETE FROM customers WHERE id = 1; RETURN NEW; END $$;
             CREATE TABLE parted (id int) PARTITION BY RANGE (id);
             CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
             CREATE TRIGGER parted_purge BEFORE INSERT ON parted_1 FOR EACH ROW EXECUTE FUNCTION purge();
             CREATE TABLE parent (id int);
             CREATE TABLE child () INHERITS (parent);
             INSERT INTO child VALUES (1);
             CREATE TRIGGER child_purge BEFORE UPDATE ON child FOR EACH ROW EXECUTE FUNCTION purge();
             CREATE VIEW order_view AS SELECT * FROM orders;
             CREATE TRIGGER order_view_purge INSTEAD OF INSERT ON order_view
               FOR EACH ROW EXECUTE FUNCTION purge();
             CREATE VIEW ruled_view AS SELECT * FROM orders;
             CREATE RULE ruled_view_purge AS ON DELETE TO ruled_view
               DO INSTEAD DELETE FROM customers WHERE id = 1;
             CREATE FUNCTION is_positive(int) RETURNS boolean LANGUAGE sql AS 'SELECT $1 > 0';
             CREATE DOMAIN positive AS int CHECK (is_positive(VALUE));
             CREATE TABLE counted (n positive);",
        )
        .await
        .unwrap();
    let pg = server();
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(POLICY)),
        "shop/report-job",
    );
    let mut raw = RawClient::connect(sidecar.port);
    // Partitions' and children's triggers run for writes to their parent.
    refused(
        &mut raw,
        "INSERT INTO parted VALUES (5)",
        "purge's body names customers",
    );
    refused(
        &mut raw,
        "UPDATE parent SET id = 2",
        "purge's body names customers",
    );
    run(&mut raw, "SELECT * FROM parted");
    // A view's INSTEAD OF trigger and rules run for writes to it.
    refused(
        &mut raw,
        "INSERT INTO order_view VALUES (2, 20)",
        "purge's body names customers",
    );
    refused(
        &mut raw,
        "DELETE FROM ruled_view WHERE id = 1",
        "a rule on ruled_view names customers",
    );
    run(&mut raw, "SELECT * FROM order_view");
    // A domain whose check runs nothing denied: used freely.
    run(&mut raw, "SELECT 5::positive");
    run(&mut raw, "INSERT INTO counted VALUES (3)");
    // Code that changes no names lets statements share a query string.
    let bytes = run(&mut raw, "SELECT 41; SELECT 42");
    assert!(
        contains(&bytes, "42"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(row_count(&admin, "counted").await, 1);
    // Its function made to delete customers (bodies are read on each
    // statement): every statement that evaluates anything may run it.
    admin
        .batch_execute(
            "CREATE OR REPLACE FUNCTION is_positive(int) RETURNS boolean LANGUAGE sql
               AS 'DELETE FROM customers WHERE id = 2; SELECT $1 > 0'",
        )
        .await
        .unwrap();
    for sql in [
        "SELECT 5::positive",
        "SELECT CAST(7 AS positive)",
        "INSERT INTO counted VALUES (4)",
        "SELECT 1",
    ] {
        refused(&mut raw, sql, "is_positive's body names customers");
    }
    let bytes = raw.simple("SELECT 1");
    assert!(
        contains(&bytes, "domain") || contains(&bytes, "constraint"),
        "the reason says what runs it: {}",
        String::from_utf8_lossy(&bytes)
    );
    run(&mut raw, "BEGIN");
    run(&mut raw, "ROLLBACK");
    admin
        .batch_execute(
            "CREATE OR REPLACE FUNCTION is_positive(int) RETURNS boolean LANGUAGE sql AS 'SELECT $1 > 0';
             CREATE TYPE pair AS (a int);
             CREATE FUNCTION pair_int(pair) RETURNS int LANGUAGE sql
               AS 'DELETE FROM customers WHERE id = 3 RETURNING 1';
             CREATE CAST (pair AS int) WITH FUNCTION pair_int(pair);",
        )
        .await
        .unwrap();
    // What the database runs unnamed is read once per session (and after
    // a catalog change through the Connection): a new session sees the cast.
    let mut raw = RawClient::connect(sidecar.port);
    refused(
        &mut raw,
        "SELECT (ROW(1)::pair)::int",
        "pair_int's body names customers",
    );
    admin
        .batch_execute(
            "DROP CAST (pair AS int);
             CREATE FUNCTION hash_op(int, int) RETURNS int LANGUAGE sql
               AS 'DELETE FROM customers WHERE id = 4 RETURNING 1';
             CREATE OPERATOR ### (LEFTARG = int, RIGHTARG = int, FUNCTION = hash_op);",
        )
        .await
        .unwrap();
    let mut raw = RawClient::connect(sidecar.port);
    refused(&mut raw, "SELECT 1 ### 2", "hash_op's body names customers");
    admin
        .batch_execute(
            "DROP OPERATOR ### (int, int);
             CREATE FUNCTION on_ddl() RETURNS event_trigger LANGUAGE plpgsql
               AS $$ BEGIN DELETE FROM customers; END $$;
             CREATE EVENT TRIGGER purge_on_ddl ON ddl_command_end EXECUTE FUNCTION on_ddl();",
        )
        .await
        .unwrap();
    let mut raw = RawClient::connect(sidecar.port);
    refused(
        &mut raw,
        "CREATE TABLE scratch (id int)",
        "on_ddl's body names customers",
    );
    assert_eq!(
        row_count(&admin, "customers").await,
        4,
        "a denied DELETE ran"
    );
    admin
        .batch_execute("DROP EVENT TRIGGER purge_on_ddl")
        .await
        .unwrap();
    // Nothing left that deletes: statements run again.
    let mut raw = RawClient::connect(sidecar.port);
    run(&mut raw, "SELECT 5::positive");
    run(&mut raw, "CREATE TABLE scratch (id int)");
}

#[tokio::test]
async fn values_of_code_the_database_runs_unnamed_are_masked() {
    let (db, admin) = database("implicit_masking").await;
    admin
        .batch_execute(
            "CREATE TYPE handle AS (a int);
             CREATE FUNCTION handle_text(handle) RETURNS text LANGUAGE sql STABLE
               AS 'SELECT ssn FROM customers WHERE id = ($1).a';
             CREATE CAST (handle AS text) WITH FUNCTION handle_text(handle);
             CREATE FUNCTION lookup(int, int) RETURNS text LANGUAGE sql STABLE
               AS 'SELECT ssn FROM customers WHERE id = $1';
             CREATE OPERATOR ### (LEFTARG = int, RIGHTARG = int, FUNCTION = lookup);",
        )
        .await
        .unwrap();
    let pg = server();
    let masking = "  masking:\n    - columns: [\"customers.ssn\"]\n      strategy: redact";
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(masking)),
        "shop/report-job",
    );
    let mut raw = RawClient::connect(sidecar.port);
    for sql in [
        "SELECT (ROW(1)::handle)::text",
        "SELECT CAST(ROW(2)::handle AS text) AS x",
        "SELECT 3 ### 0",
        "SELECT upper(4 ### 0)",
        "SELECT ssn FROM customers",
    ] {
        withholds(&mut raw, sql, &SSNS);
    }
    // Columns are still themselves.
    let bytes = run(&mut raw, "SELECT name FROM customers WHERE id = 1");
    assert!(
        contains(&bytes, "\u{1}a") || String::from_utf8_lossy(&bytes).contains('a'),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let bytes = run(&mut raw, "SELECT count(*) FROM customers");
    assert!(contains(&bytes, "4"), "{}", String::from_utf8_lossy(&bytes));
}

/// A foreign table of `postgres_fdw` on a loopback server is `customers`
/// under another name, as a view would be: `SELECT ssn FROM rc` returned
/// the numbers in clear and `DELETE FROM rc` deleted customers.
#[tokio::test]
async fn foreign_tables_stand_for_the_tables_they_reach() {
    let (db, admin) = database("implicit_foreign").await;
    let pg = server();
    admin
        .batch_execute(&format!(
            "CREATE EXTENSION postgres_fdw;
             CREATE SERVER loopback FOREIGN DATA WRAPPER postgres_fdw
               OPTIONS (host '127.0.0.1', port '{port}', dbname '{db}');
             CREATE USER MAPPING FOR PUBLIC SERVER loopback
               OPTIONS (user '{ADMIN}', password '{PASSWORD}');
             CREATE FOREIGN TABLE rc (id int, name text, number text OPTIONS (column_name 'ssn'))
               SERVER loopback OPTIONS (schema_name 'public', table_name 'customers');
             CREATE FUNCTION next_code() RETURNS int LANGUAGE sql AS 'SELECT 7';
             CREATE DOMAIN code AS int DEFAULT next_code();",
            port = pg.port,
        ))
        .await
        .unwrap();
    let rules = "  defaultAction: allow
  rules:
    - name: protect-customers
      match: {statements: [delete, update, insert, truncate], tables: [customers]}
      action: deny
  masking:
    - columns: [\"customers.ssn\"]
      strategy: redact";
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(rules)),
        "shop/report-job",
    );
    let mut raw = RawClient::connect(sidecar.port);
    for sql in [
        "SELECT number FROM rc",
        "SELECT * FROM rc",
        "SELECT upper(number) FROM rc WHERE id = 1",
    ] {
        let text = withholds(&mut raw, sql, &SSNS);
        assert!(text.contains("[redacted]"), "{sql}: {text}");
    }
    let bytes = run(&mut raw, "SELECT name FROM rc WHERE id = 2");
    assert!(
        String::from_utf8_lossy(&bytes).contains('b'),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    // A domain's default is stored, never returned: computed values are
    // not masked for it (a cast's or an operator's function would be).
    let bytes = run(
        &mut raw,
        "SELECT upper(name) || '!' FROM customers WHERE id = 2",
    );
    assert!(
        String::from_utf8_lossy(&bytes).contains("B!"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    refused(
        &mut raw,
        "DELETE FROM rc WHERE id = 2",
        "rc reaches public.customers",
    );
    refused(
        &mut raw,
        "UPDATE rc SET name = 'x'",
        "rc reaches public.customers",
    );
    assert_eq!(
        row_count(&admin, "customers").await,
        4,
        "a denied DELETE ran"
    );
}
