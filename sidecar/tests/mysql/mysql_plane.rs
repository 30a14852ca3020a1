//! The MySQL plane (#24, first slice) with real clients against a real
//! MariaDB: the `mariadb` CLI and PyMySQL (text protocol) through
//! `sluice-sidecar standalone`. Statements are decided per statement (a
//! string with a refused statement is refused whole, and nothing of it
//! runs), refusals are ERR 42000 naming policy and rule and the session
//! goes on, masked columns come back masked with values valid for their
//! type, and the settings and lexical forms under which MySQL reads a text
//! otherwise than Sluice are tracked or refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

/// A database with `customers` (one row holding an SSN) and `t`, and a
/// sidecar in front of it.
fn setup(db: &str) -> Sidecar {
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), born date, score int);
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}', '1980-01-02', 7);
         CREATE TABLE {db}.t (id int);"
    ));
    Sidecar::start(&manifests(m, db, POLICY), "shop/report-job")
}

fn t_exists(db: &str) -> bool {
    maria()
        .admin(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{db}' AND table_name = 't'"
        ))
        .trim()
        == "1"
}

#[test]
fn mariadb_cli_is_decided_masked_and_audited() {
    let db = "my_cli";
    let sidecar = setup(db);
    let (_, out, err) = mariadb_cli(
        sidecar.port,
        "SELECT version();\n\
         SELECT id, name, ssn, born, score FROM customers;\n\
         SELECT concat(ssn, '') AS c, upper(name) AS n FROM customers;\n\
         DROP TABLE t;\n\
         SELECT 'still here';\n\
         SELECT CAST(ssn AS SIGNED) AS n FROM customers;\n\
         SHOW WARNINGS;\n",
    );
    // The real server's version is shown to the client.
    assert!(out.contains("MariaDB"), "{out}");
    assert!(!out.contains(SSN), "the SSN reached the client:\n{out}");
    // A masked varchar reads as redacted, a masked date as NULL (valid for
    // its type); unmasked columns are untouched.
    assert!(out.contains("1\tAlice\t[redacted]\tNULL\t7"), "{out}");
    assert!(out.contains("[redacted]\tALICE"), "{out}");
    // Denied with ERR 1227 / 42000 naming policy and rule; the session goes on.
    assert!(err.contains("ERROR 1227 (42000)"), "{err}");
    assert!(
        err.contains("\"reporting\"") && err.contains("no-schema-changes"),
        "{err}"
    );
    assert!(out.contains("still here"), "{out}");
    // A warning echoes the value it could not cast: its message is masked.
    assert!(out.contains("Warning\t1292\t[redacted]"), "{out}");
    assert!(t_exists(db), "the denied DROP TABLE ran");
    // On record: the session, each statement (write-ahead), the denial,
    // the results with what was masked; no SSN anywhere.
    let events = sidecar.audit_events();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for kind in [
        "sessionStart",
        "statement",
        "denial",
        "result",
        "sessionEnd",
    ] {
        assert!(kinds.contains(&kind), "no {kind} event: {kinds:?}");
    }
    let denial = events.iter().find(|e| e["type"] == "denial").unwrap();
    assert_eq!(denial["decision"]["rule"], "no-schema-changes", "{denial}");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "result" && e["outcome"]["masked"].as_u64() == Some(2)),
        "{events:?}"
    );
    assert!(!sidecar.audit_text().contains(SSN));
}

