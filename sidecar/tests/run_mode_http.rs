//! Run mode serves `protocol: http` Connections from the bundle: the
//! operator in-process on the test control plane, a local HTTPS upstream
//! with its own CA (given through a Secret), and `sluice_sidecar::run`
//! started as an injected pod's sidecar would be.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../operator/tests/support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use sluice_crds::{AccessPolicy, AccessRequest, RequestPhase};
use sluice_e2e::{Options, TestCluster};
use sluice_sidecar::run::{self, RunConfig, Running};

use support::{Env, bounded};

const TOKEN: &str = "Bearer run-mode-upstream-token-7";
const EMAIL: &str = "ann@example.com";

/// Requests the upstream received on `/refunds` and `/exports/…`.
static APPROVED_HITS: AtomicUsize = AtomicUsize::new(0);

/// An HTTPS upstream with its own CA: `/customer` is JSON with an email,
/// anything else echoes the request (method, path, headers, body) as JSON.
async fn start_upstream() -> (SocketAddr, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sluice run-mode http test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
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
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        json!({"method": method, "path": path, "headers": headers,
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
    (addr, ca_cert.pem())
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

fn is_ready(p: Option<&AccessPolicy>) -> bool {
    let Some(p) = p else { return false };
    let v = serde_json::to_value(p).unwrap();
    v["status"]["observedGeneration"].as_i64() == p.metadata.generation
        && v["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

async fn policy_ready(env: &Env) {
    policy_named_ready(env, "api-policy").await;
}

async fn policy_named_ready(env: &Env, name: &str) {
    bounded(
        "the policy to be Ready",
        await_condition(env.policies(), name, is_ready),
    )
    .await
    .unwrap();
}

async fn revision_until(running: &Running, what: &str, done: impl Fn(Option<&str>) -> bool) {
    let mut rx = running.bundle_revision();
    bounded(what, async {
        loop {
            if done(rx.borrow_and_update().as_deref()) {
                return;
            }
            rx.changed().await.expect("the sidecar stopped");
        }
    })
    .await;
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
    policy_ready(&env).await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    let pod = env.injected_pod("report", "report-job").await;
    let token = env.pod_token("report-job", &pod, "sluice.dev").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();

    let mut cfg = RunConfig::new(
        format!("https://{}", env.operator.addr),
        token_file,
        env.operator.ca_bundle_pem(),
    );
    cfg.connections = Some(vec!["api".into()]);
    cfg.audit_stdout = false;
    cfg.poll_wait = Duration::from_secs(1);
    cfg.first_bundle_timeout = Duration::from_secs(20);
    cfg.expected_identity = Some(("shop".into(), "report-job".into(), "report".into()));
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
    assert_eq!(echo["headers"]["authorization"], TOKEN);
    // Masked by the bundle's jsonPaths.
    let (status, v) = get(&client, listen_port, "/customer").await;
    assert_eq!(status, 200);
    assert_eq!(v["name"], "Ann");
    assert_ne!(v["email"], EMAIL, "the masked field reached the client");
    // Denied by the bundle's rule.
    let (status, v) = get(&client, listen_port, "/admin/users").await;
    assert_eq!(status, 403);
    assert_eq!(v["rule"], "no-admin");

    // A policy edit reaches the next request on the same connection.
    env.policies()
        .patch(
            "api-policy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rules": [
                {"name": "no-admin", "match": {"paths": ["/admin/**"]}, "action": "deny"},
                {"name": "no-things", "match": {"paths": ["/v1/things"]}, "action": "deny"}
            ]}})),
        )
        .await
        .unwrap();
    policy_ready(&env).await;
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

fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn apply_crds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in [
        "connections.yaml",
        "accesspolicies.yaml",
        "accessrequests.yaml",
    ] {
        let text = std::fs::read_to_string(repo_root().join("crds").join(file)).unwrap();
        let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
        let name = crd.metadata.name.clone().unwrap();
        api.create(&Default::default(), &crd).await.unwrap();
        bounded(
            "CRD established",
            await_condition(
                api.clone(),
                &name,
                kube::runtime::wait::conditions::is_crd_established(),
            ),
        )
        .await
        .unwrap();
    }
}

/// What `kubectl sluice approve|deny` sends: one decision appended to status.
async fn decide(client: &kube::Client, name: &str, verdict: &str) {
    let api: Api<AccessRequest> = Api::namespaced(client.clone(), "shop");
    let entry = json!({"user": "typed-by-the-approver", "verdict": verdict,
        "time": "2020-01-01T00:00:00Z", "comment": "looked at it"});
    let ops = json!([{"op": "add", "path": "/status/decisions", "value": [entry]}]);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::<()>::Json(serde_json::from_value(ops).unwrap()),
    )
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
    let cluster = TestCluster::start(Options::default().user("alice", &["dba"]))
        .await
        .expect("cluster starts");
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await;
    support::apply_file(
        &client,
        &repo_root().join("examples/quickstart/namespace.yaml"),
    )
    .await;
    let listen_port = common::free_port();
    let yaml = manifests(up.port(), listen_port, &ca).replace(
        "      action: deny\n  masking:",
        &format!("      action: deny{APPROVAL_RULES}  masking:"),
    );
    assert!(yaml.contains("quick-expiry"));
    support::apply_yaml(&client, &yaml).await;
    let operator =
        sluice_operator::run::start(client.clone(), support::test_settings("http-approvals"))
            .await
            .expect("operator starts");
    bounded("caches", operator.ready()).await;
    let env = Env {
        operator,
        client,
        cluster,
    };
    policy_named_ready(&env, "api-policy").await;
    env.webhook_registered().await;
    env.service_account("report-job").await;
    let pod = env.injected_pod("report", "report-job").await;
    let token = env.pod_token("report-job", &pod, "sluice.dev").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let mut cfg = RunConfig::new(
        format!("https://{}", env.operator.addr),
        token_file,
        env.operator.ca_bundle_pem(),
    );
    cfg.connections = Some(vec!["api".into()]);
    cfg.audit_stdout = false;
    cfg.poll_wait = Duration::from_secs(1);
    cfg.first_bundle_timeout = Duration::from_secs(20);
    let _running = bounded("run mode to start", run::start(cfg))
        .await
        .expect("run mode starts");
    let alice = env.cluster.client_for("alice").await.unwrap();
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let hits = || APPROVED_HITS.load(Ordering::SeqCst);

    // Hold: the request waits; approved, it is forwarded once.
    let held = tokio::spawn({
        let http = http.clone();
        async move {
            send(
                &http,
                listen_port,
                "POST",
                "/refunds",
                r#"{"amount": 5000}"#,
            )
            .await
        }
    });
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
    decide(&alice, &name, "approve").await;
    let (status, echo) = bounded("the held request", held).await.unwrap();
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], r#"{"amount": 5000}"#);
    assert_eq!(echo["headers"]["authorization"], TOKEN);
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

    // Nobody decides in time: refused with the reason.
    let (status, v) = get(&http, listen_port, "/quick").await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"], "approvalRefused");
    assert_eq!(v["phase"], "Expired", "{v}");
}
