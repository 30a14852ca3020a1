//! The MySQL plane's views lookup (#24), against a real MariaDB: every
//! statement that reads a relation while masking applies asks the server
//! which of its relations are views (their columns are masked whole), with
//! one `SHOW CREATE VIEW` per name for one or two names (any answer but
//! "not of type 'VIEW'" counts as a view), else one `TABLE_SCHEMA = … AND
//! TABLE_NAME = …` per name (the server opens only that relation;
//! `LOWER(TABLE_NAME) IN (…)` scanned every database), right before the
//! statement and never from a cache: tables replaced by
//! views, views replaced with more columns, names in another case or
//! schema, views over views, the database changed with `USE` or
//! COM_INIT_DB, a prepared statement run in the database it was prepared
//! in; and cursors, masked as their EXECUTE planned them (no lookup per
//! fetch, and a view dropped since still masks), closed on the server when
//! refused. What the sidecar asks is read back from the server's general
//! log: the server's work per statement, counted, not timed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use std::sync::OnceLock;

use common::Sidecar;
use mysql_support::*;

/// The server logs every command to `mysql.general_log` (once per binary).
fn general_log() {
    static ON: OnceLock<()> = OnceLock::new();
    ON.get_or_init(|| {
        maria().admin("SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = ON;");
    });
}

/// The commands the server logged for connection `thread`, in order:
/// (command type, argument).
fn logged(thread: &str) -> Vec<(String, String)> {
    maria()
        .admin(&format!(
            "SELECT command_type, CONVERT(argument USING utf8mb4) FROM mysql.general_log WHERE thread_id = {thread}"
        ))
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(c, a)| (c.to_string(), a.to_string()))
        .collect()
}

/// Whether `arg` is one of the sidecar's views lookups (these, or the
/// `information_schema.VIEWS` one before them).
fn is_lookup(arg: &str) -> bool {
    arg.starts_with("SHOW CREATE VIEW")
        || arg.contains("TABLE_TYPE = 'VIEW'")
        || arg.contains("information_schema.VIEWS")
}

/// The sidecar's views lookups among `log`.
fn lookups(log: &[(String, String)]) -> Vec<&str> {
    log.iter()
        .filter(|(_, a)| is_lookup(a))
        .map(|(_, a)| a.as_str())
        .collect()
}

/// A database `db` with `customers` (an SSN, masked by [`POLICY`]) and a
/// sidecar in front of it.
fn setup(db: &str) -> Sidecar {
    general_log();
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), born date, score int);
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}', '1980-01-02', 7);"
    ));
    Sidecar::start(&manifests(m, db, POLICY), "shop/report-job")
}

/// Python that opens `direct`, a connection straight to MariaDB as the
/// application user (another session, outside the sidecar), and defines
/// `other(*sqls)` running statements on it. The sidecar's sessions run
/// with autocommit, so no transaction of theirs holds a relation `other`
/// replaces.
fn direct(db: &str) -> String {
    format!(
        "import pymysql as _p\n\
         direct = _p.connect(host='127.0.0.1', port={}, user='{USER}', password='{PASSWORD}', database='{db}', autocommit=True)\n\
         direct.cursor().execute('SET SESSION lock_wait_timeout = 10')\n\
         def other(*sqls):\n    \
             for s in sqls:\n        \
                 direct.cursor().execute(s)\n",
        maria().port
    )
}

