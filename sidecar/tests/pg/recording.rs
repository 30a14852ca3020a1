//! Session recording (`spec.recording`, #21 item 4) with real clients: psql
//! and tokio-postgres through the sidecar to a real PostgreSQL, curl to an
//! HTTP upstream. What is recorded is exactly what the client received —
//! never an unmasked value, column-masked or detector-masked — bounded, on
//! the audit chain (an edited recorded value fails `audit verify`), and
//! `kubectl sluice sessions` / `replay` show it.
//!
//! `kubectl sluice` is the workspace's `target/…/kubectl-sluice`, beside the
//! sidecar binary (`cargo test --workspace` builds it; with `-p
//! sluice-sidecar` alone, build it first: `cargo build -p kubectl-sluice`).
//! A missing binary fails the tests, it never skips them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::process::Command;

use common::*;
use serde_json::Value;
use sluice_e2e::harness::{audit_events, http_manifests, json_upstream, stdout_ok};

const SSN: &str = "123-45-6789";
const CARD: &str = "4111 1111 1111 1111";
const EMAIL: &str = "alice.wonder@example.com";

fn recording_policy(level: &str) -> String {
    format!(
        r#"  recording: {level}
  rules:
    - name: no-drops
      match: {{statements: [drop]}}
      action: deny
  masking:
    - columns: ["customers.ssn"]
      strategy: redact
    - detectors: [creditCard, email]
      strategy: partial
"#
    )
}

async fn setup(test: &str, level: &str) -> Sidecar {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE customers (id int primary key, name text, ssn text, note text);
             INSERT INTO customers VALUES
               (1, 'Alice', '{SSN}', 'card {CARD}, mail {EMAIL}'),
               (2, 'Bob', '987-65-4321', NULL);"
        ))
        .await
        .unwrap();
    let policy = if level.is_empty() {
        policy(&recording_policy("off").replace("  recording: off\n", ""))
    } else {
        policy(&recording_policy(level))
    };
    Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy),
        "shop/report-job",
    )
}

/// The `outcome.recorded` of every result event, in order.
fn recorded(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"] == "result")
        .filter_map(|e| e["outcome"].get("recorded").cloned())
        .collect()
}

fn rows(set: &Value) -> Vec<Vec<Option<String>>> {
    serde_json::from_value(set["rows"].clone()).unwrap_or_default()
}

/// Every unmasked form a leak into the recording could take.
fn assert_nothing_unmasked(audit: &str) {
    for secret in [
        SSN,
        "123456789",
        CARD,
        "4111111111111111",
        EMAIL,
        "987-65-4321",
    ] {
        assert!(
            !audit.contains(secret),
            "the unmasked value {secret:?} is in the audit stream:\n{audit}"
        );
    }
}

