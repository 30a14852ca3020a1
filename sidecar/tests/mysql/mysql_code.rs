//! Code a statement runs without naming it, on MySQL/MariaDB (#24, as
//! `pg_code_bodies` on PostgreSQL): with a rule denying deletes from
//! `customers`, an `INSERT` into a table whose trigger deletes customers,
//! a `DELETE` of a region that `customers` references `ON DELETE CASCADE`,
//! an `UPDATE` of its key (`ON UPDATE CASCADE`) and `CALL` of a procedure
//! this identity defined that deletes customers all changed `customers`
//! while the rules matched only what the statement names. Refused now; the
//! table is read directly from MariaDB afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

const RULES: &str = r#"  defaultAction: allow
  onParseError: deny
  rules:
    - name: protect-customers
      match: {statements: [delete, update, insert, truncate], tables: [customers]}
      action: deny
"#;

#[test]
fn triggers_foreign_keys_and_routines_run_no_denied_statement() {
    let db = "my_code_bodies";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.regions (id int primary key) ENGINE=InnoDB;
         INSERT INTO {db}.regions VALUES (1), (2);
         CREATE TABLE {db}.customers (id int primary key, name varchar(50), region int,
           FOREIGN KEY (region) REFERENCES {db}.regions (id) ON DELETE CASCADE ON UPDATE CASCADE) ENGINE=InnoDB;
         INSERT INTO {db}.customers VALUES (1, 'Alice', 1), (2, 'Bob', 2);
         CREATE TABLE {db}.orders (id int, total int);
         CREATE TRIGGER {db}.orders_purge AFTER INSERT ON {db}.orders FOR EACH ROW DELETE FROM {db}.customers WHERE id = 1;
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.purge_p() DELETE FROM {db}.customers WHERE id = 2;
         CREATE TABLE {db}.stamped (id int, at int);
         CREATE TRIGGER {db}.stamped_at BEFORE INSERT ON {db}.stamped FOR EACH ROW SET NEW.at = 1;"
    ));
    let sidecar = Sidecar::start(&manifests(m, db, RULES), "shop/report-job");
    let attacks = [
        (
            "INSERT INTO orders VALUES (9, 9)",
            "a trigger on orders names customers",
        ),
        ("DELETE FROM regions WHERE id = 2", "the foreign key of"),
        (
            "UPDATE regions SET id = 5 WHERE id = 2",
            "the foreign key of",
        ),
        ("CALL purge_p()", "purge_p's body names customers"),
    ];
    let statements: Vec<&str> = attacks
        .iter()
        .map(|(sql, _)| *sql)
        .chain([
            "INSERT INTO regions VALUES (7)",
            "INSERT INTO stamped (id) VALUES (1)",
            "SELECT count(*) FROM orders",
        ])
        .collect();
    let out = each(sidecar.port, db, &statements);
    for (sql, why) in attacks {
        let a = answer(&out, sql);
        assert!(
            a.starts_with("error 1227") && a.contains("protect-customers") && a.contains(why),
            "{sql}: {a}\n{out}"
        );
    }
    for sql in [
        "INSERT INTO regions VALUES (7)",
        "INSERT INTO stamped (id) VALUES (1)",
    ] {
        assert_eq!(answer(&out, sql), "ran", "{sql}:\n{out}");
    }
    let customers = m.admin(&format!(
        "SELECT group_concat(id, ':', region ORDER BY id) FROM {db}.customers"
    ));
    assert_eq!(customers.trim(), "1:1,2:2", "{out}");

    // A rule on a statement kind alone (no tables): the same code followed.
    drop(sidecar);
    let kinds_only = "  defaultAction: allow\n  rules:\n    - {name: no-deletes, match: {statements: [delete]}, action: deny}\n";
    let sidecar = Sidecar::start(&manifests(m, db, kinds_only), "shop/report-job");
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor()
for sql in ["CALL purge_p()", "INSERT INTO orders VALUES (9, 9)", "SELECT count(*) FROM customers"]:
    try:
        cur.execute(sql)
        print(sql, "ran")
    except pymysql.MySQLError as e:
        print(sql, "error", e.args[0], e.args[1])
"#
        ),
    );
    for sql in ["CALL purge_p()", "INSERT INTO orders VALUES (9, 9)"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{sql} error 1227")) && l.contains("no-deletes")),
            "{sql}:\n{out}"
        );
    }
    assert!(out.contains("SELECT count(*) FROM customers ran"), "{out}");
    let customers = m.admin(&format!("SELECT count(*) FROM {db}.customers"));
    assert_eq!(customers.trim(), "2", "{out}");
}

