//! Text Sluice's parser cannot read, under a policy that lets it through
//! (`onParseError: allow`), against rules that deny statements (#24).
//! MariaDB runs much that the parser does not read: `DELETE LOW_PRIORITY
//! QUICK …`, `DELETE t.* FROM …`, multi-table `UPDATE a, b SET …`,
//! `UPDATE (t) …`, `SET STATEMENT … FOR DELETE …`, anonymous `BEGIN NOT
//! ATOMIC … END` blocks, `ALTER TABLE … TRUNCATE PARTITION`, `HANDLER t
//! READ` and `SELECT … PROCEDURE ANALYSE()` (which reads a column's minimum
//! and maximum). Each ran under a rule denying it: onParseError's verdict
//! was the only one. PostgreSQL texts have a second grammar for this; a
//! MySQL text is now read word by word: a deny (or hold) rule naming a kind
//! one of its words names (or, without `statements`, a table or function
//! one of its words names) makes the verdict stricter; dynamic SQL
//! (`EXECUTE IMMEDIATE CONCAT('DEL', 'ETE …')` in a block) counts as every
//! kind on every table. The tables are
//! read directly from MariaDB afterwards to show nothing changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

/// Unparsed text allowed; writes of `orders` denied, and every statement
/// on `secrets`.
const RULES: &str = r#"  defaultAction: allow
  onParseError: allow
  rules:
    - name: protect-orders
      match: {statements: [delete, update, truncate], tables: [orders]}
      action: deny
    - name: hide-secrets
      match: {tables: [secrets]}
      action: deny
"#;

/// A database `db` with `orders` (three rows, partitioned by id),
/// `secrets` and `t`, and a sidecar with [`RULES`] in front of it.
fn setup(db: &str) -> Sidecar {
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.orders (id int primary key, total int)
           PARTITION BY RANGE (id) (PARTITION p0 VALUES LESS THAN (10), PARTITION p1 VALUES LESS THAN MAXVALUE);
         INSERT INTO {db}.orders VALUES (1, 10), (2, 20), (30, 30);
         CREATE TABLE {db}.secrets (id int primary key, v varchar(20));
         INSERT INTO {db}.secrets VALUES (1, '{SSN}');
         CREATE TABLE {db}.t (id int primary key, q varchar(50));
         INSERT INTO {db}.t VALUES (1, 'a');"
    ));
    Sidecar::start(&manifests(m, db, RULES), "shop/report-job")
}

/// `orders`' rows, as the server has them.
fn orders(db: &str) -> String {
    maria().admin(&format!(
        "SELECT group_concat(id, ':', total ORDER BY id) FROM {db}.orders"
    ))
}

#[test]
fn unparsed_text_meets_the_rules_its_words_name() {
    let db = "my_unparsed_words";
    let sidecar = setup(db);
    let before = orders(db);
    let denied = [
        (
            "DELETE LOW_PRIORITY QUICK IGNORE FROM orders WHERE id = 1",
            "protect-orders",
        ),
        ("DELETE orders.* FROM orders WHERE id = 1", "protect-orders"),
        ("UPDATE orders o, t SET o.total = 0", "protect-orders"),
        ("UPDATE (orders) SET total = 0", "protect-orders"),
        (
            "SET STATEMENT max_statement_time = 100 FOR DELETE FROM orders",
            "protect-orders",
        ),
        ("BEGIN NOT ATOMIC DELETE FROM orders; END", "protect-orders"),
        ("ALTER TABLE orders TRUNCATE PARTITION p0", "protect-orders"),
        // Dynamic SQL in an anonymous block: a text built while it runs.
        (
            "BEGIN NOT ATOMIC EXECUTE IMMEDIATE CONCAT('DEL', 'ETE FROM orders'); END",
            "protect-orders",
        ),
        ("HANDLER secrets OPEN", "hide-secrets"),
        ("HANDLER secrets READ FIRST", "hide-secrets"),
        ("SELECT v FROM secrets PROCEDURE ANALYSE()", "hide-secrets"),
    ];
    // Unparsed text that names no denied kind or table still runs.
    let runs = ["HANDLER t OPEN", "HANDLER t READ FIRST", "HANDLER t CLOSE"];
    let list: Vec<&str> = denied.iter().map(|(s, _)| *s).chain(runs).collect();
    let out = each(sidecar.port, db, &list);
    for (sql, rule) in denied {
        let a = answer(&out, sql);
        assert!(
            a.starts_with("error 1227") && a.contains(rule),
            "{sql}: {a}\n{out}"
        );
    }
    for sql in runs {
        assert_eq!(answer(&out, sql), "ran", "{sql}\n{out}");
    }
    assert!(!out.contains(SSN), "{out}");

    // The binary protocol's PREPARE is decided the same way.
    let prepared = connector(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor(prepared=True)
for sql in ["DELETE QUICK FROM orders WHERE id = %s", "SELECT v FROM secrets WHERE id = %s PROCEDURE ANALYSE()"]:
    try:
        cur.execute(sql, (1,))
        print("ran", cur.fetchall() if cur.with_rows else "")
    except mysql.connector.Error as e:
        print("error", e.errno, e.msg)
"#
        ),
    );
    assert_eq!(prepared.matches("error 1227").count(), 2, "{prepared}");
    assert!(!prepared.contains(SSN), "{prepared}");
    assert_eq!(orders(db), before, "{out}");

    let text = sidecar.audit_text();
    sluice_policy::audit::verify_lines(text.lines(), &[]).expect("the audit chain verifies");
    let denials = |rule: &str| {
        sidecar
            .audit_events()
            .into_iter()
            .filter(|e| e["type"] == "denial" && e["decision"]["rule"] == rule)
            .count()
    };
    assert!(denials("protect-orders") >= 9, "{text}");
    assert!(denials("hide-secrets") >= 4, "{text}");
}
