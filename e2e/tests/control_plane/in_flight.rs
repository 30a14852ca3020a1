//! The test control plane's max-in-flight limits, as kube-apiserver's
//! (k8s.io/apiserver pkg/server/filters/maxinflight.go): beyond the limit a
//! request is answered 429 `TooManyRequests` with `Retry-After: 1`; reads and
//! writes have separate limits; long-running requests (watches) take no slot.
//! A request holds its slot from its headers on: here a request whose body is
//! not sent yet holds one for as long as the test wants.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sluice_e2e::{Options, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(cluster: &TestCluster) -> Tls {
    let config: Arc<rustls::ClientConfig> =
        sluice_e2e::pki::client_config(cluster.ca_pem()).unwrap();
    let addr = cluster
        .base_url()
        .trim_start_matches("https://")
        .to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap()
}

/// The admin's bearer token, from the kubeconfig.
fn admin_token(cluster: &TestCluster) -> String {
    let text = std::fs::read_to_string(cluster.kubeconfig_path()).unwrap();
    let config: Value = serde_saphyr::from_str(&text).unwrap();
    config["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "admin")
        .unwrap()["user"]["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// One request on a new connection; the answer's status, headers and body
/// (only the head for a watch).
async fn send(
    cluster: &TestCluster,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, hyper::HeaderMap, Bytes) {
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(connect(cluster).await))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    if path.contains("watch=true") {
        return (status, headers, Bytes::new());
    }
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes)
}

/// Sends the headers of a request whose `len`-byte body follows later: it is
/// in flight (holding its slot) until [`finish`].
async fn hold(cluster: &TestCluster, token: &str, method: &str, path: &str, len: usize) -> Tls {
    let mut stream = connect(cluster).await;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// Sends the held request's body and returns the status line of its answer.
async fn finish(mut stream: Tls, body: &[u8]) -> String {
    stream.write_all(body).await.unwrap();
    stream.flush().await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed before an answer");
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the held request is answered");
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_string()
}

/// Sends `method path` until it is answered 429 (the held request has been
/// admitted by then), failing after [`WAIT`].
async fn until_refused(
    cluster: &TestCluster,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (hyper::HeaderMap, Value) {
    tokio::time::timeout(WAIT, async {
        loop {
            let (status, headers, bytes) = send(cluster, token, method, path, body.clone()).await;
            if status == 429 {
                return (headers, serde_json::from_slice(&bytes).unwrap());
            }
            assert!(
                matches!(status, 200 | 201 | 409),
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a request beyond the limit is answered 429")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_requests_beyond_the_limit_get_429_with_retry_after() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = TestCluster::start(Options::default().max_in_flight(1, 1))
        .await
        .unwrap();
    let token = admin_token(&cluster);
    let held_body = json!({"metadata": {"name": "held"}}).to_string();
    let held = hold(
        &cluster,
        &token,
        "POST",
        "/api/v1/namespaces",
        held_body.len(),
    )
    .await;

    let other = json!({"metadata": {"name": "other"}});
    let (headers, status) = until_refused(
        &cluster,
        &token,
        "POST",
        "/api/v1/namespaces",
        Some(other.clone()),
    )
    .await;
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["code"], 429);
    assert_eq!(status["details"]["retryAfterSeconds"], 1);
    // The refused namespace was not created.
    let (code, _, _) = send(&cluster, &token, "GET", "/api/v1/namespaces/other", None).await;
    assert_eq!(code, 404);
    // Reads have a limit of their own: not reached by one write.
    let (code, _, _) = send(&cluster, &token, "GET", "/api/v1/namespaces", None).await;
    assert_eq!(code, 200);

    // The held write completes; its slot is free again once it is answered.
    assert!(
        finish(held, held_body.as_bytes()).await.contains(" 201 "),
        "the held request is created"
    );
    let (code, _, body) = send(&cluster, &token, "POST", "/api/v1/namespaces", Some(other)).await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_beyond_the_limit_get_429_and_watches_take_no_slot() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = TestCluster::start(Options::default().max_in_flight(1, 1))
        .await
        .unwrap();
    let token = admin_token(&cluster);
    // A read whose (ignored) body is still on its way holds the only read slot.
    let held = hold(&cluster, &token, "GET", "/api/v1/namespaces", 2).await;
    let (headers, status) =
        until_refused(&cluster, &token, "GET", "/api/v1/namespaces/default", None).await;
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    assert_eq!(status["reason"], "TooManyRequests");
    // A watch is long-running: it is served while the read slot is taken.
    let (code, _, _) = send(
        &cluster,
        &token,
        "GET",
        "/api/v1/namespaces?watch=true",
        None,
    )
    .await;
    assert_eq!(code, 200);
    // Writes have a limit of their own.
    let (code, _, _) = send(
        &cluster,
        &token,
        "POST",
        "/api/v1/namespaces",
        Some(json!({"metadata": {"name": "written"}})),
    )
    .await;
    assert_eq!(code, 201);
    assert!(finish(held, b"{}").await.contains(" 200 "));
    let (code, _, _) = send(&cluster, &token, "GET", "/api/v1/namespaces/default", None).await;
    assert_eq!(code, 200);
}
