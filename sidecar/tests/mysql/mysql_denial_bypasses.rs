//! Denial bypasses (#24), per class, with real clients (PyMySQL on the
//! text protocol, mysql-connector-python's prepared statements on the
//! binary one, the `mariadb` CLI): a rule denying writes and drops of
//! `orders` holds however the statement is written, and the tables are
//! read directly from MariaDB afterwards to show nothing changed.
//!
//! - Statements Sluice's parser reads otherwise than the server: `UPDATE
//!   IGNORE t …` / `UPDATE LOW_PRIORITY t …` were decided as updates of a
//!   table named `ignore` (`low_priority`) aliased `t`, so the rule on
//!   `orders` let them through, and the masking's check of writes let
//!   `UPDATE IGNORE customers SET name = ssn` copy the SSN into a column
//!   read back in clear.
//! - Names moved out of the rules' sight: `RENAME TABLE orders TO o2`
//!   (or `ALTER TABLE orders RENAME …`, or a swap) ran under a rule that
//!   does not deny `alter`, and `DELETE FROM o2` then matched no rule.
//! - MariaDB's `CREATE OR REPLACE TABLE orders …` drops `orders` (rows
//!   and all) and was decided as a plain `create`; `DROP DATABASE` drops it
//!   without naming it.
//! - Allow rules wider than they read: under `defaultAction: deny`, a rule
//!   allowing `select` matched any statement with a SELECT nested in it,
//!   so `UPDATE orders SET total = (SELECT 0)` and `DELETE FROM orders
//!   WHERE id IN (SELECT id FROM t)` ran (a statement's kinds are a
//!   superset; an allow rule now matches only when it names all of them).
//! - Reads through writes: `DELETE FROM orders … RETURNING *` in a
//!   transaction rolled back read `orders` under a rule denying `select`
//!   on it (a write with RETURNING was a plain write to rules).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

/// Writes (`delete`, `update`) and drops of `orders` denied; `alter` is
/// not; the SSN masked.
const RULES: &str = r#"  defaultAction: allow
  onParseError: deny
  rules:
    - name: protect-orders
      match: {statements: [delete, update, drop], tables: [orders]}
      action: deny
  masking:
    - columns: ["customers.ssn"]
      strategy: redact
"#;

/// A database `db` with `customers` (SSNs), `orders` (three rows) and `t`,
/// and a sidecar with [`RULES`] in front of it.
fn setup(db: &str) -> Sidecar {
    setup_with(db, RULES)
}

/// [`setup`] with the policy's spec lines `rules`.
fn setup_with(db: &str, rules: &str) -> Sidecar {
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20));
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}'), (2, 'Bob', '234-56-7890');
         CREATE TABLE {db}.orders (id int primary key, total int);
         INSERT INTO {db}.orders VALUES (1, 10), (2, 20), (3, 30);
         CREATE TABLE {db}.t (id int, q varchar(50));"
    ));
    Sidecar::start(&manifests(m, db, rules), "shop/report-job")
}

/// What the server holds, read directly: the tables of `db`, `orders`'
/// rows and `customers`' names.
fn state(db: &str) -> String {
    maria().admin(&format!(
        "SELECT group_concat(table_name ORDER BY table_name) FROM information_schema.tables WHERE table_schema = '{db}';
         SELECT group_concat(id, ':', total ORDER BY id) FROM {db}.orders;
         SELECT group_concat(name ORDER BY id) FROM {db}.customers;"
    ))
}

/// The audit chain verifies, at least `count` denials naming `rule` are on
/// record, and no SSN is.
fn on_record(sidecar: &Sidecar, rule: &str, count: usize) {
    let text = sidecar.audit_text();
    sluice_policy::audit::verify_lines(text.lines(), &[]).expect("the audit chain verifies");
    let denials = sidecar
        .audit_events()
        .into_iter()
        .filter(|e| e["type"] == "denial" && e["decision"]["rule"] == rule)
        .count();
    assert!(
        denials >= count,
        "{denials} denials by {rule}, {count} expected:\n{text}"
    );
    assert!(!text.contains(SSN), "the SSN is on record");
}

