//! `readOnly` and `maxRowsAffected` on the MySQL plane (#24), with real
//! clients (PyMySQL, mysql-connector-python's binary protocol) against a
//! real MariaDB: a read-only session reads, the server refuses its writes,
//! and nothing that could turn it read-write runs; a write over the limit
//! is rolled back and refused, in autocommit and inside the client's
//! transaction, and a table a rollback cannot undo is refused up front.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

/// Runs each of `sqls` with PyMySQL (one session, in order, autocommit as
/// given) and prints `ran <sql> <rows>` or `error <code> <sql> <message>`.
fn run_each(port: u16, db: &str, autocommit: bool, sqls: &[&str]) -> String {
    let list: Vec<String> = sqls.iter().map(|s| format!("{s:?}")).collect();
    let autocommit = if autocommit { "True" } else { "False" };
    pymysql(
        port,
        &format!(
            r#"c = connect(database='{db}', autocommit={autocommit}, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
cur = c.cursor()
for sql in [{}]:
    try:
        if sql == 'RESET CONNECTION':
            c._execute_command(31, b'')
            c._read_ok_packet()
            print('ran', repr(sql), '[]')
            continue
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

fn status<'a>(out: &'a str, sql: &str) -> &'a str {
    let quoted = format!("{sql:?}").replace('"', "'");
    let line = out
        .lines()
        .find(|l| l.contains(&quoted) || l.contains(&format!("{sql:?}")))
        .unwrap_or_else(|| panic!("no line for {sql}:\n{out}"));
    let mut words = line.split_whitespace();
    match words.next() {
        Some("ran") => "ran",
        _ => {
            if words.next() == Some("1227") {
                "refused"
            } else {
                "error"
            }
        }
    }
}

fn count(db: &str, table: &str) -> String {
    maria()
        .admin(&format!("SELECT count(*) FROM {db}.{table}"))
        .trim()
        .to_string()
}

/// A read-only session reads; the server refuses its writes; whatever
/// could turn it read-write is refused before it runs (however it is
/// spelled), COM_RESET_CONNECTION keeps it read-only, and a stored function
/// that turns it off ends the session before anything else runs.
#[test]
fn read_only_sessions_stay_read_only() {
    let db = "my_ro";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.t (id int primary key, v int); INSERT INTO {db}.t VALUES (1, 1);
         DELIMITER //
         CREATE PROCEDURE {db}.rw() BEGIN SET SESSION TRANSACTION READ WRITE; INSERT INTO {db}.t VALUES (9, 9); END//
         CREATE FUNCTION {db}.rw_fn() RETURNS INT MODIFIES SQL DATA BEGIN SET SESSION tx_read_only = 0; RETURN 1; END//
         DELIMITER ;
         CREATE VIEW {db}.rv AS SELECT {db}.rw_fn() AS x;"
    ));
    let policy = format!("{POLICY}  readOnly: true\n");
    let sidecar = Sidecar::start(&manifests(m, db, &policy), "shop/report-job");
    let undo = [
        "SET SESSION TRANSACTION READ WRITE",
        "SET TRANSACTION READ WRITE",
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED, READ /* x */ WRITE",
        "START TRANSACTION READ WRITE",
        "SET SESSION tx_read_only = 0",
        "SET @@session.tx_read_only = OFF",
        "SET @@SESSION.`tx_read_only` = 0",
        "SET SESSION transaction_read_only = 0",
        "SET STATEMENT tx_read_only = 0 FOR INSERT INTO t VALUES (3, 3)",
        "CALL rw()",
    ];
    let mut all = vec!["SELECT v FROM t", "INSERT INTO t VALUES (2, 2)"];
    all.extend(undo);
    all.extend([
        "UPDATE t SET v = 5",
        "RESET CONNECTION",
        "DELETE FROM t",
        "SELECT 'still reading'",
    ]);
    let out = run_each(sidecar.port, db, true, &all);
    assert_eq!(status(&out, "SELECT v FROM t"), "ran", "{out}");
    // The server refuses the write (ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION).
    assert!(
        out.contains("error 1792 'INSERT INTO t VALUES (2, 2)'"),
        "{out}"
    );
    for sql in undo {
        assert_eq!(status(&out, sql), "refused", "{sql}:\n{out}");
    }
    assert!(out.contains("readOnly"), "{out}");
    assert!(out.contains("error 1792 'UPDATE t SET v = 5'"), "{out}");
    assert!(out.contains("error 1792 'DELETE FROM t'"), "{out}");
    assert_eq!(status(&out, "SELECT 'still reading'"), "ran", "{out}");
    assert_eq!(count(db, "t"), "1");
    // A stored function that turns read-only off: the server reports it,
    // and the session ends before the next statement runs.
    let out = run_each(
        sidecar.port,
        db,
        true,
        &["SELECT rw_fn()", "INSERT INTO t VALUES (4, 4)"],
    );
    assert_ne!(status(&out, "INSERT INTO t VALUES (4, 4)"), "ran", "{out}");
    assert_eq!(count(db, "t"), "1", "{out}");
    // The same through a view that calls it (the text names no function).
    let out = run_each(
        sidecar.port,
        db,
        true,
        &["SELECT x FROM rv", "INSERT INTO t VALUES (5, 5)"],
    );
    assert_ne!(status(&out, "INSERT INTO t VALUES (5, 5)"), "ran", "{out}");
    assert_eq!(count(db, "t"), "1", "{out}");
}

