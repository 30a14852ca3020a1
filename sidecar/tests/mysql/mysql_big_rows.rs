//! Rows over one 16 MiB packet through the MySQL plane (#24): the server
//! continues such a row in packets of 0xFFFFFF bytes; the sidecar joins
//! them, masks the row, and continues it again towards the client, in the
//! text protocol (PyMySQL) and the binary one (a raw-wire client,
//! `mysql_wire_rows.py`: mysql-connector-python's pure client misreads
//! such binary rows even straight from MariaDB). A large value comes
//! through whole and unchanged; a masked value in the same row, or one
//! computed into a large value, stays masked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Sidecar;
use mysql_support::*;

/// Over one packet (16,777,215 bytes).
const BIG: usize = 17_000_000;

#[test]
fn rows_over_one_packet_are_whole_and_masked() {
    let db = "my_big_rows";
    let m = maria();
    // Sessions opened from now on (the sidecar's upstream, the admin's
    // next one) may carry rows this large.
    m.admin("SET GLOBAL max_allowed_packet = 67108864");
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), born date, score int);
         INSERT INTO {db}.customers VALUES (1, 'Alice', '{SSN}', '1980-01-02', 7);
         CREATE TABLE {db}.big (id int primary key, b longtext);"
    ));
    m.admin(&format!(
        "INSERT INTO {db}.big VALUES (1, REPEAT('z', {BIG}))"
    ));
    let sidecar = Sidecar::start(&manifests(m, db, POLICY), "shop/report-job");
    let statements = [
        "SELECT b FROM big WHERE id = 1",
        "SELECT ssn, b, c.name FROM customers c JOIN big ON big.id = c.id",
        &format!("SELECT CONCAT(ssn, REPEAT('a', {BIG})) FROM customers WHERE id = 1"),
        "SELECT name FROM customers WHERE id = 1",
    ];
    // The text protocol.
    let text = pymysql(
        sidecar.port,
        &format!(
            r#"c = connect(database='{db}')
cur = c.cursor()
for sql in {statements:?}:
    cur.execute(sql)
    print(json.dumps([[v if v is None or len(v) < 100 else {{"len": len(v), "same": len(set(v)) == 1}} for v in r] for r in cur.fetchall()]))
"#
        ),
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], format!(r#"[[{{"len": {BIG}, "same": true}}]]"#));
    assert_eq!(
        lines[1],
        format!(r#"[["[redacted]", {{"len": {BIG}, "same": true}}, "Alice"]]"#)
    );
    assert_eq!(lines[2], r#"[["[redacted]"]]"#);
    assert_eq!(lines[3], r#"[["Alice"]]"#);
    // The binary protocol, on raw wire bytes.
    let mut client = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/mysql/mysql_wire_rows.py"
        ))
        .arg(sidecar.port.to_string())
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    client
        .stdin
        .take()
        .unwrap()
        .write_all(statements.join("\n").as_bytes())
        .unwrap();
    let out = client.wait_with_output().unwrap();
    let binary = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{binary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!binary.contains(SSN), "{binary}");
    let rows: Vec<serde_json::Value> = binary
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{binary}");
    let big = serde_json::json!({"len": BIG, "head": "zzzzzzzzzzzzzzzz", "same": true});
    let redacted = serde_json::json!({"len": 10, "head": "[redacted]", "same": false});
    let alice = serde_json::json!({"len": 5, "head": "Alice", "same": false});
    assert_eq!(rows[0]["rows"], serde_json::json!([[big]]), "{binary}");
    assert_eq!(
        rows[1]["rows"],
        serde_json::json!([[redacted, big, alice]]),
        "{binary}"
    );
    assert_eq!(rows[2]["rows"], serde_json::json!([[redacted]]), "{binary}");
    assert_eq!(rows[3]["rows"], serde_json::json!([[alice]]), "{binary}");
}