/// A statement that reads one or two relations asks `SHOW CREATE VIEW`
/// of each (the server's cheapest answer: ~45 µs of its CPU against ~150
/// for the information_schema lookup), one that reads more asks one
/// information_schema lookup, one that reads none asks nothing; each
/// names its schema and relation exactly (never `IN`, never `LOWER(…)`),
/// so the server scans no database for it.
#[test]
fn each_statement_asks_cheaply_naming_each_relation() {
    let db = "my_views_cost";
    let sidecar = setup(db);
    maria().admin(&format!(
        "CREATE TABLE {db}.t (id int, q varchar(20)); INSERT INTO {db}.t VALUES (1, 'plain');
         CREATE VIEW {db}.v AS SELECT id, ssn AS q FROM {db}.customers;"
    ));
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor()
cur.execute("SELECT CONNECTION_ID()")
print("thread", cur.fetchone()[0])
for sql in ["SELECT 1", "SELECT q FROM t", "SELECT q FROM v", "SELECT t.q, v.q FROM t JOIN v ON t.id = v.id", "SELECT t.q FROM t JOIN v ON t.id = v.id JOIN customers c ON c.id = t.id", "SELECT 2"]:
    cur.execute(sql)
    print(sql, json.dumps(cur.fetchall()))
"#
        ),
    );
    assert!(!out.contains(SSN), "{out}");
    assert!(out.contains(r#"SELECT q FROM t [["plain"]]"#), "{out}");
    let thread = out
        .lines()
        .find_map(|l| l.strip_prefix("thread "))
        .unwrap()
        .trim()
        .to_string();
    let log = logged(&thread);
    // Each statement and the lookup before it, in the order they ran.
    let mut asked = Vec::new();
    let mut pending = 0;
    for (command, arg) in &log {
        if is_lookup(arg) {
            pending += 1;
        } else if command == "Query" && arg.starts_with("SELECT") && !arg.contains("@@") {
            asked.push((arg.clone(), pending));
            pending = 0;
        }
    }
    let count = |sql: &str| asked.iter().find(|(a, _)| a == sql).map(|(_, n)| *n);
    assert_eq!(count("SELECT 1"), Some(0), "{log:#?}");
    assert_eq!(count("SELECT q FROM t"), Some(1), "{log:#?}");
    assert_eq!(count("SELECT q FROM v"), Some(1), "{log:#?}");
    assert_eq!(
        count("SELECT t.q, v.q FROM t JOIN v ON t.id = v.id"),
        Some(2),
        "{log:#?}"
    );
    assert_eq!(
        count("SELECT t.q FROM t JOIN v ON t.id = v.id JOIN customers c ON c.id = t.id"),
        Some(1),
        "{log:#?}"
    );
    assert_eq!(count("SELECT 2"), Some(0), "{log:#?}");
    let all = lookups(&log);
    let shows: Vec<&str> = all
        .iter()
        .copied()
        .filter(|l| l.starts_with("SHOW CREATE VIEW"))
        .collect();
    let expected = [
        format!("SHOW CREATE VIEW `{db}`.`t`"),
        format!("SHOW CREATE VIEW `{db}`.`v`"),
        format!("SHOW CREATE VIEW `{db}`.`t`"),
        format!("SHOW CREATE VIEW `{db}`.`v`"),
    ];
    assert_eq!(shows, expected, "{log:#?}");
    assert_eq!(all.len(), 5, "{log:#?}");
    for lookup in all.into_iter().filter(|l| !l.starts_with("SHOW")) {
        assert!(
            lookup.contains("TABLE_SCHEMA = ")
                && lookup.contains("TABLE_NAME = ")
                && !lookup.contains(" IN (")
                && !lookup.contains("LOWER(TABLE_NAME) ="),
            "{lookup}"
        );
        // The server's own account of the work: no database scanned.
        let plan = maria().admin(&format!("EXPLAIN {lookup}"));
        assert!(
            !plan.contains("Scanned all databases") && !plan.contains("Scanned 1 database"),
            "{lookup}\n{plan}"
        );
    }
}

/// However a view came to be named by a statement, its columns are masked;
/// and a base table that only shares a view's name in another case or
/// schema is read as it is.
#[test]
fn views_are_found_however_they_came_to_be() {
    let db = "my_views_sound";
    let other = "My_Views_Other";
    let sidecar = setup(db);
    let m = maria();
    m.database(other);
    m.admin(&format!(
        "CREATE TABLE {db}.x (id int, q varchar(20)); INSERT INTO {db}.x VALUES (1, 'plain');
         CREATE VIEW {db}.cv AS SELECT id FROM {db}.customers;
         CREATE VIEW {db}.Vy AS SELECT id, ssn AS q FROM {db}.customers;
         CREATE TABLE {db}.vy (id int, q varchar(20)); INSERT INTO {db}.vy VALUES (1, 'plain');
         CREATE TABLE {db}.v2 (id int, q varchar(20)); INSERT INTO {db}.v2 VALUES (1, 'plain');
         CREATE VIEW {db}.vv1 AS SELECT id, ssn AS q FROM {db}.customers;
         CREATE VIEW {db}.vv2 AS SELECT q AS r FROM {db}.vv1;
         CREATE VIEW {other}.v2 AS SELECT id, ssn AS q FROM {db}.customers;
         CREATE TABLE {other}.w (id int, q varchar(20)); INSERT INTO {other}.w VALUES (1, 'plain');
         CREATE VIEW {db}.w AS SELECT id, ssn AS q FROM {db}.customers;"
    ));
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"{direct}
c = connect(database='{db}', autocommit=True)
cur = c.cursor()
def q(label, sql):
    try:
        cur.execute(sql)
        print(label, json.dumps(cur.fetchall(), default=str))
    except pymysql.MySQLError as e:
        print(label, "error", e.args[0], e.args[1])
q("table", "SELECT q FROM x")
other("DROP TABLE x", "CREATE VIEW x AS SELECT id, ssn AS q FROM customers")
q("table replaced by a view", "SELECT q FROM x")
q("before replace", "SELECT * FROM cv")
other("CREATE OR REPLACE VIEW cv AS SELECT id, ssn FROM customers")
q("view replaced", "SELECT * FROM cv")
other("CREATE VIEW late AS SELECT ssn FROM customers")
q("view created since", "SELECT * FROM late")
q("view in its case", "SELECT q FROM Vy")
q("table in another case", "SELECT q FROM vy")
q("both cases", "SELECT a.q, b.q FROM vy a JOIN Vy b ON a.id = b.id")
q("view in another schema", "SELECT q FROM {other}.v2")
q("same name, a table here", "SELECT q FROM v2")
q("view over a view", "SELECT * FROM vv2")
q("view here", "SELECT q FROM w")
cur.execute("USE {other}")
q("after USE: the table there", "SELECT q FROM w")
c.select_db("{db}")
q("after COM_INIT_DB: the view here", "SELECT q FROM w")
c.select_db("{other}")
q("after COM_INIT_DB: the table there", "SELECT q FROM w")
"#,
            direct = direct(db)
        ),
    );
    assert!(
        !out.contains("45-67"),
        "a masked value reached the client through a view:\n{out}"
    );
    for case in [
        "table replaced by a view",
        "view replaced",
        "view created since",
        "view in its case",
        "both cases",
        "view in another schema",
        "view over a view",
        "view here",
        "after COM_INIT_DB: the view here",
    ] {
        assert!(out.contains(&format!("{case} [[")), "{case}: {out}");
    }
    // Tables read as they are: only views are masked whole.
    for case in [
        "table",
        "table in another case",
        "same name, a table here",
        "after USE: the table there",
        "after COM_INIT_DB: the table there",
    ] {
        assert!(
            out.contains(&format!("{case} [[\"plain\"]]")),
            "{case}: {out}"
        );
    }
}

