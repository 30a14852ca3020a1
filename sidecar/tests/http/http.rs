//! The HTTP data plane end to end: a real HTTPS upstream (its own CA, made
//! here with rcgen, given to the Connection through a Secret), the sidecar in
//! standalone mode in-process, and real clients (hyper and curl).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::http_support;

use sluice_e2e::harness::HttpConnection;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use http_support::{CARD, EMAIL, digest};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sluice_sidecar::standalone::{self, StandaloneConfig};

const TOKEN: &str = "Bearer upstream-secret-token-42";
const API_KEY: &str = "key-from-the-secret";
/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(60);

// === the upstream (sidecar/tests/http_support) ===

fn upstream_tls() -> (tokio_rustls::TlsAcceptor, String) {
    common::tls_upstream_acceptor(
        "sluice http test CA",
        &["localhost", "127.0.0.1"],
        &[b"h2", b"http/1.1"],
    )
}

async fn start_upstream() -> (SocketAddr, String) {
    http_support::start_upstream(upstream_tls()).await
}

async fn start_counted_upstream() -> (SocketAddr, String, Arc<AtomicUsize>) {
    http_support::start_counted_upstream(upstream_tls()).await
}

// === the sidecar ===

struct Fixture {
    sidecar: SocketAddr,
    /// Requests the upstream received (set by [`fixture`]).
    hits: Option<Arc<AtomicUsize>>,
    audit: PathBuf,
    /// The admin port (`/metrics`).
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Starts the sidecar for `base_url` (an upstream with CA `ca`).
async fn start_sidecar(base_url: &str, ca: &str, timeout: Duration) -> Fixture {
    start_sidecar_with(base_url, ca, timeout, true).await
}

/// [`start_sidecar`], offering HTTP/2 to the upstream only when `http2`.
async fn start_sidecar_with(base_url: &str, ca: &str, timeout: Duration, http2: bool) -> Fixture {
    start_sidecar_auditing(base_url, ca, timeout, http2, None).await
}

/// [`start_sidecar_with`], writing the audit trail to `audit_file` when
/// given (else to a file of its own).
async fn start_sidecar_auditing(
    base_url: &str,
    ca: &str,
    timeout: Duration,
    http2: bool,
    audit_file: Option<PathBuf>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // A port found free can be taken by another process (an outgoing
    // connection's ephemeral port) before the sidecar binds it: try another.
    let mut attempt = 0;
    let (running, audit) = loop {
        attempt += 1;
        let port = common::free_port();
        let manifests = sluice_e2e::harness::http_connection_manifests(&HttpConnection {
            base_url,
            ca_pem: Some(ca),
            secret: &[
                ("Authorization", TOKEN),
                ("X-Api-Key", API_KEY),
                ("unused", "not-sent"),
            ],
            headers: &["Authorization", "X-Api-Key"],
            listen: &port.to_string(),
            policy: r#"  rules:
    - name: no-admin
      match: {paths: ["/admin/**"]}
      action: deny
    - name: no-deletes
      match: {methods: [DELETE]}
      action: deny
    - name: no-debug
      match: {query: {debug: "*"}}
      action: deny
    - name: big-refunds
      match: {methods: [POST], paths: ["/refunds"], jsonBody: [{path: "$.amount", greaterThan: 1000}]}
      action: requireApproval
      approval: {approvers: {groups: [finance]}, mode: hold}
  masking:
    - jsonPaths: ["$.customer.email", "$[*].card"]
      strategy: redact
    - detectors: [creditCard]
      strategy: redact
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {name: api-trial, namespace: shop}
spec:
  subjects: [{serviceAccount: app}]
  connections: [api]
  mode: dryRun
  rules:
    - name: trial-no-reports
      match: {paths: ["/reports/**"]}
      action: deny
"#,
        });
        let path = dir.path().join("manifests.yaml");
        std::fs::write(&path, manifests).unwrap();
        let audit = audit_file
            .clone()
            .unwrap_or_else(|| dir.path().join("audit.jsonl"));
        let mut cfg = StandaloneConfig::new(path, "shop/app".into());
        cfg.audit_stdout = false;
        cfg.audit_file = Some(audit.clone());
        cfg.planes.http_upstream_timeout = timeout;
        cfg.planes.http_max_request_body = 64 * 1024;
        cfg.planes.http_upstream_http2 = http2;
        cfg.admin_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        match standalone::start(cfg).await {
            Ok(running) => break (running, audit),
            Err(e) if attempt < 5 && format!("{e:?}").contains("AddrInUse") => continue,
            Err(e) => panic!("the sidecar did not start: {e}"),
        }
    };
    let sidecar = running.listeners[0].1;
    Fixture {
        sidecar,
        hits: None,
        audit,
        admin: running.admin.expect("the admin port"),
        _dir: dir,
    }
}

async fn fixture() -> Fixture {
    let (up, ca, hits) = start_counted_upstream().await;
    let mut f = start_sidecar(&format!("https://localhost:{}", up.port()), &ca, WAIT).await;
    f.hits = Some(hits);
    f
}

impl Fixture {
    /// Requests the upstream has received so far.
    fn hits(&self) -> usize {
        self.hits
            .as_ref()
            .expect("a fixture() upstream")
            .load(Ordering::SeqCst)
    }
}

/// One request through the sidecar with hyper's client.
async fn send(
    f: &Fixture,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, Bytes) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", f.sidecar));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    tokio::time::timeout(WAIT, async {
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    })
    .await
    .expect("the sidecar answered in time")
}