#[test]
fn pymysql_multi_statement_strings_are_refused_whole() {
    let db = "my_multi";
    let sidecar = setup(db);
    let out = pymysql(
        sidecar.port,
        &format!(
            "c = connect(database='{db}', client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)\n\
             cur = c.cursor()\n\
             cur.execute('SELECT ssn, name, score FROM customers')\n\
             print(json.dumps(cur.fetchall()))\n\
             for sql in ['INSERT INTO t VALUES (1); DROP TABLE t', 'SELECT 1; DROP TABLE t; SELECT 2']:\n    \
                 try:\n        \
                     cur.execute(sql)\n        \
                     print('ran', sql)\n    \
                 except pymysql.MySQLError as e:\n        \
                     print('refused', e.args[0], e.args[1])\n\
             cur.execute('SELECT count(*) FROM t')\n\
             print('rows in t', cur.fetchone()[0])\n"
        ),
    );
    assert!(out.contains(r#"[["[redacted]", "Alice", 7]]"#), "{out}");
    assert!(!out.contains(SSN), "{out}");
    assert_eq!(out.matches("refused 1227").count(), 2, "{out}");
    assert!(
        out.contains("statement 2 of 2 is denied") && out.contains("none of it ran"),
        "{out}"
    );
    // The INSERT before the refused DROP did not run either.
    assert!(out.contains("rows in t 0"), "{out}");
    assert!(t_exists(db));
}

/// Texts MySQL splits or reads otherwise than Sluice's parser: each is
/// refused and nothing of it runs (`t` survives every one).
#[test]
fn lexical_differentials_are_refused() {
    let db = "my_lexical";
    let sidecar = setup(db);
    let corpus = [
        // `--` without a space: two minus signs to MySQL, a comment to the parser.
        "SELECT 1 --1; DROP TABLE t",
        "SELECT 1 --'\n; DROP TABLE t",
        // Executable comments run on the server.
        "SELECT 1 /*! ; DROP TABLE t */",
        "SELECT 1 /*!50000 ; DROP TABLE t */",
        "SELECT 1 /*M!100000 ; DROP TABLE t */",
        "SELECT 1 /*!DROP TABLE t*/",
    ];
    let list: Vec<String> = corpus.iter().map(|s| format!("{s:?}")).collect();
    let out = pymysql(
        sidecar.port,
        &format!(
            "c = connect(database='{db}', client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)\n\
             cur = c.cursor()\n\
             for sql in [{}]:\n    \
                 try:\n        \
                     cur.execute(sql)\n        \
                     while cur.nextset(): pass\n        \
                     print('ran', repr(sql))\n    \
                 except pymysql.MySQLError as e:\n        \
                     print('refused', e.args[0], repr(sql))\n",
            list.join(", ")
        ),
    );
    assert_eq!(out.matches("refused 1227").count(), corpus.len(), "{out}");
    assert!(t_exists(db), "a smuggled DROP TABLE ran:\n{out}");
}

/// `sql_mode` and the character sets, however they are changed (SET, a
/// subquery, a function), are followed through the server's session
/// tracking: a text is never decided on another reading than the server's.
/// (Set from a user variable, which this policy's column masking refuses.)
#[test]
fn settings_that_change_parsing_are_tracked() {
    let db = "my_settings";
    let sidecar = setup(db);
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}', client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
cur = c.cursor()
def run(sql):
    try:
        cur.execute(sql)
        rows = cur.fetchall()
        while cur.nextset(): pass
        print('ran', repr(sql), json.dumps(rows, default=str))
    except pymysql.MySQLError as e:
        print('refused', e.args[0], repr(sql), e.args[1])
run("SET @m = 'NO_BACKSLASH_ESCAPES'")
run("SET SESSION sql_mode = (SELECT @m)")
run("SET SESSION sql_mode = (SELECT 'NO_BACKSLASH_ESCAPES')")
run("SELECT 'a\\' ; DROP TABLE t; -- '")
run("SELECT 'no backslash here'")
run("SET sql_mode = ''")
run("SET sql_mode = concat('ANSI', '_QUOTES')")
run('SELECT concat("ssn", \'\') FROM customers')
run("SELECT concat(ssn, '') FROM customers")
run("SET sql_mode = DEFAULT")
run("SET NAMES latin1")
run("SELECT 1")
run("SET NAMES utf8mb4")
run("SELECT 'back'")
"#
        ),
    );
    let lines: Vec<&str> = out.lines().collect();
    let status = |needle: &str| -> &str {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .map(|l| l.split_whitespace().next().unwrap())
            .unwrap_or_else(|| panic!("no line for {needle}:\n{out}"))
    };
    // Under column masking a user variable may hold masked data, which a
    // server variable would let out (see mysql_side_channels).
    assert_eq!(status("(SELECT @m)"), "refused", "{out}");
    assert_eq!(status("(SELECT 'NO_BACKSLASH_ESCAPES')"), "ran", "{out}");
    assert_eq!(status("DROP TABLE t"), "refused", "{out}");
    assert!(out.contains("NO_BACKSLASH_ESCAPES"), "{out}");
    assert_eq!(status("no backslash here"), "ran", "{out}");
    assert_eq!(status(r#"concat("ssn""#), "refused", "{out}");
    assert!(out.contains("ANSI_QUOTES"), "{out}");
    assert_eq!(status("SELECT 1'"), "refused", "{out}");
    assert!(out.contains("latin1"), "{out}");
    assert_eq!(status("'back'"), "ran", "{out}");
    assert!(!out.contains(SSN), "{out}");
    assert!(t_exists(db));
}

/// Commands the plane does not serve yet answer an ERR packet saying so;
/// the session goes on. LOAD DATA LOCAL is never offered.
#[test]
fn unserved_commands_are_refused_and_local_infile_never_offered() {
    let db = "my_unserved";
    let sidecar = setup(db);
    let out = pymysql(
        sidecar.port,
        &format!(
            "c = connect(database='{db}', local_infile=True)\n\
             cur = c.cursor()\n\
             print('local files offered', bool(c.server_capabilities & pymysql.constants.CLIENT.LOCAL_FILES))\n\
             print('compression offered', bool(c.server_capabilities & pymysql.constants.CLIENT.COMPRESS))\n\
             try:\n    \
                 c.select_db('mysql')\n    \
                 print('init_db ran')\n\
             except pymysql.MySQLError as e:\n    \
                 print('init_db', e.args[0])\n\
             try:\n    \
                 cur.execute(\"LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE t\")\n    \
                 print('load ran')\n\
             except pymysql.MySQLError as e:\n    \
                 print('load refused', e.args[0])\n\
             c.ping()\n\
             cur.execute('SELECT 42')\n\
             print('after', cur.fetchone()[0])\n"
        ),
    );
    assert!(out.contains("local files offered False"), "{out}");
    assert!(out.contains("compression offered False"), "{out}");
    assert!(out.contains("load refused"), "{out}");
    assert!(out.contains("after 42"), "{out}");
    assert_eq!(
        maria()
            .admin(&format!("SELECT count(*) FROM {db}.t"))
            .trim(),
        "0"
    );
}

/// Error texts that echo values (error-based exfiltration: a GROUP BY key
/// collision, an XPath error on a user variable) are scrubbed while the
/// statement reads masked data; the error code and SQLSTATE stay.
#[test]
fn error_texts_do_not_carry_masked_values() {
    let db = "my_errors";
    let sidecar = setup(db);
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}')
cur = c.cursor()
for sql in [
    "SELECT count(*), concat((SELECT ssn FROM customers LIMIT 1), floor(rand(0)*2)) x FROM information_schema.columns GROUP BY x",
    "SET @s = (SELECT ssn FROM customers LIMIT 1)",
    "SELECT ExtractValue('<a/>', concat('~', @s))",
    "SELECT ExtractValue('<a/>', concat('~', (SELECT ssn FROM customers LIMIT 1)))",
]:
    try:
        cur.execute(sql)
        print('ran', json.dumps(cur.fetchall(), default=str))
    except pymysql.MySQLError as e:
        print('error', e.args[0], e.args[1])
"#
        ),
    );
    assert!(
        !out.contains("45-67"),
        "a masked value reached the client:\n{out}"
    );
    assert!(
        out.contains("error 1062") && out.contains("scrubbed by Sluice"),
        "{out}"
    );
}