/// Foreign keys' actions run the actions of the keys referencing the rows
/// they write, level by level (the server follows 15): with `customers`
/// referencing `regions` and `regions` referencing `countries`, both `ON
/// DELETE CASCADE`, `DELETE FROM countries` (or `planets`, a level up)
/// deleted customers under the rule denying it; only the keys referencing
/// the table a statement names were followed. Refused now, on record; a
/// write that cascades to no protected table (a self-referencing key
/// included) runs.
#[test]
fn foreign_keys_are_followed_through_chains() {
    let db = "my_code_key_chains";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.planets (id int primary key) ENGINE=InnoDB;
         INSERT INTO {db}.planets VALUES (1), (2);
         CREATE TABLE {db}.countries (id int primary key, planet int,
           FOREIGN KEY (planet) REFERENCES {db}.planets (id) ON DELETE CASCADE) ENGINE=InnoDB;
         INSERT INTO {db}.countries VALUES (1, 1), (2, 2);
         CREATE TABLE {db}.regions (id int primary key, country int,
           FOREIGN KEY (country) REFERENCES {db}.countries (id) ON DELETE CASCADE) ENGINE=InnoDB;
         INSERT INTO {db}.regions VALUES (1, 1), (2, 2);
         CREATE TABLE {db}.customers (id int primary key, name varchar(50), region int,
           FOREIGN KEY (region) REFERENCES {db}.regions (id) ON DELETE CASCADE) ENGINE=InnoDB;
         INSERT INTO {db}.customers VALUES (1, 'Alice', 1), (2, 'Bob', 2);
         CREATE TABLE {db}.teams (id int primary key, parent int,
           FOREIGN KEY (parent) REFERENCES {db}.teams (id) ON DELETE CASCADE) ENGINE=InnoDB;
         INSERT INTO {db}.teams VALUES (1, NULL), (2, 1), (3, 2);"
    ));
    let sidecar = Sidecar::start(&manifests(m, db, RULES), "shop/report-job");
    let attacks = [
        "DELETE FROM countries WHERE id = 1",
        "DELETE FROM planets WHERE id = 2",
    ];
    let runs = [
        "DELETE FROM teams WHERE id = 2",
        "INSERT INTO planets VALUES (3)",
    ];
    let statements: Vec<&str> = attacks.iter().chain(runs.iter()).copied().collect();
    let out = each(sidecar.port, db, &statements);
    for sql in attacks {
        let a = answer(&out, sql);
        assert!(
            a.starts_with("error 1227")
                && a.contains("protect-customers")
                && a.contains(&format!(
                    "the foreign key of {db}.customers (on {db}.regions)"
                )),
            "{sql}: {a}\n{out}"
        );
    }
    for sql in runs {
        assert_eq!(answer(&out, sql), "ran", "{sql}:\n{out}");
    }
    let customers = m.admin(&format!(
        "SELECT group_concat(id ORDER BY id) FROM {db}.customers"
    ));
    assert_eq!(customers.trim(), "1,2", "{out}");
    let teams = m.admin(&format!("SELECT group_concat(id) FROM {db}.teams"));
    assert_eq!(teams.trim(), "1", "{out}");
    let text = sidecar.audit_text();
    sluice_policy::audit::verify_lines(text.lines(), &[]).expect("the audit chain verifies");
    let denials = sidecar
        .audit_events()
        .into_iter()
        .filter(|e| e["type"] == "denial" && e["decision"]["rule"] == "protect-customers")
        .count();
    assert!(denials >= 2, "{text}");
}

/// A stored procedure that builds its statement while it runs (`PREPARE s
/// FROM @q; EXECUTE s`, `EXECUTE IMMEDIATE CONCAT(…)`) runs a text no word
/// of its body shows: `CALL` of one deleting customers through
/// `CONCAT('DEL', 'ETE FROM customers …')` ran under the rule denying it.
/// Refused now while rules that deny statements apply (the body is
/// followed then), on record; a procedure without dynamic SQL still runs.
#[test]
fn dynamic_sql_in_followed_code_is_refused() {
    let db = "my_code_dynamic_sql";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50)) ENGINE=InnoDB;
         INSERT INTO {db}.customers VALUES (1, 'Alice'), (2, 'Bob');
         CREATE TABLE {db}.orders (id int, total int) ENGINE=InnoDB;
         DELIMITER //
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.purge_prepared()
           BEGIN SET @q = CONCAT('DEL', 'ETE FROM {db}.customers WHERE id = 1'); PREPARE s FROM @q; EXECUTE s; DEALLOCATE PREPARE s; END//
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.purge_immediate()
           EXECUTE IMMEDIATE CONCAT('DEL', 'ETE FROM {db}.customers WHERE id = 2')//
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.tally()
           INSERT INTO {db}.orders VALUES (1, 10)//
         DELIMITER ;"
    ));
    let sidecar = Sidecar::start(&manifests(m, db, RULES), "shop/report-job");
    let attacks = ["CALL purge_prepared()", "CALL purge_immediate()"];
    let statements: Vec<&str> = attacks.iter().copied().chain(["CALL tally()"]).collect();
    let out = each(sidecar.port, db, &statements);
    for sql in attacks {
        let a = answer(&out, sql);
        assert!(
            a.starts_with("error 1227") && a.contains("dynamic SQL"),
            "{sql}: {a}\n{out}"
        );
    }
    assert_eq!(answer(&out, "CALL tally()"), "ran", "{out}");
    let customers = m.admin(&format!(
        "SELECT group_concat(id ORDER BY id) FROM {db}.customers"
    ));
    assert_eq!(customers.trim(), "1,2", "{out}");
    let text = sidecar.audit_text();
    sluice_policy::audit::verify_lines(text.lines(), &[]).expect("the audit chain verifies");
    assert!(
        text.matches("dynamic SQL").count() >= 2,
        "the refusals are on record:\n{text}"
    );
}