/// `UPDATE [LOW_PRIORITY] [IGNORE]`: refused before it is decided, in
/// every client and spelling, through SQL-level PREPARE and EXECUTE
/// IMMEDIATE too; a plain UPDATE of another table runs.
#[test]
fn update_modifiers_are_not_misread() {
    let db = "my_bypass_modifiers";
    let sidecar = setup(db);
    let before = state(db);
    let attacks = [
        "UPDATE IGNORE orders SET total = 0",
        "UPDATE LOW_PRIORITY orders SET total = 0",
        "UPDATE LOW_PRIORITY IGNORE orders SET total = 0",
        "update /* x */ ignore `orders` SET total = 0",
        "UPDATE IGNORE customers SET name = ssn",
        "UPDATE LOW_PRIORITY customers SET name = CONCAT(ssn, '')",
        "PREPARE s FROM 'UPDATE IGNORE orders SET total = 0'",
        "EXECUTE IMMEDIATE 'UPDATE IGNORE customers SET name = ssn'",
    ];
    let mut all = attacks.to_vec();
    all.extend(["UPDATE t SET q = 'x'", "SELECT name FROM customers"]);
    let out = each(sidecar.port, db, &all);
    for sql in attacks {
        assert!(answer(&out, sql).starts_with("error 1227"), "{sql}:\n{out}");
    }
    assert_eq!(answer(&out, "UPDATE t SET q = 'x'"), "ran", "{out}");
    // The binary protocol and the mariadb CLI.
    let binary = connector(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
for sql in ["UPDATE IGNORE orders SET total = ?", "UPDATE IGNORE customers SET name = ssn WHERE id = ?"]:
    cur = c.cursor(prepared=True)
    try:
        cur.execute(sql, (1,))
        print("ran", sql)
    except mysql.connector.Error as e:
        print("error", e.errno, sql)
    cur.close()
"#
        ),
    );
    assert_eq!(binary.matches("error 1227").count(), 2, "{binary}");
    let (_, _, err) = mariadb_cli(
        sidecar.port,
        &format!(
            "USE {db};\nUPDATE IGNORE orders SET total = 0;\nUPDATE LOW_PRIORITY customers SET name = ssn;\n"
        ),
    );
    assert_eq!(err.matches("ERROR 1227").count(), 2, "{err}");
    assert_eq!(state(db), before, "{out}\n{binary}");
    assert!(
        !out.contains(SSN) && !binary.contains(SSN),
        "{out}\n{binary}"
    );
    on_record(&sidecar, "protect-orders", 0);
}

/// RENAME TABLE and ALTER TABLE … RENAME of a table a denying rule names
/// (however qualified or quoted, in a swap, through PREPARE and the binary
/// protocol) are denied by that rule, on record with it; renames of other
/// tables run.
#[test]
fn renames_do_not_move_tables_out_of_their_rules() {
    let db = "my_bypass_renames";
    let sidecar = setup(db);
    let before = state(db);
    let attacks = [
        "RENAME TABLE orders TO o2",
        &format!("RENAME TABLE t TO t9, {db}.orders TO t"),
        "ALTER TABLE orders RENAME TO o3",
        "ALTER TABLE `ORDERS` RENAME AS o3",
        "PREPARE r FROM 'RENAME TABLE orders TO o4'",
    ];
    let mut all = attacks.to_vec();
    all.extend([
        "DELETE FROM o2",
        "RENAME TABLE t TO t2",
        "RENAME TABLE t2 TO t",
        "ALTER TABLE orders ADD COLUMN note int",
        "ALTER TABLE orders DROP COLUMN note",
    ]);
    let out = each(sidecar.port, db, &all);
    for sql in attacks {
        let a = answer(&out, sql);
        assert!(
            a.starts_with("error 1227") && a.contains("protect-orders") && a.contains("renames"),
            "{sql}: {a}\n{out}"
        );
    }
    for sql in [
        "RENAME TABLE t TO t2",
        "RENAME TABLE t2 TO t",
        "ALTER TABLE orders ADD COLUMN note int",
    ] {
        assert_eq!(answer(&out, sql), "ran", "{sql}:\n{out}");
    }
    let binary = connector(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor(prepared=True)
try:
    cur.execute("RENAME TABLE orders TO o5")
    print("ran")
except mysql.connector.Error as e:
    print("error", e.errno, e.msg)
"#
        ),
    );
    assert!(binary.contains("error 1227"), "{binary}");
    let (_, _, err) = mariadb_cli(
        sidecar.port,
        &format!("USE {db};\nRENAME TABLE orders TO o6;\n"),
    );
    assert!(err.contains("ERROR 1227"), "{err}");
    assert_eq!(state(db), before, "{out}\n{binary}");
    on_record(&sidecar, "protect-orders", attacks.len() + 2);
}

