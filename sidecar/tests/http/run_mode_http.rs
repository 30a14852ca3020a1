//! Run mode serves `protocol: http` Connections from the bundle: the
//! operator in-process on the test control plane, a local HTTPS upstream
//! with its own CA (given through a Secret), and `sluice_sidecar::run`
//! started as an injected pod's sidecar would be.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use sluice_crds::{AccessRequest, RequestPhase};
use sluice_e2e::Options;
use sluice_sidecar::run;

use common::revision_until;
use support::{Env, apply_quickstart, bounded, cluster_with_crds};

const TOKEN: &str = "Bearer run-mode-upstream-token-7";
const EMAIL: &str = "ann@example.com";

/// Requests the upstream received on `/refunds` and `/exports/…`.
static APPROVED_HITS: AtomicUsize = AtomicUsize::new(0);

/// An HTTPS upstream with its own CA: `/customer` is JSON with an email,
/// anything else echoes the request (method, path, headers, body) as JSON.
async fn start_upstream() -> (SocketAddr, String) {
    let (acceptor, ca_pem) =
        common::tls_upstream_acceptor("sluice run-mode http test CA", &["localhost"], &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else {
                    return;
                };
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let path = req.uri().path().to_string();
                    if path == "/slow" {
                        // Longer than the sidecar's upstream timeout in the test below.
                        tokio::time::sleep(Duration::from_secs(20)).await;
                    }
                    if path == "/refunds" || path.starts_with("/exports/") {
                        APPROVED_HITS.fetch_add(1, Ordering::SeqCst);
                    }
                    let body = if path == "/customer" {
                        json!({"id": 1, "email": EMAIL, "name": "Ann"})
                    } else {
                        let headers: serde_json::Map<_, _> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
                            .collect();
                        let method = req.method().to_string();
                        // The credential as a digest: the value itself is
                        // scrubbed on the way back (issue 16).
                        let auth = req
                            .headers()
                            .get("authorization")
                            .map(|v| digest(v.as_bytes()));
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        json!({"method": method, "path": path, "headers": headers,
                               "authorizationDigest": auth,
                               "body": String::from_utf8_lossy(&body)})
                    };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body.to_string())))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca_pem)
}

fn manifests(upstream_port: u16, listen_port: u16, ca: &str) -> String {
    let ca: String = ca.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: api-creds, namespace: shop}}
stringData: {{Authorization: "{TOKEN}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: api-ca, namespace: shop}}
stringData:
  ca.crt: |
{ca}---
apiVersion: sluice.dev/v1alpha1
kind: Connection
metadata: {{name: api, namespace: shop}}
spec:
  protocol: http
  upstream: {{baseURL: "https://localhost:{upstream_port}", tls: {{mode: verify-full, caSecretRef: {{name: api-ca}}}}}}
  credentials: {{secretRef: {{name: api-creds}}}}
  listen: {{port: {listen_port}}}
---
apiVersion: sluice.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: api-policy, namespace: shop}}
spec:
  subjects: [{{serviceAccount: report-job}}]
  connections: [api]
  defaultAction: allow
  rules:
    - name: no-admin
      match: {{paths: ["/admin/**"]}}
      action: deny
  masking:
    - jsonPaths: ["$.email"]
      strategy: redact