/// An identity no policy binds to the Connection is refused before any
/// statement, with the reason, and the refusal is on record.
#[test]
fn an_unbound_identity_is_refused() {
    let db = "my_unbound";
    let m = maria();
    m.database(db);
    let sidecar = Sidecar::start(&manifests(m, db, POLICY), "shop/someone-else");
    let (ok, out, err) = mariadb_cli(sidecar.port, "SELECT 'ran';\n");
    assert!(!ok && !out.contains("ran"), "{out}{err}");
    assert!(
        err.contains("ERROR 1045 (28000)") && err.contains("Sluice refused the session"),
        "{err}"
    );
    let events = sidecar.audit_events();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "denial" && e["identity"]["serviceAccount"] == "someone-else"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e["type"] == "sessionStart"),
        "{events:?}"
    );
}

/// COM_RESET_CONNECTION resets the server's session (its tracking
/// included): the sidecar sets tracking up again, so a later change of
/// `sql_mode` is still followed.
#[test]
fn reset_connection_keeps_settings_followed() {
    let db = "my_reset";
    let sidecar = setup(db);
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}')
cur = c.cursor()
c._execute_command(31, b'')
c._read_ok_packet()
print('reset ok')
def run(sql):
    try:
        cur.execute(sql)
        print('ran', repr(sql), json.dumps(cur.fetchall(), default=str))
    except pymysql.MySQLError as e:
        print('refused', e.args[0], repr(sql), e.args[1])
run("SET sql_mode = (SELECT 'ANSI_QUOTES')")
run('SELECT concat("ssn", \'\') FROM customers')
"#
        ),
    );
    assert!(out.contains("reset ok"), "{out}");
    assert!(!out.contains(SSN), "{out}");
    assert!(out.contains("refused 1227 'SELECT concat(\"ssn\""), "{out}");
}

/// A procedure that turns the server's session tracking off (the server
/// does not report that) does not blind the sidecar: after a statement
/// that may change settings it reads them again and sets tracking up again.
#[test]
fn a_procedure_cannot_turn_tracking_off() {
    let db = "my_proc";
    let sidecar = setup(db);
    maria().admin(&format!(
        "CREATE PROCEDURE {db}.p() SET SESSION session_track_system_variables = ''"
    ));
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}')
cur = c.cursor()
def run(sql):
    try:
        cur.execute(sql)
        print('ran', repr(sql), json.dumps(cur.fetchall(), default=str))
    except pymysql.MySQLError as e:
        print('refused', e.args[0], repr(sql), e.args[1])
