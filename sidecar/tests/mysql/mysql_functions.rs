//! Stored functions on the MySQL plane (#24's known masking hole): a
//! function's body reads what it likes, so a value one computes is masked
//! with the strongest rule, its error texts are scrubbed, a write of its
//! value is refused as laundering, and the session's settings are read
//! again after it ran (it can change them with the server's tracking off).
//! Real clients (PyMySQL, the `mariadb` CLI, mysql-connector-python's
//! binary protocol) against a real MariaDB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

/// `customers` and `t` (one row each), `t2` to write into, and functions
/// and routines that read `customers.ssn` out of the statement's sight.
fn setup(db: &str, policy: &str) -> Sidecar {
    let m = maria_alone();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), born date, score int);
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}', '1980-01-02', 7);
         CREATE TABLE {db}.t (id int); INSERT INTO {db}.t VALUES (1);
         CREATE TABLE {db}.t2 (s varchar(50));
         CREATE FUNCTION {db}.leak(i INT) RETURNS VARCHAR(20) READS SQL DATA RETURN (SELECT ssn FROM {db}.customers WHERE id = i);
         CREATE FUNCTION {db}.count(i INT) RETURNS VARCHAR(20) READS SQL DATA RETURN (SELECT ssn FROM {db}.customers WHERE id = i);
         CREATE FUNCTION {db}.upper(i INT) RETURNS VARCHAR(20) READS SQL DATA RETURN (SELECT ssn FROM {db}.customers WHERE id = i);
         CREATE VIEW {db}.fv AS SELECT id, {db}.leak(id) AS x FROM {db}.t;
         CREATE PROCEDURE {db}.p() SELECT {db}.leak(1) AS x, concat(ssn, '') AS y FROM {db}.customers;"
    ));
    // Compound bodies: the CLI splits at `;` unless told otherwise.
    m.admin(&format!(
        "DELIMITER //
         CREATE FUNCTION {db}.boom() RETURNS INT READS SQL DATA BEGIN DECLARE v VARCHAR(64); SELECT ssn INTO v FROM {db}.customers LIMIT 1; SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = v; RETURN 1; END//
         CREATE FUNCTION {db}.untrack() RETURNS INT BEGIN SET SESSION session_track_system_variables = ''; SET SESSION character_set_results = 'utf16'; RETURN 1; END//"
    ));
    Sidecar::start(&manifests(m, db, policy), "shop/report-job")
}

/// Runs each of `sqls` with PyMySQL (one session, in order) and prints
/// `ran <sql> <rows>` or `error <code> <sql> <message>` per statement.
fn run_each(port: u16, db: &str, sqls: &[&str]) -> String {
    let list: Vec<String> = sqls.iter().map(|s| format!("{s:?}")).collect();
    pymysql(
        port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor()
for sql in [{}]:
    try:
        cur.execute(sql)
        rows = cur.fetchall()
        while cur.nextset(): pass
        print('ran', repr(sql), json.dumps(rows, default=str))
    except pymysql.MySQLError as e:
        print('error', e.args[0], repr(sql), e.args[1])
"#,
            list.join(", ")
        ),
    )
}

fn line<'a>(out: &'a str, sql: &str) -> &'a str {
    let quoted = format!("{sql:?}").replace('"', "'");
    out.lines()
        .find(|l| l.contains(&quoted) || l.contains(sql))
        .unwrap_or_else(|| panic!("no line for {sql}:\n{out}"))
}