/// `SHOW CREATE VIEW` says "not of type 'VIEW'" for a base table; any
/// other answer counts the relation as a view: here a view the
/// application may read (SELECT) but not show (no SHOW VIEW privilege),
/// so the server answers the lookup with an access error, and a name
/// that does not exist. Its columns are masked whole; a table granted
/// the same way is read as it is. A write is looked up in
/// information_schema: a table the application may only INSERT into
/// (SHOW CREATE VIEW would answer with an access error) is written.
#[test]
fn a_view_the_server_will_not_show_is_masked_whole() {
    let db = "my_views_priv";
    let other = "my_views_priv_other";
    let sidecar = setup(db);
    // Not `database()`: the application gets only what is granted here.
    maria().admin(&format!(
        "CREATE DATABASE {other};
         CREATE TABLE {other}.t (id int, q varchar(20)); INSERT INTO {other}.t VALUES (1, 'plain');
         CREATE VIEW {other}.hidden AS SELECT id, ssn AS q FROM {db}.customers;
         GRANT SELECT ON {other}.hidden TO '{USER}'@'%'; GRANT SELECT ON {other}.hidden TO '{USER}'@'127.0.0.1';
         GRANT SELECT ON {other}.t TO '{USER}'@'%'; GRANT SELECT ON {other}.t TO '{USER}'@'127.0.0.1';
         CREATE TABLE {other}.log (id int);
         GRANT INSERT ON {other}.log TO '{USER}'@'%'; GRANT INSERT ON {other}.log TO '{USER}'@'127.0.0.1';"
    ));
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor()
def q(label, sql):
    try:
        cur.execute(sql)
        print(label, json.dumps(cur.fetchall(), default=str))
    except pymysql.MySQLError as e:
        print(label, "error", e.args[0], e.args[1])
q("not shown", "SELECT q FROM {other}.hidden")
q("not shown, joined", "SELECT h.q, t.q FROM {other}.hidden h JOIN {other}.t t ON h.id = t.id")
q("granted table", "SELECT q FROM {other}.t")
q("no such relation", "SELECT q FROM nosuch")
try:
    cur.execute("INSERT INTO {other}.log VALUES (1)")
    print("insert-only table ran", cur.rowcount)
except pymysql.MySQLError as e:
    print("insert-only table error", e.args[0], e.args[1])
"#
        ),
    );
    assert!(
        !out.contains(SSN),
        "a masked value reached the client through a view the server would not show:\n{out}"
    );
    assert!(out.contains("not shown [[\""), "{out}");
    assert!(out.contains("not shown, joined [[\""), "{out}");
    assert!(out.contains("granted table [[\"plain\"]]"), "{out}");
    assert!(out.contains("no such relation error 1146"), "{out}");
    // A write is looked up in information_schema, which shows a table
    // the application may only write to (SHOW CREATE VIEW needs SELECT).
    assert!(out.contains("insert-only table ran 1"), "{out}");
}

