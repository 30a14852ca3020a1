//! Denied statements run by code the statement does not name. With a rule
//! denying deletes from `customers`, `SELECT f()` — `f` a function whose
//! body is `DELETE FROM customers` — deleted a customer: the rules matched
//! the `SELECT` only. So did an `INSERT` into a table whose trigger, rule
//! or column default deletes from `customers`. The bodies of the
//! user-defined functions a statement calls (itself, through a view, or
//! through the code its written tables run) are now read, and their words
//! count as tables it touches and statement kinds it runs; a body Sluice
//! cannot read (dynamic SQL) refuses the statement that would run it.
//! Per class: functions called directly (SQL and PL/pgSQL bodies, made by
//! the workload through the sidecar or by the admin), procedures, through
//! a view, nested functions, triggers, rewrite rules, column defaults,
//! kind-only and `withoutWhere` rules, foreign keys' cascades, what a body
//! names in turn (a view,
//! a table with a trigger); renames of a table a rule names; simple and
//! extended protocol.

use crate::common;
use common::*;

const POLICY: &str = r#"  defaultAction: allow
  onParseError: allow
  rules:
    - name: protect-customers
      match: {statements: [delete, update, insert, truncate], tables: [customers]}
      action: deny
    - name: no-drops
      match: {statements: [drop]}
      action: deny
    - name: whole-orders
      match: {withoutWhere: true, tables: [orders]}
      action: deny"#;

/// A database for `test` with four customers and some orders, code the
/// admin made, and a sidecar on it under [`POLICY`]; the admin's connection.
async fn setup(test: &str) -> (Sidecar, tokio_postgres::Client) {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE regions (id int PRIMARY KEY);
             INSERT INTO regions VALUES (1), (2);
             CREATE TABLE customers (id int, name text,
               region int DEFAULT 1 REFERENCES regions ON DELETE CASCADE ON UPDATE CASCADE);
             INSERT INTO customers VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd');
             CREATE TABLE orders (id int, total int);
             INSERT INTO orders VALUES (1, 10), (2, 20);
             CREATE TABLE keep (id int);
             CREATE FUNCTION admin_purge() RETURNS void LANGUAGE plpgsql
               AS $$ BEGIN DELETE FROM customers; END $$;
             CREATE FUNCTION outer_call() RETURNS void LANGUAGE sql AS 'SELECT admin_purge()';
             CREATE PROCEDURE purge_proc() LANGUAGE sql AS $$ DELETE FROM customers $$;
             CREATE FUNCTION dynamic(t text) RETURNS void LANGUAGE plpgsql
               AS $$ BEGIN EXECUTE t; END $$;
             CREATE FUNCTION zero_orders() RETURNS void LANGUAGE sql AS 'UPDATE orders SET total = 0';
             CREATE VIEW purging AS SELECT id, admin_purge()::text AS gone FROM keep;
             CREATE FUNCTION purge_trigger() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN DELETE FROM customers WHERE id = 1; RETURN NEW; END $$;
             CREATE TABLE audited (id int);
             CREATE TRIGGER audited_purge AFTER INSERT ON audited FOR EACH ROW EXECUTE FUNCTION purge_trigger();
             CREATE TABLE ruled (id int);
             CREATE RULE ruled_purge AS ON INSERT TO ruled DO ALSO DELETE FROM customers WHERE id = 2;
             CREATE FUNCTION purge_value() RETURNS int LANGUAGE sql AS 'DELETE FROM customers WHERE id = 3 RETURNING 0';
             CREATE TABLE defaulted (id int, v int DEFAULT purge_value());
             CREATE FUNCTION dynamic_trigger() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN EXECUTE 'SELECT 1'; RETURN NEW; END $$;
             CREATE TABLE opaque (id int);
             CREATE TRIGGER opaque_code BEFORE INSERT ON opaque FOR EACH ROW EXECUTE FUNCTION dynamic_trigger();
             CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql
               AS $$ BEGIN NEW.id = NEW.id + 1; RETURN NEW; END $$;
             CREATE VIEW cv AS SELECT * FROM customers;
             CREATE FUNCTION purge_view() RETURNS int LANGUAGE sql AS 'DELETE FROM cv WHERE id = 4 RETURNING 1';
             CREATE FUNCTION fill_audited() RETURNS int LANGUAGE sql AS 'INSERT INTO audited VALUES (1) RETURNING 1';
             CREATE TABLE stamped (id int);
             CREATE TRIGGER stamped_stamp BEFORE INSERT ON stamped FOR EACH ROW EXECUTE FUNCTION stamp();",
        )
        .await
        .unwrap();
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(POLICY)),
        "shop/report-job",
    );
    (sidecar, admin)
}

