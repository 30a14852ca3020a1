//! Bounds an HTTP client cannot get around (issue #17 item 7): a client
//! trickling its headers (slowloris) and an idle keep-alive connection are
//! closed, a listener holds at most its connections (`503` past them, the
//! slot reused once freed), and a shutdown lets the request in flight finish
//! while idle connections close. The sidecar runs in-process (standalone)
//! before a real HTTPS upstream; the clients are raw TCP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::http_support;

use sluice_e2e::harness::HttpConnection;
use std::net::SocketAddr;
use std::time::Duration;

use sluice_sidecar::limits::Limits;
use sluice_sidecar::standalone::{self, StandaloneConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on every wait of these tests (the timeouts configured are 1 s).
const WAIT: Duration = Duration::from_secs(20);

/// The sidecar before a real upstream, with `limits`.
async fn start(limits: Limits) -> (standalone::Running, SocketAddr, tempfile::TempDir) {
    start_as(limits, "shop/app").await
}

/// [`start`] as the service account `identity`.
async fn start_as(
    limits: Limits,
    identity: &str,
) -> (standalone::Running, SocketAddr, tempfile::TempDir) {
    let (up, ca) = http_support::start_upstream(common::tls_upstream_acceptor(
        "sluice http limits test CA",
        &["localhost", "127.0.0.1"],
        &[b"http/1.1"],
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let manifests = sluice_e2e::harness::http_connection_manifests(&HttpConnection {
        base_url: &format!("https://localhost:{}", up.port()),
        ca_pem: Some(&*ca),
        secret: &[("Authorization", "Bearer t")],
        headers: &["Authorization"],
        listen: &port.to_string(),
        policy: r#"  rules:
    - name: no-admin
      match: {paths: ["/admin/**"]}
      action: deny
"#,
    });
    let path = dir.path().join("manifests.yaml");
    std::fs::write(&path, manifests).unwrap();
    let mut cfg = StandaloneConfig::new(path, identity.into());
    cfg.audit_stdout = false;
    cfg.audit_file = Some(dir.path().join("audit.jsonl"));
    cfg.planes.limits = limits;
    cfg.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    let running = standalone::start(cfg).await.unwrap();
    let addr = running.listeners[0].1;
    (running, addr, dir)
}

fn limits(header: u64, idle: u64, max_connections: usize) -> Limits {
    Limits {
        http_header_timeout: Duration::from_secs(header),
        http_idle_timeout: Duration::from_secs(idle),
        max_connections,
        ..Limits::default()
    }
}

/// Everything the sidecar sends until it closes the connection; `Err` with
/// what it sent if it still holds it after [`WAIT`].
async fn read_to_close(stream: &mut TcpStream) -> Result<Vec<u8>, Vec<u8>> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) => return Ok(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            // Closed with the client's bytes unread: a reset, still a close.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(out),
            Ok(Err(e)) => panic!("read failed: {e}"),
            Err(_) => return Err(out),
        }
    }
}

/// One complete response of a keep-alive connection (headers and a body of
/// `content-length` bytes).
async fn read_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().unwrap())
                })
                .expect("a content-length");
            if out.len() >= end + 4 + len {
                return text;
            }
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed mid-response: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

const REQUEST: &[u8] = b"GET /small HTTP/1.1\r\nHost: api\r\n\r\n";

#[tokio::test]
async fn a_client_trickling_its_headers_is_closed() {
    // The idle timeout is longer than the test's wait: only the header
    // timeout can close these.
    let (_running, addr, _dir) = start(limits(1, 3600, 100)).await;

    // Half a request line, then nothing.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /small HT").await.unwrap();
    let sent = read_to_close(&mut half)
        .await
        .expect("a client sending half a request line is closed");
    assert_eq!(sent, b"", "closed without an answer");

    // A connection that sends nothing at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    read_to_close(&mut silent)
        .await
        .expect("a connection that sends nothing is closed");

    // A byte at a time: each byte does not restart the clock.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let header = b"GET /small HTTP/1.1\r\nHost: api\r\nX-Pad: "
        .iter()
        .copied();
    let mut bytes = header.chain(std::iter::repeat(b'a'));
    let closed = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a client trickling its headers was held past {WAIT:?}"
        );
        let byte = bytes.next().unwrap();
        if trickle.write_all(&[byte]).await.is_err() {
            break true;
        }
        // A close shows as EOF (or a reset) on read.
        let mut b = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), trickle.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => panic!("answered a partial request: {:?}", &b[..n]),
            Err(_) => {}
        }
    };
    assert!(closed);

    // A client sending its request in time is served, on the same listener.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(REQUEST).await.unwrap();
    let response = read_response(&mut client).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    // The header timeout is longer than the test's wait: only the idle
    // timeout can close it.
    let (_running, addr, _dir) = start(limits(3600, 1, 100)).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        client.write_all(REQUEST).await.unwrap();
        let response = read_response(&mut client).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            !response.to_ascii_lowercase().contains("connection: close"),
            "kept alive: {response}"
        );
    }
    let rest = read_to_close(&mut client)
        .await
        .expect("an idle keep-alive connection is closed");
    assert_eq!(rest, b"", "closed without a word");
}