/// A prepared statement runs in the database current at its PREPARE: its
/// views are asked for there, whatever the session's database is at
/// EXECUTE.
#[test]
fn a_prepared_statement_is_looked_up_in_its_own_database() {
    let db = "my_views_prep";
    let other = "my_views_prep_other";
    let sidecar = setup(db);
    let m = maria();
    m.database(other);
    m.admin(&format!(
        "CREATE TABLE {db}.pw (id int, q varchar(20)); INSERT INTO {db}.pw VALUES (1, 'plain');
         CREATE TABLE {other}.pw (id int, q varchar(20)); INSERT INTO {other}.pw VALUES (1, 'there');"
    ));
    let out = connector(
        sidecar.port,
        &format!(
            r#"{direct}
c = connect(database='{db}', autocommit=True)
sid = c.cmd_stmt_prepare(b'SELECT q FROM pw')['statement_id']
def run():
    n, cols, eof = c.cmd_stmt_execute(sid)
    c.unread_result = True
    rows = c.get_rows(binary=True, columns=cols)[0]
    return [[x.decode() if isinstance(x, (bytes, bytearray)) else x for x in r] for r in rows]
print('before', run())
c.cmd_init_db('{other}')
other("DROP TABLE pw", "CREATE VIEW pw AS SELECT id, ssn AS q FROM customers")
print('replaced', run())
"#,
            direct = direct(db)
        ),
    );
    assert!(!out.contains("45-67"), "{out}");
    assert!(out.contains("before [['plain']]"), "{out}");
    assert!(
        out.contains("replaced [[") && !out.contains("there"),
        "{out}"
    );
}

