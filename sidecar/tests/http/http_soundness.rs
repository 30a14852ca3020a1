//! Adversarial corpus for the HTTP data plane (issue 16): a Python
//! standard-library upstream (`http_upstream.py`: `json.loads` on the body,
//! method override headers honoured, every representation of a resource),
//! the sidecar in standalone mode in-process, and raw HTTP/1.1 bytes and
//! curl as clients. Every refusal is checked against the upstream's own log:
//! a refused request never arrived.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use sluice_e2e::harness::HttpConnection;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use sluice_sidecar::standalone::{self, StandaloneConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc";
/// With '/' and '+', which encoders escape.
const API_KEY: &str = "key_9f8e7d6c/5b4a+3210";
const CARD: &str = "4111111111111111";
const EMAIL: &str = "ann@example.com";
/// The upstream's path prefix (the Connection's baseURL path).
const BASE: &str = "/tenants/acme";
/// Bound on every wait of these tests.
const WAIT: Duration = Duration::from_secs(60);

// === the upstream ===

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
            .arg(BASE)
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
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === the sidecar ===

struct Fixture {
    sidecar: SocketAddr,
    upstream: Upstream,
    audit: PathBuf,
    _dir: tempfile::TempDir,
}

/// Rules of every fixture.
const RULES: &str = r#"
    - name: big-refunds
      match: {methods: [POST], paths: ["/v1/refunds"], jsonBody: [{path: "$.amount", greaterThan: 1000}]}
      action: deny
    - name: no-debug
      match: {query: {debug: "*"}}
      action: deny
    - name: no-deletes
      match: {methods: [DELETE, PUT]}
      action: deny
    - name: no-admin
      match: {paths: ["/admin/**"]}
      action: deny
"#;

/// Masking by path and by detectors.
const PATHS_AND_DETECTORS: &str = r#"
    - jsonPaths: ["$.customer.name"]
      strategy: redact
    - detectors: [creditCard, email]
      strategy: redact
"#;

/// Masking by detectors only.
const DETECTORS_ONLY: &str = r#"
    - detectors: [creditCard, email]
      strategy: redact
"#;

async fn fixture(masking: &str) -> Fixture {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let masking = if masking.is_empty() {
        String::new()
    } else {
        format!("  masking:{masking}")
    };
    let manifests = sluice_e2e::harness::http_connection_manifests(&HttpConnection {
        base_url: &format!("http://127.0.0.1:{}{BASE}", upstream.port),
        ca_pem: None,
        secret: &[("Authorization", TOKEN), ("X-Api-Key", API_KEY)],
        headers: &["Authorization", "X-Api-Key"],
        listen: &port.to_string(),
        policy: &format!("  rules:{RULES}{masking}"),
    });
    let path = dir.path().join("manifests.yaml");
    std::fs::write(&path, manifests).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut cfg = StandaloneConfig::new(path, "shop/app".into());
    cfg.audit_stdout = false;
    cfg.audit_file = Some(audit.clone());
    cfg.planes.http_upstream_timeout = Duration::from_secs(20);
    cfg.planes.http_max_request_body = 64 * 1024;
    let running = standalone::start(cfg).await.unwrap();
    Fixture {
        sidecar: running.listeners[0].1,
        upstream,
        audit,
        _dir: dir,
    }
}

