//! SIGTERM is a shutdown (what the kubelet sends at every rollout): the
//! sidecar stops accepting, ends idle sessions at once with FATAL 57P01
//! saying it is shutting down, lets a statement in flight finish (then ends
//! its session the same way), records the end of every session, writes the
//! audit log out and exits 0. No event is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;

/// Polls `check` every 20 ms until it holds, for at most 20 s.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(events: &[serde_json::Value], kind: &str) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["session"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn sigterm_ends_every_session_on_record() {
    let pg = server();
    let db = db_name("sigterm");
    pg.create_database(&db).await;
    let mut sidecar = Sidecar::start_with(
        &manifests(
            pg,
            &db,
            ADMIN,
            "disable",
            &policy("  defaultAction: allow\n"),
        ),
        "shop/report-job",
        &["--shutdown-grace", "4"],
    );
    let mut idle = RawClient::connect(sidecar.port);
    assert!(contains(&idle.simple("SELECT 1"), "SELECT 1"));
    let busy = sidecar.connect().await;
    let sleeping = tokio::spawn(async move {
        let r = busy.simple_query("SELECT pg_sleep(2)").await;
        (busy, r)
    });
    // The sleep's decision is on record (write-ahead): it is in flight.
    until("the sleep is in flight", async || {
        sidecar.audit_text().contains("pg_sleep")
    })
    .await;
    sidecar.signal("TERM");

    // The idle session is ended, saying why (57P01, as PostgreSQL's own
    // shutdown ends its sessions); it takes no new statement.
    let (tags, bytes) = idle.read_messages(1);
    assert_eq!(tags, vec![b'E']);
    let refusal = String::from_utf8_lossy(&bytes).into_owned();
    assert!(refusal.contains("shutting down"), "{refusal}");
    assert!(
        refusal.contains("SFATAL") && refusal.contains("C57P01"),
        "{refusal}"
    );
    // New sessions are refused.
    assert!(try_connect(&sidecar.url()).await.is_err());
    // The statement in flight finishes.
    let (_busy, slept) = sleeping.await.unwrap();
    slept.unwrap();

    let status = sidecar.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", sidecar.log_text());

    // Every event is on record and the chain verifies.
    let text = sidecar.audit_text();
    assert!(text.ends_with('\n'), "{text}");
    sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap();
    let events = sidecar.audit_events();
    let started = ids(&events, "sessionStart");
    assert_eq!(started.len(), 2, "{text}");
    assert_eq!(ids(&events, "sessionEnd"), started, "{text}");
    for end in events.iter().filter(|e| e["type"] == "sessionEnd") {
        let error = end["outcome"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("shut down"), "{end}");
    }
    let slept = events
        .iter()
        .find(|e| {
            e["type"] == "result" && e["command"]["text"].as_str().unwrap().contains("pg_sleep")
        })
        .unwrap_or_else(|| panic!("no result event for the sleep: {text}"));
    assert!(slept["outcome"]["error"].is_null(), "{slept}");
    assert!(
        sidecar
            .log_text()
            .contains("every session's end is on record")
    );
}

#[tokio::test]
async fn sigterm_ends_idle_sessions_at_once_and_busy_ones_after_their_statement() {
    let pg = server();
    let db = db_name("sigterm_idle");
    pg.create_database(&db).await;
    // A grace period far longer than the test may wait: the sidecar must not
    // need it.
    let mut sidecar = Sidecar::start_with(
        &manifests(
            pg,
            &db,
            ADMIN,
            "disable",
            &policy("  defaultAction: allow\n"),
        ),
        "shop/report-job",
        &["--shutdown-grace", "600"],
    );
    let idle = sidecar.connect().await;
    idle.simple_query("SELECT 1").await.unwrap();
    let mut in_tx = RawClient::connect(sidecar.port);
    in_tx.simple("BEGIN");
    let busy = sidecar.connect().await;
    let busy = std::sync::Arc::new(busy);
    let sleeping = {
        let busy = busy.clone();
        tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(2), 'slept'").await })
    };
    until("the sleep is in flight", async || {
        sidecar.audit_text().contains("pg_sleep")
    })
    .await;
    sidecar.signal("TERM");
    until("new sessions are refused", async || {
        try_connect(&sidecar.url()).await.is_err()
    })
    .await;
    // Sent behind the sleep on the same session, once shutting down.
    let after = {
        let busy = busy.clone();
        tokio::spawn(async move { busy.simple_query("SELECT 'after'").await })
    };

    // Idle in a transaction is idle too: ended with 57P01.
    let (tags, bytes) = in_tx.read_messages(1);
    assert_eq!(tags, vec![b'E'], "{}", String::from_utf8_lossy(&bytes));
    assert!(
        contains(&bytes, "C57P01\0"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    // The statement in flight finishes with its rows; what the session sent
    // after it is refused, saying why.
    let slept = sleeping.await.unwrap().unwrap();
    assert!(
        slept.iter().any(|m| matches!(m,
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(1) == Some("slept"))),
        "the sleep's row"
    );
    let refused = after.await.unwrap().unwrap_err();
    assert!(
        message(&refused).contains("shutting down"),
        "{}",
        message(&refused)
    );
    // The idle tokio-postgres session was closed by the sidecar.
    until("the idle session is closed", async || idle.is_closed()).await;

    // Exits (0) long before the 600 s grace period, every end on record.
    let status = sidecar.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{}", sidecar.log_text());
    let text = sidecar.audit_text();
    sluice_policy::audit::verify_lines(text.lines(), &[]).unwrap();
    let events = sidecar.audit_events();
    let started = ids(&events, "sessionStart");
    assert_eq!(started.len(), 3, "{text}");
    assert_eq!(ids(&events, "sessionEnd"), started, "{text}");
    for end in events.iter().filter(|e| e["type"] == "sessionEnd") {
        let error = end["outcome"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("shut down"), "{end}");
        // Ended by their own loops, not by the grace period's end.
        assert!(!error.contains("grace period"), "{end}");
    }
}
