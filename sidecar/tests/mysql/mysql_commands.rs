//! Commands other than statements, with real clients: COM_STATISTICS
//! (`mariadb-admin status`) is decided as `SHOW GLOBAL STATUS` under the
//! policies in force and put on record; refused, it gets an ERR packet and
//! the server is not asked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;

/// `mariadb-admin status` through the sidecar on `port`; (success, stdout,
/// stderr).
fn admin_status(port: u16) -> (bool, String, String) {
    let out = Command::new("mariadb-admin")
        .arg("--no-defaults")
        .arg("-h127.0.0.1")
        .arg(format!("-P{port}"))
        .arg("-uworkload")
        .arg("--skip-ssl")
        .arg("--connect-timeout=10")
        .arg("status")
        .output()
        .expect("run mariadb-admin (apt-get install mariadb-client)");
    common::outcome(out)
}

/// Under a policy that allows it, COM_STATISTICS is answered by the server
/// (its `Uptime: … Questions: …` line) and on record, before and after it
/// ran, as `SHOW GLOBAL STATUS`. Under one that allows only reads of
/// `customers` (`defaultAction: deny`), it is refused with the rule's
/// decision named and on record as a denial.
#[test]
fn com_statistics_is_decided_as_show_global_status() {
    let db = "my_statistics";
    let m = maria();
    m.database(db);
    m.admin(&format!("CREATE TABLE {db}.customers (id int);"));
    let allowed = Sidecar::start(&manifests(m, db, POLICY), "shop/report-job");
    let (ok, out, err) = admin_status(allowed.port);
    assert!(
        ok && out.contains("Uptime:") && out.contains("Questions:"),
        "{out}{err}"
    );
    // The result's record is written once the answer is relayed, which
    // the client may not wait for: polled (20 s at most).
    let of_status = |events: &[serde_json::Value], kind: &str| {
        events
            .iter()
            .any(|e| e["type"] == kind && e["command"]["text"] == "SHOW GLOBAL STATUS")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut events = allowed.audit_events();
    while !(of_status(&events, "statement") && of_status(&events, "result"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        events = allowed.audit_events();
    }
    assert!(
        of_status(&events, "statement") && of_status(&events, "result"),
        "{events:#?}"
    );

    let only_customers = "  defaultAction: deny\n  rules:\n    - name: read-customers\n      match: {statements: [select], tables: [customers]}\n      action: allow\n";
    let denied = Sidecar::start(&manifests(m, db, only_customers), "shop/report-job");
    // mariadb-admin reports the error (its exit status stays 0).
    let (_, out, err) = admin_status(denied.port);
    assert!(!out.contains("Uptime:"), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("statement denied by Sluice: deny by defaultAction"),
        "{out}{err}"
    );
    // A refusal is on record before it is answered.
    let events = denied.audit_events();
    let denial = events
        .iter()
        .find(|e| e["type"] == "denial" && e["command"]["text"] == "SHOW GLOBAL STATUS")
        .unwrap_or_else(|| panic!("no denial on record: {events:#?}"));
    assert_eq!(denial["decision"]["action"], "deny", "{denial}");
    // The same policy still serves what it allows.
    let (ok, out, err) = mariadb_cli(denied.port, "SELECT count(*) FROM customers;\n");
    assert!(ok && out.contains('0'), "{out}{err}");
}
