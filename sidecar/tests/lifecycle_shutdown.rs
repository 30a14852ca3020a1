//! SIGTERM is a shutdown (what the kubelet sends at every rollout): the
//! sidecar stops accepting, refuses new statements saying it is shutting
//! down, lets a statement in flight finish, records the end of every
//! session, writes the audit log out and exits 0. No event is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

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
    let idle = sidecar.connect().await;
    idle.simple_query("SELECT 1").await.unwrap();
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

    // New statements are refused, saying why.
    let mut refusal = String::new();
    until("a statement is refused", async || {
        match idle.simple_query("SELECT 1").await {
            Ok(_) => false,
            Err(e) => {
                refusal = message(&e);
                true
            }
        }
    })
    .await;
    assert!(refusal.contains("shutting down"), "{refusal}");
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
