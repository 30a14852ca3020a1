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