/// A cursor's rows are masked as its EXECUTE planned them (a view's
/// columns whole): no lookup per
/// fetch, and a view its EXECUTE read still masks the rows after another
/// session replaced it with a table of the same name (the rows are the
/// server's from the EXECUTE). A fetch refused past `maxRows` closes the
/// cursor on the server too (COM_STMT_RESET), not only for the client.
#[test]
fn cursors_keep_their_executes_plan_and_are_closed_when_refused() {
    let db = "my_views_cursor";
    general_log();
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), born date, score int);
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}', '1980-01-02', 7), (2, 'Bob', '234-56-7890', NULL, -3),
           (3, 'Carol', '345-67-8901', '1990-03-04', 5), (4, 'Dan', '456-78-9012', '2000-05-06', 9);
         CREATE VIEW {db}.cx AS SELECT id, ssn AS q FROM {db}.customers;"
    ));
    let policy = format!("{POLICY}  limits: {{maxRows: 3, onMaxRows: refuse}}\n");
    let sidecar = Sidecar::start(&manifests(m, db, &policy), "shop/report-job");
    let out = connector(
        sidecar.port,
        &format!(
            r#"{direct}
c = connect(database='{db}', autocommit=True)
cur = c.cursor()
cur.execute('SELECT CONNECTION_ID()')
print('thread', cur.fetchone()[0])
cur.close()
def fetch(s, cols, k):
    try:
        c.cmd_stmt_fetch(s, k)
        rows, eof = c.get_rows(binary=True, columns=cols)
        return [[x.decode() if isinstance(x, (bytes, bytearray)) else x for x in r] for r in rows]
    except mysql.connector.Error as e:
        c.unread_result = False
        return 'refused', e.errno, e.msg
sid = c.cmd_stmt_prepare(b'SELECT id, q FROM cx ORDER BY id')['statement_id']
n, cols, eof = c.cmd_stmt_execute(sid, flags=1)
print('fetch 1', fetch(sid, cols, 1))
other("DROP VIEW cx", "CREATE TABLE cx (id int, q varchar(20))")
print('fetch 2', fetch(sid, cols, 1))
print('fetch 3', fetch(sid, cols, 1))
print('past maxRows', fetch(sid, cols, 1))
print('after', fetch(sid, cols, 1))
"#,
            direct = direct(db)
        ),
    );
    for ssn in [SSN, "234-56-7890", "345-67-8901", "456-78-9012"] {
        assert!(!out.contains(ssn), "{ssn} reached the client: {out}");
    }
    assert!(out.contains("fetch 1 [[None, '[redacted]']]"), "{out}");
    assert!(out.contains("fetch 2 [[None, '[redacted]']]"), "{out}");
    assert!(out.contains("fetch 3 [[None, '[redacted]']]"), "{out}");
    assert!(out.contains("past maxRows ('refused', 1227, "), "{out}");
    assert!(out.contains("after ('refused', 1243, "), "{out}");
    let thread = out
        .lines()
        .find_map(|l| l.strip_prefix("thread "))
        .unwrap()
        .trim()
        .to_string();
    let log = logged(&thread);
    // One lookup, the EXECUTE's; none for its four fetches (the general
    // log does not show fetches themselves).
    assert_eq!(lookups(&log).len(), 1, "{log:#?}");
    // Refused past maxRows: the sidecar closed the server's cursor (the
    // statement's only reset: the client sent none).
    let execute = log.iter().position(|(c, _)| c == "Execute").unwrap();
    assert_eq!(
        log[execute..]
            .iter()
            .filter(|(c, _)| c == "Reset stmt")
            .count(),
        1,
        "the server's cursor was left open: {log:#?}"
    );
}

/// `maxRowsAffected`'s check of the tables a write names asks with the
/// views lookup's shape (one `TABLE_SCHEMA = … AND TABLE_NAME = …` per
/// relation, no database scanned), once per guarded write: a table of the
/// same name in another database (MyISAM there) no longer refuses the
/// write here, a name that is not a plain word is looked up like any
/// other, and a write through a view is still refused before it runs
/// (as a view: it has no engine).
#[test]
fn guarded_writes_look_up_their_tables_with_the_same_lookup() {
    let db = "my_views_guard";
    let other = "my_views_guard_other";
    general_log();
    let m = maria();
    m.database(db);
    m.database(other);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), born date, score int);
         CREATE TABLE {db}.w (id int primary key, v int) ENGINE=InnoDB; INSERT INTO {db}.w VALUES (1, 0), (2, 0), (3, 0);
         CREATE TABLE {db}.`w-2` (id int primary key, v int) ENGINE=InnoDB; INSERT INTO {db}.`w-2` VALUES (1, 0);
         CREATE VIEW {db}.wv AS SELECT id, v FROM {db}.w;
         CREATE TABLE {other}.w (id int, v int) ENGINE=MyISAM;"
    ));
    // No masking: a write through a view is the guard's to refuse (with
    // masking, writing what a view reads is refused before it).
    let policy = "  defaultAction: allow\n  onParseError: deny\n  limits: {maxRowsAffected: 2}\n";
    let sidecar = Sidecar::start(&manifests(m, db, policy), "shop/report-job");
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor()
cur.execute("SELECT CONNECTION_ID()")
print("thread", cur.fetchone()[0])
for label, sql in [("here", "UPDATE w SET v = 1 WHERE id = 1"), ("odd name", "UPDATE `w-2` SET v = 1 WHERE id = 1"), ("view", "UPDATE wv SET v = 2 WHERE id = 2"), ("over", "UPDATE w SET v = 3")]:
    try:
        cur.execute(sql)
        print(label, "ran", cur.rowcount)
    except pymysql.MySQLError as e:
        print(label, "error", e.args[0], e.args[1])
