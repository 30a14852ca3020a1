//! Attack corpus for the HTTP data plane, per class (issue 16's soundness,
//! grown): the sidecar in standalone mode in-process, raw HTTP/1.1 bytes as
//! the client, and a raw-bytes upstream written here that answers exactly
//! the bytes a case needs (trailers, odd header names, hop-by-hop tricks)
//! and logs every request it received, so a refusal is checked against what
//! the upstream saw.
//!
//! Classes (each a table of cases; what a case found is in its test's doc):
//! - response trailers and header names carry values like header values do;
//! - HEAD runs a GET's handler in most servers: a rule on GET covers it;
//! - hop-by-hop tricks (`Connection: content-encoding`) hide no encoding;
//! - request smuggling and desync (CL/TE, obs-fold, bare LF, chunk
//!   extensions, pipelining, upgrades, CONNECT, h2 preface): held;
//! - request targets and path spellings (absolute-form, dot segments,
//!   escapes, `;`, `\\`, `*`, case, padded segments), globs with capitals;
//! - response masking (escaped keys and values, duplicates, numbers,
//!   labels, JSON lines, BOM, percent-encoded values);
//! - header names that stand for others (`_` for `-`);
//! - query parameter spellings (case, spaces, `+`, escapes), and query
//!   parameters merged into the JSON body a rule reads;
//! - method overrides in JSON bodies (Laravel's `_method`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_e2e::harness::HttpConnection;
use sluice_sidecar::standalone::{self, StandaloneConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TOKEN: &str = "Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc";
const CARD: &str = "4111111111111111";
const EMAIL: &str = "ann@example.com";
const BASE: &str = "/tenants/acme";
/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(60);

// === the raw upstream ===

/// One request as the upstream read it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Every byte of the request (head and body).
    all: String,
    /// Bytes after the end of the request as framed.
    after: String,
}

/// The canned answer to `route` (the path under [`BASE`], without query).
fn answer(route: &str) -> Vec<u8> {
    let json = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let chunked_with_trailer = |trailer: &str| {
        let body = r#"{"ok":1}"#;
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\ntrailer: x-contact\r\nconnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n{trailer}\r\n\r\n",
            body.len()
        )
        .into_bytes()
    };
    if let Some(name) = route.strip_prefix("/m/")
        && let Some((_, ctype, body)) = MASK_CASES.iter().find(|(n, _, _)| *n == name)
    {
        let ctype = if ctype.is_empty() {
            String::new()
        } else {
            format!("content-type: {ctype}\r\n")
        };
        return format!(
            "HTTP/1.1 200 OK\r\n{ctype}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
    }
    match route {
        "/trailer-email" => chunked_with_trailer(&format!("x-contact: mailto:{EMAIL}")),
        "/trailer-card" => chunked_with_trailer(&format!("x-card: {CARD}")),
        "/trailer-token" => chunked_with_trailer(&format!("x-seen: {TOKEN}")),
        "/header-name-card" => format!(
            "HTTP/1.1 204 No Content\r\nx-card-{CARD}: 1\r\nconnection: close\r\n\r\n"
        )
        .into_bytes(),
        "/early-hints" => format!(
            "HTTP/1.1 103 Early Hints\r\nlink: <mailto:{EMAIL}>\r\nx-card: {CARD}\r\n\r\nHTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
        )
        .into_bytes(),
        "/header-encoded" => "HTTP/1.1 204 No Content\r\nlocation: /users/ann%40example.com\r\nx-card: %34111111111111111\r\nconnection: close\r\n\r\n"
            .as_bytes()
            .to_vec(),
        "/header-name-token" => "HTTP/1.1 204 No Content\r\nx-sk_live_4eC39HqLyjWDarjtT1zdp7dc: 1\r\nconnection: close\r\n\r\n"
            .as_bytes()
            .to_vec(),
        "/hidden-deflate" => {
            // Raw deflate (no magic bytes) of the echoed credential, its
            // Content-Encoding named hop-by-hop.
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-encoding: deflate\r\nconnection: close, content-encoding\r\ncontent-length: {}\r\n\r\n",
                DEFLATE_TOKEN.len()
            )
            .into_bytes();
            out.extend_from_slice(DEFLATE_TOKEN);
            out
        }
        "/hidden-encoding" => {
            // gzip of {"card":"4111111111111111"}, its Content-Encoding
            // named hop-by-hop by the upstream's Connection header.
            let gz: &[u8] = GZIP_CARD;
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\nconnection: close, content-encoding\r\ncontent-length: {}\r\n\r\n",
                gz.len()
            )
            .into_bytes();
            out.extend_from_slice(gz);
            out
        }
        other => json(&format!(r#"{{"route":"{other}"}}"#)),
    }
}

