//! `/metrics` of a real sidecar (standalone) with real clients against a
//! real PostgreSQL: every family is there from the start, with the
//! Connection, policy and rule labels, and the values move with traffic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::*;

const SPEC: &str = r#"  defaultAction: allow
  rules:
    - name: no-schema-changes
      match: {statements: [drop, truncate]}
      action: deny
"#;

async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The value of the series `series` (name and labels, exactly as exposed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn expect(text: &str, series: &str, want: f64) {
    assert_eq!(value(text, series), Some(want), "{series} in\n{text}");
}

#[tokio::test]
async fn families_carry_connection_policy_and_rule_and_move_with_traffic() {
    let pg = server();
    let db = db_name("metrics_families");
    pg.create_database(&db).await;
    let sidecar = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(SPEC)),
        "shop/report-job",
    );

    // Before any traffic: every family has its samples, at zero.
    let before = scrape(sidecar.admin_port).await;
    for series in [
        "sluice_statements_total{connection=\"orders-db\",decision=\"allow\"}",
        "sluice_statements_total{connection=\"orders-db\",decision=\"deny\"}",
        "sluice_sessions_total{connection=\"orders-db\",outcome=\"opened\"}",
        "sluice_session_refusals_total{connection=\"orders-db\",reason=\"notBound\"}",
        "sluice_session_refusals_total{connection=\"orders-db\",reason=\"tooManyConnections\"}",
        "sluice_session_refusals_total{connection=\"orders-db\",reason=\"protocolViolation\"}",
        "sluice_session_refusals_total{connection=\"orders-db\",reason=\"unsupported\"}",
        "sluice_active_sessions{connection=\"orders-db\"}",
        "sluice_overhead_seconds_count{connection=\"orders-db\"}",
        "sluice_upstream_latency_seconds_count{connection=\"orders-db\"}",
        "sluice_masked_values_total{connection=\"orders-db\"}",
        "sluice_bytes_total{connection=\"orders-db\",direction=\"fromClient\"}",
        "sluice_approvals_total{step=\"asked\"}",
        "sluice_approvals_pending",
        "sluice_audit_forward_queue",
        "sluice_audit_forward_dropped_total",
        "sluice_token_exchange_failures_total{reason=\"unreachable\"}",
        "sluice_bundle_refresh_failures_total",
    ] {
        expect(&before, series, 0.0);
    }
    // Standalone: the local manifests are in force from the start.
    expect(&before, "sluice_bundle_in_force", 1.0);
    assert!(
        before.contains(&format!(
            "sluice_build_info{{version=\"{}\",binary=\"sidecar\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{before}"
    );

    // Three allowed statements (two simple, one extended) and one denied.
    let c = sidecar.connect().await;
    c.simple_query("CREATE TABLE t (id int)").await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    c.query("SELECT id FROM t WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    let err = c.simple_query("DROP TABLE t").await.unwrap_err();
    assert!(
        message(&err).contains("no-schema-changes"),
        "{}",
        message(&err)
    );

    let after = scrape(sidecar.admin_port).await;
    expect(
        &after,
        "sluice_statements_total{connection=\"orders-db\",decision=\"allow\"}",
        3.0,
    );
    expect(
        &after,
        "sluice_statements_total{connection=\"orders-db\",decision=\"deny\"}",
        1.0,
    );
    expect(
        &after,
        "sluice_rule_decisions_total{connection=\"orders-db\",policy=\"reporting\",rule=\"no-schema-changes\",action=\"deny\"}",
        1.0,
    );
    expect(
        &after,
        "sluice_rule_decisions_total{connection=\"orders-db\",policy=\"reporting\",rule=\"\",action=\"allow\"}",
        3.0,
    );
    expect(
        &after,
        "sluice_sessions_total{connection=\"orders-db\",outcome=\"opened\"}",
        1.0,
    );
    expect(
        &after,
        "sluice_active_sessions{connection=\"orders-db\"}",
        1.0,
    );
    // Sluice's own time is measured for each simple query and each
    // extended-protocol group it forwards (tokio-postgres sends several per
    // query), apart from the upstream's: one more simple query, one more.
    let overhead = "sluice_overhead_seconds_count{connection=\"orders-db\"}";
    let forwarded = value(&after, overhead).unwrap();
    assert!(forwarded >= 3.0, "{after}");
    c.simple_query("SELECT 2").await.unwrap();
    expect(&scrape(sidecar.admin_port).await, overhead, forwarded + 1.0);
    assert!(
        value(
            &after,
            "sluice_upstream_latency_seconds_count{connection=\"orders-db\"}"
        )
        .unwrap()
            >= 3.0,
        "{after}"
    );
    assert!(
        value(
            &after,
            "sluice_bytes_total{connection=\"orders-db\",direction=\"fromClient\"}"
        )
        .unwrap()
            > 0.0,
        "{after}"
    );

    drop(c);
    // A session of an identity no policy binds is refused, and counted by reason.
    let stranger = Sidecar::start(
        &manifests(pg, &db, ADMIN, "disable", &policy(SPEC)),
        "shop/someone-else",
    );
    assert!(try_connect(&stranger.url()).await.is_err());
    let refused = scrape(stranger.admin_port).await;
    expect(
        &refused,
        "sluice_session_refusals_total{connection=\"orders-db\",reason=\"notBound\"}",
        1.0,
    );
    expect(
        &refused,
        "sluice_sessions_total{connection=\"orders-db\",outcome=\"refused\"}",
        1.0,
    );

    // Refused at startup, before any identity matters (#23): a malformed
    // startup packet, and a replication connection; each counted by reason.
    let malformed = raw_startup(stranger.port, &[0, 0, 0, 9, 0, 3, 0, 0, b'x']).await;
    assert!(malformed.contains("08P01"), "{malformed}");
    let mut replication = Vec::new();
    for part in ["user", "report", "replication", "database", ""] {
        replication.extend_from_slice(part.as_bytes());
        replication.push(0);
    }
    let mut packet = ((replication.len() + 8) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&196_608u32.to_be_bytes());
    packet.extend_from_slice(&replication);
    let answer = raw_startup(stranger.port, &packet).await;
    assert!(answer.contains("0A000"), "{answer}");
    let counted = scrape(stranger.admin_port).await;
    for reason in ["protocolViolation", "unsupported"] {
        expect(
            &counted,
            &format!(
                "sluice_session_refusals_total{{connection=\"orders-db\",reason=\"{reason}\"}}"
            ),
            1.0,
        );
    }
}

/// What the sidecar answers `packet` sent as a client's first bytes, up to
/// its close (bounded).
async fn raw_startup(port: u16, packet: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(packet).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out));
    let _ = read.await.expect("the sidecar closes after refusing");
    String::from_utf8_lossy(&out).into_owned()
}
