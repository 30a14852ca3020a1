//! Run-mode test equipment that needs the operator: the test control plane
//! with the operator in-process, the test's manifests applied, and an
//! injected pod's token for the sidecar ([`Cluster`]); what the approval
//! tests of every plane share (an approvers' cluster, the AccessRequest a
//! message names, a PostgreSQL session whose NOTICEs arrive on a channel).
//!
//! It uses the operator's test support, so a test binary declares it beside
//! that and [`crate::common`]:
//! `mod common; #[path = "common/cluster.rs"] mod cluster;
//! #[path = "../../operator/tests/support/mod.rs"] mod support;`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::wait::await_condition;
use serde_json::Value;
use sluice_crds::{AccessRequest, RequestPhase};
use sluice_e2e::Options;
use sluice_e2e::harness::audit_events;
use sluice_operator::run::Settings;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::common;
use crate::support::{self, Child, Env, apply_quickstart, apply_yaml, bounded, cluster_with_crds};

/// Rules like examples/approvals (items of `spec.rules`, all for group
/// `dba`): UPDATEs of `expiring` held and expiring after 2 s, INSERTs into
/// `ledger` asked for in retry mode, and UPDATEs and DELETEs without WHERE
/// (`bulk-writes-need-a-dba`, whose `approval` line the test adds).
pub const APPROVAL_RULES: &str = r#"    - name: quick-expiry
      match: {statements: [update], tables: ["expiring"]}
      action: requireApproval
      approval: {approvers: {groups: [dba]}, timeout: 2s, mode: hold}
    - name: ledger-needs-a-dba
      match: {statements: [insert], tables: ["ledger"]}
      action: requireApproval
      approval: {approvers: {groups: [dba]}, timeout: 15m, mode: retry}
    - name: bulk-writes-need-a-dba
      match: {statements: [update, delete], withoutWhere: true}
      action: requireApproval
"#;

/// The operator on the test control plane with a test's manifests in force,
/// and the workload: an injected pod of a service account in `shop`, its
/// `sluice.dev` token in `dir`/token.
pub struct Cluster {
    /// The cluster and the operator.
    pub env: Env,
    /// The injected pod.
    pub pod: Pod,
    /// Its token, for `SLUICE_TOKEN_FILE`.
    pub token_file: PathBuf,
    /// The test's files (token, audit, log).
    pub dir: tempfile::TempDir,
    /// `(service account, pod)`.
    workload: (String, String),
}

impl Cluster {
    /// [`Env::start`]'s cluster (RBAC on, the quickstart applied) with
    /// `manifests` applied, the AccessPolicy `policy` Ready, the injection
    /// webhook registered and the workload `(service account, pod)`.
    pub async fn run_mode(manifests: &str, policy: &str, workload: (&str, &str)) -> Cluster {
        let env = Env::start().await;
        support::apply_yaml(&env.client, manifests).await;
        Cluster::ready(env, &[policy], false, workload).await
    }

    /// A cluster with `users` (name, groups), namespace `shop` and
    /// `manifests` applied, the operator in-process (`operator`: its
    /// identity) with the approval webhooks registered, the AccessPolicies
    /// `policies` Ready and the workload `(service account, pod)`.
    pub async fn approvals(
        users: &[(&str, &[&str])],
        manifests: &str,
        operator: &str,
        policies: &[&str],
        workload: (&str, &str),
    ) -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let options = users
            .iter()
            .fold(Options::default(), |o, (name, groups)| o.user(name, groups));
        let (cluster, client) = cluster_with_crds(options).await;
        apply_quickstart(&client, &["namespace.yaml"]).await;
        apply_yaml(&client, manifests).await;
        let env = Env::with_operator(cluster, client, support::test_settings(operator)).await;
        Cluster::ready(env, policies, true, workload).await
    }

    async fn ready(
        env: Env,
        policies: &[&str],
        approvals: bool,
        (sa, pod): (&str, &str),
    ) -> Cluster {
        for policy in policies {
            env.policy_ready(policy).await;
        }
        env.webhook_registered().await;
        if approvals {
            let hooks: Api<ValidatingWebhookConfiguration> = Api::all(env.client.clone());
            bounded(
                "the approval webhooks",
                await_condition(
                    hooks,
                    "sluice-operator-approvals",
                    |w: Option<&ValidatingWebhookConfiguration>| w.is_some(),
                ),
            )
            .await
            .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let (pod_object, token_file) = env.pod_token_file(sa, pod, dir.path()).await;
        Cluster {
            env,
            pod: pod_object,
            token_file,
            dir,
            workload: (sa.to_string(), pod.to_string()),
        }
    }

    /// A second operator replica started with `settings`, its caches
    /// filled. Replicas share one gateway URL (the Service in a cluster):
    /// the pod's genuine sidecar names the first replica's.
    pub async fn replica(&self, mut settings: Settings) -> sluice_operator::run::Running {
        settings.gateway_url = Some(self.env.operator.gateway_url.clone());
        let replica = sluice_operator::run::start(self.env.client.clone(), settings)
            .await
            .expect("second replica starts");
        bounded("the second replica's caches", replica.ready()).await;
        replica
    }

    /// Where the sidecar binary writes its audit events (its stdout).
    pub fn audit(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// Where the sidecar binary writes its log (its stderr).
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("sidecar.log")
    }

    /// The `sluice-sidecar run` command of the workload's pod serving
    /// `connection` (see [`common::run_binary`]), writing to
    /// [`Cluster::audit`] and [`Cluster::log`].
    pub fn run_binary(&self, connection: &str) -> Command {
        let (sa, pod) = &self.workload;
        common::run_binary(
            &self.env.operator,
            &self.token_file,
            connection,
            (sa, pod),
            &self.audit(),
            &self.log(),
        )
    }

    /// [`Cluster::run_binary`] started with the pod's namespace
    /// (`SLUICE_POD_NAMESPACE`, where its AccessRequests are made).
    pub fn approval_sidecar(&self, connection: &str) -> Child {
        Child(
            self.run_binary(connection)
                .env("SLUICE_POD_NAMESPACE", "shop")
                .spawn()
                .expect("sidecar binary starts"),
        )
    }
}

