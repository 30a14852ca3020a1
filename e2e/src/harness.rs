//! What the crates' integration tests share when they run the workspace's
//! binaries on artefacts: a binary beside the one under test, a command's
//! standard output once it succeeded, a plain HTTP upstream and the
//! manifests of an http Connection to it, the audit events a sidecar
//! wrote to its file (sidecar/tests/pg/recording.rs and
//! cli/tests/integration/audit_pipeline.rs read them the same way), and a service
//! account's token from the test API server.
//!
//! Test equipment: what cannot be done panics, saying what to do.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

/// The workspace binary `name` beside `exe` (a test's
/// `env!("CARGO_BIN_EXE_…")`); panics, saying how to build it, when it
/// is missing: a missing binary fails a test, it never skips it.
pub fn binary_beside(exe: &str, name: &str, package: &str) -> PathBuf {
    let path = Path::new(exe).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p {package})",
        path.display()
    );
    path
}

/// The standard output of a command that succeeded; panics with its exit
/// code, standard output and standard error when it failed.
pub fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout {}\nstderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap_or_else(|e| panic!("the command's standard output is not UTF-8: {e}"))
}

/// An HTTP/1.1 upstream on a loopback port answering every request `200`
/// with `body` as `application/json`; returns the port.
pub fn json_upstream(body: &'static str) -> u16 {
    http_upstream(move |_| ("application/json", body))
}

/// An HTTP/1.1 upstream on a loopback port: each request (one per
/// connection) is answered `200` with the content type and body `answer`
/// gives for the request's head (it may block: each connection has its
/// thread), and closed; returns the port.
pub fn http_upstream(
    answer: impl Fn(&[u8]) -> (&'static str, &'static str) + Send + Sync + 'static,
) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot bind the test upstream on 127.0.0.1: {e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("the test upstream has no address: {e}"))
        .port();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let (content_type, body) = answer(&seen);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// Manifests of an http Connection `api` in namespace `shop` to the
/// upstream on `upstream` (plain HTTP, an `Authorization` header from the
/// Secret `api-creds`), listening on `listen` (a port, or `{PORT}` for the
/// sidecar tests' `Sidecar::start`), and the AccessPolicy `api-rules`
/// binding `shop/app` to it with the extra spec lines `policy`.
pub fn http_manifests(upstream: u16, listen: &str, policy: &str) -> String {
    let connection = http_connection_manifests(&HttpConnection {
        base_url: &format!("http://127.0.0.1:{upstream}"),
        ca_pem: None,
        secret: &[("Authorization", "Bearer upstream-secret")],
        headers: &["Authorization"],
        listen,
        policy,
    });
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n{connection}")
}

/// The http Connection `api` of namespace `shop` that
/// [`http_connection_manifests`] writes, with its Secret `api-creds`, and
/// the AccessPolicy `api-rules` binding `shop/app` to it.
#[derive(Debug, Clone, Copy)]
pub struct HttpConnection<'a> {
    /// `spec.upstream.baseURL`.
    pub base_url: &'a str,
    /// The upstream's CA (PEM): `verify-full` against it, from the Secret
    /// `api-ca`; `None`: no `tls` (plain HTTP).
    pub ca_pem: Option<&'a str>,
    /// The `stringData` of the Secret `api-creds`, key and value.
    pub secret: &'a [(&'a str, &'a str)],
    /// `spec.credentials.headers`: the keys injected as headers.
    pub headers: &'a [&'a str],
    /// `spec.listen.port`: a port, or `{PORT}` for `Sidecar::start`.
    pub listen: &'a str,
    /// The AccessPolicy's spec lines after `connections: [api]`.
    pub policy: &'a str,
}

/// The manifests of `c` (the http tests' fixture, written once).
pub fn http_connection_manifests(c: &HttpConnection<'_>) -> String {
    let secret: String = c
        .secret
        .iter()
        .map(|(k, v)| format!("  {k}: \"{v}\"\n"))
        .collect();
    let (ca_secret, tls) = match c.ca_pem {
        Some(pem) => {
            let pem: String = pem.lines().map(|l| format!("    {l}\n")).collect();
            (
                format!(
                    "apiVersion: v1\nkind: Secret\nmetadata: {{name: api-ca, namespace: shop}}\nstringData:\n  ca.crt: |\n{pem}---\n"
                ),
                "\n    tls: {mode: verify-full, caSecretRef: {name: api-ca}}",
            )
        }
        None => (String::new(), ""),
    };
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: api-creds, namespace: shop}}
stringData:
{secret}---
{ca_secret}apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {{name: api, namespace: shop}}
spec:
  protocol: http
  upstream:
    baseURL: "{base_url}"{tls}
  credentials:
    secretRef: {{name: api-creds}}
    headers: [{headers}]
  listen: {{port: {listen}}}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: api-rules, namespace: shop}}
spec:
  subjects: [{{serviceAccount: app}}]
  connections: [api]
{policy}"#,
        base_url = c.base_url,
        headers = c.headers.join(", "),
        listen = c.listen,
        policy = c.policy,
    )
}

/// The audit events in the file at `path` so far: every line that is a
/// JSON object (a line being written, a log line, is skipped); none when
/// the file is missing.
pub fn audit_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// A token of the service account `namespace/sa` for `audience`, valid for
/// `seconds`, from the API server `client` talks to (a TokenRequest):
/// bound to `pod` when given, as the kubelet projects a pod's token.
pub async fn service_account_token(
    client: &kube::Client,
    (namespace, sa): (&str, &str),
    pod: Option<&k8s_openapi::api::core::v1::Pod>,
    audience: &str,
    seconds: i64,
) -> String {
    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec,
    };
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.into()],
            expiration_seconds: Some(seconds),
            bound_object_ref: pod.map(|pod| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(sa, &kube::api::PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("no token for {namespace}/{sa}: {e}"))
        .status
        .unwrap_or_else(|| panic!("the token request of {namespace}/{sa} has no status"))
        .token
}
