//! The MySQL plane's decision cache (#22, #24): a session's texts are
//! decided once per shape (literals folded), and never where the decision
//! could differ. In one session of the real `mariadb` client, the same
//! shape with another literal is decided on its own when a rule matches
//! the text (`textPattern`) or a literal carries SQL the server runs; the
//! same text is refused once `sql_mode` makes the server read it
//! otherwise; after `USE other` the same shape's relations are looked up
//! where the server resolves them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

/// Statements denied by a literal's value, `customers.ssn` redacted.
const POLICY: &str = r#"  defaultAction: allow
  rules:
    - name: no-vip
      match: {textPattern: "'vip-[0-9]+'"}
      action: deny
    - name: no-drops
      match: {statements: [drop, truncate]}
      action: deny
  masking:
    - columns: ["customers.ssn"]
      strategy: redact
"#;

fn setup(db: &str, policy: &str) -> Sidecar {
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20));
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}'), (2, 'vip-1', '{SSN}');
         CREATE TABLE {db}.t (id int);"
    ));
    Sidecar::start(&manifests(m, db, policy), "shop/report-job")
}

/// Runs `lines` (one statement each) in one session of the `mariadb` CLI
/// (`--force`: it goes on after errors); returns stdout, and the error
/// (`ERROR <code> …`) of each line, `None` where it ran.
fn session(port: u16, db: &str, lines: &[&str]) -> (String, Vec<Option<String>>) {
    let script = format!("USE {db};\n{}\n", lines.join("\n"));
    let (_, out, err) = mariadb_cli(port, &script);
    let errors = (0..lines.len())
        .map(|i| {
            // Line 1 is the USE.
            let at = format!(" at line {}:", i + 2);
            err.lines().find(|l| l.contains(&at)).map(str::to_string)
        })
        .collect();
    (out, errors)
}

/// The same shape, one literal apart: a `textPattern` rule matches the
/// second, so the first's decision must not be reused.
#[test]
fn a_text_pattern_sees_every_literal() {
    let db = "my_cache_pattern";
    let sidecar = setup(db, POLICY);
    let (out, errors) = session(
        sidecar.port,
        db,
        &[
            "SELECT id FROM customers WHERE name = 'Alice';",
            "SELECT id FROM customers WHERE name = 'vip-1';",
            "SELECT id FROM customers WHERE name = 'Alice';",
        ],
    );
    assert_eq!(errors[0], None, "{out}\n{errors:?}");
    let denied = errors[1].as_deref().unwrap_or_default();
    assert!(
        denied.contains("ERROR 1227") && denied.contains("no-vip"),
        "the second text ran on the first's decision: {out}\n{errors:?}"
    );
    assert_eq!(errors[2], None, "{out}\n{errors:?}");
}

/// A literal that carries SQL the server would run (an SQL-text
/// function's argument) is part of the decision: the same call with a
/// DROP in its literal is denied, after the same call with a SELECT was
/// allowed (the server then answers that the function does not exist).
#[test]
fn a_literal_a_decision_reads_is_never_folded() {
    let db = "my_cache_literal";
    let policy = "  defaultAction: allow\n  rules:\n    - name: no-drops\n      match: {statements: [drop, truncate]}\n      action: deny\n";
    let sidecar = setup(db, policy);
    let (out, errors) = session(
        sidecar.port,
        db,
        &[
            "SELECT query_to_xml('SELECT 1', true, true, '');",
            "SELECT query_to_xml('DROP TABLE t', true, true, '');",
        ],
    );
    let first = errors[0].as_deref().unwrap_or_default();
    assert!(
        !first.contains("ERROR 1227"),
        "the SELECT was refused by Sluice: {out}\n{errors:?}"
    );
    let second = errors[1].as_deref().unwrap_or_default();
    assert!(
        second.contains("ERROR 1227") && second.contains("no-drops"),
        "the DROP in the literal ran on the SELECT's decision: {out}\n{errors:?}"
    );
}

/// The same text before and after `SET sql_mode = 'ANSI_QUOTES'`: a
/// string first, a name (the SSN column) after, which Sluice refuses; and
/// the same shape after `USE other`, where the name is a view of the SSN
/// (masked whole), not the plain table of the first database.
#[test]
fn a_changed_reading_is_never_served_a_cached_decision() {
    let db = "my_cache_reading";
    let other = "my_cache_other";
    let sidecar = setup(db, POLICY);
    let m = maria();
    m.database(other);
    m.admin(&format!(
        "CREATE TABLE {db}.people (id int, code varchar(20)); INSERT INTO {db}.people VALUES (1, 'plain'), (2, 'plain');
         CREATE VIEW {other}.people AS SELECT id, ssn AS code FROM {db}.customers;"
    ));
    let (out, errors) = session(
        sidecar.port,
        db,
        &[
            "SELECT \"ssn\" FROM customers WHERE id = 1;",
            "SET SESSION sql_mode = 'ANSI_QUOTES';",
            "SELECT \"ssn\" FROM customers WHERE id = 1;",
            "SET SESSION sql_mode = DEFAULT;",
            "SELECT code FROM people WHERE id = 1;",
            &format!("USE {other};"),
            "SELECT code FROM people WHERE id = 2;",
        ],
    );
    assert!(
        !out.contains(SSN),
        "the SSN reached the client:\n{out}\n{errors:?}"
    );
    assert_eq!(errors[0], None, "{out}\n{errors:?}");
    assert!(out.contains("ssn"), "{out}");
    let refused = errors[2].as_deref().unwrap_or_default();
    assert!(
        refused.contains("ERROR 1227") && refused.contains("ANSI_QUOTES"),
        "{out}\n{errors:?}"
    );
    assert_eq!(errors[4], None, "{out}\n{errors:?}");
    assert!(out.contains("plain"), "{out}");
    assert_eq!(errors[6], None, "{out}\n{errors:?}");
    assert!(
        out.contains("[redacted]"),
        "the view's column was not masked:\n{out}"
    );
}