/// Run mode started in-process with `cfg`, and a tokio-postgres session
/// to database `db` through its listener on `port`.
pub async fn run_mode_session(
    cfg: sluice_sidecar::run::RunConfig,
    port: u16,
    db: &str,
) -> (sluice_sidecar::run::Running, tokio_postgres::Client) {
    let running = bounded("run mode to start", sluice_sidecar::run::start(cfg))
        .await
        .expect("run mode starts");
    let url = format!("host=127.0.0.1 port={port} user=app dbname={db}");
    let client = bounded("a session", common::connect(&url)).await;
    (running, client)
}

/// The AccessRequest name in `text` ("… AccessRequest shop/NAME …").
pub fn request_name(text: &str) -> String {
    let at = text
        .find("AccessRequest shop/")
        .unwrap_or_else(|| panic!("no request named in {text:?}"))
        + "AccessRequest shop/".len();
    text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect()
}

/// A tokio-postgres session to `url` once the sidecar listens there (its
/// listener opens when the first bundle is in force).
pub async fn session_once_listening(url: &str) -> tokio_postgres::Client {
    bounded("the sidecar's listener", async {
        loop {
            if let Ok(c) = common::try_connect(url).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// [`session_once_listening`], the session's NOTICEs arriving on the
/// channel as `message | detail`.
pub async fn session_with_notices(
    url: &str,
) -> (Arc<tokio_postgres::Client>, mpsc::UnboundedReceiver<String>) {
    drop(session_once_listening(url).await);
    let (client, notices) = connect_with_notices(url).await;
    (Arc::new(client), notices)
}

async fn connect_with_notices(
    url: &str,
) -> (tokio_postgres::Client, mpsc::UnboundedReceiver<String>) {
    let (client, mut conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notice(n))) => {
                    let _ = tx.send(format!(
                        "{} | {}",
                        n.message(),
                        n.detail().unwrap_or_default()
                    ));
                }
                Some(Ok(_)) => {}
                _ => return,
            }
        }
    });
    (client, rx)
}

/// Waits until the AccessRequest `name` in `shop` is in `phase`.
pub async fn request_phase(env: &Env, name: &str, phase: RequestPhase) {
    bounded(
        "the AccessRequest's phase",
        await_condition(
            Api::<AccessRequest>::namespaced(env.client.clone(), "shop"),
            name,
            move |ar: Option<&AccessRequest>| {
                ar.and_then(|a| a.status.as_ref()).and_then(|s| s.phase) == Some(phase)
            },
        ),
    )
    .await
    .unwrap();
}

/// The audit events the sidecar wrote to `path`, once one of them records
/// an AccessRequest that expired (polled).
pub async fn audit_events_once_expired(path: &Path) -> Vec<Value> {
    bounded("the audit events", async {
        loop {
            let events = audit_events(path);
            if events.iter().any(|e| e["approval"]["phase"] == "Expired") {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// The audit event of step `phase` of the AccessRequest `shop/request`.
pub fn approval_step<'a>(events: &'a [Value], request: &str, phase: &str) -> Option<&'a Value> {
    events.iter().find(|e| {
        e["approval"]["request"] == format!("shop/{request}") && e["approval"]["phase"] == phase
    })
}

/// Edits the rules of `testdb-policy` as `kubectl apply` would: DROP and
/// now reads denied (`no-drops`, `no-reads`); returns once it is Ready.
pub async fn deny_reads(env: &Env) {
    env.set_rules(
        "testdb-policy",
        serde_json::json!([
            {"name": "no-drops", "match": {"statements": ["drop"]}, "action": "deny"},
            {"name": "no-reads", "match": {"statements": ["select"]}, "action": "deny"}
        ]),
    )
    .await;
}
