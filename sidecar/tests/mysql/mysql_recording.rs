//! Session recording (`spec.recording`, #21 item 4) on the MySQL plane,
//! with real clients (PyMySQL: the text protocol; mysql-connector-python:
//! prepared statements, the binary protocol, and a cursor's fetches)
//! through `sluice-sidecar standalone` to a real MariaDB. What is recorded
//! is exactly what the client received — never an unmasked value,
//! column-masked or detector-masked, in any form — bounded per statement
//! and per session, on the audit chain (`audit verify` passes), and
//! `kubectl sluice sessions` / `replay` show the sessions as MySQL ones.
//!
//! `kubectl sluice` is the workspace's `target/…/kubectl-sluice`, beside the
//! sidecar binary (build it first with `cargo build -p kubectl-sluice` when
//! testing `-p sluice-sidecar` alone). A missing binary fails the tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::mysql_support;

use std::time::{Duration, Instant};

use common::{Sidecar, kubectl_sluice};
use mysql_support::*;
use serde_json::{Value, json};
use sluice_e2e::harness::{audit_events, stdout_ok};

const CARD: &str = "4111 1111 1111 1111";
const EMAIL: &str = "alice.wonder@example.com";
const OTHER_SSN: &str = "987-65-4321";

fn policy(level: &str) -> String {
    let recording = if level.is_empty() {
        String::new()
    } else {
        format!("  recording: {level}\n")
    };
    format!(
        r#"  defaultAction: allow
  onParseError: deny
{recording}  rules:
    - name: no-drops
      match: {{statements: [drop]}}
      action: deny
  masking:
    - columns: ["customers.ssn"]
      strategy: redact
    - detectors: [creditCard, email]
      strategy: partial
  limits: {{maxRowsAffected: 1}}
"#
    )
}

fn setup(db: &str, level: &str) -> Sidecar {
    let m = maria();
    m.database(db);
    m.admin(&format!(
        "CREATE TABLE {db}.customers (id int primary key, name varchar(50), ssn varchar(20), born date, score int, note varchar(100)) ENGINE=InnoDB;
         INSERT INTO {db}.customers VALUES
           (1, 'Alice', '{SSN}', '1980-01-02', 7, 'card {CARD}, mail {EMAIL}'),
           (2, NULL, '{OTHER_SSN}', NULL, -3, NULL);
         CREATE TABLE {db}.big (n int primary key, filler varchar(10)) ENGINE=InnoDB;
         INSERT INTO {db}.big SELECT seq, 'x' FROM {db}.seq_1_to_500;"
    ));
    Sidecar::start(&manifests(m, db, &policy(level)), "shop/report-job")
}

/// The audit events once `n` sessions ended.
fn wait_for_ends(sidecar: &Sidecar, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = audit_events(&sidecar.audit);
        if events.iter().filter(|e| e["type"] == "sessionEnd").count() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{n} sessions did not end within 30s: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The result events of `text`, in order.
fn results_of<'a>(events: &'a [Value], text: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == "result" && e["command"]["text"] == text)
        .collect()
}

fn rows(set: &Value) -> Vec<Vec<Option<String>>> {
    serde_json::from_value(set["rows"].clone()).unwrap_or_default()
}

/// Every unmasked form a leak into the audit stream could take: as text,
/// without separators, and as the `\x` hex a binary value is recorded in.
fn assert_nothing_unmasked(sidecar: &Sidecar) {
    let text = sidecar.audit_text_without_ids();
    for secret in [
        SSN,
        "123456789",
        OTHER_SSN,
        "987654321",
        CARD,
        "4111111111111111",
        EMAIL,
    ] {
        assert!(
            !text.contains(secret),
            "the unmasked value {secret:?} is in the audit stream:\n{text}"
        );
    }
    // Hex runs are blanked by audit_text_without_ids: look in the raw file.
    let raw = sidecar.audit_text();
    for secret in [SSN, OTHER_SSN, EMAIL] {
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!raw.contains(&hex), "{secret:?} is in the audit as hex");
    }
}