"#
    )
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One request on `client` (keep-alive: the same application connection
/// across calls).
async fn get(client: &HttpClient, port: u16, path: &str) -> (u16, serde_json::Value) {
    send(client, port, "GET", path, "").await
}

async fn send(
    client: &HttpClient,
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("authorization", "Bearer the-apps-own")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    bounded("a response", async {
        let resp = client.request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
        (status, v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_mode_serves_http_connections_and_follows_policy_edits() {
    let (up, ca) = start_upstream().await;
    let env = Env::start().await;
    let listen_port = common::free_port();
    support::apply_yaml(&env.client, &manifests(up.port(), listen_port, &ca)).await;
    env.policy_ready("api-policy").await;
    env.webhook_registered().await;
    let dir = tempfile::tempdir().unwrap();
    let (_pod, token_file) = env.pod_token_file("report-job", "report", dir.path()).await;

    let mut cfg = common::run_config(&env.operator, token_file, "api");
    cfg.expected_identity = Some(("shop".into(), "report-job".into(), "report".into()));
    // The run-mode HTTP settings (SLUICE_HTTP_TIMEOUT) reach the upstream client.
    cfg.planes.http_upstream_timeout = Duration::from_secs(2);
    let running = bounded("run mode to start", run::start(cfg))
        .await
        .expect("run mode starts");
    assert_eq!(running.listeners.len(), 1, "{:?}", running.listeners);
    assert_eq!(running.listeners[0].0, "api");
    assert_eq!(running.listeners[0].1.port(), listen_port);

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    // The bundle's credential replaces the application's.
    let (status, echo) = get(&client, listen_port, "/v1/things").await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["authorizationDigest"], digest(TOKEN.as_bytes()));
    assert_eq!(echo["headers"]["authorization"], "*".repeat(TOKEN.len()));
    // Masked by the bundle's jsonPaths.
    let (status, v) = get(&client, listen_port, "/customer").await;
    assert_eq!(status, 200);
    assert_eq!(v["name"], "Ann");
    assert_eq!(
        v["email"], "[redacted]",
        "the masked field reached the client"
    );
    // Denied by the bundle's rule.
    let (status, v) = get(&client, listen_port, "/admin/users").await;
    assert_eq!(status, 403);
    assert_eq!(v["rule"], "no-admin");
    // An upstream slower than the configured timeout: a clear 504, not a hang.
    let (status, v) = get(&client, listen_port, "/slow").await;
    assert_eq!(status, 504, "{v}");

    // A policy edit reaches the next request on the same connection.
    env.set_rules(
        "api-policy",
        json!([
            {"name": "no-admin", "match": {"paths": ["/admin/**"]}, "action": "deny"},
            {"name": "no-things", "match": {"paths": ["/v1/things"]}, "action": "deny"}
        ]),
    )
    .await;
    let v = bounded("the policy edit to reach the next request", async {
        loop {
            let now = running.bundle_revision().borrow().clone();
            match get(&client, listen_port, "/v1/things").await {
                (403, v) => return v,
                _ => revision_until(&running, "a new bundle", |r| r != now.as_deref()).await,
            }
        }
    })
    .await;
    assert_eq!(v["rule"], "no-things");

    // The pod's deletion withdraws the bundle: requests are refused, not forwarded.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), "shop");
    pods.delete("report", &DeleteParams::default())
        .await
        .unwrap();
    revision_until(&running, "the bundle to be withdrawn", |r| r.is_none()).await;
    let (status, v) = get(&client, listen_port, "/customer").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"], "noPolicy");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("no longer accepts this pod's identity"),
        "{v}"
    );
}

// === approvals ===

/// What `kubectl sluice approve|deny` sends: one decision appended to status.
async fn decide(client: &kube::Client, name: &str, verdict: &str) {
    support::decide(client, name, verdict, "looked at it", &[])
        .await
        .unwrap();
}

/// The name of the one pending AccessRequest for `rule`, once it exists.
async fn pending_request(client: &kube::Client, rule: &str) -> String {
    let api: Api<AccessRequest> = Api::namespaced(client.clone(), "shop");
    bounded("the AccessRequest", async {
        loop {
            let list = api.list(&Default::default()).await.unwrap();
            if let Some(ar) = list.items.iter().find(|ar| {
                ar.spec.rule == rule
                    && ar.status.as_ref().and_then(|s| s.phase) == Some(RequestPhase::Pending)
            }) {
                return ar.metadata.name.clone().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

const APPROVAL_RULES: &str = r#"
    - name: refunds-need-finance
      match: {methods: [POST], paths: ["/refunds"]}
      action: requireApproval
      approval: {approvers: {groups: [dba]}, timeout: 15m, mode: hold}
    - name: exports-need-finance
      match: {paths: ["/exports/**"]}
      action: requireApproval
      approval: {approvers: {groups: [dba]}, timeout: 15m, mode: retry}
    - name: quick-expiry
      match: {paths: ["/quick"]}
      action: requireApproval
      approval: {approvers: {groups: [dba]}, timeout: 2s, mode: hold}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_needing_approval_are_held_or_refused_until_approved() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (up, ca) = start_upstream().await;
    let (cluster, client) = cluster_with_crds(Options::default().user("alice", &["dba"])).await;
    apply_quickstart(&client, &["namespace.yaml"]).await;
    let listen_port = common::free_port();
    let yaml = manifests(up.port(), listen_port, &ca).replace(
        "      action: deny\n  masking:",
        &format!("      action: deny{APPROVAL_RULES}  masking:"),
    );
    assert!(yaml.contains("quick-expiry"));
    support::apply_yaml(&client, &yaml).await;
    let env = Env::with_operator(cluster, client, support::test_settings("http-approvals")).await;
    env.policy_ready("api-policy").await;
    env.webhook_registered().await;
    let dir = tempfile::tempdir().unwrap();
    let (_pod, token_file) = env.pod_token_file("report-job", "report", dir.path()).await;
    let cfg = common::run_config(&env.operator, token_file, "api");
    let _running = bounded("run mode to start", run::start(cfg))
        .await
        .expect("run mode starts");
    let alice = env.cluster.client_for("alice").await.unwrap();
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let hits = || APPROVED_HITS.load(Ordering::SeqCst);
    // A refund request, sent in the background: it is held for approval.
    let hold_refund = |body: &'static str| {
        let http = http.clone();
        tokio::spawn(async move { send(&http, listen_port, "POST", "/refunds", body).await })
    };

    // Hold: the request waits; approved, it is forwarded once.
    let held = hold_refund(r#"{"amount": 5000}"#);
    let name = pending_request(&env.client, "refunds-need-finance").await;
    assert!(
        !held.is_finished(),
        "the held request was answered before a decision"
    );
    assert_eq!(
        hits(),
        0,
        "the held request reached the upstream before approval"
    );
    // Issue 18 item 3: the approver sees the exact request, body included,
    // and the approval binds to that very text.
    let requests: Api<AccessRequest> = Api::namespaced(env.client.clone(), "shop");
    let command = requests.get(&name).await.unwrap().spec.command;
    let statement = command.statement.clone().unwrap_or_default();
    assert!(
        statement.starts_with("POST /refunds") && statement.ends_with("\n{\"amount\": 5000}"),
        "{command:?}"
    );
    assert!(!command.truncated);
    assert_eq!(digest(statement.as_bytes()), command.sha256);
    decide(&alice, &name, "approve").await;
    let (status, echo) = bounded("the held request", held).await.unwrap();
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], r#"{"amount": 5000}"#);
    assert_eq!(echo["authorizationDigest"], digest(TOKEN.as_bytes()));
    assert_eq!(echo["headers"]["authorization"], "*".repeat(TOKEN.len()));
    assert_eq!(hits(), 1);

    // Retry: refused at once naming the request; approved, the same
    // request runs once; a third time needs a new approval.
    let (status, v) = get(&http, listen_port, "/exports/q1").await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"], "approvalPending");
    let request = v["request"].as_str().unwrap().to_string();
    let name = request.strip_prefix("shop/").unwrap().to_string();
    assert!(
        v["approveCommand"]
            .as_str()
            .unwrap()
            .contains(&format!("kubectl sluice approve {name} -n shop")),
        "{v}"
    );
    assert_eq!(hits(), 1);
    decide(&alice, &name, "approve").await;
    let (status, v) = bounded("the approved retry", async {
        loop {
            let (status, v) = get(&http, listen_port, "/exports/q1").await;
            // The operator may not have seen the approval yet.
            if !(status == 403 && v["error"] == "approvalPending") {
                return (status, v);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["path"], "/exports/q1");
    assert_eq!(hits(), 2);
    let (status, v) = get(&http, listen_port, "/exports/q1").await;
    assert_eq!(status, 403, "an approval runs its request once: {v}");
    assert_eq!(hits(), 2);

    // Denied: the held request is answered 403 with the phase, and never
    // reaches the upstream.
    let held = hold_refund(r#"{"amount": 9999}"#);
    let name = pending_request(&env.client, "refunds-need-finance").await;
    decide(&alice, &name, "deny").await;
    let (status, v) = bounded("the denied request", held).await.unwrap();
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"], "approvalRefused", "{v}");
    assert_eq!(v["phase"], "Denied", "{v}");
    assert_eq!(hits(), 2, "a denied request reached the upstream");

    // Nobody decides in time: refused with the reason.
    let (status, v) = get(&http, listen_port, "/quick").await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"], "approvalRefused");
    assert_eq!(v["phase"], "Expired", "{v}");

    // Issue 18 item 8: the policy denies refunds while one is held; approved,
    // it is refused, and its AccessRequest says NotRun, not Executed.
    let held = hold_refund(r#"{"amount": 7777}"#);
    let name = pending_request(&env.client, "refunds-need-finance").await;
    let freeze = serde_json::json!([{"op": "add", "path": "/spec/rules/0", "value":
        {"name": "freeze-refunds", "match": {"paths": ["/refunds", "/freeze-probe"]}, "action": "deny"}}]);
    env.policies()
        .patch(
            "api-policy",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::<()>::Json(serde_json::from_value(freeze).unwrap()),
        )
        .await
        .unwrap();
    bounded("the new rule to reach the sidecar", async {
        loop {
            // Allowed (and echoed) until the rule is in force.
            let (status, v) = get(&http, listen_port, "/freeze-probe").await;
            if status == 403 && v["error"] == "denied" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    decide(&alice, &name, "approve").await;
    let (status, v) = bounded("the held request", held).await.unwrap();
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"], "approvalRefused", "{v}");
    assert_eq!(v["phase"], "NotRun", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("freeze-refunds"),
        "{v}"
    );
    assert_eq!(
        hits(),
        2,
        "a request refused at run time reached the upstream"
    );
    let status = requests.get(&name).await.unwrap().status.unwrap();
    assert_eq!(status.phase, Some(RequestPhase::NotRun));
    assert_eq!(status.executed_at, None);
}

/// SHA-256 of `b`, hex.
fn digest(b: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(b))
}

/// The audit events the sidecar binary wrote to `path` (its stdout).
fn audit_events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Rules of their own (the upstream counts the other test's paths).
const AUDITED_APPROVAL_RULES: &str = r#"
    - name: payouts-need-finance
      match: {methods: [POST], paths: ["/payouts"]}
      action: requireApproval
      approval: {approvers: {groups: [dba]}, timeout: 15m, mode: hold}
    - name: reports-need-finance
      match: {paths: ["/reports/**"]}
      action: requireApproval
      approval: {approvers: {groups: [dba]}, timeout: 15m, mode: retry}
"#;

/// Issue #20: an HTTP request's approval is on record in the shape a SQL
/// statement's is (`sidecar/tests/run_mode/approvals.rs`): `approval` events naming
/// the AccessRequest and its phase (Pending when held or refused until
/// approved, Executed when the approved request runs), not a
/// `requireApproval` decision with the phase in its reason text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_approval_steps_are_recorded_as_sql_approvals_are() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (up, ca) = start_upstream().await;
    let (cluster, client) = cluster_with_crds(Options::default().user("alice", &["dba"])).await;
    apply_quickstart(&client, &["namespace.yaml"]).await;
    let listen_port = common::free_port();
    let yaml = manifests(up.port(), listen_port, &ca).replace(
        "      action: deny\n  masking:",
        &format!("      action: deny{AUDITED_APPROVAL_RULES}  masking:"),
    );
    support::apply_yaml(&client, &yaml).await;
    let env = Env::with_operator(
        cluster,
        client,
        support::test_settings("http-approval-audit"),
    )
    .await;
    env.policy_ready("api-policy").await;
    env.webhook_registered().await;
    let dir = tempfile::tempdir().unwrap();
    let (_pod, token_file) = env.pod_token_file("report-job", "report", dir.path()).await;
    let audit = dir.path().join("audit.jsonl");
    let log = dir.path().join("sidecar.log");
    let _child = support::Child(
        common::run_binary(
            &env.operator,
            &token_file,
            "api",
            ("report-job", "report"),
            &audit,
            &log,
        )
        .spawn()
        .expect("sidecar binary starts"),
    );
    let alice = env.cluster.client_for("alice").await.unwrap();
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    bounded("the binary's listener", async {
        while tokio::net::TcpStream::connect(("127.0.0.1", listen_port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // Hold: asked, held, approved, run once.
    let held = {
        let http = http.clone();
        tokio::spawn(async move {
            send(&http, listen_port, "POST", "/payouts", r#"{"amount": 5}"#).await
        })
    };
    let held_name = pending_request(&env.client, "payouts-need-finance").await;
    decide(&alice, &held_name, "approve").await;
    let (status, v) = bounded("the held request", held).await.unwrap();
    assert_eq!(status, 200, "{v}");
    // Retry: refused at once until approved.
    let (status, v) = get(&http, listen_port, "/reports/q9").await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"], "approvalPending", "{v}");
    let retry_request = v["request"].as_str().unwrap().to_string();

    let events = bounded("the approval records", async {
        loop {
            let events = audit_events(&audit);
            let executed = events.iter().any(|e| e["approval"]["phase"] == "Executed");
            let pending = events
                .iter()
                .any(|e| e["approval"]["request"] == retry_request.as_str());
            if executed && pending {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let step = |request: &str, phase: &str| {
        events
            .iter()
            .find(|e| e["approval"]["request"] == request && e["approval"]["phase"] == phase)
            .cloned()
    };
    let held_request = format!("shop/{held_name}");
    let asked = step(&held_request, "Pending").expect("the held request's ask is on record");
    assert_eq!(asked["type"], "approval", "{asked}");
    assert_eq!(asked["command"]["text"], "POST /payouts", "{asked}");
    assert_eq!(asked["decision"]["rule"], "payouts-need-finance", "{asked}");
    let ran = step(&held_request, "Executed").expect("the approved run is on record");
    assert_eq!(ran["type"], "approval", "{ran}");
    assert_eq!(ran["approval"]["decidedBy"], "alice", "{ran}");
    assert_eq!(ran["command"]["text"], "POST /payouts", "{ran}");
    let waits = step(&retry_request, "Pending").expect("the retry request's ask is on record");
    assert_eq!(waits["type"], "approval", "{waits}");
    assert_eq!(waits["command"]["text"], "GET /reports/q9", "{waits}");
    // An approved run is recorded as its approval, not as a new decision.
    assert!(
        !events
            .iter()
            .any(|e| e["type"] == "statement" && e["decision"]["action"] == "requireApproval"),
        "{events:#?}"
    );
}