/// A routine's body that calls another routine runs that one's code: with
/// `outer_p()` calling `inner_p()` (which deletes customers), `CALL
/// outer_p()` and `SELECT outer_f()` (a function returning `mid_f()`,
/// which returns `inner_f()`, which deletes) deleted customers under the
/// rule denying it; only the bodies of the routines a statement names were
/// read. Refused now, naming the body that names customers; a chain that
/// touches no protected table runs.
#[test]
fn routines_called_by_routines_are_followed() {
    let db = "my_code_nested_routines";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50)) ENGINE=InnoDB;
         INSERT INTO {db}.customers VALUES (1, 'Alice'), (2, 'Bob');
         CREATE TABLE {db}.orders (id int, total int) ENGINE=InnoDB;
         DELIMITER //
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.inner_p() DELETE FROM {db}.customers WHERE id = 1//
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.outer_p() CALL {db}.inner_p()//
         CREATE DEFINER = '{USER}'@'127.0.0.1' FUNCTION {db}.inner_f() RETURNS int
           BEGIN DELETE FROM {db}.customers WHERE id = 2; RETURN 1; END//
         CREATE DEFINER = '{USER}'@'127.0.0.1' FUNCTION {db}.mid_f() RETURNS int RETURN inner_f()//
         CREATE DEFINER = '{USER}'@'127.0.0.1' FUNCTION {db}.outer_f() RETURNS int RETURN mid_f() + 1//
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.tally_inner() INSERT INTO {db}.orders VALUES (1, 10)//
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.tally() CALL tally_inner()//
         DELIMITER ;"
    ));
    let sidecar = Sidecar::start(&manifests(m, db, RULES), "shop/report-job");
    let attacks = [
        ("CALL outer_p()", "inner_p's body names customers"),
        ("SELECT outer_f()", "inner_f's body names customers"),
    ];
    let statements: Vec<&str> = attacks
        .iter()
        .map(|(sql, _)| *sql)
        .chain(["CALL tally()"])
        .collect();
    let out = each(sidecar.port, db, &statements);
    for (sql, why) in attacks {
        let a = answer(&out, sql);
        assert!(
            a.starts_with("error 1227") && a.contains("protect-customers") && a.contains(why),
            "{sql}: {a}\n{out}"
        );
    }
    assert_eq!(answer(&out, "CALL tally()"), "ran", "{out}");
    let customers = m.admin(&format!(
        "SELECT group_concat(id ORDER BY id) FROM {db}.customers"
    ));
    assert_eq!(customers.trim(), "1,2", "{out}");
    let orders = m.admin(&format!("SELECT count(*) FROM {db}.orders"));
    assert_eq!(orders.trim(), "1", "{out}");
}

