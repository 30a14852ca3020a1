//! What the MySQL plane reports (#24), with real clients against a real
//! MariaDB through `sluice-sidecar standalone`: a result event's
//! `outcome.masks` counts the values each masking rule masked, per
//! AccessPolicy and index in its `spec.masking`, in text rows (PyMySQL)
//! and binary rows (mysql-connector-python's prepared cursors), as the
//! PostgreSQL plane writes them; and `/metrics` carries the same
//! `sluice_*` series as PostgreSQL's for the mysql Connection (statements
//! by decision and rule, masked values, sessions, latency).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use common::Sidecar;
use mysql_support::*;
use serde_json::{Value, json};

const EMAIL: &str = "ann.lee@example.com";

/// Two policies bind the identity: `reporting` masks the ssn; `pii` the
/// name (rule 0) and what its email detector finds (rule 1); `reporting`
/// also denies DROP.
fn policies(m: &Maria, db: &str) -> String {
    let spec = format!("{}\n{}", common::NO_DROPS, common::REDACT_SSN);
    let reporting = manifests(m, db, &spec);
    let pii = common::named_policy(
        "pii",
        "shop-db",
        r#"  defaultAction: allow
  masking:
    - columns: ["customers.name"]
      strategy: redact
    - detectors: [email]
      strategy: redact"#,
    );
    format!("{reporting}---\n{pii}")
}

fn setup(db: &str) -> Sidecar {
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), note varchar(80));
         INSERT INTO {db}.customers VALUES
           (1, 'Alice', '{SSN}', 'mail {EMAIL}'),
           (2, 'Bob', '234-56-7890', 'no mail'),
           (3, 'Carol', '345-67-8901', 'mail {EMAIL}');
         CREATE TABLE {db}.t (id int);"
    ));
    Sidecar::start(&policies(m, db), "shop/report-job")
}

fn count(policy: &str, index: u64, count: u64) -> Value {
    json!({"count": count, "index": index, "policy": policy})
}

/// The `masks` and `masked` of the `n`th result event whose command text is
/// `text` (polled: result events are written within 200 ms).
async fn masks_of(sidecar: &Sidecar, text: &str, n: usize) -> (Value, Value) {
    let is_it = |e: &&Value| e["type"] == "result" && e["command"]["text"] == text;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let events = sidecar.audit_events();
        if let Some(event) = events.iter().filter(is_it).nth(n) {
            return (
                event["outcome"]["masks"].clone(),
                event["outcome"]["masked"].clone(),
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no result event {n} of {text:?} within 20s: {events:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The value of the series `series` (name and labels, exactly as exposed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_events_count_masked_values_by_policy_and_rule() {
    let db = "my_obs_masks";
    let sidecar = setup(db);
    let select = "SELECT id, name, ssn, note FROM customers ORDER BY id";
    let out = pymysql(
        sidecar.port,
        &format!(
            "c = connect(database='{db}')\n\
             cur = c.cursor()\n\
             cur.execute('{select}')\n\
             print(json.dumps(cur.fetchall()))\n\
             cur.execute('SELECT id FROM customers')\n\
             print(json.dumps(cur.fetchall()))\n"
        ),
    );
    assert!(!out.contains(SSN) && !out.contains(EMAIL), "{out}");
    // Text rows: three names (`pii` rule 0), three ssns (`reporting`
    // rule 0), two emails found in the notes (`pii` rule 1).
    let (masks, masked) = masks_of(&sidecar, select, 0).await;
    assert_eq!(masked, 8);
    assert_eq!(
        masks,
        json!([
            count("pii", 0, 3),
            count("pii", 1, 2),
            count("reporting", 0, 3)
        ])
    );
    // Nothing masked: no `masks` (and no `masked`).
    let (masks, masked) = masks_of(&sidecar, "SELECT id FROM customers", 0).await;
    assert_eq!((masks, masked), (Value::Null, Value::Null));

    // Binary rows (a prepared statement), counted the same way.
    let out = connector(
        sidecar.port,
        &format!(
            "c = connect(database='{db}')\n\
             cur = c.cursor(prepared=True)\n\
             cur.execute('{select}')\n\
             print([[x.decode() if isinstance(x, (bytes, bytearray)) else x for x in r] for r in cur.fetchall()])\n"
        ),
    );
    assert!(!out.contains(SSN) && !out.contains(EMAIL), "{out}");
    assert!(out.contains("[1, '[redacted]', '[redacted]', "), "{out}");
    let (masks, masked) = masks_of(&sidecar, select, 1).await;
    assert_eq!(masked, 8);
    assert_eq!(
        masks,
        json!([
            count("pii", 0, 3),
            count("pii", 1, 2),
            count("reporting", 0, 3)
        ])
    );
    let text = sidecar.audit_text();
    sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_the_mysql_connection_and_move_with_traffic() {
    let db = "my_obs_metrics";
    let sidecar = setup(db);
    let conn = "connection=\"shop-db\"";
    let before = sidecar.metrics().await;
    for series in [
        format!("sluice_statements_total{{{conn},decision=\"allow\"}}"),
        format!("sluice_statements_total{{{conn},decision=\"deny\"}}"),
        format!("sluice_sessions_total{{{conn},outcome=\"opened\"}}"),
        format!("sluice_masked_values_total{{{conn}}}"),
        format!("sluice_active_sessions{{{conn}}}"),
    ] {
        assert_eq!(value(&before, &series), Some(0.0), "{series} in\n{before}");
    }
    let out = pymysql(
        sidecar.port,
        &format!(
            "c = connect(database='{db}')\n\
             cur = c.cursor()\n\
             cur.execute('SELECT ssn FROM customers ORDER BY id')\n\
             print(json.dumps(cur.fetchall()))\n\
             cur.execute('SELECT 1')\n\
             try:\n    \
                 cur.execute('DROP TABLE t')\n\
             except pymysql.MySQLError as e:\n    \
                 print('refused', e.args[0])\n"
        ),
    );
    assert!(out.contains("refused 1227"), "{out}");
    // The session has ended when the script has: polled until the gauge
    // is back at zero.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let after = loop {
        let text = sidecar.metrics().await;
        if value(&text, &format!("sluice_active_sessions{{{conn}}}")) == Some(0.0)
            && value(
                &text,
                &format!("sluice_sessions_total{{{conn},outcome=\"opened\"}}"),
            ) == Some(1.0)
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session did not end in the metrics:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let expect = |series: String, want: f64| {
        assert_eq!(value(&after, &series), Some(want), "{series} in\n{after}");
    };
    // Every statement that ran (the client's own SETs included) is on
    // record; each is counted as allowed, its result timed.
    let ran = sidecar
        .audit_events()
        .iter()
        .filter(|e| e["type"] == "statement")
        .count() as f64;
    assert!(ran >= 2.0, "{ran}");
    expect(
        format!("sluice_statements_total{{{conn},decision=\"allow\"}}"),
        ran,
    );
    expect(
        format!("sluice_statements_total{{{conn},decision=\"deny\"}}"),
        1.0,
    );
    expect(
        format!(
            "sluice_rule_decisions_total{{{conn},policy=\"reporting\",rule=\"no-drops\",action=\"deny\"}}"
        ),
        1.0,
    );
    expect(format!("sluice_masked_values_total{{{conn}}}"), 3.0);
    expect(
        format!("sluice_upstream_latency_seconds_count{{{conn}}}"),
        ran,
    );
    expect(format!("sluice_overhead_seconds_count{{{conn}}}"), ran);
}