/// One answer, read whole (the request asks to close the connection).
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
    /// The body ended properly (not cut off).
    complete: bool,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` of a JSON refusal, or "" for any other body.
    fn error(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// The body of a chunked message, and whether it ended properly (a
/// response cut off by the sidecar does not).
fn dechunk(mut b: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = memchr::memmem::find(b, b"\r\n") else {
            return (out, false);
        };
        let size_text = String::from_utf8_lossy(&b[..line_end]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
        else {
            return (out, false);
        };
        b = &b[line_end + 2..];
        if size == 0 {
            return (out, true);
        }
        if b.len() < size + 2 {
            out.extend_from_slice(&b[..size.min(b.len())]);
            return (out, false);
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Sends `request` (raw bytes, which should ask for `Connection: close`) to
/// `addr` and reads the answer to the end.
async fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    tokio::time::timeout(WAIT, async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let split = memchr::memmem::find(&out, b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end: {}", String::from_utf8_lossy(&out)));
        let head = String::from_utf8_lossy(&out[..split]).into_owned();
        let status = head[9..12].parse().unwrap();
        let mut body = out[split + 4..].to_vec();
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let mut complete = true;
        if chunked {
            (body, complete) = dechunk(&body);
        } else if let Some(length) = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        }) {
            complete = body.len() == length;
        }
        Reply {
            status,
            head,
            body,
            complete,
        }
    })
    .await
    .expect("the answer came in time")
}

/// A request with `body` and the given extra header lines.
fn request(method: &str, target: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

impl Fixture {
    async fn send(&self, method: &str, target: &str, headers: &[&str], body: &[u8]) -> Reply {
        raw(self.sidecar, &request(method, target, headers, body)).await
    }

    /// What the upstream received so far (asked of it directly).
    async fn log(&self) -> Vec<Value> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.upstream.port).parse().unwrap();
        raw(addr, &request("GET", "/__log", &[], b""))
            .await
            .json()
            .as_array()
            .unwrap()
            .clone()
    }

    async fn hits(&self) -> usize {
        self.log().await.len()
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(&self.audit).expect("the audit file exists")
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    memchr::memmem::find(hay, needle.as_bytes()).is_some()
}

// === 1: bodies and queries the sidecar cannot read are refused ===

/// Bodies that Python's `json.loads` reads (amount 100000 or infinity) and
/// that a strict reader cannot: each is refused with 400 naming the limit,
/// and the upstream never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_bodies_are_refused_before_the_upstream() {
    let f = fixture("").await;
    let json = "content-type: application/json";
    let deep = format!(
        r#"{{"amount": 100000, "x": {}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend_from_slice(br#"{"amount": 100000}"#);
    let utf16: Vec<u8> =
        r#"{"amount": 100000}"#.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut utf16_bom = vec![0xFF, 0xFE];
    utf16_bom.extend_from_slice(&utf16);
    let utf16_be: Vec<u8> =
        r#"{"amount": 100000}"#.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let gzip_body = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xabVJ\xcc\xcd/\xcd+Q\xb2R04\x00\x02\x03\x00\x8c\xa5\x9a\xa6\x12\x00\x00\x00";
    let cases: Vec<(&str, Vec<&str>, Vec<u8>, &str)> = vec![
        (
            "200 levels of nesting",
            vec![json],
            deep.into_bytes(),
            "depth",
        ),
        (
            "NaN",
            vec![json],
            br#"{"amount": 100000, "n": NaN}"#.to_vec(),
            "number",
        ),
        (
            "Infinity",
            vec![json],
            br#"{"amount": Infinity}"#.to_vec(),
            "number",
        ),
        (
            "-Infinity",
            vec![json],
            br#"{"x": -Infinity, "amount": 100000}"#.to_vec(),
            "number",
        ),
        (
            "1e400",
            vec![json],
            br#"{"amount": 1e400}"#.to_vec(),
            "number",
        ),
        (
            "a 21-digit integer",
            vec![json],
            br#"{"amount": 100000000000000000000}"#.to_vec(),
            "number",
        ),
        ("UTF-8 byte-order mark", vec![json], bom, "encoding"),
        ("UTF-16LE", vec![json], utf16, "encoding"),
        ("UTF-16LE with BOM", vec![json], utf16_bom, "encoding"),
        ("UTF-16BE", vec![json], utf16_be, "encoding"),
        (
            "lone surrogate",
            vec![json],
            br#"{"amount": 100000, "s": "\ud800"}"#.to_vec(),
            "encoding",
        ),
        (
            "lone low surrogate",
            vec![json],
            br#"{"amount": 100000, "s": "\udc00x"}"#.to_vec(),
            "encoding",
        ),
        (
            "reversed surrogates",
            vec![json],
            br#"{"s": "\udc00\ud800", "amount": 100000}"#.to_vec(),
            "encoding",
        ),
        (
            "Latin-1 byte",
            vec![json],
            b"{\"amount\": 100000, \"s\": \"\xe9\"}".to_vec(),
            "encoding",
        ),
        (
            "duplicate key, small last",
            vec![json],
            br#"{"amount": 100000, "amount": 1}"#.to_vec(),
            "duplicateKey",
        ),
        (
            "duplicate key, nested",
            vec![json],
            br#"{"a": {"k": 1, "k": 2}, "amount": 100000}"#.to_vec(),
            "duplicateKey",
        ),
        (
            "trailing comma",
            vec![json],
            br#"{"amount": 100000,}"#.to_vec(),
            "syntax",
        ),
        (
            "single quotes",
            vec![json],
            br#"{'amount': 100000}"#.to_vec(),
            "syntax",
        ),
        (
            "gzip encoded",
            vec![json, "content-encoding: gzip"],
            gzip_body.to_vec(),
            "contentEncoding",
        ),
        (
            "form encoded",
            vec!["content-type: application/x-www-form-urlencoded"],
            b"amount=100000".to_vec(),
            "contentType",
        ),
        (
            "multipart",
            vec!["content-type: multipart/form-data; boundary=x"],
            b"--x\r\ncontent-disposition: form-data; name=\"amount\"\r\n\r\n100000\r\n--x--\r\n"
                .to_vec(),
            "contentType",
        ),
        (
            "charset utf-16 label",
            vec!["content-type: application/json; charset=utf-16"],
            br#"{"amount": 100000}"#.to_vec(),
            "contentType",
        ),
        (
            "two content types",
            vec![json, "content-type: text/xml"],
            br#"{"amount": 100000}"#.to_vec(),
            "contentType",
        ),
        (
            "not JSON under text/plain",
            vec!["content-type: text/plain"],
            b"amount: 100000".to_vec(),
            "syntax",
        ),
        (
            "not JSON without a label",
            vec![],
            b"{amount: 100000}".to_vec(),
            "syntax",
        ),
    ];
    // Every variant is tried before failing, so a failure lists them all.
    let mut passed = Vec::new();
    for (what, headers, body, limit) in &cases {
        let r = f.send("POST", "/v1/refunds", headers, body).await;
        let refused = r.status == 400 && {
            let b = r.json();
            b["error"] == "bodyRefused"
                && b["limit"] == *limit
                && b["message"].as_str().unwrap().contains("rule inspects")
        };
        if !refused {
            passed.push(format!("{what}: {} {}", r.status, r.text()));
        }
    }
    assert!(
        passed.is_empty(),
        "not refused as expected:\n{}",
        passed.join("\n")
    );
    assert_eq!(f.hits().await, 0, "a refused body reached the upstream");

    // Numbers in strings (Python's int() and float() read them) meet the rule.
    for body in [
        &br#"{"amount": "100000"}"#[..],
        br#"{"amount": " 1e5 "}"#,
        br#"{"amount": "1e400"}"#,
    ] {
        let r = f.send("POST", "/v1/refunds", &[json], body).await;
        assert_eq!(r.status, 403, "{}: {r:?}", String::from_utf8_lossy(body));
    }
    // The same rule still decides bodies it can read.
    let r = f
        .send("POST", "/v1/refunds", &[json], br#"{"amount": 100000}"#)
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.json()["rule"], "big-refunds");
    let r = f
        .send(
            "POST",
            "/v1/refunds",
            &["content-type: application/json; charset=UTF-8"],
            br#"{"amount": 10, "n": 1.5e3, "deep": [[[1]]], "s": "\ud83d\ude00"}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["refunded"], "10");
    // An empty body has nothing to read.
    let r = f.send("POST", "/v1/refunds", &[json], b"").await;
    assert_eq!(r.status, 200, "{r:?}");
    // Bodies no enforced body rule reads are not held to the grammar.
    let r = f
        .send(
            "POST",
            "/v1/uploads",
            &["content-type: application/octet-stream"],
            b"\xff\xfe{NaN",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(f.hits().await, 3);
    let audit = f.audit();
    assert!(
        audit.contains("the body nests arrays and objects deeper than 64 levels"),
        "{audit}"
    );
}

/// Query strings a rule looks at must read the same everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_queries_are_refused_before_the_upstream() {
    let f = fixture("").await;
    let mut passed = Vec::new();
    for (target, limit) in [
        ("/v1/x?a=1;debug=1", "separator"),
        ("/v1/x?debug=%zz", "encoding"),
        ("/v1/x?a=%ff", "encoding"),
        ("/v1/x?a=%00", "encoding"),
        ("/v1/x?debug[]=1", "repeatedParameter"),
        ("/v1/x?debug%5B%5D=1", "repeatedParameter"),
        ("/v1/x?debug=&debug=1", "repeatedParameter"),
    ] {
        let r = f.send("GET", target, &[], b"").await;
        let refused =
            r.status == 400 && r.json()["error"] == "queryRefused" && r.json()["limit"] == limit;
        if !refused {
            passed.push(format!("{target}: {} {}", r.status, r.text()));
        }
    }
    assert!(
        passed.is_empty(),
        "not refused as expected:\n{}",
        passed.join("\n")
    );
    let long = format!("/v1/x?a={}", "b".repeat(20_000));
    let r = f.send("GET", &long, &[], b"").await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(f.hits().await, 0, "a refused query reached the upstream");
    // Encoded names still meet their rule; other queries pass.
    let r = f.send("GET", "/v1/x?%64ebug=1", &[], b"").await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = f.send("GET", "/v1/x?a=1&b=%C3%A9+x&c", &[], b"").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(f.hits().await, 1);
}

// === 4: method override headers and parameters ===

/// Headers that make servers run another method or path than decided never
/// reach the upstream; `_method` parameters (query or form) are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_overrides_do_not_reach_the_upstream() {
    let f = fixture("").await;
    let mut leaked = Vec::new();
    for header in [
        "X-HTTP-Method-Override: DELETE",
        "x-http-method-override: delete",
        "X-HTTP-Method: DELETE",
        "X-Method-Override: PUT",
        "X-Original-Method: DELETE",
        "X-Original-URL: /admin/users",
        "X-Rewrite-URL: /admin/users",
        "X-Original-URI: /admin/users",
    ] {
        let r = f.send("POST", "/v1/things", &[header], b"").await;
        assert_eq!(r.status, 200, "{header}: {r:?}");
        let seen = f.log().await.pop().unwrap();
        let name = header.split(':').next().unwrap().to_ascii_lowercase();
        if seen["effectiveMethod"] != "POST" || seen["headers"].get(&name).is_some() {
            leaked.push(format!("{header}: upstream saw {seen}"));
        }
    }
    assert!(
        leaked.is_empty(),
        "overrides reached the upstream:\n{}",
        leaked.join("\n")
    );
    let before = f.hits().await;
    let form = "content-type: application/x-www-form-urlencoded";
    let multipart = "content-type: multipart/form-data; boundary=b";
    let mut passed = Vec::new();
    for (what, target, headers, body) in [
        ("query", "/v1/things?_method=DELETE", vec![], &b""[..]),
        (
            "encoded query",
            "/v1/things?a=1&%5Fmethod=DELETE",
            vec![],
            b"",
        ),
        ("upper-case query", "/v1/things?_METHOD=put", vec![], b""),
        ("form", "/v1/things", vec![form], b"a=1&_method=DELETE"),
        (
            "encoded form",
            "/v1/things",
            vec![form],
            b"%5f%6Dethod=DELETE",
        ),
        (
            "multipart",
            "/v1/things",
            vec![multipart],
            b"--b\r\ncontent-disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n",
        ),
        (
            "gzip form",
            "/v1/things",
            vec![form, "content-encoding: gzip"],
            b"\x1f\x8b",
        ),
    ] {
        let r = f.send("POST", target, &headers, body).await;
        if r.status != 400 || r.json()["error"] != "methodOverride" {
            passed.push(format!("{what}: {} {}", r.status, r.text()));
        }
    }
    assert!(passed.is_empty(), "not refused:\n{}", passed.join("\n"));
    assert_eq!(
        f.hits().await,
        before,
        "a refused override reached the upstream"
    );
    // Forms without an override pass, untouched.
    let r = f.send("POST", "/v1/things", &[form], b"a=1&method=x").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(f.log().await.pop().unwrap()["body"], "a=1&method=x");
}

// === 5: paths are forwarded as decided, and never climb out of baseURL ===

/// The upstream receives exactly the normalised path that was decided,
/// under the baseURL; paths that climb above it or hide separators are
/// refused and never arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_forwarded_as_decided() {
    let f = fixture("").await;
    let mut wrong = Vec::new();
    for (target, want) in [
        ("/v1/./x/../entries/1", "/v1/entries/1"),
        ("//v1//entries/1", "/v1/entries/1"),
        ("/v1/%65ntries/%31", "/v1/entries/1"),
        ("/v1/%2e/entries/x/%2E%2E/1", "/v1/entries/1"),
        ("/v1/entries/1/?a=1", "/v1/entries/1/?a=1"),
        ("/v1/caf%c3%a9%20x", "/v1/caf%C3%A9%20x"),
        (
            "http://elsewhere.example/v1/x/../entries/2",
            "/v1/entries/2",
        ),
    ] {
        let r = f.send("GET", target, &[], b"").await;
        let seen = f.log().await.pop().unwrap();
        let want = format!("{BASE}{want}");
        if r.status != 200 || seen["path"] != want.as_str() {
            wrong.push(format!(
                "{target}: {} upstream saw {}",
                r.status, seen["path"]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "not forwarded as decided:\n{}",
        wrong.join("\n")
    );
    // A deny rule sees through the dot-segments.
    let before = f.hits().await;
    let r = f.send("GET", "/v1/../admin/users", &[], b"").await;
    assert_eq!(r.status, 403, "{r:?}");
    let mut passed = Vec::new();
    for target in [
        "/../../entries/1",
        "/..",
        "/%2e%2e/%2e%2e/entries/1",
        "/.%2e/entries/1",
        "/v1/../../entries/1",
        "/entries/1/../../../admin",
        "/entries%2F1",
        "/entries%2f..%2f..%2fadmin",
        "/entries%5C1",
        "/entries%5c..%5cadmin",
        "/entries;x=1/1",
        "/admin;/users",
        "/entries/..;/admin",
        "/entries/1%3Bx",
    ] {
        let r = f.send("GET", target, &[], b"").await;
        if r.status != 400 || r.json()["error"] != "ambiguousPath" {
            passed.push(format!("{target}: {} {}", r.status, r.text()));
        }
    }
    assert!(passed.is_empty(), "not refused:\n{}", passed.join("\n"));
    // And with curl, which sends dot-segments as written when asked to.
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("/usr/bin/curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "--path-as-is",
                "-w",
                "\n%{http_code}",
            ])
            .arg(format!("http://{}/../../entries/1", f.sidecar))
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n400"), "{text}");
    assert!(text.contains("climbs above the root"), "{text}");
    assert_eq!(
        f.hits().await,
        before,
        "a refused path reached the upstream"
    );
}

// === 2: the injected credential never comes back ===

/// Whether `reply` (head and body) carries any piece of the credentials.
fn leaks_credential(reply: &Reply) -> Option<String> {
    let all = format!("{}\n{}", reply.head, reply.text());
    for piece in [
        "4eC39HqLyjWDarjtT1zdp7dc",
        "9f8e7d6c",
        "5b4a+3210",
        "5b4a%2B3210",
    ] {
        if all.contains(piece) {
            return Some(format!("{piece:?} in {all}"));
        }
    }
    // Decoded, whatever the JSON escapes.
    if let Ok(v) = serde_json::from_slice::<Value>(&reply.body)
        && (v.to_string().contains("4eC39HqLyjWDarjtT1zdp7dc")
            || v.to_string().contains("9f8e7d6c"))
    {
        return Some(format!("decoded JSON {v}"));
    }
    None
}

/// Echoes of the injected headers in every representation, in response
/// headers, in an error body, across one-byte chunks: scrubbed, and a
/// compressed answer (which cannot be scrubbed) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_credentials_never_come_back() {
    for masking in ["", DETECTORS_ONLY] {
        let f = fixture(masking).await;
        let mut leaks = Vec::new();
        for (route, status) in [
            ("/echo", 200),
            ("/echo-slash", 200),
            ("/echo-unicode", 200),
            ("/echo-text", 200),
            // Binary cannot be masked: refused under masking rules.
            ("/echo-binary", if masking.is_empty() { 200 } else { 502 }),
            ("/echo-urlencoded", 200),
            ("/echo-header", 204),
            ("/unauthorized", 401),
            ("/echo-reason", 401),
            ("/echo-chunked", 200),
        ] {
            let r = f.send("GET", route, &[], b"").await;
            if r.status != status {
                leaks.push(format!("{route}: status {} {}", r.status, r.text()));
            } else if let Some(leak) = leaks_credential(&r) {
                leaks.push(format!("{route}: {leak}"));
            }
        }
        assert!(
            leaks.is_empty(),
            "masking {masking:?}:\n{}",
            leaks.join("\n")
        );
        // The upstream did get the credential.
        let seen = f.log().await.pop().unwrap();
        assert_eq!(seen["headers"]["authorization"], TOKEN);
        assert_eq!(seen["headers"]["x-api-key"], API_KEY);
        // A compressed answer cannot be scrubbed: refused.
        let r = f
            .send("GET", "/echo-gzip", &["accept-encoding: gzip"], b"")
            .await;
        assert_eq!(r.status, 502, "{r:?}");
        assert_eq!(r.json()["error"], "compressedResponse");
        // So is a compressed container, labelled or not.
        let r = f.send("GET", "/echo-zip", &[], b"").await;
        assert_eq!(r.status, 502, "{r:?}");
        assert_eq!(r.json()["error"], "compressedResponse");
        // Compressed data under another label is refused with a status
        // before anything is answered, however its first bytes are chunked.
        for route in ["/echo-gzip-octets", "/echo-gzip-bytewise"] {
            let r = f.send("GET", route, &[], b"").await;
            assert_eq!(r.status, 502, "{route}: {r:?}");
            assert_eq!(r.json()["error"], "compressedResponse", "{route}");
        }
        // The upstream was asked for identity encoding, whatever the client said.
        assert_eq!(
            f.log().await.pop().unwrap()["headers"]["accept-encoding"],
            "identity"
        );
        // The echo's other values pass, and its length is kept.
        let r = f.send("GET", "/echo-text", &[], b"").await;
        assert!(
            r.text().starts_with("you sent Authorization: *****")
                && r.text().contains(" and key ****"),
            "{r:?}"
        );
        if masking.is_empty() {
            // Scrubbing alone keeps the upstream's framing.
            let length = r.header("content-length").expect("content-length kept");
            assert_eq!(length.parse::<usize>().unwrap(), r.body.len());
        }
    }
    // And through curl.
    let f = fixture("").await;
    let out = tokio::process::Command::new("/usr/bin/curl")
        .args(["-sS", "--max-time", "30", "-i"])
        .arg(format!("http://{}/echo", f.sidecar))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HTTP/1.1 200"), "{text}");
    assert!(
        !text.contains("4eC39HqLyjWDarjtT1zdp7dc") && !text.contains("9f8e7d6c"),
        "{text}"
    );
}

// === 3: every representation is masked or refused ===

/// The same resource in every representation a client may ask for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_representation_is_masked_or_refused() {
    // Headers included (a Location, an X-Contact).
    let clear = |r: &Reply| {
        let all = [r.head.as_bytes(), &r.body[..]].concat();
        contains(&all, CARD) || contains(&all, EMAIL) || contains(&all, "4111 1111")
    };
    // Detectors only: text is masked by detectors, JSON by detectors too.
    let f = fixture(DETECTORS_ONLY).await;
    let mut wrong = Vec::new();
    for (fmt, masked) in [
        ("json", true),
        ("xml", true),
        ("csv", true),
        ("ndjson", true),
        ("sse", true),
        ("bomtext", true),
        ("bomjson", true),
        ("html", true),
        ("none", true),
        ("utf16", false),
        ("binary", false),
    ] {
        let r = f
            .send("GET", &format!("/customer?fmt={fmt}"), &[], b"")
            .await;
        let ok = if masked {
            r.status == 200 && r.complete && !clear(&r) && contains(&r.body, "[redacted]")
        } else {
            r.status == 502 && r.error() == "unmaskableResponse" && !clear(&r)
        };
        if !ok {
            wrong.push(format!("{fmt}: {} {}", r.status, r.text()));
        }
    }
    assert!(wrong.is_empty(), "detectors only:\n{}", wrong.join("\n"));
    // JSON lines stay JSON lines.
    let r = f.send("GET", "/customer?fmt=ndjson", &[], b"").await;
    for line in r.text().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["customer"]["email"], "[redacted]", "{line}");
        assert_eq!(v["customer"]["name"], "Ann");
    }
    // Masking paths too: JSON in any label is masked by path; text, where
    // paths cannot be found, is refused.
    let f = fixture(PATHS_AND_DETECTORS).await;
    let mut wrong = Vec::new();
    for (fmt, masked) in [
        ("json", true),
        ("ndjson", true),
        ("bomtext", true),
        ("bomjson", true),
        ("none", true),
        ("xml", false),
        ("csv", false),
        ("sse", false),
        ("html", false),
        ("utf16", false),
        ("binary", false),
    ] {
        let r = f
            .send("GET", &format!("/customer?fmt={fmt}"), &[], b"")
            .await;
        let ok = if masked {
            r.status == 200 && r.complete && !clear(&r) && !contains(&r.body, "Ann")
        } else {
            r.status == 502 && r.error() == "unmaskableResponse" && !clear(&r)
        };
        if !ok {
            wrong.push(format!("{fmt}: {} {}", r.status, r.text()));
        }
    }
    assert!(
        wrong.is_empty(),
        "paths and detectors:\n{}",
        wrong.join("\n")
    );
    let r = f.send("GET", "/customer?fmt=xml", &[], b"").await;
    let b = r.json();
    assert_eq!(b["upstreamStatus"], 200);
    assert_eq!(b["contentType"], "application/xml");
    assert!(b["message"].as_str().unwrap().contains("jsonPaths"), "{b}");
    // A BOM before JSON labelled text/plain is kept, the rest is valid JSON.
    let r = f.send("GET", "/customer?fmt=bomtext", &[], b"").await;
    assert!(r.body.starts_with(&[0xEF, 0xBB, 0xBF]), "{r:?}");
    let v: Value = serde_json::from_slice(&r.body[3..]).unwrap();
    assert_eq!(v["customer"]["name"], "[redacted]");
    assert_eq!(v["id"], 1);
}

// === 6: the audited path carries no sensitive value ===

/// Card numbers, e-mails, SSNs and keys in a path are masked in the audit
/// trail (allowed and denied requests, whatever the masking rules).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audited_paths_are_masked() {
    let f = fixture("").await;
    let secrets = [
        ("/v1/cards/4000056655665556", "4000056655665556"),
        ("/v1/cards/%34000056655665556/x", "4000056655665556"),
        ("/v1/cards/4000-0566-5566-5556", "4000-0566-5566-5556"),
        ("/v1/users/ann@example.com", "ann@example.com"),
        ("/v1/people/123-45-6789", "123-45-6789"),
        ("/v1/keys/AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        (
            "/v1/accounts/DE89370400440532013000",
            "DE89370400440532013000",
        ),
        ("/admin/cards/5555555555554444", "5555555555554444"),
    ];
    for (path, _) in secrets {
        let r = f.send("GET", path, &[], b"").await;
        assert!(r.status == 200 || r.status == 403, "{path}: {r:?}");
    }
    let audit = f.audit();
    let leaked: Vec<&str> = secrets
        .iter()
        .filter(|(_, value)| audit.contains(value))
        .map(|(path, _)| *path)
        .collect();
    assert!(leaked.is_empty(), "in the audit trail: {leaked:?}\n{audit}");
    assert!(audit.contains("GET /v1/cards/[redacted]"), "{audit}");
    assert!(audit.contains("GET /admin/cards/[redacted]"), "{audit}");
    // The upstream got the real path.
    let log = f.log().await;
    assert!(
        log.iter()
            .any(|e| e["path"] == format!("{BASE}/v1/cards/4000056655665556"))
    );
}
