//! Ways around masking and function rules that are not result columns of
//! the masked table, with the real `mariadb` client (and the binary
//! protocol where it matters):
//!
//! - server variables: MySQL's SET takes subqueries, and `SELECT @@name`
//!   reads a variable back with no origin to mask by; a SET of a server
//!   variable to a value that may carry masked data is refused;
//! - server files: `LOAD_FILE` reads any file the server can (a file it
//!   wrote with `SELECT … INTO OUTFILE`, its own data files); under masking
//!   its value is masked however it is spelled or wrapped, a write or SET of
//!   it is refused, and error texts around it are scrubbed; under a rule
//!   denying the function, every spelling is denied and nothing runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

/// The masked date of the `customers` row, as `FROM_UNIXTIME` shows it.
const BORN: &str = "1980-01-02";

/// A database `db` with `customers` (an SSN, a birth date) and `notes`,
/// a user `filer` holding the FILE privilege (reads and writes server
/// files; the shared `app` user does not), and a file holding the SSN the
/// server wrote with `SELECT … INTO OUTFILE`, whose path is returned.
fn setup(db: &str) -> String {
    let m = maria();
    m.database(db);
    let file = std::env::temp_dir()
        .join(format!("sluice-{}-{db}-ssn.txt", std::process::id()))
        .display()
        .to_string();
    let _ = std::fs::remove_file(&file);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), born date);
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}', '{BORN}');
         CREATE TABLE {db}.notes (id int auto_increment primary key, t text);
         SELECT ssn FROM {db}.customers INTO OUTFILE '{file}';
         CREATE USER IF NOT EXISTS 'filer'@'%' IDENTIFIED BY '{PASSWORD}';
         CREATE USER IF NOT EXISTS 'filer'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';
         GRANT FILE ON *.* TO 'filer'@'%'; GRANT FILE ON *.* TO 'filer'@'127.0.0.1';
         GRANT ALL ON {db}.* TO 'filer'@'%'; GRANT ALL ON {db}.* TO 'filer'@'127.0.0.1';"
    ));
    file
}

/// A sidecar in front of `db` as `user` under the policy lines `policy`.
fn sidecar(db: &str, user: &str, policy: &str) -> Sidecar {
    let upstream = format!(
        "host: 127.0.0.1, port: {}, database: {db}, tls: {{mode: disable}}",
        maria().port
    );
    let manifests = common::connection_manifests(
        ("shop-db", "mysql", upstream.as_str()),
        ("db-creds", user),
        "",
    ) + &common::named_policy("reporting", "shop-db", policy);
    Sidecar::start(&manifests, "shop/report-job")
}

