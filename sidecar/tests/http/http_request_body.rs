//! Request bodies that break their own framing (issue #17 item 8): a
//! malformed chunk, a body cut off mid-way (chunked or with a
//! Content-Length), a chunked body above the buffering limit. Each is
//! refused with a 4xx before the upstream sees anything of the request (it
//! was a 502 after the headers and half the body had been forwarded).
//! Raw bytes against the Python upstream (tests/http_upstream.py), whose
//! /__log shows what arrived; no rule reads bodies here, so only request
//! buffering stands between a broken body and the upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use crate::common;

use sluice_e2e::harness::HttpConnection;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use sluice_sidecar::standalone::{self, StandaloneConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(60);
/// The sidecar's buffering limit in these tests.
const MAX_BODY: usize = 64 * 1024;

/// The Python upstream; killed on drop.
struct Upstream {
    child: std::process::Child,
    port: u16,
}

impl Upstream {
    fn start() -> Upstream {
        use std::io::BufRead;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/http_upstream.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (the upstream of these tests)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the upstream printed its port");
        Upstream { child, port }
    }

    /// What the upstream received so far, asked of it directly.
    async fn log(&self) -> Vec<Value> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let reply = send(
            addr,
            b"GET /__log HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            true,
        )
        .await;
        let at = memchr::memmem::find(&reply, b"\r\n\r\n").unwrap();
        serde_json::from_slice::<Value>(&reply[at + 4..])
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `request`; with `close`, half-closes the connection after it (a
/// client that stops sending mid-body); reads the answer to the end.
async fn send(addr: SocketAddr, request: &[u8], close: bool) -> Vec<u8> {
    tokio::time::timeout(WAIT, async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        if close {
            s.shutdown().await.unwrap();
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    })
    .await
    .expect("the answer came in time")
}

fn status(reply: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(reply);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"))
}

async fn sidecar(upstream: &Upstream, dir: &tempfile::TempDir) -> SocketAddr {
    let port = common::free_port();
    let manifests = sluice_e2e::harness::http_connection_manifests(&HttpConnection {
        base_url: &format!("http://127.0.0.1:{}", upstream.port),
        ca_pem: None,
        secret: &[("Authorization", "Bearer sk_test_1")],
        headers: &["Authorization"],
        listen: &port.to_string(),
        policy: r#"  defaultAction: allow
  rules:
    - {name: no-admin, match: {paths: ["/admin/**"]}, action: deny}
"#,
    });
    let path = dir.path().join("manifests.yaml");
    std::fs::write(&path, manifests).unwrap();
    let mut cfg = StandaloneConfig::new(path, "shop/app".into());
    cfg.audit_stdout = false;
    cfg.audit_file = Some(dir.path().join("audit.jsonl"));
    cfg.planes.http_upstream_timeout = Duration::from_secs(20);
    cfg.planes.http_max_request_body = MAX_BODY;
    let running = standalone::start(cfg).await.unwrap();
    running.listeners[0].1
}

fn head(path: &str, framing: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{framing}\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_request_body_is_refused_before_the_upstream_sees_it() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let addr = sidecar(&upstream, &dir).await;
    let chunked = "transfer-encoding: chunked\r\n";
    let big = "x".repeat(MAX_BODY + 1);
    // (what, request bytes, half-close after sending, expected status)
    let cases: Vec<(&str, String, bool, u16)> = vec![
        (
            "a chunk size that is not hex",
            format!(
                "{}5\r\nhello\r\nZZ\r\nworld\r\n0\r\n\r\n",
                head("/broken-size", chunked)
            ),
            false,
            400,
        ),
        (
            "a chunk longer than its size",
            format!("{}3\r\nhello\r\n0\r\n\r\n", head("/broken-chunk", chunked)),
            false,
            400,
        ),
        (
            "a chunked body cut off by the client",
            format!("{}5\r\nhello\r\n5\r\nwor", head("/cut-chunked", chunked)),
            true,
            400,
        ),
        (
            "a body shorter than its Content-Length",
            format!("{}hello", head("/cut-length", "content-length: 100\r\n")),
            true,
            400,
        ),
        (
            "a chunked body above the buffering limit",
            format!(
                "{}{:x}\r\n{big}\r\n0\r\n\r\n",
                head("/too-big-chunked", chunked),
                big.len()
            ),
            false,
            413,
        ),
    ];
    for (what, request, close, expected) in &cases {
        let reply = send(addr, request.as_bytes(), *close).await;
        assert_eq!(
            status(&reply),
            *expected,
            "{what}: {}",
            String::from_utf8_lossy(&reply)
        );
        if *expected == 413 {
            assert!(
                String::from_utf8_lossy(&reply).contains("--http-max-body"),
                "{what}: the refusal says what to do"
            );
        }
    }
    // Well-formed bodies still arrive whole: chunked (read, then sent with
    // its length), declared within the limit, declared above it (streamed).
    let good: Vec<(&str, String, usize)> = vec![
        (
            "/good-chunked",
            format!(
                "{}5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                head("/good-chunked", chunked)
            ),
            11,
        ),
        (
            "/good-length",
            format!("{}hello", head("/good-length", "content-length: 5\r\n")),
            5,
        ),
        (
            "/good-large",
            format!(
                "{}{big}",
                head("/good-large", &format!("content-length: {}\r\n", big.len()))
            ),
            big.len(),
        ),
    ];
    for (path, request, len) in &good {
        let reply = send(addr, request.as_bytes(), false).await;
        assert_eq!(
            status(&reply),
            200,
            "{path}: {}",
            String::from_utf8_lossy(&reply)
        );
        let log = upstream.log().await;
        let entry = log
            .iter()
            .find(|e| e["path"] == *path)
            .unwrap_or_else(|| panic!("{path} did not arrive: {log:?}"));
        assert_eq!(entry["body"].as_str().unwrap().len(), *len, "{path}");
    }
    // Nothing of a broken request reached the upstream: not its headers,
    // not half its body.
    let log = upstream.log().await;
    let paths: Vec<&str> = log.iter().filter_map(|e| e["path"].as_str()).collect();
    for p in [
        "/broken-size",
        "/broken-chunk",
        "/cut-chunked",
        "/cut-length",
        "/too-big-chunked",
    ] {
        assert!(!paths.contains(&p), "{p} reached the upstream: {paths:?}");
    }
}