/// A value a stored function read from a masked column comes back masked,
/// however the call is written (qualified, in backticks, a built-in's name
/// qualified or spaced, nested in expressions, derived tables, CTEs,
/// UNION, a view, a procedure's result, a user variable); columns that do
/// not come from one stay clear.
#[test]
fn stored_functions_do_not_unmask() {
    let db = "my_fn_mask";
    let sidecar = setup(db, POLICY);
    let corpus = [
        "SELECT leak(1)",
        "SELECT name, leak(id) AS x FROM customers",
        "SELECT upper(leak(1))",
        "SELECT concat('', leak(1)) AS c",
        "SELECT x FROM (SELECT leak(1) AS x) d",
        "WITH c AS (SELECT leak(1) AS x) SELECT x FROM c",
        "SELECT my_fn_mask.leak(1)",
        "SELECT `leak`(1)",
        "SELECT my_fn_mask.count(1)",
        "SELECT count (1)",
        "SELECT count/**/(1)",
        "SELECT my_fn_mask.upper(1)",
        "SELECT `upper`(1)",
        "SELECT x FROM fv",
        "CALL p()",
        "SELECT 1 UNION SELECT leak(1)",
        "SELECT json_object('a', leak(1)) AS j",
        "SELECT group_concat(leak(id)) AS g FROM customers",
        "SELECT leak(1) INTO @v",
        "SELECT @v",
    ];
    let out = run_each(sidecar.port, db, &corpus);
    assert!(
        !out.contains("45-67"),
        "a value a stored function read reached the client:\n{out}"
    );
    // Each of them ran (masked), none was refused.
    for sql in corpus {
        assert!(line(&out, sql).starts_with("ran"), "{sql}:\n{out}");
    }
    // Only what a stored function computed is masked.
    assert!(
        line(&out, "SELECT name, leak(id) AS x FROM customers").contains(r#"[["Alice", "#),
        "{out}"
    );
    assert!(line(&out, "SELECT leak(1)").contains("[redacted]"), "{out}");
    // The binary protocol (prepared statements) and the CLI alike.
    let out = connector(
        sidecar.port,
        &format!(
            "c = connect(database='{db}')\n\
             cur = c.cursor(prepared=True)\n\
             cur.execute('SELECT name, leak(?) AS x FROM customers', (1,))\n\
             print('prepared', [x.decode() if isinstance(x, (bytes, bytearray)) else x for x in cur.fetchone()])\n"
        ),
    );
    assert!(out.contains("prepared ['Alice', '[redacted]']"), "{out}");
    let (_, out, err) = mariadb_cli(
        sidecar.port,
        &format!("USE {db};\nSELECT leak(1) AS x;\nSELECT count (1) AS y;\n"),
    );
    assert!(
        !out.contains("45-67") && !err.contains("45-67"),
        "{out}{err}"
    );
    assert!(out.contains("[redacted]"), "{out}{err}");
}

/// A stored function's error (SIGNAL with what it read) is scrubbed,
/// wherever the call is (select list, WHERE, a subquery, SET); a write of a value
/// one computed is refused as laundering and nothing is written.
#[test]
fn stored_function_errors_and_writes_do_not_leak() {
    let db = "my_fn_err";
    let sidecar = setup(db, POLICY);
    let errors = [
        "SELECT boom()",
        "SELECT id FROM t WHERE boom() = 1",
        "SELECT (SELECT boom()) AS b",
        "SET @x = boom()",
    ];
    let writes = [
        "INSERT INTO t2 (s) SELECT leak(1)",
        "INSERT INTO t2 (s) VALUES (leak(1))",
        "UPDATE t2 SET s = leak(1)",
        "INSERT INTO t2 (s) SELECT count (1)",
    ];
    let all: Vec<&str> = errors.iter().chain(writes.iter()).copied().collect();
    let out = run_each(sidecar.port, db, &all);
    assert!(
        !out.contains("45-67"),
        "a value a stored function read reached the client:\n{out}"
    );
    for sql in errors {
        let l = line(&out, sql);
        assert!(
            l.starts_with("error 1644") && l.contains("scrubbed by Sluice"),
            "{sql}:\n{out}"
        );
    }
    for sql in writes {
        assert!(line(&out, sql).starts_with("error 1227"), "{sql}:\n{out}");
    }
    assert_eq!(
        maria_alone()
            .admin(&format!("SELECT count(*) FROM {db}.t2"))
            .trim(),
        "0"
    );
}

/// A stored function can turn the server's session tracking off and change
/// a setting behind it (results sent as UTF-16, which no detector reads):
/// the sidecar reads the settings again after a statement that may call
/// one (itself or in a view's definition), and refuses what follows until
/// the setting is back.
#[test]
fn a_stored_function_cannot_change_settings_unseen() {
    let db = "my_fn_track";
    let policy = "  defaultAction: allow
  onParseError: deny
  masking:
    - detectors: [ssn]
      strategy: redact
";
    let sidecar = setup(db, policy);
    maria_alone().admin(&format!(
        "CREATE TABLE {db}.notes (txt varchar(100)); INSERT INTO {db}.notes VALUES ('call {SSN} back');
         CREATE VIEW {db}.uv AS SELECT {db}.untrack() AS x;"
    ));
    let out = run_each(
        sidecar.port,
        db,
        &[
            "SELECT txt FROM notes",
            "SELECT untrack() INTO @u",
            "SELECT txt AS again FROM notes",
            "SET NAMES utf8mb4",
            "SELECT txt AS back FROM notes",
            // The same through a view whose definition calls it.
            "SELECT x INTO @w FROM uv",
            "SELECT txt AS again2 FROM notes",
            "SET NAMES utf8mb4 COLLATE utf8mb4_general_ci",
            "SELECT txt AS back2 FROM notes",
        ],
    );
    let plain = out.replace('\0', "").replace("\\u0000", "");
    assert!(
        !plain.contains("45-67"),
        "a detector's value reached the client:\n{out}"
    );
    assert!(
        line(&out, "SELECT txt FROM notes").contains("[redacted]"),
        "{out}"
    );
    assert!(
        line(&out, "SELECT txt AS again FROM notes").starts_with("error 1227"),
        "{out}"
    );
    assert!(out.contains("utf16"), "{out}");
    assert!(
        line(&out, "SELECT txt AS back FROM notes").contains("[redacted]"),
        "{out}"
    );
    assert!(
        line(&out, "SELECT txt AS again2 FROM notes").starts_with("error 1227"),
        "{out}"
    );
    assert!(
        line(&out, "SELECT txt AS back2 FROM notes").contains("[redacted]"),
        "{out}"
    );
}
