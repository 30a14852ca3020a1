//! SQL-level prepared statements on the MySQL plane (#24): `PREPARE s
//! FROM '…'` is decided by the text it prepares (deny rules at PREPARE,
//! its masking plan at EXECUTE), `EXECUTE s` runs as that text, `PREPARE
//! … FROM @v` (a text the sidecar cannot read) is refused, `DEALLOCATE`
//! and a CALL (a procedure may prepare under any name) forget the names,
//! and MariaDB's `EXECUTE IMMEDIATE '…'` is decided as its text. With
//! PyMySQL (text protocol) against a real MariaDB, under a policy that
//! lets unparsed text through (`onParseError: allow`): what Sluice's parser
//! cannot read must not decide what these run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

/// DROP denied, `customers.ssn` redacted, unparsed text allowed.
const LENIENT: &str = r#"  defaultAction: allow
  onParseError: allow
  rules:
    - name: no-drops
      match: {statements: [drop, truncate]}
      action: deny
  masking:
    - columns: ["customers.ssn"]
      strategy: redact
"#;

/// Runs each of `sqls` with PyMySQL in one session and prints `<label> ran
/// <rows>` or `<label> error <code> <message>`.
fn run(port: u16, db: &str, sqls: &[(&str, &str)]) -> String {
    let list: Vec<String> = sqls
        .iter()
        .map(|(l, s)| format!("({l:?}, {s:?})"))
        .collect();
    pymysql(
        port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor()
for label, sql in [{}]:
    try:
        cur.execute(sql)
        print(label, 'ran', json.dumps(cur.fetchall(), default=str))
    except pymysql.MySQLError as e:
        print(label, 'error', e.args[0], e.args[1])
"#,
            list.join(", ")
        ),
    )
}

fn line<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{label} ")))
        .unwrap_or_else(|| panic!("no line for {label}:\n{out}"))
}

fn setup(db: &str) -> Sidecar {
    setup_with(db, LENIENT)
}

/// [`setup`] with `policy`.
fn setup_with(db: &str, policy: &str) -> Sidecar {
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20));
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}');
         CREATE TABLE {db}.t (id int); INSERT INTO {db}.t VALUES (1);
         CREATE PROCEDURE {db}.p() PREPARE s FROM 'DROP TABLE t';"
    ));
    Sidecar::start(&manifests(m, db, policy), "shop/report-job")
}