#[tokio::test]
async fn a_listener_holds_at_most_its_connections() {
    let (running, addr, _dir) = start(limits(3600, 3600, 2)).await;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    // Both admitted (served) before the third arrives.
    for s in [&mut a, &mut b] {
        s.write_all(REQUEST).await.unwrap();
        let response = read_response(s).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let mut c = TcpStream::connect(addr).await.unwrap();
    let refused =
        String::from_utf8(read_to_close(&mut c).await.expect("refused and closed")).unwrap();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.contains("too many connections to Connection api") && refused.contains("at most 2"),
        "says why: {refused}"
    );
    // The two admitted are still served.
    b.write_all(REQUEST).await.unwrap();
    assert!(read_response(&mut b).await.starts_with("HTTP/1.1 200"));
    // The refusal is counted by reason (#23).
    let mut admin = TcpStream::connect(running.admin.unwrap()).await.unwrap();
    admin
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&read_to_close(&mut admin).await.unwrap()).into_owned();
    let series =
        "sluice_session_refusals_total{connection=\"api\",reason=\"tooManyConnections\"} 1";
    assert!(
        metrics.lines().any(|l| l == series),
        "{series} in\n{metrics}"
    );

    // A freed slot is taken by the next connection.
    drop(a);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut d = TcpStream::connect(addr).await.unwrap();
        d.write_all(REQUEST).await.unwrap();
        let mut buf = [0u8; 12];
        let head = match tokio::time::timeout(WAIT, d.read_exact(&mut buf)).await {
            Ok(Ok(_)) => String::from_utf8_lossy(&buf).to_string(),
            other => format!("{other:?}"),
        };
        if head == "HTTP/1.1 200" {
            break;
        }
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot freed by a closed connection was not reused within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_shutdown_closes_idle_connections_and_answers_the_request_in_flight() {
    let (running, addr, dir) = start(limits(3600, 3600, 100)).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(REQUEST).await.unwrap();
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));
    // The upstream answers /slow after 10 s.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: api\r\n\r\n")
        .await
        .unwrap();
    // In flight once decided (the audit is write-ahead).
    let audit = dir.path().join("audit.jsonl");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&audit)
        .unwrap_or_default()
        .contains("/slow")
    {
        assert!(tokio::time::Instant::now() < deadline, "/slow not decided");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shutdown = tokio::spawn(running.shutdown(Duration::from_secs(60)));
    assert_eq!(
        read_to_close(&mut idle)
            .await
            .expect("an idle connection is closed at the shutdown"),
        b""
    );
    // Not accepting any more.
    let deadline = tokio::time::Instant::now() + WAIT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = String::from_utf8(
        read_to_close(&mut busy)
            .await
            .expect("the request in flight is answered, then the connection closed"),
    )
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let report = shutdown.await.unwrap();
    assert_eq!(report.ended_by_sidecar, 0, "{report:?}");
}

/// A request of an identity no policy binds is refused (403) and counted as
/// a refusal by reason, as the PostgreSQL plane counts its sessions (#23).
#[tokio::test]
async fn an_unbound_identitys_requests_are_counted_as_refusals() {
    let (running, addr, _dir) = start_as(limits(3600, 3600, 8), "shop/stranger").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(REQUEST).await.unwrap();
    let response = read_response(&mut s).await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    let mut admin = TcpStream::connect(running.admin.unwrap()).await.unwrap();
    admin
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&read_to_close(&mut admin).await.unwrap()).into_owned();
    let series = "sluice_session_refusals_total{connection=\"api\",reason=\"notBound\"} 1";
    assert!(
        metrics.lines().any(|l| l == series),
        "{series} in\n{metrics}"
    );
}