"#
        ),
    );
    assert!(out.contains("here ran 1"), "{out}");
    assert!(out.contains("odd name ran 1"), "{out}");
    assert!(
        out.contains("view error 1227") && out.contains("a view"),
        "{out}"
    );
    assert!(
        out.contains("over error 1227") && out.contains("rolled back"),
        "{out}"
    );
    assert_eq!(
        maria()
            .admin(&format!("SELECT group_concat(v ORDER BY id) FROM {db}.w"))
            .trim(),
        "1,0,0"
    );
    let thread = out
        .lines()
        .find_map(|l| l.strip_prefix("thread "))
        .unwrap()
        .trim()
        .to_string();
    let log = logged(&thread);
    let guards: Vec<&str> = log
        .iter()
        .map(|(_, a)| a.as_str())
        .filter(|a| a.contains("information_schema.TABLES") && a.contains("ENGINE"))
        .collect();
    // One per guarded write: the four UPDATEs.
    assert_eq!(guards.len(), 4, "{log:#?}");
    for lookup in guards {
        assert!(
            lookup.contains("TABLE_SCHEMA = ")
                && lookup.contains("TABLE_NAME = ")
                && !lookup.contains(" IN (")
                && !lookup.contains("LOWER(TABLE_NAME) ="),
            "{lookup}"
        );
        let plan = maria().admin(&format!("EXPLAIN {lookup}"));
        assert!(
            !plan.contains("Scanned all databases") && !plan.contains("Scanned 1 database"),
            "{lookup}\n{plan}"
        );
    }
}

/// Under masking and `maxRowsAffected`, a guarded write asks the server
/// once: the guard's lookup (every relation found, each an InnoDB table)
/// refuses a view as it refuses any relation a rollback cannot undo, so
/// the write has no views lookup of its own.
#[test]
fn a_guarded_write_under_masking_asks_one_lookup() {
    let db = "my_views_guard_mask";
    general_log();
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), born date, score int);
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}', '1980-01-02', 7);
         CREATE TABLE {db}.w (id int primary key, v int) ENGINE=InnoDB; INSERT INTO {db}.w VALUES (1, 0), (2, 0);
         CREATE VIEW {db}.wv AS SELECT id, score AS v FROM {db}.customers;"
    ));
    let policy = format!("{POLICY}  limits: {{maxRowsAffected: 2}}\n");
    let sidecar = Sidecar::start(&manifests(m, db, &policy), "shop/report-job");
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor()
cur.execute("SELECT CONNECTION_ID()")
print("thread", cur.fetchone()[0])
for label, sql in [("table", "UPDATE w SET v = 1 WHERE id = 1"), ("from a view", "INSERT INTO w SELECT id + 10, v FROM wv")]:
    try:
        cur.execute(sql)
        print(label, "ran", cur.rowcount)
    except pymysql.MySQLError as e:
        print(label, "error", e.args[0], e.args[1])
"#
        ),
    );
    assert!(out.contains("table ran 1"), "{out}");
    assert!(out.contains("from a view error 1227"), "{out}");
    let thread = out
        .lines()
        .find_map(|l| l.strip_prefix("thread "))
        .unwrap()
        .trim()
        .to_string();
    let log = logged(&thread);
    assert_eq!(lookups(&log), Vec::<&str>::new(), "{log:#?}");
    let guards = log.iter().filter(|(_, a)| a.contains("ENGINE")).count();
    assert_eq!(guards, 2, "{log:#?}");
    assert_eq!(
        maria()
            .admin(&format!("SELECT COUNT(*) FROM {db}.w"))
            .trim(),
        "2"
    );
}