/// A write over maxRowsAffected is rolled back and refused, in autocommit
/// and inside the client's transaction (its earlier work kept), as a text
/// query and as a prepared statement; a write within the limit runs; a
/// table a rollback cannot undo is refused before anything runs.
#[test]
fn writes_over_max_rows_affected_are_rolled_back() {
    let db = "my_rows";
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.w (id int primary key, v int) ENGINE=InnoDB;
         INSERT INTO {db}.w VALUES (1, 0), (2, 0), (3, 0), (4, 0), (5, 0);
         CREATE TABLE {db}.m (id int, v int) ENGINE=MyISAM; INSERT INTO {db}.m VALUES (1, 0);"
    ));
    let policy = format!("{POLICY}  limits: {{maxRowsAffected: 2}}\n");
    let sidecar = Sidecar::start(&manifests(m, db, &policy), "shop/report-job");
    let sum = || {
        maria()
            .admin(&format!("SELECT sum(v) FROM {db}.w"))
            .trim()
            .to_string()
    };
    // Autocommit.
    let out = run_each(
        sidecar.port,
        db,
        true,
        &[
            "UPDATE w SET v = v + 1 WHERE id <= 2",
            "UPDATE w SET v = v + 1",
            "DELETE FROM w",
            "INSERT INTO w VALUES (10, 0), (11, 0), (12, 0)",
            "INSERT INTO w VALUES (10, 0)",
            "UPDATE m SET v = 1",
            "UPDATE w SET v = 7 WHERE id = 1; SELECT 1",
            "SELECT count(*) FROM w",
            // The guard keeps the client's LOCK TABLES locks (START
            // TRANSACTION would release them): `m` stays out of reach.
            "LOCK TABLES w WRITE",
            "UPDATE w SET v = v WHERE id = 1",
            "SELECT count(*) FROM m",
            "UNLOCK TABLES",
        ],
    );
    assert_eq!(
        status(&out, "UPDATE w SET v = v + 1 WHERE id <= 2"),
        "ran",
        "{out}"
    );
    assert_eq!(status(&out, "UPDATE w SET v = v + 1"), "refused", "{out}");
    assert!(
        out.contains("changed 5 rows") && out.contains("rolled back"),
        "{out}"
    );
    assert_eq!(status(&out, "DELETE FROM w"), "refused", "{out}");
    assert_eq!(
        status(&out, "INSERT INTO w VALUES (10, 0), (11, 0), (12, 0)"),
        "refused",
        "{out}"
    );
    assert_eq!(status(&out, "INSERT INTO w VALUES (10, 0)"), "ran", "{out}");
    assert_eq!(status(&out, "UPDATE m SET v = 1"), "refused", "{out}");
    assert!(out.contains("MYISAM"), "{out}");
    assert_eq!(
        status(&out, "UPDATE w SET v = 7 WHERE id = 1; SELECT 1"),
        "refused",
        "{out}"
    );
    assert!(out.contains(r#"'SELECT count(*) FROM w' [[6]]"#), "{out}");
    assert_eq!(
        status(&out, "UPDATE w SET v = v WHERE id = 1"),
        "ran",
        "{out}"
    );
    assert!(out.contains("error 1100 'SELECT count(*) FROM m'"), "{out}");
    assert_eq!(sum(), "2");
    assert_eq!(count(db, "m"), "1");
    assert_eq!(maria().admin(&format!("SELECT v FROM {db}.m")).trim(), "0");
    // Inside the client's transaction (PyMySQL turns autocommit off): the
    // write over the limit is undone to its savepoint, the rest is kept.
    let out = run_each(
        sidecar.port,
        db,
        false,
        &[
            "UPDATE w SET v = 100 WHERE id = 3",
            "UPDATE w SET v = 100",
            "COMMIT",
        ],
    );
    assert_eq!(
        status(&out, "UPDATE w SET v = 100 WHERE id = 3"),
        "ran",
        "{out}"
    );
    assert_eq!(status(&out, "UPDATE w SET v = 100"), "refused", "{out}");
    assert_eq!(status(&out, "COMMIT"), "ran", "{out}");
    assert_eq!(
        maria()
            .admin(&format!("SELECT id FROM {db}.w WHERE v = 100"))
            .trim(),
        "3"
    );
    // A prepared write (binary protocol) is counted alike.
    let out = connector(
        sidecar.port,
        &format!(
            "c = connect(database='{db}', autocommit=True)\n\
             cur = c.cursor(prepared=True)\n\
             for lo in (10, 1):\n    \
                 try:\n        \
                     cur.execute('UPDATE w SET v = v + 1000 WHERE id >= ?', (lo,))\n        \
                     print('ran', lo, cur.rowcount)\n    \
                 except mysql.connector.Error as e:\n        \
                     print('refused', lo, e.errno, e.msg)\n"
        ),
    );
    assert!(out.contains("ran 10 1"), "{out}");
    assert!(out.contains("refused 1 1227"), "{out}");
    assert_eq!(
        maria()
            .admin(&format!("SELECT count(*) FROM {db}.w WHERE v >= 1000"))
            .trim(),
        "1",
        "{out}"
    );
}