/// MariaDB's CREATE OR REPLACE TABLE drops the table it replaces: a rule
/// denying drops of `orders` denies it, in any client.
#[test]
fn create_or_replace_is_a_drop() {
    let db = "my_bypass_replace";
    let sidecar = setup(db);
    let before = state(db);
    let attacks = [
        "CREATE OR REPLACE TABLE orders (id int)",
        &format!("CREATE OR REPLACE TABLE {db}.`orders` AS SELECT 1 AS id"),
        "CREATE OR REPLACE TABLE orders LIKE t",
    ];
    let mut all = attacks.to_vec();
    all.push("CREATE OR REPLACE TABLE scratch (id int)");
    let out = each(sidecar.port, db, &all);
    for sql in attacks {
        let a = answer(&out, sql);
        assert!(
            a.starts_with("error 1227") && a.contains("protect-orders"),
            "{sql}: {a}\n{out}"
        );
    }
    assert_eq!(
        answer(&out, "CREATE OR REPLACE TABLE scratch (id int)"),
        "ran",
        "{out}"
    );
    maria().admin(&format!("DROP TABLE {db}.scratch"));
    let binary = connector(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor(prepared=True)
try:
    cur.execute("CREATE OR REPLACE TABLE orders (id int)")
    print("ran")
except mysql.connector.Error as e:
    print("error", e.errno, e.msg)
"#
        ),
    );
    assert!(binary.contains("error 1227"), "{binary}");
    assert_eq!(state(db), before, "{out}\n{binary}");
    on_record(&sidecar, "protect-orders", attacks.len() + 1);
}

/// A write with RETURNING reads the rows it writes: under a rule denying
/// `select` on `orders`, `DELETE … RETURNING` (rolled back after, it read
/// the whole table and changed nothing) is denied by that rule, in text
/// and binary protocol; a write without RETURNING runs.
#[test]
fn returning_is_a_read() {
    let db = "my_bypass_returning";
    let rules = r#"  defaultAction: allow
  onParseError: deny
  rules:
    - name: no-reading-orders
      match: {statements: [select], tables: [orders]}
      action: deny
"#;
    let sidecar = setup_with(db, rules);
    let before = state(db);
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=False)
cur = c.cursor()
for sql in ["DELETE FROM orders RETURNING *", "DELETE FROM orders WHERE id > 0 RETURNING id, total", "INSERT INTO orders VALUES (7, 70) RETURNING *", "UPDATE orders SET total = total WHERE id = 99"]:
    try:
        cur.execute(sql)
        print("ran", sql, json.dumps(cur.fetchall()))
    except pymysql.MySQLError as e:
        print("error", e.args[0], e.args[1])
    c.rollback()
"#
        ),
    );
    let denied = out
        .lines()
        .filter(|l| l.starts_with("error 1227") && l.contains("rule \"no-reading-orders\""))
        .count();
    assert_eq!(denied, 3, "{out}");
    assert!(out.contains("ran UPDATE orders"), "{out}");
    let binary = connector(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=False)
cur = c.cursor(prepared=True)
try:
    cur.execute("DELETE FROM orders WHERE id > ? RETURNING total", (0,))
    print("ran", cur.fetchall())
except mysql.connector.Error as e:
    print("error", e.errno, e.msg)
c.rollback()
"#
        ),
    );
    assert!(binary.contains("error 1227"), "{binary}");
    assert_eq!(state(db), before, "{out}\n{binary}");
    on_record(&sidecar, "no-reading-orders", 4);
}

