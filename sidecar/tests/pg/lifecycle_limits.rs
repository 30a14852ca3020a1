//! Bounds a PostgreSQL client cannot get around: a client that sends
//! nothing is dropped after the startup timeout, and a listener holds at
//! most its connections (`FATAL 53300` past them), so idle clients cannot
//! starve the others.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use crate::common;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use common::*;

async fn sidecar(test: &str, extra: &[&str]) -> Sidecar {
    let pg = server();
    let db = db_name(test);
    pg.create_database(&db).await;
    Sidecar::start_with(
        &manifests(
            pg,
            &db,
            ADMIN,
            "disable",
            &policy("  defaultAction: allow\n"),
        ),
        "shop/report-job",
        extra,
    )
}

/// Everything the sidecar sends until it closes (20 s at most: then the
/// test fails, the sidecar having held the client).
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut out = Vec::new();
    match stream.read_to_end(&mut out) {
        Ok(_) => out,
        // Closed with the client's bytes unread: a reset, still a close.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => out,
        Err(e) => panic!("the sidecar did not close the connection: {e}; read {out:?}"),
    }
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_dropped() {
    let sidecar = sidecar("startup_timeout", &["--pg-startup-timeout", "1"]).await;
    let mut silent = TcpStream::connect(("127.0.0.1", sidecar.port)).unwrap();
    assert_eq!(read_to_close(&mut silent), b"");
    // Half a startup packet, then nothing: dropped too.
    let mut trickle = TcpStream::connect(("127.0.0.1", sidecar.port)).unwrap();
    std::io::Write::write_all(&mut trickle, &[0, 0, 0, 40, 0, 3]).unwrap();
    assert_eq!(read_to_close(&mut trickle), b"");
    // A real client is served.
    let client = sidecar.connect().await;
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn a_listener_holds_at_most_its_connections() {
    let sidecar = sidecar("max_connections", &["--max-connections", "2"]).await;
    let first = TcpStream::connect(("127.0.0.1", sidecar.port)).unwrap();
    let _second = TcpStream::connect(("127.0.0.1", sidecar.port)).unwrap();
    let mut third = TcpStream::connect(("127.0.0.1", sidecar.port)).unwrap();
    let answer = read_to_close(&mut third);
    assert_eq!(answer.first(), Some(&b'E'), "{answer:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("FATAL") && text.contains("53300"), "{text}");
    assert!(
        text.contains("too many connections to Connection orders-db"),
        "{text}"
    );
    // Counted by reason (#23): at least this one (a connection of the
    // harness's readiness probe may still hold a slot, and be refused too).
    let series =
        "sluice_session_refusals_total{connection=\"orders-db\",reason=\"tooManyConnections\"} ";
    let mut admin = TcpStream::connect(("127.0.0.1", sidecar.admin_port)).unwrap();
    std::io::Write::write_all(
        &mut admin,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let metrics = String::from_utf8_lossy(&read_to_close(&mut admin)).into_owned();
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(refused >= 1.0, "{series} in\n{metrics}");
    // A slot freed is a slot for the next client.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(client) = try_connect(&sidecar.url()).await
            && client.simple_query("SELECT 1").await.is_ok()
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no slot freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