/// SET of server variables from masked columns, user variables, and the
/// SQL-level and binary-protocol forms of the same SET, and the functions
/// that keep a value in the session (`LAST_INSERT_ID(x)`, `GET_LOCK(x, …)`):
/// refused before anything runs, so reading the state back shows its old
/// values; SETs from values that carry no masked data still run. Before,
/// the SSN and the masked date came back in clear through
/// `@@default_master_connection`, `@@group_concat_max_len`, `NOW()` and
/// `LAST_INSERT_ID()`.
#[test]
fn server_variables_do_not_carry_masked_values() {
    let db = "my_side_variables";
    setup(db);
    let sidecar = sidecar(db, USER, POLICY);
    let (_, out, err) = mariadb_cli(
        sidecar.port,
        &format!(
            "USE {db};
SET @@session.default_master_connection = (SELECT ssn FROM customers);
SELECT @@default_master_connection AS via_string;
SET SESSION group_concat_max_len = (SELECT UNIX_TIMESTAMP(born) FROM customers);
SELECT FROM_UNIXTIME(@@group_concat_max_len) AS via_number;
SET timestamp = (SELECT UNIX_TIMESTAMP(born) FROM customers);
SELECT DATE(NOW()) AS via_clock;
SET @v = (SELECT ssn FROM customers);
SET @x = 1, @@session.default_master_connection = @v;
SELECT @@default_master_connection AS via_user_variable;
EXECUTE IMMEDIATE 'SET @@session.default_master_connection = (SELECT ssn FROM customers)';
SELECT @@default_master_connection AS via_immediate;
SELECT LAST_INSERT_ID(UNIX_TIMESTAMP(born)) FROM customers;
SELECT FROM_UNIXTIME(LAST_INSERT_ID()) AS via_last_insert_id;
SELECT GET_LOCK((SELECT ssn FROM customers), 0);
SELECT IS_USED_LOCK(CONCAT('123-45', '-6789')) IS NULL AS unlocked;
SET @@session.default_master_connection = 'plain';
SET sql_select_limit = (SELECT count(*) FROM customers);
SELECT @@default_master_connection AS plain, @@sql_select_limit AS counted;
"
        ),
    );
    let all = format!("{out}{err}");
    assert!(
        !all.contains(SSN),
        "a masked value left through a server variable:\n{all}"
    );
    assert!(
        !all.contains(BORN),
        "a masked date left through a server variable:\n{all}"
    );
    let refusals = err.matches("sets the server variable").count();
    assert_eq!(refusals, 5, "{all}");
    assert!(out.contains("plain\t1"), "{all}");
    assert!(err.contains("passes to last_insert_id()"), "{all}");
    assert!(err.contains("passes to get_lock()"), "{all}");
    assert!(out.contains("unlocked\n1"), "{all}");

    // The binary protocol: the same SET prepared and executed.
    let out = connector(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}')
cur = c.cursor(prepared=True)
try:
    cur.execute("SET @@session.default_master_connection = (SELECT ssn FROM customers)")
    print('ran')
except mysql.connector.Error as e:
    print('refused', e.errno, e.msg)
cur = c.cursor()
cur.execute("SELECT @@default_master_connection")
print('now', cur.fetchall())
"#
        ),
    );
    assert!(!out.contains(SSN), "{out}");
    assert!(
        out.contains("refused 1227") && out.contains("sets the server variable"),
        "{out}"
    );
}

/// `LOAD_FILE` of a file holding a masked value, under masking: its value
/// is masked however the call is spelled (a space or comment before `(`,
/// backticks, mixed case) or wrapped (HEX, SUBSTRING, a derived table, a
/// CTE, UNION, JSON_OBJECT, GROUP_CONCAT, a user variable), a write or a
/// server variable set from it is refused, error texts and warnings that
/// echo it are scrubbed, and the statements that write files are refused.
#[test]
fn load_file_under_masking() {
    let db = "my_side_load_file";
    let file = setup(db);
    let sidecar = sidecar(db, "filer", POLICY);
    // The file is there and readable for this user: without Sluice it
    // gives the SSN.
    let direct = maria().admin(&format!("SELECT LOAD_FILE('{file}')"));
    assert!(direct.contains(SSN), "{direct}");
    let f = format!("'{file}'");
    let (_, out, err) = mariadb_cli(
        sidecar.port,
        &format!(
            "USE {db};
SELECT LOAD_FILE({f}) AS plain;
SELECT LOAD_FILE ({f}) AS spaced;
SELECT `LOAD_FILE`({f}) AS quoted;
SELECT load_file/**/({f}) AS commented;
SELECT LoAd_FiLe({f}) AS mixed;
SELECT HEX(LOAD_FILE({f})) AS hexed, SUBSTRING(LOAD_FILE({f}), 1, 11) AS part;
SELECT x AS derived FROM (SELECT LOAD_FILE({f}) AS x) d;
WITH c AS (SELECT LOAD_FILE({f}) AS x) SELECT x AS cte FROM c;
SELECT 'u' UNION SELECT LOAD_FILE({f});
SELECT JSON_OBJECT('a', LOAD_FILE({f})) AS json, GROUP_CONCAT(LOAD_FILE({f})) AS grouped;
SELECT LOAD_FILE({f}) INTO @v;
SELECT @v AS selected_into, CONCAT(@v, '') AS concatenated;
EXECUTE IMMEDIATE 'SELECT LOAD_FILE(''{file}'') AS immediate';
INSERT INTO notes (t) VALUES (LOAD_FILE({f}));
INSERT INTO notes (t) SELECT LOAD_FILE({f});
UPDATE notes SET t = LOAD_FILE({f});
SET @@session.default_master_connection = LOAD_FILE({f});
SELECT @@default_master_connection AS variable;
SELECT EXTRACTVALUE(1, CONCAT(0x7e, LOAD_FILE({f})));
SELECT LOAD_FILE({f}) + 0 AS summed;
SHOW WARNINGS;
SELECT ssn FROM customers INTO OUTFILE '{file}.2';
SELECT ssn FROM customers INTO DUMPFILE '{file}.3';
SELECT count(*) AS notes FROM notes;
"
        ),
    );
    let all = format!("{out}{err}");
    assert!(
        !all.contains(SSN),
        "a masked value left through LOAD_FILE:\n{all}"
    );
    for column in [
        "plain",
        "spaced",
        "quoted",
        "commented",
        "mixed",
        "hexed",
        "derived",
        "cte",
        "json",
        "selected_into",
        "immediate",
    ] {
        assert!(out.contains(column), "{column} did not run:\n{all}");
    }
    assert!(out.contains("[redacted]"), "{all}");
    assert!(
        err.matches("writes into notes.t values that may carry masked columns")
            .count()
            == 3,
        "{all}"
    );
    assert!(err.contains("sets the server variable"), "{all}");
    assert!(
        err.contains("error message was scrubbed by Sluice"),
        "{all}"
    );
    assert!(out.contains("notes\n0"), "{all}");
    assert!(
        !std::path::Path::new(&format!("{file}.2")).exists(),
        "{all}"
    );
    assert!(
        !std::path::Path::new(&format!("{file}.3")).exists(),
        "{all}"
    );
}