/// An allow-list policy (`defaultAction: deny`, reads allowed): a write
/// with a SELECT nested in it is a write, refused by the default in text
/// and binary protocol and the mariadb CLI, and nothing changes; reads run.
#[test]
fn allow_rules_grant_only_what_they_name() {
    let db = "my_bypass_allow_list";
    let rules = r#"  defaultAction: deny
  onParseError: deny
  rules:
    - name: reads
      match: {statements: [select, set]}
      action: allow
"#;
    let sidecar = setup_with(db, rules);
    let before = state(db);
    let attacks = [
        "UPDATE orders SET total = (SELECT 0)",
        "UPDATE orders SET total = 0 WHERE EXISTS (SELECT 1)",
        "DELETE FROM orders WHERE id IN (SELECT id FROM orders)",
        "INSERT INTO t SELECT id, 'x' FROM orders",
        "REPLACE INTO orders SELECT id, 0 FROM orders",
        "INSERT INTO orders VALUES (9, 9) ON DUPLICATE KEY UPDATE total = (SELECT 0)",
        "CREATE TABLE copy AS SELECT * FROM orders",
    ];
    let mut all = attacks.to_vec();
    all.push("SELECT count(*) FROM orders WHERE id IN (SELECT id FROM t)");
    let out = each(sidecar.port, db, &all);
    for sql in attacks {
        let a = answer(&out, sql);
        assert!(
            a.starts_with("error 1227") && a.contains("defaultAction"),
            "{sql}: {a}\n{out}"
        );
    }
    assert_eq!(
        answer(
            &out,
            "SELECT count(*) FROM orders WHERE id IN (SELECT id FROM t)"
        ),
        "ran",
        "{out}"
    );
    let binary = connector(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor(prepared=True)
try:
    cur.execute("DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE id > ?)", (0,))
    print("ran")
except mysql.connector.Error as e:
    print("error", e.errno, e.msg)
"#
        ),
    );
    assert!(binary.contains("error 1227"), "{binary}");
    let (_, _, err) = mariadb_cli(sidecar.port, "UPDATE orders SET total = (SELECT 0);\n");
    assert!(
        err.contains("ERROR 1227") && err.contains("defaultAction"),
        "{err}"
    );
    assert_eq!(state(db), before, "{out}\n{binary}");
}

/// An allow rule naming a table allows reading that table, not another one
/// joined to it (or read in a subquery, a UNION) under `defaultAction:
/// deny`.
#[test]
fn allow_rules_on_tables_grant_only_those_tables() {
    let db = "my_bypass_allow_tables";
    let rules = r#"  defaultAction: deny
  onParseError: deny
  rules:
    - name: read-customers
      match: {statements: [select], tables: [customers]}
      action: allow
    - name: settings
      match: {statements: [set]}
      action: allow
"#;
    let sidecar = setup_with(db, rules);
    let attacks = [
        "SELECT c.name, o.total FROM customers c JOIN orders o ON o.id = c.id",
        "SELECT name, (SELECT SUM(total) FROM orders) FROM customers",
        "SELECT name FROM customers UNION SELECT total FROM orders",
        "SELECT name FROM customers WHERE id IN (SELECT id FROM orders WHERE total > 15)",
        "SELECT 1",
    ];
    let mut all = attacks.to_vec();
    all.push("SELECT name FROM customers ORDER BY id");
    let out = each(sidecar.port, db, &all);
    for sql in attacks {
        let a = answer(&out, sql);
        assert!(
            a.starts_with("error 1227") && a.contains("defaultAction"),
            "{sql}: {a}\n{out}"
        );
    }
    assert_eq!(
        answer(&out, "SELECT name FROM customers ORDER BY id"),
        "ran",
        "{out}"
    );
}

/// `DROP DATABASE` / `DROP SCHEMA` drop `orders` without naming it: refused
/// while a rule on tables applies, and the database is still there.
#[test]
fn dropping_the_database_is_refused() {
    let db = "my_bypass_dropdb";
    let sidecar = setup(db);
    let before = state(db);
    let attacks = [
        format!("DROP DATABASE {db}"),
        format!("DROP SCHEMA IF EXISTS `{db}`"),
    ];
    let list: Vec<&str> = attacks.iter().map(String::as_str).collect();
    let out = each(sidecar.port, db, &list);
    for sql in &list {
        let a = answer(&out, sql);
        assert!(
            a.starts_with("error 1227") && a.contains("drops the database"),
            "{sql}: {a}\n{out}"
        );
    }
    assert_eq!(state(db), before, "{out}");
}