/// A rule that denies statements on `tables` follows the statement's names
/// through views with one `information_schema.TABLES` lookup (which of
/// them are views), asking `information_schema.VIEWS` only for the views
/// found; and under masking that one answer is the views lookup's too, so
/// a statement naming only tables is asked about once, whether it reads or
/// writes (it was asked VIEWS, then `SHOW CREATE VIEW` or TABLES again).
/// Views are still masked whole and followed to the tables they read.
/// (The last statement is refused: its lookups are the log's last.)
#[test]
fn table_rules_and_masking_share_one_lookup() {
    let db = "my_views_rules_mask";
    general_log();
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), born date, score int);
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}', '1980-01-02', 7);
         CREATE TABLE {db}.t (id int, q varchar(20)); INSERT INTO {db}.t VALUES (1, 'plain');
         CREATE VIEW {db}.v AS SELECT id, ssn AS q FROM {db}.customers;"
    ));
    let policy = POLICY.replacen(
        "  rules:\n",
        "  rules:\n    - name: protect-customers\n      match: {statements: [delete, update, insert], tables: [customers]}\n      action: deny\n",
        1,
    );
    let sidecar = Sidecar::start(&manifests(m, db, &policy), "shop/report-job");
    let statements = [
        "SELECT q FROM t",
        "SELECT q FROM v",
        "SELECT t.q, v.q FROM t JOIN v ON t.id = v.id",
        "UPDATE t SET q = 'plain' WHERE id = 1",
        "SELECT 3",
        "DELETE FROM v WHERE id = 1",
    ];
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', autocommit=True)
cur = c.cursor()
cur.execute("SELECT CONNECTION_ID()")
print("thread", cur.fetchone()[0])
for sql in {statements:?}:
    try:
        cur.execute(sql)
        print(sql, json.dumps(cur.fetchall()))
    except pymysql.MySQLError as e:
        print(sql, "error", e.args[0], e.args[1])
"#
        ),
    );
    assert!(!out.contains(SSN), "{out}");
    assert!(out.contains(r#"SELECT q FROM t [["plain"]]"#), "{out}");
    assert!(out.contains("SELECT q FROM v [["), "{out}");
    assert!(
        out.contains("UPDATE t SET q = 'plain' WHERE id = 1 []"),
        "{out}"
    );
    assert!(
        out.contains("DELETE FROM v WHERE id = 1 error 1227") && out.contains("protect-customers"),
        "{out}"
    );
    assert_eq!(
        maria()
            .admin(&format!("SELECT COUNT(*) FROM {db}.customers"))
            .trim(),
        "1"
    );
    let thread = out
        .lines()
        .find_map(|l| l.strip_prefix("thread "))
        .unwrap()
        .trim()
        .to_string();
    let log = logged(&thread);
    // The lookups asked before each statement (or before its refusal).
    let mut asked: Vec<(String, Vec<String>)> = Vec::new();
    let mut pending = Vec::new();
    for (command, arg) in &log {
        if is_lookup(arg) {
            pending.push(arg.clone());
        } else if command == "Query" && statements.contains(&arg.as_str()) {
            asked.push((arg.clone(), std::mem::take(&mut pending)));
        }
    }
    let kinds = |sql: &str| -> Vec<&'static str> {
        let found = asked.iter().find(|(a, _)| a == sql);
        found
            .map(|(_, l)| l.iter().map(|a| lookup_kind(a)).collect())
            .unwrap_or_default()
    };
    assert_eq!(kinds("SELECT q FROM t"), ["tables"], "{log:#?}");
    // A view: its definition, then its tables (not views) asked about.
    let through_v = ["tables", "views", "tables"];
    assert_eq!(kinds("SELECT q FROM v"), through_v, "{log:#?}");
    assert_eq!(
        kinds("SELECT t.q, v.q FROM t JOIN v ON t.id = v.id"),
        through_v,
        "{log:#?}"
    );
    assert_eq!(
        kinds("UPDATE t SET q = 'plain' WHERE id = 1"),
        ["tables"],
        "{log:#?}"
    );
    assert_eq!(kinds("SELECT 3"), Vec::<&str>::new(), "{log:#?}");
    // The refused DELETE never reached the server; its lookups were the
    // last ones asked.
    assert!(
        !asked.iter().any(|(a, _)| a.starts_with("DELETE")),
        "{log:#?}"
    );
    let refused: Vec<&str> = pending.iter().map(|a| lookup_kind(a)).collect();
    assert_eq!(refused, through_v, "{log:#?}");
}

/// Which lookup `arg` is: `tables`, `views` or `show`.
fn lookup_kind(arg: &str) -> &'static str {
    if arg.starts_with("SHOW CREATE VIEW") {
        "show"
    } else if arg.contains("information_schema.VIEWS") {
        "views"
    } else {
        "tables"
    }
}