/// A denied statement prepared is refused at PREPARE (and its name stays
/// unknown: EXECUTE refused); a masked column read through EXECUTE is
/// masked; a text from a user variable is refused at PREPARE.
#[test]
fn sql_prepare_is_decided_by_its_text() {
    let db = "my_sqlprep";
    let sidecar = setup(db);
    let out = run(
        sidecar.port,
        db,
        &[
            ("prepare-drop", "PREPARE d FROM 'DROP TABLE t'"),
            ("execute-drop", "EXECUTE d"),
            (
                "prepare-read",
                "PREPARE r FROM 'SELECT name, ssn FROM customers WHERE id = ?'",
            ),
            ("set-id", "SET @id = 1"),
            ("execute-read", "EXECUTE r USING @id"),
            // A refused PREPARE leaves the name's statement as it was.
            ("reprepare-drop", "PREPARE r FROM 'DROP TABLE t'"),
            ("execute-read-again", "EXECUTE R USING @id"),
            ("set-q", "SET @q = 'SELECT ssn FROM customers'"),
            ("prepare-var", "PREPARE v FROM @q"),
            ("execute-var", "EXECUTE v"),
            ("immediate-drop", "EXECUTE IMMEDIATE 'DROP TABLE t'"),
            (
                "immediate-read",
                "EXECUTE IMMEDIATE 'SELECT ssn FROM customers'",
            ),
            ("deallocate", "DEALLOCATE PREPARE r"),
            ("execute-deallocated", "EXECUTE r USING @id"),
            ("mixed", "SELECT 1; PREPARE m FROM 'SELECT 1'"),
        ],
    );
    assert!(!out.contains(SSN), "the SSN reached the client:\n{out}");
    assert!(
        line(&out, "prepare-drop").contains("error 1227 statement denied by Sluice"),
        "{out}"
    );
    assert!(line(&out, "execute-drop").contains("error 1227"), "{out}");
    assert!(line(&out, "prepare-read").contains("ran"), "{out}");
    assert!(
        line(&out, "execute-read").contains(r#"ran [["Alice", "[redacted]"]]"#),
        "{out}"
    );
    assert!(line(&out, "reprepare-drop").contains("error 1227"), "{out}");
    assert!(
        line(&out, "execute-read-again").contains(r#"ran [["Alice", "[redacted]"]]"#),
        "{out}"
    );
    assert!(
        line(&out, "prepare-var").contains("error 1227") && out.contains("user variable"),
        "{out}"
    );
    assert!(line(&out, "execute-var").contains("error 1227"), "{out}");
    assert!(
        line(&out, "immediate-drop").contains("error 1227 statement denied by Sluice"),
        "{out}"
    );
    assert!(
        line(&out, "immediate-read").contains(r#"ran [["[redacted]"]]"#),
        "{out}"
    );
    assert!(line(&out, "deallocate").contains("ran"), "{out}");
    assert!(
        line(&out, "execute-deallocated").contains("error 1227"),
        "{out}"
    );
    assert!(line(&out, "mixed").contains("error 1227"), "{out}");
    assert_eq!(
        maria()
            .admin(&format!("SELECT count(*) FROM {db}.t"))
            .trim(),
        "1"
    );
}

/// A procedure (or a compound statement, which Sluice's parser does not
/// read) can prepare a statement under a name the session prepared
/// through Sluice: after a CALL, or a text Sluice could not parse, every
/// name is forgotten, so EXECUTE of it is refused rather than decided as
/// the text Sluice saw. (Without column masking: under it, a text Sluice
/// cannot parse is refused whatever onParseError says.)
#[test]
fn a_call_forgets_the_prepared_names() {
    let db = "my_sqlprep_call";
    let unmasked = LENIENT.split("  masking:").next().unwrap();
    let sidecar = setup_with(db, unmasked);
    let out = run(
        sidecar.port,
        db,
        &[
            ("prepare", "PREPARE s FROM 'SELECT 1'"),
            ("execute", "EXECUTE s"),
            ("call", "CALL p()"),
            ("execute-after-call", "EXECUTE s"),
            ("prepare-again", "PREPARE s FROM 'SELECT 2'"),
            (
                "compound",
                "BEGIN NOT ATOMIC PREPARE s FROM 'DROP TABLE t'; END",
            ),
            ("execute-after-compound", "EXECUTE s"),
        ],
    );
    assert!(line(&out, "execute").contains("ran [[1]]"), "{out}");
    assert!(line(&out, "call").contains("ran"), "{out}");
    assert!(
        line(&out, "execute-after-call").contains("error 1227"),
        "{out}"
    );
    assert!(line(&out, "prepare-again").contains("ran"), "{out}");
    assert!(line(&out, "compound").contains("ran"), "{out}");
    assert!(
        line(&out, "execute-after-compound").contains("error 1227"),
        "{out}"
    );
    assert_eq!(
        maria()
            .admin(&format!("SELECT count(*) FROM {db}.t"))
            .trim(),
        "1"
    );
}

/// Under `maxRowsAffected` an EXECUTE is counted as the write it runs:
/// within the limit it runs, over it it is rolled back and refused.
#[test]
fn sql_execute_is_counted_as_its_write() {
    let db = "my_sqlprep_rows";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20));
         CREATE TABLE {db}.t (id int, v int) ENGINE=InnoDB; INSERT INTO {db}.t VALUES (1, 0), (2, 0), (3, 0);"
    ));
    let policy = format!("{LENIENT}  limits: {{maxRowsAffected: 1}}\n");
    let sidecar = Sidecar::start(&manifests(m, db, &policy), "shop/report-job");
    let out = run(
        sidecar.port,
        db,
        &[
            (
                "prepare-one",
                "PREPARE one FROM 'UPDATE t SET v = v + 1 WHERE id = ?'",
            ),
            ("prepare-all", "PREPARE all_ FROM 'UPDATE t SET v = v + 10'"),
            ("set", "SET @id = 2"),
            ("execute-one", "EXECUTE one USING @id"),
            ("execute-all", "EXECUTE all_"),
        ],
    );
    assert!(line(&out, "execute-one").contains("ran"), "{out}");
    assert!(
        line(&out, "execute-all").contains("error 1227") && out.contains("rolled back"),
        "{out}"
    );
    assert_eq!(
        maria()
            .admin(&format!("SELECT group_concat(v ORDER BY id) FROM {db}.t"))
            .trim(),
        "0,1,0"
    );
}
