//! Rules that deny statements on `tables` hold through views on the MySQL
//! plane (#24 / #15): `DELETE FROM v`, where `v` is an updatable view of
//! `customers`, deletes rows of `customers`, so a rule denying deletes on
//! `customers` refuses it, as it does through a view over a view, for
//! UPDATE, INSERT, REPLACE and a multi-table DELETE, in the text protocol
//! (the real `mariadb` client) and the binary one (prepared statements).
//! Rows of `customers` are counted after each to show nothing ran.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

/// The policy: writes to `customers` denied, anything else allowed.
const RULES: &str = r#"  defaultAction: allow
  rules:
    - name: protect-customers
      match: {statements: [delete, update, insert], tables: [customers]}
      action: deny
"#;

/// A database `db` with `customers` (two rows), `notes` (a table the rule
/// does not name), the updatable view `v` of customers, `vv` over `v`,
/// `Nv` over `notes` (a name in upper case), and a sidecar with [`RULES`].
fn setup(db: &str) -> Sidecar {
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50));
         INSERT INTO {db}.customers VALUES (1, 'Alice'), (2, 'Bob');
         CREATE TABLE {db}.notes (id int primary key, name varchar(50));
         INSERT INTO {db}.notes VALUES (1, 'n');
         CREATE VIEW {db}.v AS SELECT id, name FROM {db}.customers;
         CREATE VIEW {db}.vv AS SELECT id, name FROM {db}.v WHERE id > 0;
         CREATE VIEW {db}.Nv AS SELECT id, name FROM {db}.notes;"
    ));
    Sidecar::start(&manifests(m, db, RULES), "shop/report-job")
}

/// `customers`' rows, as the server has them.
fn customers(db: &str) -> String {
    maria().admin(&format!("SELECT id, name FROM {db}.customers ORDER BY id"))
}

#[test]
fn table_rules_hold_through_views() {
    let db = "myrules_views";
    let sidecar = setup(db);
    let before = customers(db);
    for sql in [
        "DELETE FROM v WHERE id = 1",
        "DELETE FROM vv",
        &format!("DELETE FROM {db}.vv WHERE id = 2"),
        "UPDATE v SET name = 'x'",
        "UPDATE vv SET name = 'x' WHERE id = 1",
        "INSERT INTO v VALUES (3, 'c')",
        "REPLACE INTO v VALUES (1, 'r')",
        "DELETE c FROM v c WHERE c.id = 1",
        "DELETE c FROM notes n JOIN vv c ON c.id = n.id",
        "UPDATE notes n JOIN v c ON c.id = n.id SET c.name = 'j'",
    ] {
        let (_, out, err) = mariadb_cli(sidecar.port, &format!("USE {db};\n{sql};\n"));
        assert!(
            err.contains("denied by Sluice") && err.contains("protect-customers"),
            "{sql}: not refused by the rule: {out} {err}"
        );
        assert_eq!(customers(db), before, "{sql} changed customers");
    }
    // What the rule does not name still runs, through a view too; reads of
    // the views too.
    let (ok, out, err) = mariadb_cli(
        sidecar.port,
        &format!(
            "USE {db};\nUPDATE Nv SET name = 'm';\nDELETE FROM notes WHERE id = 9;\nSELECT COUNT(*) FROM vv;\n"
        ),
    );
    assert!(ok, "{out} {err}");
    assert!(out.contains('2'), "{out}");
    assert_eq!(
        maria()
            .admin(&format!("SELECT name FROM {db}.notes"))
            .trim(),
        "m"
    );
    // The binary protocol: a prepared DELETE through the view.
    let out = connector(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor(prepared=True)
try:
    cur.execute("DELETE FROM vv WHERE id = %s", (1,))
    print("ran")
except mysql.connector.Error as e:
    print("error", e.errno, e.msg)
"#
        ),
    );
    assert!(out.contains("denied by Sluice"), "{out}");
    assert_eq!(customers(db), before);
}

