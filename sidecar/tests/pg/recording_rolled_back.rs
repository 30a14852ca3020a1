//! Recordings of writes `maxRowsAffected` rolls back (#21): the server ran
//! the write and returned its rows (RETURNING), then Sluice rolled it back
//! and refused it. The recording must not show those rows as if the
//! database had kept them (nor as if the client had received them): the
//! result says `rolledBack` and why, without the rows. A write that stands
//! is recorded with its rows. psql (simple protocol) and tokio-postgres
//! (extended protocol) against a real server.
//!
//! `kubectl sluice` is the workspace's `target/…/kubectl-sluice`, beside the
//! sidecar binary (build it first: `cargo build -p kubectl-sluice`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Records results; writes change at most 2 rows each.
const POLICY: &str = r#"  defaultAction: allow
  recording: results
  limits: {maxRowsAffected: 2}
"#;

/// The audit events once `n` sessions ended.
async fn sessions_ended(sidecar: &Sidecar, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events: Vec<Value> = std::fs::read_to_string(&sidecar.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if events.iter().filter(|e| e["type"] == "sessionEnd").count() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "{n} sessions did not end within 20s: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The result event of the statement whose redacted text starts with `text`.
fn result_of<'a>(events: &'a [Value], text: &str) -> &'a Value {
    let at = events
        .iter()
        .position(|e| {
            e["type"] == "statement"
                && e["command"]["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(text))
        })
        .unwrap_or_else(|| panic!("no statement event for {text:?}: {events:?}"));
    let session = &events[at]["session"];
    events[at..]
        .iter()
        .find(|e| e["type"] == "result" && e["session"] == *session)
        .unwrap_or_else(|| panic!("no result event after {text:?}: {events:?}"))
}

#[tokio::test]
async fn rows_of_a_rolled_back_write_are_not_recorded_as_kept() {
    let pg = server();
    let db = db_name("rec_rolled_back");
    pg.create_database(&db).await;
    let admin = connect(&pg.admin_url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE t (id int primary key, v text NOT NULL DEFAULT 'orig');
             INSERT INTO t (id) SELECT g FROM generate_series(1, 5) g;",
        )
        .await
        .unwrap();
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(POLICY)),
        "shop/report-job",
    );

    // Simple protocol: refused after the server ran it, then one that stands.
    let (ok, out, err) = psql(
        sidecar.port,
        &[
            "-A",
            "-t",
            "-c",
            "UPDATE t SET v = 'simple-' || id RETURNING id, v",
        ],
    );
    assert!(!ok, "the bulk UPDATE must be refused: {out}");
    assert!(err.contains("maxRowsAffected"), "{err}");
    assert!(!out.contains("simple-"), "the client got rows: {out}");
    let (ok, out, err) = psql(
        sidecar.port,
        &[
            "-A",
            "-t",
            "-c",
            "UPDATE t SET v = 'kept' WHERE id = 1 RETURNING id, v",
        ],
    );
    assert!(ok, "{out} {err}");
    assert!(out.lines().any(|l| l == "1|kept"), "{out}");

    // Extended protocol: a prepared bulk UPDATE … RETURNING, refused.
    let client = sidecar.connect().await;
    let e = client
        .query(
            "UPDATE t SET v = 'extended-' || id WHERE id > $1 RETURNING id, v",
            &[&0i32],
        )
        .await
        .unwrap_err();
    assert!(message(&e).contains("maxRowsAffected"), "{}", message(&e));
    drop(client);

    // The database kept none of the refused writes.
    let changed: i64 = admin
        .query_one("SELECT count(*) FROM t WHERE v <> 'orig'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(changed, 1, "only the write that stands changed a row");

    let events = sessions_ended(&sidecar, 3).await;
    let audit = sidecar.audit_text();
    for gone in ["simple-", "extended-"] {
        assert!(
            !audit.contains(gone),
            "a row the database never kept is in the recording ({gone}):\n{audit}"
        );
    }
    for text in [
        "UPDATE t SET v = ? || id RETURNING",
        "UPDATE t SET v = ? || id WHERE",
    ] {
        let result = result_of(&events, text);
        let recorded = &result["outcome"]["recorded"];
        let why = recorded["rolledBack"].as_str().unwrap_or_else(|| {
            panic!("{text}: the result does not say it was rolled back: {result}")
        });
        assert!(why.contains("maxRowsAffected"), "{why}");
        assert!(why.contains("rows it returned are not recorded"), "{why}");
        assert_eq!(
            recorded["sets"],
            json!([{"columns": ["id", "v"]}]),
            "{text}: columns kept, rows left out"
        );
        assert_eq!(result["outcome"]["error"], "54000", "{result}");
    }
    let kept = result_of(&events, "UPDATE t SET v = ? WHERE id = ? RETURNING");
    assert!(
        kept["outcome"]["recorded"].get("rolledBack").is_none(),
        "{kept}"
    );
    assert_eq!(
        kept["outcome"]["recorded"]["sets"],
        json!([{"columns": ["id", "v"], "rows": [["1", "kept"]]}])
    );
    assert!(kept["outcome"].get("error").is_none(), "{kept}");

    // Replay says so too.
    let session = result_of(&events, "UPDATE t SET v = ? || id RETURNING")["session"]
        .as_str()
        .unwrap()
        .to_string();
    let kubectl_sluice =
        Path::new(env!("CARGO_BIN_EXE_sluice-sidecar")).with_file_name("kubectl-sluice");
    assert!(
        kubectl_sluice.exists(),
        "build it first: cargo build -p kubectl-sluice"
    );
    let out = Command::new(kubectl_sluice)
        .args(["replay", &session, "--no-delay", "--audit"])
        .arg(&sidecar.audit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("(rolled back, not kept: Sluice rolled the write back"),
        "{text}"
    );
}