/// A denial by `rule` whose reason names `why`.
pub fn denied(bytes: &[u8], rule: &str, why: &str) -> bool {
    contains(bytes, "C42501") && contains(bytes, rule) && contains(bytes, why)
}

/// Runs `sql`, which must not fail.
pub fn run(raw: &mut RawClient, sql: &str) -> Vec<u8> {
    let bytes = raw.simple(sql);
    assert!(
        !contains(&bytes, "SERROR"),
        "{sql}: {}",
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

#[tokio::test]
async fn function_bodies_run_no_denied_statement() {
    let (sidecar, admin) = setup("code_bodies_functions").await;
    let mut raw = RawClient::connect(sidecar.port);
    // The workload makes its own functions through the sidecar.
    run(
        &mut raw,
        "CREATE FUNCTION purge_sql() RETURNS int LANGUAGE sql AS 'DELETE FROM customers WHERE id = 1 RETURNING 1'",
    );
    run(
        &mut raw,
        "CREATE FUNCTION purge_tagged() RETURNS int LANGUAGE sql AS $f$DELETE FROM customers RETURNING 1$f$",
    );
    run(
        &mut raw,
        "CREATE FUNCTION drop_keep() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DROP TABLE keep; END $$",
    );
    for (sql, rule, why) in [
        (
            "SELECT purge_sql()",
            "protect-customers",
            "purge_sql's body names customers",
        ),
        (
            "SELECT * FROM purge_tagged()",
            "protect-customers",
            "purge_tagged's body names customers",
        ),
        (
            "SELECT admin_purge()",
            "protect-customers",
            "admin_purge's body names customers",
        ),
        (
            "SELECT 1 WHERE admin_purge() IS NULL",
            "protect-customers",
            "admin_purge",
        ),
        (
            "SELECT outer_call()",
            "protect-customers",
            "admin_purge's body names customers",
        ),
        (
            "CALL purge_proc()",
            "protect-customers",
            "purge_proc's body names customers",
        ),
        (
            "SELECT * FROM purging",
            "protect-customers",
            "admin_purge's body names customers",
        ),
        (
            "SELECT drop_keep()",
            "no-drops",
            "drop_keep's body may run drop",
        ),
        (
            "SELECT zero_orders()",
            "whole-orders",
            "zero_orders's body names orders",
        ),
        // What a body names is followed in turn: a view of customers, a
        // table whose trigger deletes customers.
        (
            "SELECT purge_view()",
            "protect-customers",
            "cv's body names customers",
        ),
        (
            "SELECT fill_audited()",
            "protect-customers",
            "purge_trigger's body names customers",
        ),
    ] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert!(
                denied(&bytes, rule, why),
                "{sql}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // SQL built at run time cannot be read: refused, saying why.
    let bytes = raw.simple("SELECT dynamic('DELETE FROM customers')");
    assert!(
        contains(&bytes, "C42501") && contains(&bytes, "EXECUTE"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    // Through tokio-postgres' prepared statements too.
    let client = sidecar.connect().await;
    let err = client
        .query("SELECT purge_sql()", &[])
        .await
        .expect_err("a function deleting customers ran");
    assert!(message(&err).contains("protect-customers"), "{err:?}");

    assert_eq!(
        row_count(&admin, "customers").await,
        4,
        "a denied DELETE ran"
    );
    assert_eq!(row_count(&admin, "keep").await, 0, "keep was dropped");
    let totals: i64 = admin
        .query_one("SELECT sum(total)::int8 FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(totals, 30, "a denied UPDATE ran");
    // Functions whose bodies run nothing denied still run.
    run(
        &mut raw,
        "CREATE FUNCTION reads() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM customers'",
    );
    run(&mut raw, "SELECT reads()");
}

#[tokio::test]
async fn code_a_write_runs_without_naming_it_runs_no_denied_statement() {
    let (sidecar, admin) = setup("code_bodies_tables").await;
    let mut raw = RawClient::connect(sidecar.port);
    for (sql, why) in [
        (
            "INSERT INTO audited VALUES (1)",
            "purge_trigger's body names customers",
        ),
        (
            "INSERT INTO ruled VALUES (1)",
            "a rule on ruled names customers",
        ),
        (
            "INSERT INTO defaulted (id) VALUES (1)",
            "purge_value's body names customers",
        ),
    ] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert!(
                denied(&bytes, "protect-customers", why),
                "{sql}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    let bytes = raw.simple("COPY audited FROM STDIN");
    assert!(
        denied(
            &bytes,
            "protect-customers",
            "purge_trigger's body names customers"
        ),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    // A rule the workload makes through the sidecar (Sluice cannot parse
    // CREATE RULE; onParseError allows it here) is seen by the next write.
    run(
        &mut raw,
        "CREATE RULE keep_purge AS ON INSERT TO keep DO ALSO DELETE FROM customers WHERE id = 4",
    );
    let bytes = raw.simple("INSERT INTO keep VALUES (1)");
    assert!(
        denied(
            &bytes,
            "protect-customers",
            "a rule on keep names customers"
        ),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    // A trigger whose body cannot be read: writes refused, reads not.
    let bytes = raw.simple("INSERT INTO opaque VALUES (1)");
    assert!(
        contains(&bytes, "C42501") && contains(&bytes, "EXECUTE"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(
        row_count(&admin, "customers").await,
        4,
        "a denied DELETE ran"
    );
    assert_eq!(row_count(&admin, "opaque").await, 0);
    for sql in [
        "SELECT count(*) FROM audited",
        "SELECT count(*) FROM ruled",
        "SELECT count(*) FROM opaque",
        "SELECT count(*) FROM defaulted",
    ] {
        run(&mut raw, sql);
    }
    // A foreign key's action writes the table that references the one
    // written: a delete cascading into customers, a truncate cascading.
    for (sql, why) in [
        (
            "DELETE FROM regions WHERE id = 1",
            "the foreign key of public.customers to regions",
        ),
        (
            "TRUNCATE regions CASCADE",
            "the foreign key of public.customers to regions",
        ),
        (
            "UPDATE regions SET id = 3 WHERE id = 1",
            "the foreign key of public.customers to regions",
        ),
    ] {
        for bytes in [raw.simple(sql), raw.extended(sql, false)] {
            assert!(
                denied(&bytes, "protect-customers", why),
                "{sql}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // A write that fires no action runs (a DELETE is refused whether or
    // not rows reference the ones it deletes: Sluice cannot tell).
    run(&mut raw, "INSERT INTO regions VALUES (5)");
    // Renaming a table a rule names would take its rows out of the rule.
    for sql in [
        "ALTER TABLE customers RENAME TO c2",
        "ALTER TABLE IF EXISTS public.\"customers\" RENAME TO c2",
        "ALTER TABLE orders RENAME TO orders2",
    ] {
        let bytes = raw.simple(sql);
        assert!(
            contains(&bytes, "C42501") && contains(&bytes, "renames table"),
            "{sql}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    assert_eq!(row_count(&admin, "customers").await, 4);
    // A trigger that runs nothing denied lets the write through.
    let bytes = run(&mut raw, "INSERT INTO stamped VALUES (1)");
    assert!(
        contains(&bytes, "INSERT 0 1"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(row_count(&admin, "stamped").await, 1);
    // A table no rule names is renamed.
    run(&mut raw, "ALTER TABLE stamped RENAME TO stamped2");
    assert_eq!(row_count(&admin, "stamped2").await, 1);
}