/// The sidecar's `/metrics` text.
async fn scrape(f: &Fixture) -> String {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri = format!("http://{}/metrics", f.admin);
    let req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
    tokio::time::timeout(WAIT, async {
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    })
    .await
    .expect("the admin port answered in time")
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

fn contains(hay: &[u8], needle: &str) -> bool {
    memchr::memmem::find(hay, needle.as_bytes()).is_some()
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_injected_and_the_apps_stripped() {
    let f = fixture().await;
    let (status, _, body) = send(
        &f,
        "GET",
        "/v1/things?x=1",
        &[
            ("Authorization", "Bearer app-own-token"),
            ("X-Api-Key", "app-own-key"),
            ("Proxy-Authorization", "Basic xyz"),
            ("Accept-Encoding", "gzip"),
            ("X-Custom", "kept"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let echo = json(&body);
    let h = &echo["headers"];
    assert_eq!(echo["digests"]["authorization"], digest(TOKEN.as_bytes()));
    assert_eq!(echo["digests"]["x-api-key"], digest(API_KEY.as_bytes()));
    // Echoed back, the injected values are scrubbed (issue 16).
    assert_eq!(h["authorization"], "*".repeat(TOKEN.len()));
    assert_eq!(h["x-api-key"], "*".repeat(API_KEY.len()));
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["accept-encoding"], "identity");
    assert!(h.get("proxy-authorization").is_none());
    assert!(h.get("unused").is_none(), "only the listed keys are sent");
    assert_eq!(
        echo["uri"].as_str().unwrap().rsplit_once('/').unwrap().1,
        "things?x=1"
    );
    // HTTP/2 to the upstream by ALPN.
    assert_eq!(echo["version"], "HTTP/2.0");
    let audit = std::fs::read_to_string(&f.audit).unwrap();
    assert!(!audit.contains("upstream-secret-token"));
    assert!(!audit.contains("app-own-token"));
    assert!(audit.contains("GET /v1/things"));
    // The chain holds (each event is assembled from the session's
    // pre-rendered fields and the request's).
    let report = sluice_policy::audit::verify_lines(audit.lines(), &[]).unwrap();
    assert_eq!(report.events as usize, audit.lines().count(), "{audit}");
}

/// Write-ahead: when the audit sink cannot take a request's record, the
/// request is not sent (503 naming the audit failure), on one connection
/// and on several at once (whose records share writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_audit_record_no_request() {
    let (up, ca, hits) = start_counted_upstream().await;
    let mut f = start_sidecar_auditing(
        &format!("https://localhost:{}", up.port()),
        &ca,
        WAIT,
        true,
        Some(PathBuf::from("/dev/full")),
    )
    .await;
    f.hits = Some(hits);
    let (status, _, body) = send(&f, "GET", "/echo", &[], "").await;
    assert_eq!(status, 503);
    assert_eq!(json(&body)["error"], "auditFailed", "{:?}", json(&body));
    // Several connections at once (each `send` opens its own).
    let (a, b, c, d) = tokio::join!(
        send(&f, "GET", "/echo", &[], ""),
        send(&f, "GET", "/small", &[], ""),
        send(&f, "GET", "/echo", &[], ""),
        send(&f, "GET", "/small", &[], ""),
    );
    for (status, _, body) in [a, b, c, d] {
        assert_eq!(status, 503);
        assert!(contains(&body, "audit is write-ahead"), "{:?}", json(&body));
    }
    assert_eq!(
        f.hits(),
        0,
        "a request without its audit record reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_credentials_replaced() {
    let f = fixture().await;
    let url = format!("http://{}/echo", f.sidecar);
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("/usr/bin/curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "-H",
                "Authorization: Bearer from-curl",
                &url,
            ])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echo = json(&out.stdout);
    assert_eq!(echo["digests"]["authorization"], digest(TOKEN.as_bytes()));
    assert!(!contains(&out.stdout, "upstream-secret-token"));
    assert!(!contains(&out.stdout, "from-curl"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_type_decides() {
    let f = fixture().await;
    // Only the small refund below reaches the upstream.
    // Path glob.
    let (status, _, body) = send(&f, "GET", "/admin/users", &[], "").await;
    assert_eq!(status, 403);
    let b = json(&body);
    assert_eq!(b["error"], "denied");
    assert_eq!(b["rule"], "no-admin");
    assert_eq!(b["policy"], "api-rules");
    // Encoding tricks reach the same rule.
    let (status, _, body) = send(&f, "GET", "/v1/../admin/x", &[], "").await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    // Ambiguous (double-encoded) paths are refused.
    let (status, _, body) = send(&f, "GET", "/%252e%252e/admin", &[], "").await;
    assert_eq!(status, 400);
    assert_eq!(json(&body)["error"], "ambiguousPath");
    // Method.
    let (status, _, body) = send(&f, "DELETE", "/v1/things/1", &[], "").await;
    assert_eq!(status, 403);
    assert_eq!(json(&body)["rule"], "no-deletes");
    // Query.
    let (status, _, body) = send(&f, "GET", "/v1/things?debug=1", &[], "").await;
    assert_eq!(status, 403);
    assert_eq!(json(&body)["rule"], "no-debug");
    // JSON body: small refunds pass, big ones need an approval.
    let ct = [("content-type", "application/json")];
    let (status, _, body) = send(&f, "POST", "/refunds", &ct, r#"{"amount": 10}"#).await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&body)["body"],
        r#"{"amount": 10}"#,
        "the body is forwarded"
    );
    let (status, _, body) = send(&f, "POST", "/refunds", &ct, r#"{"amount": 5000}"#).await;
    assert_eq!(status, 403);
    let b = json(&body);
    assert_eq!(b["error"], "approvalRequired");
    assert_eq!(b["rule"], "big-refunds");
    // Bodies too large to decide.
    let big = format!(r#"{{"amount": 1, "pad": "{}"}}"#, "x".repeat(100_000));
    let (status, _, body) = send(&f, "POST", "/refunds", &ct, &big).await;
    assert_eq!(status, 413);
    assert_eq!(json(&body)["error"], "bodyTooLarge");
    assert_eq!(f.hits(), 1, "a refused request reached the upstream");
    // The audit trail has the denials.
    let audit = std::fs::read_to_string(&f.audit).unwrap();
    assert!(audit.contains("\"denial\""));
    assert!(audit.contains("no-admin") && audit.contains("big-refunds"));
}

/// `sluice_http_requests_total` carries the Connection, as the sidecar's
/// other families do (issue 23), and counts by decision and status class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_are_counted_under_their_connection() {
    let f = fixture().await;
    let series = |decision: &str, status: &str| {
        format!(
            r#"sluice_http_requests_total{{connection="api",decision="{decision}",status="{status}"}}"#
        )
    };
    let value = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    };
    let before = scrape(&f).await;
    assert_eq!(
        value(&before, &series("allow", "2xx")),
        Some(0.0),
        "{before}"
    );
    assert_eq!(
        value(&before, &series("deny", "4xx")),
        Some(0.0),
        "{before}"
    );
    for _ in 0..3 {
        assert_eq!(send(&f, "GET", "/small", &[], "").await.0, 200);
    }
    assert_eq!(send(&f, "GET", "/admin/users", &[], "").await.0, 403);
    // A compressed response cannot be scrubbed: allowed, answered 502.
    assert_eq!(send(&f, "GET", "/gzip", &[], "").await.0, 502);
    let after = scrape(&f).await;
    assert_eq!(value(&after, &series("allow", "2xx")), Some(3.0), "{after}");
    assert_eq!(value(&after, &series("allow", "5xx")), Some(1.0), "{after}");
    assert_eq!(value(&after, &series("deny", "4xx")), Some(1.0), "{after}");
    assert!(
        !after.contains("sluice_http_requests_total{decision"),
        "a series without its connection: {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_forwards_and_records_the_would_be_denial() {
    let f = fixture().await;
    let (status, _, body) = send(&f, "GET", "/reports/q1", &[], "").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["method"], "GET");
    let audit = std::fs::read_to_string(&f.audit).unwrap();
    let line = audit
        .lines()
        .find(|l| l.contains("trial-no-reports"))
        .expect("the would-be decision is audited");
    let event = json(line.as_bytes());
    assert_eq!(event["type"], "statement");
    assert_eq!(event["decision"]["action"], "deny");
    assert_eq!(event["decision"]["dryRun"], true);
    assert_eq!(event["command"]["text"], "GET /reports/q1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_masked_by_path_and_detector() {
    let f = fixture().await;
    let (status, headers, body) = send(&f, "GET", "/customer", &[], "").await;
    assert_eq!(status, 200);
    assert!(headers.get("content-length").is_none());
    assert!(
        !contains(&body, EMAIL),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(!contains(&body, CARD), "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(v["customer"]["name"], "Ann");
    assert_eq!(v["id"], 1);
    assert!(v["comment"].as_str().unwrap().starts_with("card "));
    // Text with a card number, under jsonPaths masking (which cannot be
    // applied to text): refused, not passed in clear (issue 16; this test
    // used to assert that it passed untouched).
    let (status, _, body) = send(&f, "GET", "/text", &[], "").await;
    assert_eq!(status, 502);
    assert_eq!(json(&body)["error"], "unmaskableResponse");
    assert!(!contains(&body, CARD) && !contains(&body, EMAIL));
    // Compressed JSON cannot be masked: refused.
    let (status, _, body) = send(&f, "GET", "/gzip", &[], "").await;
    assert_eq!(status, 502);
    assert_eq!(json(&body)["error"], "compressedResponse");
    let audit = std::fs::read_to_string(&f.audit).unwrap();
    assert!(!audit.contains(CARD) && !audit.contains(EMAIL));
    assert!(audit.contains("\"masked\":3"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_chunked_response_is_masked_while_streaming() {
    let f = fixture().await;
    // ~20 MB.
    let items = 180_000;
    let (status, _, body) = send(&f, "GET", &format!("/big/{items}"), &[], "").await;
    assert_eq!(status, 200);
    assert!(body.len() > 15_000_000, "{}", body.len());
    assert!(!contains(&body, CARD));
    let v = json(&body);
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), items);
    assert_eq!(arr[items - 1]["i"], items - 1);
    // And with curl, to a file.
    let out_file = f._dir.path().join("big.json");
    let url = format!("http://{}/big/20000", f.sidecar);
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("/usr/bin/curl")
            .args(["-sS", "--max-time", "50", "-o"])
            .arg(&out_file)
            .arg(&url)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&out_file).unwrap();
    assert!(!contains(&bytes, CARD));
    assert_eq!(json(&bytes).as_array().unwrap().len(), 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_clear() {
    // Refused: nothing listens there.
    let (_, ca) = start_upstream().await;
    let dead = common::free_port();
    let f = start_sidecar(&format!("https://localhost:{dead}"), &ca, WAIT).await;
    let (status, _, body) = send(&f, "GET", "/x", &[], "").await;
    assert_eq!(status, 502);
    assert_eq!(json(&body)["error"], "upstreamUnavailable");

    // Timeout.
    let (up, ca) = start_upstream().await;
    let f = start_sidecar(
        &format!("https://localhost:{}", up.port()),
        &ca,
        Duration::from_millis(500),
    )
    .await;
    let (status, _, body) = send(&f, "GET", "/slow", &[], "").await;
    assert_eq!(status, 504);
    assert_eq!(json(&body)["error"], "upstreamTimeout");

    // A certificate from another CA is not trusted.
    let (other, _) = start_upstream().await;
    let f = start_sidecar(&format!("https://localhost:{}", other.port()), &ca, WAIT).await;
    let (status, _, _) = send(&f, "GET", "/x", &[], "").await;
    assert_eq!(status, 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture().await;
    let mut s = tokio::net::TcpStream::connect(f.sidecar).await.unwrap();
    s.write_all(b"THIS IS NOT HTTP\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_only_to_the_upstream_when_asked() {
    let (up, ca) = start_upstream().await;
    let f = start_sidecar_with(
        &format!("https://localhost:{}", up.port()),
        &ca,
        WAIT,
        false,
    )
    .await;
    let (status, _, body) = send(&f, "GET", "/echo", &[], "").await;
    assert_eq!(status, 200);
    let echo = json(&body);
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["digests"]["authorization"], digest(TOKEN.as_bytes()));
    assert!(!contains(&body, "upstream-secret-token"));
    // The upstream's own host, never the application's.
    let (_, _, body) = send(&f, "GET", "/echo", &[("host", "evil.example")], "").await;
    let echo = json(&body);
    assert_eq!(
        echo["headers"]["host"],
        format!("localhost:{}", up.port()),
        "{echo}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_labelled_as_text_is_masked_too() {
    let f = fixture().await;
    let (status, _, body) = send(&f, "GET", "/json-as-text", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        !contains(&body, EMAIL),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(!contains(&body, CARD), "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert!(v["note"].as_str().unwrap().starts_with("card "));
    // Text that is not JSON cannot be masked by path: refused (it used to
    // pass untouched, card number and all).
    let (status, _, body) = send(&f, "GET", "/text", &[], "").await;
    assert_eq!(status, 502);
    assert!(!contains(&body, CARD), "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_end_the_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, ca) = start_upstream().await;
    let f = start_sidecar(
        &format!("https://localhost:{}", up.port()),
        &ca,
        Duration::from_millis(500),
    )
    .await;
    // The upstream's response body stops half-way: the client's response
    // ends with an error instead of hanging.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::get(format!("http://{}/stall", f.sidecar))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let outcome = tokio::time::timeout(WAIT, async {
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await
    })
    .await
    .expect("the stalled response ended");
    assert!(
        outcome.is_err(),
        "a cut-off response must not look complete"
    );
    let audit = tokio::time::timeout(WAIT, async {
        loop {
            let audit = std::fs::read_to_string(&f.audit).unwrap();
            if audit.contains("stalled") {
                return audit;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the stall is audited");
    assert!(audit.contains("GET /stall"));

    // The application's request body stops half-way: a clear 400.
    let mut s = tokio::net::TcpStream::connect(f.sidecar).await.unwrap();
    s.write_all(
        b"POST /refunds HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"amount\": ",
    )
    .await
    .unwrap();
    let mut out = vec![0; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut out))
        .await
        .expect("the sidecar answered the stalled upload")
        .unwrap();
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("stalled"), "{text}");
}
