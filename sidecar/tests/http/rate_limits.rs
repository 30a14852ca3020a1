//! `limits.statementsPerSecond` is one token bucket per identity and
//! Connection, shared by all of the sidecar's sessions (a pool of N client
//! connections gets the rate in total, not N times it), kept across policy
//! edits, and honoured by the HTTP plane for requests.
//!
//! Counts, not timings: the bucket holds one second's worth of tokens
//! (`rate`) and earns `rate` per second, so over a window of `t` seconds it
//! admits at most `rate + rate * t` statements. The tests measure `t`
//! around everything they send (an upper bound of the bucket's window) and
//! assert the count is within that bound; a slow machine only loosens it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::http_support;

use sluice_e2e::harness::HttpConnection;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use sluice_crds::AccessPolicy;
use sluice_policy::engine::{CompiledPolicy, Identity, NoSecrets};
use sluice_sidecar::enforcement::Standing;
use tokio::sync::watch;

/// The most a bucket of `rate` per second admits over `elapsed`.
fn most(rate: u32, elapsed: Duration) -> f64 {
    f64::from(rate) * (1.0 + elapsed.as_secs_f64())
}

/// Runs `sql` on `c` (simple protocol when `simple`, else extended);
/// `true` when it ran, `false` when the rate limit refused it.
async fn ran(c: &tokio_postgres::Client, sql: &str, simple: bool) -> bool {
    let result = if simple {
        c.simple_query(sql).await.map(|_| ())
    } else {
        c.query(sql, &[]).await.map(|_| ())
    };
    match result {
        Ok(()) => true,
        Err(e) => {
            assert!(
                message(&e).contains("statementsPerSecond"),
                "only the rate limit may refuse: {}",
                message(&e)
            );
            false
        }
    }
}

