//! `/metrics` of a real operator on the test control plane: every family
//! is there from the start, and the gauges and histograms follow what the
//! operator does (leading, reconciling, answering, its certificates).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{Env, bounded};

async fn scrape(env: &Env) -> String {
    let (status, _, body) = env.call("GET", "/metrics", &[], None).await;
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of the series `series` (name and labels, exactly as exposed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Scrapes until `check` holds of the text (bounded), and returns that text.
async fn until(env: &Env, what: &str, check: impl Fn(&str) -> bool) -> String {
    bounded(what, async {
        loop {
            let text = scrape(env).await;
            if check(&text) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_are_present_and_follow_the_operator() {
    let env = Env::start().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let text = scrape(&env).await;
    assert!(
        text.contains(&format!(
            "sluice_build_info{{version=\"{}\",binary=\"operator\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    for series in [
        "sluice_access_requests{phase=\"pending\"}",
        "sluice_access_requests{phase=\"notRun\"}",
        "sluice_access_request_oldest_pending_timestamp_seconds",
        "sluice_gateway_request_duration_seconds_count{route=\"mutateAccessRequests\"}",
        "sluice_reconcile_duration_seconds_count{controller=\"accessPolicy\"}",
        "sluice_gateway_bundle_waiting",
    ] {
        assert!(
            value(&text, series).is_some(),
            "{series} missing from\n{text}"
        );
    }

    // The only replica leads; its certificates and key are read.
    let text = until(&env, "leader, certificate and key gauges", |t| {
        value(t, "sluice_leader") == Some(1.0)
            && value(t, "sluice_signing_key_created_timestamp_seconds").unwrap_or(0.0) > 0.0
            && value(
                t,
                "sluice_certificate_expiration_timestamp_seconds{certificate=\"serving\"}",
            )
            .unwrap_or(0.0)
                > now
    })
    .await;
    let ca = value(
        &text,
        "sluice_certificate_expiration_timestamp_seconds{certificate=\"ca\"}",
    )
    .unwrap();
    assert!(ca > now, "the CA expires in the future: {ca}");
    let key = value(&text, "sluice_signing_key_created_timestamp_seconds").unwrap();
    assert!(key <= now + 5.0, "the key was made before now: {key}");

    // The quickstart's Connection and policy were reconciled, and timed.
    let text = until(&env, "reconciles timed", |t| {
        value(
            t,
            "sluice_reconcile_duration_seconds_count{controller=\"connection\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
            && value(
                t,
                "sluice_reconcile_duration_seconds_count{controller=\"accessPolicy\"}",
            )
            .unwrap_or(0.0)
                >= 1.0
    })
    .await;
    assert!(text.contains("sluice_reconciles_total{controller=\"accessPolicy\",outcome=\"ok\"}"));

    // A bundle poll without a token: refused, counted and timed under its route.
    let before = value(
        &text,
        "sluice_gateway_request_duration_seconds_count{route=\"bundle\"}",
    )
    .unwrap();
    let (status, _, _) = env.call("GET", "/v1/bundle", &[], None).await;
    assert_eq!(status, 401);
    let text = scrape(&env).await;
    assert_eq!(
        value(
            &text,
            "sluice_gateway_request_duration_seconds_count{route=\"bundle\"}"
        ),
        Some(before + 1.0),
        "{text}"
    );
    // One label style: camelCase words, whatever the code's own spelling.
    for line in text
        .lines()
        .filter(|l| l.starts_with("sluice_gateway_requests_total{"))
    {
        assert!(
            !line.contains('_') || !line.split('{').nth(1).unwrap().contains('_'),
            "{line}"
        );
    }
}