#[test]
fn a_view_that_cannot_be_followed_refuses_the_statement() {
    let db = "myrules_unfollowed";
    let sidecar = setup(db);
    // Views nested deeper than the sidecar follows: refused, not run.
    let m = maria();
    let mut prev = "v".to_string();
    for i in 0..12 {
        m.admin(&format!(
            "CREATE VIEW {db}.d{i} AS SELECT id, name FROM {db}.{prev}"
        ));
        prev = format!("d{i}");
    }
    let before = customers(db);
    let (_, out, err) = mariadb_cli(sidecar.port, &format!("USE {db};\nDELETE FROM {prev};\n"));
    assert!(
        err.contains("could not look up") && err.contains("nested more than"),
        "{out} {err}"
    );
    assert_eq!(customers(db), before);
    // A definition the server does not show (no SHOW VIEW privilege):
    // refused too, not taken for a table.
    m.admin(&format!(
        "REVOKE SHOW VIEW ON {db}.* FROM '{USER}'@'%'; REVOKE SHOW VIEW ON {db}.* FROM '{USER}'@'127.0.0.1';"
    ));
    let (_, out, err) = mariadb_cli(sidecar.port, &format!("USE {db};\nDELETE FROM v;\n"));
    assert!(err.contains("could not look up"), "{out} {err}");
    assert_eq!(customers(db), before);
    // A table the rule does not name still runs.
    let (ok, out, err) = mariadb_cli(sidecar.port, &format!("USE {db};\nDELETE FROM notes;\n"));
    assert!(ok, "{out} {err}");
}

#[test]
fn hold_rules_hold_through_views() {
    let db = "myrules_hold";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50));
         INSERT INTO {db}.customers VALUES (1, 'Alice');
         CREATE VIEW {db}.v AS SELECT id, name FROM {db}.customers;
         CREATE VIEW {db}.vv AS SELECT id, name FROM {db}.v;"
    ));
    let policy = "  defaultAction: allow\n  rules:\n    - name: customer-deletes-need-a-dba\n      match: {statements: [delete], tables: [customers]}\n      action: requireApproval\n      approval: {approvers: {groups: [dba]}, mode: hold}\n";
    let sidecar = Sidecar::start(&manifests(m, db, policy), "shop/report-job");
    let before = customers(db);
    // Standalone: no approvals, so a held statement is refused.
    let (_, out, err) = mariadb_cli(sidecar.port, &format!("USE {db};\nDELETE FROM vv;\n"));
    assert!(
        err.contains("needs approval") && err.contains("customer-deletes-need-a-dba"),
        "{out} {err}"
    );
    assert_eq!(customers(db), before);
    let (ok, out, err) = mariadb_cli(
        sidecar.port,
        &format!("USE {db};\nUPDATE vv SET name = 'b';\n"),
    );
    assert!(ok, "{out} {err}");
}

/// `REPLACE` deletes the rows it meets and `INSERT … ON DUPLICATE KEY
/// UPDATE` updates them (MySQL asks for DELETE and UPDATE privileges): rules
/// naming `delete` or `update` hold for them, not only rules naming
/// `insert`. Before, both ran under such rules.
#[test]
fn replace_and_upserts_meet_the_rules_for_deletes_and_updates() {
    let db = "myrules_upserts";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50));
         INSERT INTO {db}.customers VALUES (1, 'Alice');"
    ));
    let policy = r#"  defaultAction: allow
  rules:
    - name: no-deletes
      match: {statements: [delete], tables: [customers]}
      action: deny
    - name: no-updates
      match: {statements: [update], tables: [customers]}
      action: deny
"#;
    let sidecar = Sidecar::start(&manifests(m, db, policy), "shop/report-job");
    for (sql, rule) in [
        ("REPLACE INTO customers VALUES (1, 'Mallory')", "no-deletes"),
        (
            "REPLACE customers SET id = 1, name = 'Mallory'",
            "no-deletes",
        ),
        (
            "INSERT INTO customers VALUES (1, 'Mallory') ON DUPLICATE KEY UPDATE name = VALUES(name)",
            "no-updates",
        ),
    ] {
        let (_, out, err) = mariadb_cli(sidecar.port, &format!("USE {db};\n{sql};\n"));
        assert!(
            err.contains("denied by Sluice") && err.contains(rule),
            "{sql}: not refused by {rule}: {out} {err}"
        );
    }
    let (ok, out, err) = mariadb_cli(
        sidecar.port,
        &format!("USE {db};\nINSERT INTO customers VALUES (2, 'Bob');\n"),
    );
    assert!(ok, "{out} {err}");
    assert_eq!(
        customers(db),
        maria().admin("SELECT 1, 'Alice' UNION ALL SELECT 2, 'Bob'")
    );
}