const TEXT_QUERY: &str = "SELECT id, name, ssn, born, score, note FROM customers ORDER BY id";
const BIG_QUERY: &str = "SELECT n, filler FROM big ORDER BY n";
const PREPARED: &str =
    "SELECT id, name, ssn, born, score, note FROM customers WHERE id >= ? ORDER BY id";
const CURSOR: &str = "SELECT id, ssn FROM customers ORDER BY id";
const PAD: &str = "SELECT REPEAT('y', 4000) AS pad";

/// A text session, a binary one (with a cursor) and one that spends the
/// session budget, recorded at `results`.
#[test]
fn recorded_mysql_results_are_what_the_client_received_masked_bounded_and_replay() {
    let db = "my_rec_results";
    let sidecar = setup(db, "results");
    // Text protocol: the rows as PyMySQL got them, every value as a string.
    let text_out = pymysql(
        sidecar.port,
        &format!(
            "c = connect(database='{db}')\n\
             cur = c.cursor()\n\
             def show(rows):\n    \
                 return [[None if v is None else str(v) for v in r] for r in rows]\n\
             cur.execute(\"{TEXT_QUERY}\")\n\
             print('text', json.dumps(show(cur.fetchall())))\n\
             cur.execute(\"{BIG_QUERY}\")\n\
             print('big', len(cur.fetchall()))\n\
             for sql in ['DROP TABLE customers', \"UPDATE big SET filler = 'w' WHERE n <= 2\"]:\n    \
                 try:\n        \
                     cur.execute(sql)\n        \
                     print('ran', sql)\n    \
                 except pymysql.MySQLError as e:\n        \
                     print('refused', e.args[0], e.args[1])\n"
        ),
    );
    assert!(
        text_out.contains("refused 1227") && text_out.contains("no-drops"),
        "{text_out}"
    );
    assert!(text_out.contains("maxRowsAffected"), "{text_out}");
    assert!(text_out.contains("big 500"), "{text_out}");
    let printed: Vec<Vec<Option<String>>> = serde_json::from_str(
        text_out
            .lines()
            .find_map(|l| l.strip_prefix("text "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(printed[0][2].as_deref(), Some("[redacted]"), "{text_out}");

    // Binary protocol: a prepared statement, then a cursor fetched twice.
    let binary_out = connector(
        sidecar.port,
        &format!(
            "import json\n\
             c = connect(database='{db}')\n\
             def show(r):\n    \
                 return [None if v is None else (v.decode() if isinstance(v, (bytes, bytearray)) else str(v)) for v in r]\n\
             cur = c.cursor(prepared=True)\n\
             cur.execute(\"{PREPARED}\", (1,))\n\
             print('binary', json.dumps([show(r) for r in cur.fetchall()]))\n\
             sid = c.cmd_stmt_prepare(b\"{CURSOR}\")['statement_id']\n\
             n, cols, eof = c.cmd_stmt_execute(sid, flags=1)\n\
             for _ in range(2):\n    \
                 c.cmd_stmt_fetch(sid, 1)\n    \
                 rows, eof = c.get_rows(binary=True, columns=cols)\n    \
                 print('fetched', json.dumps([show(r) for r in rows]))\n",
        ),
    );
    let binary_printed: Vec<Vec<Option<String>>> = serde_json::from_str(
        binary_out
            .lines()
            .find_map(|l| l.strip_prefix("binary "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(binary_printed.len(), 2, "{binary_out}");
    assert_eq!(binary_printed[0][3].as_deref(), Some("1980-01-02"));

    // The session budget: 70 values of 4000 bytes, 256 KiB recorded at most.
    let pad_out = pymysql(
        sidecar.port,
        &format!(
            "c = connect(database='{db}')\n\
             cur = c.cursor()\n\
             for _ in range(70):\n    \
                 cur.execute(\"{PAD}\")\n    \
                 assert len(cur.fetchone()[0]) == 4000\n\
             print('padded')\n"
        ),
    );
    assert!(pad_out.contains("padded"), "{pad_out}");

    let events = wait_for_ends(&sidecar, 3);
    assert_nothing_unmasked(&sidecar);
    let recorded = |e: &Value| e["outcome"]["recorded"].clone();

    // The text query: columns and rows exactly as PyMySQL received them.
    let text = recorded(results_of(&events, TEXT_QUERY)[0]);
    assert_eq!(text["level"], "results");
    assert_eq!(
        text["sets"][0]["columns"],
        json!(["id", "name", "ssn", "born", "score", "note"])
    );
    assert_eq!(rows(&text["sets"][0]), printed, "{text}");
    assert!(text.get("truncated").is_none(), "{text}");

    // The large result: bounded per statement, and the cut said.
    let big = recorded(results_of(&events, BIG_QUERY)[0]);
    assert_eq!(rows(&big["sets"][0]).len(), 100);
    assert_eq!(
        big["truncated"],
        "400 rows not recorded: a statement's recording keeps at most 100 rows"
    );

    // The write maxRowsAffected rolled back: recorded as not kept.
    let write = events
        .iter()
        .find(|e| {
            e["type"] == "result"
                && e["command"]["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("UPDATE big"))
        })
        .unwrap();
    let why = recorded(write)["rolledBack"].as_str().unwrap().to_string();
    assert!(
        why.starts_with("Sluice rolled the write back: it changed 2 rows"),
        "{why}"
    );

    // The prepared statement: the binary rows as the connector decoded them.
    let binary = recorded(results_of(&events, PREPARED)[0]);
    assert_eq!(rows(&binary["sets"][0]), binary_printed, "{binary}");
    // The cursor: its EXECUTE names the columns, each fetch records its row.
    let cursor = results_of(&events, CURSOR);
    assert_eq!(cursor.len(), 3, "{cursor:?}");
    assert_eq!(
        recorded(cursor[0])["sets"][0]["columns"],
        json!(["id", "ssn"])
    );
    assert!(recorded(cursor[0])["sets"][0].get("rows").is_none());
    for (fetch, id) in cursor[1..].iter().zip(["1", "2"]) {
        let got = rows(&recorded(fetch)["sets"][0]);
        assert_eq!(
            got,
            vec![vec![Some(id.to_string()), Some("[redacted]".to_string())]]
        );
        assert!(binary_out.contains(&format!("fetched [[\"{id}\", \"[redacted]\"]]")));
    }

    // The session budget: spent, and said; never more than 256 KiB of values.
    // (Recorded with its literals redacted, as every statement is.)
    let pads = results_of(&events, "SELECT REPEAT(?, ?) AS pad");
    assert_eq!(pads.len(), 70);
    let kept: usize = pads
        .iter()
        .flat_map(|e| rows(&recorded(e)["sets"][0]))
        .flatten()
        .flatten()
        .map(|v| v.len())
        .sum();
    assert!(kept <= 256 * 1024, "{kept} bytes recorded");
    let cut = pads
        .iter()
        .filter_map(|e| recorded(e)["truncated"].as_str().map(String::from))
        .collect::<Vec<_>>();
    assert!(
        !cut.is_empty()
            && cut.iter().all(|c| c
                == "1 rows not recorded: the session's recording budget (256 KiB of values) is spent"),
        "{cut:?}"
    );

    // The chain verifies, and sessions / replay read the MySQL sessions back.
    let audit_file = sidecar.audit.to_str().unwrap();
    let verify = kubectl_sluice(&["audit", "verify", audit_file]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let listed: Value = serde_json::from_str(&stdout_ok(&kubectl_sluice(&[
        "sessions", "--audit", audit_file, "-o", "json",
    ])))
    .unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for s in listed {
        assert_eq!(s["protocol"], "mysql", "{s}");
        assert_eq!(s["recording"], "results", "{s}");
        assert_eq!(s["connection"], "shop-db", "{s}");
    }
    let text_session = &listed[0];
    // Its four, and those PyMySQL sends at connect (SET NAMES, autocommit).
    assert!(
        text_session["statements"].as_u64() >= Some(4),
        "{text_session}"
    );
    assert_eq!(text_session["denied"], 1);
    let id = text_session["session"].as_str().unwrap();
    let replay = stdout_ok(&kubectl_sluice(&[
        "replay",
        &id[..12],
        "--audit",
        audit_file,
        "--no-delay",
    ]));
    assert!(replay.contains(&format!("> {TEXT_QUERY}")), "{replay}");
    assert!(
        replay.contains("1  | Alice | [redacted] | 1980-01-02"),
        "{replay}"
    );
    assert!(replay.contains("REFUSED by reporting/no-drops"), "{replay}");
    assert!(
        replay.contains("recording incomplete: 400 rows not recorded"),
        "{replay}"
    );
    assert!(
        replay.contains("(rolled back, not kept: Sluice rolled the write back"),
        "{replay}"
    );
    for secret in [SSN, OTHER_SSN, CARD, EMAIL] {
        assert!(!replay.contains(secret), "{replay}");
    }
}

/// `statements` records the result's columns and no value; no
/// `spec.recording`, nothing recorded at all (text and binary protocol).
#[test]
fn mysql_recording_is_opt_in_and_statements_keep_no_values() {
    for level in ["", "statements"] {
        let db = format!("my_rec_level_{}", level.len());
        let sidecar = setup(&db, level);
        let out = pymysql(
            sidecar.port,
            &format!(
                "c = connect(database='{db}')\n\
                 cur = c.cursor()\n\
                 cur.execute('SELECT id, name FROM customers ORDER BY id')\n\
                 print(cur.fetchall())\n"
            ),
        );
        assert!(out.contains("Alice"), "{out}");
        let out = connector(
            sidecar.port,
            &format!(
                "c = connect(database='{db}')\n\
                 cur = c.cursor(prepared=True)\n\
                 cur.execute('SELECT id, name FROM customers WHERE id = ?', (1,))\n\
                 print(cur.fetchall())\n"
            ),
        );
        assert!(out.contains("Alice"), "{out}");
        let events = wait_for_ends(&sidecar, 2);
        let results: Vec<&Value> = events
            .iter()
            .filter(|e| {
                e["type"] == "result"
                    && e["command"]["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("customers"))
            })
            .collect();
        assert_eq!(results.len(), 2, "{events:?}");
        for r in results {
            let rec = &r["outcome"]["recorded"];
            if level.is_empty() {
                assert!(rec.is_null(), "recorded without spec.recording: {r}");
            } else {
                assert_eq!(rec["level"], "statements", "{r}");
                assert_eq!(rec["sets"][0]["columns"], json!(["id", "name"]), "{r}");
                assert!(rec["sets"][0].get("rows").is_none(), "{r}");
            }
        }
        assert!(!sidecar.audit_text().contains("Alice"));
    }
}

/// A client that leaves in the middle of a large result: the statement's
/// result is still on record, with the session's end as its error, and
/// its recording keeps no row (which of them the client received is not
/// known) and says so.
#[test]
fn a_client_that_leaves_mid_result_is_on_record_without_rows() {
    let db = "my_rec_leave";
    let sidecar = setup(db, "results");
    let query = "SELECT a.n, REPEAT('z', 1000) AS pad FROM big a, big b";
    let out = pymysql(
        sidecar.port,
        &format!(
            "c = connect(database='{db}', cursorclass=pymysql.cursors.SSCursor)\n\
             cur = c.cursor()\n\
             cur.execute(\"{query}\")\n\
             print('first', cur.fetchone()[0], flush=True)\n\
             os._exit(0)\n"
        ),
    );
    assert!(out.contains("first"), "{out}");
    let events = wait_for_ends(&sidecar, 1);
    let result = events
        .iter()
        .find(|e| {
            e["type"] == "result"
                && e["command"]["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("SELECT a.n"))
        })
        .unwrap_or_else(|| panic!("no result event for the statement the client left: {events:?}"));
    let error = result["outcome"]["error"].as_str().unwrap();
    assert!(
        error.starts_with("the session ended before the result was complete"),
        "{result}"
    );
    let rec = &result["outcome"]["recorded"];
    assert_eq!(rec["sets"][0]["columns"], json!(["n", "pad"]), "{rec}");
    assert!(rec["sets"][0].get("rows").is_none(), "{rec}");
    let why = rec["truncated"].as_str().unwrap();
    assert!(
        why.contains(" rows not recorded: the session ended before the result was complete, so which of its rows the client received is not known"),
        "{why}"
    );
}