/// Response bodies a masking rule must see through: (name, Content-Type,
/// body). Each holds Ann's name at `$.customer.name`, her e-mail or her
/// card number in some spelling a JSON or text reader decodes.
const MASK_CASES: &[(&str, &str, &str)] = &[
    (
        "plain",
        "application/json",
        r#"{"customer":{"name":"Ann"}}"#,
    ),
    (
        "escaped-key",
        "application/json",
        r#"{"customer":{"n\u0061me":"Ann"}}"#,
    ),
    (
        "escaped-outer-key",
        "application/json",
        r#"{"cust\u006fmer":{"name":"Ann"}}"#,
    ),
    (
        "escaped-slash-key",
        "application/json",
        r#"{"customer":{"name\/":"x","name":"Ann"}}"#,
    ),
    (
        "duplicate-key",
        "application/json",
        r#"{"customer":{"name":"x","name":"Ann"}}"#,
    ),
    (
        "duplicate-outer",
        "application/json",
        r#"{"customer":{},"customer":{"name":"Ann"}}"#,
    ),
    (
        "object-value",
        "application/json",
        r#"{"customer":{"name":{"first":"Ann"}}}"#,
    ),
    (
        "array-value",
        "application/json",
        r#"{"customer":{"name":["Ann"]}}"#,
    ),
    (
        "number-value",
        "application/json",
        r#"{"customer":{"name":4111111111111111}}"#,
    ),
    (
        "escaped-value",
        "application/json",
        r#"{"customer":{"name":"\u0041nn"}}"#,
    ),
    (
        "escaped-email",
        "application/json",
        r#"{"note":"ann\u0040example.com"}"#,
    ),
    (
        "escaped-card-digit",
        "application/json",
        r#"{"note":"411111111111111\u0031"}"#,
    ),
    (
        "card-number",
        "application/json",
        r#"{"note":4111111111111111}"#,
    ),
    (
        "card-exponent",
        "application/json",
        r#"{"note":4.111111111111111e15}"#,
    ),
    (
        "email-in-key",
        "application/json",
        r#"{"ann@example.com":1}"#,
    ),
    (
        "card-in-key",
        "application/json",
        r#"{"4111111111111111":1}"#,
    ),
    (
        "escaped-email-key",
        "application/json",
        r#"{"ann\u0040example.com":1}"#,
    ),
    (
        "upper-label",
        "Application/JSON; Charset=UTF-8",
        r#"{"customer":{"name":"Ann"}}"#,
    ),
    (
        "problem-json",
        "application/problem+json",
        r#"{"customer":{"name":"Ann"}}"#,
    ),
    (
        "vendor-json",
        "application/vnd.api+json",
        r#"{"customer":{"name":"Ann"}}"#,
    ),
    ("text-json", "text/plain", r#"{"customer":{"name":"Ann"}}"#),
    ("unlabelled", "", r#"{"customer":{"name":"Ann"}}"#),
    (
        "ndjson-crlf",
        "application/x-ndjson",
        "{\"a\":1}\r\n{\"customer\":{\"name\":\"Ann\"}}\r\n",
    ),
    (
        "two-documents",
        "application/json",
        r#"{"a":1}{"customer":{"name":"Ann"}}"#,
    ),
    (
        "xssi-prefix",
        "application/json",
        ")]}'\n{\"customer\":{\"name\":\"Ann\"}}",
    ),
    (
        "js-label",
        "application/javascript",
        r#"{"customer":{"name":"Ann"}}"#,
    ),
    ("top-string", "application/json", r#""ann@example.com""#),
    (
        "bom-json",
        "application/json",
        "\u{feff}{\"customer\":{\"name\":\"Ann\"}}",
    ),
    (
        "url-encoded-email",
        "application/json",
        r#"{"next":"/users/ann%40example.com"}"#,
    ),
    (
        "url-encoded-card",
        "application/json",
        r#"{"next":"/cards/%34111111111111111"}"#,
    ),
    (
        "double-encoded-email",
        "application/json",
        r#"{"next":"/users/ann%2540example.com"}"#,
    ),
    (
        "url-encoded-text",
        "text/csv",
        "next,card\n/users/ann%40example.com,%34111111111111111\n",
    ),
    (
        "space-before-json",
        "text/plain",
        " \n\t{\"customer\":{\"name\":\"Ann\"}}",
    ),
];

/// `Authorization: Bearer sk_live_…` (the credential) as raw deflate.
const DEFLATE_TOKEN: &[u8] = b"\x73\x2c\x2d\xc9\xc8\x2f\xca\xac\x4a\x2c\xc9\xcc\xcf\xb3\x52\x70\x4a\x4d\x2c\x4a\x2d\x52\x28\xce\x8e\xcf\xc9\x2c\x4b\x8d\x37\x49\x75\x36\xb6\xf4\x28\xf4\xa9\xcc\x0a\x77\x49\x2c\xca\x2a\x09\x31\xac\x4a\x29\x30\x4f\x49\x06\x00";

/// `{"card":"4111111111111111"}` gzip-compressed (Python's gzip.compress).
const GZIP_CARD: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xab\x56\x4a\x4e\x2c\x4a\x51\xb2\x52\x32\x31\x44\x05\x4a\xb5\x00\x19\x37\x98\x87\x1b\x00\x00\x00";

/// The raw upstream: one request a connection, answered by [`answer`] and
/// closed; every request logged.
async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let end = loop {
                    if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                        break i;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                // The body as framed (hyper's client sends a Content-Length
                // or chunks): every byte that arrived is logged, so a
                // request smuggled inside a body would show.
                let lower = head.to_ascii_lowercase();
                let length = lower.lines().find_map(|l| {
                    l.strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                });
                let chunked = lower.contains("transfer-encoding: chunked");
                loop {
                    let body = &buf[end + 4..];
                    let done = match length {
                        Some(n) => body.len() >= n,
                        None => !chunked || memchr::memmem::find(body, b"0\r\n\r\n").is_some(),
                    };
                    if done || buf.len() > 1 << 20 {
                        break;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                // Bytes past the framed end: a request smuggled after it.
                let framed = match length {
                    Some(n) => end + 4 + n,
                    None if chunked => memchr::memmem::find(&buf[end + 4..], b"0\r\n\r\n")
                        .map_or(buf.len(), |i| end + 4 + i + 5),
                    None => end + 4,
                };
                let after = String::from_utf8_lossy(&buf[framed.min(buf.len())..]).into_owned();
                let all = String::from_utf8_lossy(&buf).into_owned();
                let mut words = head.split(' ');
                let method = words.next().unwrap_or("").to_string();
                let path = words.next().unwrap_or("").to_string();
                let route = path
                    .split('?')
                    .next()
                    .unwrap()
                    .strip_prefix(BASE)
                    .unwrap_or("")
                    .to_string();
                seen.lock().unwrap().push(Seen {
                    method,
                    path,
                    all,
                    after,
                });
                let _ = s.write_all(&answer(&route)).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, log)
}

// === the sidecar ===

const RULES: &str = r#"
    - name: no-export
      match: {methods: [GET], paths: ["/v1/export/**"]}
      action: deny
    - name: no-debug
      match: {query: {debug: "*"}}
      action: deny
    - name: no-admin
      match: {paths: ["/v1/Admin/**"]}
      action: deny
    - name: no-big-refund
      match:
        methods: [POST]
        paths: ["/v1/refunds"]
        jsonBody: [{path: "$.amount", greaterThan: 100}]
      action: deny
"#;

const DETECTORS: &str = r#"
    - detectors: [creditCard, email]
      strategy: redact
"#;

struct Fixture {
    sidecar: SocketAddr,
    log: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

async fn fixture(masking: &str) -> Fixture {
    let (up, log) = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let masking = if masking.is_empty() {
        String::new()
    } else {
        format!("  masking:{masking}")
    };
    let manifests = sluice_e2e::harness::http_connection_manifests(&HttpConnection {
        base_url: &format!("http://{up}{BASE}"),
        ca_pem: None,
        secret: &[("Authorization", TOKEN)],
        headers: &["Authorization"],
        listen: &port.to_string(),
        policy: &format!("  rules:{RULES}{masking}"),
    });
    let path: PathBuf = dir.path().join("manifests.yaml");
    std::fs::write(&path, manifests).unwrap();
    let mut cfg = StandaloneConfig::new(path, "shop/app".into());
    cfg.audit_stdout = false;
    cfg.audit_file = Some(dir.path().join("audit.jsonl"));
    cfg.planes.http_upstream_timeout = Duration::from_secs(20);
    let running = standalone::start(cfg).await.unwrap();
    Fixture {
        sidecar: running.listeners[0].1,
        log,
        _dir: dir,
    }
}

/// Sends raw `request` bytes and reads the whole answer (head and body as
/// sent, chunk framing and trailers included).
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    tokio::time::timeout(WAIT, async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, text)
    })
    .await
    .expect("the answer came in time")
}

/// Sends raw `request` bytes and reads what comes back until the sidecar
/// closes the connection or `for_at_most` passes (a connection kept alive
/// after a request the sidecar read differently than written).
async fn raw_for(addr: SocketAddr, request: &[u8], for_at_most: Duration) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(for_at_most, s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn get(method: &str, target: &str, extra: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{extra}\r\n")
        .into_bytes()
}

// === class: values in response trailers and header names ===

/// Detectors mask every response header value; header names are a channel
/// back too (a field whose name holds a finding or the credential, in any
/// case, is dropped). Trailers never reach the client (hyper sends only
/// trailers its response head declares, and `Trailer` is hop-by-hop), but
/// the body before them must arrive whole: what the scrubber and masker
/// still held when the trailers came was lost (a data frame after the
/// trailers is dropped), a complete-looking empty body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_and_header_names_carry_no_value() {
    for masking in ["", DETECTORS] {
        let f = fixture(masking).await;
        let mut leaks = Vec::new();
        for (route, body) in [
            ("/trailer-email", Some(r#"{"ok":1}"#)),
            ("/trailer-card", Some(r#"{"ok":1}"#)),
            ("/trailer-token", Some(r#"{"ok":1}"#)),
            ("/header-name-card", None),
            ("/header-name-token", None),
            ("/early-hints", None),
            ("/header-encoded", None),
        ] {
            let (status, text) = raw(f.sidecar, &get("GET", route, "te: trailers\r\n")).await;
            let lower = text.to_ascii_lowercase();
            let mut values = vec!["4ec39hqlyjwdarjtt1zdp7dc"];
            if !masking.is_empty() {
                values.extend([CARD, EMAIL, "ann%40example.com", "%34111111111111111"]);
            }
            for value in values {
                if lower.contains(&value.to_ascii_lowercase()) {
                    leaks.push(format!("{masking:?} {route}: {status} {value} in\n{text}"));
                }
            }
            if status != if body.is_some() { 200 } else { 204 } {
                leaks.push(format!("{masking:?} {route}: {status} {text}"));
            }
            if let Some(body) = body
                && !text.contains(&format!("{:x}\r\n{body}\r\n", body.len()))
            {
                leaks.push(format!("{masking:?} {route}: body lost:\n{text}"));
            }
        }
        assert!(leaks.is_empty(), "wrong:\n{}", leaks.join("\n"));
    }
}

// === class: HEAD is a GET ===

/// Servers (Go, Express, Flask, Rails, Python's http.server here) run a
/// GET handler for HEAD: a rule that denies GET denies HEAD too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_decided_as_get() {
    let f = fixture("").await;
    let mut ran = Vec::new();
    for (method, target) in [
        ("HEAD", "/v1/export/all"),
        ("head", "/v1/export/all"),
        ("GET", "/v1/export/all"),
        ("get", "/v1/export/all"),
    ] {
        let (status, text) = raw(f.sidecar, &get(method, target, "")).await;
        if status != 403 {
            ran.push(format!("{method} {target}: {status} {text}"));
        }
    }
    assert!(ran.is_empty(), "not denied:\n{}", ran.join("\n"));
    assert!(
        f.seen().is_empty(),
        "a denied request reached the upstream: {:?}",
        f.seen()
    );
    // HEAD of what GET may read still runs.
    let (status, _) = raw(f.sidecar, &get("HEAD", "/v1/other", "")).await;
    assert_eq!(status, 200);
    assert_eq!(f.seen().pop().unwrap().method, "HEAD");
}

// === class: an encoding hidden as hop-by-hop ===

/// An upstream's `Connection: content-encoding` would have the header
/// stripped before the sidecar looked for an encoding: the body is still
/// compressed, cannot be masked, and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hop_by_hop_content_encoding_still_counts() {
    let f = fixture(DETECTORS).await;
    let (status, text) = raw(f.sidecar, &get("GET", "/hidden-encoding", "")).await;
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("compressedResponse"), "{text}");
    // Raw deflate has no magic bytes: only its Content-Encoding says what it
    // is, whether the upstream calls that header hop-by-hop or not.
    for masking in ["", DETECTORS] {
        let f = fixture(masking).await;
        let (status, text) = raw(f.sidecar, &get("GET", "/hidden-deflate", "")).await;
        assert_eq!(status, 502, "{masking:?}: {text:?}");
        assert!(text.contains("compressedResponse"), "{masking:?}: {text:?}");
    }
}

// === class: request smuggling and desync ===

/// Framing a server could read two ways, each followed by a smuggled
/// `GET /v1/export/all` (denied): the sidecar refuses the message (400) or
/// reads the smuggled request as a request of its own and denies it; the
/// upstream never sees `/v1/export` (hyper's client frames what it
/// forwards itself: nothing arrives after the end of a request as framed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_smuggles_nothing() {
    let f = fixture("").await;
    let smuggled = "GET /v1/export/all HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "CL and TE",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE and CL covering the smuggled request",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: {}\r\n\r\n0\r\n\r\n{smuggled}",
                5 + smuggled.len()
            ),
        ),
        (
            "TE chunked, identity",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE identity, chunked",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ntransfer-encoding: identity, chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE xchunked with CL",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ntransfer-encoding: xchunked\r\ncontent-length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "two TE headers",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ntransfer-encoding: x\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "duplicate CL",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\ncontent-length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "CL list",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ncontent-length: 0, {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "CL with a plus",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ncontent-length: +{}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "obs-fold TE",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ntransfer-encoding:\r\n chunked\r\ncontent-length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "space before the colon",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ntransfer-encoding : chunked\r\ncontent-length: {}\r\n\r\n0\r\n\r\n{smuggled}",
                5
            ),
        ),
        (
            "bare LF line ends",
            format!("POST /v1/ok HTTP/1.1\nhost: x\ncontent-length: 0\n\n{smuggled}"),
        ),
        (
            "chunk extension hiding a CRLF",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2;a=\"\r\n\"\r\nab\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "chunk size overflow",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n10000000000000002\r\nab\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "chunk size with a bare LF",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "HTTP/1.0 with TE",
            format!(
                "POST /v1/ok HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            ),
        ),
        (
            "Expect 100-continue then a body carrying a request",
            format!(
                "POST /v1/ok HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "pipelined",
            format!("GET /v1/ok HTTP/1.1\r\nhost: x\r\n\r\n{smuggled}"),
        ),
        (
            "Upgrade h2c",
            format!(
                "GET /v1/ok HTTP/1.1\r\nhost: x\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n{smuggled}"
            ),
        ),
        (
            "Upgrade websocket",
            format!(
                "GET /v1/ok HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n{smuggled}"
            ),
        ),
        (
            "CONNECT",
            format!("CONNECT 127.0.0.1:1 HTTP/1.1\r\nhost: 127.0.0.1:1\r\n\r\n{smuggled}"),
        ),
        (
            "h2 prior knowledge",
            format!("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n{smuggled}"),
        ),
    ];
    let mut wrong = Vec::new();
    for (name, bytes) in &cases {
        let (status, text) = raw_for(f.sidecar, bytes.as_bytes(), Duration::from_secs(3)).await;
        let reached: Vec<String> = f
            .seen()
            .iter()
            .filter(|s| s.path.contains("export") || !s.after.is_empty())
            .map(|s| s.all.clone())
            .collect();
        if text.contains(r#""route":"/v1/export"#) {
            wrong.push(format!("{name}: the client got the export:\n{text}"));
        }
        if !reached.is_empty() {
            wrong.push(format!(
                "{name}: {status}, the upstream saw {reached:?}\n{text}"
            ));
        }
        f.log.lock().unwrap().clear();
    }
    assert!(wrong.is_empty(), "smuggled:\n{}", wrong.join("\n"));
}

// === class: request targets and path shapes ===

/// Targets in every form, paths in every spelling of a denied resource:
/// each is denied, refused, or reaches the upstream as the very path that
/// was decided (which a deny rule then saw).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_decide_what_runs() {
    let f = fixture("").await;
    let mut wrong = Vec::new();
    for target in [
        "http://x/v1/export/all",
        "https://x/v1/export/all",
        "http://user:pw@x/v1/export/all",
        "HTTP://X/v1/export/all",
        "/v1/export/all?",
        "/v1/export/all#x",
        "/v1/export/all%23x",
        "/v1/export//all",
        "/v1//export/all",
        "/v1/export/./all",
        "/v1/export/all/.",
        "/v1/export/all/",
        "/v1/export/all.",
        "/v1/export/%61ll",
        "/v1/%65xport/all",
        "/v1/%2565xport/all",
        "/v1/%u0065xport/all",
        "/v1/%C0%AFexport/all",
        "/v1/export%00/all",
        "/v1/export%09/all",
        "/v1/export%2F/all",
        "/v1/export;/all",
        "/v1/export/all;x",
        "/v1/./export/all",
        "/x/../v1/export/all",
        "/v1\\export/all",
        "*",
        "v1/export/all",
        "/V1/EXPORT/all",
        "/v1/Export/all",
        // Spring's AntPathMatcher (trimTokens), .NET's Trim and Windows
        // (IIS) drop a segment's padding: `/export%20/` runs `/export/`.
        "/v1/export%20/all",
        "/v1/%20export/all",
        "/v1/export%20%20/all",
        "/v1/export./all",
        "/v1/export%2E/all",
        "/v1/export.%20./all",
        "/v1/export%C2%A0/all",
        "/v1/export%E3%80%80/all",
    ] {
        let before = f.seen().len();
        let (status, text) = raw(f.sidecar, &get("GET", target, "")).await;
        let seen = f.seen();
        let arrived: Vec<&Seen> = seen[before..].iter().collect();
        for s in arrived {
            let lower = s.path.to_ascii_lowercase();
            if lower.contains("export") {
                wrong.push(format!(
                    "{target}: {status}, upstream saw {}\n{text}",
                    s.path
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "ran:\n{}", wrong.join("\n"));
}

/// A glob written with capitals (`/v1/Admin/**`) covers every spelling of
/// the path: Express, ASP.NET and IIS route in any case, so `/v1/admin/x`
/// runs what the rule names (before: only `/v1/Admin/x` was denied). A path
/// the glob does not name in any case passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globs_with_capitals_hold_in_any_case() {
    let f = fixture("").await;
    let mut wrong = Vec::new();
    for target in [
        "/v1/Admin/x",
        "/v1/admin/x",
        "/v1/ADMIN/x",
        "/v1/aDMIN/x",
        "/V1/admin/x",
        "/v1/admin",
        "/v1/%61dmin/x",
    ] {
        let before = f.seen().len();
        let (status, _) = raw(f.sidecar, &get("GET", target, "")).await;
        if let Some(arrived) = f.seen().get(before) {
            wrong.push(format!("{target}: {status}, upstream saw {}", arrived.path));
        }
    }
    for target in ["/v1/administrators", "/v1/adm/x"] {
        let before = f.seen().len();
        let (status, text) = raw(f.sidecar, &get("GET", target, "")).await;
        if status != 200 || f.seen().len() != before + 1 {
            wrong.push(format!("{target}: {status}, refused: {text}"));
        }
    }
    assert!(wrong.is_empty(), "wrong:\n{}", wrong.join("\n"));
}

// === class: response masking ===

/// The body of a chunked message (`None`: not chunked, the bytes as they
/// are).
fn body_of(text: &str) -> String {
    let Some((head, mut rest)) = text.split_once("\r\n\r\n") else {
        return String::new();
    };
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return rest.to_string();
    }
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            out.push_str(&after[..n.min(after.len())]);
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}

/// Every JSON document of `body` (one, or one a line) as serde_json reads
/// it, written back without escapes.
fn decoded(body: &str) -> String {
    let body = body.trim_start_matches('\u{feff}');
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        return v.to_string();
    }
    body.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each body of [`MASK_CASES`] through a masking path and detectors: the
/// client never reads Ann's name, e-mail or card, as sent or decoded
/// (JSON escapes, numbers); what cannot be masked is refused or cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_values_never_reach_the_client() {
    let paths = r#"
    - jsonPaths: ["$.customer.name"]
      strategy: redact
    - detectors: [creditCard, email]
      strategy: redact
"#;
    let mut leaks = Vec::new();
    // Detectors only: text is masked too, not refused.
    for masking in [paths, DETECTORS] {
        let f = fixture(masking).await;
        for (name, _, _) in MASK_CASES {
            let (status, text) = raw(f.sidecar, &get("GET", &format!("/m/{name}"), "")).await;
            let body = body_of(&text);
            let seen = format!("{body}\n{}", decoded(&body));
            let mut values = vec![
                "ann@",
                "ann%40",
                "ann%2540",
                "4111111111111111",
                "%34111111111111111",
                "4.111111111111111e15",
            ];
            if masking == paths {
                values.push("Ann");
            }
            for value in values {
                if seen.contains(value) {
                    leaks.push(format!("{name}: {status} {value:?} in {body:?}"));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "leaked:\n{}", leaks.join("\n"));
}

// === class: headers that stand for others ===

/// CGI, WSGI and Rack servers read `_` in a header name as `-`: a name
/// that stands for a withheld header (a method override, the URL
/// rewrites, the application's own credential, hop-by-hop ones) never
/// reaches the upstream, in any case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscored_names_are_withheld_as_the_names_they_stand_for() {
    let f = fixture("").await;
    let mut passed = Vec::new();
    for header in [
        "X_HTTP_Method_Override: DELETE",
        "x_http_method_override: DELETE",
        "X-HTTP_Method-Override: DELETE",
        "X_HTTP_METHOD: DELETE",
        "X_Method_Override: DELETE",
        "X_Original_URL: /v1/export/all",
        "X_Rewrite_URL: /v1/export/all",
        "X_Original_Method: DELETE",
        "Authori_zation: x",
        "Proxy_Authorization: Bearer mine",
        "Transfer_Encoding: chunked",
    ] {
        let before = f.seen().len();
        let (status, text) = raw(f.sidecar, &get("GET", "/v1/ok", &format!("{header}\r\n"))).await;
        let name = header.split(':').next().unwrap().to_ascii_lowercase();
        let seen = f.seen();
        let Some(arrived) = seen.get(before) else {
            passed.push(format!("{header}: {status}, nothing arrived: {text}"));
            continue;
        };
        let forwarded = arrived.all.to_ascii_lowercase();
        // `Authori_zation` stands for no header: it passes.
        let stands_for_one = name != "authori_zation";
        if stands_for_one == forwarded.contains(&format!("\r\n{name}:")) {
            passed.push(format!("{header}: {status}, upstream saw\n{}", arrived.all));
        }
    }
    assert!(passed.is_empty(), "wrong:\n{}", passed.join("\n"));
}

// === class: query parameters ===

/// Spellings of a `debug` parameter some server reads as `debug` (ASP.NET
/// reads names in any case; PHP drops leading spaces and reads `.` and
/// ` ` as `_`; every server decodes escapes): each is denied or refused,
/// or reaches the upstream as nothing a server reads as `debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_are_read_as_servers_read_them() {
    let f = fixture("").await;
    let mut passed = Vec::new();
    for query in [
        "debug=1",
        "debug",
        "debug=",
        "x=1&debug=1",
        "debug=1&debug=2",
        "de%62ug=1",
        "%64ebug=1",
        "debug%00=1",
        "debug[]=1",
        "debug%5B%5D=1",
        "debug[x]=1",
        "DEBUG=1",
        "Debug=1",
        "%20debug=1",
        "+debug=1",
        "debug%20=1",
        "x=1;debug=1",
        "DEBUG[]=1",
        "%2544ebug=1",
    ] {
        let before = f.seen().len();
        let (status, _) = raw(f.sidecar, &get("GET", &format!("/v1/ok?{query}"), "")).await;
        let seen = f.seen();
        if let Some(arrived) = seen.get(before) {
            passed.push(format!("{query}: {status}, upstream saw {}", arrived.path));
        }
    }
    // Parameters that are not `debug` to any server pass.
    for query in [
        "x=1%26debug=1",
        "debug%3D1",
        "debugger=1",
        "xdebug=1",
        "de_bug=1",
    ] {
        let before = f.seen().len();
        let (status, text) = raw(f.sidecar, &get("GET", &format!("/v1/ok?{query}"), "")).await;
        if status != 200 || f.seen().len() != before + 1 {
            passed.push(format!("{query}: {status}, refused: {text}"));
        }
    }
    assert!(passed.is_empty(), "ran:\n{}", passed.join("\n"));
}

/// Rails, Laravel and Express apps that merge `req.query` into the body
/// read a query parameter as the body field a `jsonBody` rule judges
/// (Rails: the query wins; Laravel: the body wins): a parameter that can
/// reach a field such a rule reads is refused on the requests the rule
/// applies to, in any spelling (before: `POST /v1/refunds?amount=500` with
/// `{}` got past `$.amount > 100`). Elsewhere, and other names, pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_cannot_stand_for_body_fields() {
    let f = fixture("").await;
    let post = |target: &str, body: &str| {
        format!(
            "POST {target} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let mut wrong = Vec::new();
    for (target, body, passes) in [
        ("/v1/refunds?amount=500", "{}", false),
        ("/v1/refunds?amount=500", r#"{"amount":50}"#, false),
        ("/v1/refunds?amount=500", "", false),
        ("/v1/refunds?x=1&amount=500", r#"{"amount":50}"#, false),
        ("/v1/refunds?%61mount=500", "{}", false),
        ("/v1/refunds?AMOUNT=500", "{}", false),
        ("/v1/refunds?amount[]=500", "{}", false),
        ("/v1/refunds?amount%5B%5D=500", "{}", false),
        ("/v1/refunds?+amount=500", "{}", false),
        ("/v1/refunds?amount.x=500", "{}", false),
        ("/v1/refunds/?amount=500", "{}", false),
        // Read as /v1/refunds by servers that route in any case.
        ("/V1/REFUNDS?amount=500", "{}", false),
        ("/v1/Refunds?amount=500", r#"{"amount":50}"#, false),
        ("/v1/Refunds", r#"{"amount":500}"#, false),
        ("/v1/Refunds", r#"{"amount":500,"amount":50}"#, false),
        ("/v1/refunds", r#"{"amount":500}"#, false),
        ("/v1/refunds?page=2", r#"{"amount":50}"#, true),
        ("/v1/refunds?amounts=2", r#"{"amount":50}"#, true),
        ("/v1/refunds", r#"{"amount":50}"#, true),
        ("/v1/ok?amount=500", "{}", true),
    ] {
        let before = f.seen().len();
        let (status, text) = raw(f.sidecar, &post(target, body)).await;
        let arrived = f.seen().len() > before;
        if passes != arrived || passes != (status == 200) {
            wrong.push(format!(
                "{target} {body}: {status} arrived {arrived}: {text}"
            ));
        }
    }
    assert!(wrong.is_empty(), "wrong:\n{}", wrong.join("\n"));
}

// === class: method overrides in JSON bodies ===

/// Laravel reads a POST JSON body's `_method` as the method (its request
/// bag is the JSON): where rules name methods it is refused, however the
/// key is spelled; a nested one, or a body not labelled JSON, passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_method_overrides_are_refused() {
    let f = fixture("").await;
    let post = |ctype: &str, body: &str| {
        format!(
            "POST /v1/ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let mut wrong = Vec::new();
    for (ctype, body, refused) in [
        ("application/json", r#"{"_method":"DELETE"}"#, true),
        ("application/json", r#"{"\u005fmethod":"DELETE"}"#, true),
        ("application/json", r#"{"_METHOD":"DELETE"}"#, true),
        (
            "application/json; charset=utf-8",
            r#"{"a":1,"_method":"PUT"}"#,
            true,
        ),
        ("application/vnd.api+json", r#"{"_method":"DELETE"}"#, true),
        ("application/json", r#"{"x":{"_method":"DELETE"}}"#, false),
        ("application/json", r#"[{"_method":"DELETE"}]"#, false),
        ("application/json", r#"{"method":"DELETE"}"#, false),
    ] {
        let before = f.seen().len();
        let (status, text) = raw(f.sidecar, &post(ctype, body)).await;
        let arrived = f.seen().len() > before;
        let ok = if refused {
            status == 400 && text.contains("methodOverride") && !arrived
        } else {
            status == 200 && arrived
        };
        if !ok {
            wrong.push(format!("{ctype} {body}: {status} arrived {arrived}"));
        }
    }
    assert!(wrong.is_empty(), "wrong:\n{}", wrong.join("\n"));
}