/// The code a followed body runs runs code in turn: a procedure inserting
/// into `queue`, whose trigger deletes customers; an insert into `relay`,
/// whose trigger inserts into `queue`; a procedure deleting a region that
/// customers reference `ON DELETE CASCADE`; a procedure deleting through
/// a view of customers. Each deleted customers under
/// the rule denying it (only the triggers and keys of the tables a
/// statement names were read). Refused now; code that reaches no protected
/// table runs.
#[test]
fn code_that_followed_code_runs_is_followed() {
    let db = "my_code_of_code";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.regions (id int primary key) ENGINE=InnoDB;
         INSERT INTO {db}.regions VALUES (1), (2);
         CREATE TABLE {db}.customers (id int primary key, name varchar(50), region int,
           FOREIGN KEY (region) REFERENCES {db}.regions (id) ON DELETE CASCADE) ENGINE=InnoDB;
         INSERT INTO {db}.customers VALUES (1, 'Alice', 1), (2, 'Bob', 2);
         CREATE TABLE {db}.queue (id int) ENGINE=InnoDB;
         CREATE TRIGGER {db}.queue_purge AFTER INSERT ON {db}.queue FOR EACH ROW DELETE FROM {db}.customers WHERE id = 1;
         CREATE TABLE {db}.relay (id int) ENGINE=InnoDB;
         CREATE TRIGGER {db}.relay_on AFTER INSERT ON {db}.relay FOR EACH ROW INSERT INTO {db}.queue VALUES (NEW.id);
         CREATE TABLE {db}.orders (id int, total int) ENGINE=InnoDB;
         DELIMITER //
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.enqueue() INSERT INTO {db}.queue VALUES (1)//
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.drop_region() DELETE FROM {db}.regions WHERE id = 2//
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.tally() INSERT INTO {db}.orders VALUES (1, 10)//
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.add_region() INSERT INTO {db}.regions VALUES (3)//
         CREATE DEFINER = '{USER}'@'127.0.0.1' VIEW {db}.all_customers AS SELECT * FROM {db}.customers//
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.drop_through_view() DELETE FROM {db}.all_customers WHERE id = 2//
         CREATE DEFINER = '{USER}'@'127.0.0.1' PROCEDURE {db}.count_through_view() SELECT count(*) FROM {db}.all_customers//
         DELIMITER ;"
    ));
    let sidecar = Sidecar::start(&manifests(m, db, RULES), "shop/report-job");
    let attacks = [
        ("CALL enqueue()", "a trigger on queue"),
        ("INSERT INTO relay VALUES (1)", "a trigger on queue"),
        ("CALL drop_region()", "the foreign key of"),
        ("CALL drop_through_view()", "protect-customers"),
    ];
    let statements: Vec<&str> = attacks
        .iter()
        .map(|(sql, _)| *sql)
        .chain([
            "CALL tally()",
            "INSERT INTO orders VALUES (2, 20)",
            "CALL add_region()",
            "CALL count_through_view()",
        ])
        .collect();
    let out = each(sidecar.port, db, &statements);
    for (sql, why) in attacks {
        let a = answer(&out, sql);
        assert!(
            a.starts_with("error 1227") && a.contains("protect-customers") && a.contains(why),
            "{sql}: {a}\n{out}"
        );
    }
    // An insert into a parent fires no key's action: it runs.
    for sql in [
        "CALL tally()",
        "INSERT INTO orders VALUES (2, 20)",
        "CALL add_region()",
        "CALL count_through_view()",
    ] {
        assert_eq!(answer(&out, sql), "ran", "{sql}:\n{out}");
    }
    let customers = m.admin(&format!(
        "SELECT group_concat(id ORDER BY id) FROM {db}.customers"
    ));
    assert_eq!(customers.trim(), "1,2", "{out}");
}

/// Reading a view runs the functions its definition calls: `SELECT * FROM
/// purging_view`, whose definition calls `purge_f()` (deleting
/// customers), deleted customers under the rule denying it (the bodies of
/// the functions a statement calls were read, not those of the functions
/// the views it reads call). Refused now; a view calling a function that
/// touches no protected table is read.
#[test]
fn functions_views_call_are_followed() {
    let db = "my_code_view_functions";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50)) ENGINE=InnoDB;
         INSERT INTO {db}.customers VALUES (1, 'Alice'), (2, 'Bob');
         DELIMITER //
         CREATE DEFINER = '{USER}'@'127.0.0.1' FUNCTION {db}.purge_f() RETURNS int
           BEGIN DELETE FROM {db}.customers WHERE id = 2; RETURN 1; END//
         CREATE DEFINER = '{USER}'@'127.0.0.1' FUNCTION {db}.one_f() RETURNS int RETURN 1//
         DELIMITER ;
         CREATE DEFINER = '{USER}'@'127.0.0.1' VIEW {db}.purging_view AS SELECT {db}.purge_f() AS x;
         CREATE DEFINER = '{USER}'@'127.0.0.1' VIEW {db}.plain_view AS SELECT {db}.one_f() AS x;"
    ));
    let sidecar = Sidecar::start(&manifests(m, db, RULES), "shop/report-job");
    let out = each(
        sidecar.port,
        db,
        &["SELECT * FROM purging_view", "SELECT * FROM plain_view"],
    );
    let a = answer(&out, "SELECT * FROM purging_view");
    assert!(
        a.starts_with("error 1227") && a.contains("protect-customers"),
        "{a}\n{out}"
    );
    assert_eq!(answer(&out, "SELECT * FROM plain_view"), "ran", "{out}");
    let customers = m.admin(&format!(
        "SELECT group_concat(id ORDER BY id) FROM {db}.customers"
    ));
    assert_eq!(customers.trim(), "1,2", "{out}");
}
