//! Rules that deny statements by the functions they call hold through
//! views on the MySQL plane (#15) when the views are followed (a rule on
//! tables applies too, see sidecar/README.md): `SELECT * FROM v`, where `v`
//! is `SELECT LOAD_FILE(…)` or `SELECT NEXTVAL(s)`, is refused naming the
//! view, in the text protocol (the `mariadb` client) and the binary one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

const RULES: &str = r#"  defaultAction: allow
  rules:
    - name: protect-customers
      match: {statements: [delete], tables: [customers]}
      action: deny
    - name: no-server-files
      match: {functions: ["load_file", "nextval"]}
      action: deny
"#;

/// The sequence's next value as the server has it (NOCACHE: every
/// NEXTVAL moves it).
fn next_value(db: &str) -> String {
    maria().admin(&format!("SELECT next_not_cached_value FROM {db}.s"))
}

#[test]
fn function_rules_hold_through_views() {
    let db = "myfuncrules_views";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key);
         CREATE SEQUENCE {db}.s NOCACHE;
         CREATE VIEW {db}.lf AS SELECT LOAD_FILE('/etc/hostname') AS x;
         CREATE VIEW {db}.nv AS SELECT NEXTVAL({db}.s) AS n;
         CREATE VIEW {db}.nvv AS SELECT n FROM {db}.nv;
         CREATE VIEW {db}.plain AS SELECT id FROM {db}.customers;"
    ));
    let sidecar = Sidecar::start(&manifests(m, db, RULES), "shop/report-job");
    let before = next_value(db);
    for (sql, through) in [
        ("SELECT * FROM lf", "lf calls load_file"),
        ("SELECT n FROM nv", "nv calls nextval"),
        ("SELECT n FROM nvv", "which calls nextval"),
    ] {
        let (_, out, err) = mariadb_cli(sidecar.port, &format!("USE {db};\n{sql};\n"));
        assert!(
            err.contains("no-server-files") && err.contains(through),
            "{sql}: not refused by the rule ({through}): {out} {err}"
        );
        assert_eq!(next_value(db), before, "{sql}: NEXTVAL ran");
    }
    let out = connector(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor(prepared=True)
try:
    cur.execute("SELECT n FROM nv WHERE n > %s", (0,))
    print("ran", cur.fetchall())
except mysql.connector.Error as e:
    print("error", e.errno, e.msg)
"#
        ),
    );
    assert!(
        out.contains("no-server-files") && out.contains("nv calls nextval"),
        "{out}"
    );
    assert_eq!(next_value(db), before, "NEXTVAL ran");
    // A view that calls nothing denied is read as before.
    let (ok, out, err) = mariadb_cli(
        sidecar.port,
        &format!("USE {db};\nSELECT COUNT(*) FROM plain;\n"),
    );
    assert!(ok, "{out} {err}");
    // The measure sees a NEXTVAL that runs.
    m.admin(&format!("SELECT NEXTVAL({db}.s)"));
    assert_ne!(next_value(db), before, "NEXTVAL not seen");
}