/// A rule denying `load_file` denies every spelling of the call, wherever
/// it is (a derived table, WHERE, SET, INSERT, a view's definition,
/// EXECUTE IMMEDIATE, PREPARE), and nothing of it runs.
#[test]
fn a_rule_on_load_file_denies_every_spelling() {
    let db = "my_side_load_file_rule";
    let file = setup(db);
    let policy = "  defaultAction: allow\n  rules:\n    - name: no-server-files\n      match: {functions: [load_file]}\n      action: deny\n";
    let sidecar = sidecar(db, "filer", policy);
    let f = format!("'{file}'");
    let denied = [
        format!("SELECT LOAD_FILE({f})"),
        format!("SELECT LOAD_FILE ({f})"),
        format!("SELECT `load_file`({f})"),
        format!("SELECT load_file/**/({f})"),
        format!("SELECT LoAd_FiLe({f})"),
        format!("SELECT x FROM (SELECT LOAD_FILE({f}) AS x) d"),
        format!("SELECT 1 FROM dual WHERE LOAD_FILE({f}) IS NOT NULL"),
        format!("SET @w = LOAD_FILE({f})"),
        format!("INSERT INTO notes (t) VALUES (LOAD_FILE({f}))"),
        format!("CREATE VIEW lf AS SELECT LOAD_FILE({f}) AS x"),
        format!("EXECUTE IMMEDIATE 'SELECT LOAD_FILE(''{file}'')'"),
        format!("PREPARE s FROM 'SELECT LOAD_FILE(''{file}'')'"),
    ];
    let script = format!(
        "USE {db};\n{};\nSELECT @w IS NULL AS unset, (SELECT count(*) FROM notes) AS notes;\n",
        denied.join(";\n")
    );
    let (_, out, err) = mariadb_cli(sidecar.port, &script);
    let all = format!("{out}{err}");
    assert!(!all.contains(SSN), "{all}");
    assert_eq!(
        err.matches("deny by rule \"no-server-files\"").count(),
        denied.len(),
        "{all}"
    );
    assert!(out.contains("unset\tnotes\n1\t0"), "{all}");
    let views = maria().admin(&format!(
        "SELECT count(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{db}'"
    ));
    assert_eq!(views.trim(), "0", "{all}");
}