run("CALL p()")
run("SET sql_mode = (SELECT 'ANSI_QUOTES')")
run('SELECT concat("ssn", \'\') FROM customers')
"#
        ),
    );
    assert!(out.contains("ran 'CALL p()'"), "{out}");
    assert!(!out.contains(SSN), "{out}");
    assert!(out.contains("refused 1227 'SELECT concat(\"ssn\""), "{out}");
}

/// The upstream session over TLS per `tls.mode` (rustls), against a
/// MariaDB that takes TCP clients over TLS only: `verify-full` with the
/// test CA (host `localhost`) and `require` (not verified) connect, the
/// server reporting the session's TLS version; `verify-full` without the
/// CA (the system roots do not trust it) does not, and `disable` is
/// refused by the server.
#[test]
fn upstream_tls_per_mode() {
    let (m, ca) = mysql_support::maria_tls();
    let db = "my_tls";
    m.database(db);
    let ca_doc = ca_secret(ca);
    let start = |host: &str, tls: &str| {
        let upstream = format!(
            "host: {host}, port: {}, database: {db}, tls: {{{tls}}}",
            m.port
        );
        let manifests = common::connection_manifests(
            ("shop-db", "mysql", upstream.as_str()),
            ("db-creds", USER),
            &ca_doc,
        ) + &common::named_policy("reporting", "shop-db", POLICY);
        Sidecar::start(&manifests, "shop/report-job")
    };
    let tls_version = "SHOW SESSION STATUS LIKE 'Ssl_version';\n";
    for tls in [
        "mode: verify-full, caSecretRef: {name: db-ca}",
        "mode: require",
    ] {
        let sidecar = start("localhost", tls);
        let (ok, out, err) = mariadb_cli(sidecar.port, tls_version);
        assert!(ok && out.contains("TLSv1."), "{tls}: {out}{err}");
    }
    for tls in ["mode: verify-full", "mode: disable"] {
        let sidecar = start("localhost", tls);
        let (ok, out, err) = mariadb_cli(sidecar.port, tls_version);
        assert!(!ok && !out.contains("TLSv1."), "{tls}: {out}{err}");
    }
}

/// The server reports a view's columns with the view as their origin: a
/// view over a masked column does not unmask it (every column of a view,
/// and every column without an origin in a statement reading one, is
/// masked until view definitions are planned).
#[test]
fn views_do_not_unmask() {
    let db = "my_views";
    let sidecar = setup(db);
    maria().admin(&format!(
        "CREATE VIEW {db}.v AS SELECT id, ssn AS q FROM {db}.customers"
    ));
    let out = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}')
cur = c.cursor()
for sql in ["SELECT q FROM v", "SELECT * FROM v", "SELECT concat(q, '') FROM v", "SELECT x.q FROM (SELECT q FROM {db}.v) x", "SELECT name FROM customers"]:
    cur.execute(sql)
    print(sql, json.dumps(cur.fetchall(), default=str))
"#
        ),
    );
    assert!(
        !out.contains("45-67"),
        "a masked value reached the client through a view:\n{out}"
    );
    assert!(
        out.contains(r#"SELECT name FROM customers [["Alice"]]"#),
        "{out}"
    );
}

/// A statement a `requireApproval` rule catches is refused by a standalone
/// sidecar (no operator to ask), and its denial is on record with the
/// refusal the client got, not the rule's own reason.
#[test]
fn approval_refusals_are_recorded_as_the_client_got_them() {
    let db = "my_approval_standalone";
    let m = maria();
    m.database(db);
    m.admin(&format!("CREATE TABLE {db}.t (id int);"));
    let policy = POLICY.replacen(
        "  rules:\n",
        "  rules:\n    - name: deletes-need-a-dba\n      match: {statements: [delete]}\n      action: requireApproval\n      approval: {approvers: {groups: [dba]}, mode: hold}\n",
        1,
    );
    let sidecar = Sidecar::start(&manifests(m, db, &policy), "shop/report-job");
    let (_, _, err) = mariadb_cli(
        sidecar.port,
        &format!("USE {db};\nDELETE FROM t WHERE id = 1;\n"),
    );
    assert!(err.contains("ERROR 1227 (42000)"), "{err}");
    assert!(err.contains("standalone sidecar does not have"), "{err}");
    let events = sidecar.audit_events();
    let denial = events
        .iter()
        .find(|e| e["type"] == "denial" && e["command"]["kind"] == "delete")
        .unwrap_or_else(|| panic!("no denial on record: {events:#?}"));
    assert_eq!(denial["decision"]["action"], "requireApproval", "{denial}");
    let reason = denial["decision"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("standalone sidecar does not have")
            && reason.ends_with("(mysql text protocol)"),
        "{reason}"
    );
}