/// Polls (with a deadline) until `c` may run a statement again.
async fn admitted_again(c: &tokio_postgres::Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ran(c, "SELECT 1", true).await {
        assert!(Instant::now() < deadline, "the bucket never refilled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_pool_of_sessions_gets_the_identitys_rate_in_total() {
    let pg = server();
    let db = db_name("rate_pool");
    pg.create_database(&db).await;
    let sidecar = Sidecar::start(
        &manifests(
            pg,
            &db,
            ADMIN,
            "disable",
            &policy("  defaultAction: allow\n  limits: {statementsPerSecond: 1}\n"),
        ),
        "shop/report-job",
    );
    // A pool of five connections, opened before the clock starts.
    let mut pool = Vec::new();
    for _ in 0..5 {
        pool.push(sidecar.connect().await);
    }
    let started = Instant::now();
    let mut allowed = 0;
    for round in 0..4 {
        for (i, c) in pool.iter().enumerate() {
            // Both protocols count against the same bucket.
            if ran(c, "SELECT 1", (i + round) % 2 == 0).await {
                allowed += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(allowed >= 1, "the first statement must run");
    assert!(
        f64::from(allowed) <= most(1, elapsed),
        "{allowed} of 20 statements ran in {elapsed:?} across 5 sessions, at 1 per second for the identity"
    );
    // Refused, not broken: every session runs again once the bucket refills.
    for c in &pool {
        admitted_again(c).await;
    }
}

/// A policy binding the identity to `testdb` with `limits` and masking `columns`.
fn standing(limits: serde_json::Value, columns: &[&str]) -> Standing {
    let masking: Vec<_> = columns
        .iter()
        .map(|c| json!({"columns": [c], "strategy": "redact"}))
        .collect();
    let ap: AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {
            "subjects": [{"serviceAccount": "report-job"}],
            "connections": ["testdb"],
            "defaultAction": "allow",
            "limits": limits,
            "masking": masking,
        }
    }))
    .unwrap();
    let compiled = Arc::new(CompiledPolicy::compile(&ap, &NoSecrets).unwrap());
    let identity = Identity::parse("shop/report-job").unwrap();
    // Run mode keys the masking and limits by their text; a new key is a
    // new Masking for running sessions, as a policy edit makes.
    Standing::select(&[compiled], &identity, "testdb", None, false)
        .with_masking_key(&format!("{limits}{columns:?}"))
}

/// A listener whose binding follows `rx`, as run mode's bundles feed it.
async fn live_listener(db: &str, rx: watch::Receiver<Standing>) -> u16 {
    common::serve_live(
        server(),
        db,
        Identity::parse("shop/report-job").unwrap(),
        rx,
    )
    .await
}

#[tokio::test]
async fn a_policy_edit_neither_resets_the_bucket_nor_refills_it() {
    let pg = server();
    let db = db_name("rate_edit");
    pg.create_database(&db).await;
    let (tx, rx) = watch::channel(standing(json!({"statementsPerSecond": 1}), &[]));
    let port = live_listener(&db, rx).await;
    let url = format!("host=127.0.0.1 port={port} user=app dbname={db}");
    let a = connect(&url).await;
    let b = connect(&url).await;

    let started = Instant::now();
    let mut allowed = 0;
    for c in [&a, &b] {
        allowed += usize::from(ran(c, "SELECT 1", true).await);
    }
    // An edit that keeps the rate (a masking rule added): the bucket is kept.
    tx.send_replace(standing(json!({"statementsPerSecond": 1}), &["x.y"]));
    for c in [&a, &b, &a, &b] {
        allowed += usize::from(ran(c, "SELECT 1", false).await);
    }
    let elapsed = started.elapsed();
    assert!(allowed >= 1, "the first statement must run");
    assert!(
        allowed as f64 <= most(1, elapsed),
        "{allowed} statements ran in {elapsed:?} at 1 per second: the edit reset the bucket"
    );

    // A higher rate applies at once, with no free refill: what runs is what
    // the bucket earned since, at most 5 per second.
    let started = Instant::now();
    tx.send_replace(standing(json!({"statementsPerSecond": 5}), &["x.y"]));
    let mut allowed = 0;
    for _ in 0..5 {
        for c in [&a, &b] {
            allowed += usize::from(ran(c, "SELECT 1", true).await);
        }
    }
    let elapsed = started.elapsed();
    // What the old bucket may have held (at most one second's worth at 1/s)
    // plus what 5/s earns over the window.
    assert!(
        allowed as f64 <= 1.0 + 5.0 * elapsed.as_secs_f64(),
        "{allowed} statements ran in {elapsed:?} right after the rate went to 5: the edit refilled the bucket"
    );
    admitted_again(&a).await;
}

// === HTTP: requests per second ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_share_the_identitys_rate_across_connections() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use std::sync::atomic::Ordering;

    let (up, ca, hits) = http_support::start_counted_upstream(tls_upstream_acceptor(
        "sluice rate test CA",
        &["localhost", "127.0.0.1"],
        &[b"http/1.1"],
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let manifests = sluice_e2e::harness::http_connection_manifests(&HttpConnection {
        base_url: &format!("https://localhost:{}", up.port()),
        ca_pem: Some(&*ca),
        secret: &[("Authorization", "Bearer t")],
        headers: &["Authorization"],
        listen: &port.to_string(),
        policy: r#"  defaultAction: allow
  limits: {statementsPerSecond: 1}
"#,
    });
    let path = dir.path().join("manifests.yaml");
    std::fs::write(&path, manifests).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut cfg = sluice_sidecar::standalone::StandaloneConfig::new(path, "shop/app".into());
    cfg.audit_stdout = false;
    cfg.audit_file = Some(audit.clone());
    let running = sluice_sidecar::standalone::start(cfg).await.unwrap();
    let sidecar = running.listeners[0].1;

    // Five clients, each its own connection pool: separate TCP connections.
    let clients: Vec<Client<_, Empty<Bytes>>> = (0..5)
        .map(|_| Client::builder(TokioExecutor::new()).build_http())
        .collect();
    let send = |c: &Client<_, Empty<Bytes>>| {
        let req = hyper::Request::get(format!("http://{sidecar}/v1/things"))
            .body(Empty::new())
            .unwrap();
        let fut = c.request(req);
        async move {
            let resp = tokio::time::timeout(Duration::from_secs(60), fut)
                .await
                .expect("the sidecar answered in time")
                .unwrap();
            let status = resp.status().as_u16();
            let retry = resp.headers().get("retry-after").cloned();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, retry, body)
        }
    };
    let started = Instant::now();
    let mut allowed = 0;
    for _ in 0..4 {
        for c in &clients {
            let (status, retry, body) = send(c).await;
            match status {
                200 => allowed += 1,
                429 => {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(v["error"], "rateLimited", "{v}");
                    assert!(
                        v["message"]
                            .as_str()
                            .unwrap()
                            .contains("statementsPerSecond"),
                        "{v}"
                    );
                    assert!(retry.is_some(), "a 429 says when to retry");
                }
                other => panic!("unexpected status {other}: {body:?}"),
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(allowed >= 1, "the first request must pass");
    assert!(
        f64::from(allowed) <= most(1, elapsed),
        "{allowed} of 20 requests passed in {elapsed:?} at 1 per second for the identity"
    );
    // Refused requests never reached the upstream, and each is on record.
    assert_eq!(hits.load(Ordering::SeqCst), allowed as usize);
    let refusals = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .filter(|l| l.contains("statementsPerSecond"))
        .count();
    assert_eq!(refusals, 20 - allowed as usize);
}