#[tokio::test]
async fn recorded_results_are_what_the_client_received_masked_and_replay() {
    let sidecar = setup("rec_results", "results").await;
    let query = "SELECT id, name, ssn, note FROM customers ORDER BY id";
    let (ok, out, err) = psql(
        sidecar.port,
        &[
            "-A",
            "-t",
            "-F",
            "|",
            "-c",
            query,
            "-c",
            "SELECT g, 'x' AS filler FROM generate_series(1, 500) g",
            "-c",
            "DROP TABLE customers",
        ],
    );
    assert!(!ok, "the DROP must be refused: {out} {err}");
    assert!(err.contains("no-drops"), "{err}");
    let printed: Vec<&str> = out.lines().take(2).collect();
    // What psql showed: the ssn redacted, the card and e-mail masked by the detectors.
    assert!(printed[0].starts_with("1|Alice|[redacted]|card "), "{out}");
    assert_nothing_unmasked(&out);

    // The extended protocol (tokio-postgres): a portal of a prepared statement.
    let client = sidecar.connect().await;
    let row = client
        .query_one("SELECT ssn, note FROM customers WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    let extended_note: String = row.get(1);
    assert_eq!(row.get::<_, String>(0), "[redacted]");
    drop(client);

    let events = wait_for_ends(&sidecar, 2).await;
    let audit = sidecar.audit_text_without_ids();
    assert_nothing_unmasked(&audit);

    let recs = recorded(&events);
    assert!(recs.iter().all(|r| r["level"] == "results"), "{recs:?}");
    // The first query: columns and rows exactly as psql printed them.
    let first = &recs[0]["sets"][0];
    assert_eq!(
        first["columns"],
        serde_json::json!(["id", "name", "ssn", "note"])
    );
    let got = rows(first);
    let as_psql: Vec<String> = got
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| v.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    assert_eq!(
        as_psql, printed,
        "the recording differs from what psql received"
    );
    assert_eq!(got[0][2].as_deref(), Some("[redacted]"));
    assert_eq!(got[1][3], None, "SQL NULL is recorded as null");
    assert!(recs[0].get("truncated").is_none());

    // The large result: bounded, and the cut said.
    let big = &recs[1];
    assert_eq!(rows(&big["sets"][0]).len(), 100);
    assert_eq!(
        big["truncated"],
        "400 rows not recorded: a statement's recording keeps at most 100 rows"
    );

    // The extended-protocol result: the masked values the driver decoded.
    let ext = recs
        .iter()
        .flat_map(|r| r["sets"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| rows(&s))
        .find(|r| r.len() == 2 && r[0].as_deref() == Some("[redacted]"))
        .expect("the extended-protocol row is recorded");
    assert_eq!(ext[1].as_deref(), Some(extended_note.as_str()));

    // sessions and replay read it back.
    let audit_file = sidecar.audit.to_str().unwrap();
    let listed: Value = serde_json::from_str(&stdout_ok(&kubectl_sluice(&[
        "sessions", "--audit", audit_file, "-o", "json",
    ])))
    .unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let psql_session = &listed[0];
    assert_eq!(psql_session["identity"], "shop/report-job");
    assert_eq!(psql_session["connection"], "orders-db");
    assert_eq!(psql_session["recording"], "results");
    assert_eq!(psql_session["statements"], 3);
    assert_eq!(psql_session["denied"], 1);
    let id = psql_session["session"].as_str().unwrap();
    let text = stdout_ok(&kubectl_sluice(&[
        "replay",
        &id[..12],
        "--audit",
        audit_file,
        "--no-delay",
    ]));
    assert!(text.contains(&format!("> {query}")), "{text}");
    assert!(text.contains("1  | Alice | [redacted] | card "), "{text}");
    assert!(text.contains("REFUSED by reporting/no-drops"), "{text}");
    assert!(
        text.contains("recording incomplete: 400 rows not recorded"),
        "{text}"
    );
    assert_nothing_unmasked(&text);
    let json: Value = serde_json::from_str(&stdout_ok(&kubectl_sluice(&[
        "replay", id, "--audit", audit_file, "-o", "json",
    ])))
    .unwrap();
    assert_eq!(json["session"], id);
    let kinds: Vec<&str> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "sessionStart",
            "statement",
            "result",
            "statement",
            "result",
            "denial",
            "sessionEnd"
        ]
    );
    assert!(json["events"][2]["offsetMs"].is_i64());

    // An edited recorded value breaks the chain: verify names the line, and
    // replay refuses to show the file.
    let tampered = sidecar.audit.with_file_name("tampered.jsonl");
    let original = std::fs::read_to_string(&sidecar.audit).unwrap();
    let line = original
        .lines()
        .position(|l| l.contains("\"recorded\"") && l.contains("[redacted]"))
        .unwrap();
    let edited: Vec<String> = original
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == line {
                l.replacen("[redacted]", SSN, 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&tampered, edited.join("\n") + "\n").unwrap();
    let t = tampered.to_str().unwrap();
    let verify = kubectl_sluice(&["audit", "verify", t]);
    assert_eq!(verify.status.code(), Some(1));
    let why = String::from_utf8_lossy(&verify.stderr);
    assert!(
        why.contains(&format!("line {}", line + 1)),
        "verify must name line {}: {why}",
        line + 1
    );
    let replay = kubectl_sluice(&["replay", id, "--audit", t, "--no-delay"]);
    assert_eq!(replay.status.code(), Some(2));
    let why = String::from_utf8_lossy(&replay.stderr);
    assert!(why.contains("does not verify"), "{why}");
    assert!(!String::from_utf8_lossy(&replay.stdout).contains(SSN));
}

/// The audit events once `n` sessions ended.
async fn wait_for_ends(sidecar: &Sidecar, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let events = audit_events(&sidecar.audit);
        if events.iter().filter(|e| e["type"] == "sessionEnd").count() >= n {
            return events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} sessions did not end within 20s: {events:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn recording_is_opt_in_and_statements_keep_no_values() {
    for level in ["", "statements"] {
        let sidecar = setup(&format!("rec_level_{}", level.len()), level).await;
        let (ok, out, err) = psql(
            sidecar.port,
            &[
                "-A",
                "-t",
                "-c",
                "SELECT id, name FROM customers ORDER BY id",
            ],
        );
        assert!(ok, "{out} {err}");
        assert!(out.contains("Alice"), "{out}");
        let events = wait_for_ends(&sidecar, 1).await;
        assert!(
            events.iter().any(|e| e["type"] == "result"),
            "no result event: {events:?}"
        );
        let recs = recorded(&events);
        if level.is_empty() {
            assert!(recs.is_empty(), "recorded without spec.recording: {recs:?}");
        } else {
            assert_eq!(recs.len(), 1, "{recs:?}");
            assert_eq!(recs[0]["level"], "statements");
            assert_eq!(
                recs[0]["sets"][0]["columns"],
                serde_json::json!(["id", "name"])
            );
            assert!(recs[0]["sets"][0].get("rows").is_none(), "{recs:?}");
        }
        // No value of the result is in the audit stream either way.
        assert!(!sidecar.audit_text().contains("Alice"));
    }
}

#[test]
fn an_http_response_is_recorded_as_curl_received_it() {
    let body =
        r#"{"customers":[{"id":1,"ssn":"123-45-6789","contact":"mail alice.wonder@example.com"}]}"#;
    let up = json_upstream(body);
    let manifests = http_manifests(
        up,
        "{PORT}",
        r#"  recording: results
  rules:
    - name: no-deletes
      match: {methods: [DELETE]}
      action: deny
  masking:
    - jsonPaths: ["$.customers[*].ssn"]
      strategy: redact
    - detectors: [email]
      strategy: partial
"#,
    );
    let sidecar = Sidecar::start(&manifests, "shop/app");
    let curl = |method: &str| {
        let out = Command::new("/usr/bin/curl")
            .args(["-sS", "--max-time", "30", "-X", method])
            .arg(format!("http://127.0.0.1:{}/v1/customers", sidecar.port))
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let received = curl("GET");
    assert!(received.contains("[redacted]"), "{received}");
    let refused = curl("DELETE");
    assert!(refused.contains("no-deletes"), "{refused}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let rec = loop {
        let events = audit_events(&sidecar.audit);
        if let Some(r) = recorded(&events).first() {
            break r.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recorded result: {events:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(rec["level"], "results");
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["body"].as_str(), Some(received.as_str()));
    let audit = sidecar.audit_text_without_ids();
    assert!(!audit.contains(SSN), "{audit}");
    assert!(!audit.contains(EMAIL), "{audit}");

    let audit_file = sidecar.audit.to_str().unwrap();
    let listed: Value = serde_json::from_str(&stdout_ok(&kubectl_sluice(&[
        "sessions", "--audit", audit_file, "-o", "json",
    ])))
    .unwrap();
    let session = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["protocol"] == "http" && s["recording"] == "results")
        .unwrap_or_else(|| panic!("no recorded http session: {listed}"));
    let text = stdout_ok(&kubectl_sluice(&[
        "replay",
        session["session"].as_str().unwrap(),
        "--audit",
        audit_file,
        "--no-delay",
    ]));
    assert!(text.contains("> GET /v1/customers"), "{text}");
    assert!(text.contains("HTTP 200"), "{text}");
    assert!(text.contains(received.trim()), "{text}");
}
