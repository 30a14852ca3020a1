//! Audit durability (`spec.audit.durability`, docs/DESIGN.md §7), through
//! the standalone sidecar against a real PostgreSQL, with real clients:
//!
//! - `writeAhead` (the default): killed with SIGKILL under load, the log holds
//!   the decision record of every statement that ran.
//! - `batched`: killed with SIGKILL under load, at most one batch
//!   (`SLUICE_AUDIT_BATCH_EVENTS`) of records of statements that ran is
//!   missing, and the chain verifies up to the last whole line; a
//!   statement's decision and result are one event.
//! - `batched`: SIGTERM writes the queue out.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use crate::common;

use std::time::{Duration, Instant};

use common::*;

/// The Connection of [`manifests`] with `spec.audit.durability: durability`.
fn with_durability(manifests: &str, durability: &str) -> String {
    let listen = "  listen: {port: {PORT}}\n";
    assert!(manifests.contains(listen));
    manifests.replace(
        listen,
        &format!("{listen}  audit: {{durability: {durability}}}\n"),
    )
}

/// A database with a table `t` whose every row is one statement that ran.
async fn database(test: &str) -> (String, tokio_postgres::Client) {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    let direct = connect(&pg.admin_url(&db)).await;
    direct
        .batch_execute("CREATE TABLE t (id bigserial PRIMARY KEY)")
        .await
        .unwrap();
    (db, direct)
}

async fn rows(direct: &tokio_postgres::Client) -> i64 {
    direct
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0)
}

/// Starts `clients` sessions through the sidecar, each inserting one row per
/// statement until its connection fails; returns once `at_least` rows are in
/// the table (polled, 60 s deadline).
async fn load(
    sidecar: &Sidecar,
    direct: &tokio_postgres::Client,
    clients: usize,
    at_least: i64,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = sidecar.connect().await;
        tasks.push(tokio::spawn(async move {
            while client
                .simple_query("INSERT INTO t DEFAULT VALUES")
                .await
                .is_ok()
            {}
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while rows(direct).await < at_least {
        assert!(
            Instant::now() < deadline,
            "fewer than {at_least} rows within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tasks
}

/// The audit file up to its last whole line (a SIGKILL may cut a write),
/// verified as one chain; returns how many `statement` events record an
/// INSERT, and how many of those carry their result's outcome (batched
/// mode: decision and result in one event).
fn inserts_and_joined(sidecar: &Sidecar) -> (usize, usize) {
    let text = std::fs::read_to_string(&sidecar.audit).unwrap_or_default();
    let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    // The callers' counts make this non-vacuous (hundreds of statements ran).
    sluice_policy::audit::verify_lines(whole.lines(), &[])
        .unwrap_or_else(|e| panic!("the audit log does not verify: {e:?}"));
    let inserts: Vec<serde_json::Value> = whole
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| {
            e["type"] == "statement"
                && e["command"]["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("INSERT"))
        })
        .collect();
    let joined = inserts.iter().filter(|e| e["outcome"]["rows"] == 1).count();
    (inserts.len(), joined)
}

async fn kill_under_load(
    sidecar: &mut Sidecar,
    direct: &tokio_postgres::Client,
) -> (i64, (usize, usize)) {
    let tasks = load(sidecar, direct, 4, 400).await;
    sidecar.signal("KILL");
    sidecar.wait_exit(Duration::from_secs(20));
    for t in tasks {
        // Each client ends when its connection fails.
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("a client did not see the sidecar die")
            .unwrap();
    }
    (rows(direct).await, inserts_and_joined(sidecar))
}

/// writeAhead: every statement that ran has its decision on record, even
/// when the sidecar is killed (SIGKILL) in the middle of the load.
#[tokio::test]
async fn write_ahead_sigkill_loses_no_statement_that_ran() {
    let (db, direct) = database("durability_wa_kill").await;
    let m = manifests(
        server(),
        &db,
        ADMIN,
        "disable",
        &policy("  defaultAction: allow\n"),
    );
    let mut sidecar = Sidecar::start(&with_durability(&m, "writeAhead"), "shop/report-job");
    let (ran, (recorded, _)) = kill_under_load(&mut sidecar, &direct).await;
    assert!(ran >= 400, "{ran}");
    assert!(
        recorded as i64 >= ran,
        "{ran} INSERTs ran but only {recorded} are on record"
    );
}

/// batched: a SIGKILL under load loses at most one batch of records of
/// statements that ran (here 16, with a window far longer than the test:
/// what bounds the loss is the batch size, enforced by making the clients
/// wait), and the log verifies up to its last whole line. The statements
/// on record are mostly one event each, decision and result joined (held
/// decisions count in the batch: the bound holds with them).
#[tokio::test]
async fn batched_sigkill_loses_at_most_one_batch() {
    const BATCH: i64 = 16;
    let (db, direct) = database("durability_batched_kill").await;
    let m = manifests(
        server(),
        &db,
        ADMIN,
        "disable",
        &policy("  defaultAction: allow\n"),
    );
    let mut sidecar = Sidecar::start_env(
        &with_durability(&m, "batched"),
        "shop/report-job",
        &[],
        &[
            ("SLUICE_AUDIT_BATCH_MS", "60000"),
            ("SLUICE_AUDIT_BATCH_EVENTS", &BATCH.to_string()),
        ],
    );
    let (ran, (recorded, joined)) = kill_under_load(&mut sidecar, &direct).await;
    assert!(ran >= 400, "{ran}");
    assert!(
        ran - recorded as i64 <= BATCH,
        "{ran} INSERTs ran, {recorded} are on record: more than a batch of {BATCH} lost"
    );
    assert!(
        joined * 4 > recorded,
        "only {joined} of {recorded} INSERTs on record are joined with their result"
    );
}

/// batched: records wait in memory (a window longer than the test, a batch
/// larger than it), and SIGTERM writes them all out before the exit.
#[tokio::test]
async fn batched_sigterm_writes_the_queue() {
    let (db, direct) = database("durability_batched_term").await;
    let m = manifests(
        server(),
        &db,
        ADMIN,
        "disable",
        &policy("  defaultAction: allow\n"),
    );
    let mut sidecar = Sidecar::start_env(
        &with_durability(&m, "batched"),
        "shop/report-job",
        &["--shutdown-grace", "5"],
        &[
            ("SLUICE_AUDIT_BATCH_MS", "60000"),
            ("SLUICE_AUDIT_BATCH_EVENTS", "65536"),
        ],
    );
    let client = sidecar.connect().await;
    for _ in 0..50 {
        client
            .simple_query("INSERT INTO t DEFAULT VALUES")
            .await
            .unwrap();
    }
    assert_eq!(rows(&direct).await, 50);
    // Queued, not written: the window and the batch are far from full.
    let before = std::fs::read_to_string(&sidecar.audit).unwrap_or_default();
    assert!(!before.contains("INSERT"), "written early:\n{before}");
    sidecar.signal("TERM");
    let status = sidecar.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", sidecar.log_text());
    drop(client);
    // Every result came while its decision was held: each INSERT is one
    // event with its outcome (no separate `result` event).
    assert_eq!(inserts_and_joined(&sidecar), (50, 50));
    let events = sidecar.audit_events();
    let ends = events.iter().filter(|e| e["type"] == "sessionEnd").count();
    let results = events.iter().filter(|e| e["type"] == "result").count();
    assert_eq!((ends, results), (1, 0), "{events:?}");
}
